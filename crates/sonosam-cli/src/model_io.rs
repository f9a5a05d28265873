//! Choosing and loading a model: converted weights (`sonosam weights` / `sonosam convert`) or
//! an official PyTorch checkpoint given with `--checkpoint`.

use anyhow::{Context, anyhow, bail};
use std::path::{Path, PathBuf};

use clap::Args;
use sonosam_model::burn::tensor::Device;
use sonosam_model::config::MODEL_NAMES;
use sonosam_model::convert::detect_config;
use sonosam_model::manifest::{Component, WeightsManifest};
use sonosam_model::sam::DECODER_PREFIXES;
use sonosam_model::{Sam, SamConfig, SamDecoder, StoreDType, TensorMap};

use crate::CliResult;

/// The default model.
pub const DEFAULT_MODEL: &str = "litemedsam";

/// Which model to run, shared by the commands that run one.
#[derive(Args, Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ModelArgs {
    /// Model: litemedsam, mobilesam, sam-vit-b, sam-vit-l, sam-vit-h [default: litemedsam, or
    /// what --checkpoint holds].
    #[arg(long)]
    pub model: Option<String>,
    /// An official PyTorch checkpoint to run directly (sam_vit_b_01ec64.pth,
    /// sam_vit_l_0b3195.pth, sam_vit_h_4b8939.pth, mobile_sam.pt, lite_medsam.pth); the model
    /// is detected from its keys and shapes. Without it, converted weights are loaded from the
    /// weights folder.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Weights folder [env: SONOSAM_WEIGHTS; default: ./weights].
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Reproduce the PyTorch reference outputs exactly: TinyViT without its learned attention
    /// biases, as the reference pipeline ran (see README, "Parity").
    #[arg(long)]
    pub reference_compat: bool,
}

/// A loaded model and what identifies it.
pub struct LoadedModel {
    pub sam: Sam,
    /// Model id (`litemedsam`, `sam-vit-b`, …).
    pub id: String,
    /// SHA-256 of the encoder weights (converted file or checkpoint): keys embedding caches.
    pub encoder_sha256: String,
    /// SHA-256 of the source checkpoint.
    pub source_sha256: String,
    /// The model's own prompt encoder + mask decoder weights (`--decoder base`).
    pub base_decoder: TensorMap,
}

impl ModelArgs {
    pub fn weights_dir(&self) -> PathBuf {
        weights_dir(self.weights.clone())
    }

    /// Load the model on `device` (`dtype` applies to converted weights).
    pub fn load(&self, dtype: StoreDType, device: &Device) -> CliResult<LoadedModel> {
        let loaded = match &self.checkpoint {
            Some(path) => {
                let sha = sha256_file(path)?;
                let map = read_checkpoint(path)?;
                let config = detect_config(&map)?;
                if let Some(name) = &self.model
                    && *name != config.id
                {
                    return Err(anyhow!(
                        "{} holds a {} model, not {name}",
                        path.display(),
                        config.id
                    ));
                }
                let config = self.adjust(config);
                let sam = Sam::load(config, &map, &map, device)?;
                LoadedModel {
                    id: sam.config.id.clone(),
                    encoder_sha256: sha.clone(),
                    source_sha256: sha,
                    base_decoder: map.subset(&DECODER_PREFIXES, path.display().to_string()),
                    sam,
                }
            }
            None => {
                let model = self.model.as_deref().unwrap_or(DEFAULT_MODEL);
                let dir = self.weights_dir();
                let manifest = manifest(&dir, model)?;
                let load = |component| -> CliResult<(TensorMap, String)> {
                    let mut dtype = dtype;
                    // A folder holding only the other precision (the browser's f16 files, say)
                    // still works: computation is f32 either way.
                    let present = |d: StoreDType| manifest.file(component, d).is_some_and(|e| dir.join(&e.file).is_file());
                    if !present(dtype) {
                        let other = if dtype == StoreDType::F32 { StoreDType::F16 } else { StoreDType::F32 };
                        if present(other) {
                            eprintln!("note: no {} weights for {component:?} in {}: using the {} files", dtype.suffix(), dir.display(), other.suffix());
                            dtype = other;
                        }
                    }
                    let entry = manifest.file(component, dtype).ok_or_else(|| {
                        anyhow!("manifest lists no {} {:?} file", dtype.suffix(), component)
                    })?;
                    let bytes = read(&dir.join(&entry.file))?;
                    let map = manifest
                        .load_component(component, dtype, &bytes)?;
                    Ok((map, entry.sha256.clone()))
                };
                let (encoder, encoder_sha256) = load(Component::ImageEncoder)?;
                let (decoder, _) = load(Component::Decoder)?;
                let config = self.adjust(manifest.config.clone());
                let sam = Sam::load(config, &encoder, &decoder, device)?;
                LoadedModel {
                    id: sam.config.id.clone(),
                    encoder_sha256,
                    source_sha256: manifest.source_sha256.clone(),
                    base_decoder: decoder.subset(&DECODER_PREFIXES, "base decoder"),
                    sam,
                }
            }
        };
        Ok(loaded)
    }

