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

/// A float tensor's values, borrowed from its data (`x.into_data()`, which takes the tensor's
/// buffer without a copy when no other tensor shares it).
pub fn floats(data: &TensorData) -> &[f32] {
    data.as_slice().expect("a float tensor")
}

/// A tensor of `values` (row-major) on `device`.
pub fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Apply `f` to the values of a CPU tensor (row-major) in place, in chunks of whole multiples
/// of `unit` values: on every core when built with threads (natively, and the browser's
/// threaded build). The tensor's buffer is reused when no other tensor shares it (burn-flex hands
/// it over without a copy, and takes it back as it is).
pub fn map_values<const D: usize>(
    x: Tensor<D>,
    unit: usize,
    f: impl Fn(&mut [f32]) + Send + Sync,
) -> Tensor<D> {
    let device = x.device();
    let mut data = x.into_data();
    let values = data.as_mut_slice::<f32>().expect("a float tensor");
    for_chunks(values, unit * (CHUNK / unit).max(1), |(_, chunk)| f(chunk));
    Tensor::from_data(data, &device)
}

/// `f((i, chunk))` for every `chunk`-long piece of `values` (the last may be shorter), the
/// `i`-th: on every core when built with threads, else in order on this one. A single piece
/// runs here: handing it to the pool from outside it (the browser's model worker, the CLI's
/// main thread) costs a wake-up and a wait, more than a small tensor's work.
pub fn for_chunks(values: &mut [f32], chunk: usize, f: impl Fn((usize, &mut [f32])) + Send + Sync) {
    #[cfg(feature = "threads")]
    if values.len() > chunk {
        use rayon::prelude::*;
        values.par_chunks_mut(chunk).enumerate().for_each(f);
        return;
    }
    values.chunks_mut(chunk).enumerate().for_each(f);
}

/// Define a host kernel `fn name(args) { body }` that runs compiled for AVX2 and FMA where
/// the CPU has them (x86-64 only, checked at run time): the kernels are plain loops over
/// `f32`s that the compiler vectorises, and a portable x86-64 binary otherwise targets SSE2's
/// four lanes. The body is inlined into each variant, so what it calls must be
/// `#[inline(always)]` to be compiled for AVX2 too (the activation kernels' helpers are).
/// Elsewhere (wasm: `simd128` is chosen at build time) there is one variant.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn portable($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    portable($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has both features (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// Values per task of the element-wise kernels (64 KiB of f32).
const CHUNK: usize = 16 * 1024;
