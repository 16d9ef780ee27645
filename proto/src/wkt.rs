//! The protobuf well-known types used by our API, with protojson's JSON form.
//!
//! `Timestamp`, `Any` and `FieldMask` are our own (same fields and tags as
//! `prost_types`'), because the JSON of the usual sources does not match
//! what Go's protojson — and thus `hubble observe -o json` — prints:
//! `pbjson_types::Timestamp` ends in `+00:00` instead of `Z`, `Any` needs our
//! type registry to print `{"@type":…, fields…}`, and `FieldMask` must be a
//! comma-separated string. `Duration` comes from `pbjson_types` as is
//! (`"1.500s"`, like protojson). Wrapper types (`BoolValue`, …) map to
//! `Option<bool>`, … in the generated code.

use std::fmt;
use std::time::{Duration as StdDuration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::{self, Deserializer};
use serde::ser::{self, SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

pub use pbjson_types::Duration;

// ---------------------------------------------------------------------------
// Timestamp
// ---------------------------------------------------------------------------

/// `google.protobuf.Timestamp`: seconds and nanoseconds since the Unix epoch,
/// UTC. JSON: RFC 3339 with `Z` and 0, 3, 6 or 9 fractional digits, e.g.
/// `"2026-11-26T11:00:01.123456789Z"`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Message)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Non-negative fraction of a second, `0..=999_999_999`.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    /// A timestamp from seconds and nanoseconds since the epoch.
    pub const fn new(seconds: i64, nanos: i32) -> Self {
        Self { seconds, nanos }
    }

    /// Nanoseconds since the epoch, saturating outside what `i64` holds
    /// (the years 1677..2262).
    pub fn as_nanos(&self) -> i64 {
        self.seconds
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(self.nanos))
    }

    /// A timestamp from nanoseconds since the epoch.
    pub const fn from_nanos(nanos: i64) -> Self {
        Self {
            seconds: nanos.div_euclid(1_000_000_000),
            // In 0..1e9 by construction, so the cast cannot truncate.
            nanos: nanos.rem_euclid(1_000_000_000) as i32,
        }
    }

    /// The current time.
    pub fn now() -> Self {
        SystemTime::now().into()
    }

    fn to_datetime(self) -> Option<DateTime<Utc>> {
        let nanos = u32::try_from(self.nanos)
            .ok()
            .filter(|n| *n < 1_000_000_000)?;
        let dt = DateTime::from_timestamp(self.seconds, nanos)?;
        // protojson only accepts years 0001..=9999.
        (-62_135_596_800..=253_402_300_799)
            .contains(&self.seconds)
            .then_some(dt)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self {
                seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                // subsec_nanos() < 1e9 fits i32.
                nanos: d.subsec_nanos() as i32,
            },
            Err(e) => {
                let d = e.duration();
                let nanos = i64::try_from(d.as_nanos()).map_or(i64::MIN, |n| -n);
                Self::from_nanos(nanos)
            }
        }
    }
}

impl TryFrom<Timestamp> for SystemTime {
    type Error = TimestampOutOfRange;

    fn try_from(t: Timestamp) -> Result<Self, Self::Error> {
        let nanos = u32::try_from(t.nanos).map_err(|_| TimestampOutOfRange)?;
        if t.seconds >= 0 {
            let secs = u64::try_from(t.seconds).map_err(|_| TimestampOutOfRange)?;
            UNIX_EPOCH.checked_add(StdDuration::new(secs, nanos))
        } else {
            let back = StdDuration::from_secs(t.seconds.unsigned_abs());
            UNIX_EPOCH
                .checked_sub(back)
                .and_then(|t0| t0.checked_add(StdDuration::from_nanos(u64::from(nanos))))
        }
        .ok_or(TimestampOutOfRange)
    }
}

impl From<prost_types::Timestamp> for Timestamp {
    fn from(t: prost_types::Timestamp) -> Self {
        Self::new(t.seconds, t.nanos)
    }
}

impl From<Timestamp> for prost_types::Timestamp {
    fn from(t: Timestamp) -> Self {
        Self {
            seconds: t.seconds,
            nanos: t.nanos,
        }
    }
}

/// A [`Timestamp`] outside what RFC 3339 / `SystemTime` can represent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOutOfRange;

impl fmt::Display for TimestampOutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("timestamp out of range (years 0001..9999, nanos 0..1e9)")
    }
}

impl std::error::Error for TimestampOutOfRange {}

impl fmt::Display for Timestamp {
    /// RFC 3339 exactly as protojson prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime() {
            Some(dt) => f.write_str(&dt.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            None => write!(f, "<invalid timestamp {}s {}ns>", self.seconds, self.nanos),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let dt = self
            .to_datetime()
            .ok_or_else(|| ser::Error::custom(TimestampOutOfRange))?;
        serializer.serialize_str(&dt.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let dt = DateTime::parse_from_rfc3339(&text).map_err(de::Error::custom)?;
        let ts = Self {
            seconds: dt.timestamp(),
            // timestamp_subsec_nanos() < 2e9 (leap second) — clamp into range.
            nanos: dt.timestamp_subsec_nanos().min(999_999_999) as i32,
        };
        ts.to_datetime()
            .map(|_| ts)
            .ok_or_else(|| de::Error::custom(TimestampOutOfRange))
    }
}

// ---------------------------------------------------------------------------
// FieldMask
// ---------------------------------------------------------------------------

/// `google.protobuf.FieldMask`: a set of field paths (`flow.source.pod_name`).
/// JSON: one string, paths in lowerCamelCase joined by commas.
#[derive(Clone, PartialEq, Eq, Hash, ::prost::Message)]
pub struct FieldMask {
    /// Field paths in proto (snake_case) form.
    #[prost(string, repeated, tag = "1")]
    pub paths: Vec<String>,
}

fn snake_to_camel(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut upper = false;
    for c in path.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn camel_to_snake(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 4);
    for c in path.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

impl Serialize for FieldMask {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let joined = self
            .paths
            .iter()
            .map(|p| snake_to_camel(p))
            .collect::<Vec<_>>()
            .join(",");
        serializer.serialize_str(&joined)
    }
}

impl<'de> Deserialize<'de> for FieldMask {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let paths = text
            .split(',')
            .filter(|p| !p.is_empty())
            .map(camel_to_snake)
            .collect();
        Ok(Self { paths })
    }
}

