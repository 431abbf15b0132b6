//! Replica fetchers: on each shard, one task per leader broker that this shard follows
//! partitions of. It sends that leader Fetch requests (v12, with this broker's replica id,
//! each partition's log end, its current leader epoch and the epoch of its last batch) for
//! all of them at once, over one connection, and for each partition of the answer:
//! truncates where the leader says the logs diverged, or appends the records as they came
//! (offsets and epochs kept) and takes the leader's high watermark. The next request goes
//! out only after those appends were written, so the offsets it reports are on this
//! broker's storage. A fetcher ends when its leader leads nothing this shard follows.
//!
//! The leader is reached at its endpoint of the inter-broker listener
//! (`--inter-broker-listener-name`), over TLS when that listener is SSL.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::cli::client::{complete_batches, round_trip};
use crate::kafka::codes;
use crate::security::inter_broker;

use super::replica::{Replica, Role};
use super::shard::Shard;

const FETCH_VERSION: i16 = 12;

/// A connection to a leader: a TCP stream, or a TLS session over one.
trait BrokerStream: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> BrokerStream for T {}

/// Connects to the broker at `host:port` on the inter-broker listener, with TLS when that
/// listener's protocol uses it.
async fn connect(shard: &Shard, host: &str, port: i32) -> Result<Box<dyn BrokerStream>, String> {
    let address = format!("{host}:{port}");
    let stream = TcpStream::connect(address.as_str())
        .await
        .map_err(|err| format!("{address}: {err}"))?;
    let _ = stream.set_nodelay(true);
    let name = shard.config.security.inter_broker_listener_name();
    let tls = shard
        .listeners
        .iter()
        .any(|l| l.name == name && l.protocol.uses_tls());
    if !tls {
        return Ok(Box::new(stream));
    }
    let files = shard
        .config
        .security
        .tls
        .as_ref()
        .ok_or("a TLS inter-broker listener without --tls-cert")?;
    let config = crate::security::tls::client_config(files)?;
    let server = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|err| format!("{host}: {err}"))?;
    let session = futures_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(server, stream)
        .await
        .map_err(|err| format!("TLS with {address}: {err}"))?;
    tracing::info!(
        "shard {}: connected to {address} on {name} with TLS",
        shard.id
    );
    Ok(Box::new(session))
}
/// How long a leader may hold a follower's fetch for new data (Kafka's
/// replica.fetch.wait.max.ms). New data releases it at once; so does a change of the
/// partitions this shard follows from that leader (see `run_fetcher`).
const FETCH_MAX_WAIT_MS: i32 = 500;
/// Why a held fetch was dropped: this shard follows other partitions of the leader now.
const FOLLOWED_CHANGED: &str = "the followed partitions changed";
const FETCH_MAX_BYTES: i32 = 16 << 20;
const PARTITION_MAX_BYTES: i32 = 1 << 20;
/// How long a fetcher waits before trying again after an error.
const BACKOFF: Duration = Duration::from_millis(100);
const CLIENT_ID: &str = "replica-fetcher";
/// After a refused authentication (a credential missing or wrong until an operator fixes
/// it): one warning and one attempt per second, not per [`BACKOFF`].
const AUTHENTICATION_BACKOFF: Duration = Duration::from_secs(1);
/// An answer later than this (plus the long-poll) means the connection is gone.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A followed partition as the next request asks for it.
struct Followed {
    replica: Rc<Replica>,
    epoch: i32,
}

