//! Loading the kernel programs and attaching them to interfaces.
//!
//! The object is embedded in the agent binary at build time (see `build.rs`). Programs are
//! loaded once and attached to many interfaces. With tcx (Linux 6.6+) each attachment is a BPF
//! link owned by this process: it disappears with the process, even after a crash, and it never
//! replaces another program (we insert ourselves first in the chain and return "next"). On older
//! kernels, clsact filters are used instead; those outlive a crashed process, so at start we
//! remove filters that carry our program names.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, OwnedFd},
    sync::Arc,
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray, RingBuf},
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TracePoint,
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions, TcAttachType},
        trace_point::TracePointLinkId,
    },
    util::KernelVersion,
};
use monitor_common::{
    CONFIG_GLOBAL, CONNTRACK_MAP, COUNTERS_MAP, Config, CtEntry, CtKey, EVENTS_MAP, IFACES_MAP,
    IfaceInfo, KERNEL_FILTER_GLOBAL, KernelFilter, L7_CONFIG_GLOBAL, aggregation, counter,
    ct_flags, prog, proto,
};

use crate::kernel::{facts as kernel, ifaces::Role};

/// The kernel object, built by build.rs from the monitor-ebpf crate.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor-ebpf"));

/// Errors of the datapath.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The object could not be loaded (maps created, relocations).
    #[error("loading the BPF object")]
    Load(#[source] aya::EbpfError),
    /// The verifier rejected a program.
    #[error(
        "the kernel verifier rejected program {program}: {io_error}\nverifier log (last lines):\n{log_tail}"
    )]
    Verifier {
        /// Program name.
        program: &'static str,
        /// The syscall error.
        io_error: std::io::Error,
        /// Last lines of the verifier's log.
        log_tail: String,
    },
    /// A program failed otherwise.
    #[error("program {program}")]
    Program {
        /// Program name.
        program: &'static str,
        /// Why.
        #[source]
        source: ProgramError,
    },
    /// Attaching to an interface failed.
    #[error("attaching {program} to {iface}")]
    Attach {
        /// Interface name.
        iface: String,
        /// Program name.
        program: &'static str,
        /// Why.
        #[source]
        source: ProgramError,
    },
    /// A map is missing or has the wrong type.
    #[error("map {name}")]
    Map {
        /// Map name.
        name: &'static str,
        /// Why.
        #[source]
        source: aya::maps::MapError,
    },
    /// A map we expected is not in the object.
    #[error("map {0} is missing from the BPF object")]
    MissingMap(&'static str),
    /// Duplicating a map's file descriptor failed.
    #[error("duplicating the descriptor of map {name}")]
    Dup {
        /// Map name.
        name: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Kernel facts for the drop tracepoint.
    #[error("preparing drop tracing")]
    Kernel(#[from] kernel::KernelError),
}

/// How TC programs are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// tcx where the kernel has it (6.6+), else netlink.
    Auto,
    /// tcx links (6.6+).
    Tcx,
    /// clsact qdisc + netlink filters.
    Netlink,
}

/// Monitor aggregation level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    /// Every packet at every observation point.
    None,
    /// One trace per packet per conntrack tuple (untranslated transit duplicates skipped).
    Low,
    /// Per connection: new, first sighting of each TCP flag per direction, then at most every 5 s.
    Medium,
    /// Like medium, at most every 30 s.
    Max,
}

impl Aggregation {
    fn raw(self) -> u8 {
        match self {
            Aggregation::None => aggregation::NONE,
            Aggregation::Low => aggregation::LOW,
            Aggregation::Medium => aggregation::MEDIUM,
            Aggregation::Max => aggregation::MAX,
        }
    }

    /// The report interval at medium/max.
    pub fn interval(self) -> Duration {
        match self {
            Aggregation::Max => Duration::from_secs(30),
            _ => Duration::from_secs(5),
        }
    }
}

/// Which observation points the hooks report (see `docs/observation-points.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObservationPoints {
    /// Each hook reports its own point (from-endpoint, to-network, from-network,
    /// to-endpoint, …); from `low` up a packet is reported where it entered the node.
    PerHop,
    /// Cilium's: from `low` up no FROM_* point is reported; a pod's packets are reported at its
    /// veth as to-stack, or to-endpoint when delivered to a local pod.
    Cilium,
}

impl ObservationPoints {
    fn raw(self) -> u8 {
        match self {
            ObservationPoints::PerHop => monitor_common::obs_mode::PER_HOP,
            ObservationPoints::Cilium => monitor_common::obs_mode::CILIUM,
        }
    }
}

