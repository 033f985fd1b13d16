//! The fixtures (tests/fixtures/engines, written from each engine's source) read and
//! normalised; discovery of a listening port of this very process; the client's bounds.
use std::{
    io::{Read, Write},
    net::TcpListener,
    time::Duration,
};

use super::{
    client::{marked, Client, FetchError},
    discover::listening,
    exposition::parse,
    normalise::{normalise, recognise, relevant, EngineKind, EngineSeries},
};
use crate::targets::sockets::connectable;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/engines/",
            $name
        ))
    };
}

/// The engine and normalised series of a page.
fn read(text: &str) -> (Option<EngineKind>, Vec<EngineSeries>) {
    let samples = parse(text, relevant).expect("a valid page");
    match recognise(&samples) {
        Some(spec) => (Some(spec.kind), normalise(spec, &samples)),
        None => (None, Vec::new()),
    }
}

fn hist(s: &Option<super::EngineHistogram>) -> (u64, f64, usize) {
    let h = s.as_ref().expect("a histogram");
    (h.count, h.sum, h.buckets.len())
}

#[test]
fn vllm_v0_names() {
    let (kind, s) = read(fixture!("vllm_v0.prom"));
    assert_eq!(kind, Some(EngineKind::Vllm));
    assert_eq!(s.len(), 1);
    let e = &s[0];
    assert_eq!(e.engine_index, "0");
    assert_eq!(
        (
            e.requests_waiting,
            e.requests_running,
            e.kv_cache_usage_ratio
        ),
        (Some(2.0), Some(4.0), Some(0.4375))
    );
    assert_eq!(e.preemptions_total, Some(3.0));
    // V0 publishes the hit rate itself.
    assert_eq!(e.prefix_cache_hit_ratio, Some(0.25));
    assert_eq!(e.prefix_cache_queries_total, None);
    assert_eq!(
        (e.prompt_tokens_total, e.generation_tokens_total),
        (Some(12034.0), Some(48211.0))
    );
    assert_eq!(hist(&e.ttft), (120, 6.375, 17));
    let ttft = e.ttft.as_ref().unwrap();
    assert_eq!(ttft.buckets[3], (0.02, 3));
    assert_eq!(ttft.buckets[16], (f64::INFINITY, 120));
    assert_eq!(hist(&e.tpot), (48091, 913.729, 14));
    assert_eq!((e.e2e_seconds_sum, e.e2e_count), (Some(802.5), Some(116.0)));
}

#[test]
fn vllm_v1_before_0_9_has_two_engines() {
    let (kind, s) = read(fixture!("vllm_v1_0_8.prom"));
    assert_eq!(kind, Some(EngineKind::Vllm));
    let idx: Vec<&str> = s.iter().map(|e| e.engine_index.as_str()).collect();
    assert_eq!(idx, ["0", "1"]);
    let (a, b) = (&s[0], &s[1]);
    assert_eq!(
        (
            a.requests_running,
            a.requests_waiting,
            a.kv_cache_usage_ratio
        ),
        (Some(6.0), Some(1.0), Some(0.625))
    );
    assert_eq!(
        (
            b.requests_running,
            b.requests_waiting,
            b.kv_cache_usage_ratio
        ),
        (Some(5.0), Some(0.0), Some(0.5))
    );
    // Counters: the ratio is made over the window, by the scrape round.
    assert_eq!(
        (a.prefix_cache_hits_total, a.prefix_cache_queries_total),
        (Some(5120.0), Some(20480.0))
    );
    assert_eq!(a.prefix_cache_hit_ratio, None);
    assert_eq!(
        (a.preemptions_total, b.preemptions_total),
        (Some(7.0), Some(2.0))
    );
    assert_eq!(
        (b.prompt_tokens_total, b.generation_tokens_total),
        (Some(10240.0), Some(40960.0))
    );
    assert_eq!(hist(&a.ttft), (40, 3.2, 23));
    assert_eq!(hist(&b.ttft), (20, 2.5, 23));
    assert_eq!(hist(&b.tpot), (4000, 84.0, 20));
    assert_eq!((b.e2e_seconds_sum, b.e2e_count), (Some(190.0), Some(20.0)));
}

