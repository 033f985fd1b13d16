//! The configuration file: any text gives a Config or an error, never a panic or a hang.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = infersight::config::Config::from_text(
            Some(std::path::Path::new("fuzz.toml")),
            text,
            &infersight::config::Overrides::default(),
            std::iter::empty(),
        );
    }
});
