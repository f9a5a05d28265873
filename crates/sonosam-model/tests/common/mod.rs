//! Shared helpers of the parity tests: golden fixtures, weights, backends, comparisons.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sonosam_model::burn::tensor::{Device, Tensor};
use sonosam_model::manifest::{Component, WeightsManifest};
use sonosam_model::{Sam, SamDecoder, StoreDType, TensorMap};

/// Repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `../shared` beside the repository.
pub fn shared() -> PathBuf {
    repo_root().join("../shared")
}

pub fn golden_dir() -> PathBuf {
    shared().join("golden")
}

pub const CASES: [&str; 3] = ["benign_93", "malignant_12", "malignant_65_rgb"];

pub use sonosam_model::golden::{Golden, diff};

/// Load `../shared/golden/{name}.safetensors`.
pub fn golden(name: &str) -> Golden {
    let path = golden_dir().join(format!("{name}.safetensors"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("cannot read golden {}: {e}", path.display()));
    Golden::from_bytes(&bytes, name).unwrap()
}

/// The converted weights folder (`$SONOSAM_WEIGHTS` or `<repo>/weights`).
pub fn weights_dir() -> PathBuf {
    std::env::var_os("SONOSAM_WEIGHTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("weights"))
}

pub fn manifest() -> WeightsManifest {
    let path = weights_dir().join("litemedsam.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "no converted weights at {} ({e}): run `cargo run --release -p sonosam-cli -- weights` first",
            path.display()
        )
    });
    serde_json::from_slice(&bytes).unwrap()
}

pub fn component(component: Component, dtype: StoreDType) -> TensorMap {
    let m = manifest();
    let entry = m.file(component, dtype).unwrap();
    let bytes = std::fs::read(weights_dir().join(&entry.file)).unwrap();
    m.load_component(component, dtype, &bytes).unwrap()
}

pub fn load_sam(device: &Device) -> Sam {
    let enc = component(Component::ImageEncoder, StoreDType::F32);
    let dec = component(Component::Decoder, StoreDType::F32);
    Sam::load(manifest().config, &enc, &dec, device).unwrap()
}

/// The model as the golden fixtures were made: the PyTorch reference ran TinyViT with its
/// cached attention-bias table `ab` still zero (computed before the checkpoint was loaded), so
/// the fixtures are reproduced with `attention_biases = false`. See `reference_compat`.
pub fn load_sam_reference(device: &Device) -> Sam {
    let enc = component(Component::ImageEncoder, StoreDType::F32);
    let dec = component(Component::Decoder, StoreDType::F32);
    Sam::load(manifest().config.reference_compat(), &enc, &dec, device).unwrap()
}

pub fn load_decoder(device: &Device) -> SamDecoder {
    let dec = component(Component::Decoder, StoreDType::F32);
    SamDecoder::load(&manifest().config, &dec, device).unwrap()
}

/// The backends under test: flex always; wgpu where an adapter exists. With
/// `SONOSAM_REQUIRE_WGPU=1` (CI) a missing adapter fails the test instead of skipping it.
pub fn device(name: &str) -> Option<Device> {
    match name {
        "cpu" => Some(Device::flex()),
        "wgpu" => match sonosam_model::backend::init_device(sonosam_model::backend::BackendKind::Wgpu) {
            Ok(d) => Some(d),
            Err(e) => {
                if std::env::var("SONOSAM_REQUIRE_WGPU").is_ok_and(|v| v == "1") {
                    panic!("wgpu required (SONOSAM_REQUIRE_WGPU=1) but unavailable: {e}");
                }
                eprintln!("SKIPPED on wgpu: {e}");
                None
            }
        },
        _ => unreachable!(),
    }
}

pub fn read<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    sonosam_model::segmentation::read_f32(t).unwrap()
}

/// Assert closeness, printing the measured error either way.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], max_tol: f32, mean_tol: f32) {
    let (max, mean) = diff(got, want);
    eprintln!("{what}: max |Δ| = {max:.3e}, mean |Δ| = {mean:.3e} (tolerance {max_tol:.0e} / {mean_tol:.0e})");
    assert!(max <= max_tol && mean <= mean_tol, "{what}: max |Δ| {max:.3e} (≤ {max_tol:.0e}), mean |Δ| {mean:.3e} (≤ {mean_tol:.0e})");
}

/// Every 97th element, as the golden `sub.*` tensors.
pub fn every_97th(v: &[f32]) -> Vec<f32> {
    v.iter().step_by(97).copied().collect()
}

/// A golden `u8` mask (`[H, W]`, 0/1) as a [`sonosam_model::Mask`].
pub fn golden_mask(g: &Golden, key: &str) -> sonosam_model::Mask {
    let shape = g.shape(key);
    sonosam_model::Mask {
        width: shape[1],
        height: shape[0],
        data: g.u8(key),
    }
}
