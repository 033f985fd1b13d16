//! The live stream and the read-only API: a real WebSocket client gets a Snapshot per tick
//! and alert events; a client that never reads does not delay another; the push client
//! reaches a real WebSocket server, and reconnects and resumes after it restarts.
mod common;

use std::{
    net::SocketAddr,
    process::{Child, Command},
    time::{Duration, Instant},
};

use common::{Agent, AlertDir};
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The next text message as JSON (other frames skipped), within 2 s.
async fn next_json<S>(ws: &mut S) -> serde_json::Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(2), ws.next())
            .await
            .expect("a message within 2 s")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

fn sleeper() -> Child {
    Command::new("sleep").arg("600").spawn().unwrap()
}

/// An agent with one rule that fires when the PID-file target goes down. The agent is
/// dropped (killed) before its directory.
struct Alerting {
    agent: Agent,
    _dir: AlertDir,
}

const SVC_DOWN: &str =
    "[[rule]]\nname = \"SvcDown\"\nexpr = \"target_up == 0\"\nseverity = \"critical\"\n";

fn alerting_agent(tag: &str, pid: u32) -> Alerting {
    let dir = AlertDir::new(&format!("stream-{tag}"), SVC_DOWN, "", &pid.to_string());
    let mut args = dir.args();
    args.push("--no-host".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Alerting {
        agent: Agent::start(&args),
        _dir: dir,
    }
}

fn ws_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

#[test]
fn websocket_clients_get_snapshots_and_alert_events_and_a_slow_one_delays_nobody() {
    let mut svc = sleeper();
    let a = alerting_agent("ws", svc.id());
    let rt = runtime();
    rt.block_on(async {
        let url = ws_url(a.agent.addr);
        // A client that connects and never reads.
        let (_slow, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let (mut fast, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let mut arrivals = Vec::new();
        let mut alert = None;
        let start = Instant::now();
        let mut killed = false;
        while start.elapsed() < Duration::from_secs(4) {
            let v = next_json(&mut fast).await;
            match v["type"].as_str() {
                Some("snapshot") => {
                    assert!(v["data"]["tick"].as_u64().is_some(), "{v}");
                    arrivals.push(start.elapsed());
                }
                Some("alert") => alert = Some(v),
                other => panic!("unexpected message type {other:?}"),
            }
            if !killed && start.elapsed() > Duration::from_secs(1) {
                // The target goes down (killed and reaped): an alert event follows.
                let _ = svc.kill();
                let _ = svc.wait();
                killed = true;
            }
        }
        let alert = alert.expect("an alert event");
        assert_eq!(alert["data"]["rule"], "SvcDown");
        assert_eq!(alert["data"]["status"], "firing");
        assert_eq!(alert["data"]["labels"]["target"], "svc");
        // 100 ms ticks for 4 s, with a client that never reads connected all along.
        assert!(arrivals.len() >= 30, "{} snapshots", arrivals.len());
        let worst = arrivals.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(
            worst < Duration::from_millis(500),
            "a gap of {worst:?} between ticks"
        );
    });
    let _ = svc.kill();
    let _ = svc.wait();
}

#[test]
fn read_only_api_answers_json() {
    let svc = sleeper();
    let a = alerting_agent("api", svc.id());
    a.agent.settle();
    let get = |path: &str| {
        let (status, body) = a.agent.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let snap = get("/api/v1/snapshot");
    assert!(snap["tick"].as_u64().unwrap() >= 1);
    assert!(snap["collectors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "alerting"));
    let targets = get("/api/v1/targets");
    assert_eq!(targets[0]["name"], "svc");
    assert_eq!(targets[0]["kind"], "pidfile");
    let rules = get("/api/v1/rules");
    assert_eq!(rules, serde_json::json!([["SvcDown", "ok"]]));
    assert_eq!(get("/api/v1/alerts"), serde_json::json!([]));
    let mut svc = svc;
    let _ = svc.kill();
    let _ = svc.wait();
    a.agent.wait_for(Duration::from_secs(5), "the alert", |m| {
        !m.matching("ALERTS", &[("alertname", "SvcDown")]).is_empty()
    });
    let alerts = get("/api/v1/alerts");
    assert_eq!(alerts[0]["rule"], "SvcDown");
    assert_eq!(alerts[0]["state"], "firing");
    let (status, _) = a.agent.get("/api/v1/nope");
    assert_eq!(status, 404);
}

/// A WebSocket server that counts the messages each connection gets.
async fn server(
    listener: TcpListener,
    tx: tokio::sync::mpsc::UnboundedSender<(usize, String)>,
    conn_no: usize,
) {
    let (tcp, _) = listener.accept().await.unwrap();
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m {
            let _ = tx.send((conn_no, t.to_string()));
        }
    }
}

#[test]
fn push_client_reconnects_and_resumes() {
    let rt = runtime();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let first = tokio::spawn(server(listener, tx.clone(), 1));
        let mut cmd = Command::new(common::AGENT);
        cmd.env("MONITORING_WEBSOCKET_URL", format!("ws://{addr}/ingest"))
            .env("MONITORING_INTERVAL_SECONDS", "0.2");
        let agent = Agent::start_with(cmd, &["--no-host"]);
        let mut got = 0;
        while got < 5 {
            let (conn, text) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("pushes")
                .unwrap();
            assert_eq!(conn, 1);
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["type"], "snapshot");
            got += 1;
        }
        // The monitoring server goes away, then comes back on the same port.
        first.abort();
        let _ = first.await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        let listener = TcpListener::bind(addr).await.unwrap();
        let _second = tokio::spawn(server(listener, tx, 2));
        let start = Instant::now();
        loop {
            let (conn, _) = tokio::time::timeout(Duration::from_secs(40), rx.recv())
                .await
                .expect("pushes after the restart")
                .unwrap();
            if conn == 2 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(40));
        }
        let m = agent.wait_for(Duration::from_secs(5), "reconnected", |m| {
            m.get("infersight_push_connects_total", &[]) == Some(2.0)
        });
        assert_eq!(m.get("infersight_push_connected", &[]), Some(1.0));
        assert!(
            m.get("infersight_push_messages_total", &[("result", "sent")])
                .unwrap()
                >= 6.0
        );
    });
}

#[test]
fn websocket_clients_subscribe_to_parts() {
    let mut svc = Command::new("sleep").arg("30").spawn().unwrap();
    let a = alerting_agent("sub", svc.id());
    let rt = runtime();
    rt.block_on(async {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Error;
        let bad = format!("{}?parts=gpu", ws_url(a.agent.addr));
        match tokio_tungstenite::connect_async(&bad).await {
            Err(Error::Http(r)) => {
                assert_eq!(r.status(), 400);
                let body = String::from_utf8_lossy(r.body().as_deref().unwrap_or_default());
                assert!(
                    body.starts_with("/ws: parts: unknown part \"gpu\""),
                    "{body}"
                );
            }
            other => panic!("expected 400, got {other:?}"),
        }
        let url = format!("{}?parts=hostname,targets", ws_url(a.agent.addr));
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            v["data"].as_object().unwrap().keys().cloned().collect()
        };
        let v = next_json(&mut ws).await;
        assert_eq!(v["type"], "snapshot");
        assert_eq!(keys(&v), ["hostname", "targets", "tick", "timestamp_ms"]);
        assert_eq!(v["data"]["targets"][0]["name"], "svc");
        ws.send(Message::text(r#"{"subscribe": {"parts": ["collectors"]}}"#))
            .await
            .unwrap();
        ws.send(Message::text(r#"{"subscribe": {"parts": ["nope"]}}"#))
            .await
            .unwrap();
        let mut answers = Vec::new();
        let mut after = None;
        while answers.len() < 2 || after.is_none() {
            let v = next_json(&mut ws).await;
            match v["type"].as_str() {
                Some("subscribed") | Some("error") => answers.push(v),
                Some("snapshot") if answers.len() == 2 => after = Some(v),
                _ => {}
            }
        }
        assert_eq!(
            answers[0],
            serde_json::json!({"type": "subscribed", "parts": ["collectors"], "alerts": true})
        );
        assert_eq!(answers[1]["type"], "error");
        assert!(answers[1]["error"]
            .as_str()
            .unwrap()
            .starts_with("subscribe: parts: unknown part \"nope\""));
        // The bad message left the good subscription in force.
        assert_eq!(
            keys(after.as_ref().unwrap()),
            ["collectors", "tick", "timestamp_ms"]
        );
    });
    let _ = svc.kill();
    let _ = svc.wait();
}

#[test]
fn push_client_times_out_a_hung_server() {
    use std::os::fd::AsRawFd;
    // The monitoring server takes the first connection's handshake and then never reads;
    // later connections it accepts and never answers. Its receive buffer is small, so the
    // agent's sends stall soon.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let small: libc::c_int = 4096;
    // SAFETY: a valid socket descriptor, and a pointer to a c_int with its size.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held_ws = Vec::new();
        let mut held = Vec::new();
        for (i, conn) in listener.incoming().enumerate() {
            let conn = conn.unwrap();
            if i == 0 {
                held_ws.push(tokio_tungstenite::tungstenite::accept(conn).unwrap());
            } else {
                held.push(conn);
            }
        }
    });
    let mut cmd = Command::new(common::AGENT);
    cmd.env("MONITORING_WEBSOCKET_URL", format!("ws://{addr}/ingest"))
        .env("MONITORING_INTERVAL_SECONDS", "0.1");
    let agent = Agent::start_with(cmd, &["--no-host"]);
    agent.wait_for(Duration::from_secs(10), "connected", |m| {
        m.get("infersight_push_connected", &[]) == Some(1.0)
    });
    let shown = format!("ws://{addr}");
    let lost = format!("push: connection to {shown} lost: a send took over 10s");
    let hung = format!("push: cannot connect to {shown}: no answer in 10s");
    let start = Instant::now();
    while !(agent.log_text().contains(&lost) && agent.log_text().contains(&hung)) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let m = agent.metrics();
    assert_eq!(m.get("infersight_push_connected", &[]), Some(0.0));
    assert_eq!(m.get("infersight_push_connects_total", &[]), Some(1.0));
}

/// A raw WebSocket upgrade request with these extra header lines; the answer's status and
/// the connection (left open, unread).
fn upgrade(addr: SocketAddr, headers: &str) -> (u16, std::net::TcpStream) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{headers}\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Byte by byte up to the end of the head: nothing after it is taken from the socket.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).unwrap(),
            1,
            "{}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    let code = String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    (code, s)
}

