//! HTTP route templating: any request target gives a bounded route label.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let route = infersight::collectors::http::template(data);
    assert!(route.len() <= 4 * data.len() + 16, "{route:?}");
});
