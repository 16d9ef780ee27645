//! Flow export to files, like Hubble's exporter: one JSON object per line in the shape of
//! Hubble's `observer.ExportEvent` (`{"flow":{…},"node_name":…,"time":…}`), so that anything that
//! ships Hubble's export files (Fluent Bit, Vector, Promtail, `hubble observe --input-file`)
//! ships ours.
//!
//! - events lost before the history (kernel ring buffer full, decode queue full) are written
//!   as Hubble writes them, `{"lost_events":{…},"node_name":…,"time":…}`, so that a reader of
//!   the file knows where it has gaps; filters and the field mask apply to flows only;
//! - allow and deny lists of Hubble `FlowFilter`s choose the flows, a field mask the fields;
//!   `Flow.extensions` (our own `Any`) is written only when the mask names it, since stock
//!   Hubble readers cannot parse an `Any` of a type they do not know;
//! - the file is rotated when the next line would make it larger than the maximum size: it is
//!   renamed `<name>-<UTC time>.<ext>` (gzipped to `….gz` if asked), and only the newest
//!   backups are kept (0 keeps every backup), as lumberjack does for Hubble;
//! - the pipeline never waits: [`Exporter::push`] is an `Arc` clone and a `try_send` into a
//!   bounded queue; a writer thread filters, encodes and writes. A flow that finds the queue
//!   full, or that cannot be written (full disk, unwritable path), is counted as lost, the error
//!   is logged (at most every 30 s) and counted, and the writer tries again with a backoff.
//!   After a failed write the file is cut back to its last complete line.

use std::{
    fs::{self, File, OpenOptions},
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use flowscope_filter::{FilterError, FlowFilterSet};
use flowscope_proto::{
    flow::{Flow, FlowFilter, LostEvent},
    observer::{ExportEvent, export_event},
};
use tracing::{info, warn};

use crate::{decode::record::FlowRecord, service::mask::FieldMask};

pub mod otlp;

/// Flows waiting for the writer; past this, flows are counted as lost.
pub const DEFAULT_QUEUE: usize = 8192;
/// Data waiting in the writer's buffer is flushed at least this often.
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// First and longest wait before retrying a file that failed.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));
/// Errors are logged at most this often (they are always counted).
const WARN_EVERY: Duration = Duration::from_secs(30);

/// What to export, and where.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// The file written; its directory is created if needed.
    pub path: PathBuf,
    /// Rotate before the file grows past this many bytes (0: never).
    pub max_size_bytes: u64,
    /// Rotated files kept (0: all).
    pub max_backups: usize,
    /// Gzip rotated files.
    pub compress: bool,
    /// Export only flows matching one of these (empty: all).
    pub allowlist: Vec<FlowFilter>,
    /// Never export flows matching one of these.
    pub denylist: Vec<FlowFilter>,
    /// Fields of `Flow` to keep, e.g. `time`, `source.namespace` (empty: all).
    pub field_mask: Vec<String>,
    /// Capacity of the queue between the pipeline and the writer, in flows.
    pub queue_size: usize,
    /// Also write unanswered-connection reports, as `flowscope_unanswered` lines. Off by
    /// default: Hubble's readers of export files know only ExportEvent's fields.
    pub unanswered: bool,
}

