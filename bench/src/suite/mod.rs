//! The benchmarks of issue 9, one module each. Each one appends rows (and sections, notes) to
//! the report; none of them fails because a number is bad, only when it cannot measure.

pub mod bpf;
pub mod burst;
pub mod datapath;
pub mod idle;
pub mod memory;
pub mod micro;
pub mod pipeline;
pub mod relay;

use std::time::Duration;

use tokio::runtime::Runtime;

use crate::stats::Report;

/// How long and how often to measure.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Quick run that only keeps the harness working (CI): one repetition, seconds per
    /// benchmark; the numbers mean little.
    pub smoke: bool,
    /// Repetitions of each configuration (interleaved).
    pub reps: usize,
    /// Also measure the design variants (poll interval, queue and history sizes, …).
    pub variants: bool,
    /// Length of the sustained run of benchmark 3.
    pub sustain: Duration,
    /// Events per second offered in the sustained run of benchmark 3.
    pub sustain_rate: u64,
    /// The follower of benchmarks 3, 4 and 6 decodes every flow in full, as a Hubble client
    /// does, instead of reading only its time (see [`crate::agent::Follower::start_light`]).
    pub full_follower: bool,
    /// Length of the idle run of benchmark 7.
    pub idle: Duration,
    /// Extra options for the agents of benchmarks 2 and 3 (e.g. a `--kernel-filter`, to
    /// measure what it costs per packet; a `--history-size`, to see what the follower's slack
    /// buys).
    pub agent_args: Vec<String>,
}

impl Plan {
    /// `full` normally, `smoke` in smoke mode.
    pub fn secs(&self, full: f64, smoke: f64) -> Duration {
        Duration::from_secs_f64(if self.smoke { smoke } else { full })
    }
}

/// What every benchmark gets.
pub struct Ctx<'a> {
    /// The async runtime (gRPC clients, synthetic agents).
    pub rt: &'a Runtime,
    /// Durations and repetitions.
    pub plan: &'a Plan,
    /// Where results go.
    pub report: &'a mut Report,
}

/// A benchmark: its number, its name, and the function that runs it.
pub struct Bench {
    /// Number in the issue.
    pub id: u8,
    /// Short name.
    pub name: &'static str,
    /// Runs it.
    pub run: fn(&mut Ctx<'_>) -> anyhow::Result<()>,
}

/// Every benchmark, in the order.
pub const ALL: [Bench; 8] = [
    Bench {
        id: 1,
        name: "datapath overhead",
        run: datapath::run,
    },
    Bench {
        id: 2,
        name: "cost per packet in the kernel",
        run: bpf::run,
    },
    Bench {
        id: 3,
        name: "agent pipeline ceiling",
        run: pipeline::run,
    },
    Bench {
        id: 4,
        name: "burst",
        run: burst::run,
    },
    Bench {
        id: 5,
        name: "relay merge",
        run: relay::run,
    },
    Bench {
        id: 6,
        name: "memory",
        run: memory::run,
    },
    Bench {
        id: 7,
        name: "idle",
        run: idle::run,
    },
    Bench {
        id: 8,
        name: "micro",
        run: micro::run,
    },
];

/// The world's UDP sink port used by the floods.
pub const SINK_PORT: u16 = 9000;
/// The iperf3 server's port in the world.
pub const IPERF_PORT: u16 = 5201;

/// The flood's destination: the sink on 1.0.0.1 in the world.
pub fn sink_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([1, 0, 0, 1], SINK_PORT))
}

/// Per-repetition relative change in percent: `(1 - x/base) * 100` (positive = lower than the
/// base, i.e. an overhead on a throughput).
pub fn overhead_pct(base: &[f64], x: &[f64]) -> Vec<f64> {
    base.iter()
        .zip(x)
        .map(|(b, v)| (1.0 - v / b) * 100.0)
        .collect()
}
