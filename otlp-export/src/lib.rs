//! flowscope-otlp: flows and metrics over OTLP/gRPC, to an OpenTelemetry Collector, Grafana
//! Alloy, or any OTLP receiver (Loki's and Mimir's OTLP endpoints behind them). Used by the
//! agent (its node's flows) and the relay (the cluster's merged stream); what each pushes is
//! theirs: an [`ExportItem`] that becomes a flow on the exporter's task, and a
//! [`MetricsSource`]. Depends on `flowscope-proto` and `flowscope-filter`, never on the agent or
//! aya.
//!
//! - every flow the allow/deny lists select becomes an OTLP **log record** (see [`encode`]: the
//!   body is the flow's Hubble JSON after the field mask, the attributes follow OpenTelemetry's
//!   semantic conventions), sent in batches bounded in size and time;
//! - the caller's **metrics** (the agent's Hubble series as cumulative monotonic sums, the
//!   relay's own) and the exporter's own counters are pushed every `metrics_interval`;
//! - the caller never waits: [`Exporter::push`] is a `try_send` into a bounded queue;
//!   building the flow, filtering, encoding and sending happen on the exporter's task. A flow
//!   that finds the queue full is counted (`flowscope_otlp_dropped_total{reason="queue_full"}`);
//!   a failed request is retried with backoff on the codes OTLP calls retryable (honouring the
//!   server's RetryInfo, see [`retry`]) for at most 30 s, then its records are counted as
//!   dropped (`export_failed`); records a receiver refuses in a partial success are counted
//!   (`rejected`).
//!
//! Messages are `opentelemetry-proto`'s prost types; requests are encoded once and their bytes
//! resent as they are on a retry (a raw codec), so a retry costs no re-encoding.

#![warn(missing_docs)]

pub mod args;
pub mod config;
pub mod encode;
pub mod retry;

use std::{
    borrow::Cow,
    marker::PhantomData,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::{Buf as _, BufMut as _, Bytes};
use flowscope_filter::{FilterError, FlowFilterSet};
use flowscope_proto::{fieldmask::FlowMask, flow::Flow};
use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse},
        metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse},
    },
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    metrics::v1::{Metric, ResourceMetrics, ScopeMetrics},
    resource::v1::Resource,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};
use prost::Message as _;
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    metadata::{MetadataKey, MetadataMap, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use tracing::{info, warn};

pub use args::OtlpArgs;
pub use config::{ConfigError, OtlpOptions};

const LOGS_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
const METRICS_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
/// The semantic conventions the attribute names follow.
const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.34.0";
/// Failures are logged at most this often (they are always counted).
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Why the exporter cannot start (bad configuration, reported before anything is attached).
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// Endpoint, headers, TLS files, resource attributes.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A filter of the allow or deny list is invalid.
    #[error("--otlp-allowlist/--otlp-denylist")]
    Filter(#[from] FilterError),
    /// A path of the field mask names no field of `flow.Flow`.
    #[error("--otlp-field-mask")]
    FieldMask(#[from] flowscope_proto::fieldmask::InvalidPath),
}

/// The two OTLP signals flowscope sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signal {
    Logs,
    Metrics,
}

impl Signal {
    fn as_str(self) -> &'static str {
        match self {
            Signal::Logs => "logs",
            Signal::Metrics => "metrics",
        }
    }
}

