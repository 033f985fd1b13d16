//! Request tracing against real HTTP servers: exact counts, routes, statuses, durations,
//! streaming TTFT/TPOT, large bodies, non-HTTP bytes, route templating and caps.
//! Needs root (eBPF); see `common::bpf_or_skip`.
mod common;

use std::{io::Write, net::TcpStream, time::Duration};

use common::{bpf_or_skip, mean, request_count, Agent, Client, Metrics, PyServer};

fn labels<'a>(method: &'a str, route: &'a str, status: &'a str) -> [(&'a str, &'a str); 5] {
    [
        ("target", "py"),
        ("http_request_method", method),
        ("http_route", route),
        ("http_response_status_code", status),
        ("network_protocol_version", "1.1"),
    ]
}

fn start_traced() -> (PyServer, Agent) {
    let server = PyServer::start();
    let arg = format!("{}=py", server.pid());
    let agent = Agent::start(&["--pid", &arg]);
    (server, agent)
}

#[test]
fn keep_alive_requests_are_counted_exactly_with_routes_statuses_and_durations() {
    if !bpf_or_skip("keep_alive_requests") {
        return;
    }
    let (server, agent) = start_traced();
    // Another server loaded at the same time is not traced.
    let other = PyServer::start();
    let other_port = other.port;
    let noise = std::thread::spawn(move || {
        let mut c = Client::connect(other_port);
        for i in 0..100 {
            assert_eq!(c.get(&format!("/items/{i}")).status, 200);
        }
    });

    let slow = common::request_mix(server.port, "/items");
    noise.join().unwrap();
    agent.settle();
    let m = agent.metrics();

    assert_eq!(request_count(&m, &[("target", "py")]), 200.0);
    assert_eq!(
        request_count(&m, &labels("GET", "/sleep/{id}", "200")),
        30.0
    );
    assert_eq!(request_count(&m, &labels("GET", "_NOT_FOUND", "404")), 10.0);
    assert_eq!(request_count(&m, &labels("GET", "/error", "500")), 10.0);
    assert_eq!(
        request_count(&m, &labels("GET", "/items/{id}", "200")),
        150.0
    );
    // Only the traced server appears.
    let targets: Vec<String> = m
        .matching("http_server_request_duration_seconds_count", &[])
        .into_iter()
        .map(|(l, _)| l["target"].clone())
        .collect();
    assert!(targets.iter().all(|t| t == "py"), "{targets:?}");

    // The kernel's durations agree with what the client measured (within a few ms), and
    // cover the handler's sleep.
    let sleep_mean = mean(
        &m,
        "http_server_request_duration_seconds",
        &labels("GET", "/sleep/{id}", "200"),
    );
    common::assert_within_client(sleep_mean, &slow);
    // 20 x 30 ms and 10 x 100 ms: the histogram splits them at the 100 ms bound, each far
    // from a bound that load on a small CI machine could push it over.
    let b = |le: &str| {
        let mut l = labels("GET", "/sleep/{id}", "200").to_vec();
        l.push(("le", le));
        m.get("http_server_request_duration_seconds_bucket", &l)
            .expect("bucket")
    };
    assert_eq!(b("0.025"), 0.0);
    assert_eq!(b("0.1"), 20.0);
    assert_eq!(b("0.25"), 30.0);
    assert_eq!(
        m.get("http_server_active_requests", &[("target", "py")]),
        Some(0.0)
    );
    assert_eq!(
        m.get("infersight_ringbuf_dropped_events_total", &[]),
        Some(0.0)
    );
    let (status, health) = agent.get("/health");
    assert_eq!(status, 200, "{health}");
    let v: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(v["collectors"][1]["name"], "http");
    assert_eq!(v["collectors"][1]["state"], "active");
}

#[test]
fn streaming_response_gives_ttft_tpot_and_chunks() {
    if !bpf_or_skip("streaming_response") {
        return;
    }
    let (server, agent) = start_traced();
    let mut c = Client::connect(server.port);
    let r = c.get("/stream");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.iter().filter(|b| **b == b'\n').count(), 40);
    agent.settle();
    let m = agent.metrics();
    let l = [("target", "py"), ("http_route", "/stream")];
    let ttft = mean(&m, "gen_ai_server_time_to_first_token_seconds", &l);
    // The server sleeps 150 ms before the first token and 10 ms between tokens; the upper
    // bounds leave room for a loaded two-core CI machine.
    assert!((0.150..0.200).contains(&ttft), "TTFT {ttft}");
    let tpot = mean(&m, "gen_ai_server_time_per_output_token_seconds", &l);
    assert!((0.0095..0.020).contains(&tpot), "TPOT {tpot}");
    assert_eq!(m.get("infersight_http_stream_chunks_total", &l), Some(20.0));
    assert_eq!(
        m.get("gen_ai_server_request_duration_seconds_count", &l),
        Some(1.0)
    );
    assert_eq!(request_count(&m, &labels("GET", "/stream", "200")), 1.0);
}

