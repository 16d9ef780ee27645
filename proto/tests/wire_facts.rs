//! The descriptors we ship must carry Hubble's names and numbers.
//!
//! `every_fact_of_the_wire_facts_document` parses `docs/hubble-wire.md` (the
//! repository's reference of Hubble's wire API) and checks every message,
//! field (number, type, label, oneof, deprecation), reserved range and enum
//! value it lists against `FILE_DESCRIPTOR_SET`; it fails if the document is
//! missing. The other tests are fixed spot checks.

use std::collections::HashMap;
use std::path::PathBuf;

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};

/// Messages and enums of the descriptor set by full name (`flow.Tunnel.Protocol`).
struct Index {
    messages: HashMap<String, DescriptorProto>,
    enums: HashMap<String, EnumDescriptorProto>,
    files: Vec<prost_types::FileDescriptorProto>,
}

impl Index {
    fn load() -> Self {
        let fds = FileDescriptorSet::decode(flowscope_proto::FILE_DESCRIPTOR_SET)
            .expect("FILE_DESCRIPTOR_SET decodes");
        let mut index = Index {
            messages: HashMap::new(),
            enums: HashMap::new(),
            files: fds.file.clone(),
        };
        for file in &fds.file {
            let pkg = file.package().to_string();
            for m in &file.message_type {
                index.add_message(&pkg, m);
            }
            for e in &file.enum_type {
                index.enums.insert(format!("{pkg}.{}", e.name()), e.clone());
            }
        }
        index
    }

    fn add_message(&mut self, scope: &str, m: &DescriptorProto) {
        let name = format!("{scope}.{}", m.name());
        for nested in &m.nested_type {
            self.add_message(&name, nested);
        }
        for e in &m.enum_type {
            self.enums.insert(format!("{name}.{}", e.name()), e.clone());
        }
        self.messages.insert(name, m.clone());
    }

    fn message(&self, name: &str) -> &DescriptorProto {
        self.messages
            .get(name)
            .unwrap_or_else(|| panic!("message {name} missing"))
    }

    fn field_number(&self, message: &str, field: &str) -> i32 {
        self.message(message)
            .field
            .iter()
            .find(|f| f.name() == field)
            .unwrap_or_else(|| panic!("{message}.{field} missing"))
            .number()
    }

    fn enum_value(&self, enum_name: &str, value: &str) -> i32 {
        self.enums
            .get(enum_name)
            .unwrap_or_else(|| panic!("enum {enum_name} missing"))
            .value
            .iter()
            .find(|v| v.name() == value)
            .unwrap_or_else(|| panic!("{enum_name}.{value} missing"))
            .number()
    }
}

