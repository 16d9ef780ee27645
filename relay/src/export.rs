//! The relay's OTLP exporter: the cluster's flows, from one place, as OpenTelemetry log records
//! (the agent's exporter, `flowscope-otlp`), and the relay's own metrics.
//!
//! At start the relay opens a following GetFlows of its own across every agent: the same
//! fan-out and merge a client gets ([`crate::flows`]), so agents found later join it, an agent
//! that comes back resumes just after the last flow exported, and an agent that is down is
//! waited for. It asks for the flows since the relay started (an agent connecting later sends
//! what its history kept since then), with the `--otlp-allowlist`/`--otlp-denylist` filters
//! passed down to the agents (which apply Hubble's semantics, as the exporter does again) and
//! the flowscope extension (for `flow.kernel_drop_reason`).
//!
//! The task reading that stream hands each flow's bytes, as the agent encoded them, to the
//! exporter with a `try_send`: it never waits for the exporter, so the merge never waits for a
//! receiver that is down or slow; a full queue drops the flow and counts it
//! (`flowscope_otlp_dropped_total{reason="queue_full"}`). The bytes become a `flow.Flow` on the
//! exporter's task only. Node status and loss notices are not exported (as the agent does not
//! export its own loss notices).

use std::sync::Arc;
use std::time::Duration;

use flowscope_otlp::{EncodedFlow, Exporter, OtlpOptions};
use flowscope_proto::flow::FlowFilter;
use flowscope_proto::observer::GetFlowsRequest;
use flowscope_proto::wkt::Timestamp;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::RelayError;
use crate::flows::{FlowStream, FlowsSettings, get_flows};
use crate::metrics::{Metrics, OtlpMetrics};
use crate::pool::PeerPool;
use crate::wire::Event;

/// `service.name` of the relay's OTLP resource.
pub(crate) const SERVICE_NAME: &str = "flowscope-relay";

/// How long a stopping relay waits for the exporter to send what it holds.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The exporter, started; its flows come once [`OtlpExport::follow`] runs.
pub(crate) struct OtlpExport {
    exporter: Exporter<EncodedFlow>,
    /// `--otlp-allowlist`, passed down to the agents.
    allowlist: Vec<FlowFilter>,
    /// `--otlp-denylist`, passed down to the agents.
    denylist: Vec<FlowFilter>,
}

impl OtlpExport {
    /// Validates the options and starts the exporter (nothing is connected yet).
    pub(crate) fn start(opts: OtlpOptions, relay_name: &str) -> Result<Self, RelayError> {
        let (allowlist, denylist) = (opts.allowlist.clone(), opts.denylist.clone());
        let origin = flowscope_otlp::Origin {
            instance: relay_name,
            node: None,
        };
        let exporter = Exporter::start(opts, origin)?;
        Ok(OtlpExport {
            exporter,
            allowlist,
            denylist,
        })
    }

    /// The `flowscope_otlp_*` series, for the relay's `/metrics`.
    pub(crate) fn collector(&self) -> Box<dyn prometheus_client::collector::Collector> {
        self.exporter.collector()
    }

    /// Opens the relay's own following GetFlows and returns the task that feeds the exporter
    /// from it (and pushes the relay's metrics) until `shutdown`.
    pub(crate) fn follow(
        mut self,
        pool: PeerPool,
        settings: Arc<FlowsSettings>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Result<impl std::future::Future<Output = ()> + Send + 'static, RelayError> {
        let request = GetFlowsRequest {
            follow: true,
            since: Some(Timestamp::now()),
            whitelist: std::mem::take(&mut self.allowlist),
            blacklist: std::mem::take(&mut self.denylist),
            ..GetFlowsRequest::default()
        };
        let stream = get_flows(
            pool,
            settings,
            metrics.clone(),
            shutdown.clone(),
            request,
            true,
        )
        .map_err(RelayError::OtlpFlows)?;
        self.exporter
            .start_metrics(Some(Arc::new(OtlpMetrics(metrics))));
        info!("exporting the cluster's flows over OTLP/gRPC");
        Ok(feed(self.exporter, stream, shutdown))
    }
}

/// Hands every flow of `stream` to the exporter (never waiting for it) until `shutdown`, then
/// lets the exporter send what it holds, for at most [`CLOSE_TIMEOUT`].
async fn feed(
    exporter: Exporter<EncodedFlow>,
    mut stream: FlowStream,
    shutdown: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = stream.next() => next,
        };
        match next {
            Some(Ok(resp)) => {
                if let Some(Event::Flow(bytes)) = resp.event {
                    exporter.push(EncodedFlow(bytes));
                }
            }
            Some(Err(status)) => {
                if !shutdown.is_cancelled() {
                    warn!(error = %status.message(), "the OTLP exporter's flow stream failed; no more flows are exported");
                }
                break;
            }
            None => {
                if !shutdown.is_cancelled() {
                    warn!("the OTLP exporter's flow stream ended; no more flows are exported");
                }
                break;
            }
        }
    }
    exporter.close(CLOSE_TIMEOUT).await;
}
