"""Test data of the DICOM reader (crates/sonosam-dicom/tests), written to the folder argv[1]:

- real ultrasound files shipped with pydicom (PyPI): examples_ybr_color.dcm (30-frame cine, JPEG
  baseline, YBR_FULL_422, with ultrasound regions), examples_palette.dcm (palette colour, with
  regions), examples_rgb_color.dcm (RGB, no regions), and CT_small.dcm (16-bit monochrome with
  Pixel Spacing), JPEG2000.dcm (an unsupported syntax), MR_truncated.dcm (a broken file);
- the reference: every frame as pydicom decodes it (RGB, 8 bits: YBR converted to RGB, palette
  indices through the file's 16-bit tables, >> 8), and what pydicom reads of the headers
  (reference.json);
- consistent variants made here: an RGB file given an ultrasound region that fits it, with a
  known Physical Delta, also deflated; JPEG baseline files that take the decoder's other paths
  (4:2:0 chroma, an odd size, restart markers, frames split in two fragments behind a Basic Offset
  Table; a monochrome one); uncompressed YBR_FULL; and broken ones: a header that declares more pixels than
  the body holds, absurd frame counts and sizes, a truncated cine, a deflate bomb.

Run by scripts/dicom-test-data.sh (in a virtual environment with pydicom, numpy, Pillow)."""

import io
import json
import shutil
import sys
import zlib
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_color_lut, convert_color_space
from pydicom.sequence import Sequence

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)

REAL = ["examples_ybr_color.dcm", "examples_palette.dcm", "examples_rgb_color.dcm", "CT_small.dcm",
        "JPEG2000.dcm", "MR_truncated.dcm"]
for name in REAL:
    shutil.copy(get_testdata_file(name), out / name)


def rgb_frames(ds):
    """The frames as 8-bit RGB, shape (frames, rows, cols, 3)."""
    arr = ds.pixel_array  # pydicom 3: YBR is converted to RGB
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        arr = (arr >> 8).astype(np.uint8) if arr.dtype == np.uint16 else arr.astype(np.uint8)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames == 1:
        arr = arr[np.newaxis]
    if arr.ndim == 3:  # monochrome: grey in R, G and B
        arr = np.repeat(arr[..., np.newaxis], 3, axis=-1)
    return arr


def regions(ds):
    return [
        {
            "bounds": [int(r.RegionLocationMinX0), int(r.RegionLocationMinY0), int(r.RegionLocationMaxX1), int(r.RegionLocationMaxY1)],
            "units_x": int(r.PhysicalUnitsXDirection), "units_y": int(r.PhysicalUnitsYDirection),
            "delta_x": float(r.PhysicalDeltaX), "delta_y": float(r.PhysicalDeltaY),
            "spatial_format": int(r.RegionSpatialFormat),
        }
        for r in getattr(ds, "SequenceOfUltrasoundRegions", [])
    ]


def region(bounds, delta_cm, units=3, spatial_format=1, data_type=1):
    r = Dataset()
    r.RegionSpatialFormat = spatial_format
    r.RegionDataType = data_type
    r.RegionFlags = 0
    r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1, r.RegionLocationMaxY1 = bounds
    r.PhysicalUnitsXDirection = units
    r.PhysicalUnitsYDirection = units
    r.PhysicalDeltaX = delta_cm
    r.PhysicalDeltaY = delta_cm
    return r


# Consistent variant: the RGB file (320 × 240) with a B-mode region that fits it (0.02 cm =
# 0.2 mm per pixel) and, beside it, a region without a scale in cm (a Doppler strip).
ds = pydicom.dcmread(out / "examples_rgb_color.dcm")
ds.SequenceOfUltrasoundRegions = Sequence([
    region((10, 5, 249, 234), 0.02),
    region((250, 5, 319, 234), 0.01, units=4, spatial_format=3, data_type=3),
])
ds.save_as(out / "us_calibrated.dcm")
# The same as Deflated Explicit VR Little Endian (pydicom deflates the data set on writing).
ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
ds.save_as(out / "us_deflated.dcm")



def jpeg_bytes(im, **save):
    buf = io.BytesIO()
    im.save(buf, "JPEG", **save)
    return buf.getvalue()


