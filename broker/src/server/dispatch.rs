//! Routes one request frame to its API handler and encodes the answer. A frame that cannot be
//! served (unknown API, unsupported version, malformed body) closes the connection, as Kafka
//! brokers do; ApiVersions and old Produce versions get their protocol-defined error answers.
//! Bodies decoded with kafka-protocol go through [`precheck`] first: one that declares more
//! elements or bytes than it holds closes the connection with the field and offset logged.
//!
//! Every request is checked against the ACLs (`--authorizer`) with the connection's
//! principal and host: the handlers get one [`Access`] per request and answer Kafka's
//! authorization errors for what it refuses.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, ApiKey, CreateAclsRequest, CreateTopicsRequest,
    DeleteAclsRequest, DeleteRecordsRequest, DeleteTopicsRequest, DescribeAclsRequest,
    DescribeClusterRequest, DescribeConfigsRequest, DescribeUserScramCredentialsRequest,
    FetchRequest, InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest,
    MetadataRequest, OffsetForLeaderEpochRequest, ProduceRequest, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::kafka::frame::{self, Request};
use crate::kafka::response::{self, Response};
use crate::kafka::{codes, offsets_legacy, precheck, produce_legacy, versions};
use crate::security::access::Access;
use crate::security::authorizer::{operation, resource_type};
use crate::security::client::ClientIdentity;
use crate::security::sasl::ILLEGAL_SASL_STATE;

use super::reassign_api;
use super::shard::Shard;
use super::topic_admin;
use super::{
    acl_api, fetch, group_api, list_offsets, metadata, offset_for_leader_epoch, produce,
    records_admin, scram_api,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, ElectLeadersRequest, ListPartitionReassignmentsRequest,
};

/// Why a connection is closed after a request.
#[derive(Debug)]
pub struct Close(pub String);

/// What serving a request tells its connection besides the answer.
#[derive(Default)]
pub struct RequestContext {
    /// Time the handler waited on others (the fetch long-poll), microseconds.
    pub remote_us: std::cell::Cell<u64>,
    /// Which shards own the partitions a Produce or Fetch named.
    pub route: std::cell::Cell<Route>,
}

/// Where the partitions of one Produce or Fetch live, seen from the shard serving it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Route {
    /// No partitions (other requests; unknown topics).
    #[default]
    None,
    /// All on this shard.
    Here,
    /// All on this other shard.
    Only(usize),
    /// On several shards.
    Mixed,
}

impl Route {
    /// Adds a partition owned by shard `owner`; `here` is the serving shard.
    pub fn with(self, owner: usize, here: usize) -> Route {
        let one = if owner == here {
            Route::Here
        } else {
            Route::Only(owner)
        };
        match self {
            Route::None => one,
            same if same == one => same,
            _ => Route::Mixed,
        }
    }
}

type Outcome = Result<Option<Response>, Close>;

/// Decodes the body with kafka-protocol once the pre-pass found every declared length within
/// it (the decoder reserves memory by declared counts before reading).
pub(super) fn decode<T: Decodable>(request: &mut Request) -> Result<T, Close> {
    precheck::check(request.api_key, request.api_version, &request.body).map_err(|err| {
        Close(format!(
            "refused {:?} v{} request (api key {}): {err}",
            request.api_key, request.api_version, request.api_key as i16
        ))
    })?;
    T::decode(&mut request.body, request.api_version).map_err(|err| {
        Close(format!(
            "malformed {:?} v{} request: {err}",
            request.api_key, request.api_version
        ))
    })
}

pub(super) fn answer<T: Encodable>(request: &Request, body: &T) -> Outcome {
    Ok(Some(encode_answer(request, body)))
}

/// The answer frame of `request` with `body`.
pub(super) fn encode_answer<T: Encodable>(request: &Request, body: &T) -> Response {
    let header_version = request.api_key.response_header_version(request.api_version);
    Response::memory(response::encode(
        request.correlation_id,
        header_version,
        body,
        request.api_version,
    ))
}

