//! `sonosam segment`.

use anyhow::{Context, anyhow, bail};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use sonosam_model::backend::{BackendKind, init_device};
use sonosam_model::overlay::render_overlay;
use serde_json::json;
use sonosam_dicom::Calibration;
use sonosam_dicom::export::{Export as DicomExport, Lesion as DicomLesion};
use sonosam_model::measure::Measurements;
use sonosam_model::measure::descriptors::describe;
use sonosam_model::report::{Report, ReportLesion, iso_utc};
use sonosam_model::segmentation::{LOW_PREDICTED_IOU, low_predicted_iou};
use sonosam_model::{Geometry, Point, PointLabel, Predictor, Prompt, StoreDType};

use crate::CliResult;
use crate::files::{check_output, write_atomic};
use crate::images::InputImage;
use crate::model_io::{self, ModelArgs};

#[derive(Args)]
pub struct SegmentArgs {
    /// Ultrasound image: PNG, JPEG, BMP or DICOM.
    pub image: PathBuf,
    /// Frame of a DICOM file (cine loops), from 0.
    #[arg(long)]
    pub frame: Option<u32>,
    /// Millimetres per pixel, for images that carry no calibration (e.g. from the depth ruler).
    #[arg(long)]
    pub mm_per_px: Option<f64>,
    /// Print the result as JSON (masks, measurements in px and mm, the calibration and its
    /// source) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Box around the lesion: x0,y0,x1,y1 in image pixels.
    #[arg(long = "box", value_parser = parse_box, allow_hyphen_values = true)]
    pub bbox: Option<[f32; 4]>,
    /// Point x,y,label (1 = lesion, 0 = background); repeat for more points.
    #[arg(long = "point", value_parser = parse_point, allow_hyphen_values = true)]
    pub points: Vec<Point>,
    /// Return SAM's three candidate masks instead of one.
    #[arg(long)]
    pub multimask: bool,
    /// Output mask PNG (the best mask; with --multimask the candidates go to NAME.K.png too).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write an overlay PNG (image, mask, contour, box, points).
    #[arg(long)]
    pub overlay: Option<PathBuf>,
    /// Also write the lesion report: `.html` (one self-contained page that prints to PDF from
    /// a browser) or `.json`, by the file's extension.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Also write the lesion as a DICOM Segmentation (binary), in the source's study when the
    /// image is DICOM, else in a new one.
    #[arg(long)]
    pub seg: Option<PathBuf>,
    /// Also write the measurements as a DICOM Structured Report (TID 1500 Measurement Report,
    /// Comprehensive SR).
    #[arg(long)]
    pub sr: Option<PathBuf>,
    /// De-identify the DICOM exports (PS3.15 Basic Application Confidentiality Profile): no
    /// patient identifiers or dates copied, the source's UIDs replaced consistently.
    #[arg(long)]
    pub deidentify: bool,
    /// cpu, wgpu or cuda.
    #[arg(long, default_value = "cpu", value_parser = crate::parse_backend)]
    pub backend: BackendKind,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Weights precision: f32, f16 or i8 (computation is f32 either way).
    #[arg(long, default_value = "f32", value_parser = crate::parse_dtype)]
    pub dtype: StoreDType,
    /// Decoder: `base`, a fine-tuning run folder or a decoder .safetensors file.
    #[arg(long, default_value = "base")]
    pub decoder: String,
}

