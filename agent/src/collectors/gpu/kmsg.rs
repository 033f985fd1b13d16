//! The NVIDIA driver's lines in the kernel log (`/dev/kmsg`): XIDs, some of which never
//! reach NVML's event API, and "fallen off the bus", which NVML cannot report about a
//! device it no longer sees. Read from the end the log had when the agent started (old
//! boot messages are not counted again), without blocking.
use std::{
    fs::File,
    io::{ErrorKind, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use rustix::fs::{Mode, OFlags};

use super::pci::PciAddr;

/// What one driver line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvrmEvent {
    Xid { pci: PciAddr, code: u64 },
    FellOffBus { pci: PciAddr },
}

#[derive(Debug, thiserror::Error)]
pub enum KmsgError {
    #[error("{}: {source}{}", path.display(), hint(source))]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading the kernel log: {0}")]
    Read(std::io::Error),
}

fn hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        ErrorKind::PermissionDenied => {
            " (reading it needs CAP_SYSLOG where kernel.dmesg_restrict=1); XIDs come from NVML only"
        }
        _ => "",
    }
}

/// Records taken in one drain at most, so a flood of kernel messages cannot keep the
/// thread from its other work; the rest wait for the next drain.
const MAX_RECORDS: usize = 10_000;

pub struct KernelLog {
    file: File,
}

impl KernelLog {
    /// Open `path` (`/dev/kmsg`) at its current end.
    pub fn open(path: &Path) -> Result<KernelLog, KmsgError> {
        let open_err = |e: std::io::Error| KmsgError::Open {
            path: path.to_path_buf(),
            source: e,
        };
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| open_err(e.into()))?;
        let mut file = File::from(fd);
        file.seek(SeekFrom::End(0)).map_err(open_err)?;
        Ok(KernelLog { file })
    }

    /// Hand every driver event logged since the last drain to `each`.
    pub fn drain(&mut self, mut each: impl FnMut(NvrmEvent)) -> Result<(), KmsgError> {
        // A record is at most about 1 KiB of text plus its dictionary; one read returns one.
        let mut buf = vec![0u8; 8192];
        for _ in 0..MAX_RECORDS {
            match self.file.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => parse(&String::from_utf8_lossy(&buf[..n]))
                    .into_iter()
                    .for_each(&mut each),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                // Records were overwritten before they were read; the next read continues
                // with the oldest one left.
                Err(e) if e.kind() == ErrorKind::BrokenPipe => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(KmsgError::Read(e)),
            }
        }
        Ok(())
    }
}

/// The driver events of one `/dev/kmsg` record (`PRI,SEQ,TIME,FLAGS;MESSAGE` and
/// dictionary lines), e.g. `NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python3, GPU
/// has fallen off the bus.` (an XID 79 and a GPU off the bus) or `NVRM: GPU
/// 0000:3b:00.0: GPU has fallen off the bus.`.
pub fn parse(record: &str) -> Vec<NvrmEvent> {
    let line = record.lines().next().unwrap_or("");
    let message = line.split_once(';').map_or(line, |(_, m)| m);
    let Some(nvrm) = message.find("NVRM: ").map(|i| &message[i + 6..]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(xid) = nvrm.strip_prefix("Xid (") {
        let parsed = xid.split_once("): ").and_then(|(addr, rest)| {
            let code = rest.split(',').next()?.trim().parse().ok()?;
            Some(NvrmEvent::Xid {
                pci: PciAddr::parse(addr)?,
                code,
            })
        });
        out.extend(parsed);
    }
    if nvrm.contains("fallen off the bus") {
        let pci = nvrm
            .split_whitespace()
            .map(|w| w.trim_matches(|c| "():,".contains(c)))
            .find_map(PciAddr::parse);
        out.extend(pci.map(|pci| NvrmEvent::FellOffBus { pci }));
    }
    out
}

#[cfg(test)]
mod tests;
