//! The connection table and monitor aggregation.
//!
//! One entry per connection and per tuple: a pod's connection to the world has one entry for
//! the pod's tuple (seen on its veth) and one for the masqueraded tuple (seen on the uplink);
//! user space joins the two with the kernel's NAT table. A packet that transits between two
//! monitored interfaces without being translated (pod to pod) meets the same entry twice: it is
//! counted once, on the arrival side, and its departure-side trace is a "transit duplicate".

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::bindings::BPF_ANY;
use monitor_common::{
    Config, CtEntry, CtKey, DIR_ORIG, DIR_REPLY, aggregation, counter, ct_flags, ct_state,
    event_flags, obs, obs_mode, proto, role, tcp,
};

use crate::{
    maps::{CONNTRACK, CT_SCRATCH, count},
    parse::Packet,
};

/// What conntrack says about one packet at one observation point.
pub struct Verdict {
    /// One of `ct_state`.
    pub state: u8,
    /// Emit a trace for this packet (monitor aggregation).
    pub report: bool,
    /// Extra `event_flags` (TRANSIT_DUP, CT_CLOSING, CT_FAILED).
    pub flags: u8,
}

#[inline(always)]
fn lifetime(cfg: &Config, key: &CtKey, entry_flags: u8) -> u64 {
    if key.proto != proto::TCP {
        cfg.other_lifetime_ns
    } else if entry_flags & ct_flags::CLOSING != 0 {
        cfg.closing_lifetime_ns
    } else {
        cfg.tcp_lifetime_ns
    }
}

#[inline(always)]
fn is_live(cfg: &Config, key: &CtKey, e: &CtEntry, now: u64) -> bool {
    now.saturating_sub(e.last_seen_ns) <= lifetime(cfg, key, e.flags)
}

/// Can the traces of the hook at `point` be reported at all in the configured observation-point
/// mode? In Cilium's, the FROM_* points are silent from `low` up (its `TRACE_AGGREGATE_RX`);
/// the endpoint veth's ingress reports as TO_STACK / TO_ENDPOINT, so it stays visible.
#[inline(always)]
pub fn visible(cfg: &Config, point: u8) -> bool {
    cfg.obs_mode != obs_mode::CILIUM
        || cfg.aggregation == aggregation::NONE
        || !matches!(point, obs::FROM_NETWORK | obs::FROM_HOST)
}

