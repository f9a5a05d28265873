#!/usr/bin/env bash
# The engine modules, what the model's Web Worker (www/worker.js) loads, into OUT/engine,
# OUT/engine-webgpu and OUT/mt (default dist/): the model without the UI (feature `engine`).
# - OUT/engine/sonosam-engine: single-threaded, CPU, the stable toolchain.
# - OUT/engine-webgpu/sonosam-engine: single-threaded, CPU + WebGPU (burn-wgpu and cubecl's
#   kernel generators: five times the CPU engine's size, so only a WebGPU page loads it).
# - OUT/mt/sonosam-engine: threaded (wasm atomics + a std rebuilt for them need the pinned
#   nightly, scripts/nightly.sh, installed when missing); burn-flex runs its kernels on a rayon
#   pool of Web Workers (feature `threads`, wasm-bindgen-rayon). Its own target folder
#   (target/mt) keeps the stable build's artifacts intact. SONOSAM_THREADS=0 skips it (the app
#   then runs single-threaded).
#
#   scripts/build-engine.sh [OUT] [dev|release]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
profile="${2:-${PROFILE:-dev}}"
. scripts/web-profile.sh "$profile"

# bindgen WASM DIR: wasm-bindgen's JS glue + the module as OUT/DIR/sonosam-engine*, optimised
# and precompressed in a release.
bindgen() {
  rm -rf "$out/$2"
  wasm-bindgen --target web --no-typescript "${bindgen_flags[@]}" --out-dir "$out/$2" --out-name sonosam-engine "$1"
  optimise_wasm "$out/$2/sonosam-engine_bg.wasm"
  precompress "$out/$2"/sonosam-engine{_bg.wasm,.js}
}

for variant in engine:engine engine-webgpu:webgpu; do
  cargo build --target wasm32-unknown-unknown --bin sonosam-web --no-default-features --features "${variant#*:}" \
    "${cargo_flags[@]}"
  bindgen "target/wasm32-unknown-unknown/$dir/sonosam-web.wasm" "${variant%%:*}"
  echo "built the engine module into $out/${variant%%:*}/"
done

if [ "${SONOSAM_THREADS:-1}" != 0 ]; then
  . scripts/nightly.sh
  ensure_nightly
  threaded_cargo build --bin sonosam-web "${cargo_flags[@]}"
  bindgen "target/mt/wasm32-unknown-unknown/$dir/sonosam-web.wasm" mt
  echo "built the threaded engine module into $out/mt/"
fi
