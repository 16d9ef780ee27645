//! The endpoints file: pods and remote nodes described by hand (or by a script), in YAML.
//!
//! ```yaml
//! endpoints:
//!   - namespace: default                 # required: a DNS label
//!     pod: pod-a                         # required: a DNS subdomain
//!     ips: [10.244.0.213, "fd00:10:244::213"]   # its addresses (IPv4 and IPv6)
//!     labels: {app: web, tier: frontend} # Kubernetes label syntax; values are strings
//!     workload: {name: web, kind: Deployment}   # optional
//!     id: 762                            # optional endpoint ID (1 to 2^32-1)
//! remote_nodes: [198.51.100.11, 198.51.100.0/28]   # other nodes: addresses or CIDRs
//! services:
//!   - namespace: default                 # required: a DNS label
//!     name: web                          # required: a DNS label
//!     ips: [10.96.0.10]                  # required: ClusterIP(s), external addresses
//!     ports:                             # required: at least one
//!       - port: 80                       # the Service's port
//!         target_port: 8080              # the backends' port (default: `port`)
//!         protocol: TCP                  # TCP (default), UDP or SCTP
//!     backends: [10.244.0.77]            # optional: the pods' addresses behind it
//! ```
//!
//! - Every top-level key is optional, but the file may not be empty: write `endpoints: []` to
//!   declare no endpoints (an editor that truncates the file before writing it must not wipe
//!   every endpoint for a second).
//! - Each endpoint's labels become `k8s:<key>=<value>`, plus
//!   `k8s:io.kubernetes.pod.namespace=<namespace>` (as Cilium derives them), sorted; its identity
//!   is computed from them ([`super::identity_for_labels`]). `io.kubernetes.pod.namespace` may
//!   not be given as a label: it comes from `namespace`.
//! - Unknown keys are errors (a typo must not silently drop a field); so are a pod listed twice,
//!   an address claimed by two pods, an endpoint ID used twice, and anything Kubernetes would
//!   reject as a name or label. An endpoint may list pods of other nodes too: the same file can
//!   be deployed on every node.
//! - `remote_nodes`: addresses of the other nodes of the cluster (they resolve to the reserved
//!   identity `remote-node`); a bare address or a CIDR (host bits are ignored).
//! - `services`: what the Kubernetes source's Services and EndpointSlices say, for nodes
//!   without it ([`super::services`]): flows to or from one of `ips` on one of `ports` carry the
//!   Service's name (`destination_service`, `source_service`), and a connection the node's NAT
//!   rules translate from a frontend to a backend (`backends` × `target_port`) is joined across
//!   the translation. A Service listed twice, and a frontend (address and port) claimed by two
//!   Services, are errors. Files without `services` read as before.
//!
//! At start the agent calls [`load`]: a file that cannot be read or parsed stops it, before it
//! attaches anything, with an error naming the line and field. Then [`watch`] polls the file
//! (metadata every interval, content when the metadata changed, and every
//! [`FULL_CHECK_EVERY`] polls anyway) and applies each new version; a bad version is logged with
//! `tracing::warn!` and the last good one stays in force. Polling, rather than inotify, sees
//! every way of replacing a file (editors' rename-on-save, Kubernetes ConfigMap symlink swaps,
//! a file that is deleted and recreated) with no special case.

use std::{
    fmt,
    hash::{DefaultHasher, Hash as _, Hasher as _},
    io,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, de};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    Endpoint, Registry, Service, ServiceAddr, ServiceName, Workload, identity_for_labels,
    labels::{
        NAMESPACE_LABEL, check_dns_label, check_dns_subdomain, check_label_key, check_label_value,
        pod_labels,
    },
    parse_cidr, source,
};

/// How often [`watch`] looks at the file by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// [`watch`] reads the file every this many polls even when its metadata has not changed (a
/// same-size rewrite within the file system's timestamp granularity would otherwise be missed).
pub const FULL_CHECK_EVERY: u32 = 10;

/// What a valid endpoints file says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileContents {
    /// The endpoints, in file order.
    pub endpoints: Vec<Endpoint>,
    /// Remote-node addresses (as /32 or /128) and CIDRs.
    pub remote_nodes: Vec<IpNet>,
    /// The Services, in file order.
    pub services: Vec<Service>,
}

/// Where in the file a problem is (1-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Line number.
    pub line: usize,
    /// Column number.
    pub column: usize,
}

/// Why an endpoints file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("endpoints file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The file holds no YAML at all.
    #[error(
        "{}the file is empty: write `endpoints: []` to declare no endpoints",
        prefix(path.as_deref())
    )]
    Empty {
        /// The file, when known.
        path: Option<PathBuf>,
    },
    /// Bad YAML, a field of the wrong type or with a bad value, an unknown or missing field.
    #[error("{}{}{message}", prefix(path.as_deref()), at(location))]
    Parse {
        /// The file, when known.
        path: Option<PathBuf>,
        /// Where the parser stopped.
        location: Option<Location>,
        /// What is wrong, starting with the field's path (`endpoints[0].ips: …`).
        message: String,
    },
    /// Entries that are fine alone but not together (a pod or an address listed twice).
    #[error("{}{field}: {reason}", prefix(path.as_deref()))]
    Conflict {
        /// The file, when known.
        path: Option<PathBuf>,
        /// The field of the second entry (`endpoints[3].ips`).
        field: String,
        /// What it conflicts with.
        reason: String,
    },
}

