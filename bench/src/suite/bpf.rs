//! Benchmark 2 — cost per packet in the kernel: `bpf_stats` run time / run count of each of the
//! agent's programs, at `medium` and `none`, while the node forwards one TCP stream (iperf3) and
//! then a paced UDP flood of 64-byte datagrams over many flows (a rate the agent keeps up with, so
//! that the ring buffer never fills: a full ring makes the programs cheaper, not dearer).

use std::collections::BTreeMap;

use monitor_common::prog;
use testbed::{Scenario, scenario::WORLD_IP};

use super::{Ctx, IPERF_PORT, sink_addr};
use crate::{
    agent::Agent,
    bpf::{self, ProgStats, StatsGuard},
    load::{Flood, IperfServer, iperf_client, udp_sink},
    stats::{Goal, Row, num},
};

/// Flood rate: 50 k packets/s, 100 k events/s at `none`.
const FLOOD_PPS: u64 = 50_000;
/// Flows of the flood.
const FLOOD_FLOWS: usize = 256;

/// Runs benchmark 2.
pub fn run(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let s = Scenario::build();
    let server = IperfServer::start(&s.world(), WORLD_IP, IPERF_PORT)?;
    let _sink = udp_sink(&s.world(), sink_addr())?;
    let secs = if ctx.plan.smoke { 1 } else { 3 };
    let mut levels = vec!["medium", "none"];
    if ctx.plan.variants {
        levels.push("low");
    }
    let _stats = StatsGuard::enable()?;
    // Per level: per program, one ns/run sample per round; and the all-TC-programs mean.
    let mut per_prog: BTreeMap<(&str, String), Vec<f64>> = BTreeMap::new();
    let mut all_tc: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut runs: BTreeMap<(&str, String), u64> = BTreeMap::new();
    for rep in 0..ctx.plan.reps {
        for &level in &levels {
            crate::check_interrupt()?;
            eprintln!("  [2] round {}/{} {level}", rep + 1, ctx.plan.reps);
            let extra: Vec<&str> = ctx.plan.agent_args.iter().map(String::as_str).collect();
            let agent = Agent::start(ctx.rt, &s, level, &extra)?;
            let ids = bpf::program_ids(agent.pid());
            anyhow::ensure!(!ids.is_empty(), "the agent holds no BPF program fds");
            let before = bpf::snapshot(&ids);
            iperf_client(&s.pod_a(), WORLD_IP, server.port(), secs, 0, None)?;
            {
                let _flood = Flood::start(&s.pod_a(), sink_addr(), FLOOD_FLOWS, 64, FLOOD_PPS)?;
                crate::sleep(std::time::Duration::from_secs(secs.into()))?;
            }
            let after = bpf::snapshot(&ids);
            agent.stop();
            let d = bpf::delta(&before, &after);
            let mut tc = ProgStats::default();
            for (name, st) in &d {
                if prog::ALL_TC.contains(&name.as_str()) {
                    tc.runs += st.runs;
                    tc.ns += st.ns;
                }
                if st.runs > 0 {
                    per_prog
                        .entry((level, name.clone()))
                        .or_default()
                        .push(st.ns_per_run());
                    *runs.entry((level, name.clone())).or_default() += st.runs;
                }
            }
            all_tc.entry(level).or_default().push(tc.ns_per_run());
        }
    }
    drop(server);
    let r = &mut *ctx.report;
    for &level in &levels {
        let goal = match level {
            "none" => Some(200.0),
            "medium" => Some(120.0),
            _ => None,
        };
        let with_goal = |row: Row| match goal {
            Some(g) => row.goal(Goal::at_most(g)),
            None => row,
        };
        r.push(with_goal(
            Row::new(
                2,
                "BPF run time, all TC programs",
                level,
                "ns/run",
                &all_tc[level],
            )
            .note("weighted by runs"),
        ));
        for ((l, name), v) in &per_prog {
            if l != &level {
                continue;
            }
            let n = runs[&(*l, name.clone())] / ctx.plan.reps as u64;
            let row = Row::new(2, &format!("BPF run time, {name}"), level, "ns/run", v)
                .note(format!("{} runs/round", num(n as f64)));
            // The drop tracepoint runs for every packet freed anywhere on the machine, not per
            // packet of the node: the per-packet goal is for the TC programs. A program that
            // ran a handful of times (the gateway device sees an IPv6 router solicitation now
            // and then) measures cold caches, not the per-packet cost.
            r.push(if name == prog::KFREE_SKB || n < 1000 {
                row
            } else {
                with_goal(row)
            });
        }
    }
    if !ctx.plan.agent_args.is_empty() {
        r.note(format!(
            "2: the agents ran with {}",
            ctx.plan.agent_args.join(" ")
        ));
    }
    r.note(format!(
        "2: bpf_stats enabled with BPF_ENABLE_STATS for the run; per round: iperf3 TCP {secs} s, \
         then UDP 64 B at {} kpps over {FLOOD_FLOWS} flows for {secs} s; only the programs whose \
         fds the agent under test holds. fs_kfree_skb runs on every freed skb of the machine \
         (here: the world's sink dropping the flood), and returns early for other namespaces.",
        FLOOD_PPS / 1000
    ));
    Ok(())
}
