#!/usr/bin/env bash
# Runs every test of sonosam: native unit, property and parity tests (CPU and wgpu), the
# server's regression tests, the browser tests (wasm-bindgen-test in headless Chromium, WebGPU
# and CPU: model parity and the app's components) of the single-threaded build and the model
# parity of the threaded one, and the end-to-end test of the built app (both builds) driven
# through ChromeDriver. Opt-in, as they are slow: the fuzz targets for a bounded time
# (SONOSAM_FUZZ_SECONDS per target, e.g. 12: with installing cargo-fuzz and their own
# AddressSanitizer build, 6.5 min on a clean 2-core machine) and the image encoder in the browser
# (SONOSAM_SLOW_BROWSER_TESTS=1). Installs what it needs when missing: Debian packages
# (chromium, chromium-driver, mesa-vulkan-drivers, redis-server for the shared-cache test), the
# wasm32 target, wasm-bindgen-cli at the version in Cargo.lock, the pinned nightly with rust-src
# (scripts/nightly.sh), cargo-fuzz when fuzzing, the LiteMedSAM weights, the DICOM test data
# (pydicom from PyPI, scripts/dicom-test-data.sh) and kubernetes-validate (PyPI,
# scripts/validate-deploy.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\n== %s (%s)\n' "$*" "$(date +%T)"; }

# --- system packages -----------------------------------------------------------------
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need+=(mesa-vulkan-drivers libvulkan1)
python3 -c "import venv, ensurepip" 2>/dev/null || need+=(python3-venv)
command -v npm >/dev/null || need+=(npm)
command -v redis-server >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --- Rust toolchain pieces -------------------------------------------------------------
rustup target list --installed | grep -q wasm32-unknown-unknown || {
  log "adding the wasm32 target"; rustup target add wasm32-unknown-unknown; }
wb_version=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
if [ "$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $2}')" != "$wb_version" ]; then
  log "installing wasm-bindgen-cli $wb_version"
  cargo install wasm-bindgen-cli --version "$wb_version" --force
fi

# --- native build, weights, tests ------------------------------------------------------
log "building"
cargo build --workspace --all-targets
log "weights"
./target/debug/sonosam weights
log "DICOM test data (pydicom's ultrasound files from PyPI, decoded by pydicom)"
./scripts/dicom-test-data.sh
# axe-core (npm), the accessibility checker the end-to-end test runs in the page.
axe=target/axe/node_modules/axe-core/axe.min.js
[ -f "$axe" ] || { log "axe-core from npm"; npm install --prefix target/axe --no-save --silent axe-core@4.14.1 >/dev/null; }
# The software Vulkan driver (lavapipe) gives wgpu an adapter here: the wgpu tests must run.
export SONOSAM_REQUIRE_WGPU="${SONOSAM_REQUIRE_WGPU:-1}"
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  export XDG_RUNTIME_DIR="${TMPDIR:-/tmp}/sonosam-xdg-$(id -u)"; mkdir -p -m 700 "$XDG_RUNTIME_DIR"
fi
log "building the browser app (single-threaded and threaded) for the end-to-end test"
# Without Trunk here: installing it takes 10–30 min on 2 cores (the demo installs it).
SONOSAM_NO_TRUNK=1 ./scripts/build-web.sh target/e2e-dist
export SONOSAM_E2E_DIST=target/e2e-dist
export CHROMEDRIVER="${CHROMEDRIVER:-$(command -v chromedriver)}"
log "native tests (with the end-to-end browser test)"
cargo test --workspace
log "deployment files (Kubernetes schemas, the flags they pass)"
./scripts/validate-deploy.sh target/debug/sonosam

# --- browser tests -----------------------------------------------------------------------
log "browser tests (headless Chromium)"
export WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-900}"
# The image encoder in the browser (~8 min on SwiftShader + wasm CPU) runs on request.
slow=(); [ "${SONOSAM_SLOW_BROWSER_TESTS:-0}" = 1 ] && slow=(--include-ignored)
cargo test --target wasm32-unknown-unknown --test browser -- --nocapture "${slow[@]}"
log "browser tests of the threaded build (headless Chromium, a dedicated worker)"
. scripts/nightly.sh
threaded_cargo test --test browser_threads -- --nocapture

# --- fuzzing -------------------------------------------------------------------------------
fuzz_seconds="${SONOSAM_FUZZ_SECONDS:-0}"
if [ "$fuzz_seconds" != 0 ]; then
  log "fuzzing ($fuzz_seconds s per target)"
  ./scripts/fuzz.sh "$fuzz_seconds"
fi
log "all tests passed"