#[test]
fn large_bodies_are_one_request_each() {
    if !bpf_or_skip("large_bodies") {
        return;
    }
    let (server, agent) = start_traced();
    let mut c = Client::connect(server.port);
    let upload = vec![b'a'; 1 << 20];
    let r = c.request("POST", "/upload", &upload);
    assert_eq!((r.status, r.body.as_slice()), (200, b"1048576".as_slice()));
    let r = c.get("/big");
    assert_eq!((r.status, r.body.len()), (200, 1 << 20));
    agent.settle();
    let m = agent.metrics();
    let post = labels("POST", "/upload", "200");
    assert_eq!(request_count(&m, &post), 1.0);
    assert_eq!(
        m.get("http_server_request_body_size_bytes_sum", &post),
        Some(1048576.0)
    );
    let big = labels("GET", "/big", "200");
    assert_eq!(request_count(&m, &big), 1.0);
    assert_eq!(
        m.get("http_server_response_body_size_bytes_sum", &big),
        Some(1048576.0)
    );
    assert_eq!(request_count(&m, &[("target", "py")]), 2.0);
}

#[test]
fn non_http_bytes_make_no_request() {
    if !bpf_or_skip("non_http_bytes") {
        return;
    }
    let (server, agent) = start_traced();
    let tls_client_hello: &[u8] = &[
        0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, 0x5e, 0x1c, 0x2b, 0x3a,
        0x00, 0x00, 0x20, 0xcc, 0xa8, 0xcc, 0xa9, 0xc0, 0x2f, 0xc0, 0x30,
    ];
    let binary: Vec<u8> = (0..512u32).map(|i| (i * 7919 % 251) as u8).collect();
    for payload in [tls_client_hello, &binary, b"GET /partial"] {
        let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        s.write_all(payload).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut sink = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = std::io::Read::read_to_end(&mut s, &mut sink);
    }
    // A real request afterwards is still counted, alone.
    assert_eq!(Client::connect(server.port).get("/items/1").status, 200);
    agent.settle();
    let m = agent.metrics();
    assert_eq!(request_count(&m, &[("target", "py")]), 1.0);
    assert_eq!(request_count(&m, &labels("GET", "/items/{id}", "200")), 1.0);
}

