//! HTTP server (OTel semantic conventions) and GenAI streaming families, and the
//! tracer's own counters.
use super::{HttpPart, RequestSummary};
use crate::base::family::{
    counter, family, fixed_histogram, gauge, series, single, MetricFamily, MetricType,
};

pub(super) fn families(part: &HttpPart, out: &mut Vec<MetricFamily>) {
    let mut duration = Vec::new();
    let mut req_body = Vec::new();
    let mut resp_body = Vec::new();
    for s in &part.http {
        let status = s.status.to_string();
        let l = [
            ("http_request_method", s.method.as_str()),
            ("http_response_status_code", status.as_str()),
            ("http_route", s.route.as_str()),
            ("network_protocol_version", s.version),
            ("target", s.target.as_str()),
        ];
        duration.push(fixed_histogram(&l, &s.duration));
        req_body.push(fixed_histogram(&l, &s.request_body));
        resp_body.push(fixed_histogram(&l, &s.response_body));
    }
    out.push(family(
        "http_server_request_duration_seconds",
        "Duration of HTTP server requests: first request byte read to last response byte written.",
        MetricType::HISTOGRAM,
        duration,
    ));
    out.push(family(
        "http_server_request_body_size_bytes",
        "Size of HTTP server request bodies.",
        MetricType::HISTOGRAM,
        req_body,
    ));
    out.push(family(
        "http_server_response_body_size_bytes",
        "Size of HTTP server response bodies.",
        MetricType::HISTOGRAM,
        resp_body,
    ));
    type Field = fn(&RequestSummary) -> Option<u64>;
    rpc(part, out);
    let per_target: [(&str, &str, MetricType, Field); 9] = [
        (
            "http_server_active_requests",
            "HTTP requests read but not yet answered completely.",
            MetricType::GAUGE,
            |r| r.active,
        ),
        (
            "infersight_http_connections_accepted_total",
            "Connections accepted by a target (tracked for HTTP).",
            MetricType::COUNTER,
            |r| r.accepted_connections,
        ),
        (
            "infersight_http_connections_ignored_total",
            "Accepted connections of a target whose first bytes were not HTTP/1.x (TLS, other protocols).",
            MetricType::COUNTER,
            |r| r.ignored_connections,
        ),
        (
            "infersight_http_requests_unanswered_total",
            "Requests that ended (next request, stream reset or close) without a response being seen.",
            MetricType::COUNTER,
            |r| r.unanswered,
        ),
        (
            "infersight_http_connections_tls_total",
            "Accepted connections of a target carrying TLS whose plaintext the OpenSSL probes see.",
            MetricType::COUNTER,
            |r| r.tls_connections,
        ),
        (
            "infersight_http_connections_tls_unseen_total",
            "Accepted connections of a target carrying TLS no probe sees (static OpenSSL, rustls, Go, ...): no requests are counted on them.",
            MetricType::COUNTER,
            |r| r.tls_unseen_connections,
        ),
        (
            "infersight_http2_connections_total",
            "Accepted connections of a target that spoke HTTP/2 (h2c, or h2 through OpenSSL).",
            MetricType::COUNTER,
            |r| r.h2_connections,
        ),
        (
            "infersight_http2_header_blocks_lost_total",
            "HTTP/2 header blocks lost (ring buffer full, a gap, undecodable, frames lost track of): each makes its connection's HPACK tables unusable.",
            MetricType::COUNTER,
            |r| r.h2_blocks_lost,
        ),
        (
            "infersight_http2_streams_undecoded_total",
            "HTTP/2 streams that ended on a connection whose HPACK tables were unusable: not counted as requests.",
            MetricType::COUNTER,
            |r| r.h2_streams_undecoded,
        ),
    ];
    for (name, help, kind, field) in per_target {
        let metrics = part
            .requests
            .iter()
            .filter_map(|r| {
                let v = field(r)? as f64;
                let l = [("target", r.target.as_str())];
                Some(if kind == MetricType::GAUGE {
                    gauge(&l, v)
                } else {
                    counter(&l, v)
                })
            })
            .collect();
        out.push(family(name, help, kind, metrics));
    }
    type Stall = fn(&RequestSummary) -> Option<f64>;
    let stalls: [(&str, &str, Stall); 2] = [
        (
            "infersight_http_oldest_active_request_seconds",
            "Age of the target's oldest request read and not yet answered (absent when none is open).",
            |r| r.oldest_active_request_seconds,
        ),
        (
            "infersight_http_stream_idle_seconds",
            "Seconds since the last write of the target's most silent response in progress (absent when none is open).",
            |r| r.stream_idle_seconds,
        ),
    ];
    for (name, help, field) in stalls {
        out.push(series(
            name,
            help,
            MetricType::GAUGE,
            &part.requests,
            |r| vec![("target", r.target.clone())],
            field,
        ));
    }
    let mut ttft = Vec::new();
    let mut tpot = Vec::new();
    let mut gen_duration = Vec::new();
    let mut chunks = Vec::new();
    for s in &part.streams {
        let l = [
            ("http_route", s.route.as_str()),
            ("target", s.target.as_str()),
        ];
        ttft.push(fixed_histogram(&l, &s.ttft));
        tpot.push(fixed_histogram(&l, &s.tpot));
        gen_duration.push(fixed_histogram(&l, &s.duration));
        chunks.push(counter(&l, s.chunks as f64));
    }
    for s in &part.rpc_streams {
        let l = [
            ("rpc_method", s.method.as_str()),
            ("rpc_service", s.service.as_str()),
            ("rpc_system", "grpc"),
            ("target", s.target.as_str()),
        ];
        if s.ttft.count > 0 {
            ttft.push(fixed_histogram(&l, &s.ttft));
        }
    }
    out.push(family(
        "gen_ai_server_time_to_first_token_seconds",
        "Streaming responses: request fully read to the first response write carrying data (gRPC: the first response message).",
        MetricType::HISTOGRAM,
        ttft,
    ));
    out.push(family(
        "gen_ai_server_time_per_output_token_seconds",
        "Streaming responses: mean gap between data writes (one SSE event or chunk = one token chunk).",
        MetricType::HISTOGRAM,
        tpot,
    ));
    out.push(family(
        "gen_ai_server_request_duration_seconds",
        "Streaming responses: duration from first request byte to last response byte.",
        MetricType::HISTOGRAM,
        gen_duration,
    ));
    out.push(family(
        "infersight_http_stream_chunks_total",
        "Data writes (SSE events or chunks) of streaming responses.",
        MetricType::COUNTER,
        chunks,
    ));
    // Both are known while the tracer's kernel counters can be read.
    if part.ringbuf_dropped.is_some() {
        out.push(single(
            "infersight_http_events_discarded_total",
            "Request events that reached the agent but were malformed or inconsistent.",
            MetricType::COUNTER,
            part.http_events_discarded as f64,
        ));
    }
    if let Some(d) = part.ringbuf_dropped {
        out.push(single(
            "infersight_ringbuf_dropped_events_total",
            "Completed requests whose event did not fit in the kernel ring buffer.",
            MetricType::COUNTER,
            d as f64,
        ));
    }
    out.push(series(
        "infersight_http_internal_requests_total",
        "Requests a target accepted on a listening port that is not its front door (its \
         ports setting): a server calling its own runner or workers over loopback. Not in \
         its request series.",
        MetricType::COUNTER,
        &part.http_internal,
        |r| vec![("port", r.port.clone()), ("target", r.target.clone())],
        |r| Some(r.requests as f64),
    ));
    out.push(series(
        "infersight_http_requests_aborted_total",
        "Requests ended by the agent, not by a response: their process died with them open \
         (process_exit), or the kernel's connection state was evicted (evicted).",
        MetricType::COUNTER,
        &part.http_aborted,
        |(t, reason, _)| vec![("reason", reason.to_string()), ("target", t.clone())],
        |(_, _, n)| Some(*n as f64),
    ));
}

