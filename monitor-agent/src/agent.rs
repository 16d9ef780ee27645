//! The agent's main loop: load, attach, follow interfaces, read events, hand them on; then
//! stop in order ([`shutdown`]).

mod shutdown;

use std::{
    collections::{BTreeMap, HashMap},
    io::Write as _,
    sync::{Arc, Mutex, RwLock, atomic::Ordering},
    time::Duration,
};

use anyhow::{Context as _, bail};
use monitor_common::counter;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    decode::{
        event::Event, flows::FlowBuilder, fqdn::FqdnCache, l7::L7Decoder, record::FlowRecord,
    },
    endpoints::{self, Registry},
    history::{Entry, FlowStore},
    kernel::{
        datapath::{Attached, Datapath, DatapathOptions},
        facts::{self as kernel, Clock},
        ifaces::{self, LinkWatcher, Role, Selector},
        reader::{self, L7Record, ReaderStats, Record},
    },
    service::{self, AgentState, ListenOptions, PipelineStats},
};
use flowscope_proto::{
    flow::{LostEvent, LostEventSource},
    wkt::Timestamp,
};
use std::path::PathBuf;

/// What the agent prints on standard output, besides its logs on standard error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DumpFormat {
    /// One JSON object per line: events, attach/detach notices, periodic counters.
    Json,
    /// One `cilium monitor`-style line per event.
    Text,
}

/// Options of one agent run.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// Which interfaces to observe.
    pub selector: Selector,
    /// Kernel-side options.
    pub datapath: DatapathOptions,
    /// Longest time the reader sleeps before draining the ring.
    pub poll_interval: Duration,
    /// Capacity of the decode queue, in events.
    pub queue_events: usize,
    /// Print events on standard output.
    pub dump: Option<DumpFormat>,
    /// Period of the counters line in `--dump json`.
    pub stats_interval: Duration,
    /// How often interfaces are rescanned even without a netlink notification.
    pub rescan_interval: Duration,
    /// This node's name, put in every flow.
    pub node_name: String,
    /// Capacity of the flow history.
    pub history_size: usize,
    /// Where the API is served.
    pub listen: ListenOptions,
    /// Endpoint metadata file (YAML), watched for changes.
    pub endpoints_file: Option<PathBuf>,
    /// Addresses / CIDRs of the other nodes (the `remote-node` identity).
    pub remote_nodes: Vec<String>,
    /// Other nodes' agents, announced by the Peer service (`--peer`).
    pub peers: Vec<service::peer::StaticPeer>,
    /// Pods, namespaces and nodes from the Kubernetes API server, when asked.
    pub kubernetes: Option<endpoints::kubernetes::KubernetesOptions>,
    /// Prometheus metrics.
    pub metrics: crate::metrics::MetricsOptions,
    /// Flow export to files, when asked.
    pub export: Option<crate::export::ExportOptions>,
    /// Flow and metric export over OTLP/gRPC, when asked.
    pub otlp: Option<crate::export::otlp::OtlpOptions>,
    /// A new TCP or UDP connection without a reply after this long is reported unanswered
    /// (zero: never).
    pub unanswered_timeout: Duration,
    /// Report drops without a kernel reason (NOT_SPECIFIED) too; otherwise only count them.
    pub report_unspecified_drops: bool,
    /// Addresses the FQDN cache holds at most (0: no names on flows).
    pub fqdn_cache_size: usize,
    /// Shortest time a name learnt from a DNS answer stays on flows, whatever the answer's TTL.
    pub fqdn_min_ttl: Duration,
}

/// The kernel's name for "freed with no drop reason": `kfree_skb()` without a reason. Parts of
/// the kernel free packets they have processed that way (MLD reports after the multicast code
/// handled them, neighbour discovery), so such an event does not mean a packet was lost.
const UNSPECIFIED_DROP: &str = "NOT_SPECIFIED";

/// The shortest silence after which the reader counts as stalled (gRPC health).
const READER_STALL_MIN: Duration = Duration::from_secs(5);

/// How often expired conntrack entries are removed.
const CONNTRACK_GC_INTERVAL: Duration = Duration::from_secs(10);

