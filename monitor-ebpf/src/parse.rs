//! Header parsing for the TC programs: the readers over the skb behind the shared parser
//! (`monitor-parse`, tested on the host over byte fixtures).
//!
//! Two readers: [`Linear`] reads the headers in place (direct packet access, a bounds check and
//! a load: a few instructions), [`Skb`] copies them with `bpf_skb_load_bytes`, which also works
//! when headers are not in the linear part of the skb (some GSO or paged packets) but is a
//! helper call per read. [`parse`] tries the first and falls back to the second only when a
//! header lies beyond the linear part.

use core::mem::size_of;

use aya_ebpf::{
    helpers::generated::bpf_skb_load_bytes, macros::map, maps::PerCpuArray, programs::TcContext,
};
use monitor_parse::PacketBytes;
pub use monitor_parse::{Packet, ParseError};

/// The linear part of the skb, read in place.
struct Linear {
    data: usize,
    end: usize,
}

impl PacketBytes for Linear {
    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Result<[u8; N], ParseError> {
        let at = self.data + off;
        if at + size_of::<[u8; N]>() > self.end {
            return Err(ParseError::Truncated);
        }
        // SAFETY: `at .. at + N` is inside the packet's linear data (checked just above, the
        // check the verifier wants to see); a byte array has no alignment or validity needs.
        Ok(unsafe { core::ptr::read_unaligned(at as *const [u8; N]) })
    }
}

/// The whole packet, through `bpf_skb_load_bytes`.
struct Skb<'a>(&'a TcContext);

impl PacketBytes for Skb<'_> {
    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Result<[u8; N], ParseError> {
        let buf = copy_buffer::<N>(COPY_TC)?;
        // SAFETY: `buf` points to at least N writable bytes of a per-CPU map value.
        let r =
            unsafe { bpf_skb_load_bytes(self.0.skb.skb.cast(), off as u32, buf.cast(), N as u32) };
        if r != 0 {
            return Err(ParseError::Truncated);
        }
        // SAFETY: the helper wrote the N bytes; a byte array has no alignment needs.
        Ok(unsafe { core::ptr::read_unaligned(buf.cast::<[u8; N]>()) })
    }
}

/// The slot of [`COPY_SCRATCH`] of the TC programs.
pub const COPY_TC: u32 = 0;
/// The slot of [`COPY_SCRATCH`] of the drop tracepoint (which may run, for an skb freed in an
/// interrupt, while a TC program is between two reads on the same CPU).
pub const COPY_DROP: u32 = 1;

/// Per-CPU buffers for the readers that copy header bytes with a helper.
///
/// Not the stack: the programs are compiled with misaligned loads allowed (see build.rs), so
/// that header fields are read a word at a time wherever they are; the verifier accepts that
/// for packet and map memory but never for the stack, and LLVM reads a copied header by words
/// at whatever offsets its fields have.
#[map(name = "COPY_SCRATCH")]
pub static COPY_SCRATCH: PerCpuArray<[u8; COPY_MAX]> = PerCpuArray::with_max_entries(2, 0);

/// The longest read of the parser (an IPv6 header).
const COPY_MAX: usize = 64;

/// The buffer of `slot` for a read of N bytes.
#[inline(always)]
pub fn copy_buffer<const N: usize>(slot: u32) -> Result<*mut u8, ParseError> {
    const { assert!(N <= COPY_MAX) };
    COPY_SCRATCH
        .get_ptr_mut(slot)
        .map(|p| p.cast::<u8>())
        .ok_or(ParseError::Truncated)
}

/// Parses Ethernet, IPv4/IPv6 and the L4 header of the packet in `ctx` into `pkt`, which lives
/// in a per-CPU map rather than on the 512-byte BPF stack.
///
/// In place when the headers are in the linear part of the skb (nearly always on veths and
/// uplinks: the stack pulls the headers it parsed itself), else through `bpf_skb_load_bytes`.
#[inline(always)]
pub fn parse(ctx: &TcContext, pkt: &mut Packet) -> Result<(), ParseError> {
    let linear = Linear {
        data: ctx.data(),
        end: ctx.data_end(),
    };
    match monitor_parse::parse(&linear, pkt) {
        Err(ParseError::Truncated) => monitor_parse::parse(&Skb(ctx), pkt),
        other => other,
    }
}
