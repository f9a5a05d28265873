//! The binary format of an image embedding on the wire (`POST /api/v1/embeddings` of
//! `sonosam serve`) and in the server's disk cache, written by the server and read by the
//! browser app:
//!
//! ```text
//! offset 0   8 bytes   magic "SNSEMB01"
//! offset 8   u32 LE    header length H (at most MAX_HEADER bytes)
//! offset 12  H bytes   JSON header (EmbeddingHeader: model, hashes, dtype, shape, geometry)
//! offset 12+H          the tensor, row-major, little-endian f32 or f16 (IEEE binary16)
//! ```
//!
//! The header's `data_sha256` is the SHA-256 of the tensor bytes as stored: readers check it
//! (when present: files written before it existed lack it) and reject non-finite values, so a
//! damaged cache entry is never used as an embedding.

use serde::{Deserialize, Serialize};

use crate::error::{Result, SamError};
use crate::preprocess::Geometry;
use crate::weights::sha256_hex;

pub const MAGIC: &[u8; 8] = b"SNSEMB01";
/// MIME type of the format.
pub const CONTENT_TYPE: &str = "application/x-sonosam-embedding";
/// Largest JSON header accepted (real headers are ≈ 400 bytes).
pub const MAX_HEADER: usize = 64 * 1024;
/// Largest tensor accepted, in values (SAM's `[1, 256, 64, 64]` is 1 Mi values).
pub const MAX_VALUES: usize = 64 << 20;

/// Every error answer of the server: `{"error": message, "status": code}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    /// What went wrong, for people.
    pub error: String,
    /// The HTTP status code.
    pub status: u16,
}

/// The answer of `GET /api/v1/models`: the models a server computes embeddings with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelsAnswer {
    pub models: Vec<ModelInfo>,
}

/// One model a server runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Model id (`litemedsam`, …).
    pub id: String,
    /// SHA-256 of its encoder weights (what its embeddings are computed with).
    pub encoder_sha256: String,
    /// Side of the model's input frame (256 for LiteMedSAM).
    pub frame: usize,
    /// Shape of an embedding (`[1, 256, 64, 64]`).
    pub embedding_shape: Vec<usize>,
    /// The backend it runs on (`cpu`, `wgpu`).
    pub backend: String,
    /// Embedding dtypes it can send (`f16`, `f32`).
    pub dtypes: Vec<String>,
}

/// What an embedding is: the model and image it comes from and its layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingHeader {
    /// Model id (`litemedsam`, `sam-vit-b`, …).
    pub model: String,
    /// SHA-256 of the encoder weights that computed it.
    pub encoder_sha256: String,
    /// SHA-256 of the image file bytes.
    pub image_sha256: String,
    /// `f32` or `f16`.
    pub dtype: String,
    /// `[1, 256, 64, 64]`.
    pub shape: Vec<usize>,
    /// Where the image sits in the model frame.
    pub geometry: Geometry,
    /// SHA-256 of the tensor bytes that follow the header; set by [`encode`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_sha256: Option<String>,
}

/// Bytes per value of `dtype`.
fn width(dtype: &str) -> Result<usize> {
    match dtype {
        "f32" => Ok(4),
        "f16" => Ok(2),
        other => Err(SamError::Invalid(format!("unknown dtype {other} (f32, f16)"))),
    }
}

/// Number of values of `shape`, if it is a plausible embedding shape.
fn value_count(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n > 0 && n <= MAX_VALUES)
}

/// Serialise an embedding (`data` in f32) as `header.dtype` (`f32` or `f16`); the header's
/// `data_sha256` is computed here.
pub fn encode(header: &EmbeddingHeader, data: &[f32]) -> Result<Vec<u8>> {
    let n = value_count(&header.shape)
        .ok_or_else(|| SamError::Invalid(format!("implausible embedding shape {:?}", header.shape)))?;
    if n != data.len() {
        return Err(SamError::Invalid(format!("embedding has {} values, shape says {n}", data.len())));
    }
    let mut tensor = Vec::with_capacity(n * width(&header.dtype)?);
    if header.dtype == "f32" {
        data.iter().for_each(|v| tensor.extend_from_slice(&v.to_le_bytes()));
    } else {
        data.iter()
            .for_each(|v| tensor.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes()));
    }
    let header = EmbeddingHeader {
        data_sha256: Some(sha256_hex(&tensor)),
        ..header.clone()
    };
    let json = serde_json::to_vec(&header).map_err(|e| SamError::Invalid(e.to_string()))?;
    let mut out = Vec::with_capacity(12 + json.len() + tensor.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&tensor);
    Ok(out)
}

