//! Regression tests for what an outside probe of `sonosam serve` broke (issue "Hardening"),
//! each sending exactly the probe's input over real HTTP to the real binary.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Answer, distinct_image, eventually, json, metric, parse_answer, request, request_with, sample, start};
use sonosam_model::weights::sha256_hex;
use sonosam_model::wire;

const EMBED: &str = "/api/v1/embeddings";

fn jpeg_of(png: &[u8]) -> Vec<u8> {
    let img = image::load_from_memory(png).unwrap();
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Jpeg).unwrap();
    out
}

/// 1. The first 10 % of a JPEG is a 400, not an embedding.
#[test]
fn truncated_jpeg_is_refused() {
    let server = start(&[]);
    let jpeg = jpeg_of(&sample("benign_93.png"));
    let truncated = &jpeg[..jpeg.len() / 10];
    let answer = request(server.port, "POST", EMBED, truncated);
    assert_eq!(answer.0, 400, "{}", String::from_utf8_lossy(&answer.2));
    assert!(json(&answer)["error"].as_str().unwrap().contains("truncated"));
    assert_eq!(metric(server.port, "sonosam_encode_seconds_count"), 0.0);
}

/// 2. Other web pages cannot make the server encode, and DNS-rebinding hosts are refused.
#[test]
fn other_sites_cannot_use_the_api() {
    let server = start(&[]);
    let port = server.port;
    let png = sample("benign_93.png");
    let host = format!("Host: 127.0.0.1:{port}\r\n");
    // The probe's "simple" cross-site request: text/plain, a foreign Origin.
    let answer = request_with(port, "POST", EMBED, &format!("{host}Origin: http://evil.test\r\nContent-Type: text/plain\r\n"), &png);
    assert_eq!(answer.0, 403, "{}", answer.1);
    assert!(json(&answer)["error"].as_str().unwrap().contains("evil.test"));
    // Refused before the body is read: headers promising 10 MB get their answer at once.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "POST {EMBED} HTTP/1.1\r\n{host}Origin: http://evil.test\r\nContent-Type: image/png\r\nContent-Length: 10000000\r\n\r\n").unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).expect("an answer before the body");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 403"));
    // Form and text types (what pages can send without a preflight), or none at all: 415.
    for kind in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let answer = request_with(port, "POST", EMBED, &format!("{host}Content-Type: {kind}\r\n"), &png);
        assert_eq!(answer.0, 415, "{kind}");
        assert_eq!(json(&answer)["status"], 415);
    }
    assert_eq!(request_with(port, "POST", EMBED, &host, &png).0, 415);
    // Nothing was encoded.
    assert_eq!(metric(port, "sonosam_encode_seconds_count"), 0.0);
    assert_eq!(metric(port, "sonosam_cache_misses_total"), 0.0);
    // A rebinding page's Host is refused everywhere; IP literals and localhost are fine.
    for path in ["/api/v1/models", "/", "/metrics"] {
        let answer = request_with(port, "GET", path, &format!("Host: evil.test:{port}\r\n"), b"");
        assert_eq!(answer.0, 403, "{path}");
        assert!(json(&answer)["error"].as_str().unwrap().contains("--allowed-host"));
    }
    assert_eq!(request_with(port, "GET", "/api/v1/models", &format!("Host: localhost:{port}\r\n"), b"").0, 200);
    // The app's own pages (same origin) may call the API.
    let own = format!("{host}Origin: http://127.0.0.1:{port}\r\n");
    assert_eq!(request_with(port, "GET", "/api/v1/models", &own, b"").0, 200);
    drop(server);
    // A name given with --allowed-host is accepted.
    let server = start(&["--allowed-host", "scanner.local"]);
    let answer = request_with(server.port, "GET", "/api/v1/models", &format!("Host: scanner.local:{}\r\n", server.port), b"");
    assert_eq!(answer.0, 200);
}

/// Post `image` on a new connection from a thread.
fn post_in_thread(port: u16, image: Vec<u8>) -> std::thread::JoinHandle<Answer> {
    std::thread::spawn(move || request(port, "POST", EMBED, &image))
}

/// 3. SIGTERM is graceful: requests in flight are answered, then the process exits.
#[test]
fn sigterm_drains_requests_in_flight() {
    let mut server = start(&["--shutdown-grace", "300", "--batch", "1"]);
    let port = server.port;
    let clients: Vec<_> = (0..2).map(|i| post_in_thread(port, distinct_image(10 + i))).collect();
    assert!(eventually(Duration::from_secs(30), || metric(port, "sonosam_cache_misses_total") == 2.0));
    server.signal("TERM");
    // No new connections once draining.
    std::thread::sleep(Duration::from_millis(500));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "still accepting after SIGTERM");
    for c in clients {
        let answer = c.join().unwrap();
        assert_eq!(answer.0, 200, "{}", answer.1);
        wire::decode(&answer.2).expect("a whole embedding");
    }
    let status = server.wait_exit(Duration::from_secs(60)).expect("exits after draining");
    assert!(status.success(), "{status:?}");
}

