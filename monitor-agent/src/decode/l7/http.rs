//! HTTP/1.x message heads from captured payloads, into Hubble's `flow.HTTP` fields, with
//! [`httparse`].
//!
//! Only a payload that starts a message is parsed: a request line or a status line first. A
//! segment that continues a body, or the second request of a pipelined batch, is not a
//! message start and yields nothing. A head cut by the snap length keeps its complete lines:
//! the request or status line and the header lines before the cut (the cut line is dropped,
//! never parsed in part); a head whose first line is cut is [`HttpError::Truncated`].

/// Headers whose values are never put on a flow (Hubble redacts them the same way).
const REDACTED: [&str; 4] = [
    "authorization",
    "cookie",
    "set-cookie",
    "proxy-authorization",
];

/// What a redacted header's value reads (Hubble's `defaults.SensitiveValueRedacted`).
pub const REDACTED_VALUE: &str = "HUBBLE_REDACTED";

/// Most headers read from one head.
const MAX_HEADERS: usize = 64;

/// A parsed message head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpHead {
    /// A request.
    Request {
        /// `GET`, `POST`, …
        method: String,
        /// The request target as sent (`/index.html`, or an absolute URL through a proxy).
        target: String,
        /// `HTTP/1.1`
        protocol: String,
        /// Headers in the order sent, sensitive values redacted.
        headers: Vec<(String, String)>,
        /// Only the lines before the snap length were read.
        cut: bool,
    },
    /// A response.
    Response {
        /// Status code.
        code: u16,
        /// `HTTP/1.1`
        protocol: String,
        /// Headers in the order sent, sensitive values redacted.
        headers: Vec<(String, String)>,
        /// Only the lines before the snap length were read.
        cut: bool,
    },
}

impl HttpHead {
    /// The `Host` header of a request.
    pub fn host(&self) -> Option<&str> {
        match self {
            HttpHead::Request { headers, .. } => headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("host"))
                .map(|(_, v)| v.as_str()),
            HttpHead::Response { .. } => None,
        }
    }
}

/// Why a payload gave no HTTP message head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The capture ends before the first line does.
    #[error("truncated HTTP message head")]
    Truncated,
    /// Not the start of an HTTP/1.x message (a body segment, another protocol, garbage).
    #[error("not an HTTP/1.x message head")]
    Malformed,
}

/// Parses the message head at the start of `payload`.
pub fn parse(payload: &[u8]) -> Result<HttpHead, HttpError> {
    match parse_complete(payload) {
        Ok(Some(h)) => Ok(h),
        Err(e) => Err(e),
        // Incomplete: keep the complete lines, end the head after them.
        Ok(None) => {
            let Some(last_eol) = payload.windows(2).rposition(|w| w == b"\r\n") else {
                return Err(HttpError::Truncated);
            };
            let mut head = payload[..last_eol + 2].to_vec();
            head.extend_from_slice(b"\r\n");
            match parse_complete(&head) {
                Ok(Some(mut h)) => {
                    match &mut h {
                        HttpHead::Request { cut, .. } | HttpHead::Response { cut, .. } => {
                            *cut = true
                        }
                    }
                    Ok(h)
                }
                Ok(None) => Err(HttpError::Truncated),
                Err(e) => Err(e),
            }
        }
    }
}