/// Serves one frame (size prefix already removed).
/// `client` is who sent it (principal and address); handlers add the time they wait on
/// others (the fetch long-poll) to `context`, and the route of a Produce or Fetch.
pub async fn handle(
    shard: Rc<Shard>,
    frame: Bytes,
    client: Rc<ClientIdentity>,
    context: &RequestContext,
) -> Outcome {
    let request = frame::parse(frame).map_err(|err| Close(err.to_string()))?;
    let key = request.api_key;
    if key == ApiKey::ApiVersions {
        return Ok(Some(Response::memory(versions::api_versions_response(
            request.correlation_id,
            request.api_version,
        ))));
    }
    check_version(key, request.api_version)?;
    let access = shard.access(&client);
    match key {
        ApiKey::Produce
        | ApiKey::Fetch
        | ApiKey::ListOffsets
        | ApiKey::OffsetForLeaderEpoch
        | ApiKey::InitProducerId => data_request(&shard, request, &access, context).await,
        ApiKey::FindCoordinator
        | ApiKey::JoinGroup
        | ApiKey::SyncGroup
        | ApiKey::Heartbeat
        | ApiKey::LeaveGroup
        | ApiKey::OffsetCommit
        | ApiKey::OffsetFetch
        | ApiKey::ListGroups
        | ApiKey::DescribeGroups
        | ApiKey::DeleteGroups
        | ApiKey::OffsetDelete => group_request(&shard, request, &access, &client).await,
        ApiKey::CreateAcls
        | ApiKey::DescribeAcls
        | ApiKey::DeleteAcls
        | ApiKey::SaslHandshake
        | ApiKey::SaslAuthenticate
        | ApiKey::DescribeUserScramCredentials
        | ApiKey::AlterUserScramCredentials => security_request(&shard, request, &access).await,
        _ => admin_request(&shard, request, &access, &client).await,
    }
}

/// The route of a request naming these partitions (unknown topics and partitions count for
/// nothing). A single shard has no other to route to: the partitions are not even looked at.
fn route(
    shard: &Shard,
    partitions: impl Iterator<Item = (Option<Rc<crate::topics::Topic>>, i32)>,
) -> Route {
    if shard.shard_count == 1 {
        return Route::None;
    }
    partitions
        .filter_map(|(topic, partition)| shard.owner(topic.as_deref()?, partition))
        .fold(Route::None, |route, owner| route.with(owner, shard.id))
}

/// Refuses an API this broker does not serve, or a version of it outside what it serves.
fn check_version(key: ApiKey, version: i16) -> Result<(), Close> {
    let (min, max) = versions::range(key)
        .ok_or_else(|| Close(format!("unsupported api {key:?} (key {})", key as i16)))?;
    if version < min || version > max {
        return Err(Close(format!(
            "unsupported version {version} of {key:?} (supported {min}..={max})"
        )));
    }
    Ok(())
}

fn not_served(key: ApiKey) -> Outcome {
    Err(Close(format!("api {key:?} is not served yet")))
}

/// The data path: produce, fetch, offsets by time or epoch, producer ids.
async fn data_request(
    shard: &Rc<Shard>,
    mut request: Request,
    access: &Access,
    context: &RequestContext,
) -> Outcome {
    let key = request.api_key;
    let version = request.api_version;
    match key {
        ApiKey::Produce if version < versions::PRODUCE_VERSION_MIN_ACCEPTED => {
            match produce_legacy::refuse(request.correlation_id, version, request.body) {
                None => Ok(None),
                Some(Ok(frame)) => Ok(Some(Response::memory(frame))),
                Some(Err(())) => Err(Close(format!("malformed Produce v{version} request"))),
            }
        }
        ApiKey::Produce => {
            let body: ProduceRequest = decode(&mut request)?;
            context.route.set(route(
                shard,
                body.topic_data.iter().flat_map(|t| {
                    let topic = shard.topic(t.name.0.as_str());
                    t.partition_data
                        .iter()
                        .map(move |p| (topic.clone(), p.index))
                }),
            ));
            match produce::handle(shard, access, body, version).await {
                Some(reply) => answer(&request, &reply),
                None => Ok(None),
            }
        }
        ApiKey::Fetch => {
            let body: FetchRequest = decode(&mut request)?;
            context.route.set(route(
                shard,
                body.topics.iter().flat_map(|t| {
                    let topic = if version >= 13 {
                        shard.topic_by_id(t.topic_id.as_bytes())
                    } else {
                        shard.topic(t.topic.0.as_str())
                    };
                    t.partitions
                        .iter()
                        .map(move |p| (topic.clone(), p.partition))
                }),
            ));
            Ok(Some(
                fetch::handle(
                    shard,
                    access,
                    body,
                    version,
                    request.correlation_id,
                    &context.remote_us,
                )
                .await,
            ))
        }
        ApiKey::ListOffsets => {
            let body: ListOffsetsRequest = decode(&mut request)?;
            let reply = list_offsets::handle(shard, access, body, version).await;
            answer(&request, &reply)
        }
        ApiKey::OffsetForLeaderEpoch => {
            let body: OffsetForLeaderEpochRequest = decode(&mut request)?;
            answer(
                &request,
                &offset_for_leader_epoch::handle(shard, access, body).await,
            )
        }
        ApiKey::InitProducerId => {
            let body: InitProducerIdRequest = decode(&mut request)?;
            answer(&request, &init_producer_id(shard, access, &body).await)
        }
        _ => not_served(key),
    }
}

