//! Alerting: rules over the Snapshot's named signals, evaluated each tick into
//! Prometheus-like alert states, with notifications handed to `notify`.
pub mod engine;
pub mod expr;
pub mod rules;
pub mod signals;

pub mod runtime;
#[cfg(test)]
mod tests;
