//! Benchmark 3 — agent pipeline ceiling: aggregation `none`, many flows (one source port each), one
//! gRPC follower taking every flow. First a sustained run at 200 k events/s (zero loss? agent CPU),
//! in windows; then the rate is raised step by step until something is lost anywhere (kernel ring,
//! decode queue, history), on a fresh agent.
//!
//! Loss is the agent's own accounting (Inspector `GetAgentStatus`: `lost_kernel_ring`,
//! `lost_decode_queue`, `lost_history`); the follower's LostEvents and flow count cross-check
//! it.

use std::{fmt::Write as _, time::Instant};

use flowscope_proto::flowscope::v1::StageCounters;
use testbed::Scenario;

use super::{Ctx, sink_addr};
use crate::{
    agent::{Agent, Follower, lost_between},
    cgroup,
    load::{Flood, udp_sink},
    stats::{Goal, Row, num},
};

/// Flows of the flood (source ports).
pub const FLOWS: usize = 1024;
/// Events per packet at `none` on the pod → world path: from-endpoint + to-network.
pub const EVENTS_PER_PACKET: u64 = 2;

/// One measured window.
#[derive(Clone, Debug)]
pub struct Window {
    /// Events the kernel produced per second (read + lost in the ring).
    pub events_per_s: f64,
    /// Flows the follower received per second.
    pub follower_per_s: f64,
    /// Agent CPU, in cores.
    pub cores: f64,
    /// Lost in the kernel ring.
    pub lost_ring: u64,
    /// Lost in the decode queue.
    pub lost_queue: u64,
    /// Lost by the follower in the history.
    pub lost_history: u64,
    /// LostEvents counted by the follower.
    pub follower_lost: u64,
    /// Datagrams the flood sent per second.
    pub sent_pps: f64,
}

impl Window {
    /// Every loss the agent accounted.
    pub fn lost(&self) -> u64 {
        self.lost_ring + self.lost_queue + self.lost_history
    }
}

/// Measures one window of `d` on a running agent with a follower and a flood.
pub fn window(
    ctx: &Ctx<'_>,
    agent: &Agent,
    follower: &Follower,
    flood: &Flood,
    d: std::time::Duration,
) -> anyhow::Result<Window> {
    let snap = |c: &StageCounters| c.events_read + c.lost_kernel_ring;
    let c0 = agent.counters(ctx.rt)?;
    let (cpu0, f0, l0, s0, t0) = (
        agent.cpu_usec(),
        follower.flows(),
        follower.lost(),
        flood.sent(),
        Instant::now(),
    );
    crate::sleep(d)?;
    let c1 = agent.counters(ctx.rt)?;
    let (cpu1, f1, l1, s1) = (
        agent.cpu_usec(),
        follower.flows(),
        follower.lost(),
        flood.sent(),
    );
    let dt = t0.elapsed().as_secs_f64();
    Ok(Window {
        events_per_s: (snap(&c1) - snap(&c0)) as f64 / dt,
        follower_per_s: (f1 - f0) as f64 / dt,
        cores: cgroup::cores(cpu0, cpu1, t0.elapsed()),
        lost_ring: c1.lost_kernel_ring - c0.lost_kernel_ring,
        lost_queue: c1.lost_decode_queue - c0.lost_decode_queue,
        lost_history: lost_between(&c0, &c1)
            - (c1.lost_kernel_ring - c0.lost_kernel_ring)
            - (c1.lost_decode_queue - c0.lost_decode_queue),
        follower_lost: l1 - l0,
        sent_pps: (s1 - s0) as f64 / dt,
    })
}

/// Starts the agent at `aggregation` with `extra` options, a follower, and a flood of `pps`
/// datagrams per second (at `none`, `pps × EVENTS_PER_PACKET` events per second).
pub fn start_loaded(
    ctx: &Ctx<'_>,
    s: &Scenario,
    aggregation: &str,
    extra: &[&str],
    pps: u64,
) -> anyhow::Result<(Agent, Follower, Flood)> {
    let agent = Agent::start(ctx.rt, s, aggregation, extra)?;
    let follower = if ctx.plan.full_follower {
        Follower::start(ctx.rt, agent.channel())?
    } else {
        Follower::start_light(ctx.rt, agent.channel())?
    };
    let flood = Flood::start(&s.pod_a(), sink_addr(), FLOWS, 64, pps)?;
    Ok((agent, follower, flood))
}

