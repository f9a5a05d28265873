//! Reading labelled images, and their image embeddings through an on-disk cache keyed by
//! model and image hash. The encoder is frozen for evaluation and fine-tuning, so each image
//! is encoded once, ever; an interrupted run keeps everything already encoded.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sonosam_model::weights::sha256_hex;
use sonosam_model::{Geometry, Mask, ModelInput, Sam, preprocess};

use sonosam_data::{Dataset, ImageEntry};
use sonosam_model::backend::{BackendKind, init_device};
use sonosam_model::burn::tensor::Device;
use sonosam_model::StoreDType;

use crate::CliResult;
use crate::embeddings::{Identity, validate};
use crate::images::InputImage;
use crate::model_io::{LoadedModel, ModelArgs};
use crate::progress;

/// A labelled data set, the model that encodes it and where its embeddings are cached: the
/// flags `eval` and `embed` share.
#[derive(clap::Args)]
pub struct DataArgs {
    /// Data folder (BUSI layout with splits.csv, or images/ + masks/).
    #[arg(long)]
    pub data: PathBuf,
    /// Splits file [default: DATA/splits.csv].
    #[arg(long)]
    pub splits: Option<PathBuf>,
    /// Only the first N images of the split (quick checks).
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value = "cpu", value_parser = crate::parse_backend)]
    pub backend: BackendKind,
    /// Weights precision: f32, f16 or i8 (the browser's files; computation is f32).
    #[arg(long, default_value = "f32", value_parser = crate::parse_dtype)]
    pub dtype: StoreDType,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Cache folder for embeddings [env: SONOSAM_CACHE; default: ~/.cache/sonosam].
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Also read and write embeddings in this Redis (`redis://HOST:PORT[/DB]`), as `sonosam
    /// serve --cache-url` does: what one machine encoded, the others and the servers reuse.
    #[arg(long)]
    pub cache_url: Option<String>,
}

impl DataArgs {
    /// The data set and the model, once `split` is known to hold images (checked before the
    /// model loads).
    pub fn open_study(&self, split: &str) -> CliResult<Study> {
        let data = Dataset::open(&self.data, self.splits.as_deref()).map_err(anyhow::Error::msg)?;
        if split_entries(&data, split, self.limit).is_empty() {
            anyhow::bail!("split `{split}` has no images in {}", self.data.display());
        }
        Study::open(data, &self.model, self.dtype, self.backend, self.cache.clone(), self.cache_url.as_deref())
    }
}

/// A labelled data set with the model and its embeddings cache: where `eval` and `finetune`
/// start.
pub struct Study {
    pub data: Dataset,
    pub device: Device,
    pub model: LoadedModel,
    cache: EmbeddingCache,
}

impl Study {
    /// Load the model (`dtype` weights on `backend`) for `data`, with the embeddings cache
    /// under `cache` (see [`cache_root`]).
    pub fn open(data: Dataset, model: &ModelArgs, dtype: StoreDType, backend: BackendKind, cache: Option<PathBuf>, cache_url: Option<&str>) -> CliResult<Self> {
        let device = init_device(backend)?;
        let loaded = model.load(dtype, &device)?;
        let d = &loaded.sam.config.decoder;
        let mut cache = EmbeddingCache::new(
            &cache_root(cache),
            &model_key(&loaded.encoder_sha256, model.reference_compat),
            d.embed_dim * d.embedding_size * d.embedding_size,
        )?;
        if let Some(url) = cache_url {
            let identity = Identity::of(&loaded, model.reference_compat);
            cache.redis = Some(RedisTier::new(url, identity).with_context(|| format!("--cache-url {url}"))?);
        }
        Ok(Self { data, device, model: loaded, cache })
    }