#[test]
fn vllm_v1_0_10_prefers_the_new_names() {
    let (kind, s) = read(fixture!("vllm_v1_0_10.prom"));
    assert_eq!(kind, Some(EngineKind::Vllm));
    assert_eq!(s.len(), 1);
    let e = &s[0];
    assert_eq!(
        (
            e.requests_waiting,
            e.requests_running,
            e.kv_cache_usage_ratio
        ),
        (Some(7.0), Some(3.0), Some(0.8125))
    );
    assert_eq!(
        (e.prefix_cache_hits_total, e.prefix_cache_queries_total),
        (Some(1024.0), Some(4096.0))
    );
    assert_eq!(e.preemptions_total, Some(11.0));
    assert_eq!(hist(&e.ttft), (64, 9.6, 23));
    // The per-request figure, not the per-step ones published beside it.
    assert_eq!(hist(&e.tpot), (64, 2.56, 20));
    assert_eq!((e.e2e_seconds_sum, e.e2e_count), (Some(800.0), Some(64.0)));
}

#[test]
fn sglang_counts_each_data_parallel_rank_once() {
    let (kind, s) = read(fixture!("sglang.prom"));
    assert_eq!(kind, Some(EngineKind::Sglang));
    assert_eq!(s.len(), 2);
    let (a, b) = (&s[0], &s[1]);
    assert_eq!(
        (
            a.requests_running,
            a.requests_waiting,
            a.kv_cache_usage_ratio,
            a.prefix_cache_hit_ratio,
            a.preemptions_total
        ),
        (Some(12.0), Some(4.0), Some(0.91), Some(0.375), Some(5.0))
    );
    assert_eq!(
        (
            b.requests_running,
            b.requests_waiting,
            b.kv_cache_usage_ratio
        ),
        (Some(9.0), Some(1.0), Some(0.42))
    );
    assert_eq!(
        (b.prompt_tokens_total, b.generation_tokens_total),
        (Some(60000.0), Some(200000.0))
    );
    assert_eq!(hist(&a.ttft), (300, 96.0, 19));
    assert_eq!(hist(&a.tpot), (299700, 5994.0, 24));
    assert_eq!(b.ttft, None);
    assert_eq!(
        (a.e2e_seconds_sum, a.e2e_count),
        (Some(4500.0), Some(300.0))
    );
}

#[test]
fn tgi_triton_trtllm_llamacpp() {
    let (kind, s) = read(fixture!("tgi.prom"));
    assert_eq!(kind, Some(EngineKind::Tgi));
    let e = &s[0];
    assert_eq!(
        (
            e.requests_waiting,
            e.requests_running,
            e.kv_cache_usage_ratio
        ),
        (Some(6.0), Some(8.0), None)
    );
    assert_eq!(
        (e.prompt_tokens_total, e.generation_tokens_total),
        (Some(30400.0), Some(51200.0))
    );
    assert_eq!((e.ttft.is_none(), hist(&e.tpot)), (true, (200, 9.0, 12)));
    assert_eq!((e.e2e_seconds_sum, e.e2e_count), (Some(612.5), Some(200.0)));

    let (kind, s) = read(fixture!("triton_trtllm.prom"));
    assert_eq!(kind, Some(EngineKind::Trtllm));
    let e = &s[0];
    // An older backend: no waiting count, KV from used / max blocks.
    assert_eq!(
        (
            e.requests_waiting,
            e.requests_running,
            e.kv_cache_usage_ratio
        ),
        (None, Some(3.0), Some(0.25))
    );
    assert_eq!(
        (e.prompt_tokens_total, e.generation_tokens_total),
        (Some(40960.0), Some(131072.0))
    );

    let (kind, s) = read(fixture!("triton.prom"));
    assert_eq!(kind, Some(EngineKind::Triton));
    assert_eq!(
        s,
        vec![EngineSeries {
            engine_index: "0".into(),
            requests_waiting: Some(7.0),
            ..EngineSeries::default()
        }]
    );

    let (kind, s) = read(fixture!("llamacpp.prom"));
    assert_eq!(kind, Some(EngineKind::Llamacpp));
    let e = &s[0];
    assert_eq!(
        (
            e.requests_waiting,
            e.requests_running,
            e.kv_cache_usage_ratio
        ),
        (Some(3.0), Some(2.0), Some(0.34375))
    );
    assert_eq!(
        (e.prompt_tokens_total, e.generation_tokens_total),
        (Some(18432.0), Some(73728.0))
    );
}

