//! Filters on what flowscope never produces.
//!
//! Hubble's filter language names fields that a flowscope server does not fill yet (Kafka
//! records, node labels, trace ids, encryption, cluster names) and values it never
//! sets (verdicts of a policy engine, event types of a proxy). A filter on them is valid
//! Hubble, so [`FlowFilterSet::compile`](crate::FlowFilterSet::compile) accepts it (flowctl
//! applies it to Hubble's own flows read from a file), but a server asked for it would answer
//! with nothing, silently: the worst answer a monitor can give. Servers call
//! [`refuse_unproduced`] first and say why instead.
//!
//! This is the one list of what flowscope does not produce; when a feature lands (L7 flows,
//! names), its entry goes.

use flowscope_proto::flow::{FlowFilter, Verdict};

use crate::FilterError;

/// Why Kafka filters cannot match (DNS and HTTP flows come from captured payloads).
const NO_KAFKA: &str = "flowscope makes L7 flows of DNS and HTTP only, not Kafka";

/// Event types a flowscope server emits: DROP (1) from the drop tracepoint, TRACE (4) from the
/// TC programs, L7 (129) from captured DNS and HTTP payloads. Type 0 in a filter means any.
const EVENT_TYPES: [i32; 3] = [1, 4, 129];

/// Verdicts a flowscope server sets on flows: it observes packets, it has no policy engine.
const VERDICTS: [Verdict; 2] = [Verdict::Forwarded, Verdict::Dropped];

/// Refuses a request whose allow or deny list names something no flowscope flow carries
/// (see the module's documentation), with the field, the value and why.
pub fn refuse_unproduced(
    whitelist: &[FlowFilter],
    blacklist: &[FlowFilter],
) -> Result<(), FilterError> {
    whitelist.iter().chain(blacklist).try_for_each(check)
}

fn never(field: &'static str, value: impl Into<String>, reason: &str) -> FilterError {
    FilterError::NeverMatches {
        field,
        value: value.into(),
        reason: reason.into(),
    }
}

fn check(f: &FlowFilter) -> Result<(), FilterError> {
    if let Some(p) = f.protocol.iter().find(|p| p.eq_ignore_ascii_case("kafka")) {
        return Err(never("protocol", p.clone(), NO_KAFKA));
    }
    if !f.event_type.is_empty()
        && f.event_type
            .iter()
            .all(|t| t.r#type != 0 && !EVENT_TYPES.contains(&t.r#type))
    {
        let t = f.event_type[0].r#type;
        return Err(never(
            "event_type",
            t.to_string(),
            &format!("flowscope emits only event types 1 (drop), 4 (trace) and 129 (L7), not {t}"),
        ));
    }
    if !f.verdict.is_empty()
        && f.verdict
            .iter()
            .all(|v| !VERDICTS.iter().any(|p| *p as i32 == *v))
    {
        let v = f.verdict[0];
        let name = Verdict::try_from(v).map_or_else(|_| v.to_string(), |v| v.as_str_name().into());
        return Err(never(
            "verdict",
            name,
            "flowscope observes packets without a policy engine: its flows are FORWARDED or DROPPED",
        ));
    }
    for (field, values) in [
        ("source_cluster_name", &f.source_cluster_name),
        ("destination_cluster_name", &f.destination_cluster_name),
    ] {
        if let Some(v) = values.first() {
            return Err(never(
                field,
                v.clone(),
                "flowscope endpoints carry no cluster name (filter on node_name `cluster/node` instead)",
            ));
        }
    }
    if let Some(v) = f.node_labels.first() {
        return Err(never(
            "node_labels",
            v.clone(),
            "flowscope does not put node labels on flows yet",
        ));
    }
    if let Some(v) = f.trace_id.first() {
        return Err(never(
            "trace_id",
            v.clone(),
            "flowscope does not read trace contexts from packets",
        ));
    }
    if let Some(v) = f.ip_trace_id.first() {
        return Err(never(
            "ip_trace_id",
            v.to_string(),
            "flowscope does not read IP trace ids from packets",
        ));
    }
    if !f.encrypted.is_empty() && f.encrypted.iter().all(|e| *e) {
        return Err(never(
            "encrypted",
            "true",
            "flowscope does not see whether a packet was encrypted by the CNI (every flow has encrypted=false)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowscope_proto::flow::{EventTypeFilter, HttpHeader};

    fn refused(f: FlowFilter) -> FilterError {
        refuse_unproduced(std::slice::from_ref(&f), &[]).expect_err("accepted")
    }

    #[test]
    fn dns_and_http_filters_pass_kafka_is_refused_with_the_reason() {
        let e = refused(FlowFilter {
            protocol: vec!["tcp".into(), "Kafka".into()],
            ..FlowFilter::default()
        });
        assert_eq!(e.field(), "protocol");
        assert!(e.to_string().contains("Kafka"), "{e}");
        refuse_unproduced(
            &[FlowFilter {
                protocol: vec!["DNS".into(), "http".into()],
                http_method: vec!["GET".into()],
                http_status_code: vec!["404".into()],
                http_path: vec!["/".into()],
                http_url: vec![".*".into()],
                http_header: vec![HttpHeader {
                    key: "a".into(),
                    value: "b".into(),
                }],
                dns_query: vec![".*".into()],
                source_fqdn: vec!["*.example.com".into()],
                destination_fqdn: vec!["one.one.one.one".into()],
                event_type: vec![EventTypeFilter {
                    r#type: 129,
                    ..EventTypeFilter::default()
                }],
                ..FlowFilter::default()
            }],
            &[],
        )
        .expect("flowscope makes DNS and HTTP flows and puts DNS names on flows");
        let e = refused(FlowFilter {
            event_type: vec![EventTypeFilter {
                r#type: 130,
                ..EventTypeFilter::default()
            }],
            ..FlowFilter::default()
        });
        assert_eq!(e.field(), "event_type");
    }

    #[test]
    fn values_never_set_are_refused_and_the_others_pass() {
        assert_eq!(
            refused(FlowFilter {
                verdict: vec![Verdict::Audit as i32],
                ..FlowFilter::default()
            })
            .field(),
            "verdict"
        );
        assert_eq!(
            refused(FlowFilter {
                encrypted: vec![true],
                ..FlowFilter::default()
            })
            .field(),
            "encrypted"
        );
        // In the deny list too: a no-op there is a mistake the user should hear about.
        assert!(
            refuse_unproduced(
                &[],
                &[FlowFilter {
                    node_labels: vec!["zone=a".into()],
                    ..FlowFilter::default()
                }]
            )
            .is_err()
        );
        // What flowscope produces, or what can match alongside it, passes.
        refuse_unproduced(
            &[FlowFilter {
                protocol: vec!["tcp".into(), "udp".into()],
                verdict: vec![Verdict::Dropped as i32, Verdict::Audit as i32],
                event_type: vec![
                    EventTypeFilter {
                        r#type: 129,
                        ..EventTypeFilter::default()
                    },
                    EventTypeFilter {
                        r#type: 4,
                        ..EventTypeFilter::default()
                    },
                ],
                encrypted: vec![false],
                source_pod: vec!["default/".into()],
                // Services from the Kubernetes source or the endpoints file.
                source_service: vec!["default/web".into()],
                destination_service: vec!["kube-system/".into()],
                ..FlowFilter::default()
            }],
            &[],
        )
        .unwrap();
    }
}
