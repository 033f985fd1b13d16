//! Which listening port a request was accepted on, for targets whose front door is some
//! of their ports (`ports`): the kernel gives the listening socket's fd in the accepting
//! process; /proc turns it into a socket inode and that into the local port. A listening
//! fd lives as long as the server, so the answer is kept: the fd's inode is checked again
//! at most once per `RECHECK` (a port closed and another opened on the same fd number is
//! another socket) and the socket tables are read again only when it changed.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::targets::sockets;

/// How long an answer is used before the fd's inode is read again.
const RECHECK: Duration = Duration::from_secs(1);
/// (process, fd) answers kept; past it, those not used for `STALE` go (processes that
/// exited), and all of them if that is not enough.
const MAX_ENTRIES: usize = 4096;
const STALE: Duration = Duration::from_secs(60);

struct Entry {
    inode: u64,
    /// `None`: not a listening TCP socket (a Unix socket, say).
    port: Option<u16>,
    checked: Instant,
    used: Instant,
}

/// Listening ports by (process, listening fd), read from /proc when not known.
#[derive(Default)]
pub struct ListenPorts {
    known: HashMap<(u32, u32), Entry>,
    /// Reads of the socket tables (a test's measure of the cache).
    pub lookups: u64,
}

impl ListenPorts {
    /// The local port of the socket process `tgid` listens on as `fd` (`u32::MAX`: not
    /// known to the kernel); `None` when it cannot be told.
    pub fn port(&mut self, tgid: u32, fd: u32, now: Instant) -> Option<u16> {
        if fd == u32::MAX {
            return None;
        }
        let key = (tgid, fd);
        if let Some(e) = self.known.get_mut(&key) {
            e.used = now;
            if now.saturating_duration_since(e.checked) < RECHECK {
                return e.port;
            }
        }
        let Some(inode) = sockets::socket_inode(tgid, fd) else {
            // The process or its fd is gone: nothing to keep.
            self.known.remove(&key);
            return None;
        };
        if let Some(e) = self.known.get_mut(&key).filter(|e| e.inode == inode) {
            e.checked = now;
            return e.port;
        }
        self.lookups += 1;
        let port = sockets::listening_port(tgid, inode);
        if self.known.len() >= MAX_ENTRIES && !self.known.contains_key(&key) {
            self.known
                .retain(|_, e| now.saturating_duration_since(e.used) < STALE);
            if self.known.len() >= MAX_ENTRIES {
                self.known.clear();
            }
        }
        self.known.insert(
            key,
            Entry {
                inode,
                port,
                checked: now,
                used: now,
            },
        );
        port
    }
}

#[cfg(test)]
mod tests;
