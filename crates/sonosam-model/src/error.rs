//! Errors of the model crate. Every error says which input was wrong and what was expected.

use thiserror::Error;

/// Anything that can go wrong loading weights, reading images or running the model.
#[derive(Debug, Error)]
pub enum SamError {
    /// A weights file could not be parsed at all (truncated, corrupt, not the format).
    #[error("weights file {source_name}: {message}")]
    WeightsFormat { source_name: String, message: String },

    /// A tensor the model needs is absent from the weights file.
    #[error("weights file {source_name}: missing tensor `{key}` (expected shape {expected:?}); is this the right model for this file?")]
    MissingTensor {
        source_name: String,
        key: String,
        expected: Vec<usize>,
    },

    /// A tensor exists but has the wrong shape.
    #[error("weights file {source_name}: tensor `{key}` has shape {found:?}, expected {expected:?}; the file belongs to another model configuration")]
    ShapeMismatch {
        source_name: String,
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    /// A tensor holds NaN or infinite values.
    #[error("weights file {source_name}: tensor `{key}` contains non-finite values (corrupt file?)")]
    NonFinite { source_name: String, key: String },

    /// The file holds tensors this model does not use (a different architecture).
    #[error("weights file {source_name}: {count} unexpected tensor(s) for this model, e.g. `{example}`; the file belongs to another model")]
    UnexpectedTensors {
        source_name: String,
        count: usize,
        example: String,
    },

    /// A file's hash does not match the expected one.
    #[error("{source_name}: sha256 {found}, expected {expected} (truncated or altered download?)")]
    HashMismatch {
        source_name: String,
        expected: String,
        found: String,
    },

    /// The image could not be decoded or is unusable.
    #[error("image: {0}")]
    Image(String),

    /// The image is larger than this build accepts (checked from its header).
    #[error("image: {0}")]
    ImageTooLarge(String),

    /// A prompt (box, point, mask) is invalid for the image.
    #[error("prompt: {0}")]
    Prompt(String),

    /// Any other invalid input.
    #[error("{0}")]
    Invalid(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, SamError>;
