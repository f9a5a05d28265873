//! The binary format of an image embedding on the wire (`POST /api/v1/embeddings` of
//! `sonosam serve`), written by the server and read by the browser app:
//!
//! ```text
//! offset 0   8 bytes   magic "SNSEMB01"
//! offset 8   u32 LE    header length H
//! offset 12  H bytes   JSON header (EmbeddingHeader: model, hashes, dtype, shape, geometry)
//! offset 12+H          the tensor, row-major, little-endian f32 or f16 (IEEE binary16)
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{Result, SamError};
use crate::preprocess::Geometry;

pub const MAGIC: &[u8; 8] = b"SNSEMB01";
/// MIME type of the format.
pub const CONTENT_TYPE: &str = "application/x-sonosam-embedding";

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
}

/// Serialise an embedding (`data` in f32) as `dtype` (`f32` or `f16`).
pub fn encode(header: &EmbeddingHeader, data: &[f32]) -> Result<Vec<u8>> {
    let n: usize = header.shape.iter().product();
    if n != data.len() {
        return Err(SamError::Invalid(format!("embedding has {} values, shape says {n}", data.len())));
    }
    let json = serde_json::to_vec(header).map_err(|e| SamError::Invalid(e.to_string()))?;
    let width = match header.dtype.as_str() {
        "f32" => 4,
        "f16" => 2,
        other => return Err(SamError::Invalid(format!("unknown dtype {other} (f32, f16)"))),
    };
    let mut out = Vec::with_capacity(12 + json.len() + n * width);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    if width == 4 {
        data.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    } else {
        data.iter()
            .for_each(|v| out.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes()));
    }
    Ok(out)
}

/// Parse the format back to the header and f32 values.
pub fn decode(bytes: &[u8]) -> Result<(EmbeddingHeader, Vec<f32>)> {
    let bad = |m: &str| SamError::Invalid(format!("not a sonosam embedding: {m}"));
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(bad("wrong magic"));
    }
    let h = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let body = bytes.get(12..12 + h).ok_or_else(|| bad("truncated header"))?;
    let header: EmbeddingHeader =
        serde_json::from_slice(body).map_err(|e| bad(&format!("header: {e}")))?;
    let n: usize = header.shape.iter().product();
    let data = &bytes[12 + h..];
    let values = match header.dtype.as_str() {
        "f32" if data.len() == 4 * n => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        "f16" if data.len() == 2 * n => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return Err(bad("data size does not match the header (truncated?)")),
    };
    Ok((header, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_f32_and_f16() {
        let header = EmbeddingHeader {
            model: "litemedsam".into(),
            encoder_sha256: "ab".into(),
            image_sha256: "cd".into(),
            dtype: "f32".into(),
            shape: vec![1, 2, 3],
            geometry: Geometry::new(300, 400, 256),
        };
        let data = vec![0.5, -1.25, 3.0, 1e-3, 7.0, -0.0];
        let (h, v) = decode(&encode(&header, &data).unwrap()).unwrap();
        assert_eq!((h, v.clone()), (header.clone(), data.clone()));
        let h16 = EmbeddingHeader { dtype: "f16".into(), ..header };
        let bytes = encode(&h16, &data).unwrap();
        let (_, v) = decode(&bytes).unwrap();
        assert!(v.iter().zip(&data).all(|(a, b)| (a - b).abs() <= 1e-3));
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(b"nonsense").is_err());
    }
}
