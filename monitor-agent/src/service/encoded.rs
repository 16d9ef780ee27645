//! GetFlows responses encoded straight from the history's shared flows.
//!
//! The generated Observer server takes owned `GetFlowsResponse`s, so every flow sent to every
//! follower was deep-cloned out of its `Arc<Flow>` (about forty heap objects), encoded, then
//! dropped: a fifth of the agent's CPU at 100 k events/s with one follower (perf, benchmark 3 in
//! docs/benchmarks.md). [`ObserverRoutes`] serves `/observer.Observer/GetFlows` itself (the
//! proto crate's `StreamingRoute`, which the relay uses too) and sends [`EncodedResponse`]s:
//! the protobuf bytes of a `GetFlowsResponse`, written from a borrowed `&Flow`. On the wire
//! nothing changes; every other method goes to the generated server.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes};
use flowscope_proto::{
    flow::Flow,
    get_flows,
    observer::{GetFlowsRequest, GetFlowsResponse, observer_server::ObserverServer},
    route::StreamingRoute,
    wkt::Timestamp,
};
use prost::{
    Message,
    encoding::{self, DecodeContext, WireType},
};

use super::{
    flow_encoder::{self, FlowEncoder},
    mask::FieldMask,
    observer::{ObserverService, Stream_},
};
use crate::decode::record::FlowRecord;

/// `Flow.extensions` (flowscope's `FlowExtension` in an `Any`).
const EXTENSIONS_FIELD: u32 = flow_encoder::tag::EXTENSIONS;

/// An encoded `observer.GetFlowsResponse`. Encode-only: it is never decoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EncodedResponse(pub Bytes);

impl EncodedResponse {
    /// Any response (loss notices, slow paths), encoded.
    pub fn of(resp: &GetFlowsResponse) -> Self {
        EncodedResponse(resp.encode_to_vec().into())
    }

    /// The response carrying `flow`, as the client asked for it: `extensions` says whether the
    /// client wants flowscope's extension, `mask` keeps only some fields. `scratch` is a buffer
    /// the caller keeps between calls.
    pub fn flow(flow: &Flow, mask: &FieldMask, extensions: bool, scratch: &mut Vec<u8>) -> Self {
        if !mask.is_all() {
            // Rare (clients that send a field mask): the mask works on the encoded flow.
            scratch.clear();
            flow.encode_raw(scratch);
            let mut kept = Vec::with_capacity(scratch.len());
            mask.apply_encoded(scratch, &mut kept)
                .expect("a flow prost encoded is a valid message");
            if !extensions && let Some(stripped) = strip_field(&kept, EXTENSIONS_FIELD) {
                kept = stripped;
            }
            return Self::with_flow_bytes(&kept, flow);
        }
        if extensions || flow.extensions.is_none() {
            scratch.clear();
            flow.encode_raw(scratch);
            return Self::with_flow_bytes(scratch, flow);
        }
        scratch.clear();
        flow.encode_raw(scratch);
        let full = std::mem::take(scratch);
        let stripped = strip_field(&full, EXTENSIONS_FIELD);
        let out = Self::with_flow_bytes(stripped.as_deref().unwrap_or(&full), flow);
        *scratch = full;
        out
    }

    /// The response carrying the flow of `rec`, written straight from the record (no field
    /// mask: [`EncodedResponse::flow`] applies masks).
    pub fn record(
        rec: &FlowRecord,
        extensions: bool,
        enc: &mut FlowEncoder,
        scratch: &mut Vec<u8>,
    ) -> Self {
        scratch.clear();
        enc.encode(rec, extensions, scratch);
        Self::framed(
            scratch,
            &rec.node.node_name,
            Some(&Timestamp::from(rec.time())),
        )
    }

    /// `flow` (already encoded) with the response's `node_name` and `time` taken from `meta`.
    fn with_flow_bytes(flow_bytes: &[u8], meta: &Flow) -> Self {
        Self::framed(flow_bytes, &meta.node_name, meta.time.as_ref())
    }

    /// A `GetFlowsResponse` of an encoded flow, its node name and time (the proto crate's
    /// writer, shared with the relay and the benchmarks).
    fn framed(flow_bytes: &[u8], node_name: &str, time: Option<&Timestamp>) -> Self {
        let len = get_flows::flow_response_len(flow_bytes.len(), node_name, time);
        let mut out = Vec::with_capacity(len);
        get_flows::put_flow_response(flow_bytes, node_name, time, &mut out);
        EncodedResponse(out.into())
    }
}

impl Message for EncodedResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Never decoded; skip whatever comes rather than misread it.
        encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

