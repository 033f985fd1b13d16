//! Kernel→user request events: any bytes from the ring buffer are decoded or counted as
//! malformed, and recording them never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = infersight::collectors::http::decode(data);
    let targets = infersight::targets::Targets::default();
    let mut c = infersight::collectors::http::Requests::new(
        &targets,
        10,
        std::time::Duration::from_secs(60),
    );
    c.add_target(0, "t");
    c.add_target(1, "u");
    c.record_bytes(data, std::time::Instant::now());
    let _ = c.series();
});
