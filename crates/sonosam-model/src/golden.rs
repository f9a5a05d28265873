//! Reader for reference fixtures (outputs of the original PyTorch code saved as safetensors
//! with float, integer and byte tensors), and the error measure used against them. Used by
//! the parity tests natively and in the browser.

use std::collections::HashMap;

use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Result, SamError};

/// A fixture file.
pub struct Golden {
    pub name: String,
    tensors: HashMap<String, (Vec<usize>, Dtype, Vec<u8>)>,
}

impl Golden {
    pub fn from_bytes(bytes: &[u8], name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let st = SafeTensors::deserialize(bytes).map_err(|e| SamError::WeightsFormat {
            source_name: name.clone(),
            message: e.to_string(),
        })?;
        let tensors = st
            .iter()
            .map(|(k, v)| (k.to_string(), (v.shape().to_vec(), v.dtype(), v.data().to_vec())))
            .collect();
        Ok(Self { name, tensors })
    }

    pub fn has(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    fn entry(&self, key: &str, dtype: Dtype) -> &[u8] {
        let (_, dt, b) = self
            .tensors
            .get(key)
            .unwrap_or_else(|| panic!("{}: no tensor `{key}`", self.name));
        assert_eq!(*dt, dtype, "{}: `{key}` has dtype {dt:?}", self.name);
        b
    }

    pub fn shape(&self, key: &str) -> Vec<usize> {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("{}: no tensor `{key}`", self.name))
            .0
            .clone()
    }

    pub fn f32(&self, key: &str) -> Vec<f32> {
        self.entry(key, Dtype::F32)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    pub fn i64(&self, key: &str) -> Vec<i64> {
        self.entry(key, Dtype::I64)
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect()
    }

    pub fn u8(&self, key: &str) -> Vec<u8> {
        self.entry(key, Dtype::U8).to_vec()
    }

    /// A float tensor on `device`.
    pub fn tensor<const D: usize>(&self, key: &str, device: &Device) -> Tensor<D> {
        let shape: [usize; D] = self
            .shape(key)
            .try_into()
            .unwrap_or_else(|_| panic!("{}: `{key}` is not rank {D}", self.name));
        Tensor::from_data(TensorData::new(self.f32(key), shape), device)
    }
}

/// (max |a − b|, mean |a − b|).
pub fn diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let mut max = 0f32;
    let mut sum = 0f64;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        max = max.max(if d.is_nan() { f32::INFINITY } else { d });
        sum += f64::from(d);
    }
    (max, (sum / a.len().max(1) as f64) as f32)
}
