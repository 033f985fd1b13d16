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
    use infersight::{
        config::Endpoints,
        targets::{Target, TargetKind},
    };
    let target = |index: u32, name: &str, ports: Vec<u16>| Target {
        index,
        name: name.into(),
        kind: TargetKind::Pid { pid: 1 },
        started: None,
        endpoints: Endpoints {
            ports,
            ..Endpoints::default()
        },
    };
    c.add_target(&target(0, "t", Vec::new()));
    // With front-door ports: an event's (process, listening fd) is looked up in /proc.
    c.add_target(&target(1, "u", vec![80]));
    c.record_bytes(data, std::time::Instant::now());
    let _ = c.series();
});
