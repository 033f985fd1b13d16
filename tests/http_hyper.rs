//! Request tracing of a real Rust hyper server: the server runs inside this test process
//! (its own binary, so no other test shares the PID), which is the traced target.
mod common;

use std::{convert::Infallible, time::Duration};

use common::{bpf_or_skip, request_count, Agent};
use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;

async fn handle(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let status = match path.as_str() {
        "/missing" => 404,
        "/error" => 500,
        p if p.starts_with("/sleep/") => {
            let ms: u64 = p["/sleep/".len()..].parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            200
        }
        _ => 200,
    };
    let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    Ok(r)
}

/// Start the server on a background runtime; returns its port.
fn start_server() -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap().port()).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                stream.set_nodelay(true).unwrap();
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(handle))
                        .await;
                });
            }
        });
    });
    rx.recv().unwrap()
}

#[test]
fn hyper_server_requests_are_counted_exactly() {
    if !bpf_or_skip("hyper_server_requests_are_counted_exactly") {
        return;
    }
    let port = start_server();
    let arg = format!("{}=hyper", std::process::id());
    let agent = Agent::start(&["--pid", &arg]);
    let slow = common::request_mix(port, "/v1/items");
    agent.settle();
    let m = agent.metrics();
    let l = |route: &'static str, status: &'static str| {
        [
            ("target", "hyper"),
            ("http_request_method", "GET"),
            ("http_route", route),
            ("http_response_status_code", status),
            ("network_protocol_version", "1.1"),
        ]
    };
    assert_eq!(request_count(&m, &[("target", "hyper")]), 200.0);
    assert_eq!(request_count(&m, &l("/sleep/{id}", "200")), 30.0);
    assert_eq!(request_count(&m, &l("_NOT_FOUND", "404")), 10.0);
    assert_eq!(request_count(&m, &l("/error", "500")), 10.0);
    assert_eq!(request_count(&m, &l("/v1/items/{id}", "200")), 150.0);
    let sleep = l("/sleep/{id}", "200");
    let kernel_mean = m
        .get("http_server_request_duration_seconds_sum", &sleep)
        .unwrap()
        / 30.0;
    common::assert_within_client(kernel_mean, &slow);
    assert!(kernel_mean >= (20.0 * 30.0 + 10.0 * 100.0) / 30.0 / 1000.0);
    assert_eq!(
        m.get("http_server_active_requests", &[("target", "hyper")]),
        Some(0.0)
    );
}
