//! The rule expression language: parse, and evaluate what parses against an empty signal
//! set.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(src) = std::str::from_utf8(data) {
        if let Ok(e) = infersight::alert::expr::parse(src) {
            let _ = e.signals();
            let _ = e.ranges();
        }
    }
});
