//! What the OTLP exporter costs per flow (docs/otlp.md, docs/benchmarks.md):
//!
//! 1. per-flow steps, timed in a loop by the thread's CPU time (median of 5 batches): the pipeline's hand-over (`push`:
//!    an `Arc` clone and a `try_send`), the flow's log record (field mask, Hubble JSON body,
//!    attributes), the protobuf encoding of a 512-record request (per flow), and what a receiver
//!    pays to decode it (per flow);
//! 2. the exporter at 100 000 flows/s for 5 s against a receiver in the same process (tonic
//!    with `opentelemetry-proto`'s server stubs, decoding every request): flows delivered,
//!    dropped, and the process's CPU time per flow (exporter and receiver together, an upper
//!    bound of the exporter's own).
//!
//! `cargo bench -p bench --bench otlp` (release build; run it on an idle machine).

use std::{
    hint::black_box,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use flowscope_proto::flow::Flow;
use monitor_agent::export::otlp::{FlowEncoder, OtlpExporter, OtlpOptions, encode, logs_request};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
    logs_service_server::{LogsService, LogsServiceServer},
};
use prost::Message as _;

/// The agent's allocator (monitor-agent's main.rs), so that allocations cost what they cost there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// This thread's CPU time: on a machine shared with other work, wall time would count the time
/// the thread waited for a core.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU ns per call of `f` (this thread's), median of 5 batches of about 200 ms.
fn time_per_op(mut f: impl FnMut()) -> f64 {
    let mut n = 64u64;
    loop {
        let t = thread_cpu();
        for _ in 0..n {
            f();
        }
        if thread_cpu() - t >= Duration::from_millis(50) {
            n *= 4;
            break;
        }
        n *= 2;
    }
    median(
        (0..5)
            .map(|_| {
                let t = thread_cpu();
                for _ in 0..n {
                    f();
                }
                (thread_cpu() - t).as_nanos() as f64 / n as f64
            })
            .collect(),
    )
}

fn cpu_time() -> Duration {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage");
    // SAFETY: initialised by the successful call.
    let u = unsafe { u.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Counts the records it receives.
struct Receiver(Arc<AtomicU64>);

#[tonic::async_trait]
impl LogsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let n: usize = request
            .get_ref()
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        self.0.fetch_add(n as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

fn per_flow_steps(fx: &bench::micro::Fixture) {
    let flow = Arc::new(fx.flow.clone());
    let mut enc = FlowEncoder::new(&[]).expect("no mask");
    let record_ns = time_per_op(|| {
        black_box(enc.record(black_box(&flow), 1));
    });
    let mut masked = FlowEncoder::new(&[
        "time".into(),
        "verdict".into(),
        "IP".into(),
        "l4".into(),
        "source.pod_name".into(),
        "source.namespace".into(),
    ])
    .expect("mask");
    let masked_ns = time_per_op(|| {
        black_box(masked.record(black_box(&flow), 1));
    });
    let resource = encode::resource(&[("service.name".into(), "flowscope-agent".into())]);
    let batch: Vec<_> = (0..512)
        .map(|_| enc.record(&flow, 1).expect("record"))
        .collect();
    let encode_ns = time_per_op(|| {
        black_box(logs_request(&resource, black_box(batch.clone())));
    }) / 512.0;
    let clone_ns = time_per_op(|| {
        black_box(black_box(&batch).clone());
    }) / 512.0;
    let bytes = logs_request(&resource, batch.clone());
    let decode_ns = time_per_op(|| {
        black_box(ExportLogsServiceRequest::decode(black_box(bytes.clone())).expect("valid"));
    }) / 512.0;
    println!("| step | CPU ns per flow |");
    println!("|---|---|");
    println!("| flow → log record (Hubble JSON body, attributes), no mask | {record_ns:.0} |");
    println!("| flow → log record, a 6-field mask | {masked_ns:.0} |");
    println!(
        "| protobuf encoding of a 512-record request | {:.0} |",
        encode_ns - clone_ns
    );
    println!("| a receiver's decoding of that request | {decode_ns:.0} |");
    println!(
        "| bytes per record on the wire | {:.0} |",
        bytes.len() as f64 / 512.0
    );
}

fn at_rate(fx: &bench::micro::Fixture, rate: u64, secs: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(AtomicU64::new(0));
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(LogsServiceServer::new(Receiver(received.clone())))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let mut opts = OtlpOptions::new(format!("http://{addr}"));
        opts.metrics_interval = Duration::ZERO;
        let x = OtlpExporter::start(opts, "node-1").expect("exporter");
        let flows: Vec<Arc<Flow>> = (0..1024)
            .map(|i| {
                Arc::new(Flow {
                    uuid: format!("{}-{i}", fx.flow.uuid),
                    ..fx.flow.clone()
                })
            })
            .collect();
        // The pipeline's side alone: push into the exporter's queue (drained by its task).
        let stats = x.stats();
        let per_ms = rate / 1000;
        let cpu0 = cpu_time();
        let t0 = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut pushed = 0u64;
        let mut push_ns = 0u128;
        for ms in 0..secs * 1000 {
            tick.tick().await;
            let t = Instant::now();
            for j in 0..per_ms {
                x.push(&flows[((ms * per_ms + j) % 1024) as usize]);
            }
            push_ns += t.elapsed().as_nanos();
            pushed += per_ms;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let dropped = || stats.dropped().iter().map(|(_, n)| n).sum::<u64>();
        while received.load(Ordering::Relaxed) + dropped() < pushed && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let wall = t0.elapsed();
        let cpu = cpu_time() - cpu0;
        x.close(Duration::from_secs(5)).await;
        server.abort();
        println!();
        println!("| at {rate} flows/s for {secs} s | |");
        println!("|---|---|");
        println!("| flows pushed | {pushed} |");
        println!("| delivered | {} |", received.load(Ordering::Relaxed));
        println!("| dropped | {:?} |", stats.dropped());
        println!(
            "| pipeline side (push: Arc clone + try_send), ns per flow | {:.0} |",
            push_ns as f64 / pushed as f64
        );
        println!(
            "| process CPU (exporter + in-process receiver + pacing), ns per flow | {:.0} |",
            cpu.as_nanos() as f64 / pushed as f64
        );
        println!(
            "| process CPU, share of one core at this rate | {:.1} % |",
            100.0 * cpu.as_secs_f64() / wall.as_secs_f64()
        );
    });
}

fn main() {
    // `cargo bench` passes --bench; a filter argument is ignored.
    let fx = bench::micro::Fixture::new();
    per_flow_steps(&fx);
    at_rate(&fx, 100_000, 5);
}