// ---------------------------------------------------------------------------
// Any
// ---------------------------------------------------------------------------

/// `google.protobuf.Any`: a serialized message with its type URL
/// (`type.googleapis.com/flowscope.v1.FlowExtension`).
///
/// JSON as protojson prints it: `{"@type":"<url>", <the message's fields>}`
/// for the message types this crate knows (see [`crate::json`]); the
/// well-known types with a special JSON form go under `"value"`. A type this
/// crate does not know is printed as `{"@type":"<url>","value":"<base64>"}`
/// instead of failing as protojson would, and read back the same way.
#[derive(Clone, PartialEq, Eq, Hash, ::prost::Message)]
pub struct Any {
    /// Type URL; the part after the last `/` is the message's full name.
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// The message, protobuf-encoded.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

impl Any {
    /// Packs a message.
    pub fn from_msg<M: prost::Name>(msg: &M) -> Self {
        Self {
            type_url: M::type_url(),
            value: msg.encode_to_vec(),
        }
    }

    /// Unpacks a message of type `M`; `Ok(None)` when the Any holds another type.
    pub fn to_msg<M: prost::Name + Default>(&self) -> Result<Option<M>, prost::DecodeError> {
        if self.full_name() != M::full_name() {
            return Ok(None);
        }
        M::decode(self.value.as_slice()).map(Some)
    }

    /// Full name of the packed message (`flowscope.v1.FlowExtension`).
    pub fn full_name(&self) -> &str {
        self.type_url.rsplit('/').next().unwrap_or_default()
    }
}

impl prost::Name for Any {
    const NAME: &'static str = "Any";
    const PACKAGE: &'static str = "google.protobuf";

    fn type_url() -> String {
        "type.googleapis.com/google.protobuf.Any".to_string()
    }
}

impl prost::Name for Timestamp {
    const NAME: &'static str = "Timestamp";
    const PACKAGE: &'static str = "google.protobuf";

    fn type_url() -> String {
        "type.googleapis.com/google.protobuf.Timestamp".to_string()
    }
}

impl Serialize for Any {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("@type", &self.type_url)?;
        if !crate::json::serialize_any_payload(self, &mut map)? {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&self.value);
            map.serialize_entry("value", &b64)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Any {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        crate::json::any_from_json(value).map_err(de::Error::custom)
    }
}

/// A [`Serializer`] that writes the fields of a serialized message into an
/// enclosing map: how an `Any`'s payload fields land next to its `"@type"`.
pub(crate) struct FlattenInto<'a, M>(pub(crate) &'a mut M);

fn not_a_message<E: ser::Error>() -> E {
    E::custom("an Any payload must serialize as a message (a map)")
}

macro_rules! reject {
    ($($name:ident($($arg:ty),*);)*) => {
        $(fn $name(self, $(_: $arg),*) -> Result<Self::Ok, Self::Error> {
            Err(not_a_message())
        })*
    };
}

impl<'a, M: SerializeMap> Serializer for FlattenInto<'a, M> {
    type Ok = ();
    type Error = M::Error;
    type SerializeSeq = ser::Impossible<(), M::Error>;
    type SerializeTuple = ser::Impossible<(), M::Error>;
    type SerializeTupleStruct = ser::Impossible<(), M::Error>;
    type SerializeTupleVariant = ser::Impossible<(), M::Error>;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = ser::Impossible<(), M::Error>;

    reject! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_f32(f32);
        serialize_f64(f64);
        serialize_char(char);
        serialize_str(&str);
        serialize_bytes(&[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Self::Error> {
        value.serialize(self)
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Self::Error> {
        Err(not_a_message())
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Self::Error> {
        Err(not_a_message())
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Self::Error> {
        Err(not_a_message())
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Self::Error> {
        Err(not_a_message())
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Self::Error> {
        Err(not_a_message())
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Self::Error> {
        Ok(self)
    }

    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, Self::Error> {
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Self::Error> {
        Err(not_a_message())
    }
}

impl<M: SerializeMap> ser::SerializeStruct for FlattenInto<'_, M> {
    type Ok = ();
    type Error = M::Error;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        self.0.serialize_entry(key, value)
    }

    fn end(self) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl<M: SerializeMap> SerializeMap for FlattenInto<'_, M> {
    type Ok = ();
    type Error = M::Error;

    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Self::Error> {
        self.0.serialize_key(key)
    }

    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.0.serialize_value(value)
    }

    fn end(self) -> Result<(), Self::Error> {
        Ok(())
    }
}