    /// Encode `entries` into the embeddings cache (those `eval` and `finetune` read: images with
    /// a lesion), skipping what it holds already — so an interrupted run, or several machines
    /// each given their own entries, add up. Unreadable images are listed, not fatal.
    pub fn embed(&self, entries: &[&ImageEntry], what: &str) -> CliResult<EmbedSummary> {
        let mut summary = EmbedSummary::default();
        let used: Vec<_> = entries.iter().filter(|e| has_lesion(e)).collect();
        let bar = progress::items(used.len(), "images", what);
        for entry in used {
            bar.inc(1);
            let (bytes, image) = match read_image(&self.data, entry) {
                Ok(v) => v,
                Err(why) => {
                    summary.unreadable.push(why);
                    continue;
                }
            };
            let t = Instant::now();
            let (_, encoded) = self.cache.get_or_encode(&self.model.sam, &preprocess(&image, &self.model.sam.config), &sha256_hex(&bytes))?;
            if encoded {
                summary.encoded += 1;
                summary.encode_seconds += t.elapsed().as_secs_f64();
            } else {
                summary.cached += 1;
            }
        }
        bar.finish_and_clear();
        Ok(summary)
    }

    /// The images of split `split` (the first `limit` of them), with their embeddings; what
    /// was skipped and why is reported.
    pub fn prepare(&self, split: &str, limit: Option<usize>) -> CliResult<Prepared> {
        let entries = split_entries(&self.data, split, limit);
        let prepared = prepare(&self.data, &entries, &self.model.sam, &self.cache, split)?;
        prepared.report_skipped(split);
        Ok(prepared)
    }
}

/// What [`Study::embed`] did.
#[derive(Debug, Default)]
pub struct EmbedSummary {
    pub cached: usize,
    pub encoded: usize,
    pub encode_seconds: f64,
    pub unreadable: Vec<String>,
}

/// An entry's image file and its pixels (an image file, or the first frame of a DICOM file);
/// `Err`: why it cannot be used, naming it.
fn read_image(data: &Dataset, entry: &ImageEntry) -> Result<(Vec<u8>, image::RgbImage), String> {
    let bytes = std::fs::read(data.path(&entry.image)).map_err(|e| format!("{}: unreadable ({e})", entry.image))?;
    let rgb = InputImage::from_bytes(&bytes, Path::new(&entry.image), None).map_err(|e| format!("{}: {e:#}", entry.image))?.rgb;
    Ok((bytes, rgb))
}

/// Whether `eval` and `finetune` use an image: it has a lesion (normal images and images
/// without masks are skipped).
fn has_lesion(entry: &ImageEntry) -> bool {
    entry.label != "normal" && !entry.masks.is_empty()
}

/// The images of split `name` in `data`, the first `limit` of them when given.
pub fn split_entries<'a>(data: &'a Dataset, name: &str, limit: Option<usize>) -> Vec<&'a ImageEntry> {
    let mut entries = data.split(name);
    if let Some(n) = limit {
        entries.truncate(n);
    }
    entries
}

/// Root of caches: `--cache`, `$SONOSAM_CACHE`, `$XDG_CACHE_HOME/sonosam`, `~/.cache/sonosam`.
pub fn cache_root(cli: Option<PathBuf>) -> PathBuf {
    cli.or_else(|| std::env::var_os("SONOSAM_CACHE").map(PathBuf::from))
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("sonosam")))
        .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache/sonosam")))
        .unwrap_or_else(|| PathBuf::from(".cache/sonosam"))
}

const MAGIC: &[u8; 8] = b"SONOEMB1";

/// Embeddings on disk, one file per image, under a folder per model.
pub struct EmbeddingCache {
    dir: PathBuf,
    len: usize,
    /// The replicas' Redis, when given (`--cache-url`).
    redis: Option<RedisTier>,
}

/// A Redis shared with `sonosam serve --cache-url` and other machines: the same keys and the
/// same wire format as the server's, checked the same way. Redis away is not an error: the
/// folder cache and the encoder carry on, and it is said once.
struct RedisTier {
    client: redis::Client,
    conn: std::sync::Mutex<Option<redis::Connection>>,
    identity: Identity,
    /// Whether the last call failed (said once per change).
    failing: std::sync::atomic::AtomicBool,
}

/// Longest wait for one Redis call.
const REDIS_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

impl RedisTier {
    fn new(url: &str, identity: Identity) -> redis::RedisResult<Self> {
        Ok(Self { client: redis::Client::open(url)?, conn: Default::default(), identity, failing: Default::default() })
    }

