//! The crate's own CPU kernels ([`activation`](crate::activation), [`matmul`](crate::matmul)):
//! which tensors they take, and how values go in and out of burn's tensors.
//!
//! A tensor qualifies when it lives on the CPU backend (burn-flex) outside an autodiff graph:
//! inference on the CPU, natively and in the browser. Training and GPUs keep burn's ops.

use burn::tensor::{Device, Tensor, TensorData};

/// Whether `x` lives on the CPU backend outside an autodiff graph.
pub fn on_host<const D: usize>(x: &Tensor<D>) -> bool {
    #[cfg(feature = "flex")]
    {
        let device = x.device();
        !device.is_autodiff() && device == burn::tensor::Device::flex()
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = x;
        false
    }
}

/// The values of a float tensor, row-major (copied only when other tensors share `x`'s buffer
/// or its bytes need realigning).
pub fn values<const D: usize>(x: Tensor<D>) -> Vec<f32> {
    x.into_data().try_into_vec().expect("a float tensor")
}

/// A tensor of `values` (row-major) on `device`.
pub fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Apply `f` to the values of a CPU tensor (row-major), in chunks of whole multiples of
/// `unit` values: on every core when built with threads (natively, and the browser's threaded
/// build).
pub fn map_values<const D: usize>(
    x: Tensor<D>,
    unit: usize,
    f: impl Fn(&mut [f32]) + Send + Sync,
) -> Tensor<D> {
    let shape: [usize; D] = x.dims();
    let device = x.device();
    let mut values = values(x);
    let chunk = unit * (CHUNK / unit).max(1);
    #[cfg(feature = "threads")]
    {
        use rayon::prelude::*;
        values.par_chunks_mut(chunk).for_each(&f);
    }
    #[cfg(not(feature = "threads"))]
    values.chunks_mut(chunk).for_each(&f);
    tensor(values, shape, &device)
}

/// Values per task of the element-wise kernels (64 KiB of f32).
const CHUNK: usize = 16 * 1024;
