//! `-o monitor`: the lines `cilium monitor` prints, so that what the lab
//! (docs/reference-scenario.md) read from the Cilium agent reads the same from flowscope:
//!
//! ```text
//! -> stack flow 0x8958dbda identity 42837->world state new ifindex 0 orig-ip 0.0.0.0: 10.244.0.213:59242 -> 1.0.0.1:80 tcp SYN
//! xx drop (NETFILTER_DROP) flow 0x1c2a to endpoint 0, ifindex 2, identity 42837->world: 10.244.0.213:59242 -> 1.0.0.1:80 tcp SYN
//! ```
//!
//! L7 flows print as `cilium monitor` prints the proxy's access-log records:
//!
//! ```text
//! -> Request dns from 762 ([k8s:app=client]) to 0 ([reserved:world]), identity 42837->2, verdict Forwarded DNS datapath: one.one.one.one. A
//! -> Response http to 762 ([k8s:app=client]) from 0 ([reserved:world]), identity 2->42837, verdict Forwarded GET http://one.one.one.one/ => 200
//! ```
//!
//! The flow hash is the skb hash from flowscope's FlowExtension (`0x0` for a
//! flow without one). `orig-ip` is the source before SNAT for translated
//! packets (the wire then shows the translated address, as the kernel sent
//! it); for a delivery to an endpoint, the source as it arrived (Cilium's
//! to-container program reports the address it saw before any reverse
//! translation: `-> endpoint 762 … orig-ip 1.0.0.1`); the unspecified address
//! otherwise.

use std::io::Write;

use flowscope_proto::flow::{self, Flow, TraceObservationPoint, TraceReason};

use super::{Printer, clean, msg_type};