fn parse_numbers(s: &str, n: usize, what: &str) -> Result<Vec<f32>, String> {
    let v: Vec<f32> = s
        .split(',')
        .map(|p| p.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{what} `{s}`: expected {n} comma-separated numbers"))?;
    if v.len() != n {
        return Err(format!("{what} `{s}`: expected {n} comma-separated numbers"));
    }
    Ok(v)
}

fn parse_box(s: &str) -> Result<[f32; 4], String> {
    let v = parse_numbers(s, 4, "box")?;
    Ok([v[0], v[1], v[2], v[3]])
}

fn parse_point(s: &str) -> Result<Point, String> {
    let v = parse_numbers(s, 3, "point")?;
    // Exactly 1 or 0: `0.5` or `nan` must not quietly become a background point.
    let label = if v[2] == 1.0 {
        PointLabel::Positive
    } else if v[2] == 0.0 {
        PointLabel::Negative
    } else {
        return Err(format!("point `{s}`: label must be 1 (lesion) or 0 (background)"));
    };
    Ok(Point {
        x: v[0],
        y: v[1],
        label,
    })
}

fn sibling(path: &Path, k: usize) -> PathBuf {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("mask");
    path.with_file_name(format!("{stem}.{k}.png"))
}

pub fn run(args: SegmentArgs) -> CliResult<()> {
    let prompt = Prompt {
        points: args.points.clone(),
        bbox: args.bbox,
    };
    if prompt.is_empty() {
        bail!("give a --box and/or at least one --point");
    }
    // Every output must be writable before any work is done, so a bad path never leaves
    // some outputs written and others not.
    let mut outputs = vec![args.out.clone()];
    if args.multimask {
        outputs.extend((0..3).map(|k| sibling(&args.out, k)));
    }
    outputs.extend(args.overlay.clone());
    outputs.extend(args.report.clone());
    outputs.extend(args.seg.clone());
    outputs.extend(args.sr.clone());
    outputs.iter().try_for_each(|p| check_output(p))?;
    if let Some(path) = &args.report {
        ReportFormat::of(path)?;
    }
    if args.mm_per_px.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
        bail!("--mm-per-px must be a positive number");
    }
    let input = InputImage::read(&args.image, args.frame)?;
    let image = &input.rgb;

    let device = init_device(args.backend)?;
    let t = Instant::now();
    let loaded = args.model.load(args.dtype, &device)?;
    let decoder = match args.decoder.as_str() {
        "base" => None,
        spec => Some(model_io::load_decoder(spec, &loaded, &device)?.1),
    };
    let sam = loaded.sam;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;

    // A prompt outside the image is refused before the encoder runs.
    Geometry::new(image.height() as usize, image.width() as usize, sam.config.img_size())
        .prompt_to_frame(&prompt)?;
    let mut predictor = Predictor::new(decoder.unwrap_or(sam.decoder));
    let t = Instant::now();
    predictor.set_image(&sam.encoder, image, &sam.config)?;
    device.sync().map_err(|e| anyhow!("encoder: {e:?}"))?;
    let encode_ms = t.elapsed().as_secs_f64() * 1e3;

    let t = Instant::now();
    let seg = predictor.predict(&prompt, None, args.multimask)?;
    let decode_ms = t.elapsed().as_secs_f64() * 1e3;

    let best = seg.best();
    let measured = input.measure(&seg.masks[best], args.mm_per_px);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report(&args, &input, &seg, measured.as_ref()))?);
    } else {
        println!(
            "image {} ({}×{}{}), model {}, backend {}, weights {} ({load_ms:.0} ms to load)",
            args.image.display(),
            image.width(),
            image.height(),
            input.dicom.as_ref().map_or(String::new(), |d| format!(", DICOM frame {} of {}", input.frame, d.info.frames)),
            loaded.id,
            args.backend,
            args.dtype.suffix()
        );
        for (k, (mask, iou)) in seg.masks.iter().zip(&seg.iou).enumerate() {
            let mark = if k == best { "  (best)" } else { "" };
            let check = if low_predicted_iou(*iou) { format!("  (under {LOW_PREDICTED_IOU}: check the outline)") } else { String::new() };
            println!("mask {k}: predicted IoU {iou:.4}, area {} px{mark}{check}", mask.area());
        }
        if let Some((m, calibration)) = &measured {
            println!("lesion: {}; calibration: {}", m.summary(), calibration.describe());
            match describe(&seg.masks[best], calibration.mm_per_px) {
                Ok(d) => println!("descriptors: {}", d.summary()),
                Err(e) => println!("descriptors: not measurable ({e})"),
            }
        }
        println!("encoder {encode_ms:.1} ms, decoder {decode_ms:.1} ms");
    }
    // What was written goes to stderr with --json (stdout holds the JSON).
    let wrote = |p: &Path| if args.json { eprintln!("wrote {}", p.display()) } else { println!("wrote {}", p.display()) };
    let png = seg.masks[best].to_png()?;
    write_atomic(&args.out, &png)?;
    wrote(&args.out);
    if args.multimask {
        for (k, mask) in seg.masks.iter().enumerate() {
            let path = sibling(&args.out, k);
            write_atomic(&path, &mask.to_png()?)?;
            wrote(&path);
        }
    }
    if let Some(path) = &args.overlay {
        write_atomic(path, &overlay_png(image, &seg.masks[best], &prompt)?)?;
        wrote(path);
    }
    if args.report.is_none() && args.seg.is_none() && args.sr.is_none() {
        return Ok(());
    }
    let report = lesion_report(&args, &input, &loaded.id, &seg, measured.as_ref());
    if let Some(path) = &args.report {
        let bytes = match ReportFormat::of(path)? {
            ReportFormat::Html => report.to_html(&overlay_png(image, &seg.masks[best], &prompt)?),
            ReportFormat::Json => report.to_json(),
        };
        write_atomic(path, bytes.as_bytes())?;
        wrote(path);
    }
    for (path, kind) in [(&args.seg, DicomKind::Segmentation), (&args.sr, DicomKind::Report)] {
        if let Some(path) = path {
            write_atomic(path, &dicom_export(&report, &input, kind, args.deidentify)?)?;
            wrote(path);
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum DicomKind {
    Segmentation,
    Report,
}

/// The report's lesions as a DICOM Segmentation or Measurement Report.
fn dicom_export(report: &Report, input: &InputImage, kind: DicomKind, deidentify: bool) -> CliResult<Vec<u8>> {
    let lesions: Vec<DicomLesion> = report
        .lesions
        .iter()
        .map(|l| DicomLesion { name: &l.name, mask: &l.mask.data, outline: &l.outline, numbers: l.numbers(), calls: l.calls() })
        .collect();
    let export = DicomExport {
        source: input.dicom.as_ref().map(|d| (d, input.frame)),
        width: input.rgb.width(),
        height: input.rgb.height(),
        lesions: &lesions,
        created: &report.created,
        image_name: &report.image,
        software_version: env!("CARGO_PKG_VERSION"),
        deidentify,
    };
    Ok(match kind {
        DicomKind::Segmentation => export.segmentation()?,
        DicomKind::Report => export.measurement_report()?,
    })
}

/// The image with the mask, its contour and the prompt drawn in, as PNG bytes.
fn overlay_png(image: &image::RgbImage, mask: &sonosam_model::Mask, prompt: &Prompt) -> CliResult<Vec<u8>> {
    let overlay = render_overlay(image, std::slice::from_ref(mask), prompt, 0.45);
    let mut buf = Vec::new();
    overlay
        .write_to(&mut std::io::Cursor::new(&mut buf), image::ImageFormat::Png)
        .context("encoding overlay")?;
    Ok(buf)
}

enum ReportFormat {
    Html,
    Json,
}

impl ReportFormat {
    fn of(path: &Path) -> CliResult<Self> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("html" | "htm") => Ok(Self::Html),
            Some("json") => Ok(Self::Json),
            _ => bail!("--report {}: name it .html or .json", path.display()),
        }
    }
}