/// Why the exporter cannot start (bad configuration, reported before anything is attached).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A filter of the allow or deny list is invalid.
    #[error("--export-allowlist/--export-denylist")]
    Filter(#[from] FilterError),
    /// A path of the field mask names no field of `flow.Flow`.
    #[error("--export-fieldmask")]
    FieldMask(#[from] flowscope_proto::fieldmask::InvalidPath),
    /// The writer thread could not be started.
    #[error("starting the export writer thread")]
    Thread(#[source] std::io::Error),
}

/// Counters of the exporter, for metrics.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Lines written to the file (flushed): flows, and the loss notices among them.
    pub written: AtomicU64,
    /// Flows that were to be exported but were not: queue full, or the file could not be
    /// written.
    pub lost: AtomicU64,
    /// Failed file operations (open, write, flush, rotate).
    pub errors: AtomicU64,
    /// Rotations done.
    pub rotations: AtomicU64,
}

/// What goes to the writer.
enum Item {
    Flow(Arc<Flow>),
    /// A flow's record: its `flow.Flow` is built here, on the writer's thread, not on the
    /// decode path.
    Record(Arc<FlowRecord>),
    /// Events lost before the history, and the node that lost them.
    Lost(Arc<LostEvent>, Arc<str>),
    /// A report of a connection that got no reply (not a packet: its own line).
    Unanswered(Arc<Flow>),
}

/// The pipeline's handle on the export writer.
pub struct Exporter {
    tx: Option<SyncSender<Item>>,
    /// Whether unanswered-connection reports are written.
    unanswered: bool,
    stats: Arc<ExportStats>,
    thread: Option<JoinHandle<()>>,
}

impl Exporter {
    /// Validates the options and starts the writer thread. The file itself is opened by the
    /// writer: a path that cannot be written is reported and retried, not fatal.
    pub fn start(opts: ExportOptions) -> Result<Self, ExportError> {
        let filters = FlowFilterSet::compile(&opts.allowlist, &opts.denylist)?;
        flowscope_filter::refuse_unproduced(&opts.allowlist, &opts.denylist)?;
        let unanswered = opts.unanswered;
        let stats = Arc::new(ExportStats::default());
        let (tx, rx) = sync_channel(opts.queue_size.max(1));
        info!(path = %opts.path.display(), max_size_bytes = opts.max_size_bytes,
              max_backups = opts.max_backups, compress = opts.compress, "exporting flows");
        let mask = FieldMask::new(&opts.field_mask)?;
        let mut writer = Writer::new(opts, filters, mask, stats.clone());
        let thread = std::thread::Builder::new()
            .name("flow-export".into())
            .spawn(move || writer.run(&rx))
            .map_err(ExportError::Thread)?;
        Ok(Exporter {
            tx: Some(tx),
            unanswered,
            stats,
            thread: Some(thread),
        })
    }

    /// Queues a flow for export; never blocks. A full queue counts the flow as lost.
    pub fn push(&self, flow: &Arc<Flow>) {
        self.push_item(Item::Flow(flow.clone()));
    }

    /// Queues the flow of a record; never blocks.
    pub fn push_record(&self, rec: &Arc<FlowRecord>) {
        self.push_item(Item::Record(rec.clone()));
    }

    /// Queues a notice of events that `node` lost before its history; never blocks.
    pub fn push_lost(&self, lost: &Arc<LostEvent>, node: &Arc<str>) {
        self.push_item(Item::Lost(lost.clone(), node.clone()));
    }

    /// Queues an unanswered-connection report, when they are exported; never blocks.
    pub fn push_unanswered(&self, report: &Arc<Flow>) {
        if self.unanswered {
            self.push_item(Item::Unanswered(report.clone()));
        }
    }

    fn push_item(&self, item: Item) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The exporter's counters.
    pub fn stats(&self) -> Arc<ExportStats> {
        self.stats.clone()
    }

    /// Stops accepting flows and waits (at most `timeout`) for the writer to write what is
    /// queued and flush: a disk that hangs must not hang the agent's shutdown.
    pub fn close(mut self, timeout: Duration) {
        self.tx = None;
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + timeout;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            warn!("the export writer did not finish within {timeout:?}; leaving it behind");
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        // Closing the channel is enough for the writer to finish on its own.
        self.tx = None;
    }
}

/// The open export file.
struct Output {
    file: BufWriter<File>,
    /// Bytes in the file, including those still buffered.
    size: u64,
    /// Bytes known to be in the file (at the last successful flush).
    durable: u64,
    /// Flows written since the last successful flush.
    pending: u64,
}

struct Writer {
    opts: ExportOptions,
    filters: FlowFilterSet,
    mask: FieldMask,
    keep_extensions: bool,
    stats: Arc<ExportStats>,
    out: Option<Output>,
    retry_at: Instant,
    backoff: Duration,
    last_flush: Instant,
    last_warn: Option<Instant>,
    failures_since_warn: u64,
    line: Vec<u8>,
}

impl Writer {
    fn new(
        opts: ExportOptions,
        filters: FlowFilterSet,
        mask: FieldMask,
        stats: Arc<ExportStats>,
    ) -> Self {
        let keep_extensions = opts
            .field_mask
            .iter()
            .any(|p| p == "extensions" || p.starts_with("extensions."));
        Writer {
            mask,
            keep_extensions,
            opts,
            filters,
            stats,
            out: None,
            retry_at: Instant::now(),
            backoff: BACKOFF.0,
            last_flush: Instant::now(),
            last_warn: None,
            failures_since_warn: 0,
            line: Vec::with_capacity(2048),
        }
    }

    fn run(&mut self, rx: &Receiver<Item>) {
        loop {
            match rx.recv_timeout(FLUSH_EVERY) {
                Ok(item) => {
                    match &item {
                        Item::Flow(flow) => self.write(flow),
                        Item::Record(rec) => self.write(&rec.to_flow()),
                        Item::Lost(lost, node) => self.write_lost(lost, node),
                        Item::Unanswered(report) => self.write_unanswered(report),
                    }
                    if self.last_flush.elapsed() >= FLUSH_EVERY {
                        self.flush();
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.flush(),
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush();
                    return;
                }
            }
        }
    }

    fn write(&mut self, flow: &Flow) {
        if !self.filters.matches(flow) {
            return;
        }
        self.line.clear();
        if let Err(e) = encode_line(&mut self.line, flow, &self.mask, self.keep_extensions) {
            // Only values protojson cannot represent fail (a timestamp out of range).
            self.stats.lost.fetch_add(1, Ordering::Relaxed);
            self.report("encoding a flow", &e.into());
            return;
        }
        self.write_line();
    }

    fn write_unanswered(&mut self, report: &Flow) {
        if !self.filters.matches(report) {
            return;
        }
        self.line.clear();
        if let Err(e) = encode_unanswered_line(&mut self.line, report) {
            self.stats.lost.fetch_add(1, Ordering::Relaxed);
            self.report("encoding an unanswered-connection report", &e.into());
            return;
        }
        self.write_line();
    }

    fn write_lost(&mut self, lost: &LostEvent, node: &str) {
        self.line.clear();
        if let Err(e) = encode_lost_line(&mut self.line, lost, node) {
            self.stats.lost.fetch_add(1, Ordering::Relaxed);
            self.report("encoding lost events", &e.into());
            return;
        }
        self.write_line();
    }

    /// Appends `self.line` to the file (rotating first if it would not fit).
    fn write_line(&mut self) {
        if self.out.is_none() && !self.open() {
            self.stats.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let len = self.line.len() as u64;
        let full = self.out.as_ref().is_some_and(|o| {
            self.opts.max_size_bytes > 0 && o.size > 0 && o.size + len > self.opts.max_size_bytes
        });
        if full && !self.rotate() {
            self.stats.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Flush ourselves before the buffer would write on its own, so that `durable` always
        // knows what reached the file (a failure then loses only what was since).
        if self
            .out
            .as_ref()
            .is_some_and(|o| o.file.buffer().len() + self.line.len() > o.file.capacity())
        {
            self.flush();
        }
        let Some(out) = self.out.as_mut() else {
            self.stats.lost.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match out.file.write_all(&self.line) {
            Ok(()) => {
                out.size += len;
                out.pending += 1;
            }
            Err(e) => self.fail("writing", e, 1),
        }
    }

    /// Opens (or reopens) the file unless waiting for the next retry; false if it is not open.
    fn open(&mut self) -> bool {
        if Instant::now() < self.retry_at {
            return false;
        }
        let path = &self.opts.path;
        let opened = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| OpenOptions::new().create(true).append(true).open(path))
            .and_then(|f| Ok((f.metadata()?.len(), f)));
        match opened {
            Ok((size, file)) => {
                self.out = Some(Output {
                    file: BufWriter::with_capacity(64 * 1024, file),
                    size,
                    durable: size,
                    pending: 0,
                });
                true
            }
            Err(e) => {
                self.fail("opening", e, 0);
                false
            }
        }
    }

    fn flush(&mut self) {
        self.last_flush = Instant::now();
        let Some(out) = self.out.as_mut() else { return };
        if out.pending == 0 && out.size == out.durable {
            return;
        }
        match out.file.flush() {
            Ok(()) => {
                self.stats.written.fetch_add(out.pending, Ordering::Relaxed);
                out.pending = 0;
                out.durable = out.size;
                self.backoff = BACKOFF.0;
            }
            Err(e) => self.fail("writing", e, 0),
        }
    }

    /// Renames the full file to a backup (compressed if asked), prunes old backups, opens a new
    /// file. False if the new file could not be opened.
    fn rotate(&mut self) -> bool {
        self.flush();
        let Some(out) = self.out.take() else {
            return false;
        };
        drop(out);
        let backup = backup_path(&self.opts.path, SystemTime::now());
        if let Err(e) = fs::rename(&self.opts.path, &backup) {
            // Keep writing to the same file rather than lose flows: it grows past the size.
            self.report("rotating", &e);
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            return self.open();
        }
        self.stats.rotations.fetch_add(1, Ordering::Relaxed);
        if self.opts.compress
            && let Err(e) = gzip(&backup)
        {
            // The backup stays, uncompressed: nothing is lost.
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            self.report("compressing a rotated file", &e);
        }
        if let Err(e) = prune(&self.opts.path, self.opts.max_backups) {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            self.report("removing old rotated files", &e);
        }
        self.open()
    }

    /// A file operation failed: count it and the flows it loses, cut the file back to its last
    /// complete line, and wait before trying again.
    fn fail(&mut self, what: &str, e: std::io::Error, extra_lost: u64) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        let mut lost = extra_lost;
        if let Some(out) = self.out.take() {
            lost += out.pending;
            // into_parts: dropping the BufWriter would try to write its buffer once more.
            let (file, _unwritten) = out.file.into_parts();
            let _ = file.set_len(out.durable);
        }
        self.stats.lost.fetch_add(lost, Ordering::Relaxed);
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF.1);
        self.report(what, &e);
    }

    fn report(&mut self, what: &str, e: &std::io::Error) {
        self.failures_since_warn += 1;
        if self.last_warn.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return;
        }
        warn!(
            path = %self.opts.path.display(),
            failures = self.failures_since_warn,
            lost_total = self.stats.lost.load(Ordering::Relaxed),
            "flow export: {what} failed: {e} (flows are counted as lost until it works again)"
        );
        self.last_warn = Some(Instant::now());
        self.failures_since_warn = 0;
    }
}

/// Writes one ExportEvent line. Written by hand rather than by building an `ExportEvent`, which
/// would need an owned copy of every flow; the test below proves the output is the same.
fn encode_line(
    buf: &mut Vec<u8>,
    flow: &Flow,
    mask: &FieldMask,
    keep_extensions: bool,
) -> serde_json::Result<()> {
    buf.extend_from_slice(b"{\"flow\":");
    if !mask.is_all() {
        let mut kept = mask.apply(flow);
        if !keep_extensions {
            kept.extensions = None;
        }
        serde_json::to_writer(&mut *buf, &kept)?;
    } else if flow.extensions.is_some() && !keep_extensions {
        let stripped = Flow {
            extensions: None,
            ..flow.clone()
        };
        serde_json::to_writer(&mut *buf, &stripped)?;
    } else {
        serde_json::to_writer(&mut *buf, flow)?;
    }
    if !flow.node_name.is_empty() {
        buf.extend_from_slice(b",\"node_name\":");
        serde_json::to_writer(&mut *buf, &flow.node_name)?;
    }
    if let Some(t) = &flow.time {
        buf.extend_from_slice(b",\"time\":");
        serde_json::to_writer(&mut *buf, t)?;
    }
    buf.extend_from_slice(b"}\n");
    Ok(())
}

/// An unanswered-connection report: `{"flowscope_unanswered":{…},"node_name":…,"time":…}`,
/// the report in Hubble's flow JSON with our extension (which says what it is). A line of its
/// own, so that no reader takes it for a flow of a packet.
fn encode_unanswered_line(buf: &mut Vec<u8>, report: &Flow) -> serde_json::Result<()> {
    buf.extend_from_slice(b"{\"flowscope_unanswered\":");
    serde_json::to_writer(&mut *buf, report)?;
    if !report.node_name.is_empty() {
        buf.extend_from_slice(b",\"node_name\":");
        serde_json::to_writer(&mut *buf, &report.node_name)?;
    }
    if let Some(t) = &report.time {
        buf.extend_from_slice(b",\"time\":");
        serde_json::to_writer(&mut *buf, t)?;
    }
    buf.extend_from_slice(b"}\n");
    Ok(())
}

/// A loss notice as Hubble's exporter writes it.
fn encode_lost_line(buf: &mut Vec<u8>, lost: &LostEvent, node: &str) -> serde_json::Result<()> {
    let ev = ExportEvent {
        response_types: Some(export_event::ResponseTypes::LostEvents(*lost)),
        node_name: node.to_owned(),
        time: lost.last,
    };
    serde_json::to_writer(&mut *buf, &ev)?;
    buf.push(b'\n');
    Ok(())
}

/// `dir/flows.json` -> (`flows`, `.json`); no extension -> (`name`, ``).
fn stem_ext(path: &Path) -> (String, String) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rfind('.') {
        Some(i) if i > 0 => (name[..i].to_owned(), name[i..].to_owned()),
        _ => (name, String::new()),
    }
}

