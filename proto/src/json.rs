//! Hubble's JSON: protojson with the proto field names, as `hubble observe
//! -o json` prints it.
//!
//! The generated types implement `serde::Serialize`/`Deserialize` (pbjson,
//! plus the hand-written pieces below and in [`crate::wkt`]):
//!
//! - field names as written in the `.proto` (`source_port`, `IP`, `Type`,
//!   `Summary`); parsing also accepts the lowerCamelCase names;
//! - fields in declaration order, default values omitted;
//! - enums by name (a number we have no name for is printed as the number);
//! - 64-bit integers as strings, `Timestamp` as RFC 3339 with `Z`,
//!   `Duration` as `"1.500s"`, `BoolValue` as a plain `true`/`false`;
//! - `Any` as `{"@type": …, fields…}` for the types this crate knows;
//! - unknown fields are ignored when parsing (files from newer versions).
//!
//! Example:
//! ```
//! use flowscope_proto::{flow, json, observer};
//! let flow = flow::Flow { node_name: "node".into(), ..Default::default() };
//! let res = observer::GetFlowsResponse {
//!     response_types: Some(observer::get_flows_response::ResponseTypes::Flow(flow)),
//!     node_name: "node".into(),
//!     ..Default::default()
//! };
//! let line = json::to_json(&res)?;
//! assert_eq!(line, r#"{"flow":{"node_name":"node"},"node_name":"node"}"#);
//! let back: observer::GetFlowsResponse = json::from_json(&line)?;
//! assert_eq!(back, res);
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, Deserializer};
use serde::ser::{SerializeMap, SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use crate::wkt::{Any, Duration, FieldMask, FlattenInto, Timestamp};
use crate::{flow, flowscope, observer, relay};

/// One JSON line (no trailing newline) for a message.
///
/// Fails only for values protojson cannot represent either: a `Timestamp`
/// outside years 0001..9999 or a `Duration` with mixed signs.
pub fn to_json<M: Serialize + ?Sized>(msg: &M) -> Result<String, serde_json::Error> {
    serde_json::to_string(msg)
}

/// Indented JSON for a message (same content as [`to_json`]).
pub fn to_json_pretty<M: Serialize + ?Sized>(msg: &M) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(msg)
}

/// Writes one JSON line and a newline (export files, `flowctl -o json`).
pub fn write_json_line<W, M>(mut writer: W, msg: &M) -> std::io::Result<()>
where
    W: std::io::Write,
    M: Serialize + ?Sized,
{
    serde_json::to_writer(&mut writer, msg)?;
    writer.write_all(b"\n")
}

/// Parses a message from protojson (proto or lowerCamelCase field names).
pub fn from_json<M: DeserializeOwned>(text: &str) -> Result<M, serde_json::Error> {
    serde_json::from_str(text)
}

// ---------------------------------------------------------------------------
// Enums
// ---------------------------------------------------------------------------

/// An enum field as protojson handles it: printed by name when the number
/// has one, as the number otherwise; parsed from a name or a number, and an
/// unknown number is kept. Used by the generated serde code (see build.rs).
pub(crate) struct EnumValue<E> {
    value: i32,
    _enum: PhantomData<fn() -> E>,
}

impl<E> EnumValue<E> {
    pub(crate) fn new(value: i32) -> Self {
        Self {
            value,
            _enum: PhantomData,
        }
    }

    pub(crate) fn value(self) -> i32 {
        self.value
    }
}

impl<E: TryFrom<i32> + Serialize> Serialize for EnumValue<E> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match E::try_from(self.value) {
            Ok(known) => known.serialize(serializer),
            Err(_) => serializer.serialize_i32(self.value),
        }
    }
}

impl<'de, E: Deserialize<'de> + Into<i32>> Deserialize<'de> for EnumValue<E> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<E>(PhantomData<fn() -> E>);

        impl<'de, E: Deserialize<'de> + Into<i32>> de::Visitor<'de> for Visitor<E> {
            type Value = EnumValue<E>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an enum value name or number")
            }

            fn visit_i64<Er: de::Error>(self, v: i64) -> Result<Self::Value, Er> {
                i32::try_from(v)
                    .map(EnumValue::new)
                    .map_err(|_| Er::invalid_value(de::Unexpected::Signed(v), &self))
            }

            fn visit_u64<Er: de::Error>(self, v: u64) -> Result<Self::Value, Er> {
                i32::try_from(v)
                    .map(EnumValue::new)
                    .map_err(|_| Er::invalid_value(de::Unexpected::Unsigned(v), &self))
            }

            fn visit_str<Er: de::Error>(self, v: &str) -> Result<Self::Value, Er> {
                let known = E::deserialize(de::value::StrDeserializer::<Er>::new(v))?;
                Ok(EnumValue::new(known.into()))
            }

            fn visit_unit<Er: de::Error>(self) -> Result<Self::Value, Er> {
                Ok(EnumValue::new(0))
            }
        }

        deserializer.deserialize_any(Visitor(PhantomData))
    }
}

