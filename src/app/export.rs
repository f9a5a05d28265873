//! Exports: the union mask as a PNG, the image with its masks as a PNG, and the lesions with
//! their measurements as COCO JSON (also announced to a hosting page as a `sonosam-export`
//! event). Each export is a download.

use image::{ImageEncoder as _, RgbImage};
use sonosam_model::Mask;
use sonosam_model::overlay::render_overlay;
use wasm_bindgen::JsCast;
use yew::prelude::*;

use super::{AppContext, Msg, OpenImage, Settings};
use crate::state::Document;

/// What to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    /// The union of the lesions' masks, as a binary PNG.
    Mask,
    /// The image with the masks blended in, as a PNG.
    Overlay,
    /// COCO JSON with one annotation (RLE mask, measurements) per lesion.
    Coco,
}

impl ExportKind {
    pub const ALL: [ExportKind; 3] = [ExportKind::Mask, ExportKind::Overlay, ExportKind::Coco];

    fn key(self) -> &'static str {
        match self {
            ExportKind::Mask => "mask",
            ExportKind::Overlay => "overlay",
            ExportKind::Coco => "coco",
        }
    }

    fn label(self) -> &'static str {
        match self {
            ExportKind::Mask => "Mask PNG",
            ExportKind::Overlay => "Overlay PNG",
            ExportKind::Coco => "COCO JSON",
        }
    }
}

/// Export `doc` on `image` as `kind`: a download named after the image.
pub fn export(kind: ExportKind, image: &OpenImage, doc: &Document, settings: &Settings) -> Result<(), String> {
    let (w, h) = image.size();
    let stem = image.name.rsplit_once('.').map_or(image.name.as_str(), |(s, _)| s);
    let (bytes, mime, ext) = match kind {
        ExportKind::Mask => (doc.union_mask(w, h).to_png().map_err(|e| e.to_string())?, "image/png", "png"),
        ExportKind::Overlay => {
            let masks: Vec<Mask> = doc.objects.iter().filter_map(|o| o.segmentation.as_ref()?.mask().cloned()).collect();
            let prompt = doc.selected_object().map(|o| o.prompt.clone()).unwrap_or_default();
            (encode_png(&render_overlay(&image.rgb, &masks, &prompt, settings.opacity as f32))?, "image/png", "png")
        }
        ExportKind::Coco => {
            let json = doc.coco_calibrated(&image.name, w, h, |m| {
                let c = image.calibration(m, settings);
                (c.isotropic(), serde_json::to_value(&c).ok())
            });
            announce(&json);
            (json.into_bytes(), "application/json", "json")
        }
    };
    download(&format!("{stem}_sonosam_{}.{ext}", kind.key()), &bytes, mime, &format!("export-{}", kind.key()))
}

/// An RGB image as PNG bytes.
pub(super) fn encode_png(img: &RgbImage) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
        .map_err(|e| format!("cannot encode a PNG: {e}"))?;
    Ok(out)
}

/// Download `bytes` as `name`. One hidden link per export kind (`id`) stays in the page: its
/// href is the latest export (the tests read it back).
pub(super) fn download(name: &str, bytes: &[u8], mime: &str, id: &str) -> Result<(), String> {
    let err = |e: wasm_bindgen::JsValue| format!("export failed: {e:?}");
    let array = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes));
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type(mime);
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&array, &opts).map_err(err)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(err)?;
    let doc = web_sys::window().and_then(|w| w.document()).ok_or("no document")?;
    let a: web_sys::HtmlAnchorElement = match doc.get_element_by_id(id) {
        Some(el) => {
            let a: web_sys::HtmlAnchorElement = el.dyn_into().map_err(|_| "bad link")?;
            let _ = web_sys::Url::revoke_object_url(&a.href());
            a
        }
        None => {
            let a: web_sys::HtmlAnchorElement = doc.create_element("a").map_err(err)?.dyn_into().map_err(|_| "bad link")?;
            a.set_id(id);
            let _ = a.style().set_property("display", "none");
            doc.body().ok_or("no body")?.append_child(&a).map_err(err)?;
            a
        }
    };
    a.set_href(&url);
    a.set_download(name);
    a.click();
    Ok(())
}

/// Tell the embedding page: a `sonosam-export` event on `window` whose `detail` is the COCO
/// document as a JavaScript object (for pages that host the app, e.g. a PACS viewer).
fn announce(coco: &str) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(coco) else { return };
    let serializer = serde_wasm_bindgen::Serializer::json_compatible();
    let Ok(detail) = serde::Serialize::serialize(&value, &serializer) else { return };
    let init = web_sys::CustomEventInit::new();
    init.set_detail(&detail);
    if let (Some(w), Ok(ev)) = (web_sys::window(), web_sys::CustomEvent::new_with_event_init_dict("sonosam-export", &init)) {
        let _ = w.dispatch_event(&ev);
    }
}

/// The export buttons.
#[function_component]
pub fn ExportBar() -> Html {
    let app = use_context::<AppContext>().expect("AppContext");
    let buttons = ExportKind::ALL.map(|kind| html! {
        <button id={ format!("export-{}-button", kind.key()) } onclick={ app.send.reform(move |_| Msg::Export(kind)) }>{ kind.label() }</button>
    });
    html! {
        <div class="export">
            { for buttons }
            <button id="report-button" onclick={ app.send.reform(|_| Msg::Report(true)) }>{ "Report" }</button>
        </div>
    }
}
