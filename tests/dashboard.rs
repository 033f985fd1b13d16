//! The dashboard in a real browser: headless Chromium (Debian `chromium`, installed by the
//! test command) loads `/` from the running agent over the DevTools protocol; after a few
//! ticks the charts hold points and the tables list the collectors; a screenshot is saved
//! as an artifact (target/tmp/dashboard.png).
mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use common::Agent;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Send one DevTools command and wait for its answer.
async fn cdp(ws: &mut Ws, id: u64, session: Option<&str>, method: &str, params: Value) -> Value {
    let mut msg = json!({ "id": id, "method": method, "params": params });
    if let Some(s) = session {
        msg["sessionId"] = json!(s);
    }
    ws.send(Message::text(msg.to_string())).await.unwrap();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("DevTools answer")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }
}

#[test]
fn dashboard_charts_fill_in_a_real_browser() {
    let state = std::env::temp_dir().join(format!("infersight-dash-{}", std::process::id()));
    let agent = Agent::start(&["--state-dir", state.to_str().unwrap()]);
    let profile = std::env::temp_dir().join(format!("infersight-chromium-{}", std::process::id()));
    let mut browser = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--remote-debugging-port=0",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium (the test command installs it)");
    let stderr = BufReader::new(browser.stderr.take().unwrap());
    let devtools = stderr
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.split("DevTools listening on ").nth(1).map(str::to_string))
        .expect("DevTools URL");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (points, collectors, status, png) = rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(devtools.trim())
            .await
            .unwrap();
        let url = format!("http://{}/", agent.addr);
        let target = cdp(
            &mut ws,
            1,
            None,
            "Target.createTarget",
            json!({ "url": url }),
        )
        .await;
        let attached = cdp(
            &mut ws,
            2,
            None,
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        )
        .await;
        let session = attached["sessionId"].as_str().unwrap().to_string();
        // Ten 100 ms ticks or more.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let eval = |expr: &str| json!({ "expression": expr, "returnByValue": true });
        let mut ws = ws;
        let points = cdp(
            &mut ws,
            3,
            Some(&session),
            "Runtime.evaluate",
            eval("document.getElementById('c-cpu').dataset.points"),
        )
        .await;
        let collectors = cdp(
            &mut ws,
            4,
            Some(&session),
            "Runtime.evaluate",
            eval("document.getElementById('collectors').innerText"),
        )
        .await;
        let status = cdp(
            &mut ws,
            5,
            Some(&session),
            "Runtime.evaluate",
            eval("document.getElementById('status').textContent"),
        )
        .await;
        let shot = cdp(
            &mut ws,
            6,
            Some(&session),
            "Page.captureScreenshot",
            json!({ "format": "png" }),
        )
        .await;
        (
            points["result"]["value"].as_str().unwrap_or("").to_string(),
            collectors["result"]["value"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            status["result"]["value"].as_str().unwrap_or("").to_string(),
            shot["data"].as_str().unwrap_or("").to_string(),
        )
    });
    let _ = browser.kill();
    let _ = browser.wait();
    let _ = std::fs::remove_dir_all(&profile);
    let _ = std::fs::remove_dir_all(&state);

    assert_eq!(status, "live");
    let points: usize = points.parse().unwrap();
    assert!(points >= 10, "{points} points on the CPU chart");
    for c in ["syscalls", "host", "gpu", "history"] {
        assert!(collectors.contains(c), "{collectors}");
    }
    // No GPU here: the page says so.
    assert!(collectors.contains("unsupported"), "{collectors}");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let png = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, png).unwrap();
    std::fs::write(&out, png).unwrap();
    assert!(
        std::fs::metadata(&out).unwrap().len() > 10_000,
        "screenshot {}",
        out.display()
    );
}
