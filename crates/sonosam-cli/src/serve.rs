//! `sonosam serve`: the browser app (Trunk's `dist/`) and an embeddings API, so browsers can
//! use heavier encoders or a GPU they do not have.
//!
//! - `POST /api/v1/embeddings[?dtype=f16|f32]` — body: PNG/JPEG/BMP bytes; answer: the
//!   embedding in the binary format of `sonosam_model::wire` (header with model, hashes and
//!   geometry, then the tensor).
//! - `GET /api/v1/models`, `GET /healthz`, `GET /metrics` (Prometheus text).
//!
//! One encoder thread owns the model; requests queue in a bounded channel (full → 503 with
//! Retry-After) and waiting requests are encoded together as one batch; simultaneous requests
//! for the same image share one encoding. Embeddings are cached by (encoder hash, image hash)
//! in memory (LRU) and optionally on disk.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Args;
use serde_json::json;
use sonosam_model::StoreDType;
use sonosam_model::backend::{BackendKind, init_device};
use sonosam_model::preprocess::{Geometry, preprocess};
use sonosam_model::segmentation::read_f32;
use sonosam_model::weights::sha256_hex;
use sonosam_model::wire::{self, EmbeddingHeader};
use tokio::sync::{mpsc, oneshot, watch};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::ServeDir;

use crate::CliResult;
use crate::model_io::ModelArgs;

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on (127.0.0.1: this machine only; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Backend of the encoder: wgpu (GPU), cuda (feature `cuda`), cpu.
    #[arg(long, default_value = "wgpu", value_parser = crate::parse_backend)]
    pub backend: BackendKind,
    #[command(flatten)]
    pub model: ModelArgs,
    /// The built browser app (`trunk build` / scripts/build-web.sh).
    #[arg(long, default_value = "dist")]
    pub dist: PathBuf,
    /// Largest accepted request body, in bytes (larger: 413).
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub max_body: usize,
    /// Largest accepted image, in pixels (larger: 422; guards against decompression bombs).
    #[arg(long, default_value_t = 40_000_000)]
    pub max_pixels: u64,
    /// Requests that may wait for the encoder (more: 503 with Retry-After).
    #[arg(long, default_value_t = 32)]
    pub queue: usize,
    /// Most images encoded together in one batch.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Per-request time limit in seconds (exceeded: 504).
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Embeddings kept in memory (≈ 4 MB each).
    #[arg(long, default_value_t = 64)]
    pub cache_entries: usize,
    /// Also keep embeddings in this folder (survives restarts).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Origins allowed to call the API from other pages (CORS; default: none).
    #[arg(long = "cors-origin")]
    pub cors_origins: Vec<String>,
}

/// Answer of the encoder thread for one image.
type EncodeResult = Result<(Arc<Vec<f32>>, Geometry), String>;

struct Job {
    image: Vec<u8>,
    reply: oneshot::Sender<EncodeResult>,
}

#[derive(Default)]
struct Lru {
    map: HashMap<String, (Arc<Vec<f32>>, Geometry)>,
    order: VecDeque<String>,
}

#[derive(Default)]
struct Metrics {
    requests: Mutex<HashMap<(String, u16), u64>>,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    encode_count: AtomicU64,
    encode_micros: AtomicU64,
    request_micros: AtomicU64,
    queued: AtomicU64,
}

struct AppState {
    model_id: String,
    encoder_sha256: String,
    frame: usize,
    shape: Vec<usize>,
    backend: BackendKind,
    jobs: mpsc::Sender<Job>,
    cache: Mutex<Lru>,
    /// Images being encoded now, by cache key: later requests for them wait on the outcome.
    inflight: Mutex<HashMap<String, watch::Sender<Option<Outcome>>>>,
    cache_entries: usize,
    cache_dir: Option<PathBuf>,
    max_pixels: u64,
    timeout: Duration,
    metrics: Metrics,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into(), "status": status.as_u16() }))).into_response()
}

impl AppState {
    fn count(&self, endpoint: &str, status: StatusCode) {
        *self
            .metrics
            .requests
            .lock()
            .unwrap()
            .entry((endpoint.to_string(), status.as_u16()))
            .or_default() += 1;
    }

