//! `/api/v1` views that read more than the Snapshot: history from SQLite, the alert
//! history, and acknowledging an alert (a write: bearer token). History answers are
//! bounded (points per series, series per answer) and their queries run one at a time on
//! a blocking thread, stopped at `HISTORY_TIMEOUT`.
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use http_body_util::Full;
use hyper::{body::Bytes, header::AUTHORIZATION, Method, Request, Response, StatusCode};
use serde_json::json;

use super::response;
use crate::{
    base::{now_seconds, Done, Refusal, RefusalKind},
    history::{History, HistoryError, QueryBounds},
    store::Store,
};

/// How long a history query may take, its wait for its turn included.
pub const HISTORY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the API reads besides the Snapshot.
#[derive(Default)]
pub struct Api {
    pub history: Option<Arc<Mutex<History>>>,
    pub store: Option<Arc<Mutex<Store>>>,
    /// Bearer token for writes; none configured: writes are refused. A reload may
    /// change it.
    pub token: Arc<std::sync::RwLock<Option<String>>>,
    /// Writes go to the agent's tick loop (none: the API is read-only).
    pub commands: Option<tokio::sync::mpsc::Sender<crate::control::Request>>,
    /// Browser origins besides the agent's own that may open `/ws`.
    pub origins: Vec<String>,
    /// Bounds of `/api/v1/history` answers.
    pub history_limits: HistoryLimits,
    /// History queries take turns (one reader connection); waiting here holds no thread.
    pub history_turn: tokio::sync::Mutex<()>,
}

/// Most points per series and series per `/api/v1/history` answer.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    pub max_points: usize,
    pub max_series: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            max_points: crate::config::DEFAULT_HISTORY_MAX_POINTS,
            max_series: crate::config::DEFAULT_HISTORY_MAX_SERIES,
        }
    }
}

/// Request bodies larger than this get 413.
pub const MAX_BODY: usize = 64 * 1024;

/// The collections that take writes, and the item named in the path, if any.
#[derive(Debug, Clone)]
pub enum Write {
    Rules(Option<String>),
    Targets(Option<String>),
    Reload,
}

impl Write {
    /// `/api/v1/rules[/{name}]` and `/api/v1/targets[/{name}]`.
    pub fn route(path: &str) -> Option<Write> {
        let item = |rest: &str| match rest {
            "" => Some(None),
            r => r
                .strip_prefix('/')
                .filter(|n| !n.is_empty() && !n.contains('/'))
                .map(|n| Some(percent_decode(n))),
        };
        if path == "/api/v1/reload" {
            return Some(Write::Reload);
        }
        if let Some(rest) = path.strip_prefix("/api/v1/rules") {
            return item(rest).map(Write::Rules);
        }
        path.strip_prefix("/api/v1/targets")
            .and_then(item)
            .map(Write::Targets)
    }
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

/// `POST /api/v1/rules`, `PUT` / `DELETE /api/v1/rules/{name}`, `POST /api/v1/targets`,
/// `DELETE /api/v1/targets/{name}`: checked here, applied by the agent.
pub async fn write(
    api: Arc<Api>,
    req: Request<hyper::body::Incoming>,
    route: Write,
) -> Response<Full<Bytes>> {
    use crate::{alerting::RuleCommand, control::Command};
    use http_body_util::{BodyExt, Limited};
    let method = req.method().clone();
    let make: fn(serde_json::Value, Option<String>) -> Option<Command> = match (&method, &route) {
        (&Method::POST, Write::Rules(None)) => |v, _| Some(Command::Rule(RuleCommand::Create(v))),
        (&Method::PUT, Write::Rules(Some(_))) => {
            |v, n| n.map(|n| Command::Rule(RuleCommand::Put(n, v)))
        }
        (&Method::DELETE, Write::Rules(Some(_))) => {
            |_, n| n.map(|n| Command::Rule(RuleCommand::Delete(n)))
        }
        (&Method::POST, Write::Targets(None)) => |v, _| Some(Command::AddTarget(v)),
        (&Method::DELETE, Write::Targets(Some(_))) => |_, n| n.map(Command::RemoveTarget),
        (&Method::POST, Write::Reload) => |_, _| Some(Command::Reload),
        _ => {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "writes: POST /api/v1/rules, PUT or DELETE /api/v1/rules/{name}, \
                 POST /api/v1/targets, DELETE /api/v1/targets/{name}, POST /api/v1/reload",
            )
        }
    };
    if let Err((status, message)) = authorize(&api, &req) {
        return error(status, message);
    }
    let Some(tx) = &api.commands else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the API is read-only");
    };
    let json = if method == Method::DELETE || matches!(route, Write::Reload) {
        serde_json::Value::Null
    } else {
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body over {MAX_BODY} bytes"),
                )
            }
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
        };
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")),
        }
    };
    let name = match route {
        Write::Rules(n) | Write::Targets(n) => n,
        Write::Reload => None,
    };
    let Some(cmd) = make(json, name) else {
        return error(StatusCode::BAD_REQUEST, "no name in the path");
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if tx.send((cmd, reply)).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping");
    }
    match answer.await {
        Ok(Ok((done, body))) => response(
            match done {
                Done::Created => StatusCode::CREATED,
                Done::Changed => StatusCode::OK,
            },
            "application/json",
            body.to_string().into_bytes(),
        ),
        Ok(Err(refusal)) => refused(&refusal),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping"),
    }
}

