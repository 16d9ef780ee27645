//! flowscope's kernel programs.
//!
//! They observe and never change a packet: every TC program returns `TC_ACT_UNSPEC` (with tcx,
//! "next"), so that the CNI's own programs and the kernel decide the packet's fate. What they
//! see goes to user space as [`monitor_common::FlowEvent`]s through one ring buffer.
//!
//! - `tc.rs`: the six TC programs (endpoint veths, uplink, host gateway device);
//! - `drop.rs`: the `skb:kfree_skb` tracepoint (packets the kernel dropped);
//! - `l7.rs`: the first payload bytes of packets on L7 ports (DNS, HTTP), for the agent's parsers;
//! - `parse.rs`: the skb readers behind the shared parser (`monitor-parse`); `conntrack.rs`: the
//!   connection table and monitor aggregation;
//! - `maps.rs`: the maps, the per-CPU counters and the event emitter shared by all.
#![no_std]
#![no_main]
// Atomic adds on conntrack counters: see conntrack.rs.
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic_xadd is the only atomic add the BPF target offers"
)]

mod conntrack;
mod drop;
mod l7;
mod maps;
mod parse;
mod tc;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never called at run time.
    loop {}
}

/// GPL-compatible: `bpf_probe_read_kernel` and tracepoints are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
