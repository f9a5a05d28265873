//! The reader on real ultrasound DICOM files (pydicom's test files, from PyPI) against pydicom's
//! own decoding, and on variants with known calibration and broken ones. The data is made by
//! `scripts/dicom-test-data.sh` (scripts/test.sh runs it) in `target/test-data/dicom`.

use std::path::PathBuf;

use serde_json::Value;
use sonosam_dicom::{CalibrationSource, Dicom, DicomError};

mod checks;

fn frames_match(name: &str) {
    checks::frames_match(&read, name);
}

fn data_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-data/dicom");
    assert!(
        dir.join("reference.json").is_file(),
        "{} has no DICOM test data: run scripts/dicom-test-data.sh (scripts/test.sh does)",
        dir.display()
    );
    dir
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(data_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn reference() -> Value {
    serde_json::from_slice(&read("reference.json")).unwrap()
}

#[test]
fn cine_jpeg_ybr_frames_match_pydicom() {
    frames_match("examples_ybr_color.dcm");
}

/// JPEG baseline beyond the cine: 4:2:0 chroma, an odd size (317 × 237), restart markers,
/// frames in two fragments each behind a Basic Offset Table; and a monochrome JPEG.
#[test]
fn other_jpeg_files_match_pydicom() {
    frames_match("jpeg_420_restarts.dcm");
    frames_match("jpeg_mono.dcm");
}

/// Uncompressed YBR_FULL, converted to RGB as pydicom converts it.
#[test]
fn native_ybr_matches_pydicom() {
    frames_match("ybr_native.dcm");
}

#[test]
fn palette_colour_matches_pydicom() {
    frames_match("examples_palette.dcm");
}

#[test]
fn rgb_matches_pydicom() {
    frames_match("examples_rgb_color.dcm");
    frames_match("us_calibrated.dcm");
}

/// Deflated Explicit VR Little Endian: inflated by the reader (within its bound), then read as
/// any other file.
#[test]
fn deflated_files_read_as_pydicom_reads_them() {
    frames_match("us_deflated.dcm");
    let dicom = Dicom::read(&read("us_deflated.dcm")).unwrap();
    assert_eq!(dicom.info.transfer_syntax_name, "Deflated Explicit VR Little Endian");
    let c = dicom.calibration(&[(40.0, 30.0), (200.0, 150.0)]);
    assert_eq!((c.source, c.region), (CalibrationSource::UsRegion, Some(1)));
    assert!(c.isotropic().is_some_and(|v| (v - 0.2).abs() < 1e-12), "{c:?}");
}

#[test]
fn regions_are_read_as_the_tags_say() {
    checks::regions_match(&read);
}

/// pydicom's two files with regions were resampled without updating them: their regions lie
/// outside the pixel matrix. Their Physical Delta must not become millimetres.
#[test]
fn regions_that_do_not_fit_the_image_are_not_used() {
    for name in ["examples_ybr_color.dcm", "examples_palette.dcm"] {
        let dicom = Dicom::read(&read(name)).unwrap();
        let c = dicom.calibration(&[(100.0, 100.0), (150.0, 120.0)]);
        assert_eq!(c.source, CalibrationSource::None, "{name}: {c:?}");
        assert!(c.mm_per_px.is_none());
        let note = c.note.unwrap();
        assert!(note.contains("do not fit this image"), "{name}: {note}");
        eprintln!("{name}: {note}");
    }
}

#[test]
fn a_region_that_fits_calibrates_in_mm() {
    let dicom = Dicom::read(&read("us_calibrated.dcm")).unwrap();
    // Both ends in the B-mode region (0.02 cm per pixel): 0.2 mm per pixel, region 1.
    let c = dicom.calibration(&[(40.0, 30.0), (200.0, 150.0)]);
    assert_eq!((c.source, c.region), (CalibrationSource::UsRegion, Some(1)));
    let [x, y] = c.mm_per_px.unwrap();
    assert!((x - 0.2).abs() < 1e-12 && (y - 0.2).abs() < 1e-12, "{x} {y}");
    assert_eq!(c.isotropic(), Some(x));
    assert_eq!(c.describe(), "ultrasound region 1");
    // An end in the Doppler strip (no scale in cm), or across both: not calibrated.
    let c = dicom.calibration(&[(200.0, 30.0), (280.0, 150.0)]);
    assert_eq!(c.source, CalibrationSource::None);
    assert!(c.note.unwrap().contains("inside one calibrated ultrasound region"));
}

#[test]
fn pixel_spacing_calibrates_when_there_are_no_regions() {
    let r = &reference()["CT_small.dcm"];
    let dicom = Dicom::read(&read("CT_small.dcm")).unwrap();
    let c = dicom.calibration(&[(1.0, 1.0), (20.0, 20.0)]);
    assert_eq!(c.source, CalibrationSource::PixelSpacing);
    let spacing: Vec<f64> = r["pixel_spacing"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    // Pixel Spacing is (row, column): x takes the column spacing.
    assert_eq!(c.mm_per_px.unwrap(), [spacing[1], spacing[0]]);
    // A 16-bit monochrome frame decodes to RGB.
    let frame = dicom.frame(0).unwrap();
    assert_eq!(frame.dimensions(), (r["columns"].as_u64().unwrap() as u32, r["rows"].as_u64().unwrap() as u32));
    // No regions and no spacing: uncalibrated, and it says so.
    let plain = Dicom::read(&read("examples_rgb_color.dcm")).unwrap();
    let c = plain.calibration(&[(1.0, 1.0)]);
    assert_eq!(c.source, CalibrationSource::None);
    assert!(c.note.unwrap().contains("no ultrasound regions and no pixel spacing"));
}

#[test]
fn bad_files_are_clear_errors() {
    checks::bad_files_refused(&read);
    let err = |name: &str| match Dicom::read(&read(name)) {
        Ok(_) => panic!("{name} was accepted"),
        Err(e) => e,
    };
    let e = err("JPEG2000.dcm");
    assert!(e.to_string().contains("1.2.840.10008.1.2.4.91"), "{e}");
    for name in ["MR_truncated.dcm", "truncated_cine.dcm", "more_pixels_declared.dcm", "absurd_frames.dcm", "absurd_size.dcm", "deflate_bomb.dcm"] {
        eprintln!("{name}: {}", err(name));
    }
    assert!(err("more_pixels_declared.dcm").to_string().contains("declares"));
    // 300 MiB of zeros deflated to under 1 MB: refused when the inflated bytes pass the bound,
    // not after they fill memory.
    assert!(read("deflate_bomb.dcm").len() < 1 << 20);
    assert!(err("deflate_bomb.dcm").to_string().contains("inflates to more than 256 MiB"));
    let png = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../www/samples/benign_93.png")).unwrap();
    assert!(matches!(Dicom::read(&png), Err(DicomError::NotDicom)));
    assert!(matches!(Dicom::read(b""), Err(DicomError::NotDicom)));
    // Inputs the `dicom` fuzz target found: dicom-rs reserved the gigabytes a value declares
    // (one took 9 s and 1.8 GB before failing), or something panicked.
    // Each is refused at once, its cause named.
    for (name, cause) in [
        ("fuzz-oom-declared-lengths.dcm", "declares 3233857728 bytes where 371 remain"),
        ("fuzz-oom-meta-group-length.dcm", "declares 1023410176 bytes where 23 remain"),
        ("fuzz-oom-big-endian.dcm", "declares 774975488 bytes where 77 remain"),
        ("fuzz-oom-top-level-item.dcm", "an item (FFFE,E000) outside a sequence"),
        // Pixel Data written as SQ: a sequence to dicom-rs, whose JPEG bytes read as headers.
        ("fuzz-oom-pixel-data-sq.dcm", "a header runs 4 bytes past the end of its sequence or item"),
        ("fuzz-panic-bits-stored.dcm", "Bits Stored is 50960 for samples of 16 bits"),
        // (An earlier form of the walk itself overflowed on this one.)
        ("fuzz-panic-walk-past-end.dcm", "(0028,0002) declares 2 bytes where 288 remain"),
    ] {
        let bytes = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)).unwrap();
        let started = std::time::Instant::now();
        match Dicom::read(&bytes) {
            Err(DicomError::Damaged(m)) => assert!(m.contains(cause), "{name}: {m}"),
            other => panic!("{name} gave {:?}", other.map(|d| d.info)),
        }
        eprintln!("{name} refused in {:?}", started.elapsed());
    }
    // A broken meta group at `DICM`, and 128 bytes further on another `DICM` with a good one
    // and then a value declaring 1 GB (a fuzz input's shape): dicom-rs, left to detect a
    // preamble, took the first 128 bytes for one and read the unchecked second part.
    let mut shifted = vec![0u8; 128];
    shifted.extend(b"DICM");
    shifted.extend([0x02, 0x00, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0]);
    shifted.resize(256, 0);
    shifted.extend(b"DICM");
    let syntax = b"1.2.840.10008.1.2.1\0";
    let mut meta = vec![0x02, 0x00, 0x10, 0x00, b'U', b'I', syntax.len() as u8, 0];
    meta.extend(syntax);
    shifted.extend([0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
    shifted.extend((meta.len() as u32).to_le_bytes());
    shifted.extend(meta);
    shifted.extend([0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0, 0, 0, 0x40, 1, 2, 3, 4]);
    // Now the broken meta group at `DICM` is what is read, and refused.
    match Dicom::read(&shifted) {
        Err(DicomError::Damaged(m)) => assert!(m.contains("meta group"), "{m}"),
        other => panic!("the shifted file gave {:?}", other.map(|d| d.info)),
    }
    // A frame past the end.
    let cine = Dicom::read(&read("examples_ybr_color.dcm")).unwrap();
    assert!(matches!(cine.frame(30), Err(DicomError::NoSuchFrame { frame: 30, frames: 30 })));
}
