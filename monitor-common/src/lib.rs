//! The kernel <-> user ABI of flowscope.
//!
//! This crate is the one place where `monitor-ebpf` (the kernel programs) and `monitor-agent`
//! (user space) agree on the layout of everything that crosses a BPF map or the ring buffer.
//! It must stay `no_std`, allocation-free and dependency-free (but for `aya` behind the `user`
//! feature, to mark the types as plain old data).
//!
//! Layout rules (checked by the tests at the bottom): every type is `#[repr(C)]` and `Copy`,
//! made only of fixed-width integers and byte arrays, with explicit padding so that the Rust
//! compiler for `bpfel` and for the host agree byte for byte and no tail padding is hidden.
#![no_std]

/// Name of the ring buffer map carrying [`FlowEvent`]s to user space.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the LRU hash map holding the conntrack table ([`CtKey`] -> [`CtEntry`]).
pub const CONNTRACK_MAP: &str = "CONNTRACK";
/// Name of the per-CPU array of counters (indices in [`counter`]).
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Name of the programs' read-only global holding the [`Config`], set by the agent at load.
pub const CONFIG_GLOBAL: &str = "CONFIG";
/// Name of the hash map of monitored interfaces (ifindex -> [`IfaceInfo`]).
pub const IFACES_MAP: &str = "IFACES";
/// Name of the programs' read-only global holding the [`L7Config`] (which ports get their
/// payload captured), set by the agent at load.
pub const L7_CONFIG_GLOBAL: &str = "L7_CONFIG";

/// Name of the programs' read-only global holding the [`KernelFilter`], set by the agent at
/// load (`--kernel-filter`).
pub const KERNEL_FILTER_GLOBAL: &str = "KERNEL_FILTER";

/// Default size of the ring buffer in bytes (a power of two, a multiple of the page size).
pub const DEFAULT_RING_BYTES: u32 = 4 << 20;
/// Default capacity of the conntrack LRU map.
pub const CONNTRACK_MAX_ENTRIES: u32 = 65_536;
/// Capacity of the interface map: more endpoints than a node ever hosts.
pub const IFACES_MAX_ENTRIES: u32 = 4_096;

/// Program names (the kernel keeps 15 characters of a program name: keep them short).
pub mod prog {
    /// Endpoint veth, host side, ingress: the pod sent the packet (FROM_ENDPOINT).
    pub const FROM_ENDPOINT: &str = "fs_from_ep";
    /// Endpoint veth, host side, egress: the packet is delivered to the pod (TO_ENDPOINT).
    pub const TO_ENDPOINT: &str = "fs_to_ep";
    /// Uplink ingress: the packet arrived from the network (FROM_NETWORK).
    pub const FROM_NETWORK: &str = "fs_from_net";
    /// Uplink egress: the packet leaves the node, after routing and NAT (TO_NETWORK).
    pub const TO_NETWORK: &str = "fs_to_net";
    /// Host gateway device egress: the host stack sent the packet (FROM_HOST).
    pub const FROM_HOST: &str = "fs_from_host";
    /// Host gateway device ingress: the packet goes to the host stack (TO_HOST).
    pub const TO_HOST: &str = "fs_to_host";
    /// `skb:kfree_skb` tracepoint: the kernel dropped a packet.
    pub const KFREE_SKB: &str = "fs_kfree_skb";
    /// Every TC program, for clean-up of attachments left by a crashed run.
    pub const ALL_TC: [&str; 6] = [
        FROM_ENDPOINT,
        TO_ENDPOINT,
        FROM_NETWORK,
        TO_NETWORK,
        FROM_HOST,
        TO_HOST,
    ];
}

/// Event types, numbered like Cilium's monitor message types so that `event_type.type` in
/// Hubble flows means the same thing (1 = drop, 4 = trace).
pub mod event_type {
    /// A packet the kernel dropped.
    pub const DROP: u8 = 1;
    /// A packet observed at an observation point.
    pub const TRACE: u8 = 4;
    /// The first bytes of a packet's payload on an L7 port: an [`L7Event`](super::L7Event), not
    /// a plain `FlowEvent`. Cilium's number for access-log (L7) records, which the agent's L7
    /// flows carry as their event type.
    pub const L7: u8 = 129;
}

/// Observation points, numbered like Cilium's datapath trace points (`TRACE_TO_LXC` = 0, …);
/// the agent maps them to Hubble's `TraceObservationPoint` (where TO_ENDPOINT becomes 101).
pub mod obs {
    /// Delivered to an endpoint (Cilium `TRACE_TO_LXC`).
    pub const TO_ENDPOINT: u8 = 0;
    /// To the host stack through the gateway device.
    pub const TO_HOST: u8 = 2;
    /// Handed by an endpoint to the node's stack (Cilium `TRACE_TO_STACK`): what the endpoint
    /// veth's ingress hook reports in the `cilium` observation-point mode (see [`obs_mode`]).
    pub const TO_STACK: u8 = 3;
    /// Sent by an endpoint.
    pub const FROM_ENDPOINT: u8 = 5;
    /// Sent by the host stack through the gateway device.
    pub const FROM_HOST: u8 = 7;
    /// Arrived from the network on the uplink.
    pub const FROM_NETWORK: u8 = 10;
    /// Leaves the node on the uplink.
    pub const TO_NETWORK: u8 = 11;
    /// Not an observation point: a drop seen by the tracepoint.
    pub const UNKNOWN: u8 = 255;

    /// Is this point on the arrival side of the node (the packet enters the node's stack)?
    /// The departure side sees packets a second time when they transit between two monitored
    /// interfaces; see `CtEntry::flags` `ARRIVAL_SEEN_*`.
    pub const fn is_arrival(point: u8) -> bool {
        matches!(point, FROM_ENDPOINT | FROM_NETWORK | FROM_HOST)
    }
}

