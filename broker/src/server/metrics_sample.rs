//! The shard's side of the metrics that are costly to keep current: once a second (only when
//! the metrics endpoint is on) each shard copies its partitions' sizes, segments and offsets,
//! its per-partition traffic, its groups' committed offsets, glommio's counters of its rings
//! and, on the control shard in cluster mode, the cluster state it sees, into its
//! [`ShardSample`] for the scrape to read.

use std::rc::Rc;
use std::time::Duration;

use super::metrics::{ClusterSample, CommittedSample, IoSample, PartitionSample, ShardSample};
use super::replica::Role;
use super::replication;
use super::shard::Shard;

/// How often a shard refreshes its sample: gauges and per-partition series are at most this
/// old when scraped.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

impl Shard {
    /// Refreshes the sample every [`SAMPLE_INTERVAL`] until the task is cancelled.
    pub async fn run_metrics_sampler(self: Rc<Self>) {
        loop {
            let sample = self.metrics_sample();
            *self.metrics.sample() = sample;
            glommio::timer::sleep(SAMPLE_INTERVAL).await;
        }
    }

    fn metrics_sample(&self) -> ShardSample {
        let partitions = self
            .partitions
            .named()
            .into_iter()
            .map(|(topic, partition, log)| {
                let high_watermark = match self.partitions.replica(&topic, partition) {
                    Some(replica) => matches!(*replica.role.borrow(), Role::Leader(_))
                        .then(|| replica.high_watermark()),
                    None if self.cluster.is_none() => Some(log.promised_end_offset()),
                    None => None,
                };
                PartitionSample {
                    topic,
                    partition,
                    size_bytes: log.size_bytes(),
                    segments: log.segment_count() as u64,
                    log_start_offset: log.log_start_offset(),
                    log_end_offset: log.log_end_offset(),
                    high_watermark,
                }
            })
            .collect();
        let committed = self
            .groups
            .committed_offsets()
            .into_iter()
            .map(|(group, topic, partition, offset)| CommittedSample {
                group,
                topic,
                partition,
                offset,
            })
            .collect();
        let executor = glommio::executor();
        let rings = executor.io_stats().all_rings();
        let stats = executor.executor_stats();
        let (file_reads, file_read_bytes) = rings.file_reads();
        let (file_writes, file_written_bytes) = rings.file_writes();
        let io = IoSample {
            file_reads,
            file_read_bytes,
            file_writes,
            file_written_bytes,
            tasks_executed: stats.tasks_executed(),
            runtime_us: stats.total_runtime().as_micros() as u64,
        };
        ShardSample {
            partitions,
            traffic: self.traffic.snapshot(),
            committed,
            io,
            cluster: (self.id == 0).then(|| self.cluster_sample()).flatten(),
        }
    }

    /// The cluster as this broker sees it: Kafka's per-leader under-replicated and
    /// under-min-ISR counts, and on the controller the partitions without a leader.
    fn cluster_sample(&self) -> Option<ClusterSample> {
        let view = self.cluster_view()?;
        let me = self.config.node_id;
        let mut sample = ClusterSample {
            controller_id: view.controller,
            is_controller: view.controller == me,
            brokers: view.brokers.len() as u64,
            ..ClusterSample::default()
        };
        for (name, topic) in &view.topics {
            let min_insync = self
                .topic(name)
                .map_or(1, |t| replication::min_insync(self, &t));
            for partition in &topic.partitions {
                let Some(state) = &partition.state else {
                    continue;
                };
                match partition.leader() {
                    Some((leader, _)) if leader == me => {
                        sample.leaders += 1;
                        if state.isr.len() < partition.replicas.len() {
                            sample.under_replicated += 1;
                        }
                        if state.isr.len() < min_insync {
                            sample.under_min_isr += 1;
                        }
                    }
                    Some(_) => {}
                    None if sample.is_controller => sample.offline += 1,
                    None => {}
                }
            }
        }
        Some(sample)
    }
}
