//! The app: one page with a gallery and file input, the image canvas with prompts and masks,
//! the objects panel (measurements, candidates), settings and export.

use std::rc::Rc;

use image::RgbImage;
use sonosam_model::backend::BackendKind;
use sonosam_model::overlay::render_overlay;
use sonosam_model::preprocess::Geometry;
use sonosam_model::weights::sha256_hex;
use sonosam_model::{Mask, PointLabel, Segmentation, decode_image};
use wasm_bindgen::JsCast;
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, HtmlInputElement, PointerEvent};
use yew::prelude::*;

use crate::draw::{self, Layer};
use crate::engine::{Progress, WeightSource};
use crate::model::{Model, Placement};
use crate::perf::{Stage, now_ms};
use crate::state::{DRAG_THRESHOLD_PX, Document, History, ObjectSegmentation, corners_to_box};
use crate::storage;

/// A bundled sample (from `samples/index.json`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct SampleInfo {
    pub name: String,
    pub image: String,
    #[serde(default)]
    pub masks: Vec<String>,
    #[serde(default)]
    pub class: String,
}

#[derive(Properties, Clone)]
pub struct AppProps {
    /// Where the weights come from.
    pub weights: WeightSource,
    /// Base URL of the bundled samples (`samples`), with its `index.json`.
    #[prop_or(AttrValue::from("samples"))]
    pub samples_url: AttrValue,
    /// Backend requested by the page (`?backend=cpu|wgpu`); `None`: automatic.
    #[prop_or_default]
    pub backend: Option<BackendKind>,
    /// Script of the model's Web Worker (`worker.js`); `None`: the model runs in the page.
    #[prop_or_default]
    pub worker: Option<AttrValue>,
}

impl PartialEq for AppProps {
    fn eq(&self, other: &Self) -> bool {
        self.samples_url == other.samples_url && self.backend == other.backend && self.worker == other.worker
    }
}

/// An opened image.
struct OpenImage {
    name: String,
    rgb: Rc<RgbImage>,
    rgba: Rc<Vec<u8>>,
    sha256: String,
    geometry: Geometry,
    ground_truth: Option<Mask>,
    embedded: bool,
    /// The file's bytes (sent to the companion server).
    bytes: Rc<Vec<u8>>,
}

/// A companion server (`sonosam serve`) that computes embeddings.
#[derive(Clone, PartialEq)]
pub struct Companion {
    url: String,
    encoder_sha256: String,
    model: String,
}

enum EngineState {
    Loading(String, Option<f64>),
    Ready(Rc<Model>),
    Failed(String),
}

#[derive(Clone, Copy, PartialEq)]
enum Drag {
    None,
    /// Pointer down at (image x, y), (screen x, y); button: 0 left, 2 right; alt held.
    Down { start: (f64, f64), screen: (f64, f64), now: (f64, f64), negative: bool, moved: bool },
}

pub enum Msg {
    Progress(String, Option<f64>),
    EngineReady(Result<Rc<Model>, String>, Option<String>),
    /// The decoder was switched (base or a fine-tuned file), or that failed.
    DecoderSwitched(Result<(), String>),
    SetBackend(Option<BackendKind>),
    Samples(Vec<SampleInfo>),
    OpenSample(usize),
    Files(Vec<web_sys::File>),
    Opened(Result<(String, Vec<u8>, Option<Mask>), String>),
    /// Embedding ready (the status to show) or failed.
    Embedded(String, Result<String, String>),
    /// Result of probing a companion server (URL, models answer).
    Companion(String, Result<Companion, String>),
    UseServer(bool),
    /// A fine-tuned decoder file chosen (None: back to the base decoder).
    DecoderFile(Option<web_sys::File>),
    DecoderBytes(String, Vec<u8>),
    ServerUrl(String),
    PointerDown(PointerEvent),
    PointerMove(PointerEvent),
    PointerUp(PointerEvent),
    Decoded { seq: u64, object: u32, result: Result<(Segmentation, f64), String> },
    Hover { seq: u64, result: Result<Segmentation, String> },
    Undo,
    Redo,
    NewObject,
    Select(usize),
    Delete(usize),
    Choose(usize),
    Opacity(f64),
    ToggleGroundTruth,
    ToggleMultimask,
    ToggleRefine,
    ToggleHover,
    Spacing(String),
    Zoom(f64),
    ZoomFit,
    Export(&'static str),
    Key(KeyboardEvent),
    Tick,
    /// Render again (to show a measurement taken after the last render).
    Refresh,
}

pub struct App {
    engine: EngineState,
    backend_choice: Option<BackendKind>,
    notice: Option<String>,
    samples: Vec<SampleInfo>,
    image: Option<OpenImage>,
    doc: Document,
    history: History,
    drag: Drag,
    seq: u64,
    /// Latest decode request per object id.
    latest: Vec<(u32, u64)>,
    in_flight: usize,
    hover_seq: u64,
    hover_busy: bool,
    hover_pending: Option<(f64, f64)>,
    hover_mask: Option<Mask>,
    status: String,
    error: Option<String>,
    latency_ms: Option<f64>,
    /// When the last box or point was released (ms, page clock), until its mask is drawn; then
    /// the time from release to drawn mask (shown with the decoder latency, measured by e2e).
    released_at: Option<f64>,
    drawn_at: Option<f64>,
    release_to_draw_ms: Option<f64>,
    release_draws: u32,
    opacity: f64,
    show_gt: bool,
    multimask: bool,
    refine: bool,
    hover: bool,
    spacing: String,
    zoom: f64,
    busy_since: Option<f64>,
    canvas: NodeRef,
    /// Embeddings from a companion server when set (and usable).
    use_server: bool,
    server_url: String,
    companion: Option<Companion>,
    _ticker: Option<gloo::timers::callback::Interval>,
    _keys: Option<gloo_keys::Listener>,
}

/// Keyboard shortcuts, shown in the UI.
pub const SHORTCUTS: [(&str, &str); 10] = [
    ("drag", "box around a lesion"),
    ("click", "positive point"),
    ("right/alt-click", "negative point"),
    ("N", "new lesion"),
    ("Delete", "delete the selected lesion"),
    ("Ctrl+Z / Ctrl+Shift+Z", "undo / redo"),
    ("M", "multimask candidates on/off"),
    ("G", "ground truth on/off"),
    ("+ / − / 0", "zoom in / out / fit"),
    ("E", "export the mask PNG"),
];

mod gloo_keys {
    //! A window `keydown` listener that lives as long as the app.
    use wasm_bindgen::JsCast;
    use wasm_bindgen::closure::Closure;