/// Options of the datapath.
#[derive(Clone, Debug)]
pub struct DatapathOptions {
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Conntrack table capacity.
    pub conntrack_entries: u32,
    /// Monitor aggregation.
    pub aggregation: Aggregation,
    /// Observation points reported.
    pub observation_points: ObservationPoints,
    /// Wake the reader when this many bytes wait (0: only the reader's timer).
    pub wakeup_bytes: u64,
    /// Trace drops through `skb:kfree_skb`.
    pub drops: bool,
    /// How to attach TC programs.
    pub attach_mode: AttachMode,
    /// Lifetime of an idle established TCP connection.
    pub tcp_lifetime: Duration,
    /// Lifetime of a closing TCP connection.
    pub closing_lifetime: Duration,
    /// Lifetime of other connections (UDP, ICMP…).
    pub other_lifetime: Duration,
    /// Ports whose payloads are captured for the L7 parsers (empty: none).
    pub l7_ports: crate::decode::l7::L7Ports,
    /// Payload bytes captured per packet on those ports.
    pub l7_snap_len: usize,
    /// Only packets this filter passes are reported (`--kernel-filter`); `None`: all.
    pub kernel_filter: Option<KernelFilter>,
}

impl Default for DatapathOptions {
    fn default() -> Self {
        DatapathOptions {
            ring_bytes: monitor_common::DEFAULT_RING_BYTES,
            conntrack_entries: monitor_common::CONNTRACK_MAX_ENTRIES,
            aggregation: Aggregation::Medium,
            observation_points: ObservationPoints::PerHop,
            wakeup_bytes: 256 * 1024,
            l7_ports: crate::decode::l7::L7Ports::default(),
            l7_snap_len: monitor_common::L7_PAYLOAD_MAX,
            drops: true,
            attach_mode: AttachMode::Auto,
            // Cilium's defaults: 6 h established TCP, 10 s closing, 60 s non-TCP.
            tcp_lifetime: Duration::from_secs(21_600),
            closing_lifetime: Duration::from_secs(10),
            other_lifetime: Duration::from_secs(60),
            kernel_filter: None,
        }
    }
}

/// An interface we are attached to.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Attached {
    /// Interface index.
    pub ifindex: u32,
    /// Interface name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// tcx or netlink.
    pub mode: AttachMode,
}