#[test]
fn an_unknown_application_is_no_engine() {
    assert_eq!(read(fixture!("unknown.prom")), (None, Vec::new()));
}

#[test]
fn a_ratio_outside_0_to_1_is_absent() {
    let (_, s) =
        read("vllm:kv_cache_usage_perc{engine=\"0\"} 81.25\nvllm:num_requests_waiting 1\n");
    assert_eq!(s[0].kv_cache_usage_ratio, None);
    assert_eq!(s[0].requests_waiting, Some(1.0));
}

#[test]
fn the_marker_goes_into_the_query() {
    let m = crate::base::own_request_marker();
    assert_eq!(
        marked("http://h:1/metrics"),
        format!("http://h:1/metrics?{m}")
    );
    assert_eq!(marked("http://h/x?a=1#f"), format!("http://h/x?a=1&{m}#f"));
    assert!(m.starts_with("infersight=") && m.len() == 27, "{m}");
}

#[test]
fn a_port_of_this_process_is_found() {
    let l = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let found = listening(&[std::process::id()]);
    assert!(!found.elsewhere);
    let ours: Vec<_> = found
        .listeners
        .iter()
        .filter(|x| x.addr.port() == port)
        .collect();
    assert_eq!(ours.len(), 1, "{found:?}");
    assert_eq!(ours[0].addr, format!("127.0.0.1:{port}").parse().unwrap());
    assert_eq!(
        connectable("[::ffff:10.1.2.3]:80".parse().unwrap()),
        "10.1.2.3:80".parse().unwrap()
    );
    assert_eq!(
        connectable("[::]:80".parse().unwrap()),
        "[::1]:80".parse().unwrap()
    );
}

/// A one-shot HTTP server: answers each connection with `reply` (None: never answers);
/// the request lines it read.
fn server(reply: Option<Vec<u8>>) -> (u16, std::sync::mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut buf = [0u8; 2048];
            let n = c.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let _ = tx.send(head.lines().next().unwrap_or("").to_string());
            match &reply {
                Some(r) => {
                    let _ = c.write_all(r);
                }
                None => held.push(c),
            }
        }
    });
    (port, rx)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn the_client_is_bounded_and_marks_its_requests() {
    let client = Client::new(Duration::from_millis(300));
    // A body longer than the bound, without Content-Length: cut off while read.
    let mut big = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 100_000));
    let (port, seen) = server(Some(big));
    let url = format!("http://127.0.0.1:{port}/metrics");
    let r = block_on(client.get(&url, 10_000, false));
    assert_eq!(r.unwrap_err(), FetchError::TooLarge(10_000));
    let line = seen.recv().unwrap();
    assert_eq!(
        line,
        format!(
            "GET /metrics?{} HTTP/1.1",
            crate::base::own_request_marker()
        )
    );
    // A health probe only needs the status: the body is cut, the answer stands.
    let r = block_on(client.get(&url, 10_000, true)).unwrap();
    assert_eq!((r.status, r.body.len()), (200, 0));
    // A declared length over the bound is refused before reading.
    let (port, _seen) = server(Some(
        b"HTTP/1.1 200 OK\r\nContent-Length: 50000000\r\n\r\nabc".to_vec(),
    ));
    let r = block_on(client.get(&format!("http://127.0.0.1:{port}/"), 10_000, false));
    assert_eq!(r.unwrap_err(), FetchError::TooLarge(10_000));
    // A server that never answers.
    let (port, _seen) = server(None);
    let r = block_on(client.get(&format!("http://127.0.0.1:{port}/"), 10_000, false));
    assert_eq!(
        r.unwrap_err(),
        FetchError::Timeout(Duration::from_millis(300))
    );
    // Nothing listens.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let r = block_on(client.get(&format!("http://{closed}/"), 10_000, false));
    assert!(matches!(r, Err(FetchError::Connect(_))), "{r:?}");
}

#[test]
fn the_readme_mapping_table_is_the_engines_table() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README");
    let table = super::mapping_table();
    let block = format!("<!-- engines -->\n{table}<!-- /engines -->");
    assert!(
        readme.contains(&block),
        "README's engine mapping table differs from normalise.rs; it should read:\n{table}"
    );
}
