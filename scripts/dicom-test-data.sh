#!/usr/bin/env bash
# Test data of the DICOM reader (crates/sonosam-dicom/tests): pydicom's ultrasound test files
# from PyPI, their frames as pydicom decodes them, and variants made with pydicom
# (scripts/dicom_test_data.py), in target/test-data/dicom; and the venv whose highdicom checks
# the exported SEG and SR. Nothing of it is committed. Runs once: it does nothing when the
# folder is complete.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/test-data/dicom
venv=target/dicom-venv
# highdicom reads back the exported Segmentation and SR (scripts/read_dicom_export.py).
if ! "$venv/bin/python" -c "import pydicom, numpy, PIL, highdicom" 2>/dev/null; then
  echo "creating $venv with pydicom, numpy, Pillow and highdicom" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --disable-pip-version-check -q pydicom==3.0.2 numpy==2.4.6 pillow==13.0.0 highdicom==0.28.2
fi
[ -f "$out/reference.json" ] && [ "$out/reference.json" -nt scripts/dicom_test_data.py ] && exit 0
"$venv/bin/python" scripts/dicom_test_data.py "$out"