/// Which observation points the hooks report, and under which name ([`Config::obs_mode`]).
pub mod obs_mode {
    /// flowscope's own: each hook reports its own point (FROM_ENDPOINT at the endpoint veth's
    /// ingress, FROM_NETWORK at the uplink's, …), arrival first: one trace per packet per node
    /// from `low` up, on the side where the packet entered.
    pub const PER_HOP: u8 = 0;
    /// Cilium's: from `low` up the FROM_* points are not reported (Cilium's
    /// `TRACE_AGGREGATE_RX`); the endpoint veth's ingress reports where the packet goes next,
    /// TO_STACK, or TO_ENDPOINT when the kernel's FIB routes it to another monitored endpoint
    /// (Cilium's local delivery); departure points report what arrival points no longer do.
    pub const CILIUM: u8 = 1;
}

/// Conntrack state of a packet, the datapath's numbering (Hubble's `TraceReason` is this plus
/// one: NEW = 1, ESTABLISHED = 2, REPLY = 3, RELATED = 4).
pub mod ct_state {
    /// The packet created the connection.
    pub const NEW: u8 = 0;
    /// A later packet in the original direction.
    pub const ESTABLISHED: u8 = 1;
    /// A packet in the reply direction.
    pub const REPLY: u8 = 2;
    /// An ICMP error about a tracked connection.
    pub const RELATED: u8 = 3;
    /// No conntrack state (drops, non-IP).
    pub const UNKNOWN: u8 = 255;
}

/// The hook's direction, as the TC attach point sees it.
pub mod direction {
    /// Unknown (tracepoint).
    pub const UNKNOWN: u8 = 0;
    /// TC ingress of the interface.
    pub const INGRESS: u8 = 1;
    /// TC egress of the interface.
    pub const EGRESS: u8 = 2;
}

/// Bits of [`FlowEvent::flags`].
pub mod event_flags {
    /// The packet's L4 header was parsed (ports / flags / ICMP type are meaningful).
    pub const HAS_L4: u8 = 1 << 0;
    /// The TCP NS flag (not in the flags byte).
    pub const TCP_NS: u8 = 1 << 1;
    /// The packet is an IP fragment other than the first: no L4 header.
    pub const FRAGMENT: u8 = 1 << 2;
    /// This trace is a departure-side duplicate of a packet already traced on arrival
    /// (only emitted at aggregation `none`).
    pub const TRANSIT_DUP: u8 = 1 << 3;
    /// The conntrack entry is closing (FIN or RST seen).
    pub const CT_CLOSING: u8 = 1 << 4;
    /// The conntrack entry could not be created (map full): state is a best guess.
    pub const CT_FAILED: u8 = 1 << 5;
}

/// TCP flag bits as they appear in byte 13 of the TCP header.
pub mod tcp {
    /// FIN
    pub const FIN: u8 = 0x01;
    /// SYN
    pub const SYN: u8 = 0x02;
    /// RST
    pub const RST: u8 = 0x04;
    /// PSH
    pub const PSH: u8 = 0x08;
    /// ACK
    pub const ACK: u8 = 0x10;
    /// URG
    pub const URG: u8 = 0x20;
    /// ECE
    pub const ECE: u8 = 0x40;
    /// CWR
    pub const CWR: u8 = 0x80;
}

/// IANA protocol numbers we parse.
pub mod proto {
    /// ICMP
    pub const ICMP: u8 = 1;
    /// TCP
    pub const TCP: u8 = 6;
    /// UDP
    pub const UDP: u8 = 17;
    /// ICMPv6
    pub const ICMPV6: u8 = 58;
    /// SCTP
    pub const SCTP: u8 = 132;
}

/// Address families in [`FlowEvent::family`] and [`CtKey::family`].
pub mod family {
    /// IPv4: the address occupies the first 4 bytes, the rest are zero.
    pub const V4: u8 = 4;
    /// IPv6
    pub const V6: u8 = 6;
}

/// An address as the kernel programs store it (in events and conntrack keys): IPv4 in the
/// first 4 bytes, IPv6 in all 16; `None` for an unknown family. The one decoder user space uses.
pub fn addr_from_raw(fam: u8, raw: &[u8; 16]) -> Option<core::net::IpAddr> {
    use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match fam {
        family::V4 => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
        family::V6 => Some(IpAddr::V6(Ipv6Addr::from(*raw))),
        _ => None,
    }
}

/// The kernel's form of an address: the bytes and the [`family`].
pub fn addr_to_raw(ip: core::net::IpAddr) -> ([u8; 16], u8) {
    let mut raw = [0u8; 16];
    match ip {
        core::net::IpAddr::V4(a) => {
            raw[..4].copy_from_slice(&a.octets());
            (raw, family::V4)
        }
        core::net::IpAddr::V6(a) => (a.octets(), family::V6),
    }
}

