//! The remaining families: names by glob (node, FQDN), event types, TCP
//! flags, reply, interfaces, HTTP and DNS.

use flowscope_proto::flow::{
    EventTypeFilter, Flow, HttpHeader, NetworkInterface, TcpFlags, Verdict, layer4::Protocol,
    layer7::Record,
};
use regex::Regex;

use crate::glob::Glob;

// ---------------------------------------------------------------------------
// Node names
// ---------------------------------------------------------------------------

/// Characters `*` may stand for in a node name pattern (Hubble:
/// `[-.0-9a-z]`, plus `_` which FQDN patterns allow).
fn node_class(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_')
}

/// Cilium's cluster name when a node name carries none.
const DEFAULT_CLUSTER: &str = "default";

/// One `[cluster/]node` pattern.
#[derive(Debug, Clone)]
struct NodePattern {
    cluster: Glob,
    node: Glob,
}

/// `node_name`: Hubble's node name patterns, ORed.
///
/// A pattern is `node` or `cluster/node`; each part is a glob where `*`
/// matches any run of letters, digits, `-`, `_` and `.`, and `?` one of them
/// (an extension: Hubble has no `?`). A part may be empty (= any), and a
/// pattern without `/` matches the node in every cluster. A flow's node name
/// without a cluster (`node-1`) is in cluster `default`, as Cilium names it.
/// Patterns are lowercased and compared case-insensitively; one trailing
/// `.` is ignored.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeNameMatcher {
    patterns: Vec<NodePattern>,
}

/// Canonicalizes and validates one FQDN-like pattern part.
fn fqdn_part(part: &str) -> Result<String, String> {
    let part = part.trim();
    let part = part.strip_suffix('.').unwrap_or(part).to_ascii_lowercase();
    if part.ends_with('.') {
        return Err("multiple trailing dots in pattern".into());
    }
    if let Some(bad) = part
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*' | '?')))
    {
        return Err(format!(
            "invalid character {bad:?} in pattern (letters, digits, '-', '_', '.', '*', '?')"
        ));
    }
    Ok(part)
}

impl NodeNameMatcher {
    pub(crate) fn compile(values: &[String]) -> Result<Self, (String, String)> {
        let mut patterns = Vec::new();
        for v in values {
            let invalid = |reason: String| (v.clone(), reason);
            if v.trim().is_empty() {
                return Err(invalid("empty pattern".into()));
            }
            let (cluster, node) = match v.split_once('/') {
                Some((_, node)) if node.contains('/') => {
                    return Err(invalid("too many slashes in pattern".into()));
                }
                Some((cluster, node)) => (cluster, node),
                None => ("", v.as_str()),
            };
            let glob = |part: &str| -> Result<Glob, (String, String)> {
                let part = fqdn_part(part).map_err(invalid)?;
                if part.is_empty() {
                    Ok(Glob::any(node_class))
                } else {
                    Glob::new(&part, node_class).map_err(invalid)
                }
            };
            patterns.push(NodePattern {
                cluster: glob(cluster)?,
                node: glob(node)?,
            });
        }
        Ok(Self { patterns })
    }

    pub(crate) fn matches(&self, node_name: &str) -> bool {
        if node_name.is_empty() {
            return false;
        }
        let (cluster, node) = node_name
            .split_once('/')
            .unwrap_or((DEFAULT_CLUSTER, node_name));
        self.patterns
            .iter()
            .any(|p| p.cluster.matches(cluster) && p.node.matches(node))
    }
}

// ---------------------------------------------------------------------------
// FQDNs
// ---------------------------------------------------------------------------

/// Characters `*` may stand for in an FQDN pattern (Hubble: `[-a-zA-Z0-9_.]`).
fn fqdn_class(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')
}

/// `source_fqdn` / `destination_fqdn`: globs against the flow's
/// `source_names` / `destination_names` (any name, any pattern).
#[derive(Debug, Clone, Default)]
pub(crate) struct FqdnMatcher {
    patterns: Vec<Glob>,
}

