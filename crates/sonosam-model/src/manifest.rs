//! The weights manifest: what each converted file of a model holds (component, precision), its
//! size and SHA-256, so that every reader — the CLI, the server, the browser — verifies what it
//! loads.

use serde::{Deserialize, Serialize};

use crate::config::SamConfig;
use crate::error::{Result, SamError};
use crate::weights::{StoreDType, TensorMap, verify_sha256};

/// Which part of the model a converted file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// The image encoder.
    ImageEncoder,
    /// Prompt encoder + mask decoder.
    Decoder,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::ImageEncoder => "image_encoder",
            Component::Decoder => "decoder",
        }
    }
}

/// One converted weights file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsFile {
    pub component: Component,
    /// `f32` or `f16`.
    pub dtype: String,
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
}

/// Describes a converted model: what each file holds and its hash, so clients can verify
/// downloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsManifest {
    pub model: String,
    pub config: SamConfig,
    /// SHA-256 of the checkpoint the files were converted from.
    pub source_sha256: String,
    pub files: Vec<WeightsFile>,
}

impl WeightsManifest {
    pub fn file(&self, component: Component, dtype: StoreDType) -> Option<&WeightsFile> {
        self.files
            .iter()
            .find(|f| f.component == component && f.dtype == dtype.suffix())
    }

    /// Check `bytes` against the manifest entry of `component`/`dtype` (size, SHA-256) and
    /// parse them.
    pub fn load_component(
        &self,
        component: Component,
        dtype: StoreDType,
        bytes: &[u8],
    ) -> Result<TensorMap> {
        let entry = self.file(component, dtype).ok_or_else(|| {
            SamError::Invalid(format!(
                "manifest of {} lists no {} {} file",
                self.model,
                dtype.suffix(),
                component.name()
            ))
        })?;
        if bytes.len() as u64 != entry.bytes {
            return Err(SamError::WeightsFormat {
                source_name: entry.file.clone(),
                message: format!(
                    "{} bytes, expected {} (truncated or wrong file)",
                    bytes.len(),
                    entry.bytes
                ),
            });
        }
        verify_sha256(bytes, &entry.sha256, &entry.file)?;
        TensorMap::from_safetensors(bytes, entry.file.clone())
    }

    /// Name of the manifest of model `id`.
    pub fn file_name(id: &str) -> String {
        format!("{id}.json")
    }
}

/// File name of a converted component.
pub fn weights_file_name(id: &str, component: Component, dtype: StoreDType) -> String {
    format!("{id}.{}.{}.safetensors", component.name(), dtype.suffix())
}
