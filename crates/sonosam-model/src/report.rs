//! The per-image lesion report: what was segmented, each lesion's size (in mm when calibrated,
//! with the calibration's source), its shape descriptors and their BI-RADS-style suggestions,
//! the model and decoder used and when — as JSON, and as one self-contained HTML page that
//! prints cleanly to PDF from a browser. Shared by the browser app and `sonosam segment
//! --report`.

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

use crate::mask::Mask;
use crate::measure::Measurements;
use crate::measure::descriptors::{Descriptors, NotMeasurable, Unit, describe};
use crate::measure::outline::{lesion_region, trace_boundary};

/// The report of one image.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The image's file name.
    pub image: String,
    pub width: usize,
    pub height: usize,
    /// What the image is: "PNG image", "DICOM US, frame 1 of 12, ACME", …
    pub source: String,
    /// The model's id and the decoder used ("base" or a fine-tuned decoder's name).
    pub model: String,
    pub decoder: String,
    /// When the report was made (ISO 8601, UTC), as the caller's clock says.
    pub created: String,
    /// The software and its version.
    pub software: String,
    pub lesions: Vec<ReportLesion>,
}

/// One lesion of the report.
#[derive(Debug, Clone, Serialize)]
pub struct ReportLesion {
    pub name: String,
    /// The decoder's predicted IoU of the mask.
    pub predicted_iou: f32,
    /// Calipers and area; in mm too when the calibration allows (`mm_per_px`).
    pub measurements: Option<Measurements>,
    /// How the millimetres were obtained, for people ("ultrasound region 1", "none (…)").
    pub calibration: String,
    /// The calibration as recorded (`source`, `region`, `mm_per_px`, `note`).
    pub calibration_detail: Value,
    #[serde(serialize_with = "descriptors_or_reason")]
    pub descriptors: Result<Descriptors, NotMeasurable>,
    /// The lesion's outline: its boundary pixels `(x, y)` in order (for DICOM SR regions).
    #[serde(skip)]
    pub outline: Vec<(f64, f64)>,
    /// The mask (for DICOM Segmentations).
    #[serde(skip)]
    pub mask: Mask,
}

impl ReportLesion {
    /// The lesion `mask` (predicted IoU `predicted_iou`), measured as `measurements`, under a
    /// calibration described as `calibration` (recorded as `detail`) of scale `mm_per_px`
    /// (`[x, y]`; `None`: pixels) — its descriptors computed at that scale.
    pub fn new(
        name: String,
        mask: &Mask,
        predicted_iou: f32,
        measurements: Option<Measurements>,
        calibration: String,
        detail: Value,
        mm_per_px: Option<[f64; 2]>,
    ) -> Self {
        let descriptors = describe(mask, mm_per_px);
        let outline = trace_boundary(&lesion_region(mask)).into_iter().map(|(x, y)| (x as f64, y as f64)).collect();
        Self { name, predicted_iou, measurements, calibration, calibration_detail: detail, descriptors, outline, mask: mask.clone() }
    }

    /// What was measured, for structured exports: `(key, meaning, value, UCUM unit)` — the
    /// calipers and area in mm when calibrated (never pixels: a report's numbers must not be
    /// mistaken for millimetres), the descriptors (lengths only when in mm).
    pub fn numbers(&self) -> Vec<(&'static str, &'static str, f64, &'static str)> {
        let mut out = Vec::new();
        if let Some(m) = &self.measurements {
            if let (Some(long), Some(short), Some(area)) = (m.long_mm(), m.short_mm(), m.area_mm2()) {
                out.extend([("long_axis", "Long Axis", long, "mm"), ("short_axis", "Short Axis", short, "mm"), ("area", "Area", area, "mm2")]);
            }
        }
        if let Ok(d) = &self.descriptors {
            if d.unit == Unit::Mm {
                out.push(("perimeter", "Perimeter (smoothed outline)", d.perimeter, "mm"));
            }
            out.extend([
                ("depth_width_ratio", "Depth/width ratio", d.depth_width_ratio, "1"),
                ("orientation_deg", "Orientation of the major axis to the skin line", d.orientation_deg, "deg"),
                ("ellipse_misfit", "Ellipse misfit", d.ellipse_misfit, "1"),
                ("circularity", "Circularity", d.circularity, "1"),
                ("convexity", "Convexity", d.convexity, "1"),
                ("solidity", "Solidity", d.solidity, "1"),
                ("nrl_mean", "Normalised radial length, mean", d.radial_length.mean, "1"),
                ("nrl_std", "Normalised radial length, standard deviation", d.radial_length.std, "1"),
                ("nrl_roughness", "Normalised radial length, roughness", d.radial_length.roughness, "1"),
                ("nrl_crossings", "Normalised radial length, crossings of the mean", d.radial_length.crossings as f64, "1"),
                ("lobulations", "Lobulations", d.lobulations as f64, "1"),
                ("angular_points", "Angular points", d.angular_points as f64, "1"),
            ]);
        }
        out
    }

