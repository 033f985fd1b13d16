//! The dashboard in a real browser: headless Chromium (Debian `chromium`, installed by the
//! test command) loads `/` from a running agent over the DevTools protocol. The agent
//! traces two Python test servers (one named `<img src=x onerror=alert(1)>`) and starts on
//! a history the test wrote beforehand (47 minutes with holes, two GPUs). Checked: every
//! chart draws exactly the history points the API holds for the selected range, then live
//! points after a seam without gap or overlap; one tick adds one point; the range and
//! target selectors refetch; holes stay holes; the hover read-out; an alert appears and
//! is acknowledged with the token (refused without); names render as text; the health
//! tables; no console errors. Screenshots of each state go to target/tmp/dashboard-*.png.
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{Agent, AlertDir, Client, PyServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const XSS: &str = "<img src=x onerror=alert(1)>";
const TOKEN: &str = "s3cret";

const RULES: &str = r#"
[[rule]]
name = "SvcDown"
expr = "target_up{target=\"svc\"} == 0"
severity = "critical"
[rule.annotations]
summary = "{{ $labels.target }} is down"
"#;

/// True once every chart holds the answer to the page's latest history load.
const LOADED: &str = "document.body && document.body.dataset.gen !== undefined && \
    [...document.querySelectorAll('canvas')].every(c => c.dataset.gen === document.body.dataset.gen)";

/// The page's charts: (element id, history signal, the label that tells series apart).
const CHARTS: &[(&str, &str, &str)] = &[
    ("cpu", "cpu_usage_percent", ""),
    ("memory", "memory_usage_percent", ""),
    ("gpu_util", "gpu_utilization_percent", "gpu"),
    ("gpu_mem", "gpu_memory_used_ratio", "gpu"),
    ("gpu_power", "gpu_power_watts", "gpu"),
    ("gpu_temp", "gpu_temperature_celsius", "gpu"),
    ("rate", "http_request_rate", "target"),
    ("latency", "http_latency_p95_seconds", "target"),
    ("latency_avg", "http_latency_avg_seconds", "target"),
    ("ttft", "ttft_p95_seconds", "target"),
    ("errors", "http_error_ratio", "target"),
];

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The host's holes (no reading at all): 5 minutes, and 1 minute inside the last 15.
fn host_hole(t: i64, now: i64) -> bool {
    (now - 1800..now - 1500).contains(&t) || (now - 600..now - 540).contains(&t)
}

/// Write 47 minutes of history ending a minute ago, a point every 5 s, as the agent would
/// have recorded it: host signals with holes, two targets, two GPUs.
fn prefill(state: &Path, now: i64) {
    let (mut h, _) = infersight::history::History::open(
        state,
        Duration::from_secs(86_400),
        Duration::from_secs(7 * 86_400),
    )
    .unwrap();
    let l = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let end = now - now % 5 - 60;
    for t in (end - 47 * 60..=end).step_by(5) {
        let x = (t % 600) as f64 / 600.0;
        let mut s: infersight::history::Samples = Vec::new();
        if !host_hole(t, now) {
            s.push(("cpu_usage_percent", l(&[]), 20.0 + 30.0 * x));
            s.push(("memory_usage_percent", l(&[]), 41.5));
        }
        for (i, target) in ["api", XSS].into_iter().enumerate() {
            let k = i as f64 + 1.0;
            let tl = l(&[("target", target)]);
            s.push(("http_request_rate", tl.clone(), 40.0 * k + 10.0 * x));
            s.push(("http_latency_p95_seconds", tl.clone(), 0.08 * k + 0.02 * x));
            s.push(("http_latency_avg_seconds", tl.clone(), 0.03 * k + 0.01 * x));
            s.push(("ttft_p95_seconds", tl.clone(), 0.15 * k));
            s.push(("http_error_ratio", tl, 0.01 * k * x));
        }
        for gpu in 0..2 {
            let g = l(&[
                ("gpu", &gpu.to_string()),
                (
                    "UUID",
                    &format!("GPU-0000000{gpu}-aaaa-bbbb-cccc-dddddddddddd"),
                ),
            ]);
            let k = gpu as f64;
            s.push((
                "gpu_utilization_percent",
                g.clone(),
                60.0 + 30.0 * x - 20.0 * k,
            ));
            s.push(("gpu_memory_used_ratio", g.clone(), 0.7 + 0.1 * k));
            s.push(("gpu_power_watts", g.clone(), 250.0 + 100.0 * x + 20.0 * k));
            s.push(("gpu_temperature_celsius", g, 60.0 + 10.0 * x + k));
        }
        h.write(t, &s).unwrap();
    }
}

/// The `svc` target's process: stopped to fire the alert, and on drop whatever happens.
struct Sleeper(Child);

impl Sleeper {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Headless Chromium with a fresh profile; killed and removed on drop.
struct Browser {
    child: Child,
    profile: PathBuf,
    devtools: String,
}

impl Browser {
    fn start() -> Browser {
        let profile =
            std::env::temp_dir().join(format!("infersight-chromium-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=1440,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium (the test command installs it)");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let mut lines = stderr.lines().map_while(Result::ok);
        let devtools = lines
            .find_map(|l| l.split("DevTools listening on ").nth(1).map(str::to_string))
            .expect("DevTools URL");
        // Keep draining stderr so Chromium never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Browser {
            child,
            profile,
            devtools: devtools.trim().to_string(),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// One page over the DevTools protocol; console errors, exceptions, error log entries and
/// dialogs are collected as they arrive.
struct Page {
    ws: Ws,
    session: String,
    id: u64,
    problems: Vec<String>,
}

impl Page {
    async fn open(devtools: &str) -> Page {
        let (ws, _) = tokio_tungstenite::connect_async(devtools).await.unwrap();
        let mut p = Page {
            ws,
            session: String::new(),
            id: 0,
            problems: Vec::new(),
        };
        let target = p
            .send(
                false,
                "Target.createTarget",
                json!({ "url": "about:blank" }),
            )
            .await;
        let attached = p
            .send(
                false,
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        p.session = attached["sessionId"].as_str().unwrap().to_string();
        for domain in ["Runtime.enable", "Page.enable", "Log.enable"] {
            p.call(domain, json!({})).await;
        }
        // Clock times in the page are then UTC, as the test formats them.
        p.call(
            "Emulation.setTimezoneOverride",
            json!({ "timezoneId": "UTC" }),
        )
        .await;
        p
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.send(true, method, params).await
    }

    /// Send one command (to the page's session or the browser) and wait for its answer.
    async fn send(&mut self, session: bool, method: &str, params: Value) -> Value {
        self.id += 1;
        let id = self.id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if session {
            msg["sessionId"] = json!(self.session);
        }
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(20), self.ws.next())
                .await
                .expect("DevTools answer")
                .unwrap()
                .unwrap();
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
            self.event(&v).await;
        }
    }

    async fn event(&mut self, v: &Value) {
        let p = &v["params"];
        match v["method"].as_str().unwrap_or("") {
            "Runtime.consoleAPICalled"
                if ["error", "warning", "assert"].contains(&p["type"].as_str().unwrap_or("")) =>
            {
                self.problems
                    .push(format!("console.{}: {}", p["type"], p["args"]));
            }
            "Runtime.exceptionThrown" => {
                self.problems
                    .push(format!("exception: {}", p["exceptionDetails"]));
            }
            // The refused acknowledgement is a 401 on purpose; Chromium logs it.
            "Log.entryAdded"
                if p["entry"]["level"] == "error"
                    && !(p["entry"]["url"].as_str().unwrap_or("").ends_with("/ack")
                        && p["entry"]["text"].as_str().unwrap_or("").contains("401")) =>
            {
                self.problems.push(format!("log: {}", p["entry"]));
            }
            "Page.javascriptDialogOpening" => {
                self.problems.push(format!("dialog: {p}"));
                self.id += 1;
                let msg = json!({ "id": self.id, "method": "Page.handleJavaScriptDialog",
                    "params": { "accept": false }, "sessionId": self.session });
                self.ws.send(Message::text(msg.to_string())).await.unwrap();
            }
            _ => {}
        }
    }

    /// Evaluate `expr` in the page (promises awaited) and return its JSON value.
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Evaluate `expr` until it is truthy (at most `limit`); its value and when it held.
    async fn wait(&mut self, expr: &str, limit: Duration, what: &str) -> Value {
        let start = Instant::now();
        loop {
            let v = self.eval(expr).await;
            if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                return v;
            }
            if start.elapsed() > limit {
                let state = self
                    .eval(
                        "['status', 'alerts', 'alert-history', 'ack-msg']
                           .map(id => id + ': ' + document.getElementById(id).innerText).join('\\n')",
                    )
                    .await;
                panic!(
                    "timed out waiting for {what}; the page:\n{}\nproblems: {:#?}",
                    state.as_str().unwrap_or(""),
                    self.problems
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn screenshot(&mut self, name: &str) -> PathBuf {
        let size = self
            .eval("[Math.max(innerWidth, document.documentElement.scrollWidth), document.documentElement.scrollHeight]")
            .await;
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true,
                    "clip": { "x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1 } }),
            )
            .await;
        let png = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            shot["data"].as_str().unwrap(),
        )
        .unwrap();
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("dashboard-{name}.png"));
        std::fs::write(&out, &png).unwrap();
        assert!(png.len() > 20_000, "screenshot {}", out.display());
        out
    }

    async fn select(&mut self, id: &str, value: &str) {
        let v = serde_json::to_string(value).unwrap();
        self.eval(&format!(
            "(() => {{ const s = document.getElementById('{id}'); s.value = {v}; \
             s.dispatchEvent(new Event('change')); return s.value; }})()"
        ))
        .await;
    }

    async fn click(&mut self, selector: &str) {
        let s = serde_json::to_string(selector).unwrap();
        self.eval(&format!("document.querySelector({s}).click()"))
            .await;
    }
}

/// A chart as the page holds it.
#[derive(Debug)]
struct Drawn {
    from: i64,
    to: i64,
    step: i64,
    cut: i64,
    points: BTreeMap<String, u64>,
    live: BTreeMap<String, u64>,
    gaps: BTreeMap<String, u64>,
    /// key → (time ms, value, from history)
    series: BTreeMap<String, Vec<(f64, f64, bool)>>,
}

async fn drawn(page: &mut Page, id: &str) -> Drawn {
    let v = page
        .eval(&format!(
            "(() => {{ const c = document.getElementById('c-{id}'); \
             return {{ d: {{ ...c.dataset }}, s: window.dashboard.series('{id}') }}; }})()"
        ))
        .await;
    let d = &v["d"];
    let int = |k: &str| d[k].as_str().unwrap().parse::<i64>().unwrap();
    let map = |k: &str| -> BTreeMap<String, u64> {
        serde_json::from_str(d[k].as_str().unwrap()).unwrap()
    };
    let series = v["s"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, pts)| {
            let pts = pts
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p[0].as_f64().unwrap(),
                        p[1].as_f64().unwrap(),
                        p[2].as_bool().unwrap(),
                    )
                })
                .collect();
            (k.clone(), pts)
        })
        .collect();
    Drawn {
        from: int("from"),
        to: int("to"),
        step: int("step"),
        cut: int("cut"),
        points: map("points"),
        live: map("live"),
        gaps: map("gaps"),
        series,
    }
}

/// The API's answer for the page's query: key → points.
fn api_series(
    agent: &Agent,
    metric: &str,
    by: &str,
    d: &Drawn,
    target: &str,
) -> BTreeMap<String, Vec<(i64, f64)>> {
    let mut q = format!(
        "/api/v1/history?metric={metric}&from={}&to={}&step={}",
        d.from, d.to, d.step
    );
    if by == "target" && !target.is_empty() {
        q.push_str("&target=");
        q.extend(form_urlencoded::byte_serialize(target.as_bytes()));
    }
    let (status, v) = agent.send("GET", &q, None, "");
    assert_eq!(status, 200, "{q}: {v}");
    v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let key = if by.is_empty() {
                ""
            } else {
                s["labels"][by].as_str().unwrap()
            };
            let pts = s["points"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap()))
                .collect::<Vec<_>>();
            (key.to_string(), pts)
        })
        .filter(|(_, p)| !p.is_empty())
        .collect()
}