    fn call<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Option<T> {
        let mut slot = self.conn.lock().unwrap();
        let result = (|| {
            if slot.is_none() {
                let c = self.client.get_connection_with_timeout(REDIS_LIMIT)?;
                c.set_read_timeout(Some(REDIS_LIMIT))?;
                c.set_write_timeout(Some(REDIS_LIMIT))?;
                *slot = Some(c);
            }
            cmd.query::<T>(slot.as_mut().expect("connected above"))
        })();
        let failed = result.is_err();
        if failed {
            *slot = None;
        }
        if self.failing.swap(failed, std::sync::atomic::Ordering::Relaxed) != failed {
            match &result {
                Err(e) => eprintln!("embeddings: Redis unavailable ({e}); using the cache folder and the encoder only"),
                Ok(_) => eprintln!("embeddings: Redis is answering again"),
            }
        }
        result.ok()
    }

    fn get(&self, image_sha256: &str) -> Option<Vec<f32>> {
        let key = self.identity.key(image_sha256);
        let bytes: Vec<u8> = self.call::<Option<Vec<u8>>>(redis::cmd("GET").arg(&key)).flatten()?;
        let (data, _) = validate(&bytes, image_sha256, &self.identity).ok()?;
        Some(std::sync::Arc::try_unwrap(data).unwrap_or_else(|shared| (*shared).clone()))
    }

    fn put(&self, image_sha256: &str, embedding: &[f32], geometry: Geometry) {
        let header = self.identity.header(image_sha256, "f32", geometry);
        let Ok(bytes) = sonosam_model::wire::encode(&header, embedding) else { return };
        let _: Option<()> = self.call(redis::cmd("SET").arg(self.identity.key(image_sha256)).arg(bytes).arg("PX").arg(crate::embeddings::SHARED_TTL_HOURS * 3600 * 1000));
    }
}

impl EmbeddingCache {
    /// `model_key` identifies the encoder weights and configuration.
    pub fn new(root: &Path, model_key: &str, len: usize) -> CliResult<Self> {
        let dir = root.join("embeddings").join(model_key);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self { dir, len, redis: None })
    }

    fn path(&self, image_sha: &str) -> PathBuf {
        self.dir.join(format!("{}.emb", &image_sha[..32]))
    }

    /// A cached embedding; a damaged file is removed and reported as absent.
    pub fn get(&self, image_sha: &str) -> Option<Vec<f32>> {
        let path = self.path(image_sha);
        let bytes = std::fs::read(&path).ok()?;
        if bytes.len() != 8 + 4 * self.len || &bytes[..8] != MAGIC {
            let _ = std::fs::remove_file(&path);
            return None;
        }
        Some(
            bytes[8..]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        )
    }

    /// The embedding of an image whose file hashes to `image_sha` (`input`: it preprocessed):
    /// cached, or encoded by `sam` and cached now (then `true`).
    /// With Redis (`--cache-url`): looked up there after the folder, and stored there too.
    pub fn get_or_encode(&self, sam: &Sam, input: &ModelInput, image_sha: &str) -> CliResult<(Vec<f32>, bool)> {
        if let Some(e) = self.get(image_sha) {
            return Ok((e, false));
        }
        if let Some(e) = self.redis.as_ref().and_then(|r| r.get(image_sha)).filter(|e| e.len() == self.len) {
            self.put(image_sha, &e)?;
            return Ok((e, false));
        }
        let e = sonosam_model::segmentation::read_f32(sam.encode(&[input]))?;
        self.put(image_sha, &e)?;
        if let Some(r) = &self.redis {
            r.put(image_sha, &e, input.geometry);
        }
        Ok((e, true))
    }

    pub fn put(&self, image_sha: &str, embedding: &[f32]) -> CliResult<()> {
        let mut bytes = Vec::with_capacity(8 + 4 * embedding.len());
        bytes.extend_from_slice(MAGIC);
        for v in embedding {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        crate::files::write_atomic(&self.path(image_sha), &bytes)
    }
}

