//! The samples that range functions (`increase`, `rate`, `changes`) read: for each signal
//! a rule reads inside one, each series' history over the longest window used for it.
//!
//! Only changes are kept (a value that stays costs nothing), each with the running totals
//! of increase and of changes since the series' first sample, so a function over any
//! window is a binary search and a subtraction. Kept points are at least 1/1000 of the
//! window apart (a change sooner than that after the point before the last replaces the
//! last), so a series holds about 1000 points whatever the tick: windows of up to 1000
//! ticks are exact, longer ones place their start to within window/1000. A signal keeps
//! at most `MAX_SERIES` series; past that the least recently seen go first (among series
//! all seen this tick, the newest arrivals), and the first drop is logged.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use super::{passes, Instance, Labels, Matcher, RangeFn, Signals};

/// Series kept per signal.
pub const MAX_SERIES: usize = 10_000;

/// Points a series keeps per window, about.
const POINTS_PER_WINDOW: f64 = 1000.0;

#[derive(Debug, Clone, Copy)]
struct Point {
    t: f64,
    v: f64,
    /// Increase since the series' first sample, resets counted.
    increase: f64,
    /// Changes since the series' first sample.
    changes: f64,
}

#[derive(Debug)]
struct Series {
    labels: Arc<Labels>,
    first_seen: f64,
    last_seen: f64,
    /// Appeared after the signal's first recorded tick: counts from 0. Cleared once its
    /// first point is pruned (every window then starts after it).
    new: bool,
    /// Never empty.
    points: VecDeque<Point>,
}

/// A rise, or the value after a drop (a counter reset).
fn delta(from: f64, to: f64) -> f64 {
    if to >= from {
        to - from
    } else {
        to
    }
}

impl Series {
    fn push(&mut self, t: f64, v: f64, spacing: f64) {
        self.last_seen = t;
        let Some(last) = self.points.back().copied() else {
            return;
        };
        if v == last.v {
            return;
        }
        let p = Point {
            t,
            v,
            increase: last.increase + delta(last.v, v),
            changes: last.changes + 1.0,
        };
        let n = self.points.len();
        let close = n >= 2 && self.points.get(n - 2).is_some_and(|b| t - b.t < spacing);
        match self.points.back_mut() {
            Some(l) if close => *l = p,
            _ => self.points.push_back(p),
        }
    }

    /// (increase, changes) over (start, last sample].
    fn over(&self, start: f64) -> Option<(f64, f64)> {
        let last = self.points.back()?;
        let i = self.points.partition_point(|p| p.t <= start);
        match i.checked_sub(1).and_then(|i| self.points.get(i)) {
            // The value at the window's start is known.
            Some(base) => Some((last.increase - base.increase, last.changes - base.changes)),
            None => {
                let first = self.points.front()?;
                let from_zero = if self.new { delta(0.0, first.v) } else { 0.0 };
                Some((
                    last.increase - first.increase + from_zero,
                    last.changes - first.changes,
                ))
            }
        }
    }
}

#[derive(Debug, Default)]
struct Track {
    /// The longest window read.
    window: f64,
    /// When the signal was first recorded with data.
    origin: Option<f64>,
    series: BTreeMap<u64, Series>,
    warned: bool,
}

impl Track {
    fn record(&mut self, name: &str, instances: &[Instance], now: f64) {
        let origin = *self.origin.get_or_insert(now);
        let spacing = self.window / POINTS_PER_WINDOW;
        for i in instances.iter().filter(|i| i.value.is_finite()) {
            match self.series.get_mut(&i.id) {
                Some(s) => s.push(now, i.value, spacing),
                None => {
                    let new = now > origin;
                    let first = Point {
                        t: now,
                        v: i.value,
                        increase: 0.0,
                        changes: 0.0,
                    };
                    self.series.insert(
                        i.id,
                        Series {
                            labels: i.labels.clone(),
                            first_seen: now,
                            last_seen: now,
                            new,
                            points: VecDeque::from([first]),
                        },
                    );
                }
            }
        }
        // Keep the last point at or before the longest window's start: the value there.
        let start = now - self.window;
        self.series.retain(|_, s| s.last_seen > start);
        for s in self.series.values_mut() {
            while s.points.get(1).is_some_and(|p| p.t <= start) {
                s.points.pop_front();
                s.new = false;
            }
        }
        let excess = self.series.len().saturating_sub(MAX_SERIES);
        if excess > 0 {
            let mut order: Vec<(f64, f64, u64)> = self
                .series
                .iter()
                .map(|(id, s)| (s.last_seen, -s.first_seen, *id))
                .collect();
            order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
            for (_, _, id) in order.into_iter().take(excess) {
                self.series.remove(&id);
            }
            if !std::mem::replace(&mut self.warned, true) {
                tracing::warn!(
                    "alert rules: signal {name} has more than {MAX_SERIES} series; range functions drop the least recently seen"
                );
            }
        }
    }
}

/// Each tracked signal's series history.
#[derive(Debug, Default)]
pub struct History {
    signals: HashMap<String, Track>,
    /// The last recorded tick.
    now: f64,
}

impl History {
    /// Keep the signals named (with the windows read over each), and only those: a
    /// signal no longer named is forgotten, a longer window fills from now on.
    pub fn track<'a>(&mut self, needs: impl IntoIterator<Item = (&'a str, f64)>) {
        let mut want: HashMap<&str, f64> = HashMap::new();
        for (name, window) in needs {
            let w = want.entry(name).or_insert(0.0);
            *w = w.max(window);
        }
        self.signals.retain(|n, _| want.contains_key(n.as_str()));
        for (name, window) in want {
            self.signals.entry(name.to_string()).or_default().window = window;
        }
    }

    /// The signals kept and their longest windows, by name.
    pub fn tracked(&self) -> Vec<(&str, f64)> {
        let mut v: Vec<(&str, f64)> = self
            .signals
            .iter()
            .map(|(n, t)| (n.as_str(), t.window))
            .collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// Add this tick's samples of the tracked signals; a signal with no data adds nothing
    /// (its series continue when it comes back).
    pub fn record(&mut self, signals: &dyn Signals, now: f64) {
        self.now = now;
        for (name, track) in &mut self.signals {
            if let Some(instances) = signals.get(name) {
                track.record(name, instances, now);
            }
        }
    }

    /// `f` over the last `window` seconds, for each series of `name` that passes the
    /// matchers and was seen in the window (none for a signal not tracked).
    pub fn apply(
        &self,
        f: RangeFn,
        name: &str,
        matchers: &[Matcher],
        window: f64,
    ) -> Vec<Instance> {
        let Some(track) = self.signals.get(name) else {
            return Vec::new();
        };
        let start = self.now - window;
        track
            .series
            .iter()
            .filter(|(_, s)| s.last_seen > start && passes(matchers, &s.labels))
            .filter_map(|(id, s)| {
                let (increase, changes) = s.over(start)?;
                Some(Instance {
                    labels: s.labels.clone(),
                    id: *id,
                    value: match f {
                        RangeFn::Increase => increase,
                        RangeFn::Rate => increase / window,
                        RangeFn::Changes => changes,
                    },
                })
            })
            .collect()
    }
}