/// Read from `s` until the server closes it (Ok(bytes)), or time out (Err).
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Result<Vec<u8>, String> {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(out),
            Err(e) => return Err(format!("still open: {e}")),
        }
    }
}

/// 4. Idle, slow and half-sent connections are closed; a trickling client cannot hold up
/// shutdown.
#[test]
fn slow_and_idle_connections_time_out() {
    let server = start(&["--header-timeout", "2", "--idle-timeout", "2", "--body-timeout", "2"]);
    let port = server.port;
    let connect = || TcpStream::connect(("127.0.0.1", port)).unwrap();
    // An idle keep-alive connection after a request.
    let mut s = connect();
    write!(s, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").unwrap();
    let t0 = Instant::now();
    let got = read_until_closed(&mut s, Duration::from_secs(10)).expect("closed when idle");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    // A connection that sends nothing, and one that stops in the middle of its headers.
    for start in [&b""[..], b"GET / HTTP/1.1\r\nHost: 127.0"] {
        let mut s = connect();
        s.write_all(start).unwrap();
        let t0 = Instant::now();
        read_until_closed(&mut s, Duration::from_secs(10)).expect("closed");
        assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    }
    // A body at one byte per second: 408 with a JSON error.
    let mut s = connect();
    write!(s, "POST {EMBED} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n").unwrap();
    let trickle = s.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut t = trickle;
        for _ in 0..20 {
            if t.write_all(b"x").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let raw = read_until_closed(&mut s, Duration::from_secs(15)).expect("answered");
    let answer = parse_answer(&raw);
    assert_eq!(answer.0, 408);
    assert!(json(&answer)["error"].as_str().unwrap().contains("--body-timeout"));
}

#[test]
fn a_trickling_client_cannot_hold_up_shutdown() {
    let mut server = start(&["--shutdown-grace", "2", "--body-timeout", "600"]);
    let port = server.port;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "POST {EMBED} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n").unwrap();
    std::thread::spawn(move || {
        for _ in 0..120 {
            if s.write_all(b"x").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(15)).expect("exits within the grace period");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(status.success(), "{status:?}");
}

/// 5. A cancelled or timed-out request leaves its encoding to finish and be cached; the
/// metrics stay true (no stuck queue depth, the request counted as 499).
#[test]
fn cancelled_and_timed_out_encodings_are_kept() {
    let server = start(&[]);
    let port = server.port;
    let image = distinct_image(30);
    {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "POST {EMBED} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: image/png\r\nContent-Length: {}\r\n\r\n", image.len()).unwrap();
        s.write_all(&image).unwrap();
        assert!(eventually(Duration::from_secs(30), || metric(port, "sonosam_cache_misses_total") == 1.0));
        // The client goes away mid-encoding.
    }
    assert!(eventually(Duration::from_secs(120), || metric(port, "sonosam_encode_seconds_count") == 1.0));
    assert!(eventually(Duration::from_secs(10), || {
        metric(port, "sonosam_requests_total{endpoint=\"embeddings\",status=\"499\"}") == 1.0
    }));
    assert_eq!(metric(port, "sonosam_queue_depth"), 0.0);
    assert_eq!(metric(port, "sonosam_queue_bytes"), 0.0);
    // The retry is a cache hit.
    assert_eq!(request(port, "POST", EMBED, &image).0, 200);
    assert_eq!(metric(port, "sonosam_cache_hits_total"), 1.0);
    assert_eq!(metric(port, "sonosam_encode_seconds_count"), 1.0);
    drop(server);

    // With a time limit shorter than an encoding: 504, and the retry succeeds from the cache.
    let server = start(&["--timeout", "0.05"]);
    let port = server.port;
    let answer = request(port, "POST", EMBED, &image);
    assert_eq!(answer.0, 504, "{}", answer.1);
    assert!(json(&answer)["error"].as_str().unwrap().contains("retry"));
    assert!(eventually(Duration::from_secs(120), || metric(port, "sonosam_encode_seconds_count") == 1.0));
    assert_eq!(request(port, "POST", EMBED, &image).0, 200);
    assert_eq!(metric(port, "sonosam_encode_seconds_count"), 1.0);
    assert_eq!(metric(port, "sonosam_queue_depth"), 0.0);
}

fn entries(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).collect();
    v.sort();
    v
}

/// 6. Disk cache entries are checked (model, shape, image, checksum); bad ones are dropped
/// and re-encoded, leftovers removed, write failures counted and survived.
#[test]
fn disk_cache_entries_are_checked() {
    let dir = common::repo().join("target/hardening-disk-cache");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".left-by-a-crash.emb.tmp"), b"junk").unwrap();
    let cache_dir = dir.to_string_lossy().to_string();
    let image = distinct_image(40);
    let image_sha = sha256_hex(&image);
    let server = start(&["--cache-dir", &cache_dir]);
    assert!(!dir.join(".left-by-a-crash.emb.tmp").exists(), "stale temporary file removed");
    assert_eq!(request(server.port, "POST", EMBED, &image).0, 200);
    drop(server);
    let files = entries(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let entry = files[0].clone();
    let (header, data) = wire::decode(&std::fs::read(&entry).unwrap()).unwrap();
    assert_eq!(header.image_sha256, image_sha, "the header holds the image's hash");
    assert!(header.data_sha256.is_some());

    // Tampered entries: another shape (with matching data), NaN data under the old checksum.
    let other_shape = wire::EmbeddingHeader { shape: vec![1, 128, 64, 64], data_sha256: None, ..header.clone() };
    let nan_data = {
        let mut bytes = std::fs::read(&entry).unwrap();
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
        bytes
    };
    for tampered in [wire::encode(&other_shape, &data[..128 * 64 * 64]).unwrap(), nan_data] {
        std::fs::write(&entry, &tampered).unwrap();
        let server = start(&["--cache-dir", &cache_dir]);
        let answer = request(server.port, "POST", EMBED, &image);
        assert_eq!(answer.0, 200, "{}", String::from_utf8_lossy(&answer.2));
        assert_eq!(metric(server.port, "sonosam_disk_cache_errors_total{kind=\"corrupt\"}"), 1.0);
        assert_eq!(metric(server.port, "sonosam_encode_seconds_count"), 1.0);
        drop(server);
        let (h, _) = wire::decode(&std::fs::read(&entry).unwrap()).expect("rewritten");
        assert_eq!(h.shape, vec![1, 256, 64, 64]);
    }
    // A healthy entry survives a restart as a hit.
    let server = start(&["--cache-dir", &cache_dir]);
    assert_eq!(request(server.port, "POST", EMBED, &image).0, 200);
    assert_eq!(metric(server.port, "sonosam_encode_seconds_count"), 0.0);
}