/// The status code of each kind of refusal.
pub fn status_of(kind: RefusalKind) -> StatusCode {
    match kind {
        RefusalKind::BadRequest => StatusCode::BAD_REQUEST,
        RefusalKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        RefusalKind::NotFound => StatusCode::NOT_FOUND,
        RefusalKind::Conflict => StatusCode::CONFLICT,
        RefusalKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        RefusalKind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A refusal as an answer: `{"error": …}`, plus `"errors": […]` when it lists them.
pub fn refused(r: &Refusal) -> Response<Full<Bytes>> {
    let mut body = json!({ "error": r.to_string() });
    if r.listed {
        body["errors"] = json!(r.errors);
    }
    response(
        status_of(r.kind),
        "application/json",
        body.to_string().into_bytes(),
    )
}

pub fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    response(
        status,
        "application/json",
        json!({ "error": message.into() }).to_string().into_bytes(),
    )
}

fn ok(v: serde_json::Value) -> Response<Full<Bytes>> {
    response(
        StatusCode::OK,
        "application/json",
        v.to_string().into_bytes(),
    )
}

/// RFC 3339 or unix seconds.
fn time(name: &str, v: &str) -> Result<i64, String> {
    if let Ok(n) = v.parse::<f64>() {
        return Ok(n as i64);
    }
    humantime::parse_rfc3339_weak(v)
        .map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        })
        .map_err(|e| format!("{name}: {v:?} is neither RFC 3339 nor unix seconds: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `GET /api/v1/history?metric=…&from=…&to=…&step=…&LABEL=VALUE…` (`query` is the
/// request's query string).
pub async fn history(api: Arc<Api>, query: String) -> Response<Full<Bytes>> {
    let Some(h) = api.history.clone() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "history is off (see /health)",
        );
    };
    let mut metric = None;
    let (mut from, mut to, mut step) = (None, None, None);
    let mut matchers = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let parsed = match k.as_ref() {
            "metric" => {
                metric = Some(v.to_string());
                Ok(())
            }
            "from" => time("from", &v).map(|t| from = Some(t)),
            "to" => time("to", &v).map(|t| to = Some(t)),
            "step" => humantime::parse_duration(&v)
                .map(|d| step = Some(d.as_secs() as i64))
                .or_else(|_| v.parse::<i64>().map(|s| step = Some(s)))
                .map_err(|_| format!("step: {v:?} is not a duration (\"60s\") or seconds")),
            label => {
                matchers.insert(label.to_string(), v.to_string());
                Ok(())
            }
        };
        if let Err(e) = parsed {
            return error(StatusCode::BAD_REQUEST, e);
        }
    }
    let Some(metric) = metric else {
        return error(
            StatusCode::BAD_REQUEST,
            "metric: required (a signal name, as in alert rules)",
        );
    };
    if !crate::readings::known_signal(&metric) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("metric: unknown signal {metric:?}"),
        );
    }
    let now = now_seconds() as i64;
    let to = to.unwrap_or(now);
    let from = from.unwrap_or(to.saturating_sub(3600));
    if from > to {
        return error(StatusCode::BAD_REQUEST, "from is after to");
    }
    let span = to.saturating_sub(from);
    // About 300 points by default.
    let step = step.unwrap_or((span / 300).max(1)).max(1);
    // Buckets are aligned to multiples of the step.
    let points = to.div_euclid(step) - from.div_euclid(step) + 1;
    let limits = api.history_limits;
    let max_points = i64::try_from(limits.max_points).unwrap_or(i64::MAX);
    if points > max_points {
        let least = span / (max_points - 1).max(1) + 1;
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "step: {step} s over {span} s is {points} points per series; at most {max_points} \
                 ([api] history_max_points): use a step of {least} s or more"
            ),
        );
    }
    let deadline = std::time::Instant::now() + HISTORY_TIMEOUT;
    let Ok(turn) = tokio::time::timeout(HISTORY_TIMEOUT, api.history_turn.lock()).await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("history: other queries held it for {HISTORY_TIMEOUT:?}; try again"),
        );
    };
    let bounds = QueryBounds {
        max_series: limits.max_series,
        deadline: Some(deadline),
    };
    let m = metric.clone();
    // SQLite blocks: not on a runtime worker, which serves /metrics too.
    let result = tokio::task::spawn_blocking(move || {
        lock(&h).query_bounded(&m, &matchers, (from, to, step, now), bounds)
    })
    .await;
    drop(turn);
    match result {
        Ok(Ok(series)) => {
            let points = (series.len() == 1).then(|| series[0].points.clone());
            ok(
                json!({ "metric": metric, "from": from, "to": to, "step": step, "points": points, "series": series }),
            )
        }
        Ok(Err(HistoryError::TooManySeries { matched, limit })) => error(
            StatusCode::BAD_REQUEST,
            format!(
                "{matched} series of {metric} match; at most {limit} per answer \
                 ([api] history_max_series): add label matchers (LABEL=VALUE)"
            ),
        ),
        Ok(Err(HistoryError::TimedOut)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "history: the query ran over {HISTORY_TIMEOUT:?}; ask for a shorter range or a coarser step"
            ),
        ),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("history query: {e}"),
        ),
    }
}

