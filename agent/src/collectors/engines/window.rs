//! A running total's increase over a time window (an engine's preemptions, prefix-cache
//! hits; the merged figures' durations, tokens and joules). A total that goes down is a
//! counter reset (the engine restarted): the window starts over.
use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

#[derive(Debug, Default, Clone)]
pub struct Window {
    marks: VecDeque<(Instant, f64)>,
}

impl Window {
    /// Record `total` at `at`; its increase and the seconds it took, from the newest mark
    /// at least `span` old (or the oldest there is). `None` until there is an earlier
    /// mark.
    pub fn push(&mut self, at: Instant, total: f64, span: Duration) -> Option<(f64, f64)> {
        if self.marks.back().is_some_and(|(_, v)| total < *v) {
            self.marks.clear();
        }
        self.marks.push_back((at, total));
        if let Some(horizon) = at.checked_sub(span) {
            while self.marks.get(1).is_some_and(|m| m.0 <= horizon) {
                self.marks.pop_front();
            }
        }
        let (t0, v0) = *self.marks.front()?;
        let dt = at.checked_duration_since(t0)?.as_secs_f64();
        (dt > 0.0).then_some((total - v0, dt))
    }

    /// The increase per second (see `push`).
    pub fn rate(&mut self, at: Instant, total: f64, span: Duration) -> Option<f64> {
        self.push(at, total, span).map(|(d, dt)| d / dt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increase_over_the_window_and_resets() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let span = Duration::from_secs(10);
        let mut w = Window::default();
        assert_eq!(w.push(s(0), 5.0, span), None);
        assert_eq!(w.push(s(5), 15.0, span), Some((10.0, 5.0)));
        assert_eq!(w.rate(s(10), 25.0, span), Some(2.0));
        // The base moves to the newest mark at least 10 s old.
        assert_eq!(w.push(s(16), 31.0, span), Some((16.0, 11.0)));
        // A reset starts over.
        assert_eq!(w.push(s(17), 1.0, span), None);
        assert_eq!(w.push(s(18), 3.0, span), Some((2.0, 1.0)));
    }
}