/// The loaded programs and their maps.
pub struct Datapath {
    ebpf: Ebpf,
    mode: AttachMode,
    attached: BTreeMap<u32, Attached>,
    /// The links of each attachment (not Clone, so kept apart from [`Attached`]).
    links: BTreeMap<u32, Vec<(&'static str, SchedClassifierLinkId)>>,
    ifaces: BpfHashMap<MapData, u32, IfaceInfo>,
    counters: PerCpuArray<MapData, u64>,
    conntrack: Arc<Conntrack>,
    config: Config,
    /// Drop reason names, when drop tracing is on.
    pub drop_reasons: std::collections::HashMap<u32, String>,
    /// The drop tracepoint's link, while it is attached.
    drop_link: Option<TracePointLinkId>,
}

/// The (program, TC direction) pairs for a role.
fn programs_for(role: Role) -> [(&'static str, TcAttachType); 2] {
    match role {
        Role::Endpoint => [
            (prog::FROM_ENDPOINT, TcAttachType::Ingress),
            (prog::TO_ENDPOINT, TcAttachType::Egress),
        ],
        Role::Uplink => [
            (prog::FROM_NETWORK, TcAttachType::Ingress),
            (prog::TO_NETWORK, TcAttachType::Egress),
        ],
        // The gateway device: what the host stack transmits on it comes *from* the host.
        Role::Host => [
            (prog::TO_HOST, TcAttachType::Ingress),
            (prog::FROM_HOST, TcAttachType::Egress),
        ],
    }
}

fn tail_lines(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn program_error(program: &'static str, source: ProgramError) -> DatapathError {
    match source {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => DatapathError::Verifier {
            program,
            io_error,
            log_tail: tail_lines(&verifier_log.to_string(), 20),
        },
        source => DatapathError::Program { program, source },
    }
}

impl Datapath {
    /// Loads the object, writes the configuration and loads every program (nothing is attached
    /// yet). Returns the ring buffer for the reader.
    pub fn load(opts: &DatapathOptions) -> Result<(Datapath, RingBuf<MapData>), DatapathError> {
        let mode = match opts.attach_mode {
            AttachMode::Auto
                if KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0)) =>
            {
                AttachMode::Tcx
            }
            AttachMode::Auto => AttachMode::Netlink,
            m => m,
        };

        let mut config = Config {
            report_interval_ns: opts.aggregation.interval().as_nanos() as u64,
            tcp_lifetime_ns: opts.tcp_lifetime.as_nanos() as u64,
            closing_lifetime_ns: opts.closing_lifetime.as_nanos() as u64,
            other_lifetime_ns: opts.other_lifetime.as_nanos() as u64,
            wakeup_bytes: opts.wakeup_bytes,
            aggregation: opts.aggregation.raw(),
            obs_mode: opts.observation_points.raw(),
            ..Config::default()
        };
        let mut drop_reasons = std::collections::HashMap::new();
        if opts.drops {
            let support = kernel::drop_support()?;
            config.offsets = support.offsets;
            config.netns_ino = kernel::netns_inode().unwrap_or(0);
            config.drops_enabled = 1;
            drop_reasons = support.reasons;
        }
        let l7_config = opts.l7_ports.kernel_config(opts.l7_snap_len);
        // The configuration is a read-only global of the programs (`.rodata`, frozen at load):
        // the verifier sees its values as constants and drops the code of the other modes.
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(EVENTS_MAP, opts.ring_bytes)
            .map_max_entries(CONNTRACK_MAP, opts.conntrack_entries)
            .override_global(CONFIG_GLOBAL, &config, true)
            .override_global(L7_CONFIG_GLOBAL, &l7_config, true)
            // Always written, so that without a filter the verifier sees it disabled and
            // removes its code.
            .override_global(
                KERNEL_FILTER_GLOBAL,
                &opts.kernel_filter.unwrap_or_default(),
                true,
            )
            .load(EBPF_OBJECT)
            .map_err(DatapathError::Load)?;

        for name in prog::ALL_TC {
            let p: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(DatapathError::MissingMap(name))?
                .try_into()
                .map_err(|e| program_error(name, e))?;
            p.load().map_err(|e| program_error(name, e))?;
        }
        let mut drop_link = None;
        if opts.drops {
            let p: &mut TracePoint = ebpf
                .program_mut(prog::KFREE_SKB)
                .ok_or(DatapathError::MissingMap(prog::KFREE_SKB))?
                .try_into()
                .map_err(|e| program_error(prog::KFREE_SKB, e))?;
            p.load().map_err(|e| program_error(prog::KFREE_SKB, e))?;
            drop_link = Some(
                p.attach("skb", "kfree_skb")
                    .map_err(|e| program_error(prog::KFREE_SKB, e))?,
            );
        }

        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(DatapathError::MissingMap(name))
        };
        let ring = RingBuf::try_from(take(&mut ebpf, EVENTS_MAP)?).map_err(|source| {
            DatapathError::Map {
                name: EVENTS_MAP,
                source,
            }
        })?;
        let ifaces = BpfHashMap::try_from(take(&mut ebpf, IFACES_MAP)?).map_err(|source| {
            DatapathError::Map {
                name: IFACES_MAP,
                source,
            }
        })?;
        let counters = PerCpuArray::try_from(take(&mut ebpf, COUNTERS_MAP)?).map_err(|source| {
            DatapathError::Map {
                name: COUNTERS_MAP,
                source,
            }
        })?;
        let conntrack = Arc::new(Conntrack::new(
            take(&mut ebpf, CONNTRACK_MAP)?,
            config,
            opts.conntrack_entries,
        )?);

        Ok((
            Datapath {
                ebpf,
                mode,
                attached: BTreeMap::new(),
                links: BTreeMap::new(),
                ifaces,
                counters,
                conntrack,
                config,
                drop_reasons,
                drop_link,
            },
            ring,
        ))
    }

    /// The attach mode in use.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// The configuration written to the kernel.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Capacity of the conntrack table.
    pub fn conntrack_capacity(&self) -> u32 {
        self.conntrack.capacity()
    }

    /// Interfaces we are attached to.
    pub fn attached(&self) -> impl Iterator<Item = &Attached> {
        self.attached.values()
    }

