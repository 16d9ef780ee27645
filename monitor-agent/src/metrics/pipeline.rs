//! flowscope's own series: the health of the pipeline from kernel to clients, read from the
//! counters the pipeline already keeps, at scrape time (nothing here touches the per-flow path).
//!
//! | series | from |
//! |---|---|
//! | `flowscope_build_info{version,component}` | the binary |
//! | `flowscope_events_read_total` | ring-buffer reader |
//! | `flowscope_events_lost_total{stage}` | `kernel_ring`, `decode_queue`, `history` (a reader fell behind), `export` |
//! | `hubble_lost_events_total{source}` | the same first three, with Hubble's names |
//! | `flowscope_decode_errors_total` | ring records the reader could not decode (of an unexpected size; the decoder itself rejects no event) |
//! | `flowscope_datapath_<counter>_total` | the kernel programs' per-CPU counters, summed |
//! | `flowscope_aggregation_ratio` | packets observed per event reported, since start |
//! | `flowscope_ring_buffer_fill_ratio`, `…_size_bytes`, `…_written_bytes_total` | the ring's positions |
//! | `flowscope_attached_interfaces{role}` | the datapath |
//! | `flowscope_subscribers` | GetFlows streams being served |
//! | `flowscope_history_flows`, `flowscope_history_capacity`, `flowscope_flows_seen_total` | the flow history |
//! | `flowscope_drops_unspecified_total` | drops without a kernel reason, left out |
//! | `flowscope_unanswered_connections_total{protocol}`, `flowscope_unanswered_untracked_total` | the unanswered-connection tracker |
//! | `flowscope_l7_flows_total{protocol}`, `flowscope_l7_unparsed_total{protocol,reason}`, `flowscope_l7_unmatched_responses_total{protocol}` | the L7 decoder: flows made, payloads that were no message (`malformed`) or cut before one (`truncated`), responses without their request |
//! | `flowscope_fqdn_cache_entries`, `flowscope_fqdn_cache_evictions_total` | the FQDN cache: addresses named, addresses evicted before their TTL |
//! | `flowscope_export_flows_total`, `flowscope_export_errors_total`, `flowscope_export_rotations_total` | the exporter |
//!
//! The datapath is behind a mutex that the interface follower holds while it attaches: a scrape
//! only `try_lock`s it and serves the last values read when it is busy.

use std::sync::{Arc, Mutex, atomic::Ordering};

use monitor_common::counter;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use super::ring::RingFill;
use crate::{export::ExportStats, kernel::ifaces::Role, service::AgentState};

/// What was last read from the datapath.
#[derive(Clone, Debug, Default)]
struct DatapathSnapshot {
    counters: [u64; counter::COUNT as usize],
    /// Attached interfaces by role: endpoint, uplink, host.
    roles: [u64; 3],
}

const ROLES: [Role; 3] = [Role::Endpoint, Role::Uplink, Role::Host];

/// The collector of flowscope's own series.
pub struct PipelineCollector {
    state: Arc<AgentState>,
    ring: Option<RingFill>,
    export: Option<Arc<ExportStats>>,
    last: Mutex<DatapathSnapshot>,
}

impl std::fmt::Debug for PipelineCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineCollector")
            .field("node", &self.state.node_name)
            .finish_non_exhaustive()
    }
}

impl PipelineCollector {
    /// A collector over the agent's state; `ring` and `export` when there are.
    pub fn new(
        state: Arc<AgentState>,
        ring: Option<RingFill>,
        export: Option<Arc<ExportStats>>,
    ) -> Self {
        PipelineCollector {
            state,
            ring,
            export,
            last: Mutex::default(),
        }
    }

