//! API request bodies: a rule, a target, a stream subscription.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = infersight::alert::rules::from_json(v.clone(), &["log".to_string()]);
        let _ = infersight::control::target_request(v);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = infersight::stream::Subscription::from_message(text);
        let _ = infersight::stream::Subscription::from_query(text);
    }
});
