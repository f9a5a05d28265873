#!/usr/bin/env bash
# sonosam demo: fetch and convert the LiteMedSAM weights, then segment a bundled BUSI test image
# with the box of its lesion and write the mask and an overlay to ./out/.
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
echo "demo: open out/benign_93_overlay.png"
