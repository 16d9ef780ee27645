//! Small conveniences on the generated types, written the way Hubble does
//! the same things so that our output matches its output.

use crate::flow::{
    IcmPv4, IcmPv6, Layer4, Sctp, Tcp, TcpFlags, TraceObservationPoint, TraceReason, Udp, layer4,
};

/// TCP flag names in the order Hubble lists them in a flow summary
/// (`getTCPFlags` in Hubble's parser): SYN, ACK, RST, FIN, PSH, URG, ECE, CWR, NS.
const HUBBLE_FLAG_ORDER: [&str; 9] = ["SYN", "ACK", "RST", "FIN", "PSH", "URG", "ECE", "CWR", "NS"];

impl TcpFlags {
    /// Flags from the TCP header: the flags byte (offset 13: CWR ECE URG ACK
    /// PSH RST SYN FIN, high to low) and the NS bit (low bit of offset 12).
    pub fn from_header(flags: u8, ns: bool) -> Self {
        Self {
            fin: flags & 0x01 != 0,
            syn: flags & 0x02 != 0,
            rst: flags & 0x04 != 0,
            psh: flags & 0x08 != 0,
            ack: flags & 0x10 != 0,
            urg: flags & 0x20 != 0,
            ece: flags & 0x40 != 0,
            cwr: flags & 0x80 != 0,
            ns,
        }
    }

    /// The set flags' names in Hubble's order (SYN, ACK, RST, FIN, PSH, URG,
    /// ECE, CWR, NS).
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        let set = [
            self.syn, self.ack, self.rst, self.fin, self.psh, self.urg, self.ece, self.cwr, self.ns,
        ];
        HUBBLE_FLAG_ORDER
            .into_iter()
            .zip(set)
            .filter_map(|(name, on)| on.then_some(name))
    }

    /// The set flags joined as Hubble joins them: `"SYN, ACK"`.
    pub fn to_hubble_string(&self) -> String {
        self.names().collect::<Vec<_>>().join(", ")
    }

    /// Hubble's flow summary for a TCP packet: `"TCP Flags: SYN, ACK"`.
    pub fn summary(&self) -> String {
        format!("TCP Flags: {}", self.to_hubble_string())
    }

    /// True when every flag set in `self` is also set in `other` (how a
    /// FlowFilter's `tcp_flags` entry matches a flow).
    pub fn is_subset_of(&self, other: &TcpFlags) -> bool {
        (!self.fin || other.fin)
            && (!self.syn || other.syn)
            && (!self.rst || other.rst)
            && (!self.psh || other.psh)
            && (!self.ack || other.ack)
            && (!self.urg || other.urg)
            && (!self.ece || other.ece)
            && (!self.cwr || other.cwr)
            && (!self.ns || other.ns)
    }
}

impl Layer4 {
    /// A TCP layer 4.
    pub fn tcp(source_port: u16, destination_port: u16, flags: TcpFlags) -> Self {
        Self {
            protocol: Some(layer4::Protocol::Tcp(Tcp {
                source_port: source_port.into(),
                destination_port: destination_port.into(),
                flags: Some(flags),
            })),
        }
    }

    /// A UDP layer 4.
    pub fn udp(source_port: u16, destination_port: u16) -> Self {
        Self {
            protocol: Some(layer4::Protocol::Udp(Udp {
                source_port: source_port.into(),
                destination_port: destination_port.into(),
            })),
        }
    }

    /// An SCTP layer 4.
    pub fn sctp(source_port: u16, destination_port: u16) -> Self {
        Self {
            protocol: Some(layer4::Protocol::Sctp(Sctp {
                source_port: source_port.into(),
                destination_port: destination_port.into(),
            })),
        }
    }

    /// An ICMPv4 "layer 4".
    pub fn icmpv4(r#type: u8, code: u8) -> Self {
        Self {
            protocol: Some(layer4::Protocol::IcmPv4(IcmPv4 {
                r#type: r#type.into(),
                code: code.into(),
            })),
        }
    }

    /// An ICMPv6 "layer 4".
    pub fn icmpv6(r#type: u8, code: u8) -> Self {
        Self {
            protocol: Some(layer4::Protocol::IcmPv6(IcmPv6 {
                r#type: r#type.into(),
                code: code.into(),
            })),
        }
    }

    /// Source and destination port for TCP, UDP and SCTP; `None` otherwise.
    pub fn ports(&self) -> Option<(u32, u32)> {
        match self.protocol.as_ref()? {
            layer4::Protocol::Tcp(t) => Some((t.source_port, t.destination_port)),
            layer4::Protocol::Udp(u) => Some((u.source_port, u.destination_port)),
            layer4::Protocol::Sctp(s) => Some((s.source_port, s.destination_port)),
            _ => None,
        }
    }
}

impl TraceObservationPoint {
    /// The API value for a datapath trace point number: the datapath uses 0
    /// for "to endpoint", which the API numbers 101; other values are equal.
    /// Numbers with no API name give `UnknownPoint`.
    pub fn from_datapath(point: u8) -> Self {
        if point == 0 {
            Self::ToEndpoint
        } else {
            Self::try_from(i32::from(point)).unwrap_or(Self::UnknownPoint)
        }
    }
}

impl TraceReason {
    /// The API value for a datapath conntrack result (0 new, 1 established,
    /// 2 reply, 3 related): the API value is the datapath value plus one.
    /// Other values give `Unknown` (TRACE_REASON_UNKNOWN).
    pub fn from_ct_result(result: u8) -> Self {
        match result {
            0 => Self::New,
            1 => Self::Established,
            2 => Self::Reply,
            3 => Self::Related,
            _ => Self::Unknown,
        }
    }
}
