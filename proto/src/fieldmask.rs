//! Field masks on `flow.Flow`: `GetFlowsRequest.field_mask` and the export's field mask.
//!
//! Hubble builds its mask with `fieldmaskpb` against `flow.Flow` (`fieldmask.New` in cilium's
//! `pkg/hubble/parser/fieldmask`): a path that does not name a field is refused, and so is a
//! path that goes on past a field that is not a singular message. [`FlowMask::new`] checks the
//! same, against the descriptors of our `.proto` files (the same names and numbers as Hubble's),
//! and names the offending path; the agent and the relay both refuse such a request with
//! InvalidArgument, once, before any flow is read.
//!
//! Applying a mask keeps, for each path, the field if the flow has it (Hubble's `Copy`: a leaf is
//! copied when present, a message on the way is kept with only the masked fields inside). It
//! works on the encoded flow, field number by field number, so it cannot fail on a field it does
//! not know how to print, and a flow's bytes go to the client without a decode.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, LazyLock},
};

use prost::{
    Message as _,
    bytes::BufMut as _,
    encoding::{self, WireType},
};
use prost_types::{
    DescriptorProto, FileDescriptorSet,
    field_descriptor_proto::{Label, Type},
};

use crate::flow::Flow;

/// The message every path starts from.
const FLOW_MESSAGE: &str = ".flow.Flow";

/// A path that names no field of `flow.Flow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPath {
    /// The path as given.
    pub path: String,
    /// The message the failing component was looked up in (`flow.Flow`, `flow.IP`, ...), or the
    /// field that has no fields below it.
    pub within: String,
    /// The component that is not a field there.
    pub component: String,
}

impl fmt::Display for InvalidPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid field mask path {:?}: {} has no field {:?}",
            self.path, self.within, self.component
        )
    }
}

impl std::error::Error for InvalidPath {}

/// One message of the descriptor set: field name -> (number, message type name of a singular
/// message field).
struct MessageFields(BTreeMap<String, (u32, Option<String>)>);

/// Every message of our descriptor set by full name (`.flow.Flow`).
static MESSAGES: LazyLock<BTreeMap<String, MessageFields>> = LazyLock::new(|| {
    let set = FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set built into this crate decodes");
    let mut out = BTreeMap::new();
    for file in &set.file {
        let prefix = match file.package() {
            "" => String::new(),
            p => format!(".{p}"),
        };
        for m in &file.message_type {
            add_message(&prefix, m, &mut out);
        }
    }
    out
});

fn add_message(prefix: &str, m: &DescriptorProto, out: &mut BTreeMap<String, MessageFields>) {
    let name = format!("{prefix}.{}", m.name());
    let fields = m
        .field
        .iter()
        .map(|f| {
            // fieldmaskpb: a repeated field (maps included) may only end a path.
            let message = (f.r#type() == Type::Message && f.label() != Label::Repeated)
                .then(|| f.type_name().to_owned());
            (f.name().to_owned(), (f.number() as u32, message))
        })
        .collect();
    for nested in &m.nested_type {
        add_message(&name, nested, out);
    }
    out.insert(name, MessageFields(fields));
}

/// What to keep of one message: field number -> everything (`None`) or some of its fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node(BTreeMap<u32, Option<Node>>);

impl Node {
    /// Adds a path (as field numbers); a shorter path wins over a longer one below it, as
    /// `fieldmaskpb`'s Normalize does.
    fn add(&mut self, numbers: &[u32]) {
        let Some((first, rest)) = numbers.split_first() else {
            return;
        };
        if rest.is_empty() {
            self.0.insert(*first, None);
            return;
        }
        // A `None` there means the whole field is kept already: nothing to add below it.
        if let Some(child) = self
            .0
            .entry(*first)
            .or_insert_with(|| Some(Node::default()))
        {
            child.add(rest);
        }
    }
}

/// A validated field mask on `flow.Flow`. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct FlowMask {
    /// `None`: no mask, every field is kept.
    root: Option<Arc<Node>>,
}

impl FlowMask {
    /// A mask from the request's paths (`source.pod_name`, `IP`, `l4.TCP.flags`); no paths
    /// means no mask. Fails on the first path that names no field of `flow.Flow`.
    pub fn new<S: AsRef<str>>(paths: &[S]) -> Result<Self, InvalidPath> {
        if paths.is_empty() {
            return Ok(FlowMask::default());
        }
        let mut root = Node::default();
        for path in paths {
            root.add(&resolve(path.as_ref())?);
        }
        Ok(FlowMask {
            root: Some(Arc::new(root)),
        })
    }

