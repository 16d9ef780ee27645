//! The agents the relay knows, and their connection state.
//!
//! Each agent ([`Peer`]) has a lazily connected channel and a supervisor
//! task that probes it (ServerStatus): right away when it appears, every
//! `peer_check_interval` while it answers, and after a failure with
//! exponential backoff and jitter. The probe result is the peer's state
//! (connected / unavailable / error), published on a `watch` channel so
//! that GetFlows streams already following can react when a node goes away
//! or comes back. Peers come from sources (the static list, each DNS name);
//! a peer leaves the pool when no source lists it any more.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowscope_proto::observer::observer_client::ObserverClient;
use flowscope_proto::observer::{GetNodesRequest, ServerStatusRequest, ServerStatusResponse};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::connector::{TlsDial, lazy_channel};
use crate::metrics::Metrics;
use crate::peer::{Backoff, MAX_MESSAGE, PeerDesc, PeerTarget, Source, describe, is_transient};
pub use crate::peer::{PeerState, PeerStatus};
use crate::tls::{self, Reloading};

/// Where a peer's name comes from; a weaker source never overrides a
/// stronger one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum NameSource {
    Address,
    Agent,
    Configured,
}

/// Settings of the pool, from the relay configuration.
#[derive(Clone)]
pub(crate) struct PoolSettings {
    pub check_interval: Duration,
    pub request_timeout: Duration,
    pub dial_timeout: Duration,
    pub backoff: Backoff,
    /// TLS towards agents and the configured server name, if any.
    pub tls: Option<(Arc<Reloading<rustls::ClientConfig>>, Option<String>)>,
}

/// One agent.
pub struct Peer {
    target: PeerTarget,
    address: String,
    /// TLS server name when TLS is on.
    tls_server_name: Option<String>,
    tls: Option<TlsDial>,
    dial_timeout: Duration,
    /// The channel and the TLS configuration generation it was made with.
    channel: Mutex<(u64, Channel)>,
    status: watch::Sender<PeerStatus>,
    name_source: Mutex<NameSource>,
    /// Ask the supervisor to probe now (a stream failed).
    wake: Notify,
    /// Fired when the peer leaves the pool.
    removed: CancellationToken,
    states_changed: Arc<Notify>,
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("address", &self.address)
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl Peer {
    /// The agent's address (`host:port` or `unix:///path`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The node name.
    pub fn name(&self) -> String {
        self.status.borrow().name.clone()
    }

    /// The current status.
    pub fn status(&self) -> PeerStatus {
        self.status.borrow().clone()
    }

    /// Follows status changes.
    pub fn subscribe(&self) -> watch::Receiver<PeerStatus> {
        self.status.subscribe()
    }

    /// The TLS server name used towards this agent, when TLS is on.
    pub fn tls_server_name(&self) -> Option<&str> {
        self.tls_server_name.as_deref()
    }

    /// Resolves when the peer leaves the pool.
    pub(crate) fn removed(&self) -> &CancellationToken {
        &self.removed
    }

    /// An Observer client on the peer's channel. The channel is made again
    /// when the TLS client configuration was reloaded, so that new
    /// connections present the new certificate; streams on the old channel
    /// go on until they end.
    pub fn client(&self) -> ObserverClient<Channel> {
        ObserverClient::new(self.channel())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// The peer's channel (see [`Peer::client`] for when it is made again), for other
    /// services of the agent (flowscope.v1.Inspector).
    pub fn channel(&self) -> Channel {
        let mut guard = self
            .channel
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(tls) = &self.tls {
            let generation = tls.config.generation();
            if guard.0 != generation {
                *guard = (
                    generation,
                    lazy_channel(&self.target, Some(tls.clone()), self.dial_timeout),
                );
            }
        }
        guard.1.clone()
    }

    /// A stream on connection generation `generation` failed with a
    /// transport error: mark the peer unavailable (unless a newer connection
    /// exists already) and have it probed now.
    pub(crate) fn report_failure(&self, generation: u64, error: &str) {
        let changed = self.status.send_if_modified(|s| {
            if s.state == PeerState::Connected && s.generation == generation {
                s.state = PeerState::Unavailable;
                s.last_error = Some(error.to_string());
                true
            } else {
                false
            }
        });
        if changed {
            self.states_changed.notify_one();
        }
        self.wake.notify_one();
    }

    /// Records a fresh ServerStatus answer (from GetNodes or ServerStatus).
    pub(crate) fn record_info(&self, info: ServerStatusResponse) {
        self.status.send_modify(|s| s.info = Some(info));
    }

    /// Takes the node name an agent put in its responses, unless the name
    /// was configured or already reported.
    pub(crate) fn learn_name(&self, name: &str) {
        if name.is_empty() {
            return;
        }
        self.set_name(name, NameSource::Agent);
    }

    fn set_name(&self, name: &str, source: NameSource) {
        let mut current = self
            .name_source
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if source < *current || (source == *current && self.status.borrow().name == name) {
            return;
        }
        *current = source;
        self.status.send_if_modified(|s| {
            if s.name == name {
                false
            } else {
                s.name = name.to_string();
                true
            }
        });
    }

    fn set_connected(&self, info: ServerStatusResponse) -> bool {
        let mut became = false;
        self.status.send_modify(|s| {
            if s.state != PeerState::Connected {
                s.generation += 1;
                s.state = PeerState::Connected;
                became = true;
            }
            s.last_error = None;
            s.info = Some(info);
        });
        became
    }

    fn set_failed(&self, state: PeerState, error: String) -> bool {
        let mut changed = false;
        self.status.send_modify(|s| {
            changed = s.state != state;
            s.state = state;
            s.last_error = Some(error);
        });
        changed
    }
}

struct PoolEntry {
    peer: Arc<Peer>,
    sources: BTreeSet<Source>,
}

struct PoolInner {
    settings: PoolSettings,
    peers: Mutex<BTreeMap<String, PoolEntry>>,
    /// Bumped when peers are added or removed.
    changes: watch::Sender<u64>,
    /// Signalled when any peer's state changes (metrics, health).
    states_changed: Arc<Notify>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

/// The set of agents, shared by the relay's services.
#[derive(Clone)]
pub struct PeerPool {
    inner: Arc<PoolInner>,
}

impl fmt::Debug for PeerPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.peers()).finish()
    }
}

