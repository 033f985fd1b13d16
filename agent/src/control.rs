//! Changes to the running agent from outside its tick loop (API writes): each is a
//! `Command` sent to the loop, which owns the agent, and answered from there with an
//! HTTP status and a JSON body.
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::{alert::runtime::RuleCommand, config::TargetRequest};

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

/// HTTP status and JSON body.
pub type Reply = (u16, Value);

/// A command and where its answer goes.
pub type Request = (Command, tokio::sync::oneshot::Sender<Reply>);

pub fn error(code: u16, message: impl std::fmt::Display) -> Reply {
    (code, json!({ "error": message.to_string() }))
}

/// One of `pid`, `cgroup`, `pid_file`, `process` (the config file's target kinds), and an
/// optional `name`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetBody {
    pid: Option<u32>,
    cgroup: Option<PathBuf>,
    pid_file: Option<PathBuf>,
    process: Option<String>,
    name: Option<String>,
}

/// The target a JSON body asks for; `Err` is the reply (400 for the wrong shape, 422
/// for values that cannot be a target).
pub fn target_request(v: Value) -> Result<TargetRequest, Reply> {
    let b: TargetBody = serde_json::from_value(v).map_err(|e| error(400, e))?;
    let name = match b.name {
        Some(n) if n.trim().is_empty() => return Err(error(422, "name: must not be empty")),
        n => n,
    };
    let mut kinds = Vec::new();
    if let Some(pid) = b.pid {
        if pid == 0 {
            return Err(error(422, "pid: must be positive"));
        }
        kinds.push(TargetRequest::Pid {
            pid,
            name: name.clone(),
        });
    }
    if let Some(path) = b.cgroup {
        kinds.push(TargetRequest::Cgroup {
            path,
            name: name.clone(),
        });
    }
    if let Some(path) = b.pid_file {
        kinds.push(TargetRequest::PidFile {
            path,
            name: name.clone(),
        });
    }
    if let Some(comm) = b.process {
        if comm.trim().is_empty() {
            return Err(error(422, "process: must not be empty"));
        }
        kinds.push(TargetRequest::Process {
            comm: comm.trim().to_string(),
            name,
        });
    }
    match kinds.len() {
        1 => Ok(kinds.remove(0)),
        _ => Err(error(
            422,
            "give exactly one of pid, cgroup, pid_file, process",
        )),
    }
}

#[cfg(test)]
mod tests;