/// Unanswered-connection reports kept for clients that ask for them (their own history: they
/// are not packets and never take a packet's place in the flow history).
const UNANSWERED_HISTORY: usize = 4096;

/// Interface index -> name, for every interface of the namespace (not only attached ones);
/// shared, so that every record of an interface holds the same name.
type Names = Arc<RwLock<BTreeMap<u32, Arc<str>>>>;

/// A change of attachments, reported by [`sync_interfaces`].
enum Change {
    Attached(Attached),
    Detached(Attached),
    Failed { name: String, error: String },
}

/// Makes the attachments match the interfaces that exist now.
fn sync_interfaces(dp: &mut Datapath, sel: &Selector, names: &Names) -> Vec<Change> {
    let links = match ifaces::list_links() {
        Ok(l) => l,
        Err(e) => {
            warn!("listing interfaces: {e}");
            return Vec::new();
        }
    };
    let defaults = ifaces::default_route_interfaces();
    let want = ifaces::desired(sel, &links, &defaults);
    let mut changes = Vec::new();
    let stale: Vec<u32> = dp
        .attached()
        .filter(|a| {
            want.get(&a.ifindex)
                .is_none_or(|(name, role)| *name != a.name || *role != a.role)
        })
        .map(|a| a.ifindex)
        .collect();
    for ifindex in stale {
        if let Some(a) = dp.detach(ifindex) {
            changes.push(Change::Detached(a));
        }
    }
    for (ifindex, (name, role)) in &want {
        if dp.attached().any(|a| a.ifindex == *ifindex) {
            continue;
        }
        match dp.attach(*ifindex, name, *role) {
            Ok(()) => {
                if let Some(a) = dp.attached().find(|a| a.ifindex == *ifindex) {
                    changes.push(Change::Attached(a.clone()));
                }
            }
            // The interface may have vanished between listing and attaching: not fatal.
            Err(e) => changes.push(Change::Failed {
                name: name.clone(),
                error: format!("{:#}", anyhow::Error::new(e)),
            }),
        }
    }
    if let Ok(mut n) = names.write() {
        // Keep the shared name of an interface that did not change.
        let mut next = BTreeMap::new();
        for (index, name) in links {
            let shared = match n.get(&index) {
                Some(old) if **old == *name => old.clone(),
                _ => Arc::from(name),
            };
            next.insert(index, shared);
        }
        *n = next;
    }
    changes
}

fn log_changes(changes: &[Change]) {
    for c in changes {
        match c {
            Change::Attached(a) => {
                info!(iface = %a.name, ifindex = a.ifindex, role = a.role.as_str(), "attached")
            }
            Change::Detached(a) => info!(iface = %a.name, ifindex = a.ifindex, "detached"),
            Change::Failed { name, error } => warn!(iface = %name, "could not attach: {error}"),
        }
    }
}

fn change_json(c: &Change) -> serde_json::Value {
    match c {
        Change::Attached(a) => json!({ "attached": a }),
        Change::Detached(a) => json!({ "detached": a }),
        Change::Failed { name, error } => {
            json!({ "attach_failed": { "name": name, "error": error } })
        }
    }
}

/// Checks what can be checked before touching the kernel.
pub fn preflight(opts: &AgentOptions) -> anyhow::Result<()> {
    let missing = kernel::missing_capabilities();
    if !missing.is_empty() {
        bail!(
            "missing capabilities: {} (run as root, or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)",
            missing.join(", ")
        );
    }
    if opts.datapath.drops && !kernel::has_btf() {
        bail!(
            "this kernel has no BTF (/sys/kernel/btf/vmlinux): drop tracing needs it; run with --no-drops to go without"
        );
    }
    if opts.datapath.drops {
        match kernel::ensure_tracefs() {
            Ok(true) => info!("mounted tracefs at /sys/kernel/tracing"),
            Ok(false) => {}
            Err(e) => bail!(
                "tracefs is not mounted and mounting it failed ({e}): mount it at /sys/kernel/tracing, or run with --no-drops"
            ),
        }
    }
    let links = ifaces::list_links().context("listing interfaces")?;
    if let Err(name) = ifaces::check_named(&opts.selector, &links) {
        bail!("interface {name} not found in this network namespace");
    }
    Ok(())
}