/// One observed (or dropped) packet, as the kernel reports it through the ring buffer.
///
/// The kernel parses the headers itself rather than shipping raw bytes: it must parse the
/// 5-tuple anyway for conntrack and aggregation, and a parsed event (96 bytes) is smaller than
/// the header bytes user space would need (Ethernet + IPv6 + TCP = 94 bytes before options).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the program ran.
    pub ts_ns: u64,
    /// For drops: the kernel address of the function that freed the packet.
    pub drop_location: u64,
    /// Source address (IPv4 in the first 4 bytes).
    pub src_addr: [u8; 16],
    /// Destination address (IPv4 in the first 4 bytes).
    pub dst_addr: [u8; 16],
    /// The skb flow hash (`bpf_get_hash_recalc`): the same for every hop of a packet, and for
    /// the packets of one connection while the tuple does not change.
    pub hash: u32,
    /// Interface the hook is attached to (for drops: the skb's device).
    pub ifindex: u32,
    /// The interface the packet entered the node on (`skb->skb_iif`), 0 if locally generated.
    pub ingress_ifindex: u32,
    /// Length of the packet on the wire (`skb->len`).
    pub orig_len: u32,
    /// For drops: the kernel's `enum skb_drop_reason` value (names come from BTF).
    pub drop_reason: u32,
    /// The skb mark.
    pub mark: u32,
    /// TCP/UDP/SCTP source port; for ICMP echo the identifier on requests.
    pub src_port: u16,
    /// TCP/UDP/SCTP destination port; for ICMP echo the identifier on replies.
    pub dst_port: u16,
    /// One of [`event_type`].
    pub event_type: u8,
    /// One of [`obs`].
    pub obs_point: u8,
    /// One of [`ct_state`].
    pub ct_state: u8,
    /// One of [`direction`].
    pub direction: u8,
    /// One of [`family`], 0 when not IP.
    pub family: u8,
    /// IANA L4 protocol number.
    pub l4_proto: u8,
    /// TCP flags byte (see [`tcp`]).
    pub tcp_flags: u8,
    /// ICMP / ICMPv6 type.
    pub icmp_type: u8,
    /// ICMP / ICMPv6 code.
    pub icmp_code: u8,
    /// Bits of [`event_flags`].
    pub flags: u8,
    /// Ethernet source address (zero when the device has no L2 header).
    pub src_mac: [u8; 6],
    /// Ethernet destination address.
    pub dst_mac: [u8; 6],
    /// Explicit padding to a multiple of 8 bytes.
    pub _pad: [u8; 6],
}

/// Size of [`FlowEvent`] in bytes; checked at compile time.
pub const FLOW_EVENT_SIZE: usize = 104;
const _: () = assert!(core::mem::size_of::<FlowEvent>() == FLOW_EVENT_SIZE);

/// The conntrack key: the tuple in the connection's original direction.
///
/// Aligned to 8 (the size stays 40, the offsets do not move): the kernel programs copy keys
/// and addresses on every packet (the parsed key, the reversed key, the event's addresses),
/// and the BPF target copies a value of alignment 2 two bytes at a time, where 8-byte
/// alignment gives five word moves per key.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    /// Source address (IPv4 in the first 4 bytes).
    pub src_addr: [u8; 16],
    /// Destination address.
    pub dst_addr: [u8; 16],
    /// Source port (ICMP echo: identifier).
    pub src_port: u16,
    /// Destination port (ICMP echo reply: identifier).
    pub dst_port: u16,
    /// IANA protocol.
    pub proto: u8,
    /// One of [`family`].
    pub family: u8,
    /// Explicit padding.
    pub _pad: [u8; 2],
}

/// Size of [`CtKey`]; checked at compile time.
pub const CT_KEY_SIZE: usize = 40;
const _: () = assert!(core::mem::size_of::<CtKey>() == CT_KEY_SIZE);

impl CtKey {
    /// The key of a connection's original tuple, as the kernel programs build it (for ICMP
    /// echo, `src_port` is the identifier and `dst_port` 0). Both addresses are of one family;
    /// the source's decides.
    pub fn new(
        proto: u8,
        src: core::net::IpAddr,
        src_port: u16,
        dst: core::net::IpAddr,
        dst_port: u16,
    ) -> CtKey {
        let (src_addr, family) = addr_to_raw(src);
        let (dst_addr, _) = addr_to_raw(dst);
        CtKey {
            src_addr,
            dst_addr,
            src_port,
            dst_port,
            proto,
            family,
            _pad: [0; 2],
        }
    }

    /// The source address (`None` for an unknown family).
    pub fn src(&self) -> Option<core::net::IpAddr> {
        addr_from_raw(self.family, &self.src_addr)
    }

    /// The destination address.
    pub fn dst(&self) -> Option<core::net::IpAddr> {
        addr_from_raw(self.family, &self.dst_addr)
    }

    /// The same connection seen from the other side.
    pub const fn reversed(&self) -> CtKey {
        CtKey {
            src_addr: self.dst_addr,
            dst_addr: self.src_addr,
            src_port: self.dst_port,
            dst_port: self.src_port,
            proto: self.proto,
            family: self.family,
            _pad: [0; 2],
        }
    }
}

/// Bits of [`CtEntry::flags`].
pub mod ct_flags {
    /// A packet was seen in the reply direction.
    pub const SEEN_REPLY: u8 = 1 << 0;
    /// FIN or RST seen: the connection is closing and gets the short lifetime.
    pub const CLOSING: u8 = 1 << 1;
    /// A packet in the original direction was traced on the arrival side of the node; departure
    /// hooks then know that an original-direction packet coming from a monitored interface was
    /// already counted (it is the same packet, transiting).
    pub const ARRIVAL_SEEN_ORIG: u8 = 1 << 2;
    /// Same for the reply direction.
    pub const ARRIVAL_SEEN_REPLY: u8 = 1 << 3;
    /// A packet in the original direction was seen on the arrival side by a hook whose traces
    /// are reported in the current observation-point mode: a departure hook then leaves the
    /// same packet to it (in the `cilium` mode the uplink's and gateway's ingress hooks are
    /// silent from `low` up, and the departure hook reports in their place).
    pub const ARRIVAL_REPORTED_ORIG: u8 = 1 << 4;
    /// Same for the reply direction.
    pub const ARRIVAL_REPORTED_REPLY: u8 = 1 << 5;
    /// The entry was created by a packet that no trace reported (a silent arrival hook): the
    /// first trace reported in the original direction says "new".
    pub const NEW_UNREPORTED: u8 = 1 << 6;
}

/// Index of the original direction in [`CtEntry`]'s per-direction arrays.
pub const DIR_ORIG: usize = 0;
/// Index of the reply direction in [`CtEntry`]'s per-direction arrays.
pub const DIR_REPLY: usize = 1;

