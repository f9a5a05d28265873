//! What identifies an embedding in every cache the server and the data commands keep — memory,
//! disk, Redis, the browser's: the model, its encoder (and the encoder's mode), the shape, the
//! frame and the image — and the check that stored bytes are exactly that.

use std::sync::Arc;

use sonosam_model::preprocess::Geometry;
use sonosam_model::weights::sha256_hex;
use sonosam_model::wire::{self, EmbeddingHeader};

use crate::model_io::LoadedModel;

/// How long an embedding stays in the replicas' Redis by default (a week): `serve
/// --cache-ttl-hours` and the data commands' `--cache-url`.
pub const SHARED_TTL_HOURS: u64 = 168;

/// An embedding (f32 values) and where its image sits in the model frame.
pub type Entry = (Arc<Vec<f32>>, Geometry);

/// What every embedding of one model is: the model, its encoder (and mode), the shape, the frame.
#[derive(Debug, Clone)]
pub struct Identity {
    pub model_id: String,
    pub encoder_sha256: String,
    pub shape: Vec<usize>,
    /// Side of the model's input frame.
    pub frame: usize,
}

impl Identity {
    /// The header of an embedding of the image with this hash.
    pub fn header(&self, image_sha256: &str, dtype: &str, geometry: Geometry) -> EmbeddingHeader {
        EmbeddingHeader {
            model: self.model_id.clone(),
            encoder_sha256: self.encoder_sha256.clone(),
            image_sha256: image_sha256.to_string(),
            dtype: dtype.to_string(),
            shape: self.shape.clone(),
            geometry,
            data_sha256: None,
        }
    }

    /// The cache key of an image: the encoder and the image.
    pub fn key(&self, image_sha256: &str) -> String {
        format!("{}-{image_sha256}", &self.encoder_sha256[..16.min(self.encoder_sha256.len())])
    }
}

impl Identity {
    /// The identity of `model`'s embeddings. The reference-compat encoder's differ from the
    /// default one's, so they get an encoder hash of their own: no cache mixes them.
    pub fn of(model: &LoadedModel, reference_compat: bool) -> Self {
        let d = &model.sam.config.decoder;
        let encoder_sha256 = if reference_compat {
            sha256_hex(format!("{}:reference-compat", model.encoder_sha256).as_bytes())
        } else {
            model.encoder_sha256.clone()
        };
        Self {
            model_id: model.id.clone(),
            encoder_sha256,
            shape: vec![1, d.embed_dim, d.embedding_size, d.embedding_size],
            frame: model.sam.config.img_size(),
        }
    }
}

/// Stored bytes (disk or Redis) as an embedding of this model and image, or why not.
pub fn validate(bytes: &[u8], image_sha256: &str, identity: &Identity) -> Result<Entry, String> {
    let (h, data) = wire::decode(bytes).map_err(|e| e.to_string())?;
    let mismatch = |what: &str, found: &dyn std::fmt::Debug, expected: &dyn std::fmt::Debug| {
        Err(format!("its {what} is {found:?}, expected {expected:?}"))
    };
    if h.model != identity.model_id {
        return mismatch("model", &h.model, &identity.model_id);
    }
    if h.encoder_sha256 != identity.encoder_sha256 {
        return mismatch("encoder", &h.encoder_sha256, &identity.encoder_sha256);
    }
    if h.shape != identity.shape {
        return mismatch("shape", &h.shape, &identity.shape);
    }
    if h.geometry.frame != identity.frame {
        return mismatch("frame", &h.geometry.frame, &identity.frame);
    }
    if h.image_sha256 != image_sha256 {
        return mismatch("image hash", &h.image_sha256, &image_sha256);
    }
    Ok((Arc::new(data), h.geometry))
}