/// Keeps the registry's view of the node in step with its interfaces: the node's own addresses
/// (`host`) and the pods found behind endpoint veths (discovery).
fn refresh_registry(dp: &Datapath, registry: &Registry) {
    if let Ok(ips) = ifaces::local_addresses() {
        registry.set_node_ips(ips);
    }
    let eps: Vec<(u32, String)> = dp
        .attached()
        .filter(|a| a.role == Role::Endpoint)
        .map(|a| (a.ifindex, a.name.clone()))
        .collect();
    match endpoints::discovery::discover(&eps) {
        Ok(found) => registry.replace_source(endpoints::source::DISCOVERY, found),
        Err(e) => warn!("discovering endpoints behind veths: {e}"),
    }
}

/// What the Peer service announces. With Kubernetes, the Node list (this node included); else
/// this node, when it serves TCP, at the listener's address (the default-route interface's
/// address when it listens on every address). `--peer` entries in both cases.
fn peer_directory(
    opts: &AgentOptions,
    listeners: &service::Listeners,
    registry: &Registry,
) -> service::PeerDirectory {
    let tcp = listeners.tcp_addr();
    let own = match tcp {
        Some(addr) if opts.kubernetes.is_none() => {
            let ip = if addr.ip().is_unspecified() {
                let addrs: Vec<std::net::IpAddr> = ifaces::default_route_interfaces()
                    .iter()
                    .flat_map(|i| ifaces::interface_addresses(i).unwrap_or_default())
                    .filter(|ip| !ip.is_loopback() && !is_link_local(ip))
                    .collect();
                addrs
                    .iter()
                    .find(|ip| ip.is_ipv4())
                    .or(addrs.first())
                    .copied()
            } else {
                Some(addr.ip())
            };
            ip.map(|ip| {
                (
                    opts.node_name.clone(),
                    std::net::SocketAddr::new(ip, addr.port()),
                )
            })
        }
        _ => None,
    };
    let port = tcp.map_or(service::peer::HUBBLE_PORT, |a| a.port());
    service::PeerDirectory::new(
        &opts.peers,
        own,
        registry.cluster_nodes(),
        port,
        listeners.tls(),
    )
}