/// One conntrack entry. Counters are updated with atomic adds (several CPUs may see packets of
/// one connection at once); the rest is last-writer-wins, which is good enough for reporting.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    /// When the entry was created (CLOCK_MONOTONIC ns).
    pub created_ns: u64,
    /// When a packet last matched it.
    pub last_seen_ns: u64,
    /// Packets per direction ([`DIR_ORIG`] = tx from the originator, [`DIR_REPLY`] = rx).
    pub packets: [u64; 2],
    /// Bytes per direction.
    pub bytes: [u64; 2],
    /// When a trace was last reported per direction (aggregation).
    pub last_report_ns: [u64; 2],
    /// Interface where the connection was first seen.
    pub ifindex: u32,
    /// TCP flags seen per direction.
    pub flags_seen: [u8; 2],
    /// TCP flags already reported per direction (aggregation: first sighting of each flag).
    pub flags_reported: [u8; 2],
    /// Bits of [`ct_flags`].
    pub flags: u8,
    /// Observation point where the connection was first seen.
    pub obs_point: u8,
    /// Explicit padding.
    pub _pad: [u8; 6],
}

/// Size of [`CtEntry`]; checked at compile time.
pub const CT_ENTRY_SIZE: usize = 80;
const _: () = assert!(core::mem::size_of::<CtEntry>() == CT_ENTRY_SIZE);

/// Monitor aggregation levels (see `docs/architecture.md`).
pub mod aggregation {
    /// Every packet at every observation point.
    pub const NONE: u8 = 0;
    /// One trace per packet per conntrack tuple: departure-side duplicates (a packet seen again
    /// untranslated, pod to pod) are skipped; a masqueraded packet is traced under both tuples.
    pub const LOW: u8 = 1;
    /// Per connection: new connections, first sighting of each TCP flag per direction, and at
    /// most one trace per interval otherwise.
    pub const MEDIUM: u8 = 2;
    /// Like medium with a longer interval (30 s).
    pub const MAX: u8 = 3;
}

/// Offsets inside kernel structures that the drop tracepoint needs. The agent reads them from
/// the running kernel's BTF (`/sys/kernel/btf/vmlinux`) and from the tracepoint's format file,
/// because they change between kernel builds: this is the "CO-RE" of this project, done in user
/// space since Rust's BPF target does not emit BTF relocations.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `sk_buff.head`
    pub skb_head: u32,
    /// `sk_buff.network_header` (u16)
    pub skb_network_header: u32,
    /// `sk_buff.transport_header` (u16)
    pub skb_transport_header: u32,
    /// `sk_buff.mac_header` (u16)
    pub skb_mac_header: u32,
    /// `sk_buff.dev`
    pub skb_dev: u32,
    /// `sk_buff.skb_iif` (int)
    pub skb_iif: u32,
    /// `sk_buff.len` (u32)
    pub skb_len: u32,
    /// `sk_buff.protocol` (__be16)
    pub skb_protocol: u32,
    /// `sk_buff.hash` (u32)
    pub skb_hash: u32,
    /// `sk_buff.mark` (u32)
    pub skb_mark: u32,
    /// `net_device.ifindex` (int)
    pub netdev_ifindex: u32,
    /// `net_device.nd_net` (a `possible_net_t` whose first member is `struct net *`)
    pub netdev_nd_net: u32,
    /// `net.ns.inum`: the network namespace's inode number
    pub net_ns_inum: u32,
    /// Offset of `skbaddr` in the `skb:kfree_skb` tracepoint record.
    pub tp_skbaddr: u32,
    /// Offset of `location` in the tracepoint record.
    pub tp_location: u32,
    /// Offset of `reason` in the tracepoint record (0 when the kernel has none).
    pub tp_reason: u32,
}

/// Runtime configuration, set by the agent at load as the programs' read-only global
/// [`CONFIG_GLOBAL`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// At aggregation medium/max: at most one trace per connection and direction per interval.
    pub report_interval_ns: u64,
    /// Lifetime of an established TCP entry without packets.
    pub tcp_lifetime_ns: u64,
    /// Lifetime of a closing TCP entry (FIN/RST seen).
    pub closing_lifetime_ns: u64,
    /// Lifetime of UDP, ICMP and other entries.
    pub other_lifetime_ns: u64,
    /// Wake the reader only once this many bytes wait in the ring (0: never force a wake-up;
    /// the reader polls on its own timer).
    pub wakeup_bytes: u64,
    /// Kernel structure offsets for the drop tracepoint.
    pub offsets: KernelOffsets,
    /// Inode of the agent's network namespace: the drop tracepoint fires for every namespace
    /// of the machine, and interface indexes are only unique inside one.
    pub netns_ino: u32,
    /// One of [`aggregation`].
    pub aggregation: u8,
    /// Non-zero once the agent has filled `offsets`; the drop program does nothing before.
    pub drops_enabled: u8,
    /// One of [`obs_mode`].
    pub obs_mode: u8,
    /// Explicit padding.
    pub _pad: [u8; 1],
}

/// Size of [`Config`]; checked at compile time.
pub const CONFIG_SIZE: usize = 112;
const _: () = assert!(core::mem::size_of::<Config>() == CONFIG_SIZE);

/// Most CIDRs in one list of a [`KernelFilter`].
pub const FILTER_MAX_CIDRS: usize = 8;
/// Most ports in one list of a [`KernelFilter`].
pub const FILTER_MAX_PORTS: usize = 8;

/// One CIDR of a [`KernelFilter`]: the address and the mask as two words each, in memory order
/// (the 16-byte form of keys and events read as two native-endian `u64`: IPv4 in the first
/// four bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterCidr {
    /// The network address, host bits zero.
    pub addr: [u64; 2],
    /// The mask.
    pub mask: [u64; 2],
    /// One of [`family`].
    pub family: u8,
    /// Explicit padding.
    pub _pad: [u8; 7],
}

