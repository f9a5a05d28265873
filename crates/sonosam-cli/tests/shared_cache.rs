//! Replicas of `sonosam serve` sharing embeddings through a real Redis (`redis-server`, a
//! Debian package that scripts/test.sh installs, started here on a free port): an image one
//! replica encoded is served by another without encoding; simultaneous requests for one new
//! image spread over the replicas encode it once fleet-wide; a foreign value is dropped; with
//! Redis gone the replicas keep answering (and say so in /metrics), and use it again when it
//! is back.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{metric, request, sample, start};

/// A `redis-server` child on a free loopback port, without persistence.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(port: Option<u16>) -> Redis {
        let port = port.unwrap_or_else(|| TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; scripts/test.sh installs it)");
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Redis { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A raw command through redis-cli (setting a foreign value).
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn encodings(ports: &[u16]) -> f64 {
    ports.iter().map(|&p| metric(p, "sonosam_encodings_total")).sum()
}

#[test]
fn replicas_share_embeddings_through_redis() {
    let redis = Redis::start(None);
    let url = redis.url();
    let a = start(&["--cache-url", &url]);
    let b = start(&["--cache-url", &url]);
    let ports = [a.port, b.port];

    // Encoded by A, then served by B from Redis.
    let image = sample("benign_93.png");
    let (status, _, from_a) = request(a.port, "POST", "/api/v1/embeddings?dtype=f32", &image);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&from_a));
    let (status, _, from_b) = request(b.port, "POST", "/api/v1/embeddings?dtype=f32", &image);
    assert_eq!(status, 200);
    assert_eq!(from_a, from_b, "the same embedding from both replicas");
    assert_eq!((metric(a.port, "sonosam_encodings_total"), metric(b.port, "sonosam_encodings_total")), (1.0, 0.0));
    assert_eq!(metric(b.port, "sonosam_shared_cache_hits_total"), 1.0);
    assert_eq!(metric(b.port, "sonosam_shared_cache_up"), 1.0);

    // Eight simultaneous requests for a new image, spread over both: one encoding in all.
    let before = encodings(&ports);
    let img = sample("malignant_12.png");
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let (img, port) = (img.clone(), ports[i % 2]);
            std::thread::spawn(move || request(port, "POST", "/api/v1/embeddings?dtype=f32", &img))
        })
        .collect();
    let answers: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(answers.iter().all(|a| a.0 == 200), "{:?}", answers.iter().map(|a| a.0).collect::<Vec<_>>());
    assert!(answers.windows(2).all(|w| w[0].2 == w[1].2), "identical embeddings");
    assert_eq!(encodings(&ports) - before, 1.0, "one encoding fleet-wide");

    // A foreign value under an image's key (another model's, or damaged) is dropped by a
    // replica that has not seen the image, and the image is encoded again.
    let sha = sha_hex(&image);
    let keys = redis.cli(&["KEYS", "*"]);
    let key = keys.lines().find(|k| k.ends_with(&sha) && !k.starts_with("lock:")).expect("benign_93 in Redis").to_string();
    assert_eq!(redis.cli(&["SET", &key, "not an embedding"]), "OK");
    let c = start(&["--cache-url", &url]);
    let (status, _, from_c) = request(c.port, "POST", "/api/v1/embeddings?dtype=f32", &image);
    assert_eq!(status, 200);
    assert_eq!(from_c, from_a);
    assert_eq!(metric(c.port, "sonosam_shared_cache_corrupt_total"), 1.0);
    assert_eq!(metric(c.port, "sonosam_encodings_total"), 1.0);
    let replaced: usize = redis.cli(&["STRLEN", &key]).parse().unwrap();
    assert!(replaced > 4 * 256 * 64 * 64, "the garbage was replaced by the embedding ({replaced} bytes)");

    // A replica with the other encoder mode (the default, not reference-compat) shares the
    // Redis but not its embeddings: it encodes the image itself.
    let mut args = common::serve_args(&["--cache-url", &url]);
    args.retain(|a| a != "--reference-compat");
    let d = common::spawn({
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sonosam"));
        cmd.args(args);
        cmd
    });
    let (status, _, from_d) = request(d.port, "POST", "/api/v1/embeddings?dtype=f32", &image);
    assert_eq!(status, 200);
    assert_ne!(from_d, from_a, "the other encoder's embedding");
    assert_eq!(metric(d.port, "sonosam_encodings_total"), 1.0);

    // Redis killed while requests are in flight: every answer is a 200 (or a 503 of a full
    // queue), the state shows; restarted, it is used again.
    let port = redis.port;
    let load: Vec<_> = ["benign_3.png", "normal_38.png", "malignant_90.png", "malignant_181.png"]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (img, port) = (sample(n), ports[i % 2]);
            std::thread::spawn(move || request(port, "POST", "/api/v1/embeddings", &img).0)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    drop(redis);
    let statuses: Vec<u16> = load.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| [200, 503].contains(s)) && statuses.contains(&200), "{statuses:?}");
    let (status, _, _) = request(a.port, "POST", "/api/v1/embeddings", &sample("benign_3.png"));
    assert_eq!(status, 200, "answers without Redis");
    let (status, _, _) = request(a.port, "POST", "/api/v1/embeddings", &sample("malignant_12.png"));
    assert_eq!(status, 200);
    assert_eq!(metric(a.port, "sonosam_shared_cache_up"), 0.0);
    let redis = Redis::start(Some(port));
    let (status, _, _) = request(b.port, "POST", "/api/v1/embeddings", &sample("benign_189.png"));
    assert_eq!(status, 200);
    assert_eq!(metric(b.port, "sonosam_shared_cache_up"), 1.0);
    let a_before = metric(a.port, "sonosam_encodings_total");
    let (status, _, _) = request(a.port, "POST", "/api/v1/embeddings", &sample("benign_189.png"));
    assert_eq!(status, 200);
    assert_eq!(metric(a.port, "sonosam_encodings_total"), a_before, "A took B's embedding from the restarted Redis");
    assert_eq!(metric(a.port, "sonosam_shared_cache_up"), 1.0);
    drop(redis);
}

