//! Host facts the loader needs: capabilities, tracefs/bpffs mounts, tracepoint formats.
use std::path::Path;

use rustix::thread::CapabilitySet;

pub const TRACEFS: &str = "/sys/kernel/tracing";
pub const BPFFS: &str = "/sys/fs/bpf";

/// Effective capabilities of this process (none when they cannot be read).
fn effective_caps() -> CapabilitySet {
    rustix::thread::capabilities(None)
        .map(|c| c.effective)
        .unwrap_or(CapabilitySet::empty())
}

/// Why this process cannot load tracing programs, or `None` when it can.
pub fn missing_bpf_privileges() -> Option<String> {
    let caps = effective_caps();
    if caps.contains(CapabilitySet::SYS_ADMIN)
        || caps.contains(CapabilitySet::BPF | CapabilitySet::PERFMON)
    {
        return None;
    }
    let missing: Vec<&str> = [
        (CapabilitySet::BPF, "CAP_BPF"),
        (CapabilitySet::PERFMON, "CAP_PERFMON"),
    ]
    .iter()
    .filter(|(c, _)| !caps.contains(*c))
    .map(|(_, n)| *n)
    .collect();
    Some(format!(
        "missing capability {} (run as root, or grant AmbientCapabilities=CAP_BPF CAP_PERFMON)",
        missing.join(" and ")
    ))
}

/// Whether BPF_ENABLE_STATS is allowed (the kernel asks for CAP_SYS_ADMIN).
pub fn can_enable_stats() -> bool {
    effective_caps().contains(CapabilitySet::SYS_ADMIN)
}

/// Whether BPF run-time statistics are on for the whole host (`kernel.bpf_stats_enabled`).
pub fn stats_enabled_by_sysctl() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() == "1")
}

fn is_mounted(mountpoint: &str, fstype: &str) -> bool {
    procfs::process::Process::myself()
        .and_then(|p| p.mountinfo())
        .map(|m| {
            m.into_iter()
                .any(|e| e.mount_point == Path::new(mountpoint) && e.fs_type == fstype)
        })
        .unwrap_or(false)
}

/// Mount `fstype` at `mountpoint` unless it is there already.
pub fn ensure_mounted(mountpoint: &str, fstype: &str) -> Result<(), String> {
    if is_mounted(mountpoint, fstype) {
        return Ok(());
    }
    rustix::mount::mount(
        fstype,
        mountpoint,
        fstype,
        rustix::mount::MountFlags::empty(),
        None,
    )
    .map_err(|e| {
        format!(
            "cannot mount {fstype} at {mountpoint}: {}",
            std::io::Error::from(e)
        )
    })
}

/// `TASK_REPORT_MAX` as the `sched_switch` format prints it: the `prev_state` of a task
/// preempted while runnable (the expression before `? "+"`, whose terms are OR-ed, plus
/// one, shifted left once).
pub fn report_max() -> Option<u32> {
    let path = Path::new(TRACEFS).join("events/sched/sched_switch/format");
    parse_report_max(&std::fs::read_to_string(path).ok()?)
}

fn parse_report_max(format: &str) -> Option<u32> {
    let expr = format.rsplit_once("? \"+\"")?.0;
    let expr = expr.rsplit_once("REC->prev_state &")?.1;
    let mut or = 0u32;
    for word in expr.split(|c: char| !c.is_ascii_alphanumeric()) {
        if let Some(hex) = word.strip_prefix("0x") {
            or |= u32::from_str_radix(hex, 16).ok()?;
        }
    }
    expr.contains("+ 1) << 1").then(|| (or + 1) << 1)
}

/// Offset of `field` in a tracepoint record, from its tracefs `format` file.
pub fn field_offset(category: &str, event: &str, field: &str) -> Option<u32> {
    let path = Path::new(TRACEFS)
        .join("events")
        .join(category)
        .join(event)
        .join("format");
    parse_field_offset(&std::fs::read_to_string(path).ok()?, field)
}

fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let name = decl.split_whitespace().last()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        rest.trim()
            .strip_prefix("offset:")?
            .split(';')
            .next()?
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests;
