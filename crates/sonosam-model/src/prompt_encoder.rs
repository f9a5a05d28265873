//! Prompt encoder: points, boxes and a mask prompt → sparse tokens `[B, N, 256]` and a dense
//! embedding `[B, 256, 64, 64]`, plus the dense positional encoding of the image grid.
//!
//! Coordinates are in the model's input frame (e.g. 0..256 for LiteMedSAM), already scaled
//! from the original image by [`crate::preprocess::Geometry`].

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use crate::activation::gelu;
use burn::tensor::{Device, Tensor, TensorData};

use crate::common::{ConvSpec, LayerNorm2d, conv2d};
use crate::config::DecoderConfig;
use crate::error::{Result, SamError};
use crate::weights::TensorMap;

pub use crate::prompt::{Point, PointLabel, Prompt};

/// Indices into the learned token table `[not_a_point, point_embeddings[0..4]]`.
const NOT_A_POINT: usize = 0;
const NEGATIVE: usize = 1;
const POSITIVE: usize = 2;
const BOX_TOP_LEFT: usize = 3;
const BOX_BOTTOM_RIGHT: usize = 4;

/// Random Fourier features of 2-D coordinates (SAM's `PositionEmbeddingRandom`).
#[derive(Debug, Clone)]
pub struct FourierFeatures {
    /// `[2, F]`, row-major.
    gaussian: Vec<f32>,
    num_feats: usize,
}

impl FourierFeatures {
    /// Encode a point with coordinates normalised to `[0, 1]` into `2F` features
    /// (`sin` then `cos`), in f32 as the reference does.
    pub fn encode(&self, x: f32, y: f32, out: &mut Vec<f32>) {
        let (cx, cy) = (2.0 * x - 1.0, 2.0 * y - 1.0);
        let f = self.num_feats;
        let two_pi = (2.0 * std::f64::consts::PI) as f32;
        let proj: Vec<f32> = (0..f)
            .map(|k| two_pi * (cx * self.gaussian[k] + cy * self.gaussian[f + k]))
            .collect();
        out.extend(proj.iter().map(|v| v.sin()));
        out.extend(proj.iter().map(|v| v.cos()));
    }
}

impl FourierFeatures {
    /// Features of the `E × E` grid's cell centres (normalised by `E`), laid out `[C, E, E]`.
    fn grid(&self, e: usize) -> Vec<f32> {
        let d = 2 * self.num_feats;
        let mut hwc = Vec::with_capacity(e * e * d);
        for i in 0..e {
            for j in 0..e {
                self.encode((j as f32 + 0.5) / e as f32, (i as f32 + 0.5) / e as f32, &mut hwc);
            }
        }
        let mut chw = vec![0f32; d * e * e];
        for p in 0..e * e {
            for ch in 0..d {
                chw[ch * e * e + p] = hwc[p * d + ch];
            }
        }
        chw
    }
}

/// The fixed random Fourier matrix `[2, C/2]` (`{prefix}.pe_layer.…`).
fn gaussian(w: &TensorMap, prefix: &str, c: &DecoderConfig) -> Result<Vec<f32>> {
    let key = format!("{prefix}.pe_layer.positional_encoding_gaussian_matrix");
    Ok(w.get(&key, &[2, c.embed_dim / 2])?.data.clone())
}

/// Encodes prompts into token embeddings.
#[derive(Module, Debug)]
pub struct PromptEncoder {
    /// `[1, C]` each: not-a-point, negative, positive, box corner 1, box corner 2 (rows of
    /// the token table, each its own parameter so that each can be trained).
    tokens: Vec<Param<Tensor<2>>>,
    /// `[1, C]`: dense embedding used when there is no mask prompt.
    no_mask_embed: Param<Tensor<2>>,
    /// `[1, C, E, E]`: positional encoding of the embedding grid.
    dense_pe: Param<Tensor<4>>,
    mask_conv1: Conv2d,
    mask_norm1: LayerNorm2d,
    mask_conv2: Conv2d,
    mask_norm2: LayerNorm2d,
    mask_conv3: Conv2d,
    /// `[2, C/2]` Fourier projection, kept on the host: prompts are host data.
    #[module(skip)]
    gaussian: Vec<f32>,
    embed_dim: usize,
    embedding_size: usize,
    input_size: usize,
}

impl PromptEncoder {
    /// Build from `{prefix}.*` tensors in SAM's key layout. `input_size` is the model frame.
    pub fn load(
        w: &TensorMap,
        prefix: &str,
        c: &DecoderConfig,
        input_size: usize,
        device: &Device,
    ) -> Result<Self> {
        let ff = FourierFeatures {
            gaussian: gaussian(w, prefix, c)?,
            num_feats: c.embed_dim / 2,
        };
        let dense_pe = ff.grid(c.embedding_size);
        Self::load_with_dense_pe(w, prefix, c, input_size, dense_pe, device)
    }