    /// The categorical calls as `(concept, value)` snake_case keys: `("shape", "oval")`, …
    pub fn calls(&self) -> Vec<(&'static str, &'static str)> {
        self.descriptors.as_ref().map(|d| d.calls.keys().to_vec()).unwrap_or_default()
    }
}

fn descriptors_or_reason<S: serde::Serializer>(d: &Result<Descriptors, NotMeasurable>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Ok(d) => d.serialize(s),
        Err(e) => serde_json::json!({ "not_measurable": e, "message": e.to_string() }).serialize(s),
    }
}

/// The notice every report carries.
pub const DISCLAIMER: &str = "Research software, not a medical device. Outlines are computed by a segmentation model \
    and the shape categories are computed suggestions from the outline (thresholds chosen on the BUSI training split), \
    not a diagnosis.";

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// A self-contained HTML page (the image with its outlines embedded as `overlay_png`):
    /// header, image, lesion table, descriptors per lesion; a print stylesheet makes it an
    /// A4 document.
    pub fn to_html(&self, overlay_png: &[u8]) -> String {
        let meta = [
            ("Image", format!("{} ({} × {} px)", self.image, self.width, self.height)),
            ("Source", self.source.clone()),
            ("Model", format!("{}, decoder {}", self.model, self.decoder)),
            ("Created", self.created.clone()),
            ("Software", self.software.clone()),
        ];
        let meta_rows: String = meta.iter().map(|(k, v)| format!("<tr><th>{k}</th><td>{}</td></tr>", escape(v))).collect();
        let lesion_rows: String = self.lesions.iter().map(lesion_row).collect();
        let details: String = self.lesions.iter().map(lesion_details).collect();
        let image = base64::engine::general_purpose::STANDARD.encode(overlay_png);
        let empty = if self.lesions.is_empty() { "<p>No lesion was segmented.</p>" } else { "" };
        format!(
            r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sonosam report — {title}</title>
<style>{STYLE}</style></head>
<body><main>
<h1>Lesion report</h1>
<table class="meta">{meta_rows}</table>
<figure><img src="data:image/png;base64,{image}" alt="The image with the lesions' outlines"><figcaption>{title} with the segmented lesions.</figcaption></figure>
<h2>Lesions</h2>{empty}
<table class="lesions" id="lesion-table"><thead><tr><th>Lesion</th><th>Long axis</th><th>Short axis</th><th>Area</th><th>Calibration</th><th>Shape</th><th>Orientation</th><th>Margin</th><th>Predicted IoU</th></tr></thead>
<tbody>{lesion_rows}</tbody></table>
{details}
<p class="disclaimer">{DISCLAIMER}</p>
</main></body></html>
"#,
            title = escape(&self.image),
        )
    }
}

const STYLE: &str = "body{font:13px/1.45 system-ui,sans-serif;color:#111;background:#fff;margin:0}\
main{max-width:900px;margin:0 auto;padding:16px}h1{font-size:22px;margin:0 0 8px}h2{font-size:16px;margin:16px 0 6px}\
h3{font-size:14px;margin:12px 0 4px}table{border-collapse:collapse;margin:4px 0}th,td{padding:2px 8px;text-align:left;vertical-align:top}\
.lesions th,.lesions td{border:1px solid #999}.lesions thead th{background:#eee}.meta th,.descriptors th{font-weight:normal;color:#444}\
figure{margin:8px 0}figure img{max-width:100%;max-height:520px;border:1px solid #999}figcaption{color:#444;font-size:12px}\
.disclaimer{margin-top:16px;font-size:11px;color:#444;border-top:1px solid #999;padding-top:6px}\
@page{size:A4;margin:14mm}@media print{main{max-width:none;padding:0}figure img{max-height:120mm}tr,.lesion{break-inside:avoid}}";

