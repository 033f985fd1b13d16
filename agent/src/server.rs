//! HTTP endpoints (hyper): `/metrics`, `/health`, the read-only `/api/v1` views and the
//! `/ws` live stream, all from the latest Snapshot.
mod api;
mod ws;

pub use api::{Api, HistoryLimits};

use std::{
    convert::Infallible,
    sync::{atomic::AtomicUsize, Arc},
    time::Duration,
};

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
use tokio::{
    net::TcpListener,
    sync::{broadcast, watch},
};

use crate::{
    base::{CollectorStatus, ProgramStatus, State},
    collectors::http::TargetProtocols,
    exposition,
    readings::TargetStatus,
    snapshot::Snapshot,
    stream::Message,
};

static DASHBOARD: &str = include_str!("server/dashboard/index.html");

/// Slow or idle clients cannot hold a connection open without sending a request.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

pub type Snapshots = watch::Receiver<Arc<Snapshot>>;

/// Accept connections until the task is dropped; one task per connection.
pub async fn serve(
    listener: TcpListener,
    snapshots: Snapshots,
    live: broadcast::Sender<Message>,
    context: Arc<Api>,
) {
    let clients = Arc::new(AtomicUsize::new(0));
    let cache = Arc::new(MetricsCache::default());
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
        let (stream_tx, clients, ctx) = (live.clone(), clients.clone(), context.clone());
        let cache = cache.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let path = req.uri().path().to_string();
                let write = req.method() != Method::GET && req.method() != Method::HEAD;
                let ctx2 = ctx.clone();
                // Writes read a body and wait for the agent: the rest answers at once.
                let next = if let Some(w) = api::Write::route(&path).filter(|_| write) {
                    Next::Write(req, w)
                } else if path == "/ws" {
                    Next::Now(ws::upgrade(req, &stream_tx, &clients, &ctx.origins))
                } else if path == "/api/v1/history" {
                    Next::History(req.uri().query().unwrap_or("").to_string())
                } else if path == "/api/v1/alerts/history" {
                    Next::Now(api::alert_history(&ctx))
                } else if let Some(id) = path
                    .strip_prefix("/api/v1/alerts/")
                    .and_then(|r| r.strip_suffix("/ack"))
                {
                    Next::Now(api::ack(&ctx, &req, id))
                } else {
                    let snap = snapshots.borrow().clone();
                    Next::Now(route(&req, &snap, &cache))
                };
                async move {
                    let resp = match next {
                        Next::Now(r) => r,
                        Next::Write(req, w) => api::write(ctx2, req, w).await,
                        Next::History(query) => api::history(ctx2, query).await,
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}

pub(crate) fn response(
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

fn json<T: Serialize + ?Sized>(v: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(v) {
        Ok(body) => response(StatusCode::OK, "application/json", body),
        Err(e) => response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            serde_json::json!({ "error": format!("encoding failed: {e}") })
                .to_string()
                .into_bytes(),
        ),
    }
}

#[derive(Serialize)]
struct HealthBody<'a> {
    status: &'static str,
    timestamp_ms: u64,
    collectors: &'a [CollectorStatus],
    programs: &'a [ProgramStatus],
    targets: &'a [TargetStatus],
    /// Per target, the protocol probes that see its traffic.
    protocols: &'a [TargetProtocols],
}

enum Next {
    Now(Response<Full<Bytes>>),
    Write(Request<Incoming>, api::Write),
    /// `/api/v1/history` with its query string: answered from a blocking thread.
    History(String),
}

/// The exposition of the latest tick, rendered once however many scrapers ask.
#[derive(Default)]
struct MetricsCache(std::sync::Mutex<Option<(u64, Bytes)>>);

impl MetricsCache {
    fn get(&self, snap: &Snapshot) -> Bytes {
        let mut c = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((tick, body)) = c.as_ref() {
            if *tick == snap.tick {
                return body.clone();
            }
        }
        let body = Bytes::from(exposition::render(snap));
        *c = Some((snap.tick, body.clone()));
        body
    }
}

fn route(req: &Request<Incoming>, snap: &Snapshot, cache: &MetricsCache) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let known = matches!(
        path,
        "/" | "/metrics" | "/health" | "/api/v1/snapshot" | "/api/v1/alerts"
    );
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
        // The dashboard: one self-contained page (no CDN, works offline), fed by /ws.
        "/" => response(
            StatusCode::OK,
            "text/html; charset=utf-8",
            DASHBOARD.as_bytes().to_vec(),
        ),
        "/metrics" => {
            let mut r = Response::new(Full::new(cache.get(snap)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(exposition::CONTENT_TYPE),
            );
            r
        }
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
                protocols: &snap.readings.http.protocols,
            };
            let code = if overall == State::Failed {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            let json = serde_json::to_vec_pretty(&body).unwrap_or_default();
            response(code, "application/json", json)
        }
        "/api/v1/snapshot" => json(snap),
        "/api/v1/alerts" => json(&snap.alerting.alerts),
        "/api/v1/targets" => json(&snap.targets),
        "/api/v1/rules" => json(&snap.alerting.rules),
        _ => response(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
    }
}
