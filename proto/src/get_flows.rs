//! `observer.GetFlowsResponse` around a `flow.Flow` that is already encoded: the writer and the
//! light reader, with the response's field numbers named once.
//!
//! Nobody on the GetFlows path needs the flow as prost structs: the agent writes its bytes
//! straight from its history (`monitor-agent`'s flow encoder), the relay forwards the bytes an
//! agent sent, the benchmarks' synthetic agents splice them from a template and their followers
//! read only a flow's time. What they all need is the few bytes *around* the flow:
//!
//! | field (observer/observer.proto)         | writer                  | reader               |
//! |-----------------------------------------|-------------------------|----------------------|
//! | `flow.Flow flow = 1`                    | [`put_flow_head`] + the flow's bytes | [`Event::Flow`]: the bytes as sent (a slice of the receive buffer: no copy) |
//! | `relay.NodeStatusEvent node_status = 2` | prost                   | [`Event::NodeStatus`], decoded (small, rare) |
//! | `flow.LostEvent lost_events = 3`        | prost                   | [`Event::LostEvents`], decoded |
//! | `string node_name = 1000`               | [`put_tail`]            | checked UTF-8, kept as bytes |
//! | `google.protobuf.Timestamp time = 1001` | [`put_tail`]            | decoded              |
//!
//! The writer puts the fields in prost's order (by field number) and leaves out what proto3
//! leaves out (an empty `node_name`, an absent `time`), so its bytes are exactly prost's
//! encoding of the equivalent `GetFlowsResponse` (the tests below hold them byte for byte). The
//! gRPC message frame (the 5-byte compression flag and length) is tonic's: every user hands
//! these bytes to tonic through a `prost::Message` whose `encode_raw` copies them.
//!
//! The reader is [`LightResponse`], a `prost::Message` that tonic's codec decodes like the
//! generated type, except that the flow stays encoded; [`flow_time`] reads a flow's own `time`
//! from its bytes when one needs it.

use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::flow::LostEvent;
use crate::observer::GetFlowsResponse;
use crate::observer::get_flows_response::ResponseTypes;
use crate::relay::NodeStatusEvent;
use crate::wkt::Timestamp;

/// Field numbers of `observer.GetFlowsResponse` (observer/observer.proto; checked against the
/// descriptor in `tests/wire_facts.rs`).
pub mod field {
    /// `flow.Flow flow = 1` (oneof `response_types`).
    pub const FLOW: u32 = 1;
    /// `relay.NodeStatusEvent node_status = 2` (oneof `response_types`).
    pub const NODE_STATUS: u32 = 2;
    /// `flow.LostEvent lost_events = 3` (oneof `response_types`).
    pub const LOST_EVENTS: u32 = 3;
    /// `string node_name = 1000`.
    pub const NODE_NAME: u32 = 1000;
    /// `google.protobuf.Timestamp time = 1001`.
    pub const TIME: u32 = 1001;
}

/// `google.protobuf.Timestamp time = 1` of `flow.Flow` (flow/flow.proto), which
/// [`flow_time`] reads.
pub const FLOW_TIME_FIELD: u32 = 1;

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

/// Writes what comes before a flow of `flow_len` bytes: the key and length of field `flow`.
/// The flow's bytes come next, then [`put_tail`].
pub fn put_flow_head(flow_len: usize, out: &mut impl BufMut) {
    encoding::encode_key(field::FLOW, WireType::LengthDelimited, out);
    encoding::encode_varint(flow_len as u64, out);
}

/// The length of [`put_flow_head`]'s bytes.
pub fn flow_head_len(flow_len: usize) -> usize {
    encoding::key_len(field::FLOW) + encoding::encoded_len_varint(flow_len as u64)
}