/// `Ok(None)`: a valid start, but the head does not end in `payload`.
fn parse_complete(payload: &[u8]) -> Result<Option<HttpHead>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    if payload.starts_with(b"HTTP/") {
        let mut r = httparse::Response::new(&mut headers);
        return match r.parse(payload) {
            Ok(httparse::Status::Complete(_)) => Ok(Some(HttpHead::Response {
                code: r.code.ok_or(HttpError::Malformed)?,
                protocol: protocol(r.version),
                headers: collect(r.headers),
                cut: false,
            })),
            Ok(httparse::Status::Partial) => Ok(None),
            Err(_) => Err(HttpError::Malformed),
        };
    }
    let mut r = httparse::Request::new(&mut headers);
    match r.parse(payload) {
        Ok(httparse::Status::Complete(_)) => Ok(Some(HttpHead::Request {
            method: r.method.ok_or(HttpError::Malformed)?.to_owned(),
            target: r.path.ok_or(HttpError::Malformed)?.to_owned(),
            protocol: protocol(r.version),
            headers: collect(r.headers),
            cut: false,
        })),
        // httparse accepts any token as a method, so a partial "request" may be a body
        // segment that happens to start with letters: only a known method passes.
        Ok(httparse::Status::Partial) if r.method.is_some_and(known_method) => Ok(None),
        Ok(httparse::Status::Partial) if payload.len() < 8 => Err(HttpError::Truncated),
        Ok(httparse::Status::Partial) | Err(_) => Err(HttpError::Malformed),
    }
}

fn known_method(m: &str) -> bool {
    matches!(
        m,
        "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH"
    )
}

fn protocol(version: Option<u8>) -> String {
    match version {
        Some(0) => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
    .to_owned()
}

fn collect(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|h| !h.name.is_empty())
        .map(|h| {
            let value = if REDACTED.iter().any(|r| h.name.eq_ignore_ascii_case(r)) {
                REDACTED_VALUE.to_owned()
            } else {
                String::from_utf8_lossy(h.value).into_owned()
            };
            (h.name.to_owned(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_and_a_response() {
        let req = parse(b"GET /index.html HTTP/1.1\r\nHost: one.one.one.one\r\nAuthorization: Basic c2VjcmV0\r\nUser-Agent: curl/8\r\n\r\n").unwrap();
        let HttpHead::Request {
            method,
            target,
            protocol,
            headers,
            cut,
        } = &req
        else {
            panic!("{req:?}")
        };
        assert_eq!((method.as_str(), target.as_str()), ("GET", "/index.html"));
        assert_eq!(protocol, "HTTP/1.1");
        assert!(!cut);
        assert_eq!(req.host(), Some("one.one.one.one"));
        assert_eq!(headers[1], ("Authorization".into(), REDACTED_VALUE.into()));
        let resp = parse(
            b"HTTP/1.0 404 File not found\r\nServer: SimpleHTTP\r\nSet-Cookie: a=b\r\n\r\n<html>",
        )
        .unwrap();
        let HttpHead::Response {
            code,
            protocol,
            headers,
            ..
        } = resp
        else {
            panic!()
        };
        assert_eq!((code, protocol.as_str()), (404, "HTTP/1.0"));
        assert_eq!(headers[1].1, REDACTED_VALUE);
    }

    #[test]
    fn a_head_cut_by_the_snap_length_keeps_its_complete_lines() {
        let full = b"GET / HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\n\r\n";
        for len in 0..full.len() {
            match parse(&full[..len]) {
                Ok(HttpHead::Request {
                    target,
                    headers,
                    cut,
                    ..
                }) => {
                    assert_eq!(target, "/");
                    assert!(cut || len >= full.len() - 2, "cut at {len}");
                    // Never a header parsed in part.
                    for (k, v) in &headers {
                        assert!(
                            matches!(
                                (k.as_str(), v.as_str()),
                                ("Host", "a.example") | ("Accept", "*/*")
                            ),
                            "{k}: {v} at {len}"
                        );
                    }
                }
                Ok(other) => panic!("{other:?}"),
                Err(e) => assert!(len < 16, "{e} at {len}"),
            }
        }
    }

    #[test]
    fn body_segments_and_other_protocols_are_not_heads() {
        assert_eq!(
            parse(b"\x16\x03\x01\x02\x00\x01"),
            Err(HttpError::Malformed)
        );
        assert_eq!(
            parse(b"hello world this is a body"),
            Err(HttpError::Malformed)
        );
        assert_eq!(parse(b"<html><body>"), Err(HttpError::Malformed));
    }
}