/// One monitor line (without the newline).
pub(super) fn flow_line<W: Write, E: Write>(p: &Printer<W, E>, flow: &Flow) -> String {
    if let Some(l7) = &flow.l7 {
        return l7_line(flow, l7);
    }
    let ext = super::extension(flow);
    let hash = ext.as_ref().map_or(0, |e| e.skb_hash);
    let src_id = flow.source.as_ref().map_or(0, |e| e.identity);
    let dst_id = flow.destination.as_ref().map_or(0, |e| e.identity);
    let identities = format!("{}->{}", identity(p, src_id), identity(p, dst_id));

    let ip = flow.ip.clone().unwrap_or_default();
    let (mut src_ip, dst_ip) = (
        clean(&ip.source).into_owned(),
        clean(&ip.destination).into_owned(),
    );
    let v6 = src_ip.contains(':') || dst_ip.contains(':');
    let point = observation_point(flow);
    let mut orig_ip = if point == TraceObservationPoint::ToEndpoint && !src_ip.is_empty() {
        src_ip.clone()
    } else {
        if v6 { "::" } else { "0.0.0.0" }.to_string()
    };
    let mut flow_for_summary = std::borrow::Cow::Borrowed(flow);
    if !ip.source_xlated.is_empty() {
        // The packet left with the translated source; the pod's address is
        // what the kernel had before SNAT.
        orig_ip = std::mem::replace(&mut src_ip, clean(&ip.source_xlated).into_owned());
        if let Some(port) = ext
            .as_ref()
            .map(|e| e.source_xlated_port)
            .filter(|p| *p != 0)
        {
            flow_for_summary = std::borrow::Cow::Owned(with_source_port(flow, port));
        }
    }
    let conn = super::connection_summary(&flow_for_summary, &src_ip, &dst_ip);
    let ifname = interface(flow);

    let is_drop = flow.event_type.as_ref().map(|t| t.r#type) == Some(msg_type::DROP)
        || flow.verdict == flow::Verdict::Dropped as i32;
    if is_drop {
        let endpoint = flow.destination.as_ref().map_or(0, |e| e.id);
        let ifindex = flow.interface.as_ref().map_or(0, |i| i.index);
        return format!(
            "xx drop ({}) flow {hash:#x} to endpoint {endpoint}, ifindex {ifindex}, identity {identities}: {conn}",
            super::drop_reason(flow)
        );
    }
    format!(
        "{} flow {hash:#x} identity {identities} state {} ifindex {ifname} orig-ip {orig_ip}: {conn}",
        trace_summary(flow, point),
        state(flow)
    )
}

/// An access-log line (Cilium's `LogRecordNotify.DumpInfo`). The direction is the policy
/// side: `->` egress, `<-` ingress.
#[expect(
    deprecated,
    reason = "Cilium still prints Kafka records, deprecated in Hubble's proto"
)]
fn l7_line(flow: &Flow, l7: &flow::Layer7) -> String {
    let dir = match flow::TrafficDirection::try_from(flow.traffic_direction) {
        Ok(flow::TrafficDirection::Egress) => "->",
        Ok(flow::TrafficDirection::Ingress) => "<-",
        _ => "??",
    };
    let proto = match &l7.record {
        Some(flow::layer7::Record::Http(_)) => "http",
        Some(flow::layer7::Record::Dns(_)) => "dns",
        Some(flow::layer7::Record::Kafka(_)) => "kafka",
        None => "unknown-l7",
    };
    let ep = |e: Option<&flow::Endpoint>| {
        let e = e.cloned().unwrap_or_default();
        let labels: Vec<String> = e.labels.iter().map(|l| clean(l).into_owned()).collect();
        (e.id, format!("[{}]", labels.join(" ")), e.identity)
    };
    let (src_id, src_labels, src_identity) = ep(flow.source.as_ref());
    let (dst_id, dst_labels, dst_identity) = ep(flow.destination.as_ref());
    let verdict = match flow::Verdict::try_from(flow.verdict) {
        Ok(flow::Verdict::Forwarded) => "Forwarded",
        Ok(flow::Verdict::Dropped) => "Denied",
        Ok(flow::Verdict::Redirected) => "Redirected",
        Ok(flow::Verdict::Error) => "Error",
        _ => "",
    };
    let mut line = if l7.r#type == flow::L7FlowType::Response as i32 {
        format!(
            "{dir} Response {proto} to {dst_id} ({dst_labels}) from {src_id} ({src_labels}), identity {src_identity}->{dst_identity}, verdict {verdict}"
        )
    } else {
        format!(
            "{dir} Request {proto} from {src_id} ({src_labels}) to {dst_id} ({dst_labels}), identity {src_identity}->{dst_identity}, verdict {verdict}"
        )
    };
    match &l7.record {
        Some(flow::layer7::Record::Http(h)) => {
            line.push_str(&format!(
                " {} {} => {}",
                clean(&h.method),
                clean(&h.url),
                h.code
            ));
        }
        Some(flow::layer7::Record::Dns(d)) => {
            line.push_str(&format!(
                " DNS {}: {} {}",
                clean(&d.observation_source),
                clean(&d.query),
                d.qtypes.join(",")
            ));
            if l7.r#type == flow::L7FlowType::Response as i32 {
                line.push_str(&format!(" TTL: {} Answer: '{}'", d.ttl, d.ips.join(",")));
                if !d.cnames.is_empty() {
                    line.push_str(&format!(" CNAMEs: {}", d.cnames.join(",")));
                }
            }
        }
        Some(flow::layer7::Record::Kafka(k)) => {
            line.push_str(&format!(
                " {} topic {} => {}",
                clean(&k.api_key),
                clean(&k.topic),
                k.error_code
            ));
        }
        None => {}
    }
    line
}

/// The flow's observation point; for a flow without one, the datapath number in its event
/// sub type.
fn observation_point(flow: &Flow) -> TraceObservationPoint {
    match TraceObservationPoint::try_from(flow.trace_observation_point) {
        Ok(TraceObservationPoint::UnknownPoint) | Err(_) => {
            let sub = flow.event_type.as_ref().map_or(-1, |t| t.sub_type);
            let sub = u8::try_from(sub).unwrap_or(u8::MAX);
            TraceObservationPoint::from_datapath(sub)
        }
        Ok(point) => point,
    }
}

