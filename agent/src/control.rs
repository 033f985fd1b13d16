//! Changes to the running agent from outside its tick loop (API writes): each is a
//! `Command` sent to the loop, which owns the agent, and answered from there with a
//! `Reply` (a JSON body, or a typed refusal the server maps to a status code).
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::{
    alerting::RuleCommand,
    base::{Refusal, RefusalKind, Reply},
    config::{Endpoints, PortsValue, TargetRequest},
};

#[derive(Debug)]
pub enum Command {
    Rule(RuleCommand),
    /// `POST /api/v1/targets`: a target as JSON (see `target_request`).
    AddTarget(Value),
    /// `DELETE /api/v1/targets/{name}`.
    RemoveTarget(String),
    /// `POST /api/v1/reload`: read the configuration and rules again (as SIGHUP does).
    Reload,
}

/// A command and where its answer goes.
pub type Request = (Command, tokio::sync::oneshot::Sender<Reply>);

/// One of `pid`, `cgroup`, `pid_file`, `process` (the config file's target kinds), an
/// optional `name`, the target's own endpoints (`metrics_url`, `health_url`,
/// `health_path`) where they are not to be discovered, and its front-door `ports`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetBody {
    pid: Option<u32>,
    cgroup: Option<PathBuf>,
    pid_file: Option<PathBuf>,
    process: Option<String>,
    name: Option<String>,
    metrics_url: Option<String>,
    health_url: Option<String>,
    health_path: Option<String>,
    /// Any JSON, checked here: a bad port is invalid (422) and named, not a shape error.
    ports: Option<Value>,
}

fn invalid(message: &str) -> Refusal {
    Refusal::new(RefusalKind::Invalid, message)
}

/// The target a JSON body asks for; a bad request for the wrong shape, invalid for
/// values that cannot be a target.
pub fn target_request(v: Value) -> Result<TargetRequest, Refusal> {
    let b: TargetBody =
        serde_json::from_value(v).map_err(|e| Refusal::new(RefusalKind::BadRequest, e))?;
    let name = match b.name {
        Some(n) if n.trim().is_empty() => return Err(invalid("name: must not be empty")),
        n => n,
    };
    let endpoints = Endpoints::checked(
        b.metrics_url.as_deref(),
        b.health_url.as_deref(),
        b.health_path.as_deref(),
    )
    .and_then(|e| e.with_ports(b.ports.as_ref().map(PortsValue::from_json)))
    .map_err(|e| invalid(&format!("{}: {:?}: {}", e.key, e.value, e.reason)))?;
    let mut kinds = Vec::new();
    if let Some(pid) = b.pid {
        if pid == 0 {
            return Err(invalid("pid: must be positive"));
        }
        kinds.push(TargetRequest::Pid {
            pid,
            name: name.clone(),
            endpoints: endpoints.clone(),
        });
    }
    if let Some(path) = b.cgroup {
        kinds.push(TargetRequest::Cgroup {
            path,
            name: name.clone(),
            endpoints: endpoints.clone(),
        });
    }
    if let Some(path) = b.pid_file {
        // The agent's working directory is nothing a client can know.
        if !path.is_absolute() {
            return Err(invalid("pid_file: must be an absolute path"));
        }
        kinds.push(TargetRequest::PidFile {
            path,
            name: name.clone(),
            endpoints: endpoints.clone(),
        });
    }
    if let Some(comm) = b.process {
        if comm.trim().is_empty() {
            return Err(invalid("process: must not be empty"));
        }
        kinds.push(TargetRequest::Process {
            comm: comm.trim().to_string(),
            name,
            endpoints,
        });
    }
    match kinds.len() {
        1 => Ok(kinds.remove(0)),
        _ => Err(invalid(
            "give exactly one of pid, cgroup, pid_file, process",
        )),
    }
}
