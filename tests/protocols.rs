//! Request tracing beyond plain HTTP/1.x, against real servers and clients: gRPC
//! (grpcio), HTTP/2 without TLS (hyper), HTTPS through OpenSSL (Python's ssl module and
//! nginx), and a TLS server no probe can see (Go's crypto/tls). Counts are exact; durations and
//! times to the first token or message agree with the client's within a millisecond.
//! Needs root (eBPF); see `common::bpf_or_skip`.
mod common;

use std::{
    convert::Infallible,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use common::{
    bpf_or_skip, free_port, mean, request_count, spawn_printing_port, turn, within_1ms, Agent,
    Metrics, ServerGroup,
};
use http_body_util::{BodyExt, Full};
use hyper::{body::Bytes, service::service_fn, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};

/// Debian's interpreter: python3-grpcio is its module, and its ssl links libssl.so.3.
const PYTHON: &str = "/usr/bin/python3";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The agent tracing `pid_arg` (`PID=NAME`), with engine discovery off: its probes of
/// the targets' ports would be requests the servers here do not answer.
fn start_agent(pid_arg: &str) -> Agent {
    let conf = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("protocols-{}.toml", std::process::id()));
    std::fs::write(&conf, "[engines]\nenabled = false\n").unwrap();
    let conf = conf.display().to_string();
    Agent::start(&["--config", &conf, "--pid", pid_arg, "--no-host"])
}

fn counter(m: &Metrics, name: &str, target: &str) -> f64 {
    m.get(name, &[("target", target)]).unwrap_or(-1.0)
}