#[test]
fn spot_checks() {
    let ix = Index::load();
    assert_eq!(ix.field_number("flow.Flow", "is_reply"), 26);
    assert_eq!(ix.field_number("flow.Flow", "extensions"), 150_000);
    assert_eq!(ix.field_number("flow.Flow", "Summary"), 100_000);
    assert_eq!(ix.field_number("flow.Flow", "uuid"), 34);
    assert_eq!(ix.field_number("flow.Flow", "IP"), 5);
    assert_eq!(ix.field_number("flow.Flow", "Type"), 10);
    assert_eq!(ix.field_number("flow.Flow", "trace_reason"), 36);
    assert_eq!(ix.field_number("flow.Flow", "aggregate"), 21_007);
    assert_eq!(ix.field_number("flow.IP", "ipVersion"), 3);
    assert_eq!(ix.field_number("flow.IP", "source_xlated"), 5);
    assert_eq!(
        ix.field_number("observer.GetFlowsResponse", "node_name"),
        1000
    );
    assert_eq!(ix.field_number("observer.GetFlowsResponse", "time"), 1001);
    assert_eq!(
        ix.field_number("observer.GetFlowsRequest", "field_mask"),
        10
    );
    assert_eq!(
        ix.field_number("observer.GetFlowsRequest", "experimental"),
        999
    );
    assert_eq!(ix.field_number("flow.FlowFilter", "source_ip_xlated"), 34);
    assert_eq!(ix.field_number("flow.FlowFilter", "encrypted"), 40);
    assert_eq!(
        ix.enum_value("flow.TraceObservationPoint", "TO_ENDPOINT"),
        101
    );
    assert_eq!(
        ix.enum_value("flow.TraceObservationPoint", "TO_NETWORK"),
        11
    );
    assert_eq!(ix.enum_value("flow.TraceReason", "NEW"), 1);
    assert_eq!(ix.enum_value("flow.TraceReason", "RELATED"), 4);
    assert_eq!(ix.enum_value("flow.DropReason", "POLICY_DENIED"), 133);
    assert_eq!(
        ix.enum_value("flow.DropReason", "NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT"),
        160
    );
    assert_eq!(ix.enum_value("flow.DropReason", "DROP_PUNT_PROXY"), 205);
    assert_eq!(ix.enum_value("flow.Tunnel.Protocol", "GENEVE"), 2);
    assert_eq!(
        ix.enum_value("flow.LostEventSource", "HUBBLE_RING_BUFFER"),
        3
    );
    assert_eq!(ix.enum_value("relay.NodeState", "NODE_ERROR"), 4);
    assert_eq!(
        ix.enum_value("peer.ChangeNotificationType", "PEER_UPDATED"),
        3
    );

    // No DropReason 159: Hubble skips it.
    let drop = &ix.enums["flow.DropReason"];
    assert!(drop.value.iter().all(|v| v.number() != 159));
}

/// The field numbers the GetFlows writer and reader use (`flowscope_proto::get_flows`) are
/// the descriptor's.
#[test]
fn get_flows_field_numbers() {
    use flowscope_proto::get_flows::{FLOW_TIME_FIELD, field};
    let ix = Index::load();
    let number =
        |f: &str| u32::try_from(ix.field_number("observer.GetFlowsResponse", f)).expect("positive");
    assert_eq!(field::FLOW, number("flow"));
    assert_eq!(field::NODE_STATUS, number("node_status"));
    assert_eq!(field::LOST_EVENTS, number("lost_events"));
    assert_eq!(field::NODE_NAME, number("node_name"));
    assert_eq!(field::TIME, number("time"));
    assert_eq!(
        i64::from(FLOW_TIME_FIELD),
        i64::from(ix.field_number("flow.Flow", "time"))
    );
}

#[test]
fn every_flow_field_number() {
    // Flow's fields in declaration order (protojson prints in this order).
    const FLOW: &[(&str, i32)] = &[
        ("time", 1),
        ("uuid", 34),
        ("emitter", 41),
        ("verdict", 2),
        ("drop_reason", 3),
        ("auth_type", 35),
        ("ethernet", 4),
        ("IP", 5),
        ("l4", 6),
        ("tunnel", 39),
        ("source", 8),
        ("destination", 9),
        ("Type", 10),
        ("node_name", 11),
        ("node_labels", 37),
        ("source_names", 13),
        ("destination_names", 14),
        ("l7", 15),
        ("reply", 16),
        ("event_type", 19),
        ("source_service", 20),
        ("destination_service", 21),
        ("traffic_direction", 22),
        ("policy_match_type", 23),
        ("trace_observation_point", 24),
        ("trace_reason", 36),
        ("file", 38),
        ("ip_trace_id", 40),
        ("drop_reason_desc", 25),
        ("is_reply", 26),
        ("debug_capture_point", 27),
        ("interface", 28),
        ("proxy_port", 29),
        ("trace_context", 30),
        ("sock_xlate_point", 31),
        ("socket_cookie", 32),
        ("cgroup_id", 33),
        ("Summary", 100_000),
        ("extensions", 150_000),
        ("egress_allowed_by", 21_001),
        ("ingress_allowed_by", 21_002),
        ("egress_denied_by", 21_004),
        ("ingress_denied_by", 21_005),
        ("policy_log", 21_006),
        ("aggregate", 21_007),
    ];
    let ix = Index::load();
    let flow = ix.message("flow.Flow");
    let declared: Vec<(&str, i32)> = flow.field.iter().map(|f| (f.name(), f.number())).collect();
    assert_eq!(declared, FLOW);
    let reserved: Vec<(i32, i32)> = flow
        .reserved_range
        .iter()
        .map(|r| (r.start(), r.end()))
        .collect();
    // `reserved 7; reserved 12; reserved 17, 18;` (end is exclusive).
    for range in [(7, 8), (12, 13), (17, 18), (18, 19)] {
        assert!(reserved.contains(&range), "Flow reserves {range:?}");
    }
}

