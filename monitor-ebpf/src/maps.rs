//! Maps shared by every program, the per-CPU counters, and the event emitter.

use crate::parse::Packet;
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use monitor_common::{
    CONNTRACK_MAX_ENTRIES, Config, CtEntry, CtKey, DEFAULT_RING_BYTES, FlowEvent,
    IFACES_MAX_ENTRIES, IfaceInfo, KernelFilter, counter, event_flags, proto,
};

/// Events to user space. Its size can be changed by the agent before load.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// The conntrack table. LRU: under pressure the oldest connections go first, never new ones.
#[map(name = "CONNTRACK")]
pub static CONNTRACK: LruHashMap<CtKey, CtEntry> =
    LruHashMap::with_max_entries(CONNTRACK_MAX_ENTRIES, 0);

/// Counters, one slot per [`counter`] index, per CPU (no atomics needed).
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// The configuration, set by the agent at load (`EbpfLoader::override_global`).
///
/// An immutable global lands in `.rodata`, which the loader freezes before the programs are
/// verified: reading it is a plain load rather than a map lookup with its null check, and the
/// verifier knows the values, so the branches of the modes not configured (aggregation,
/// observation points, drops) are removed from the program before it is JIT-compiled.
/// Never read directly: see [`config`].
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    // Not all zeroes, so that the compiler keeps it in `.rodata` rather than `.bss`.
    report_interval_ns: u64::MAX,
    // SAFETY: plain integers, for which all-zero bytes are valid.
    ..unsafe { core::mem::zeroed() }
};

/// The filter of reported packets (`--kernel-filter`), set by the agent at load like
/// [`CONFIG`]: without one (`enabled` zero, the default) the verifier removes its code.
/// Never read directly: see [`kernel_filter`].
#[unsafe(no_mangle)]
static KERNEL_FILTER: KernelFilter = KernelFilter {
    // Not all zeroes, so that the compiler keeps it in `.rodata` rather than `.bss`.
    protocols: u8::MAX,
    // SAFETY: plain integers, for which all-zero bytes are valid.
    ..unsafe { core::mem::zeroed() }
};

/// Interfaces the agent monitors, with their role.
#[map(name = "IFACES")]
pub static IFACES: HashMap<u32, IfaceInfo> = HashMap::with_max_entries(IFACES_MAX_ENTRIES, 0);

/// Per-CPU scratch space for a new conntrack entry: the BPF stack is 512 bytes for the whole
/// call chain, and an entry (80 bytes) plus an event (104) plus parse buffers do not fit.
#[map(name = "CT_SCRATCH")]
pub static CT_SCRATCH: PerCpuArray<CtEntry> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU state of the TC programs: the packet being parsed (in a map for the same reason),
/// and which conntrack direction each hook found last on this CPU.
#[repr(C)]
pub struct TcScratch {
    /// The packet being parsed.
    pub pkt: Packet,
    /// Per observation point (an `obs` value, below 16): non-zero if the last packet whose
    /// entry that hook found was a reply. See `conntrack::track`.
    pub reply_first: [u8; 16],
}

/// See [`TcScratch`].
#[map(name = "PKT_SCRATCH")]
pub static PKT_SCRATCH: PerCpuArray<TcScratch> = PerCpuArray::with_max_entries(1, 0);

/// The drop tracepoint's own scratch packet (see drop.rs).
#[map(name = "DROP_PKT_SCRATCH")]
pub static DROP_PKT_SCRATCH: PerCpuArray<Packet> = PerCpuArray::with_max_entries(1, 0);

/// Zeroes `*p` with 8-byte stores.
///
/// A plain `write_bytes`/struct assignment of a type aligned to less than 8 becomes the BPF
/// target's `memset`, a loop of one-byte stores: for a 104-byte event that was ~12 % of a TC
/// program's run time. Volatile, so that LLVM does not turn the stores back into that `memset`.
///
/// # Safety
/// `p` must be valid for writes and 8-byte aligned, and `T` a multiple of 8 bytes that may be
/// all zeroes (plain integers and byte arrays).
#[inline(always)]
pub unsafe fn zero_words<T>(p: *mut T) {
    const { assert!(core::mem::size_of::<T>() % 8 == 0 && core::mem::align_of::<T>() >= 8) };
    let words = p.cast::<u64>();
    let mut i = 0;
    while i < core::mem::size_of::<T>() / 8 {
        // SAFETY: in bounds and aligned, per the function's contract.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
        i += 1;
    }
}