/// CIDRs of which an address must be in one (none: any address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CidrList {
    /// How many of `cidrs` are used.
    pub len: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// The CIDRs.
    pub cidrs: [FilterCidr; FILTER_MAX_CIDRS],
}

/// Ports of which a port must be one (none: any port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortList {
    /// How many of `ports` are used.
    pub len: u32,
    /// The ports.
    pub ports: [u16; FILTER_MAX_PORTS],
    /// Explicit padding.
    pub _pad: u32,
}

/// Bits of [`KernelFilter::protocols`].
pub mod filter_proto {
    /// TCP
    pub const TCP: u8 = 1 << 0;
    /// UDP
    pub const UDP: u8 = 1 << 1;
    /// SCTP
    pub const SCTP: u8 = 1 << 2;
    /// ICMP (IPv4)
    pub const ICMP: u8 = 1 << 3;
    /// ICMPv6
    pub const ICMPV6: u8 = 1 << 4;
}

/// Which packets the TC programs report (`--kernel-filter`), the agent's compilation of a
/// subset of flowctl's filter flags: every non-empty list must match (AND), one entry of a
/// list is enough (OR). Evaluated on the tuple as it is on the wire at each hook, after
/// conntrack (which still counts every packet), before anything is emitted.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelFilter {
    /// Non-zero when the filter is set; zero: every packet is reported.
    pub enabled: u8,
    /// Bits of [`filter_proto`]; zero: any protocol.
    pub protocols: u8,
    /// Explicit padding.
    pub _pad: [u8; 6],
    /// `--ip`: the source or the destination is in one of these.
    pub ip: CidrList,
    /// `--from-ip`: the source is in one of these.
    pub from_ip: CidrList,
    /// `--to-ip`: the destination is in one of these.
    pub to_ip: CidrList,
    /// `--port`: the source or the destination port (TCP, UDP, SCTP) is one of these.
    pub port: PortList,
    /// `--from-port`: the source port is one of these.
    pub from_port: PortList,
    /// `--to-port`: the destination port is one of these.
    pub to_port: PortList,
}

/// Size of [`KernelFilter`]; checked at compile time.
pub const KERNEL_FILTER_SIZE: usize = 8 + 3 * 328 + 3 * 24;
const _: () = assert!(core::mem::size_of::<KernelFilter>() == KERNEL_FILTER_SIZE);

impl KernelFilter {
    /// Does a packet with this tuple pass? `has_ports`: the key's ports are TCP, UDP or SCTP
    /// ports (for ICMP they hold the echo identifier, which port filters do not match, as in
    /// Hubble).
    ///
    /// Written for the BPF verifier (inlined, loops with constant bounds, stopping at the
    /// lists' lengths, which the verifier knows: the filter is a read-only global).
    #[inline(always)]
    pub fn matches(&self, key: &CtKey, has_ports: bool) -> bool {
        if self.enabled == 0 {
            return true;
        }
        if self.protocols != 0 {
            let bit = match key.proto {
                proto::TCP => filter_proto::TCP,
                proto::UDP => filter_proto::UDP,
                proto::SCTP => filter_proto::SCTP,
                proto::ICMP => filter_proto::ICMP,
                proto::ICMPV6 => filter_proto::ICMPV6,
                _ => 0,
            };
            if self.protocols & bit == 0 {
                return false;
            }
        }
        let src = words(&key.src_addr);
        let dst = words(&key.dst_addr);
        let fam = key.family;
        if self.ip.len != 0 && !self.ip.contains(fam, src) && !self.ip.contains(fam, dst) {
            return false;
        }
        if self.from_ip.len != 0 && !self.from_ip.contains(fam, src) {
            return false;
        }
        if self.to_ip.len != 0 && !self.to_ip.contains(fam, dst) {
            return false;
        }
        let any_port = self.port.len != 0 || self.from_port.len != 0 || self.to_port.len != 0;
        if any_port && !has_ports {
            return false;
        }
        if self.port.len != 0
            && !self.port.contains(key.src_port)
            && !self.port.contains(key.dst_port)
        {
            return false;
        }
        if self.from_port.len != 0 && !self.from_port.contains(key.src_port) {
            return false;
        }
        if self.to_port.len != 0 && !self.to_port.contains(key.dst_port) {
            return false;
        }
        true
    }
}

/// A 16-byte address as two words in memory order.
#[inline(always)]
fn words(a: &[u8; 16]) -> [u64; 2] {
    [
        u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
        u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
    ]
}

impl FilterCidr {
    /// The CIDR `addr/prefix` (host bits are cleared; `prefix` is capped at the family's).
    pub fn new(addr: core::net::IpAddr, prefix: u8) -> FilterCidr {
        let (raw, family) = addr_to_raw(addr);
        let bits = match addr {
            core::net::IpAddr::V4(_) => prefix.min(32),
            core::net::IpAddr::V6(_) => prefix.min(128),
        } as u32;
        // The mask in the address's byte order: `bits` leading one bits.
        let mut m = [0u8; 16];
        for (i, b) in m.iter_mut().enumerate() {
            let left = bits.saturating_sub(8 * i as u32).min(8);
            *b = if left == 0 { 0 } else { 0xffu8 << (8 - left) };
        }
        let mask = words(&m);
        let a = words(&raw);
        FilterCidr {
            addr: [a[0] & mask[0], a[1] & mask[1]],
            mask,
            family,
            _pad: [0; 7],
        }
    }

    #[inline(always)]
    fn contains(&self, family: u8, a: [u64; 2]) -> bool {
        self.family == family
            && a[0] & self.mask[0] == self.addr[0]
            && a[1] & self.mask[1] == self.addr[1]
    }
}

impl CidrList {
    #[inline(always)]
    fn contains(&self, family: u8, a: [u64; 2]) -> bool {
        let mut i = 0;
        while i < FILTER_MAX_CIDRS {
            if i as u32 >= self.len {
                return false;
            }
            if self.cidrs[i].contains(family, a) {
                return true;
            }
            i += 1;
        }
        false
    }
}

