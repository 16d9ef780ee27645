//! Kubernetes name and label syntax, and pod labels in Hubble's form.
//!
//! Every source (the file today, Kubernetes later) derives an endpoint's labels the way Cilium
//! does for a pod: each pod label `key: value` becomes `k8s:key=value`, plus
//! `k8s:io.kubernetes.pod.namespace=<namespace>`; the list is sorted. The checks below are
//! Kubernetes' own rules (`k8s.io/apimachinery/pkg/util/validation`), so that a label accepted
//! here is one a real cluster could carry, and the identity computed from it will be the one the
//! Kubernetes source computes for the same pod.

/// The label every pod carries: the pod's namespace (Cilium adds it; so do we).
pub const NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";

/// Hubble's source prefix of labels that come from Kubernetes (or from the file, which stands in
/// for it).
pub const K8S_PREFIX: &str = "k8s:";

/// A pod's labels in Hubble's form, sorted and without duplicates: `k8s:key=value` for each pair,
/// plus `k8s:io.kubernetes.pod.namespace=<namespace>`. The pairs are not checked (see
/// [`check_label_key`] and [`check_label_value`]).
pub fn pod_labels<K: AsRef<str>, V: AsRef<str>>(
    namespace: &str,
    pairs: impl IntoIterator<Item = (K, V)>,
) -> Vec<String> {
    let mut out: Vec<String> = pairs
        .into_iter()
        .map(|(k, v)| format!("{K8S_PREFIX}{}={}", k.as_ref(), v.as_ref()))
        .collect();
    out.push(format!("{K8S_PREFIX}{NAMESPACE_LABEL}={namespace}"));
    out.sort_unstable();
    out.dedup();
    out
}

/// The first and last characters are letters or digits; the others letters, digits or `extra`.
fn alnum_ends(s: &str, extra: &[u8], lower_only: bool) -> bool {
    let ok_alnum = |c: u8| {
        if lower_only {
            c.is_ascii_lowercase() || c.is_ascii_digit()
        } else {
            c.is_ascii_alphanumeric()
        }
    };
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            ok_alnum(first)
                && ok_alnum(last)
                && b.iter().all(|&c| ok_alnum(c) || extra.contains(&c))
        }
        _ => false,
    }
}

/// An RFC 1123 DNS label (namespaces): 1 to 63 lower-case letters, digits and `-`, starting and
/// ending with a letter or digit.
pub fn check_dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 63 {
        return Err(format!("`{s}` is longer than 63 characters"));
    }
    if !alnum_ends(s, b"-", true) {
        return Err(format!(
            "`{s}` is not a DNS label (lower-case letters, digits and '-', starting and ending \
             with a letter or digit)"
        ));
    }
    Ok(())
}

/// An RFC 1123 DNS subdomain (pod and workload names, label key prefixes): at most 253
/// characters, dot-separated DNS labels.
pub fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 253 {
        return Err(format!("`{s}` is longer than 253 characters"));
    }
    if !alnum_ends(s, b"-.", true) || s.split('.').any(|part| !alnum_ends(part, b"-", true)) {
        return Err(format!(
            "`{s}` is not a DNS subdomain (lower-case letters, digits, '-' and '.', each \
             dot-separated part starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of 1 to 63 letters,
/// digits, `-`, `_` and `.`, starting and ending with a letter or digit.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        check_dns_subdomain(p).map_err(|e| format!("label key `{key}`: prefix {e}"))?;
    }
    if name.is_empty() || name.len() > 63 || !alnum_ends(name, b"-_.", false) {
        return Err(format!(
            "label key `{key}` is not valid (an optional DNS prefix and '/', then 1 to 63 \
             letters, digits, '-', '_' and '.', starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

/// A label value: empty, or 1 to 63 letters, digits, `-`, `_` and `.`, starting and ending with
/// a letter or digit.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 63 || !alnum_ends(value, b"-_.", false) {
        return Err(format!(
            "label value `{value}` is not valid (at most 63 letters, digits, '-', '_' and '.', \
             starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_labels_are_hubble_form_and_sorted() {
        let l = pod_labels("default", [("tier", "frontend"), ("app", "web")]);
        assert_eq!(
            l,
            [
                "k8s:app=web",
                "k8s:io.kubernetes.pod.namespace=default",
                "k8s:tier=frontend"
            ]
        );
        let none: [(&str, &str); 0] = [];
        assert_eq!(
            pod_labels("kube-system", none),
            ["k8s:io.kubernetes.pod.namespace=kube-system"]
        );
    }

    #[test]
    fn kubernetes_syntax() {
        assert!(check_dns_label("default").is_ok());
        assert!(check_dns_label("kube-system").is_ok());
        for bad in ["", "Default", "-a", "a-", "a.b", &"a".repeat(64)] {
            assert!(check_dns_label(bad).is_err(), "{bad}");
        }
        assert!(check_dns_subdomain("web-5d9c7.abc").is_ok());
        for bad in ["", "a..b", ".a", "a_b", "Web"] {
            assert!(check_dns_subdomain(bad).is_err(), "{bad}");
        }
        for good in ["app", "app.kubernetes.io/name", "A_b.c-D", "x/y"] {
            assert!(check_label_key(good).is_ok(), "{good}");
        }
        for bad in [
            "", "/app", "a/", "-app", "app=", "k8s:app", "a b", "UP/x", "a/b/c",
        ] {
            assert!(check_label_key(bad).is_err(), "{bad}");
        }
        for good in ["", "web", "2.10", "v1_2-3"] {
            assert!(check_label_value(good).is_ok(), "{good}");
        }
        for bad in ["web server", "~", "-x", "x.", &"v".repeat(64), "a=b"] {
            assert!(check_label_value(bad).is_err(), "{bad}");
        }
    }
}