/// Length of the time in backup names: `2006-01-02T15-04-05.000`.
const STAMP_LEN: usize = 23;

/// `dir/flows-<UTC time to the millisecond>.json`: a name not used yet that sorts after every
/// existing backup (a later millisecond if needed: several rotations in one millisecond, or a
/// clock that went back), so that pruning by name always removes the oldest.
fn backup_path(path: &Path, now: SystemTime) -> PathBuf {
    let (stem, ext) = stem_ext(path);
    let dir = path.parent().unwrap_or(Path::new(""));
    let newest: Option<String> = backups(path).ok().and_then(|b| b.last().cloned()).map(|p| {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        name.strip_suffix(".gz").map(str::to_owned).unwrap_or(name)
    });
    let mut t = now;
    loop {
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let stamp = chrono::DateTime::from_timestamp(
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        )
        .unwrap_or_default()
        .format("%Y-%m-%dT%H-%M-%S%.3f")
        .to_string();
        let name = format!("{stem}-{stamp}{ext}");
        let candidate = dir.join(&name);
        let gz = dir.join(format!("{name}.gz"));
        if newest.as_ref().is_none_or(|n| name > *n) && !candidate.exists() && !gz.exists() {
            return candidate;
        }
        t += Duration::from_millis(1);
    }
}

