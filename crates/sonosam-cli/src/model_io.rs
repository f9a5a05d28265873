//! Finding and loading converted weights.

use std::path::{Path, PathBuf};

use sonosam_model::burn::tensor::Device;
use sonosam_model::sam::{Component, WeightsManifest};
use sonosam_model::{Sam, SamConfig, StoreDType};

use crate::CliResult;

/// The default model.
pub const DEFAULT_MODEL: &str = "litemedsam";

/// `--dir`, else `$SONOSAM_WEIGHTS`, else `./weights`.
pub fn weights_dir(dir: Option<PathBuf>) -> PathBuf {
    dir.or_else(|| std::env::var_os("SONOSAM_WEIGHTS").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("weights"))
}

pub fn config_by_name(name: &str) -> CliResult<SamConfig> {
    match name {
        "litemedsam" => Ok(SamConfig::lite_medsam()),
        "mobilesam" => Ok(SamConfig::mobile_sam()),
        other => Err(format!("unknown model `{other}` (litemedsam, mobilesam)")),
    }
}

pub fn read(path: &Path) -> CliResult<Vec<u8>> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Read the manifest of `model` in `dir`.
pub fn manifest(dir: &Path, model: &str) -> CliResult<WeightsManifest> {
    let path = dir.join(WeightsManifest::file_name(model));
    if !path.exists() {
        return Err(format!(
            "no converted weights in {} (missing {}): run `sonosam weights` first",
            dir.display(),
            path.display()
        ));
    }
    serde_json::from_slice(&read(&path)?)
        .map_err(|e| format!("{} is not a valid weights manifest: {e}", path.display()))
}

/// Load the whole model from converted files, verifying sizes and hashes. With
/// `reference_compat`, the model reproduces the PyTorch reference outputs exactly (see
/// [`SamConfig::reference_compat`]).
pub fn load_sam(
    dir: &Path,
    model: &str,
    dtype: StoreDType,
    reference_compat: bool,
    device: &Device,
) -> CliResult<Sam> {
    let manifest = manifest(dir, model)?;
    let load = |component| -> CliResult<_> {
        let entry = manifest.file(component, dtype).ok_or_else(|| {
            format!("manifest lists no {} {:?} file", dtype.suffix(), component)
        })?;
        let bytes = read(&dir.join(&entry.file))?;
        manifest
            .load_component(component, dtype, &bytes)
            .map_err(|e| e.to_string())
    };
    let encoder = load(Component::ImageEncoder)?;
    let decoder = load(Component::Decoder)?;
    let mut config = manifest.config.clone();
    if reference_compat {
        config = config.reference_compat();
    }
    Sam::load(config, &encoder, &decoder, device).map_err(|e| e.to_string())
}
