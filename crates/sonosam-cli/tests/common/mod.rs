//! What the server tests share: a `sonosam serve` child process on a free port and a raw
//! HTTP/1.1 client (std only), so tests see exactly what a client on the wire sees.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn sample(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("www/samples").join(name)).unwrap()
}

/// A running server, killed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Send a signal (`TERM`, `INT`) to the server.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success());
    }

    /// Wait up to `limit` for the process to exit; its exit status, if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let t0 = std::time::Instant::now();
        while t0.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// The `sonosam serve` command line of the tests (CPU, reference-compat encoder, a minimal
/// app folder), plus `extra` arguments.
pub fn serve_args(extra: &[&str]) -> Vec<String> {
    let dist = repo().join("target/serve-test-dist");
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::write(dist.join("index.html"), "<!doctype html><title>sonosam</title>").unwrap();
    let mut args: Vec<String> = ["serve", "--addr", "127.0.0.1:0", "--backend", "cpu", "--reference-compat", "--dist"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(dist.to_string_lossy().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Start `sonosam serve` with `extra` arguments.
pub fn start(extra: &[&str]) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sonosam"));
    cmd.args(serve_args(extra));
    spawn(cmd)
}

/// Start a prepared server command and wait for its address line.
pub fn spawn(mut cmd: Command) -> Server {
    let mut child = cmd
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run sonosam serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    eprintln!("{line}");
    let port = line
        .rsplit("http://127.0.0.1:")
        .next()
        .and_then(|s| s.trim().trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    Server { child, port }
}

/// An answer: status, head (status line and headers), body.
pub type Answer = (u16, String, Vec<u8>);

/// One HTTP/1.1 request with the usual headers (Host, an image Content-Type for bodies).
pub fn request(port: u16, method: &str, path: &str, body: &[u8]) -> Answer {
    let content_type = if body.is_empty() { "" } else { "Content-Type: application/octet-stream\r\n" };
    request_with(port, method, path, &format!("Host: 127.0.0.1:{port}\r\n{content_type}"), body)
}

/// One HTTP/1.1 request with exactly these extra header lines (each ending in CRLF).
pub fn request_with(port: u16, method: &str, path: &str, headers: &str, body: &[u8]) -> Answer {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()).unwrap();
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_answer(&raw)
}

/// Parse a raw HTTP/1.1 answer (chunked or not).
pub fn parse_answer(raw: &[u8]) -> Answer {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, head, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = b.windows(2).position(|w| w == b"\r\n") else { break };
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..nl]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 2 + n + 2..];
    }
    out
}

/// The JSON body of an answer.
pub fn json(answer: &Answer) -> serde_json::Value {
    serde_json::from_slice(&answer.2)
        .unwrap_or_else(|_| panic!("not JSON ({}): {:?}", answer.1, String::from_utf8_lossy(&answer.2)))
}

/// A metric's value (0 when absent); `name` may include labels.
pub fn metric(port: u16, name: &str) -> f64 {
    let (_, _, body) = request(port, "GET", "/metrics", b"");
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(|v| v.parse().unwrap()))
        .unwrap_or(0.0)
}

/// Poll `f` until it is true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// A PNG of `benign_93` made distinct by a trailing byte (decoders ignore it), so each
/// `tag` is a new image for the cache.
pub fn distinct_image(tag: u8) -> Vec<u8> {
    let mut img = sample("benign_93.png");
    img.push(tag);
    img
}
