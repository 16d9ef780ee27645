//! `GetFlowsRequest.field_mask` and `--export-fieldmask`: keep only the listed fields of each
//! flow. Validation and application are `flowscope_proto::fieldmask`'s (shared with the relay,
//! which refuses the same paths with the same message); this is the agent's handle on it.

use flowscope_proto::{
    fieldmask::{FlowMask, InvalidPath},
    flow::Flow,
};

/// A compiled field mask.
#[derive(Debug, Clone, Default)]
pub struct FieldMask(FlowMask);

impl FieldMask {
    /// From the request's paths; an empty list means "everything". A path that names no field
    /// of Hubble's `flow.Flow` is an error naming it, as in Hubble.
    pub fn new(paths: &[String]) -> Result<Self, InvalidPath> {
        FlowMask::new(paths).map(FieldMask)
    }

    /// True when the mask keeps everything.
    pub fn is_all(&self) -> bool {
        self.0.is_all()
    }

    /// Keeps only the masked fields of `flow`.
    pub fn apply(&self, flow: &Flow) -> Flow {
        self.0.apply(flow)
    }

    /// Keeps only the masked fields of an encoded flow, appended to `out`.
    pub fn apply_encoded(&self, flow: &[u8], out: &mut Vec<u8>) -> Result<(), prost::DecodeError> {
        self.0.apply_encoded(flow, out)
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
        ])
        .unwrap();
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
    fn unknown_paths_are_refused() {
        let e = FieldMask::new(&["node_name".into(), "source.podname".into()]).unwrap_err();
        assert!(e.to_string().contains("\"source.podname\""), "{e}");
    }

    #[test]
    fn empty_mask_keeps_everything() {
        let f = Flow {
            uuid: "u".into(),
            ..Flow::default()
        };
        assert_eq!(FieldMask::new(&[]).unwrap().apply(&f), f);
    }
}
