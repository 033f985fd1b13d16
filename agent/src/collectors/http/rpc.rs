//! gRPC calls (HTTP/2 streams whose request content-type is `application/grpc…`) →
//! per-method series: duration by status code, and for streaming methods the messages
//! per call and the time to the first response message. Methods are capped per target as
//! routes are (`RouteSet`): an UNIMPLEMENTED answer never admits a method.
use std::collections::{BTreeMap, HashSet};

use agent_common::h2::{S_RESET_BY_CLIENT, S_RESP_HEADERS};
use serde::Serialize;

use super::{h2::Exchange, route::RouteSet};
use crate::base::histogram::{self, Histogram};

/// gRPC status codes (the `rpc_grpc_status_code` label is the number).
pub const CANCELLED: u32 = 1;
pub const UNKNOWN: u32 = 2;
pub const UNIMPLEMENTED: u32 = 12;

/// Codes that are the server's failure (OpenTelemetry's server-side error codes), the
/// gRPC counterpart of a 5xx.
pub fn is_server_error(code: u32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// Whether a request content-type makes the stream a gRPC call.
pub fn is_grpc(content_type: &str) -> bool {
    let ct = content_type.to_ascii_lowercase();
    ct == "application/grpc"
        || ct.starts_with("application/grpc+")
        || ct.starts_with("application/grpc;")
}

/// (service, method) of a gRPC path `/package.Service/Method`.
pub fn split_path(path: &[u8]) -> (String, String) {
    let p = String::from_utf8_lossy(path);
    let p = p.split('?').next().unwrap_or("");
    match p.strip_prefix('/').and_then(|r| r.split_once('/')) {
        Some((s, m)) if !s.is_empty() && !m.is_empty() && !m.contains('/') => {
            (s.to_string(), m.to_string())
        }
        _ => ("_UNKNOWN".to_string(), "_UNKNOWN".to_string()),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RpcSeries {
    pub target: String,
    pub service: String,
    pub method: String,
    pub code: u32,
    pub duration: Histogram,
}

/// Streaming methods: messages per call and time to the first response message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RpcStreamSeries {
    pub target: String,
    pub service: String,
    pub method: String,
    pub requests_per_rpc: Histogram,
    pub responses_per_rpc: Histogram,
    /// Request fully read to the first response message (methods whose calls stream
    /// responses).
    pub ttft: Histogram,
}

/// What one call adds to its target's summary.
pub struct Call {
    pub duration: f64,
    pub error: bool,
    pub ttft: Option<f64>,
}

#[derive(Default)]
pub struct TargetRpc {
    methods: RouteSet,
    /// Methods seen carrying more than one message in a direction: (service, method),
    /// and whether responses stream.
    streaming: HashSet<(String, String)>,
    series: BTreeMap<(String, String, u32), RpcSeries>,
    streams: BTreeMap<(String, String), RpcStreamSeries>,
}

fn seconds(from_ns: u64, to_ns: u64) -> Option<f64> {
    (to_ns >= from_ns && from_ns != 0).then(|| (to_ns - from_ns) as f64 / 1e9)
}

impl TargetRpc {
    /// Record a call; `None` when it cannot be (times out of order).
    pub fn record(&mut self, name: &str, x: &Exchange, limit: usize) -> Option<Call> {
        let s = &x.stream;
        let duration = seconds(s.req_start_ns, s.resp_end_ns)?;
        // No status: a stream reset before its trailers. The client of a call it cancelled
        // sees CANCELLED; one the server reset sees UNKNOWN.
        let code = x
            .grpc_status
            .unwrap_or(if s.flags & S_RESET_BY_CLIENT != 0 {
                CANCELLED
            } else {
                UNKNOWN
            });
        let (service, method) = split_path(&x.path);
        let label = format!("{service}/{method}");
        // An UNIMPLEMENTED answer is a 404's counterpart: it never spends the budget.
        let as_http = if code == UNIMPLEMENTED { 404 } else { 200 };
        let admitted = self.methods.admit(label.clone(), as_http, limit);
        let (service, method) = if admitted == label {
            (service, method)
        } else {
            (admitted.clone(), admitted)
        };
        self.series
            .entry((service.clone(), method.clone(), code))
            .or_insert_with(|| RpcSeries {
                target: name.to_string(),
                service: service.clone(),
                method: method.clone(),
                code,
                duration: Histogram::new(histogram::HTTP_DURATION),
            })
            .duration
            .observe(duration);
        let (requests, responses) = (s.msgs[0], s.msgs[1]);
        let id = (service.clone(), method.clone());
        if requests > 1 || responses > 1 {
            self.streaming.insert(id.clone());
        }
        let mut ttft = None;
        if self.streaming.contains(&id) {
            let st = self.streams.entry(id).or_insert_with(|| RpcStreamSeries {
                target: name.to_string(),
                service,
                method,
                requests_per_rpc: Histogram::new(histogram::MESSAGES),
                responses_per_rpc: Histogram::new(histogram::MESSAGES),
                ttft: Histogram::new(histogram::TTFT),
            });
            st.requests_per_rpc.observe(f64::from(requests));
            st.responses_per_rpc.observe(f64::from(responses));
            if responses > 0 && s.flags & S_RESP_HEADERS != 0 {
                ttft = seconds(s.req_end_ns, s.first_data_ns);
                if let Some(v) = ttft {
                    st.ttft.observe(v);
                }
            }
        }
        Some(Call {
            duration,
            error: is_server_error(code),
            ttft,
        })
    }

    pub fn series(&self) -> impl Iterator<Item = &RpcSeries> {
        self.series.values()
    }

    pub fn streams(&self) -> impl Iterator<Item = &RpcStreamSeries> {
        self.streams.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_content_types() {
        assert_eq!(
            split_path(b"/helloworld.Greeter/SayHello"),
            ("helloworld.Greeter".into(), "SayHello".into())
        );
        assert_eq!(split_path(b"/x"), ("_UNKNOWN".into(), "_UNKNOWN".into()));
        assert_eq!(
            split_path(b"/a/b/c"),
            ("_UNKNOWN".into(), "_UNKNOWN".into())
        );
        assert!(is_grpc("application/grpc"));
        assert!(is_grpc("application/grpc+proto"));
        assert!(!is_grpc("application/grpc-web"));
        assert!(!is_grpc("application/json"));
        assert!(is_server_error(14) && !is_server_error(0) && !is_server_error(5));
    }
}