fn window_line(out: &mut String, label: &str, w: &Window) {
    let _ = writeln!(
        out,
        "| {label} | {} | {} | {} | {} | {} | {} | {} | {} |",
        num(w.sent_pps * EVENTS_PER_PACKET as f64 / 1e3),
        num(w.events_per_s / 1e3),
        num(w.follower_per_s / 1e3),
        w.lost_ring,
        w.lost_queue,
        w.lost_history,
        w.follower_lost,
        num(w.cores),
    );
}

const WINDOW_HEADER: &str = concat!(
    "| step | offered k ev/s | kernel k ev/s | follower k flows/s | lost ring | lost queue ",
    "| lost history | follower LostEvents | agent cores |\n",
    "|---|---|---|---|---|---|---|---|---|\n"
);

/// Sustained run: `pps` datagrams/s for `total`, in windows; returns the windows.
fn sustained(
    ctx: &Ctx<'_>,
    s: &Scenario,
    aggregation: &str,
    extra: &[&str],
    pps: u64,
    total: std::time::Duration,
    windows: u32,
) -> anyhow::Result<Vec<Window>> {
    let (agent, follower, flood) = start_loaded(ctx, s, aggregation, extra, pps)?;
    crate::sleep(ctx.plan.secs(2.0, 0.5))?;
    let mut out = Vec::new();
    for i in 0..windows {
        eprintln!(
            "  [3] {aggregation} {} {} kpps, window {}/{windows}",
            extra.join(" "),
            pps / 1000,
            i + 1
        );
        out.push(window(ctx, &agent, &follower, &flood, total / windows)?);
    }
    if let Some(e) = follower.error() {
        anyhow::bail!("the follower's stream failed: {e}");
    }
    drop(flood);
    drop(follower);
    agent.stop();
    Ok(out)
}

/// Runs benchmark 3.
pub fn run(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let s = Scenario::build();
    let _sink = udp_sink(&s.world(), sink_addr())?;
    let rate = ctx.plan.sustain_rate;
    let windows = if ctx.plan.smoke { 2 } else { 12 };
    let agent_args: Vec<String> = ctx.plan.agent_args.clone();
    let extra: Vec<&str> = agent_args.iter().map(String::as_str).collect();
    let ws = sustained(
        ctx,
        &s,
        "none",
        &extra,
        rate / EVENTS_PER_PACKET,
        ctx.plan.sustain,
        windows,
    )?;
    let mut detail = String::from(WINDOW_HEADER);
    for (i, w) in ws.iter().enumerate() {
        window_line(&mut detail, &format!("window {}", i + 1), w);
    }
    let secs = ctx.plan.sustain.as_secs();
    let cfg = format!("none, {} k ev/s offered, {secs} s", rate / 1000);
    let r = &mut *ctx.report;
    let col = |f: fn(&Window) -> f64| ws.iter().map(f).collect::<Vec<f64>>();
    r.push(
        Row::new(
            3,
            "events handled (kernel → agent)",
            &cfg,
            "k events/s",
            &col(|w| w.events_per_s / 1e3),
        )
        .goal(Goal::at_least(200.0))
        .note("per window"),
    );
    r.push(Row::new(
        3,
        "flows delivered to the follower",
        &cfg,
        "k flows/s",
        &col(|w| w.follower_per_s / 1e3),
    ));
    let total_lost: u64 = ws.iter().map(Window::lost).sum();
    r.push(
        Row::new(
            3,
            "events lost, whole run",
            &cfg,
            "events",
            &[total_lost as f64],
        )
        .goal(Goal::at_most(0.0))
        .note(format!(
            "ring {} / queue {} / history {}",
            ws.iter().map(|w| w.lost_ring).sum::<u64>(),
            ws.iter().map(|w| w.lost_queue).sum::<u64>(),
            ws.iter().map(|w| w.lost_history).sum::<u64>()
        )),
    );
    r.push(
        Row::new(3, "agent CPU", &cfg, "cores", &col(|w| w.cores))
            .goal(Goal::at_most(1.0))
            .note("per window"),
    );
    r.push(
        Row::new(
            3,
            "agent CPU per event handled",
            &cfg,
            "µs",
            &col(|w| w.cores * 1e6 / w.events_per_s.max(1.0)),
        )
        .goal(Goal::at_most(2.0))
        .note("1 core at 200 k events/s = 5 µs"),
    );
    r.section(
        format!(
            "3. Sustained {} k events/s, windows of {} s",
            rate / 1000,
            secs / windows as u64
        ),
        detail,
    );

    // Ramp: raise the rate until loss, on a fresh agent.
    let steps: Vec<u64> = if ctx.plan.smoke {
        vec![100_000, 300_000]
    } else {
        vec![
            25_000, 50_000, 75_000, 100_000, 125_000, 150_000, 175_000, 200_000, 250_000, 300_000,
            400_000,
        ]
    };
    let (agent, follower, flood) =
        start_loaded(ctx, &s, "none", &extra, steps[0] / EVENTS_PER_PACKET)?;
    let mut ramp = String::from(WINDOW_HEADER);
    let mut first_loss: Option<Window> = None;
    let mut last_clean: Option<Window> = None;
    for &step in &steps {
        crate::check_interrupt()?;
        eprintln!("  [3] ramp {} k events/s", step / 1000);
        flood.set_rate(step / EVENTS_PER_PACKET);
        crate::sleep(ctx.plan.secs(1.0, 0.3))?;
        let w = window(ctx, &agent, &follower, &flood, ctx.plan.secs(5.0, 1.0))?;
        window_line(&mut ramp, &format!("{} k", step / 1000), &w);
        if w.lost() > 0 || w.follower_lost > 0 {
            first_loss = Some(w);
            break;
        }
        last_clean = Some(w);
    }
    drop(flood);
    drop(follower);
    agent.stop();
    let r = &mut *ctx.report;
    match (&first_loss, &last_clean) {
        (Some(l), _) => r.push(
            Row::new(
                3,
                "rate where loss starts",
                "none",
                "k events/s",
                &[l.events_per_s / 1e3],
            )
            .note(format!(
                "last clean step: {}",
                last_clean.as_ref().map_or("none".into(), |c| format!(
                    "{} k events/s",
                    num(c.events_per_s / 1e3)
                ))
            )),
        ),
        (None, Some(c)) => r.push(
            Row::new(
                3,
                "highest rate without loss",
                "none",
                "k events/s",
                &[c.events_per_s / 1e3],
            )
            .note("no loss at any step: the sender is the limit"),
        ),
        (None, None) => {}
    }
    r.section("3. Ramp until loss", ramp);
    if ctx.plan.variants {
        variants(ctx, &s, rate / EVENTS_PER_PACKET)?;
    }
    let r = &mut *ctx.report;
    if !agent_args.is_empty() {
        r.note(format!("3: the agents ran with {}", agent_args.join(" ")));
    }
    r.note(format!(
        "3: flood of 64 B UDP datagrams from pod-a over {FLOWS} source ports to a sink in the \
         world, {EVENTS_PER_PACKET} events per packet at `none`; one follower (GetFlows follow, \
         no filter) in the harness's process, {}; CPU from the agent's cgroup.",
        if ctx.plan.full_follower {
            "decoding every flow in full (`--full-follower`)"
        } else {
            "reading of each flow only its time (`--full-follower`: in full)"
        }
    ));
    Ok(())
}

