use super::*;

#[test]
fn the_readme_signal_table_is_the_registrys() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README");
    let table = signal_table();
    assert!(
        readme.contains(&table),
        "README's signal table differs from the registry; it should read:\n{table}"
    );
}

#[test]
fn every_collector_and_signal_name_is_unique() {
    let mut names: Vec<&str> = COLLECTORS.iter().map(|(c, _)| *c).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), COLLECTORS.len());
    let mut signals: Vec<&str> = signal_docs().map(|(_, d)| d.name).collect();
    let n = signals.len();
    signals.sort_unstable();
    signals.dedup();
    assert_eq!(signals.len(), n);
}