#[test]
fn routes_are_templated_and_capped() {
    if !bpf_or_skip("routes_are_templated_and_capped") {
        return;
    }
    let server = PyServer::start();
    let dir = std::env::temp_dir().join(format!("infersight-routes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("cap.toml");
    std::fs::write(&cfg, "[http]\nroute_limit = 5\n").unwrap();
    let arg = format!("{}=py", server.pid());
    let agent = Agent::start(&["--config", cfg.to_str().unwrap(), "--pid", &arg]);
    let mut c = Client::connect(server.port);
    for i in 0..1000 {
        assert_eq!(c.get(&format!("/items/{i}")).status, 200);
    }
    for i in 0..10 {
        assert_eq!(c.get(&format!("/r/name{i}x")).status, 200);
    }
    agent.settle();
    let m = agent.metrics();
    assert_eq!(
        request_count(&m, &labels("GET", "/items/{id}", "200")),
        1000.0
    );
    // Cap 5: /items/{id} and four /r routes, then everything new is _OTHER.
    let routes: std::collections::BTreeSet<String> = m
        .matching(
            "http_server_request_duration_seconds_count",
            &[("target", "py")],
        )
        .into_iter()
        .map(|(l, _)| l["http_route"].clone())
        .collect();
    assert_eq!(routes.len(), 6, "{routes:?}");
    assert!(routes.contains("_OTHER"));
    assert_eq!(request_count(&m, &labels("GET", "_OTHER", "200")), 6.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unreadable_response_does_not_stop_the_connection() {
    if !bpf_or_skip("an_unreadable_response_does_not_stop_the_connection") {
        return;
    }
    let (server, agent) = start_traced();
    let mut c = Client::connect(server.port);
    // One byte per write: no write starts with a status line the tracer can read.
    let r = c.get("/dribble");
    assert_eq!((r.status, r.body.as_slice()), (200, b"ok".as_slice()));
    for i in 0..5 {
        assert_eq!(c.get(&format!("/items/{i}")).status, 200);
    }
    agent.settle();
    let m = agent.metrics();
    // The dribbled exchange has no response to report; the five after it are counted.
    assert_eq!(request_count(&m, &labels("GET", "/items/{id}", "200")), 5.0);
    assert_eq!(request_count(&m, &[("target", "py")]), 5.0);
    assert_eq!(
        m.get("http_server_active_requests", &[("target", "py")]),
        Some(0.0)
    );
}

/// Send `parts` as separate writes (30 ms apart) on `s`, then read one response.
fn send_split(s: &mut TcpStream, parts: &[&[u8]]) -> u16 {
    use std::io::Read;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(30));
        }
        s.write_all(p).unwrap();
    }
    // "HTTP/1.1 200 OK\r\nServer…\r\n\r\nok": read until the 2-byte body has arrived.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !(got.ends_with(b"\r\n\r\nok") || got.ends_with(b"\r\n\r\nmissing")) {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got[9..12]).parse().unwrap()
}

/// A client (or a server reading with a small buffer) that splits the request line over
/// reads: each split is one request, on a new connection and on a kept-alive one, and the
/// connection goes on being traced.
#[test]
fn request_lines_split_over_reads_are_counted() {
    if !bpf_or_skip("request_lines_split_over_reads_are_counted") {
        return;
    }
    let (server, agent) = start_traced();
    let line: &[u8] = b"GET /cut HTTP/1.1\r\nHost: test\r\n\r\n";
    let splits = [1usize, 3, 8, 19];
    let mut kept = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    kept.set_nodelay(true).unwrap();
    for at in splits {
        let (a, b) = line.split_at(at);
        let mut fresh = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        fresh.set_nodelay(true).unwrap();
        assert_eq!(send_split(&mut fresh, &[a, b]), 200);
        assert_eq!(send_split(&mut kept, &[a, b]), 200);
    }
    // The kept connection is still HTTP to the tracer.
    assert_eq!(
        send_split(&mut kept, &[b"GET /missing HTTP/1.1\r\nHost: t\r\n\r\n"]),
        404
    );
    agent.settle();
    let m = agent.metrics();
    assert_eq!(request_count(&m, &labels("GET", "/cut", "200")), 8.0);
    assert_eq!(request_count(&m, &labels("GET", "_NOT_FOUND", "404")), 1.0);
    assert_eq!(
        m.get(
            "infersight_http_connections_ignored_total",
            &[("target", "py")]
        ),
        Some(0.0)
    );
}

/// A server blocked in accept() when the agent starts: the call entered before the
/// programs were there, and its exit alone starts following the connection.
#[test]
fn a_server_blocked_in_accept_when_the_agent_starts_counts_its_first_connection() {
    if !bpf_or_skip("a_server_blocked_in_accept") {
        return;
    }
    // Other connections (the engines collector looking for a metrics page) are closed.
    let script = "import socket\n\
        s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(8)\n\
        print(s.getsockname()[1], flush=True)\n\
        while True:\n\
        \x20   c, _ = s.accept()\n\
        \x20   c.recv(65536)\n\
        \x20   c.sendall(b'HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok')\n\
        \x20   c.close()\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port: u16 = line.trim().parse().unwrap();
    let pid = child.id();
    // Until the server sits in accept4 (syscall 288) or accept (43).
    let start = std::time::Instant::now();
    loop {
        let s = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        if s.starts_with("288 ") || s.starts_with("43 ") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not in accept: {s}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let arg = format!("{pid}=blocked");
    let agent = Agent::start(&["--pid", &arg]);
    agent.settle();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(
        send_split(&mut s, &[b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n"]),
        200
    );
    agent.settle();
    let m = agent.metrics();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        request_count(&m, &[("target", "blocked"), ("http_route", "/first")]),
        1.0
    );
}

/// Heads up to 8 KiB classify: a 6 KiB request head (its body size exact), a request line
/// of 700 bytes on a kept-alive connection, a 2 KiB response head with SSE (its stream
/// timed), and a status line written on its own.
#[test]
fn long_heads_and_split_response_heads_classify() {
    if !bpf_or_skip("long_heads_and_split_response_heads_classify") {
        return;
    }
    let (server, agent) = start_traced();
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_nodelay(true).unwrap();
    let mut head = String::from("POST /upload HTTP/1.1\r\nHost: test\r\n");
    for i in 0..96 {
        head += &format!("X-Long-{i:02}: {}\r\n", "h".repeat(52));
    }
    head += "Content-Length: 1000\r\n\r\n";
    assert!((6 * 1024..7 * 1024).contains(&head.len()), "{}", head.len());
    let mut req = head.into_bytes();
    req.extend(std::iter::repeat_n(b'b', 1000));
    s.write_all(&req).unwrap();
    let mut c = Client::from_stream(s);
    let r = c.read_reply(std::time::Instant::now());
    assert_eq!((r.status, r.body.as_slice()), (200, b"1000".as_slice()));
    let long = format!("/items/{}", "x".repeat(700));
    assert_eq!(c.get(&long).status, 200);
    assert_eq!(c.get("/split-head").status, 200);
    let r = c.get("/bighead");
    assert_eq!(r.body.iter().filter(|b| **b == b'\n').count(), 40);
    assert_eq!(c.get("/missing").status, 404);
    agent.settle();
    let m = agent.metrics();
    let post = labels("POST", "/upload", "200");
    assert_eq!(request_count(&m, &post), 1.0);
    assert_eq!(
        m.get("http_server_request_body_size_bytes_sum", &post),
        Some(1000.0)
    );
    // The 700-byte target (cut at 64 bytes), /split-head and /bighead.
    let gets = [
        ("target", "py"),
        ("http_request_method", "GET"),
        ("http_response_status_code", "200"),
    ];
    assert_eq!(request_count(&m, &gets), 3.0);
    let split = labels("GET", "/split-head", "200");
    assert_eq!(request_count(&m, &split), 1.0);
    assert_eq!(
        m.get("http_server_response_body_size_bytes_sum", &split),
        Some(2.0)
    );
    let sse = [("target", "py"), ("http_route", "/bighead")];
    assert_eq!(
        m.get("infersight_http_stream_chunks_total", &sse),
        Some(20.0)
    );
    let ttft = mean(&m, "gen_ai_server_time_to_first_token_seconds", &sse);
    assert!((0.150..0.200).contains(&ttft), "TTFT {ttft}");
    assert_eq!(request_count(&m, &labels("GET", "_NOT_FOUND", "404")), 1.0);
}

#[test]
fn not_found_responses_do_not_spend_the_route_budget() {
    if !bpf_or_skip("not_found_responses_do_not_spend_the_route_budget") {
        return;
    }
    let server = PyServer::start();
    let dir = std::env::temp_dir().join(format!("infersight-scan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("cap.toml");
    std::fs::write(&cfg, "[http]\nroute_limit = 3\n").unwrap();
    let arg = format!("{}=py", server.pid());
    let agent = Agent::start(&["--config", cfg.to_str().unwrap(), "--pid", &arg]);
    let mut c = Client::connect(server.port);
    // A scanner: 50 paths that do not exist, 10 methods the server refuses.
    for i in 0..50 {
        assert_eq!(c.get(&format!("/missing/scan{i}x")).status, 404);
    }
    for i in 0..10 {
        assert_eq!(
            c.request("DELETE", &format!("/d/scan{i}x"), &[]).status,
            405
        );
    }
    // The budget of 3 is still there for the server's real routes.
    for r in ["/r/alpha", "/r/beta", "/r/gamma"] {
        assert_eq!(c.get(r).status, 200);
    }
    assert_eq!(c.get("/missing").status, 404);
    agent.settle();
    let m = agent.metrics();
    let routes: std::collections::BTreeMap<String, f64> = m
        .matching(
            "http_server_request_duration_seconds_count",
            &[("target", "py")],
        )
        .into_iter()
        .map(|(l, v)| {
            (
                format!("{} {}", l["http_route"], l["http_response_status_code"]),
                v,
            )
        })
        .collect();
    let want: std::collections::BTreeMap<String, f64> = [
        ("_NOT_FOUND 404", 51.0),
        ("_NOT_FOUND 405", 10.0),
        ("/r/alpha 200", 1.0),
        ("/r/beta 200", 1.0),
        ("/r/gamma 200", 1.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(routes, want);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Requests in flight when their server is killed are ended by the agent, counted as
/// aborted, and the in-flight gauge goes back to what is really open (nothing).
#[test]
fn requests_open_when_the_server_dies_are_aborted() {
    if !bpf_or_skip("requests_open_when_the_server_dies_are_aborted") {
        return;
    }
    let (mut server, agent) = start_traced();
    agent.settle();
    let port = server.port;
    let clients: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.write_all(b"GET /sleep/10000 HTTP/1.1\r\nHost: t\r\n\r\n")
                    .unwrap();
                let mut buf = [0u8; 64];
                // Ends when the server dies.
                let _ = std::io::Read::read(&mut s, &mut buf);
            })
        })
        .collect();
    let t = [("target", "py")];
    agent.wait_for(Duration::from_secs(10), "two requests in flight", |m| {
        m.get("http_server_active_requests", &t) == Some(2.0)
    });
    let _ = server.child.kill();
    let _ = server.child.wait();
    let m = agent.wait_for(Duration::from_secs(10), "the gauge back to 0", |m| {
        m.get("http_server_active_requests", &t) == Some(0.0)
    });
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(
        m.get(
            "infersight_http_requests_aborted_total",
            &[("reason", "process_exit"), ("target", "py")]
        ),
        Some(2.0)
    );
    assert_eq!(m.get("infersight_target_up", &t), Some(0.0));
    assert_eq!(request_count(&m, &t), 0.0);
}

/// A response that switches protocols (101) ends its request: the exchange is counted
/// with its status, and what the connection carries next is not HTTP/1.x.
#[test]
fn a_protocol_upgrade_ends_its_request() {
    if !bpf_or_skip("a_protocol_upgrade_ends_its_request") {
        return;
    }
    // Other connections (the engines collector looking for a metrics page) are closed.
    let script = "import socket\n\
        s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(8)\n\
        print(s.getsockname()[1], flush=True)\n\
        while True:\n\
        \x20   c, _ = s.accept()\n\
        \x20   if b'Upgrade' in c.recv(65536): break\n\
        \x20   c.close()\n\
        c.sendall(b'HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n\\r\\n')\n\
        for i in range(5):\n\
        \x20   c.recv(65536); c.sendall(b'\\x81\\x02ok')\n\
        c.recv(65536)\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port: u16 = line.trim().parse().unwrap();
    let arg = format!("{}=ws", child.id());
    let agent = Agent::start(&["--pid", &arg]);
    agent.settle();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(
        b"GET /socket HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )
    .unwrap();
    let mut buf = [0u8; 256];
    let _ = std::io::Read::read(&mut s, &mut buf).unwrap();
    for _ in 0..5 {
        // WebSocket frames that happen to start like a request line are not one.
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let _ = std::io::Read::read(&mut s, &mut buf).unwrap();
    }
    agent.settle();
    let m = agent.metrics();
    drop(s);
    let _ = child.kill();
    let _ = child.wait();
    let t = [("target", "ws")];
    assert_eq!(request_count(&m, &t), 1.0);
    assert_eq!(
        request_count(
            &m,
            &[("target", "ws"), ("http_response_status_code", "101")]
        ),
        1.0
    );
    assert_eq!(m.get("http_server_active_requests", &t), Some(0.0));
}

/// A target on which no HTTP/1.x request was ever seen has no request signals at all (a
/// worker serving no HTTP, a TLS server): "no traffic" rules cannot fire on it, while a
/// server that served requests and went quiet still reads 0.
#[test]
fn a_target_that_never_served_http_has_no_request_signals() {
    if !bpf_or_skip("a_target_that_never_served_http_has_no_request_signals") {
        return;
    }
    let rules = "[[rule]]\nname = \"NoTraffic\"\nexpr = \"http_request_rate == 0\"\nseverity = \"critical\"\n";
    let mut quiet = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let dir = common::AlertDir::new(
        "no-http",
        rules,
        "[http]\nwindow = \"1s\"\n",
        &quiet.id().to_string(),
    );
    let server = common::PyServer::start();
    let py = format!("{}=py", server.pid());
    let mut args: Vec<String> = dir.args();
    args.extend(["--pid".into(), py]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start(&args);
    agent.settle();
    assert_eq!(Client::connect(server.port).get("/items/1").status, 200);
    let firing = |m: &Metrics, target: &str| {
        m.get(
            "ALERTS",
            &[
                ("alertname", "NoTraffic"),
                ("alertstate", "firing"),
                ("severity", "critical"),
                ("target", target),
            ],
        ) == Some(1.0)
    };
    let m = agent.wait_for(Duration::from_secs(10), "py quiet for a window", |m| {
        firing(m, "py")
    });
    assert!(!firing(&m, "svc"), "the never-HTTP target fired");
    let (_, snap) = agent.get("/api/v1/snapshot");
    let v: serde_json::Value = serde_json::from_str(&snap).unwrap();
    let svc = v["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["target"] == "svc")
        .unwrap()
        .clone();
    assert!(svc["request_rate"].is_null(), "{svc}");
    assert!(svc["active"].is_null(), "{svc}");
    let _ = quiet.kill();
    let _ = quiet.wait();
}
