//! `flowctl path`: the hops of a connection's packets across the node, in order, with the time
//! between hooks: `lxc… from-endpoint → eth0 to-network +38µs`.
//!
//! Hops are put together from the flows' `flowscope.v1.FlowExtension`: flows of one connection
//! share its conntrack tuple on the pod's side of any NAT (`ct_id`), and the hops of one packet
//! share the kernel's skb hash and follow each other within milliseconds.

use std::io::{self, Write};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use flowscope_proto::flow::{Flow, TraceObservationPoint, Verdict};
use flowscope_proto::flowscope::v1::{FlowExtension, FlowHop, FlowPath};
use flowscope_proto::observer::get_flows_response::ResponseTypes;
use flowscope_proto::observer::{GetFlowsRequest, observer_client::ObserverClient};
use flowscope_proto::wkt::Duration as PbDuration;

use super::Context;
use crate::client;
use flowscope_proto::EXTENSIONS_HEADER;

use crate::filters::FilterBuilder;
use crate::output::clean;

/// Hops of one packet follow each other within this time.
const SAME_PACKET_NS: i64 = 50_000_000;

/// Examples and exit status, shown after `flowctl path --help`.
pub const AFTER_HELP: &str = "\
Examples:
  Where pod-a's HTTP request to 1.0.0.1 went, hop by hop:
    flowctl path --ip 1.0.0.1 --port 80
  One pod's connections, as JSON (one flowscope.v1.FlowPath per packet):
    flowctl path --pod default/pod-a -o json

Exit status: 0 success, 1 error (server unreachable, request failed), 2 usage error.";

/// Output formats of `path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PathFormat {
    /// One block per connection, one line per packet.
    Text,
    /// One `flowscope.v1.FlowPath` per packet per line (protojson).
    Json,
}

/// `flowctl path` flags.
#[derive(Debug, Args)]
pub struct PathArgs {
    /// Connections to or from this address or CIDR.
    #[arg(long, value_name = "IP", value_parser = crate::filters::parse_ip_or_cidr)]
    pub ip: Option<String>,
    /// Connections to or from this port.
    #[arg(long, value_name = "PORT", value_parser = crate::filters::parse_port)]
    pub port: Option<String>,
    /// Connections of this pod (`namespace/pod`).
    #[arg(long, value_name = "POD")]
    pub pod: Option<String>,
    /// Connections of this protocol.
    #[arg(long, value_name = "PROTO", value_parser = crate::filters::parse_protocol)]
    pub protocol: Option<String>,
    /// How many recent flows to assemble paths from.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub last: u64,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: PathFormat,
}

fn ext(f: &Flow) -> Option<FlowExtension> {
    f.extensions
        .as_ref()
        .and_then(|a| a.to_msg::<FlowExtension>().ok().flatten())
}

fn nanos(f: &Flow) -> i64 {
    f.time.as_ref().map(|t| t.as_nanos()).unwrap_or(0)
}

/// One connection: its flows, oldest first.
struct Connection {
    ct_id: u64,
    flows: Vec<Flow>,
}

/// Groups flows by connection, then each connection's flows into packets (same skb hash and
/// direction, hops within [`SAME_PACKET_NS`] of the packet's first).
fn assemble(mut flows: Vec<Flow>) -> Vec<(Connection, Vec<FlowPath>)> {
    flows.sort_by_key(nanos);
    let mut conns: Vec<Connection> = Vec::new();
    for f in flows {
        let Some(e) = ext(&f) else { continue };
        if e.ct_id == 0 {
            continue;
        }
        match conns.iter_mut().find(|c| c.ct_id == e.ct_id) {
            Some(c) => c.flows.push(f),
            None => conns.push(Connection {
                ct_id: e.ct_id,
                flows: vec![f],
            }),
        }
    }
    conns
        .into_iter()
        .map(|c| {
            let mut packets: Vec<(u32, Option<bool>, i64, FlowPath)> = Vec::new();
            for f in &c.flows {
                let hash = ext(f).map(|e| e.skb_hash).unwrap_or(0);
                let t = nanos(f);
                let hop = |first: i64| FlowHop {
                    observation_point: f.trace_observation_point,
                    interface: f.interface.clone(),
                    time: f.time,
                    since_first: Some(PbDuration {
                        seconds: (t - first) / 1_000_000_000,
                        nanos: ((t - first) % 1_000_000_000) as i32,
                    }),
                    flow_uuid: f.uuid.clone(),
                    verdict: f.verdict,
                    ip: f.ip.clone(),
                };
                let existing = packets.iter_mut().rev().find(|(h, r, first, p)| {
                    *h == hash
                        && *r == f.is_reply
                        && t - *first <= SAME_PACKET_NS
                        && !p
                            .hops
                            .iter()
                            .any(|x| x.observation_point == f.trace_observation_point)
                });
                match existing {
                    Some((_, _, first, p)) => p.hops.push(hop(*first)),
                    None => packets.push((
                        hash,
                        f.is_reply,
                        t,
                        FlowPath {
                            hops: vec![hop(t)],
                            ct_id: c.ct_id,
                        },
                    )),
                }
            }
            let paths = packets.into_iter().map(|(_, _, _, p)| p).collect();
            (c, paths)
        })
        .collect()
}

