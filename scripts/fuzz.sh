#!/usr/bin/env bash
# Fuzz the parsers that take outside bytes — image files, the embedding wire format, weights
# files and manifests, data set lists, DICOM files — with cargo fuzz (libFuzzer + AddressSanitizer, Rust
# nightly). Each target starts from its committed seeds (fuzz/corpus/TARGET/seed-*) and runs
# for SECONDS (default 30); any crash fails the script and leaves the input in
# fuzz/artifacts/TARGET/. Prints one line per target with its executions.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]       e.g. scripts/fuzz.sh 3600 wire_decode
#
# The `dicom` target (the DICOM reader): dicom-rs reserves what a value declares before reading
# it, and its first runs found small files that made it reserve 0.8–4 GB, and a Bits Stored that
# made dicom-pixeldata panic; the reader now walks the declared lengths and the nesting of
# sequences and items first (sonosam-dicom/src/lengths.rs) and checks Bits Stored. From its
# seeds, 150 s then passed under a 256 MB malloc limit (840 k executions): it is in the default
# list.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/nightly.sh
seconds="${1:-30}"; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(image_decode wire_decode weights splits dicom)
ensure_nightly
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install cargo-fuzz --version 0.13.2 --locked >&2
fi
cargo "+$SONOSAM_NIGHTLY" fuzz build --fuzz-dir fuzz >&2
for t in "${targets[@]}"; do
  log="fuzz/target/$t.log"
  mkdir -p fuzz/target
  if ! cargo "+$SONOSAM_NIGHTLY" fuzz run --fuzz-dir fuzz "$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz: $t FAILED (input in fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  echo "fuzz: $t ok: $runs executions in ${seconds} s"
done
