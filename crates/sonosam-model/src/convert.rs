//! Checkpoints in: which SAM a PyTorch checkpoint holds (from its keys and shapes), and its
//! conversion into per-component files (f32, f16, int8) with a manifest.

use burn::tensor::Device;

use crate::config::{SamConfig, VitConfig};
use crate::error::{Result, SamError};
use crate::image_encoder::ENCODER_PREFIX;
use crate::manifest::{Component, WeightsFile, WeightsManifest, weights_file_name};
use crate::sam::{DECODER_PREFIXES, Sam};
use crate::weights::{StoreDType, TensorMap, sha256_hex};

/// Split a full checkpoint into per-component safetensors files (f32 and f16), after checking
/// that the model can be built from it. Returns (file name, bytes) pairs and the manifest.
pub fn convert_checkpoint(
    all: &TensorMap,
    config: &SamConfig,
    source_sha256: &str,
    device: &Device,
) -> Result<(Vec<(String, Vec<u8>)>, WeightsManifest)> {
    // Build once: every key and shape is checked, and no tensor is left over.
    Sam::load(config.clone(), all, all, device)?;
    let mut outputs = Vec::new();
    let mut files = Vec::new();
    for component in [Component::ImageEncoder, Component::Decoder] {
        let prefixes: &[&str] = match component {
            Component::ImageEncoder => &[ENCODER_PREFIX],
            Component::Decoder => &DECODER_PREFIXES,
        };
        let mut part = all.subset(prefixes, component.name());
        part.set_metadata("model", config.id.clone());
        part.set_metadata("component", component.name());
        part.set_metadata("source_sha256", source_sha256);
        for dtype in [StoreDType::F32, StoreDType::F16, StoreDType::I8] {
            let bytes = part.to_safetensors(dtype)?;
            let file = weights_file_name(&config.id, component, dtype);
            files.push(WeightsFile {
                component,
                dtype: dtype.suffix().into(),
                file: file.clone(),
                bytes: bytes.len() as u64,
                sha256: sha256_hex(&bytes),
            });
            outputs.push((file, bytes));
        }
    }
    let manifest = WeightsManifest {
        model: config.id.clone(),
        config: config.clone(),
        source_sha256: source_sha256.into(),
        files,
    };
    Ok((outputs, manifest))
}

/// Work out which SAM a checkpoint holds from its keys and shapes: SAM ViT (any size; the
/// released B/L/H get their names), MobileSAM or LiteMedSAM. The model is then built from the
/// same map, which checks every tensor.
pub fn detect_config(w: &TensorMap) -> Result<SamConfig> {
    let shape = |key: &str| w.raw(key).map(|t| t.shape.clone());
    let bad = |message: String| SamError::WeightsFormat {
        source_name: w.source().to_string(),
        message,
    };
    if let Some(pe) = shape("image_encoder.patch_embed.proj.weight") {
        let [d, in_chans, patch, _] = pe[..] else {
            return Err(bad(format!("patch embedding weight has shape {pe:?}")));
        };
        let grid = shape("image_encoder.pos_embed")
            .and_then(|s| s.get(1).copied())
            .ok_or_else(|| bad("ViT checkpoint without image_encoder.pos_embed".into()))?;
        let depth = (0..)
            .take_while(|i| w.contains(&format!("image_encoder.blocks.{i}.norm1.weight")))
            .count();
        if depth == 0 {
            return Err(bad("ViT checkpoint without image_encoder.blocks.*".into()));
        }
        let windows: Vec<usize> = (0..depth)
            .map(|i| {
                shape(&format!("image_encoder.blocks.{i}.attn.rel_pos_h"))
                    .map(|s| s[0].div_ceil(2))
                    .ok_or_else(|| bad(format!("block {i} has no relative position table")))
            })
            .collect::<Result<_>>()?;
        let head_dim = shape("image_encoder.blocks.0.attn.rel_pos_h").map_or(0, |s| s[1]);
        let hidden = shape("image_encoder.blocks.0.mlp.lin1.weight").map_or(0, |s| s[0]);
        let out_chans = shape("image_encoder.neck.0.weight").map_or(0, |s| s[0]);
        if head_dim == 0 || d % head_dim != 0 || hidden % d != 0 {
            return Err(bad(format!(
                "inconsistent ViT shapes: embed {d}, head dim {head_dim}, MLP {hidden}"
            )));
        }
        let vit = VitConfig {
            img_size: grid * patch,
            patch_size: patch,
            in_chans,
            embed_dim: d,
            depth,
            num_heads: d / head_dim,
            mlp_ratio: hidden / d,
            window_size: windows.iter().copied().find(|&s| s != grid).unwrap_or(grid),
            global_attn_indexes: (0..depth).filter(|&i| windows[i] == grid).collect(),
            out_chans,
        };
        let id = [
            ("sam-vit-b", VitConfig::vit_b()),
            ("sam-vit-l", VitConfig::vit_l()),
            ("sam-vit-h", VitConfig::vit_h()),
        ]
        .into_iter()
        .find(|(_, c)| *c == vit)
        .map_or_else(|| format!("sam-vit-{d}x{depth}"), |(id, _)| id.to_string());
        return Ok(SamConfig::sam_vit(&id, vit));
    }
    if let Some(s) = shape("image_encoder.patch_embed.seq.0.c.weight") {
        let config = match s.get(2) {
            Some(1) => SamConfig::lite_medsam(),
            Some(3) => SamConfig::mobile_sam(),
            _ => return Err(bad(format!("TinyViT patch embedding with shape {s:?}"))),
        };
        return Ok(config);
    }
    Err(bad(
        "not a SAM checkpoint: no image_encoder.patch_embed tensor (expected SAM ViT-B/L/H, \
         MobileSAM or LiteMedSAM)"
            .into(),
    ))
}
