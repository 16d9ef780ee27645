//! Which failed exports are tried again, and when: OTLP's rules for gRPC
//! (<https://opentelemetry.io/docs/specs/otlp/#failures>). Codes that say "try later" are retried
//! with an exponential backoff; `RESOURCE_EXHAUSTED` only when the server says when, with a
//! `google.rpc.RetryInfo` in the status details, whose delay is then honoured.

use std::time::Duration;

use tonic::{Code, Status};

/// First wait after a failure; doubled after each retry of the same batch.
pub const BACKOFF_START: Duration = Duration::from_millis(500);
/// Longest wait between two tries of the same batch (a RetryInfo delay is capped to it too).
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A batch not delivered this long after its first try is dropped (counted).
pub const MAX_ELAPSED: Duration = Duration::from_secs(30);

/// `google.rpc.Status`, the message in a status's `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

const RETRY_INFO: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The server's RetryInfo delay, if the status carries one.
pub fn retry_delay(status: &Status) -> Option<Duration> {
    use prost::Message as _;
    let details = RpcStatus::decode(status.details()).ok()?;
    let info = details.details.iter().find(|d| d.type_url == RETRY_INFO)?;
    let d = RetryInfo::decode(info.value.as_slice()).ok()?.retry_delay?;
    let secs = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok()?;
    Some(Duration::new(secs, nanos))
}

/// What to do after a failed export.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Try again after this long.
    Retry(Duration),
    /// Give the batch up.
    Drop,
}

/// Decides what follows a failure. `backoff` is the wait the exponential backoff is at.
pub fn decide(status: &Status, backoff: Duration) -> Decision {
    let delay = retry_delay(status);
    let retryable = match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => true,
        // "The server is overloaded": only when it says when to come back.
        Code::ResourceExhausted => delay.is_some(),
        _ => false,
    };
    if !retryable {
        return Decision::Drop;
    }
    Decision::Retry(delay.unwrap_or(backoff).min(BACKOFF_MAX))
}

/// The next backoff wait, with up to 20 % of jitter so that agents restarted together do not
/// retry together.
pub fn next_backoff(current: Duration) -> Duration {
    let doubled = (current * 2).min(BACKOFF_MAX);
    let jitter = doubled.mul_f64(fastrand::f64() * 0.2);
    doubled.saturating_sub(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn with_retry_info(code: Code, delay: Duration) -> Status {
        let info = RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: delay.as_secs() as i64,
                nanos: delay.subsec_nanos() as i32,
            }),
        };
        let details = RpcStatus {
            code: code as i32,
            message: "later".into(),
            details: vec![ProtoAny {
                type_url: RETRY_INFO.into(),
                value: info.encode_to_vec(),
            }],
        };
        Status::with_details(code, "later", details.encode_to_vec().into())
    }

    #[test]
    fn otlp_retry_rules() {
        let b = Duration::from_secs(1);
        assert_eq!(decide(&Status::unavailable("down"), b), Decision::Retry(b));
        assert_eq!(
            decide(&Status::deadline_exceeded("slow"), b),
            Decision::Retry(b)
        );
        assert_eq!(
            decide(&Status::resource_exhausted("full"), b),
            Decision::Drop,
            "RESOURCE_EXHAUSTED without RetryInfo is not retried"
        );
        assert_eq!(
            decide(
                &with_retry_info(Code::ResourceExhausted, Duration::from_millis(1500)),
                b
            ),
            Decision::Retry(Duration::from_millis(1500))
        );
        assert_eq!(
            decide(
                &with_retry_info(Code::Unavailable, Duration::from_secs(60)),
                b
            ),
            Decision::Retry(BACKOFF_MAX),
            "a RetryInfo delay is capped"
        );
        assert_eq!(decide(&Status::invalid_argument("bad"), b), Decision::Drop);
        assert_eq!(decide(&Status::unauthenticated("who"), b), Decision::Drop);
    }

    #[test]
    fn backoff_grows_to_its_cap() {
        let mut d = BACKOFF_START;
        for _ in 0..20 {
            let n = next_backoff(d);
            assert!(n <= BACKOFF_MAX);
            assert!(n >= (d * 2).min(BACKOFF_MAX).mul_f64(0.8));
            d = n;
        }
        assert!(d >= BACKOFF_MAX.mul_f64(0.8));
    }
}
