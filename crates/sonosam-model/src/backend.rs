//! Run-time backend selection: burn's CPU backend (flex), its GPU backend (wgpu: Vulkan,
//! Metal, DX12 natively; WebGPU in the browser) and CUDA where compiled in.

use std::fmt;
use std::str::FromStr;

#[cfg(feature = "burn")]
use burn::tensor::Device;

#[cfg(feature = "burn")]
use crate::error::{Result, SamError};

/// A backend the user can pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// burn-flex on the CPU.
    Cpu,
    /// burn-wgpu on the GPU (or a software Vulkan driver).
    Wgpu,
    /// burn-cuda (feature `cuda`).
    Cuda,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` so that table columns (`{backend:<8}`) line up.
        f.pad(match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
        })
    }
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" | "flex" => Ok(BackendKind::Cpu),
            "wgpu" | "gpu" | "webgpu" | "vulkan" => Ok(BackendKind::Wgpu),
            "cuda" => Ok(BackendKind::Cuda),
            other => Err(format!("unknown backend `{other}` (cpu, wgpu, cuda)")),
        }
    }
}

/// Threads worth running side by side on `kind`: the cores for the CPU backend (most of its
/// kernels use one core each), one for a GPU.
pub fn host_threads(kind: BackendKind) -> usize {
    match kind {
        BackendKind::Cpu => std::thread::available_parallelism().map_or(1, |n| n.get()),
        _ => 1,
    }
}

#[cfg(all(not(target_family = "wasm"), feature = "wgpu"))]
const NO_GPU_HELP: &str = "no usable GPU adapter. On Linux without a GPU, install a software \
Vulkan driver (Debian/Ubuntu: `sudo apt-get install mesa-vulkan-drivers`), or use --backend cpu";

/// Initialise a device of `kind` (native).
#[cfg(all(not(target_family = "wasm"), feature = "burn"))]
pub fn init_device(kind: BackendKind) -> Result<Device> {
    match kind {
        #[cfg(feature = "flex")]
        BackendKind::Cpu => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            // The wgpu runtime can be registered once per process: keep the first outcome.
            static WGPU: std::sync::OnceLock<std::result::Result<Device, String>> =
                std::sync::OnceLock::new();
            WGPU.get_or_init(|| {
                // wgpu may panic deep inside adapter enumeration on broken drivers: contain it.
                match std::panic::catch_unwind(|| Device::wgpu_options().init()) {
                    Ok(Ok(device)) => Ok(device),
                    Ok(Err(e)) => Err(format!("wgpu: {e}; {NO_GPU_HELP}")),
                    Err(_) => Err(format!("wgpu initialisation failed; {NO_GPU_HELP}")),
                }
            })
            .clone()
            .map_err(SamError::Invalid)
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => Ok(Device::cuda(0)),
        #[allow(unreachable_patterns)]
        other => Err(SamError::Invalid(format!(
            "backend `{other}` is not compiled into this build"
        ))),
    }
}

/// Initialise a device of `kind` without blocking (required in the browser). The wgpu
/// runtime can be registered once per page/process: the first device is kept and handed out
/// again (a second registration fails with "a server is still registered").
#[cfg(feature = "burn")]
pub async fn init_device_async(kind: BackendKind) -> Result<Device> {
    match kind {
        #[cfg(feature = "flex")]
        BackendKind::Cpu => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            thread_local! {
                static WGPU: std::cell::RefCell<Option<Device>> = const { std::cell::RefCell::new(None) };
            }
            if let Some(d) = WGPU.with(|w| w.borrow().clone()) {
                return Ok(d);
            }
            let d = Device::wgpu_options()
                .init_async()
                .await
                .map_err(|e| SamError::Invalid(format!("WebGPU/wgpu unavailable: {e}")))?;
            WGPU.with(|w| *w.borrow_mut() = Some(d.clone()));
            Ok(d)
        }
        #[allow(unreachable_patterns)]
        other => Err(SamError::Invalid(format!(
            "backend `{other}` is not available in this build"
        ))),
    }
}
