//! Alert rules over the collectors' named signals (`readings`), evaluated each tick into
//! Prometheus-like alert states; the transitions become notifications (`notify`). The
//! running agent's alerting (rules file, store, notifier) is `crate::alerting`.
pub mod engine;
pub mod expr;
pub mod rules;

#[cfg(test)]
mod tests;