/// Wait until `/health` lists `probe` among the target's protocol probes.
fn wait_probe(agent: &Agent, target: &str, probe: &str) {
    let start = Instant::now();
    loop {
        let (_, h) = agent.health();
        let found = h["protocols"].as_array().is_some_and(|a| {
            a.iter().any(|p| {
                p["target"] == target
                    && p["probes"].as_array().is_some_and(|l| {
                        l.iter()
                            .any(|x| x.as_str().is_some_and(|s| s.starts_with(probe)))
                    })
            })
        });
        if found {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no {probe} probe for {target}: {h}\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- gRPC -------------------------------------------------------------------------------

#[test]
fn grpc_calls_are_counted_per_method_and_status_with_durations_and_ttft() {
    if !bpf_or_skip("grpc_calls") {
        return;
    }
    let _turn = turn();
    let mut cmd = Command::new(PYTHON);
    cmd.arg(repo("tests/servers/grpc_app.py"));
    let server = spawn_printing_port(cmd);
    let target = format!("{}=grpc", server.child.id());
    let agent = start_agent(&target);
    agent.settle();
    let out = Command::new(PYTHON)
        .arg(repo("tests/servers/grpc_app.py"))
        .args(["client", &server.port.to_string()])
        .output()
        .expect("grpc client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(calls.len(), 30);
    let client_mean = |method: &str| {
        let v: Vec<f64> = calls
            .iter()
            .filter(|c| c["method"] == method)
            .map(|c| c["seconds"].as_f64().unwrap())
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    for c in &calls {
        let want = if c["method"] == "Fail" { 14 } else { 0 };
        assert_eq!(c["code"], want, "{c}");
    }
    let m = agent.wait_for(Duration::from_secs(10), "30 calls", |m| {
        m.matching("rpc_server_duration_seconds_count", &[("target", "grpc")])
            .iter()
            .map(|(_, v)| v)
            .sum::<f64>()
            == 30.0
    });
    let l = |method: &'static str, code: &'static str| {
        [
            ("rpc_grpc_status_code", code),
            ("rpc_method", method),
            ("rpc_service", "test.Infer"),
            ("rpc_system", "grpc"),
            ("target", "grpc"),
        ]
    };
    let count = |l: &[(&str, &str)]| m.get("rpc_server_duration_seconds_count", l);
    assert_eq!(count(&l("Unary", "0")), Some(20.0));
    assert_eq!(count(&l("Fail", "14")), Some(5.0));
    assert_eq!(count(&l("Stream", "0")), Some(5.0));
    within_1ms(
        "unary calls' mean duration",
        mean(&m, "rpc_server_duration_seconds", &l("Unary", "0")),
        client_mean("Unary"),
    );
    within_1ms(
        "streaming calls' mean duration",
        mean(&m, "rpc_server_duration_seconds", &l("Stream", "0")),
        client_mean("Stream"),
    );
    // Messages per call of the streaming method: 1 request, 10 responses each.
    let s = [
        ("rpc_method", "Stream"),
        ("rpc_service", "test.Infer"),
        ("rpc_system", "grpc"),
        ("target", "grpc"),
    ];
    assert_eq!(m.get("rpc_server_responses_per_rpc_count", &s), Some(5.0));
    assert_eq!(m.get("rpc_server_responses_per_rpc_sum", &s), Some(50.0));
    assert_eq!(m.get("rpc_server_requests_per_rpc_sum", &s), Some(5.0));
    // Unary methods are not streaming ones.
    let u = [("rpc_method", "Unary"), ("target", "grpc")];
    assert!(m
        .matching("rpc_server_responses_per_rpc_count", &u)
        .is_empty());
    // Time to the first message: the configured 50 ms, within a millisecond.
    let ttft = mean(&m, "gen_ai_server_time_to_first_token_seconds", &s);
    assert!((0.050..0.051).contains(&ttft), "TTFT {ttft}");
    // Calls are RPCs only: no HTTP/2 request series for them.
    assert_eq!(request_count(&m, &[("target", "grpc")]), 0.0);
    assert_eq!(
        counter(&m, "infersight_http_requests_unanswered_total", "grpc"),
        0.0
    );
    assert_eq!(
        counter(&m, "infersight_http2_header_blocks_lost_total", "grpc"),
        0.0
    );
    assert_eq!(
        counter(&m, "infersight_http2_streams_undecoded_total", "grpc"),
        0.0
    );
    assert_eq!(
        counter(&m, "infersight_http2_connections_total", "grpc"),
        1.0
    );
    assert_eq!(
        counter(&m, "infersight_http_connections_ignored_total", "grpc"),
        0.0
    );
    assert_eq!(
        m.get("http_server_active_requests", &[("target", "grpc")]),
        Some(0.0)
    );
    // They are the target's requests for the window's figures (no false "no traffic").
    let (_, snap) = agent.get("/api/v1/snapshot");
    let v: serde_json::Value = serde_json::from_str(&snap).unwrap();
    let r = v["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["target"] == "grpc")
        .unwrap()
        .clone();
    assert!(r["request_rate"].as_f64().is_some_and(|x| x > 0.0), "{r}");
}

// ---- HTTP/2 without TLS (hyper) ------------------------------------------------------------

async fn h2_handle(
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let mut status = 200;
    let mut body = Bytes::from_static(b"ok");
    match path.as_str() {
        "/missing" => status = 404,
        "/error" => status = 500,
        "/upload" => {
            let n = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().len())
                .unwrap_or(0);
            body = Bytes::from(n.to_string());
        }
        p if p.starts_with("/sleep/") => {
            let ms: u64 = p["/sleep/".len()..].parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        _ => {}
    }
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    Ok(r)
}

/// An HTTP/2 (prior knowledge) server in this process; its port.
fn start_h2_server() -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap().port()).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                stream.set_nodelay(true).unwrap();
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(1000)
                        .serve_connection(TokioIo::new(stream), service_fn(h2_handle))
                        .await;
                });
            }
        });
    });
    rx.recv().unwrap()
}

