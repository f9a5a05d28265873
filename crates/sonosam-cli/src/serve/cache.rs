//! The embedding cache: an LRU in memory in front of an optional folder on disk.
//!
//! Disk entries are the wire format (`sonosam_model::wire`, with its data checksum). An entry
//! is used only if it decodes and describes exactly this model, this encoder, this image and
//! the model's embedding shape; anything else is logged, deleted and counted
//! (`sonosam_disk_cache_errors_total{kind="corrupt"}`), and the image is encoded again. Writes
//! go to a unique temporary file renamed into place, which is removed when the write fails;
//! failing writes (full disk, read-only or vanished folder) are logged once per change of
//! state and counted, and the server carries on with the memory tier.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sonosam_model::wire;

pub use crate::embeddings::{Entry, Identity};
use crate::embeddings::validate;

use super::metrics::Metrics;

#[derive(Default)]
struct Lru {
    map: HashMap<String, Entry>,
    order: VecDeque<String>,
}

pub struct EmbeddingCache {
    identity: Identity,
    memory: Mutex<Lru>,
    capacity: usize,
    disk: Option<DiskTier>,
    metrics: Arc<Metrics>,
}

impl EmbeddingCache {
    pub fn new(identity: Identity, capacity: usize, dir: Option<PathBuf>, metrics: Arc<Metrics>) -> Self {
        let disk = dir.map(DiskTier::open);
        Self { identity, memory: Mutex::new(Lru::default()), capacity, disk, metrics }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The embedding of the image with this hash, from memory or disk.
    pub fn get(&self, image_sha256: &str) -> Option<Entry> {
        let key = self.identity.key(image_sha256);
        if let Some(v) = self.memory_get(&key) {
            return Some(v);
        }
        let v = self.disk.as_ref()?.read(&key, image_sha256, &self.identity, &self.metrics)?;
        self.memory_put(&key, v.clone());
        Some(v)
    }

    /// Keep the embedding of the image with this hash in memory and on disk.
    pub fn put(&self, image_sha256: &str, entry: Entry) {
        let key = self.identity.key(image_sha256);
        if let Some(disk) = &self.disk {
            let header = self.identity.header(image_sha256, "f32", entry.1);
            match wire::encode(&header, &entry.0) {
                Ok(bytes) => disk.write(&key, &bytes, &self.metrics),
                Err(e) => eprintln!("serve: disk cache: cannot serialise {key}: {e}"),
            }
        }
        self.memory_put(&key, entry);
    }

    fn memory_get(&self, key: &str) -> Option<Entry> {
        let mut lru = self.memory.lock().unwrap();
        let v = lru.map.get(key).cloned()?;
        lru.order.retain(|k| k != key);
        lru.order.push_back(key.to_string());
        Some(v)
    }

    fn memory_put(&self, key: &str, entry: Entry) {
        if self.capacity == 0 {
            return;
        }
        let mut lru = self.memory.lock().unwrap();
        lru.order.retain(|k| k != key);
        lru.order.push_back(key.to_string());
        lru.map.insert(key.to_string(), entry);
        while lru.map.len() > self.capacity {
            if let Some(old) = lru.order.pop_front() {
                lru.map.remove(&old);
            }
        }
    }
}

/// The folder tier.
struct DiskTier {
    dir: PathBuf,
    /// Whether the last write failed (logs once per change).
    failing: AtomicBool,
    /// Makes temporary file names unique within the process.
    serial: AtomicU64,
}

impl DiskTier {
    /// Use `dir`: remove temporary files a crash left behind and say now if it is unusable.
    fn open(dir: PathBuf) -> Self {
        let tier = Self { dir, failing: AtomicBool::new(false), serial: AtomicU64::new(0) };
        if let Err(e) = std::fs::create_dir_all(&tier.dir) {
            tier.log_state(Err(&e));
            return tier;
        }
        let stale = std::fs::read_dir(&tier.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"));
        for entry in stale {
            let _ = std::fs::remove_file(entry.path());
        }
        let probe = tier.dir.join(format!(".probe.{}.tmp", std::process::id()));
        let result = std::fs::write(&probe, b"");
        let _ = std::fs::remove_file(&probe);
        if let Err(e) = result {
            tier.log_state(Err(&e));
        }
        tier
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.emb"))
    }

    fn read(&self, key: &str, image_sha256: &str, identity: &Identity, metrics: &Metrics) -> Option<Entry> {
        let path = self.path(key);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                eprintln!("serve: disk cache: cannot read {}: {e}", path.display());
                metrics.disk_error("read");
                return None;
            }
        };
        match validate(&bytes, image_sha256, identity) {
            Ok(entry) => Some(entry),
            Err(why) => {
                eprintln!("serve: disk cache: dropping {}: {why}; the image will be encoded again", path.display());
                metrics.disk_error("corrupt");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    fn write(&self, key: &str, bytes: &[u8], metrics: &Metrics) {
        let mut result = self.write_once(key, bytes);
        if matches!(&result, Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
            // The folder went away (cleaned up, unmounted and remounted): make it again.
            result = std::fs::create_dir_all(&self.dir).and_then(|()| self.write_once(key, bytes));
        }
        if result.is_err() {
            metrics.disk_error("write");
        }
        self.log_state(result.as_ref().map(|_| ()));
    }

    fn write_once(&self, key: &str, bytes: &[u8]) -> std::io::Result<()> {
        let n = self.serial.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!(".{key}.{}.{n}.tmp", std::process::id()));
        let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, self.path(key)));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Say when writes start failing and when they work again.
    fn log_state(&self, result: Result<(), &std::io::Error>) {
        let failed = result.is_err();
        if self.failing.swap(failed, Ordering::Relaxed) == failed {
            return;
        }
        match result {
            Err(e) => eprintln!(
                "serve: disk cache: cannot write to {}: {e}; embeddings are kept in memory only until it works again",
                self.dir.display()
            ),
            Ok(()) => eprintln!("serve: disk cache: writing to {} again", self.dir.display()),
        }
    }
}