fn point_name(p: i32) -> String {
    TraceObservationPoint::try_from(p)
        .map(|p| p.as_str_name().to_ascii_lowercase().replace('_', "-"))
        .unwrap_or_else(|_| "unknown".into())
}

fn micros(d: &Option<PbDuration>) -> String {
    let ns = d
        .as_ref()
        .map(|d| d.seconds * 1_000_000_000 + d.nanos as i64)
        .unwrap_or(0);
    if ns < 1_000_000 {
        format!("+{}µs", ns / 1000)
    } else {
        format!("+{:.1}ms", ns as f64 / 1e6)
    }
}

/// The text view.
fn render_text(conns: &[(Connection, Vec<FlowPath>)]) -> String {
    let mut s = String::new();
    for (c, packets) in conns {
        let first = &c.flows[0];
        let e = ext(first).unwrap_or_default();
        let t = e.ct_tuple.unwrap_or_default();
        let who = |ep: &Option<flowscope_proto::flow::Endpoint>| {
            ep.as_ref()
                .map(|e| {
                    if e.pod_name.is_empty() {
                        let l = e.labels.first().cloned().unwrap_or_default();
                        l.strip_prefix("reserved:").map(str::to_owned).unwrap_or(l)
                    } else {
                        format!("{}/{}", e.namespace, e.pod_name)
                    }
                })
                .unwrap_or_default()
        };
        let (src, dst) = if first.is_reply == Some(true) {
            (&first.destination, &first.source)
        } else {
            (&first.source, &first.destination)
        };
        s.push_str(&clean(&format!(
            "{} {}:{} -> {}:{}  {} -> {}  (ct {:#x})",
            first.l4.as_ref().map(l4_name).unwrap_or("IP"),
            t.source_ip,
            if t.icmp_id != 0 {
                t.icmp_id
            } else {
                t.source_port
            },
            t.destination_ip,
            t.destination_port,
            who(src),
            who(dst),
            c.ct_id
        )));
        s.push('\n');
        for p in packets {
            let f = c
                .flows
                .iter()
                .find(|f| p.hops.first().is_some_and(|h| h.flow_uuid == f.uuid));
            #[expect(deprecated, reason = "Summary is what Hubble prints")]
            let what = f
                .map(|f| f.summary.trim_start_matches("TCP Flags: ").to_string())
                .unwrap_or_default();
            let hops: Vec<String> = p
                .hops
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let iface = h
                        .interface
                        .as_ref()
                        .map(|i| i.name.clone())
                        .unwrap_or_default();
                    let dropped = if h.verdict == Verdict::Dropped as i32 {
                        " DROPPED"
                    } else {
                        ""
                    };
                    let delta = if i == 0 {
                        String::new()
                    } else {
                        format!(" {}", micros(&h.since_first))
                    };
                    format!(
                        "{iface} {}{dropped}{delta}",
                        point_name(h.observation_point)
                    )
                })
                .collect();
            s.push_str(&clean(&format!("  {what:<12} {}", hops.join(" → "))));
            s.push('\n');
        }
    }
    s
}

