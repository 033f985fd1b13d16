//! `cargo xtask soak --minutes N`: the release agent traces a hyper server under load that
//! alternates between a fixed rate and idle (so a rule on the request rate flaps), while
//! WebSocket clients connect, read a little and leave, over and over. Every second the
//! agent's RSS and open file descriptors are sampled; the report gives the RSS slope after
//! a one-minute warm-up (goal: flat within 2 MB over 10 minutes), the fd range, ring-buffer
//! drops and alert transitions.
//!
//! Usage: cargo bench -p infersight --bench soak -- [--minutes N] [--rate R]
mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

const AGENT: &str = env!("CARGO_BIN_EXE_infersight");

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("server") {
        return common::serve();
    }
    common::require_root("soak");
    let minutes = common::flag(&args, "--minutes", 10);
    let rate = common::flag(&args, "--rate", 2000);

    let (_server, server_pid, port) = common::start_server();

    let dir = std::env::temp_dir().join(format!("infersight-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(
        dir.join("rules.toml"),
        "[[rule]]\nname = \"Busy\"\nexpr = \"http_request_rate > 100\"\nseverity = \"info\"\n",
    )
    .expect("rules");
    std::fs::write(
        dir.join("infersight.toml"),
        "[http]\nwindow = \"5s\"\n\n[alerting]\nrules_file = \"rules.toml\"\n",
    )
    .expect("config");
    let mut cmd = Command::new(AGENT);
    cmd.arg("--config")
        .arg(dir.join("infersight.toml"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--pid",
            &format!("{server_pid}=soak"),
        ])
        .env("INFERSIGHT_LOG", "warn,infersight::agent=info");
    let (agent, aport) = common::start_agent(cmd);
    let agent_pid = agent.0.id();

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    // Load: 15 s at `rate`, 15 s idle, repeated (the Busy rule fires and resolves).
    let load = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                sent.fetch_add(common::load(port, rate, 15, 8), Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(15));
            }
        })
    };
    // Stream client churn: connect, read a little, leave.
    let churn_count = Arc::new(AtomicU64::new(0));
    let churn = {
        let (stop, n) = (stop.clone(), churn_count.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut s) = TcpStream::connect(("127.0.0.1", aport)) {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
                    let _ = s.write_all(
                        b"GET /ws HTTP/1.1\r\nHost: s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                    );
                    let _ = s.read(&mut buf);
                    let _ = s.read(&mut buf);
                    n.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    let start = Instant::now();
    let mut samples: Vec<(f64, f64, f64)> = Vec::new();
    while start.elapsed() < Duration::from_secs(minutes * 60) {
        std::thread::sleep(Duration::from_secs(1));
        let rss = common::rss_mib(agent_pid).1;
        let fds = std::fs::read_dir(format!("/proc/{agent_pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0) as f64;
        samples.push((start.elapsed().as_secs_f64(), rss, fds));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = churn.join();
    let _ = load.join();
    let m = common::scrape(aport);
    let dropped = common::sum(&m, "infersight_ringbuf_dropped_events_total");
    let counted = common::sum(&m, "http_server_request_duration_seconds_count{");
    let (_, history) = common::get(aport, "/api/v1/alerts/history");
    let transitions = history.matches("\"name\":\"Busy\"").count();
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);

    // Least-squares slope of RSS over time, after the warm-up minute.
    let warm: Vec<&(f64, f64, f64)> = samples.iter().filter(|s| s.0 >= 60.0).collect();
    let n = warm.len() as f64;
    let (mx, my) = (
        warm.iter().map(|s| s.0).sum::<f64>() / n,
        warm.iter().map(|s| s.1).sum::<f64>() / n,
    );
    let slope = warm.iter().map(|s| (s.0 - mx) * (s.1 - my)).sum::<f64>()
        / warm.iter().map(|s| (s.0 - mx).powi(2)).sum::<f64>();
    let per_10min = slope * 600.0;
    let rss_range = warm
        .iter()
        .map(|s| s.1)
        .fold((f64::MAX, 0f64), |a, v| (a.0.min(v), a.1.max(v)));
    let fd_range = samples
        .iter()
        .map(|s| s.2)
        .fold((f64::MAX, 0f64), |a, v| (a.0.min(v), a.1.max(v)));
    println!("\nsoak: {minutes} min, {rate} req/s for 15 s then 15 s idle, a stream client every 200 ms\n");
    println!("| measure | result | goal |");
    println!("| --- | ---: | --- |");
    println!(
        "| RSS slope after the first minute | {per_10min:+.2} MiB per 10 min | within ±2 MB |"
    );
    println!(
        "| RSS range after the first minute | {:.1} – {:.1} MiB | – |",
        rss_range.0, rss_range.1
    );
    println!(
        "| open fds (min – max) | {:.0} – {:.0} | flat |",
        fd_range.0, fd_range.1
    );
    println!(
        "| requests sent / counted by the agent | {} / {counted:.0} | equal |",
        sent.load(Ordering::Relaxed)
    );
    println!("| ring-buffer drops | {dropped:.0} | 0 |");
    println!("| Busy alert episodes announced (re-fires inside the 5 min cooldown are held back) | {transitions} | ≥ 1 |");
    println!(
        "| stream clients connected and gone | {} | – |",
        churn_count.load(Ordering::Relaxed)
    );
    common::goal(
        &format!("RSS slope over a {minutes} min soak"),
        format!("{per_10min:+.2} MiB / 10 min"),
        "within ±2 MB / 10 min",
        per_10min.abs() <= 2.0,
    );
}