    /// True when the mask keeps everything.
    pub fn is_all(&self) -> bool {
        self.root.is_none()
    }

    /// Keeps the masked fields of an encoded `flow.Flow`, appending the result to `out`. Fields
    /// the descriptors do not know are not in any mask, so they go. Fails only on bytes that
    /// are not a protobuf message.
    pub fn apply_encoded(&self, flow: &[u8], out: &mut Vec<u8>) -> Result<(), prost::DecodeError> {
        match &self.root {
            None => {
                out.extend_from_slice(flow);
                Ok(())
            }
            Some(root) => keep(root, flow, out),
        }
    }

    /// The masked copy of `flow`.
    pub fn apply(&self, flow: &Flow) -> Flow {
        if self.is_all() {
            return flow.clone();
        }
        let mut out = Vec::new();
        // Both steps work on bytes prost has just written: a failure is a bug, not bad input.
        self.apply_encoded(&flow.encode_to_vec(), &mut out)
            .expect("a flow prost encoded is a valid message");
        Flow::decode(out.as_slice()).expect("fields of a valid flow make a valid flow")
    }
}

/// A path's field numbers, checked the way `fieldmaskpb.FieldMask.IsValid` checks it.
fn resolve(path: &str) -> Result<Vec<u32>, InvalidPath> {
    let mut message = Some(FLOW_MESSAGE.to_owned());
    let mut within = "flow.Flow".to_owned();
    let mut numbers = Vec::new();
    for component in path.split('.') {
        let invalid = |within: &str| InvalidPath {
            path: path.to_owned(),
            within: within.to_owned(),
            component: component.to_owned(),
        };
        let Some(fields) = message.as_ref().and_then(|m| MESSAGES.get(m)) else {
            return Err(invalid(&within));
        };
        let Some((number, next)) = fields.0.get(component) else {
            return Err(invalid(&within));
        };
        numbers.push(*number);
        within = match next {
            Some(m) => m.trim_start_matches('.').to_owned(),
            None => format!("{within}.{component}"),
        };
        message = next.clone();
    }
    Ok(numbers)
}

/// Copies the fields of `msg` that `node` keeps into `out` (recursing into masked messages).
fn keep(node: &Node, mut msg: &[u8], out: &mut Vec<u8>) -> Result<(), prost::DecodeError> {
    while !msg.is_empty() {
        let field_start = msg;
        let (tag, wire_type) = encoding::decode_key(&mut msg)?;
        let value_start = msg;
        encoding::skip_field(wire_type, tag, &mut msg, encoding::DecodeContext::default())?;
        let field = &field_start[..field_start.len() - msg.len()];
        match node.0.get(&tag) {
            None => {}
            Some(None) => out.put_slice(field),
            Some(Some(child)) => {
                // A singular message field (validated): its value is length-delimited.
                let mut value = value_start;
                let len = encoding::decode_varint(&mut value)? as usize;
                let mut inner = Vec::with_capacity(len);
                keep(child, &value[..len], &mut inner)?;
                encoding::encode_key(tag, WireType::LengthDelimited, out);
                encoding::encode_varint(inner.len() as u64, out);
                out.put_slice(&inner);
            }
        }
    }
    Ok(())
}

