//! End-to-end test of the built app in real headless Chromium, driven through ChromeDriver
//! (W3C WebDriver over plain HTTP; the client and the static file server are below, std only).
//!
//! Pick the `benign_93` sample, drag the box of its lesion, wait for the mask (the embedding
//! computed in the browser, CPU backend), export it, and compare it with the native pipeline's
//! mask (the CLI's) for the same image and box: Dice ≥ 0.99. Then cut the server and reload
//! on WebGPU: the app must start from its service worker and caches (weights, embedding) and
//! segment again. A screenshot is saved to `target/e2e/`.
//!
//! Needs the built app (`scripts/build-web.sh target/e2e-dist`) and chromedriver; runs when
//! `SONOSAM_E2E_DIST` names the built folder (scripts/test.sh does this), else it says why it
//! did not run.
#![cfg(not(target_arch = "wasm32"))]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sonosam_model::backend::{BackendKind, init_device};
use sonosam_model::manifest::{Component, WeightsManifest};
use sonosam_model::segmentation::read_f32;
use sonosam_model::{Mask, Prompt, Sam, Segmentation, StoreDType, decode_image, preprocess};

// --- a static file server that can be cut -------------------------------------------------

struct Server {
    port: u16,
    offline: Arc<AtomicBool>,
}

fn content_type(p: &Path) -> &'static str {
    match p.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript",
        "wasm" => "application/wasm",
        "css" => "text/css",
        "json" => "application/json",
        "png" => "image/png",
        _ => "application/octet-stream",
    }
}

fn serve(dist: PathBuf) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let offline = Arc::new(AtomicBool::new(false));
    let off = offline.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (dist, off) = (dist.clone(), off.clone());
            std::thread::spawn(move || {
                let _ = handle(stream, &dist, &off);
            });
        }
    });
    Server { port, offline }
}

fn handle(mut stream: TcpStream, dist: &Path, offline: &AtomicBool) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
    }
    if offline.load(Ordering::SeqCst) {
        return Ok(()); // the network is "cut": close without an answer
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let path = path.split('?').next().unwrap_or("/");
    let rel = if path == "/" { "index.html".to_string() } else { path.trim_start_matches('/').to_string() };
    let file = dist.join(&rel);
    let (status, body, ctype) = if rel.contains("..") || !file.is_file() {
        ("404 Not Found", b"not found".to_vec(), "text/plain")
    } else {
        ("200 OK", std::fs::read(&file)?, content_type(&file))
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)
}

// --- a minimal W3C WebDriver client --------------------------------------------------------

struct Driver {
    port: u16,
    session: String,
    child: Child,
}

fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("chromedriver");
    let head = match body {
        Some(b) => format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.to_string().len()),
        None => String::new(),
    };
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}Connection: close\r\n\r\n{body}").unwrap();
    // ChromeDriver keeps the connection open: read the headers, then Content-Length bytes.
    let mut reader = BufReader::new(s);
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