fn l4_name(l: &flowscope_proto::flow::Layer4) -> &'static str {
    use flowscope_proto::flow::layer4::Protocol;
    match l.protocol {
        Some(Protocol::Tcp(_)) => "TCP",
        Some(Protocol::Udp(_)) => "UDP",
        Some(Protocol::IcmPv4(_)) => "ICMPv4",
        Some(Protocol::IcmPv6(_)) => "ICMPv6",
        Some(Protocol::Sctp(_)) => "SCTP",
        _ => "IP",
    }
}

/// Runs `flowctl path`.
pub async fn run(args: &PathArgs, ctx: &Context) -> anyhow::Result<()> {
    let mut b = FilterBuilder::new();
    for (flag, v) in [
        ("ip", &args.ip),
        ("port", &args.port),
        ("pod", &args.pod),
        ("protocol", &args.protocol),
    ] {
        if let Some(v) = v {
            b.set(flag, v)?;
        }
    }
    let (whitelist, blacklist) = b.build()?;
    let connect = ctx.connect_options()?;
    let channel = client::connect(&connect).await?;
    let mut observer = ObserverClient::new(channel).max_decoding_message_size(16 * 1024 * 1024);
    let mut req = tonic::Request::new(GetFlowsRequest {
        number: args.last,
        whitelist,
        blacklist,
        ..Default::default()
    });
    req.metadata_mut().insert(
        EXTENSIONS_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let mut stream = client::within(&connect, "GetFlows", observer.get_flows(req))
        .await?
        .into_inner();
    let mut flows = Vec::new();
    while let Some(resp) = stream
        .message()
        .await
        .map_err(|s| client::rpc_error(&connect.server, "GetFlows", &s))?
    {
        if let Some(ResponseTypes::Flow(f)) = resp.response_types {
            flows.push(f);
        }
    }
    let conns = assemble(flows);
    let text = match args.output {
        PathFormat::Text => render_text(&conns),
        PathFormat::Json => {
            let mut s = String::new();
            for (_, packets) in &conns {
                for p in packets {
                    s.push_str(&flowscope_proto::json::to_json(p).context("encoding a path")?);
                    s.push('\n');
                }
            }
            s
        }
    };
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowscope_proto::flow::NetworkInterface;
    use flowscope_proto::wkt::{Any, Timestamp};

    #[expect(deprecated, reason = "sets Summary")]
    fn flow(
        point: TraceObservationPoint,
        iface: &str,
        t_us: i64,
        hash: u32,
        reply: bool,
        ct: u64,
    ) -> Flow {
        let ext = FlowExtension {
            skb_hash: hash,
            ct_id: ct,
            ..Default::default()
        };
        Flow {
            uuid: format!("{iface}-{t_us}"),
            time: Some(Timestamp::from_nanos(1_000_000_000_000 + t_us * 1000)),
            trace_observation_point: point as i32,
            interface: Some(NetworkInterface {
                index: 1,
                name: iface.into(),
            }),
            is_reply: Some(reply),
            summary: if reply {
                "TCP Flags: SYN, ACK".into()
            } else {
                "TCP Flags: SYN".into()
            },
            extensions: Some(Any::from_msg(&ext)),
            ..Default::default()
        }
    }

    #[test]
    fn hops_in_order_with_deltas() {
        let flows = vec![
            flow(TraceObservationPoint::ToNetwork, "eth0", 38, 1, false, 7),
            flow(TraceObservationPoint::FromEndpoint, "lxc1", 0, 1, false, 7),
            flow(TraceObservationPoint::FromNetwork, "eth0", 500, 2, true, 7),
            flow(TraceObservationPoint::ToEndpoint, "lxc1", 521, 2, true, 7),
            flow(
                TraceObservationPoint::FromEndpoint,
                "lxc1",
                900,
                3,
                false,
                8,
            ),
        ];
        let conns = assemble(flows);
        assert_eq!(conns.len(), 2);
        let (_, packets) = &conns[0];
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[0].hops.len(), 2);
        assert_eq!(
            packets[0].hops[0].observation_point,
            TraceObservationPoint::FromEndpoint as i32
        );
        assert_eq!(packets[0].hops[1].since_first.unwrap().nanos, 38_000);
        let text = render_text(&conns);
        assert!(
            text.contains("lxc1 from-endpoint → eth0 to-network +38µs"),
            "{text}"
        );
        assert!(
            text.contains("eth0 from-network → lxc1 to-endpoint +21µs"),
            "{text}"
        );
    }
}
