//! `GetFlowsRequest.field_mask`: keep only the listed fields of each flow.
//!
//! Paths use the proto's field names (`time`, `source.pod_name`, `IP.source`), which are also
//! the keys of our protojson form, so the mask is applied on that form: simple, correct for
//! nested paths, and only paid by clients that send a mask. Unknown paths are ignored, as Hubble
//! does (recent CLIs ask for fields we do not carry, such as `ip_trace_id`).

use flowscope_proto::flow::Flow;
use serde_json::{Map, Value};

/// A compiled field mask.
#[derive(Debug, Clone, Default)]
pub struct FieldMask {
    /// Each path split on '.'.
    paths: Vec<Vec<String>>,
}

impl FieldMask {
    /// From the request's paths; an empty list means "everything".
    pub fn new(paths: &[String]) -> Self {
        FieldMask {
            paths: paths
                .iter()
                .filter(|p| !p.is_empty())
                .map(|p| p.split('.').map(str::to_owned).collect())
                .collect(),
        }
    }

    /// True when the mask keeps everything.
    pub fn is_all(&self) -> bool {
        self.paths.is_empty()
    }

    /// Keeps only the masked fields of `flow`.
    pub fn apply(&self, flow: &Flow) -> Flow {
        if self.is_all() {
            return flow.clone();
        }
        let Ok(Value::Object(full)) = serde_json::to_value(flow) else {
            return flow.clone();
        };
        let mut kept = Map::new();
        for path in &self.paths {
            copy_path(&full, &mut kept, path);
        }
        serde_json::from_value(Value::Object(kept)).unwrap_or_default()
    }
}

fn copy_path(src: &Map<String, Value>, dst: &mut Map<String, Value>, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(v) = src.get(first) else { return };
    if rest.is_empty() {
        dst.insert(first.clone(), v.clone());
        return;
    }
    if let Value::Object(inner) = v {
        let entry = dst
            .entry(first.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(d) = entry {
            copy_path(inner, d, rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowscope_proto::flow::{Endpoint, Ip};

    #[test]
    fn keeps_only_masked_fields() {
        let f = Flow {
            uuid: "u".into(),
            node_name: "n".into(),
            ip: Some(Ip {
                source: "1.1.1.1".into(),
                destination: "2.2.2.2".into(),
                ..Ip::default()
            }),
            source: Some(Endpoint {
                pod_name: "a".into(),
                namespace: "ns".into(),
                ..Endpoint::default()
            }),
            ..Flow::default()
        };
        let m = FieldMask::new(&[
            "node_name".into(),
            "IP.source".into(),
            "source.pod_name".into(),
            "ip_trace_id".into(),
        ]);
        let out = m.apply(&f);
        assert_eq!(out.node_name, "n");
        assert_eq!(out.uuid, "");
        let ip = out.ip.unwrap();
        assert_eq!(
            (ip.source.as_str(), ip.destination.as_str()),
            ("1.1.1.1", "")
        );
        let src = out.source.unwrap();
        assert_eq!((src.pod_name.as_str(), src.namespace.as_str()), ("a", ""));
    }

    #[test]
    fn empty_mask_keeps_everything() {
        let f = Flow {
            uuid: "u".into(),
            ..Flow::default()
        };
        assert_eq!(FieldMask::new(&[]).apply(&f), f);
    }
}