    fn datapath(&self) -> DatapathSnapshot {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(dp) = self.state.datapath.try_lock() {
            last.counters = dp.counters();
            let mut roles = [0u64; 3];
            for a in dp.attached() {
                if let Some(i) = ROLES.iter().position(|r| *r == a.role) {
                    roles[i] += 1;
                }
            }
            last.roles = roles;
        }
        last.clone()
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    ConstCounter::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: V,
) -> std::fmt::Result {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// One metric with one label taking each value of a closed set.
fn labelled(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    label: &str,
    values: &[(&str, u64)],
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, ty)?;
    for &(value, v) in values {
        let l = [(label, value)];
        let m = m.encode_family(&l)?;
        match ty {
            MetricType::Counter => ConstCounter::new(v).encode(m)?,
            _ => ConstGauge::new(v).encode(m)?,
        }
    }
    Ok(())
}

impl Collector for PipelineCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.state;
        let dp = self.datapath();
        let c = |i: u32| dp.counters[i as usize];

        let mut info = e.encode_descriptor(
            "flowscope_build",
            "flowscope build information",
            None,
            MetricType::Info,
        )?;
        info.encode_info(&[
            ("version", env!("CARGO_PKG_VERSION")),
            ("component", "agent"),
        ])?;

        let read = s.reader.events_read.load(Ordering::Relaxed);
        counter(
            &mut e,
            "flowscope_events_read",
            "Events read from the kernel ring buffer",
            read,
        )?;
        let kernel = c(counter::RING_LOST);
        let queue = s.reader.queue_lost.load(Ordering::Relaxed);
        let history = s.pipeline.history_lost.load(Ordering::Relaxed);
        let export = self
            .export
            .as_ref()
            .map_or(0, |x| x.lost.load(Ordering::Relaxed));
        labelled(
            &mut e,
            "flowscope_events_lost",
            "Events lost, by pipeline stage: kernel_ring (ring buffer full), decode_queue (decoder behind), history (a client fell behind the flow history), export (export queue full or file not writable)",
            MetricType::Counter,
            "stage",
            &[
                ("kernel_ring", kernel),
                ("decode_queue", queue),
                ("history", history),
                ("export", export),
            ],
        )?;
        labelled(
            &mut e,
            "hubble_lost_events",
            "Number of lost events",
            MetricType::Counter,
            "source",
            &[
                ("perf_event_ring_buffer", kernel),
                ("observer_events_queue", queue),
                ("hubble_ring_buffer", history),
            ],
        )?;
        counter(
            &mut e,
            "flowscope_decode_errors",
            "Records of the kernel ring that could not be decoded (of an unexpected size)",
            s.reader.malformed.load(Ordering::Relaxed),
        )?;

        for (i, name) in counter::NAMES.iter().enumerate() {
            counter(
                &mut e,
                &format!("flowscope_datapath_{name}"),
                &format!("Kernel programs' counter {name}, summed over CPUs"),
                dp.counters[i],
            )?;
        }
        let (packets, events) = (c(counter::PACKETS_SEEN), c(counter::EVENTS_EMITTED));
        gauge(
            &mut e,
            "flowscope_aggregation_ratio",
            "Packets observed per event reported since start (1 without monitor aggregation)",
            if events == 0 {
                1.0
            } else {
                packets as f64 / events as f64
            },
        )?;