/// Counters of the exporter (`flowscope_otlp_*`).
#[derive(Debug, Default)]
pub struct OtlpStats {
    /// Log records the receiver accepted.
    pub sent_logs: AtomicU64,
    /// Metric data points the receiver accepted.
    pub sent_points: AtomicU64,
    /// Flows dropped because the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Flows dropped because their request failed for good (not retryable, or retried for too
    /// long).
    pub dropped_export_failed: AtomicU64,
    /// Log records the receiver refused in a partial success.
    pub dropped_rejected: AtomicU64,
    /// Flows that could not be encoded.
    pub dropped_encoding: AtomicU64,
    /// Metric data points not delivered (failed requests, rejected points).
    pub dropped_points: AtomicU64,
    /// Failed export requests (each try), logs.
    pub failed_logs: AtomicU64,
    /// Failed export requests (each try), metrics.
    pub failed_metrics: AtomicU64,
    /// Retries, logs.
    pub retries_logs: AtomicU64,
    /// Retries, metrics.
    pub retries_metrics: AtomicU64,
    /// Flows in the queue now.
    pub queued: AtomicU64,
    /// Capacity of the queue.
    pub queue_capacity: AtomicU64,
}

impl OtlpStats {
    fn failed(&self, s: Signal) -> &AtomicU64 {
        match s {
            Signal::Logs => &self.failed_logs,
            Signal::Metrics => &self.failed_metrics,
        }
    }
    fn retries(&self, s: Signal) -> &AtomicU64 {
        match s {
            Signal::Logs => &self.retries_logs,
            Signal::Metrics => &self.retries_metrics,
        }
    }

    /// Flows dropped for every reason, with the reason's label value.
    pub fn dropped(&self) -> [(&'static str, u64); 4] {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("queue_full", l(&self.dropped_queue_full)),
            ("export_failed", l(&self.dropped_export_failed)),
            ("rejected", l(&self.dropped_rejected)),
            ("encoding", l(&self.dropped_encoding)),
        ]
    }

    /// The counters as OTLP metrics too (a Collector sees the exporter's health without
    /// scraping the agent).
    fn as_metrics(&self, start: u64, now: u64) -> Vec<Metric> {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let by = |k: &str, pairs: &[(&str, u64)]| {
            pairs
                .iter()
                .map(|(v, n)| (vec![(k.to_owned(), (*v).to_owned())], *n))
                .collect::<Vec<_>>()
        };
        vec![
            encode::cumulative_sum(
                "flowscope_otlp_sent",
                SENT_HELP,
                by(
                    "signal",
                    &[
                        ("logs", l(&self.sent_logs)),
                        ("metrics", l(&self.sent_points)),
                    ],
                ),
                start,
                now,
            ),
            encode::cumulative_sum(
                "flowscope_otlp_dropped",
                DROPPED_HELP,
                by("reason", &self.dropped()),
                start,
                now,
            ),
            encode::cumulative_sum(
                "flowscope_otlp_requests_failed",
                FAILED_HELP,
                by(
                    "signal",
                    &[
                        ("logs", l(&self.failed_logs)),
                        ("metrics", l(&self.failed_metrics)),
                    ],
                ),
                start,
                now,
            ),
            encode::cumulative_sum(
                "flowscope_otlp_retries",
                RETRIES_HELP,
                by(
                    "signal",
                    &[
                        ("logs", l(&self.retries_logs)),
                        ("metrics", l(&self.retries_metrics)),
                    ],
                ),
                start,
                now,
            ),
            encode::gauge(
                "flowscope_otlp_queue_length",
                QUEUE_HELP,
                i64::try_from(l(&self.queued)).unwrap_or(i64::MAX),
                now,
            ),
        ]
    }
}

const SENT_HELP: &str = "Log records (flows) and metric data points the OTLP receiver accepted";
const DROPPED_HELP: &str = "Flows not delivered over OTLP, by reason: queue_full (the exporter was behind), export_failed (the request failed for good), rejected (refused by the receiver), encoding";
const FAILED_HELP: &str = "Failed OTLP export requests, each try counted";
const RETRIES_HELP: &str = "OTLP export requests tried again after a retryable failure";
const QUEUE_HELP: &str = "Flows waiting to be sent over OTLP";

