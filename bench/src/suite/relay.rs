//! Benchmark 5 — relay merge: 1, 4, 8 and 16 synthetic agents (in-process Observer servers on
//! 127.0.0.1, 200 k flows/s in total) behind the real `flowscope-relay`, one client following
//! everything through the relay. Measures the merged rate, the relay's CPU (its own cgroup), the
//! CPU per flow, and the latency (receive time − flow time, which includes the sort window's wait
//! and the generator's and client's queues).

use std::{
    collections::BTreeMap,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use flowscope_proto::observer::{ServerStatusRequest, observer_client::ObserverClient};
use testbed::{bin_path, client, process::Spawned};

use super::Ctx;
use crate::{
    agent::Follower,
    cgroup::{self, CpuMeter},
    procfs,
    stats::{Goal, Row, num},
    synth::SynthAgent,
};

/// One run's results.
#[derive(Clone, Debug, Default)]
struct Run {
    rate: f64,
    cores: f64,
    ns_per_flow: f64,
    p50_ms: f64,
    p99_ms: f64,
    lost: f64,
    harness_cores: f64,
}

/// The relay under test; killed on drop (field order: process first, then its cgroup).
struct Relay {
    proc: Spawned,
    cpu: CpuMeter,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize] as f64
}

fn one_run(ctx: &Ctx<'_>, n: usize, total_rate: f64, extra: &[&str]) -> anyhow::Result<Run> {
    let template = crate::micro::Fixture::new().flow;
    let agents: Vec<SynthAgent> = ctx.rt.block_on(async {
        let mut v = Vec::new();
        for i in 0..n {
            v.push(
                SynthAgent::start(&format!("node-{i}"), total_rate / n as f64, &template).await?,
            );
        }
        anyhow::Ok(v)
    })?;
    let port = free_port()?;
    let peers: Vec<String> = agents
        .iter()
        .map(|a| format!("{}={}", a.name, a.addr))
        .collect();
    let mut cmd = Command::new(bin_path("flowscope-relay"));
    cmd.args([
        "--listen-address",
        &format!("127.0.0.1:{port}"),
        "--name",
        "bench-relay",
    ])
    .arg(format!("--peers={}", peers.join(",")))
    .args(extra)
    .env("RUST_LOG", "warn");
    let proc = Spawned::spawn(cmd);
    let cpu = CpuMeter::attach(proc.pid(), "relay");
    let relay = Relay { proc, cpu };
    // Ready when every agent is connected.
    let addr = format!("127.0.0.1:{port}");
    let channel = ctx.rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let attempt = async {
                let ch = client::tcp_channel(&addr, Duration::from_secs(1)).await?;
                let st = ObserverClient::new(ch.clone())
                    .server_status(ServerStatusRequest {})
                    .await?
                    .into_inner();
                anyhow::Ok((ch, st.num_connected_nodes.unwrap_or(0) as usize))
            };
            match attempt.await {
                Ok((ch, connected)) if connected >= n => return anyhow::Ok(ch),
                other => {
                    if Instant::now() > deadline {
                        anyhow::bail!(
                            "relay not ready with {n} agents after 30 s ({:?}); stderr:\n{}",
                            other.map(|(_, c)| c),
                            relay.proc.stderr()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })?;
    let follower = Follower::start_light(ctx.rt, channel)?;
    crate::sleep(ctx.plan.secs(2.0, 1.0))?;
    let (f0, l0, c0, h0, t0) = (
        follower.flows(),
        follower.lost(),
        relay.cpu.usec(),
        procfs::self_cpu_usec(),
        Instant::now(),
    );
    follower.record_latency();
    crate::sleep(ctx.plan.secs(6.0, 2.0))?;
    let mut lat = follower.take_latencies();
    let (f1, l1, c1, h1, wall) = (
        follower.flows(),
        follower.lost(),
        relay.cpu.usec(),
        procfs::self_cpu_usec(),
        t0.elapsed(),
    );
    if let Some(e) = follower.error() {
        anyhow::bail!("the client's stream through the relay failed: {e}");
    }
    drop(follower);
    let Relay { mut proc, cpu } = relay;
    proc.stop();
    drop(cpu);
    drop(agents);
    lat.sort_unstable();
    let flows = (f1 - f0).max(1) as f64;
    Ok(Run {
        rate: flows / wall.as_secs_f64(),
        cores: cgroup::cores(c0, c1, wall),
        ns_per_flow: (c1 - c0) as f64 * 1e3 / flows,
        p50_ms: percentile(&lat, 0.5) / 1e3,
        p99_ms: percentile(&lat, 0.99) / 1e3,
        lost: (l1 - l0) as f64,
        harness_cores: cgroup::cores(h0, h1, wall),
    })
}

/// Runs benchmark 5.
pub fn run(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let total = if ctx.plan.smoke { 20_000.0 } else { 200_000.0 };
    let mut configs: Vec<(String, usize, Vec<&str>)> = [1usize, 4, 8, 16]
        .iter()
        .map(|&n| (format!("{n} agents"), n, vec![]))
        .collect();
    if ctx.plan.smoke {
        configs.truncate(2);
    }
    if ctx.plan.variants {
        configs.push((
            "16 agents, sort buffer 1000".into(),
            16,
            vec!["--sort-buffer-len-max", "1000"],
        ));
    }
    let mut runs: BTreeMap<String, Vec<Run>> = BTreeMap::new();
    for rep in 0..ctx.plan.reps {
        for (name, n, extra) in &configs {
            crate::check_interrupt()?;
            eprintln!("  [5] round {}/{} {name}", rep + 1, ctx.plan.reps);
            let run = one_run(ctx, *n, total, extra).with_context(|| name.clone())?;
            runs.entry(name.clone()).or_default().push(run);
        }
    }
    let r = &mut *ctx.report;
    let offered = format!("{} k flows/s offered", num(total / 1e3));
    for (name, _, _) in &configs {
        let v = &runs[name];
        let col = |f: fn(&Run) -> f64| v.iter().map(f).collect::<Vec<f64>>();
        let cfg = format!("{name}, {offered}");
        r.push(
            Row::new(
                5,
                "merged flows received",
                &cfg,
                "k flows/s",
                &col(|x| x.rate / 1e3),
            )
            .goal(Goal::at_least(200.0)),
        );
        r.push(Row::new(5, "relay CPU", &cfg, "cores", &col(|x| x.cores)).goal(Goal::at_most(1.0)));
        r.push(Row::new(
            5,
            "relay CPU per flow",
            &cfg,
            "ns",
            &col(|x| x.ns_per_flow),
        ));
        r.push(Row::new(5, "latency p50", &cfg, "ms", &col(|x| x.p50_ms)));
        r.push(
            Row::new(
                5,
                "latency p99 (flow time → client)",
                &cfg,
                "ms",
                &col(|x| x.p99_ms),
            )
            .goal(Goal::at_most(1200.0)),
        );
        r.push(Row::new(
            5,
            "flows lost (LostEvents)",
            &cfg,
            "flows",
            &col(|x| x.lost),
        ));
        r.push(
            Row::new(
                5,
                "harness CPU (generators + client)",
                &cfg,
                "cores",
                &col(|x| x.harness_cores),
            )
            .note("same 2 cores as the relay"),
        );
    }
    let (one, many) = ("1 agents".to_string(), "16 agents".to_string());
    if let (Some(a), Some(b)) = (runs.get(&one), runs.get(&many)) {
        let ratio: Vec<f64> = a
            .iter()
            .zip(b)
            .map(|(x, y)| y.ns_per_flow / x.ns_per_flow)
            .collect();
        r.push(
            Row::new(
                5,
                "CPU per flow, 16 agents ÷ 1 agent",
                &offered,
                "×",
                &ratio,
            )
            .goal(Goal::at_most(1.3))
            .note("paired per round"),
        );
    }
    r.note(
        "5: synthetic agents are tonic Observer servers in the harness's process (the real \
         agent's flow for pod-a's SYN, ~0.5 KiB, pre-encoded: per flow only time, uuid and port \
         are written), the relay is the release binary with default options, the client follows \
         everything through it and decodes of each flow only its time; all on 127.0.0.1 and \
         the same 2 cores. Latency = client receive time − flow time.",
    );
    Ok(())
}
