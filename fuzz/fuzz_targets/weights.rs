//! Weights files and manifests as downloaded (possibly truncated or altered): safetensors
//! parsing and the manifest's checks never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonosam_model::manifest::{Component, WeightsManifest};
use sonosam_model::{StoreDType, TensorMap};

fuzz_target!(|data: &[u8]| {
    if let Ok(map) = TensorMap::from_safetensors(data, "fuzz") {
        for key in map.keys().map(str::to_string).collect::<Vec<_>>() {
            let raw = map.raw(&key).expect("listed");
            let _ = map.get(&key, &raw.shape.clone());
        }
    }
    if let Ok(manifest) = serde_json::from_slice::<WeightsManifest>(data) {
        for component in [Component::ImageEncoder, Component::Decoder] {
            let _ = manifest.load_component(component, StoreDType::F32, data);
        }
    }
});