/// Looks the packet up (creating the entry if needed), updates the counters and decides whether
/// the packet is reported.
///
/// `transit` says, on a departure hook, through which kind of monitored interface the packet
/// entered the node (a [`role`], 0 if none): if the arrival hook already counted this direction
/// of this entry, it is the same packet seen again. It is a map lookup, so it is asked only
/// when that could be the case.
#[inline(always)]
pub fn track(
    pkt: &Packet,
    point: u8,
    ifindex: u32,
    len: u32,
    transit: impl FnOnce() -> u8,
    cfg: &Config,
    now: u64,
    reply_first: &mut u8,
) -> Verdict {
    let arrival = obs::is_arrival(point);
    let visible = visible(cfg, point);
    let flags = pkt.tcp_flags;
    let key = &pkt.key;

    // Original direction?
    let orig = || {
        let e = CONNTRACK.get_ptr_mut(key)?;
        // SAFETY: a valid map value pointer for the duration of the program.
        let live = is_live(cfg, key, unsafe { &*e }, now);
        let closed_reopen = key.proto == proto::TCP
            && flags & (tcp::SYN | tcp::ACK) == tcp::SYN
            && unsafe { (*e).flags } & ct_flags::CLOSING != 0;
        (live && !closed_reopen).then_some((e, DIR_ORIG))
    };
    // Reply direction? The reversed key is built only when this is asked (a packet found in
    // the original direction never needs it).
    let reply = || {
        let rev = key.reversed();
        let e = CONNTRACK.get_ptr_mut(&rev)?;
        // SAFETY: as above.
        is_live(cfg, &rev, unsafe { &*e }, now).then_some((e, DIR_REPLY))
    };
    // Which first? The direction this hook found last on this CPU: a hook sees runs of one
    // direction (an uplink's ingress mostly replies to the pods' connections), and a miss is a
    // hash of the 40-byte key and a bucket walk. The order changes only the cost, not the
    // answer: at most one of the two keys has a live entry (an entry is created only when
    // neither direction has one, and one that is no longer live never becomes live again).
    let found = if *reply_first != 0 {
        reply().or_else(orig)
    } else {
        orig().or_else(reply)
    };
    if let Some((_, d)) = found {
        *reply_first = u8::from(d == DIR_REPLY);
    }

    let Some((e, dir)) = found else {
        // An ICMP error about a connection we track: RELATED, reported wherever this hook
        // reports.
        if pkt.has_inner {
            let rev = pkt.inner.reversed();
            if CONNTRACK.get_ptr(&pkt.inner).is_some() || CONNTRACK.get_ptr(&rev).is_some() {
                return Verdict {
                    state: ct_state::RELATED,
                    report: visible,
                    flags: 0,
                };
            }
        }
        return create(pkt, point, ifindex, len, arrival, visible, now);
    };

    // SAFETY: `e` points into the map value; concurrent writers on other CPUs can only make
    // the non-counter fields stale, which reporting tolerates. Counters use atomic adds.
    let entry = unsafe { &mut *e };
    let (arrival_bit, reported_bit, mut state) = if dir == DIR_ORIG {
        (
            ct_flags::ARRIVAL_SEEN_ORIG,
            ct_flags::ARRIVAL_REPORTED_ORIG,
            ct_state::ESTABLISHED,
        )
    } else {
        (
            ct_flags::ARRIVAL_SEEN_REPLY,
            ct_flags::ARRIVAL_REPORTED_REPLY,
            ct_state::REPLY,
        )
    };
    let entered_by = if !arrival && entry.flags & arrival_bit != 0 {
        transit()
    } else {
        0
    };
    let dup = entered_by != 0;
    if !dup {
        // SAFETY: the pointers are 8-byte aligned fields of the map value. The BPF target has
        // no `AtomicU64::fetch_add` (no compare-and-swap), but the kernel has an atomic add
        // instruction, which this intrinsic compiles to.
        unsafe {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&mut entry.packets[dir], 1);
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&mut entry.bytes[dir], len as u64);
        }
    }
    entry.last_seen_ns = now;
    let mut new_flags = entry.flags;
    if flags & (tcp::FIN | tcp::RST) != 0 {
        new_flags |= ct_flags::CLOSING;
    }
    if dir == DIR_REPLY {
        new_flags |= ct_flags::SEEN_REPLY;
    }
    if arrival {
        new_flags |= arrival_bit;
        if visible {
            new_flags |= reported_bit;
        }
    }

    // Is this a packet whose trace another hook already gave (or gives up)?
    let dup_hidden = dup
        && if cfg.obs_mode == obs_mode::CILIUM {
            // The sender's veth reported the delivery to this endpoint (TO_ENDPOINT), as
            // Cilium's local delivery does, at every level. Otherwise Cilium reports each TO_*
            // point up to `low`; from `medium` a departure hook reports a packet only if the
            // arrival hook that saw it is silent in this mode (the uplink's, the gateway's).
            (point == obs::TO_ENDPOINT && entered_by == role::ENDPOINT)
                || (cfg.aggregation >= aggregation::MEDIUM && entry.flags & reported_bit != 0)
        } else {
            cfg.aggregation >= aggregation::LOW
        };
    let report = visible
        && !dup_hidden
        && match cfg.aggregation {
            aggregation::NONE | aggregation::LOW => true,
            _ => {
                flags & !entry.flags_reported[dir] != 0
                    || now.saturating_sub(entry.last_report_ns[dir]) >= cfg.report_interval_ns
            }
        };
    if report && cfg.aggregation >= aggregation::MEDIUM {
        entry.flags_reported[dir] |= flags;
        entry.last_report_ns[dir] = now;
    }
    if report && dir == DIR_ORIG && new_flags & ct_flags::NEW_UNREPORTED != 0 {
        // The first trace of a connection whose first packet no trace reported.
        state = ct_state::NEW;
        new_flags &= !ct_flags::NEW_UNREPORTED;
    }
    if new_flags != entry.flags {
        entry.flags = new_flags;
    }
    entry.flags_seen[dir] |= flags;
    if !report {
        count(counter::AGGREGATED);
    }
    let mut out = if dup { event_flags::TRANSIT_DUP } else { 0 };
    if new_flags & ct_flags::CLOSING != 0 {
        out |= event_flags::CT_CLOSING;
    }
    Verdict {
        state,
        report,
        flags: out,
    }
}

/// A new connection: the packet is counted in the new entry and reported, unless the hook is
/// silent in the observation-point mode (`visible` false): then nothing is marked as reported,
/// and the first hook that reports the connection says "new".
#[inline(always)]
fn create(
    pkt: &Packet,
    point: u8,
    ifindex: u32,
    len: u32,
    arrival: bool,
    visible: bool,
    now: u64,
) -> Verdict {
    let flags = pkt.tcp_flags;
    let Some(scratch) = CT_SCRATCH.get_ptr_mut(0) else {
        return Verdict {
            state: ct_state::NEW,
            report: true,
            flags: event_flags::CT_FAILED,
        };
    };
    // SAFETY: per-CPU scratch slot, exclusively ours while the program runs.
    let entry = unsafe { &mut *scratch };
    *entry = CtEntry {
        created_ns: now,
        last_seen_ns: now,
        ifindex,
        obs_point: point,
        ..CtEntry::default()
    };
    entry.packets[DIR_ORIG] = 1;
    entry.bytes[DIR_ORIG] = len as u64;
    entry.flags_seen[DIR_ORIG] = flags;
    if visible {
        entry.flags_reported[DIR_ORIG] = flags;
        entry.last_report_ns[DIR_ORIG] = now;
    } else {
        entry.flags |= ct_flags::NEW_UNREPORTED;
        count(counter::AGGREGATED);
    }
    if arrival {
        entry.flags |= ct_flags::ARRIVAL_SEEN_ORIG;
        if visible {
            entry.flags |= ct_flags::ARRIVAL_REPORTED_ORIG;
        }
    }
    if flags & (tcp::FIN | tcp::RST) != 0 {
        entry.flags |= ct_flags::CLOSING;
    }
    // BPF_ANY: replaces an expired entry or a closed TCP connection being reopened. Two CPUs
    // racing on the first packets of one connection both see "new": harmless.
    let out = match CONNTRACK.insert(&pkt.key, &*entry, BPF_ANY as u64) {
        Ok(()) => 0,
        Err(_) => {
            count(counter::CT_INSERT_FAILED);
            event_flags::CT_FAILED
        }
    };
    Verdict {
        state: ct_state::NEW,
        report: visible,
        flags: out,
    }
}