impl FqdnMatcher {
    pub(crate) fn compile(values: &[String]) -> Result<Self, (String, String)> {
        let patterns = values
            .iter()
            .map(|v| {
                let part = fqdn_part(v).map_err(|r| (v.clone(), r))?;
                if part.is_empty() {
                    return Err((v.clone(), "empty pattern".to_string()));
                }
                Glob::new(&part, fqdn_class).map_err(|r| (v.clone(), r))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    pub(crate) fn matches(&self, names: &[String]) -> bool {
        names
            .iter()
            .any(|n| self.patterns.iter().any(|p| p.matches(n)))
    }
}

// ---------------------------------------------------------------------------
// Event type, TCP flags, reply, interface
// ---------------------------------------------------------------------------

/// `event_type`: `type` 0 matches any type; `sub_type` counts only with
/// `match_sub_type`. A flow without an event type matches nothing.
pub(crate) fn event_type_matches(filters: &[EventTypeFilter], flow: &Flow) -> bool {
    let Some(ev) = flow.event_type.as_ref() else {
        return false;
    };
    filters.iter().any(|f| {
        (f.r#type == 0 || f.r#type == ev.r#type) && (!f.match_sub_type || f.sub_type == ev.sub_type)
    })
}

/// `tcp_flags`: matches when every flag set in one filter entry is set in
/// the flow's TCP flags. Non-TCP flows match nothing.
pub(crate) fn tcp_flags_match(filters: &[TcpFlags], flow: &Flow) -> bool {
    let flags = match flow.l4.as_ref().and_then(|l4| l4.protocol.as_ref()) {
        Some(Protocol::Tcp(tcp)) => tcp.flags.as_ref(),
        _ => None,
    };
    let Some(flags) = flags else {
        return false;
    };
    filters.iter().any(|f| f.is_subset_of(flags))
}

/// `reply`: compares with `is_reply`. A flow whose `is_reply` is unknown
/// matches neither `true` nor `false` — except a DROPPED flow, which counts
/// as `false`, as in Hubble (kept for clients that used the deprecated
/// `reply` field, where drops were never replies).
pub(crate) fn reply_matches(values: &[bool], flow: &Flow) -> bool {
    let reply = match flow.is_reply {
        Some(r) => r,
        None if flow.verdict == Verdict::Dropped as i32 => false,
        None => return false,
    };
    values.contains(&reply)
}

/// `interface`: an entry matches when its index (if non-zero) and its name
/// (if non-empty) equal the flow's interface.
pub(crate) fn interface_matches(filters: &[NetworkInterface], flow: &Flow) -> bool {
    let Some(iface) = flow.interface.as_ref() else {
        return false;
    };
    filters.iter().any(|f| {
        (f.index == 0 || f.index == iface.index) && (f.name.is_empty() || f.name == iface.name)
    })
}

// ---------------------------------------------------------------------------
// HTTP and DNS
// ---------------------------------------------------------------------------

/// The monitor message type of L7 records (Cilium's access log).
const MESSAGE_TYPE_ACCESS_LOG: i32 = 129;

/// Hubble refuses HTTP filters combined with event type filters that cannot
/// match L7 records.
pub(crate) fn http_compatible(event_types: &[EventTypeFilter]) -> bool {
    event_types.is_empty()
        || event_types
            .iter()
            .any(|t| t.r#type == MESSAGE_TYPE_ACCESS_LOG)
}

fn http(flow: &Flow) -> Option<&flowscope_proto::flow::Http> {
    match flow.l7.as_ref()?.record.as_ref()? {
        Record::Http(h) => Some(h),
        _ => None,
    }
}

/// One `http_status_code` value: `200` (exact) or `4+` / `40+` (prefix).
#[derive(Debug, Clone)]
enum StatusCode {
    Exact(u32),
    /// Leading digits of the three-digit code and how many there are.
    Prefix {
        digits: u32,
        len: u32,
    },
}

/// `http_status_code`.
#[derive(Debug, Clone, Default)]
pub(crate) struct HttpStatusMatcher {
    codes: Vec<StatusCode>,
}

impl HttpStatusMatcher {
    pub(crate) fn compile(values: &[String]) -> Result<Self, (String, String)> {
        let codes = values
            .iter()
            .map(|v| {
                let invalid = || {
                    (
                        v.clone(),
                        "expected a status code (100-599) or a prefix such as 4+ or 40+"
                            .to_string(),
                    )
                };
                let first_ok = v
                    .as_bytes()
                    .first()
                    .is_some_and(|b| (b'1'..=b'5').contains(b));
                if let Some(prefix) = v.strip_suffix('+') {
                    let len = prefix.len();
                    if first_ok
                        && (1..=2).contains(&len)
                        && prefix.bytes().all(|b| b.is_ascii_digit())
                    {
                        let digits = prefix.parse().map_err(|_| invalid())?;
                        // len is 1 or 2.
                        return Ok(StatusCode::Prefix {
                            digits,
                            len: len as u32,
                        });
                    }
                } else if first_ok && v.len() == 3 && v.bytes().all(|b| b.is_ascii_digit()) {
                    return v.parse().map(StatusCode::Exact).map_err(|_| invalid());
                }
                Err(invalid())
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { codes })
    }

    pub(crate) fn matches(&self, flow: &Flow) -> bool {
        let Some(code) = http(flow).map(|h| h.code).filter(|c| *c != 0) else {
            return false;
        };
        self.codes.iter().any(|c| match *c {
            StatusCode::Exact(want) => code == want,
            // Hubble compares the decimal text ("%03d"): only 3-digit codes.
            StatusCode::Prefix { digits, len } => {
                code < 1000 && code / 10u32.pow(3 - len) == digits
            }
        })
    }
}

/// `http_method`: case-insensitive.
pub(crate) fn http_method_matches(methods: &[String], flow: &Flow) -> bool {
    http(flow)
        .filter(|h| !h.method.is_empty())
        .is_some_and(|h| methods.iter().any(|m| m.eq_ignore_ascii_case(&h.method)))
}

/// The path of a request URL (`http://host/path?q` or `/path?q` → `/path`),
/// without percent-decoding.
fn url_path(url: &str) -> &str {
    let rest = match url.split_once("://") {
        Some((_, after_scheme)) => match after_scheme.find(['/', '?', '#']) {
            Some(i) => &after_scheme[i..],
            None => "",
        },
        None => url,
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

/// Compiles regexes (`http_path`, `http_url`, `dns_query`).
pub(crate) fn compile_regexes(values: &[String]) -> Result<Vec<Regex>, (String, String)> {
    values
        .iter()
        .map(|v| Regex::new(v).map_err(|e| (v.clone(), format!("invalid regular expression: {e}"))))
        .collect()
}

/// `http_path`: regexes against the URL's path.
pub(crate) fn http_path_matches(regexes: &[Regex], flow: &Flow) -> bool {
    http(flow).filter(|h| !h.url.is_empty()).is_some_and(|h| {
        let path = url_path(&h.url);
        regexes.iter().any(|r| r.is_match(path))
    })
}

/// `http_url`: regexes against the whole URL.
pub(crate) fn http_url_matches(regexes: &[Regex], flow: &Flow) -> bool {
    http(flow)
        .filter(|h| !h.url.is_empty())
        .is_some_and(|h| regexes.iter().any(|r| r.is_match(&h.url)))
}

/// `http_header`: some header of the flow equals some filter header.
pub(crate) fn http_header_matches(headers: &[HttpHeader], flow: &Flow) -> bool {
    http(flow).is_some_and(|h| {
        h.headers.iter().any(|fh| {
            headers
                .iter()
                .any(|f| f.key == fh.key && f.value == fh.value)
        })
    })
}

/// `dns_query`: regexes against the DNS query name.
pub(crate) fn dns_query_matches(regexes: &[Regex], flow: &Flow) -> bool {
    let Some(Record::Dns(dns)) = flow.l7.as_ref().and_then(|l7| l7.record.as_ref()) else {
        return false;
    };
    regexes.iter().any(|r| r.is_match(&dns.query))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn node_names() {
        let cases: &[(&[&str], &str, bool)] = &[
            (&["k8s1"], "k8s1", true),
            (&["k8s1"], "k8s2", false),
            (&["k8s*"], "k8s2", true),
            (&["k8s*"], "default/k8s2", true),
            (&["k8s*"], "mesh-a/k8s2", true),
            (&["default/k8s*"], "k8s2", true),
            (&["default/k8s*"], "mesh-a/k8s2", false),
            (&["mesh-a/"], "mesh-a/anything", true),
            (&["/k8s1"], "mesh-b/k8s1", true),
            (&["*.company.com"], "node01.company.com", true),
            (&["*.company.com"], "node01.other.com", false),
            (&["node-?"], "node-1", true),
            (&["NODE-1"], "node-1", true),
            (&["node-1."], "node-1", true),
            (&["a", "b"], "b", true),
            (&["k8s1"], "", false),
        ];
        for (patterns, name, want) in cases {
            let m = NodeNameMatcher::compile(&strings(patterns)).unwrap();
            assert_eq!(m.matches(name), *want, "{patterns:?} vs {name:?}");
        }
        for bad in ["", "a/b/c", "node 1", "node..", "nöde"] {
            assert!(
                NodeNameMatcher::compile(&strings(&[bad])).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn fqdns() {
        let m = FqdnMatcher::compile(&strings(&["*.cilium.io", "example.com."])).unwrap();
        assert!(m.matches(&strings(&["docs.cilium.io"])));
        assert!(m.matches(&strings(&["other.net", "example.com"])));
        assert!(!m.matches(&strings(&["cilium.io"])));
        assert!(!m.matches(&[]));
        for bad in ["", "a b", "exa$mple.com"] {
            assert!(FqdnMatcher::compile(&strings(&[bad])).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn status_codes() {
        let ok = |v: &[&str]| HttpStatusMatcher::compile(&strings(v)).unwrap();
        let flow = |code: u32| Flow {
            l7: Some(flowscope_proto::flow::Layer7 {
                record: Some(Record::Http(flowscope_proto::flow::Http {
                    code,
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(ok(&["200"]).matches(&flow(200)));
        assert!(!ok(&["200"]).matches(&flow(201)));
        assert!(ok(&["2+"]).matches(&flow(204)));
        assert!(ok(&["40+"]).matches(&flow(404)));
        assert!(!ok(&["40+"]).matches(&flow(410)));
        assert!(!ok(&["4+"]).matches(&flow(0)));
        assert!(!ok(&["4+"]).matches(&Flow::default()));
        for bad in ["", "2000", "600", "099", "6+", "+", "404+", "20x", "2++"] {
            assert!(
                HttpStatusMatcher::compile(&strings(&[bad])).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn url_paths() {
        assert_eq!(url_path("http://host/a/b?q=1"), "/a/b");
        assert_eq!(url_path("https://host:8443/x#frag"), "/x");
        assert_eq!(url_path("http://host"), "");
        assert_eq!(url_path("http://host?q"), "");
        assert_eq!(url_path("/only/path?x"), "/only/path");
    }
}