fn sha_hex(bytes: &[u8]) -> String {
    sonosam_model::weights::sha256_hex(bytes)
}

/// `embed --cache-url` stores what it encodes in the replicas' Redis, as the server does: a
/// server then answers those images without encoding, and `eval --cache-url` with an empty
/// cache folder encodes none of them.
#[test]
fn embed_fills_redis_for_servers_and_eval() {
    let redis = Redis::start(None);
    let url = redis.url();
    let dir = common::repo().join("target/cli-tests/embed-redis");
    let _ = std::fs::remove_dir_all(&dir);
    let data = common::repo().join("../shared/data/busi");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sonosam")).args(args).current_dir(common::repo()).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        eprintln!("$ sonosam {}\n{text}{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success());
        text
    };
    let (d, a, b) = (data.display().to_string(), dir.join("a").display().to_string(), dir.join("b").display().to_string());
    let common = ["--data", &d, "--split", "val", "--limit", "2", "--reference-compat", "--cache-url", &url];
    let out = run(&[&["embed"][..], &common, &["--cache", &a]].concat());
    assert!(out.contains("0 cached, 2 encoded"), "{out}");
    // The first two validation images (both with a lesion), posted to a server.
    let server = start(&["--cache-url", &url]);
    for name in ["benign (7).png", "benign (17).png"] {
        let image = std::fs::read(data.join("benign").join(name)).unwrap();
        assert_eq!(request(server.port, "POST", "/api/v1/embeddings", &image).0, 200);
    }
    assert_eq!(metric(server.port, "sonosam_encodings_total"), 0.0, "the server took embed's embeddings");
    assert_eq!(metric(server.port, "sonosam_shared_cache_hits_total"), 2.0);
    let out = run(&[&["eval"][..], &common, &["--cache", &b, "--jitter", "0", "--csv", &dir.join("e.csv").display().to_string()]].concat());
    assert!(out.contains("embeddings: 2 cached, 0 encoded"), "{out}");
}