/// A counter family for the collector: name, help, label name, (label value, count) pairs.
type Family<'a> = (&'a str, &'a str, &'a str, Vec<(&'a str, u64)>);

/// The `flowscope_otlp_*` series on `/metrics`.
struct StatsCollector(Arc<OtlpStats>);

impl std::fmt::Debug for StatsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StatsCollector").finish()
    }
}

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let counters: [Family<'_>; 4] = [
            (
                "flowscope_otlp_sent",
                SENT_HELP,
                "signal",
                vec![("logs", l(&s.sent_logs)), ("metrics", l(&s.sent_points))],
            ),
            (
                "flowscope_otlp_dropped",
                DROPPED_HELP,
                "reason",
                s.dropped().to_vec(),
            ),
            (
                "flowscope_otlp_requests_failed",
                FAILED_HELP,
                "signal",
                vec![
                    ("logs", l(&s.failed_logs)),
                    ("metrics", l(&s.failed_metrics)),
                ],
            ),
            (
                "flowscope_otlp_retries",
                RETRIES_HELP,
                "signal",
                vec![
                    ("logs", l(&s.retries_logs)),
                    ("metrics", l(&s.retries_metrics)),
                ],
            ),
        ];
        for (name, help, label, values) in counters {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (v, n) in values {
                ConstCounter::new(n).encode(m.encode_family(&[(label, v)])?)?;
            }
        }
        ConstCounter::new(l(&s.dropped_points)).encode(encoder.encode_descriptor(
            "flowscope_otlp_metric_points_dropped",
            "Metric data points not delivered over OTLP (failed or rejected)",
            None,
            MetricType::Counter,
        )?)?;
        ConstGauge::new(l(&s.queued)).encode(encoder.encode_descriptor(
            "flowscope_otlp_queue_length",
            QUEUE_HELP,
            None,
            MetricType::Gauge,
        )?)?;
        ConstGauge::new(l(&s.queue_capacity)).encode(encoder.encode_descriptor(
            "flowscope_otlp_queue_capacity",
            "Flows the OTLP queue holds at most",
            None,
            MetricType::Gauge,
        )?)
    }
}

/// Sends encoded requests as they are and decodes the response with prost.
struct RawCodec<R>(PhantomData<R>);

impl<R> Default for RawCodec<R> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put(item);
        Ok(())
    }
}

struct ProstResponse<R>(PhantomData<R>);

impl<R: prost::Message + Default> Decoder for ProstResponse<R> {
    type Item = R;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<R>, Status> {
        let r = R::decode(buf.copy_to_bytes(buf.remaining()))
            .map_err(|e| Status::internal(format!("decoding the OTLP response: {e}")))?;
        Ok(Some(r))
    }
}

impl<R: prost::Message + Default + Send + 'static> Codec for RawCodec<R> {
    type Encode = Bytes;
    type Decode = R;
    type Encoder = RawEncoder;
    type Decoder = ProstResponse<R>;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> ProstResponse<R> {
        ProstResponse(PhantomData)
    }
}

/// Nanoseconds since the epoch, now.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Logs a failure at most every [`WARN_EVERY`].
#[derive(Default)]
struct RateLimitedWarn {
    last: Option<Instant>,
    since: u64,
}

impl RateLimitedWarn {
    fn warn(&mut self, what: std::fmt::Arguments<'_>) {
        self.since += 1;
        if self.last.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return;
        }
        warn!(failures = self.since, "OTLP export: {what}");
        self.last = Some(Instant::now());
        self.since = 0;
    }
}

/// A connection to the receiver, with the request metadata and timeout.
#[derive(Clone)]
struct Client {
    channel: Channel,
    headers: MetadataMap,
    timeout: Duration,
    stats: Arc<OtlpStats>,
    warn: Arc<Mutex<RateLimitedWarn>>,
}

