//! `source_ip`, `destination_ip`, `source_ip_xlated`: addresses or CIDRs,
//! IPv4 and IPv6.

use std::net::IpAddr;

/// An address or a CIDR block, parsed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    /// The network address (host bits cleared).
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn contains(&self, addr: IpAddr) -> bool {
        match (self.network, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                mask_v4(u32::from(a), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                mask_v6(u128::from(a), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask_v4(addr: u32, prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => addr & (u32::MAX << (32 - u32::from(p.min(32)))),
    }
}

fn mask_v6(addr: u128, prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => addr & (u128::MAX << (128 - u32::from(p.min(128)))),
    }
}

/// Parses `addr/len` like Go's `net.ParseCIDR` (host bits are allowed and
/// cleared: `10.1.2.3/8` is `10.0.0.0/8`).
fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let (addr, len) = text
        .split_once('/')
        .ok_or_else(|| "missing prefix length".to_string())?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|e| format!("not an IP address before '/': {e}"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err("prefix length is not a number".into());
    }
    let prefix: u8 = len
        .parse()
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| format!("prefix length must be 0..={max}"))?;
    let network = match addr {
        IpAddr::V4(a) => IpAddr::V4(mask_v4(u32::from(a), prefix).into()),
        IpAddr::V6(a) => IpAddr::V6(mask_v6(u128::from(a), prefix).into()),
    };
    Ok(Cidr { network, prefix })
}

/// Matches an address field against a list of addresses and CIDRs (ORed).
#[derive(Debug, Clone, Default)]
pub(crate) struct IpMatcher {
    addrs: Vec<IpAddr>,
    cidrs: Vec<Cidr>,
}

impl IpMatcher {
    /// Parses the filter values; the error is the reason for the first bad one.
    pub(crate) fn compile(values: &[String]) -> Result<Self, (String, String)> {
        let mut m = Self::default();
        for v in values {
            if v.contains('/') {
                let cidr = parse_cidr(v).map_err(|r| (v.clone(), format!("invalid CIDR: {r}")))?;
                m.cidrs.push(cidr);
            } else {
                let addr: IpAddr = v
                    .parse()
                    .map_err(|e| (v.clone(), format!("not an IP address or CIDR: {e}")))?;
                m.addrs.push(addr.to_canonical());
            }
        }
        Ok(m)
    }

    /// True when `text` (a flow's address) is one of the addresses or in one
    /// of the blocks. An empty or unparsable address matches nothing.
    pub(crate) fn matches(&self, text: &str) -> bool {
        if text.is_empty() {
            return false;
        }
        let Ok(addr) = text.parse::<IpAddr>() else {
            return false;
        };
        self.matches_addr(addr)
    }

    /// [`IpMatcher::matches`] for an address not written out as text.
    pub(crate) fn matches_addr(&self, addr: IpAddr) -> bool {
        // `::ffff:10.0.0.1` is 10.0.0.1 for us, as for Go's net.IP.
        let addr = addr.to_canonical();
        self.addrs.contains(&addr) || self.cidrs.iter().any(|c| c.contains(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(values: &[&str]) -> IpMatcher {
        let values: Vec<String> = values.iter().map(|s| s.to_string()).collect();
        IpMatcher::compile(&values).unwrap()
    }

    #[test]
    fn addresses_and_cidrs() {
        let cases: &[(&[&str], &str, bool)] = &[
            (&["10.0.0.1"], "10.0.0.1", true),
            (&["10.0.0.1"], "10.0.0.2", false),
            (&["10.0.0.0/8"], "10.200.3.4", true),
            (&["10.0.0.0/8"], "11.0.0.1", false),
            (&["10.1.2.3/8"], "10.9.9.9", true),
            (&["0.0.0.0/0"], "1.2.3.4", true),
            (&["0.0.0.0/0"], "fd00::1", false),
            (&["10.0.0.1/32"], "10.0.0.1", true),
            (&["10.0.0.1/32"], "10.0.0.0", false),
            (&["fd00::/64"], "fd00::abcd", true),
            (&["fd00::/64"], "fd00:0:0:1::1", false),
            (&["::/0"], "2001:db8::1", true),
            (&["2001:db8::1"], "2001:0db8:0:0:0:0:0:1", true),
            (&["10.0.0.1"], "::ffff:10.0.0.1", true),
            (&["10.0.0.0/8"], "::ffff:10.0.0.1", true),
            (&["1.1.1.1", "10.0.0.0/8"], "10.0.0.9", true),
            (&["10.0.0.1"], "", false),
            (&["10.0.0.1"], "garbage", false),
        ];
        for (values, addr, want) in cases {
            assert_eq!(m(values).matches(addr), *want, "{values:?} vs {addr}");
        }
    }

    #[test]
    fn invalid_values() {
        for bad in [
            "10.0.0.300",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0.0/",
            "/8",
            "10.0.0.0/+8",
            "host.example",
            "",
            "010.0.0.1",
        ] {
            let err = IpMatcher::compile(&[bad.to_string()]).unwrap_err();
            assert_eq!(err.0, bad);
        }
    }
}
