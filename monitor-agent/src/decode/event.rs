//! A kernel event, decoded: the user-space view of [`monitor_common::FlowEvent`].
//!
//! This is the agent's internal currency between the ring-buffer reader and everything that
//! consumes events (the flow builder, the event dump). It carries facts, not presentation.

use std::{fmt::Write as _, net::IpAddr, time::SystemTime};

use monitor_common::{FlowEvent, ct_state, direction, event_flags, event_type, obs, proto, tcp};
use serde::Serialize;

use crate::kernel::facts::Clock;

/// Where a packet was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObsPoint {
    /// The pod sent it (endpoint veth ingress).
    FromEndpoint,
    /// Delivered to the pod (endpoint veth egress).
    ToEndpoint,
    /// Arrived from the network (uplink ingress).
    FromNetwork,
    /// Leaves the node (uplink egress).
    ToNetwork,
    /// Sent by the host stack (gateway device egress).
    FromHost,
    /// To the host stack (gateway device ingress).
    ToHost,
    /// Handed by a pod to the node's stack (its veth's ingress, `cilium` observation points).
    ToStack,
    /// Not observed at a hook (drops).
    Unknown,
}

impl ObsPoint {
    /// From the datapath's number.
    pub fn from_raw(v: u8) -> Self {
        match v {
            obs::FROM_ENDPOINT => Self::FromEndpoint,
            obs::TO_ENDPOINT => Self::ToEndpoint,
            obs::FROM_NETWORK => Self::FromNetwork,
            obs::TO_NETWORK => Self::ToNetwork,
            obs::FROM_HOST => Self::FromHost,
            obs::TO_HOST => Self::ToHost,
            obs::TO_STACK => Self::ToStack,
            _ => Self::Unknown,
        }
    }

    /// The datapath's number (Cilium's trace point numbering).
    pub fn raw(self) -> u8 {
        match self {
            Self::FromEndpoint => obs::FROM_ENDPOINT,
            Self::ToEndpoint => obs::TO_ENDPOINT,
            Self::FromNetwork => obs::FROM_NETWORK,
            Self::ToNetwork => obs::TO_NETWORK,
            Self::FromHost => obs::FROM_HOST,
            Self::ToHost => obs::TO_HOST,
            Self::ToStack => obs::TO_STACK,
            Self::Unknown => obs::UNKNOWN,
        }
    }

    /// Hubble's name, as `hubble observe` prints it (`to-network`, …).
    pub fn as_str(self) -> &'static str {
        flowscope_proto::names::trace_point_name(i32::from(self.raw())).unwrap_or("unknown")
    }
}

/// Conntrack state of a traced packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CtState {
    /// First packet of a connection.
    New,
    /// Later packet, original direction.
    Established,
    /// Reply direction.
    Reply,
    /// ICMP error about a tracked connection.
    Related,
}

impl CtState {
    fn from_raw(v: u8) -> Option<Self> {
        match v {
            ct_state::NEW => Some(Self::New),
            ct_state::ESTABLISHED => Some(Self::Established),
            ct_state::REPLY => Some(Self::Reply),
            ct_state::RELATED => Some(Self::Related),
            _ => None,
        }
    }

    /// Lower-case name as `cilium monitor` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Established => "established",
            Self::Reply => "reply",
            Self::Related => "related",
        }
    }
}

/// Trace or drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Seen at an observation point.
    Trace,
    /// Dropped by the kernel.
    Drop,
}

/// One decoded event.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Wall-clock time.
    #[serde(serialize_with = "ser_time")]
    pub time: SystemTime,
    /// Trace or drop.
    pub kind: Kind,
    /// Observation point (Unknown for drops).
    pub point: ObsPoint,
    /// Interface index of the hook (drops: the skb's device).
    pub ifindex: u32,
    /// Interface the packet entered the node on (0: locally generated).
    pub ingress_ifindex: u32,
    /// The hook sits on its interface's ingress (a to-endpoint trace at an ingress hook was
    /// reported by the sending pod's veth: `cilium` observation points).
    pub ingress_hook: bool,
    /// skb hash: joins the hops of one packet.
    pub hash: u32,
    /// Packet length.
    pub len: u32,
    /// Conntrack state (traces only).
    pub ct_state: Option<CtState>,
    /// Source address (None when not IP).
    pub src: Option<IpAddr>,
    /// Destination address.
    pub dst: Option<IpAddr>,
    /// IANA L4 protocol.
    pub proto: u8,
    /// Source port (ICMP echo requests: the identifier).
    pub src_port: u16,
    /// Destination port (ICMP echo replies: the identifier).
    pub dst_port: u16,
    /// TCP flags byte.
    pub tcp_flags: u8,
    /// TCP NS flag.
    pub tcp_ns: bool,
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub icmp_code: u8,
    /// The L4 header was parsed.
    pub has_l4: bool,
    /// Departure-side duplicate of a packet already traced on arrival.
    pub transit_dup: bool,
    /// Kernel drop reason (drops only).
    pub drop_reason: Option<u32>,
    /// The kernel's name for it (from BTF), without the `SKB_DROP_REASON_` prefix.
    pub drop_reason_name: Option<String>,
    /// Kernel address of the function that dropped the packet.
    pub drop_location: u64,
    /// skb mark.
    pub mark: u32,
    /// Ethernet source.
    #[serde(serialize_with = "ser_mac")]
    pub src_mac: [u8; 6],
    /// Ethernet destination.
    #[serde(serialize_with = "ser_mac")]
    pub dst_mac: [u8; 6],
    /// Raw kernel timestamp (CLOCK_MONOTONIC ns), for computing delays between hops.
    pub ktime_ns: u64,
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_rfc3339(*t))
}

