# Sourced by the scripts that need Rust nightly (fuzzing, the threaded browser build): the one
# pinned nightly, installed with rust-src when missing. Stable stays the default for the rest.
SONOSAM_NIGHTLY="${SONOSAM_NIGHTLY:-nightly-2026-05-20}"
ensure_nightly() {
  if ! rustup run "$SONOSAM_NIGHTLY" rustc --version >/dev/null 2>&1 \
    || ! rustup component list --toolchain "$SONOSAM_NIGHTLY" --installed 2>/dev/null | grep -q '^rust-src'; then
    echo "installing Rust $SONOSAM_NIGHTLY with rust-src" >&2
    rustup toolchain install "$SONOSAM_NIGHTLY" --profile minimal --component rust-src >&2
  fi
}
# `cargo` for the threaded wasm build (the app's feature `threads`): wasm atomics and a std
# rebuilt with them, in its own target folder so the stable build's artifacts stay valid.
threaded_cargo() {
  local cmd="$1"; shift
  # (The shared memory and thread-local-storage link arguments come from build.rs.) `test` in
  # the rebuilt std for every command: cargo adds it to test builds, and a std set that differs
  # changes every dependency's hash, so the app's build and its tests' would compile the whole
  # tree twice (5–6 min in CI).
  CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS='--cfg=web_sys_unstable_apis --cfg=getrandom_backend="wasm_js" -C target-feature=+atomics,+bulk-memory,+mutable-globals,+simd128' \
    cargo "+$SONOSAM_NIGHTLY" "$cmd" --target wasm32-unknown-unknown -Z build-std=panic_abort,std,test \
      --target-dir target/mt --no-default-features --features threads "$@"
}
