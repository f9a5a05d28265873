//! # sonosam-model
//!
//! The Segment Anything Model (SAM) in [burn], as used by sonosam for breast-ultrasound lesion
//! segmentation: LiteMedSAM by default, MobileSAM through the same code. One module per paper
//! component: [`image_encoder`], [`prompt_encoder`], [`transformer`], [`mask_decoder`].
//!
//! The crate does no I/O beyond bytes in and out (except reading `.pth` files with the `pth`
//! feature); the backend is chosen at run time through burn's [`Device`](burn::tensor::Device).
//! Pre- and post-processing are pure Rust and shared by the native binary and the browser.
//!
//! ```text
//! image bytes ─ decode_image ─ preprocess ─► [1,3,S,S] ─ ImageEncoder ─► [1,256,64,64]
//! box/points (original px) ─ Geometry::prompt_to_frame ─► Prompt ─┐            │
//!                                        SamDecoder::decode ◄─────┴────────────┘
//!        ─► low-res logits [B,M,256,256], IoU [B,M] ─ Segmentation::from_outputs ─► masks
//! ```

pub mod activation;
pub mod backend;
pub mod common;
pub mod config;
pub mod error;
pub mod export;
pub mod golden;
pub mod image_encoder;
pub mod mask;
pub mod measure;
pub mod mask_decoder;
pub mod overlay;
pub mod postprocess;
pub mod preprocess;
pub mod predictor;
pub mod prompt_encoder;
pub mod rng;
pub mod sam;
pub mod segmentation;
#[cfg(all(feature = "autodiff", not(target_family = "wasm")))]
pub mod train;
pub mod transformer;
pub mod weights;
pub mod wire;

pub use config::SamConfig;
pub use error::{Result, SamError};
pub use mask::Mask;
pub use preprocess::{Geometry, ModelInput, decode_image, preprocess};
pub use predictor::Predictor;
pub use prompt_encoder::{Point, PointLabel, Prompt};
pub use sam::{Sam, SamDecoder};
pub use segmentation::Segmentation;
pub use weights::{StoreDType, TensorMap};

/// Re-export of burn, so dependents use the same version.
pub use burn;
