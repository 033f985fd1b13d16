//! Detaching per-process uprobe links off the tick thread (the CUDA and OpenSSL probes).
//! Releasing a uprobe link waits for the kernel's RCU grace periods under its global
//! trace-event lock: ≈ 115 ms per link on the 2-vCPU test VM, one link after another
//! whatever the number of threads (measured), so one process's 10–39 links would hold the
//! tick, or the API call that removes a target, for seconds. A thread of its own closes
//! them in the order they come.
use std::{
    collections::HashMap,
    sync::{mpsc, Arc, Mutex, PoisonError},
    thread,
    time::Instant,
};

use aya::programs::uprobe::UProbeLink;

/// Links being detached, by process.
type Pending = Arc<Mutex<HashMap<u32, usize>>>;

pub struct Detacher {
    /// Whose links these are, for the log and the thread's name.
    owner: &'static str,
    /// To the detaching thread, started on first use.
    tx: Option<mpsc::Sender<(u32, Vec<UProbeLink>)>>,
    pending: Pending,
}

impl Detacher {
    pub fn new(owner: &'static str) -> Detacher {
        Detacher {
            owner,
            tx: None,
            pending: Arc::default(),
        }
    }

    /// Detach process `pid`'s `links` in the background (here and now if no thread can be
    /// started).
    pub fn detach(&mut self, pid: u32, links: Vec<UProbeLink>) {
        if links.is_empty() {
            return;
        }
        add(&self.pending, pid, links.len());
        let links = match self.sender() {
            Some(tx) => match tx.send((pid, links)) {
                Ok(()) => return,
                Err(mpsc::SendError((_, links))) => links,
            },
            None => links,
        };
        let n = links.len();
        drop(links);
        done(&self.pending, pid, n);
    }

    /// How many links are still being detached.
    pub fn pending(&self) -> usize {
        lock(&self.pending).values().sum()
    }

    /// Whether links of process `pid` are still being detached (it is not probed again
    /// until they are: its calls would run the programs twice).
    pub fn is_pending(&self, pid: u32) -> bool {
        lock(&self.pending).contains_key(&pid)
    }

    fn sender(&mut self) -> Option<&mpsc::Sender<(u32, Vec<UProbeLink>)>> {
        if self.tx.is_none() {
            let (tx, rx) = mpsc::channel();
            let pending = self.pending.clone();
            let owner = self.owner;
            match thread::Builder::new()
                .name(format!("{owner}-detach"))
                .spawn(move || run(owner, &rx, &pending))
            {
                Ok(_) => self.tx = Some(tx),
                Err(e) => {
                    tracing::warn!(
                        "{}: no thread to detach probes on ({e}): detaching inline",
                        self.owner
                    );
                    return None;
                }
            }
        }
        self.tx.as_ref()
    }
}

/// Dropping a link detaches it; errors are ignored (a process that exited has left
/// nothing to remove).
fn run(owner: &str, rx: &mpsc::Receiver<(u32, Vec<UProbeLink>)>, pending: &Pending) {
    while let Ok((pid, links)) = rx.recv() {
        let n = links.len();
        let start = Instant::now();
        drop(links);
        done(pending, pid, n);
        tracing::debug!(
            "{owner}: process {pid}: {n} probe links detached in {} ms",
            start.elapsed().as_millis()
        );
    }
}

fn lock(pending: &Pending) -> std::sync::MutexGuard<'_, HashMap<u32, usize>> {
    // The map is a count: one a panicking thread left is still right.
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

fn add(pending: &Pending, pid: u32, n: usize) {
    *lock(pending).entry(pid).or_default() += n;
}

fn done(pending: &Pending, pid: u32, n: usize) {
    let mut map = lock(pending);
    if let Some(left) = map.get_mut(&pid) {
        *left = left.saturating_sub(n);
        if *left == 0 {
            map.remove(&pid);
        }
    }
}
