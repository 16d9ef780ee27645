//! The agent's Prometheus metrics, served on `--metrics-listen-address` (default `:9965`, like
//! Hubble; an empty address turns them off).
//!
//! - [`hubble`]: Hubble's flow metrics (`hubble_flows_processed_total`, `hubble_drop_total`, …),
//!   chosen and labelled by `--metrics` in Hubble's syntax ([`options`]), so that Hubble's
//!   dashboards and alerts work unchanged. The pipeline calls [`FlowMetrics::observe_flow`] for
//!   every flow: a read lock and an atomic add per metric, no allocation for series that exist.
//! - [`pipeline`]: flowscope's own series (events read and lost per stage, datapath counters,
//!   ring-buffer fill, interfaces, subscribers, history, export, build info), read from the
//!   counters the pipeline keeps anyway, only when scraped.
//!
//! Cardinality is bounded: series whose labels name endpoints (`sourceContext`, …) are removed
//! after `--metrics-series-ttl` without a flow, and no Hubble metric holds more than
//! [`hubble::MAX_SERIES_PER_METRIC`] series (`flowscope_metrics_series*` show both).

mod family;
pub mod hubble;
pub mod options;
pub mod pipeline;
pub mod ring;
pub mod server;
pub mod view;

use std::{net::SocketAddr, os::fd::AsFd, sync::Arc, time::Duration};

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use hubble::FlowMetrics;
pub use options::{MetricSpec, MetricsOptionError, parse_metrics};
pub use ring::RingFill;

use crate::{export::ExportStats, service::AgentState};

/// Metrics options of one agent run.
#[derive(Clone, Debug)]
pub struct MetricsOptions {
    /// Where `/metrics` is served; `None` turns metrics off.
    pub listen: Option<SocketAddr>,
    /// The Hubble flow metrics to compute.
    pub metrics: Vec<MetricSpec>,
    /// How long a series with endpoint labels lives without flows.
    pub series_ttl: Duration,
}

/// `--metrics-listen-address`: `:9965` (every address), `host:port`, or empty (off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenAddress(pub Option<SocketAddr>);

/// Parses a [`ListenAddress`].
pub fn parse_listen_address(s: &str) -> Result<ListenAddress, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(ListenAddress(None));
    }
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_owned()
    };
    full.parse().map(|a| ListenAddress(Some(a))).map_err(|_| {
        format!("expected an address like :9965 or 127.0.0.1:9965 (empty: off), got {s:?}")
    })
}

/// Metrics before the pipeline runs: the listener is bound (so that a port in use stops the
/// agent before it attaches anything), the ring buffer to watch is remembered.
pub struct Metrics {
    opts: MetricsOptions,
    listener: Option<TcpListener>,
    ring: Option<RingFill>,
}

impl Metrics {
    /// Binds the metrics listener, if metrics are on.
    pub async fn bind(opts: &MetricsOptions) -> anyhow::Result<Self> {
        let listener = match opts.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("--metrics-listen-address {addr}"))?,
            ),
            None => None,
        };
        Ok(Metrics {
            opts: opts.clone(),
            listener,
            ring: None,
        })
    }

    /// Watches how full the ring buffer `fd` (of `bytes`) is; without it, the fill gauge is
    /// just absent.
    pub fn watch_ring(&mut self, ring: &impl AsFd, bytes: u32) {
        if self.listener.is_none() {
            return;
        }
        match RingFill::new(ring.as_fd(), bytes) {
            Ok(r) => self.ring = Some(r),
            Err(e) => warn!("cannot map the ring buffer positions (no fill gauge): {e}"),
        }
    }

    /// Starts serving. `observe_flow` must then be called for every flow on
    /// [`Running::flows`].
    pub fn start(
        self,
        state: Arc<AgentState>,
        export: Option<Arc<ExportStats>>,
        extra: Vec<Box<dyn prometheus_client::collector::Collector>>,
        shutdown: CancellationToken,
    ) -> Running {
        let Some(listener) = self.listener else {
            return Running {
                flows: None,
                task: None,
            };
        };
        let flows = Arc::new(FlowMetrics::new(&self.opts.metrics, self.opts.series_ttl));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(flows.clone()));
        registry.register_collector(Box::new(pipeline::PipelineCollector::new(
            state, self.ring, export,
        )));
        // Other parts' own health (the Kubernetes source's API status).
        for c in extra {
            registry.register_collector(c);
        }
        if let Ok(addr) = listener.local_addr() {
            let enabled: Vec<String> = self.opts.metrics.iter().map(|m| m.to_string()).collect();
            info!(%addr, metrics = ?enabled, "serving metrics on /metrics");
        }
        let ticker = flows.clone();
        let task = tokio::spawn(async move {
            let serve = server::serve(listener, Arc::new(registry), shutdown.clone());
            let tick = async {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                loop {
                    every.tick().await;
                    ticker.tick();
                }
            };
            tokio::select! {
                _ = serve => {}
                _ = tick => {}
                _ = shutdown.cancelled() => {}
            }
        });
        Running {
            flows: Some(flows),
            task: Some(task),
        }
    }
}

/// Metrics being served.
pub struct Running {
    flows: Option<Arc<FlowMetrics>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    /// The flow metrics, when metrics are on.
    pub fn flows(&self) -> Option<Arc<FlowMetrics>> {
        self.flows.clone()
    }

    /// Waits for the server to stop (after the shutdown token fired).
    pub async fn stopped(self) {
        if let Some(t) = self.task {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen_address(""), Ok(ListenAddress(None)));
        assert_eq!(
            parse_listen_address(":9965"),
            Ok(ListenAddress(Some("0.0.0.0:9965".parse().unwrap())))
        );
        assert_eq!(
            parse_listen_address("127.0.0.1:1"),
            Ok(ListenAddress(Some("127.0.0.1:1".parse().unwrap())))
        );
        assert!(parse_listen_address("9965").is_err());
    }
}