impl Client {
    fn new(opts: &OtlpOptions, stats: Arc<OtlpStats>) -> Result<Self, ConfigError> {
        let target = config::target(&opts.endpoint, opts.insecure)?;
        let mut endpoint = Endpoint::from_shared(target.url.clone())
            .map_err(ConfigError::Transport)?
            .connect_timeout(opts.timeout)
            .tcp_nodelay(true);
        if target.tls {
            let read = |p: &std::path::PathBuf| {
                std::fs::read(p).map_err(|source| ConfigError::TlsFile {
                    path: p.clone(),
                    source,
                })
            };
            let mut tls = ClientTlsConfig::new();
            tls = match &opts.ca_file {
                Some(ca) => tls.ca_certificate(Certificate::from_pem(read(ca)?)),
                None => tls.with_native_roots(),
            };
            match (&opts.client_cert_file, &opts.client_key_file) {
                (Some(c), Some(k)) => tls = tls.identity(Identity::from_pem(read(c)?, read(k)?)),
                (None, None) => {}
                _ => return Err(ConfigError::ClientIdentity),
            }
            endpoint = endpoint.tls_config(tls).map_err(ConfigError::Transport)?;
        }
        let mut headers = MetadataMap::new();
        for (k, v) in &opts.headers {
            let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|_| ConfigError::Metadata(k.clone()))?;
            let value = MetadataValue::try_from(v.as_str())
                .map_err(|_| ConfigError::Metadata(k.clone()))?;
            headers.insert(key, value);
        }
        info!(endpoint = %target.url, tls = target.tls, "exporting flows over OTLP/gRPC");
        Ok(Client {
            // Lazy: a receiver that is down at start is retried, not fatal.
            channel: endpoint.connect_lazy(),
            headers,
            timeout: opts.timeout,
            stats,
            warn: Arc::default(),
        })
    }

    async fn call<R: prost::Message + Default + Send + 'static>(
        &self,
        path: &'static str,
        body: Bytes,
    ) -> Result<R, Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("connecting: {e}")))?;
        let mut request = tonic::Request::new(body);
        *request.metadata_mut() = self.headers.clone();
        grpc.unary(
            request,
            PathAndQuery::from_static(path),
            RawCodec::<R>::default(),
        )
        .await
        .map(tonic::Response::into_inner)
    }

    /// Sends one request, retrying as OTLP says (see [`retry`]); the error is the last one.
    async fn export<R: prost::Message + Default + Send + 'static>(
        &self,
        signal: Signal,
        body: Bytes,
    ) -> Result<R, Status> {
        let path = match signal {
            Signal::Logs => LOGS_PATH,
            Signal::Metrics => METRICS_PATH,
        };
        let started = Instant::now();
        let mut backoff = retry::BACKOFF_START;
        loop {
            let status =
                match tokio::time::timeout(self.timeout, self.call(path, body.clone())).await {
                    Ok(Ok(r)) => return Ok(r),
                    Ok(Err(s)) => s,
                    Err(_) => Status::deadline_exceeded(format!(
                        "no answer within {:?} (--otlp-timeout)",
                        self.timeout
                    )),
                };
            self.stats.failed(signal).fetch_add(1, Ordering::Relaxed);
            match retry::decide(&status, backoff) {
                retry::Decision::Retry(wait) if started.elapsed() + wait < retry::MAX_ELAPSED => {
                    self.stats.retries(signal).fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut w) = self.warn.lock() {
                        w.warn(format_args!(
                            "{} request failed ({:?}: {}); retrying in {wait:?}",
                            signal.as_str(),
                            status.code(),
                            status.message()
                        ));
                    }
                    tokio::time::sleep(wait).await;
                    backoff = retry::next_backoff(backoff);
                }
                _ => {
                    if let Ok(mut w) = self.warn.lock() {
                        w.warn(format_args!(
                            "{} request failed for good ({:?}: {}); its data is dropped",
                            signal.as_str(),
                            status.code(),
                            status.message()
                        ));
                    }
                    return Err(status);
                }
            }
        }
    }
}