fn is_link_local(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_link_local(),
        std::net::IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

/// Runs the agent until `shutdown` fires (or its ring reader dies), then stops in order
/// ([`shutdown`]): everything attached is detached before returning.
pub async fn run(opts: AgentOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    preflight(&opts)?;
    // Everything that can fail on bad input is checked before the programs are attached.
    let remote_nodes = endpoints::parse_cidrs(&opts.remote_nodes).context("--remote-node")?;
    let file_endpoints = match &opts.endpoints_file {
        // The error already names the file and the place in it.
        Some(path) => Some(endpoints::file::load(path)?),
        None => None,
    };
    // A bad kubeconfig stops the agent here; an API server that is down does not.
    let kubernetes = match &opts.kubernetes {
        Some(k) => Some(endpoints::kubernetes::connect(k).await?),
        None => None,
    };
    let listeners = service::bind(&opts.listen).await?;
    let mut metrics = crate::metrics::Metrics::bind(&opts.metrics).await?;
    let exporter = opts.export.clone().map(crate::export::Exporter::start);
    let exporter = exporter.transpose()?;
    let mut otlp = (opts.otlp.clone())
        .map(|o| crate::export::otlp::OtlpExporter::start(o, &opts.node_name))
        .transpose()?;

    let (mut dp, ring) = Datapath::load(&opts.datapath)?;
    metrics.watch_ring(&ring, opts.datapath.ring_bytes);
    info!(mode = ?dp.mode(), aggregation = ?opts.datapath.aggregation, observation_points = ?opts.datapath.observation_points, node = %opts.node_name, "programs loaded");
    let reasons: Arc<HashMap<u32, String>> = Arc::new(dp.drop_reasons.clone());

    let registry = Registry::new(ifaces::local_addresses().unwrap_or_default(), remote_nodes);
    if let Some(f) = file_endpoints {
        registry.set_file(f);
    }
    let names: Names = Arc::default();
    let initial = sync_interfaces(&mut dp, &opts.selector, &names);
    log_changes(&initial);
    refresh_registry(&dp, &registry);
    let conntrack = dp.conntrack_table();
    let mut gc_handle = conntrack.try_clone()?;
    // Lock order: the datapath, then the interface names (the interface follower takes both);
    // no one holds the datapath while waiting for a walk of a map (see `Conntrack`).
    let dp = Arc::new(Mutex::new(dp));
    // From here on, every stage that outlives a request to stop is handed to `stop`, which
    // ends them in order.
    let mut stop = shutdown::Shutdown::new(shutdown, opts.listen.socket.clone());
    stop.datapath(dp.clone());

    if let Some(path) = opts.endpoints_file.clone() {
        stop.watcher_task(endpoints::file::watch(
            path,
            registry.clone(),
            Duration::from_secs(1),
            stop.watchers(),
        ));
    }
    let kube_watch = kubernetes.map(|k| k.watch(registry.clone(), stop.watchers()));
    // The conntrack GC walks the whole table (the LRU map only evicts under pressure): blocking
    // work, so it runs in `spawn_blocking` with a handle of its own on the map, neither on the
    // decode loop nor under the datapath's mutex. It stops with the watchers.
    stop.watcher_task({
        let token = stop.watchers();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(CONNTRACK_GC_INTERVAL);
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = every.tick() => {}
                }
                let shared = conntrack.clone();
                let walk = tokio::task::spawn_blocking(move || {
                    gc_handle.gc(Clock::monotonic_ns(), &shared);
                    gc_handle
                });
                match walk.await {
                    Ok(h) => gc_handle = h,
                    Err(e) => {
                        warn!("conntrack GC: {e}");
                        return;
                    }
                }
            }
        })
    });

    let mut out = std::io::BufWriter::new(std::io::stdout());
    if opts.dump == Some(DumpFormat::Json) {
        for c in &initial {
            writeln!(out, "{}", change_json(c))?;
        }
        let attached: Vec<Attached> = dp
            .lock()
            .map(|d| d.attached().cloned().collect())
            .unwrap_or_default();
        writeln!(out, "{}", json!({ "ready": { "interfaces": attached } }))?;
        out.flush()?;
    }

    let stats = Arc::new(ReaderStats::default());
    let (tx, mut rx) = reader::queue(opts.queue_events);
    let reader = reader::spawn(ring, opts.poll_interval, tx, stats.clone(), stop.reader())
        .context("starting the ring-buffer reader")?;
    stop.reader_thread(reader);

    let unanswered = crate::decode::unanswered::Unanswered::new(opts.unanswered_timeout, 65_536);
    let l7 = L7Decoder::new(opts.datapath.l7_ports.clone());
    let fqdn = FqdnCache::new(opts.fqdn_cache_size, opts.fqdn_min_ttl);
    let state = Arc::new(AgentState {
        node_name: opts.node_name.clone(),
        started: std::time::Instant::now(),
        started_at: std::time::SystemTime::now(),
        store: Arc::new(FlowStore::new(opts.history_size)),
        unanswered: Arc::new(FlowStore::new(UNANSWERED_HISTORY)),
        unanswered_stats: unanswered.stats(),
        l7_stats: l7.stats(),
        fqdn_stats: fqdn.stats(),
        datapath: dp.clone(),
        registry: registry.clone(),
        reader: stats.clone(),
        // The reader goes round every poll interval: several missed rounds, and never less than
        // a few seconds (a loaded machine may not schedule it for a while).
        reader_stall_after: (opts.poll_interval * 4).max(READER_STALL_MIN),
        pipeline: Arc::new(PipelineStats::default()),
        rate_samples: Mutex::default(),
        addresses: listeners.addresses(),
        tls: listeners.tls(),
        peers: peer_directory(&opts, &listeners, &registry),
        shutdown: stop.serving(),
    });
    stop.server(tokio::spawn(service::serve(
        state.clone(),
        listeners,
        stop.serving(),
    )));
    let export_stats = exporter.as_ref().map(crate::export::Exporter::stats);
    let mut collectors: Vec<Box<dyn prometheus_client::collector::Collector>> = Vec::new();
    if let Some(k) = kube_watch {
        collectors.push(Box::new(k.status.clone()));
        stop.watcher_task(k.task);
    }
    if let Some(o) = &otlp {
        collectors.push(o.collector());
    }
    let metrics = metrics.start(state.clone(), export_stats, collectors, stop.serving());
    if let Some(o) = &mut otlp {
        o.start_metrics(metrics.flows());
    }
    let flow_metrics = metrics.flows();
    stop.metrics(metrics);

    // Interface follower: wakes on rtnetlink notifications, rescans at least every few seconds.
    let (change_tx, mut change_rx) = mpsc::unbounded_channel::<Vec<Change>>();
    let watcher = {
        let (dp, names, stop, sel, every, registry) = (
            dp.clone(),
            names.clone(),
            stop.watchers(),
            opts.selector.clone(),
            opts.rescan_interval,
            registry.clone(),
        );
        let watch = LinkWatcher::new().context("subscribing to rtnetlink notifications")?;
        std::thread::Builder::new()
            .name("iface-watcher".into())
            .spawn(move || {
                let mut last = std::time::Instant::now();
                while !stop.is_cancelled() {
                    let changed = watch.wait(Duration::from_millis(200));
                    if !changed && last.elapsed() < every {
                        continue;
                    }
                    last = std::time::Instant::now();
                    let changes = match dp.lock() {
                        Ok(mut d) => {
                            let c = sync_interfaces(&mut d, &sel, &names);
                            refresh_registry(&d, &registry);
                            c
                        }
                        Err(_) => break,
                    };
                    if !changes.is_empty() {
                        log_changes(&changes);
                        let _ = change_tx.send(changes);
                    }
                }
            })?
    };
    stop.iface_watcher(watcher);

    let mut tick = tokio::time::interval(opts.stats_interval);
    let mut second = tokio::time::interval(Duration::from_secs(1));
    let builder = FlowBuilder::new(opts.node_name.clone(), registry.clone())
        .with_nat(Arc::new(crate::decode::nat::NatCache::default()));
    let sink = Sink {
        dump: opts.dump,
        out,
        reasons,
        metrics: flow_metrics,
        exporter,
        otlp,
        node: Arc::from(opts.node_name.as_str()),
        unanswered,
        report_unspecified_drops: opts.report_unspecified_drops,
        pipeline: state.pipeline.clone(),
        l7,
        fqdn,
    };
    let mut decode = Decode {
        sink,
        clock: Clock::now(),
        names,
        builder,
        store: state.store.clone(),
        dp: dp.clone(),
        stats: stats.clone(),
    };
    let mut loss = LossTracker::default();
    // Until a stop is requested (or the reader ends on its own: it only ends when told to, or
    // by a panic). An error here (standard output gone with `--dump`) stops the agent too, in
    // the same order.
    let looped: anyhow::Result<bool> = async {
        loop {
            tokio::select! {
                _ = stop.requested().cancelled() => return Ok::<_, anyhow::Error>(false),
                batch = rx.recv() => {
                    let Some(batch) = batch else {
                        warn!("the ring-buffer reader stopped unexpectedly: shutting down");
                        return Ok(true);
                    };
                    decode.batch(&batch)?;
                }
                Some(changes) = change_rx.recv() => decode.sink.changes(&changes)?,
                _ = tick.tick() => decode.sink.stats(&dp, &stats)?,
                _ = second.tick() => {
                    decode.clock = Clock::now();
                    state.sample_rate();
                    let lost = loss.report(&dp, &stats, &state, &opts.node_name);
                    let sink = &mut decode.sink;
                    sink.observe(&lost);
                    let now = std::time::Instant::now();
                    sink.l7.expire(now);
                    sink.fqdn.expire(now);
                    let late = sink.unanswered.expire(&dp);
                    if !late.is_empty() {
                        sink.unanswered_reports(&late);
                        state
                            .unanswered
                            .push_batch(late.into_iter().map(Entry::Flow).collect::<Vec<_>>());
                    }
                }
            }
        }
    }
    .await;

    let stopped = stop.run(&mut decode, &mut rx).await;
    drop(decode);
    drop(state);
    drop(dp);
    if looped? {
        // Blind, the agent is of no use: exit with an error so that its supervisor (systemd,
        // the kubelet) starts it again.
        bail!("the ring-buffer reader stopped unexpectedly");
    }
    stopped
}

