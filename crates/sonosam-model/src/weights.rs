//! Weights as a name → tensor map with PyTorch key names and layouts.
//!
//! One map type serves every source: the official PyTorch checkpoints (`.pth`, native only,
//! feature `pth`), the converted per-component safetensors files the browser fetches (f32 or
//! f16), and fine-tuned decoders. Model builders pull tensors out by key with the shape they
//! expect; every mismatch is an error naming the file, the key, and expected vs found.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[cfg(feature = "burn")]
use burn::module::Param;
#[cfg(feature = "burn")]
use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use sha2::{Digest, Sha256};

use crate::error::{Result, SamError};

/// A dense f32 tensor in row-major (PyTorch) layout.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl RawTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }
}

/// Storage precision of a converted weights file. Computation is f32 whatever the storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreDType {
    F32,
    /// Half precision for tensors of rank ≥ 2; vectors (norms, biases, BatchNorm statistics)
    /// stay f32 so that folding and normalisation keep full precision.
    F16,
    /// 8-bit integers with one f32 scale per channel (the first dimension: the output channel
    /// of linear and convolution weights; symmetric, `w ≈ q · scale`, `|q| ≤ 127`), for
    /// weight matrices of at least [`INT8_MIN_VALUES`] values; smaller tensors and vectors
    /// stay f32. Dequantised when the file is read.
    I8,
}

/// Smallest weight tensor stored as int8 (smaller ones — tokens, positional matrices,
/// attention bias tables — stay f32: they weigh little and some are sensitive).
pub const INT8_MIN_VALUES: usize = 4096;

/// Suffix of the per-channel scales of an int8 tensor `key` (`{key}.__scale`).
pub const INT8_SCALE_SUFFIX: &str = ".__scale";

impl StoreDType {
    pub fn suffix(self) -> &'static str {
        match self {
            StoreDType::F32 => "f32",
            StoreDType::F16 => "f16",
            StoreDType::I8 => "i8",
        }
    }
}

/// Quantise `t` to int8 per first-dimension channel: the values and the scales.
fn quantize_i8(t: &RawTensor) -> (Vec<u8>, Vec<f32>) {
    let channels = t.shape[0];
    let per = t.data.len() / channels.max(1);
    let mut q = Vec::with_capacity(t.data.len());
    let mut scales = Vec::with_capacity(channels);
    for row in t.data.chunks(per.max(1)) {
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        q.extend(row.iter().map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8 as u8));
        scales.push(scale);
    }
    (q, scales)
}

/// Reads the gradient of one parameter, flattened in PyTorch layout.
#[cfg(feature = "autodiff")]
pub type GradReader = Box<dyn Fn(&burn::tensor::Gradients) -> Option<Tensor<1>> + Send>;

/// A parameter built from a key while tracking was on (see [`TensorMap::track_params`]).
#[cfg(feature = "autodiff")]
pub struct TrackedParam {
    pub key: String,
    /// Shape in PyTorch layout.
    pub shape: Vec<usize>,
    pub grad: GradReader,
}

/// Named tensors from one source, with bookkeeping of which keys the model consumed.
#[derive(Default)]
pub struct TensorMap {
    source: String,
    tensors: BTreeMap<String, RawTensor>,
    metadata: BTreeMap<String, String>,
    used: RefCell<BTreeSet<String>>,
    /// Precision of the tensors built from this map (default f32).
    #[cfg(feature = "burn")]
    precision: std::cell::Cell<Option<FloatDType>>,
    #[cfg(feature = "autodiff")]
    tracked: RefCell<Option<Vec<TrackedParam>>>,
}