/// `unix_seconds` as ISO 8601 UTC (`2026-11-30T21:00:00Z`), for callers without a calendar
/// library (days to civil date: Howard Hinnant's algorithm).
pub fn iso_utc(unix_seconds: u64) -> String {
    let (days, secs) = ((unix_seconds / 86_400) as i64, unix_seconds % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A length or area in mm when calibrated, else in pixels.
fn sizes(m: &Measurements) -> [String; 3] {
    match (m.long_mm(), m.short_mm(), m.area_mm2()) {
        (Some(l), Some(s), Some(a)) => [format!("{l:.1} mm"), format!("{s:.1} mm"), format!("{a:.1} mm²")],
        _ => [
            format!("{:.1} px", m.long_axis.length_px),
            format!("{:.1} px", m.short_axis.length_px),
            format!("{} px", m.area_px),
        ],
    }
}

fn lesion_row(l: &ReportLesion) -> String {
    let [long, short, area] = l.measurements.as_ref().map(sizes).unwrap_or_else(|| ["—".into(), "—".into(), "—".into()]);
    let calls = match &l.descriptors {
        Ok(d) => d.calls.keys().map(|(_, v)| v.replace('_', " ")),
        Err(_) => ["not measurable".into(), "—".into(), "—".into()],
    };
    format!(
        "<tr><td>{}</td><td>{long}</td><td>{short}</td><td>{area}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td></tr>",
        escape(&l.name),
        escape(&l.calibration),
        calls[0],
        calls[1],
        calls[2],
        l.predicted_iou
    )
}

fn lesion_details(l: &ReportLesion) -> String {
    let body = match &l.descriptors {
        Err(e) => format!("<p>Shape descriptors: not measurable ({}).</p>", escape(&e.to_string())),
        Ok(d) => {
            let rows = d.table();
            let rows: String = rows.iter().map(|(k, v)| format!("<tr><th>{k}</th><td>{v}</td></tr>")).collect();
            let border = if d.touches_border { "<p>The lesion reaches the image edge: its shape may be cut off.</p>" } else { "" };
            format!("<table class=\"descriptors\">{rows}</table>{border}")
        }
    };
    format!("<section class=\"lesion\"><h3>{}</h3>{body}</section>", escape(&l.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::measure;

    fn report(lesions: Vec<ReportLesion>) -> Report {
        Report {
            image: "a<b>.png".into(),
            width: 120,
            height: 100,
            source: "PNG image".into(),
            model: "litemedsam".into(),
            decoder: "base".into(),
            created: "2026-11-30T21:00:00Z".into(),
            software: "sonosam 0.1.0".into(),
            lesions,
        }
    }

    #[test]
    fn iso_dates() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso_utc(1_796_086_861), "2026-12-01T01:01:01Z");
    }

    #[test]
    fn html_and_json_carry_every_lesion() {
        let mask = Mask::from_fn(120, 100, |i| ((i % 120) as f64 - 60.0).hypot((i / 120) as f64 - 50.0) <= 20.0);
        let lesion = |name: &str, mask: &Mask, mm: Option<f64>| {
            let calibration = if mm.is_some() { "manual" } else { "none" };
            ReportLesion::new(name.into(), mask, 0.9, measure(mask, mm), calibration.into(), Value::Null, mm.map(|v| [v, v]))
        };
        let r = report(vec![lesion("lesion 1", &mask, Some(0.1)), lesion("lesion 2", &Mask::new(120, 100), None)]);
        let html = r.to_html(&[1, 2, 3]);
        assert!(html.contains("a&lt;b&gt;.png") && !html.contains("a<b>.png"));
        assert!(html.contains("<td>lesion 1</td><td>4.1 mm</td>"), "{html}");
        assert!(html.contains("round</td><td>parallel</td><td>circumscribed"));
        assert!(html.contains("not measurable (the mask is empty)"));
        assert!(html.contains("data:image/png;base64,AQID"));
        let json: Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["lesions"][0]["descriptors"]["calls"]["shape"], "round");
        assert_eq!(json["lesions"][0]["descriptors"]["unit"], "mm");
        assert_eq!(json["lesions"][1]["descriptors"]["not_measurable"]["reason"], "empty");
        assert!(!r.to_json().contains("NaN"));
    }
}
