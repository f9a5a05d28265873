# Sourced by build-web.sh and build-engine.sh with the profile (dev or release): the cargo
# flags, the output folder name, wasm-bindgen's flags and the optional wasm-opt pass.
case "${1:-dev}" in
  release)
    # LTO and one codegen unit (Cargo.toml's web-release profile); no name or producers
    # section in the shipped module.
    cargo_flags=(--profile web-release); dir=web-release
    bindgen_flags=(--remove-name-section --remove-producers-section) ;;
  *) cargo_flags=(); dir=debug; bindgen_flags=() ;;
esac
# wasm-opt (npm `binaryen`) when installed and the build is a release: nothing is downloaded
# at build time.
optimise_wasm() {
  if [ "$dir" = web-release ] && command -v wasm-opt >/dev/null; then
    wasm-opt -O3 --enable-simd --enable-bulk-memory --enable-threads --enable-mutable-globals \
      --enable-nontrapping-float-to-int --enable-sign-ext "$1" -o "$1.opt" && mv "$1.opt" "$1"
  fi
}
# A release build also gets .gz copies (and .br ones when `brotli` is installed) of the files
# that dominate a first visit, which `sonosam serve` sends to browsers that accept them.
precompress() {
  [ "$dir" = web-release ] || return 0
  local f
  for f in "$@"; do
    gzip -9 -k -f "$f"
    if command -v brotli >/dev/null; then brotli -q 11 -k -f "$f"; fi
  done
}