/// `msg` (an encoded message) without its top-level field `field`, or `None` if it has no such
/// field or is malformed (then it is sent as it is).
fn strip_field(msg: &[u8], field: u32) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(msg.len());
    let mut rest = msg;
    let mut found = false;
    while !rest.is_empty() {
        let start = msg.len() - rest.len();
        let mut cur = rest;
        let key = encoding::decode_varint(&mut cur).ok()?;
        let (tag, wire) = ((key >> 3) as u32, key & 7);
        let body = match wire {
            0 => {
                encoding::decode_varint(&mut cur).ok()?;
                0
            }
            1 => 8,
            2 => usize::try_from(encoding::decode_varint(&mut cur).ok()?).ok()?,
            5 => 4,
            _ => return None,
        };
        if cur.len() < body {
            return None;
        }
        cur = &cur[body..];
        let end = msg.len() - cur.len();
        if tag == field {
            found = true;
        } else {
            out.extend_from_slice(&msg[start..end]);
        }
        rest = cur;
    }
    found.then_some(out)
}

/// The Observer service with GetFlows served from [`EncodedResponse`]s.
pub type ObserverRoutes = StreamingRoute<
    ObserverServer<ObserverService>,
    GetFlowsRequest,
    EncodedResponse,
    Stream_<EncodedResponse>,
>;

/// The Observer service over `service`.
pub fn observer_routes(service: ObserverService) -> ObserverRoutes {
    let generated = ObserverServer::new(service.clone());
    StreamingRoute::new(
        "/observer.Observer/GetFlows",
        generated,
        Arc::new(move |request| service.get_flows_encoded(request)),
    )
}

#[cfg(test)]
mod tests {
    use flowscope_proto::{
        flow::{Ip, NetworkInterface},
        observer::get_flows_response::ResponseTypes,
        wkt::{Any, Timestamp},
    };

    use super::*;

    fn flow(extensions: bool) -> Flow {
        Flow {
            time: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            node_name: "node-1".into(),
            uuid: "u-1".into(),
            ip: Some(Ip {
                source: "10.0.0.1".into(),
                destination: "1.0.0.1".into(),
                ..Ip::default()
            }),
            interface: Some(NetworkInterface {
                index: 7,
                name: "lxc1".into(),
            }),
            extensions: extensions.then(|| Any {
                type_url: "type.googleapis.com/flowscope.v1.FlowExtension".into(),
                value: vec![8, 42],
            }),
            ..Flow::default()
        }
    }

    /// What the generated server would have sent: the same response, decoded by a client.
    fn expected(f: &Flow) -> GetFlowsResponse {
        GetFlowsResponse {
            node_name: f.node_name.clone(),
            time: f.time,
            response_types: Some(ResponseTypes::Flow(f.clone())),
        }
    }

    fn decode(r: &EncodedResponse) -> GetFlowsResponse {
        GetFlowsResponse::decode(r.0.clone()).expect("a valid GetFlowsResponse")
    }

    #[test]
    fn a_flow_decodes_as_the_generated_response_would() {
        let mut scratch = Vec::new();
        for ext in [false, true] {
            let f = flow(ext);
            let r = EncodedResponse::flow(&f, &FieldMask::default(), true, &mut scratch);
            assert_eq!(decode(&r), expected(&f));
            assert_eq!(r.0, expected(&f).encode_to_vec(), "byte for byte");
        }
    }

    #[test]
    fn extensions_are_stripped_unless_asked_for() {
        let mut scratch = Vec::new();
        let f = flow(true);
        let r = EncodedResponse::flow(&f, &FieldMask::default(), false, &mut scratch);
        let mut want = f.clone();
        want.extensions = None;
        assert_eq!(decode(&r), expected(&want));
        // The scratch buffer is reused, not leaked into the next response.
        let g = flow(false);
        let r = EncodedResponse::flow(&g, &FieldMask::default(), false, &mut scratch);
        assert_eq!(decode(&r), expected(&g));
    }

    #[test]
    fn a_field_mask_keeps_only_its_fields() {
        let mut scratch = Vec::new();
        let f = flow(true);
        let mask = FieldMask::new(&["IP.source".to_owned()]).unwrap();
        let got = decode(&EncodedResponse::flow(&f, &mask, false, &mut scratch));
        let Some(ResponseTypes::Flow(g)) = got.response_types else {
            panic!("not a flow: {got:?}");
        };
        assert_eq!(g.ip.map(|ip| ip.source).as_deref(), Some("10.0.0.1"));
        assert!(g.uuid.is_empty() && g.interface.is_none() && g.extensions.is_none());
        assert_eq!(got.node_name, "node-1");
    }

    #[test]
    fn strip_field_handles_every_wire_type_and_refuses_garbage() {
        let mut m = Vec::new();
        encoding::uint32::encode(1, &300, &mut m);
        encoding::fixed64::encode(2, &7, &mut m);
        encoding::string::encode(150_000, &"x".to_owned(), &mut m);
        encoding::fixed32::encode(3, &9, &mut m);
        let mut want = Vec::new();
        encoding::uint32::encode(1, &300, &mut want);
        encoding::fixed64::encode(2, &7, &mut want);
        encoding::fixed32::encode(3, &9, &mut want);
        assert_eq!(strip_field(&m, 150_000), Some(want));
        assert_eq!(strip_field(&m, 99), None, "absent");
        assert_eq!(strip_field(&m[..m.len() - 1], 150_000), None, "truncated");
    }
}
