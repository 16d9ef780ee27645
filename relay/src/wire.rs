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
    use flowscope_proto::flow::{Flow, Ip};
    use flowscope_proto::observer::GetFlowsResponse;
    use flowscope_proto::observer::get_flows_response::ResponseTypes;
    use flowscope_proto::wkt::Timestamp;
    use prost::Message;

    use super::*;

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
}