/// Consumer groups: membership, offsets, and their administration.
async fn group_request(
    shard: &Rc<Shard>,
    mut request: Request,
    access: &Access,
    client: &ClientIdentity,
) -> Outcome {
    let key = request.api_key;
    let version = request.api_version;
    match key {
        ApiKey::FindCoordinator => {
            let body = decode(&mut request)?;
            answer(
                &request,
                &group_api::find_coordinator(shard, access, body, version, client.listener),
            )
        }
        ApiKey::JoinGroup => {
            let body = decode(&mut request)?;
            let client_id = std::mem::take(&mut request.client_id);
            let reply =
                group_api::join_group(shard, access, body, version, &client_id, &client.peer).await;
            answer(&request, &reply)
        }
        ApiKey::SyncGroup => {
            let body = decode(&mut request)?;
            answer(
                &request,
                &group_api::sync_group(shard, access, body, version).await,
            )
        }
        ApiKey::Heartbeat => {
            let body = decode(&mut request)?;
            answer(&request, &group_api::heartbeat(shard, access, body).await)
        }
        ApiKey::LeaveGroup => {
            let body = decode(&mut request)?;
            answer(
                &request,
                &group_api::leave_group(shard, access, body, version).await,
            )
        }
        ApiKey::OffsetCommit if version < 2 => {
            let legacy = offsets_legacy::decode_offset_commit(&mut request.body, version).map_err(
                |err| Close(format!("malformed OffsetCommit v{version} request: {err}")),
            )?;
            let reply = group_api::offset_commit_at(
                shard,
                access,
                legacy.request,
                version,
                &legacy.commit_timestamps_ms,
            )
            .await;
            let body = offsets_legacy::encode_offset_commit_response(&reply);
            Ok(Some(Response::memory(offsets_legacy::frame(
                request.correlation_id,
                &body,
            ))))
        }
        ApiKey::OffsetFetch if version == 0 => {
            let body = offsets_legacy::decode_offset_fetch_v0(&mut request.body)
                .map_err(|err| Close(format!("malformed OffsetFetch v0 request: {err}")))?;
            let reply = group_api::offset_fetch(shard, access, body, version).await;
            let body = offsets_legacy::encode_offset_fetch_v0_response(&reply);
            Ok(Some(Response::memory(offsets_legacy::frame(
                request.correlation_id,
                &body,
            ))))
        }
        ApiKey::OffsetCommit => {
            let body = decode(&mut request)?;
            answer(
                &request,
                &group_api::offset_commit(shard, access, body, version).await,
            )
        }
        ApiKey::OffsetFetch => {
            let body = decode(&mut request)?;
            answer(
                &request,
                &group_api::offset_fetch(shard, access, body, version).await,
            )
        }
        ApiKey::ListGroups => {
            let body = decode(&mut request)?;
            answer(
                &request,
                &group_api::list_groups(shard, access, body, version).await,
            )
        }
        ApiKey::DescribeGroups => {
            let body = decode(&mut request)?;
            answer(
                &request,
                &group_api::describe_groups(shard, access, body, version).await,
            )
        }
        ApiKey::DeleteGroups => {
            let body = decode(&mut request)?;
            answer(
                &request,
                &group_api::delete_groups(shard, access, body).await,
            )
        }
        ApiKey::OffsetDelete => {
            let body = decode(&mut request)?;
            answer(
                &request,
                &group_api::offset_delete(shard, access, body).await,
            )
        }
        _ => not_served(key),
    }
}

