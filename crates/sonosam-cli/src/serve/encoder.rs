//! The encoder: one thread owns the model and encodes queued images in batches.
//!
//! Requests never own an encoding. The first request for a new image queues a job; the job,
//! not the request, puts the finished embedding into the cache and hands it to every request
//! waiting for that image (single flight). A request that times out (504) or whose client goes
//! away leaves the job running, so its result is cached and a retry is a cache hit. The queue
//! is bounded by a count and by a memory budget (the estimated bytes of the waiting images,
//! decoded); beyond either, 503 with Retry-After.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use sonosam_dicom::Dicom;
use sonosam_model::preprocess::preprocess;
use sonosam_model::segmentation::read_f32;
use sonosam_model::{Sam, decode_image};
use tokio::sync::{mpsc, watch};

use super::cache::{EmbeddingCache, Entry};
use super::metrics::Metrics;

/// What a request gets: the embedding, or the status and message of the failure.
pub type Outcome = Result<Entry, (StatusCode, String)>;

/// One image to encode, and where its outcome goes.
struct Job {
    image_sha256: String,
    image: Upload,
    /// Estimated memory of this job while it waits and is encoded.
    cost: u64,
    done: watch::Sender<Option<Outcome>>,
}

/// Limits of the encoder's queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Jobs that may wait.
    pub jobs: usize,
    /// Estimated bytes that waiting jobs may hold (one job is always accepted).
    pub bytes: u64,
    /// Most images encoded together.
    pub batch: usize,
    /// How long a request waits for its embedding.
    pub timeout: Duration,
}

/// The handle requests use.
pub struct Encoder {
    jobs: mpsc::Sender<Job>,
    /// Images being encoded, by image hash: later requests wait on the same outcome.
    inflight: Arc<Mutex<HashMap<String, watch::Receiver<Option<Outcome>>>>>,
    queued_bytes: Arc<AtomicU64>,
    limits: QueueLimits,
    metrics: Arc<Metrics>,
}

impl Encoder {
    /// Start the encoder thread for `sam`; finished embeddings go into `cache`.
    pub fn start(sam: Sam, limits: QueueLimits, cache: Arc<EmbeddingCache>, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(limits.jobs.max(1));
        let inflight = Arc::new(Mutex::new(HashMap::new()));
        let queued_bytes = Arc::new(AtomicU64::new(0));
        let worker = Worker {
            sam,
            batch: limits.batch.max(1),
            cache,
            inflight: inflight.clone(),
            queued_bytes: queued_bytes.clone(),
            metrics: metrics.clone(),
        };
        std::thread::Builder::new().name("encoder".into()).spawn(move || worker.run(rx))?;
        Ok(Self { jobs: tx, inflight, queued_bytes, limits, metrics })
    }

    /// How long a request waits for its embedding (`--timeout`).
    pub fn timeout(&self) -> Duration {
        self.limits.timeout
    }

    /// The embedding of `image` (already inspected: `info`), encoding it if no other request
    /// is doing so already.
    pub async fn embedding(&self, image_sha256: &str, image: Upload, info: (u32, u32)) -> Outcome {
        let mut outcome = {
            let mut inflight = self.inflight.lock().unwrap();
            match inflight.get(image_sha256) {
                Some(rx) => rx.clone(),
                None => {
                    let rx = self.submit(image_sha256, image, info)?;
                    inflight.insert(image_sha256.to_string(), rx.clone());
                    rx
                }
            }
        };
        match tokio::time::timeout(self.limits.timeout, outcome.wait_for(Option::is_some)).await {
            Ok(Ok(v)) => v.clone().expect("waited for Some"),
            Ok(Err(_)) => Err((StatusCode::INTERNAL_SERVER_ERROR, "the encoder stopped".into())),
            Err(_) => Err((
                StatusCode::GATEWAY_TIMEOUT,
                "encoding took longer than the server's time limit (--timeout); it goes on, and \
                 the embedding will be ready for a retry"
                    .into(),
            )),
        }
    }

