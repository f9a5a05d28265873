#!/usr/bin/env bash
# sonosam demo: fetch and convert the LiteMedSAM weights, segment a bundled BUSI test image from
# the command line (mask + overlay in ./out/), then build and serve the browser app with Trunk
# and print its URL. Installs what it needs when missing: the wasm32 target, wasm-bindgen-cli
# (the version in Cargo.lock) and Trunk 0.21.14 (10–30 min to build once on 2 cores).
# SONOSAM_DEMO_NO_SERVE=1 stops after the command-line part.
set -euo pipefail
cd "$(dirname "$0")/.."
backend="${SONOSAM_BACKEND:-cpu}"

command -v cargo >/dev/null || { echo "demo: Rust is required (https://rustup.rs)"; exit 1; }
cargo build --release -p sonosam-cli
./target/release/sonosam weights
mkdir -p out
./target/release/sonosam segment www/samples/benign_93.png \
  --box 41,44,176,119 --backend "$backend" \
  --out out/benign_93_mask.png --overlay out/benign_93_overlay.png
echo "demo: command-line result in out/benign_93_overlay.png"
[ "${SONOSAM_DEMO_NO_SERVE:-0}" = 1 ] && exit 0

# --- the browser app -------------------------------------------------------------------
rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
wb_version=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$wb_version" ]; then
  echo "demo: installing wasm-bindgen-cli $wb_version (once)"
  cargo install wasm-bindgen-cli --version "$wb_version" --force
fi
if [ "$(trunk --version 2>/dev/null | awk '{print $2}')" != "0.21.14" ]; then
  echo "demo: installing Trunk 0.21.14 (once; 10–30 min on 2 cores)"
  cargo install trunk --version 0.21.14 --locked
fi
echo "demo: building the app (release) and serving it; open the URL below in a browser with WebGPU"
echo "demo: (Chrome/Edge; elsewhere the app runs on the CPU). Ctrl+C stops the server."
exec trunk serve --release