/// What an exporter's queue holds: something the exporter's task makes a flow of, so that the
/// caller's hand-over stays a `try_send` (the agent queues its flow records, the relay the flows
/// as the agents encoded them).
pub trait ExportItem: Send + 'static {
    /// The flow; `None` when it cannot be made (counted as dropped, `reason="encoding"`).
    fn flow(&self) -> Option<Cow<'_, Flow>>;
}

impl ExportItem for Arc<Flow> {
    fn flow(&self) -> Option<Cow<'_, Flow>> {
        Some(Cow::Borrowed(self.as_ref()))
    }
}

/// An encoded `flow.Flow` (what the relay forwards: the bytes an agent sent), decoded on the
/// exporter's task.
#[derive(Clone, Debug)]
pub struct EncodedFlow(pub Bytes);

impl ExportItem for EncodedFlow {
    fn flow(&self) -> Option<Cow<'_, Flow>> {
        Flow::decode(self.0.clone()).ok().map(Cow::Owned)
    }
}

/// Metrics pushed with the exporter's own counters: the agent's Hubble series, the relay's own.
pub trait MetricsSource: Send + Sync + 'static {
    /// The metrics now; `start` is when the exporter started (the start of cumulative sums),
    /// `now` the time of the points (both ns since the epoch).
    fn metrics(&self, start: u64, now: u64) -> Vec<Metric>;
}

/// Turns a flow into its log record: the field mask, the body, the attributes. Public for the
/// benchmarks (`bench/benches/otlp.rs`).
pub struct FlowEncoder {
    mask: FlowMask,
    keep_extensions: bool,
    body_hint: usize,
}

impl FlowEncoder {
    /// An encoder applying `field_mask` (empty: every Hubble field).
    pub fn new(field_mask: &[String]) -> Result<Self, flowscope_proto::fieldmask::InvalidPath> {
        Ok(FlowEncoder {
            mask: FlowMask::new(field_mask)?,
            keep_extensions: field_mask
                .iter()
                .any(|p| p == "extensions" || p.starts_with("extensions.")),
            body_hint: 1024,
        })
    }

    /// The flow's record, or None when the flow cannot be encoded (a time protojson cannot
    /// represent). `observed` is the observed timestamp (ns since the epoch).
    pub fn record(&mut self, flow: &Flow, observed: u64) -> Option<LogRecord> {
        // Attributes come from what the mask keeps (without a mask, our extension too: the
        // kernel's drop reason); the body leaves our extension out unless the mask names it,
        // as the export file does (Hubble's readers cannot parse an Any they do not know).
        let masked: Cow<'_, Flow> = if self.mask.is_all() {
            Cow::Borrowed(flow)
        } else {
            Cow::Owned(self.mask.apply(flow))
        };
        // The body moves into the record: one allocation, sized like the last one.
        let mut body = Vec::with_capacity(self.body_hint);
        let written = if masked.extensions.is_some() && !self.keep_extensions {
            let stripped = Flow {
                extensions: None,
                ..masked.as_ref().clone()
            };
            serde_json::to_writer(&mut body, &stripped)
        } else {
            serde_json::to_writer(&mut body, masked.as_ref())
        };
        written.ok()?;
        self.body_hint = self.body_hint.max(body.len());
        // serde_json writes UTF-8 only.
        let body = String::from_utf8(body).ok()?;
        let record = encode::log_record(&masked, body, observed);
        Some(record)
    }
}

/// Turns flows into batches of log records and sends them.
struct LogSender {
    client: Client,
    resource: Resource,
    filters: FlowFilterSet,
    encoder: FlowEncoder,
    batch_size: usize,
    batch_interval: Duration,
    /// The delivery of the previous batch, while it lasts.
    in_flight: Option<JoinHandle<()>>,
}