    /// As [`Self::load`], with the dense positional encoding `[C, E, E]` (what
    /// [`Self::dense_pe`] gives) computed already: it depends only on the fixed Fourier matrix,
    /// and the trainer builds the encoder once per part and step.
    pub fn load_with_dense_pe(
        w: &TensorMap,
        prefix: &str,
        c: &DecoderConfig,
        input_size: usize,
        dense_pe: Vec<f32>,
        device: &Device,
    ) -> Result<Self> {
        let d = c.embed_dim;
        let e = c.embedding_size;
        if dense_pe.len() != d * e * e {
            return Err(SamError::Invalid(format!("dense positional encoding: {} values for {d} × {e} × {e}", dense_pe.len())));
        }
        let gaussian = gaussian(w, prefix, c)?;
        let mut tokens = vec![w.param(&format!("{prefix}.not_a_point_embed.weight"), [1, d], device)?];
        for i in 0..4 {
            tokens.push(w.param(&format!("{prefix}.point_embeddings.{i}.weight"), [1, d], device)?);
        }
        let mic = c.mask_in_chans;
        Ok(Self {
            tokens,
            no_mask_embed: w.param(&format!("{prefix}.no_mask_embed.weight"), [1, d], device)?,
            dense_pe: Param::from_tensor(Tensor::from_data(
                TensorData::new(dense_pe, [1, d, e, e]),
                device,
            ))
            .set_require_grad(false),
            mask_conv1: conv2d(
                w,
                &format!("{prefix}.mask_downscaling.0"),
                ConvSpec::new(1, mic / 4, 2).stride(2),
                true,
                device,
            )?,
            mask_norm1: LayerNorm2d::load(
                w,
                &format!("{prefix}.mask_downscaling.1"),
                mic / 4,
                1e-6,
                device,
            )?,
            mask_conv2: conv2d(
                w,
                &format!("{prefix}.mask_downscaling.3"),
                ConvSpec::new(mic / 4, mic, 2).stride(2),
                true,
                device,
            )?,
            mask_norm2: LayerNorm2d::load(
                w,
                &format!("{prefix}.mask_downscaling.4"),
                mic,
                1e-6,
                device,
            )?,
            mask_conv3: conv2d(
                w,
                &format!("{prefix}.mask_downscaling.6"),
                ConvSpec::new(mic, d, 1),
                true,
                device,
            )?,
            gaussian,
            embed_dim: d,
            embedding_size: e,
            input_size,
        })
    }

    fn fourier(&self) -> FourierFeatures {
        FourierFeatures {
            gaussian: self.gaussian.clone(),
            num_feats: self.embed_dim / 2,
        }
    }

    /// Dense positional encoding of the embedding grid, `[1, C, E, E]`.
    pub fn dense_pe(&self) -> Tensor<4> {
        self.dense_pe.val()
    }

    /// Side of the embedding grid.
    pub fn embedding_size(&self) -> usize {
        self.embedding_size
    }

    /// Side of the mask prompt this encoder takes (4 × the embedding grid).
    pub fn mask_input_size(&self) -> usize {
        4 * self.embedding_size
    }

    /// Sparse tokens of a batch of prompts: `[B, N, C]`. All prompts of a batch must produce
    /// the same number of tokens.
    pub fn embed_sparse(&self, prompts: &[Prompt], device: &Device) -> Result<Tensor<3>> {
        let b = prompts.len();
        if b == 0 {
            return Err(SamError::Prompt("no prompt given".into()));
        }
        let n = prompts[0].num_tokens();
        if prompts.iter().any(|p| p.num_tokens() != n) {
            return Err(SamError::Prompt(
                "prompts of one batch must have the same number of points and boxes".into(),
            ));
        }
        let d = self.embed_dim;
        let ff = self.fourier();
        let size = self.input_size as f32;
        let mut pe = Vec::with_capacity(b * n * d);
        // One-hot rows selecting the learned token added to each position.
        let mut onehot = vec![0f32; b * n * 5];
        let mut row = 0;
        let mut push = |pe: &mut Vec<f32>, x: f32, y: f32, token: usize, is_point: bool| {
            if is_point {
                // Shift to the pixel centre and normalise by the frame.
                ff.encode((x + 0.5) / size, (y + 0.5) / size, pe);
            } else {
                pe.extend(std::iter::repeat_n(0.0, d));
            }
            onehot[row * 5 + token] = 1.0;
            row += 1;
        };
        for prompt in prompts {
            for p in &prompt.points {
                let token = match p.label {
                    PointLabel::Negative => NEGATIVE,
                    PointLabel::Positive => POSITIVE,
                };
                push(&mut pe, p.x, p.y, token, true);
            }
            if !prompt.points.is_empty() && prompt.bbox.is_none() {
                push(&mut pe, 0.0, 0.0, NOT_A_POINT, false);
            }
            if let Some([x0, y0, x1, y1]) = prompt.bbox {
                push(&mut pe, x0, y0, BOX_TOP_LEFT, true);
                push(&mut pe, x1, y1, BOX_BOTTOM_RIGHT, true);
            }
        }
        if n == 0 {
            return Ok(Tensor::zeros([b, 0, d], device));
        }
        // The host data in the table's precision (f64 when training at reference grade).
        let table = self.token_table();
        let dtype = table.dtype();
        let pe = Tensor::<2>::from_data(TensorData::new(pe, [b * n, d]), device).cast(dtype);
        let onehot = Tensor::<2>::from_data(TensorData::new(onehot, [b * n, 5]), device).cast(dtype);
        Ok((pe + onehot.matmul(table)).reshape([b, n, d]))
    }

    /// The learned token table `[5, C]`: not-a-point, negative, positive, box corners.
    fn token_table(&self) -> Tensor<2> {
        Tensor::cat(self.tokens.iter().map(Param::val).collect(), 0)
    }

    /// Dense embedding: from a mask prompt `[B, 1, 4E, 4E]` (low-res logits), or the learned
    /// no-mask embedding broadcast to `[batch, C, E, E]`.
    pub fn embed_dense(&self, mask: Option<Tensor<4>>, batch: usize) -> Tensor<4> {
        match mask {
            Some(m) => {
                let x = gelu(self.mask_norm1.forward(self.mask_conv1.forward(m)));
                let x = gelu(self.mask_norm2.forward(self.mask_conv2.forward(x)));
                self.mask_conv3.forward(x)
            }
            None => {
                let (d, e) = (self.embed_dim, self.embedding_size);
                self.no_mask_embed
                    .val()
                    .reshape([1, d, 1, 1])
                    .expand([batch, d, e, e])
            }
        }
    }
}
