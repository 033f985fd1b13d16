//! Alert signals: the named, labelled values that collectors offer each tick and that rules
//! (and the history) read. A signal whose collector is not working has no data (`None`),
//! which rules report instead of resolving.
use std::{collections::BTreeMap, collections::HashMap, sync::Arc};

/// The labels of one instance of a signal.
pub type Labels = BTreeMap<String, String>;

/// One instance of a signal: its labels (shared: evaluation copies instances a lot) and
/// value.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub labels: Arc<Labels>,
    /// A hash of the labels, computed once: the engine orders instances by it first, so
    /// finding an instance compares label sets only when the hashes are equal.
    pub id: u64,
    pub value: f64,
}

impl Instance {
    pub fn new(labels: Labels, value: f64) -> Instance {
        Instance {
            id: label_hash(&labels),
            labels: Arc::new(labels),
            value,
        }
    }

    /// An instance labelled by `pairs`.
    pub fn labelled(pairs: &[(&str, &str)], value: f64) -> Instance {
        Instance::new(labels(pairs), value)
    }
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn label_hash(labels: &Labels) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    labels.hash(&mut h);
    h.finish()
}

/// Where expressions read signals: `None` when the signal's collector is not working
/// (no data), else its instances.
pub trait Signals {
    fn get(&self, name: &str) -> Option<&[Instance]>;
}

/// A signal as documented (README table) and known to the rule parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalDoc {
    pub name: &'static str,
    /// Its labels, comma-separated ("" for none).
    pub labels: &'static str,
    /// What it measures, one line.
    pub meaning: &'static str,
}

/// Every signal's instances this tick (`None`: no data).
#[derive(Debug, Default)]
pub struct SignalSet {
    values: HashMap<&'static str, Option<Vec<Instance>>>,
}

impl Signals for SignalSet {
    fn get(&self, name: &str) -> Option<&[Instance]> {
        self.values.get(name)?.as_deref()
    }
}

impl SignalSet {
    /// The instances of a signal whose collector works.
    pub fn put(&mut self, name: &'static str, instances: Vec<Instance>) {
        self.values.insert(name, Some(instances));
    }

    /// One unlabelled instance, or none when the value is unknown.
    pub fn put_one(&mut self, name: &'static str, value: Option<f64>) {
        let v = value
            .map(|v| Instance::new(Labels::new(), v))
            .into_iter()
            .collect();
        self.put(name, v);
    }

    /// A signal whose collector is not working.
    pub fn no_data(&mut self, name: &'static str) {
        self.values.insert(name, None);
    }

    /// Every instance of every signal with data, for the history.
    pub fn samples(&self) -> Vec<(&'static str, Labels, f64)> {
        let mut out = Vec::new();
        for (name, v) in &self.values {
            for i in v.iter().flatten() {
                out.push((*name, Labels::clone(&i.labels), i.value));
            }
        }
        out
    }
}
