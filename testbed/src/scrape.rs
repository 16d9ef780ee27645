//! Reading Prometheus metrics in the tests: plain HTTP/1.0 GETs from a thread inside a
//! namespace (the agent's metrics port exists only in the node's namespace), and a parser of
//! the text exposition format good enough for assertions.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use crate::netns::in_netns;

/// One sample of a scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Series name (`hubble_drop_total`).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// `GET path` on `addr` from inside `ns`, with an optional `Accept` header. Returns the status
/// and the body; bounded by a 5 s timeout per socket operation.
pub fn http_get(
    ns: &str,
    addr: SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let (path, accept) = (path.to_owned(), accept.map(str::to_owned));
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        let accept = accept
            .map(|a| format!("Accept: {a}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok((status, body.to_owned()))
    })
}

/// Scrapes `/metrics` (classic text format) until it answers 200, or the timeout.
pub fn wait_metrics(ns: &str, addr: SocketAddr, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        match http_get(ns, addr, "/metrics", None) {
            Ok((200, body)) => return body,
            other if Instant::now() >= deadline => {
                panic!("no metrics on {addr} after {timeout:?}: {other:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Parses the samples of a text-format scrape (comments skipped).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = BTreeMap::new();
    let rest = if let Some(mut r) = rest.strip_prefix('{') {
        loop {
            r = r.trim_start_matches(',');
            if let Some(after) = r.strip_prefix('}') {
                break after;
            }
            let (key, after) = r.split_once("=\"")?;
            // The value runs to the first quote not escaped by a backslash.
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next()? {
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            labels.insert(key.to_owned(), value);
            r = &after[end + 1..];
        }
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The sum of the samples named `name` whose labels include `labels`; `None` if there is none.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        })
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples() {
        let text = "# HELP x_total X\n# TYPE x_total counter\n\
                    x_total{a=\"1\",b=\"q\\\"uote\"} 3\nup 1\ng{l=\"a,b\"} 0.5\n";
        let s = parse(text);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].labels["b"], "q\"uote");
        assert_eq!(value(&s, "x_total", &[("a", "1")]), Some(3.0));
        assert_eq!(value(&s, "up", &[]), Some(1.0));
        assert_eq!(value(&s, "g", &[("l", "a,b")]), Some(0.5));
        assert_eq!(value(&s, "x_total", &[("a", "2")]), None);
    }
}