impl PeerPool {
    pub(crate) fn new(
        settings: PoolSettings,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                settings,
                peers: Mutex::new(BTreeMap::new()),
                changes: watch::Sender::new(0),
                states_changed: Arc::new(Notify::new()),
                metrics,
                shutdown,
            }),
        }
    }

    /// Every known agent, in address order.
    pub fn peers(&self) -> Vec<Arc<Peer>> {
        self.lock().values().map(|e| e.peer.clone()).collect()
    }

    /// Follows additions and removals of agents.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Signalled when any agent's state changes.
    pub(crate) fn states_changed(&self) -> Arc<Notify> {
        self.inner.states_changed.clone()
    }

    /// Number of agents in each state.
    pub fn state_counts(&self) -> Vec<(PeerState, usize)> {
        let peers = self.peers();
        PeerState::ALL
            .iter()
            .map(|state| {
                let n = peers.iter().filter(|p| p.status().state == *state).count();
                (*state, n)
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PoolEntry>> {
        self.inner
            .peers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes `source` list exactly `descs`: peers it newly lists are added
    /// (and probed), peers only it listed are removed.
    pub(crate) fn sync_source(&self, source: Source, descs: Vec<PeerDesc>) {
        let mut added = Vec::new();
        let mut removed = Vec::new();
        {
            let mut peers = self.lock();
            let wanted: BTreeSet<String> =
                descs.iter().map(|d| d.spec.target.to_string()).collect();
            for desc in descs {
                let key = desc.spec.target.to_string();
                if let Some(entry) = peers.get_mut(&key) {
                    entry.sources.insert(source);
                    if let Some(name) = &desc.spec.name {
                        entry.peer.set_name(name, NameSource::Configured);
                    }
                    continue;
                }
                match self.make_peer(desc) {
                    Ok(peer) => {
                        added.push(peer.clone());
                        peers.insert(
                            key,
                            PoolEntry {
                                peer,
                                sources: BTreeSet::from([source]),
                            },
                        );
                    }
                    Err(err) => {
                        warn!(peer = %key, error = %crate::error_chain(&err), "ignoring peer")
                    }
                }
            }
            peers.retain(|key, entry| {
                if entry.sources.contains(&source) && !wanted.contains(key) {
                    entry.sources.remove(&source);
                }
                if entry.sources.is_empty() {
                    removed.push(entry.peer.clone());
                    false
                } else {
                    true
                }
            });
        }
        for peer in &removed {
            info!(peer = %peer.address, name = %peer.name(), "peer removed");
            peer.removed.cancel();
        }
        for peer in &added {
            info!(peer = %peer.address, "peer added");
            let span = info_span!("peer", address = %peer.address);
            tokio::spawn(supervise(self.inner.clone(), peer.clone()).instrument(span));
        }
        if !added.is_empty() || !removed.is_empty() {
            self.inner.changes.send_modify(|v| *v += 1);
            self.inner.states_changed.notify_one();
        }
    }

    /// A channel to `target` dialed as the agents are (TCP or unix, TLS when the relay uses
    /// it towards agents: the configured server name, else the host).
    pub(crate) fn dial(&self, target: &PeerTarget) -> Result<Channel, crate::error::TlsError> {
        let tls = match &self.inner.settings.tls {
            None => None,
            Some((config, configured)) => {
                let name = configured
                    .clone()
                    .or_else(|| target.host().map(str::to_string))
                    .unwrap_or_else(|| "localhost".to_string());
                Some(TlsDial {
                    config: config.clone(),
                    server_name: tls::server_name(&name)?,
                })
            }
        };
        Ok(lazy_channel(target, tls, self.inner.settings.dial_timeout))
    }

    fn make_peer(&self, desc: PeerDesc) -> Result<Arc<Peer>, crate::error::TlsError> {
        let target = desc.spec.target;
        let address = target.to_string();
        let (tls, tls_server_name) = match &self.inner.settings.tls {
            None => (None, None),
            Some((config, configured)) => {
                let name = configured
                    .clone()
                    .or(desc.server_name_hint)
                    .or_else(|| target.host().map(str::to_string))
                    .unwrap_or_else(|| "localhost".to_string());
                let dial = TlsDial {
                    config: config.clone(),
                    server_name: tls::server_name(&name)?,
                };
                (Some(dial), Some(name))
            }
        };
        let dial_timeout = self.inner.settings.dial_timeout;
        let generation = tls.as_ref().map_or(0, |t| t.config.generation());
        let channel = lazy_channel(&target, tls.clone(), dial_timeout);
        let (name, name_source) = match desc.spec.name {
            Some(name) => (name, NameSource::Configured),
            None => (address.clone(), NameSource::Address),
        };
        Ok(Arc::new(Peer {
            target,
            address,
            tls_server_name,
            tls,
            dial_timeout,
            channel: Mutex::new((generation, channel)),
            status: watch::Sender::new(PeerStatus {
                name,
                state: PeerState::Connecting,
                generation: 0,
                last_error: None,
                info: None,
            }),
            name_source: Mutex::new(name_source),
            wake: Notify::new(),
            removed: self.inner.shutdown.child_token(),
            states_changed: self.inner.states_changed.clone(),
        }))
    }
}

/// Probes the agent: ServerStatus, and GetNodes for its name on a new
/// connection when the name is not configured.
async fn probe(
    peer: &Peer,
    timeout: Duration,
    ask_name: bool,
) -> Result<ServerStatusResponse, (PeerState, String)> {
    let mut client = peer.client();
    let status =
        match tokio::time::timeout(timeout, client.server_status(ServerStatusRequest {})).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                let state = if is_transient(&status) {
                    PeerState::Unavailable
                } else {
                    PeerState::Error
                };
                return Err((state, describe(&status)));
            }
            Err(_) => return Err((PeerState::Unavailable, "ServerStatus timed out".to_string())),
        };
    if ask_name
        && let Ok(Ok(nodes)) =
            tokio::time::timeout(timeout, client.get_nodes(GetNodesRequest {})).await
    {
        // An agent answers with itself; a relay behind us (several nodes)
        // has no single name.
        if let [node] = nodes.into_inner().nodes.as_slice()
            && !node.name.is_empty()
        {
            peer.set_name(&node.name, NameSource::Agent);
        }
    }
    Ok(status)
}

/// Keeps one peer's state current until it leaves the pool or the relay
/// stops.
async fn supervise(pool: Arc<PoolInner>, peer: Arc<Peer>) {
    let settings = &pool.settings;
    let mut attempt: u32 = 0;
    loop {
        let was_connected = peer.status().state == PeerState::Connected;
        let ask_name = !was_connected
            && *peer
                .name_source
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                < NameSource::Configured;
        let result = tokio::select! {
            _ = peer.removed.cancelled() => return,
            result = probe(&peer, settings.request_timeout, ask_name) => result,
        };
        let (delay, connected) = match result {
            Ok(info) => {
                attempt = 0;
                if peer.set_connected(info) {
                    info!(name = %peer.name(), "connected");
                    pool.states_changed.notify_one();
                }
                (settings.check_interval, true)
            }
            Err((state, error)) => {
                pool.metrics.node_error();
                let delay = settings.backoff.delay(attempt);
                attempt = attempt.saturating_add(1);
                if peer.set_failed(state, error.clone()) {
                    warn!(name = %peer.name(), %state, %error, "peer not available");
                    pool.states_changed.notify_one();
                } else {
                    debug!(name = %peer.name(), %error, retry_in = ?delay, "peer still not available");
                }
                (delay, false)
            }
        };
        tokio::select! {
            _ = peer.removed.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
            // A stream failure while connected: probe now.
            _ = peer.wake.notified(), if connected => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> PeerPool {
        PeerPool::new(
            PoolSettings {
                check_interval: Duration::from_secs(60),
                request_timeout: Duration::from_millis(200),
                dial_timeout: Duration::from_millis(200),
                backoff: Backoff::default(),
                tls: None,
            },
            Arc::new(Metrics::default()),
            CancellationToken::new(),
        )
    }

    fn desc(s: &str) -> PeerDesc {
        PeerDesc {
            spec: s.parse().unwrap(),
            server_name_hint: None,
        }
    }

    #[tokio::test]
    async fn sources_add_and_remove_peers() {
        let pool = pool();
        let mut changes = pool.subscribe();
        pool.sync_source(
            Source::Static,
            vec![desc("a=127.0.0.1:1"), desc("127.0.0.1:2")],
        );
        pool.sync_source(
            Source::Dns(0),
            vec![desc("127.0.0.1:2"), desc("127.0.0.1:3")],
        );
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();
        let names: Vec<_> = pool.peers().iter().map(|p| p.name()).collect();
        assert_eq!(names, ["a", "127.0.0.1:2", "127.0.0.1:3"]);
        // DNS drops :2 and :3; :2 stays (static lists it), :3 goes.
        let three = pool.peers()[2].clone();
        pool.sync_source(Source::Dns(0), vec![]);
        let addrs: Vec<_> = pool
            .peers()
            .iter()
            .map(|p| p.address().to_string())
            .collect();
        assert_eq!(addrs, ["127.0.0.1:1", "127.0.0.1:2"]);
        assert!(three.removed().is_cancelled());
        assert!(changes.has_changed().unwrap());
        // Same list again: no change.
        changes.borrow_and_update();
        pool.sync_source(
            Source::Static,
            vec![desc("a=127.0.0.1:1"), desc("127.0.0.1:2")],
        );
        assert!(!changes.has_changed().unwrap());
    }

    #[tokio::test]
    async fn unreachable_peer_becomes_unavailable() {
        let pool = pool();
        // A port nothing listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        pool.sync_source(Source::Static, vec![desc(&format!("127.0.0.1:{port}"))]);
        let peer = pool.peers()[0].clone();
        let mut rx = peer.subscribe();
        let status = tokio::time::timeout(
            Duration::from_secs(5),
            rx.wait_for(|s| s.state != PeerState::Connecting),
        )
        .await
        .expect("probed within 5 s")
        .unwrap()
        .clone();
        assert_eq!(status.state, PeerState::Unavailable);
        assert!(status.last_error.is_some());
    }

    #[test]
    fn names_never_downgrade() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let pool = pool();
            pool.sync_source(
                Source::Static,
                vec![desc("cfg=127.0.0.1:1"), desc("127.0.0.1:2")],
            );
            let peers = pool.peers();
            peers[0].learn_name("from-agent");
            assert_eq!(peers[0].name(), "cfg");
            peers[1].learn_name("from-agent");
            assert_eq!(peers[1].name(), "from-agent");
            peers[1].learn_name("");
            assert_eq!(peers[1].name(), "from-agent");
        });
    }

    #[test]
    fn transient_codes() {
        assert!(is_transient(&tonic::Status::unavailable("x")));
        assert!(is_transient(&tonic::Status::unknown("h2 protocol error")));
        assert!(!is_transient(&tonic::Status::invalid_argument("x")));
        assert_eq!(
            describe(&tonic::Status::unavailable("gone")),
            "Unavailable: gone"
        );
    }
}