// ---------------------------------------------------------------------------
// Any
// ---------------------------------------------------------------------------

/// Calls `$action!(Type)` for the message types an `Any` may carry in JSON
/// with its fields inline.
macro_rules! for_known_any_types {
    ($full_name:expr, $action:ident, $fallback:expr) => {
        match $full_name {
            "flowscope.v1.FlowExtension" => $action!(flowscope::v1::FlowExtension),
            "flowscope.v1.FlowPath" => $action!(flowscope::v1::FlowPath),
            "flowscope.v1.FlowHop" => $action!(flowscope::v1::FlowHop),
            "flowscope.v1.Tuple" => $action!(flowscope::v1::Tuple),
            "flowscope.v1.ConntrackEntry" => $action!(flowscope::v1::ConntrackEntry),
            "flowscope.v1.NatEntry" => $action!(flowscope::v1::NatEntry),
            "flowscope.v1.AgentStatus" => $action!(flowscope::v1::AgentStatus),
            "flow.Flow" => $action!(flow::Flow),
            "flow.LostEvent" => $action!(flow::LostEvent),
            "flow.AgentEvent" => $action!(flow::AgentEvent),
            "flow.DebugEvent" => $action!(flow::DebugEvent),
            "relay.NodeStatusEvent" => $action!(relay::NodeStatusEvent),
            _ => $fallback,
        }
    };
}

/// Well-known types whose JSON is not an object go under `"value"`.
macro_rules! for_wkt_any_types {
    ($full_name:expr, $action:ident, $fallback:expr) => {
        match $full_name {
            "google.protobuf.Timestamp" => $action!(Timestamp),
            "google.protobuf.Duration" => $action!(Duration),
            "google.protobuf.FieldMask" => $action!(FieldMask),
            _ => $fallback,
        }
    };
}

/// Writes the payload of `any` into `map` (after `"@type"`); `Ok(false)`
/// when the type is unknown (or does not decode) and the caller should fall
/// back to a base64 `"value"`.
pub(crate) fn serialize_any_payload<M: SerializeMap>(
    any: &Any,
    map: &mut M,
) -> Result<bool, M::Error> {
    macro_rules! inline {
        ($ty:ty) => {
            match <$ty as prost::Message>::decode(any.value.as_slice()) {
                Ok(msg) => msg.serialize(FlattenInto(map)).map(|()| true),
                Err(_) => Ok(false),
            }
        };
    }
    macro_rules! under_value {
        ($ty:ty) => {
            match <$ty as prost::Message>::decode(any.value.as_slice()) {
                Ok(msg) => map.serialize_entry("value", &msg).map(|()| true),
                Err(_) => Ok(false),
            }
        };
    }
    let name = any.full_name();
    for_known_any_types!(
        name,
        inline,
        for_wkt_any_types!(name, under_value, Ok(false))
    )
}

/// Builds an `Any` from its protojson object.
pub(crate) fn any_from_json(value: serde_json::Value) -> Result<Any, String> {
    use base64::Engine as _;

    let serde_json::Value::Object(mut fields) = value else {
        return Err("an Any must be a JSON object".into());
    };
    let type_url = match fields.remove("@type") {
        Some(serde_json::Value::String(url)) => url,
        _ => return Err("an Any needs a string \"@type\"".into()),
    };
    let full_name = type_url.rsplit('/').next().unwrap_or_default().to_string();

    macro_rules! inline {
        ($ty:ty) => {
            serde_json::from_value::<$ty>(serde_json::Value::Object(fields))
                .map(|msg| prost::Message::encode_to_vec(&msg))
                .map_err(|e| format!("{full_name}: {e}"))
        };
    }
    macro_rules! under_value {
        ($ty:ty) => {
            serde_json::from_value::<$ty>(fields.remove("value").unwrap_or_default())
                .map(|msg| prost::Message::encode_to_vec(&msg))
                .map_err(|e| format!("{full_name}: {e}"))
        };
    }
    let name = full_name.as_str();
    let raw = for_known_any_types!(
        name,
        inline,
        for_wkt_any_types!(
            name,
            under_value,
            // A type we do not know, as we print it: base64 of the message.
            match fields.remove("value") {
                Some(serde_json::Value::String(b64)) => base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| format!("{full_name}: value is not base64: {e}")),
                _ => Err(format!(
                    "unknown Any type {type_url:?} without a base64 \"value\""
                )),
            }
        )
    )?;
    Ok(Any {
        type_url,
        value: raw,
    })
}