impl Shard {
    /// Starts the fetcher for `leader` unless one runs.
    pub fn ensure_fetcher(self: &Rc<Self>, leader: i32) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        if !cluster.fetching.load(std::sync::atomic::Ordering::SeqCst)
            || !cluster.fetchers.borrow_mut().insert(leader)
        {
            return;
        }
        cluster
            .fetchers_running
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let shard = self.clone();
        glommio::spawn_local(async move {
            shard.clone().run_fetcher(leader).await;
            if let Some(cluster) = &shard.cluster {
                cluster.fetchers.borrow_mut().remove(&leader);
                cluster
                    .fetchers_running
                    .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
        .detach();
    }

    /// The partitions this shard follows from `leader`, by topic.
    fn followed_from(&self, leader: i32) -> BTreeMap<String, Vec<Followed>> {
        let mut by_topic: BTreeMap<String, Vec<Followed>> = BTreeMap::new();
        for replica in self.partitions.replicas() {
            let epoch = match &*replica.role.borrow() {
                Role::Follower {
                    leader: l, epoch, ..
                } if *l == leader => *epoch,
                _ => continue,
            };
            // A replica whose log failed (a disk fault) stops following: the controller drops
            // it from the ISR.
            let failed = self
                .partitions
                .get(&replica.tp.topic, replica.tp.partition)
                .is_some_and(|log| log.failure().is_some());
            if failed {
                continue;
            }
            by_topic
                .entry(replica.tp.topic.clone())
                .or_default()
                .push(Followed { replica, epoch });
        }
        by_topic
    }

    async fn run_fetcher(self: Rc<Self>, leader: i32) {
        let me = self.config.node_id;
        let mut connection: Option<Box<dyn BrokerStream>> = None;
        let listener = self.config.security.inter_broker_listener_name();
        let mut correlation_id = 0i32;
        tracing::info!("shard {}: fetching from broker {leader}", self.id);
        loop {
            let fetching = self
                .cluster
                .as_ref()
                .is_some_and(|c| c.fetching.load(std::sync::atomic::Ordering::SeqCst));
            if self.stop.load(std::sync::atomic::Ordering::Relaxed) || !fetching {
                return;
            }
            let followed = self.followed_from(leader);
            if followed.is_empty() {
                tracing::info!(
                    "shard {}: no partition follows broker {leader} now",
                    self.id
                );
                return;
            }
            let address = self.cluster_view().and_then(|view| {
                let (host, port) = view.brokers.get(&leader)?.endpoint(&listener)?;
                Some((host.to_string(), port))
            });
            let Some((host, port)) = address else {
                glommio::timer::sleep(BACKOFF).await;
                continue;
            };
            if connection.is_none() {
                match connect(&self, &host, port).await {
                    Ok(mut stream) => {
                        if let Some(sasl) = &self.config.inter_broker_sasl {
                            let step = inter_broker::authenticate(
                                &mut stream,
                                sasl,
                                CLIENT_ID,
                                &mut correlation_id,
                            );
                            let bounded = futures_lite::future::or(step, async {
                                glommio::timer::sleep(RESPONSE_TIMEOUT).await;
                                Err(format!("no answer within {RESPONSE_TIMEOUT:?}"))
                            });
                            if let Err(err) = bounded.await {
                                tracing::warn!(
                                    "shard {}: authenticating to broker {leader} at \
                                     {host}:{port}: {err}",
                                    self.id
                                );
                                glommio::timer::sleep(AUTHENTICATION_BACKOFF).await;
                                continue;
                            }
                        }
                        connection = Some(stream);
                    }
                    Err(err) => {
                        tracing::debug!("connecting to broker {leader} ({listener}): {err}");
                        glommio::timer::sleep(BACKOFF).await;
                        continue;
                    }
                }
            }
            let request = FetchRequest::default()
                .with_replica_id(BrokerId(me))
                .with_max_wait_ms(FETCH_MAX_WAIT_MS)
                .with_min_bytes(1)
                .with_max_bytes(FETCH_MAX_BYTES)
                .with_session_epoch(-1)
                .with_topics(
                    followed
                        .iter()
                        .map(|(topic, partitions)| {
                            FetchTopic::default()
                                .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                                .with_partitions(
                                    partitions
                                        .iter()
                                        .filter_map(|f| self.fetch_partition(f))
                                        .collect(),
                                )
                        })
                        .collect(),
                );
            correlation_id = correlation_id.wrapping_add(1);
            let stream = connection.as_mut().expect("connected above");
            // A fetch held by the leader does not name partitions this shard started to
            // follow since it went out (a new topic's): when the followed set changes, drop
            // the connection (and the held fetch) and ask again at once.
            let asked: Vec<(String, i32)> = followed
                .values()
                .flatten()
                .map(|f| (f.replica.tp.topic.clone(), f.replica.tp.partition))
                .collect();
            let deadline = std::time::Instant::now() + RESPONSE_TIMEOUT;
            let response = {
                let exchange = exchange(stream, &request, correlation_id);
                futures_lite::pin!(exchange);
                loop {
                    let changed = self.cluster.as_ref().map(|c| c.followers_changed.wait());
                    let outcome = futures_lite::future::or(
                        async { Some(Some((&mut exchange).await)) },
                        async {
                            let left =
                                deadline.saturating_duration_since(std::time::Instant::now());
                            match changed {
                                Some(changed) => {
                                    futures_lite::future::or(
                                        async {
                                            changed.await;
                                            Some(None)
                                        },
                                        async {
                                            glommio::timer::sleep(left).await;
                                            None
                                        },
                                    )
                                    .await
                                }
                                None => {
                                    glommio::timer::sleep(left).await;
                                    None
                                }
                            }
                        },
                    )
                    .await;
                    match outcome {
                        Some(Some(result)) => break Some(result),
                        // The followed set moved: re-ask unless it is the same set.
                        Some(None) => {
                            let now: Vec<(String, i32)> = self
                                .followed_from(leader)
                                .values()
                                .flatten()
                                .map(|f| (f.replica.tp.topic.clone(), f.replica.tp.partition))
                                .collect();
                            if now != asked {
                                break Some(Err(FOLLOWED_CHANGED.to_string()));
                            }
                        }
                        None => break None,
                    }
                }
            };
            let response = match response {
                Some(Ok(response)) => response,
                Some(Err(err)) => {
                    connection = None;
                    if err != FOLLOWED_CHANGED {
                        tracing::debug!("fetching from broker {leader}: {err}");
                        glommio::timer::sleep(BACKOFF).await;
                    }
                    continue;
                }
                None => {
                    tracing::warn!("broker {leader} did not answer a fetch; reconnecting");
                    connection = None;
                    continue;
                }
            };
            let mut backoff = false;
            let mut writes = Vec::new();
            for topic in response.responses {
                let Some(partitions) = followed.get(topic.topic.0.as_str()) else {
                    continue;
                };
                for answer in topic.partitions {
                    let Some(f) = partitions
                        .iter()
                        .find(|f| f.replica.tp.partition == answer.partition_index)
                    else {
                        continue;
                    };
                    // Leadership moved while the request was out: drop the answer.
                    let still = matches!(&*f.replica.role.borrow(),
                        Role::Follower { leader: l, epoch, .. } if *l == leader && *epoch == f.epoch);
                    if !still {
                        continue;
                    }
                    let log_end = self
                        .partitions
                        .get(&f.replica.tp.topic, f.replica.tp.partition)
                        .map_or(0, |log| log.log_end_offset());
                    if answer.error_code == codes::OFFSET_OUT_OF_RANGE
                        && answer.log_start_offset > log_end
                    {
                        let (shard, replica) = (self.clone(), f.replica.clone());
                        let start = answer.log_start_offset;
                        let work = glommio::spawn_local(async move {
                            shard.restart_follower_at(&replica, start).await
                        })
                        .detach();
                        writes.push((f.replica.clone(), work));
                        continue;
                    }
                    if answer.error_code != codes::NONE {
                        tracing::debug!(
                            "{}: broker {leader} answered error {}",
                            f.replica.tp,
                            answer.error_code
                        );
                        backoff = true;
                        continue;
                    }
                    let diverging = &answer.diverging_epoch;
                    let shard = self.clone();
                    let replica = f.replica.clone();
                    // Each partition's truncation or append runs as its own task, so the
                    // writes of one answer proceed together; the next fetch waits for all.
                    let work = if diverging.end_offset >= 0 {
                        let offset = crate::cluster::replica::truncation_offset(
                            &f.replica.cache.borrow(),
                            diverging.epoch,
                            diverging.end_offset,
                            log_end,
                        );
                        glommio::spawn_local(async move {
                            shard.truncate_follower(&replica, offset).await
                        })
                        .detach()
                    } else {
                        let whole = whole_batches(answer.records.unwrap_or_default());
                        let high_watermark = answer.high_watermark;
                        let leader_log_start = answer.log_start_offset;
                        glommio::spawn_local(async move {
                            shard
                                .append_as_follower(&replica, &whole, high_watermark)
                                .await?;
                            shard.follow_log_start(&replica, leader_log_start).await
                        })
                        .detach()
                    };
                    writes.push((f.replica.clone(), work));
                }
            }
            for (replica, work) in writes {
                let result = work
                    .await
                    .unwrap_or_else(|| Err("the write task was cancelled".into()));
                if let Err(err) = result {
                    tracing::warn!("{}: replicating from broker {leader}: {err}", replica.tp);
                    backoff = true;
                }
            }
            if backoff {
                glommio::timer::sleep(BACKOFF).await;
            }
        }
    }

    fn fetch_partition(&self, f: &Followed) -> Option<FetchPartition> {
        let log = self
            .partitions
            .get(&f.replica.tp.topic, f.replica.tp.partition)?;
        Some(
            FetchPartition::default()
                .with_partition(f.replica.tp.partition)
                .with_current_leader_epoch(f.epoch)
                .with_fetch_offset(log.log_end_offset())
                .with_last_fetched_epoch(f.replica.cache.borrow().latest_epoch().unwrap_or(-1))
                .with_log_start_offset(log.log_start_offset())
                .with_partition_max_bytes(PARTITION_MAX_BYTES),
        )
    }
}

/// The complete batches at the front of a Fetch answer's records (a batch cut by the size
/// limit comes again in the next fetch).
fn whole_batches(records: Bytes) -> Bytes {
    let total: usize = complete_batches(records.clone())
        .iter()
        .map(|b| b.len())
        .sum();
    records.slice(..total)
}

/// One request and its answer on `stream`.
async fn exchange(
    stream: &mut Box<dyn BrokerStream>,
    request: &FetchRequest,
    correlation_id: i32,
) -> Result<FetchResponse, String> {
    round_trip(
        stream,
        request,
        FETCH_VERSION,
        correlation_id,
        CLIENT_ID,
        usize::MAX,
    )
    .await
}