/// The decode stage: turns the reader's batches into records and hands them to the hooks
/// (`Sink`), with what that needs.
struct Decode {
    sink: Sink,
    /// Boot time to wall clock, refreshed every second.
    clock: Clock,
    names: Names,
    builder: FlowBuilder,
    store: Arc<FlowStore>,
    dp: Arc<Mutex<Datapath>>,
    stats: Arc<ReaderStats>,
}

impl Decode {
    /// Decodes a batch and hands it on.
    fn batch(&mut self, batch: &[Record]) -> anyhow::Result<()> {
        self.sink
            .events(batch, &self.clock, &self.names, &self.builder, &self.store)
    }

    /// After the last batch: the last lines of `--dump json` (counters, the conntrack table).
    fn finish(&mut self) -> anyhow::Result<()> {
        self.sink.stats(&self.dp, &self.stats)?;
        self.sink.conntrack(&self.dp)
    }

    /// Closes the exporters, each within `timeout`: the file is written and flushed, OTLP sends
    /// what is queued.
    async fn close_exporters(&mut self, timeout: Duration) {
        if let Some(x) = self.sink.exporter.take() {
            // The file exporter's close blocks (it waits for its writer thread).
            let _ = tokio::task::spawn_blocking(move || x.close(timeout)).await;
        }
        if let Some(o) = self.sink.otlp.take() {
            o.close(timeout).await;
        }
    }
}