// ---------------------------------------------------------------------------
// GetFlowsResponse and ExportEvent (oneof declared first)
// ---------------------------------------------------------------------------

impl Serialize for observer::GetFlowsResponse {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use observer::get_flows_response::ResponseTypes;

        let mut st = serializer.serialize_struct("observer.GetFlowsResponse", 3)?;
        match &self.response_types {
            Some(ResponseTypes::Flow(v)) => st.serialize_field("flow", v)?,
            Some(ResponseTypes::NodeStatus(v)) => st.serialize_field("node_status", v)?,
            Some(ResponseTypes::LostEvents(v)) => st.serialize_field("lost_events", v)?,
            None => {}
        }
        if !self.node_name.is_empty() {
            st.serialize_field("node_name", &self.node_name)?;
        }
        if let Some(time) = &self.time {
            st.serialize_field("time", time)?;
        }
        st.end()
    }
}

/// Parsing form shared by GetFlowsResponse and ExportEvent.
#[derive(Deserialize)]
struct EventJson {
    #[serde(default)]
    flow: Option<flow::Flow>,
    #[serde(default, alias = "nodeStatus")]
    node_status: Option<relay::NodeStatusEvent>,
    #[serde(default, alias = "lostEvents")]
    lost_events: Option<flow::LostEvent>,
    #[serde(default, alias = "agentEvent")]
    agent_event: Option<flow::AgentEvent>,
    #[serde(default, alias = "debugEvent")]
    debug_event: Option<flow::DebugEvent>,
    #[serde(default, alias = "nodeName")]
    node_name: Option<String>,
    #[serde(default)]
    time: Option<Timestamp>,
}

impl EventJson {
    fn set_members(&self) -> usize {
        usize::from(self.flow.is_some())
            + usize::from(self.node_status.is_some())
            + usize::from(self.lost_events.is_some())
            + usize::from(self.agent_event.is_some())
            + usize::from(self.debug_event.is_some())
    }
}

impl<'de> Deserialize<'de> for observer::GetFlowsResponse {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use observer::get_flows_response::ResponseTypes;

        let ev = EventJson::deserialize(deserializer)?;
        if ev.set_members() > 1 {
            return Err(de::Error::custom(
                "GetFlowsResponse: more than one of flow, node_status, lost_events",
            ));
        }
        if ev.agent_event.is_some() || ev.debug_event.is_some() {
            return Err(de::Error::custom(
                "GetFlowsResponse has no agent_event or debug_event (that is an ExportEvent)",
            ));
        }
        let response_types = ev
            .flow
            .map(ResponseTypes::Flow)
            .or(ev.node_status.map(ResponseTypes::NodeStatus))
            .or(ev.lost_events.map(ResponseTypes::LostEvents));
        Ok(Self {
            response_types,
            node_name: ev.node_name.unwrap_or_default(),
            time: ev.time,
        })
    }
}

impl Serialize for observer::ExportEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use observer::export_event::ResponseTypes;

        let mut st = serializer.serialize_struct("observer.ExportEvent", 3)?;
        match &self.response_types {
            Some(ResponseTypes::Flow(v)) => st.serialize_field("flow", v)?,
            Some(ResponseTypes::NodeStatus(v)) => st.serialize_field("node_status", v)?,
            Some(ResponseTypes::LostEvents(v)) => st.serialize_field("lost_events", v)?,
            Some(ResponseTypes::AgentEvent(v)) => st.serialize_field("agent_event", v)?,
            Some(ResponseTypes::DebugEvent(v)) => st.serialize_field("debug_event", v)?,
            None => {}
        }
        if !self.node_name.is_empty() {
            st.serialize_field("node_name", &self.node_name)?;
        }
        if let Some(time) = &self.time {
            st.serialize_field("time", time)?;
        }
        st.end()
    }
}

impl<'de> Deserialize<'de> for observer::ExportEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use observer::export_event::ResponseTypes;

        let ev = EventJson::deserialize(deserializer)?;
        if ev.set_members() > 1 {
            return Err(de::Error::custom(
                "ExportEvent: more than one of flow, node_status, lost_events, agent_event, debug_event",
            ));
        }
        let response_types = ev
            .flow
            .map(ResponseTypes::Flow)
            .or(ev.node_status.map(ResponseTypes::NodeStatus))
            .or(ev.lost_events.map(ResponseTypes::LostEvents))
            .or(ev.agent_event.map(ResponseTypes::AgentEvent))
            .or(ev.debug_event.map(ResponseTypes::DebugEvent));
        Ok(Self {
            response_types,
            node_name: ev.node_name.unwrap_or_default(),
            time: ev.time,
        })
    }
}