#[test]
fn disk_cache_write_failures_are_survived_and_counted() {
    // A full disk, simulated by a 1 MB file-size limit (the entry is 4 MB): the server answers,
    // counts the failure and leaves no temporary file behind.
    let dir = common::repo().join("target/hardening-full-disk");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let args = common::serve_args(&["--cache-dir", &dir.to_string_lossy()]);
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg("trap '' XFSZ; ulimit -f 1024; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_sonosam"))
        .args(&args);
    let server = common::spawn(cmd);
    assert_eq!(request(server.port, "POST", EMBED, &distinct_image(50)).0, 200);
    assert_eq!(metric(server.port, "sonosam_disk_cache_errors_total{kind=\"write\"}"), 1.0);
    assert_eq!(entries(&dir), Vec::<std::path::PathBuf>::new(), "no leftovers");
    // Still answered from memory.
    assert_eq!(request(server.port, "POST", EMBED, &distinct_image(50)).0, 200);
    assert_eq!(metric(server.port, "sonosam_cache_hits_total"), 1.0);
    drop(server);

    // A folder that cannot be created or written (here under /proc): said, counted, served.
    let server = start(&["--cache-dir", "/proc/sonosam-cache-test"]);
    assert_eq!(request(server.port, "POST", EMBED, &distinct_image(51)).0, 200);
    assert_eq!(metric(server.port, "sonosam_disk_cache_errors_total{kind=\"write\"}"), 1.0);
}

/// 8. Every error is JSON; the query is strict; waiting images have a memory budget.
#[test]
fn every_error_is_json() {
    let server = start(&[]);
    let port = server.port;
    for (method, path, status) in [
        ("GET", "/no-such-file.txt".to_string(), 404),
        ("GET", EMBED.to_string(), 405),
        ("DELETE", "/api/v1/models".to_string(), 405),
        ("GET", format!("/api/v1/models?{}", "a".repeat(10_000)), 414),
        ("GET", format!("/{}", "a".repeat(70_000)), 414),
    ] {
        let answer = request(port, method, &path, b"");
        assert_eq!(answer.0, status, "{method} {}", &path[..path.len().min(40)]);
        assert_eq!(json(&answer)["status"], status);
    }
    let big_header = format!("Host: 127.0.0.1:{port}\r\nX-Big: {}\r\n", "b".repeat(20_000));
    let answer = request_with(port, "GET", "/healthz", &big_header, b"");
    assert_eq!(answer.0, 431);
    assert_eq!(json(&answer)["status"], 431);
    let answer = request(port, "POST", "/api/v1/embeddings?dtype=f16&dtype=f32", &sample("benign_93.png"));
    assert_eq!(answer.0, 400);
    assert!(json(&answer)["error"].as_str().unwrap().contains("more than once"));
}

#[test]
fn waiting_images_have_a_memory_budget() {
    // 1 MB for waiting images: one 561×466 image (≈ 4 MB estimated) is always taken, the
    // others are turned away until it is done.
    let server = start(&["--queue-memory", "1", "--batch", "1"]);
    let port = server.port;
    let clients: Vec<_> = (0..4).map(|i| post_in_thread(port, distinct_image(60 + i))).collect();
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap().0).collect();
    eprintln!("memory budget: {statuses:?}");
    assert!(statuses.iter().all(|&s| s == 200 || s == 503), "{statuses:?}");
    assert!(statuses.contains(&200) && statuses.contains(&503), "{statuses:?}");
    assert_eq!(metric(port, "sonosam_queue_bytes"), 0.0);
}
