//! `sonosam segment`.

use anyhow::{Context, anyhow, bail};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use sonosam_model::backend::{BackendKind, init_device};
use sonosam_model::overlay::render_overlay;
use sonosam_model::{Geometry, Point, PointLabel, Predictor, Prompt, StoreDType, decode_image};

use crate::CliResult;
use crate::files::{check_output, write_atomic};
use crate::model_io::{self, ModelArgs};

#[derive(Args)]
pub struct SegmentArgs {
    /// Ultrasound image (PNG, JPEG, BMP).
    pub image: PathBuf,
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
    /// cpu, wgpu or cuda.
    #[arg(long, default_value = "cpu", value_parser = crate::parse_backend)]
    pub backend: BackendKind,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Weights precision: f32, f16 or i8 (computation is f32 either way).
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
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

pub fn parse_dtype(s: &str) -> Result<StoreDType, String> {
    match s {
        "f32" => Ok(StoreDType::F32),
        "f16" => Ok(StoreDType::F16),
        "i8" => Ok(StoreDType::I8),
        _ => Err(format!("unknown precision `{s}` (f32, f16, i8)")),
    }
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
    outputs.iter().try_for_each(|p| check_output(p))?;
    let bytes = model_io::read(&args.image)?;
    let image = decode_image(&bytes).with_context(|| format!("{}", args.image.display()))?;

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
    predictor.set_image(&sam.encoder, &image, &sam.config)?;
    device.sync().map_err(|e| anyhow!("encoder: {e:?}"))?;
    let encode_ms = t.elapsed().as_secs_f64() * 1e3;

    let t = Instant::now();
    let seg = predictor.predict(&prompt, None, args.multimask)?;
    let decode_ms = t.elapsed().as_secs_f64() * 1e3;

    println!(
        "image {} ({}×{}), model {}, backend {}, weights {} ({load_ms:.0} ms to load)",
        args.image.display(),
        image.width(),
        image.height(),
        loaded.id,
        args.backend,
        args.dtype.suffix()
    );
    let best = seg.best();
    for (k, (mask, iou)) in seg.masks.iter().zip(&seg.iou).enumerate() {
        let mark = if k == best { "  (best)" } else { "" };
        println!(
            "mask {k}: predicted IoU {iou:.4}, area {} px{mark}",
            mask.area()
        );
    }
    println!("encoder {encode_ms:.1} ms, decoder {decode_ms:.1} ms");

    let png = seg.masks[best].to_png()?;
    write_atomic(&args.out, &png)?;
    println!("wrote {}", args.out.display());
    if args.multimask {
        for (k, mask) in seg.masks.iter().enumerate() {
            let path = sibling(&args.out, k);
            write_atomic(&path, &mask.to_png()?)?;
            println!("wrote {}", path.display());
        }
    }
    if let Some(path) = &args.overlay {
        let overlay = render_overlay(&image, &seg.masks[best..=best], &prompt, 0.45);
        let mut buf = Vec::new();
        overlay
            .write_to(&mut std::io::Cursor::new(&mut buf), image::ImageFormat::Png)
            .context("encoding overlay")?;
        write_atomic(path, &buf)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
