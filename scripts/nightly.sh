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
