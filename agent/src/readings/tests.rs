use super::*;

#[test]
fn the_readme_signal_table_is_the_registrys() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README");
    let table = signal_table();
    assert!(
        readme.contains(&table),
        "README's signal table differs from the registry; it should read:\n{table}"
    );
}

#[test]
fn every_collector_and_signal_name_is_unique() {
    let mut names: Vec<&str> = COLLECTORS.iter().map(|(c, _)| *c).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), COLLECTORS.len());
    let mut signals: Vec<&str> = signal_docs().map(|(_, d)| d.name).collect();
    let n = signals.len();
    signals.sort_unstable();
    signals.dedup();
    assert_eq!(signals.len(), n);
}

mod merged_figures {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::readings::merged::{signals, Merger};
    use crate::{
        base::{
            histogram::{Histogram, HTTP_DURATION},
            signal::Signals,
            Health,
        },
        collectors::{
            engines::{EngineKind, EngineSeries, EngineTarget},
            http::{HttpSeries, RequestSummary},
        },
    };

    fn posts(sum: f64, count: u64) -> HttpSeries {
        let mut duration = Histogram::new(HTTP_DURATION);
        duration.sum = sum;
        duration.count = count;
        HttpSeries {
            target: "vllm".into(),
            method: "POST".into(),
            version: "1.1",
            route: "/v1/completions".into(),
            status: 200,
            duration,
            request_body: Histogram::new(HTTP_DURATION),
            response_body: Histogram::new(HTTP_DURATION),
        }
    }

    fn summary(target: &str, active: u64) -> RequestSummary {
        RequestSummary {
            target: target.into(),
            active: Some(active),
            accepted_connections: None,
            ignored_connections: None,
            unanswered: None,
            request_rate: None,
            error_ratio: None,
            latency_avg_seconds: None,
            latency_p50_seconds: None,
            latency_p95_seconds: None,
            latency_p99_seconds: None,
            ttft_p50_seconds: None,
            ttft_p95_seconds: None,
            oldest_active_request_seconds: None,
            stream_idle_seconds: None,
            ..RequestSummary::default()
        }
    }

    /// A target "vllm" (engine: two engine indexes) and a target "plain" (no engine),
    /// with running totals: kernel POSTs, engine e2e, generated tokens, joules.
    fn readings(k: (f64, u64), e2e: (f64, f64), tokens: f64, joules: f64) -> Readings {
        let mut r = Readings::default();
        r.http.http = vec![
            posts(k.0, k.1),
            // GETs (health checks, scrapes by others) are not generation calls.
            HttpSeries {
                method: "GET".into(),
                ..posts(1000.0, 1000)
            },
        ];
        r.http.requests = vec![summary("plain", 3), summary("vllm", 9)];
        let series = |i: &str, waiting, share: f64| EngineSeries {
            engine_index: i.into(),
            requests_waiting: Some(waiting),
            generation_tokens_total: Some(tokens * share),
            e2e_seconds_sum: Some(e2e.0 * share),
            e2e_count: Some(e2e.1 * share),
            ..EngineSeries::default()
        };
        r.engines.engines = vec![EngineTarget {
            target: "vllm".into(),
            url: Some("http://127.0.0.1:8000/metrics".into()),
            engine: Some(EngineKind::Vllm),
            health: Health::active(),
            duration_seconds: None,
            series: vec![series("0", 4.0, 0.5), series("1", 2.0, 0.5)],
        }];
        r.gpu.energy.targets = vec![("vllm".into(), joules)];
        r.gpu.energy.price_per_kwh = Some(0.36);
        r.gpu.energy.currency = "EUR".into();
        r
    }

    #[test]
    fn frontend_tokens_energy_and_waiting_over_the_window() {
        let t0 = Instant::now();
        let mut m = Merger::new(Duration::from_secs(60));
        let first = m.update(&readings((10.0, 20), (8.0, 20.0), 1000.0, 500.0), t0);
        assert_eq!(first[1].target, "vllm");
        assert_eq!(first[1].frontend_seconds, None);
        // 10 s later: 40 more POSTs taking 26 s in all by the kernel's clock, 40 more
        // requests taking 20 s by the engine's, 4000 tokens, 2000 J.
        let r = readings((36.0, 60), (28.0, 60.0), 5000.0, 2500.0);
        let f = m.update(&r, t0 + Duration::from_secs(10));
        let v = &f[1];
        assert_eq!(v.frontend_seconds, Some(26.0 / 40.0 - 20.0 / 40.0));
        assert_eq!(v.generation_tokens_per_second, Some(400.0));
        assert_eq!(v.tokens_per_joule, Some(2.0));
        // 2000 J = 1/1800 kWh at 0.36 EUR, for 4000 tokens: 0.05 EUR per million.
        let cost = v.cost_per_million_tokens.unwrap();
        assert!((cost - 0.05).abs() < 1e-12, "{cost}");
        assert_eq!(v.currency, "EUR");
        // The engine's queue where it is known, else the kernel's in-flight count.
        assert_eq!(v.requests_waiting, Some(6.0));
        assert_eq!(f[0].target, "plain");
        assert_eq!(f[0].requests_waiting, Some(3.0));
        assert_eq!(f[0].frontend_seconds, None);

        let mut out = crate::base::signal::SignalSet::default();
        signals(&f, true, false, &mut out);
        assert!(out.get("engine_frontend_seconds").is_none());
        assert_eq!(out.get("target_requests_waiting").map(<[_]>::len), Some(2));
        signals(&f, true, true, &mut out);
        let fe = out.get("engine_frontend_seconds").unwrap();
        assert_eq!(fe.len(), 1);
        assert_eq!(fe[0].labels.get("target").map(String::as_str), Some("vllm"));
    }

    #[test]
    fn a_family_filled_by_two_collectors_is_written_once() {
        use crate::base::family::{family, gauge, MetricType};
        let mut out = vec![
            family("a", "h", MetricType::GAUGE, vec![gauge(&[("x", "1")], 1.0)]),
            family("b", "h", MetricType::GAUGE, vec![gauge(&[], 2.0)]),
            family("a", "h", MetricType::GAUGE, vec![gauge(&[("x", "2")], 3.0)]),
        ];
        merge_same_names(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].name(), out[0].get_metric().len()), ("a", 2));
        assert_eq!(out[1].name(), "b");
    }
}