/// Every chart holds exactly the API's history for its query, then live points from the
/// cut on, with line breaks exactly where readings are missing. Returns the charts.
async fn check_history(
    page: &mut Page,
    agent: &Agent,
    range: i64,
    step: i64,
    target: &str,
) -> BTreeMap<&'static str, Drawn> {
    let tick_ms = page
        .eval("window.dashboard.tickMs()")
        .await
        .as_f64()
        .unwrap();
    let mut out = BTreeMap::new();
    for &(id, metric, by) in CHARTS {
        let d = drawn(page, id).await;
        assert_eq!((d.to - d.from, d.step), (range, step), "{id}: {d:?}");
        assert_eq!(d.to, d.cut - 1, "{id}");
        let api = api_series(agent, metric, by, &d, target);
        for (key, want) in &api {
            let pts = d
                .series
                .get(key)
                .unwrap_or_else(|| panic!("{id}: no series {key:?}: {d:?}"));
            let hist: Vec<(i64, f64)> = pts
                .iter()
                .filter(|p| p.2)
                .map(|p| ((p.0 / 1000.0) as i64, p.1))
                .collect();
            assert_eq!(&hist, want, "{id} {key}: the page's history is the API's");
            let live = pts.iter().filter(|p| !p.2).count() as u64;
            assert_eq!(d.points[key], want.len() as u64 + live, "{id} {key}");
            assert_eq!(d.live[key], live, "{id} {key}");
            // History first, then live from the cut on: times strictly increase.
            assert!(pts.iter().skip_while(|p| p.2).all(|p| !p.2), "{id} {key}");
            assert!(
                pts.windows(2).all(|w| w[0].0 < w[1].0),
                "{id} {key}: {pts:?}"
            );
            assert!(
                pts.iter()
                    .filter(|p| !p.2)
                    .all(|p| p.0 >= (d.cut * 1000) as f64),
                "{id} {key}"
            );
        }
        // Series the API does not hold are live only (no GPU here, so none of those).
        for (key, n) in &d.points {
            if !api.contains_key(key) {
                assert_eq!(d.live[key], *n, "{id} {key}: drawn without history: {d:?}");
                assert!(by != "gpu", "{id}: a live GPU series on a host without one");
            }
            if by == "target" && !target.is_empty() {
                assert_eq!(key, target, "{id}: the selector shows one target");
            }
        }
        // Breaks: between history buckets more than a step apart, between live points
        // more than 3 ticks apart, and at the seam only when history stopped earlier.
        for (key, pts) in &d.series {
            let s = (step * 1000) as f64;
            let want = pts
                .windows(2)
                .filter(|w| {
                    let dt = w[1].0 - w[0].0;
                    match (w[0].2, w[1].2) {
                        (true, true) => dt > 1.5 * s.max(tick_ms),
                        (false, false) => dt > 3.0 * tick_ms,
                        _ => dt > 3.0 * s.max(tick_ms),
                    }
                })
                .count() as u64;
            assert_eq!(d.gaps[key], want, "{id} {key}");
        }
        out.insert(id, d);
    }
    out
}