impl LogSender {
    async fn run<T: ExportItem>(mut self, mut rx: mpsc::Receiver<T>) {
        let stats = self.client.stats.clone();
        let mut batch: Vec<LogRecord> = Vec::with_capacity(self.batch_size);
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let item = match deadline {
                None => rx.recv().await,
                Some(d) => match tokio::time::timeout_at(d, rx.recv()).await {
                    Ok(item) => item,
                    Err(_) => {
                        self.send(&mut batch).await;
                        deadline = None;
                        continue;
                    }
                },
            };
            let Some(item) = item else { break };
            stats.queued.fetch_sub(1, Ordering::Relaxed);
            // The flow is made here, on the exporter's task, not on the caller's path.
            let Some(flow) = item.flow() else {
                stats.dropped_encoding.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if !self.filters.matches(&flow) {
                continue;
            }
            match self.encoder.record(&flow, now_ns()) {
                Some(r) => batch.push(r),
                None => {
                    stats.dropped_encoding.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            if deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + self.batch_interval);
            }
            if batch.len() >= self.batch_size {
                self.send(&mut batch).await;
                deadline = None;
            }
        }
        self.send(&mut batch).await;
        self.finish().await;
    }

    /// Encodes the batch and hands it to a delivery task, after the previous delivery ended:
    /// the next batch is built while one request is in flight (a receiver's round trip does not
    /// stop the encoding), and a request being retried holds the next one back (the queue
    /// fills, and past its size flows are counted as dropped).
    async fn send(&mut self, batch: &mut Vec<LogRecord>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let body = logs_request(&self.resource, std::mem::take(batch));
        batch.reserve(self.batch_size);
        if let Some(previous) = self.in_flight.take() {
            let _ = previous.await;
        }
        let client = self.client.clone();
        self.in_flight = Some(tokio::spawn(deliver_logs(client, body, n)));
    }

    /// Waits for the last delivery.
    async fn finish(&mut self) {
        if let Some(previous) = self.in_flight.take() {
            let _ = previous.await;
        }
    }
}

/// Sends one encoded logs request of `n` records and counts the outcome.
async fn deliver_logs(client: Client, body: Bytes, n: u64) {
    let stats = &client.stats;
    match client
        .export::<ExportLogsServiceResponse>(Signal::Logs, body)
        .await
    {
        Ok(resp) => {
            let rejected = resp
                .partial_success
                .as_ref()
                .map_or(0, |p| u64::try_from(p.rejected_log_records).unwrap_or(0))
                .min(n);
            if rejected > 0 {
                stats
                    .dropped_rejected
                    .fetch_add(rejected, Ordering::Relaxed);
                if let Ok(mut w) = client.warn.lock() {
                    let msg = resp.partial_success.map(|p| p.error_message);
                    w.warn(format_args!(
                        "the receiver rejected {rejected} of {n} log records: {}",
                        msg.unwrap_or_default()
                    ));
                }
            }
            stats.sent_logs.fetch_add(n - rejected, Ordering::Relaxed);
        }
        Err(_) => {
            stats.dropped_export_failed.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// One ExportLogsServiceRequest, encoded.
pub fn logs_request(resource: &Resource, records: Vec<LogRecord>) -> Bytes {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource.clone()),
            scope_logs: vec![ScopeLogs {
                scope: Some(encode::scope()),
                log_records: records,
                schema_url: SCHEMA_URL.into(),
            }],
            schema_url: SCHEMA_URL.into(),
        }],
    }
    .encode_to_vec()
    .into()
}

/// The caller's metrics and the exporter's own counters, as one request, and its number of
/// data points.
fn metrics_request(
    resource: &Resource,
    source: Option<&dyn MetricsSource>,
    stats: &OtlpStats,
    start: u64,
    now: u64,
) -> (ExportMetricsServiceRequest, u64) {
    let mut metrics = source.map(|s| s.metrics(start, now)).unwrap_or_default();
    metrics.extend(stats.as_metrics(start, now));
    let points = metrics
        .iter()
        .map(|m| match &m.data {
            Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Sum(s)) => {
                s.data_points.len()
            }
            Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Gauge(g)) => {
                g.data_points.len()
            }
            _ => 0,
        })
        .sum::<usize>() as u64;
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource.clone()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(encode::scope()),
                metrics,
                schema_url: SCHEMA_URL.into(),
            }],
            schema_url: SCHEMA_URL.into(),
        }],
    };
    (request, points)
}