    pub struct Listener(Closure<dyn FnMut(web_sys::KeyboardEvent)>);

    impl Listener {
        pub fn new(f: impl FnMut(web_sys::KeyboardEvent) + 'static) -> Option<Self> {
            let c = Closure::<dyn FnMut(web_sys::KeyboardEvent)>::new(f);
            web_sys::window()?
                .add_event_listener_with_callback("keydown", c.as_ref().unchecked_ref())
                .ok()?;
            Some(Self(c))
        }
    }

    impl Drop for Listener {
        fn drop(&mut self) {
            if let Some(w) = web_sys::window() {
                let _ = w.remove_event_listener_with_callback("keydown", self.0.as_ref().unchecked_ref());
            }
        }
    }
}

/// The files of a file input, drop or paste.
fn file_vec(list: Option<web_sys::FileList>) -> Vec<web_sys::File> {
    list.map(|l| (0..l.length()).filter_map(|i| l.get(i)).collect()).unwrap_or_default()
}

fn to_rgba(img: &RgbImage) -> Vec<u8> {
    img.as_raw()
        .chunks_exact(3)
        .flat_map(|p| [p[0], p[1], p[2], 255])
        .collect()
}

fn download(name: &str, bytes: &[u8], mime: &str, id: &str) -> Result<(), String> {
    let err = |e: wasm_bindgen::JsValue| format!("export failed: {e:?}");
    let array = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes));
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type(mime);
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&array, &opts).map_err(err)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(err)?;
    let doc = web_sys::window().and_then(|w| w.document()).ok_or("no document")?;
    // One link per export kind stays in the page (hidden): its href is the latest export.
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
fn announce_export(coco: &str) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(coco) else { return };
    let serializer = serde_wasm_bindgen::Serializer::json_compatible();
    let Ok(detail) = serde::Serialize::serialize(&value, &serializer) else { return };
    let init = web_sys::CustomEventInit::new();
    init.set_detail(&detail);
    if let (Some(w), Ok(ev)) = (web_sys::window(), web_sys::CustomEvent::new_with_event_init_dict("sonosam-export", &init)) {
        let _ = w.dispatch_event(&ev);
    }
}

fn encode_png_rgb(img: &RgbImage) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
        .map_err(|e| format!("cannot encode the overlay: {e}"))?;
    Ok(out)
}
use image::ImageEncoder as _;

impl App {
    fn start_engine(&mut self, ctx: &Context<Self>) {
        let link = ctx.link().clone();
        let source = ctx.props().weights.clone();
        let choice = self.backend_choice;
        let placement = match &ctx.props().worker {
            Some(url) => Placement::Worker(url.to_string()),
            None => Placement::Page,
        };
        // A running model (and its worker) goes before the next one starts.
        self.engine = EngineState::Loading("starting the model".into(), None);
        let progress: Progress = {
            let link = link.clone();
            Rc::new(move |s, f| link.send_message(Msg::Progress(s, f)))
        };
        link.clone().send_future(async move {
            match Model::start(source, choice, placement, progress).await {
                Ok((model, notice)) => Msg::EngineReady(Ok(Rc::new(model)), notice),
                Err(e) => Msg::EngineReady(Err(e), None),
            }
        });
    }

    fn engine(&self) -> Option<Rc<Model>> {
        match &self.engine {
            EngineState::Ready(e) => Some(e.clone()),
            _ => None,
        }
    }

    fn probe_companion(&mut self, ctx: &Context<Self>, url: String) {
        ctx.link().send_future(async move {
            let base = url.trim_end_matches('/').to_string();
            let r = async {
                let text = storage::fetch_text(&format!("{base}/api/v1/models")).await?;
                let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                let m = &v["models"][0];
                Ok(Companion {
                    url: base.clone(),
                    encoder_sha256: m["encoder_sha256"].as_str().ok_or("no encoder hash")?.to_string(),
                    model: m["id"].as_str().unwrap_or("").to_string(),
                })
            }
            .await;
            Msg::Companion(url, r)
        });
    }

    fn start_embedding(&mut self, ctx: &Context<Self>) {
        let (Some(engine), Some(img)) = (self.engine(), self.image.as_ref()) else { return };
        if img.embedded {
            return;
        }
        let link = ctx.link().clone();
        let rgb = img.rgb.clone();
        let sha = img.sha256.clone();
        let bytes = img.bytes.clone();
        let companion = self.companion.clone().filter(|c| self.use_server && c.model == engine.manifest().model);
        self.status = if companion.is_some() { "asking the companion server…".into() } else { "preparing the image…".into() };
        self.busy_since = Some(now_ms());
        let progress: Progress = {
            let link = link.clone();
            Rc::new(move |s, f| link.send_message(Msg::Progress(s, f)))
        };
        link.send_future(async move {
            if let Some(c) = companion {
                match engine.embed_remote(&c.url, &c.encoder_sha256, &bytes, &sha).await {
                    Ok(cached) => {
                        let how = if cached { "embedding from the browser cache (companion server)" } else { "embedding from the companion server" };
                        return Msg::Embedded(sha, Ok(how.to_string()));
                    }
                    Err(e) => {
                        // Say so, and compute it here instead.
                        web_sys::console::warn_1(&e.clone().into());
                        progress(format!("{e} — computing the embedding in this browser"), None);
                    }
                }
            }
            let r = engine.embed(&rgb, &sha, &progress).await.map(|cached| {
                if cached { "embedding from the browser cache" } else { "embedding computed" }.to_string()
            });
            Msg::Embedded(sha, r)
        });
    }

