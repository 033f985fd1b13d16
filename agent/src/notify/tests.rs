//! The dispatcher over a real outbox: ordering against Alertmanager (a real HTTP peer on a
//! local port), pruning, and a row whose payload no longer reads.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    path::PathBuf,
};

use super::*;
use crate::alert::rules::Severity;

fn temp() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "infersight-notify-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn note(status: Status, ends_at: Option<f64>) -> Notification {
    Notification {
        rule: "Down".into(),
        status,
        severity: Severity::Critical,
        labels: [("alertname".to_string(), "Down".to_string())].into(),
        annotations: Default::default(),
        value: 0.0,
        starts_at: 1000.0,
        ends_at,
        channels: vec![],
        reason: None,
    }
}

fn notifier(dir: &std::path::Path, config: Alerting) -> Notifier {
    let store = Arc::new(Mutex::new(Store::open(dir).unwrap()));
    Notifier::new(store, config, "h".into(), "http://agent/".into())
}

fn raw(dir: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("infersight.db")).unwrap()
}

fn count(db: &rusqlite::Connection, sql: &str) -> i64 {
    db.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Dispatch until `done` holds (at most 5 s).
async fn dispatch_until(n: &Notifier, done: impl Fn(&NotifyStats) -> bool) -> NotifyStats {
    for _ in 0..100 {
        n.dispatch_once();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let s = n.stats();
        if done(&s) {
            return s;
        }
    }
    panic!("not done: {:?}", n.stats());
}

fn count_of(s: &NotifyStats, channel: &str, result: &str) -> u64 {
    s.counts
        .get(channel)
        .and_then(|m| m.get(result))
        .copied()
        .unwrap_or(0)
}

/// An HTTP peer answering 200 to each POST; the bodies it got.
fn receiver() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let bodies: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let (mut line, mut len) = (String::new(), 0usize);
            while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                line.clear();
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            seen.lock()
                .unwrap()
                .push(serde_json::from_slice(&body).unwrap());
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, bodies)
}

#[tokio::test]
async fn an_alertmanager_refresh_never_follows_a_newer_resolve() {
    let dir = temp();
    let (url, bodies) = receiver();
    let n = notifier(
        &dir,
        Alerting {
            alertmanager_url: Some(url),
            max_age: Duration::from_secs(3600),
            ..Default::default()
        },
    );
    let now = now_seconds();
    {
        let mut s = lock(&n.store);
        // A refresh that failed and waits for its retry in a minute…
        s.enqueue(
            "refresh",
            "alertmanager",
            &note(Status::Firing, None),
            now - 5.0,
        )
        .unwrap();
        let due = s.due(now, 10).unwrap().rows;
        s.start_attempt(&[due[0].id], now - 5.0).unwrap();
        s.retry(&[due[0].id], now + 60.0, "HTTP 503").unwrap();
        // …then the alert resolves.
        let resolved = note(Status::Resolved, Some(now - 1.0));
        s.enqueue("resolve", "alertmanager", &resolved, now - 1.0)
            .unwrap();
    }
    dispatch_until(&n, |s| count_of(s, "alertmanager", "delivered") == 1).await;
    let got = bodies.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0][0]["endsAt"], format::rfc3339(Some(now - 1.0)));
    // Nothing older is left to re-open it.
    assert_eq!(lock(&n.store).depth().unwrap(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn delivered_and_expired_outbox_rows_are_pruned() {
    let dir = temp();
    let n = notifier(&dir, Alerting::default());
    let now = now_seconds();
    let day = 86400.0;
    {
        let mut s = lock(&n.store);
        for (key, at) in [("old", now - 2.0 * day), ("new", now - 60.0)] {
            s.enqueue(key, "log", &note(Status::Firing, None), at)
                .unwrap();
        }
        s.enqueue("gone", "log", &note(Status::Firing, None), now - 3.0 * day)
            .unwrap();
    }
    let db = raw(&dir);
    db.execute_batch(&format!(
        "UPDATE outbox SET delivered = created WHERE key IN ('old', 'new');
         UPDATE outbox SET expired = {} WHERE key = 'gone';",
        now - 2.0 * day
    ))
    .unwrap();
    n.dispatch_once();
    let keys: Vec<String> = db
        .prepare("SELECT key FROM outbox ORDER BY key")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(keys, ["new"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_poisoned_outbox_row_is_moved_aside_and_counted() {
    let dir = temp();
    let n = notifier(
        &dir,
        Alerting {
            max_age: Duration::from_secs(3600),
            ..Default::default()
        },
    );
    let now = now_seconds();
    let db = raw(&dir);
    // Written by another version: its payload no longer reads. It comes first.
    db.execute(
        "INSERT INTO outbox (key, channel, payload, created, next_attempt) VALUES ('bad', 'log', '{\"rule\": 7}', ?1, ?1)",
        [now - 10.0],
    )
    .unwrap();
    lock(&n.store)
        .enqueue("good", "log", &note(Status::Firing, None), now - 5.0)
        .unwrap();
    let s = dispatch_until(&n, |s| count_of(s, "log", "delivered") == 1).await;
    assert_eq!(count_of(&s, "log", "poisoned"), 1);
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM outbox_poisoned WHERE key = 'bad'"
        ),
        1
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM outbox WHERE key = 'bad'"),
        0
    );
    assert_eq!(lock(&n.store).depth().unwrap(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
