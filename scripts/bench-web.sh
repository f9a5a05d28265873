#!/usr/bin/env bash
# The browser benchmark: sonosam's decoder and encoder in headless Chromium on the inputs of
# the onnxruntime-web yardstick (../shared/bench/onnxruntime-web), with 1 thread and (when the
# threaded build exists) all threads. Builds the app in release (scripts/build-web.sh) into
# target/bench-dist, serves it cross-origin isolated, and prints one JSON line per
# configuration (config, median_ms, p10_ms, p90_ms, threads_effective, crossOriginIsolated,
# wasm_memory_bytes, js_heap_bytes, …): sonosam-dec-t1/tN (one mask, as the yardstick),
# sonosam-dec3-t1/tN (three masks), sonosam-enc-t1/tN, and the threaded build on one thread
# (…-t1-mt: its relaxed-SIMD kernel without the pool); then one line with the first visit's
# bytes as transferred ("sonosam-download"). Run the yardstick right before or after it and
# compare the medians. The measurements run in a Web Worker, as the app's model does.
#
#   scripts/bench-web.sh [decoder|encoder|all]      env: RUNS WARMUP ENC_RUNS ENC_WARMUP TIMEOUT_S
set -euo pipefail
cd "$(dirname "$0")/.."
group="${1:-all}"
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || {
  echo "needs Debian's chromium and chromium-driver (sudo apt-get install chromium chromium-driver)" >&2; exit 2; }
dist=target/bench-dist
PROFILE=release SONOSAM_NO_TRUNK=1 ./scripts/build-web.sh "$dist" >&2
venv=target/bench-venv
if ! "$venv/bin/python" -c "import selenium" 2>/dev/null; then
  echo "creating $venv with selenium" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --disable-pip-version-check -q selenium==4.51.0 >&2
fi
exec "$venv/bin/python" scripts/bench_web.py --dist "$dist" --group "$group"
