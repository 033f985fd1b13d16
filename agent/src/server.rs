//! HTTP endpoints (hyper): `/metrics` and `/health`, both read from the latest Snapshot.
use std::{convert::Infallible, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header::{HeaderValue, ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::{net::TcpListener, sync::watch};

use crate::{
    metrics,
    snapshot::{CollectorStatus, ProgramStatus, Snapshot, State, TargetStatus},
};

/// Slow or idle clients cannot hold a connection open without sending a request.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

pub type Snapshots = watch::Receiver<Arc<Snapshot>>;

/// Accept connections until the task is dropped; one task per connection.
pub async fn serve(listener: TcpListener, snapshots: Snapshots) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let snapshots = snapshots.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let snap = snapshots.borrow().clone();
                async move { Ok::<_, Infallible>(route(&req, &snap)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[derive(Serialize)]
struct HealthBody<'a> {
    status: &'static str,
    timestamp_ms: u64,
    collectors: &'a [CollectorStatus],
    programs: &'a [ProgramStatus],
    targets: &'a [TargetStatus],
}

fn route(req: &Request<Incoming>, snap: &Snapshot) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let known = matches!(path, "/metrics" | "/health");
    if known && req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = response(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            b"method not allowed\n".to_vec(),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/metrics" => match metrics::render(snap) {
            Ok(body) => response(StatusCode::OK, metrics::CONTENT_TYPE, body),
            Err(e) => response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("encoding metrics failed: {e}\n").into_bytes(),
            ),
        },
        "/health" => {
            let overall = snap.overall();
            let body = HealthBody {
                status: if overall == State::Failed {
                    "failing"
                } else {
                    "ok"
                },
                timestamp_ms: snap.timestamp_ms,
                collectors: &snap.collectors,
                programs: &snap.programs,
                targets: &snap.targets,
            };
            let code = if overall == State::Failed {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            let json = serde_json::to_vec_pretty(&body).unwrap_or_default();
            response(code, "application/json", json)
        }
        _ => response(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
    }
}
