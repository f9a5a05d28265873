//! The `sonosam` binary end to end on real BUSI data: segmentation, bad inputs, evaluation and
//! fine-tuning on a small subset. Needs converted weights (`sonosam weights`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sonosam_model::Mask;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn busi() -> PathBuf {
    repo().join("../shared/data/busi")
}

/// A scratch folder under target/ (kept between runs: the embedding cache lives there too).
fn scratch(name: &str) -> PathBuf {
    let dir = repo().join("target/cli-tests").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn cache() -> PathBuf {
    repo().join("target/cli-tests-cache")
}

fn sonosam(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_sonosam"))
        .args(args)
        .current_dir(repo())
        .env("SONOSAM_CACHE", cache())
        .output()
        .expect("run sonosam");
    eprintln!(
        "$ sonosam {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ok(args: &[&str]) -> String {
    let out = sonosam(args);
    assert!(out.status.success(), "sonosam {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails with a message containing every one of `needles`.
fn fails_with(args: &[&str], needles: &[&str]) {
    let out = sonosam(args);
    assert!(!out.status.success(), "sonosam {args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr);
    for n in needles {
        assert!(err.contains(n), "error of {args:?} should mention `{n}`: {err}");
    }
    assert!(!err.contains("panicked"), "a panic instead of an error: {err}");
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn segment_benign_93_and_write_overlay() {
    let dir = scratch("segment");
    let (mask, overlay) = (dir.join("mask.png"), dir.join("overlay.png"));
    let out = ok(&[
        "segment",
        "www/samples/benign_93.png",
        "--box",
        "41,44,176,119",
        "--out",
        &s(&mask),
        "--overlay",
        &s(&overlay),
    ]);
    assert!(out.contains("predicted IoU") && out.contains("encoder") && out.contains("area"));
    let gt = Mask::from_image_bytes(&std::fs::read(repo().join("www/samples/benign_93_mask.png")).unwrap()).unwrap();
    let got = Mask::from_image_bytes(&std::fs::read(&mask).unwrap()).unwrap();
    let dice = got.dice(&gt).unwrap();
    eprintln!("Dice vs ground truth: {dice:.4}");
    assert!(dice >= 0.89, "Dice {dice}");
    // The overlay is the image with the mask painted in: same size, and changed inside the box.
    let img = image::open(repo().join("www/samples/benign_93.png")).unwrap().to_rgb8();
    let ov = image::open(&overlay).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), ov.dimensions());
    assert_ne!(img.get_pixel(100, 80), ov.get_pixel(100, 80), "mask not drawn");
    assert_eq!(img.get_pixel(400, 400), ov.get_pixel(400, 400), "outside the lesion untouched");
    // Points and multimask.
    let out = ok(&[
        "segment",
        "www/samples/benign_93.png",
        "--point",
        "110,80,1",
        "--point",
        "20,20,0",
        "--multimask",
        "--out",
        &s(&dir.join("points.png")),
    ]);
    assert_eq!(out.matches("predicted IoU").count(), 3);
    assert!(dir.join("points.2.png").exists());
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = scratch("bad");
    let out = s(&dir.join("m.png"));
    let img = "www/samples/benign_93.png";
    fails_with(&["segment", "no/such/file.png", "--box", "1,1,5,5", "--out", &out], &["cannot read"]);
    std::fs::write(dir.join("text.png"), b"this is not an image").unwrap();
    fails_with(
        &["segment", &s(&dir.join("text.png")), "--box", "1,1,5,5", "--out", &out],
        &["not a PNG, JPEG or BMP"],
    );
    let png = std::fs::read(repo().join(img)).unwrap();
    std::fs::write(dir.join("truncated.png"), &png[..png.len() / 3]).unwrap();
    fails_with(
        &["segment", &s(&dir.join("truncated.png")), "--box", "1,1,5,5", "--out", &out],
        &["cannot decode"],
    );
    fails_with(&["segment", img, "--box", "50,50,50,90", "--out", &out], &["zero or negative area"]);
    fails_with(&["segment", img, "--box", "900,900,950,950", "--out", &out], &["outside"]);
    fails_with(&["segment", img, "--point", "10,10,7", "--out", &out], &["label must be 1"]);
    fails_with(&["segment", img, "--out", &out], &["--box"]);
    fails_with(&["segment", img, "--box", "1,2,3", "--out", &out], &["4 comma-separated"]);
    // Weights: a missing folder, a wrong file as decoder, a truncated decoder file.
    fails_with(
        &["segment", img, "--box", "41,44,176,119", "--out", &out, "--weights", &s(&dir)],
        &["sonosam weights"],
    );
    let enc = repo().join("weights/litemedsam.image_encoder.f32.safetensors");
    fails_with(
        &["segment", img, "--box", "41,44,176,119", "--out", &out, "--decoder", &s(&enc)],
        &["missing tensor", "prompt_encoder"],
    );
    let dec = std::fs::read(repo().join("weights/litemedsam.decoder.f32.safetensors")).unwrap();
    std::fs::write(dir.join("short.safetensors"), &dec[..dec.len() / 2]).unwrap();
    fails_with(
        &["segment", img, "--box", "41,44,176,119", "--out", &out, "--decoder", &s(&dir.join("short.safetensors"))],
        &["short.safetensors", "not a valid safetensors"],
    );
    // A damaged converted file is caught by its manifest hash.
    let wdir = dir.join("weights");
    std::fs::create_dir_all(&wdir).unwrap();
    for f in ["litemedsam.json", "litemedsam.image_encoder.f32.safetensors"] {
        std::fs::copy(repo().join("weights").join(f), wdir.join(f)).unwrap();
    }
    let mut damaged = dec.clone();
    damaged[dec.len() - 10] ^= 0xff;
    std::fs::write(wdir.join("litemedsam.decoder.f32.safetensors"), damaged).unwrap();
    fails_with(
        &["segment", img, "--box", "41,44,176,119", "--out", &out, "--weights", &s(&wdir)],
        &["sha256", "litemedsam.decoder.f32.safetensors"],
    );
    // A checkpoint that is not LiteMedSAM's.
    std::fs::write(dir.join("fake.pth"), b"PK\x03\x04 not really").unwrap();
    fails_with(&["weights", "--dir", &s(&dir.join("w2")), "--from", &s(&dir.join("fake.pth"))], &["sha256"]);
}

/// What an outside probe of the CLI broke (issue "Hardening", items 1, 7 and 8), with exactly
/// its inputs.
#[test]
fn probe_cases_are_clear_errors_that_leave_nothing_behind() {
    let dir = scratch("probe");
    let img = "www/samples/benign_93.png";
    let out = s(&dir.join("m.png"));
    // 1. The first 10 % of a JPEG.
    let jpeg = {
        let mut v = Vec::new();
        image::open(repo().join(img)).unwrap().write_to(&mut std::io::Cursor::new(&mut v), image::ImageFormat::Jpeg).unwrap();
        v
    };
    std::fs::write(dir.join("t.jpg"), &jpeg[..jpeg.len() / 10]).unwrap();
    fails_with(&["segment", &s(&dir.join("t.jpg")), "--box", "41,44,176,119", "--out", &out], &["truncated"]);
    // 7. An existing folder as --out: an error, and no `<dir>.partial` left.
    let folder = dir.join("already-a-folder");
    std::fs::create_dir_all(&folder).unwrap();
    fails_with(&["segment", img, "--box", "41,44,176,119", "--out", &s(&folder)], &["is a folder"]);
    // An overlay in a missing folder fails before the mask is written.
    fails_with(
        &["segment", img, "--box", "41,44,176,119", "--out", &out, "--overlay", &s(&dir.join("nodir/o.png"))],
        &["does not exist"],
    );
    let mut left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
    left.sort();
    assert_eq!(left, ["already-a-folder", "t.jpg"].map(std::ffi::OsString::from), "nothing written");
    // A box that clips to zero width; labels that are neither 0 nor 1.
    fails_with(&["segment", img, "--box", "-100,10,0,100", "--out", &out], &["less than a pixel"]);
    for label in ["0.5", "nan", "-1"] {
        fails_with(&["segment", img, "--point", &format!("100,100,{label}"), "--out", &out], &["label must be 1"]);
    }
    // 8. A splits file that points outside the data folder.
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("splits.csv"),
        "image,masks,label,split\n../../../../etc/passwd,../../../../etc/passwd,benign,val\n",
    )
    .unwrap();
    fails_with(&["eval", "--data", &s(&data), "--split", "val"], &["splits.csv line 2", "inside the data folder"]);
}

#[test]
fn eval_reports_and_writes_json() {
    let dir = scratch("eval");
    let json = dir.join("summary.json");
    let out = ok(&[
        "eval", "--data", &s(&busi()), "--split", "val", "--limit", "3",
        "--json", &s(&json), "--csv", &s(&dir.join("scores.csv")),
    ]);
    assert!(out.contains("Dice mean") && out.contains("jitter 20"));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for key in ["n", "dice_mean", "dice_median", "iou_mean", "hd95_mean", "by_class", "jitter"] {
        assert!(v.get(key).is_some(), "summary lacks {key}");
    }
    assert!(v["dice_mean"].as_f64().unwrap() > 0.85);
    let csv = std::fs::read_to_string(dir.join("scores.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + v["n"].as_u64().unwrap() as usize);
    fails_with(&["eval", "--data", &s(&busi()), "--split", "nope"], &["no images"]);
}

/// `embed` fills the embeddings cache that `eval` reads: two shards run at once encode disjoint
/// halves, a run over the whole split then encodes nothing (resumable), and `eval` finds every
/// embedding cached.
#[test]
fn embed_shards_fill_the_cache_eval_reads() {
    let dir = scratch("embed");
    let cache = s(&dir.join("cache"));
    let data = s(&busi());
    // "…; embeddings: C cached, E encoded…" → (C, E).
    let counts = |out: &str| -> (usize, usize) {
        let tail = &out[out.find("embeddings: ").expect("a summary line") + 12..];
        let mut words = tail.split(|c: char| c == ' ' || c == ',').filter(|w| !w.is_empty());
        (words.next().unwrap().parse().unwrap(), { words.next(); words.next().unwrap().parse().unwrap() })
    };
    let embed = |extra: &[&str]| {
        let mut args = vec!["embed", "--data", &data, "--split", "val", "--limit", "6", "--cache", &cache];
        args.extend_from_slice(extra);
        counts(&ok(&args))
    };
    // The two shards at once, as two machines would run them.
    let shard = |i: &str| {
        let mut args: Vec<String> = ["embed", "--data", &data, "--split", "val", "--limit", "6", "--cache", &cache, "--shard", i].iter().map(|s| s.to_string()).collect();
        args.shrink_to_fit();
        std::thread::spawn(move || ok(&args.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let (s0, s1) = (shard("0/2"), shard("1/2"));
    let ((c0, e0), (c1, e1)) = (counts(&s0.join().unwrap()), counts(&s1.join().unwrap()));
    assert_eq!((c0, c1), (0, 0), "a fresh cache");
    assert!(e0 > 0 && e1 > 0, "each shard encodes its own images: {e0}, {e1}");
    assert_eq!(embed(&[]), (e0 + e1, 0), "the whole split is in the cache");
    let out = ok(&["eval", "--data", &data, "--split", "val", "--limit", "6", "--jitter", "0", "--cache", &cache, "--csv", &s(&dir.join("e.csv"))]);
    assert_eq!(counts(&out), (e0 + e1, 0), "eval encodes nothing: {out}");
    fails_with(&["embed", "--data", &data, "--shard", "2/2"], &["I must be in"]);
}

/// Descriptor AUC (truth vs prediction), the calls' agreement and the ROC curves, on three
/// benign and three malignant validation images (a splits file of their own).
#[test]
fn eval_compares_descriptors_of_truth_and_prediction() {
    let dir = scratch("eval-descriptors");
    let rows: Vec<String> = std::fs::read_to_string(busi().join("splits.csv"))
        .unwrap()
        .lines()
        .filter(|l| l.contains(",val,"))
        .filter(|l| l.contains(",benign,") || l.contains(",malignant,"))
        .map(str::to_string)
        .collect();
    let pick = |label: &str| rows.iter().filter(|l| l.contains(&format!(",{label},"))).take(3).cloned().collect::<Vec<_>>();
    let splits = dir.join("splits.csv");
    std::fs::write(&splits, format!("image,masks,label,split,dup_group\n{}\n{}\n", pick("benign").join("\n"), pick("malignant").join("\n"))).unwrap();
    let (json, roc) = (dir.join("summary.json"), dir.join("roc.svg"));
    let out = ok(&[
        "eval", "--data", &s(&busi()), "--splits", &s(&splits), "--split", "val", "--jitter", "0",
        "--json", &s(&json), "--csv", &s(&dir.join("scores.csv")), "--roc", &s(&roc),
        "--prompt", "tight,jitter10,click,correct-box,correct-click",
    ]);
    assert!(out.contains("shape descriptors, benign (") && out.contains("convexity") && out.contains("kappa"), "{out}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let auc = &v["descriptors_auc"];
    for name in ["area", "depth_width_ratio", "orientation_deg", "ellipse_misfit", "circularity", "convexity", "solidity", "nrl_mean", "lobulations", "angular_points"] {
        for side in ["gt", "pred"] {
            let a = auc[name][side].as_f64().unwrap_or_else(|| panic!("no {side} AUC of {name}: {v}"));
            assert!((0.0..=1.0).contains(&a), "{name} {side} {a}");
        }
    }
    for call in ["shape", "orientation", "margin"] {
        assert!(v["descriptor_calls_kappa"][call].as_f64().unwrap() <= 1.0);
    }
    assert_eq!(v["descriptor_benign"].as_u64().unwrap() + v["descriptor_malignant"].as_u64().unwrap(), v["n"].as_u64().unwrap());
    // The prompt protocols (issue 15): Dice per protocol, NoC per correction protocol.
    for key in ["tight", "jitter10", "click"] {
        let p = &v["prompts"][key];
        assert!(p["dice_mean"].as_f64().is_some_and(|d| (0.0..=1.0).contains(&d)) && p["n"] == v["n"], "{key}: {p}");
    }
    assert!((v["prompts"]["tight"]["dice_mean"].as_f64().unwrap() - v["dice_mean"].as_f64().unwrap()).abs() < 1e-9, "tight = the plain score");
    for key in ["from_box", "from_click"] {
        let n = &v["noc"][key];
        let (noc85, noc90) = (n["noc85"].as_f64().unwrap(), n["noc90"].as_f64().unwrap());
        assert!(noc85 <= noc90 && noc90 <= 20.0 && n["dice_after_clicks"].as_array().unwrap().len() == 5, "{key}: {n}");
    }
    assert!(v["predicted_iou_r"].as_f64().unwrap().abs() <= 1.0);
    assert!(out.contains("NoC@90, from_box") && out.contains("Dice, click"));
    let svg = std::fs::read_to_string(&roc).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() == 28, "two curves per descriptor");
}

/// The lesion report of a calibrated DICOM file: descriptors in mm in `--json` and in the
/// report, the HTML report printed to PDF by headless Chromium with its lesion table.
#[test]
fn segment_reports_descriptors_and_the_report_prints() {
    let data = repo().join("target/test-data/dicom");
    assert!(data.join("reference.json").is_file(), "no DICOM test data: run scripts/dicom-test-data.sh");
    let dir = scratch("report");
    let dicom = s(&data.join("us_calibrated.dcm"));
    let (html, json, pdf) = (dir.join("r.html"), dir.join("r.json"), dir.join("r.pdf"));
    let args = |report: &Path| vec!["segment".to_string(), dicom.clone(), "--box".into(), "60,40,200,180".into(), "--out".into(), s(&dir.join("m.png")), "--report".into(), s(report)];
    let printed: serde_json::Value = serde_json::from_str(&ok(&[args(&json).iter().map(String::as_str).collect::<Vec<_>>(), vec!["--json"]].concat())).unwrap();
    let d = &printed["descriptors"];
    assert_eq!(d["unit"], "mm", "{printed}");
    let area_mm2 = printed["measurements"]["area_mm2"].as_f64().unwrap();
    assert!((d["area"].as_f64().unwrap() - area_mm2).abs() <= 0.05 * area_mm2, "{d}");
    for key in ["perimeter", "depth_width_ratio", "orientation_deg", "ellipse_misfit", "circularity", "convexity", "solidity", "lobulations", "angular_points"] {
        assert!(d[key].is_number(), "descriptors lack {key}: {d}");
    }
    assert!(d["calls"]["shape"].is_string() && d["radial_length"]["mean"].is_number());
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(report["source"].as_str().unwrap().starts_with("DICOM US"), "{report}");
    assert_eq!(report["lesions"][0]["descriptors"], *d);
    assert_eq!(report["lesions"][0]["calibration"], "ultrasound region 1");

    ok(&args(&html).iter().map(String::as_str).collect::<Vec<_>>());
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("id=\"lesion-table\"") && page.contains(" mm</td>") && page.contains("@media print"));
    fails_with(&[args(&html)[..7].iter().map(String::as_str).collect::<Vec<_>>(), vec![&s(&dir.join("r.pdf"))]].concat(), &["name it .html or .json"]);
    // Headless Chromium prints it (a tagged PDF: its structure names the table).
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let status = Command::new(&chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer"])
        .arg(format!("--print-to-pdf={}", pdf.display()))
        .arg(format!("file://{}", html.canonicalize().unwrap().display()))
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {chromium} (set CHROMIUM): {e}"));
    assert!(status.success());
    let bytes = std::fs::read(&pdf).unwrap();
    let has = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(bytes.starts_with(b"%PDF") && has("/Type /Page") && has("/S /Table") && has("/S /TD"), "no table in the PDF");
}

/// Row-major run lengths of a mask, starting with a (possibly empty) background run — as
/// scripts/read_dicom_export.py writes them.
fn runs(mask: &Mask) -> Vec<u64> {
    let mut counts = Vec::new();
    let (mut current, mut run) = (0u8, 0u64);
    for &v in &mask.data {
        let v = u8::from(v != 0);
        if v != current {
            counts.push(run);
            (current, run) = (v, 0);
        }
        run += 1;
    }
    counts.push(run);
    counts
}

/// What highdicom (an independent reader, in the DICOM test venv) reads in an exported SEG and
/// SR.
fn read_with_highdicom(seg: &Path, sr: &Path) -> serde_json::Value {
    let python = repo().join("target/dicom-venv/bin/python");
    assert!(python.is_file(), "no DICOM test venv: run scripts/dicom-test-data.sh");
    let out = Command::new(python).arg(repo().join("scripts/read_dicom_export.py")).arg(seg).arg(sr).output().unwrap();
    assert!(out.status.success(), "highdicom cannot read the export: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The lesion exported as a DICOM Segmentation and a TID 1500 Measurement Report, read back
/// by highdicom: the same mask (exact), the same numbers and calls, in the source's study (or
/// in one new study for a PNG).
#[test]
fn segment_exports_seg_and_sr_that_highdicom_reads() {
    let data = repo().join("target/test-data/dicom");
    let dir = scratch("dicom-export");
    let export_with = |image: &str, bbox: &str, extra: &[&str]| {
        let (mask, seg, sr) = (dir.join("m.png"), dir.join("seg.dcm"), dir.join("sr.dcm"));
        let paths = [s(&mask), s(&seg), s(&sr)];
        let mut args = vec!["segment", image, "--box", bbox, "--out", &paths[0], "--seg", &paths[1], "--sr", &paths[2], "--json"];
        args.extend_from_slice(extra);
        let printed: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
        let mask = Mask::from_image_bytes(&std::fs::read(&mask).unwrap()).unwrap();
        (printed, mask, read_with_highdicom(&seg, &sr))
    };
    let export = |image: &str, bbox: &str| export_with(image, bbox, &[]);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * a.abs().max(1.0);

    // A calibrated ultrasound file: its study, its instance, numbers in mm.
    let (printed, mask, read) = export(&s(&data.join("us_calibrated.dcm")), "60,40,200,180");
    let (seg, sr) = (&read["seg"], &read["sr"]);
    assert_eq!(seg["sop_class"], "1.2.840.10008.5.1.4.1.1.66.4");
    assert_eq!((seg["rows"].as_u64(), seg["columns"].as_u64()), (Some(mask.height as u64), Some(mask.width as u64)));
    assert_eq!(seg["segmentation_type"], "BINARY");
    let segment = &seg["segments"][0];
    assert_eq!((segment["label"].as_str(), segment["property_type"].as_str(), segment["algorithm_type"].as_str()), (Some("lesion 1"), Some("52988006"), Some("AUTOMATIC")));
    let expected: Vec<u64> = runs(&mask);
    let got: Vec<u64> = segment["runs"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert!(got == expected, "the SEG's mask is not the mask");
    assert_eq!(seg["source_instances"].as_array().unwrap().len(), 1);
    assert_eq!(sr["study"], seg["study"]);
    assert!(seg["study"].as_str().unwrap().starts_with("1.3.6.1.4.1.5962.") && seg["patient_name"] != "ANONYMOUS", "the source's study: {seg}");
    assert_eq!(sr["template"], "1500");
    let group = &sr["groups"][0];
    assert_eq!((group["kind"].as_str(), group["tracking_identifier"].as_str(), group["finding"].as_str()), (Some("planar_roi"), Some("lesion 1"), Some("52988006")));
    assert_eq!(group["region_source"], seg["source_instances"][0]);
    assert!(group["region_points"].as_u64().unwrap() >= 4);
    let value = |code: &str| {
        group["measurements"].as_array().unwrap().iter().find(|m| m["code"] == code).unwrap_or_else(|| panic!("no {code} in {group}"))["value"].as_f64().unwrap()
    };
    let (m, d) = (&printed["measurements"], &printed["descriptors"]);
    assert!(close(value("103339001"), m["long_axis_mm"].as_f64().unwrap()), "long axis");
    assert!(close(value("103340004"), m["short_axis_mm"].as_f64().unwrap()), "short axis");
    assert!(close(value("42798000"), m["area_mm2"].as_f64().unwrap()), "area");
    for (code, key) in [("CIRCULARITY", "circularity"), ("CONVEXITY", "convexity"), ("DEPTHWIDTHRATIO", "depth_width_ratio"), ("LOBULATIONS", "lobulations")] {
        assert!(close(value(code), d[key].as_f64().unwrap()), "{code}");
    }
    let calls: Vec<(String, String)> = group["evaluations"].as_array().unwrap().iter().map(|e| (e["concept"].as_str().unwrap().into(), e["value"].as_str().unwrap().into())).collect();
    let expect = |k: &str| d["calls"][k].as_str().unwrap().replace('_', "").to_uppercase();
    assert_eq!(calls, vec![("SHAPE".into(), expect("shape")), ("ORIENTATION".into(), expect("orientation")), ("MARGIN".into(), expect("margin"))]);

    // De-identified: no name, the source's UIDs replaced — consistently in both objects.
    let (_, _, anonymous) = export_with(&s(&data.join("us_calibrated.dcm")), "60,40,200,180", &["--deidentify"]);
    for object in ["seg", "sr"] {
        let o = &anonymous[object];
        assert_eq!((o["patient_name"].as_str(), o["patient_identity_removed"].as_str()), (Some("ANONYMOUS"), Some("YES")), "{o}");
        assert!(o["study"].as_str().unwrap().starts_with("2.25."), "{o}");
    }
    assert_eq!(anonymous["sr"]["study"], anonymous["seg"]["study"]);
    assert_ne!(anonymous["seg"]["source_instances"], seg["source_instances"]);
    assert_eq!(anonymous["sr"]["groups"][0]["region_source"], anonymous["seg"]["source_instances"][0]);

    // A PNG: one new study for both objects, no image to point into, no millimetres.
    let (_, mask, read) = export("www/samples/benign_93.png", "41,44,176,119");
    let (seg, sr) = (&read["seg"], &read["sr"]);
    let got: Vec<u64> = seg["segments"][0]["runs"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert!(got == runs(&mask), "the SEG's mask is not the mask");
    assert!(seg["source_instances"].as_array().unwrap().is_empty());
    assert!(seg["study"].as_str().unwrap().starts_with("2.25.") && sr["study"] == seg["study"], "{read}");
    let group = &sr["groups"][0];
    assert_eq!(group["kind"], "image");
    assert!(!group["measurements"].as_array().unwrap().iter().any(|m| m["unit"] == "mm" || m["unit"] == "mm2"), "pixels exported as mm: {group}");
}

/// A data folder may hold DICOM images (their first frame), next to PNGs; masks are PNGs.
#[test]
fn eval_reads_dicom_images_in_data_folders() {
    let dicom = repo().join("target/test-data/dicom");
    assert!(dicom.join("reference.json").is_file(), "no DICOM test data: run scripts/dicom-test-data.sh");
    let dir = scratch("dicom-data");
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::create_dir_all(dir.join("masks")).unwrap();
    std::fs::copy(dicom.join("us_calibrated.dcm"), dir.join("images/scan.dcm")).unwrap();
    std::fs::copy(dicom.join("JPEG2000.dcm"), dir.join("images/unsupported.dcm")).unwrap();
    std::fs::copy(repo().join("www/samples/benign_93.png"), dir.join("images/b93.png")).unwrap();
    std::fs::copy(repo().join("www/samples/benign_93_mask.png"), dir.join("masks/b93.png")).unwrap();
    // The scan's lesion: a block in the middle of its 320 × 240 frame.
    let mask = image::GrayImage::from_fn(320, 240, |x, y| image::Luma([if (100..200).contains(&x) && (80..160).contains(&y) { 255 } else { 0 }]));
    mask.save(dir.join("masks/scan.png")).unwrap();
    std::fs::write(dir.join("masks/unsupported.png"), std::fs::read(dir.join("masks/scan.png")).unwrap()).unwrap();
    let json = dir.join("summary.json");
    let run = sonosam(&["eval", "--data", &s(&dir), "--split", "all", "--jitter", "0", "--json", &s(&json), "--csv", &s(&dir.join("scores.csv"))]);
    assert!(run.status.success());
    let all = String::from_utf8_lossy(&run.stdout).into_owned() + &String::from_utf8_lossy(&run.stderr);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["n"], 2, "the DICOM image and the PNG: {all}");
    let csv = std::fs::read_to_string(dir.join("scores.csv")).unwrap();
    assert!(csv.contains("images/scan.dcm"), "{csv}");
    assert!(all.contains("unsupported.dcm") && all.contains("JPEG 2000"), "the unsupported file is listed with its reason: {all}");
}

/// A small data set in the images/ + masks/ layout with every kind of problem.
#[test]
fn bench_times_training_steps() {
    // Two shards (threads) for a batch of 2, then the whole batch in one graph.
    for shards in ["2", "1"] {
        let out = ok(&["bench", "--train", "--backend", "cpu", "--runs", "1", "--batch-size", "2", "--shards", shards]);
        let row = out.lines().find(|l| l.starts_with("cpu")).expect("a cpu row");
        let ms: f64 = row.split_whitespace().nth(1).unwrap().parse().expect("step time in ms");
        assert!(ms > 0.0, "{row}");
    }
}

fn messy_dataset(dir: &Path) -> PathBuf {
    let root = dir.join("data");
    std::fs::create_dir_all(root.join("images")).unwrap();
    std::fs::create_dir_all(root.join("masks")).unwrap();
    let copy = |from: &str, to: &str| std::fs::copy(busi().join(from), root.join(to)).unwrap();
    for k in [1, 2, 4, 5] {
        copy(&format!("benign/benign ({k}).png"), &format!("images/b{k}.png"));
        copy(&format!("benign/benign ({k})_mask.png"), &format!("masks/b{k}_mask.png"));
    }
    // An image without a mask, an empty mask, a mask of another size, an unreadable image.
    copy("benign/benign (6).png", "images/nomask.png");
    copy("normal/normal (1).png", "images/empty.png");
    copy("normal/normal (1)_mask.png", "masks/empty_mask.png");
    copy("benign/benign (7).png", "images/wrongsize.png");
    copy("malignant/malignant (1)_mask.png", "masks/wrongsize_mask.png");
    std::fs::write(root.join("images/broken.png"), b"garbage").unwrap();
    std::fs::write(root.join("masks/broken_mask.png"), b"garbage").unwrap();
    root
}

#[test]
fn finetune_small_subset_learns_saves_reloads_and_resumes() {
    let dir = scratch("finetune");
    let data = messy_dataset(&dir);
    let splits = dir.join("splits.csv");
    std::fs::write(
        &splits,
        "image,masks,label,split,dup_group\n\
         images/b1.png,masks/b1_mask.png,benign,train,0\n\
         images/b2.png,masks/b2_mask.png,benign,train,1\n\
         images/b4.png,masks/b4_mask.png,benign,train,2\n\
         images/nomask.png,,benign,train,3\n\
         images/empty.png,masks/empty_mask.png,normal,train,4\n\
         images/wrongsize.png,masks/wrongsize_mask.png,benign,train,5\n\
         images/broken.png,masks/broken_mask.png,benign,train,6\n\
         images/b5.png,masks/b5_mask.png,benign,val,7\n",
    )
    .unwrap();
    let run = dir.join("run");
    let base = [
        "finetune", "--data", &s(&data), "--splits", &s(&splits), "--out", &s(&run),
        "--batch-size", "2", "--jitter", "0", "--lr", "1e-4", "--seed", "3",
    ];
    let mut args = base.to_vec();
    args.extend(["--epochs", "2"]);
    let out = ok(&args);
    // Every problem is reported.
    assert!(out.contains("wrongsize_mask.png: mask is"), "size mismatch not reported");
    assert!(out.contains("broken.png"), "unreadable image not reported");
    assert!(out.contains("without a lesion"), "image without mask not reported");
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let losses: Vec<f64> = metrics.lines().skip(1).map(|l| l.split(',').nth(1).unwrap().parse().unwrap()).collect();
    assert_eq!(losses.len(), 2);
    assert!(losses[1] < losses[0], "training loss should decrease: {losses:?}");
    for f in ["decoder.f32.safetensors", "decoder.f16.safetensors", "model.json", "curves.svg", "best/state.json", "last/adam.safetensors"] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let card: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("model.json")).unwrap()).unwrap();
    assert_eq!(card["epochs"], 2);
    // The best epoch is chosen by the objective (mean Dice over tight, jitter 10, jitter 20 and
    // one click on val), and the card lists every protocol for the start and the export.
    assert_eq!(card["objective"], serde_json::json!(["tight", "jitter10", "jitter20", "click"]));
    for which in ["start", "exported"] {
        let v = &card["validation"][which];
        for key in ["tight", "jitter10", "jitter20", "click"] {
            assert!(v["prompts"][key]["dice_mean"].as_f64().is_some(), "{which} {key}: {v}");
        }
        for key in ["from_box", "from_click"] {
            assert!(v["noc"][key]["noc90"].as_f64().is_some(), "{which} {key}: {v}");
        }
        assert!(v["predicted_iou_r"].is_number());
    }
    assert!(metrics.lines().next().unwrap().starts_with("epoch,train_loss,val_score,val_dice,val_iou,lr,seconds,val_click,val_jitter10,val_jitter20,val_tight"), "{metrics}");
    // Deterministic for a seed and backend: a fresh run repeats epoch 1 exactly.
    let run2 = dir.join("run2");
    let mut args2: Vec<&str> = base.to_vec();
    let run2_s = s(&run2);
    args2[6] = &run2_s;
    args2.extend(["--epochs", "1"]);
    ok(&args2);
    // epoch, train loss, val Dice, val IoU, lr (not the seconds).
    let first = |p: &Path| {
        let m = std::fs::read_to_string(p.join("metrics.csv")).unwrap();
        m.lines().nth(1).unwrap().split(',').take(5).collect::<Vec<_>>().join(",")
    };
    assert_eq!(first(&run), first(&run2), "same seed, same epoch-1 metrics");
    // The exported decoder loads in the CLI.
    ok(&["segment", "www/samples/benign_93.png", "--box", "41,44,176,119", "--out", &s(&dir.join("m.png")), "--decoder", &s(&run)]);
    // Resume: one more epoch continues after epoch 2.
    let mut args = base.to_vec();
    args.extend(["--epochs", "3", "--resume", "--average-with-start", "0.5"]);
    let out = ok(&args);
    assert!(out.contains("resuming") && out.contains("epoch 3/3"));
    assert_eq!(std::fs::read_to_string(run.join("metrics.csv")).unwrap().lines().count(), 4);
    // Weight averaging: the half-way average of the starting decoder and the best epoch is
    // validated, and exported only when it beats the best epoch on the objective.
    assert!(out.contains("weight averaging kept:"), "{out}");
    let card: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("model.json")).unwrap()).unwrap();
    let averaging = &card["weight_averaging"];
    assert_eq!(averaging["best_epoch"], card["metrics"]["best_epoch"]);
    assert_eq!(averaging["tried"][0]["share"], 0.5);
    let (average, epoch) = (averaging["tried"][0]["val"]["score"].as_f64().unwrap(), averaging["best_epoch_val_score"].as_f64().unwrap());
    let kept = averaging["kept_share"].as_f64().unwrap();
    assert_eq!(kept, if average > epoch { 0.5 } else { 1.0 }, "{averaging}");
    let tensor = |p: &Path| {
        let map = sonosam_model::TensorMap::from_safetensors(&std::fs::read(p).unwrap(), "decoder").unwrap();
        map.raw("mask_decoder.output_hypernetworks_mlps.0.layers.2.bias").unwrap().data.clone()
    };
    let (start, best, exported) = (
        tensor(&repo().join("weights/litemedsam.decoder.f32.safetensors")),
        tensor(&run.join("best/decoder.safetensors")),
        tensor(&run.join("decoder.f32.safetensors")),
    );
    assert_ne!(start, best, "training moved the single-mask output's hypernetwork");
    for i in 0..exported.len() {
        let expected = start[i] + kept as f32 * (best[i] - start[i]);
        assert!((exported[i] - expected).abs() < 1e-6, "kept {kept}: {} vs {expected}", exported[i]);
    }
    fails_with(&[&base[..], &["--average-with-start", "1.5"]].concat(), &["--average-with-start takes fractions"]);
    // A corrupt checkpoint is refused with a clear message, and left in place.
    let adam = run.join("last/adam.safetensors");
    let mut bytes = std::fs::read(&adam).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&adam, &bytes).unwrap();
    let mut args = base.to_vec();
    args.extend(["--epochs", "4", "--resume"]);
    fails_with(&args, &["cannot resume", "corrupt"]);
    assert!(run.join("best/decoder.safetensors").exists());
    // Never the test split.
    let mut args = base.to_vec();
    args.extend(["--val-split", "test"]);
    fails_with(&args, &["test split"]);

    // Calibration only (`--epochs 0 --calibrate`): a mask-logit bias fitted on the training
    // split, reported with its effect, recorded in the card and in both decoder files, and
    // applied where the decoder is used.
    let run3 = dir.join("run3");
    let run3_s = s(&run3);
    let mut args3: Vec<&str> = base.to_vec();
    args3[6] = &run3_s;
    args3.extend(["--epochs", "0", "--calibrate"]);
    let out = ok(&args3);
    assert!(out.contains("fitted on train: mask-logit bias") && out.contains("calibration kept:"), "{out}");
    let card: serde_json::Value = serde_json::from_slice(&std::fs::read(run3.join("model.json")).unwrap()).unwrap();
    let bias = card["calibration"]["bias"].as_f64().expect("a bias in the card") as f32;
    assert!((-2.0..=3.0).contains(&bias));
    assert!(card["calibration"]["train_dice_after"].as_f64().unwrap() >= card["calibration"]["train_dice_before"].as_f64().unwrap());
    // A second bias for clicks alone, fitted on one click per training lesion.
    let click_bias = card["calibration"]["click_bias"].as_f64().expect("a click bias in the card") as f32;
    assert!(card["calibration"]["click_train_dice_after"].as_f64().unwrap() >= card["calibration"]["click_train_dice_before"].as_f64().unwrap());
    for f in ["decoder.f32.safetensors", "decoder.f16.safetensors"] {
        let map = sonosam_model::TensorMap::from_safetensors(&std::fs::read(run3.join(f)).unwrap(), f).unwrap();
        let v: f32 = map.metadata()["mask_logit_bias"].parse().unwrap();
        assert_eq!(v, bias, "{f}");
        let v: f32 = map.metadata()["mask_logit_bias_clicks"].parse().unwrap();
        assert_eq!(v, click_bias, "{f}");
    }
    let area = |decoder: &str, name: &str| {
        let p = dir.join(name);
        ok(&["segment", "www/samples/benign_93.png", "--box", "41,44,176,119", "--out", &s(&p), "--decoder", decoder]);
        sonosam_model::Mask::from_image_bytes(&std::fs::read(&p).unwrap()).unwrap().area()
    };
    let (plain, calibrated) = (area("base", "plain.png"), area(&run3_s, "calibrated.png"));
    // A positive bias lowers the threshold: the mask can only grow (and shrinks for a negative one).
    assert!(if bias >= 0.0 { calibrated >= plain } else { calibrated <= plain }, "bias {bias}: {plain} → {calibrated} px");
    eprintln!("calibrated bias {bias}: mask {plain} → {calibrated} px");
    fails_with(&["finetune", "--data", &s(&data), "--splits", &s(&splits), "--out", &s(&dir.join("run4")), "--epochs", "0"], &["--epochs 0 only with --calibrate"]);

    // Mixed prompts: clicks, correction rounds answered by the decoder being trained, the IoU
    // head's loss — a run that trains and exports, with the recipe in its card.
    let run5 = dir.join("run5");
    let run5_s = s(&run5);
    let mut args5: Vec<&str> = base.to_vec();
    args5[6] = &run5_s;
    args5.extend(["--epochs", "1", "--click-share", "0.5", "--corrections", "2", "--iou-weight", "1", "--train-prompt-encoder", "--objective", "tight,click"]);
    ok(&args5);
    let card: serde_json::Value = serde_json::from_slice(&std::fs::read(run5.join("model.json")).unwrap()).unwrap();
    // The prompt encoder trained too: its click embedding moved, and the card says so.
    assert_eq!(card["recipe"]["frozen"], serde_json::json!(["image_encoder"]));
    let click_embedding = |p: &Path| {
        let map = sonosam_model::TensorMap::from_safetensors(&std::fs::read(p).unwrap(), "decoder").unwrap();
        map.raw("prompt_encoder.point_embeddings.1.weight").unwrap().data.clone()
    };
    assert_ne!(click_embedding(&run5.join("last/decoder.safetensors")), click_embedding(&repo().join("weights/litemedsam.decoder.f32.safetensors")));
    assert_eq!(card["recipe"]["prompts"]["click_share"], 0.5);
    assert_eq!(card["recipe"]["prompts"]["corrections"], 2);
    assert_eq!(card["recipe"]["iou_loss_weight"], 1.0);
    assert_eq!(card["recipe"]["prompts"]["box_multimask"], false);
    assert_eq!(card["objective"], serde_json::json!(["tight", "click"]));
    let loss = card["metrics"]["per_epoch"][0]["train_loss"].as_f64().unwrap();
    assert!(loss.is_finite() && loss > 0.0, "{loss}");
    // Resuming with another objective is refused (the best epoch was chosen by this one).
    let mut args = args5.clone();
    args.truncate(args.len() - 2);
    args.extend(["--resume"]);
    let epochs = args.iter().position(|a| *a == "1").unwrap();
    args[epochs] = "2";
    fails_with(&args, &["chose its best epoch by tight,click"]);
    fails_with(&[&base[..], &["--click-share", "1.5"]].concat(), &["--click-share"]);
    // Boxes as ambiguous prompts need the IoU head trained: it picks their mask.
    fails_with(&[&base[..], &["--box-multimask"]].concat(), &["--box-multimask needs --iou-weight"]);
    fails_with(&[&base[..], &["--objective", "correct-box"]].concat(), &["correction run"]);
}

/// Official-layout SAM checkpoints: a tiny ViT with random weights (`../shared/golden`) runs
/// through `--checkpoint` (detected), converts with `convert`, loads back by `--model`, and a
/// mismatched model name or a decoder fine-tuned for another model is refused.
#[test]
fn sam_vit_checkpoint_segment_convert_and_mismatch() {
    let dir = scratch("sam-vit");
    let tiny = repo().join("../shared/golden/sam_vit_tiny/sam_vit_tiny_random.pth");
    let mask = dir.join("mask.png");
    let out = ok(&[
        "segment", "www/samples/benign_93.png", "--checkpoint", &s(&tiny),
        "--box", "41,44,176,119", "--multimask", "--out", &s(&mask),
    ]);
    assert!(out.contains("model sam-vit-64x4"), "{out}");
    let m = Mask::from_image_bytes(&std::fs::read(&mask).unwrap()).unwrap();
    let img = image::open(repo().join("www/samples/benign_93.png")).unwrap();
    assert_eq!((m.width, m.height), (img.width() as usize, img.height() as usize));

    let weights = dir.join("weights");
    let out = ok(&["convert", &s(&tiny), "--out", &s(&weights)]);
    assert!(out.contains("sam-vit-64x4 converted"), "{out}");
    for f in [
        "sam-vit-64x4.json",
        "sam-vit-64x4.image_encoder.f32.safetensors",
        "sam-vit-64x4.decoder.f16.safetensors",
    ] {
        assert!(weights.join(f).exists(), "{f}");
    }
    let mask2 = dir.join("mask2.png");
    ok(&[
        "segment", "www/samples/benign_93.png", "--model", "sam-vit-64x4", "--weights", &s(&weights),
        "--box", "41,44,176,119", "--multimask", "--out", &s(&mask2),
    ]);
    assert_eq!(std::fs::read(&mask).unwrap(), std::fs::read(&mask2).unwrap(), "converted = checkpoint");

    fails_with(
        &["segment", "www/samples/benign_93.png", "--model", "sam-vit-b", "--checkpoint", &s(&tiny),
          "--box", "41,44,176,119", "--out", &s(&mask)],
        &["holds a sam-vit-64x4 model, not sam-vit-b"],
    );
    fails_with(
        &["convert", &s(&tiny), "--model", "mobilesam", "--out", &s(&weights)],
        &["not mobilesam"],
    );
    fails_with(
        &["segment", "www/samples/benign_93.png", "--model", "sam-vit-h", "--weights", &s(&weights),
          "--box", "41,44,176,119", "--out", &s(&mask)],
        &["no converted sam-vit-h weights", "--checkpoint"],
    );
    let not_sam = dir.join("not_sam.pth");
    std::fs::write(&not_sam, b"PK\x03\x04 definitely not a checkpoint").unwrap();
    fails_with(
        &["segment", "www/samples/benign_93.png", "--checkpoint", &s(&not_sam),
          "--box", "41,44,176,119", "--out", &s(&mask)],
        &["not_sam.pth"],
    );
}

/// `segment` on DICOM files (the test data of scripts/dicom-test-data.sh): a frame of pydicom's
/// cine, whose ultrasound regions do not fit its pixels, stays in pixels and says why; the
/// consistent variant (0.2 mm per pixel in region 1) measures in mm; bad files are clear errors.
#[test]
fn segment_dicom_frames_with_their_calibration() {
    let data = repo().join("target/test-data/dicom");
    assert!(data.join("reference.json").is_file(), "no DICOM test data: run scripts/dicom-test-data.sh");
    let dir = scratch("dicom");
    let s = |p: &Path| p.display().to_string();
    let out = s(&dir.join("m.png"));
    let json = |file: &str, extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["segment", "--box", "60,40,200,180", "--out", &out, "--json"];
        let path = s(&data.join(file));
        args.insert(1, &path);
        args.extend_from_slice(extra);
        serde_json::from_str(&ok(&args)).expect("--json prints JSON")
    };
    let calibrated = json("us_calibrated.dcm", &[]);
    let c = &calibrated["calibration"];
    assert_eq!((c["source"].as_str(), c["region"].as_u64()), (Some("us-region"), Some(1)), "{calibrated}");
    let m = &calibrated["measurements"];
    let (px, mm) = (m["long_axis_px"].as_f64().unwrap(), m["long_axis_mm"].as_f64().unwrap());
    assert!((mm - px * 0.2).abs() < 1e-9, "{px} px → {mm} mm at 0.2 mm/px");
    assert!((m["area_mm2"].as_f64().unwrap() - m["area_px"].as_f64().unwrap() * 0.04).abs() < 1e-6);
    assert!(Mask::from_image_bytes(&std::fs::read(&out).unwrap()).unwrap().area() > 0);
    // Every mask says whether its predicted IoU asks for a check (below 0.85, chosen on val).
    for mask in calibrated["masks"].as_array().unwrap() {
        let low = mask["predicted_iou"].as_f64().unwrap() < f64::from(sonosam_model::segmentation::LOW_PREDICTED_IOU);
        assert_eq!(mask["low_predicted_iou"].as_bool(), Some(low), "{mask}");
    }

    let cine = json("examples_ybr_color.dcm", &["--frame", "10"]);
    assert_eq!(cine["dicom"]["frame"], 10);
    assert_eq!(cine["dicom"]["frames"], 30);
    assert_eq!(cine["calibration"]["source"], "none");
    assert!(cine["calibration"]["note"].as_str().unwrap().contains("do not fit this image"));
    assert!(cine["measurements"]["long_axis_mm"].is_null(), "never a guessed mm: {cine}");
    // A scale given by hand (a PNG has none).
    let png = serde_json::from_str::<serde_json::Value>(&ok(&["segment", "www/samples/benign_93.png", "--box", "41,44,176,119", "--out", &out, "--json", "--mm-per-px", "0.1"])).unwrap();
    assert_eq!(png["calibration"]["source"], "manual");
    // Text output names the calibration.
    let text = ok(&["segment", &s(&data.join("us_calibrated.dcm")), "--box", "60,40,200,180", "--out", &out]);
    assert!(text.contains("mm)") && text.contains("calibration: ultrasound region 1"), "{text}");

    let b = "1,1,20,20";
    fails_with(&["segment", &s(&data.join("JPEG2000.dcm")), "--box", b, "--out", &out], &["JPEG 2000", "not supported"]);
    fails_with(&["segment", &s(&data.join("truncated_cine.dcm")), "--box", b, "--out", &out], &["truncated"]);
    fails_with(&["segment", &s(&data.join("more_pixels_declared.dcm")), "--box", b, "--out", &out], &["declares"]);
    fails_with(&["segment", &s(&data.join("absurd_frames.dcm")), "--box", b, "--out", &out], &["1000000 frames"]);
    fails_with(&["segment", &s(&data.join("examples_ybr_color.dcm")), "--frame", "30", "--box", b, "--out", &out], &["frame 30 does not exist"]);
    fails_with(&["segment", "www/samples/benign_93.png", "--frame", "2", "--box", b, "--out", &out], &["DICOM files only"]);
}