    fn cache_get(&self, key: &str) -> Option<(Arc<Vec<f32>>, Geometry)> {
        {
            let mut lru = self.cache.lock().unwrap();
            if let Some(v) = lru.map.get(key).cloned() {
                lru.order.retain(|k| k != key);
                lru.order.push_back(key.to_string());
                return Some(v);
            }
        }
        let dir = self.cache_dir.as_ref()?;
        let bytes = std::fs::read(dir.join(format!("{key}.emb"))).ok()?;
        let (h, data) = wire::decode(&bytes).ok()?;
        let v = (Arc::new(data), h.geometry);
        self.cache_put(key, v.clone(), false);
        Some(v)
    }

    fn cache_put(&self, key: &str, v: (Arc<Vec<f32>>, Geometry), disk: bool) {
        if disk && let Some(dir) = &self.cache_dir {
            let header = self.header(key, "f32", v.1);
            if let Ok(bytes) = wire::encode(&header, &v.0) {
                // Write-then-rename: a crash never leaves a truncated entry.
                let tmp = dir.join(format!("{key}.emb.tmp"));
                if std::fs::write(&tmp, bytes).is_ok() {
                    let _ = std::fs::rename(&tmp, dir.join(format!("{key}.emb")));
                }
            }
        }
        let mut lru = self.cache.lock().unwrap();
        if self.cache_entries == 0 {
            return;
        }
        lru.order.retain(|k| k != key);
        lru.order.push_back(key.to_string());
        lru.map.insert(key.to_string(), v);
        while lru.map.len() > self.cache_entries {
            if let Some(old) = lru.order.pop_front() {
                lru.map.remove(&old);
            }
        }
    }

    fn header(&self, image_sha256: &str, dtype: &str, geometry: Geometry) -> EmbeddingHeader {
        EmbeddingHeader {
            model: self.model_id.clone(),
            encoder_sha256: self.encoder_sha256.clone(),
            image_sha256: image_sha256.to_string(),
            dtype: dtype.to_string(),
            shape: self.shape.clone(),
            geometry,
        }
    }
}

#[derive(serde::Deserialize)]
struct EmbedQuery {
    dtype: Option<String>,
}

async fn embeddings(
    State(state): State<Arc<AppState>>,
    Query(q): Query<EmbedQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let t0 = Instant::now();
    let r = embed_inner(&state, q, body).await;
    let resp = r.unwrap_or_else(|e| e);
    state.count("embeddings", resp.status());
    state.metrics.request_micros.fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
    resp
}

async fn embed_inner(
    state: &Arc<AppState>,
    q: EmbedQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Response> {
    let body = body.map_err(|e| {
        let status = e.status();
        let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the image is larger than this server accepts (--max-body)".to_string()
        } else {
            e.body_text()
        };
        error(status, msg)
    })?;
    let dtype = q.dtype.unwrap_or_else(|| "f16".into());
    if dtype != "f16" && dtype != "f32" {
        return Err(error(StatusCode::BAD_REQUEST, format!("dtype must be f16 or f32, not {dtype}")));
    }
    if body.is_empty() {
        return Err(error(StatusCode::BAD_REQUEST, "empty body: send the image file's bytes"));
    }
    // Check the size from the header before decoding anything (decompression bombs).
    let reader = image::ImageReader::new(std::io::Cursor::new(&body[..]))
        .with_guessed_format()
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("cannot read the image: {e}")))?;
    if reader.format().is_none() {
        return Err(error(StatusCode::BAD_REQUEST, "not a PNG, JPEG or BMP image"));
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("cannot decode the image: {e}")))?;
    if u64::from(w) * u64::from(h) > state.max_pixels {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the image is {w}×{h}: more than the {} pixels this server accepts", state.max_pixels),
        ));
    }
    let image_sha = sha256_hex(&body);
    let key = format!("{}-{}", &state.encoder_sha256[..16.min(state.encoder_sha256.len())], image_sha);
    let (data, geometry) = match state.cache_get(&key) {
        Some(v) => {
            state.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
            v
        }
        None => {
            state.metrics.cache_misses.fetch_add(1, Ordering::Relaxed);
            // The same image already being encoded for another request: wait for that one.
            let follower = {
                let mut inflight = state.inflight.lock().unwrap();
                match inflight.get(&key) {
                    Some(tx) => Some(tx.subscribe()),
                    None => {
                        inflight.insert(key.clone(), watch::channel(None).0);
                        None
                    }
                }
            };
            let outcome = match follower {
                Some(mut rx) => match tokio::time::timeout(state.timeout, rx.wait_for(Option::is_some)).await {
                    Ok(Ok(v)) => v.clone().expect("set"),
                    Ok(Err(_)) => Err((StatusCode::INTERNAL_SERVER_ERROR, "the encoder stopped".to_string())),
                    Err(_) => Err((StatusCode::GATEWAY_TIMEOUT, "encoding took longer than the server's time limit".to_string())),
                },
                None => {
                    // If this request is dropped (client gone), the guard still releases the
                    // requests waiting on it.
                    let guard = Inflight { state, key: &key };
                    let outcome = encode_once(state, &body).await;
                    if let Ok(v) = &outcome {
                        state.cache_put(&key, v.clone(), true);
                    }
                    // Later requests find the cache; those already waiting get the outcome.
                    guard.finish(outcome.clone());
                    outcome
                }
            };
            match outcome {
                Ok(v) => v,
                Err((status, msg)) => {
                    let mut r = error(status, msg);
                    if status == StatusCode::SERVICE_UNAVAILABLE {
                        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    }
                    return Err(r);
                }
            }
        }
    };
    let bytes = wire::encode(&state.header(&image_sha, &dtype, geometry), &data)
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, wire::CONTENT_TYPE)], bytes).into_response())
}