/// Design variants at the same packet rate: the reader's wake-up policy (poll interval) and
/// the aggregation level (events per packet), 2 windows each.
fn variants(ctx: &mut Ctx<'_>, s: &Scenario, pps: u64) -> anyhow::Result<()> {
    let cases: [(&str, &str, &[&str]); 5] = [
        ("none, poll 50ms (default)", "none", &[]),
        ("none, poll 10ms", "none", &["--poll-interval", "10ms"]),
        ("none, poll 200ms", "none", &["--poll-interval", "200ms"]),
        ("low", "low", &[]),
        ("medium", "medium", &[]),
    ];
    let d = ctx.plan.secs(20.0, 2.0);
    for (label, agg, extra) in cases {
        crate::check_interrupt()?;
        let ws = sustained(ctx, s, agg, extra, pps, d, 2)?;
        let cfg = format!("{label}, {} kpps", pps / 1000);
        let col = |f: fn(&Window) -> f64| ws.iter().map(f).collect::<Vec<f64>>();
        let r = &mut *ctx.report;
        r.push(Row::new(
            3,
            "variant: events handled",
            &cfg,
            "k events/s",
            &col(|w| w.events_per_s / 1e3),
        ));
        r.push(Row::new(
            3,
            "variant: agent CPU",
            &cfg,
            "cores",
            &col(|w| w.cores),
        ));
        r.push(Row::new(
            3,
            "variant: agent CPU per event",
            &cfg,
            "µs",
            &col(|w| w.cores * 1e6 / w.events_per_s.max(1.0)),
        ));
        r.push(Row::new(
            3,
            "variant: events lost",
            &cfg,
            "events",
            &col(|w| w.lost() as f64),
        ));
    }
    Ok(())
}