impl PortList {
    #[inline(always)]
    fn contains(&self, port: u16) -> bool {
        let mut i = 0;
        while i < FILTER_MAX_PORTS {
            if i as u32 >= self.len {
                return false;
            }
            if self.ports[i] == port {
                return true;
            }
            i += 1;
        }
        false
    }
}

/// Roles of monitored interfaces in [`IFACES_MAP`].
pub mod role {
    /// A pod's veth, host side.
    pub const ENDPOINT: u8 = 1;
    /// The node's uplink.
    pub const UPLINK: u8 = 2;
    /// The host gateway device.
    pub const HOST: u8 = 3;
}

/// Value of [`IFACES_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceInfo {
    /// One of [`role`].
    pub role: u8,
    /// Explicit padding.
    pub _pad: [u8; 3],
}

/// Indices of the per-CPU counters in [`COUNTERS_MAP`].
pub mod counter {
    /// Packets the TC programs looked at.
    pub const PACKETS_SEEN: u32 = 0;
    /// Events written to the ring buffer.
    pub const EVENTS_EMITTED: u32 = 1;
    /// Events lost because the ring buffer was full (reservation failed).
    pub const RING_LOST: u32 = 2;
    /// Packets whose headers could not be parsed (truncated).
    pub const PARSE_ERRORS: u32 = 3;
    /// Traces suppressed by monitor aggregation (still counted in conntrack).
    pub const AGGREGATED: u32 = 4;
    /// Conntrack entries that could not be inserted.
    pub const CT_INSERT_FAILED: u32 = 5;
    /// Packets that were not IPv4/IPv6 (ARP, …): counted, not traced.
    pub const NON_IP: u32 = 6;
    /// Drops seen by the tracepoint on monitored interfaces.
    pub const DROPS_SEEN: u32 = 7;
    /// Tracepoint reads of kernel memory that failed.
    pub const DROP_READ_ERRORS: u32 = 8;
    /// Payloads on an L7 port copied to the ring ([`L7Event`](super::L7Event)s emitted).
    pub const L7_CAPTURED: u32 = 9;
    /// Number of counters.
    pub const COUNT: u32 = 10;
    /// Human names, indexed like the constants above (used by the agent's metrics and logs).
    pub const NAMES: [&str; COUNT as usize] = [
        "packets_seen",
        "events_emitted",
        "ring_lost",
        "parse_errors",
        "aggregated",
        "ct_insert_failed",
        "non_ip",
        "drops_seen",
        "drop_read_errors",
        "l7_captured",
    ];
}

/// Capacity of [`L7Event::payload`]: the most payload bytes one packet ships to user space.
pub const L7_PAYLOAD_MAX: usize = 512;

/// Bits of [`L7Event::l7_flags`].
pub mod l7_flags {
    /// The packet carried more payload than was copied (`payload_len > captured_len`).
    pub const TRUNCATED: u8 = 1 << 0;
}

/// The first bytes of the payload of one TCP or UDP packet whose port is in the L7 port set
/// (see [`L7Config`]), for the agent's DNS and HTTP parsers.
///
/// `ev` is the packet's trace header (addresses, ports, conntrack state, observation point)
/// with `event_type` [`event_type::L7`]: the reader tells the two record kinds apart by it.
/// A fixed size, because a ring buffer reservation must have one; only packets on L7 ports
/// pay for it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L7Event {
    /// The packet, as a trace would report it (`event_type` = [`event_type::L7`]).
    pub ev: FlowEvent,
    /// Bytes of L4 payload the packet carried (from the IP header's length).
    pub payload_len: u32,
    /// Bytes copied into `payload` (at most the configured snap length).
    pub captured_len: u16,
    /// Bits of [`l7_flags`].
    pub l7_flags: u8,
    /// Explicit padding.
    pub _pad: [u8; 1],
    /// The payload's first `captured_len` bytes; the rest is zero.
    pub payload: [u8; L7_PAYLOAD_MAX],
}

/// Size of [`L7Event`]; checked at compile time.
pub const L7_EVENT_SIZE: usize = FLOW_EVENT_SIZE + 8 + L7_PAYLOAD_MAX;
const _: () = assert!(core::mem::size_of::<L7Event>() == L7_EVENT_SIZE);

/// Bytes of a port bitmap: one bit per port.
pub const PORT_BITMAP_BYTES: usize = 65_536 / 8;

/// Which packets get their payload captured, set by the agent at load as the programs'
/// read-only global [`L7_CONFIG_GLOBAL`].
///
/// A bitmap per protocol rather than a map: the test for a port is a load and a mask on a value
/// the verifier knows is in bounds (a port is 16 bits), no helper call, so that packets on
/// other ports pay next to nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L7Config {
    /// Payload bytes copied per packet, 1 to [`L7_PAYLOAD_MAX`]; 0 disables capture.
    pub snap_len: u32,
    /// Explicit padding.
    pub _pad: [u8; 4],
    /// TCP ports: bit `port % 8` of byte `port / 8`, for the source or the destination port.
    pub tcp_ports: [u8; PORT_BITMAP_BYTES],
    /// UDP ports, likewise.
    pub udp_ports: [u8; PORT_BITMAP_BYTES],
}

/// Size of [`L7Config`]; checked at compile time.
pub const L7_CONFIG_SIZE: usize = 8 + 2 * PORT_BITMAP_BYTES;
const _: () = assert!(core::mem::size_of::<L7Config>() == L7_CONFIG_SIZE);

impl L7Config {
    /// Nothing captured.
    pub const DISABLED: L7Config = L7Config {
        snap_len: 0,
        _pad: [0; 4],
        tcp_ports: [0; PORT_BITMAP_BYTES],
        udp_ports: [0; PORT_BITMAP_BYTES],
    };

