//! Checks of the reader against pydicom's decoding, shared by the native tests
//! (`pydicom_files.rs`) and the browser tests (the root crate's `tests/browser.rs`, which
//! includes this file): each takes the test data through `read` (file name → bytes).

use serde_json::Value;
use sonosam_dicom::{CalibrationSource, Dicom, DicomError};

fn reference(read: &dyn Fn(&str) -> Vec<u8>) -> Value {
    serde_json::from_slice(&read("reference.json")).unwrap()
}

/// Every frame of `name` against pydicom's: exact for lossless syntaxes; for lossy JPEG within
/// 1 per value and 0.05 on average (the bound). pydicom decodes JPEG with libjpeg
/// (through Pillow); this crate's decoder computes libjpeg's IDCT and upsampling, so only the
/// YCbCr → RGB arithmetic may differ (pydicom's float32 matrix product). jpeg-decoder (dicom-rs's)
/// differed from libjpeg by 2–3 on 0.2 % of this cine's values, zune-jpeg by as much on 0.45 %.
pub fn frames_match(read: &dyn Fn(&str) -> Vec<u8>, name: &str) {
    let r = &reference(read)[name];
    let dicom = Dicom::read(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (w, h, n) = (r["columns"].as_u64().unwrap() as u32, r["rows"].as_u64().unwrap() as u32, r["frames"].as_u64().unwrap() as u32);
    assert_eq!((dicom.info.columns, dicom.info.rows, dicom.info.frames), (w, h, n), "{name}: size and frames");
    assert_eq!(dicom.info.transfer_syntax, r["transfer_syntax"].as_str().unwrap(), "{name}");
    assert_eq!(dicom.info.photometric, r["photometric"].as_str().unwrap(), "{name}");
    let (tolerance, mean_tolerance) = if r["lossy"].as_bool().unwrap() { (1, 0.05) } else { (0, 0.0) };
    let want = read(&format!("{name}.rgb"));
    let per_frame = (w * h * 3) as usize;
    assert_eq!(want.len(), per_frame * n as usize);
    let mut worst = 0;
    for k in 0..n {
        let got = dicom.frame(k).unwrap_or_else(|e| panic!("{name} frame {k}: {e}"));
        assert_eq!(got.dimensions(), (w, h));
        let reference = &want[k as usize * per_frame..(k as usize + 1) * per_frame];
        let diffs: Vec<u8> = got.as_raw().iter().zip(reference).map(|(a, b)| a.abs_diff(*b)).collect();
        let max = *diffs.iter().max().unwrap();
        let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64;
        assert!(max <= tolerance && mean <= mean_tolerance, "{name} frame {k}: |Δ| max {max}, mean {mean:.4} against pydicom");
        worst = worst.max(max);
    }
    eprintln!("{name}: {n} frame(s) of {w} × {h} match pydicom (|Δ| ≤ {worst}, allowed {tolerance})");
}


/// The regions of every file with regions, as the tags say; those that do not fit their image
/// are not used; one that fits calibrates in mm.
pub fn regions_match(read: &dyn Fn(&str) -> Vec<u8>) {
    let r = reference(read);
    for name in ["examples_ybr_color.dcm", "examples_palette.dcm", "us_calibrated.dcm", "us_deflated.dcm"] {
        let dicom = Dicom::read(&read(name)).unwrap();
        let want = r[name]["regions"].as_array().unwrap();
        assert_eq!(dicom.info.regions.len(), want.len(), "{name}");
        for (got, want) in dicom.info.regions.iter().zip(want) {
            let b: Vec<u32> = want["bounds"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            assert_eq!(got.bounds.to_vec(), b, "{name}");
            assert_eq!(got.delta_x, want["delta_x"].as_f64().unwrap(), "{name}");
            assert_eq!(got.delta_y, want["delta_y"].as_f64().unwrap(), "{name}");
            assert_eq!(u64::from(got.units_x), want["units_x"].as_u64().unwrap(), "{name}");
        }
    }
    for name in ["examples_ybr_color.dcm", "examples_palette.dcm"] {
        let c = Dicom::read(&read(name)).unwrap().calibration(&[(100.0, 100.0), (150.0, 120.0)]);
        assert_eq!(c.source, CalibrationSource::None, "{name}: {c:?}");
        assert!(c.mm_per_px.is_none() && c.note.unwrap().contains("do not fit this image"), "{name}");
    }
    let c = Dicom::read(&read("us_calibrated.dcm")).unwrap().calibration(&[(40.0, 30.0), (200.0, 150.0)]);
    assert_eq!((c.source, c.region, c.mm_per_px), (CalibrationSource::UsRegion, Some(1), Some([0.2, 0.2])), "{c:?}");
}

/// Unsupported, damaged and absurd files are refused with their cause.
pub fn bad_files_refused(read: &dyn Fn(&str) -> Vec<u8>) {
    let err = |name: &str| match Dicom::read(&read(name)) {
        Ok(_) => panic!("{name} was accepted"),
        Err(e) => e,
    };
    let e = err("JPEG2000.dcm");
    assert!(matches!(e, DicomError::UnsupportedSyntax { .. }) && e.to_string().contains("JPEG 2000"), "{e}");
    for name in ["MR_truncated.dcm", "truncated_cine.dcm", "more_pixels_declared.dcm"] {
        assert!(matches!(err(name), DicomError::Damaged(_)), "{name}");
    }
    for name in ["absurd_frames.dcm", "absurd_size.dcm", "deflate_bomb.dcm"] {
        assert!(matches!(err(name), DicomError::TooLarge(_)), "{name}");
    }
    // A readable file whose JPEG frames are damaged: each frame is refused with its cause, the
    // file stays open.
    let dicom = Dicom::read(&read("jpeg_damaged.dcm")).unwrap();
    let e = dicom.frame(0).unwrap_err();
    assert!(matches!(e, DicomError::Decode { frame: 0, .. }) && e.to_string().contains("ends early"), "{e}");
    let e = dicom.frame(1).unwrap_err();
    assert!(e.to_string().contains("progressive JPEG is not supported"), "{e}");
}