#[test]
fn services_and_methods() {
    let ix = Index::load();
    let mut methods = HashMap::new();
    for file in &ix.files {
        for svc in &file.service {
            for m in &svc.method {
                methods.insert(
                    format!("{}.{}/{}", file.package(), svc.name(), m.name()),
                    (
                        m.input_type().to_string(),
                        m.output_type().to_string(),
                        m.server_streaming(),
                    ),
                );
            }
        }
    }
    let expect = [
        (
            "observer.Observer/GetFlows",
            ".observer.GetFlowsRequest",
            ".observer.GetFlowsResponse",
            true,
        ),
        (
            "observer.Observer/GetAgentEvents",
            ".observer.GetAgentEventsRequest",
            ".observer.GetAgentEventsResponse",
            true,
        ),
        (
            "observer.Observer/GetDebugEvents",
            ".observer.GetDebugEventsRequest",
            ".observer.GetDebugEventsResponse",
            true,
        ),
        (
            "observer.Observer/GetNodes",
            ".observer.GetNodesRequest",
            ".observer.GetNodesResponse",
            false,
        ),
        (
            "observer.Observer/GetNamespaces",
            ".observer.GetNamespacesRequest",
            ".observer.GetNamespacesResponse",
            false,
        ),
        (
            "observer.Observer/ServerStatus",
            ".observer.ServerStatusRequest",
            ".observer.ServerStatusResponse",
            false,
        ),
        (
            "peer.Peer/Notify",
            ".peer.NotifyRequest",
            ".peer.ChangeNotification",
            true,
        ),
        (
            "flowscope.v1.Inspector/ListConntrack",
            ".flowscope.v1.ListConntrackRequest",
            ".flowscope.v1.ListConntrackResponse",
            false,
        ),
        (
            "flowscope.v1.Inspector/ListNat",
            ".flowscope.v1.ListNatRequest",
            ".flowscope.v1.ListNatResponse",
            false,
        ),
        (
            "flowscope.v1.Inspector/GetAgentStatus",
            ".flowscope.v1.AgentStatusRequest",
            ".flowscope.v1.AgentStatusResponse",
            false,
        ),
    ];
    for (name, input, output, streaming) in expect {
        let got = methods
            .get(name)
            .unwrap_or_else(|| panic!("method {name} missing"));
        assert_eq!(
            got,
            &(input.to_string(), output.to_string(), streaming),
            "{name}"
        );
    }
    assert_eq!(methods.len(), expect.len(), "no unexpected methods");
}