fn ser_mac<S: serde::Serializer>(m: &[u8; 6], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_mac(m))
}

/// `aa:bb:cc:dd:ee:ff`
pub fn format_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// RFC 3339 UTC with nanoseconds, e.g. `2026-11-26T11:00:01.123456789Z`.
pub fn format_rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn addr(fam: u8, raw: &[u8; 16]) -> Option<IpAddr> {
    monitor_common::addr_from_raw(fam, raw)
}

impl Event {
    /// Decodes a raw event. `reason_name` maps kernel drop reasons to names.
    pub fn decode(
        raw: &FlowEvent,
        clock: &Clock,
        reason_name: impl Fn(u32) -> Option<String>,
    ) -> Event {
        let is_drop = raw.event_type == event_type::DROP;
        Event {
            time: clock.to_system_time(raw.ts_ns),
            kind: if is_drop { Kind::Drop } else { Kind::Trace },
            point: ObsPoint::from_raw(raw.obs_point),
            ifindex: raw.ifindex,
            ingress_ifindex: raw.ingress_ifindex,
            ingress_hook: raw.direction == direction::INGRESS,
            hash: raw.hash,
            len: raw.orig_len,
            ct_state: CtState::from_raw(raw.ct_state),
            src: addr(raw.family, &raw.src_addr),
            dst: addr(raw.family, &raw.dst_addr),
            proto: raw.l4_proto,
            src_port: raw.src_port,
            dst_port: raw.dst_port,
            tcp_flags: raw.tcp_flags,
            tcp_ns: raw.flags & event_flags::TCP_NS != 0,
            icmp_type: raw.icmp_type,
            icmp_code: raw.icmp_code,
            has_l4: raw.flags & event_flags::HAS_L4 != 0,
            transit_dup: raw.flags & event_flags::TRANSIT_DUP != 0,
            drop_reason: is_drop.then_some(raw.drop_reason),
            drop_reason_name: if is_drop {
                reason_name(raw.drop_reason)
            } else {
                None
            },
            drop_location: raw.drop_location,
            mark: raw.mark,
            src_mac: raw.src_mac,
            dst_mac: raw.dst_mac,
            ktime_ns: raw.ts_ns,
        }
    }

    /// Is this an ICMP echo (request or reply), whose "ports" are the identifier?
    pub fn is_icmp_echo(&self) -> bool {
        matches!(
            (self.proto, self.icmp_type),
            (proto::ICMP, 0 | 8) | (proto::ICMPV6, 128 | 129)
        )
    }

