//! `--kernel-filter`: a subset of flowctl's filter flags, compiled into the [`KernelFilter`]
//! the TC programs (and the drop tracepoint) evaluate before they emit anything.
//!
//! The value is one string of flags, as they would follow `flowctl observe`:
//! `--ip 10.244.0.0/16 --port 53 --protocol udp`. Accepted: `--ip`, `--from-ip`, `--to-ip`
//! (an address or a CIDR), `--port`, `--from-port`, `--to-port` (a number), `--protocol`
//! (`tcp`, `udp`, `sctp`, `icmp` for v4 and v6, `icmpv4`, `icmpv6`), each as `--flag value` or
//! `--flag=value`. With flowctl's rules: the values of one flag OR together, different flags
//! AND together, `--ip` matches either end, and `--ip` does not combine with `--from-ip` or
//! `--to-ip`, nor `--port` with `--from-port` or `--to-port`. Anything else (`--not`, pods,
//! labels, L7 protocols…) is refused: the kernel sees only the tuple on the wire.

use std::net::IpAddr;

use monitor_common::{
    CidrList, FILTER_MAX_CIDRS, FILTER_MAX_PORTS, FilterCidr, KernelFilter, PortList, filter_proto,
};

/// Parses the value of `--kernel-filter` (clap's value parser).
pub fn parse_kernel_filter(s: &str) -> Result<KernelFilter, String> {
    let mut f = KernelFilter {
        enabled: 1,
        ..KernelFilter::default()
    };
    let mut seen: Vec<&str> = Vec::new();
    let mut words = s.split_whitespace();
    while let Some(word) = words.next() {
        let Some(flag) = word.strip_prefix("--") else {
            return Err(format!("expected a flag such as --ip, found {word:?}"));
        };
        let (flag, value) = match flag.split_once('=') {
            Some((flag, value)) => (flag, value),
            None => (
                flag,
                words
                    .next()
                    .ok_or_else(|| format!("--{flag} needs a value"))?,
            ),
        };
        match flag {
            "ip" => push_cidr(&mut f.ip, flag, value)?,
            "from-ip" => push_cidr(&mut f.from_ip, flag, value)?,
            "to-ip" => push_cidr(&mut f.to_ip, flag, value)?,
            "port" => push_port(&mut f.port, flag, value)?,
            "from-port" => push_port(&mut f.from_port, flag, value)?,
            "to-port" => push_port(&mut f.to_port, flag, value)?,
            "protocol" => {
                f.protocols |= match value.to_ascii_lowercase().as_str() {
                    "tcp" => filter_proto::TCP,
                    "udp" => filter_proto::UDP,
                    "sctp" => filter_proto::SCTP,
                    "icmp" => filter_proto::ICMP | filter_proto::ICMPV6,
                    "icmpv4" => filter_proto::ICMP,
                    "icmpv6" => filter_proto::ICMPV6,
                    other => {
                        return Err(format!(
                            "--protocol {other}: the kernel filter knows tcp, udp, sctp, icmp, \
                             icmpv4 and icmpv6"
                        ));
                    }
                }
            }
            other => {
                return Err(format!(
                    "--{other} is not a kernel filter flag (--ip, --from-ip, --to-ip, --port, \
                     --from-port, --to-port, --protocol)"
                ));
            }
        }
        if !seen.contains(&flag) {
            seen.push(flag);
        }
    }
    if seen.is_empty() {
        return Err("an empty kernel filter: give at least one flag".into());
    }
    // flowctl's (Hubble's) conflicts among these flags.
    for (a, b) in [
        ("ip", "from-ip"),
        ("ip", "to-ip"),
        ("port", "from-port"),
        ("port", "to-port"),
    ] {
        if seen.contains(&a) && seen.contains(&b) {
            return Err(format!("--{a} and --{b} cannot be combined"));
        }
    }
    Ok(f)
}

