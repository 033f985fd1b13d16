//! The OpenSSL probes: finds the `libssl.so.3` each target process maps (servers may
//! load it late, so processes are looked at again until it appears, as for libcuda.so),
//! and attaches the entry and return probes for that process only. Not to the library
//! file for every process: every other process using it (sshd, package managers, a
//! sandbox's own relay) would pay the traps, and a return probe's trampoline is a system
//! call a seccomp filter may refuse, which kills the process. The probes of a process
//! that is gone are detached. Which libraries a target's processes have probed is what
//! `/health` shows per target.
use std::{
    collections::{BTreeSet, HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use std::num::NonZeroU32;

use aya::{
    programs::{
        uprobe::{UProbeLinkId, UProbeScope},
        UProbe,
    },
    Ebpf,
};

use crate::ebpf::{brief, detach::Detacher};

/// How often a target process without a probed libssl is looked at again.
const RESCAN: Duration = Duration::from_secs(2);

/// The library the probes are for (OpenSSL 3's ABI).
const LIBRARY: &str = "libssl.so.3";

/// Each program and the functions it is attached to (entry probes, then the one return
/// probe every function shares).
const ENTRY: &[(&str, &str)] = &[
    ("ssl_read_enter", "SSL_read"),
    ("ssl_read_ex_enter", "SSL_read_ex"),
    ("ssl_write_enter", "SSL_write"),
    ("ssl_write_ex_enter", "SSL_write_ex"),
    ("ssl_handshake_enter", "SSL_do_handshake"),
];
const EXIT: &str = "ssl_exit";

/// Every OpenSSL probe program (for their status and run time).
pub const PROGRAMS: [&str; 6] = [
    "ssl_read_enter",
    "ssl_read_ex_enter",
    "ssl_write_enter",
    "ssl_write_ex_enter",
    "ssl_handshake_enter",
    EXIT,
];

/// The tail-called programs of the return probe, at their `HTTP_TAIL_TLS` indexes.
pub const TAIL_PROGRAMS: [&str; 3] = ["tls_http_start", "tls_http_head", "tls_http_h2"];

#[derive(Default)]
pub struct Tls {
    loaded: bool,
    /// Per target process: the library files probed in it, by (device, inode).
    attached: HashSet<(u32, u64, u64)>,
    /// Per target process: its probes' links, to detach when it is gone.
    links: HashMap<u32, Vec<(&'static str, UProbeLinkId)>>,
    /// Detaches the links of gone processes off the tick thread (started on first use).
    detacher: Option<Detacher>,
    /// (process, file) pairs whose attach failed (not tried again).
    failed: HashSet<(u32, u64, u64)>,
    scanned: HashMap<u32, Instant>,
    /// Per target process: the probed libraries it maps.
    mapped: HashMap<u32, BTreeSet<PathBuf>>,
    pub last_error: Option<String>,
}

/// The libssl.so.3 files a process maps, as paths that reach into its mount namespace,
/// with the path the process sees.
fn libssl_of(pid: u32) -> Vec<(PathBuf, PathBuf)> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, PathBuf)> = Vec::new();
    for line in maps.lines() {
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        if path.rsplit('/').next() != Some(LIBRARY) {
            continue;
        }
        let full = PathBuf::from(format!("/proc/{pid}/root{path}"));
        if !out.iter().any(|(f, _)| f == &full) {
            out.push((full, PathBuf::from(path)));
        }
    }
    out
}

impl Tls {
    /// Look at the processes that are due; attach to each new library found.
    pub fn scan(&mut self, bpf: &mut Ebpf, pids: impl Iterator<Item = u32>) {
        let now = Instant::now();
        let pids: HashSet<u32> = pids.collect();
        self.scanned.retain(|p, _| pids.contains(p));
        self.mapped.retain(|p, _| pids.contains(p));
        self.attached.retain(|(p, _, _)| pids.contains(p));
        self.failed.retain(|(p, _, _)| pids.contains(p));
        let gone: Vec<u32> = self
            .links
            .keys()
            .filter(|p| !pids.contains(p))
            .copied()
            .collect();
        for pid in gone {
            let links = self
                .links
                .remove(&pid)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(name, link)| program(bpf, name).ok()?.take_link(link).ok())
                .collect();
            self.detacher
                .get_or_insert_with(|| Detacher::new("TLS"))
                .detach(pid, links);
        }
        for pid in pids {
            if self
                .scanned
                .get(&pid)
                .is_some_and(|t| now.duration_since(*t) < RESCAN)
            {
                continue;
            }
            self.scanned.insert(pid, now);
            for (lib, seen_as) in libssl_of(pid) {
                let Ok(meta) = std::fs::metadata(&lib) else {
                    continue;
                };
                let id = (pid, meta.dev(), meta.ino());
                if self.failed.contains(&id) {
                    continue;
                }
                if !self.attached.contains(&id) {
                    match self.attach(bpf, pid, &lib) {
                        Ok(n) => {
                            tracing::info!(
                                "TLS: {n} OpenSSL functions probed in {} (process {pid})",
                                seen_as.display()
                            );
                            self.attached.insert(id);
                        }
                        Err(e) => {
                            tracing::warn!("TLS: {}: {e}", seen_as.display());
                            self.last_error = Some(format!("{}: {e}", seen_as.display()));
                            self.failed.insert(id);
                            continue;
                        }
                    }
                }
                self.mapped.entry(pid).or_default().insert(seen_as);
            }
        }
    }

    /// The probed libraries the processes `pids` map.
    pub fn libraries_of(&self, pids: impl Iterator<Item = u32>) -> BTreeSet<PathBuf> {
        let mut out = BTreeSet::new();
        for p in pids {
            if let Some(l) = self.mapped.get(&p) {
                out.extend(l.iter().cloned());
            }
        }
        out
    }

    /// Whether any process has the probes (their programs then run).
    pub fn any_attached(&self) -> bool {
        !self.attached.is_empty()
    }

    fn attach(&mut self, bpf: &mut Ebpf, pid: u32, path: &Path) -> Result<usize, String> {
        let Some(one) = NonZeroU32::new(pid) else {
            return Err("no process 0".into());
        };
        if !self.loaded {
            for name in ENTRY.iter().map(|(p, _)| *p).chain([EXIT]) {
                program(bpf, name)?
                    .load()
                    .map_err(|e| format!("{name}: load: {}", brief(e)))?;
            }
            self.loaded = true;
        }
        let mut attached = 0;
        let links = self.links.entry(pid).or_default();
        for (name, function) in ENTRY {
            let entry = program(bpf, name)?
                .attach(*function, path, UProbeScope::OneProcess(one))
                .map_err(|e| format!("{function}: {e}"))?;
            links.push((*name, entry));
            let exit = program(bpf, EXIT)?
                .attach(*function, path, UProbeScope::OneProcess(one))
                .map_err(|e| format!("{function} (return): {e}"))?;
            links.push((EXIT, exit));
            attached += 1;
        }
        Ok(attached)
    }
}

fn program<'a>(bpf: &'a mut Ebpf, name: &str) -> Result<&'a mut UProbe, String> {
    bpf.program_mut(name)
        .ok_or_else(|| format!("program {name} is missing from the eBPF object"))?
        .try_into()
        .map_err(|e| format!("{name}: {e}"))
}