    /// Adds `port` for `proto` ([`proto::TCP`] or [`proto::UDP`]; others are ignored).
    pub fn add_port(&mut self, proto: u8, port: u16) {
        let map = match proto {
            proto::TCP => &mut self.tcp_ports,
            proto::UDP => &mut self.udp_ports,
            _ => return,
        };
        map[usize::from(port / 8)] |= 1 << (port % 8);
    }

    /// Is `port` in the set of `proto`? The kernel's test, on the host.
    pub fn has_port(&self, proto: u8, port: u16) -> bool {
        let map = match proto {
            proto::TCP => &self.tcp_ports,
            proto::UDP => &self.udp_ports,
            _ => return false,
        };
        map[usize::from(port / 8)] & (1 << (port % 8)) != 0
    }
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: every type below is #[repr(C)], Copy, made of integers and byte arrays only, with
    // explicit padding (the tests prove there is no implicit padding), so any bit pattern is a
    // valid value and the bytes can be copied to and from the kernel.
    unsafe impl aya::Pod for FlowEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for CtKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for CtEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for IfaceInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for L7Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for L7Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for KernelFilter {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    /// Sum of the field sizes must equal the struct size: no hidden padding anywhere.
    macro_rules! assert_no_padding {
        ($t:ty { $($f:ident : $ft:ty),* $(,)? }) => {{
            let fields = 0 $(+ size_of::<$ft>())*;
            assert_eq!(fields, size_of::<$t>(), concat!(stringify!($t), " has hidden padding"));
            $( let _ = offset_of!($t, $f); )*
        }};
    }

    #[test]
    fn flow_event_layout() {
        assert_no_padding!(FlowEvent {
            ts_ns: u64,
            drop_location: u64,
            src_addr: [u8; 16],
            dst_addr: [u8; 16],
            hash: u32,
            ifindex: u32,
            ingress_ifindex: u32,
            orig_len: u32,
            drop_reason: u32,
            mark: u32,
            src_port: u16,
            dst_port: u16,
            event_type: u8,
            obs_point: u8,
            ct_state: u8,
            direction: u8,
            family: u8,
            l4_proto: u8,
            tcp_flags: u8,
            icmp_type: u8,
            icmp_code: u8,
            flags: u8,
            src_mac: [u8; 6],
            dst_mac: [u8; 6],
            _pad: [u8; 6],
        });
        assert_eq!(offset_of!(FlowEvent, ts_ns), 0);
        assert_eq!(offset_of!(FlowEvent, src_addr), 16);
        assert_eq!(offset_of!(FlowEvent, hash), 48);
        assert_eq!(offset_of!(FlowEvent, src_port), 72);
        assert_eq!(offset_of!(FlowEvent, event_type), 76);
        assert_eq!(offset_of!(FlowEvent, src_mac), 86);
        assert_eq!(offset_of!(FlowEvent, _pad), 98);
        assert_eq!(size_of::<FlowEvent>() % 8, 0);
    }

    #[test]
    fn ct_layouts() {
        assert_no_padding!(CtKey {
            src_addr: [u8; 16],
            dst_addr: [u8; 16],
            src_port: u16,
            dst_port: u16,
            proto: u8,
            family: u8,
            _pad: [u8; 2],
        });
        assert_eq!(offset_of!(CtKey, src_port), 32);
        assert_no_padding!(CtEntry {
            created_ns: u64,
            last_seen_ns: u64,
            packets: [u64; 2],
            bytes: [u64; 2],
            last_report_ns: [u64; 2],
            ifindex: u32,
            flags_seen: [u8; 2],
            flags_reported: [u8; 2],
            flags: u8,
            obs_point: u8,
            _pad: [u8; 6],
        });
        assert_eq!(offset_of!(CtEntry, ifindex), 64);
    }

    #[test]
    fn config_layouts() {
        assert_no_padding!(KernelOffsets {
            skb_head: u32,
            skb_network_header: u32,
            skb_transport_header: u32,
            skb_mac_header: u32,
            skb_dev: u32,
            skb_iif: u32,
            skb_len: u32,
            skb_protocol: u32,
            skb_hash: u32,
            skb_mark: u32,
            netdev_ifindex: u32,
            netdev_nd_net: u32,
            net_ns_inum: u32,
            tp_skbaddr: u32,
            tp_location: u32,
            tp_reason: u32,
        });
        assert_no_padding!(Config {
            report_interval_ns: u64,
            tcp_lifetime_ns: u64,
            closing_lifetime_ns: u64,
            other_lifetime_ns: u64,
            wakeup_bytes: u64,
            offsets: KernelOffsets,
            netns_ino: u32,
            aggregation: u8,
            drops_enabled: u8,
            obs_mode: u8,
            _pad: [u8; 1],
        });
        assert_no_padding!(IfaceInfo {
            role: u8,
            _pad: [u8; 3]
        });
    }

    #[test]
    fn l7_layouts() {
        assert_no_padding!(L7Event {
            ev: FlowEvent,
            payload_len: u32,
            captured_len: u16,
            l7_flags: u8,
            _pad: [u8; 1],
            payload: [u8; L7_PAYLOAD_MAX],
        });
        assert_eq!(offset_of!(L7Event, payload), FLOW_EVENT_SIZE + 8);
        assert_eq!(size_of::<L7Event>() % 8, 0);
        assert_no_padding!(L7Config {
            snap_len: u32,
            _pad: [u8; 4],
            tcp_ports: [u8; PORT_BITMAP_BYTES],
            udp_ports: [u8; PORT_BITMAP_BYTES],
        });
    }

