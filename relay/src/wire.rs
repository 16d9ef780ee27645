//! GetFlows on the wire without decoding the flows.
//!
//! The relay sorts and forwards flows; it never looks inside them. Filters,
//! field masks, `number`, `first`, `since` and `until` are applied by the
//! agents (the relay only validates the filters, once, before fanning out),
//! so decoding every `flow.Flow` into prost structs and encoding it again
//! for the client would only cost allocations and copies (it did: 6–9 µs of
//! relay CPU per flow). [`RelayedResponse`] is `observer.GetFlowsResponse`
//! as the relay needs it:
//!
//! | field (observer.proto)           | here                                  |
//! |----------------------------------|---------------------------------------|
//! | `flow.Flow flow = 1`             | [`Event::Flow`]: the encoded bytes, as the agent sent them (a slice of tonic's receive buffer: no copy) |
//! | `relay.NodeStatusEvent node_status = 2` | [`Event::NodeStatus`], decoded (small, rare) |
//! | `flow.LostEvent lost_events = 3` | [`Event::LostEvents`], decoded (its `last` is its sort key) |
//! | `string node_name = 1000`        | decoded (the relay fills it when empty and learns node names from it) |
//! | `google.protobuf.Timestamp time = 1001` | decoded: the sort key |
//!
//! Encoding writes the same fields in the same order as prost's generated
//! `GetFlowsResponse` (by field number), the flow's bytes unchanged as field
//! 1, so a client decodes exactly the `Flow` the agent encoded (fields this
//! relay's `.proto` does not know included). Unknown fields of the
//! `GetFlowsResponse` itself are dropped, as prost's generated type does.
//!
//! Only when a flow's response carries no `time` (our agents always set it)
//! is the flow's own `time` (field 1 of `flow.Flow`) read, by walking the
//! flow's top-level fields: see [`flow_time`].
//!
//! The flow bytes are not validated: gRPC's framing guarantees they are the
//! bytes the agent encoded, and the relay does not interpret them. A full
//! decode happens only in [`RelayedResponse::to_response`], used by the
//! `Observer` trait implementation, which the relay's server does not route
//! GetFlows to (see `observer::ObserverService`).

use flowscope_proto::flow::LostEvent;
use flowscope_proto::observer::get_flows_response::ResponseTypes;
use flowscope_proto::observer::observer_server;
use flowscope_proto::observer::{GetFlowsRequest, GetFlowsResponse};
use flowscope_proto::relay::NodeStatusEvent;
use flowscope_proto::wkt::Timestamp;
use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};
use tonic::codegen::{Body, StdError, http};
use tonic::{Status, Streaming};
use tonic_prost::ProstCodec;

use crate::peer::MAX_MESSAGE;

/// The gRPC path of `observer.Observer/GetFlows`.
pub const GET_FLOWS_PATH: &str = "/observer.Observer/GetFlows";

/// Field numbers of `observer.GetFlowsResponse` (observer/observer.proto).
mod tag {
    pub const FLOW: u32 = 1;
    pub const NODE_STATUS: u32 = 2;
    pub const LOST_EVENTS: u32 = 3;
    pub const NODE_NAME: u32 = 1000;
    pub const TIME: u32 = 1001;
    /// `google.protobuf.Timestamp time = 1` of `flow.Flow` (flow/flow.proto).
    pub const FLOW_TIME: u32 = 1;
}

/// The `response_types` oneof of a [`RelayedResponse`].
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A `flow.Flow`, encoded, as the agent sent it.
    Flow(Bytes),
    /// A node status change (the relay's own, or an agent's).
    NodeStatus(Box<NodeStatusEvent>),
    /// Events lost somewhere (an agent's stage, or the relay's client buffer).
    LostEvents(Box<LostEvent>),
}

/// `observer.GetFlowsResponse` with the flow left encoded (module docs).
/// Encodes and decodes as a `GetFlowsResponse` (it implements
/// [`prost::Message`] by hand).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RelayedResponse {
    /// The oneof `response_types`.
    pub event: Option<Event>,
    /// `node_name`, UTF-8 (checked when decoded): kept as bytes so that
    /// decoding it does not allocate.
    node_name: Bytes,
    /// `time`.
    pub time: Option<Timestamp>,
}

impl RelayedResponse {
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