/// Parse the format back to the header and f32 values, checking sizes, the data checksum
/// and that every value is finite.
pub fn decode(bytes: &[u8]) -> Result<(EmbeddingHeader, Vec<f32>)> {
    let bad = |m: &str| SamError::Invalid(format!("not a sonosam embedding: {m}"));
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(bad("wrong magic"));
    }
    let h = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    if h > MAX_HEADER {
        return Err(bad("header too long"));
    }
    let json = bytes.get(12..12 + h).ok_or_else(|| bad("truncated header"))?;
    let header: EmbeddingHeader =
        serde_json::from_slice(json).map_err(|e| bad(&format!("header: {e}")))?;
    let n = value_count(&header.shape).ok_or_else(|| bad("implausible shape"))?;
    let g = header.geometry;
    if !Geometry::plausible(g) {
        return Err(bad("inconsistent geometry"));
    }
    let width = width(&header.dtype).map_err(|e| bad(&e.to_string()))?;
    let data = &bytes[12 + h..];
    if data.len() != n * width {
        return Err(bad("data size does not match the header (truncated?)"));
    }
    if let Some(expected) = &header.data_sha256
        && sha256_hex(data) != *expected
    {
        return Err(bad("data checksum mismatch (corrupt or altered)"));
    }
    let values: Vec<f32> = if width == 4 {
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        data.chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()
    };
    if values.iter().any(|v| !v.is_finite()) {
        return Err(bad("non-finite values"));
    }
    Ok((header, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> EmbeddingHeader {
        EmbeddingHeader {
            model: "litemedsam".into(),
            encoder_sha256: "ab".into(),
            image_sha256: "cd".into(),
            dtype: "f32".into(),
            shape: vec![1, 2, 3],
            geometry: Geometry::new(300, 400, 256),
            data_sha256: None,
        }
    }

    #[test]
    fn round_trip_f32_and_f16() {
        let header = header();
        let data = vec![0.5, -1.25, 3.0, 1e-3, 7.0, -0.0];
        let (h, v) = decode(&encode(&header, &data).unwrap()).unwrap();
        assert!(h.data_sha256.is_some());
        assert_eq!((EmbeddingHeader { data_sha256: None, ..h }, v.clone()), (header.clone(), data.clone()));
        let h16 = EmbeddingHeader { dtype: "f16".into(), ..header };
        let bytes = encode(&h16, &data).unwrap();
        let (_, v) = decode(&bytes).unwrap();
        assert!(v.iter().zip(&data).all(|(a, b)| (a - b).abs() <= 1e-3));
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(b"nonsense").is_err());
    }

    #[test]
    fn damaged_data_is_rejected() {
        let mut bytes = encode(&header(), &[1.0; 6]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        let e = decode(&bytes).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
        // Without a checksum (older writers), non-finite values are still refused.
        let json = serde_json::to_vec(&header()).unwrap();
        let mut old = MAGIC.to_vec();
        old.extend_from_slice(&(json.len() as u32).to_le_bytes());
        old.extend_from_slice(&json);
        for v in [1.0f32, f32::NAN, 2.0, 3.0, 4.0, 5.0] {
            old.extend_from_slice(&v.to_le_bytes());
        }
        assert!(decode(&old).unwrap_err().to_string().contains("non-finite"));
    }

    #[test]
    fn absurd_headers_are_rejected_without_allocating() {
        let mut h = header();
        h.shape = vec![usize::MAX, 2];
        assert!(encode(&h, &[]).is_err());
        let json = serde_json::to_vec(&h).unwrap();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&json);
        assert!(decode(&bytes).unwrap_err().to_string().contains("shape"));
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).unwrap_err().to_string().contains("header"));
    }
}
