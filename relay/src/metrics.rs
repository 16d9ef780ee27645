//! The relay's own Prometheus metrics and the HTTP endpoint serving them.
//!
//! Label values come from closed enums (node states), never from addresses
//! or node names: one series per state whatever the cluster size.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::peer::PeerState;

/// Label set of `flowscope_relay_nodes`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeStateLabels {
    state: PeerState,
}

impl EncodeLabelValue for PeerState {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

const NODES_HELP: &str = "Agents known to the relay, by connection state";
const FLOWS_RELAYED_HELP: &str = "Flows sent to clients";
const NODE_ERRORS_HELP: &str = "Failed calls to agents (probes and flow streams)";
const CLIENTS_HELP: &str = "GetFlows streams being served";
const LOST_EVENTS_HELP: &str = "Events dropped because a following client read too slowly";

/// The relay's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    nodes: Family<NodeStateLabels, Gauge>,
    flows_relayed: Counter,
    node_errors: Counter,
    clients: Gauge,
    lost_events: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them (prefix `flowscope_relay_`).
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let registry = registry.sub_registry_with_prefix("flowscope_relay");
        registry.register("nodes", NODES_HELP, metrics.nodes.clone());
        registry.register(
            "flows_relayed",
            FLOWS_RELAYED_HELP,
            metrics.flows_relayed.clone(),
        );
        registry.register("node_errors", NODE_ERRORS_HELP, metrics.node_errors.clone());
        registry.register("clients", CLIENTS_HELP, metrics.clients.clone());
        registry.register("lost_events", LOST_EVENTS_HELP, metrics.lost_events.clone());
        metrics
    }

    /// Sets the number of agents in each state.
    pub(crate) fn set_nodes(&self, counts: &[(PeerState, usize)]) {
        for (state, count) in counts {
            let value = i64::try_from(*count).unwrap_or(i64::MAX);
            self.nodes
                .get_or_create(&NodeStateLabels { state: *state })
                .set(value);
        }
    }

    pub(crate) fn flow_relayed(&self) {
        self.flows_relayed.inc();
    }

    pub(crate) fn node_error(&self) {
        self.node_errors.inc();
    }

    pub(crate) fn lost_event(&self) {
        self.lost_events.inc();
    }

    /// Counts a client until the guard is dropped.
    pub(crate) fn client(self: &Arc<Self>) -> ClientGuard {
        self.clients.inc();
        ClientGuard(self.clone())
    }
}

/// The relay's metrics for the OTLP exporter: the same series as `/metrics`, counters as
/// cumulative monotonic sums named without `_total` (as the agent pushes Hubble's), gauges as
/// gauges.
pub(crate) struct OtlpMetrics(pub Arc<Metrics>);

impl flowscope_otlp::MetricsSource for OtlpMetrics {
    fn metrics(
        &self,
        start: u64,
        now: u64,
    ) -> Vec<opentelemetry_proto::tonic::metrics::v1::Metric> {
        use flowscope_otlp::encode::{cumulative_sum, gauge, gauge_points};
        let m = &self.0;
        let sum = |name: &str, help: &str, value: u64| {
            cumulative_sum(name, help, vec![(Vec::new(), value)], start, now)
        };
        let nodes = PeerState::ALL.iter().map(|state| {
            let n = m
                .nodes
                .get(&NodeStateLabels { state: *state })
                .map_or(0, |g| g.get());
            (vec![("state".to_owned(), state.as_str().to_owned())], n)
        });
        vec![
            gauge_points("flowscope_relay_nodes", NODES_HELP, nodes, now),
            sum(
                "flowscope_relay_flows_relayed",
                FLOWS_RELAYED_HELP,
                m.flows_relayed.get(),
            ),
            sum(
                "flowscope_relay_node_errors",
                NODE_ERRORS_HELP,
                m.node_errors.get(),
            ),
            gauge(
                "flowscope_relay_clients",
                CLIENTS_HELP,
                m.clients.get(),
                now,
            ),
            sum(
                "flowscope_relay_lost_events",
                LOST_EVENTS_HELP,
                m.lost_events.get(),
            ),
        ]
    }
}

/// Decrements `flowscope_relay_clients` when dropped.
pub(crate) struct ClientGuard(Arc<Metrics>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.clients.dec();
    }
}

/// Serves `GET /metrics` (Prometheus text format) on `listener` until
/// `shutdown`.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>, shutdown: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    debug!(error = %err, "accepting a metrics connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let registry = registry.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(respond(&req, &registry)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                result = conn => if let Err(err) = result {
                    debug!(error = %err, "metrics connection");
                },
            }
        });
    }
}

fn respond<B>(req: &Request<B>, registry: &Registry) -> Response<Full<Bytes>> {
    let reply = |status, content_type: &'static str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(content_type),
        );
        response
    };
    if req.method() != hyper::Method::GET || req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "see /metrics\n".to_string(),
        );
    }
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body,
        ),
        Err(_) => {
            let mut body = String::new();
            let _ = writeln!(body, "encoding metrics failed");
            reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels() {
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::new(&mut registry));
        metrics.set_nodes(&[(PeerState::Connected, 2), (PeerState::Unavailable, 1)]);
        metrics.flow_relayed();
        metrics.node_error();
        metrics.lost_event();
        let guard = metrics.client();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "flowscope_relay_nodes{state=\"connected\"} 2",
            "flowscope_relay_nodes{state=\"unavailable\"} 1",
            "flowscope_relay_flows_relayed_total 1",
            "flowscope_relay_node_errors_total 1",
            "flowscope_relay_clients 1",
            "flowscope_relay_lost_events_total 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        // The same values for the OTLP exporter.
        use flowscope_otlp::MetricsSource as _;
        use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};
        let pushed = OtlpMetrics(metrics.clone()).metrics(1, 2);
        let value = |name: &str, state: Option<&str>| -> Option<i64> {
            let m = pushed.iter().find(|m| m.name == name)?;
            let points = match m.data.as_ref()? {
                Data::Sum(s) => &s.data_points,
                Data::Gauge(g) => &g.data_points,
                _ => return None,
            };
            let p = points.iter().find(|p| {
                state.is_none_or(|st| {
                    p.attributes.iter().any(|kv| {
                        kv.value.as_ref().and_then(|v| v.value.as_ref())
                            == Some(
                                &opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                                    st.into(),
                                ),
                            )
                    })
                })
            })?;
            match p.value? {
                Value::AsInt(v) => Some(v),
                Value::AsDouble(_) => None,
            }
        };
        assert_eq!(value("flowscope_relay_nodes", Some("connected")), Some(2));
        assert_eq!(value("flowscope_relay_nodes", Some("unavailable")), Some(1));
        assert_eq!(value("flowscope_relay_nodes", Some("error")), Some(0));
        assert_eq!(value("flowscope_relay_flows_relayed", None), Some(1));
        assert_eq!(value("flowscope_relay_node_errors", None), Some(1));
        assert_eq!(value("flowscope_relay_lost_events", None), Some(1));
        assert_eq!(value("flowscope_relay_clients", None), Some(1));
        drop(guard);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("flowscope_relay_clients 0"), "{text}");
    }
}