/// The report of the best mask: one lesion, its measurements and descriptors.
fn lesion_report(
    args: &SegmentArgs,
    input: &InputImage,
    model: &str,
    seg: &sonosam_model::Segmentation,
    measured: Option<&(Measurements, Calibration)>,
) -> Report {
    let best = seg.best();
    let spacing = measured.and_then(|(_, c)| c.mm_per_px);
    let file = args.image.file_name().map_or_else(|| args.image.display().to_string(), |f| f.to_string_lossy().into_owned());
    let source = match &input.dicom {
        Some(d) => d.info.describe_frame(input.frame),
        None => format!("{} image", args.image.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_uppercase()),
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Report {
        image: file,
        width: input.rgb.width() as usize,
        height: input.rgb.height() as usize,
        source,
        model: model.to_string(),
        decoder: args.decoder.clone(),
        created: iso_utc(now),
        software: format!("sonosam {}", env!("CARGO_PKG_VERSION")),
        lesions: vec![ReportLesion::new(
            "lesion 1".into(),
            &seg.masks[best],
            seg.iou[best],
            measured.map(|(m, _)| *m),
            measured.map_or_else(|| "none".into(), |(_, c)| c.describe()),
            measured.map_or(serde_json::Value::Null, |(_, c)| json!(c)),
            spacing,
        )],
    }
}

/// The `--json` result: every mask's area and predicted IoU, the best one's measurements in px
/// and (when calibrated) mm, and the calibration with its source.
fn report(
    args: &SegmentArgs,
    input: &InputImage,
    seg: &sonosam_model::Segmentation,
    measured: Option<&(Measurements, Calibration)>,
) -> serde_json::Value {
    let masks: Vec<_> = seg.masks.iter().zip(&seg.iou).map(|(m, iou)| json!({ "area_px": m.area(), "predicted_iou": iou, "low_predicted_iou": low_predicted_iou(*iou) })).collect();
    let measurements = measured.map(|(m, _)| {
        json!({
            "area_px": m.area_px,
            "long_axis_px": m.long_axis.length_px,
            "short_axis_px": m.short_axis.length_px,
            "long_axis_mm": m.long_mm(),
            "short_axis_mm": m.short_mm(),
            "area_mm2": m.area_mm2(),
        })
    });
    json!({
        "image": args.image.display().to_string(),
        "width": input.rgb.width(),
        "height": input.rgb.height(),
        "dicom": input.dicom.as_ref().map(|d| json!({
            "frame": input.frame,
            "frames": d.info.frames,
            "modality": d.info.modality,
            "manufacturer": d.info.manufacturer,
            "transfer_syntax": d.info.transfer_syntax_name,
        })),
        "masks": masks,
        "best": seg.best(),
        "measurements": measurements,
        "calibration": measured.map(|(_, c)| c),
        "descriptors": measured.map(|(_, c)| match describe(&seg.masks[seg.best()], c.mm_per_px) {
            Ok(d) => json!(d),
            Err(e) => json!({ "not_measurable": e, "message": e.to_string() }),
        }),
    })
}
