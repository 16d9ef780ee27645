//! The agent's main loop: load, attach, follow interfaces, read events, hand them on, detach.

use std::{
    collections::{BTreeMap, HashMap},
    io::Write as _,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, bail};
use monitor_common::{FlowEvent, counter};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    datapath::{Attached, Datapath, DatapathOptions},
    event::Event,
    ifaces::{self, LinkWatcher, Selector},
    kernel::{self, Clock},
    reader::{self, ReaderStats},
};

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
}

/// Interface index -> name, for every interface of the namespace (not only attached ones).
type Names = Arc<RwLock<BTreeMap<u32, String>>>;

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
        *n = links;
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

/// Runs the agent until `shutdown` fires; everything attached is detached before returning.
pub async fn run(opts: AgentOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    preflight(&opts)?;
    let (mut dp, ring) = Datapath::load(&opts.datapath)?;
    info!(mode = ?dp.mode(), aggregation = ?opts.datapath.aggregation, "programs loaded");
    let reasons: Arc<HashMap<u32, String>> = Arc::new(dp.drop_reasons.clone());

    let names: Names = Arc::default();
    let initial = sync_interfaces(&mut dp, &opts.selector, &names);
    log_changes(&initial);
    let dp = Arc::new(Mutex::new(dp));

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

    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(ReaderStats::default());
    let queue_batches = (opts.queue_events / reader::BATCH).max(1);
    let (tx, mut rx) = mpsc::channel::<Vec<FlowEvent>>(queue_batches);
    let reader = reader::spawn(ring, opts.poll_interval, tx, stats.clone(), stop.clone())
        .context("starting the ring-buffer reader")?;

    // Interface follower: wakes on rtnetlink notifications, rescans at least every few seconds.
    let (change_tx, mut change_rx) = mpsc::unbounded_channel::<Vec<Change>>();
    let watcher = {
        let (dp, names, stop, sel, every) = (
            dp.clone(),
            names.clone(),
            stop.clone(),
            opts.selector.clone(),
            opts.rescan_interval,
        );
        let watch = LinkWatcher::new().context("subscribing to rtnetlink notifications")?;
        std::thread::Builder::new()
            .name("iface-watcher".into())
            .spawn(move || {
                let mut last = std::time::Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let changed = watch.wait(Duration::from_millis(200));
                    if !changed && last.elapsed() < every {
                        continue;
                    }
                    last = std::time::Instant::now();
                    let changes = match dp.lock() {
                        Ok(mut d) => sync_interfaces(&mut d, &sel, &names),
                        Err(_) => break,
                    };
                    if !changes.is_empty() {
                        log_changes(&changes);
                        let _ = change_tx.send(changes);
                    }
                }
            })?
    };

    let mut clock = Clock::now();
    let mut tick = tokio::time::interval(opts.stats_interval);
    let mut gc_tick = tokio::time::interval(Duration::from_secs(10));
    let mut sink = Sink {
        dump: opts.dump,
        out,
        reasons,
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                sink.events(&batch, &clock, &names)?;
            }
            Some(changes) = change_rx.recv() => sink.changes(&changes)?,
            _ = tick.tick() => {
                clock = Clock::now();
                sink.stats(&dp, &stats)?;
            }
            _ = gc_tick.tick() => {
                if let Ok(mut d) = dp.lock() {
                    d.gc_conntrack(Clock::monotonic_ns());
                }
            }
        }
    }

    info!("shutting down");
    stop.store(true, Ordering::Relaxed);
    // The reader drains the ring once more before it exits; hand on what it read.
    let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    let _ = watcher.join();
    while let Ok(batch) = rx.try_recv() {
        sink.events(&batch, &clock, &names)?;
    }
    sink.stats(&dp, &stats)?;
    sink.conntrack(&dp)?;
    if let Ok(mut d) = dp.lock() {
        d.detach_all();
    }
    drop(dp);
    info!("detached from every interface");
    Ok(())
}

fn stats_json(dp: &Mutex<Datapath>, stats: &ReaderStats) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    if let Ok(d) = dp.lock() {
        for (name, v) in counter::NAMES.iter().zip(d.counters()) {
            m.insert((*name).to_owned(), json!(v));
        }
        m.insert("conntrack_entries".into(), json!(d.conntrack().len()));
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
}

impl Sink {
    fn json(&self) -> bool {
        self.dump == Some(DumpFormat::Json)
    }

    fn events(&mut self, batch: &[FlowEvent], clock: &Clock, names: &Names) -> anyhow::Result<()> {
        let Some(dump) = self.dump else { return Ok(()) };
        let names = names.read().map(|n| n.clone()).unwrap_or_default();
        let reasons = self.reasons.clone();
        for raw in batch {
            let ev = Event::decode(raw, clock, |r| reasons.get(&r).cloned());
            match dump {
                DumpFormat::Json => {
                    let mut v = serde_json::to_value(&ev)?;
                    v["ifname"] = json!(names.get(&ev.ifindex));
                    writeln!(self.out, "{}", json!({ "event": v }))?;
                }
                DumpFormat::Text => {
                    let ifname = names.get(&ev.ifindex).map(String::as_str).unwrap_or("?");
                    writeln!(self.out, "{}", ev.monitor_line(ifname))?;
                }
            }
        }
        self.out.flush()?;
        Ok(())
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
        let entries = dp.lock().map(|d| d.conntrack()).unwrap_or_default();
        let list: Vec<serde_json::Value> = entries
            .iter()
            .map(|(k, e)| {
                let addr = |raw: &[u8; 16]| match k.family {
                    monitor_common::family::V4 => {
                        std::net::Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]).to_string()
                    }
                    _ => std::net::Ipv6Addr::from(*raw).to_string(),
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