/// Field paths written as an option's value (`--export-fieldmask`, `--otlp-field-mask`):
/// separated by commas or spaces.
pub fn parse_paths(s: &str) -> Vec<String> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Endpoint, Ip, Layer4, TcpFlags, TraceObservationPoint, layer4};
    use crate::wkt::Timestamp;

    fn flow() -> Flow {
        Flow {
            time: Some(Timestamp::new(1_700_000_000, 5)),
            uuid: "u".into(),
            node_name: "node-1".into(),
            ip: Some(Ip {
                source: "10.0.0.1".into(),
                destination: "10.0.0.2".into(),
                source_xlated: "198.51.100.10".into(),
                ..Ip::default()
            }),
            l4: Some(Layer4::tcp(
                40000,
                80,
                TcpFlags {
                    syn: true,
                    ..TcpFlags::default()
                },
            )),
            source: Some(Endpoint {
                pod_name: "a".into(),
                namespace: "ns".into(),
                labels: vec!["k8s:app=web".into()],
                ..Endpoint::default()
            }),
            is_reply: Some(false),
            trace_observation_point: TraceObservationPoint::ToNetwork as i32,
            ..Flow::default()
        }
    }

    #[test]
    fn keeps_only_the_masked_fields() {
        let m = FlowMask::new(&[
            "node_name",
            "IP.source",
            "source.pod_name",
            "l4.TCP.flags",
            "is_reply",
            "time",
        ])
        .unwrap();
        let out = m.apply(&flow());
        let want = Flow {
            time: flow().time,
            node_name: "node-1".into(),
            ip: Some(Ip {
                source: "10.0.0.1".into(),
                ..Ip::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(layer4::Protocol::Tcp(crate::flow::Tcp {
                    flags: Some(TcpFlags {
                        syn: true,
                        ..TcpFlags::default()
                    }),
                    ..Default::default()
                })),
            }),
            source: Some(Endpoint {
                pod_name: "a".into(),
                ..Endpoint::default()
            }),
            is_reply: Some(false),
            ..Flow::default()
        };
        assert_eq!(out, want);
    }

    #[test]
    fn a_shorter_path_wins_and_repeated_fields_are_kept_whole() {
        let m = FlowMask::new(&["source.pod_name", "source", "source.labels"]).unwrap();
        let out = m.apply(&flow());
        assert_eq!(out.source, flow().source);
        assert!(out.ip.is_none() && out.uuid.is_empty());
    }

    #[test]
    fn no_paths_keep_everything() {
        let m = FlowMask::new::<&str>(&[]).unwrap();
        assert!(m.is_all());
        assert_eq!(m.apply(&flow()), flow());
    }

    #[test]
    fn every_top_level_field_of_flow_is_a_valid_path() {
        // The fields a recent Hubble CLI may ask for, ours included.
        for path in [
            "time",
            "uuid",
            "emitter",
            "verdict",
            "drop_reason_desc",
            "ethernet",
            "IP",
            "l4",
            "tunnel",
            "source",
            "destination",
            "Type",
            "node_name",
            "node_labels",
            "source_names",
            "destination_names",
            "l7",
            "is_reply",
            "event_type",
            "source_service",
            "destination_service",
            "traffic_direction",
            "trace_observation_point",
            "trace_reason",
            "file",
            "ip_trace_id",
            "interface",
            "trace_context",
            "sock_xlate_point",
            "socket_cookie",
            "cgroup_id",
            "Summary",
            "extensions",
            "egress_allowed_by",
            "policy_log",
            "aggregate",
            "IP.source_xlated",
            "l4.TCP.flags.SYN",
            "l7.http.headers",
            "source.workloads",
            "interface.name",
        ] {
            FlowMask::new(&[path]).unwrap_or_else(|e| panic!("{path}: {e}"));
        }
    }

    #[test]
    fn a_path_that_names_no_field_is_refused_by_name() {
        let e = FlowMask::new(&["time", "source.pod"]).unwrap_err();
        assert_eq!(e.path, "source.pod");
        assert_eq!(
            e.to_string(),
            "invalid field mask path \"source.pod\": flow.Endpoint has no field \"pod\""
        );
        for bad in [
            "",
            "nope",
            "ip.source", // the field is `IP`
            "time.seconds.nanos",
            "node_name.x",
            "source.labels.x", // below a repeated field
            "source..pod_name",
        ] {
            let e = FlowMask::new(&[bad]).expect_err(bad);
            assert_eq!(e.path, bad);
        }
    }

    #[test]
    fn a_flow_without_the_masked_fields_is_empty_as_in_hubble() {
        // Hubble copies a masked field only when the flow has it.
        let m = FlowMask::new(&["l7", "destination.pod_name"]).unwrap();
        assert_eq!(m.apply(&flow()), Flow::default());
    }

    #[test]
    fn unknown_fields_and_garbage() {
        let m = FlowMask::new(&["uuid"]).unwrap();
        let mut bytes = flow().encode_to_vec();
        encoding::string::encode(99_999, &"future".to_owned(), &mut bytes);
        let mut out = Vec::new();
        m.apply_encoded(&bytes, &mut out).unwrap();
        assert_eq!(Flow::decode(out.as_slice()).unwrap().uuid, "u");
        assert!(
            m.apply_encoded(&bytes[..bytes.len() - 1], &mut out)
                .is_err()
        );
    }
}
