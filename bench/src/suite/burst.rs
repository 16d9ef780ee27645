//! Benchmark 4 — burst: at 200 k events/s, the agent stops reading for 500 ms; is anything lost?
//!
//! The agent has no switch to pause its reader alone, so the harness stops the whole agent
//! (SIGSTOP, then SIGCONT after 500 ms). That is a fair stand-in for the reader (the kernel
//! keeps writing into the ring meanwhile) and a harsher one for the stages behind it: on
//! resume, the reader, the decoder and the follower's stream all have 500 ms to catch up at
//! once. Losses are reported per stage.

use std::time::Duration;

use testbed::Scenario;

use super::{
    Ctx,
    pipeline::{EVENTS_PER_PACKET, Window, start_loaded},
    sink_addr,
};
use crate::{
    load::udp_sink,
    stats::{Goal, Row},
};

/// Runs benchmark 4.
pub fn run(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let s = Scenario::build();
    let _sink = udp_sink(&s.world(), sink_addr())?;
    let rate = 200_000;
    let mut configs: Vec<(&str, Vec<&str>)> = vec![
        ("ring 4 MiB (default)", vec!["--ring-size", "4MiB"]),
        ("ring 8 MiB", vec!["--ring-size", "8MiB"]),
        ("ring 16 MiB", vec!["--ring-size", "16MiB"]),
    ];
    if ctx.plan.variants {
        configs.push((
            "ring 16 MiB, at 100 k events/s",
            vec!["--ring-size", "16MiB", "RATE=100000"],
        ));
        configs.push((
            "ring 16 MiB, queue 256 k, history 65535",
            vec![
                "--ring-size",
                "16MiB",
                "--queue-size",
                "262144",
                "--history-size",
                "65535",
            ],
        ));
    }
    if ctx.plan.smoke {
        configs.retain(|(n, _)| n.starts_with("ring 16 MiB"));
    }
    let mut results: Vec<Vec<Window>> = vec![Vec::new(); configs.len()];
    for rep in 0..ctx.plan.reps {
        for (i, (name, extra)) in configs.iter().enumerate() {
            crate::check_interrupt()?;
            eprintln!("  [4] round {}/{} {name}", rep + 1, ctx.plan.reps);
            // A variant may run at another rate ("RATE=<events/s>" among its options).
            let rate = extra
                .iter()
                .find_map(|o| o.strip_prefix("RATE=").and_then(|r| r.parse::<u64>().ok()))
                .unwrap_or(rate);
            let opts: Vec<&str> = extra
                .iter()
                .copied()
                .filter(|o| !o.starts_with("RATE="))
                .collect();
            let (agent, follower, flood) =
                start_loaded(ctx, &s, "none", &opts, rate / EVENTS_PER_PACKET)?;
            crate::sleep(ctx.plan.secs(2.0, 1.0))?;
            // The window covers the pause and the catch-up.
            let w = std::thread::scope(|scope| {
                let pauser = scope.spawn(|| {
                    std::thread::sleep(Duration::from_millis(300));
                    agent.signal(libc::SIGSTOP);
                    std::thread::sleep(Duration::from_millis(500));
                    agent.signal(libc::SIGCONT);
                });
                let w = super::pipeline::window(
                    ctx,
                    &agent,
                    &follower,
                    &flood,
                    ctx.plan.secs(4.0, 2.0),
                );
                let _ = pauser.join();
                w
            });
            // Whatever happened, the agent must not stay stopped.
            agent.signal(libc::SIGCONT);
            let w = w?;
            drop(flood);
            drop(follower);
            agent.stop();
            results[i].push(w);
        }
    }
    let r = &mut *ctx.report;
    for ((name, _), ws) in configs.iter().zip(&results) {
        let col = |f: fn(&Window) -> u64| ws.iter().map(|w| f(w) as f64).collect::<Vec<f64>>();
        // The goal: zero loss with a ring of at most 16 MiB, i.e. at 16 MiB.
        let goal = *name == "ring 16 MiB";
        let mut total =
            Row::new(4, "lost, all stages", name, "events", &col(Window::lost)).note(format!(
                "ring {} / queue {} / history {} (medians)",
                crate::stats::num(median(&col(|w| w.lost_ring))),
                crate::stats::num(median(&col(|w| w.lost_queue))),
                crate::stats::num(median(&col(|w| w.lost_history)))
            ));
        if goal {
            total = total.goal(Goal::at_most(0.0));
        }
        r.push(total);
        r.push(Row::new(
            4,
            "lost in the kernel ring",
            name,
            "events",
            &col(|w| w.lost_ring),
        ));
    }
    r.note(
        "4: 200 k events/s (aggregation none, one follower); the agent is stopped with SIGSTOP \
         for 500 ms and resumed (a stand-in for pausing its reader: there is no such switch); \
         the window covers the pause and 3 s of catch-up. A 500 ms pause at 200 k events/s is \
         100 k events of 112 B in the ring (104 B + 8 B header): 11 MiB.",
    );
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    crate::stats::Summary::of(v).map_or(f64::NAN, |s| s.median)
}