/// ACLs, SASL on a connection that no longer authenticates, and SCRAM credentials.
async fn security_request(shard: &Rc<Shard>, mut request: Request, access: &Access) -> Outcome {
    let key = request.api_key;
    match key {
        ApiKey::CreateAcls => {
            let body: CreateAclsRequest = decode(&mut request)?;
            answer(&request, &acl_api::create_acls(shard, access, body).await)
        }
        ApiKey::DescribeAcls => {
            let body: DescribeAclsRequest = decode(&mut request)?;
            answer(&request, &acl_api::describe_acls(shard, access, body))
        }
        ApiKey::DeleteAcls => {
            let body: DeleteAclsRequest = decode(&mut request)?;
            answer(&request, &acl_api::delete_acls(shard, access, body).await)
        }
        // On a PLAINTEXT listener, or after authentication (before it, the connection's
        // reader answers them: `sasl_api`), as Kafka answers them.
        ApiKey::SaslHandshake => {
            let _: SaslHandshakeRequest = decode(&mut request)?;
            let reply = SaslHandshakeResponse::default().with_error_code(ILLEGAL_SASL_STATE);
            answer(&request, &reply)
        }
        ApiKey::SaslAuthenticate => {
            let _: SaslAuthenticateRequest = decode(&mut request)?;
            let reply = SaslAuthenticateResponse::default().with_error_code(ILLEGAL_SASL_STATE);
            answer(&request, &reply)
        }
        // Kafka checks DESCRIBE (resp. ALTER) on the CLUSTER resource for these two.
        ApiKey::DescribeUserScramCredentials => {
            let body: DescribeUserScramCredentialsRequest = decode(&mut request)?;
            let allowed = access.cluster(operation::DESCRIBE);
            answer(&request, &scram_api::describe(shard, &body, allowed))
        }
        ApiKey::AlterUserScramCredentials => {
            let body: AlterUserScramCredentialsRequest = decode(&mut request)?;
            let allowed = access.cluster(operation::ALTER);
            answer(&request, &scram_api::alter(shard, &body, allowed).await)
        }
        _ => not_served(key),
    }
}

/// Cluster and topic metadata and administration: topics, configs, partitions, log
/// directories, records, reassignments.
async fn admin_request(
    shard: &Rc<Shard>,
    mut request: Request,
    access: &Access,
    client: &ClientIdentity,
) -> Outcome {
    let key = request.api_key;
    let version = request.api_version;
    match key {
        ApiKey::Metadata => {
            let body: MetadataRequest = decode(&mut request)?;
            let reply = metadata::handle(shard, access, body, version, client.listener).await;
            answer(&request, &reply)
        }
        ApiKey::CreateTopics => {
            let body: CreateTopicsRequest = decode(&mut request)?;
            let reply = topic_admin::create_topics(shard, access, body, version).await;
            answer(&request, &reply)
        }
        ApiKey::DeleteTopics => {
            let body: DeleteTopicsRequest = decode(&mut request)?;
            let reply = topic_admin::delete_topics(shard, access, body, version).await;
            answer(&request, &reply)
        }
        ApiKey::DescribeConfigs => {
            let body: DescribeConfigsRequest = decode(&mut request)?;
            let reply = topic_admin::describe_configs(shard, access, body, version);
            answer(&request, &reply)
        }
        ApiKey::DescribeCluster => {
            let body: DescribeClusterRequest = decode(&mut request)?;
            answer(
                &request,
                &metadata::describe_cluster(shard, &body, client.listener),
            )
        }
        ApiKey::DeleteRecords => {
            let body: DeleteRecordsRequest = decode(&mut request)?;
            answer(
                &request,
                &records_admin::delete_records(shard, access, body).await,
            )
        }
        ApiKey::DescribeProducers => {
            let body = decode(&mut request)?;
            answer(
                &request,
                &records_admin::describe_producers(shard, access, body).await,
            )
        }
        ApiKey::AlterConfigs => {
            let body = decode(&mut request)?;
            let reply = super::config_api::alter_configs(shard, access, body).await;
            answer(&request, &reply)
        }
        ApiKey::IncrementalAlterConfigs => {
            let body = decode(&mut request)?;
            let reply = super::config_api::incremental_alter_configs(shard, access, body).await;
            answer(&request, &reply)
        }
        ApiKey::CreatePartitions => {
            let body = decode(&mut request)?;
            let reply = super::partitions_api::create_partitions(shard, access, body).await;
            answer(&request, &reply)
        }
        ApiKey::DescribeLogDirs => {
            let body = decode(&mut request)?;
            let reply = super::log_dirs_api::describe_log_dirs(shard, access, body, version).await;
            answer(&request, &reply)
        }
        // Kafka checks ALTER (resp. DESCRIBE) on the CLUSTER resource for these.
        ApiKey::ElectLeaders => {
            let body: ElectLeadersRequest = decode(&mut request)?;
            let allowed = access.cluster(operation::ALTER);
            answer(
                &request,
                &reassign_api::elect_leaders(shard, body, allowed).await,
            )
        }
        ApiKey::AlterPartitionReassignments => {
            let body: AlterPartitionReassignmentsRequest = decode(&mut request)?;
            let allowed = access.cluster(operation::ALTER);
            answer(
                &request,
                &reassign_api::alter_reassignments(shard, body, allowed).await,
            )
        }
        ApiKey::ListPartitionReassignments => {
            let body: ListPartitionReassignmentsRequest = decode(&mut request)?;
            let allowed = access.cluster(operation::DESCRIBE);
            answer(
                &request,
                &reassign_api::list_reassignments(shard, &body, allowed),
            )
        }
        _ => not_served(key),
    }
}