/// Turns the kernel's per-CPU loss counters and the decode queue's loss counter into LostEvents
/// in the history, so every client sees what was lost and where (Hubble's sources
/// PERF_EVENT_RING_BUFFER and OBSERVER_EVENTS_QUEUE).
#[derive(Default)]
struct LossTracker {
    kernel: Vec<u64>,
    queue: u64,
}

impl LossTracker {
    /// The loss notices since the last call, also added to the history.
    fn report(
        &mut self,
        dp: &Mutex<Datapath>,
        stats: &ReaderStats,
        state: &AgentState,
        node: &str,
    ) -> Vec<Entry> {
        let per_cpu = dp
            .lock()
            .map(|d| d.counter_per_cpu(counter::RING_LOST))
            .unwrap_or_default();
        let now = Timestamp::now();
        let mut entries = Vec::new();
        let lost_event = |source: LostEventSource, n: u64, cpu: Option<i32>| {
            Entry::Lost(Arc::new(LostEvent {
                source: source as i32,
                num_events_lost: n,
                cpu,
                first: Some(now),
                last: Some(now),
            }))
        };
        self.kernel.resize(per_cpu.len(), 0);
        for (cpu, (&v, prev)) in per_cpu.iter().zip(self.kernel.iter_mut()).enumerate() {
            if v > *prev {
                entries.push(lost_event(
                    LostEventSource::PerfEventRingBuffer,
                    v - *prev,
                    Some(cpu as i32),
                ));
                state
                    .pipeline
                    .kernel_lost
                    .fetch_add(v - *prev, Ordering::Relaxed);
                *prev = v;
            }
        }
        let q = stats.queue_lost.load(Ordering::Relaxed);
        if q > self.queue {
            entries.push(lost_event(
                LostEventSource::ObserverEventsQueue,
                q - self.queue,
                None,
            ));
            self.queue = q;
        }
        if !entries.is_empty() {
            tracing::debug!(node, n = entries.len(), "lost events reported");
            state.store.push_batch(entries.clone());
        }
        entries
    }
}

fn stats_json(dp: &Mutex<Datapath>, stats: &ReaderStats) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    if let Ok(d) = dp.lock() {
        for (name, v) in counter::NAMES.iter().zip(d.counters()) {
            m.insert((*name).to_owned(), json!(v));
        }
        // As the last GC walk saw it (at most 10 s old): a walk here would hold up the decode
        // loop.
        m.insert(
            "conntrack_entries".into(),
            json!(d.conntrack_table().last_count()),
        );
    }
    m.insert(
        "events_read".into(),
        json!(stats.events_read.load(Ordering::Relaxed)),
    );
    m.insert(
        "queue_lost".into(),
        json!(stats.queue_lost.load(Ordering::Relaxed)),
    );
    json!({ "stats": m })
}

