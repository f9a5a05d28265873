//! # sonosam-model
//!
//! The Segment Anything Model (SAM) in [burn], as used by sonosam for breast-ultrasound lesion
//! segmentation: LiteMedSAM by default; MobileSAM and SAM ViT-B/L/H through the same code. One
//! module per paper component: [`image_encoder`], [`prompt_encoder`], [`transformer`],
//! [`mask_decoder`]; [`Predictor`] answers prompts about one image, as SAM's own predictor.
//!
//! The crate does no I/O beyond bytes in and out (except reading `.pth` files with the `pth`
//! feature); the backend is chosen at run time through burn's `Device`. Without the `burn`
//! feature (which every backend feature turns on) only the model-free part is built: prompts,
//! masks, pre/post-processing, measurements, exports, reports, weights files and manifests.
//! Pre- and post-processing are pure Rust and shared by the native binary and the browser.
//!
//! ```text
//! image bytes ─ decode_image ─ preprocess ─► [1,3,S,S] ─ ImageEncoder ─► [1,256,64,64]
//! box/points (original px) ─ Geometry::prompt_to_frame ─► Prompt ─┐            │
//!                       SamDecoder::decode (through Predictor) ◄───┴────────────┘
//!        ─► low-res logits [B,M,256,256], IoU [B,M] ─ Segmentation::from_outputs ─► masks
//! ```

// The model: one module per component of the SAM paper, and the whole.
#[cfg(feature = "burn")]
pub mod image_encoder;
#[cfg(feature = "burn")]
pub mod mask_decoder;
#[cfg(feature = "burn")]
pub mod prompt_encoder;
#[cfg(feature = "burn")]
pub mod sam;
#[cfg(feature = "burn")]
pub mod transformer;

// Prompts as given: points and a box (model-free).
pub mod prompt;

// Configuration of every supported model (LiteMedSAM, MobileSAM, SAM ViT-B/L/H).
pub mod config;

// Weights: safetensors maps and precisions, manifests of converted files, conversion and
// detection of PyTorch checkpoints.
#[cfg(feature = "burn")]
pub mod convert;
pub mod manifest;
pub mod weights;

// Pre- and post-processing: image bytes to the model input, logits to masks.
pub mod postprocess;
pub mod preprocess;
pub mod segmentation;

// The predictor: one image, prompts in its pixels, masks at its size.
#[cfg(feature = "burn")]
pub mod predictor;
// The interactive setup: decode, click the largest error, feed the logits back.
#[cfg(all(feature = "burn", not(target_family = "wasm")))]
pub mod interactive;

// Masks and what is made of them: measurements, overlays, exports, reports, box prompts.
pub mod box_prompts;
pub mod clicker;
pub mod export;
pub mod mask;
pub mod measure;
pub mod overlay;
pub mod report;

// Embeddings on the wire (the server's API and caches).
pub mod wire;

// Backends and the kernels the crate adds to burn's.
#[cfg(feature = "burn")]
pub mod activation;
pub mod backend;
#[cfg(feature = "burn")]
mod common;
#[cfg(feature = "burn")]
pub mod depthwise;
#[cfg(feature = "burn")]
mod host;
#[cfg(feature = "burn")]
pub mod matmul;

// Training the mask decoder, and its deterministic random numbers.
pub mod rng;
#[cfg(all(feature = "autodiff", not(target_family = "wasm")))]
pub mod train;

pub mod error;

/// Test fixtures: the PyTorch reference outputs in `../shared/golden` (panics on a missing
/// fixture — for tests only).
#[cfg(feature = "testing")]
pub mod golden;

pub use config::SamConfig;
pub use error::{Result, SamError};
pub use mask::Mask;
pub use preprocess::{Geometry, ModelInput, decode_image, preprocess};
#[cfg(feature = "burn")]
pub use predictor::Predictor;
pub use prompt::{Point, PointLabel, Prompt};
#[cfg(feature = "burn")]
pub use sam::{Sam, SamDecoder};
pub use segmentation::Segmentation;
pub use weights::{StoreDType, TensorMap};

/// Re-export of burn, so dependents use the same version.
#[cfg(feature = "burn")]
pub use burn;