fn prefix(path: Option<&Path>) -> String {
    path.map(|p| format!("endpoints file {}: ", p.display()))
        .unwrap_or_default()
}

fn at(location: &Option<Location>) -> String {
    location
        .map(|l| format!("line {}, column {}: ", l.line, l.column))
        .unwrap_or_default()
}

impl FileError {
    /// The same error, naming `path`.
    fn in_file(mut self, file: &Path) -> Self {
        match &mut self {
            FileError::Read { .. } => {}
            FileError::Empty { path }
            | FileError::Parse { path, .. }
            | FileError::Conflict { path, .. } => *path = Some(file.to_owned()),
        }
        self
    }

    /// Where in the file the problem is, when the parser knows.
    pub fn location(&self) -> Option<Location> {
        match self {
            FileError::Parse { location, .. } => *location,
            _ => None,
        }
    }

    fn from_yaml(e: serde_yaml_ng::Error) -> Self {
        let location = e.location().map(|l| Location {
            line: l.line(),
            column: l.column(),
        });
        let mut message = e.to_string();
        // The parser appends (or inserts) " at line L column C": we say it first, once.
        if let Some(l) = location {
            message = message.replacen(&format!(" at line {} column {}", l.line, l.column), "", 1);
        }
        // serde names our Rust types in "expected …": say what the file should hold instead.
        for (ty, what) in [
            (
                "struct FileSpec",
                "a mapping with `endpoints`, `remote_nodes` and/or `services`",
            ),
            (
                "struct ServiceSpec",
                "a service (a mapping with `namespace`, `name`, `ips`, `ports`, …)",
            ),
            (
                "struct PortSpec",
                "a service port (`{port: 80, target_port: 8080, protocol: TCP}`)",
            ),
            (
                "struct EndpointSpec",
                "an endpoint (a mapping with `namespace`, `pod`, …)",
            ),
            ("struct WorkloadSpec", "a workload (`{name: …, kind: …}`)"),
        ] {
            message = message.replace(ty, what);
        }
        FileError::Parse {
            path: None,
            location,
            message,
        }
    }
}

/// Reads and checks the endpoints file at `path`.
pub fn load(path: &Path) -> Result<FileContents, FileError> {
    let bytes = std::fs::read(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_bytes(&bytes).map_err(|e| e.in_file(path))
}

/// Checks the text of an endpoints file.
pub fn parse(text: &str) -> Result<FileContents, FileError> {
    let has_content = text.lines().any(|l| {
        let l = l.trim();
        !l.is_empty() && !l.starts_with('#') && l != "---"
    });
    if !has_content {
        return Err(FileError::Empty { path: None });
    }
    let spec: FileSpec = serde_yaml_ng::from_str(text).map_err(FileError::from_yaml)?;
    spec.check()
}

fn parse_bytes(bytes: &[u8]) -> Result<FileContents, FileError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text),
        Err(e) => {
            let before = &bytes[..e.valid_up_to()];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
            Err(FileError::Parse {
                path: None,
                location: Some(Location { line, column }),
                message: "the file is not valid UTF-8".into(),
            })
        }
    }
}

/// Puts a file's contents in force: its endpoints, remote nodes and Services replace what the file said
/// before (source [`source::FILE`]).
pub fn apply(registry: &Registry, contents: FileContents) {
    registry.replace_remote_nodes(source::FILE, contents.remote_nodes);
    registry.replace_services(source::FILE, contents.services);
    registry.replace_source(source::FILE, contents.endpoints);
}

/// What one reload by [`watch_with`] gave.
#[derive(Debug)]
pub enum Reload {
    /// A new version was applied.
    Applied {
        /// How many endpoints it has.
        endpoints: usize,
        /// How many remote-node entries it has.
        remote_nodes: usize,
    },
    /// A new version (or a failure to read the file) was rejected; the last good one stays.
    Rejected(FileError),
}

/// Follows the file at `path`: every `interval` (see [`DEFAULT_INTERVAL`]) it checks whether the
/// file changed and, if so, applies it to `registry`; a bad version is logged with
/// `tracing::warn!` and changes nothing. The first check is immediate. Ends when `cancel` fires.
/// Must be called inside a Tokio runtime.
pub fn watch(
    path: impl Into<PathBuf>,
    registry: Registry,
    interval: Duration,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    watch_with(path, registry, interval, cancel, |_| {})
}