/// gRPC (OpenTelemetry RPC semantic conventions, Prometheus form).
fn rpc(part: &HttpPart, out: &mut Vec<MetricFamily>) {
    let mut duration = Vec::new();
    for s in &part.rpc {
        let code = s.code.to_string();
        let l = [
            ("rpc_grpc_status_code", code.as_str()),
            ("rpc_method", s.method.as_str()),
            ("rpc_service", s.service.as_str()),
            ("rpc_system", "grpc"),
            ("target", s.target.as_str()),
        ];
        duration.push(fixed_histogram(&l, &s.duration));
    }
    out.push(family(
        "rpc_server_duration_seconds",
        "Duration of gRPC calls: request headers read to the trailers written.",
        MetricType::HISTOGRAM,
        duration,
    ));
    let (mut requests, mut responses) = (Vec::new(), Vec::new());
    for s in &part.rpc_streams {
        let l = [
            ("rpc_method", s.method.as_str()),
            ("rpc_service", s.service.as_str()),
            ("rpc_system", "grpc"),
            ("target", s.target.as_str()),
        ];
        requests.push(fixed_histogram(&l, &s.requests_per_rpc));
        responses.push(fixed_histogram(&l, &s.responses_per_rpc));
    }
    out.push(family(
        "rpc_server_requests_per_rpc",
        "Streaming gRPC methods: request messages per call.",
        MetricType::HISTOGRAM,
        requests,
    ));
    out.push(family(
        "rpc_server_responses_per_rpc",
        "Streaming gRPC methods: response messages per call.",
        MetricType::HISTOGRAM,
        responses,
    ));
}
