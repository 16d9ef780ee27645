//! Facts about the running kernel that the datapath needs: structure offsets (from BTF), the
//! drop tracepoint's record layout (from its format file), drop reason names, the network
//! namespace, clocks, and capabilities.

use std::{collections::HashMap, os::unix::fs::MetadataExt as _, path::Path, time::SystemTime};

use monitor_common::KernelOffsets;

use crate::kernel::btf::{Btf, BtfError};

/// Errors discovering kernel facts.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// No BTF at all: drops cannot be decoded on this kernel.
    #[error(
        "this kernel has no BTF (/sys/kernel/btf/vmlinux): drop tracing needs CONFIG_DEBUG_INFO_BTF=y (or run with --no-drops)"
    )]
    NoBtf(#[source] std::io::Error),
    /// BTF is there but not what we expect.
    #[error("reading kernel BTF")]
    Btf(#[from] BtfError),
    /// The tracepoint's format file is missing or unexpected.
    #[error("reading the skb:kfree_skb tracepoint format ({path})")]
    TracepointFormat {
        /// The file we tried.
        path: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A required field is not in the tracepoint format.
    #[error("the skb:kfree_skb tracepoint has no field {0}")]
    TracepointField(&'static str),
}

/// Where tracefs may be mounted.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

fn has_entries(dir: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

/// Makes sure tracefs is visible, mounting it at `/sys/kernel/tracing` if it is not: `ip netns
/// exec` (and some container runtimes) give the process a fresh `/sys` without it. Returns true
/// if it mounted it.
pub fn ensure_tracefs() -> std::io::Result<bool> {
    if TRACEFS.iter().any(|d| has_entries(d)) {
        return Ok(false);
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: valid NUL-terminated strings; mounting tracefs has no other side effects.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(true)
}

/// Field offsets of the `skb:kfree_skb` record, parsed from its `format` file.
fn tracepoint_offsets() -> Result<HashMap<String, u32>, KernelError> {
    let mut last_err = None;
    for root in TRACEFS {
        let path = format!("{root}/events/skb/kfree_skb/format");
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok(parse_format(&text)),
            Err(e) => last_err = Some((path, e)),
        }
    }
    let (path, source) = last_err.expect("TRACEFS is not empty");
    Err(KernelError::TracepointFormat { path, source })
}

/// Parses lines like `field:void * skbaddr; offset:8; size:8; signed:0;`.
fn parse_format(text: &str) -> HashMap<String, u32> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut parts = rest.split(';');
        let decl = parts.next().unwrap_or_default();
        let name = decl
            .rsplit([' ', '*'])
            .next()
            .unwrap_or_default()
            .to_owned();
        for p in parts {
            if let Some(off) = p.trim().strip_prefix("offset:")
                && let Ok(off) = off.parse()
            {
                out.insert(name.clone(), off);
            }
        }
    }
    out
}

/// Everything the drop tracepoint needs to know about this kernel.
pub struct DropSupport {
    /// Offsets for the kernel program.
    pub offsets: KernelOffsets,
    /// `enum skb_drop_reason` value -> name without the `SKB_DROP_REASON_` prefix
    /// (`flowscope_proto::drop_reason::short_name`).
    pub reasons: HashMap<u32, String>,
}

/// Reads BTF and the tracepoint format.
pub fn drop_support() -> Result<DropSupport, KernelError> {
    let btf = Btf::from_sys_fs().map_err(KernelError::NoBtf)??;
    let tp = tracepoint_offsets()?;
    let field = |name: &'static str| {
        tp.get(name)
            .copied()
            .ok_or(KernelError::TracepointField(name))
    };
    let skb = |m: &str| btf.member_offset("sk_buff", m);
    // `struct net` embeds `struct ns_common ns`, whose `inum` is the namespace's inode number.
    let net_ns_inum = btf.member_offset("net", "ns")? + btf.member_offset("ns_common", "inum")?;
    let offsets = KernelOffsets {
        skb_head: skb("head")?,
        skb_network_header: skb("network_header")?,
        skb_transport_header: skb("transport_header")?,
        skb_mac_header: skb("mac_header")?,
        skb_dev: skb("dev")?,
        skb_iif: skb("skb_iif")?,
        skb_len: skb("len")?,
        skb_protocol: skb("protocol")?,
        skb_hash: skb("hash")?,
        skb_mark: skb("mark")?,
        netdev_ifindex: btf.member_offset("net_device", "ifindex")?,
        // possible_net_t's only member (with CONFIG_NET_NS) is `struct net *net`, at 0.
        netdev_nd_net: btf.member_offset("net_device", "nd_net")?,
        net_ns_inum,
        tp_skbaddr: field("skbaddr")?,
        tp_location: field("location")?,
        // Kernels before 5.17 have no reason: 0 tells the program so.
        tp_reason: tp.get("reason").copied().unwrap_or(0),
    };
    let reasons = drop_reason_names(&btf);
    Ok(DropSupport { offsets, reasons })
}

/// The names of this kernel's `enum skb_drop_reason` by value, as
/// `flowscope_proto::drop_reason::short_name` writes them; empty before Linux 5.17, which has
/// no such enum. `SKB_DROP_REASON_SUBSYS_MASK` (`0xffff0000`, a mask, not a reason) is left
/// out, and with it the reasons of subsystems (`mac80211`, `openvswitch`, …), whose values
/// carry the subsystem in their upper 16 bits: their drops are unnamed.
pub fn drop_reason_names(btf: &Btf) -> HashMap<u32, String> {
    btf.enum_values("skb_drop_reason")
        .map(|values| {
            values
                .into_iter()
                .filter(|(v, _)| (0..0x1_0000).contains(v))
                .map(|(v, name)| {
                    let short = flowscope_proto::drop_reason::short_name(&name);
                    (v as u32, short.to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Inode number of this process's network namespace.
pub fn netns_inode() -> std::io::Result<u32> {
    let meta = std::fs::metadata("/proc/self/ns/net")?;
    Ok(meta.ino() as u32)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; these clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Converts the kernel's CLOCK_MONOTONIC timestamps (`bpf_ktime_get_ns`) to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// realtime - monotonic, in ns.
    offset_ns: i128,
}

impl Clock {
    /// Samples both clocks now. Call again from time to time to follow NTP adjustments.
    pub fn now() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC) as i128;
        let real = clock_ns(libc::CLOCK_REALTIME) as i128;
        Clock {
            offset_ns: real - mono,
        }
    }

    /// CLOCK_MONOTONIC ns now (the kernel programs' clock).
    pub fn monotonic_ns() -> u64 {
        clock_ns(libc::CLOCK_MONOTONIC)
    }

    /// Wall-clock time of a kernel timestamp.
    pub fn to_system_time(&self, mono_ns: u64) -> SystemTime {
        let real = (mono_ns as i128 + self.offset_ns).max(0) as u128;
        SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(real as u64)
    }
}

/// Linux capabilities the agent needs, by number (`linux/capability.h`).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Names of the capabilities the agent is missing (empty when it has what it needs).
/// CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON, as on kernels before 5.8.
pub fn missing_capabilities() -> Vec<&'static str> {
    let eff = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0);
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    missing
}

/// Does the kernel have BTF at all?
pub fn has_btf() -> bool {
    Path::new("/sys/kernel/btf/vmlinux").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_tracepoint_format() {
        let text = "name: kfree_skb\nID: 2310\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:void * rx_sk;\toffset:24;\tsize:8;\tsigned:0;\n\tfield:unsigned short protocol;\toffset:32;\tsize:2;\tsigned:0;\n\tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;\n";
        let f = parse_format(text);
        assert_eq!(f["skbaddr"], 8);
        assert_eq!(f["location"], 16);
        assert_eq!(f["reason"], 36);
        assert_eq!(f["common_type"], 0);
    }

    /// Every drop reason of the running kernel has a row in the table that turns it into Hubble's
    /// words (`flowscope_proto::drop_reason`, `docs/drop-reasons.md`): a kernel that adds a reason
    /// fails here until someone decides what Hubble clients should be told about it.
    #[test]
    fn every_drop_reason_of_this_kernel_is_classified() {
        let btf = match Btf::from_sys_fs() {
            Ok(Ok(btf)) => btf,
            Ok(Err(e)) => panic!("/sys/kernel/btf/vmlinux: {e}"),
            Err(e) => {
                testbed::skip(
                    "kernel::tests::every_drop_reason_of_this_kernel_is_classified",
                    &format!("no readable /sys/kernel/btf/vmlinux ({e})"),
                );
                return;
            }
        };
        let names = drop_reason_names(&btf);
        assert!(
            names.values().any(|n| n == "NETFILTER_DROP"),
            "read the enum: {names:?}"
        );
        let mut missing: Vec<&str> = names
            .values()
            .map(String::as_str)
            .filter(|n| flowscope_proto::drop_reason::lookup(n).is_none())
            .collect();
        missing.sort_unstable();
        assert!(
            missing.is_empty(),
            "kernel drop reasons with no row in proto/src/drop_reason.rs and docs/drop-reasons.md \
             (until classified they are DROP_REASON_UNKNOWN): {missing:?}"
        );
        eprintln!("{} kernel drop reasons, each classified", names.len());
    }

    #[test]
    fn clock_converts_monotonic_to_now() {
        let c = Clock::now();
        let t = c.to_system_time(Clock::monotonic_ns());
        let delta = SystemTime::now().duration_since(t).unwrap_or_default();
        assert!(delta.as_secs() < 2, "{delta:?}");
    }
}