    /// Attaches the programs for `role` to an interface.
    pub fn attach(&mut self, ifindex: u32, name: &str, role: Role) -> Result<(), DatapathError> {
        if self.attached.contains_key(&ifindex) {
            return Ok(());
        }
        if self.mode == AttachMode::Netlink {
            // A clsact qdisc may already exist (EEXIST): fine.
            let _ = tc::qdisc_add_clsact(name);
            for (program, attach_type) in programs_for(role) {
                // Filters left by a previous, crashed agent carry our program names.
                let _ = tc::qdisc_detach_program(name, attach_type, program);
            }
        }
        // Register the interface before attaching: departure hooks and the drop program look it up.
        let _ = self.ifaces.insert(
            ifindex,
            IfaceInfo {
                role: role.raw(),
                _pad: [0; 3],
            },
            0,
        );
        let mut links = Vec::new();
        for (program, attach_type) in programs_for(role) {
            let options = match self.mode {
                // First in the chain: we see every packet that reaches the hook, before another
                // program can redirect or drop it, and we hand it on unchanged.
                AttachMode::Tcx | AttachMode::Auto => TcAttachOptions::TcxOrder(LinkOrder::first()),
                AttachMode::Netlink => TcAttachOptions::Netlink(NlOptions::default()),
            };
            let p: &mut SchedClassifier = self
                .ebpf
                .program_mut(program)
                .ok_or(DatapathError::MissingMap(program))?
                .try_into()
                .map_err(|e| program_error(program, e))?;
            match p.attach_with_options(name, attach_type, options) {
                Ok(id) => links.push((program, id)),
                Err(source) => {
                    for (program, id) in links {
                        self.detach_link(program, id);
                    }
                    let _ = self.ifaces.remove(&ifindex);
                    return Err(DatapathError::Attach {
                        iface: name.to_owned(),
                        program,
                        source,
                    });
                }
            }
        }
        self.attached.insert(
            ifindex,
            Attached {
                ifindex,
                name: name.to_owned(),
                role,
                mode: self.mode,
            },
        );
        self.links.insert(ifindex, links);
        Ok(())
    }

    fn detach_link(&mut self, program: &'static str, id: SchedClassifierLinkId) {
        if let Some(p) = self.ebpf.program_mut(program) {
            let p: Result<&mut SchedClassifier, _> = p.try_into();
            if let Ok(p) = p {
                // The interface may be gone already, taking the link with it: nothing to report.
                let _ = p.detach(id);
            }
        }
    }

    /// Detaches from an interface (quietly: it may have vanished).
    pub fn detach(&mut self, ifindex: u32) -> Option<Attached> {
        let att = self.attached.remove(&ifindex)?;
        for (program, id) in self.links.remove(&ifindex).unwrap_or_default() {
            self.detach_link(program, id);
        }
        let _ = self.ifaces.remove(&ifindex);
        Some(att)
    }

    /// Detaches from every interface, and the drop tracepoint: no event can enter the ring
    /// after this (the maps stay, so the ring can still be drained and conntrack read).
    pub fn detach_all(&mut self) {
        let all: Vec<u32> = self.attached.keys().copied().collect();
        for ifindex in all {
            self.detach(ifindex);
        }
        if let Some(id) = self.drop_link.take()
            && let Some(p) = self.ebpf.program_mut(prog::KFREE_SKB)
        {
            let p: Result<&mut TracePoint, _> = p.try_into();
            if let Ok(p) = p {
                // Detaching a perf link we made only fails if it is already gone.
                let _ = p.detach(id);
            }
        }
    }

    /// Sums the per-CPU counters: indexed like `monitor_common::counter`.
    pub fn counters(&self) -> [u64; counter::COUNT as usize] {
        let mut out = [0u64; counter::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(values) = self.counters.get(&(i as u32), 0) {
                *slot = values.iter().sum();
            }
        }
        out
    }

    /// One counter, per CPU (for LostEvents, which Hubble reports per CPU).
    pub fn counter_per_cpu(&self, index: u32) -> Vec<u64> {
        self.counters
            .get(&index, 0)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default()
    }

    /// One conntrack entry.
    pub fn conntrack_get(&self, key: &CtKey) -> Option<CtEntry> {
        self.conntrack.get(key)
    }

    /// The conntrack table, through a handle of its own: walk it without holding the
    /// `Datapath` (see [`Conntrack`]).
    pub fn conntrack_table(&self) -> Arc<Conntrack> {
        self.conntrack.clone()
    }
}