    fn ready_to_decode(&self) -> bool {
        self.engine().is_some() && self.image.as_ref().is_some_and(|i| i.embedded)
    }

    /// Decode object `index` (after its prompts changed).
    fn request_decode(&mut self, ctx: &Context<Self>, index: usize) {
        if !self.ready_to_decode() {
            return;
        }
        let (engine, img) = (self.engine().unwrap(), self.image.as_ref().unwrap());
        let Some(obj) = self.doc.objects.get(index) else { return };
        if obj.prompt.is_empty() {
            self.doc.objects[index].segmentation = None;
            return;
        }
        self.seq += 1;
        let seq = self.seq;
        let id = obj.id;
        self.latest.retain(|(o, _)| *o != id);
        self.latest.push((id, seq));
        let mask_input = if self.refine {
            obj.segmentation.as_ref().and_then(|s| s.low_res().map(<[f32]>::to_vec))
        } else {
            None
        };
        let (geometry, prompt, multimask) = (img.geometry, obj.prompt.clone(), self.multimask);
        self.in_flight += 1;
        ctx.link().send_future(async move {
            let t0 = now_ms();
            let r = engine.decode(&geometry, &prompt, mask_input.as_deref(), multimask).await;
            Msg::Decoded { seq, object: id, result: r.map(|s| (s, now_ms() - t0)) }
        });
    }

    fn request_hover(&mut self, ctx: &Context<Self>, at: (f64, f64)) {
        if !self.hover || !self.ready_to_decode() {
            return;
        }
        if self.hover_busy {
            self.hover_pending = Some(at);
            return;
        }
        let (engine, img) = (self.engine().unwrap(), self.image.as_ref().unwrap());
        let mut prompt = self.doc.selected_object().map(|o| o.prompt.clone()).unwrap_or_default();
        prompt.points.push(sonosam_model::Point { x: at.0 as f32, y: at.1 as f32, label: PointLabel::Positive });
        self.hover_seq += 1;
        self.hover_busy = true;
        let (seq, geometry) = (self.hover_seq, img.geometry);
        ctx.link().send_future(async move {
            Msg::Hover { seq, result: engine.decode(&geometry, &prompt, None, false).await }
        });
    }

    fn checkpoint(&mut self) {
        self.history.push(self.doc.clone());
    }

    /// Pointer position in image pixels.
    fn image_xy(&self, e: &PointerEvent) -> Option<(f64, f64)> {
        let canvas: HtmlCanvasElement = self.canvas.cast()?;
        let rect = canvas.get_bounding_client_rect();
        if rect.width() <= 0.0 || rect.height() <= 0.0 {
            return None;
        }
        let x = (f64::from(e.client_x()) - rect.left()) * f64::from(canvas.width()) / rect.width();
        let y = (f64::from(e.client_y()) - rect.top()) * f64::from(canvas.height()) / rect.height();
        Some((x, y))
    }

    /// Image pixels per screen pixel.
    fn pixel_scale(&self) -> f64 {
        let Some(canvas) = self.canvas.cast::<HtmlCanvasElement>() else { return 1.0 };
        let w = canvas.get_bounding_client_rect().width();
        if w > 0.0 { f64::from(canvas.width()) / w } else { 1.0 }
    }

    fn mm_per_px(&self) -> Option<f64> {
        self.spacing.trim().parse::<f64>().ok().filter(|v| *v > 0.0 && v.is_finite())
    }

    fn dice_vs_truth(&self) -> Option<f64> {
        let img = self.image.as_ref()?;
        let gt = img.ground_truth.as_ref()?;
        let pred = self.doc.union_mask(img.geometry.orig_w, img.geometry.orig_h);
        if self.doc.objects.iter().all(|o| o.segmentation.is_none()) {
            return None;
        }
        pred.dice(gt).ok()
    }

    fn redraw(&self) {
        let (Some(canvas), Some(img)) = (self.canvas.cast::<HtmlCanvasElement>(), self.image.as_ref()) else {
            return;
        };
        let (w, h) = (img.geometry.orig_w, img.geometry.orig_h);
        if canvas.width() as usize != w || canvas.height() as usize != h {
            canvas.set_width(w as u32);
            canvas.set_height(h as u32);
        }
        let Some(ctx) = canvas
            .get_context("2d")
            .ok()
            .flatten()
            .and_then(|c| c.dyn_into::<CanvasRenderingContext2d>().ok())
        else {
            return;
        };
        let alpha = self.opacity as f32;
        let mut layers = Vec::new();
        for (i, o) in self.doc.objects.iter().enumerate() {
            if let Some(m) = o.segmentation.as_ref().and_then(|s| s.mask()) {
                layers.push(Layer { mask: m, color: draw::object_color(i), alpha, contour: true });
            }
        }
        if let Some(m) = &self.hover_mask {
            layers.push(Layer { mask: m, color: [0, 255, 255], alpha: alpha * 0.5, contour: false });
        }
        if self.show_gt {
            if let Some(gt) = &img.ground_truth {
                layers.push(Layer { mask: gt, color: [0, 230, 0], alpha: 0.0, contour: true });
            }
        }
        let pixels = draw::compose(&img.rgba, w, h, &layers);
        if draw::put_pixels(&ctx, &pixels, w, h).is_err() {
            return;
        }
        let scale = self.pixel_scale();
        let mm = self.mm_per_px();
        for (i, o) in self.doc.objects.iter().enumerate() {
            let selected = self.doc.selected == Some(i);
            let color = if selected { "rgb(0,120,255)" } else { "rgba(0,120,255,0.5)" };
            if let Some(b) = o.prompt.bbox {
                draw::draw_box(&ctx, b, color, scale, false);
            }
            draw::draw_points(&ctx, &o.prompt, scale);
            if let Some(m) = o.segmentation.as_ref().and_then(|s| s.measurements(mm)) {
                draw::draw_calipers(&ctx, &m, draw::object_color(i), scale);
            }
        }
        if let Drag::Down { start, now, moved: true, negative: false, .. } = self.drag {
            draw::draw_box(&ctx, corners_to_box(start, now), "rgb(255,255,255)", scale, true);
        }
    }