/// [`watch`], also telling `observe` about every reload, applied or rejected (for metrics, a
/// status page, tests). A read error is reported once until it changes or the file is back.
pub fn watch_with(
    path: impl Into<PathBuf>,
    registry: Registry,
    interval: Duration,
    cancel: CancellationToken,
    mut observe: impl FnMut(&Reload) + Send + 'static,
) -> JoinHandle<()> {
    let path = path.into();
    tokio::spawn(async move {
        let mut poller = Poller::default();
        let mut applied_once = false;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let Some(result) = poller.poll(&path).await else {
                continue;
            };
            let reload = match result {
                Ok(contents) => {
                    let (endpoints, remote_nodes) =
                        (contents.endpoints.len(), contents.remote_nodes.len());
                    info!(path = %path.display(), endpoints, remote_nodes, "endpoints file loaded");
                    apply(&registry, contents);
                    applied_once = true;
                    Reload::Applied {
                        endpoints,
                        remote_nodes,
                    }
                }
                Err(e) => {
                    if applied_once {
                        warn!("{e}; keeping the last good version");
                    } else {
                        warn!("{e}; no endpoints from this file until it is fixed");
                    }
                    Reload::Rejected(e)
                }
            };
            observe(&reload);
        }
    })
}

/// What [`watch`] remembers between polls.
#[derive(Default)]
struct Poller {
    /// The metadata when the file was last read.
    meta: Option<Meta>,
    /// The hash of the content last parsed (good or bad: a bad version is reported once).
    hash: Option<u64>,
    /// The last read error reported, to report each once.
    error: Option<io::ErrorKind>,
    /// Polls since the last read.
    polls: u32,
}

/// What tells us the file may have changed (ino and dev: replaced by a rename).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Meta {
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    dev: u64,
}

impl Meta {
    fn of(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        Meta {
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
        }
    }
}

impl Poller {
    /// A new version of the file, parsed, or a new problem; None when nothing changed.
    async fn poll(&mut self, path: &Path) -> Option<Result<FileContents, FileError>> {
        let read_error = |this: &mut Self, e: io::Error| {
            this.meta = None;
            if this.error == Some(e.kind()) {
                return None;
            }
            this.error = Some(e.kind());
            Some(Err(FileError::Read {
                path: path.to_owned(),
                source: e,
            }))
        };
        // metadata() follows symlinks: a ConfigMap's `..data` swap changes the target's inode.
        let meta = match tokio::fs::metadata(path).await {
            Ok(m) => Meta::of(&m),
            Err(e) => return read_error(self, e),
        };
        self.polls += 1;
        if self.meta == Some(meta) && self.polls < FULL_CHECK_EVERY {
            return None;
        }
        self.polls = 0;
        let bytes = match tokio::fs::read(path).await {
            Ok(b) => b,
            Err(e) => return read_error(self, e),
        };
        self.error = None;
        self.meta = Some(meta);
        let mut h = DefaultHasher::new();
        bytes.hash(&mut h);
        let hash = h.finish();
        if self.hash == Some(hash) {
            return None;
        }
        self.hash = Some(hash);
        Some(parse_bytes(&bytes).map_err(|e| e.in_file(path)))
    }
}

// ---- The YAML schema. Values are checked while deserialising, so that errors carry the
// ---- parser's line and the field's path.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    endpoints: Vec<EndpointSpec>,
    #[serde(default)]
    remote_nodes: List<NetItem>,
    #[serde(default)]
    services: Vec<ServiceSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceSpec {
    #[serde(deserialize_with = "namespace")]
    namespace: String,
    #[serde(deserialize_with = "namespace")]
    name: String,
    ips: List<IpItem>,
    ports: Vec<PortSpec>,
    #[serde(default)]
    backends: List<IpItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortSpec {
    #[serde(deserialize_with = "port")]
    port: u16,
    #[serde(default, deserialize_with = "some_port")]
    target_port: Option<u16>,
    #[serde(default)]
    protocol: ProtocolSpec,
}

/// A service port's protocol, as Kubernetes spells it.
#[derive(Clone, Copy, Default, Deserialize)]
enum ProtocolSpec {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl ProtocolSpec {
    fn number(self) -> u8 {
        match self {
            ProtocolSpec::Tcp => 6,
            ProtocolSpec::Udp => 17,
            ProtocolSpec::Sctp => 132,
        }
    }
}

fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    struct V;
    impl de::Visitor<'_> for V {
        type Value = u16;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a port from 1 to 65535")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u16, E> {
            match u16::try_from(v) {
                Ok(p) if p != 0 => Ok(p),
                _ => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
            }
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u16, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
            }
        }
    }
    d.deserialize_u16(V)
}

fn some_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    port(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointSpec {
    #[serde(deserialize_with = "namespace")]
    namespace: String,
    #[serde(deserialize_with = "dns_subdomain")]
    pod: String,
    #[serde(default)]
    ips: List<IpItem>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    workload: Option<WorkloadSpec>,
    #[serde(default, deserialize_with = "endpoint_id")]
    id: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadSpec {
    #[serde(deserialize_with = "dns_subdomain")]
    name: String,
    #[serde(deserialize_with = "kind")]
    kind: String,
}

/// A string checked by `check`. The check runs inside the parser's call (a visitor), so that
/// its error carries the field's own path and line, not its parent's.
fn checked<'de, D: Deserializer<'de>>(
    d: D,
    check: fn(&str) -> Result<(), String>,
) -> Result<String, D::Error> {
    struct V(fn(&str) -> Result<(), String>);
    impl de::Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            (self.0)(v).map_err(E::custom)?;
            Ok(v.to_owned())
        }
    }
    d.deserialize_str(V(check))
}

