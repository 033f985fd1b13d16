//! `cargo xtask bench engines`: the agent's CPU time to scrape one target's engine
//! metrics: a 100 KB vLLM page (eight data-parallel engines beside the usual Python
//! process and HTTP-server families) fetched over loopback, read with its size bound,
//! parsed, normalised and windowed, through the collector's own scrape round. Goal:
//! ≤ 1 ms of CPU per target per scrape.
//!
//! The CPU time is the scraping thread's own (CLOCK_THREAD_CPUTIME_ID: user and system,
//! the socket calls included); the server runs on another thread and is not counted.
//!
//! Usage: cargo bench -p infersight --bench engines -- [--rounds N] [--kib K]
mod common;

use std::{
    io::{Read, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use infersight::{
    collectors::engines::{Scraper, TargetInfo},
    config::Endpoints,
};

/// A vLLM V1 page of about `kib` KiB: the 0.10 fixture's families for as many engine
/// indexes as it takes, after the families every Python server carries.
fn page(kib: usize) -> String {
    let fixture = include_str!("../../tests/fixtures/engines/vllm_v1_0_10.prom");
    let mut out = String::new();
    for g in 0..3 {
        out += &format!("python_gc_objects_collected_total{{generation=\"{g}\"}} 3412.0\n");
    }
    for (i, le) in [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "+Inf",
    ]
    .iter()
    .enumerate()
    {
        for h in [
            "/v1/completions",
            "/v1/chat/completions",
            "/health",
            "/metrics",
        ] {
            out += &format!(
                "http_request_duration_seconds_bucket{{handler=\"{h}\",le=\"{le}\",method=\"POST\"}} {}.0\n",
                i * 10
            );
        }
    }
    let mut engine = 0;
    while out.len() < kib * 1024 {
        for line in fixture.lines() {
            out += &line.replace("engine=\"0\"", &format!("engine=\"{engine}\""));
            out.push('\n');
        }
        engine += 1;
    }
    out
}

/// Serve `body` to every connection (HTTP/1.1, Content-Length, then close).
fn serve(body: String) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("address").port();
    std::thread::spawn(move || {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(head.as_bytes());
            let _ = c.write_all(body.as_bytes());
        }
    });
    port
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `ts` is.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds = common::flag(&args, "--rounds", 2000) as usize;
    let kib = common::flag(&args, "--kib", 100) as usize;
    let body = page(kib);
    let size = body.len();
    let port = serve(body);
    let targets = Arc::new(Mutex::new(vec![TargetInfo {
        name: "vllm".into(),
        pids: Vec::new(),
        endpoints: Endpoints {
            metrics_url: Some(format!("http://127.0.0.1:{port}/metrics")),
            ..Endpoints::default()
        },
    }]));
    let mut scraper = Scraper::new(
        targets,
        Duration::from_secs(2),
        4 << 20,
        Duration::from_secs(60),
    )
    .expect("the scrape round");
    // Warm up (first connection, allocations), and check the page is read whole.
    for _ in 0..20 {
        let r = scraper.round();
        assert_eq!(r.len(), 1);
        assert!(r[0].health.is_active(), "{:?}", r[0].health);
    }
    let engines = scraper.round()[0].series.len();
    let mut cpu = Vec::with_capacity(rounds);
    let wall = Instant::now();
    let total = thread_cpu();
    for _ in 0..rounds {
        let t = thread_cpu();
        let r = scraper.round();
        cpu.push((thread_cpu() - t).as_secs_f64() * 1e3);
        assert!(r[0].health.is_active());
    }
    let mean = (thread_cpu() - total).as_secs_f64() * 1e3 / rounds as f64;
    let wall = wall.elapsed().as_secs_f64() * 1e3 / rounds as f64;
    let median = common::median(&mut cpu);
    println!(
        "\nengines benchmark: a {:.0} KB vLLM page ({engines} engine indexes), {rounds} scrapes\n",
        size as f64 / 1000.0
    );
    println!("| | ms per scrape |");
    println!("| --- | ---: |");
    println!("| CPU, mean | {mean:.3} (goal ≤ 1 ms) |");
    println!("| CPU, median | {median:.3} |");
    println!("| wall, mean | {wall:.3} |");
    common::goal(
        &format!(
            "agent CPU per scrape of a {:.0} KB engine page",
            size as f64 / 1000.0
        ),
        format!("{mean:.3} ms"),
        "≤ 1 ms",
        mean <= 1.0,
    );
}