/// `GET /api/v1/alerts/history`
pub fn alert_history(api: &Api) -> Response<Full<Bytes>> {
    let Some(s) = &api.store else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "alerting is off or has no state store",
        );
    };
    match lock(s).alert_history(1000) {
        Ok(rows) => ok(json!(rows)),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Equal strings, compared in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Writes need `Authorization: Bearer <token>`: 401 without one, 403 with a wrong one or
/// when no token is configured.
fn authorize<B>(api: &Api, req: &Request<B>) -> Result<(), (StatusCode, &'static str)> {
    let token = api
        .token
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let Some(token) = &token else {
        return Err((
            StatusCode::FORBIDDEN,
            "writes are disabled: no API token is configured ([api] token_file or INFERSIGHT_API_TOKEN)",
        ));
    };
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => Err((
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Bearer <token>",
        )),
        Some(g) if same(g, token) => Ok(()),
        Some(_) => Err((StatusCode::FORBIDDEN, "wrong token")),
    }
}

/// `POST /api/v1/alerts/{id}/ack`
pub fn ack<B>(api: &Api, req: &Request<B>, id: &str) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
    }
    if let Err((status, message)) = authorize(api, req) {
        return error(status, message);
    }
    let Ok(id) = id.parse::<i64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("alert id {id:?} is not a number"),
        );
    };
    let Some(s) = &api.store else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "alerting is off or has no state store",
        );
    };
    let now = now_seconds();
    match lock(s).acknowledge(id, now) {
        Ok(true) => ok(json!({ "id": id, "acknowledged": now })),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!("no alert {id} in the history"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[cfg(test)]
mod tests;