fn namespace<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, check_dns_label)
}

fn dns_subdomain<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, check_dns_subdomain)
}

fn kind<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, |s| {
        let ok = s.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
            && s.bytes().all(|c| c.is_ascii_alphanumeric());
        if ok {
            Ok(())
        } else {
            Err(format!(
                "`{s}` is not a workload kind (letters and digits, like Deployment)"
            ))
        }
    })
}

fn endpoint_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    struct V;
    impl de::Visitor<'_> for V {
        type Value = Option<u32>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an endpoint ID from 1 to 4294967295")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            match u32::try_from(v) {
                Ok(0) => Err(E::custom(
                    "endpoint ID 0 means none: leave `id` out instead",
                )),
                Ok(id) => Ok(Some(id)),
                Err(_) => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
            }
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
            }
        }
    }
    d.deserialize_u32(V)
}

/// One entry of a list of strings, parsed.
trait Item: Sized {
    /// What the list holds, for messages ("IP addresses").
    const EXPECTING: &'static str;
    fn parse(s: &str) -> Result<Self, String>;
}

struct IpItem(IpAddr);

impl Item for IpItem {
    const EXPECTING: &'static str = "a list of IP addresses";
    fn parse(s: &str) -> Result<Self, String> {
        s.parse()
            .map(IpItem)
            .map_err(|_| format!("`{s}` is not an IP address"))
    }
}

struct NetItem(IpNet);

impl Item for NetItem {
    const EXPECTING: &'static str = "a list of addresses or CIDRs";
    fn parse(s: &str) -> Result<Self, String> {
        parse_cidr(s).map(NetItem).map_err(|e| e.to_string())
    }
}

/// A YAML list of strings parsed into `T`s; an error names the entry (`item 1`, from 0).
/// A null value (`ips:` with nothing after it) is an empty list.
struct List<T>(Vec<T>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(Vec::new())
    }
}

impl<'de, T: Item> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Item> de::Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(List(Vec::new()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    let item = T::parse(&s)
                        .map_err(|e| de::Error::custom(format!("item {}: {e}", out.len())))?;
                    out.push(item);
                }
                Ok(List(out))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A YAML mapping of pod labels, checked (Kubernetes syntax, no key twice).
