//! The report view: the open image's lesion report (the model crate's [`Report`], the same
//! document `sonosam segment --report` writes) shown in the page, printed to PDF through the
//! browser's print dialog, or downloaded as HTML or JSON.

use sonosam_dicom::export::{Export as DicomExport, Lesion as DicomLesion};
use sonosam_model::Mask;
use sonosam_model::overlay::render_overlay;
use sonosam_model::report::{Report, ReportLesion};
use wasm_bindgen::JsCast;
use yew::prelude::*;

use super::export::{download, encode_png};
use super::{AppContext, Msg, OpenImage, Settings};
use crate::model::Model;
use crate::state::Document;

/// The report of `doc` on `image`: every segmented lesion, measured and described under its
/// own calibration.
pub fn build(image: &OpenImage, doc: &Document, settings: &Settings, model: Option<&Model>) -> Report {
    let lesions = doc
        .objects
        .iter()
        .filter_map(|o| {
            let seg = o.segmentation.as_ref()?;
            let mask = seg.mask()?;
            let measured = image.measure(seg, settings);
            let (calibration, detail, spacing) = match &measured {
                Some((_, c)) => (c.describe(), serde_json::to_value(c).unwrap_or_default(), c.mm_per_px),
                None => ("none".to_string(), serde_json::Value::Null, None),
            };
            Some(ReportLesion::new(o.name(), mask, seg.score(), measured.map(|(m, _)| m), calibration, detail, spacing))
        })
        .collect();
    let (width, height) = image.size();
    let source = match &image.dicom {
        Some(d) => d.file.info.describe_frame(d.frame),
        None => format!("{} image", image.name.rsplit_once('.').map_or("", |(_, e)| e).to_ascii_uppercase()),
    };
    Report {
        image: image.name.clone(),
        width,
        height,
        source,
        model: model.map_or_else(|| "—".into(), |m| m.manifest().model.clone()),
        decoder: model.map_or_else(|| "—".into(), Model::decoder_name),
        created: String::from(js_sys::Date::new_0().to_iso_string()),
        software: format!("sonosam {} (in the browser)", env!("CARGO_PKG_VERSION")),
        lesions,
    }
}

/// The report as one HTML page, with the image and every lesion's mask drawn in.
pub fn html(report: &Report, image: &OpenImage, doc: &Document, settings: &Settings) -> Result<String, String> {
    let masks: Vec<Mask> = doc.objects.iter().filter_map(|o| o.segmentation.as_ref()?.mask().cloned()).collect();
    let overlay = render_overlay(&image.rgb, &masks, &Default::default(), settings.opacity as f32);
    Ok(report.to_html(&encode_png(&overlay)?))
}

/// The report's lesions as a DICOM Segmentation (`segmentation`) or a TID 1500 Measurement
/// Report, in the source file's study when the image is DICOM.
pub fn dicom(report: &Report, image: &OpenImage, segmentation: bool, deidentify: bool) -> Result<Vec<u8>, String> {
    let lesions: Vec<DicomLesion> = report
        .lesions
        .iter()
        .map(|l| DicomLesion { name: &l.name, mask: &l.mask.data, outline: &l.outline, numbers: l.numbers(), calls: l.calls() })
        .collect();
    let (width, height) = image.size();
    let export = DicomExport {
        source: image.dicom.as_ref().map(|d| (&*d.file, d.frame)),
        width: width as u32,
        height: height as u32,
        lesions: &lesions,
        created: &report.created,
        image_name: &report.image,
        software_version: env!("CARGO_PKG_VERSION"),
        deidentify,
    };
    let bytes = if segmentation { export.segmentation() } else { export.measurement_report() };
    bytes.map_err(|e| e.to_string())
}

#[derive(Properties, PartialEq)]
pub struct ReportViewProps {
    /// The page to show (the report as HTML) and the report as JSON, for the downloads.
    pub html: AttrValue,
    pub json: AttrValue,
    /// The report as a DICOM Segmentation and Structured Report (`None`: no lesion to export).
    pub seg: Option<std::rc::Rc<Vec<u8>>>,
    pub sr: Option<std::rc::Rc<Vec<u8>>>,
    /// Whether the DICOM exports are de-identified.
    pub deidentify: bool,
    /// The file names' stem.
    pub stem: AttrValue,
}

/// The report in a frame of its own (its print stylesheet applies when it prints), with print,
/// download and close buttons.
#[function_component]
pub fn ReportView(props: &ReportViewProps) -> Html {
    let app = use_context::<AppContext>().expect("AppContext");
    // A failure becomes the app's error message; success needs no message.
    let reporting = |act: Box<dyn Fn() -> Result<(), String>>| {
        let send = app.send.clone();
        Callback::from(move |_: MouseEvent| {
            if let Err(e) = act() {
                send.emit(Msg::Error(e));
            }
        })
    };
    let print = reporting(Box::new(print_frame));
    let save = |kind: &'static str, body: AttrValue, mime: &'static str, stem: AttrValue| {
        reporting(Box::new(move || download(&format!("{stem}_sonosam_report.{kind}"), body.as_bytes(), mime, &format!("export-report-{kind}"))))
    };
    let save_dicom = |kind: &'static str, body: Option<std::rc::Rc<Vec<u8>>>, stem: AttrValue| {
        body.map(|body| reporting(Box::new(move || download(&format!("{stem}_sonosam_{kind}.dcm"), &body, "application/dicom", &format!("export-report-{kind}")))))
    };
    let seg = save_dicom("seg", props.seg.clone(), props.stem.clone());
    let sr = save_dicom("sr", props.sr.clone(), props.stem.clone());
    html! {
        <section class="report-view" role="dialog" aria-modal="false" aria-labelledby="report-title">
            <div class="tools">
                <h2 id="report-title">{ "Report" }</h2>
                <button id="report-print" onclick={ print }>{ "Print / save as PDF" }</button>
                <button id="report-html" onclick={ save("html", props.html.clone(), "text/html", props.stem.clone()) }>{ "Download HTML" }</button>
                <button id="report-json" onclick={ save("json", props.json.clone(), "application/json", props.stem.clone()) }>{ "Download JSON" }</button>
                <button id="report-sr" disabled={ sr.is_none() } title="DICOM Structured Report (TID 1500 Measurement Report)" onclick={ sr }>{ "DICOM SR" }</button>
                <button id="report-seg" disabled={ seg.is_none() } title="DICOM Segmentation of the lesions" onclick={ seg }>{ "DICOM SEG" }</button>
                <label title="DICOM PS3.15 basic profile: no patient identifiers or dates; the source's UIDs replaced">
                    <input id="report-deidentify" type="checkbox" checked={ props.deidentify }
                        onchange={ app.send.reform(|e: Event| Msg::Deidentify(e.target_unchecked_into::<web_sys::HtmlInputElement>().checked())) } />
                    { " de-identify DICOM" }
                </label>
                <button id="report-close" onclick={ app.send.reform(|_| Msg::Report(false)) }>{ "Close" }</button>
            </div>
            <iframe id="report-frame" title="Lesion report" srcdoc={ props.html.clone() }></iframe>
        </section>
    }
}

/// Open the browser's print dialog for the report's frame (where "Save as PDF" is offered).
fn print_frame() -> Result<(), String> {
    let frame = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id("report-frame"))
        .ok_or("the report is not open")?;
    let window = js_sys::Reflect::get(&frame, &"contentWindow".into())
        .ok()
        .and_then(|w| w.dyn_into::<web_sys::Window>().ok())
        .ok_or("the report's frame has no window")?;
    window.print().map_err(|e| format!("cannot print: {e:?}"))
}