    #[test]
    fn l7_port_bitmap() {
        let mut c = L7Config::DISABLED;
        c.add_port(proto::UDP, 53);
        c.add_port(proto::TCP, 8080);
        c.add_port(proto::TCP, 65_535);
        assert!(c.has_port(proto::UDP, 53));
        assert!(!c.has_port(proto::TCP, 53));
        assert!(c.has_port(proto::TCP, 8080));
        assert!(!c.has_port(proto::TCP, 8081));
        assert!(c.has_port(proto::TCP, 65_535));
        assert!(!c.has_port(proto::ICMP, 53));
    }

    #[test]
    fn kernel_filter_layout() {
        assert_no_padding!(FilterCidr {
            addr: [u64; 2],
            mask: [u64; 2],
            family: u8,
            _pad: [u8; 7],
        });
        assert_no_padding!(CidrList {
            len: u32,
            _pad: u32,
            cidrs: [FilterCidr; FILTER_MAX_CIDRS],
        });
        assert_no_padding!(PortList {
            len: u32,
            ports: [u16; FILTER_MAX_PORTS],
            _pad: u32,
        });
        assert_no_padding!(KernelFilter {
            enabled: u8,
            protocols: u8,
            _pad: [u8; 6],
            ip: CidrList,
            from_ip: CidrList,
            to_ip: CidrList,
            port: PortList,
            from_port: PortList,
            to_port: PortList,
        });
    }

    fn key(proto: u8, src: &str, sport: u16, dst: &str, dport: u16) -> CtKey {
        CtKey::new(
            proto,
            src.parse().unwrap(),
            sport,
            dst.parse().unwrap(),
            dport,
        )
    }

    fn cidrs(list: &[(&str, u8)]) -> CidrList {
        let mut l = CidrList::default();
        for (i, (a, p)) in list.iter().enumerate() {
            l.cidrs[i] = FilterCidr::new(a.parse().unwrap(), *p);
        }
        l.len = list.len() as u32;
        l
    }

    fn ports(list: &[u16]) -> PortList {
        let mut l = PortList::default();
        l.ports[..list.len()].copy_from_slice(list);
        l.len = list.len() as u32;
        l
    }

    #[test]
    fn kernel_filter_matches() {
        let udp = key(proto::UDP, "10.244.0.213", 41000, "1.0.0.1", 53);
        let tcp6 = key(
            proto::TCP,
            "fd00:10:244::213",
            40000,
            "2606:4700::1001",
            443,
        );
        let ping = key(proto::ICMP, "10.244.0.213", 42, "1.0.0.1", 0);
        // Disabled: everything passes, whatever the lists say.
        let mut f = KernelFilter {
            ip: cidrs(&[("192.0.2.0", 24)]),
            ..KernelFilter::default()
        };
        assert!(f.matches(&udp, true));
        f.enabled = 1;
        assert!(!f.matches(&udp, true), "no address in 192.0.2.0/24");
        // --ip: either end; a CIDR; one of the list is enough; families do not mix.
        f.ip = cidrs(&[("192.0.2.0", 24), ("1.0.0.0", 8)]);
        assert!(f.matches(&udp, true));
        assert!(f.matches(&udp.reversed(), true));
        f.ip = cidrs(&[("10.244.0.0", 16)]);
        assert!(f.matches(&udp, true));
        assert!(!f.matches(&tcp6, true));
        f.ip = cidrs(&[("fd00:10:244::", 48)]);
        assert!(f.matches(&tcp6, true) && !f.matches(&udp, true));
        // A bare address is a /32 (/128), host bits of a CIDR are ignored.
        f.ip = cidrs(&[("1.0.0.1", 32)]);
        assert!(f.matches(&udp, true));
        f.ip = cidrs(&[("1.0.0.2", 32)]);
        assert!(!f.matches(&udp, true));
        f.ip = cidrs(&[("1.0.0.77", 24)]);
        assert!(f.matches(&udp, true));
        // --from-ip / --to-ip: one end only; AND with each other.
        f.ip = CidrList::default();
        f.from_ip = cidrs(&[("1.0.0.1", 32)]);
        assert!(!f.matches(&udp, true) && f.matches(&udp.reversed(), true));
        f.from_ip = cidrs(&[("10.244.0.213", 32)]);
        f.to_ip = cidrs(&[("1.0.0.1", 32)]);
        assert!(f.matches(&udp, true) && !f.matches(&udp.reversed(), true));
        // Ports: TCP/UDP/SCTP only (the ICMP echo identifier is not a port).
        let mut f = KernelFilter {
            enabled: 1,
            port: ports(&[80, 53]),
            ..KernelFilter::default()
        };
        assert!(f.matches(&udp, true) && f.matches(&udp.reversed(), true));
        assert!(!f.matches(&tcp6, true));
        f.port = ports(&[42]);
        assert!(!f.matches(&ping, false));
        f.port = PortList::default();
        f.to_port = ports(&[53]);
        assert!(f.matches(&udp, true) && !f.matches(&udp.reversed(), true));
        f.from_port = ports(&[41000]);
        assert!(f.matches(&udp, true));
        f.from_port = ports(&[41001]);
        assert!(!f.matches(&udp, true));
        // Protocols.
        let f = KernelFilter {
            enabled: 1,
            protocols: filter_proto::TCP | filter_proto::ICMP,
            ..KernelFilter::default()
        };
        assert!(!f.matches(&udp, true) && f.matches(&tcp6, true) && f.matches(&ping, false));
    }

    #[test]
    fn reversed_key_round_trips() {
        let k = CtKey {
            src_addr: [10, 244, 0, 213, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst_addr: [1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            src_port: 59242,
            dst_port: 80,
            proto: proto::TCP,
            family: family::V4,
            _pad: [0; 2],
        };
        assert_eq!(k.reversed().reversed(), k);
        assert_eq!(k.reversed().src_port, 80);
    }

    #[test]
    fn counter_names_cover_every_counter() {
        assert_eq!(counter::NAMES.len(), counter::COUNT as usize);
        assert_eq!(counter::NAMES[counter::RING_LOST as usize], "ring_lost");
    }
}