#[test]
fn h2c_concurrent_streams_large_headers_and_a_reset_are_counted_exactly() {
    if !bpf_or_skip("h2c") {
        return;
    }
    let _turn = turn();
    let port = start_h2_server();
    let arg = format!("{}=h2", std::process::id());
    let agent = start_agent(&arg);
    agent.settle();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let statuses = rt.block_on(async move {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        // A header far larger than a frame's worth of small ones: the first request sends
        // it literally, the others refer to the encoder's dynamic table.
        let large = "v".repeat(3000);
        let mut tasks = Vec::new();
        for i in 0..100usize {
            let mut s = sender.clone();
            let large = large.clone();
            tasks.push(tokio::spawn(async move {
                let path = match i % 10 {
                    0 => "/missing".to_string(),
                    1 => "/error".to_string(),
                    2 => "/sleep/50".to_string(),
                    _ => format!("/items/{i}?q={i}"),
                };
                let req = Request::get(format!("http://127.0.0.1/{}", &path[1..]))
                    .header("x-large", large)
                    .header("x-request", i.to_string())
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let r = s.send_request(req).await.unwrap();
                let st = r.status().as_u16();
                r.into_body().collect().await.unwrap();
                (path, st)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        for _ in 0..5 {
            let mut s = sender.clone();
            let req = Request::post("http://127.0.0.1/upload")
                .body(Full::new(Bytes::from(vec![b'u'; 10_000])))
                .unwrap();
            let r = s.send_request(req).await.unwrap();
            let st = r.status().as_u16();
            let b = r.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&b[..], b"10000");
            out.push(("/upload".to_string(), st));
        }
        // A request the client gives up on: dropping it sends RST_STREAM.
        let mut s = sender.clone();
        let req = Request::get("http://127.0.0.1/sleep/1000")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let gave_up = tokio::time::timeout(Duration::from_millis(100), s.send_request(req)).await;
        assert!(gave_up.is_err());
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(sender);
        out
    });
    for (path, st) in &statuses {
        let want = match path.as_str() {
            "/missing" => 404,
            "/error" => 500,
            _ => 200,
        };
        assert_eq!(*st, want, "{path}");
    }
    // One scrape: the agent is this process's child, and so part of the target (its
    // /metrics requests would be the target's too).
    agent.settle();
    let m = agent.metrics();
    let l = |method: &'static str, route: &'static str, status: &'static str| {
        [
            ("target", "h2"),
            ("http_request_method", method),
            ("http_route", route),
            ("http_response_status_code", status),
            ("network_protocol_version", "2"),
        ]
    };
    assert_eq!(
        request_count(&m, &[("target", "h2"), ("network_protocol_version", "2")]),
        105.0,
        "{}",
        agent.log_text()
    );
    assert_eq!(request_count(&m, &l("GET", "/items/{id}", "200")), 70.0);
    assert_eq!(request_count(&m, &l("GET", "_NOT_FOUND", "404")), 10.0);
    assert_eq!(request_count(&m, &l("GET", "/error", "500")), 10.0);
    assert_eq!(request_count(&m, &l("GET", "/sleep/{id}", "200")), 10.0);
    assert_eq!(request_count(&m, &l("POST", "/upload", "200")), 5.0);
    common::assert_body_sums(&m, &l("POST", "/upload", "200"), 50_000.0, 25.0);
    let sleep = mean(
        &m,
        "http_server_request_duration_seconds",
        &l("GET", "/sleep/{id}", "200"),
    );
    // At least the server's sleep; 100 streams served at once on two loaded CPUs may
    // delay it by tens of milliseconds (durations are held to 1 ms of the client's on the
    // gRPC and HTTP/1 paths, one request at a time).
    assert!((0.050..0.100).contains(&sleep), "sleep mean {sleep}");
    // The reset request: unanswered, not a request.
    assert_eq!(
        counter(&m, "infersight_http_requests_unanswered_total", "h2"),
        1.0
    );
    assert_eq!(counter(&m, "infersight_http2_connections_total", "h2"), 1.0);
    assert_eq!(
        counter(&m, "infersight_http2_header_blocks_lost_total", "h2"),
        0.0
    );
    assert_eq!(
        counter(&m, "infersight_http2_streams_undecoded_total", "h2"),
        0.0
    );
    assert_eq!(
        m.get("http_server_active_requests", &[("target", "h2")]),
        Some(0.0)
    );
    let (_, h) = agent.health();
    let p = h["protocols"].as_array().unwrap();
    assert!(
        p.iter()
            .any(|p| p["target"] == "h2" && p["probes"][1] == "http/2"),
        "{h}"
    );
}

// ---- HTTPS through OpenSSL --------------------------------------------------------------

/// A certificate for 127.0.0.1 signed by a test CA, made with the openssl CLI: (leaf PEM,
/// its key PEM, the CA's DER).
fn certificate() -> &'static (PathBuf, PathBuf, Vec<u8>) {
    static CERT: OnceLock<(PathBuf, PathBuf, Vec<u8>)> = OnceLock::new();
    CERT.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("infersight-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = |f: &str| dir.join(f).display().to_string();
        std::fs::write(
            dir.join("leaf.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let steps: Vec<Vec<String>> = vec![
            [
                &["req", "-x509"][..],
                &ec,
                &["-days", "2", "-subj", "/CN=infersight test CA"],
            ]
            .concat()
            .iter()
            .map(|s| s.to_string())
            .chain(["-keyout".into(), p("ca.key"), "-out".into(), p("ca.pem")])
            .collect(),
            [&["req"][..], &ec, &["-subj", "/CN=localhost"]]
                .concat()
                .iter()
                .map(|s| s.to_string())
                .chain(["-keyout".into(), p("key.pem"), "-out".into(), p("leaf.csr")])
                .collect(),
            [
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                &p("leaf.csr"),
                "-CA",
                &p("ca.pem"),
            ]
            .iter()
            .map(|s| s.to_string())
            .chain(
                [
                    "-CAkey",
                    &p("ca.key"),
                    "-CAcreateserial",
                    "-extfile",
                    &p("leaf.ext"),
                ]
                .map(String::from),
            )
            .chain(["-out".into(), p("cert.pem")])
            .collect(),
            [
                "x509",
                "-outform",
                "DER",
                "-in",
                &p("ca.pem"),
                "-out",
                &p("ca.der"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ];
        for args in steps {
            let ok = Command::new("openssl")
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl")
                .success();
            assert!(ok, "openssl {args:?}");
        }
        let ca = std::fs::read(dir.join("ca.der")).unwrap();
        (dir.join("cert.pem"), dir.join("key.pem"), ca)
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(certificate().2.clone()))
        .unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A keep-alive HTTPS/1.1 client connection.
struct TlsClient {
    s: BufReader<Tls>,
}

struct Reply {
    status: u16,
    body: Vec<u8>,
    elapsed: Duration,
    /// When the first body bytes came.
    first: Option<Duration>,
    /// SSE events read.
    events: usize,
}

impl TlsClient {
    fn connect(port: u16) -> TlsClient {
        let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        tcp.set_nodelay(true).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(client_config(), name).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        // The handshake now, so that requests are timed without it.
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock).expect("TLS handshake");
        }
        TlsClient {
            s: BufReader::new(s),
        }
    }

    fn get(&mut self, path: &str) -> Reply {
        self.request("GET", path, &[])
    }

    fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Reply {
        let start = Instant::now();
        let mut msg = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        msg.extend_from_slice(body);
        let s = self.s.get_mut();
        s.write_all(&msg).unwrap();
        s.flush().unwrap();
        self.read_reply(start)
    }

    fn read_reply(&mut self, start: Instant) -> Reply {
        let mut line = String::new();
        self.s.read_line(&mut line).unwrap();
        let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let (mut length, mut chunked) = (None, false);
        loop {
            line.clear();
            self.s.read_line(&mut line).unwrap();
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                length = Some(v.trim().parse::<usize>().unwrap());
            }
            if l == "transfer-encoding: chunked" {
                chunked = true;
            }
        }
        let (mut body, mut first, mut events) = (Vec::new(), None, 0);
        if chunked {
            loop {
                line.clear();
                self.s.read_line(&mut line).unwrap();
                first.get_or_insert_with(|| start.elapsed());
                let n = usize::from_str_radix(line.trim(), 16).unwrap();
                let mut chunk = vec![0; n + 2];
                self.s.read_exact(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                events += chunk.windows(6).filter(|w| w == b"data: ").count();
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            self.s.read_exact(&mut body).unwrap();
        }
        Reply {
            status,
            body,
            elapsed: start.elapsed(),
            first,
            events,
        }
    }
}

/// 100 requests over two keep-alive connections (per 20: one /sleep/100, two /sleep/30,
/// one 404, one 500, fifteen items), two uploads, and `streams` SSE streams of 20 events
/// on connections of their own (each after one item request), each stream's TTFT
/// compared with the client's; then the
/// counts, durations, body sizes and the TLS counters.
fn https_mix(agent: &Agent, port: u16, target: &str, streams: usize) {
    let mut conns = [TlsClient::connect(port), TlsClient::connect(port)];
    let mut slow = Vec::new();
    for i in 0..100usize {
        let (path, want) = match i % 20 {
            0 => ("/sleep/100".to_string(), 200),
            1 | 2 => ("/sleep/30".to_string(), 200),
            3 => ("/missing".to_string(), 404),
            4 => ("/error".to_string(), 500),
            _ => (format!("/items/{i}?page={i}"), 200),
        };
        let r = conns[i % 2].get(&path);
        assert_eq!(r.status, want, "{path}");
        if path.starts_with("/sleep/") {
            slow.push(r.elapsed.as_secs_f64());
        }
    }
    let upload = vec![b'u'; 100_000];
    for _ in 0..2 {
        let r = conns[0].request("POST", "/upload", &upload);
        assert_eq!((r.status, r.body.as_slice()), (200, b"100000".as_slice()));
    }
    let l = [("target", target), ("http_route", "/stream")];
    let name = "gen_ai_server_time_to_first_token_seconds";
    let read = |m: &Metrics| {
        (
            m.get(&format!("{name}_sum"), &l).unwrap_or(0.0),
            m.get(&format!("{name}_count"), &l).unwrap_or(0.0),
        )
    };
    let mut gaps = Vec::new();
    for _ in 0..streams {
        // A request first: the server's side of the handshake (its session tickets, a
        // thread for the connection) is over before the stream is timed.
        let mut c = TlsClient::connect(port);
        assert_eq!(c.get("/items/0").status, 200);
        let (sum, count) = read(&agent.metrics());
        let r = c.get("/stream");
        assert_eq!((r.status, r.events), (200, 20));
        let m = agent.wait_for(Duration::from_secs(10), "the stream's TTFT", |m| {
            read(m).1 == count + 1.0
        });
        let kernel = read(&m).0 - sum;
        let client = r.first.unwrap().as_secs_f64();
        assert!(
            client - kernel >= 0.0,
            "kernel TTFT {kernel}, client {client}"
        );
        gaps.push(client - kernel);
    }
    gaps.sort_by(f64::total_cmp);
    assert!(
        gaps[streams / 2] < 0.001,
        "TTFT gaps to the client: {gaps:?}"
    );
    drop(conns);
    agent.settle();
    let m = agent.metrics();
    let l = |method: &'static str, route: &'static str, status: &'static str| {
        [
            ("target", target),
            ("http_request_method", method),
            ("http_route", route),
            ("http_response_status_code", status),
            ("network_protocol_version", "1.1"),
        ]
    };
    let total = 102.0 + 2.0 * streams as f64;
    assert_eq!(
        request_count(&m, &[("target", target)]),
        total,
        "{}",
        agent.log_text()
    );
    assert_eq!(request_count(&m, &l("GET", "/sleep/{id}", "200")), 15.0);
    assert_eq!(request_count(&m, &l("GET", "_NOT_FOUND", "404")), 5.0);
    assert_eq!(request_count(&m, &l("GET", "/error", "500")), 5.0);
    assert_eq!(
        request_count(&m, &l("GET", "/items/{id}", "200")),
        75.0 + streams as f64
    );
    assert_eq!(
        request_count(&m, &l("GET", "/stream", "200")),
        streams as f64
    );
    common::assert_body_sums(&m, &l("POST", "/upload", "200"), 200_000.0, 12.0);
    let kernel = mean(
        &m,
        "http_server_request_duration_seconds",
        &l("GET", "/sleep/{id}", "200"),
    );
    let client = slow.iter().sum::<f64>() / slow.len() as f64;
    within_1ms("sleeping requests' mean duration", kernel, client);
    let s = [("target", target), ("http_route", "/stream")];
    assert_eq!(
        m.get("infersight_http_stream_chunks_total", &s),
        Some(20.0 * streams as f64)
    );
    // Each connection counted once, as TLS the probes see; none ignored or unseen.
    let conns = 2.0 + streams as f64;
    assert_eq!(
        counter(&m, "infersight_http_connections_tls_total", target),
        conns
    );
    assert_eq!(
        counter(&m, "infersight_http_connections_tls_unseen_total", target),
        0.0
    );
    assert_eq!(
        counter(&m, "infersight_http_connections_ignored_total", target),
        0.0
    );
    assert_eq!(
        counter(&m, "infersight_http_requests_unanswered_total", target),
        0.0
    );
    assert_eq!(
        m.get("http_server_active_requests", &[("target", target)]),
        Some(0.0)
    );
}

#[test]
fn https_through_python_ssl_is_traced_like_plain_http() {
    if !bpf_or_skip("https_python_ssl") {
        return;
    }
    let _turn = turn();
    let (cert, key, _) = certificate();
    let mut cmd = Command::new(PYTHON);
    cmd.arg(repo("tests/http_server.py"))
        .arg("tls")
        .arg(cert)
        .arg(key);
    let server = spawn_printing_port(cmd);
    let target = format!("{}=pyssl", server.child.id());
    let agent = start_agent(&target);
    wait_probe(&agent, "pyssl", "tls: ");
    https_mix(&agent, server.port, "pyssl", 5);
}

#[test]
fn https_through_nginx_is_traced_like_plain_http() {
    if !bpf_or_skip("https_nginx") {
        return;
    }
    let _turn = turn();
    let mut up = Command::new(PYTHON);
    up.arg(repo("tests/http_server.py"));
    let upstream = spawn_printing_port(up);
    let (cert, key, _) = certificate();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("nginx-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{}}\nhttp {{\n access_log off;\n client_body_temp_path {d};\n proxy_temp_path {d};\n\
             fastcgi_temp_path {d};\n uwsgi_temp_path {d};\n scgi_temp_path {d};\n\
             server {{\n  listen 127.0.0.1:{port} ssl;\n  ssl_certificate {c};\n  ssl_certificate_key {k};\n\
             location / {{\n   proxy_pass http://127.0.0.1:{up};\n\
             proxy_http_version 1.1;\n   proxy_set_header Connection \"\";\n   proxy_buffering off;\n   proxy_request_buffering off;\n  }}\n }}\n}}\n",
            d = dir.display(),
            c = cert.display(),
            k = key.display(),
            up = upstream.port,
        ),
    )
    .unwrap();
    use std::os::unix::process::CommandExt;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("nginx");
    let nginx = ServerGroup { child, port };
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nginx did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let target = format!("{}=nginx", nginx.child.id());
    let agent = start_agent(&target);
    wait_probe(&agent, "nginx", "tls: ");
    https_mix(&agent, port, "nginx", 5);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- TLS no probe sees -------------------------------------------------------------------

/// An HTTPS server on Go's crypto/tls (as Ollama's; no libssl anywhere), in a process of
/// its own so that the target is the server alone: it answers every request with "ok".
fn start_go_tls_server() -> ServerGroup {
    let (cert, key, _) = certificate();
    let mut cmd = Command::new(common::go_binary("go_tls_app"));
    cmd.arg(cert).arg(key);
    spawn_printing_port(cmd)
}

#[test]
fn tls_no_probe_sees_is_counted_unseen_without_request_signals_or_a_false_alert() {
    if !bpf_or_skip("tls_unseen") {
        return;
    }
    let _turn = turn();
    let server = start_go_tls_server();
    let port = server.port;
    let rules = "[[rule]]\nname = \"NoTraffic\"\nexpr = \"http_request_rate == 0\"\nseverity = \"critical\"\n";
    let dir = common::AlertDir::new(
        "tls-unseen",
        rules,
        "[http]\nwindow = \"1s\"\n[engines]\nenabled = false\n",
        &server.child.id().to_string(),
    );
    let args: Vec<String> = dir.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start(&args);
    agent.settle();
    for _ in 0..4 {
        let mut c = TlsClient::connect(port);
        for i in 0..5 {
            assert_eq!(c.get(&format!("/items/{i}")).status, 200);
        }
    }
    // Longer than the window and the rule's evaluation: the rule would have fired.
    std::thread::sleep(Duration::from_millis(2500));
    let m = agent.metrics();
    assert_eq!(
        counter(&m, "infersight_http_connections_tls_unseen_total", "svc"),
        4.0
    );
    assert_eq!(
        counter(&m, "infersight_http_connections_tls_total", "svc"),
        0.0
    );
    assert_eq!(
        counter(&m, "infersight_http_connections_ignored_total", "svc"),
        0.0
    );
    assert_eq!(request_count(&m, &[("target", "svc")]), 0.0);
    assert!(
        m.matching("ALERTS", &[("alertname", "NoTraffic")])
            .is_empty(),
        "{:?}",
        m.matching("ALERTS", &[])
    );
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
}

/// The request line's version is the series' `network_protocol_version`.
#[test]
fn http_1_0_and_1_1_requests_are_labelled_with_their_version() {
    if !bpf_or_skip("http_versions") {
        return;
    }
    let _turn = turn();
    let server = common::PyServer::start();
    let arg = format!("{}=py", server.pid());
    let agent = start_agent(&arg);
    agent.settle();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], server.port));
    for _ in 0..3 {
        assert_eq!(common::http_get(addr, "/items/1").0, 200);
    }
    assert_eq!(
        common::Client::connect(server.port).get("/items/2").status,
        200
    );
    agent.settle();
    let m = agent.metrics();
    let v = |version: &'static str| {
        request_count(
            &m,
            &[("target", "py"), ("network_protocol_version", version)],
        )
    };
    assert_eq!((v("1.0"), v("1.1"), v("2")), (3.0, 1.0, 0.0));
}
