//! The rules file: every rule loads or gets an error line.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let channels = ["log".to_string(), "slack".to_string()];
        let loaded =
            infersight::alert::rules::parse(std::path::Path::new("rules.toml"), text, &channels);
        for e in &loaded.errors {
            assert!(e.starts_with("rules.toml: "), "{e}");
        }
    }
});