#[test]
fn files_look_like_hubbles() {
    let ix = Index::load();
    let by_name: HashMap<&str, &prost_types::FileDescriptorProto> =
        ix.files.iter().map(|f| (f.name(), f)).collect();
    for (file, package, go) in [
        (
            "flow/flow.proto",
            "flow",
            "github.com/cilium/cilium/api/v1/flow",
        ),
        (
            "observer/observer.proto",
            "observer",
            "github.com/cilium/cilium/api/v1/observer",
        ),
        (
            "relay/relay.proto",
            "relay",
            "github.com/cilium/cilium/api/v1/relay",
        ),
        (
            "peer/peer.proto",
            "peer",
            "github.com/cilium/cilium/api/v1/peer",
        ),
    ] {
        let f = by_name
            .get(file)
            .unwrap_or_else(|| panic!("{file} missing"));
        assert_eq!(f.package(), package);
        assert_eq!(f.options.as_ref().map(|o| o.go_package()), Some(go));
    }
    let observer = by_name["observer/observer.proto"];
    let flow_dep = observer
        .dependency
        .iter()
        .position(|d| d == "flow/flow.proto")
        .expect("observer imports flow");
    assert!(
        observer.public_dependency.contains(&(flow_dep as i32)),
        "observer imports flow publicly"
    );
    assert!(observer.dependency.iter().any(|d| d == "relay/relay.proto"));
    // Reflection clients fetch imports by name: the well-known types are in.
    assert!(by_name.contains_key("google/protobuf/timestamp.proto"));
}

// ---------------------------------------------------------------------------
// The whole document
// ---------------------------------------------------------------------------

/// `docs/hubble-wire.md`, from `<repo>/proto`.
fn wire_facts_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/hubble-wire.md")
}

fn scalar(ty: &str) -> Option<Type> {
    Some(match ty {
        "double" => Type::Double,
        "float" => Type::Float,
        "int32" => Type::Int32,
        "int64" => Type::Int64,
        "uint32" => Type::Uint32,
        "uint64" => Type::Uint64,
        "sint32" => Type::Sint32,
        "sint64" => Type::Sint64,
        "fixed32" => Type::Fixed32,
        "fixed64" => Type::Fixed64,
        "bool" => Type::Bool,
        "string" => Type::String,
        "bytes" => Type::Bytes,
        _ => return None,
    })
}

#[derive(Debug, PartialEq)]
enum Kind {
    Message,
    Enum,
}