#[derive(Default)]
struct Labels(Vec<(String, String)>);

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Labels;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of labels (key: value)")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Labels::default())
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, String)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    check_label_key(&key).map_err(de::Error::custom)?;
                    if key == NAMESPACE_LABEL {
                        return Err(de::Error::custom(format!(
                            "label `{NAMESPACE_LABEL}` comes from `namespace`: remove it"
                        )));
                    }
                    if out.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format!("label `{key}` is given twice")));
                    }
                    let value: String = map.next_value()?;
                    check_label_value(&value)
                        .map_err(|e| de::Error::custom(format!("{key}: {e}")))?;
                    out.push((key, value));
                }
                Ok(Labels(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl FileSpec {
    /// Checks what holds across entries and builds the endpoints.
    fn check(self) -> Result<FileContents, FileError> {
        use std::collections::HashMap;
        let conflict = |field: String, reason: String| FileError::Conflict {
            path: None,
            field,
            reason,
        };
        let mut pods: HashMap<(&str, &str), usize> = HashMap::new();
        let mut owners: HashMap<IpAddr, usize> = HashMap::new();
        let mut ids: HashMap<u32, usize> = HashMap::new();
        let name = |i: usize| {
            let e = &self.endpoints[i];
            format!("{}/{} (endpoints[{i}])", e.namespace, e.pod)
        };
        for (i, e) in self.endpoints.iter().enumerate() {
            if let Some(&j) = pods.get(&(e.namespace.as_str(), e.pod.as_str())) {
                return Err(conflict(
                    format!("endpoints[{i}].pod"),
                    format!(
                        "{}/{} is listed twice (also endpoints[{j}])",
                        e.namespace, e.pod
                    ),
                ));
            }
            pods.insert((&e.namespace, &e.pod), i);
            for ip in &e.ips.0 {
                match owners.get(&ip.0.to_canonical()) {
                    Some(&j) if j != i => {
                        return Err(conflict(
                            format!("endpoints[{i}].ips"),
                            format!("{} is also an address of {}", ip.0, name(j)),
                        ));
                    }
                    _ => {
                        owners.insert(ip.0.to_canonical(), i);
                    }
                }
            }
            if let Some(id) = e.id {
                if let Some(&j) = ids.get(&id) {
                    return Err(conflict(
                        format!("endpoints[{i}].id"),
                        format!("{id} is also the ID of {}", name(j)),
                    ));
                }
                ids.insert(id, i);
            }
        }

        let endpoints = self
            .endpoints
            .iter()
            .map(|e| {
                let labels = pod_labels(&e.namespace, e.labels.0.iter().map(|(k, v)| (k, v)));
                let mut ips: Vec<IpAddr> = Vec::new();
                for ip in &e.ips.0 {
                    if !ips.contains(&ip.0) {
                        ips.push(ip.0);
                    }
                }
                Endpoint {
                    id: e.id.unwrap_or(0),
                    identity: identity_for_labels(&labels),
                    namespace: e.namespace.clone(),
                    pod_name: e.pod.clone(),
                    labels,
                    workloads: e
                        .workload
                        .iter()
                        .map(|w| Workload {
                            name: w.name.clone(),
                            kind: w.kind.clone(),
                        })
                        .collect(),
                    ips,
                    ifname: None,
                }
            })
            .collect();
        let mut remote_nodes: Vec<IpNet> = Vec::new();
        for n in self.remote_nodes.0 {
            if !remote_nodes.contains(&n.0) {
                remote_nodes.push(n.0);
            }
        }
        let services = check_services(&self.services)?;
        Ok(FileContents {
            endpoints,
            remote_nodes,
            services,
        })
    }
}

/// The file's Services, checked: each listed once, each frontend claimed by one Service, at
/// least one address and one port each.
fn check_services(specs: &[ServiceSpec]) -> Result<Vec<Service>, FileError> {
    use std::collections::HashMap;
    let conflict = |field: String, reason: String| FileError::Conflict {
        path: None,
        field,
        reason,
    };
    let mut names: HashMap<(&str, &str), usize> = HashMap::new();
    let mut frontends: HashMap<(IpAddr, u16, u8), usize> = HashMap::new();
    let mut out = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let name = (spec.namespace.as_str(), spec.name.as_str());
        if let Some(j) = names.insert(name, i) {
            return Err(conflict(
                format!("services[{i}].name"),
                format!(
                    "{}/{} is listed twice (also services[{j}])",
                    spec.namespace, spec.name
                ),
            ));
        }
        if spec.ips.0.is_empty() {
            return Err(conflict(
                format!("services[{i}].ips"),
                "a Service needs at least one address (its ClusterIP)".into(),
            ));
        }
        if spec.ports.is_empty() {
            return Err(conflict(
                format!("services[{i}].ports"),
                "a Service needs at least one port".into(),
            ));
        }
        let mut svc = Service {
            name: ServiceName {
                namespace: spec.namespace.clone(),
                name: spec.name.clone(),
            },
            frontends: Vec::new(),
            backends: Vec::new(),
        };
        for ip in &spec.ips.0 {
            for p in &spec.ports {
                let fe = ServiceAddr {
                    ip: ip.0.to_canonical(),
                    port: p.port,
                    proto: p.protocol.number(),
                };
                match frontends.insert((fe.ip, fe.port, fe.proto), i) {
                    Some(j) if j != i => {
                        let other = &specs[j];
                        return Err(conflict(
                            format!("services[{i}].ips"),
                            format!(
                                "{} port {} is also a frontend of {}/{} (services[{j}])",
                                ip.0, p.port, other.namespace, other.name
                            ),
                        ));
                    }
                    _ => {}
                }
                if !svc.frontends.contains(&fe) {
                    svc.frontends.push(fe);
                }
            }
        }
        for ip in &spec.backends.0 {
            for p in &spec.ports {
                let be = ServiceAddr {
                    ip: ip.0.to_canonical(),
                    port: p.target_port.unwrap_or(p.port),
                    proto: p.protocol.number(),
                };
                if !svc.backends.contains(&be) {
                    svc.backends.push(be);
                }
            }
        }
        out.push(svc);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::{reserved, testutil::TempDir};

    const EXAMPLE: &str = include_str!("../../../deploy/examples/endpoints.yaml");

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_example_file_parses() {
        let c = parse(EXAMPLE).unwrap();
        let a = &c.endpoints[0];
        assert_eq!(
            (a.namespace.as_str(), a.pod_name.as_str(), a.id),
            ("default", "pod-a", 762)
        );
        assert_eq!(a.ips, [ip("10.244.0.213"), ip("fd00:10:244::213")]);
        assert_eq!(
            a.labels,
            [
                "k8s:app=web",
                "k8s:io.kubernetes.pod.namespace=default",
                "k8s:tier=frontend"
            ]
        );
        // The golden identity of pod-a (see identity.rs): every node computes this number.
        assert_eq!(a.identity, 14_040_707);
        assert_eq!(
            a.workloads,
            [Workload {
                name: "web".into(),
                kind: "Deployment".into()
            }]
        );
        assert!(c.endpoints.iter().any(|e| e.pod_name == "pod-b"));
        let web = &c.services[0];
        assert_eq!(web.name.to_string(), "default/web");
        assert!(!web.frontends.is_empty() && !web.backends.is_empty());
        assert!(
            c.remote_nodes
                .contains(&"198.51.100.11/32".parse().unwrap())
        );
    }

    #[test]
    fn a_good_file() {
        let c = parse(
            r#"
endpoints:
  - namespace: default
    pod: pod-a
    ips: [10.244.0.213, "fd00:10:244::213", 10.244.0.213]
    labels: {app: web, version: 2.10, canary: true, empty: "", app.kubernetes.io/name: web}
    workload: {name: web, kind: Deployment}
    id: 762
  - namespace: kube-system
    pod: coredns-1
    labels:
    ips:
remote_nodes: [198.51.100.11, 198.51.100.0/28, "2001:db8::5/64", 198.51.100.11]
"#,
        )
        .unwrap();
        let a = &c.endpoints[0];
        assert_eq!(
            a.ips,
            [ip("10.244.0.213"), ip("fd00:10:244::213")],
            "duplicates dropped"
        );
        assert_eq!(
            a.labels,
            [
                "k8s:app.kubernetes.io/name=web",
                "k8s:app=web",
                "k8s:canary=true",
                "k8s:empty=",
                "k8s:io.kubernetes.pod.namespace=default",
                "k8s:version=2.10", // the text as written, not the float 2.1
            ]
        );
        let dns = &c.endpoints[1];
        assert_eq!(dns.labels, ["k8s:io.kubernetes.pod.namespace=kube-system"]);
        assert!(dns.ips.is_empty() && dns.workloads.is_empty() && dns.id == 0);
        assert_eq!(
            c.remote_nodes,
            [
                "198.51.100.11/32".parse::<IpNet>().unwrap(),
                "198.51.100.0/28".parse().unwrap(),
                "2001:db8::/64".parse().unwrap(),
            ]
        );
        // Only a top-level key is needed.
        assert!(parse("endpoints: []\n").unwrap().endpoints.is_empty());
        assert_eq!(
            parse("remote_nodes: [10.0.0.1]")
                .unwrap()
                .remote_nodes
                .len(),
            1
        );
    }

    #[test]
    fn services_name_frontends_and_backends() {
        let c = parse(
            r#"endpoints: []
services:
  - namespace: default
    name: web
    ips: [10.96.0.10, "fd00:96::10"]
    ports:
      - {port: 80, target_port: 8080}
      - {port: 53, protocol: UDP}
    backends: [10.244.0.77]
"#,
        )
        .unwrap();
        let [web] = c.services.as_slice() else {
            panic!("{:?}", c.services)
        };
        assert_eq!(web.name.to_string(), "default/web");
        let fe: Vec<(IpAddr, u16, u8)> = web
            .frontends
            .iter()
            .map(|a| (a.ip, a.port, a.proto))
            .collect();
        assert_eq!(
            fe,
            [
                (ip("10.96.0.10"), 80, 6),
                (ip("10.96.0.10"), 53, 17),
                (ip("fd00:96::10"), 80, 6),
                (ip("fd00:96::10"), 53, 17),
            ]
        );
        // Each backend address on each port's target port (the port itself without one).
        let be: Vec<(IpAddr, u16, u8)> = web
            .backends
            .iter()
            .map(|a| (a.ip, a.port, a.proto))
            .collect();
        assert_eq!(
            be,
            [(ip("10.244.0.77"), 8080, 6), (ip("10.244.0.77"), 53, 17)]
        );

        // Applied, the registry names the frontend; a file without services removes them.
        let r = Registry::default();
        apply(&r, c);
        assert_eq!(
            r.service(ip("10.96.0.10"), 80).unwrap().to_string(),
            "default/web"
        );
        assert!(r.snapshot().services().is_backend(ip("10.244.0.77"), 8080));
        apply(&r, parse("endpoints: []\n").unwrap());
        assert!(r.service(ip("10.96.0.10"), 80).is_none());
    }

    /// Each kind of bad file, with the message the operator sees.
    #[test]
    fn bad_files_say_what_and_where() {
        const POD_A: &str = "endpoints:\n  - namespace: default\n    pod: a\n";
        let pod_a = |rest: &str| format!("{POD_A}{rest}");
        let s = |text: &str| text.to_owned();
        let cases: Vec<(String, &str)> = vec![
            (
                s(""),
                "the file is empty: write `endpoints: []` to declare no endpoints",
            ),
            (s("# nothing\n\n"), "the file is empty"),
            (
                s("endpoints:\n  - namespace: default\n    pod: \"a\n"),
                // The parser's second mark (where the scalar began) stays in the message.
                "line 4, column 1: found unexpected end of stream, while scanning a quoted scalar \
                 at line 3 column 10",
            ),
            (
                s("endpoints:\n  - namespace: default\n    pod: [a\n"),
                "line 3, column 10: endpoints[0].pod: invalid type: sequence, expected a string",
            ),
            (
                pod_a("   ips: []\n"),
                "line 4, column 4: did not find expected '-' indicator",
            ),
            (
                pod_a("    ips: [10.0.0.1, 10.0.0.300]\n"),
                "line 4, column 10: endpoints[0].ips: item 1: `10.0.0.300` is not an IP address",
            ),
            (
                pod_a("    label: {app: web}\n"),
                "line 4, column 5: endpoints[0]: unknown field `label`, expected one of",
            ),
            (
                s("endpoints:\n  - namespace: default\n    ips: [10.0.0.1]\n"),
                "line 2, column 5: endpoints[0]: missing field `pod`",
            ),
            (
                s("endpoints:\n  - namespace: Default\n    pod: a\n"),
                "line 2, column 16: endpoints[0].namespace: `Default` is not a DNS label",
            ),
            (
                pod_a("    labels: {app: web server}\n"),
                "endpoints[0].labels: app: label value `web server` is not valid",
            ),
            (
                pod_a("    labels: {app: web, app: db}\n"),
                "endpoints[0].labels: label `app` is given twice",
            ),
            (
                pod_a("    labels: {\"bad key\": x}\n"),
                "endpoints[0].labels: label key `bad key` is not valid",
            ),
            (
                pod_a("    labels: {io.kubernetes.pod.namespace: x}\n"),
                "label `io.kubernetes.pod.namespace` comes from `namespace`: remove it",
            ),
            (
                pod_a("    id: 0\n"),
                "line 4, column 9: endpoints[0].id: endpoint ID 0 means none: leave `id` out \
                 instead",
            ),
            (
                pod_a("    id: -3\n"),
                "line 4, column 9: endpoints[0].id: invalid type: integer `-3`, expected an \
                 endpoint ID from 1 to 4294967295",
            ),
            (
                pod_a("    workload: {name: web}\n"),
                "endpoints[0].workload: missing field `kind`",
            ),
            (
                pod_a("    workload: {name: web, kind: \"Deploy ment\"}\n"),
                "endpoints[0].workload.kind: `Deploy ment` is not a workload kind",
            ),
            (
                s("remote_nodes: [198.51.100.0/33]\n"),
                "remote_nodes: item 0: `198.51.100.0/33` is neither an IP address nor a CIDR",
            ),
            (
                s("endpoint: []\n"),
                "unknown field `endpoint`, expected one of `endpoints`, `remote_nodes`, \
                 `services`",
            ),
            (
                s("- a\n- b\n"),
                "line 1, column 1: invalid type: sequence, expected a mapping with `endpoints`, \
                 `remote_nodes` and/or `services`",
            ),
            (
                s("endpoints: [pod-a]\n"),
                "line 1, column 13: endpoints[0]: invalid type: string \"pod-a\", expected an \
                 endpoint (a mapping with `namespace`, `pod`, …)",
            ),
            (
                s("endpoints:\n\
                     - {namespace: default, pod: a, ips: [10.0.0.1]}\n\
                     - {namespace: default, pod: a}\n"),
                "endpoints[1].pod: default/a is listed twice (also endpoints[0])",
            ),
            (
                s("endpoints:\n\
                     - {namespace: default, pod: a, ips: [10.0.0.1]}\n\
                     - {namespace: default, pod: b, ips: [\"::ffff:10.0.0.1\"]}\n"),
                "endpoints[1].ips: ::ffff:10.0.0.1 is also an address of default/a (endpoints[0])",
            ),
            (
                s("endpoints:\n\
                     - {namespace: default, pod: a, id: 7}\n\
                     - {namespace: other, pod: a, id: 7}\n"),
                "endpoints[1].id: 7 is also the ID of default/a (endpoints[0])",
            ),
            (
                s("services:\n  - {namespace: default, name: web, ips: [10.96.0.10]}\n"),
                "line 2, column 5: services[0]: missing field `ports`",
            ),
            (
                s("services:\n  - {namespace: default, name: web, ips: [10.96.0.10], ports: []}\n"),
                "services[0].ports: a Service needs at least one port",
            ),
            (
                s("services:\n  - {namespace: default, name: web, ips: [], ports: [{port: 80}]}\n"),
                "services[0].ips: a Service needs at least one address",
            ),
            (
                s(
                    "services:\n  - {namespace: default, name: web, ips: [10.96.0.10], \
                   ports: [{port: 0}]}\n",
                ),
                "services[0].ports[0].port: invalid value: integer `0`, expected a port from 1 \
                 to 65535",
            ),
            (
                s(
                    "services:\n  - {namespace: default, name: web, ips: [10.96.0.10], \
                   ports: [{port: 80, protocol: tcp}]}\n",
                ),
                "services[0].ports[0].protocol: unknown variant `tcp`, expected one of `TCP`, \
                 `UDP`, `SCTP`",
            ),
            (
                s(
                    "services:\n  - {namespace: default, name: Web, ips: [10.96.0.10], \
                   ports: [{port: 80}]}\n",
                ),
                "services[0].name: `Web` is not a DNS label",
            ),
            (
                s("services:\n\
                     - {namespace: default, name: web, ips: [10.96.0.10], ports: [{port: 80}]}\n\
                     - {namespace: default, name: web, ips: [10.96.0.11], ports: [{port: 80}]}\n"),
                "services[1].name: default/web is listed twice (also services[0])",
            ),
            (
                s("services:\n\
                     - {namespace: default, name: web, ips: [10.96.0.10], ports: [{port: 80}]}\n\
                     - {namespace: other, name: web, ips: [10.96.0.10], ports: [{port: 80}]}\n"),
                "services[1].ips: 10.96.0.10 port 80 is also a frontend of default/web (services[0])",
            ),
        ];
        for (text, want) in &cases {
            let err = parse(text).expect_err(text);
            let location = err.location();
            let err = err.to_string();
            assert!(
                err.contains(want),
                "for {text:?}\n  got: {err}\n want: {want}"
            );
            if let Some(l) = location {
                let twice = format!("at line {} column {}", l.line, l.column);
                assert!(!err.contains(&twice), "location said twice: {err}");
            }
        }
    }

    #[test]
    fn load_names_the_file() {
        let dir = TempDir::new();
        let missing = dir.path().join("nope.yaml");
        let err = load(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("endpoints file {}: ", missing.display())),
            "{err}"
        );
        assert!(err.contains("No such file"), "{err}");

        let bad = dir.path().join("bad.yaml");
        std::fs::write(
            &bad,
            "endpoints:\n  - namespace: default\n    pod: a\n    ips: [x]\n",
        )
        .unwrap();
        let err = load(&bad).unwrap_err();
        assert_eq!(
            err.location(),
            Some(Location {
                line: 4,
                column: 10
            })
        );
        assert_eq!(
            err.to_string(),
            format!(
                "endpoints file {}: line 4, column 10: endpoints[0].ips: item 0: `x` is not an IP \
                 address",
                bad.display()
            )
        );

        std::fs::write(&bad, b"endpoints: []\n# caf\xe9\n").unwrap();
        let err = load(&bad).unwrap_err().to_string();
        assert!(
            err.ends_with("line 2, column 6: the file is not valid UTF-8"),
            "{err}"
        );
    }

    /// Replaces the file the way editors do: write a temporary file, rename it over.
    fn save(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    /// Waits (at most 5 s) for the watcher's next report.
    async fn next(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<Result<(usize, usize), String>>,
    ) -> Result<(usize, usize), String> {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("no reload within 5 s")
            .expect("watcher gone")
    }

    #[tokio::test]
    async fn reload_keeps_the_last_good_version() {
        let dir = TempDir::new();
        let path = dir.path().join("endpoints.yaml");
        let pod = |name: &str, addr: &str| {
            format!(
                "endpoints:\n  - {{namespace: default, pod: {name}, ips: [{addr}]}}\n\
                 remote_nodes: [198.51.100.11]\n"
            )
        };
        std::fs::write(&path, pod("pod-a", "10.244.0.213")).unwrap();
        let registry = Registry::new(vec![], vec![]);
        let cancel = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = watch_with(
            &path,
            registry.clone(),
            Duration::from_millis(20),
            cancel.clone(),
            move |r| {
                let _ = tx.send(match r {
                    Reload::Applied {
                        endpoints,
                        remote_nodes,
                    } => Ok((*endpoints, *remote_nodes)),
                    Reload::Rejected(e) => Err(e.to_string()),
                });
            },
        );
        let who =
            |r: &Registry, addr: &str| r.lookup(ip(addr)).endpoint.map(|e| e.pod_name.clone());

        // The first poll is immediate.
        assert_eq!(next(&mut rx).await, Ok((1, 1)));
        assert_eq!(who(&registry, "10.244.0.213").as_deref(), Some("pod-a"));
        assert_eq!(
            registry.lookup(ip("198.51.100.11")).identity,
            reserved::REMOTE_NODE
        );

        // A bad version: rejected, with the reason; pod-a stays.
        save(
            &path,
            "endpoints:\n  - namespace: default\n    pod: pod-b\n    ips: [10.244.0.777]\n",
        );
        let msg = next(&mut rx).await.expect_err("a bad version is rejected");
        assert!(
            msg.contains("line 4, column 10: endpoints[0].ips: item 0: `10.244.0.777`"),
            "{msg}"
        );
        assert_eq!(who(&registry, "10.244.0.213").as_deref(), Some("pod-a"));

        // The file disappears: reported once, pod-a stays.
        std::fs::remove_file(&path).unwrap();
        let msg = next(&mut rx).await.expect_err("a missing file is reported");
        assert!(msg.contains("No such file"), "{msg}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(rx.try_recv().is_err(), "a missing file is reported once");
        assert_eq!(who(&registry, "10.244.0.213").as_deref(), Some("pod-a"));

        // A good version, written in place: applied.
        std::fs::write(&path, pod("pod-b", "10.244.0.77")).unwrap();
        assert_eq!(next(&mut rx).await, Ok((1, 1)));
        assert_eq!(who(&registry, "10.244.0.77").as_deref(), Some("pod-b"));
        assert_eq!(who(&registry, "10.244.0.213"), None);

        // Touching the file without changing it reapplies nothing.
        let f = std::fs::File::options().append(true).open(&path).unwrap();
        f.set_modified(std::time::SystemTime::now() + Duration::from_secs(1))
            .unwrap();
        drop(f);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(rx.try_recv().is_err(), "same content, no reload");

        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the watcher ends when cancelled")
            .unwrap();
    }
}