impl Driver {
    fn start() -> Driver {
        let chromedriver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {chromedriver}: {e}"));
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(30), "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"args": [
            "--headless=new", "--enable-unsafe-webgpu", "--no-sandbox", "--disable-dev-shm-usage",
            "--window-size=1400,1000", "--disable-background-networking", "--no-first-run",
            "--disable-component-update", "--disable-sync"
        ]}}}});
        let r = http(port, "POST", "/session", Some(&caps));
        let session = r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {r}")).to_string();
        Driver { port, session, child }
    }

    fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let body = (!body.is_null()).then_some(&body);
        let r = http(self.port, method, &format!("/session/{}{path}", self.session), body);
        if let Some(err) = r["value"]["error"].as_str() {
            panic!("webdriver {path}: {err}: {}", r["value"]["message"]);
        }
        r["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url }));
    }

    fn js(&self, script: &str, args: Value) -> Value {
        self.cmd("POST", "/execute/sync", json!({ "script": script, "args": args }))
    }

    fn js_async(&self, script: &str) -> Value {
        self.cmd("POST", "/execute/async", json!({ "script": script, "args": [] }))
    }

    /// Poll `script` (returning a value) until it is truthy.
    fn wait_for(&self, what: &str, script: &str, timeout: Duration) -> Value {
        let t0 = Instant::now();
        loop {
            let v = self.js(script, json!([]));
            if !(v.is_null() || v == json!(false) || v == json!("")) {
                eprintln!("e2e: {what} after {:.1} s", t0.elapsed().as_secs_f64());
                return v;
            }
            let err = self.js("const e = document.querySelector('#error, #fatal'); return e ? e.textContent : null", json!([]));
            assert!(err.is_null(), "the app reports an error while waiting for {what}: {err}");
            if t0.elapsed() >= timeout {
                let page = self.js(
                    "return location.href + ' | ' + document.body.innerText.slice(0, 600)",
                    json!([]),
                );
                panic!("timed out waiting for {what}; the page shows: {page}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// A Chrome DevTools Protocol command on the page (ChromeDriver's `goog/cdp/execute`).
    fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.cmd("POST", "/goog/cdp/execute", json!({ "cmd": cmd, "params": params }))
    }

    fn screenshot(&self, path: &Path) {
        let b64 = self.cmd("GET", "/screenshot", json!(null));
        if let Some(s) = b64.as_str() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, base64_decode(s)).unwrap();
            eprintln!("e2e: screenshot {}", path.display());
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = http(self.port, "DELETE", &format!("/session/{}", self.session), None);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !matches!(c, b'=' | b'\n' | b'\r')).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &c)| acc | (u32::from(val(c)) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

// --- the test ------------------------------------------------------------------------------

const SAMPLE: &str = "benign_93";

/// Drag from `a` to `b` (image pixels) on the canvas with real pointer input.
fn drag_box(d: &Driver, a: (f64, f64), b: (f64, f64)) {
    drag(d, a, b, 2, 50);
}

/// Drag from `a` to `b` (image pixels) on the canvas in `steps` moves of `step_ms` each.
fn drag(d: &Driver, a: (f64, f64), b: (f64, f64), steps: usize, step_ms: u64) {
    pointer_drag(d, a, b, steps, step_ms, "mouse");
}

/// The same drag with a mouse, a pen or a finger (`pointer`: WebDriver's pointer type).
fn pointer_drag(d: &Driver, a: (f64, f64), b: (f64, f64), steps: usize, step_ms: u64, pointer: &str) {
    button_drag(d, a, b, steps, step_ms, pointer, 0);
}

/// The drag with `button` held (0 main, 2 right).
fn button_drag(d: &Driver, a: (f64, f64), b: (f64, f64), steps: usize, step_ms: u64, pointer: &str, button: u8) {
    let rect = d.js(
        "const c = document.getElementById('image-canvas'); c.scrollIntoView(); const r = c.getBoundingClientRect(); \
         return [r.left, r.top, r.width, r.height, c.width, c.height];",
        json!([]),
    );
    let r: Vec<f64> = rect.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let to_screen = |p: (f64, f64)| {
        (
            (r[0] + p.0 * r[2] / r[4]).round() as i64,
            (r[1] + p.1 * r[3] / r[5]).round() as i64,
        )
    };
    let start = to_screen(a);
    let mut actions = vec![
        json!({ "type": "pointerMove", "x": start.0, "y": start.1, "origin": "viewport", "duration": 0 }),
        json!({ "type": "pointerDown", "button": button }),
    ];
    for i in 1..=steps {
        let t = i as f64 / steps as f64;
        let p = to_screen((a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t));
        actions.push(json!({ "type": "pointerMove", "x": p.0, "y": p.1, "origin": "viewport", "duration": step_ms }));
    }
    actions.push(json!({ "type": "pointerUp", "button": button }));
    d.cmd("POST", "/actions", json!({ "actions": [{
        "type": "pointer", "id": pointer, "parameters": { "pointerType": pointer }, "actions": actions
    }]}));
}

/// From the next page load on, keep the page's Web Workers in `window.__sonosamWorkers`, so
/// that the test can end the model's worker the way the browser does when it runs out of
/// memory: `terminate()` sends no error event and no message.
fn record_workers(d: &Driver) {
    d.cdp("Page.addScriptToEvaluateOnNewDocument", json!({ "source":
        "(() => { const W = window.Worker; window.__sonosamWorkers = []; \
           window.Worker = function (...args) { const w = new W(...args); window.__sonosamWorkers.push(w); return w; }; \
           window.Worker.prototype = W.prototype; })();" }));
}

/// End the model's worker while the page is idle: the model panel must turn to failed within
/// a second (timed in the page, from the kill to the panel's change).
fn worker_killed_while_idle(d: &Driver) {
    let killed = d.js(
        "window.__failedAfter = null; const t0 = performance.now(); \
         const seen = () => { const e = document.getElementById('engine-status'); \
           if (e && e.dataset.state === 'failed' && window.__failedAfter === null) window.__failedAfter = performance.now() - t0; }; \
         new MutationObserver(seen).observe(document.body, { subtree: true, childList: true, attributes: true }); \
         const ws = window.__sonosamWorkers || []; ws.forEach(w => w.terminate()); return ws.length;",
        json!([]),
    );
    assert!(killed.as_u64().unwrap_or(0) >= 1, "no model worker to end: {killed}");
    let t0 = Instant::now();
    let after = loop {
        let v = d.js("return window.__failedAfter", json!([]));
        if let Some(ms) = v.as_f64() {
            break ms;
        }
        let panel = d.js("return document.getElementById('engine-status').outerHTML", json!([]));
        assert!(t0.elapsed() < Duration::from_secs(10), "the model panel did not turn to failed after its worker was ended: {panel}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = d.js("return document.getElementById('engine-status').textContent", json!([]));
    eprintln!("e2e: model worker ended while idle: the panel says it {after:.0} ms later: {}", text.as_str().unwrap_or(""));
    assert!(after <= 1000.0, "the model panel turned to failed {after:.0} ms after the worker was ended (limit 1 s)");
}

/// Open a 2,000 × 2,000 image (the sample scaled up, dropped on the page) and drag a box
/// across it in 40 moves: the app's own measure of each redraw during the drag
/// (`sonosam:draw` on the performance timeline), in ms.
fn drag_redraws_on_a_large_image(d: &Driver) -> Vec<f64> {
    d.js_async(&format!(
        "const done = arguments[arguments.length - 1]; const img = new Image(); \
         img.onload = () => {{ const c = document.createElement('canvas'); c.width = c.height = 2000; \
           c.getContext('2d').drawImage(img, 0, 0, 2000, 2000); \
           c.toBlob(b => {{ const dt = new DataTransfer(); dt.items.add(new File([b], 'large.png', {{ type: 'image/png' }})); \
             document.querySelector('.app').dispatchEvent(new DragEvent('drop', {{ dataTransfer: dt, bubbles: true, cancelable: true }})); \
             done(true); }}, 'image/png'); }}; \
         img.onerror = () => done(false); img.src = 'samples/{SAMPLE}.png';"
    ));
    d.wait_for(
        "the 2,000 × 2,000 image",
        "const c = document.getElementById('image-canvas'); return c && c.width === 2000 && c.height === 2000;",
        Duration::from_secs(60),
    );
    d.js("performance.clearMeasures('sonosam:draw'); return true;", json!([]));
    drag(d, (200.0, 200.0), (900.0, 700.0), 40, 16);
    let v = d.js("return performance.getEntriesByName('sonosam:draw', 'measure').map(m => m.duration)", json!([]));
    v.as_array().unwrap().iter().filter_map(Value::as_f64).collect()
}

/// Drop the file at `path` on the page, as a user dragging it from their desktop.
fn drop_file(d: &Driver, path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    d.js(
        "const [name, bytes] = arguments; const dt = new DataTransfer(); \
         dt.items.add(new File([new Uint8Array(bytes)], name, { type: 'application/dicom' })); \
         document.querySelector('.app').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true })); \
         return true;",
        json!([name, bytes]),
    );
}

/// Read the latest download of export kind `kind` (`coco`, `mask`, …) back as bytes.
fn download(d: &Driver, kind: &str) -> Vec<u8> {
    d.wait_for(&format!("the {kind} export"), &format!("const a = document.getElementById('export-{kind}'); return a && a.href;"), Duration::from_secs(20));
    let bytes = d.js_async(&format!(
        "const done = arguments[arguments.length - 1]; \
         fetch(document.getElementById('export-{kind}').href).then(r => r.arrayBuffer()) \
           .then(b => done(Array.from(new Uint8Array(b)))).catch(e => done(String(e)));"
    ));
    bytes.as_array().unwrap_or_else(|| panic!("cannot read the export: {bytes}")).iter().map(|v| v.as_u64().unwrap() as u8).collect()
}

/// A DICOM file as a new user would use it (the test data of scripts/dicom-test-data.sh):
/// drop pydicom's 30-frame ultrasound cine, pick frame 10, drag a box — the lesion is measured
/// in pixels and the panel says why (its regions do not fit the image); then the consistent
/// variant: diameters in mm, "calibration: ultrasound region 1", and the COCO export carries
/// the same values and their source.
fn dicom_as_a_user(d: &Driver, root: &Path) {
    let data = root.join("target/test-data/dicom");
    assert!(data.join("reference.json").is_file(), "no DICOM test data: run scripts/dicom-test-data.sh");
    let embedded = |what: &str| {
        d.wait_for(what, "return /embedding (computed|from the browser cache)/.test(document.getElementById('status').textContent) && !document.getElementById('status').textContent.includes('(')", Duration::from_secs(300))
    };
    // Drag a box and read the lesion back: its measurements, its calibration and the source.
    let drag_lesion = |what: &str, a: (f64, f64), b: (f64, f64)| {
        drag_box(d, a, b);
        d.wait_for(what, "return !!document.querySelector('.object[data-area]')", Duration::from_secs(120));
        let lesion = d.js(
            "const o = document.querySelector('.object'); \
             return [o.querySelector('.measure').textContent, o.querySelector('.calibration').textContent, o.querySelector('.calibration').dataset.source];",
            json!([]),
        );
        eprintln!("e2e: {what}: {lesion}");
        lesion
    };
    drop_file(d, &data.join("examples_ybr_color.dcm"));
    d.wait_for("the DICOM panel", "const p = document.getElementById('dicom'); return p && p.dataset.frames === '30';", Duration::from_secs(60));
    d.js("const f = document.getElementById('frame'); f.value = '10'; f.dispatchEvent(new Event('input', { bubbles: true })); return true;", json!([]));
    d.wait_for("frame 10", "return document.getElementById('dicom').dataset.frame === '10';", Duration::from_secs(30));
    embedded("the embedding of frame 10");
    let lesion = drag_lesion("the cine's lesion (frame 10)", (100.0, 60.0), (220.0, 180.0));
    assert_eq!(lesion[2], "none", "{lesion}");
    assert!(lesion[1].as_str().unwrap().contains("do not fit this image") && !lesion[0].as_str().unwrap().contains("mm"), "{lesion}");

    drop_file(d, &data.join("us_calibrated.dcm"));
    d.wait_for("the calibrated file", "const p = document.getElementById('dicom'); return p && p.dataset.frames === '1' && !document.querySelector('.object');", Duration::from_secs(60));
    embedded("the embedding of the calibrated file");
    let lesion = drag_lesion("the calibrated lesion", (60.0, 40.0), (200.0, 180.0));
    assert_eq!(lesion[2], "us-region", "{lesion}");
    assert!(lesion[0].as_str().unwrap().contains(" mm") && lesion[1].as_str().unwrap().contains("ultrasound region 1"), "{lesion}");
    d.js("document.getElementById('export-coco-button').click(); return true;", json!([]));
    let coco: Value = serde_json::from_slice(&download(d, "coco")).expect("COCO JSON");
    let a = &coco["annotations"][0];
    assert_eq!(a["calibration"]["source"], "us-region", "{a}");
    assert_eq!(a["calibration"]["region"], 1);
    assert!((a["measurements"]["mm_per_px"].as_f64().unwrap() - 0.2).abs() < 1e-9, "{a}");
    dicom_export_as_a_user(d, root);
}

/// The calibrated lesion's report exported as DICOM SEG and SR from the report view, read back
/// by highdicom (the DICOM test venv): the source's study and instance, the lesion's outline on
/// it, its long axis in mm as the report says.
fn dicom_export_as_a_user(d: &Driver, root: &Path) {
    d.js("document.getElementById('report-button').click(); return true;", json!([]));
    d.wait_for("the DICOM file's report", "return !!document.getElementById('report-frame')", Duration::from_secs(30));
    let read = export_dicom_from_report(d, root, "dicom");
    d.js("document.getElementById('report-json').click(); return true;", json!([]));
    let report: Value = serde_json::from_slice(&download(d, "report-json")).unwrap();
    d.js("document.getElementById('report-close').click(); return true;", json!([]));
    let (seg, sr) = (&read["seg"], &read["sr"]);
    assert_eq!(seg["source_instances"].as_array().map(Vec::len), Some(1), "{seg}");
    assert_eq!(sr["study"], seg["study"]);
    let group = &sr["groups"][0];
    assert_eq!(group["kind"], "planar_roi", "{group}");
    let long = group["measurements"].as_array().unwrap().iter().find(|m| m["code"] == "103339001").expect("a long axis")["value"].as_f64().unwrap();
    let m = &report["lesions"][0]["measurements"];
    let expect = m["long_axis"]["length_px"].as_f64().unwrap() * m["mm_per_px"].as_f64().unwrap();
    assert!((long - expect).abs() < 1e-4 * expect, "SR long axis {long} mm, report {expect} mm");
    assert!(seg["segments"][0]["area"].as_u64().unwrap() > 0);
    eprintln!("e2e: the app's SEG and SR read by highdicom: long axis {long:.2} mm, {} px of mask", seg["segments"][0]["area"]);
}

/// The lesion's shape descriptors and the report, as a user opens them: the calls in the lesion
/// list, the report (image, lesion table, descriptors) in its frame, its JSON download with the
/// same calls; closing it.
fn report_as_a_user(d: &Driver, root: &Path) {
    let calls = d.wait_for("the descriptors", "const c = document.querySelector('.object .descriptors .calls'); return c && c.textContent;", Duration::from_secs(30));
    let calls: Vec<&str> = calls.as_str().unwrap().split(" · ").collect();
    assert_eq!(calls.len(), 3, "{calls:?}");
    // The fitted ellipse and convex hull, drawn on demand over the image.
    let annotations = "return document.getElementById('image-canvas').toDataURL()";
    let before = d.js(annotations, json!([]));
    d.js("document.getElementById('show-shape').click(); return true;", json!([]));
    d.wait_for("the ellipse and hull drawn", &format!("return (function() {{ {annotations} }})() !== {before}"), Duration::from_secs(10));
    d.screenshot(&root.join("target/e2e/shape.png"));
    d.js("document.getElementById('show-shape').click(); return true;", json!([]));
    accessible(d, root, "an image with a lesion");
    d.js("document.getElementById('report-button').click(); return true;", json!([]));
    let html = d.wait_for("the report", "const f = document.getElementById('report-frame'); return f && f.srcdoc;", Duration::from_secs(30));
    let html = html.as_str().unwrap();
    for needle in ["id=\"lesion-table\"", "<td>lesion 1</td>", &format!("{SAMPLE}.png"), "decoder base", "data:image/png;base64,", "not a diagnosis"] {
        assert!(html.contains(needle), "the report lacks {needle}");
    }
    d.screenshot(&root.join("target/e2e/report.png"));
    accessible(d, root, "the report open");
    d.js("document.getElementById('report-json').click(); return true;", json!([]));
    let report: Value = serde_json::from_slice(&download(d, "report-json")).expect("the report as JSON");
    let lesion = &report["lesions"][0];
    assert_eq!(lesion["descriptors"]["calls"]["shape"].as_str().map(|s| s.replace('_', " ")).as_deref(), Some(calls[0]), "{lesion}");
    assert!(lesion["measurements"]["area_px"].as_u64().unwrap() > 0 && lesion["descriptors"]["convexity"].is_number(), "{lesion}");
    // The bundled sample's lesion as DICOM SEG and SR, read back by highdicom: its mask's area
    // and its calls, in a study made up for the PNG.
    let read = export_dicom_from_report(d, root, "sample");
    assert_eq!(read["seg"]["segments"][0]["area"], lesion["measurements"]["area_px"], "{read}");
    assert!(read["seg"]["study"].as_str().unwrap().starts_with("2.25.") && read["sr"]["study"] == read["seg"]["study"]);
    let evaluations: Vec<String> = read["sr"]["groups"][0]["evaluations"].as_array().unwrap().iter().map(|e| e["value"].as_str().unwrap().to_string()).collect();
    let calls = &lesion["descriptors"]["calls"];
    let expected: Vec<String> = ["shape", "orientation", "margin"].iter().map(|k| calls[*k].as_str().unwrap().replace('_', "").to_uppercase()).collect();
    assert_eq!(evaluations, expected);
    d.js("document.getElementById('report-close').click(); return true;", json!([]));
    d.wait_for("the report to close", "return !document.getElementById('report-frame')", Duration::from_secs(10));
}

/// Download the open report's DICOM SEG and SR (named `app_{tag}_seg.dcm`, …) and read them
/// with highdicom (scripts/read_dicom_export.py in the DICOM test venv).
fn export_dicom_from_report(d: &Driver, root: &Path, tag: &str) -> Value {
    let mut files = Vec::new();
    for kind in ["seg", "sr"] {
        d.js(&format!("document.getElementById('report-{kind}').click(); return true;"), json!([]));
        let path = root.join(format!("target/e2e/app_{tag}_{kind}.dcm"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, download(d, &format!("report-{kind}"))).unwrap();
        files.push(path);
    }
    let out = Command::new(root.join("target/dicom-venv/bin/python"))
        .arg(root.join("scripts/read_dicom_export.py"))
        .args(&files)
        .output()
        .expect("the DICOM test venv (scripts/dicom-test-data.sh)");
    assert!(out.status.success(), "highdicom cannot read the app's SEG/SR: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Manual calibration of a PNG as a user does it: two clicks on the depth ruler (here 200 px
/// apart), their distance typed (20 mm): the pixel spacing becomes 0.1 mm/px and the lesion is
/// measured in mm with "manual" as its source; cleared again afterwards.
fn ruler_calibration_as_a_user(d: &Driver) {
    d.js("document.getElementById('ruler-start').click(); return true;", json!([]));
    d.wait_for("the ruler hint", "return !!document.getElementById('ruler-hint')", Duration::from_secs(10));
    drag(d, (20.0, 50.0), (20.0, 50.0), 1, 10);
    d.wait_for("the first mark", "const h = document.getElementById('ruler-hint'); return h && h.textContent.includes('second')", Duration::from_secs(10));
    drag(d, (20.0, 250.0), (20.0, 250.0), 1, 10);
    d.wait_for("the distance field", "return !!document.getElementById('ruler-mm')", Duration::from_secs(10));
    d.js(
        "const f = document.getElementById('ruler-mm'); f.value = '20'; f.dispatchEvent(new Event('input', { bubbles: true }));          setTimeout(() => document.getElementById('ruler-set').click(), 100); return true;",
        json!([]),
    );
    let spacing = d.wait_for("the spacing from the ruler", "const s = document.getElementById('spacing').value; return s !== '' && s;", Duration::from_secs(10));
    let mm_per_px: f64 = spacing.as_str().unwrap().parse().unwrap();
    assert!((mm_per_px - 0.1).abs() < 0.002, "0.1 mm/px expected (the clicks land within a pixel): {spacing}");
    let lesion = d.js("const o = document.querySelector('.object'); return [o.querySelector('.measure').textContent, o.querySelector('.calibration').dataset.source];", json!([]));
    eprintln!("e2e: calibrated on the ruler: {spacing} mm/px; {lesion}");
    assert_eq!(lesion[1], "manual", "{lesion}");
    assert!(lesion[0].as_str().unwrap().contains(" mm"), "{lesion}");
    assert!(d.js("return document.querySelectorAll('.object').length", json!([])) == json!(1), "the ruler's clicks made no prompt");
    d.js("const s = document.getElementById('spacing'); s.value = ''; s.dispatchEvent(new Event('input', { bubbles: true })); return true;", json!([]));
}

/// Brightness / contrast / invert change the image's display and nothing else: the shown
/// pixels change, the lesion's mask does not, and "reset" shows the image as it is again.
fn display_controls(d: &Driver) {
    let pixel = "const c = document.getElementById('image-layers'); return Array.from(c.getContext('2d').getImageData(500, 400, 1, 1).data).join(',');";
    let (shown, area) = (d.js(pixel, json!([])), d.js("return document.querySelector('.object[data-area]').dataset.area", json!([])));
    let set = |id: &str, v: &str| d.js(&format!("const e = document.getElementById('{id}'); e.value = '{v}'; e.dispatchEvent(new Event('input', {{ bubbles: true }})); return true;"), json!([]));
    set("contrast", "2.5");
    d.wait_for("the contrast shown", &format!("return (function() {{ {pixel} }})() !== {shown}"), Duration::from_secs(10));
    d.js("document.getElementById('invert').click(); return true;", json!([]));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.js("return document.querySelector('.object[data-area]').dataset.area", json!([])), area, "the display changed the mask");
    d.js("document.getElementById('display-reset').click(); return true;", json!([]));
    d.wait_for("the image as it is", &format!("return (function() {{ {pixel} }})() === {shown}"), Duration::from_secs(10));
    // A right-drag across the image is window/level, as on a console: the contrast rises, the
    // pixels shown change, and no prompt is made (the mask stays).
    let lesions = d.js("return document.querySelectorAll('.object').length", json!([]));
    button_drag(d, (100.0, 300.0), (500.0, 300.0), 4, 30, "mouse", 2);
    let contrast = d.wait_for("the right-drag's contrast", "const v = Number(document.getElementById('contrast').value); return v > 1.2 ? v : null;", Duration::from_secs(10));
    d.wait_for("the right-drag shown", &format!("return (function() {{ {pixel} }})() !== {shown}"), Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.js("return document.querySelector('.object[data-area]').dataset.area", json!([])), area, "the right-drag changed the mask");
    assert_eq!(d.js("return document.querySelectorAll('.object').length", json!([])), lesions, "the right-drag made a lesion");
    eprintln!("e2e: a right-drag set the contrast to {contrast}");
    d.js("document.getElementById('display-reset').click(); return true;", json!([]));
    d.wait_for("the image as it is again", &format!("return (function() {{ {pixel} }})() === {shown}"), Duration::from_secs(10));
    // "Image only" hides the lesion's fill (a pixel inside it changes) and brings it back.
    let inside = "const c = document.getElementById('image-layers'); const b = document.querySelector('.object').dataset.box.split(',').map(Number); \
                  return Array.from(c.getContext('2d').getImageData(Math.round((b[0] + b[2]) / 2), Math.round((b[1] + b[3]) / 2), 1, 1).data).join(',');";
    let with_mask = d.js(inside, json!([]));
    d.js("document.getElementById('image-only').click(); return true;", json!([]));
    d.wait_for("the image alone", &format!("return (function() {{ {inside} }})() !== {with_mask}"), Duration::from_secs(10));
    d.js("document.getElementById('image-only').click(); return true;", json!([]));
    d.wait_for("the overlays back", &format!("return (function() {{ {inside} }})() === {with_mask}"), Duration::from_secs(10));
    // The result was announced to screen readers (an ARIA live region).
    let said = d.js("return document.getElementById('lesion-announce').textContent", json!([]));
    assert!(said.as_str().is_some_and(|t| t.starts_with("lesion 1: ") && t.contains(" × ")), "{said}");
}

/// The layout at a laptop's, a monitor's and a portrait tablet's size: the image fills its area
/// at its own aspect ratio (no band: the canvas's aspect within 1 % of the image's, and it takes
/// the whole width or the whole height it may have), with screenshots; on the tablet, with touch
/// emulated, a finger's drag makes a box and a mask.
fn layouts_and_touch(d: &Driver, root: &Path) {
    let before = d.cmd("GET", "/window/rect", json!(null));
    for (w, h) in [(1280, 720), (1920, 1080), (768, 1024)] {
        d.cmd("POST", "/window/rect", json!({ "width": w, "height": h }));
        std::thread::sleep(Duration::from_millis(400));
        let m = d.js(
            "const c = document.getElementById('image-canvas'); const r = c.getBoundingClientRect(); \
             const s = c.closest('.stage').getBoundingClientRect(); \
             return [r.width, r.height, c.width, c.height, s.width, innerHeight, innerWidth];",
            json!([]),
        );
        let m: Vec<f64> = m.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let (shown, image) = (m[0] / m[1], m[2] / m[3]);
        assert!((shown / image - 1.0).abs() < 0.01, "{w}×{h}: the image is shown at {shown:.3}, its aspect is {image:.3}");
        let height_limit = m[5] - if m[6] <= 900.0 { 160.0 } else { 230.0 };
        assert!(m[0] >= 0.99 * m[4] || m[1] >= 0.99 * height_limit, "{w}×{h}: the image ({:.0} × {:.0}) leaves a band in its area ({:.0} wide, {height_limit:.0} high)", m[0], m[1], m[4]);
        d.screenshot(&root.join(format!("target/e2e/layout-{w}x{h}.png")));
        eprintln!("e2e: {w}×{h}: the image shown at {:.0} × {:.0} px", m[0], m[1]);
    }
    d.cdp("Emulation.setTouchEmulationEnabled", json!({ "enabled": true, "maxTouchPoints": 5 }));
    d.js("document.getElementById('new-object').click(); return true;", json!([]));
    pointer_drag(d, (300.0, 200.0), (420.0, 300.0), 4, 40, "touch");
    d.wait_for("the touch-dragged lesion's mask", "return document.querySelectorAll('.object[data-area]').length === 2", Duration::from_secs(60));
    let pointer = d.js("return document.querySelectorAll('.object')[1].dataset.box", json!([]));
    eprintln!("e2e: a finger's drag made the box {pointer}");
    pinch_zooms(d);
    d.cdp("Emulation.setTouchEmulationEnabled", json!({ "enabled": false }));
    d.js("document.getElementById('undo').click(); document.getElementById('undo').click(); return true;", json!([]));
    d.cmd("POST", "/window/rect", json!({ "width": before["width"], "height": before["height"] }));
}

/// Two fingers moving apart on the image zoom it in (and make no prompt); "fit" undoes it.
fn pinch_zooms(d: &Driver) {
    let state = "const w = document.querySelector('.canvas-wrap'); \
                 return [w.getBoundingClientRect().width, w.classList.contains('zoomed'), document.querySelectorAll('.object').length];";
    let before = d.js(state, json!([]));
    let r = d.js("const r = document.getElementById('image-canvas').getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2];", json!([]));
    let (cx, cy) = (r[0].as_f64().unwrap().round() as i64, r[1].as_f64().unwrap().round() as i64);
    let finger = |id: &str, dir: i64| {
        let mut actions = vec![
            json!({ "type": "pointerMove", "x": cx + dir * 20, "y": cy, "origin": "viewport", "duration": 0 }),
            json!({ "type": "pointerDown", "button": 0 }),
        ];
        for step in 1..=5 {
            actions.push(json!({ "type": "pointerMove", "x": cx + dir * (20 + 16 * step), "y": cy, "origin": "viewport", "duration": 40 }));
        }
        actions.push(json!({ "type": "pointerUp", "button": 0 }));
        json!({ "type": "pointer", "id": id, "parameters": { "pointerType": "touch" }, "actions": actions })
    };
    d.cmd("POST", "/actions", json!({ "actions": [finger("finger1", -1), finger("finger2", 1)] }));
    let after = d.wait_for("the pinch's zoom", &format!("const s = (function() {{ {state} }})(); return s[1] && s[0] > {} ? s : null;", before[0]), Duration::from_secs(10));
    eprintln!("e2e: a pinch zoomed the image from {} to {} px wide", before[0], after[0]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.js(state, json!([]))[2], before[2], "the pinch made a lesion");
    d.js("Array.from(document.querySelectorAll('button')).find(b => b.textContent === 'fit').click(); return true;", json!([]));
    d.wait_for("the image fitted again", "return !document.querySelector('.canvas-wrap').classList.contains('zoomed')", Duration::from_secs(5));
}

/// axe-core (npm; scripts/test.sh installs it in target/axe) in the page: no violation of the
/// WCAG 2.1 A/AA rules in the app's current state (`what`).
fn accessible(d: &Driver, root: &Path, what: &str) {
    let axe = root.join("target/axe/node_modules/axe-core/axe.min.js");
    let script = std::fs::read_to_string(&axe).unwrap_or_else(|e| panic!("{}: {e} (scripts/test.sh installs axe-core)", axe.display()));
    d.js(&format!("{script}; return true;"), json!([]));
    let result = d.js_async(
        "const done = arguments[arguments.length - 1]; \
         axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } }) \
           .then(r => done({ passes: r.passes.length, incomplete: r.incomplete.map(v => v.id), \
             violations: r.violations.map(v => ({ id: v.id, help: v.help, nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ')) })) })) \
           .catch(e => done({ error: String(e) }));",
    );
    eprintln!("e2e: axe-core, {what}: {} rules pass, not decidable: {}", result["passes"], result["incomplete"]);
    assert!(result["error"].is_null(), "axe-core did not run: {result}");
    assert_eq!(result["violations"], json!([]), "WCAG 2.1 A/AA violations ({what})");
}

/// Export the mask PNG through the app's button and read the downloaded blob back.
fn exported_mask(d: &Driver) -> Mask {
    d.js("document.getElementById('export-mask-button').click(); return true;", json!([]));
    Mask::from_image_bytes(&download(d, "mask")).expect("the exported mask is a PNG")
}

/// Wait until the app has loaded its model; returns the backend it runs on. The model must run
/// in the app's Web Worker.
fn wait_model(d: &Driver, phase: &str) -> Value {
    wait_model_at(d, phase, true)
}

/// Wait until the app has loaded its model, in its Web Worker or (`in_worker` false) in the
/// page; returns the backend it runs on.
fn wait_model_at(d: &Driver, phase: &str, in_worker: bool) -> Value {
    let backend = d.wait_for(
        &format!("the model ({phase})"),
        "const e = document.querySelector('#engine-status[data-state=ready]'); return e && e.dataset.backend;",
        Duration::from_secs(180),
    );
    let status = d.js("return document.getElementById('engine-status').textContent", json!([]));
    eprintln!("e2e: {phase} visit: {status}");
    let worker = d.js("return document.getElementById('engine-status').dataset.worker", json!([]));
    assert_eq!(worker, json!(in_worker.to_string()), "{phase}: the model runs where it should not: {status}");
    backend
}

/// Open the sample from the gallery, wait until its embedding is ready (the status matches
/// `embedding_from`, a JS regex), drag the box from `a` to `b`, wait for the mask and export it.
fn segment_sample(d: &Driver, phase: &str, embedding_from: &str, a: (f64, f64), b: (f64, f64)) -> Mask {
    d.wait_for(
        &format!("the gallery ({phase})"),
        &format!("return !!document.querySelector('[data-sample={SAMPLE}]')"),
        Duration::from_secs(30),
    );
    // A watchdog on the page's thread: the longest gap between 50 ms ticks while the model
    // works (it runs in a worker, so the page must keep ticking).
    d.js(
        "clearInterval(window.__tick); window.__maxGap = 0; let last = performance.now(); \
         window.__tick = setInterval(() => { const t = performance.now(); \
         window.__maxGap = Math.max(window.__maxGap, t - last); last = t; }, 50); return true;",
        json!([]),
    );
    let t0 = Instant::now();
    d.js(&format!("document.querySelector('[data-sample={SAMPLE}]').click(); return true;"), json!([]));
    d.wait_for(
        &format!("the embedding ({phase})"),
        &format!("return /{embedding_from}/.test(document.getElementById('status').textContent)"),
        Duration::from_secs(900),
    );
    let took = t0.elapsed().as_secs_f64() * 1000.0;
    let gap = d.js("return window.__maxGap", json!([])).as_f64().unwrap_or(0.0);
    eprintln!("e2e: {phase}: embedding ready after {took:.0} ms; the page's longest pause meanwhile {gap:.0} ms");
    if took > 4000.0 {
        // Encoding took seconds (in-page encoding froze the page for all of them).
        assert!(gap < took / 2.0, "{phase}: the page froze for {gap:.0} ms of the {took:.0} ms encoding");
    }
    drag_box(d, a, b);
    d.wait_for(
        &format!("the mask ({phase})"),
        "return !!document.querySelector('.object[data-area]')",
        Duration::from_secs(300),
    );
    exported_mask(d)
}

/// A lesion's entry warns that its outline needs checking when, and only when, its mask's
/// predicted IoU is below 0.85 (`LOW_PREDICTED_IOU`): the sample's tight box (≈ 0.89) and a
/// sliver of a box across the lesion's edge, which the model cannot be sure of.
fn low_iou_warnings(d: &Driver) {
    d.js("document.getElementById('new-object').click(); return true;", json!([]));
    drag_box(d, (95.0, 105.0), (175.0, 112.0));
    d.wait_for("the sliver's mask", "return document.querySelectorAll('.object[data-area]').length === 2", Duration::from_secs(60));
    let entries = d.js(
        "return Array.from(document.querySelectorAll('.object')).map(e => \
           [parseFloat(e.querySelector('.score').textContent.replace(/[^0-9.]/g, '')), !!e.querySelector('.low-iou')])",
        json!([]),
    );
    for entry in entries.as_array().unwrap() {
        let (iou, warned) = (entry[0].as_f64().unwrap(), entry[1].as_bool().unwrap());
        eprintln!("e2e: a lesion with predicted IoU {iou:.3}: warning shown {warned}");
        assert_eq!(warned, iou < f64::from(sonosam_model::segmentation::LOW_PREDICTED_IOU), "predicted IoU {iou}");
    }
    d.js("document.getElementById('undo').click(); document.getElementById('undo').click(); return true;", json!([]));
    d.wait_for("the sliver undone", "return document.querySelectorAll('.object[data-area]').length === 1", Duration::from_secs(10));
}

/// While an image is encoded the status line says how long it should take: after the first
/// encoding on this device, as long as the last one took (not a fixed guess).
fn encoding_estimates(d: &Driver) {
    // One message per encoding: where a status line starting so follows one that does not
    // (the seconds shown while it runs are left out).
    let shown = d.js(
        "const out = []; let inside = false; for (const t of window.__statuses) { \
           const e = t.startsWith('computing the image embedding'); \
           if (e && !inside) out.push(t.replace(/ \\(\\d+ s\\)$/, '')); inside = e; } return out;",
        json!([]),
    );
    let shown: Vec<&str> = shown.as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    eprintln!("e2e: encoding messages: {shown:?}");
    assert!(shown.len() >= 2, "fewer than two encodings were seen: {shown:?}");
    assert!(shown[1..].iter().all(|t| t.contains("as the last image took")), "no estimate after the first encoding: {shown:?}");
}

/// Threads the model's CPU backend runs with (`data-threads` of the model panel), and whether
/// the page is cross-origin isolated.
fn threads(d: &Driver) -> (u64, bool, String) {
    let v = d.js(
        "const e = document.getElementById('engine-status'); \
         return [Number(e.dataset.threads), self.crossOriginIsolated === true, e.textContent];",
        json!([]),
    );
    (v[0].as_u64().unwrap_or(0), v[1].as_bool().unwrap_or(false), v[2].as_str().unwrap_or("").to_string())
}

/// Drag `n` boxes around `a`–`b` (each a pixel larger) and read the app's own measurement of
/// each: the time from releasing the box to its mask drawn on the canvas (ms).
fn release_to_draw(d: &Driver, a: (f64, f64), b: (f64, f64), n: usize) -> Vec<f64> {
    let count = || d.js("return Number(document.getElementById('latency').dataset.releaseDraws)", json!([])).as_u64().unwrap_or(0);
    let mut times = Vec::new();
    for i in 0..n {
        let before = count();
        let g = i as f64;
        drag_box(d, (a.0 - g, a.1 - g), (b.0 + g, b.1 + g));
        d.wait_for(
            "the mask of a dragged box",
            &format!("return Number(document.getElementById('latency').dataset.releaseDraws) > {before}"),
            Duration::from_secs(120),
        );
        let ms = d.js("return Number(document.getElementById('latency').dataset.releaseToDrawMs)", json!([]));
        times.push(ms.as_f64().unwrap());
        if i == 0 {
            let text = d.js("return document.getElementById('latency').textContent", json!([]));
            eprintln!("e2e: the app says: {}", text.as_str().unwrap_or("").trim());
        }
    }
    times
}

/// The module calls its static constructors itself (src/main.rs). Otherwise wasm-ld links it as
/// a "command" and wraps every export in a `<name>.command_export` that runs all constructors
/// again on each call from JavaScript (≈ 300 ms per rendering of the app). The wrappers'
/// names are visible where the name section is kept (the test build).
fn constructors_run_once(dist: &Path) {
    for module in ["sonosam-web_bg.wasm", "engine/sonosam-engine_bg.wasm", "engine-webgpu/sonosam-engine_bg.wasm", "mt/sonosam-engine_bg.wasm"] {
        let Ok(wasm) = std::fs::read(dist.join(module)) else { continue };
        let wrapped = wasm.windows(15).any(|w| w == b".command_export");
        assert!(!wrapped, "{module}: linked as a wasm command (constructors re-run on every call into it)");
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.len() % 2 == 1 { s[s.len() / 2] } else { (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0 }
}

/// The native pipeline (what `sonosam segment` runs) on the same image and box.
fn native_mask(root: &Path, image: &[u8], bbox: [f32; 4]) -> Segmentation {
    let manifest: WeightsManifest =
        serde_json::from_slice(&std::fs::read(root.join("weights/litemedsam.json")).unwrap()).unwrap();
    let load = |c: Component| {
        let f = manifest.file(c, StoreDType::F32).unwrap();
        manifest.load_component(c, StoreDType::F32, &std::fs::read(root.join("weights").join(&f.file)).unwrap()).unwrap()
    };
    let device = init_device(BackendKind::Cpu).unwrap();
    let sam = Sam::load(manifest.config.clone(), &load(Component::ImageEncoder), &load(Component::Decoder), &device).unwrap();
    let input = preprocess(&decode_image(image).unwrap(), &sam.config);
    let g = input.geometry;
    let out = sam
        .decoder
        .decode(sam.encode(&[&input]), &[g.prompt_to_frame(&Prompt::from_box(bbox)).unwrap()], None, false)
        .unwrap();
    let logits = read_f32(out.low_res_logits).unwrap();
    let iou = read_f32(out.iou).unwrap();
    Segmentation::from_outputs(&logits, &iou, sam.config.low_res_size(), &g)
}

#[test]
fn app_segments_a_sample_exports_it_and_works_offline() {
    let Ok(dist) = std::env::var("SONOSAM_E2E_DIST") else {
        eprintln!("e2e: not run — build the app (scripts/build-web.sh DIR) and set SONOSAM_E2E_DIST=DIR");
        return;
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dist = root.join(dist);
    assert!(dist.join("index.html").is_file(), "{} has no built app", dist.display());
    constructors_run_once(&dist);
    let server = serve(dist);
    // First visit on the CPU backend (wasm SIMD): SwiftShader's software WebGPU needs > 5 min
    // for the encoder on 2 cores, the CPU backend much less. The offline visit below decodes
    // on WebGPU from the cached embedding, so the app runs on both backends.
    let url = format!("http://127.0.0.1:{}/", server.port);
    let driver = Driver::start();
    record_workers(&driver);
    driver.goto(&format!("{url}?backend=cpu"));
    wait_model(&driver, "online");
    // Every status line the page shows, sampled (the encoding estimate is checked below).
    driver.js(
        "window.__statuses = []; setInterval(() => { const e = document.getElementById('status'); \
         const t = e && e.textContent; const all = window.__statuses; \
         if (t && all[all.length - 1] !== t) all.push(t); }, 50); return true;",
        json!([]),
    );
    // A first visit: the guide shows its three steps, the first one next.
    let next = driver.js("const e = document.querySelector('#guide li.next'); return e && e.dataset.step;", json!([]));
    assert_eq!(next, json!("1"), "a first visit shows no guide at its first step");
    accessible(&driver, &root, "the start page");

    // The lesion's box: the tight box of the sample's first ground-truth mask.
    let image = std::fs::read(root.join(format!("www/samples/{SAMPLE}.png"))).unwrap();
    let gt = Mask::from_image_bytes(&std::fs::read(root.join(format!("www/samples/{SAMPLE}_mask.png"))).unwrap()).unwrap();
    let [x0, y0, x1, y1] = gt.bbox().unwrap();
    let (a, b) = ((x0 as f64, y0 as f64), (x1 as f64, y1 as f64));
    let exported = segment_sample(&driver, "online", "embedding computed", a, b);
    let bbox: Vec<f32> = driver
        .js("return document.querySelector('.object').dataset.box.split(',').map(Number)", json!([]))
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    eprintln!("e2e: mask of {} px for the dragged box {bbox:?} (ground-truth box {x0},{y0},{x1},{y1})", exported.area());
    // The guide ticked off the image and the lesion; closed, it stays closed (next visits too).
    let done = driver.js("return Array.from(document.querySelectorAll('#guide li.done')).map(e => e.dataset.step).join(',')", json!([]));
    assert_eq!(done, json!("1,2"), "the guide did not follow the first segmentation");
    driver.js("document.getElementById('guide-close').click(); return true;", json!([]));
    driver.wait_for("the guide closed", "return !document.getElementById('guide') && !!document.getElementById('guide-open')", Duration::from_secs(5));
    driver.screenshot(&root.join("target/e2e/app.png"));
    // This plain server sends no COOP/COEP headers: the single-threaded build runs, and says why.
    let (n, isolated, status) = threads(&driver);
    assert!(!isolated && n == 1, "online: {n} threads, isolated {isolated}: {status}");
    assert!(status.contains("not cross-origin isolated"), "online: no reason for one thread: {status}");
    let times = release_to_draw(&driver, a, b, 5);
    eprintln!("e2e: online (CPU, 1 thread): box release → mask drawn {times:.0?} ms, median {:.0} ms", median(&times));

    let native = native_mask(&root, &image, [bbox[0], bbox[1], bbox[2], bbox[3]]);
    let dice = exported.dice(&native.masks[0]).unwrap();
    eprintln!("e2e: Dice(browser export, native) = {dice:.5}; Dice vs ground truth {:.4}", exported.dice(&gt).unwrap());
    assert!(dice >= 0.99, "the browser's mask differs from the native pipeline's: Dice {dice}");

    low_iou_warnings(&driver);
    report_as_a_user(&driver, &root);
    ruler_calibration_as_a_user(&driver);
    display_controls(&driver);
    layouts_and_touch(&driver, &root);
    dicom_as_a_user(&driver, &root);
    encoding_estimates(&driver);
    worker_killed_while_idle(&driver);
    let draws = drag_redraws_on_a_large_image(&driver);
    assert!(!draws.is_empty(), "no redraw was measured while dragging");
    eprintln!(
        "e2e: dragging a box on a 2,000 × 2,000 image: {} redraws, median {:.2} ms, max {:.2} ms",
        draws.len(),
        median(&draws),
        draws.iter().copied().fold(0.0, f64::max)
    );

    // The page asked to run the model itself (`?worker=0`, what it does when no worker can
    // start): it imports the engine module and talks to it on a message channel.
    driver.goto(&format!("{url}?backend=cpu&worker=0"));
    wait_model_at(&driver, "in the page", false);
    assert_eq!(driver.js("return !!document.getElementById('guide')", json!([])), json!(false), "the closed guide came back");
    let in_page = segment_sample(&driver, "in the page", "from the browser cache", a, b);
    let d1 = in_page.dice(&exported).unwrap();
    eprintln!("e2e: mask with the engine in the page vs in its worker: Dice {d1:.5}");
    assert!(d1 >= 0.99);

    // Cut the server: the app must load from its service worker and caches, and segment again.
    server.offline.store(true, Ordering::SeqCst);
    driver.goto(&format!("{url}?backend=wgpu"));
    wait_model(&driver, "offline");
    let offline = segment_sample(&driver, "offline", "from the browser cache", a, b);
    let d2 = offline.dice(&exported).unwrap();
    eprintln!("e2e: offline mask vs online Dice {d2:.5}");
    assert!(d2 >= 0.99);
    drop(driver);

    // The companion server: `sonosam serve` serves the same app; a fresh browser uses the
    // server's embeddings (one request per new image, none for a repeated one) and gets the
    // same mask as in-browser encoding.
    let exe = root.join("target/debug/sonosam");
    assert!(exe.is_file(), "{} is not built (cargo build --workspace)", exe.display());
    let mut child = Command::new(&exe)
        .args(["serve", "--addr", "127.0.0.1:0", "--backend", "cpu", "--dist"])
        .arg(root.join(std::env::var("SONOSAM_E2E_DIST").unwrap()))
        .current_dir(&root)
        .stdout(Stdio::piped())
        .spawn()
        .expect("sonosam serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let server_url = line.split_whitespace().last().unwrap().to_string();
    eprintln!("e2e: {}", line.trim());
    let driver = Driver::start();
    // No backend in the URL: the app picks one itself. Headless Chromium here offers only
    // SwiftShader, a software WebGPU adapter slower than the CPU backend: the app must notice
    // and say so.
    driver.goto(&server_url);
    let backend = wait_model(&driver, "served");
    let notice = driver.js("const n = document.getElementById('notice'); return n ? n.textContent : ''", json!([]));
    eprintln!("e2e: automatic backend {backend}; notice: {notice}");
    if backend == json!("cpu") {
        assert!(notice.as_str().unwrap_or("").contains("CPU"), "no notice says why the CPU runs: {notice}");
    }
    driver.wait_for("the companion server", "return !!document.getElementById('server-status')", Duration::from_secs(30));
    let served = segment_sample(&driver, "served", "embedding from the companion server", a, b);
    // `sonosam serve` makes the page cross-origin isolated: the threaded build runs, one thread
    // per core (when it was built: SONOSAM_THREADS=0 builds only the single-threaded one).
    let (n, isolated, status) = threads(&driver);
    let cores = driver.js("return navigator.hardwareConcurrency", json!([])).as_u64().unwrap_or(1);
    assert!(isolated, "served: the page is not cross-origin isolated: {status}");
    if root.join(std::env::var("SONOSAM_E2E_DIST").unwrap()).join("mt").is_dir() && backend == json!("cpu") {
        assert_eq!(n, cores, "served: the threaded build does not run with one thread per core: {status}");
    }
    if backend == json!("cpu") {
        let times = release_to_draw(&driver, a, b, 5);
        eprintln!("e2e: served (CPU, {n} threads): box release → mask drawn {times:.0?} ms, median {:.0} ms", median(&times));
    }
    let d3 = served.dice(&exported).unwrap();
    eprintln!("e2e: mask with the server's embedding vs in-browser encoding: Dice {d3:.5}");
    assert!(d3 >= 0.99);
    // The same image again: no new request to the server.
    driver.js(&format!("document.querySelector('[data-sample={SAMPLE}]').click(); return true;"), json!([]));
    driver.wait_for("the cached server embedding", "return /browser cache \\(companion server\\)/.test(document.getElementById('status').textContent)", Duration::from_secs(60));
    let port: u16 = server_url.trim_end_matches('/').rsplit(':').next().unwrap().parse().unwrap();
    let metrics = String::from_utf8_lossy(&{
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
        let mut b = Vec::new();
        s.read_to_end(&mut b).unwrap();
        b
    })
    .to_string();
    assert!(metrics.contains("sonosam_requests_total{endpoint=\"embeddings\",status=\"200\"} 1\n"), "{metrics}");
    drop(driver);
    let _ = child.kill();
    let _ = child.wait();
}