def jpeg_file(images, name, photometric, frames=None, **save):
    """`images` (PIL) as the frames of a JPEG baseline file (or the JPEG streams `frames`), each
    frame in two fragments behind a Basic Offset Table."""
    ds = pydicom.dcmread(out / "examples_rgb_color.dcm")
    frames = frames or [jpeg_bytes(im, **save) for im in images]
    ds.Rows, ds.Columns = images[0].height, images[0].width
    ds.SamplesPerPixel = 1 if images[0].mode == "L" else 3
    if ds.SamplesPerPixel == 1:
        del ds.PlanarConfiguration
    ds.PhotometricInterpretation = photometric
    ds.NumberOfFrames = len(frames)
    ds.LossyImageCompression = "01"
    ds.PixelData = encapsulate(frames, fragments_per_frame=2, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit
    ds.save_as(out / name)


rgb = Image.fromarray(pydicom.dcmread(out / "examples_rgb_color.dcm").pixel_array).crop((0, 0, 317, 237))
jpeg_file([rgb, rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)], "jpeg_420_restarts.dcm", "YBR_FULL_422",
          quality=80, subsampling=2, restart_marker_blocks=7)
jpeg_file([rgb.convert("L")], "jpeg_mono.dcm", "MONOCHROME2", quality=90)
# Damaged JPEG frames in a well-formed file: frame 0 cut in the middle of its entropy-coded data,
# frame 1 progressive (not allowed in the baseline syntax).
whole = jpeg_bytes(rgb, quality=80)
jpeg_file([rgb, rgb], "jpeg_damaged.dcm", "YBR_FULL_422",
          frames=[whole[: len(whole) * 2 // 3], jpeg_bytes(rgb, quality=80, progressive=True)])
# Uncompressed YBR_FULL (the RGB file's pixels converted by pydicom).
ds = pydicom.dcmread(out / "examples_rgb_color.dcm")
ds.PixelData = convert_color_space(ds.pixel_array, "RGB", "YBR_FULL").tobytes()
ds.PhotometricInterpretation = "YBR_FULL"
ds.PlanarConfiguration = 0
ds.save_as(out / "ybr_native.dcm")

reference = {}
for name in ["examples_ybr_color.dcm", "examples_palette.dcm", "examples_rgb_color.dcm", "us_calibrated.dcm",
             "us_deflated.dcm", "jpeg_420_restarts.dcm", "jpeg_mono.dcm", "ybr_native.dcm"]:
    ds = pydicom.dcmread(out / name)
    frames = rgb_frames(ds)
    frames.tofile(out / (name + ".rgb"))
    reference[name] = {
        "rows": int(ds.Rows), "columns": int(ds.Columns), "frames": int(frames.shape[0]),
        "transfer_syntax": str(ds.file_meta.TransferSyntaxUID), "photometric": str(ds.PhotometricInterpretation),
        "lossy": ds.file_meta.TransferSyntaxUID.is_compressed and "JPEG" in ds.file_meta.TransferSyntaxUID.name,
        "regions": regions(ds),
    }
ds = pydicom.dcmread(out / "CT_small.dcm")
reference["CT_small.dcm"] = {
    "rows": int(ds.Rows), "columns": int(ds.Columns), "frames": 1,
    "pixel_spacing": [float(v) for v in ds.PixelSpacing],
}
(out / "reference.json").write_text(json.dumps(reference, indent=1))

# Broken variants.
ds = pydicom.dcmread(out / "examples_rgb_color.dcm")
ds.Rows = 2000
ds.save_as(out / "more_pixels_declared.dcm")
ds = pydicom.dcmread(out / "examples_rgb_color.dcm")
ds.NumberOfFrames = 1_000_000
ds.save_as(out / "absurd_frames.dcm")
ds = pydicom.dcmread(out / "examples_rgb_color.dcm")
ds.Rows, ds.Columns = 60000, 60000
ds.save_as(out / "absurd_size.dcm")
# A deflate bomb: the deflated file's meta group, then a data set of one 300 MiB value of zeros,
# deflated (raw, as DICOM deflates) to a few hundred kB.
deflated = (out / "us_deflated.dcm").read_bytes()
meta_end = 132 + 12 + int.from_bytes(deflated[140:144], "little")  # DICM, (0002,0000) UL, its value
size = 300 << 20
bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
body = [bomb.compress(b"\x09\x00\x00\x10OB\x00\x00" + size.to_bytes(4, "little"))]
zeros = bytes(1 << 20)
body += [bomb.compress(zeros) for _ in range(size >> 20)]
body.append(bomb.flush())
(out / "deflate_bomb.dcm").write_bytes(deflated[:meta_end] + b"".join(body))
cine = (out / "examples_ybr_color.dcm").read_bytes()
(out / "truncated_cine.dcm").write_bytes(cine[: len(cine) // 2])
print(f"DICOM test data in {out}")
