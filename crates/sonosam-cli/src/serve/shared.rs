//! The shared tier: embeddings in Redis for every replica of the server. Lookup order is
//! memory → disk → Redis → encoder, and a new image is encoded once fleet-wide: the replica
//! that takes the image's lock (`SET … NX PX`) encodes it and stores the wire bytes (with a
//! TTL); the others wait for them — polling, within the request's time limit — and encode it
//! themselves when the lock goes without a value (the leader died).
//!
//! Redis down, slow or restarted never fails a request: every call has a short time limit, a
//! failure is a miss, the change of state is logged once and shown as
//! `sonosam_shared_cache_up`, and the next call connects again. A value that is not this
//! model's embedding of this image (the wire header and its data checksum, as on disk) is
//! counted, dropped and encoded again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

use crate::embeddings::{Entry, Identity, validate};
use super::metrics::Metrics;
use sonosam_model::wire;

/// Longest wait for one Redis call (connecting included).
const CALL_LIMIT: Duration = Duration::from_millis(500);
/// How often a follower looks for the leader's result.
const POLL: Duration = Duration::from_millis(100);

pub struct SharedTier {
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    ttl: Duration,
    /// How long a lock lives when its holder dies without releasing it.
    lock_ttl: Duration,
    up: AtomicBool,
    metrics: Arc<Metrics>,
}

/// What taking an image's lock gave.
pub enum Lock {
    /// This replica encodes the image (or Redis is not answering: it encodes anyway).
    Mine,
    /// Another replica is encoding it.
    Theirs,
}

impl SharedTier {
    /// A tier at `url` (`redis://HOST:PORT[/DB]`); nothing is connected until first used.
    pub fn new(url: &str, ttl: Duration, lock_ttl: Duration, metrics: Arc<Metrics>) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        metrics.shared_up.store(0, Ordering::Relaxed);
        Ok(Self { client, conn: Mutex::new(None), ttl, lock_ttl, up: AtomicBool::new(false), metrics })
    }

    /// Run `cmd`, connecting first when needed; `None` (and the state logged) when Redis does
    /// not answer in time or fails.
    async fn call<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Option<T> {
        let result = tokio::time::timeout(CALL_LIMIT, async {
            let mut slot = self.conn.lock().await;
            if slot.is_none() {
                *slot = Some(self.client.get_multiplexed_async_connection().await?);
            }
            let conn = slot.as_mut().expect("connected above");
            let r = cmd.query_async::<T>(conn).await;
            if r.is_err() {
                *slot = None;
            }
            r
        })
        .await;
        let outcome = match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => {
                // A call cut short may leave its connection mid-answer: start afresh.
                *self.conn.lock().await = None;
                Err(format!("no answer within {} ms", CALL_LIMIT.as_millis()))
            }
        };
        self.state(outcome.as_ref().map(|_| ()).map_err(String::as_str));
        outcome.ok()
    }

    /// Log the state when it changes; count errors.
    fn state(&self, result: Result<(), &str>) {
        let up = result.is_ok();
        self.metrics.shared_up.store(u64::from(up), Ordering::Relaxed);
        if let Err(e) = result {
            self.metrics.shared_errors.fetch_add(1, Ordering::Relaxed);
            if self.up.swap(false, Ordering::Relaxed) || self.metrics.shared_errors.load(Ordering::Relaxed) == 1 {
                eprintln!("serve: shared cache: Redis unavailable ({e}); serving from memory, disk and the encoder until it is back");
            }
        } else if !self.up.swap(true, Ordering::Relaxed) {
            eprintln!("serve: shared cache: Redis is answering");
        }
    }

    /// The image's embedding from Redis, when it holds a valid one (a miss is counted).
    pub async fn get(&self, identity: &Identity, image_sha256: &str) -> Option<Entry> {
        self.lookup(identity, image_sha256, true).await
    }

    /// `get` without counting a miss (a follower's polls, the leader's second look).
    pub async fn peek(&self, identity: &Identity, image_sha256: &str) -> Option<Entry> {
        self.lookup(identity, image_sha256, false).await
    }

    /// A valid stored embedding; a foreign or damaged value is counted, deleted and not used.
    async fn lookup(&self, identity: &Identity, image_sha256: &str, count_miss: bool) -> Option<Entry> {
        let key = identity.key(image_sha256);
        let bytes: Option<Vec<u8>> = self.call(redis::cmd("GET").arg(&key)).await.flatten();
        let Some(bytes) = bytes else {
            if count_miss {
                self.metrics.shared_misses.fetch_add(1, Ordering::Relaxed);
            }
            return None;
        };
        match validate(&bytes, image_sha256, identity) {
            Ok(entry) => {
                self.metrics.shared_hits.fetch_add(1, Ordering::Relaxed);
                Some(entry)
            }
            Err(why) => {
                eprintln!("serve: shared cache: dropping {key}: {why}; the image will be encoded again");
                self.metrics.shared_corrupt.fetch_add(1, Ordering::Relaxed);
                let _: Option<i64> = self.call(redis::cmd("DEL").arg(&key)).await;
                None
            }
        }
    }

    /// Store the image's embedding for the other replicas.
    pub async fn put(&self, identity: &Identity, image_sha256: &str, entry: &Entry) {
        let header = identity.header(image_sha256, "f32", entry.1);
        let Ok(bytes) = wire::encode(&header, &entry.0) else { return };
        let key = identity.key(image_sha256);
        let _: Option<()> = self.call(redis::cmd("SET").arg(&key).arg(bytes).arg("PX").arg(self.ttl.as_millis() as u64)).await;
    }

    /// Take the image's lock, unless another replica holds it.
    pub async fn lock(&self, identity: &Identity, image_sha256: &str) -> Lock {
        let key = format!("lock:{}", identity.key(image_sha256));
        let set = redis::cmd("SET").arg(&key).arg(std::process::id()).arg("NX").arg("PX").arg(self.lock_ttl.as_millis() as u64).clone();
        match self.call::<Option<String>>(&set).await {
            Some(None) => Lock::Theirs,
            // Taken, or Redis is not answering: encode here.
            _ => Lock::Mine,
        }
    }

    /// Release the image's lock. (Whoever holds it: a holder slower than the lock's life —
    /// the request time limit — may release a successor's, which costs one extra encoding.)
    pub async fn unlock(&self, identity: &Identity, image_sha256: &str) {
        let _: Option<i64> = self.call(redis::cmd("DEL").arg(format!("lock:{}", identity.key(image_sha256)))).await;
    }

    /// Wait up to `limit` for another replica's result; `None` when its lock went without a
    /// value (it died or failed) or the time is up.
    pub async fn wait(&self, identity: &Identity, image_sha256: &str, limit: Duration) -> Option<Entry> {
        let lock = format!("lock:{}", identity.key(image_sha256));
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
            if let Some(entry) = self.peek(identity, image_sha256).await {
                return Some(entry);
            }
            let held: Option<i64> = self.call(redis::cmd("EXISTS").arg(&lock)).await;
            if held != Some(1) {
                // Released (or Redis gone): one last look, then encode here.
                return self.peek(identity, image_sha256).await;
            }
        }
        None
    }
}
