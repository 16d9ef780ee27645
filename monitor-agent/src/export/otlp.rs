//! Flow and metric export over OTLP/gRPC: the agent's side of `flowscope-otlp` (the exporter,
//! shared with the relay; see its docs and docs/otlp.md). What is the agent's own: it queues
//! its flow records (the `flow.Flow` is built on the exporter's task, not on the decode path)
//! and the flows it builds already (L7), and pushes its Hubble metrics as OTLP sums.

use std::{borrow::Cow, sync::Arc, time::Duration};

use flowscope_otlp::{ExportItem, Exporter, MetricsSource, Origin};
use flowscope_proto::flow::Flow;
use opentelemetry_proto::tonic::metrics::v1::Metric;
use prometheus_client::collector::Collector;

pub use flowscope_otlp::{
    ConfigError, FlowEncoder, OtlpError, OtlpOptions, OtlpStats, config, encode, logs_request,
    retry,
};

use crate::{decode::record::FlowRecord, metrics::FlowMetrics};

/// What the pipeline hands over.
enum Queued {
    /// A flow built already.
    Flow(Arc<Flow>),
    /// A record: its flow is built by the exporter's task.
    Record(Arc<FlowRecord>),
}

impl ExportItem for Queued {
    fn flow(&self) -> Option<Cow<'_, Flow>> {
        match self {
            Queued::Flow(f) => Some(Cow::Borrowed(f.as_ref())),
            Queued::Record(r) => Some(Cow::Owned(r.to_flow())),
        }
    }
}

/// The Hubble series `/metrics` serves, as cumulative monotonic sums.
struct HubbleMetrics(Arc<FlowMetrics>);

impl MetricsSource for HubbleMetrics {
    fn metrics(&self, start: u64, now: u64) -> Vec<Metric> {
        self.0
            .families()
            .map(|family| {
                let mut points = Vec::new();
                family.for_each(|values, count| {
                    let labels = family
                        .label_names()
                        .iter()
                        .zip(values)
                        .map(|(k, v)| ((*k).to_owned(), v.to_string()))
                        .collect();
                    points.push((labels, count));
                });
                encode::cumulative_sum(family.name(), family.help(), points, start, now)
            })
            .collect()
    }
}

/// The pipeline's handle on the OTLP exporter.
pub struct OtlpExporter(Exporter<Queued>);

impl OtlpExporter {
    /// Validates the options and starts the sender task (on the current tokio runtime).
    /// `node_name` names the node in the resource. Nothing is connected yet: a receiver that
    /// is down is retried, not fatal.
    pub fn start(opts: OtlpOptions, node_name: &str) -> Result<Self, OtlpError> {
        let origin = Origin {
            instance: node_name,
            node: Some(node_name),
        };
        Exporter::start(opts, origin).map(OtlpExporter)
    }

    /// Starts pushing metrics every `metrics_interval` (if not zero): Hubble's series when
    /// `flows` is given (metrics on), and the exporter's own counters.
    pub fn start_metrics(&mut self, flows: Option<Arc<FlowMetrics>>) {
        let source = flows.map(|f| Arc::new(HubbleMetrics(f)) as Arc<dyn MetricsSource>);
        self.0.start_metrics(source);
    }

    /// Queues a flow for export; never blocks. A full queue counts the flow as dropped.
    pub fn push(&self, flow: &Arc<Flow>) {
        self.0.push(Queued::Flow(flow.clone()));
    }

    /// Queues the flow of a record (built on the exporter's task); never blocks.
    pub fn push_record(&self, rec: &Arc<FlowRecord>) {
        self.0.push(Queued::Record(rec.clone()));
    }

    /// The exporter's counters.
    pub fn stats(&self) -> Arc<OtlpStats> {
        self.0.stats()
    }

    /// The `flowscope_otlp_*` series for `/metrics`.
    pub fn collector(&self) -> Box<dyn Collector> {
        self.0.collector()
    }

    /// Stops accepting flows, sends what is queued and the last metrics, waiting at most
    /// `timeout`: a receiver that is down must not hold up the agent's shutdown.
    pub async fn close(self, timeout: Duration) {
        self.0.close(timeout).await;
    }
}
