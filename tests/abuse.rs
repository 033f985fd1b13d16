//! Abuse of the agent's own port: 1000 WebSocket clients that never read, 10 MB request
//! bodies, slowloris connections and malformed HTTP. The agent stays within its limits
//! (64 stream clients, 64 KiB bodies, a header deadline) and keeps serving scrapes.
mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    time::{Duration, Instant},
};

use common::Agent;

/// The status line's code of whatever the agent answers on `s`.
fn status_of(s: &mut TcpStream) -> Option<u16> {
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// A scrape answered in full, and how long it took.
fn scrape(agent: &Agent) -> Duration {
    let t = Instant::now();
    let (code, body) = agent.get("/metrics");
    assert_eq!(code, 200);
    assert!(body.contains("infersight_build_info"));
    t.elapsed()
}

#[test]
fn the_agent_keeps_serving_scrapes_under_abuse() {
    let state = std::env::temp_dir().join(format!("infersight-abuse-{}", std::process::id()));
    let mut cmd = Command::new(common::AGENT);
    cmd.env("INFERSIGHT_API_TOKEN", "tok");
    let st = state.display().to_string();
    let agent = Agent::start_with(cmd, &["--state-dir", &st, "--no-host"]);
    agent.settle();

    // 1000 WebSocket clients that never read: 64 are served, the rest refused with 503.
    let mut clients = Vec::new();
    let (mut upgraded, mut refused) = (0, 0);
    for i in 0..1000 {
        let mut s = TcpStream::connect(agent.addr).unwrap();
        write!(
            s,
            "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZSA{:03}==\r\n\r\n",
            i % 1000
        )
        .unwrap();
        match status_of(&mut s) {
            Some(101) => upgraded += 1,
            Some(503) => refused += 1,
            other => panic!("client {i}: {other:?}"),
        }
        clients.push(s);
    }
    assert_eq!((upgraded, refused), (64, 936));

    // 200 slowloris connections: a request head that never ends.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(agent.addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            .unwrap();
        slow.push(s);
    }

    // A 10 MB body: refused with 413 after 64 KiB, without reading the rest.
    let mut s = TcpStream::connect(agent.addr).unwrap();
    write!(
        s,
        "POST /api/v1/rules HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer tok\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        10 << 20
    )
    .unwrap();
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..10 {
        // The agent may close before all of it is sent.
        if s.write_all(&chunk).is_err() {
            break;
        }
    }
    assert_eq!(status_of(&mut s), Some(413));

    // Malformed HTTP: answered 400 or closed, never a crash.
    for garbage in [
        &b"\x00\x01\x02 not http at all\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nBad Header No Colon\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(agent.addr).unwrap();
        s.write_all(garbage).unwrap();
        let code = status_of(&mut s);
        assert!(
            matches!(code, None | Some(400) | Some(505)),
            "{garbage:?}: {code:?}"
        );
    }

    // Through all of it: scrapes answer at once and memory stays bounded.
    for _ in 0..5 {
        let took = scrape(&agent);
        assert!(took < Duration::from_secs(2), "a scrape took {took:?}");
    }
    let rss = rss_kib(agent.child.id());
    assert!(rss < 128 * 1024, "RSS {rss} KiB");
    let (code, health) = agent.get("/health");
    assert_eq!(code, 200, "{health}");
    drop(clients);
    drop(slow);
    scrape(&agent);
    let _ = std::fs::remove_dir_all(&state);
}
