//! Benchmark 7 — idle: the agent (default options) on a node without traffic. CPU from its cgroup
//! and wake-ups from its threads' context switches, in windows: a busy poller would show thousands
//! of wake-ups per second, or CPU without them.

use std::time::Instant;

use testbed::Scenario;

use super::Ctx;
use crate::{
    agent::{Agent, Follower},
    cgroup, procfs,
    stats::{Goal, Row},
};

/// Runs benchmark 7.
pub fn run(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let s = Scenario::build();
    let mut configs: Vec<(&str, bool, Vec<&str>)> = vec![("medium (defaults)", false, vec![])];
    if ctx.plan.variants {
        configs.push(("medium, one idle follower", true, vec![]));
        configs.push((
            "medium, --poll-interval 200ms",
            false,
            vec!["--poll-interval", "200ms"],
        ));
    }
    let windows = if ctx.plan.smoke { 2 } else { 5 };
    for (name, follow, extra) in configs {
        crate::check_interrupt()?;
        let agent = Agent::start(ctx.rt, &s, "medium", &extra)?;
        let follower = if follow {
            Some(Follower::start(ctx.rt, agent.channel())?)
        } else {
            None
        };
        crate::sleep(ctx.plan.secs(3.0, 0.5))?;
        let (mut cpu, mut wake) = (Vec::new(), Vec::new());
        for i in 0..windows {
            eprintln!("  [7] {name}: window {}/{windows}", i + 1);
            let (c0, x0, t0) = (
                agent.cpu_usec(),
                procfs::context_switches(agent.pid()),
                Instant::now(),
            );
            crate::sleep(ctx.plan.idle / windows)?;
            let (c1, x1) = (agent.cpu_usec(), procfs::context_switches(agent.pid()));
            cpu.push(cgroup::cores(c0, c1, t0.elapsed()) * 100.0);
            wake.push((x1.saturating_sub(x0)) as f64 / t0.elapsed().as_secs_f64());
        }
        let threads = procfs::threads(agent.pid());
        drop(follower);
        agent.stop();
        let r = &mut *ctx.report;
        r.push(Row::new(7, "idle CPU", name, "% of a core", &cpu).goal(Goal::at_most(1.0)));
        r.push(
            Row::new(7, "wake-ups (context switches)", name, "/s", &wake)
                .goal(Goal::at_most(100.0))
                .note(format!("{threads} threads; reader polls every 50 ms")),
        );
    }
    ctx.report.note(format!(
        "7: {} s without traffic in {windows} windows; \"no busy polling\" is read as at most \
         100 wake-ups per second over all threads.",
        ctx.plan.idle.as_secs()
    ));
    Ok(())
}
