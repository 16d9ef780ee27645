//! Benchmark 6 — memory: the agent's resident set under load (200 k events/s at aggregation `none`,
//! one follower), with a flow history of 4,095 and of 65,535 flows. The peak (`VmHWM`) is reported;
//! it includes the pages of the kernel ring buffer the agent has mapped.

use std::{collections::BTreeMap, time::Instant};

use testbed::Scenario;

use super::{Ctx, pipeline::start_loaded, sink_addr};
use crate::{
    load::udp_sink,
    procfs,
    stats::{Goal, Row},
};

/// Runs benchmark 6.
pub fn run(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let s = Scenario::build();
    let _sink = udp_sink(&s.world(), sink_addr())?;
    let configs: [(u64, f64); 2] = [(4095, 32.0), (65535, 64.0)];
    let mut peak: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    let mut end: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    let mut split: BTreeMap<u64, Vec<(f64, f64)>> = BTreeMap::new();
    for rep in 0..ctx.plan.reps {
        for (h, _) in configs {
            crate::check_interrupt()?;
            eprintln!("  [6] round {}/{} history {h}", rep + 1, ctx.plan.reps);
            let hs = h.to_string();
            let (agent, follower, flood) =
                start_loaded(ctx, &s, "none", &["--history-size", &hs], 100_000)?;
            let t0 = Instant::now();
            let d = ctx.plan.secs(8.0, 2.0);
            while t0.elapsed() < d {
                crate::sleep(std::time::Duration::from_millis(200))?;
            }
            let (rss, hwm) = procfs::rss_kib(agent.pid()).unwrap_or((0, 0));
            let (anon, file) = procfs::rss_split_kib(agent.pid()).unwrap_or((0, 0));
            split
                .entry(h)
                .or_default()
                .push((anon as f64 / 1024.0, file as f64 / 1024.0));
            drop(flood);
            drop(follower);
            agent.stop();
            peak.entry(h).or_default().push(hwm as f64 / 1024.0);
            end.entry(h).or_default().push(rss as f64 / 1024.0);
        }
    }
    let r = &mut *ctx.report;
    for (h, goal) in configs {
        let cfg = format!("history {h}, 200 k events/s");
        r.push(
            Row::new(6, "agent peak RSS (VmHWM)", &cfg, "MiB", &peak[&h]).goal(Goal::at_most(goal)),
        );
        r.push(Row::new(6, "agent RSS at the end", &cfg, "MiB", &end[&h]));
        let (anon, file): (Vec<f64>, Vec<f64>) = split[&h].iter().copied().unzip();
        r.push(
            Row::new(6, "  of which anonymous (heap, stacks)", &cfg, "MiB", &anon)
                .note("grows with the history"),
        );
        r.push(
            Row::new(6, "  of which file-backed", &cfg, "MiB", &file)
                .note("the binary's pages and the ring's two mappings (4 MiB ring: 8 MiB)"),
        );
    }
    r.note(
        "6: RSS of the agent process after 8 s at 200 k events/s (aggregation none, one \
         follower, 4 MiB ring): the history is full well before the end.",
    );
    Ok(())
}
