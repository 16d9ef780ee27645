//! Kubernetes names: `source_pod`/`destination_pod` and
//! `source_service`/`destination_service` (`[namespace/][name-prefix]`),
//! workloads and cluster names.

use flowscope_proto::flow::{Endpoint, Workload};

/// One `[namespace/][name-prefix]` value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NamespacedPrefix {
    /// `None`: any namespace (the `/pod` form).
    namespace: Option<String>,
    /// Empty: every name in the namespace (the `namespace/` form).
    prefix: String,
}

/// Matches a (namespace, name) pair against `[namespace/][name-prefix]`
/// values, ORed:
///
/// - `ns/pod` — namespace `ns`, name starting with `pod`;
/// - `ns/` — every name in namespace `ns`;
/// - `pod` — like Hubble, namespace `default`, name starting with `pod`;
/// - `/pod` — name starting with `pod` in any namespace (Hubble's server
///   would only match endpoints without a namespace, which never carry a
///   pod name; we give the form the meaning users expect).
#[derive(Debug, Clone, Default)]
pub(crate) struct NameMatcher {
    values: Vec<NamespacedPrefix>,
}

impl NameMatcher {
    pub(crate) fn compile(values: &[String]) -> Result<Self, (String, String)> {
        let mut m = Self::default();
        for v in values {
            let invalid = |reason: &str| (v.clone(), reason.to_string());
            let parsed = match v.split_once('/') {
                None if v.is_empty() => {
                    return Err(invalid("must be [namespace/][name-prefix]"));
                }
                None => NamespacedPrefix {
                    namespace: Some("default".into()),
                    prefix: v.clone(),
                },
                Some((_, rest)) if rest.contains('/') => {
                    return Err(invalid(
                        "must be [namespace/][name-prefix], with at most one '/'",
                    ));
                }
                Some(("", "")) => return Err(invalid("namespace and name are both empty")),
                Some(("", prefix)) => NamespacedPrefix {
                    namespace: None,
                    prefix: prefix.into(),
                },
                Some((ns, prefix)) => NamespacedPrefix {
                    namespace: Some(ns.into()),
                    prefix: prefix.into(),
                },
            };
            m.values.push(parsed);
        }
        Ok(m)
    }

    /// True when the pair matches one of the values. A pair with both parts
    /// empty (no endpoint, no service) matches nothing.
    pub(crate) fn matches(&self, namespace: &str, name: &str) -> bool {
        if namespace.is_empty() && name.is_empty() {
            return false;
        }
        self.values.iter().any(|v| {
            v.namespace.as_deref().is_none_or(|ns| ns == namespace) && name.starts_with(&v.prefix)
        })
    }
}

/// Matches an endpoint's workloads: a filter workload matches when its name
/// (if set) and kind (if set) equal a workload's; ORed over both lists.
#[derive(Debug, Clone, Default)]
pub(crate) struct WorkloadMatcher {
    workloads: Vec<Workload>,
}

impl WorkloadMatcher {
    pub(crate) fn new(workloads: &[Workload]) -> Self {
        Self {
            workloads: workloads.to_vec(),
        }
    }

    pub(crate) fn matches(&self, endpoint: Option<&Endpoint>) -> bool {
        let Some(ep) = endpoint else {
            return false;
        };
        ep.workloads.iter().any(|w| {
            self.workloads.iter().any(|f| {
                (f.name.is_empty() || f.name == w.name) && (f.kind.is_empty() || f.kind == w.kind)
            })
        })
    }
}

/// Validates cluster names (exact match; empty is invalid, as in Hubble).
pub(crate) fn compile_cluster_names(values: &[String]) -> Result<Vec<String>, (String, String)> {
    match values.iter().find(|v| v.is_empty()) {
        Some(v) => Err((v.clone(), "cluster name must not be empty".into())),
        None => Ok(values.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(values: &[&str]) -> NameMatcher {
        let values: Vec<String> = values.iter().map(|s| s.to_string()).collect();
        NameMatcher::compile(&values).unwrap()
    }

    #[test]
    fn namespaced_prefixes() {
        let cases: &[(&[&str], (&str, &str), bool)] = &[
            (&["default/pod-a"], ("default", "pod-a"), true),
            (&["default/pod"], ("default", "pod-a"), true),
            (&["default/pod"], ("kube-system", "pod-a"), false),
            (&["default/pod-b"], ("default", "pod-a"), false),
            (&["default/"], ("default", "anything"), true),
            (&["default/"], ("other", "anything"), false),
            (&["pod"], ("default", "pod-a"), true),
            (&["pod"], ("other", "pod-a"), false),
            (&["/pod"], ("other", "pod-a"), true),
            (&["/pod"], ("default", "pod-a"), true),
            (&["/pod"], ("default", "web"), false),
            (&["a/x", "b/y"], ("b", "yes"), true),
            (&["default/"], ("", ""), false),
            (&["/pod"], ("", ""), false),
        ];
        for (values, (ns, name), want) in cases {
            assert_eq!(
                m(values).matches(ns, name),
                *want,
                "{values:?} vs {ns}/{name}"
            );
        }
    }

    #[test]
    fn invalid_names() {
        for bad in ["", "/", "a/b/c"] {
            let err = NameMatcher::compile(&[bad.to_string()]).unwrap_err();
            assert_eq!(err.0, bad);
        }
    }

    #[test]
    fn workloads() {
        let ep = Endpoint {
            workloads: vec![Workload {
                name: "web".into(),
                kind: "Deployment".into(),
            }],
            ..Default::default()
        };
        let w = |name: &str, kind: &str| Workload {
            name: name.into(),
            kind: kind.into(),
        };
        assert!(WorkloadMatcher::new(&[w("web", "")]).matches(Some(&ep)));
        assert!(WorkloadMatcher::new(&[w("", "Deployment")]).matches(Some(&ep)));
        assert!(WorkloadMatcher::new(&[w("web", "Deployment")]).matches(Some(&ep)));
        assert!(WorkloadMatcher::new(&[w("", "")]).matches(Some(&ep)));
        assert!(!WorkloadMatcher::new(&[w("web", "DaemonSet")]).matches(Some(&ep)));
        assert!(!WorkloadMatcher::new(&[w("db", "")]).matches(Some(&ep)));
        assert!(!WorkloadMatcher::new(&[w("web", "")]).matches(None));
    }
}
