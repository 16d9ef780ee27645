//! The agent's gRPC API: Hubble's `observer.Observer` (so flowctl, the relay and stock Hubble
//! clients all work), Hubble's `peer.Peer` (the cluster's nodes), our `flowscope.v1.Inspector`, gRPC health (which follows the datapath and
//! the reader, see `health.rs`) and reflection; served on a
//! root-only unix socket and, when asked, on TCP with TLS.

mod encoded;
pub mod flow_encoder;
mod health;
pub(crate) mod inspector;
pub(crate) mod mask; // also the export field mask
mod observer;
pub mod peer;
mod server;

use std::{
    sync::{Arc, Mutex},
    time::{Instant, SystemTime},
};

pub use inspector::InspectorService;
pub use observer::ObserverService;
pub use peer::{PeerDirectory, PeerService};
pub use server::{ListenOptions, Listeners, TlsFiles, bind, serve};

use crate::{
    endpoints::Registry,
    history::FlowStore,
    kernel::{datapath::Datapath, reader::ReaderStats},
};

/// Request header by which our own clients ask for `Flow.extensions` (one definition, in proto).
pub use flowscope_proto::EXTENSIONS_HEADER;

/// Counters of the flow pipeline (decode task), for status and metrics.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Entries readers lost because the history overwrote them (sum over readers).
    pub history_lost: std::sync::atomic::AtomicU64,
    /// Events lost in the kernel ring, as reported in LostEvents so far.
    pub kernel_lost: std::sync::atomic::AtomicU64,
    /// Packets the kernel freed without a drop reason, not reported as drops (see
    /// `--report-unspecified-drops`).
    pub unspecified_drops: std::sync::atomic::AtomicU64,
}

/// What the services share with the rest of the agent.
pub struct AgentState {
    /// This node's name.
    pub node_name: String,
    /// When the agent started.
    pub started: Instant,
    /// Wall-clock start time.
    pub started_at: SystemTime,
    /// The flow history.
    pub store: Arc<FlowStore>,
    /// Reports of connections that got no reply (see `unanswered.rs`): their own history,
    /// served only to clients that select them.
    pub unanswered: Arc<FlowStore>,
    /// The unanswered tracker's counters.
    pub unanswered_stats: Arc<crate::decode::unanswered::UnansweredStats>,
    /// The L7 decoder's counters.
    pub l7_stats: Arc<crate::decode::l7::L7Stats>,
    /// The FQDN cache's counters.
    pub fqdn_stats: Arc<crate::decode::fqdn::FqdnStats>,
    /// The kernel side.
    pub datapath: Arc<Mutex<Datapath>>,
    /// Endpoint metadata.
    pub registry: Registry,
    /// Ring-buffer reader counters.
    pub reader: Arc<ReaderStats>,
    /// A reader silent for longer than this is reported stalled (gRPC health NOT_SERVING).
    pub reader_stall_after: std::time::Duration,
    /// Pipeline counters.
    pub pipeline: Arc<PipelineStats>,
    /// (time, seen flows) samples of the last minute, for `flows_rate`.
    pub rate_samples: Mutex<std::collections::VecDeque<(Instant, u64)>>,
    /// Addresses the API is served on (for GetNodes).
    pub addresses: Vec<String>,
    /// TLS on the TCP listener.
    pub tls: bool,
    /// The cluster's nodes, for the Peer service.
    pub peers: PeerDirectory,
    /// Fires at shutdown: follow streams end then, so that the server can finish gracefully.
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl AgentState {
    /// The history that holds the records a GetFlows request selects.
    pub fn history(
        &self,
        records: flowscope_proto::flowscope::v1::RecordSelection,
    ) -> &Arc<FlowStore> {
        use flowscope_proto::flowscope::v1::RecordSelection;
        match records {
            RecordSelection::Packets => &self.store,
            RecordSelection::Unanswered => &self.unanswered,
        }
    }

    /// Records a sample for `flows_rate` (called once a second by the pipeline).
    pub fn sample_rate(&self) {
        if let Ok(mut s) = self.rate_samples.lock() {
            let now = Instant::now();
            s.push_back((now, self.store.seen_flows()));
            while s
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t).as_secs() > 60)
            {
                s.pop_front();
            }
        }
    }

    /// Flows per second over the last minute.
    pub fn flows_rate(&self) -> f64 {
        let Ok(s) = self.rate_samples.lock() else {
            return 0.0;
        };
        match (s.front(), s.back()) {
            (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => {
                (n1 - n0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}