    /// Queue a job, within the count and the memory budget.
    fn submit(&self, image_sha256: &str, image: Upload, info: (u32, u32)) -> Result<watch::Receiver<Option<Outcome>>, (StatusCode, String)> {
        let busy = |why: &str| Err((StatusCode::SERVICE_UNAVAILABLE, format!("{why}: retry shortly")));
        let cost = job_cost(&image, info);
        let before = self.queued_bytes.fetch_add(cost, Ordering::Relaxed);
        if before > 0 && before + cost > self.limits.bytes {
            self.queued_bytes.fetch_sub(cost, Ordering::Relaxed);
            return busy("the images waiting for the encoder fill its memory budget (--queue-memory)");
        }
        let (done, rx) = watch::channel(None);
        let job = Job { image_sha256: image_sha256.to_string(), image, cost, done };
        if self.jobs.try_send(job).is_err() {
            self.queued_bytes.fetch_sub(cost, Ordering::Relaxed);
            return busy("the encoder queue is full");
        }
        self.metrics.queued.fetch_add(1, Ordering::Relaxed);
        self.metrics.queued_bytes.store(self.queued_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
        Ok(rx)
    }
}

/// What a request asks to encode: an image file, or a frame of a DICOM file (read and checked
/// already: sizes, frame count).
pub enum Upload {
    File(Bytes),
    Dicom(Arc<Dicom>, u32),
}

impl Upload {
    /// The frame as RGB (the encoder thread decodes it).
    fn decode(&self) -> Result<image::RgbImage, String> {
        match self {
            Upload::File(bytes) => decode_image(bytes).map_err(|e| e.to_string()),
            Upload::Dicom(dicom, frame) => dicom.frame(*frame).map_err(|e| e.to_string()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Upload::File(bytes) => bytes.len(),
            Upload::Dicom(..) => 0, // held by the request until the job is done; counted in RGB
        }
    }
}

/// Estimated peak bytes of a job: the file, the decoded RGB image (`width × height`) and the
/// model input.
fn job_cost(image: &Upload, (width, height): (u32, u32)) -> u64 {
    let rgb = u64::from(width) * u64::from(height) * 3;
    image.len() as u64 + rgb + rgb * 4
}

/// The encoder thread's side.
struct Worker {
    sam: Sam,
    batch: usize,
    cache: Arc<EmbeddingCache>,
    inflight: Arc<Mutex<HashMap<String, watch::Receiver<Option<Outcome>>>>>,
    queued_bytes: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl Worker {
    fn run(self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(first) = jobs.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < self.batch {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.metrics.queued.fetch_sub(batch.len() as u64, Ordering::Relaxed);
            let cost: u64 = batch.iter().map(|j| j.cost).sum();
            let t0 = Instant::now();
            // A panic anywhere in a batch fails that batch, never the thread.
            let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.encode(&batch)))
                .unwrap_or_else(|_| {
                    let failed = (StatusCode::INTERNAL_SERVER_ERROR, "the encoder failed on this image".to_string());
                    vec![Err(failed); batch.len()]
                });
            self.metrics.encode_micros.fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
            for (job, outcome) in batch.into_iter().zip(encoded) {
                self.finish(job, outcome);
            }
            let left = self.queued_bytes.fetch_sub(cost, Ordering::Relaxed) - cost;
            self.metrics.queued_bytes.store(left, Ordering::Relaxed);
        }
    }

    /// Decode, preprocess and encode a batch; one outcome per job.
    fn encode(&self, batch: &[Job]) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.len()];
        let mut inputs = Vec::new();
        let mut slots = Vec::new();
        for (i, job) in batch.iter().enumerate() {
            match job.image.decode() {
                Ok(img) => {
                    inputs.push(preprocess(&img, &self.sam.config));
                    slots.push(i);
                }
                Err(e) => outcomes[i] = Some(Err((StatusCode::BAD_REQUEST, e))),
            }
        }
        if !inputs.is_empty() {
            let refs: Vec<_> = inputs.iter().collect();
            let n = self.cache.identity().shape.iter().product::<usize>();
            match read_f32(self.sam.encode(&refs)) {
                Ok(all) => {
                    for ((&i, input), chunk) in slots.iter().zip(&inputs).zip(all.chunks_exact(n)) {
                        outcomes[i] = Some(Ok((Arc::new(chunk.to_vec()), input.geometry)));
                    }
                    self.metrics.encode_count.fetch_add(inputs.len() as u64, Ordering::Relaxed);
                }
                Err(e) => slots.iter().for_each(|&i| {
                    outcomes[i] = Some(Err((StatusCode::INTERNAL_SERVER_ERROR, format!("encoder error: {e}"))));
                }),
            }
        }
        outcomes.into_iter().map(|o| o.expect("every job has an outcome")).collect()
    }

    /// Cache a success, then release the waiting requests (later ones find the cache).
    fn finish(&self, job: Job, outcome: Outcome) {
        if let Ok(entry) = &outcome {
            self.cache.put(&job.image_sha256, entry.clone());
        }
        self.inflight.lock().unwrap().remove(&job.image_sha256);
        job.done.send_replace(Some(outcome));
    }
}
