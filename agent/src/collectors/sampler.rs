//! A collector that reads slow or possibly blocking sources (statvfs on a network
//! filesystem, NVML on a hung GPU) runs on its own thread and interval; the tick only takes
//! its latest reading, so one stuck source never stops the agent.
use std::{
    sync::{Arc, Mutex, PoisonError},
    thread,
    time::{Duration, Instant},
};

use crate::base::Health;

type Reading<T> = (Arc<T>, Instant, Duration);

/// The latest reading of a sampler thread.
pub struct Sampler<T> {
    /// The latest value, when its reading started, and how long it took.
    latest: Arc<Mutex<Option<Reading<T>>>>,
    interval: Duration,
    name: &'static str,
}

impl<T: Send + Sync + 'static> Sampler<T> {
    /// Run `read` now and then every `interval` on a thread named `name`.
    pub fn spawn(
        name: &'static str,
        interval: Duration,
        mut read: impl FnMut() -> T + Send + 'static,
    ) -> Sampler<T> {
        let latest: Arc<Mutex<Option<Reading<T>>>> = Arc::new(Mutex::new(None));
        let slot = latest.clone();
        let spawned = thread::Builder::new()
            .name(format!("sample-{name}"))
            .spawn(move || loop {
                let start = Instant::now();
                let value = Arc::new(read());
                let took = start.elapsed();
                *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some((value, start, took));
                // Stop when the agent dropped its handle.
                if Arc::strong_count(&slot) == 1 {
                    return;
                }
                thread::sleep(interval.saturating_sub(start.elapsed()));
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the {name} sampler thread: {e}");
        }
        Sampler {
            latest,
            interval,
            name,
        }
    }

    /// The latest reading and how long it took, or why there is none that can be
    /// trusted: a reading older than three intervals means the source is stuck.
    pub fn latest(&self) -> Result<(Arc<T>, Duration), Health> {
        let guard = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            None => Err(Health::failed(format!("{}: no reading yet", self.name))),
            Some((v, at, took)) => {
                let age = at.elapsed();
                if age > self.interval * 3 + Duration::from_secs(1) {
                    Err(Health::failed(format!(
                        "{}: the last reading started {:.1} s ago; the source is not answering",
                        self.name,
                        age.as_secs_f64()
                    )))
                } else {
                    Ok((v.clone(), *took))
                }
            }
        }
    }

    /// Wait up to `timeout` for the first reading (so the first snapshot has data).
    pub fn wait_first(&self, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self
                .latest
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some()
            {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}