    fn adjust(&self, config: SamConfig) -> SamConfig {
        if self.reference_compat {
            config.reference_compat()
        } else {
            config
        }
    }
}

/// `--dir`, else `$SONOSAM_WEIGHTS`, else `./weights`.
pub fn weights_dir(dir: Option<PathBuf>) -> PathBuf {
    dir.or_else(|| std::env::var_os("SONOSAM_WEIGHTS").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("weights"))
}

pub fn config_by_name(name: &str) -> CliResult<SamConfig> {
    SamConfig::by_name(name)
        .with_context(|| format!("unknown model `{name}` ({})", MODEL_NAMES.join(", ")))
}

pub fn read(path: &Path) -> CliResult<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// SHA-256 of a file, streamed (checkpoints reach several GB).
pub fn sha256_file(path: &Path) -> CliResult<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// A PyTorch checkpoint (`.pth`, `.pt`) or a safetensors file holding a whole model.
pub fn read_checkpoint(path: &Path) -> CliResult<TensorMap> {
    if !path.exists() {
        bail!("checkpoint {} does not exist", path.display());
    }
    if path.extension().is_some_and(|e| e == "safetensors") {
        return Ok(TensorMap::from_safetensors(&read(path)?, path.display().to_string())?);
    }
    Ok(TensorMap::from_pth_file(path)?)
}

/// Read the manifest of `model` in `dir`.
pub fn manifest(dir: &Path, model: &str) -> CliResult<WeightsManifest> {
    let path = dir.join(WeightsManifest::file_name(model));
    if !path.exists() {
        let hint = if model == DEFAULT_MODEL {
            "run `sonosam weights` first".to_string()
        } else if SamConfig::by_name(model).is_none() {
            format!("known models: {}", MODEL_NAMES.join(", "))
        } else {
            format!(
                "convert the official checkpoint with `sonosam convert CHECKPOINT --out {}` or \
                 pass it with --checkpoint",
                dir.display()
            )
        };
        return Err(anyhow!(
            "no converted {model} weights in {} (missing {}): {hint}",
            dir.display(),
            path.display()
        ));
    }
    serde_json::from_slice(&read(&path)?)
        .with_context(|| format!("{} is not a valid weights manifest", path.display()))
}

/// Resolve `--decoder`: `base` (the model's own), a fine-tuning run folder (its exported
/// decoder, which must come from the same base model) or a decoder .safetensors file.
pub fn decoder_weights(spec: &str, model_id: &str, base: &TensorMap) -> CliResult<(String, TensorMap)> {
    if spec == "base" {
        return Ok(("base".into(), base.subset(&DECODER_PREFIXES, "base decoder")));
    }
    let path = PathBuf::from(spec);
    let file = if path.is_dir() {
        let card = path.join("model.json");
        if let Ok(bytes) = std::fs::read(&card) {
            let card: serde_json::Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not valid JSON", card.display()))?;
            if let Some(b) = card["base_model"].as_str()
                && b != model_id
            {
                return Err(anyhow!(
                    "{spec} was fine-tuned on {b} embeddings: it cannot decode {model_id} \
                     embeddings (pass --model {b})"
                ));
            }
        }
        path.join("decoder.f32.safetensors")
    } else {
        path.clone()
    };
    let bytes = read(&file)?;
    let map = TensorMap::from_safetensors(&bytes, file.display().to_string())?;
    Ok((spec.to_string(), map))
}

/// The decoder `spec` names (see [`decoder_weights`]) for `model`, loaded on `device`: its
/// name and the decoder.
pub fn load_decoder(spec: &str, model: &LoadedModel, device: &Device) -> CliResult<(String, SamDecoder)> {
    let (name, weights) = decoder_weights(spec, &model.id, &model.base_decoder)?;
    let decoder = SamDecoder::load(&model.sam.config, &weights, device).with_context(|| spec.to_string())?;
    Ok((name, decoder))
}