/// The leader of an image's encoding: hands the outcome to the requests waiting for it.
struct Inflight<'a> {
    state: &'a AppState,
    key: &'a str,
}

impl Inflight<'_> {
    fn finish(self, outcome: Outcome) {
        if let Some(tx) = self.state.inflight.lock().unwrap().remove(self.key) {
            tx.send_replace(Some(outcome));
        }
        std::mem::forget(self);
    }
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        if let Some(tx) = self.state.inflight.lock().unwrap().remove(self.key) {
            tx.send_replace(Some(Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the request encoding this image was cancelled: retry".into(),
            ))));
        }
    }
}

/// Outcome of one encoding, shared with the requests waiting for the same image.
type Outcome = Result<(Arc<Vec<f32>>, Geometry), (StatusCode, String)>;

/// Queue `image` for the encoder thread and wait for its embedding.
async fn encode_once(state: &AppState, image: &[u8]) -> Outcome {
    let (tx, rx) = oneshot::channel();
    if state.jobs.try_send(Job { image: image.to_vec(), reply: tx }).is_err() {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "the encoder queue is full: retry shortly".into()));
    }
    state.metrics.queued.fetch_add(1, Ordering::Relaxed);
    let answer = tokio::time::timeout(state.timeout, rx).await;
    state.metrics.queued.fetch_sub(1, Ordering::Relaxed);
    match answer {
        Err(_) => Err((StatusCode::GATEWAY_TIMEOUT, "encoding took longer than the server's time limit".into())),
        Ok(Err(_)) => Err((StatusCode::INTERNAL_SERVER_ERROR, "the encoder stopped".into())),
        Ok(Ok(Err(e))) => Err((StatusCode::BAD_REQUEST, e)),
        Ok(Ok(Ok(v))) => Ok(v),
    }
}