/// Writes the fields after the event: `node_name` (left out when empty, as prost does) and
/// `time` (when there is one).
pub fn put_tail(node_name: &str, time: Option<&Timestamp>, out: &mut impl BufMut) {
    if !node_name.is_empty() {
        encoding::encode_key(field::NODE_NAME, WireType::LengthDelimited, out);
        encoding::encode_varint(node_name.len() as u64, out);
        out.put_slice(node_name.as_bytes());
    }
    if let Some(t) = time {
        encoding::message::encode(field::TIME, t, out);
    }
}

/// The length of [`put_tail`]'s bytes.
pub fn tail_len(node_name: &str, time: Option<&Timestamp>) -> usize {
    let name = if node_name.is_empty() {
        0
    } else {
        encoding::key_len(field::NODE_NAME)
            + encoding::encoded_len_varint(node_name.len() as u64)
            + node_name.len()
    };
    name + time.map_or(0, |t| encoding::message::encoded_len(field::TIME, t))
}

/// Writes the response carrying the encoded flow `flow` (a message body, without its length),
/// from `node_name` at `time`: the bytes prost writes for the equivalent `GetFlowsResponse`.
pub fn put_flow_response(
    flow: &[u8],
    node_name: &str,
    time: Option<&Timestamp>,
    out: &mut impl BufMut,
) {
    put_flow_head(flow.len(), out);
    out.put_slice(flow);
    put_tail(node_name, time, out);
}

/// The length of [`put_flow_response`]'s bytes for a flow of `flow_len` bytes.
pub fn flow_response_len(flow_len: usize, node_name: &str, time: Option<&Timestamp>) -> usize {
    flow_head_len(flow_len) + flow_len + tail_len(node_name, time)
}

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

/// The `response_types` oneof of a [`LightResponse`].
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A `flow.Flow`, encoded, as it was received.
    Flow(Bytes),
    /// A node status change.
    NodeStatus(Box<NodeStatusEvent>),
    /// Events lost somewhere (an agent's stage, a relay's client buffer).
    LostEvents(Box<LostEvent>),
}

/// `observer.GetFlowsResponse` with the flow left encoded (module docs). Encodes and decodes as
/// a `GetFlowsResponse` (it implements [`prost::Message`] by hand): a flow's bytes are kept as
/// they came, fields this crate's `.proto` does not know included; unknown fields of the
/// response itself are dropped, as prost's generated type drops them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LightResponse {
    /// The oneof `response_types`.
    pub event: Option<Event>,
    /// `node_name`, UTF-8 (checked when decoded): kept as bytes so that decoding it does not
    /// allocate.
    node_name: Bytes,
    /// `time`.
    pub time: Option<Timestamp>,
}

impl LightResponse {
    /// A response of `node_name` at `time`.
    pub fn new(event: Event, node_name: impl Into<String>, time: Option<Timestamp>) -> Self {
        Self {
            event: Some(event),
            node_name: Bytes::from(node_name.into()),
            time,
        }
    }

    /// `node_name`.
    pub fn node_name(&self) -> &str {
        // UTF-8 by construction (`new`, `set_node_name`) or checked by `merge_field`.
        std::str::from_utf8(&self.node_name).unwrap_or_default()
    }

    /// Sets `node_name`.
    pub fn set_node_name(&mut self, name: impl Into<String>) {
        self.node_name = Bytes::from(name.into());
    }

    /// True for a flow.
    pub fn is_flow(&self) -> bool {
        matches!(self.event, Some(Event::Flow(_)))
    }

    /// The encoded `flow.Flow`, for a flow.
    pub fn flow_bytes(&self) -> Option<&Bytes> {
        match &self.event {
            Some(Event::Flow(bytes)) => Some(bytes),
            _ => None,
        }
    }

    /// The event's time: the response's `time`, else the flow's (read from its bytes), else a
    /// LostEvent's `last`.
    pub fn event_time(&self) -> Option<Timestamp> {
        self.time.or_else(|| match &self.event {
            Some(Event::Flow(bytes)) => flow_time(bytes),
            Some(Event::LostEvents(lost)) => lost.last,
            _ => None,
        })
    }