    /// TCP flag names in Hubble's order (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR, NS).
    pub fn tcp_flag_names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        for (bit, name) in [
            (tcp::FIN, "FIN"),
            (tcp::SYN, "SYN"),
            (tcp::RST, "RST"),
            (tcp::PSH, "PSH"),
            (tcp::ACK, "ACK"),
            (tcp::URG, "URG"),
            (tcp::ECE, "ECE"),
            (tcp::CWR, "CWR"),
        ] {
            if self.tcp_flags & bit != 0 {
                v.push(name);
            }
        }
        if self.tcp_ns {
            v.push("NS");
        }
        v
    }

    /// A one-line summary in the style of `cilium monitor`, used by the agent's `--dump text`:
    /// `-> network flow 0x8958dbda state new ifindex eth0: 198.51.100.10:59242 -> 1.0.0.1:80 tcp SYN`
    pub fn monitor_line(&self, ifname: &str) -> String {
        let mut s = String::new();
        match self.kind {
            Kind::Drop => {
                let reason = self
                    .drop_reason_name
                    .clone()
                    .unwrap_or_else(|| self.drop_reason.unwrap_or(0).to_string());
                let _ = write!(
                    s,
                    "xx drop ({reason}) flow {:#x} ifindex {ifname}",
                    self.hash
                );
            }
            Kind::Trace => {
                let arrow = match self.point {
                    ObsPoint::ToEndpoint => "-> endpoint",
                    ObsPoint::FromEndpoint => "<- endpoint",
                    ObsPoint::ToNetwork => "-> network",
                    ObsPoint::FromNetwork => "<- network",
                    ObsPoint::ToHost => "-> host",
                    ObsPoint::FromHost => "<- host",
                    ObsPoint::ToStack => "-> stack",
                    ObsPoint::Unknown => "-> ?",
                };
                let state = self.ct_state.map(CtState::as_str).unwrap_or("unknown");
                let _ = write!(
                    s,
                    "{arrow} flow {:#x} state {state} ifindex {ifname}",
                    self.hash
                );
            }
        }
        let (Some(src), Some(dst)) = (self.src, self.dst) else {
            s.push_str(": non-IP");
            return s;
        };
        let hostport = |ip: IpAddr, port: u16| match ip {
            IpAddr::V6(_) => format!("[{ip}]:{port}"),
            IpAddr::V4(_) => format!("{ip}:{port}"),
        };
        match self.proto {
            proto::TCP | proto::UDP | proto::SCTP if self.has_l4 => {
                let name = match self.proto {
                    proto::TCP => "tcp",
                    proto::UDP => "udp",
                    _ => "sctp",
                };
                let _ = write!(
                    s,
                    ": {} -> {} {name}",
                    hostport(src, self.src_port),
                    hostport(dst, self.dst_port)
                );
                if self.proto == proto::TCP {
                    let _ = write!(s, " {}", self.tcp_flag_names().join(", "));
                }
            }
            proto::ICMP | proto::ICMPV6 => {
                let v = if self.proto == proto::ICMP {
                    "icmp"
                } else {
                    "icmpv6"
                };
                let _ = write!(
                    s,
                    ": {src} -> {dst} {v} type {} code {}",
                    self.icmp_type, self.icmp_code
                );
            }
            p => {
                let _ = write!(s, ": {src} -> {dst} proto {p}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monitor_common::family;
    use std::net::Ipv6Addr;

    fn syn_event() -> FlowEvent {
        let mut ev = FlowEvent {
            ts_ns: 1_000,
            event_type: event_type::TRACE,
            obs_point: obs::TO_NETWORK,
            ct_state: ct_state::NEW,
            direction: direction::EGRESS,
            family: family::V4,
            l4_proto: proto::TCP,
            tcp_flags: tcp::SYN,
            flags: event_flags::HAS_L4,
            src_port: 59242,
            dst_port: 80,
            hash: 0x8958_dbda,
            ..FlowEvent::default()
        };
        ev.src_addr[..4].copy_from_slice(&[198, 51, 100, 10]);
        ev.dst_addr[..4].copy_from_slice(&[1, 0, 0, 1]);
        ev
    }

    #[test]
    fn decodes_a_captured_syn() {
        let e = Event::decode(&syn_event(), &Clock::now(), |_| None);
        assert_eq!(e.kind, Kind::Trace);
        assert_eq!(e.point, ObsPoint::ToNetwork);
        assert_eq!(e.ct_state, Some(CtState::New));
        assert_eq!(e.src, Some("198.51.100.10".parse().unwrap()));
        assert_eq!(e.dst, Some("1.0.0.1".parse().unwrap()));
        assert_eq!(e.tcp_flag_names(), vec!["SYN"]);
        assert_eq!(
            e.monitor_line("eth0"),
            "-> network flow 0x8958dbda state new ifindex eth0: 198.51.100.10:59242 -> 1.0.0.1:80 tcp SYN"
        );
    }

    #[test]
    fn decodes_a_drop_with_its_reason_name() {
        let mut raw = syn_event();
        raw.event_type = event_type::DROP;
        raw.obs_point = obs::UNKNOWN;
        raw.ct_state = ct_state::UNKNOWN;
        raw.drop_reason = 12;
        let e = Event::decode(&raw, &Clock::now(), |r| {
            (r == 12).then(|| "NETFILTER_DROP".to_owned())
        });
        assert_eq!(e.kind, Kind::Drop);
        assert_eq!(e.ct_state, None);
        assert_eq!(e.drop_reason_name.as_deref(), Some("NETFILTER_DROP"));
        assert!(
            e.monitor_line("lxc1")
                .starts_with("xx drop (NETFILTER_DROP) flow 0x8958dbda ifindex lxc1")
        );
    }

    #[test]
    fn rfc3339_formatting() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::new(1_795_086_001, 123_456_789);
        assert_eq!(format_rfc3339(t), "2026-11-19T11:00:01.123456789Z");
        assert_eq!(
            format_rfc3339(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000000Z"
        );
    }

    #[test]
    fn ipv6_addresses_decode() {
        let mut raw = syn_event();
        raw.family = family::V6;
        raw.src_addr = "fd00:10:244::213".parse::<Ipv6Addr>().unwrap().octets();
        let e = Event::decode(&raw, &Clock::now(), |_| None);
        assert_eq!(e.src, Some("fd00:10:244::213".parse().unwrap()));
    }
}
