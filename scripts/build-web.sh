#!/usr/bin/env bash
# Builds the browser app into dist/ (or $1): with Trunk when it is installed (the demo does
# this), otherwise with cargo + wasm-bindgen doing what Trunk does for index.html (CI: Trunk
# takes 10–30 min to install on 2 cores). Set PROFILE=release for an optimised build. The page
# loads the UI module (sonosam-web: features `ui`); both ways also build the engine modules
# the model's worker loads into $1/engine and $1/mt (scripts/build-engine.sh; Trunk runs it as a
# post-build hook); SONOSAM_THREADS=0 skips the threaded one, and the app runs single-threaded.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
profile="${PROFILE:-dev}"
[ -f weights/litemedsam.json ] || { echo "no weights: run \`sonosam weights\` first" >&2; exit 1; }
if command -v trunk >/dev/null && [ "${SONOSAM_NO_TRUNK:-0}" != 1 ]; then
  flags=(); [ "$profile" = release ] && flags+=(--release)
  exec trunk build --dist "$out" "${flags[@]}"  # its post-build hook adds $out/mt
fi
. scripts/web-profile.sh "$profile"
# The UI module: no model code (sonosam-model without burn).
cargo build --target wasm32-unknown-unknown --bin sonosam-web --no-default-features --features ui "${cargo_flags[@]}"
rm -rf "$out"; mkdir -p "$out/weights"
wasm-bindgen --target web --no-typescript "${bindgen_flags[@]}" --out-dir "$out" --out-name sonosam-web \
  "target/wasm32-unknown-unknown/$dir/sonosam-web.wasm"
optimise_wasm "$out/sonosam-web_bg.wasm"
cp www/style.css www/sw.js www/worker.js www/bench.html www/bench-worker.js "$out/"
cp -r www/samples "$out/samples"
# The app downloads the int8 files; the f16 ones stay available next to them.
cp weights/litemedsam.json weights/litemedsam.{decoder,image_encoder}.{i8,f16}.safetensors "$out/weights/"
# index.html: Trunk's asset lines become a stylesheet link and the module that starts the app.
awk '
  /data-trunk rel="rust"/ { print "    <script type=\"module\">import init from \"./sonosam-web.js\"; init();</script>"; next }
  /data-trunk rel="css"/  { print "    <link rel=\"stylesheet\" href=\"style.css\" />"; next }
  /data-trunk/ { next }
  { print }
' index.html > "$out/index.html"
precompress "$out"/sonosam-web{_bg.wasm,.js} "$out"/weights/litemedsam.{json,decoder.i8.safetensors,image_encoder.i8.safetensors}
./scripts/build-engine.sh "$out" "$profile"
echo "built the app into $out/ (without Trunk)"