async fn push_metrics(
    client: &Client,
    resource: &Resource,
    source: Option<&dyn MetricsSource>,
    start: u64,
) {
    let stats = &client.stats;
    let (request, points) = metrics_request(resource, source, stats, start, now_ns());
    match client
        .export::<ExportMetricsServiceResponse>(Signal::Metrics, request.encode_to_vec().into())
        .await
    {
        Ok(resp) => {
            let rejected = resp
                .partial_success
                .map_or(0, |p| u64::try_from(p.rejected_data_points).unwrap_or(0))
                .min(points);
            stats.dropped_points.fetch_add(rejected, Ordering::Relaxed);
            stats
                .sent_points
                .fetch_add(points - rejected, Ordering::Relaxed);
        }
        Err(_) => {
            stats.dropped_points.fetch_add(points, Ordering::Relaxed);
        }
    }
}

/// Who sends: what the resource of every request names.
#[derive(Clone, Copy, Debug)]
pub struct Origin<'a> {
    /// This process's name (`service.instance.id`, `host.name`): the node's name for an agent,
    /// the relay's name for a relay.
    pub instance: &'a str,
    /// The node the flows come from, when they all come from one (`k8s.node.name` of the
    /// resource); `None` for the relay, whose flows span nodes (each record names its own).
    pub node: Option<&'a str>,
}

/// The caller's handle on the OTLP exporter, queuing items of type `T`.
pub struct Exporter<T: ExportItem> {
    tx: Option<mpsc::Sender<T>>,
    stats: Arc<OtlpStats>,
    client: Client,
    resource: Resource,
    started: u64,
    metrics_interval: Duration,
    logs: Option<JoinHandle<()>>,
    metrics: Option<JoinHandle<()>>,
    stop_metrics: CancellationToken,
}

impl<T: ExportItem> Exporter<T> {
    /// Validates the options and starts the sender task (on the current tokio runtime).
    /// Nothing is connected yet: a receiver that is down is retried, not fatal.
    pub fn start(opts: OtlpOptions, origin: Origin<'_>) -> Result<Self, OtlpError> {
        let filters = FlowFilterSet::compile(&opts.allowlist, &opts.denylist)?;
        flowscope_filter::refuse_unproduced(&opts.allowlist, &opts.denylist)?;
        let encoder = FlowEncoder::new(&opts.field_mask)?;
        let env_attrs = std::env::var("OTEL_RESOURCE_ATTRIBUTES").ok();
        let env_service = std::env::var("OTEL_SERVICE_NAME").ok();
        let attrs = config::resource_attributes(
            &opts.service_name,
            origin,
            env_attrs.as_deref(),
            env_service.as_deref(),
        )?;
        let resource = encode::resource(&attrs);
        let stats = Arc::new(OtlpStats::default());
        let queue = opts.queue_size.max(1);
        stats.queue_capacity.store(queue as u64, Ordering::Relaxed);
        let client = Client::new(&opts, stats.clone())?;
        let (tx, rx) = mpsc::channel(queue);
        let log_sender = LogSender {
            client: client.clone(),
            resource: resource.clone(),
            filters,
            encoder,
            batch_size: opts.batch_size.max(1),
            batch_interval: opts.batch_interval,
            in_flight: None,
        };
        let logs = tokio::spawn(log_sender.run(rx));
        Ok(Exporter {
            tx: Some(tx),
            stats,
            client,
            resource,
            started: now_ns(),
            metrics_interval: opts.metrics_interval,
            logs: Some(logs),
            metrics: None,
            stop_metrics: CancellationToken::new(),
        })
    }

