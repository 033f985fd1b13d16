use super::*;
use crate::config::{Endpoints, TargetRequest, TargetSpec};
use agent_common::{HttpRequest, HTTP_PATH_MAX};

fn event(path: &str, status: u16, start: u64, end: u64) -> HttpEvent {
    let mut p = [0u8; HTTP_PATH_MAX];
    p[..path.len()].copy_from_slice(path.as_bytes());
    HttpEvent {
        tgid: 1,
        fd: 3,
        end: 1,
        listen_fd: u32::MAX,
        req: HttpRequest {
            target: 1,
            status,
            method: 1,
            flags: 0,
            path_len: path.len() as u32,
            chunks: 1,
            req_start_ns: start,
            req_end_ns: start,
            resp_start_ns: end,
            first_data_ns: end,
            resp_end_ns: end,
            req_bytes: 100,
            req_header_bytes: 100,
            resp_bytes: 150,
            resp_header_bytes: 100,
            gap_sum_ns: 0,
            gap_max_ns: 0,
            path: p,
        },
    }
}

fn collector(limit: usize) -> Requests {
    let me = std::process::id();
    let targets = Targets::resolve(&TargetSpec::List(vec![TargetRequest::Pid {
        pid: me,
        name: Some("app".into()),
        endpoints: Endpoints::default(),
    }]))
    .unwrap();
    Requests::new(&targets, limit, Duration::from_secs(60))
}

#[test]
fn series_and_summary() {
    let mut c = collector(100);
    let t0 = Instant::now();
    c.summaries(t0, &HashMap::new(), &HashMap::new());
    for i in 0..10u64 {
        let status = if i < 2 { 500 } else { 200 };
        c.record(
            &event(
                &format!("/items/{i}?q=1"),
                status,
                1_000,
                1_000 + (i + 1) * 10_000_000,
            ),
            t0,
        );
    }
    let AllSeries { http, streams, .. } = c.series();
    assert!(streams.is_empty());
    assert_eq!(http.len(), 2);
    assert_eq!(http[0].route, "/items/{id}");
    assert_eq!((http[0].status, http[0].duration.count), (200, 8));
    assert_eq!((http[1].status, http[1].duration.count), (500, 2));
    assert_eq!(http[0].response_body.sum, 8.0 * 50.0);
    let k = HttpCounters {
        started: 13,
        finished: 10,
        dropped: 0,
        accepted: 4,
        ignored_connections: 1,
        unanswered: 2,
        ..HttpCounters::default()
    };
    let s = c.summaries(
        t0 + Duration::from_secs(2),
        &HashMap::from([(1, k)]),
        &HashMap::new(),
    );
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].active, Some(3));
    assert_eq!(
        (s[0].ignored_connections, s[0].unanswered),
        (Some(1), Some(2))
    );
    assert_eq!(s[0].request_rate, Some(5.0));
    assert_eq!(s[0].error_ratio, Some(0.2));
    assert_eq!(s[0].latency_p50_seconds, Some(0.05));
    assert_eq!(s[0].latency_p99_seconds, Some(0.1));
}

#[test]
fn route_cap_and_decoder() {
    let mut c = collector(3);
    let now = Instant::now();
    for i in 0..5 {
        c.record(&event(&format!("/r{i}"), 200, 1, 2), now);
    }
    let routes: Vec<String> = c.series().http.into_iter().map(|s| s.route).collect();
    assert_eq!(routes, vec!["/r0", "/r1", "/r2", "_OTHER"]);
    c.record_bytes(&[0u8; 10], now);
    assert_eq!(c.malformed, 1);
}

#[test]
fn quantiles() {
    assert_eq!(quantile(&[], 0.5), None);
    assert_eq!(quantile(&[1.0], 0.99), Some(1.0));
    let v: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(quantile(&v, 0.95), Some(95.0));
}

#[test]
fn the_agents_own_requests_are_not_recorded() {
    let mut c = collector(100);
    let now = Instant::now();
    let marker = crate::base::own_request_marker();
    c.record(&event(&format!("/metrics?{marker}"), 200, 1, 2), now);
    c.record(&event(&format!("/health?x=1&{marker}"), 503, 1, 2), now);
    // The same name with another value is someone else's request.
    c.record(
        &event("/metrics?infersight=0000000000000000", 200, 1, 2),
        now,
    );
    c.record(&event(&format!("/{marker}"), 200, 1, 2), now);
    assert_eq!(c.own, 2);
    let routes: Vec<String> = c.series().http.into_iter().map(|s| s.route).collect();
    assert_eq!(routes, vec![format!("/{marker}"), "/metrics".to_string()]);
}

#[test]
fn requests_on_ports_that_are_not_the_front_door_are_counted_apart() {
    use std::{net::TcpListener, os::fd::AsRawFd};
    let front = TcpListener::bind("127.0.0.1:0").unwrap();
    let inner = TcpListener::bind("127.0.0.1:0").unwrap();
    let front_port = front.local_addr().unwrap().port();
    let inner_port = inner.local_addr().unwrap().port();
    let fd = |l: &TcpListener| u32::try_from(l.as_raw_fd()).unwrap();
    let me = std::process::id();
    let targets = Targets::resolve(&TargetSpec::List(vec![TargetRequest::Pid {
        pid: me,
        name: Some("app".into()),
        endpoints: Endpoints {
            ports: vec![front_port],
            ..Endpoints::default()
        },
    }]))
    .unwrap();
    let mut c = Requests::new(&targets, 100, Duration::from_secs(60));
    let now = Instant::now();
    let on = |listen_fd: u32, path: &str| {
        let mut e = event(path, 200, 1, 2);
        e.tgid = me;
        e.listen_fd = listen_fd;
        e
    };
    for _ in 0..3 {
        c.record(&on(fd(&front), "/api/chat"), now);
        c.record(&on(fd(&inner), "/completion"), now);
    }
    // Not known (accepted before the agent started), or not a socket: the front door.
    c.record(&on(u32::MAX, "/api/chat"), now);
    c.record(&on(0, "/api/chat"), now);
    let AllSeries { http, .. } = c.series();
    assert_eq!(http.len(), 1, "{http:?}");
    assert_eq!(
        (http[0].route.as_str(), http[0].duration.count),
        ("/api/chat", 5)
    );
    assert_eq!(
        c.internal_requests(),
        vec![InternalRequests {
            target: "app".into(),
            port: inner_port.to_string(),
            requests: 3,
        }]
    );

    // A target without ports counts every port, as before.
    let mut all = collector(100);
    for l in [&front, &inner] {
        all.record(&on(fd(l), "/x"), now);
    }
    assert_eq!(all.series().http[0].duration.count, 2);
    assert!(all.internal_requests().is_empty());
    c.remove_target(1);
    assert!(c.internal_requests().is_empty());
}
