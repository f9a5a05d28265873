//! Prometheus metrics of the server, and the middleware that counts every request exactly
//! once — also those whose client went away before the answer (status 499, nginx's "client
//! closed request").

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// Status recorded for a request dropped before it was answered.
pub const CLIENT_CLOSED: u16 = 499;

/// Counters and gauges, updated where things happen.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    /// Images this process encoded, and the time it took.
    pub encode_count: AtomicU64,
    pub encode_micros: AtomicU64,
    /// Time spent answering embedding requests.
    pub request_micros: AtomicU64,
    /// Jobs waiting for the encoder thread, and the memory they are estimated to need.
    pub queued: AtomicU64,
    pub queued_bytes: AtomicU64,
    /// Disk cache problems by kind (`corrupt`, `read`, `write`).
    disk_errors: Mutex<BTreeMap<&'static str, u64>>,
    /// The shared (Redis) tier: whether its last call worked (1/0), hits, misses, failed
    /// calls, values dropped as not this model's embedding of the image.
    pub shared_up: AtomicU64,
    pub shared_hits: AtomicU64,
    pub shared_misses: AtomicU64,
    pub shared_errors: AtomicU64,
    pub shared_corrupt: AtomicU64,
}

impl Metrics {
    pub fn count(&self, endpoint: &'static str, status: u16) {
        *self.requests.lock().unwrap().entry((endpoint, status)).or_default() += 1;
    }

    pub fn disk_error(&self, kind: &'static str) {
        *self.disk_errors.lock().unwrap().entry(kind).or_default() += 1;
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP sonosam_requests_total Requests by endpoint and status (499: client went away).\n\
             # TYPE sonosam_requests_total counter\n",
        );
        for ((endpoint, status), n) in self.requests.lock().unwrap().iter() {
            out.push_str(&format!("sonosam_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}\n"));
        }
        out.push_str("# TYPE sonosam_disk_cache_errors_total counter\n");
        for kind in ["corrupt", "read", "write"] {
            let n = self.disk_errors.lock().unwrap().get(kind).copied().unwrap_or(0);
            out.push_str(&format!("sonosam_disk_cache_errors_total{{kind=\"{kind}\"}} {n}\n"));
        }
        let get = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let secs = |v: &AtomicU64| get(v) as f64 / 1e6;
        out.push_str(&format!(
            "# TYPE sonosam_cache_hits_total counter\nsonosam_cache_hits_total {}\n\
             # TYPE sonosam_cache_misses_total counter\nsonosam_cache_misses_total {}\n\
             # TYPE sonosam_encode_seconds summary\nsonosam_encode_seconds_sum {}\nsonosam_encode_seconds_count {}\n\
             # TYPE sonosam_request_seconds_sum counter\nsonosam_request_seconds_sum {}\n\
             # TYPE sonosam_queue_depth gauge\nsonosam_queue_depth {}\n\
             # TYPE sonosam_queue_bytes gauge\nsonosam_queue_bytes {}\n\
             # HELP sonosam_encodings_total Images this replica encoded.\n\
             # TYPE sonosam_encodings_total counter\nsonosam_encodings_total {}\n\
             # TYPE sonosam_shared_cache_up gauge\nsonosam_shared_cache_up {}\n\
             # TYPE sonosam_shared_cache_hits_total counter\nsonosam_shared_cache_hits_total {}\n\
             # TYPE sonosam_shared_cache_misses_total counter\nsonosam_shared_cache_misses_total {}\n\
             # TYPE sonosam_shared_cache_errors_total counter\nsonosam_shared_cache_errors_total {}\n\
             # TYPE sonosam_shared_cache_corrupt_total counter\nsonosam_shared_cache_corrupt_total {}\n",
            get(&self.cache_hits),
            get(&self.cache_misses),
            secs(&self.encode_micros),
            get(&self.encode_count),
            secs(&self.request_micros),
            get(&self.queued),
            get(&self.queued_bytes),
            get(&self.encode_count),
            get(&self.shared_up),
            get(&self.shared_hits),
            get(&self.shared_misses),
            get(&self.shared_errors),
            get(&self.shared_corrupt),
        ));
        if let Some(bytes) = peak_resident_bytes() {
            out.push_str(&format!(
                "# TYPE sonosam_process_peak_resident_bytes gauge\nsonosam_process_peak_resident_bytes {bytes}\n"
            ));
        }
        out
    }
}

/// Peak resident memory of this process (Linux).
fn peak_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|kb| kb * 1024)
}

/// The endpoint label of a path.
fn endpoint(path: &str) -> &'static str {
    match path {
        "/api/v1/embeddings" => "embeddings",
        "/api/v1/models" => "models",
        "/healthz" => "healthz",
        "/metrics" => "metrics",
        p if p.starts_with("/api/") => "api-other",
        _ => "static",
    }
}

/// Counts a request when it is answered, or as [`CLIENT_CLOSED`] when dropped unanswered.
struct Counted {
    metrics: Arc<Metrics>,
    endpoint: &'static str,
    started: Instant,
    status: Option<u16>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.metrics.count(self.endpoint, self.status.unwrap_or(CLIENT_CLOSED));
        if self.endpoint == "embeddings" {
            let micros = self.started.elapsed().as_micros() as u64;
            self.metrics.request_micros.fetch_add(micros, Ordering::Relaxed);
        }
    }
}

/// Middleware: count every request once.
pub async fn count_requests(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let mut counted = Counted {
        metrics,
        endpoint: endpoint(req.uri().path()),
        started: Instant::now(),
        status: None,
    };
    let response = next.run(req).await;
    counted.status = Some(response.status().as_u16());
    response
}