        if let Some(ring) = &self.ring {
            gauge(
                &mut e,
                "flowscope_ring_buffer_fill_ratio",
                "Share of the kernel ring buffer written and not yet read",
                ring.fill_ratio(),
            )?;
            gauge(
                &mut e,
                "flowscope_ring_buffer_size_bytes",
                "Size of the kernel ring buffer",
                ring.capacity(),
            )?;
            counter(
                &mut e,
                "flowscope_ring_buffer_written_bytes",
                "Bytes the kernel wrote into the ring buffer (record headers included)",
                ring.written_bytes(),
            )?;
        }
        let roles: Vec<(&str, u64)> = ROLES
            .iter()
            .zip(dp.roles)
            .map(|(r, n)| (r.as_str(), n))
            .collect();
        labelled(
            &mut e,
            "flowscope_attached_interfaces",
            "Interfaces the kernel programs are attached to, by role",
            MetricType::Gauge,
            "role",
            &roles,
        )?;
        gauge(
            &mut e,
            "flowscope_subscribers",
            "GetFlows streams being served",
            s.store.subscribers() as u64,
        )?;
        gauge(
            &mut e,
            "flowscope_history_flows",
            "Entries held in the flow history",
            s.store.len(),
        )?;
        gauge(
            &mut e,
            "flowscope_history_capacity",
            "Capacity of the flow history",
            s.store.capacity(),
        )?;
        counter(
            &mut e,
            "flowscope_flows_seen",
            "Flows stored in the history since start",
            s.store.seen_flows(),
        )?;
        counter(
            &mut e,
            "flowscope_drops_unspecified",
            "Packets the kernel freed without a drop reason (NOT_SPECIFIED), not reported as drops unless --report-unspecified-drops: parts of the kernel free processed packets that way",
            s.pipeline.unspecified_drops.load(Ordering::Relaxed),
        )?;
        let un = &s.unanswered_stats;
        labelled(
            &mut e,
            "flowscope_unanswered_connections",
            "Connections that got no reply before --unanswered-timeout (reported once each; not counted in Hubble's flow metrics, which count packets)",
            MetricType::Counter,
            "protocol",
            &[
                ("TCP", un.tcp.load(Ordering::Relaxed)),
                ("UDP", un.udp.load(Ordering::Relaxed)),
            ],
        )?;
        counter(
            &mut e,
            "flowscope_unanswered_untracked",
            "New connections not watched for a reply because the tracker's table was full",
            un.untracked.load(Ordering::Relaxed),
        )?;
        let l7 = &s.l7_stats;
        let get = |c: &[std::sync::atomic::AtomicU64; 2], i: usize| c[i].load(Ordering::Relaxed);
        labelled(
            &mut e,
            "flowscope_l7_flows",
            "L7 flows made from captured payloads",
            MetricType::Counter,
            "protocol",
            &[("dns", get(&l7.flows, 0)), ("http", get(&l7.flows, 1))],
        )?;
        let mut unparsed = e.encode_descriptor(
            "flowscope_l7_unparsed",
            "Captured payloads on L7 ports that gave no L7 flow: not a message start (malformed) or cut before one could be read (truncated)",
            None,
            MetricType::Counter,
        )?;
        for (i, protocol) in ["dns", "http"].into_iter().enumerate() {
            for (reason, v) in [
                ("malformed", get(&l7.malformed, i)),
                ("truncated", get(&l7.truncated, i)),
            ] {
                let l = [("protocol", protocol), ("reason", reason)];
                ConstCounter::new(v).encode(unparsed.encode_family(&l)?)?;
            }
        }
        labelled(
            &mut e,
            "flowscope_l7_unmatched_responses",
            "L7 responses whose request was not seen (no latency)",
            MetricType::Counter,
            "protocol",
            &[
                ("dns", get(&l7.unmatched, 0)),
                ("http", get(&l7.unmatched, 1)),
            ],
        )?;
        gauge(
            &mut e,
            "flowscope_fqdn_cache_entries",
            "Addresses the FQDN cache names (from DNS answers)",
            s.fqdn_stats.entries.load(Ordering::Relaxed),
        )?;
        counter(
            &mut e,
            "flowscope_fqdn_cache_evictions",
            "Addresses removed from the full FQDN cache before their TTL ran out",
            s.fqdn_stats.evictions.load(Ordering::Relaxed),
        )?;
        if let Some(x) = &self.export {
            counter(
                &mut e,
                "flowscope_export_flows",
                "Lines written to the export file: flows, and notices of events lost before the history",
                x.written.load(Ordering::Relaxed),
            )?;
            counter(
                &mut e,
                "flowscope_export_errors",
                "Failed operations on the export file (open, write, rotate)",
                x.errors.load(Ordering::Relaxed),
            )?;
            counter(
                &mut e,
                "flowscope_export_rotations",
                "Rotations of the export file",
                x.rotations.load(Ordering::Relaxed),
            )?;
        }
        Ok(())
    }
}