/// Cache key of a model's encoder: its weights hash and whether it runs in reference mode.
pub fn model_key(encoder_sha256: &str, reference_compat: bool) -> String {
    let tag = format!("{encoder_sha256}:{}", if reference_compat { "ref" } else { "std" });
    sha256_hex(tag.as_bytes())[..16].to_string()
}

/// One lesion: an image, one of its masks.
#[derive(Clone)]
pub struct Instance {
    /// Index into [`Prepared::images`].
    pub image: usize,
    pub mask_path: String,
    pub mask: Mask,
}

/// An image ready for the decoder.
pub struct PreparedImage {
    pub entry: ImageEntry,
    pub geometry: Geometry,
    pub embedding: Vec<f32>,
}

/// Images and instances of one split, with every skipped item explained.
pub struct Prepared {
    pub images: Vec<PreparedImage>,
    pub instances: Vec<Instance>,
    pub skipped: Vec<String>,
}

impl Prepared {
    pub fn report_skipped(&self, what: &str) {
        if self.skipped.is_empty() {
            return;
        }
        println!("{what}: {} item(s) skipped:", self.skipped.len());
        let mut normal = 0;
        for s in &self.skipped {
            if s.contains("no lesion mask") {
                normal += 1;
            } else {
                println!("  - {s}");
            }
        }
        if normal > 0 {
            println!("  - {normal} image(s) without a lesion (normal or empty masks)");
        }
    }
}

/// Read the split's images and masks, and their embeddings (from the cache or the encoder).
fn prepare(
    data: &Dataset,
    entries: &[&ImageEntry],
    sam: &Sam,
    cache: &EmbeddingCache,
    what: &str,
) -> CliResult<Prepared> {
    let mut images = Vec::new();
    let mut instances = Vec::new();
    let mut skipped = Vec::new();
    let bar = progress::items(entries.len(), "images", what);
    let (mut encoded, mut cached) = (0, 0);
    let mut encode_time = 0.0;
    for entry in entries {
        bar.inc(1);
        if !has_lesion(entry) {
            skipped.push(format!("{}: no lesion mask", entry.image));
            continue;
        }
        let (bytes, img) = match read_image(data, entry) {
            Ok(v) => v,
            Err(why) => {
                skipped.push(why);
                continue;
            }
        };
        let mut masks = Vec::new();
        for m in &entry.masks {
            match std::fs::read(data.path(m)).map_err(|e| e.to_string()).and_then(|b| {
                Mask::from_image_bytes(&b).map_err(|e| e.to_string())
            }) {
                Ok(mask) if (mask.width, mask.height) != (img.width() as usize, img.height() as usize) => {
                    skipped.push(format!(
                        "{m}: mask is {}×{} but its image is {}×{}",
                        mask.width,
                        mask.height,
                        img.width(),
                        img.height()
                    ));
                }
                Ok(mask) if mask.is_empty() => skipped.push(format!("{m}: no lesion mask (empty)")),
                Ok(mask) => masks.push((m.clone(), mask)),
                Err(e) => skipped.push(format!("{m}: unreadable mask ({e})")),
            }
        }
        if masks.is_empty() {
            continue;
        }
        let input = preprocess(&img, &sam.config);
        let sha = sha256_hex(&bytes);
        let t = Instant::now();
        let (embedding, fresh) = cache.get_or_encode(sam, &input, &sha)?;
        if fresh {
            encode_time += t.elapsed().as_secs_f64();
            encoded += 1;
        } else {
            cached += 1;
        }
        let index = images.len();
        images.push(PreparedImage {
            entry: (*entry).clone(),
            geometry: input.geometry,
            embedding,
        });
        for (mask_path, mask) in masks {
            instances.push(Instance {
                image: index,
                mask_path,
                mask,
            });
        }
    }
    bar.finish_and_clear();
    println!(
        "{what}: {} images, {} instances; embeddings: {cached} cached, {encoded} encoded{}",
        images.len(),
        instances.len(),
        if encoded > 0 {
            format!(" ({:.2} s/image)", encode_time / encoded as f64)
        } else {
            String::new()
        }
    );
    Ok(Prepared {
        images,
        instances,
        skipped,
    })
}
