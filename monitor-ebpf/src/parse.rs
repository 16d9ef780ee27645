//! Header parsing for the TC programs: the readers over the skb behind the shared parser
//! (`monitor-parse`, tested on the host over byte fixtures).
//!
//! Two readers: [`Linear`] reads the headers in place (direct packet access, a bounds check and
//! a load: a few instructions), [`Skb`] copies them with `bpf_skb_load_bytes`, which also works
//! when headers are not in the linear part of the skb (some GSO or paged packets) but is a
//! helper call per read. [`parse`] tries the first and falls back to the second only when a
//! header lies beyond the linear part.

use core::mem::size_of;

use aya_ebpf::programs::TcContext;
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
        self.0
            .load::<[u8; N]>(off)
            .map_err(|_| ParseError::Truncated)
    }
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