    /// The event's time: the response's `time`, else the flow's (read from
    /// its bytes), else a LostEvent's `last`.
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

impl From<GetFlowsResponse> for RelayedResponse {
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

impl Message for RelayedResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        // By field number, as prost's derive does for `GetFlowsResponse`.
        match &self.event {
            Some(Event::Flow(bytes)) => encoding::bytes::encode(tag::FLOW, bytes, buf),
            Some(Event::NodeStatus(status)) => {
                encoding::message::encode(tag::NODE_STATUS, status.as_ref(), buf);
            }
            Some(Event::LostEvents(lost)) => {
                encoding::message::encode(tag::LOST_EVENTS, lost.as_ref(), buf);
            }
            None => {}
        }
        if !self.node_name.is_empty() {
            encoding::bytes::encode(tag::NODE_NAME, &self.node_name, buf);
        }
        if let Some(time) = &self.time {
            encoding::message::encode(tag::TIME, time, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            tag::FLOW => {
                // `copy_to_bytes` on tonic's decode buffer splits its
                // `BytesMut`: the flow's bytes are not copied.
                let mut bytes = Bytes::new();
                encoding::bytes::merge(wire_type, &mut bytes, buf, ctx)?;
                let bytes = match self.event.take() {
                    // A message field seen twice is the merge of both, and
                    // concatenated encodings decode to exactly that.
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
            tag::NODE_STATUS => {
                let mut status = match self.event.take() {
                    Some(Event::NodeStatus(status)) => status,
                    _ => Box::default(),
                };
                let merged = encoding::message::merge(wire_type, status.as_mut(), buf, ctx);
                self.event = Some(Event::NodeStatus(status));
                merged
            }
            tag::LOST_EVENTS => {
                let mut lost = match self.event.take() {
                    Some(Event::LostEvents(lost)) => lost,
                    _ => Box::default(),
                };
                let merged = encoding::message::merge(wire_type, lost.as_mut(), buf, ctx);
                self.event = Some(Event::LostEvents(lost));
                merged
            }
            tag::NODE_NAME => {
                let mut name = Bytes::new();
                encoding::bytes::merge(wire_type, &mut name, buf, ctx)?;
                if std::str::from_utf8(&name).is_err() {
                    // prost's own error for it (`DecodeError` has no public
                    // constructor): decode the same bytes as a `string`.
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
            tag::TIME => encoding::message::merge(
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
            Some(Event::Flow(bytes)) => encoding::bytes::encoded_len(tag::FLOW, bytes),
            Some(Event::NodeStatus(status)) => {
                encoding::message::encoded_len(tag::NODE_STATUS, status.as_ref())
            }
            Some(Event::LostEvents(lost)) => {
                encoding::message::encoded_len(tag::LOST_EVENTS, lost.as_ref())
            }
            None => 0,
        };
        let name = if self.node_name.is_empty() {
            0
        } else {
            encoding::bytes::encoded_len(tag::NODE_NAME, &self.node_name)
        };
        let time = self
            .time
            .as_ref()
            .map_or(0, |time| encoding::message::encoded_len(tag::TIME, time));
        event + name + time
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// The `time` of an encoded `flow.Flow` (field 1), reading only the flow's
/// top-level field keys and lengths and decoding only that field. `None`
/// when absent or when the bytes are not a well-formed message.
pub fn flow_time(mut flow: &[u8]) -> Option<Timestamp> {
    let mut time: Option<Timestamp> = None;
    let ctx = DecodeContext::default();
    while flow.has_remaining() {
        let (tag, wire_type) = encoding::decode_key(&mut flow).ok()?;
        if tag == tag::FLOW_TIME {
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

/// Opens GetFlows on an agent, receiving [`RelayedResponse`]s: what
/// `ObserverClient::get_flows` does, with this module's message type.
pub(crate) async fn open_get_flows<T>(
    service: T,
    request: tonic::Request<GetFlowsRequest>,
) -> Result<tonic::Response<Streaming<RelayedResponse>>, Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    let mut grpc = tonic::client::Grpc::new(service)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("Service was not ready: {}", e.into())))?;
    let mut request = request;
    request.extensions_mut().insert(tonic::GrpcMethod::new(
        observer_server::SERVICE_NAME,
        "GetFlows",
    ));
    let codec = ProstCodec::<GetFlowsRequest, RelayedResponse>::default();
    grpc.server_streaming(
        request,
        http::uri::PathAndQuery::from_static(GET_FLOWS_PATH),
        codec,
    )
    .await
}

#[cfg(test)]
mod tests {
    use flowscope_proto::flow::{Flow, Ip, LostEventSource};
    use flowscope_proto::relay::NodeState;

    use super::*;

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
            let relayed = RelayedResponse::decode(encoded.as_slice()).unwrap();
            assert_eq!(relayed.encoded_len(), encoded.len());
            assert_eq!(relayed.encode_to_vec(), encoded, "{full:?}");
            assert_eq!(relayed.to_response().unwrap(), full);
            assert_eq!(RelayedResponse::from(full.clone()), relayed);
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
        let relayed = RelayedResponse::decode(wire.clone()).unwrap();
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
        let relayed = RelayedResponse::decode(wire.as_slice()).unwrap();
        assert_eq!(relayed.to_response().unwrap(), generated);
        assert_eq!(relayed.event_time(), Some(t));
    }

    #[test]
    fn event_time_falls_back_to_the_flow_and_the_lost_event() {
        let t = Timestamp::new(1_700_000_000, 999);
        let resp = RelayedResponse::from(GetFlowsResponse {
            time: None,
            response_types: Some(ResponseTypes::Flow(flow(t))),
            ..Default::default()
        });
        assert_eq!(resp.event_time(), Some(t));
        let lost = RelayedResponse::new(
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

    /// The wire work of the relay for one flow, old way (decode the whole
    /// response, encode it again) and now (this module), on a flow like the
    /// agent's (~0.5 KiB): `cargo test --release -p flowscope-relay --lib
    /// wire_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement: run it on a release build"]
    fn wire_cost() {
        use flowscope_proto::flow::layer4::Protocol;
        use flowscope_proto::flow::{Endpoint, Ethernet, Layer4, NetworkInterface, Tcp, TcpFlags};
        use std::hint::black_box;
        use std::time::Instant;

        let labels = |app: &str| {
            vec![
                format!("k8s:app={app}"),
                "k8s:io.kubernetes.pod.namespace=default".to_string(),
                "k8s:io.cilium.k8s.policy.serviceaccount=default".to_string(),
            ]
        };
        let t = Timestamp::now();
        let flow = Flow {
            time: Some(t),
            uuid: "6f1c2a8e-3b1d-4f7e-9a55-0c2d1e4b7a90".into(),
            verdict: 1,
            ethernet: Some(Ethernet {
                source: "3e:1f:aa:10:00:01".into(),
                destination: "3e:1f:aa:10:00:02".into(),
            }),
            ip: Some(Ip {
                source: "10.244.0.213".into(),
                destination: "1.0.0.1".into(),
                ip_version: 1,
                ..Default::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(Protocol::Tcp(Tcp {
                    source_port: 41_234,
                    destination_port: 80,
                    flags: Some(TcpFlags {
                        syn: true,
                        ..Default::default()
                    }),
                })),
            }),
            source: Some(Endpoint {
                id: 1234,
                identity: 51_234,
                namespace: "default".into(),
                labels: labels("pod-a"),
                pod_name: "pod-a".into(),
                ..Default::default()
            }),
            destination: Some(Endpoint {
                identity: 2,
                labels: vec!["reserved:world".into()],
                ..Default::default()
            }),
            r#type: 1,
            node_name: "node-1".into(),
            event_type: None,
            trace_observation_point: 5,
            trace_reason: 1,
            is_reply: Some(false),
            interface: Some(NetworkInterface {
                index: 7,
                name: "lxc1a2b3c4d5e6f".into(),
            }),
            ..Default::default()
        };
        let full = GetFlowsResponse {
            node_name: "node-1".into(),
            time: Some(t),
            response_types: Some(ResponseTypes::Flow(flow)),
        };
        let wire = Bytes::from(full.encode_to_vec());
        let n = 200_000;
        let mut out = Vec::with_capacity(4096);
        let mut time = |what: &str, f: &mut dyn FnMut(&mut Vec<u8>)| {
            let start = Instant::now();
            for _ in 0..n {
                out.clear();
                f(&mut out);
                black_box(&out);
            }
            let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
            println!("{what}: {ns:.0} ns per flow ({} bytes)", wire.len());
        };
        time("decode + encode GetFlowsResponse", &mut |out| {
            let resp = GetFlowsResponse::decode(black_box(wire.clone())).unwrap();
            resp.encode(out).unwrap();
        });
        time("decode + encode RelayedResponse", &mut |out| {
            let resp = RelayedResponse::decode(black_box(wire.clone())).unwrap();
            resp.encode(out).unwrap();
        });
    }

    #[test]
    fn a_node_name_must_be_utf8() {
        let mut wire = Vec::new();
        encoding::bytes::encode(1000, &vec![0xff, 0xfe], &mut wire);
        assert!(RelayedResponse::decode(wire.as_slice()).is_err());
        assert!(GetFlowsResponse::decode(wire.as_slice()).is_err());
    }
}
