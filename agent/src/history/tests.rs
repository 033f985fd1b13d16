use super::*;

fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "infersight-history-{tag}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn round_trip_downsampling_and_retention_with_an_injected_clock() {
    let dir = temp("rt");
    let (mut h, note) = History::open(&dir, HOUR, 24 * HOUR).unwrap();
    assert_eq!(note, None);
    // Two hours of 1 s samples: cpu = minute number, two targets' rates.
    // On an hour boundary: query buckets align to multiples of the step.
    let start = 1_699_999_200;
    for i in 0..7200 {
        let t = start + i;
        let samples: Samples = vec![
            ("cpu_usage_percent", Labels::new(), (i / 60) as f64),
            ("http_request_rate", labels(&[("target", "a")]), 1.0),
            ("http_request_rate", labels(&[("target", "b")]), 2.0),
        ];
        h.write(t, &samples).unwrap();
    }
    let now = start + 7200;
    h.maintain(now).unwrap();
    // Raw: only the last hour is kept.
    let raw = h
        .query(
            "cpu_usage_percent",
            &BTreeMap::new(),
            now - 600,
            now,
            1,
            now,
        )
        .unwrap();
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0].points.len(), 600);
    assert_eq!(raw[0].points[0], (now - 600, 110.0));
    // Packed into one chunk per series and minute; the unpacked tick rows are gone.
    let (chunks, raw): (i64, i64) = h
        .conn
        .query_row("SELECT count(*), sum(length(data)) FROM chunks", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((chunks, raw / 9), (3 * 60, 3 * 3600));
    let ticks: i64 = h
        .conn
        .query_row("SELECT count(*) FROM ticks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ticks, 0);
    // Older than the raw retention: minute averages, here per 5 minutes.
    let old = h
        .query(
            "cpu_usage_percent",
            &BTreeMap::new(),
            start,
            start + 1799,
            300,
            now,
        )
        .unwrap();
    assert_eq!(
        old[0].points,
        vec![
            (start, 2.0),
            (start + 300, 7.0),
            (start + 600, 12.0),
            (start + 900, 17.0),
            (start + 1200, 22.0),
            (start + 1500, 27.0)
        ]
    );
    // Label matchers pick one series.
    let b = h
        .query(
            "http_request_rate",
            &[("target".to_string(), "b".to_string())].into(),
            now - 60,
            now,
            60,
            now,
        )
        .unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].labels["target"], "b");
    assert!(b[0].points.iter().all(|(_, v)| *v == 2.0));
    // A day later the minute rows expire too.
    h.maintain(now + 25 * 3600).unwrap();
    let left: i64 = h
        .conn
        .query_row("SELECT count(*) FROM points_1m", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unpacked_ticks_fast_ticks_and_late_ticks() {
    let dir = temp("ticks");
    let (mut h, _) = History::open(&dir, HOUR, HOUR).unwrap();
    let a = |v: f64| -> Samples { vec![("load1", Labels::new(), v)] };
    let t0 = 1_700_000_040; // a minute boundary
                            // Two ticks in one second: the later one counts.
    h.write(t0, &a(1.0)).unwrap();
    h.write(t0, &a(3.0)).unwrap();
    h.write(t0 + 1, &a(5.0)).unwrap();
    let q = |h: &History, step| {
        h.query("load1", &BTreeMap::new(), t0, t0 + 120, step, t0 + 121)
            .unwrap()[0]
            .points
            .clone()
    };
    // Before packing (tick rows) and after (chunks) the answers are the same.
    assert_eq!(q(&h, 1), vec![(t0, 3.0), (t0 + 1, 5.0)]);
    h.maintain(t0 + 61).unwrap();
    assert_eq!(q(&h, 1), vec![(t0, 3.0), (t0 + 1, 5.0)]);
    assert_eq!(q(&h, 60), vec![(t0, 4.0)]);
    // A tick that arrives late for the packed minute joins its chunk and average.
    h.write(t0 + 2, &a(7.0)).unwrap();
    h.write(t0 + 61, &a(9.0)).unwrap();
    assert_eq!(
        q(&h, 1),
        vec![(t0, 3.0), (t0 + 1, 5.0), (t0 + 2, 7.0), (t0 + 61, 9.0)]
    );
    h.maintain(t0 + 62).unwrap();
    assert_eq!(q(&h, 60), vec![(t0, 5.0), (t0 + 60, 9.0)]);
    assert_eq!(
        q(&h, 1),
        vec![(t0, 3.0), (t0 + 1, 5.0), (t0 + 2, 7.0), (t0 + 61, 9.0)]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_corrupt_file_is_moved_aside() {
    let dir = temp("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("history.db"), vec![0x42u8; 8192]).unwrap();
    let (mut h, note) = History::open(&dir, HOUR, HOUR).unwrap();
    let note = note.expect("a note");
    assert!(note.contains("moved to"), "{note}");
    let aside: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("history.db.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1);
    h.write(100, &vec![("load1", Labels::new(), 1.0)]).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unwritable_directory_is_an_error_not_a_crash() {
    let e = History::open(Path::new("/proc/infersight-history"), HOUR, HOUR)
        .err()
        .expect("an error");
    assert!(
        e.to_string()
            .starts_with("state directory /proc/infersight-history"),
        "{e}"
    );
}

#[test]
fn history_queries_stop_at_their_deadline_and_bound_their_series() {
    let dir = temp("deadline");
    let (mut h, _) = History::open(&dir, HOUR, 24 * HOUR).unwrap();
    let start = 1_699_999_200;
    for i in 0..3000 {
        let samples: Samples = vec![
            ("http_request_rate", labels(&[("target", "a")]), 1.0),
            ("http_request_rate", labels(&[("target", "b")]), 2.0),
        ];
        h.write(start + i, &samples).unwrap();
    }
    let span = (start, start + 3000, 1, start + 3000);
    let none = BTreeMap::new();
    let past = Some(std::time::Instant::now());
    let bounds = |max_series, deadline| QueryBounds {
        max_series,
        deadline,
    };
    assert!(matches!(
        h.query_bounded("http_request_rate", &none, span, bounds(10, past)),
        Err(HistoryError::TimedOut)
    ));
    assert!(matches!(
        h.query_bounded("http_request_rate", &none, span, bounds(1, None)),
        Err(HistoryError::TooManySeries {
            matched: 2,
            limit: 1
        })
    ));
    // The handler is gone afterwards: the same query without bounds answers.
    let all = h.query_bounded("http_request_rate", &none, span, bounds(2, None));
    assert_eq!(
        all.unwrap().iter().map(|s| s.points.len()).sum::<usize>(),
        6000
    );
    let _ = std::fs::remove_dir_all(&dir);
}