    /// Starts pushing metrics every `metrics_interval` (if not zero): `source`'s when given,
    /// and the exporter's own counters.
    pub fn start_metrics(&mut self, source: Option<Arc<dyn MetricsSource>>) {
        if self.metrics_interval.is_zero() || self.metrics.is_some() {
            return;
        }
        let (client, resource, start, every, stop) = (
            self.client.clone(),
            self.resource.clone(),
            self.started,
            self.metrics_interval,
            self.stop_metrics.clone(),
        );
        self.metrics = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => break,
                }
                push_metrics(&client, &resource, source.as_deref(), start).await;
            }
            // The last values, so that the receiver has the totals.
            push_metrics(&client, &resource, source.as_deref(), start).await;
        }));
    }

    /// Queues an item for export; never blocks. A full queue counts it as dropped.
    pub fn push(&self, item: T) {
        let Some(tx) = &self.tx else { return };
        // Counted before the send: the sender may take the flow out at once.
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if tx.try_send(item).is_err() {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            self.stats
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The exporter's counters.
    pub fn stats(&self) -> Arc<OtlpStats> {
        self.stats.clone()
    }

    /// The `flowscope_otlp_*` series for `/metrics`.
    pub fn collector(&self) -> Box<dyn Collector> {
        Box::new(StatsCollector(self.stats.clone()))
    }

    /// Stops accepting flows, sends what is queued and the last metrics, waiting at most
    /// `timeout`: a receiver that is down must not hold up the shutdown.
    pub async fn close(mut self, timeout: Duration) {
        self.tx = None;
        self.stop_metrics.cancel();
        let tasks: Vec<JoinHandle<()>> = self
            .logs
            .take()
            .into_iter()
            .chain(self.metrics.take())
            .collect();
        let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
        if tokio::time::timeout(timeout, futures::future::join_all(tasks))
            .await
            .is_err()
        {
            warn!(
                queued = self.stats.queued.load(Ordering::Relaxed),
                "the OTLP exporter did not finish within {timeout:?}; what it held is lost"
            );
            for a in aborts {
                a.abort();
            }
        }
    }
}

impl<T: ExportItem> Drop for Exporter<T> {
    fn drop(&mut self) {
        self.stop_metrics.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowscope_proto::flow::Ip;

    #[test]
    fn an_encoded_flow_is_decoded_on_the_exporter_s_side() {
        let f = Flow {
            uuid: "u-1".into(),
            node_name: "node-2".into(),
            ip: Some(Ip {
                source: "10.0.0.1".into(),
                ..Ip::default()
            }),
            ..Flow::default()
        };
        let item = EncodedFlow(f.encode_to_vec().into());
        assert_eq!(item.flow().as_deref(), Some(&f));
        assert!(
            EncodedFlow(Bytes::from_static(&[0x0a, 0x05]))
                .flow()
                .is_none(),
            "truncated bytes are not a flow"
        );
    }

    #[test]
    fn metrics_request_counts_the_source_s_points() {
        struct Two;
        impl MetricsSource for Two {
            fn metrics(&self, start: u64, now: u64) -> Vec<Metric> {
                vec![encode::cumulative_sum(
                    "x",
                    "x",
                    vec![(vec![], 1), (vec![("k".into(), "v".into())], 2)],
                    start,
                    now,
                )]
            }
        }
        let stats = OtlpStats::default();
        let resource = encode::resource(&[]);
        let (_, without) = metrics_request(&resource, None, &stats, 1, 2);
        let (req, with) = metrics_request(&resource, Some(&Two), &stats, 1, 2);
        assert_eq!(with, without + 2);
        let names: Vec<&str> = req.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names[0], "x");
        assert!(names.contains(&"flowscope_otlp_dropped"));
    }
}