/// Drive the page and the agent; returns the screenshot to copy for the README.
async fn run(agent: &Agent, devtools: &str, svc: &mut Sleeper, filled: i64) {
    let mut page = Page::open(devtools).await;
    let url = format!("http://{}/", agent.addr);
    let loaded = Instant::now();
    page.call("Page.navigate", json!({ "url": url })).await;

    // 1. History on arrival, within 2 s, for the default hour.
    page.wait(LOADED, Duration::from_secs(2), "every chart's history")
        .await;
    assert!(
        loaded.elapsed() < Duration::from_secs(2),
        "{:?}",
        loaded.elapsed()
    );
    let first = check_history(&mut page, agent, 3600, 15, "").await;
    let cpu = &first["cpu"];
    // The seam: history up to its last bucket (the one holding the second before the
    // cut), live from the first snapshot of the cut's second on.
    let last_hist = cpu.series[""].iter().rfind(|p| p.2).unwrap().0 as i64 / 1000;
    assert_eq!(last_hist, cpu.to - cpu.to % 15, "{cpu:?}");
    let first_live = cpu.series[""].iter().find(|p| !p.2).unwrap().0 as i64;
    assert!(
        (cpu.cut * 1000..cpu.cut * 1000 + 1000).contains(&first_live),
        "{first_live} {}",
        cpu.cut
    );
    // 47 minutes every 5 s, less the holes, in 15 s buckets: about 180 history points.
    let hist_cpu = cpu.series[""].iter().filter(|p| p.2).count();
    assert!(
        (150..=200).contains(&hist_cpu),
        "{hist_cpu} history points on the CPU chart"
    );
    // The holes stay holes: no point inside, a break over each (and one where the
    // prefill ends and the agent's own readings begin).
    for p in cpu.series[""].iter().filter(|p| p.2) {
        let t = (p.0 / 1000.0) as i64;
        assert!(
            !(host_hole(t, filled) && host_hole(t + 14, filled)),
            "a bucket inside a hole: {t}"
        );
    }
    assert!(cpu.gaps[""] >= 3, "{:?}", cpu.gaps);
    // svc never served an HTTP request: it has no request figures at all (absent, not a
    // rate of 0), no latency, no error ratio.
    for id in ["rate", "latency", "latency_avg", "ttft", "errors"] {
        let keys: BTreeSet<&str> = first[id].series.keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["api", XSS]), "{id}");
    }
    for id in ["gpu_util", "gpu_mem", "gpu_power", "gpu_temp"] {
        let keys: BTreeSet<&str> = first[id].series.keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["0", "1"]), "{id}");
        // Drawn on the next frame; no GPU here, so no model to add to the index.
        let legend = page
            .wait(
                &format!("[...document.getElementById('l-{id}').children].map(e => e.textContent.split(' ').slice(0, 2).join(' '))"),
                Duration::from_secs(2),
                "the GPU legend",
            )
            .await;
        assert_eq!(legend, json!(["GPU 0", "GPU 1"]), "{id}");
    }
    // Axes: clock times, values with units.
    let axes = page
        .eval("['cpu','rate','latency','gpu_power'].map(id => { const d = document.getElementById('c-' + id).dataset; return [d.xlabels, d.ylabels]; })")
        .await;
    for (a, unit) in axes
        .as_array()
        .unwrap()
        .iter()
        .zip([" %", " req/s", " ms", " W"])
    {
        let x: Vec<&str> = a[0].as_str().unwrap().split('|').collect();
        assert!(x.len() >= 5, "{x:?}");
        for l in &x {
            let b = l.as_bytes();
            assert!(
                b.len() == 5 && b[2] == b':' && l.ends_with('0'),
                "time label {l:?}"
            );
        }
        let y: Vec<&str> = a[1].as_str().unwrap().split('|').collect();
        assert!(y.len() >= 2 && y.iter().all(|l| l.ends_with(unit)), "{y:?}");
    }
    page.screenshot("1h").await;

    // 2. One live tick adds exactly one point to each series that has a value.
    let tick = page
        .eval(
            "new Promise(done => {
               const read = () => ['cpu', 'rate'].map(id => { const d = document.getElementById('c-' + id).dataset;
                 return [Number(d.tick), JSON.parse(d.points)]; });
               const before = read(), c = document.getElementById('c-rate');
               const o = new MutationObserver(() => { if (c.dataset.tick !== String(before[1][0])) { o.disconnect(); done([before, read()]); } });
               o.observe(c, { attributes: true, attributeFilter: ['data-tick'] });
             })",
        )
        .await;
    for (b, a) in tick[0]
        .as_array()
        .unwrap()
        .iter()
        .zip(tick[1].as_array().unwrap())
    {
        assert_eq!(a[0].as_u64().unwrap(), b[0].as_u64().unwrap() + 1, "{tick}");
        let (b, a) = (b[1].as_object().unwrap(), a[1].as_object().unwrap());
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{tick}"
        );
        for (k, n) in a {
            assert_eq!(
                n.as_u64().unwrap(),
                b[k].as_u64().unwrap() + 1,
                "{k}: {tick}"
            );
        }
    }

    // 3. Hover read-out: the time and value of the reading under the pointer.
    let rect = page
        .eval("(() => { const r = document.getElementById('c-cpu').getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })()")
        .await;
    let r: Vec<f64> = rect
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    // 58 px of value axis on the left; 40 % into the hour is history.
    let x = r[0] + 58.0 + (r[2] - 66.0) * 0.4;
    page.call(
        "Input.dispatchMouseEvent",
        json!({ "type": "mouseMoved", "x": x, "y": r[1] + r[3] / 2.0 }),
    )
    .await;
    let hover = page
        .wait(
            "(() => { const r = document.getElementById('r-cpu'); return r.dataset.t ? [r.dataset.t, r.dataset.v, r.textContent] : null; })()",
            Duration::from_secs(2),
            "the hover read-out",
        )
        .await;
    let t: f64 = hover[0].as_str().unwrap().parse().unwrap();
    let v: f64 = hover[1].as_str().unwrap().parse().unwrap();
    let d = drawn(&mut page, "cpu").await;
    assert!(d.series[""].iter().any(|p| p.0 == t && p.1 == v), "{hover}");
    let clock =
        &humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(t as u64))
            .to_string()[11..19];
    let text = hover[2].as_str().unwrap();
    assert!(
        text.starts_with(clock) && text.contains("CPU ") && text.ends_with(" %"),
        "{text}"
    );
    page.call(
        "Input.dispatchMouseEvent",
        json!({ "type": "mouseMoved", "x": 1, "y": 1 }),
    )
    .await;

    // 4. The range selector refetches: 15 minutes in 5 s buckets.
    page.select("range", "900").await;
    page.wait(
        LOADED,
        Duration::from_secs(2),
        "every chart's 15-minute history",
    )
    .await;
    let quarter = check_history(&mut page, agent, 900, 5, "").await;
    let hist_cpu = quarter["cpu"].series[""].iter().filter(|p| p.2).count();
    // 14 minutes of prefill every 5 s less the 1-minute hole: about 156 points.
    assert!((140..=175).contains(&hist_cpu), "{hist_cpu}");
    page.screenshot("15m").await;

    // 5. The target selector: one target on the request charts, by its name as text.
    let options = page
        .eval("[...document.getElementById('target').options].map(o => o.textContent)")
        .await;
    assert_eq!(options, json!(["all targets", XSS, "api", "svc"]));
    page.select("target", "api").await;
    page.wait(LOADED, Duration::from_secs(2), "the api target's history")
        .await;
    check_history(&mut page, agent, 900, 5, "api").await;
    page.screenshot("target-api").await;
    page.select("target", XSS).await;
    page.wait(
        LOADED,
        Duration::from_secs(2),
        "the oddly named target's history",
    )
    .await;
    check_history(&mut page, agent, 900, 5, XSS).await;
    let legend = page
        .wait(
            "(() => { const l = document.getElementById('l-rate'); return l.children.length === 1 && l.textContent; })()",
            Duration::from_secs(2),
            "the legend of one target",
        )
        .await;
    assert!(
        legend.as_str().unwrap().starts_with(&format!("{XSS} ")),
        "{legend}"
    );
    page.select("target", "").await;
    page.select("range", "3600").await;

    // 6. An alert fires and appears, coloured by severity, with summary, since and value.
    svc.stop();
    let row = page
        .wait(
            "(() => { const r = document.querySelector('#alerts tbody tr.sev-critical'); return r && !r.cells[6].firstChild.hidden ? [...r.cells].map(c => c.textContent) : null; })()",
            Duration::from_secs(10),
            "the SvcDown alert with its button",
        )
        .await;
    let cells: Vec<&str> = row
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(cells[0], "critical");
    assert_eq!(cells[1], "SvcDown (target=svc)");
    assert_eq!(cells[2], "svc is down");
    assert!(
        cells[3].len() > 8 && cells[3][8..].starts_with(" (for "),
        "{cells:?}"
    );
    assert_eq!(cells[4], "0");
    assert_eq!(cells[5], "firing");
    assert_eq!(cells[6], "Acknowledge");
    let colour = page
        .eval("getComputedStyle(document.querySelector('#alerts tbody tr.sev-critical .sev')).backgroundColor")
        .await;
    assert_eq!(colour, "rgb(240, 113, 113)");
    page.screenshot("alert").await;
    let (_, rows) = agent.send("GET", "/api/v1/alerts/history", None, "");
    let id = rows[0]["id"].as_i64().unwrap();
    assert_eq!(rows[0]["name"], "SvcDown");
    let acked = |agent: &Agent| {
        let (_, rows) = agent.send("GET", "/api/v1/alerts/history", None, "");
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()["acknowledged"]
            .clone()
    };

    // 7. Acknowledge without a token: asked for one, refused by the agent.
    page.click("#alerts tbody tr.sev-critical button").await;
    assert_eq!(
        page.eval("document.getElementById('token-form').hidden")
            .await,
        json!(false)
    );
    page.click("#token-ok").await;
    let msg = page
        .wait(
            "document.getElementById('ack-msg').textContent",
            Duration::from_secs(5),
            "the refusal",
        )
        .await;
    assert_eq!(msg, "refused (401): missing Authorization: Bearer <token>");
    assert!(acked(agent).is_null());
    assert_eq!(
        page.eval("sessionStorage.getItem('infersight.token')")
            .await,
        Value::Null
    );

    // 8. With the token: acknowledged, in the alert history; the token stays in this tab.
    page.click("#alerts tbody tr.sev-critical button").await;
    assert_eq!(
        page.eval("document.getElementById('token-form').hidden")
            .await,
        json!(false)
    );
    page.eval("document.getElementById('token').focus()").await;
    page.call("Input.insertText", json!({ "text": TOKEN }))
        .await;
    page.click("#token-ok").await;
    let msg = page
        .wait(
            "(() => { const m = document.getElementById('ack-msg'); return m.className === 'ok' ? m.textContent : null; })()",
            Duration::from_secs(5),
            "the acknowledgement",
        )
        .await;
    assert_eq!(msg, "acknowledged SvcDown");
    let when = acked(agent).as_f64().expect("acknowledged in the API");
    let shown = page
        .wait(
            &format!("(() => {{ const r = document.querySelector('#alert-history tr[data-id=\"{id}\"]'); return r && r.cells[6].textContent !== '–' ? [...r.cells].map(c => c.textContent) : null; }})()"),
            Duration::from_secs(5),
            "the acknowledgement in the alert history",
        )
        .await;
    let stamp =
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs_f64(when))
            .to_string();
    let stamp = format!("{} {}", &stamp[..10], &stamp[11..19]);
    assert_eq!(shown[1], "SvcDown");
    assert_eq!(shown[2], "target=svc");
    assert_eq!(shown[3], "critical");
    assert_eq!(shown[4], "firing");
    assert_eq!(shown[6], stamp.as_str());
    let note = page
        .wait(
            "(() => { const r = document.querySelector('#alerts tbody tr.sev-critical'); return r && r.cells[6].firstChild.hidden ? r.cells[6].lastChild.textContent : null; })()",
            Duration::from_secs(3),
            "the active alert marked acknowledged",
        )
        .await;
    assert_eq!(note, format!("acknowledged {}", &stamp[11..]).as_str());
    assert_eq!(
        page.eval("sessionStorage.getItem('infersight.token')")
            .await,
        TOKEN
    );
    assert_eq!(
        page.eval("localStorage.length + document.cookie.length")
            .await,
        0
    );
    let out = page.screenshot("acknowledged").await;
    println!("screenshot for the README: {}", out.display());

    // 9. Names are text: no element was made from the target's name, no dialog opened.
    assert_eq!(
        page.eval("document.querySelectorAll('img').length").await,
        0
    );
    let targets = page
        .eval("[...document.querySelectorAll('#targets tr')].map(r => [...r.cells].map(c => c.textContent))")
        .await;
    assert!(
        targets
            .as_array()
            .unwrap()
            .contains(&json!([XSS, "pid", "up"])),
        "{targets}"
    );
    assert!(
        targets
            .as_array()
            .unwrap()
            .contains(&json!(["svc", "pidfile", "down"])),
        "{targets}"
    );

    // 10. Health at a glance: every collector and program with state and reason; the
    // agent's own CPU, RSS and eBPF time.
    let (_, h) = agent.health();
    let collectors = page
        .eval("[...document.querySelectorAll('#collectors tr')].map(r => [...r.cells].map(c => c.textContent))")
        .await;
    let want: Vec<Value> = h["collectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| json!([c["name"], c["state"], c["reason"].as_str().unwrap_or("")]))
        .collect();
    assert_eq!(collectors, json!(want));
    assert!(collectors
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c[0] == "gpu" && c[1] == "unsupported"));
    let programs = page
        .eval("[...document.querySelectorAll('#programs tr')].map(r => [r.cells[0].textContent, r.cells[1].textContent])")
        .await;
    let want: Vec<Value> = h["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| json!([p["name"], p["state"]]))
        .collect();
    assert!(!want.is_empty());
    assert_eq!(programs, json!(want));
    let own = page
        .eval("({ ...document.getElementById('self').dataset })")
        .await;
    let rss: f64 = own["rss"].as_str().unwrap().parse().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.child.id())).unwrap();
    let vmrss: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap()
        * 1024.0;
    assert!(
        (rss - vmrss).abs() < 0.2 * vmrss,
        "page {rss}, /proc {vmrss}"
    );
    let cpu: f64 = own["cpu"].as_str().unwrap().parse().unwrap();
    let ebpf: f64 = own["ebpf"].as_str().unwrap().parse().unwrap();
    assert!(cpu > 0.0 && cpu < 200.0, "{own}");
    // The traced servers' syscalls and the agent's ticks run the programs all along.
    assert!(ebpf > 0.0 && ebpf < 1000.0, "{own}");

    // 11. Still one small page, and nothing went wrong in it.
    let (_, html) = agent.get("/");
    assert!(html.len() < 150 * 1024, "{} bytes", html.len());
    // Data reaches the page as text only.
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!html.contains(sink), "{sink} in the page");
    }
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external resources"
    );
    assert_eq!(
        page.eval("document.getElementById('status').textContent")
            .await,
        "live"
    );
    // Fits a 1440 px window: no sideways scrolling.
    let widths = page
        .eval("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        .await;
    assert_eq!(widths[0], widths[1], "{widths}");
    page.eval("new Promise(r => setTimeout(r, 300))").await;
    assert!(page.problems.is_empty(), "{:#?}", page.problems);
}