async fn models(State(state): State<Arc<AppState>>) -> Response {
    state.count("models", StatusCode::OK);
    axum::Json(json!({ "models": [{
        "id": state.model_id,
        "encoder_sha256": state.encoder_sha256,
        "frame": state.frame,
        "embedding_shape": state.shape,
        "backend": state.backend.to_string(),
        "dtypes": ["f16", "f32"],
    }]}))
    .into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let m = &state.metrics;
    let mut out = String::new();
    out.push_str("# HELP sonosam_requests_total API requests by endpoint and status.\n# TYPE sonosam_requests_total counter\n");
    let mut reqs: Vec<_> = m.requests.lock().unwrap().iter().map(|(k, v)| (k.clone(), *v)).collect();
    reqs.sort();
    for ((endpoint, status), n) in reqs {
        out.push_str(&format!("sonosam_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}\n"));
    }
    let secs = |v: &AtomicU64| v.load(Ordering::Relaxed) as f64 / 1e6;
    out.push_str(&format!(
        "# TYPE sonosam_cache_hits_total counter\nsonosam_cache_hits_total {}\n\
         # TYPE sonosam_cache_misses_total counter\nsonosam_cache_misses_total {}\n\
         # TYPE sonosam_encode_seconds summary\nsonosam_encode_seconds_sum {}\nsonosam_encode_seconds_count {}\n\
         # TYPE sonosam_request_seconds_sum counter\nsonosam_request_seconds_sum {}\n\
         # TYPE sonosam_queue_depth gauge\nsonosam_queue_depth {}\n",
        m.cache_hits.load(Ordering::Relaxed),
        m.cache_misses.load(Ordering::Relaxed),
        secs(&m.encode_micros),
        m.encode_count.load(Ordering::Relaxed),
        secs(&m.request_micros),
        m.queued.load(Ordering::Relaxed),
    ));
    // Peak resident memory of this process (Linux).
    if let Some(kb) = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    }) {
        out.push_str(&format!(
            "# TYPE sonosam_process_peak_resident_bytes gauge\nsonosam_process_peak_resident_bytes {}\n",
            kb * 1024
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The encoder thread: owns the model, encodes waiting images in batches.
fn encoder_thread(args: ServeArgs, mut jobs: mpsc::Receiver<Job>, state: Arc<AppState>, sam: sonosam_model::Sam) {
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < args.batch.max(1) {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let t0 = Instant::now();
        let mut inputs = Vec::new();
        let mut replies = Vec::new();
        for job in batch {
            match sonosam_model::decode_image(&job.image) {
                Ok(img) => {
                    inputs.push(preprocess(&img, &sam.config));
                    replies.push(job.reply);
                }
                Err(e) => {
                    let _ = job.reply.send(Err(e.to_string()));
                }
            }
        }
        if inputs.is_empty() {
            continue;
        }
        let refs: Vec<_> = inputs.iter().collect();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_f32(sam.encode(&refs))));
        let n = state.shape.iter().product::<usize>();
        match result {
            Ok(Ok(all)) => {
                for ((reply, input), chunk) in replies.into_iter().zip(&inputs).zip(all.chunks_exact(n)) {
                    let _ = reply.send(Ok((Arc::new(chunk.to_vec()), input.geometry)));
                }
            }
            Ok(Err(e)) => replies.into_iter().for_each(|r| {
                let _ = r.send(Err(format!("encoder error: {e}")));
            }),
            Err(_) => replies.into_iter().for_each(|r| {
                let _ = r.send(Err("the encoder failed on this image".into()));
            }),
        }
        state.metrics.encode_count.fetch_add(inputs.len() as u64, Ordering::Relaxed);
        state.metrics.encode_micros.fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

pub fn run(args: ServeArgs) -> CliResult<()> {
    if !args.dist.join("index.html").is_file() {
        eprintln!(
            "serve: {} has no built app (run `trunk build` or scripts/build-web.sh): serving the API only",
            args.dist.display()
        );
    }
    if let Some(dir) = &args.cache_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let device = init_device(args.backend).map_err(|e| e.to_string())?;
    let loaded = args.model.load(StoreDType::F32, &device)?;
    let d = &loaded.sam.config.decoder;
    let (tx, rx) = mpsc::channel(args.queue.max(1));
    let state = Arc::new(AppState {
        model_id: loaded.id.clone(),
        encoder_sha256: loaded.encoder_sha256.clone(),
        frame: loaded.sam.config.img_size(),
        shape: vec![1, d.embed_dim, d.embedding_size, d.embedding_size],
        backend: args.backend,
        jobs: tx,
        cache: Mutex::new(Lru::default()),
        inflight: Mutex::new(HashMap::new()),
        cache_entries: args.cache_entries,
        cache_dir: args.cache_dir.clone(),
        max_pixels: args.max_pixels,
        timeout: Duration::from_secs(args.timeout.max(1)),
        metrics: Metrics::default(),
    });
    let worker_state = state.clone();
    let worker_args = args.clone();
    let sam = loaded.sam;
    std::thread::Builder::new()
        .name("encoder".into())
        .spawn(move || encoder_thread(worker_args, rx, worker_state, sam))
        .map_err(|e| e.to_string())?;

    let cors = if args.cors_origins.is_empty() {
        CorsLayer::new()
    } else {
        let origins: Vec<HeaderValue> = args
            .cors_origins
            .iter()
            .map(|o| o.parse().map_err(|_| format!("bad CORS origin {o}")))
            .collect::<CliResult<_>>()?;
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers([header::CONTENT_TYPE])
    };
    let api = Router::new()
        .route("/api/v1/embeddings", post(embeddings))
        .route("/api/v1/models", get(models))
        .layer(DefaultBodyLimit::max(args.max_body))
        .layer(cors)
        .with_state(state.clone());
    let app = Router::new()
        .merge(api)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics).with_state(state.clone()))
        .fallback_service(ServeDir::new(&args.dist).append_index_html_on_directories(true));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!("serve: {} on {} — listening on http://{addr}/", loaded.id, args.backend);
        use std::io::Write;
        let _ = std::io::stdout().flush();
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
                eprintln!("serve: shutting down after the requests in flight");
            })
            .await
            .map_err(|e| e.to_string())
    })
}

