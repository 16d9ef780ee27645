//! Filters on what flowscope never produces.
//!
//! Hubble's filter language names fields that a flowscope server does not fill yet (L7 records,
//! DNS names, node labels, trace ids, encryption, cluster names) and values it never
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

/// Why L7 filters cannot match.
const NO_L7: &str = "flowscope does not produce L7 (DNS, HTTP, Kafka) flows yet";

/// Event types a flowscope server emits: DROP (1) from the drop tracepoint, TRACE (4) from the
/// TC programs. Type 0 in a filter means any.
const EVENT_TYPES: [i32; 2] = [1, 4];

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
    let first = |v: &[String]| v.first().cloned();
    for p in &f.protocol {
        if ["dns", "http", "kafka"].contains(&p.to_ascii_lowercase().as_str()) {
            return Err(never("protocol", p.clone(), NO_L7));
        }
    }
    let l7_fields = [
        ("http_status_code", first(&f.http_status_code)),
        ("http_method", first(&f.http_method)),
        ("http_path", first(&f.http_path)),
        ("http_url", first(&f.http_url)),
        (
            "http_header",
            f.http_header
                .first()
                .map(|h| format!("{}: {}", h.key, h.value)),
        ),
        ("dns_query", first(&f.dns_query)),
    ];
    if let Some((field, Some(value))) = l7_fields.into_iter().find(|(_, v)| v.is_some()) {
        return Err(never(field, value, NO_L7));
    }
    if !f.event_type.is_empty()
        && f.event_type
            .iter()
            .all(|t| t.r#type != 0 && !EVENT_TYPES.contains(&t.r#type))
    {
        let t = f.event_type[0].r#type;
        let reason = if t == 129 {
            NO_L7.to_owned()
        } else {
            format!("flowscope emits only event types 1 (drop) and 4 (trace), not {t}")
        };
        return Err(never("event_type", t.to_string(), &reason));
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
        ("source_fqdn", &f.source_fqdn),
        ("destination_fqdn", &f.destination_fqdn),
    ] {
        if let Some(v) = values.first() {
            return Err(never(
                field,
                v.clone(),
                "flowscope does not put DNS names on flows yet",
            ));
        }
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
    fn l7_filters_are_refused_with_the_reason() {
        let e = refused(FlowFilter {
            protocol: vec!["tcp".into(), "DNS".into()],
            ..FlowFilter::default()
        });
        assert_eq!(e.field(), "protocol");
        assert!(e.to_string().contains("L7"), "{e}");
        for f in [
            FlowFilter {
                http_method: vec!["GET".into()],
                ..FlowFilter::default()
            },
            FlowFilter {
                http_header: vec![HttpHeader {
                    key: "a".into(),
                    value: "b".into(),
                }],
                ..FlowFilter::default()
            },
            FlowFilter {
                dns_query: vec![".*".into()],
                ..FlowFilter::default()
            },
            FlowFilter {
                event_type: vec![EventTypeFilter {
                    r#type: 129,
                    ..EventTypeFilter::default()
                }],
                ..FlowFilter::default()
            },
        ] {
            assert!(refused(f).to_string().contains("L7"));
        }
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
                destination_fqdn: vec!["*.example.com".into()],
                ..FlowFilter::default()
            })
            .field(),
            "destination_fqdn"
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
                    source_fqdn: vec!["example.com".into()],
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