/// Zeroes the event's trailing padding with two stores (`ev._pad = [0; 6]` is a call to the
/// BPF target's `memset`, a loop of one-byte stores).
#[inline(always)]
pub fn zero_pad(ev: &mut FlowEvent) {
    const { assert!(core::mem::offset_of!(FlowEvent, _pad) == 98) };
    let p = (&raw mut ev._pad).cast::<u8>();
    // SAFETY: `_pad` is 6 bytes at offset 98 of an 8-byte-aligned struct: a 2-byte store at
    // 98 and a 4-byte one at 100 are in bounds and aligned. Volatile, so that LLVM does not
    // turn them back into that `memset`.
    unsafe {
        p.cast::<u16>().write_volatile(0);
        p.add(2).cast::<u32>().write_volatile(0);
    }
}

/// Adds one to a per-CPU counter.
#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

/// The configuration the agent set at load.
///
/// The address goes through a volatile read so that the compiler cannot fold the fields to the
/// placeholder values compiled into the object; the loads that follow read the loaded values
/// (which the verifier, in turn, sees as constants).
#[inline(always)]
pub fn config() -> &'static Config {
    let p: *const Config = &raw const CONFIG;
    // SAFETY: reading a local; the result points to the static, valid for the program's life.
    unsafe { &*core::ptr::read_volatile(&p) }
}

/// The packet filter the agent set at load (read like [`config`]).
#[inline(always)]
pub fn kernel_filter() -> &'static KernelFilter {
    let p: *const KernelFilter = &raw const KERNEL_FILTER;
    // SAFETY: as in `config`.
    unsafe { &*core::ptr::read_volatile(&p) }
}

/// Does the packet pass the agent's `--kernel-filter`?
#[inline(always)]
pub fn filter_passes(pkt: &Packet) -> bool {
    let has_ports = pkt.flags & event_flags::HAS_L4 != 0
        && matches!(pkt.key.proto, proto::TCP | proto::UDP | proto::SCTP);
    kernel_filter().matches(&pkt.key, has_ports)
}

/// Is this interface one the agent monitors (in the agent's namespace)?
#[inline(always)]
pub fn is_monitored(ifindex: u32) -> bool {
    ifindex != 0 && IFACES.get_ptr(ifindex).is_some()
}

/// The role of an interface the agent monitors (a `role` value), 0 for any other.
#[inline(always)]
pub fn iface_role(ifindex: u32) -> u8 {
    if ifindex == 0 {
        return 0;
    }
    // SAFETY: a valid map value pointer for the duration of the program; `role` is a byte.
    IFACES.get_ptr(ifindex).map_or(0, |i| unsafe { (*i).role })
}

/// Reserves an event in the ring buffer, lets `fill` write it in place (no copy of the event
/// on the stack), and submits it, counting it as emitted or lost.
///
/// With `clear`, the event is zeroed before `fill` runs; without, `fill` must write every
/// field, padding included (the reservation holds what an earlier record left: it would reach
/// user space). The traces write all of them, which saves thirteen stores per packet at
/// `none`.
///
/// No wake-up per event (that costs about a microsecond per packet): the reader polls on a
/// short timer, and is woken only when `wakeup_bytes` are waiting.
///
/// If `fill` fails, the reservation is discarded and the error returned.
#[inline(always)]
pub fn emit(
    cfg: &Config,
    clear: bool,
    fill: impl FnOnce(&mut FlowEvent) -> Result<(), i32>,
) -> Result<(), i32> {
    match EVENTS.reserve::<FlowEvent>(0) {
        Some(mut slot) => {
            let ev = slot.as_mut_ptr();
            // SAFETY: the slot is a valid, exclusively owned FlowEvent-sized reservation of
            // initialised memory (the ring's pages); zeroing it, or `fill` writing every field,
            // leaves nothing of an earlier record. FlowEvent has no implicit padding.
            let filled = unsafe {
                if clear {
                    zero_words(ev);
                }
                fill(&mut *ev)
            };
            if let Err(e) = filled {
                slot.discard(0);
                return Err(e);
            }
            let flags = if cfg.wakeup_bytes != 0
                && EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= cfg.wakeup_bytes
            {
                BPF_RB_FORCE_WAKEUP
            } else {
                BPF_RB_NO_WAKEUP
            };
            slot.submit(flags as u64);
            count(counter::EVENTS_EMITTED);
        }
        None => count(counter::RING_LOST),
    }
    Ok(())
}