/// A reserved identity by name, any other by number (`--numeric`: all by
/// number, like `cilium monitor -n`).
fn identity<W: Write, E: Write>(p: &Printer<W, E>, id: u32) -> String {
    match super::reserved_identity_name(id) {
        Some(name) if !p.opts.numeric => name.to_string(),
        _ => id.to_string(),
    }
}

/// The interface's name when known, its index otherwise.
fn interface(flow: &Flow) -> String {
    match &flow.interface {
        Some(i) if !i.name.is_empty() => clean(&i.name).into_owned(),
        Some(i) => i.index.to_string(),
        None => "0".into(),
    }
}

/// `-> stack`, `-> endpoint 762`, `<- network`, … (Cilium's traceSummary).
fn trace_summary(flow: &Flow, point: TraceObservationPoint) -> String {
    let src_ep = flow.source.as_ref().map_or(0, |e| e.id);
    let dst_ep = flow.destination.as_ref().map_or(0, |e| e.id);
    match point {
        TraceObservationPoint::ToEndpoint => format!("-> endpoint {dst_ep}"),
        TraceObservationPoint::ToProxy if flow.proxy_port != 0 => {
            format!("-> proxy port {}", flow.proxy_port)
        }
        TraceObservationPoint::ToProxy => "-> proxy".into(),
        TraceObservationPoint::ToHost => "-> host from".into(),
        TraceObservationPoint::ToStack => "-> stack".into(),
        TraceObservationPoint::ToOverlay => "-> overlay".into(),
        TraceObservationPoint::ToNetwork => "-> network".into(),
        TraceObservationPoint::ToCrypto => "-> crypto".into(),
        TraceObservationPoint::FromEndpoint => format!("<- endpoint {src_ep}"),
        TraceObservationPoint::FromProxy => "<- proxy".into(),
        TraceObservationPoint::FromHost => "<- host".into(),
        TraceObservationPoint::FromStack => "<- stack".into(),
        TraceObservationPoint::FromOverlay => "<- overlay".into(),
        TraceObservationPoint::FromNetwork => "<- network".into(),
        TraceObservationPoint::FromCrypto => "<- crypto".into(),
        TraceObservationPoint::UnknownPoint => "unknown trace".into(),
    }
}

/// The conntrack state in Cilium's words.
#[expect(
    deprecated,
    reason = "REOPENED and ENCRYPT_OVERLAY still have names to print"
)]
fn state(flow: &Flow) -> String {
    match TraceReason::try_from(flow.trace_reason) {
        Ok(TraceReason::New) => "new".into(),
        Ok(TraceReason::Established) => "established".into(),
        Ok(TraceReason::Reply) => "reply".into(),
        Ok(TraceReason::Related) => "related".into(),
        Ok(TraceReason::Reopened) => "reopened".into(),
        Ok(TraceReason::Srv6Encap) => "srv6-encap".into(),
        Ok(TraceReason::Srv6Decap) => "srv6-decap".into(),
        Ok(TraceReason::EncryptOverlay) => "encrypt-overlay".into(),
        Ok(TraceReason::Unknown) => "unknown".into(),
        Err(_) => flow.trace_reason.to_string(),
    }
}

/// A copy of `flow` whose layer 4 source port is `port` (the SNAT port).
fn with_source_port(flow: &Flow, port: u32) -> Flow {
    let mut flow = flow.clone();
    if let Some(l4) = flow.l4.as_mut().and_then(|l4| l4.protocol.as_mut()) {
        match l4 {
            flow::layer4::Protocol::Tcp(t) => t.source_port = port,
            flow::layer4::Protocol::Udp(u) => u.source_port = port,
            flow::layer4::Protocol::Sctp(s) => s.source_port = port,
            _ => {}
        }
    }
    flow
}