/// Where decoded events go in this run (the event dump, for now).
struct Sink {
    dump: Option<DumpFormat>,
    out: std::io::BufWriter<std::io::Stdout>,
    reasons: Arc<HashMap<u32, String>>,
    /// Hubble flow metrics, when metrics are on.
    metrics: Option<Arc<crate::metrics::FlowMetrics>>,
    /// Flow export, when on.
    exporter: Option<crate::export::Exporter>,
    /// OTLP export, when on.
    otlp: Option<crate::export::otlp::OtlpExporter>,
    /// The node's name, for the export's loss notices.
    node: Arc<str>,
    /// New connections waiting for a reply.
    unanswered: crate::decode::unanswered::Unanswered,
    /// See [`AgentOptions::report_unspecified_drops`].
    report_unspecified_drops: bool,
    /// Pipeline counters (unspecified drops left out).
    pipeline: Arc<PipelineStats>,
    /// Captured payloads to L7 flows.
    l7: L7Decoder,
    /// Names from DNS answers, put on flows.
    fqdn: FqdnCache,
}

impl Sink {
    fn json(&self) -> bool {
        self.dump == Some(DumpFormat::Json)
    }

    /// Decodes a batch, stores its flows in the history and, with `--dump`, prints the events.
    fn events(
        &mut self,
        batch: &[Record],
        clock: &Clock,
        names: &Names,
        builder: &FlowBuilder,
        store: &FlowStore,
    ) -> anyhow::Result<()> {
        // Held for the batch: the watcher only writes it on interface changes.
        let names = names
            .read()
            .map_err(|_| anyhow::anyhow!("interface names lock poisoned"))?;
        let reasons = self.reasons.clone();
        let mut flows = Vec::with_capacity(batch.len());
        let now = std::time::Instant::now();
        for record in batch {
            let raw = match record {
                Record::Event(raw) => raw,
                Record::L7(rec) => {
                    if let Some(flow) = self.l7_flow(rec, clock, &names, builder, now) {
                        flows.push(Entry::Flow(flow));
                    }
                    continue;
                }
            };
            let ev = Event::decode(raw, clock, |r| reasons.get(&r).cloned());
            if ev.kind == crate::decode::event::Kind::Drop
                && !self.report_unspecified_drops
                && ev.drop_reason_name.as_deref() == Some(UNSPECIFIED_DROP)
            {
                self.pipeline
                    .unspecified_drops
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let ifname = names.get(&ev.ifindex).cloned();
            let mut rec = builder.record(ev, ifname);
            self.put_names(&mut rec, now);
            let rec = Arc::new(rec);
            // The hooks after decode, in order. Each is cheap and never waits (see metrics/
            // and export/); the exporters build the `flow.Flow` on their own threads.
            if let Some(m) = &self.metrics {
                m.observe_flow(rec.as_ref());
            }
            if let Some(x) = &self.exporter {
                x.push_record(&rec);
            }
            if let Some(o) = &self.otlp {
                o.push_record(&rec);
            }
            self.unanswered.observe(&rec);
            if let Some(dump) = self.dump {
                let ev = &rec.event;
                match dump {
                    DumpFormat::Json => {
                        let mut v = serde_json::to_value(ev)?;
                        v["ifname"] = json!(rec.ifname.as_deref());
                        writeln!(self.out, "{}", json!({ "event": v }))?;
                    }
                    DumpFormat::Text => {
                        let ifname = rec.ifname.as_deref().unwrap_or("?");
                        writeln!(self.out, "{}", ev.monitor_line(ifname))?;
                    }
                }
            }
            flows.push(Entry::Record(rec));
        }
        store.push_batch(flows);
        if self.dump.is_some() {
            self.out.flush()?;
        }
        Ok(())
    }

    /// The L7 flow of a captured payload, through the same hooks as every flow (metrics,
    /// export); `None` when the payload is not a DNS or HTTP message.
    fn l7_flow(
        &mut self,
        rec: &L7Record,
        clock: &Clock,
        names: &BTreeMap<u32, Arc<str>>,
        builder: &FlowBuilder,
        now: std::time::Instant,
    ) -> Option<Arc<flowscope_proto::flow::Flow>> {
        let ev = Event::decode(&rec.header, clock, |_| None);
        let mut base = builder.record(ev.clone(), names.get(&ev.ifindex).cloned());
        self.put_names(&mut base, now);
        let flow = Arc::new(
            self.l7
                .decode(rec, &ev, base.to_flow(), &mut self.fqdn, now)?,
        );
        if let Some(m) = &self.metrics {
            m.observe_flow(flow.as_ref());
        }
        if let Some(x) = &self.exporter {
            x.push(&flow);
        }
        if let Some(o) = &self.otlp {
            o.push(&flow);
        }
        Some(flow)
    }

    /// `source_names` / `destination_names` from the FQDN cache, as Hubble fills them from
    /// Cilium's DNS proxy (by the addresses on the wire).
    fn put_names(&self, rec: &mut FlowRecord, now: std::time::Instant) {
        let names =
            |ip: Option<std::net::IpAddr>| ip.and_then(|ip| self.fqdn.shared_names(&ip, now));
        rec.src_names = names(rec.event.src);
        rec.dst_names = names(rec.event.dst);
    }

    /// Loss notices go to the export file, as Hubble's exporter writes them.
    fn observe(&self, entries: &[Entry]) {
        for e in entries {
            if let (Entry::Lost(lost), Some(x)) = (e, &self.exporter) {
                x.push_lost(lost, &self.node);
            }
        }
    }

    /// Unanswered-connection reports are not packets: Hubble's flow metrics never see them
    /// (they have their own counters, read at scrape time), and the export file gets them as
    /// their own line only when asked (`--export-unanswered`).
    fn unanswered_reports(&self, reports: &[Arc<flowscope_proto::flow::Flow>]) {
        if let Some(x) = &self.exporter {
            for r in reports {
                x.push_unanswered(r);
            }
        }
    }

    fn changes(&mut self, changes: &[Change]) -> anyhow::Result<()> {
        if self.json() {
            for c in changes {
                writeln!(self.out, "{}", change_json(c))?;
            }
            self.out.flush()?;
        }
        Ok(())
    }

    fn stats(&mut self, dp: &Mutex<Datapath>, stats: &ReaderStats) -> anyhow::Result<()> {
        if self.json() {
            writeln!(self.out, "{}", stats_json(dp, stats))?;
            self.out.flush()?;
        }
        Ok(())
    }

    /// The conntrack table, once, at exit (`--dump json`): what `flowctl ct list` will serve.
    fn conntrack(&mut self, dp: &Mutex<Datapath>) -> anyhow::Result<()> {
        if !self.json() {
            return Ok(());
        }
        // A walk, on the async worker that runs the shutdown: once, at exit, with nothing
        // else waiting; without the datapath's mutex.
        let table = dp.lock().map(|d| d.conntrack_table());
        let entries = table.map(|t| t.entries()).unwrap_or_default();
        let list: Vec<serde_json::Value> = entries
            .iter()
            .map(|(k, e)| {
                let addr = |raw: &[u8; 16]| {
                    monitor_common::addr_from_raw(k.family, raw)
                        .map(|a| a.to_string())
                        .unwrap_or_default()
                };
                json!({
                    "proto": k.proto, "src": addr(&k.src_addr), "dst": addr(&k.dst_addr),
                    "src_port": k.src_port, "dst_port": k.dst_port,
                    "tx_packets": e.packets[0], "tx_bytes": e.bytes[0],
                    "rx_packets": e.packets[1], "rx_bytes": e.bytes[1],
                    "flags_seen_tx": e.flags_seen[0], "flags_seen_rx": e.flags_seen[1],
                    "flags": e.flags, "ifindex": e.ifindex,
                })
            })
            .collect();
        writeln!(self.out, "{}", json!({ "conntrack": list }))?;
        self.out.flush()?;
        Ok(())
    }
}