#[test]
fn dashboard_history_live_targets_alerts_in_a_real_browser() {
    if !common::bpf_or_skip("dashboard_history_live_targets_alerts_in_a_real_browser") {
        return;
    }
    let api = PyServer::start();
    let xss = PyServer::start();
    let mut svc = Sleeper(Command::new("sleep").arg("600").spawn().unwrap());
    let dir = AlertDir::new("dashboard", RULES, "", &svc.0.id().to_string());
    let filled = now();
    prefill(&dir.dir.join("state"), filled);
    let mut cmd = Command::new(common::AGENT);
    cmd.env("INFERSIGHT_API_TOKEN", TOKEN);
    let mut args = dir.args();
    args.extend([
        "--pid".into(),
        format!("{}=api", api.pid()),
        "--pid".into(),
        format!("{}={XSS}", xss.pid()),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start_with(cmd, &args);
    // Traffic on both servers all along: request figures every tick.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = [api.port, xss.port]
        .into_iter()
        .map(|port| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(port);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    assert_eq!(c.get("/sleep/20").status, 200);
                    std::thread::sleep(Duration::from_millis(30));
                }
            })
        })
        .collect();
    agent.wait_for(Duration::from_secs(10), "requests of both targets", |m| {
        common::request_count(m, &[("target", "api")]) > 0.0
            && common::request_count(m, &[("target", XSS)]) > 0.0
    });
    // The host's CPU share needs two readings, a second apart; then a second of it in
    // the agent's own history.
    let start = Instant::now();
    while agent.send("GET", "/api/v1/snapshot", None, "").1["host"]["cpu_usage_ratio"].is_null() {
        assert!(start.elapsed() < Duration::from_secs(10), "no CPU reading");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let browser = Browser::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(&agent, &browser.devtools, &mut svc, filled));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        l.join().unwrap();
    }
}