#[test]
fn ws_accepts_a_browser_origin_only_from_the_agent_or_the_allow_list() {
    let agent = Agent::start(&["--no-host"]);
    let own = format!("Origin: http://{}\r\n", agent.addr);
    assert_eq!(upgrade(agent.addr, "").0, 101, "no Origin: not a browser");
    assert_eq!(upgrade(agent.addr, &own).0, 101, "the dashboard's own page");
    for foreign in [
        "Origin: http://evil.example\r\n",
        "Origin: null\r\n",
        "Origin: https://grafana.example:3000\r\n",
    ] {
        assert_eq!(upgrade(agent.addr, foreign).0, 403, "{foreign}");
    }
    drop(agent);
    let dir = std::env::temp_dir().join(format!("infersight-origins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("o.toml");
    std::fs::write(
        &cfg,
        "[api]\nallowed_origins = [\"https://grafana.example:3000/\"]\n",
    )
    .unwrap();
    let agent = Agent::start(&["--no-host", "--config", cfg.to_str().unwrap()]);
    let (code, _) = upgrade(agent.addr, "Origin: https://grafana.example:3000\r\n");
    assert_eq!(code, 101);
    assert_eq!(
        upgrade(agent.addr, "Origin: https://grafana.example\r\n").0,
        403
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ws_refuses_client_messages_over_64_kib() {
    let agent = Agent::start(&["--no-host"]);
    let rt = runtime();
    rt.block_on(async {
        use futures_util::SinkExt;
        let url = ws_url(agent.addr);
        // Under the bound: read and answered (not a subscription: an error message).
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        ws.send(Message::text(" ".repeat(60 * 1024))).await.unwrap();
        loop {
            let v = next_json(&mut ws).await;
            if v["type"] == "error" {
                break;
            }
        }
        // Over it: the connection ends without an answer.
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        ws.send(Message::text(" ".repeat(100 * 1024)))
            .await
            .unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .expect("the connection ends");
            match m {
                Some(Ok(Message::Text(t))) => {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                    assert_eq!(v["type"], "snapshot", "{v}");
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            }
        }
    });
}

#[test]
fn ws_drops_clients_that_stop_reading() {
    use std::os::fd::AsRawFd;
    let agent = Agent::start(&["--no-host"]);
    // 64 clients that never read, with small receive buffers: every slot is taken.
    let mut stalled = Vec::new();
    for _ in 0..64 {
        let (code, s) = upgrade(agent.addr, "");
        assert_eq!(code, 101);
        let small: libc::c_int = 4096;
        // SAFETY: a valid socket descriptor, and a pointer to a c_int with its size.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&small as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        stalled.push(s);
    }
    assert_eq!(upgrade(agent.addr, "").0, 503);
    // Once their sends have waited 10 s they are dropped and others get in.
    let start = Instant::now();
    while upgrade(agent.addr, "").0 != 101 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "still locked out after {:?}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The agent answered scrapes throughout.
    assert_eq!(agent.get("/metrics").0, 200);
}
