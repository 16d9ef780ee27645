//! GetFlows on the wire without decoding the flows.
//!
//! The relay sorts and forwards flows; it never looks inside them. Filters,
//! field masks, `number`, `first`, `since` and `until` are applied by the
//! agents (the relay only validates the filters, once, before fanning out),
//! so decoding every `flow.Flow` into prost structs and encoding it again
//! for the client would only cost allocations and copies (it did: 6–9 µs of
//! relay CPU per flow). [`RelayedResponse`] is `observer.GetFlowsResponse`
//! with the flow left encoded: the proto crate's
//! [`LightResponse`](flowscope_proto::get_flows::LightResponse), whose module
//! documents the fields, shared with the agent (which writes the same bytes
//! around the flows it encodes) and the benchmarks.
//!
//! The flow bytes are not validated: gRPC's framing guarantees they are the
//! bytes the agent encoded, and the relay does not interpret them. A full
//! decode happens only in [`RelayedResponse::to_response`], used by the
//! `Observer` trait implementation, which the relay's server does not route
//! GetFlows to (see `observer::ObserverService`). Only when a flow's response
//! carries no `time` (our agents always set it) is the flow's own `time`
//! read, by walking the flow's top-level fields: see [`flow_time`].

use flowscope_proto::observer::GetFlowsRequest;
use flowscope_proto::observer::observer_server;
use prost::bytes::Bytes;
use tonic::codegen::{Body, StdError, http};
use tonic::{Status, Streaming};
use tonic_prost::ProstCodec;

use crate::peer::MAX_MESSAGE;

pub use flowscope_proto::get_flows::{Event, flow_time};

/// `observer.GetFlowsResponse` with the flow left encoded, as the relay receives
/// it from agents and sends it to clients (module docs).
pub type RelayedResponse = flowscope_proto::get_flows::LightResponse;

/// The gRPC path of `observer.Observer/GetFlows`.
pub const GET_FLOWS_PATH: &str = "/observer.Observer/GetFlows";

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
    use flowscope_proto::flow::{Flow, Ip, LostEvent, LostEventSource};
    use flowscope_proto::observer::GetFlowsResponse;
    use flowscope_proto::observer::get_flows_response::ResponseTypes;
    use flowscope_proto::relay::{NodeState, NodeStatusEvent};
    use flowscope_proto::wkt::Timestamp;
    use prost::Message;
    use prost::encoding;

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