    /// The full `GetFlowsResponse` (decodes the flow).
    pub fn to_response(&self) -> Result<GetFlowsResponse, DecodeError> {
        let response_types = match &self.event {
            None => None,
            Some(Event::Flow(bytes)) => Some(ResponseTypes::Flow(Message::decode(bytes.clone())?)),
            Some(Event::NodeStatus(status)) => Some(ResponseTypes::NodeStatus((**status).clone())),
            Some(Event::LostEvents(lost)) => Some(ResponseTypes::LostEvents(**lost)),
        };
        Ok(GetFlowsResponse {
            node_name: self.node_name().to_string(),
            time: self.time,
            response_types,
        })
    }
}

impl From<GetFlowsResponse> for LightResponse {
    /// Encodes the flow, if any.
    fn from(resp: GetFlowsResponse) -> Self {
        let event = resp.response_types.map(|r| match r {
            ResponseTypes::Flow(flow) => Event::Flow(flow.encode_to_vec().into()),
            ResponseTypes::NodeStatus(status) => Event::NodeStatus(Box::new(status)),
            ResponseTypes::LostEvents(lost) => Event::LostEvents(Box::new(lost)),
        });
        Self {
            event,
            node_name: Bytes::from(resp.node_name),
            time: resp.time,
        }
    }
}