fn push_cidr(list: &mut CidrList, flag: &str, value: &str) -> Result<(), String> {
    let (addr, prefix) = match value.parse::<IpAddr>() {
        Ok(a) => (a, if a.is_ipv4() { 32 } else { 128 }),
        Err(_) => {
            let net: ipnet::IpNet = value.parse().map_err(|_| {
                format!("--{flag} {value}: expected an IP address or a CIDR (10.244.0.0/16)")
            })?;
            (net.addr(), net.prefix_len())
        }
    };
    let i = list.len as usize;
    if i >= FILTER_MAX_CIDRS {
        return Err(format!(
            "--{flag}: at most {FILTER_MAX_CIDRS} addresses or CIDRs"
        ));
    }
    list.cidrs[i] = FilterCidr::new(addr, prefix);
    list.len += 1;
    Ok(())
}

fn push_port(list: &mut PortList, flag: &str, value: &str) -> Result<(), String> {
    let port: u16 = value
        .parse()
        .map_err(|_| format!("--{flag} {value}: expected a port number between 0 and 65535"))?;
    let i = list.len as usize;
    if i >= FILTER_MAX_PORTS {
        return Err(format!("--{flag}: at most {FILTER_MAX_PORTS} ports"));
    }
    list.ports[i] = port;
    list.len += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use monitor_common::{CtKey, proto};

    use super::*;

    fn key(p: u8, src: &str, sport: u16, dst: &str, dport: u16) -> CtKey {
        CtKey::new(p, src.parse().unwrap(), sport, dst.parse().unwrap(), dport)
    }

    #[test]
    fn flags_and_together_values_or_together() {
        let f = parse_kernel_filter("--ip 1.0.0.1 --ip=fd00::/8 --protocol UDP --port 53").unwrap();
        assert_eq!((f.enabled, f.ip.len, f.port.len), (1, 2, 1));
        assert_eq!(f.protocols, filter_proto::UDP);
        let dns = key(proto::UDP, "10.244.0.213", 41000, "1.0.0.1", 53);
        assert!(f.matches(&dns, true));
        assert!(f.matches(&dns.reversed(), true));
        assert!(!f.matches(&key(proto::TCP, "10.244.0.213", 41000, "1.0.0.1", 53), true));
        assert!(!f.matches(&key(proto::UDP, "10.244.0.213", 41000, "1.0.0.2", 53), true));
        assert!(!f.matches(&key(proto::UDP, "10.244.0.213", 41000, "1.0.0.1", 54), true));
        assert!(f.matches(&key(proto::UDP, "fd00::1", 1, "2606::1", 53), true));
        let icmp = parse_kernel_filter("--protocol icmp").unwrap();
        assert_eq!(icmp.protocols, filter_proto::ICMP | filter_proto::ICMPV6);
        let cidr = parse_kernel_filter("--from-ip 10.244.0.0/16 --to-port 80").unwrap();
        assert!(cidr.matches(&key(proto::TCP, "10.244.0.213", 40000, "1.0.0.1", 80), true));
        assert!(!cidr.matches(&key(proto::TCP, "1.0.0.1", 80, "10.244.0.213", 40000), true));
    }

    #[test]
    fn refuses_what_the_kernel_cannot_evaluate() {
        for bad in [
            "",
            "ip 1.0.0.1",
            "--ip",
            "--ip 1.0.0.999",
            "--port 65536",
            "--protocol http",
            "--not --ip 1.0.0.1",
            "--pod default/web",
            "--ip 1.0.0.1 --from-ip 1.0.0.2",
            "--port 1 --to-port 2",
            "--ip 1.1.1.1 --ip 1.1.1.2 --ip 1.1.1.3 --ip 1.1.1.4 --ip 1.1.1.5 --ip 1.1.1.6 \
             --ip 1.1.1.7 --ip 1.1.1.8 --ip 1.1.1.9",
        ] {
            assert!(parse_kernel_filter(bad).is_err(), "{bad:?} accepted");
        }
        // What flowctl allows together is allowed here.
        assert!(parse_kernel_filter("--from-ip 1.0.0.1 --to-ip 10.0.0.0/8").is_ok());
        assert!(parse_kernel_filter("--from-port 1 --to-port 2").is_ok());
    }
}