impl std::fmt::Debug for TensorMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorMap")
            .field("source", &self.source)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl TensorMap {
    /// An empty map; `source` names the file in error messages.
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            ..Default::default()
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn insert(&mut self, key: impl Into<String>, tensor: RawTensor) {
        self.tensors.insert(key.into(), tensor);
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    pub fn raw(&self, key: &str) -> Option<&RawTensor> {
        self.tensors.get(key)
    }

    /// Free-form string metadata (safetensors header `__metadata__`).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    pub fn set_metadata(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.metadata.insert(key.into(), value.into());
    }

    /// Remove a metadata entry, returning its value.
    pub fn remove_metadata(&mut self, key: &str) -> Option<String> {
        self.metadata.remove(key)
    }

    /// Number of scalar parameters whose key starts with `prefix`.
    pub fn parameter_count(&self, prefix: &str) -> usize {
        self.tensors
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, t)| t.data.len())
            .sum()
    }

    /// A new map with the tensors whose key starts with one of `prefixes`.
    pub fn subset(&self, prefixes: &[&str], source: impl Into<String>) -> TensorMap {
        let mut out = TensorMap::new(source);
        for (k, t) in &self.tensors {
            if prefixes.iter().any(|p| k.starts_with(p)) {
                out.tensors.insert(k.clone(), t.clone());
            }
        }
        out.metadata = self.metadata.clone();
        out
    }

    /// The weight average `(1 − t)·self + t·other` of two maps holding the same tensors
    /// (WiSE-FT's interpolation of a starting and a fine-tuned model: `t = 0` is `self`, `t = 1`
    /// is `other`); the metadata is `self`'s.
    pub fn interpolate(&self, other: &TensorMap, t: f32, source: impl Into<String>) -> Result<TensorMap> {
        if self.tensors.len() != other.tensors.len() {
            return Err(SamError::Invalid(format!(
                "cannot average {} ({} tensors) with {} ({} tensors)",
                self.source,
                self.tensors.len(),
                other.source,
                other.tensors.len()
            )));
        }
        let mut out = TensorMap::new(source);
        for (k, a) in &self.tensors {
            let b = other.tensors.get(k).filter(|b| b.shape == a.shape).ok_or_else(|| {
                SamError::Invalid(format!("cannot average `{k}`: {} has no tensor of shape {:?}", other.source, a.shape))
            })?;
            let data = a.data.iter().zip(&b.data).map(|(x, y)| x + t * (y - x)).collect();
            out.tensors.insert(k.clone(), RawTensor::new(a.shape.clone(), data));
        }
        out.metadata = self.metadata.clone();
        Ok(out)
    }

    /// Move every tensor of `other` into this map (later keys win).
    pub fn extend(&mut self, other: TensorMap) {
        self.tensors.extend(other.tensors);
    }

    /// Look a tensor up, checking its shape and values, and mark it used.
    pub fn get(&self, key: &str, expected: &[usize]) -> Result<&RawTensor> {
        let t = self
            .tensors
            .get(key)
            .ok_or_else(|| SamError::MissingTensor {
                source_name: self.source.clone(),
                key: key.to_string(),
                expected: expected.to_vec(),
            })?;
        if t.shape != expected {
            return Err(SamError::ShapeMismatch {
                source_name: self.source.clone(),
                key: key.to_string(),
                expected: expected.to_vec(),
                found: t.shape.clone(),
            });
        }
        if t.data.iter().any(|v| !v.is_finite()) {
            return Err(SamError::NonFinite {
                source_name: self.source.clone(),
                key: key.to_string(),
            });
        }
        self.used.borrow_mut().insert(key.to_string());
        Ok(t)
    }

    /// Build tensors from this map in `dtype` (e.g. f64 for reference-grade gradients on the
    /// CPU backend); `None` = f32.
    #[cfg(feature = "burn")]
    pub fn set_precision(&self, dtype: Option<FloatDType>) {
        self.precision.set(dtype);
    }

    /// `data` on `device`, in this map's precision.
    #[cfg(feature = "burn")]
    pub fn to_device<const D: usize>(&self, data: TensorData, device: &Device) -> Tensor<D> {
        let t: Tensor<D> = Tensor::from_data(data, device);
        match self.precision.get() {
            Some(dtype) => t.cast(dtype),
            None => t,
        }
    }

    /// Look a tensor up and put it on `device`.
    #[cfg(feature = "burn")]
    pub fn tensor<const D: usize>(
        &self,
        key: &str,
        shape: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>> {
        let t = self.get(key, &shape)?;
        Ok(self.to_device(TensorData::new(t.data.clone(), shape), device))
    }

    /// A trainable parameter from `key`. With tracking on, its gradient can be read back by
    /// key after a backward pass.
    #[cfg(feature = "burn")]
    pub fn param<const D: usize>(
        &self,
        key: &str,
        shape: [usize; D],
        device: &Device,
    ) -> Result<Param<Tensor<D>>> {
        let param = Param::from_tensor(self.tensor(key, shape, device)?);
        self.track(key, &shape, &param, false);
        Ok(param)
    }

    /// A `[d_out, d_in]` PyTorch linear weight as burn's `[d_in, d_out]` parameter.
    #[cfg(feature = "burn")]
    pub fn param_linear(
        &self,
        key: &str,
        d_in: usize,
        d_out: usize,
        device: &Device,
    ) -> Result<Param<Tensor<2>>> {
        let weight = self.get(key, &[d_out, d_in])?;
        // In 32×32 tiles: rebuilt for every training step, so keep it cache-friendly.
        const TILE: usize = 32;
        let mut transposed = vec![0f32; d_in * d_out];
        for o0 in (0..d_out).step_by(TILE) {
            for i0 in (0..d_in).step_by(TILE) {
                for o in o0..(o0 + TILE).min(d_out) {
                    for i in i0..(i0 + TILE).min(d_in) {
                        transposed[i * d_out + o] = weight.data[o * d_in + i];
                    }
                }
            }
        }
        let t = self.to_device(TensorData::new(transposed, [d_in, d_out]), device);
        let param = Param::from_tensor(t);
        self.track(key, &[d_out, d_in], &param, true);
        Ok(param)
    }

    #[cfg(feature = "autodiff")]
    fn track<const D: usize>(
        &self,
        key: &str,
        shape: &[usize],
        param: &Param<Tensor<D>>,
        transposed: bool,
    ) {
        if let Some(list) = self.tracked.borrow_mut().as_mut() {
            let value = param.val();
            let n: usize = shape.iter().product();
            list.push(TrackedParam {
                key: key.to_string(),
                shape: shape.to_vec(),
                grad: Box::new(move |grads| {
                    value.grad(grads).map(|g| {
                        if transposed {
                            g.swap_dims(0, D - 1).reshape([n])
                        } else {
                            g.reshape([n])
                        }
                    })
                }),
            });
        }
    }

    #[cfg(all(feature = "burn", not(feature = "autodiff")))]
    fn track<const D: usize>(&self, _: &str, _: &[usize], _: &Param<Tensor<D>>, _: bool) {}

    /// Start recording every parameter built through [`param`](Self::param) and
    /// [`param_linear`](Self::param_linear).
    #[cfg(feature = "autodiff")]
    pub fn track_params(&self) {
        *self.tracked.borrow_mut() = Some(Vec::new());
    }

    /// Stop recording and return the parameters recorded since [`track_params`](Self::track_params).
    #[cfg(feature = "autodiff")]
    pub fn take_tracked(&self) -> Vec<TrackedParam> {
        self.tracked.borrow_mut().take().unwrap_or_default()
    }

    /// Replace a tensor's values (same shape), e.g. after an optimiser step.
    pub fn set_data(&mut self, key: &str, data: Vec<f32>) -> Result<()> {
        let t = self
            .tensors
            .get_mut(key)
            .ok_or_else(|| SamError::Invalid(format!("no tensor `{key}` to update")))?;
        if t.data.len() != data.len() {
            return Err(SamError::Invalid(format!(
                "`{key}`: {} values for a tensor of {}",
                data.len(),
                t.data.len()
            )));
        }
        t.data = data;
        Ok(())
    }

    /// Mark keys as deliberately unused (e.g. BatchNorm's `num_batches_tracked`).
    pub fn ignore(&self, key: &str) {
        if self.tensors.contains_key(key) {
            self.used.borrow_mut().insert(key.to_string());
        }
    }

    /// Fail if tensors under `prefix` were not consumed by the model: the file then belongs to
    /// another architecture, and loading it would silently drop weights.
    pub fn check_all_used(&self, prefix: &str) -> Result<()> {
        let used = self.used.borrow();
        let unused: Vec<&String> = self
            .tensors
            .keys()
            .filter(|k| k.starts_with(prefix) && !used.contains(*k))
            .collect();
        match unused.first() {
            None => Ok(()),
            Some(example) => Err(SamError::UnexpectedTensors {
                source_name: self.source.clone(),
                count: unused.len(),
                example: (*example).clone(),
            }),
        }
    }

    /// Parse a safetensors file (F32, F16 or BF16 tensors).
    pub fn from_safetensors(bytes: &[u8], source: impl Into<String>) -> Result<Self> {
        use safetensors::{Dtype, SafeTensors};
        let source = source.into();
        let bad = |message: String| SamError::WeightsFormat {
            source_name: source.clone(),
            message,
        };
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a valid safetensors file ({e}); truncated download?")))?;
        let mut map = TensorMap::new(source.clone());
        if let Ok((_, meta)) = SafeTensors::read_metadata(bytes)
            && let Some(m) = meta.metadata()
        {
            map.metadata = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        // Per-channel scales of int8 tensors: consumed with their tensor, not model weights.
        let scales: HashMap<String, Vec<f32>> = st
            .iter()
            .filter(|(name, view)| name.ends_with(INT8_SCALE_SUFFIX) && view.dtype() == Dtype::F32)
            .map(|(name, view)| {
                let v = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                (name.trim_end_matches(INT8_SCALE_SUFFIX).to_string(), v)
            })
            .collect();
        for (name, view) in st.iter() {
            if name.ends_with(INT8_SCALE_SUFFIX) {
                continue;
            }
            let raw = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::I8 => {
                    let scale = scales.get(&*name).ok_or_else(|| bad(format!("int8 tensor `{name}` has no scales")))?;
                    let channels = view.shape().first().copied().unwrap_or(0);
                    if scale.len() != channels || channels == 0 || raw.len() % channels != 0 {
                        return Err(bad(format!("int8 tensor `{name}`: {} scales for {channels} channels", scale.len())));
                    }
                    let per = raw.len() / channels;
                    raw.iter().enumerate().map(|(i, &q)| f32::from(q as i8) * scale[i / per]).collect()
                }
                Dtype::F32 => raw
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                Dtype::F16 => raw
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => raw
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                other => {
                    // Integer tensors (e.g. `num_batches_tracked`) carry no model weights.
                    if view.shape().iter().product::<usize>() <= 1 {
                        continue;
                    }
                    return Err(bad(format!(
                        "tensor `{name}` has dtype {other:?}; expected F32, F16 or BF16"
                    )));
                }
            };
            map.tensors
                .insert(name.to_string(), RawTensor::new(view.shape().to_vec(), data));
        }
        Ok(map)
    }

    /// Serialise as safetensors; `metadata` is merged into the map's own metadata.
    pub fn to_safetensors(&self, dtype: StoreDType) -> Result<Vec<u8>> {
        use safetensors::{Dtype, tensor::TensorView};
        let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (k, t) in &self.tensors {
            let half = dtype == StoreDType::F16 && t.shape.len() >= 2;
            if dtype == StoreDType::I8 && t.shape.len() >= 2 && t.data.len() >= INT8_MIN_VALUES {
                let (q, scales) = quantize_i8(t);
                buffers.push((k.clone(), Dtype::I8, t.shape.clone(), q));
                let scale_bytes = scales.iter().flat_map(|v| v.to_le_bytes()).collect();
                buffers.push((format!("{k}{INT8_SCALE_SUFFIX}"), Dtype::F32, vec![t.shape[0]], scale_bytes));
                continue;
            }
            let (dt, bytes) = if half {
                (
                    Dtype::F16,
                    t.data
                        .iter()
                        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                        .collect(),
                )
            } else {
                (
                    Dtype::F32,
                    t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            };
            buffers.push((k.clone(), dt, t.shape.clone(), bytes));
        }
        let views = buffers
            .iter()
            .map(|(k, dt, shape, bytes)| {
                TensorView::new(*dt, shape.clone(), bytes).map(|v| (k.clone(), v))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| SamError::Invalid(format!("serialising {}: {e}", self.source)))?;
        let meta: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        safetensors::serialize(views, Some(meta))
            .map_err(|e| SamError::Invalid(format!("serialising {}: {e}", self.source)))
    }

    /// Read a PyTorch checkpoint (`torch.save` of a state dict, optionally nested under
    /// `model` or `state_dict`).
    #[cfg(feature = "pth")]
    pub fn from_pth_file(path: &std::path::Path) -> Result<Self> {
        use pytorch_reader::{DType, PytorchReader};
        let source = path.display().to_string();
        let bad = |message: String| SamError::WeightsFormat {
            source_name: source.clone(),
            message,
        };
        let mut reader = PytorchReader::new(path)
            .map_err(|e| bad(format!("not a readable PyTorch checkpoint: {e}")))?;
        for nested in ["model", "state_dict"] {
            let nested_prefix = format!("{nested}.");
            if reader.keys().iter().all(|k| k.starts_with(&nested_prefix)) && !reader.is_empty() {
                reader = PytorchReader::with_top_level_key(path, nested)
                    .map_err(|e| bad(format!("not a readable PyTorch checkpoint: {e}")))?;
                break;
            }
        }
        let mut map = TensorMap::new(source.clone());
        for (name, t) in reader.tensors() {
            let bytes = t.read().map_err(|e| bad(format!("reading `{name}`: {e}")))?;
            let data: Vec<f32> = match t.dtype() {
                DType::F32 => bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                DType::F16 => bytes
                    .chunks_exact(2)
                    .map(|b| half::f16::from_ne_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                DType::BF16 => bytes
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_ne_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                DType::F64 => bytes
                    .chunks_exact(8)
                    .map(|b| f64::from_ne_bytes(b.try_into().unwrap()) as f32)
                    .collect(),
                // Integer buffers (`num_batches_tracked`, index tables) are not weights.
                _ => continue,
            };
            map.tensors
                .insert(name.clone(), RawTensor::new(t.shape().to_vec(), data));
        }
        if map.is_empty() {
            return Err(bad("holds no float tensors".into()));
        }
        Ok(map)
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Check `bytes` against an expected SHA-256 (hex), naming `source` in the error.
pub fn verify_sha256(bytes: &[u8], expected: &str, source: &str) -> Result<()> {
    let found = sha256_hex(bytes);
    if found.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(SamError::HashMismatch {
            source_name: source.to_string(),
            expected: expected.to_string(),
            found,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolate_averages_matching_tensors_and_refuses_others() {
        let map = |w: [f32; 3], b: f32| {
            let mut m = TensorMap::new("m");
            m.insert("w", RawTensor::new(vec![3], w.to_vec()));
            m.insert("b", RawTensor::new(vec![1], vec![b]));
            m
        };
        let mut start = map([0.0, 2.0, -4.0], 1.0);
        start.set_metadata("mask_logit_bias", "1");
        let tuned = map([4.0, 2.0, 4.0], -1.0);
        let quarter = start.interpolate(&tuned, 0.25, "avg").unwrap();
        assert_eq!(quarter.raw("w").unwrap().data, vec![1.0, 2.0, -2.0]);
        assert_eq!(quarter.raw("b").unwrap().data, vec![0.5]);
        assert_eq!(quarter.metadata()["mask_logit_bias"], "1");
        assert_eq!(start.interpolate(&tuned, 0.0, "a").unwrap().raw("w").unwrap().data, vec![0.0, 2.0, -4.0]);
        assert_eq!(start.interpolate(&tuned, 1.0, "a").unwrap().raw("w").unwrap().data, vec![4.0, 2.0, 4.0]);
        let mut other = TensorMap::new("other");
        other.insert("w", RawTensor::new(vec![3], vec![0.0; 3]));
        other.insert("c", RawTensor::new(vec![1], vec![0.0]));
        assert!(start.interpolate(&other, 0.5, "x").unwrap_err().to_string().contains("cannot average `b`"));
        other.insert("b", RawTensor::new(vec![1], vec![0.0]));
        assert!(start.interpolate(&other, 0.5, "x").unwrap_err().to_string().contains("3 tensors"));
    }

    #[test]
    fn int8_files_round_trip_within_half_a_step_per_channel() {
        let mut map = TensorMap::new("test");
        // Two channels of different ranges (per-channel scales), and a small tensor and a
        // vector that stay f32.
        let big: Vec<f32> = (0..2 * 4096).map(|i| if i < 4096 { (i as f32 * 0.37).sin() } else { (i as f32).cos() * 20.0 }).collect();
        map.insert("w", RawTensor::new(vec![2, 4096], big.clone()));
        map.insert("small", RawTensor::new(vec![2, 3], vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6]));
        map.insert("bias", RawTensor::new(vec![2], vec![1.5, -2.5]));
        let bytes = map.to_safetensors(StoreDType::I8).unwrap();
        assert!(bytes.len() < 2 * 4096 + 1024, "int8 file of {} bytes", bytes.len());
        let back = TensorMap::from_safetensors(&bytes, "test").unwrap();
        assert_eq!(back.keys().collect::<Vec<_>>(), vec!["bias", "small", "w"]);
        let w = back.raw("w").unwrap();
        for (c, max) in [(0usize, 1.0f32), (1, 20.0)] {
            let step = max / 127.0;
            let err = (0..4096).map(|i| (w.data[c * 4096 + i] - big[c * 4096 + i]).abs()).fold(0f32, f32::max);
            assert!(err <= step / 2.0 + 1e-6, "channel {c}: error {err} > half a step {}", step / 2.0);
        }
        assert_eq!(back.raw("small").unwrap().data, vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6]);
        assert_eq!(back.raw("bias").unwrap().data, vec![1.5, -2.5]);
        // Scales missing: a clear error.
        let mut broken = TensorMap::new("broken");
        broken.insert("w", RawTensor::new(vec![2, 4096], big));
        let bytes = broken.to_safetensors(StoreDType::I8).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let w = st.tensor("w").unwrap();
        let only = safetensors::serialize(vec![("w".to_string(), w)], None).unwrap();
        let e = TensorMap::from_safetensors(&only, "broken").unwrap_err().to_string();
        assert!(e.contains("no scales"), "{e}");
    }
}