/// The backups of `path`, oldest first.
fn backups(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let (stem, ext) = stem_ext(path);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let prefix = format!("{stem}-");
    let mut found: Vec<PathBuf> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let rest = rest.strip_suffix(".gz").unwrap_or(rest);
        let Some(stamp) = rest.strip_suffix(ext.as_str()) else {
            continue;
        };
        // `2006-01-02T15-04-05.000`: the only shape we write.
        let b = stamp.as_bytes();
        if b.len() == STAMP_LEN && b[10] == b'T' && b[19] == b'.' {
            found.push(dir.join(&name));
        }
    }
    // The time in the name sorts by age (".gz" after the plain name of the same backup).
    found.sort();
    Ok(found)
}

/// Removes the oldest backups beyond `keep` (0: keep all).
fn prune(path: &Path, keep: usize) -> std::io::Result<()> {
    if keep == 0 {
        return Ok(());
    }
    let all = backups(path)?;
    for old in &all[..all.len().saturating_sub(keep)] {
        match fs::remove_file(old) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// `file` -> `file.gz` (through `file.gz.tmp`, so a crash leaves no truncated `.gz`), then
/// removes `file`.
fn gzip(file: &Path) -> std::io::Result<()> {
    let gz = PathBuf::from(format!("{}.gz", file.display()));
    let tmp = PathBuf::from(format!("{}.gz.tmp", file.display()));
    let result = (|| {
        let mut input = File::open(file)?;
        let mut enc = flate2::write::GzEncoder::new(
            BufWriter::new(File::create(&tmp)?),
            flate2::Compression::default(),
        );
        std::io::copy(&mut input, &mut enc)?;
        enc.finish()?
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()?;
        fs::rename(&tmp, &gz)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    fs::remove_file(file)
}

/// The lists of `--export-allowlist` / `--export-denylist` (and the OTLP exporter's): one place
/// for the agent, the relay and flowctl (`flowscope_filter::lists`).
pub use flowscope_filter::lists::{FilterList, parse_filter_list, parse_filters};
/// `--export-fieldmask` (and `--otlp-field-mask`): paths separated by commas or spaces.
pub use flowscope_proto::fieldmask::parse_paths as parse_field_mask;

#[cfg(test)]
mod tests {
    use super::*;
    use flowscope_proto::{
        flow::{Endpoint, LostEventSource, Verdict},
        flowscope::v1::FlowExtension,
        json,
        observer::{ExportEvent, export_event::ResponseTypes},
        wkt::{Any, Timestamp},
    };
    use std::io::{BufRead as _, Read as _};

    fn flow(i: u32, verdict: Verdict) -> Arc<Flow> {
        Arc::new(Flow {
            time: Some(Timestamp::new(1_700_000_000 + i64::from(i), 5)),
            uuid: format!("u-{i}"),
            node_name: "node-1".into(),
            verdict: verdict as i32,
            source: Some(Endpoint {
                namespace: "default".into(),
                pod_name: "pod-a".into(),
                ..Endpoint::default()
            }),
            extensions: Some(Any::from_msg(&FlowExtension {
                skb_hash: 7,
                ..FlowExtension::default()
            })),
            ..Flow::default()
        })
    }

    fn opts(dir: &Path) -> ExportOptions {
        ExportOptions {
            path: dir.join("out/flows.json"),
            max_size_bytes: 0,
            max_backups: 0,
            compress: false,
            allowlist: Vec::new(),
            denylist: Vec::new(),
            field_mask: Vec::new(),
            queue_size: 1024,
            unanswered: false,
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::io::BufReader::new(File::open(path).unwrap())
            .lines()
            .map(|l| serde_json::from_str(&l.unwrap()).expect("each line is JSON"))
            .collect()
    }

    #[test]
    fn line_is_hubble_export_event() {
        let f = flow(1, Verdict::Forwarded);
        let mut buf = Vec::new();
        encode_line(&mut buf, &f, &FieldMask::default(), false).unwrap();
        let ev = ExportEvent {
            response_types: Some(ResponseTypes::Flow(Flow {
                extensions: None,
                ..(*f).clone()
            })),
            node_name: f.node_name.clone(),
            time: f.time,
        };
        assert_eq!(
            String::from_utf8(buf.clone()).unwrap(),
            json::to_json(&ev).unwrap() + "\n"
        );
        let back: ExportEvent = json::from_json(std::str::from_utf8(&buf).unwrap()).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn lost_events_are_written_as_hubble_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(dir.path());
        // Filters and masks choose flows; a loss notice is always written.
        o.allowlist = parse_filters(r#"{"verdict":["DROPPED"]}"#).unwrap();
        o.field_mask = parse_field_mask("time");
        let x = Exporter::start(o.clone()).unwrap();
        let t = Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        let lost = Arc::new(LostEvent {
            source: LostEventSource::PerfEventRingBuffer as i32,
            num_events_lost: 42,
            cpu: Some(1),
            first: Some(t),
            last: Some(t),
        });
        x.push(&flow(1, Verdict::Forwarded));
        x.push_lost(&lost, &Arc::from("node-1"));
        let stats = x.stats();
        x.close(Duration::from_secs(5));
        assert_eq!(stats.written.load(Ordering::Relaxed), 1);
        let got = lines(&o.path);
        assert_eq!(got.len(), 1, "{got:?}");
        let back: ExportEvent = json::from_json(&got[0].to_string()).unwrap();
        assert_eq!(
            back,
            ExportEvent {
                response_types: Some(ResponseTypes::LostEvents(*lost)),
                node_name: "node-1".into(),
                time: Some(t),
            }
        );
        assert_eq!(got[0]["lost_events"]["source"], "PERF_EVENT_RING_BUFFER");
        assert_eq!(got[0]["lost_events"]["num_events_lost"], "42");
    }

    #[test]
    fn filters_mask_and_extensions() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(dir.path());
        o.denylist = parse_filters(r#"{"verdict":["DROPPED"]}"#).unwrap();
        o.field_mask = parse_field_mask("time, source.pod_name,extensions");
        let x = Exporter::start(o.clone()).unwrap();
        for i in 0..10 {
            x.push(&flow(
                i,
                if i % 2 == 0 {
                    Verdict::Forwarded
                } else {
                    Verdict::Dropped
                },
            ));
        }
        let stats = x.stats();
        x.close(Duration::from_secs(5));
        let got = lines(&o.path);
        assert_eq!(got.len(), 5, "the deny list drops the 5 drops");
        assert_eq!(stats.written.load(Ordering::Relaxed), 5);
        assert_eq!(stats.lost.load(Ordering::Relaxed), 0);
        let f = &got[0]["flow"];
        assert_eq!(f["source"], serde_json::json!({"pod_name": "pod-a"}));
        assert!(f.get("uuid").is_none() && f.get("verdict").is_none());
        assert_eq!(f["extensions"]["skb_hash"], 7, "kept: the mask names it");
        assert_eq!(got[0]["node_name"], "node-1");
        assert_eq!(got[0]["time"], "2023-11-14T22:13:20.000000005Z");

        // Without a mask, everything but our extensions.
        let dir2 = tempfile::tempdir().unwrap();
        let o2 = ExportOptions {
            allowlist: parse_filters(r#"{"source_pod":["default/pod-a"]},{"verdict":["DROPPED"]}"#)
                .unwrap(),
            ..opts(dir2.path())
        };
        let x = Exporter::start(o2.clone()).unwrap();
        x.push(&flow(1, Verdict::Forwarded));
        x.close(Duration::from_secs(5));
        let got = lines(&o2.path);
        assert_eq!(got[0]["flow"]["uuid"], "u-1");
        assert!(got[0]["flow"].get("extensions").is_none());
    }

    #[test]
    fn rotation_keeps_max_backups_and_compresses() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(dir.path());
        let one = {
            let mut b = Vec::new();
            encode_line(
                &mut b,
                &flow(0, Verdict::Forwarded),
                &FieldMask::default(),
                false,
            )
            .unwrap();
            b.len() as u64
        };
        // Room for 3 lines per file; 20 lines make 7 files: the current one and 6 rotated.
        o.max_size_bytes = 3 * one + 10;
        o.max_backups = 2;
        o.compress = true;
        let x = Exporter::start(o.clone()).unwrap();
        for i in 0..20 {
            x.push(&flow(i, Verdict::Forwarded));
        }
        let stats = x.stats();
        x.close(Duration::from_secs(10));
        assert_eq!(stats.rotations.load(Ordering::Relaxed), 6);
        let kept = backups(&o.path).unwrap();
        assert_eq!(kept.len(), 2, "{kept:?}");
        let mut names: Vec<String> = fs::read_dir(o.path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names.len(),
            3,
            "two backups and the current file: {names:?}"
        );
        assert!(
            names[..2]
                .iter()
                .all(|n| n.starts_with("flows-") && n.ends_with(".json.gz"))
        );
        // The newest backup holds lines 15..18, the current file 18..20.
        let mut text = String::new();
        flate2::read::GzDecoder::new(File::open(&kept[1]).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        let uuids: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["flow"]["uuid"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(uuids, ["u-15", "u-16", "u-17"]);
        assert_eq!(lines(&o.path).len(), 2);
        assert!(fs::metadata(&o.path).unwrap().len() <= o.max_size_bytes);
    }

    #[test]
    fn unwritable_path_is_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        fs::write(&blocker, "").unwrap();
        let o = ExportOptions {
            path: blocker.join("flows.json"),
            ..opts(dir.path())
        };
        let x = Exporter::start(o).unwrap();
        for i in 0..5 {
            x.push(&flow(i, Verdict::Forwarded));
        }
        let stats = x.stats();
        x.close(Duration::from_secs(5));
        assert_eq!(stats.lost.load(Ordering::Relaxed), 5);
        assert!(stats.errors.load(Ordering::Relaxed) >= 1);
        assert_eq!(stats.written.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn bad_filters_are_errors() {
        assert!(parse_filters("{verdict}").is_err());
        let bad = parse_filters(r#"{"source_ip":["10.0.0.300"]}"#).unwrap();
        let err = Exporter::start(ExportOptions {
            allowlist: bad,
            ..opts(Path::new("/nonexistent"))
        })
        .err()
        .expect("invalid filter");
        assert!(format!("{:#}", anyhow::Error::new(err)).contains("source_ip"));
        assert_eq!(parse_filters(" ").unwrap(), Vec::new());
        assert_eq!(
            parse_filters(r#"[{"verdict":["DROPPED"]}]"#).unwrap().len(),
            1
        );
    }

    #[test]
    fn backup_names_sort_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("flows.json");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let a = backup_path(&p, t);
        assert_eq!(
            a.file_name().unwrap().to_str().unwrap(),
            "flows-2023-11-14T22-13-20.123.json"
        );
        fs::write(&a, "").unwrap();
        let b = backup_path(&p, t);
        assert_eq!(
            b.file_name().unwrap().to_str().unwrap(),
            "flows-2023-11-14T22-13-20.124.json",
            "the same millisecond twice"
        );
        fs::write(&b, "").unwrap();
        fs::write(dir.path().join("flows-notes.json"), "").unwrap();
        assert_eq!(backups(&p).unwrap(), vec![a.clone(), b]);
        // Once the oldest is pruned, its name is not reused: it would sort first and be pruned
        // right away.
        fs::remove_file(&a).unwrap();
        assert_eq!(
            backup_path(&p, t).file_name().unwrap().to_str().unwrap(),
            "flows-2023-11-14T22-13-20.125.json"
        );
    }
}