    fn open_bytes(&mut self, ctx: &Context<Self>, name: String, bytes: Vec<u8>, gt: Option<Mask>) {
        let rgb = match decode_image(&bytes) {
            Ok(i) => i,
            Err(e) => {
                self.error = Some(format!("{name}: {e}"));
                return;
            }
        };
        let engine_size = match &self.engine {
            EngineState::Ready(e) => e.manifest().config.img_size(),
            _ => 256,
        };
        let geometry = Geometry::new(rgb.height() as usize, rgb.width() as usize, engine_size);
        let gt = gt.filter(|m| (m.width, m.height) == (geometry.orig_w, geometry.orig_h));
        self.image = Some(OpenImage {
            name,
            rgba: Rc::new(to_rgba(&rgb)),
            rgb: Rc::new(rgb),
            sha256: sha256_hex(&bytes),
            geometry,
            ground_truth: gt,
            embedded: false,
            bytes: Rc::new(bytes),
        });
        self.doc = Document::new();
        self.history.clear();
        self.hover_mask = None;
        self.error = None;
        self.latency_ms = None;
        self.zoom = 0.0;
        self.start_embedding(ctx);
    }

    fn export(&mut self, kind: &str) -> Result<(), String> {
        let img = self.image.as_ref().ok_or("open an image first")?;
        let (w, h) = (img.geometry.orig_w, img.geometry.orig_h);
        let stem = img.name.rsplit_once('.').map(|(s, _)| s).unwrap_or(&img.name).to_string();
        match kind {
            "mask" => {
                let mask = self.doc.union_mask(w, h);
                let png = mask.to_png().map_err(|e| e.to_string())?;
                download(&format!("{stem}_sonosam_mask.png"), &png, "image/png", "export-mask")
            }
            "overlay" => {
                let masks: Vec<Mask> = self
                    .doc
                    .objects
                    .iter()
                    .filter_map(|o| o.segmentation.as_ref()?.mask().cloned())
                    .collect();
                let prompt = self.doc.selected_object().map(|o| o.prompt.clone()).unwrap_or_default();
                let overlay = render_overlay(&img.rgb, &masks, &prompt, self.opacity as f32);
                let png = encode_png_rgb(&overlay)?;
                download(&format!("{stem}_sonosam_overlay.png"), &png, "image/png", "export-overlay")
            }
            _ => {
                let json = self.doc.coco(&img.name, w, h, self.mm_per_px());
                announce_export(&json);
                download(&format!("{stem}_sonosam_coco.json"), json.as_bytes(), "application/json", "export-coco")
            }
        }
    }
}

impl Component for App {
    type Message = Msg;
    type Properties = AppProps;

    fn create(ctx: &Context<Self>) -> Self {
        let link = ctx.link().clone();
        let samples_url = ctx.props().samples_url.to_string();
        link.send_future(async move {
            let list = storage::fetch_text(&format!("{samples_url}/index.json"))
                .await
                .ok()
                .and_then(|t| serde_json::from_str::<Vec<SampleInfo>>(&t).ok())
                .unwrap_or_default();
            Msg::Samples(list)
        });
        let keys = {
            let link = link.clone();
            gloo_keys::Listener::new(move |e| link.send_message(Msg::Key(e)))
        };
        let ticker = {
            let link = link.clone();
            gloo::timers::callback::Interval::new(500, move || link.send_message(Msg::Tick))
        };
        let mut app = Self {
            engine: EngineState::Loading("starting".into(), None),
            backend_choice: ctx.props().backend,
            notice: None,
            samples: Vec::new(),
            image: None,
            doc: Document::new(),
            history: History::default(),
            drag: Drag::None,
            seq: 0,
            latest: Vec::new(),
            in_flight: 0,
            hover_seq: 0,
            hover_busy: false,
            hover_pending: None,
            hover_mask: None,
            status: String::new(),
            error: None,
            latency_ms: None,
            released_at: None,
            drawn_at: None,
            release_to_draw_ms: None,
            release_draws: 0,
            opacity: 0.45,
            show_gt: false,
            multimask: false,
            refine: false,
            hover: false,
            spacing: String::new(),
            zoom: 0.0,
            busy_since: None,
            canvas: NodeRef::default(),
            use_server: false,
            server_url: String::new(),
            companion: None,
            _ticker: Some(ticker),
            _keys: keys,
        };
        app.start_engine(ctx);
        // Served by `sonosam serve`? Then its embeddings API is the default.
        app.probe_companion(ctx, String::new());
        app
    }