#[test]
fn every_fact_of_the_wire_facts_document() {
    let path = wire_facts_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let ix = Index::load();

    let mut package = String::new();
    let mut current: Option<(Kind, String)> = None;
    let (mut fields_checked, mut values_checked, mut reserved_checked) = (0, 0, 0);
    let mut seen_fields: HashMap<String, Vec<String>> = HashMap::new();

    for raw in text.lines() {
        let line = raw.trim();
        if let Some(file) = line.strip_prefix("### ") {
            package = file.trim_end_matches(".proto").to_string();
            current = None;
            continue;
        }
        if package.is_empty() {
            continue; // the prose before "Messages and enums"
        }
        let header = |prefix: &str| -> Option<String> {
            let rest = line.strip_prefix(prefix)?;
            let name = rest.split('`').next()?;
            Some(format!("{package}.{name}"))
        };
        if let Some(name) = header("message `") {
            assert!(ix.messages.contains_key(&name), "message {name} missing");
            current = Some((Kind::Message, name));
            continue;
        }
        if let Some(name) = header("enum `") {
            assert!(ix.enums.contains_key(&name), "enum {name} missing");
            current = Some((Kind::Enum, name));
            continue;
        }
        let Some(item) = line.strip_prefix("- ") else {
            continue;
        };
        let Some((kind, owner)) = &current else {
            continue;
        };

        // `(oneof x)` note, `[deprecated = true]` option.
        let (decl, oneof) = match item.split_once("(oneof ") {
            Some((d, o)) => (d.trim(), Some(o.trim_end_matches(')').trim().to_string())),
            None => (item, None),
        };
        let deprecated = decl.contains("deprecated");
        let decl = decl
            .split('[')
            .next()
            .unwrap_or(decl)
            .trim()
            .trim_end_matches(';')
            .trim();

        if let Some(ranges) = decl.strip_prefix("reserved ") {
            for part in ranges.split(',') {
                let part = part.trim();
                let (lo, hi) = match part.split_once(" to ") {
                    Some((a, b)) => (
                        a.trim().parse::<i32>().unwrap(),
                        b.trim().parse::<i32>().unwrap(),
                    ),
                    None => {
                        let n = part.parse::<i32>().unwrap();
                        (n, n)
                    }
                };
                match kind {
                    Kind::Message => {
                        let m = ix.message(owner);
                        for n in lo..=hi {
                            assert!(
                                m.reserved_range
                                    .iter()
                                    .any(|r| r.start() <= n && n < r.end()),
                                "{owner}: reserved {n} missing"
                            );
                        }
                    }
                    Kind::Enum => {
                        let e = &ix.enums[owner];
                        for n in lo..=hi {
                            // Enum reserved ranges are inclusive.
                            assert!(
                                e.reserved_range
                                    .iter()
                                    .any(|r| r.start() <= n && n <= r.end()),
                                "{owner}: reserved {n} missing"
                            );
                        }
                    }
                }
                reserved_checked += 1;
            }
            continue;
        }

        let (lhs, number) = decl
            .rsplit_once('=')
            .unwrap_or_else(|| panic!("cannot parse {raw:?}"));
        let number: i32 = number
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("number in {raw:?}"));
        let words: Vec<&str> = lhs.split_whitespace().collect();

        match kind {
            Kind::Enum => {
                let [name] = words[..] else {
                    panic!("cannot parse enum value {raw:?}")
                };
                let e = &ix.enums[owner];
                let v = e
                    .value
                    .iter()
                    .find(|v| v.name() == name)
                    .unwrap_or_else(|| panic!("{owner}.{name} missing"));
                assert_eq!(v.number(), number, "{owner}.{name}");
                let is_deprecated = v.options.as_ref().is_some_and(|o| o.deprecated());
                assert_eq!(is_deprecated, deprecated, "{owner}.{name} deprecation");
                values_checked += 1;
            }
            Kind::Message => {
                let (repeated, ty, name) = match words[..] {
                    ["repeated", ty, name] => (true, ty, name),
                    [ty, name] => (false, ty, name),
                    _ => panic!("cannot parse field {raw:?}"),
                };
                let m = ix.message(owner);
                let f = m
                    .field
                    .iter()
                    .find(|f| f.name() == name)
                    .unwrap_or_else(|| panic!("{owner}.{name} missing"));
                assert_eq!(f.number(), number, "{owner}.{name} number");
                assert_eq!(
                    f.label() == Label::Repeated,
                    repeated,
                    "{owner}.{name} label"
                );
                match scalar(ty) {
                    Some(t) => assert_eq!(f.r#type(), t, "{owner}.{name} type"),
                    None => {
                        let type_name = f.type_name();
                        assert!(
                            type_name.ends_with(&format!(".{ty}")),
                            "{owner}.{name}: type {type_name} is not {ty}"
                        );
                        assert!(matches!(f.r#type(), Type::Message | Type::Enum));
                    }
                }
                let in_oneof = f
                    .oneof_index
                    .map(|i| m.oneof_decl[i as usize].name().to_string());
                assert_eq!(in_oneof, oneof, "{owner}.{name} oneof");
                let is_deprecated = f.options.as_ref().is_some_and(|o| o.deprecated());
                assert_eq!(is_deprecated, deprecated, "{owner}.{name} deprecation");
                seen_fields
                    .entry(owner.clone())
                    .or_default()
                    .push(name.to_string());
                fields_checked += 1;
            }
        }
    }

    // The document lists every field of every message it names: we add none.
    for (message, fields) in &seen_fields {
        let declared = ix.message(message).field.len();
        assert_eq!(
            declared,
            fields.len(),
            "{message} has fields the document does not list"
        );
    }
    eprintln!(
        "checked {fields_checked} fields, {values_checked} enum values, {reserved_checked} reserved ranges from {}",
        path.display()
    );
    // What the document covered when it moved into the repository: it may grow, never shrink.
    assert!(
        fields_checked >= 315 && values_checked >= 239 && reserved_checked >= 8,
        "the document lost facts: {fields_checked} fields, {values_checked} enum values, \
         {reserved_checked} reserved ranges"
    );
}
