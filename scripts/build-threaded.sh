#!/usr/bin/env bash
# The threaded build of the app's wasm module into OUT/mt (default dist/mt): wasm atomics and
# a std rebuilt for them need the pinned nightly (scripts/nightly.sh, installed when missing);
# burn-flex then runs its kernels on a rayon pool of Web Workers (feature `threads`,
# wasm-bindgen-rayon). www/worker.js loads it when the page is cross-origin isolated.
# Its own target folder (target/mt) keeps the stable build's artifacts intact.
#
#   scripts/build-threaded.sh [OUT] [dev|release]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/nightly.sh
out="${1:-dist}"
profile="${2:-${PROFILE:-dev}}"
ensure_nightly
. scripts/web-profile.sh "$profile"
threaded_cargo build --bin sonosam-web "${cargo_flags[@]}"
rm -rf "$out/mt"
wasm-bindgen --target web --no-typescript "${bindgen_flags[@]}" --out-dir "$out/mt" --out-name sonosam-web \
  "target/mt/wasm32-unknown-unknown/$dir/sonosam-web.wasm"
optimise_wasm "$out/mt/sonosam-web_bg.wasm"
precompress "$out"/mt/sonosam-web{_bg.wasm,.js}
echo "built the threaded module into $out/mt/"
