//! `sonosam serve`: the browser app (Trunk's `dist/`) and an embeddings API, so browsers can
//! use heavier encoders or a GPU they do not have.
//!
//! - `POST /api/v1/embeddings[?dtype=f16|f32]` — body: PNG/JPEG/BMP bytes; answer: the
//!   embedding in the binary format of `sonosam_model::wire` (header with model, hashes and
//!   geometry, then the tensor).
//! - `GET /api/v1/models`, `GET /healthz`, `GET /metrics` (Prometheus text).
//!
//! Modules by concern: [`policy`] (who may call, content types, limits, JSON errors),
//! [`api`] (the handlers), [`encoder`] (the encoder thread, queue and single flight),
//! [`cache`] (memory and disk tiers), [`metrics`], [`http`] (connections, timeouts,
//! shutdown). The security model is in the README ("Security").

mod api;
mod cache;
mod encoder;
mod http;
mod metrics;
mod policy;
mod shared;

use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use clap::Args;
use sonosam_model::StoreDType;
use sonosam_model::backend::{BackendKind, init_device};
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
    /// Per-request time limit in seconds, fractions allowed (exceeded: 504).
    #[arg(long, default_value_t = 120.0, value_parser = positive_seconds)]
    pub timeout: f64,
    /// Embeddings kept in memory (≈ 4 MB each).
    #[arg(long, default_value_t = 64)]
    pub cache_entries: usize,
    /// Also keep embeddings in this folder (survives restarts).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// A Redis shared by every replica (`redis://HOST:PORT[/DB]`): embeddings looked up there
    /// after memory and disk, stored there once encoded, and a new image encoded once
    /// fleet-wide. The server keeps answering when Redis is down.
    #[arg(long)]
    pub cache_url: Option<String>,
    /// Hours an embedding stays in the shared cache.
    #[arg(long, default_value_t = crate::embeddings::SHARED_TTL_HOURS)]
    pub cache_ttl_hours: u64,
    /// Origins allowed to call the API from other pages (CORS; default: none).
    #[arg(long = "cors-origin")]
    pub cors_origins: Vec<String>,
    /// Host names accepted in the Host header besides IP addresses and localhost (needed to
    /// reach the server by a DNS name; guards against DNS rebinding).
    #[arg(long = "allowed-host")]
    pub allowed_hosts: Vec<String>,
    /// Memory the images waiting for the encoder may take, in MB (estimated decoded size;
    /// beyond: 503 with Retry-After).
    #[arg(long, default_value_t = 512)]
    pub queue_memory: u64,
    /// Seconds a client has to send a request's headers.
    #[arg(long, default_value_t = 10)]
    pub header_timeout: u64,
    /// Seconds a client has to send a request's body (larger images need a faster link).
    #[arg(long, default_value_t = 60)]
    pub body_timeout: u64,
    /// Seconds an idle connection (no request in progress) stays open.
    #[arg(long, default_value_t = 30)]
    pub idle_timeout: u64,
    /// Seconds requests in flight get to finish after SIGINT/SIGTERM before they are cut.
    #[arg(long, default_value_t = 20)]
    pub shutdown_grace: u64,
}

/// A time limit in seconds: finite and above zero (so that `Duration` can hold it).
fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        Ok(_) => Err(format!("{s}: a time limit must be above 0 and at most 86400 seconds")),
        Err(e) => Err(format!("{s}: {e}")),
    }
}

pub fn run(args: ServeArgs) -> CliResult<()> {
    if !args.dist.join("index.html").is_file() {
        eprintln!(
            "serve: {} has no built app (run `trunk build` or scripts/build-web.sh): serving the API only",
            args.dist.display()
        );
    }
    let device = init_device(args.backend)?;
    let loaded = args.model.load(StoreDType::F32, &device)?;
    let identity = crate::embeddings::Identity::of(&loaded, args.model.reference_compat);
    let metrics = Arc::new(metrics::Metrics::default());
    let cache = Arc::new(cache::EmbeddingCache::new(identity, args.cache_entries, args.cache_dir.clone(), metrics.clone()));
    let limits = encoder::QueueLimits {
        jobs: args.queue,
        bytes: args.queue_memory.saturating_mul(1 << 20),
        batch: args.batch,
        timeout: Duration::from_secs_f64(args.timeout),
    };
    let encoder = encoder::Encoder::start(loaded.sam, limits, cache.clone(), metrics.clone())
        .context("cannot start the encoder thread")?;
    let shared = match &args.cache_url {
        Some(url) => Some(
            shared::SharedTier::new(url, Duration::from_secs(args.cache_ttl_hours.max(1) * 3600), limits.timeout, metrics.clone())
                .with_context(|| format!("--cache-url {url}"))?,
        ),
        None => None,
    };
    let api = Arc::new(api::Api {
        cache,
        shared,
        encoder,
        metrics: metrics.clone(),
        backend: args.backend,
        max_body: args.max_body,
        max_pixels: args.max_pixels,
        body_timeout: Duration::from_secs(args.body_timeout.max(1)),
    });
    let app = router(&args, api, metrics)?;
    let timeouts = http::Timeouts {
        header: Duration::from_secs(args.header_timeout.max(1)),
        idle: Duration::from_secs(args.idle_timeout.max(1)),
        grace: Duration::from_secs(args.shutdown_grace),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.addr))?;
        let addr = listener.local_addr()?;
        println!("serve: {} on {} — listening on http://{addr}/", loaded.id, args.backend);
        use std::io::Write;
        let _ = std::io::stdout().flush();
        http::serve(listener, app, timeouts).await?;
        anyhow::Ok(())
    })?;
    // The encoder thread may be in the middle of a batch: it ends with the process.
    Ok(())
}

/// The routes and the layers around them (outermost last).
fn router(args: &ServeArgs, api: Arc<api::Api>, metrics: Arc<metrics::Metrics>) -> CliResult<Router> {
    let policy = Arc::new(policy::Policy {
        allowed_hosts: args.allowed_hosts.clone(),
        cors_origins: args.cors_origins.clone(),
    });
    let cors = if args.cors_origins.is_empty() {
        CorsLayer::new()
    } else {
        let origins: Vec<HeaderValue> = args
            .cors_origins
            .iter()
            .map(|o| o.parse().map_err(|_| anyhow::anyhow!("bad CORS origin {o}")))
            .collect::<CliResult<_>>()?;
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers([header::CONTENT_TYPE])
    };
    let api_routes = Router::new()
        .route("/api/v1/embeddings", post(api::embeddings))
        .route("/api/v1/models", get(api::models))
        .with_state(api)
        .layer(from_fn_with_state(policy.clone(), policy::check_api_call))
        .layer(cors);
    let metrics_route = {
        let metrics = metrics.clone();
        get(move || async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.render()) })
    };
    Ok(Router::new()
        .merge(api_routes)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", metrics_route)
        .fallback_service(app_files(&args.dist))
        .layer(from_fn(policy::json_errors))
        .layer(from_fn(policy::isolation_headers))
        .layer(from_fn_with_state(policy, policy::check_request))
        .layer(from_fn_with_state(metrics, metrics::count_requests)))
}

/// The app's files. A release build (scripts/build-web.sh) puts `.br` / `.gz` copies next to
/// the module and the weights; they are sent to browsers that accept them (the module is
/// ≈ 21 MB raw, ≈ 4 MB compressed), with `Content-Encoding` and `Vary: Accept-Encoding`.
fn app_files(dist: &std::path::Path) -> ServeDir {
    ServeDir::new(dist).append_index_html_on_directories(true).precompressed_br().precompressed_gzip()
}
