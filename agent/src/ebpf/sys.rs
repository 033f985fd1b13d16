//! Host facts the loader needs: capabilities, tracefs/bpffs mounts, tracepoint formats.
use std::{ffi::CString, path::Path};

pub const TRACEFS: &str = "/sys/kernel/tracing";
pub const BPFFS: &str = "/sys/fs/bpf";

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability bits of this process, from /proc/self/status.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1u64 << cap) != 0
}

/// Why this process cannot load tracing programs, or `None` when it can.
pub fn missing_bpf_privileges() -> Option<String> {
    let caps = effective_caps();
    if has(caps, CAP_SYS_ADMIN) || (has(caps, CAP_BPF) && has(caps, CAP_PERFMON)) {
        return None;
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .iter()
        .filter(|(c, _)| !has(caps, *c))
        .map(|(_, n)| *n)
        .collect();
    Some(format!(
        "missing capability {} (run as root, or grant AmbientCapabilities=CAP_BPF CAP_PERFMON)",
        missing.join(" and ")
    ))
}

/// Whether BPF_ENABLE_STATS is allowed (the kernel asks for CAP_SYS_ADMIN).
pub fn can_enable_stats() -> bool {
    has(effective_caps(), CAP_SYS_ADMIN)
}

/// Whether BPF run-time statistics are on for the whole host (`kernel.bpf_stats_enabled`).
pub fn stats_enabled_by_sysctl() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() == "1")
}

fn is_mounted(mountpoint: &str, fstype: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|text| {
            text.lines().any(|line| {
                let Some((pre, post)) = line.split_once(" - ") else {
                    return false;
                };
                pre.split_whitespace().nth(4) == Some(mountpoint)
                    && post.split_whitespace().next() == Some(fstype)
            })
        })
        .unwrap_or(false)
}

/// Mount `fstype` at `mountpoint` unless it is there already.
pub fn ensure_mounted(mountpoint: &str, fstype: &str) -> Result<(), String> {
    if is_mounted(mountpoint, fstype) {
        return Ok(());
    }
    let target = CString::new(mountpoint).map_err(|e| e.to_string())?;
    let kind = CString::new(fstype).map_err(|e| e.to_string())?;
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; a null
    // data pointer is allowed for these filesystems.
    let rc = unsafe {
        libc::mount(
            kind.as_ptr(),
            target.as_ptr(),
            kind.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "cannot mount {fstype} at {mountpoint}: {}",
            std::io::Error::last_os_error()
        ))
    }
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