/// Cluster mode: an id from this broker's block, reserving the next block in the coordinator
/// when it is used up.
async fn cluster_producer_id(shard: &Shard) -> Result<i64, String> {
    for _ in 0..3 {
        if let Some(id) = shard.producer_ids.try_allocate() {
            return Ok(id);
        }
        let cluster = shard.cluster.as_ref().ok_or("not in a cluster")?;
        let (tx, rx) = async_channel::bounded(1);
        cluster
            .commands
            .send(crate::cluster::Command::ProducerIdBlock {
                size: super::producer_ids::BLOCK,
                reply: tx,
            })
            .await
            .map_err(|_| "the cluster agent stopped".to_string())?;
        let (start, end) = rx
            .recv()
            .await
            .map_err(|_| "the cluster agent stopped".to_string())??;
        shard.producer_ids.install_block(start, end);
    }
    Err("other shards used up three blocks in a row".into())
}

/// InitProducerId for idempotent producers: as Kafka does without a transactional id, a new
/// producer id at epoch 0 every time (the id and epoch a v3+ client sends are not reused). A
/// transactional id is answered INVALID_REQUEST: there is no transaction coordinator.
/// With an authorizer, as Kafka: a transactional id needs WRITE on it
/// (TRANSACTIONAL_ID_AUTHORIZATION_FAILED), an idempotent producer IDEMPOTENT_WRITE on the
/// cluster or WRITE on some topic (CLUSTER_AUTHORIZATION_FAILED).
async fn init_producer_id(
    shard: &Shard,
    access: &Access,
    body: &InitProducerIdRequest,
) -> InitProducerIdResponse {
    let refused = |code| {
        InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id((-1).into())
            .with_producer_epoch(-1)
    };
    if let Some(id) = body.transactional_id.as_ref().filter(|t| !t.is_empty()) {
        if !access.allows(operation::WRITE, resource_type::TRANSACTIONAL_ID, id) {
            return refused(codes::TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
        }
        return refused(codes::INVALID_REQUEST);
    }
    if !access.cluster(operation::IDEMPOTENT_WRITE)
        && !access.any_of_type(operation::WRITE, resource_type::TOPIC)
    {
        return refused(codes::CLUSTER_AUTHORIZATION_FAILED);
    }
    if shard.producer_ids.uses_coordinator() {
        return match cluster_producer_id(shard).await {
            Ok(id) => InitProducerIdResponse::default()
                .with_producer_id(id.into())
                .with_producer_epoch(0),
            Err(err) => {
                tracing::warn!("shard {}: reserving producer ids: {err}", shard.id);
                InitProducerIdResponse::default()
                    .with_error_code(codes::COORDINATOR_NOT_AVAILABLE)
                    .with_producer_id((-1).into())
                    .with_producer_epoch(-1)
            }
        };
    }
    match shard.producer_ids.allocate() {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(id.into())
            .with_producer_epoch(0),
        Err(err) => {
            tracing::error!("shard {}: allocating a producer id: {err}", shard.id);
            InitProducerIdResponse::default()
                .with_error_code(codes::KAFKA_STORAGE_ERROR)
                .with_producer_id((-1).into())
                .with_producer_epoch(-1)
        }
    }
}