    fn update(&mut self, ctx: &Context<Self>, msg: Self::Message) -> bool {
        let _stage = Stage::start("sonosam:update");
        // A model worker that stopped (internal error, GPU device lost) is shown as a failed
        // model with a Retry button; the document and its masks stay.
        if let Some(why) = self.engine().and_then(|e| e.failure()) {
            self.engine = EngineState::Failed(why);
            self.in_flight = 0;
            self.busy_since = None;
            if let Some(img) = self.image.as_mut() {
                img.embedded = false;
            }
        }
        match msg {
            Msg::Refresh => {}
            Msg::Tick => return self.busy_since.is_some(),
            Msg::Progress(s, f) => {
                if let EngineState::Loading(..) = self.engine {
                    self.engine = EngineState::Loading(s, f);
                } else {
                    self.status = match f {
                        Some(f) => format!("{s} ({:.0} %)", f * 100.0),
                        None => s,
                    };
                }
            }
            Msg::EngineReady(r, notice) => {
                self.notice = notice;
                match r {
                    Ok(e) => {
                        if let Some(img) = self.image.as_mut() {
                            img.geometry = Geometry::new(img.geometry.orig_h, img.geometry.orig_w, e.manifest().config.img_size());
                            img.embedded = false;
                        }
                        self.engine = EngineState::Ready(e);
                        self.start_embedding(ctx);
                    }
                    Err(e) => self.engine = EngineState::Failed(e),
                }
            }
            Msg::SetBackend(b) => {
                self.backend_choice = b;
                if let Some(img) = self.image.as_mut() {
                    img.embedded = false;
                }
                self.start_engine(ctx);
            }
            Msg::Samples(s) => self.samples = s,
            Msg::OpenSample(i) => {
                let Some(s) = self.samples.get(i).cloned() else { return false };
                let base = ctx.props().samples_url.to_string();
                self.status = format!("loading {}", s.name);
                ctx.link().send_future(async move {
                    let r = async {
                        let bytes = storage::fetch_with_progress(&format!("{base}/{}", s.image), |_, _| {}).await?;
                        let mut gt: Option<Mask> = None;
                        for m in &s.masks {
                            let b = storage::fetch_with_progress(&format!("{base}/{m}"), |_, _| {}).await?;
                            let mask = Mask::from_image_bytes(&b).map_err(|e| e.to_string())?;
                            gt = Some(match gt {
                                Some(mut g) if (g.width, g.height) == (mask.width, mask.height) => {
                                    g.data.iter_mut().zip(&mask.data).for_each(|(a, b)| *a |= b);
                                    g
                                }
                                _ => mask,
                            });
                        }
                        Ok((s.image.clone(), bytes, gt))
                    }
                    .await;
                    Msg::Opened(r)
                });
            }
            Msg::Files(files) => {
                let Some(file) = files.into_iter().next() else { return false };
                let name = file.name();
                const MAX_FILE: f64 = 200e6;
                if file.size() > MAX_FILE {
                    self.error = Some(format!("{name}: {:.0} MB is larger than the 200 MB limit", file.size() / 1e6));
                    return true;
                }
                let file = gloo::file::File::from(file);
                ctx.link().send_future(async move {
                    let r = gloo::file::futures::read_as_bytes(&file)
                        .await
                        .map(|b| (name.clone(), b, None))
                        .map_err(|e| format!("{name}: cannot read the file: {e}"));
                    Msg::Opened(r)
                });
            }
            Msg::Opened(r) => match r {
                Ok((name, bytes, gt)) => {
                    self.status = String::new();
                    self.open_bytes(ctx, name, bytes, gt);
                }
                Err(e) => self.error = Some(e),
            },
            Msg::Embedded(sha, r) => {
                let Some(img) = self.image.as_mut().filter(|i| i.sha256 == sha) else { return false };
                self.busy_since = None;
                match r {
                    Ok(how) => {
                        img.embedded = true;
                        self.status = how;
                        for i in 0..self.doc.objects.len() {
                            self.request_decode(ctx, i);
                        }
                    }
                    Err(e) => self.error = Some(format!("cannot compute the embedding: {e}")),
                }
            }
            Msg::Companion(url, r) => match r {
                Ok(c) => {
                    self.server_url = c.url.clone();
                    self.companion = Some(c);
                    self.use_server = true;
                }
                Err(e) => {
                    self.companion = None;
                    if !url.is_empty() {
                        self.use_server = false;
                        self.error = Some(format!("no companion server at {url}: {e}"));
                    }
                }
            },
            Msg::DecoderFile(file) => {
                let Some(engine) = self.engine() else { return false };
                match file {
                    None => ctx.link().send_future(async move {
                        Msg::DecoderSwitched(engine.use_decoder(None).await)
                    }),
                    Some(f) => {
                        let name = f.name();
                        let f = gloo::file::File::from(f);
                        ctx.link().send_future(async move {
                            match gloo::file::futures::read_as_bytes(&f).await {
                                Ok(b) => Msg::DecoderBytes(name, b),
                                Err(e) => Msg::Opened(Err(format!("{name}: {e}"))),
                            }
                        });
                    }
                }
                return false;
            }
            Msg::DecoderBytes(name, bytes) => {
                let Some(engine) = self.engine() else { return false };
                ctx.link().send_future(async move {
                    Msg::DecoderSwitched(engine.use_decoder(Some((&name, &bytes))).await)
                });
                return false;
            }
            Msg::DecoderSwitched(r) => match r {
                Ok(()) => {
                    self.error = None;
                    for i in 0..self.doc.objects.len() {
                        self.request_decode(ctx, i);
                    }
                }
                Err(e) => self.error = Some(e),
            },
            Msg::UseServer(on) => {
                self.use_server = on;
                if on && self.companion.is_none() {
                    let url = self.server_url.clone();
                    self.probe_companion(ctx, url);
                }
            }
            Msg::ServerUrl(u) => {
                self.server_url = u.trim().to_string();
                self.companion = None;
                if self.use_server {
                    let url = self.server_url.clone();
                    self.probe_companion(ctx, url);
                }
            }
            Msg::PointerDown(e) => {
                e.prevent_default();
                let Some(p) = self.image_xy(&e) else { return false };
                if let Some(t) = e.target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()) {
                    let _ = t.set_pointer_capture(e.pointer_id());
                }
                let negative = e.button() == 2 || e.alt_key();
                self.drag = Drag::Down {
                    start: p,
                    screen: (f64::from(e.client_x()), f64::from(e.client_y())),
                    now: p,
                    negative,
                    moved: false,
                };
            }
            Msg::PointerMove(e) => {
                let Some(p) = self.image_xy(&e) else { return false };
                match &mut self.drag {
                    Drag::Down { screen, now, moved, .. } => {
                        *now = p;
                        let d = (f64::from(e.client_x()) - screen.0).hypot(f64::from(e.client_y()) - screen.1);
                        *moved |= d > DRAG_THRESHOLD_PX;
                    }
                    Drag::None => {
                        self.request_hover(ctx, p);
                        return false;
                    }
                }
            }
            Msg::PointerUp(e) => {
                let Drag::Down { start, now, negative, moved, .. } = self.drag else { return false };
                self.released_at = Some(now_ms());
                self.drag = Drag::None;
                let Some(img) = self.image.as_ref() else { return true };
                let (w, h) = (img.geometry.orig_w as f64, img.geometry.orig_h as f64);
                let p = self.image_xy(&e).unwrap_or(now);
                self.checkpoint();
                let index = if moved && !negative {
                    let b = corners_to_box(start, p);
                    // Clip to the image; a box entirely outside is refused.
                    let b = [b[0].max(0.0), b[1].max(0.0), b[2].min(w as f32 - 1.0), b[3].min(h as f32 - 1.0)];
                    if b[2] <= b[0] || b[3] <= b[1] {
                        self.error = Some("the box lies outside the image".into());
                        return true;
                    }
                    self.doc.set_box(b)
                } else {
                    if p.0 < 0.0 || p.1 < 0.0 || p.0 > w - 1.0 || p.1 > h - 1.0 {
                        return true;
                    }
                    let label = if negative { PointLabel::Negative } else { PointLabel::Positive };
                    self.doc.add_point(p.0 as f32, p.1 as f32, label)
                };
                self.error = None;
                self.hover_mask = None;
                self.request_decode(ctx, index);
            }
            Msg::Decoded { seq, object, result } => {
                self.in_flight = self.in_flight.saturating_sub(1);
                if !self.latest.iter().any(|&(o, s)| o == object && s == seq) {
                    return false; // a newer request for this object is on its way
                }
                match result {
                    Ok((seg, ms)) => {
                        self.latency_ms = Some(ms);
                        self.drawn_at = self.released_at.take();
                        if let Some(o) = self.doc.objects.iter_mut().find(|o| o.id == object) {
                            o.segmentation = Some(ObjectSegmentation::new(seg));
                        }
                    }
                    Err(e) => self.error = Some(e),
                }
            }
            Msg::Hover { seq, result } => {
                self.hover_busy = false;
                if seq == self.hover_seq && self.hover {
                    self.hover_mask = result.ok().and_then(|s| s.masks.into_iter().next());
                }
                if let Some(p) = self.hover_pending.take() {
                    self.request_hover(ctx, p);
                }
            }
            Msg::Undo | Msg::Redo => {
                let changed = if matches!(msg, Msg::Undo) {
                    self.history.undo(&mut self.doc)
                } else {
                    self.history.redo(&mut self.doc)
                };
                if !changed {
                    return false;
                }
            }
            Msg::NewObject => {
                self.checkpoint();
                self.doc.add_object();
            }
            Msg::Select(i) => self.doc.selected = Some(i),
            Msg::Delete(i) => {
                self.checkpoint();
                self.doc.delete(i);
            }
            Msg::Choose(k) => {
                if let Some(seg) = self
                    .doc
                    .selected
                    .and_then(|i| self.doc.objects.get_mut(i))
                    .and_then(|o| o.segmentation.as_mut())
                {
                    seg.choose(k);
                }
            }
            Msg::Opacity(v) => self.opacity = v.clamp(0.0, 1.0),
            Msg::ToggleGroundTruth => self.show_gt = !self.show_gt,
            Msg::ToggleMultimask => {
                self.multimask = !self.multimask;
                if let Some(i) = self.doc.selected {
                    self.request_decode(ctx, i);
                }
            }
            Msg::ToggleRefine => self.refine = !self.refine,
            Msg::ToggleHover => {
                self.hover = !self.hover;
                self.hover_mask = None;
            }
            Msg::Spacing(s) => self.spacing = s,
            Msg::Zoom(f) => {
                let base = if self.zoom > 0.0 { self.zoom } else { 1.0 };
                self.zoom = (base * f).clamp(0.1, 16.0);
            }
            Msg::ZoomFit => self.zoom = 0.0,
            Msg::Export(kind) => {
                if let Err(e) = self.export(kind) {
                    self.error = Some(e);
                }
            }
            Msg::Key(e) => {
                let target_is_input = e
                    .target()
                    .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
                    .is_some_and(|el| matches!(el.tag_name().as_str(), "INPUT" | "SELECT" | "TEXTAREA"));
                if target_is_input {
                    return false;
                }
                let ctrl = e.ctrl_key() || e.meta_key();
                let key = e.key();
                let msg = match (ctrl, e.shift_key(), key.as_str()) {
                    (true, true, "z" | "Z") | (true, _, "y") => Msg::Redo,
                    (true, false, "z") => Msg::Undo,
                    (false, _, "n" | "N") => Msg::NewObject,
                    (false, _, "Delete" | "Backspace") => match self.doc.selected {
                        Some(i) => Msg::Delete(i),
                        None => return false,
                    },
                    (false, _, "m" | "M") => Msg::ToggleMultimask,
                    (false, _, "g" | "G") => Msg::ToggleGroundTruth,
                    (false, _, "+" | "=") => Msg::Zoom(1.25),
                    (false, _, "-") => Msg::Zoom(0.8),
                    (false, _, "0") => Msg::ZoomFit,
                    (false, _, "e" | "E") => Msg::Export("mask"),
                    _ => return false,
                };
                e.prevent_default();
                return Component::update(self, ctx, msg);
            }
        }
        true
    }

    fn rendered(&mut self, ctx: &Context<Self>, _first: bool) {
        {
            let _stage = Stage::start("sonosam:draw");
            self.redraw();
        }
        if let Some(t0) = self.drawn_at.take() {
            // The mask of the released prompt is on the canvas now.
            self.release_to_draw_ms = Some(now_ms() - t0);
            self.release_draws += 1;
            ctx.link().send_message(Msg::Refresh);
        }
    }

    fn view(&self, ctx: &Context<Self>) -> Html {
        let _stage = Stage::start("sonosam:view");
        let link = ctx.link();
        let engine_panel = match &self.engine {
            EngineState::Loading(s, f) => html! {
                <div class="engine loading" id="engine-status" data-state="loading">
                    <span>{ s.clone() }</span>
                    <progress max="1" value={ f.map(|v| v.to_string()) } />
                </div>
            },
            EngineState::Failed(e) => html! {
                <div class="engine failed" id="engine-status" data-state="failed">
                    <strong>{ "The model could not be loaded: " }</strong>{ e.clone() }
                    <button onclick={ let b = self.backend_choice; link.callback(move |_| Msg::SetBackend(b)) }>{ "Retry" }</button>
                </div>
            },
            EngineState::Ready(e) => {
                let (threads, single) = e.threads();
                let cpu = match threads {
                    1 => "CPU (wasm SIMD, 1 thread)".to_string(),
                    n => format!("CPU (wasm SIMD, {n} threads)"),
                };
                html! {
                    <div class="engine ready" id="engine-status" data-state="ready" data-backend={ e.kind().to_string() }
                         data-worker={ e.in_worker().to_string() } data-threads={ threads.to_string() }>
                        { format!("{} on {}{}", e.manifest().model,
                            if e.kind() == BackendKind::Wgpu { "WebGPU".to_string() } else { cpu },
                            if e.in_worker() { ", in a Web Worker" } else { ", in the page" }) }
                        if let (BackendKind::Cpu, Some(why)) = (e.kind(), single) {
                            <small class="threads-note">{ format!(" — single-threaded: {why}") }</small>
                        }
                    </div>
                }
            }
        };
        let backend_select = {
            let onchange = link.callback(|e: Event| {
                let v = e.target_unchecked_into::<web_sys::HtmlSelectElement>().value();
                Msg::SetBackend(v.parse().ok())
            });
            let sel = |k: Option<BackendKind>| self.backend_choice == k;
            html! {
                <label>{ "Backend " }
                    <select id="backend" {onchange}>
                        <option value="auto" selected={ sel(None) }>{ "automatic" }</option>
                        <option value="wgpu" selected={ sel(Some(BackendKind::Wgpu)) }>{ "WebGPU" }</option>
                        <option value="cpu" selected={ sel(Some(BackendKind::Cpu)) }>{ "CPU" }</option>
                    </select>
                </label>
            }
        };
        let gallery = self.samples.iter().enumerate().map(|(i, s)| {
            let src = format!("{}/{}", ctx.props().samples_url, s.image);
            html! {
                <button class="sample" data-sample={ s.name.clone() } onclick={ link.callback(move |_| Msg::OpenSample(i)) }
                        title={ format!("{} ({})", s.name, s.class) }>
                    <img src={ src } alt={ s.name.clone() } loading="lazy" />
                    <span>{ s.name.clone() }</span>
                </button>
            }
        });
        let file_input = {
            let onchange = link.callback(|e: Event| {
                let input: HtmlInputElement = e.target_unchecked_into();
                Msg::Files(file_vec(input.files()))
            });
            html! { <label class="file">{ "Open image… " }<input id="file" type="file" accept="image/png,image/jpeg,image/bmp" {onchange} /></label> }
        };
        let ondrop = link.callback(|e: DragEvent| {
            e.prevent_default();
            Msg::Files(file_vec(e.data_transfer().and_then(|d| d.files())))
        });
        let ondragover = Callback::from(|e: DragEvent| e.prevent_default());
        let onpaste = link.callback(|e: Event| {
            let e: web_sys::ClipboardEvent = e.unchecked_into();
            Msg::Files(file_vec(e.clipboard_data().and_then(|d| d.files())))
        });
        let canvas_style = match (&self.image, self.zoom) {
            (Some(img), z) if z > 0.0 => format!("width:{}px", (img.geometry.orig_w as f64 * z).round()),
            _ => "max-width:100%".to_string(),
        };
        let stage = if self.image.is_some() {
            html! {
                <div class="stage">
                    <canvas id="image-canvas" ref={ self.canvas.clone() } style={ canvas_style }
                        onpointerdown={ link.callback(Msg::PointerDown) }
                        onpointermove={ link.callback(Msg::PointerMove) }
                        onpointerup={ link.callback(Msg::PointerUp) }
                        oncontextmenu={ Callback::from(|e: MouseEvent| e.prevent_default()) } />
                </div>
            }
        } else {
            html! { <div class="stage empty">{ "Drop an ultrasound image here, paste one, open a file, or pick a sample." }</div> }
        };
        let mm = self.mm_per_px();
        let objects = self.doc.objects.iter().enumerate().map(|(i, o)| {
            let selected = self.doc.selected == Some(i);
            let [r, g, b] = draw::object_color(i);
            let seg = o.segmentation.as_ref();
            let meas = seg.and_then(|s| s.measurements(mm));
            let candidates = seg.filter(|s| s.decoded.masks.len() > 1).map(|s| {
                html! { <div class="candidates">{ for s.decoded.iou.iter().enumerate().map(|(k, iou)| html! {
                    <button class={ classes!("candidate", (k == s.chosen()).then_some("chosen")) }
                        onclick={ link.callback(move |_| Msg::Choose(k)) }>
                        { format!("#{} IoU {:.3}", k + 1, iou) }
                    </button>
                }) }</div> }
            });
            html! {
                <li class={ classes!("object", selected.then_some("selected")) } data-object={ o.id.to_string() }
                    data-area={ seg.and_then(|s| s.mask()).map(|m| m.area().to_string()) }
                    data-box={ o.prompt.bbox.map(|b| format!("{},{},{},{}", b[0], b[1], b[2], b[3])) }
                    onclick={ link.callback(move |_| Msg::Select(i)) }>
                    <span class="swatch" style={ format!("background:rgb({r},{g},{b})") }></span>
                    <strong>{ o.name() }</strong>
                    { seg.map(|s| html! { <span class="score">{ format!(" predicted IoU {:.3}", s.score()) }</span> }) }
                    <button class="delete" title="Delete" onclick={ link.callback(move |e: MouseEvent| { e.stop_propagation(); Msg::Delete(i) }) }>{ "✕" }</button>
                    { meas.map(|m| html! { <div class="measure">{ m.summary() }</div> }) }
                    { candidates }
                </li>
            }
        });
        let has_gt = self.image.as_ref().is_some_and(|i| i.ground_truth.is_some());
        let busy = self.busy_since.map(|t| format!(" ({:.0} s)", (now_ms() - t) / 1e3)).unwrap_or_default();
        let opacity_input = link.callback(|e: InputEvent| {
            let v = e.target_unchecked_into::<HtmlInputElement>().value_as_number();
            Msg::Opacity(v)
        });
        let spacing_input = link.callback(|e: InputEvent| Msg::Spacing(e.target_unchecked_into::<HtmlInputElement>().value()));
        html! {
            <div class="app" ondrop={ ondrop } ondragover={ ondragover } onpaste={ onpaste }>
                <header>
                    <h1>{ "sonosam" }</h1>
                    <span class="tagline">{ "breast-ultrasound lesion segmentation, in your browser — images never leave this machine" }</span>
                    { engine_panel }
                    { backend_select }
                </header>
                { self.notice.as_ref().map(|n| html! { <div class="notice" id="notice">{ n.clone() }</div> }) }
                { self.error.as_ref().map(|e| html! { <div class="error" id="error" role="alert">{ e.clone() }</div> }) }
                <nav class="gallery" id="gallery">{ file_input }{ for gallery }</nav>
                <main>
                    { stage }
                    <aside>
                        <div class="status" id="status">{ format!("{}{busy}", self.status) }</div>
                        <div class="latency" id="latency" data-release-to-draw-ms={ self.release_to_draw_ms.map(|ms| format!("{ms:.1}")) }
                             data-release-draws={ self.release_draws.to_string() }>
                            { self.latency_ms.map(|ms| format!("decoder {ms:.0} ms")).unwrap_or_default() }
                            { self.release_to_draw_ms.map(|ms| format!(" · release → mask {ms:.0} ms")).unwrap_or_default() }
                        </div>
                        <div class="tools">
                            <button id="new-object" onclick={ link.callback(|_| Msg::NewObject) }>{ "New lesion (N)" }</button>
                            <button id="undo" disabled={ !self.history.can_undo() } onclick={ link.callback(|_| Msg::Undo) }>{ "Undo" }</button>
                            <button id="redo" disabled={ !self.history.can_redo() } onclick={ link.callback(|_| Msg::Redo) }>{ "Redo" }</button>
                        </div>
                        <ul class="objects" id="objects">{ for objects }</ul>
                        <div class="settings">
                            <label>{ "Opacity " }<input id="opacity" type="range" min="0" max="1" step="0.05" value={ self.opacity.to_string() } oninput={ opacity_input } /></label>
                            <label><input type="checkbox" id="multimask" checked={ self.multimask } onchange={ link.callback(|_| Msg::ToggleMultimask) } />{ " multimask (3 candidates)" }</label>
                            <label><input type="checkbox" id="refine" checked={ self.refine } onchange={ link.callback(|_| Msg::ToggleRefine) } />{ " refine with the previous mask" }</label>
                            <label><input type="checkbox" id="hover" checked={ self.hover } onchange={ link.callback(|_| Msg::ToggleHover) } />{ " hover preview" }</label>
                            <label><input type="checkbox" id="show-gt" disabled={ !has_gt } checked={ self.show_gt } onchange={ link.callback(|_| Msg::ToggleGroundTruth) } />{ " ground truth" }</label>
                            { (self.show_gt && has_gt).then(|| html! { <div id="dice">{ self.dice_vs_truth().map(|d| format!("Dice vs ground truth: {d:.4}")).unwrap_or_else(|| "Dice: segment a lesion first".into()) }</div> }) }
                            <fieldset class="decoder">
                                <legend>{ "Decoder" }</legend>
                                <span id="decoder-name">{ self.engine().map(|e| e.decoder_name()).unwrap_or_default() }</span>
                                <button id="decoder-base" onclick={ link.callback(|_| Msg::DecoderFile(None)) }>{ "base" }</button>
                                <label class="file">{ " fine-tuned… " }<input id="decoder-file" type="file" accept=".safetensors"
                                    onchange={ link.callback(|e: Event| {
                                        let input: HtmlInputElement = e.target_unchecked_into();
                                        Msg::DecoderFile(input.files().and_then(|l| l.get(0)))
                                    }) } /></label>
                            </fieldset>
                            <fieldset class="source">
                                <legend>{ "Embeddings from" }</legend>
                                <label><input type="radio" name="source" id="source-browser" checked={ !self.use_server } onchange={ link.callback(|_| Msg::UseServer(false)) } />{ " this browser" }</label>
                                <label><input type="radio" name="source" id="source-server" checked={ self.use_server } onchange={ link.callback(|_| Msg::UseServer(true)) } />{ " companion server " }</label>
                                <input id="server-url" type="url" placeholder="this page's server, or http://host:8080" value={ self.server_url.clone() }
                                    onchange={ link.callback(|e: Event| Msg::ServerUrl(e.target_unchecked_into::<HtmlInputElement>().value())) } />
                                { self.companion.as_ref().filter(|_| self.use_server).map(|c| html! { <div class="status" id="server-status">{ format!("server: {} ({})", if c.url.is_empty() { "this page's" } else { c.url.as_str() }, c.model) }</div> }) }
                            </fieldset>
                            <label>{ "Pixel spacing (mm/px) " }<input id="spacing" type="text" inputmode="decimal" placeholder="e.g. 0.1" value={ self.spacing.clone() } oninput={ spacing_input } /></label>
                            <div class="zoom">
                                <button onclick={ link.callback(|_| Msg::Zoom(0.8)) }>{ "−" }</button>
                                <button onclick={ link.callback(|_| Msg::ZoomFit) }>{ "fit" }</button>
                                <button onclick={ link.callback(|_| Msg::Zoom(1.25)) }>{ "+" }</button>
                            </div>
                        </div>
                        <div class="export">
                            <button id="export-mask-button" onclick={ link.callback(|_| Msg::Export("mask")) }>{ "Mask PNG" }</button>
                            <button id="export-overlay-button" onclick={ link.callback(|_| Msg::Export("overlay")) }>{ "Overlay PNG" }</button>
                            <button id="export-coco-button" onclick={ link.callback(|_| Msg::Export("coco")) }>{ "COCO JSON" }</button>
                        </div>
                        <details class="shortcuts"><summary>{ "Keyboard shortcuts" }</summary>
                            <dl>{ for SHORTCUTS.iter().map(|(k, v)| html! { <><dt>{ *k }</dt><dd>{ *v }</dd></> }) }</dl>
                        </details>
                    </aside>
                </main>
                <footer>{ "Samples: BUSI dataset (Al-Dhabyani et al., Data in Brief 28, 2020). Research use only — not a medical device." }</footer>
            </div>
        }
    }
}