impl Message for LightResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        // By field number, as prost's derive does for `GetFlowsResponse`.
        match &self.event {
            Some(Event::Flow(bytes)) => {
                put_flow_head(bytes.len(), buf);
                buf.put_slice(bytes);
            }
            Some(Event::NodeStatus(status)) => {
                encoding::message::encode(field::NODE_STATUS, status.as_ref(), buf);
            }
            Some(Event::LostEvents(lost)) => {
                encoding::message::encode(field::LOST_EVENTS, lost.as_ref(), buf);
            }
            None => {}
        }
        put_tail(self.node_name(), self.time.as_ref(), buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            field::FLOW => {
                // `copy_to_bytes` on tonic's decode buffer splits its `BytesMut`: the flow's
                // bytes are not copied.
                let mut bytes = Bytes::new();
                encoding::bytes::merge(wire_type, &mut bytes, buf, ctx)?;
                let bytes = match self.event.take() {
                    // A message field seen twice is the merge of both, and concatenated
                    // encodings decode to exactly that.
                    Some(Event::Flow(first)) if !first.is_empty() => {
                        let mut both = Vec::with_capacity(first.len() + bytes.len());
                        both.extend_from_slice(&first);
                        both.extend_from_slice(&bytes);
                        Bytes::from(both)
                    }
                    _ => bytes,
                };
                self.event = Some(Event::Flow(bytes));
                Ok(())
            }
            field::NODE_STATUS => {
                let mut status = match self.event.take() {
                    Some(Event::NodeStatus(status)) => status,
                    _ => Box::default(),
                };
                let merged = encoding::message::merge(wire_type, status.as_mut(), buf, ctx);
                self.event = Some(Event::NodeStatus(status));
                merged
            }
            field::LOST_EVENTS => {
                let mut lost = match self.event.take() {
                    Some(Event::LostEvents(lost)) => lost,
                    _ => Box::default(),
                };
                let merged = encoding::message::merge(wire_type, lost.as_mut(), buf, ctx);
                self.event = Some(Event::LostEvents(lost));
                merged
            }
            field::NODE_NAME => {
                let mut name = Bytes::new();
                encoding::bytes::merge(wire_type, &mut name, buf, ctx)?;
                if std::str::from_utf8(&name).is_err() {
                    // prost's own error for it (`DecodeError` has no public constructor):
                    // decode the same bytes as a `string`.
                    let mut field = Vec::with_capacity(name.len() + 10);
                    encoding::encode_varint(name.len() as u64, &mut field);
                    field.extend_from_slice(&name);
                    let mut text = String::new();
                    let decoded = encoding::string::merge(
                        WireType::LengthDelimited,
                        &mut text,
                        &mut field.as_slice(),
                        DecodeContext::default(),
                    );
                    return Err(decoded.expect_err("the bytes are not UTF-8"));
                }
                self.node_name = name;
                Ok(())
            }
            field::TIME => encoding::message::merge(
                wire_type,
                self.time.get_or_insert_with(Timestamp::default),
                buf,
                ctx,
            ),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let event = match &self.event {
            Some(Event::Flow(bytes)) => flow_head_len(bytes.len()) + bytes.len(),
            Some(Event::NodeStatus(status)) => {
                encoding::message::encoded_len(field::NODE_STATUS, status.as_ref())
            }
            Some(Event::LostEvents(lost)) => {
                encoding::message::encoded_len(field::LOST_EVENTS, lost.as_ref())
            }
            None => 0,
        };
        event + tail_len(self.node_name(), self.time.as_ref())
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// The `time` of an encoded `flow.Flow` (field 1), reading only the flow's top-level field keys
/// and lengths and decoding only that field. `None` when absent or when the bytes are not a
/// well-formed message.
pub fn flow_time(mut flow: &[u8]) -> Option<Timestamp> {
    let mut time: Option<Timestamp> = None;
    let ctx = DecodeContext::default();
    while flow.has_remaining() {
        let (tag, wire_type) = encoding::decode_key(&mut flow).ok()?;
        if tag == FLOW_TIME_FIELD {
            // Every occurrence merges into the field, as a full decode would.
            encoding::message::merge(
                wire_type,
                time.get_or_insert_with(Timestamp::default),
                &mut flow,
                ctx.clone(),
            )
            .ok()?;
        } else {
            encoding::skip_field(wire_type, tag, &mut flow, ctx.clone()).ok()?;
        }
    }
    time
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Flow, Ip, LostEventSource};
    use crate::relay::NodeState;
    use prost::encoding;

    /// A flow whose encoding is about `len` bytes long (a long `source_names` entry pads it).
    fn flow_of(len: usize, time: Option<Timestamp>) -> Flow {
        let mut f = Flow {
            time,
            uuid: "6f1c2a8e-3b1d-4f7e-9a55-0c2d1e4b7a90".into(),
            ..Flow::default()
        };
        let base = f.encoded_len();
        if len > base + 3 {
            f.source_names = vec!["n".repeat(len - base - 3)];
        }
        f
    }

    /// Flow lengths on both sides of the 1/2-byte (128) and 2/3-byte (16384) varint limits,
    /// node names of 0, 1, 127, 128 and 300 bytes, times absent, zero and large.
    fn cases() -> Vec<(Flow, String, Option<Timestamp>)> {
        let times = [
            None,
            Some(Timestamp::default()),
            Some(Timestamp::new(1_700_000_000, 999_999_999)),
        ];
        let mut out = Vec::new();
        for (i, len) in [0, 40, 127, 128, 129, 300, 16_383, 16_384, 16_385, 70_000]
            .into_iter()
            .enumerate()
        {
            for (j, name_len) in [0usize, 1, 127, 128, 300].into_iter().enumerate() {
                let time = times[(i + j) % times.len()];
                let flow = if len == 0 {
                    Flow::default()
                } else {
                    flow_of(len, time)
                };
                out.push((flow, "a".repeat(name_len), time));
            }
        }
        out
    }

    #[test]
    fn the_writer_writes_what_prost_writes() {
        let mut lengths = std::collections::BTreeSet::new();
        for (flow, name, time) in cases() {
            let want = GetFlowsResponse {
                node_name: name.clone(),
                time,
                response_types: Some(ResponseTypes::Flow(flow.clone())),
            }
            .encode_to_vec();
            let body = flow.encode_to_vec();
            lengths.insert(encoding::encoded_len_varint(body.len() as u64));
            let mut got = Vec::new();
            put_flow_response(&body, &name, time.as_ref(), &mut got);
            assert_eq!(got, want, "flow of {} bytes, name {name:?}", body.len());
            assert_eq!(
                flow_response_len(body.len(), &name, time.as_ref()),
                want.len()
            );
            // In pieces, as a writer that splices the flow does.
            let mut pieces = Vec::new();
            put_flow_head(body.len(), &mut pieces);
            assert_eq!(pieces.len(), flow_head_len(body.len()));
            pieces.extend_from_slice(&body);
            put_tail(&name, time.as_ref(), &mut pieces);
            assert_eq!(pieces, want);
            // And through the reader's own encoding.
            let light = LightResponse::new(Event::Flow(body.into()), name, time);
            assert_eq!(light.encode_to_vec(), want);
            assert_eq!(light.encoded_len(), want.len());
        }
        assert_eq!(
            lengths.into_iter().collect::<Vec<_>>(),
            vec![1, 2, 3],
            "flow lengths cover 1-, 2- and 3-byte varints"
        );
    }

    #[test]
    fn the_reader_reads_what_prost_wrote() {
        let mut all: Vec<GetFlowsResponse> = cases()
            .into_iter()
            .map(|(flow, node_name, time)| GetFlowsResponse {
                node_name,
                time,
                response_types: Some(ResponseTypes::Flow(flow)),
            })
            .collect();
        // The node status, the loss notice and the empty response of `samples`.
        all.extend(samples().into_iter().skip(2));
        for full in all {
            let wire = Bytes::from(full.encode_to_vec());
            let light = LightResponse::decode(wire.clone()).expect("decodes");
            assert_eq!(light.to_response().expect("the flow decodes"), full);
            assert_eq!(light.node_name(), full.node_name);
            assert_eq!(light.time, full.time);
            assert_eq!(light.encode_to_vec(), wire, "re-encoded byte for byte");
            if let Some(ResponseTypes::Flow(flow)) = &full.response_types {
                let bytes = light.flow_bytes().expect("a flow");
                assert_eq!(bytes.as_ref(), flow.encode_to_vec().as_slice());
                assert!(
                    wire.as_ptr_range().contains(&bytes.as_ptr()) || bytes.is_empty(),
                    "the flow is a slice of the input, not a copy"
                );
                assert_eq!(flow_time(bytes), flow.time);
            }
        }
    }

    fn flow(t: Timestamp) -> Flow {
        Flow {
            time: Some(t),
            uuid: "u-1".into(),
            node_name: "node-a".into(),
            ip: Some(Ip {
                source: "10.0.0.1".into(),
                destination: "1.0.0.1".into(),
                ..Default::default()
            }),
            source_names: vec!["a".repeat(300)],
            ..Default::default()
        }
    }

    fn samples() -> Vec<GetFlowsResponse> {
        let t = Timestamp::new(1_700_000_000, 123);
        vec![
            GetFlowsResponse {
                node_name: "node-a".into(),
                time: Some(t),
                response_types: Some(ResponseTypes::Flow(flow(t))),
            },
            GetFlowsResponse {
                node_name: String::new(),
                time: None,
                response_types: Some(ResponseTypes::Flow(Flow::default())),
            },
            GetFlowsResponse {
                node_name: "relay".into(),
                time: Some(t),
                response_types: Some(ResponseTypes::NodeStatus(NodeStatusEvent {
                    state_change: NodeState::NodeConnected as i32,
                    node_names: vec!["a".into(), "b".into()],
                    message: "m".into(),
                })),
            },
            GetFlowsResponse {
                node_name: "node-a".into(),
                time: Some(Timestamp::default()),
                response_types: Some(ResponseTypes::LostEvents(LostEvent {
                    source: LostEventSource::HubbleRingBuffer as i32,
                    num_events_lost: 7,
                    cpu: Some(1),
                    first: Some(t),
                    last: Some(t),
                })),
            },
            GetFlowsResponse::default(),
        ]
    }

    #[test]
    fn decodes_and_encodes_like_the_generated_type() {
        for full in samples() {
            let encoded = full.encode_to_vec();
            let relayed = LightResponse::decode(encoded.as_slice()).unwrap();
            assert_eq!(relayed.encoded_len(), encoded.len());
            assert_eq!(relayed.encode_to_vec(), encoded, "{full:?}");
            assert_eq!(relayed.to_response().unwrap(), full);
            assert_eq!(LightResponse::from(full.clone()), relayed);
        }
    }

    #[test]
    fn flow_bytes_are_kept_as_sent_and_not_copied() {
        let t = Timestamp::new(5, 6);
        // A flow with a field our `.proto` does not know (say, a newer Hubble's).
        let mut flow_bytes = flow(t).encode_to_vec();
        encoding::string::encode(4242, &"from the future".to_string(), &mut flow_bytes);
        let mut wire = Vec::new();
        encoding::bytes::encode(1, &flow_bytes, &mut wire);
        encoding::string::encode(1000, &"node-a".to_string(), &mut wire);
        encoding::message::encode(1001, &t, &mut wire);
        // An unknown field of the response itself (Hubble's agent_event = 4): dropped,
        // as prost's generated type drops it.
        encoding::bytes::encode(4, &vec![8u8, 1], &mut wire);
        let wire = Bytes::from(wire);
        let relayed = LightResponse::decode(wire.clone()).unwrap();
        let forwarded = relayed.flow_bytes().unwrap();
        assert_eq!(forwarded.as_ref(), flow_bytes.as_slice());
        let range = wire.as_ptr_range();
        assert!(
            range.contains(&forwarded.as_ptr()),
            "zero-copy slice of the input"
        );
        assert_eq!(relayed.node_name(), "node-a");
        assert_eq!(relayed.time, Some(t));
        let out = relayed.encode_to_vec();
        assert_eq!(out, wire[..wire.len() - 4]);
        let full = GetFlowsResponse::decode(out.as_slice()).unwrap();
        assert_eq!(
            full.response_types,
            Some(ResponseTypes::Flow(
                Flow::decode(flow_bytes.as_slice()).unwrap()
            ))
        );
    }

    #[test]
    fn a_flow_field_seen_twice_merges() {
        let t = Timestamp::new(9, 0);
        let first = Flow {
            uuid: "x".into(),
            ..Default::default()
        };
        let second = Flow {
            time: Some(t),
            ..Default::default()
        };
        let mut wire = Vec::new();
        encoding::message::encode(1, &first, &mut wire);
        encoding::message::encode(1, &second, &mut wire);
        let generated = GetFlowsResponse::decode(wire.as_slice()).unwrap();
        let relayed = LightResponse::decode(wire.as_slice()).unwrap();
        assert_eq!(relayed.to_response().unwrap(), generated);
        assert_eq!(relayed.event_time(), Some(t));
    }

    #[test]
    fn event_time_falls_back_to_the_flow_and_the_lost_event() {
        let t = Timestamp::new(1_700_000_000, 999);
        let resp = LightResponse::from(GetFlowsResponse {
            time: None,
            response_types: Some(ResponseTypes::Flow(flow(t))),
            ..Default::default()
        });
        assert_eq!(resp.event_time(), Some(t));
        let lost = LightResponse::new(
            Event::LostEvents(Box::new(LostEvent {
                last: Some(t),
                ..Default::default()
            })),
            "n",
            None,
        );
        assert_eq!(lost.event_time(), Some(t));
        assert_eq!(flow_time(&Flow::default().encode_to_vec()), None);
        assert_eq!(flow_time(&[0x0a, 0x05, 0x08]), None, "truncated");
    }

    #[test]
    fn a_node_name_must_be_utf8() {
        let mut wire = Vec::new();
        encoding::bytes::encode(1000, &vec![0xff, 0xfe], &mut wire);
        assert!(LightResponse::decode(wire.as_slice()).is_err());
        assert!(GetFlowsResponse::decode(wire.as_slice()).is_err());
    }
}