/// The conntrack map through a file descriptor of its own (a duplicate of the map's), so that
/// a walk of the table does not need the `Datapath` and its mutex. A walk is two syscalls per
/// entry (next key, lookup): tens of milliseconds for a full table of 65,536 entries, during
/// which the interface follower, the decode loop's loss counters and every other API request
/// would wait on the mutex. Walks are blocking work: callers run them on a thread of their own
/// or in `spawn_blocking`, never on an async worker (the GC thread in `agent.rs`, the Inspector).
pub struct Conntrack {
    map: BpfHashMap<MapData, CtKey, CtEntry>,
    /// Another duplicate of the map's descriptor, from which [`Conntrack::try_clone`] makes
    /// handles (aya's maps do not lend theirs).
    fd: OwnedFd,
    config: Config,
    capacity: u32,
    /// Entries seen by the last [`Conntrack::gc`] walk.
    last_count: std::sync::atomic::AtomicU64,
}

impl Conntrack {
    fn new(map: Map, config: Config, capacity: u32) -> Result<Conntrack, DatapathError> {
        let map_error = |source| DatapathError::Map {
            name: CONNTRACK_MAP,
            source,
        };
        let fd = match &map {
            Map::HashMap(data) | Map::LruHashMap(data) => {
                Some(data.fd().as_fd().try_clone_to_owned())
            }
            _ => None,
        };
        // Fails on a map of another type, before `fd` is looked at.
        let map = BpfHashMap::try_from(map).map_err(map_error)?;
        let fd = match fd {
            Some(Ok(fd)) => fd,
            Some(Err(source)) => {
                return Err(DatapathError::Dup {
                    name: CONNTRACK_MAP,
                    source,
                });
            }
            None => return Err(DatapathError::MissingMap(CONNTRACK_MAP)),
        };
        Ok(Conntrack {
            map,
            fd,
            config,
            capacity,
            last_count: Default::default(),
        })
    }

    /// Another handle on the same map (for a thread that removes entries: aya wants `&mut`).
    pub fn try_clone(&self) -> Result<Conntrack, DatapathError> {
        let map_error = |source| DatapathError::Map {
            name: CONNTRACK_MAP,
            source,
        };
        let fd = self.fd.try_clone().map_err(|source| DatapathError::Dup {
            name: CONNTRACK_MAP,
            source,
        })?;
        let data = MapData::from_fd(fd).map_err(map_error)?;
        let map = Map::from_map_data(data).map_err(map_error)?;
        Conntrack::new(map, self.config, self.capacity)
    }

    /// The programs' configuration (the lifetimes of entries).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The map's capacity.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// One entry.
    pub fn get(&self, key: &CtKey) -> Option<CtEntry> {
        self.map.get(key, 0).ok()
    }

    /// A snapshot of the table (a walk: blocking work).
    pub fn entries(&self) -> Vec<(CtKey, CtEntry)> {
        self.map.iter().filter_map(Result::ok).collect()
    }

    /// The number of entries (a walk of the keys: blocking work).
    pub fn len(&self) -> usize {
        self.map.keys().filter_map(Result::ok).count()
    }

    /// True when the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of entries the last [`Conntrack::gc`] of any handle saw; not a walk.
    pub fn last_count(&self) -> u64 {
        self.last_count.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Removes expired entries (the LRU map only evicts under pressure), returns how many and
    /// records the count it saw on `shared` (see [`Conntrack::last_count`]). A walk: blocking
    /// work.
    pub fn gc(&mut self, now_mono_ns: u64, shared: &Conntrack) -> usize {
        let cfg = self.config;
        let mut seen = 0u64;
        let expired: Vec<CtKey> = self
            .map
            .iter()
            .filter_map(Result::ok)
            .inspect(|_| seen += 1)
            .filter(|(k, e)| now_mono_ns.saturating_sub(e.last_seen_ns) > lifetime_ns(&cfg, k, e))
            .map(|(k, _)| k)
            .collect();
        let removed = expired
            .iter()
            .filter(|k| self.map.remove(k).is_ok())
            .count();
        shared.last_count.store(
            seen.saturating_sub(removed as u64),
            std::sync::atomic::Ordering::Relaxed,
        );
        removed
    }
}

/// How long an entry lives without packets.
pub fn lifetime_ns(cfg: &Config, key: &CtKey, e: &CtEntry) -> u64 {
    if key.proto != proto::TCP {
        cfg.other_lifetime_ns
    } else if e.flags & ct_flags::CLOSING != 0 {
        cfg.closing_lifetime_ns
    } else {
        cfg.tcp_lifetime_ns
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        // Dropping `Ebpf` would detach too; doing it explicitly keeps the order obvious:
        // links first, then programs and maps.
        self.detach_all();
    }
}
