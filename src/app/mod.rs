//! The app. The root component [`App`] owns the session — the model, the open image, its
//! document (lesions, undo/redo) and the settings — and hands it to one component per concern
//! through [`AppContext`]:
//!
//! | module | concern |
//! |---|---|
//! | [`model_panel`] | the model's state (loading, ready on which backend, failed) and the backend choice |
//! | [`gallery`] | bundled samples and the file input (drop and paste work on the whole page) |
//! | [`canvas`] | the image with masks and prompts; pointer gestures become prompts |
//! | [`dicom_panel`] | a DICOM file's header, calibration source and frame slider |
//! | [`lesions`] | the lesion list: measurements, shape descriptors, candidates, new / undo / redo |
//! | [`settings`] | display, decoding options, the decoder file, the embeddings source, calibration |
//! | [`export`] | mask PNG, overlay PNG and COCO JSON downloads |
//! | [`report`] | the report view: the lesion report shown, printed, and downloaded as HTML, JSON, DICOM SEG and SR |
//! | [`shortcuts`] | the keyboard table that both the handler and the help list use |
//! | [`status`] | what the app is doing, the decoder's latency, notices and errors |
//! | [`tasks`] | the asynchronous work behind them: model start, files, embeddings, decoding |
//!
//! The state that is not about the browser — the document, the pointer gesture, latest-wins
//! decode sequencing, the hover preview — lives in [`crate::state`], unit-tested natively.

mod canvas;
mod dicom_panel;
mod export;
mod gallery;
mod guide;
mod lesions;
mod model_panel;
mod navigation;
mod report;
mod settings;
mod shortcuts;
mod status;
mod tasks;

use std::rc::Rc;

use image::RgbImage;
use sonosam_model::backend::BackendKind;
use sonosam_model::preprocess::Geometry;
use sonosam_model::weights::sha256_hex;
use sonosam_model::measure::Measurements;
use sonosam_model::{Mask, PointLabel, Segmentation, decode_image};
use yew::prelude::*;

use crate::protocol::{Progress, WeightSource};
use crate::model::{Model, Placement};
use crate::perf::{Stage, now_ms};
use crate::state::{MAX_ZOOM, MIN_ZOOM};
use crate::state::{DecodeSequencer, Document, History, HoverPreview, ObjectSegmentation, PromptEdit};

pub use export::ExportKind;
pub use gallery::SampleInfo;
pub use settings::Settings;
pub use shortcuts::SHORTCUTS;
pub use tasks::Companion;

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

/// A frame of a DICOM file.
#[derive(Clone)]
pub struct DicomFrame {
    pub file: Rc<sonosam_dicom::Dicom>,
    /// From 0.
    pub frame: u32,
}

/// An opened image (its pixels shared, never copied, between the components).
#[derive(Clone)]
pub struct OpenImage {
    pub name: String,
    pub rgb: Rc<RgbImage>,
    /// The pixels as RGBA, for the canvas.
    pub rgba: Rc<Vec<u8>>,
    /// SHA-256 of the file's bytes (the embedding's cache key).
    pub sha256: String,
    /// Where the image sits in the model's frame (the frame comes from the model's config).
    pub geometry: Geometry,
    pub ground_truth: Option<Rc<Mask>>,
    /// The image file's bytes (sent to the companion server); a DICOM frame's as a PNG.
    pub bytes: Rc<Vec<u8>>,
    /// The DICOM file and frame the image is, if it is one.
    pub dicom: Option<DicomFrame>,
}

impl OpenImage {
    /// Decode `bytes` — a PNG, JPEG or BMP file, or a DICOM file (its first frame) — for a
    /// model whose frame is `frame`; the ground truth is kept only when it has the image's size.
    fn decode(name: String, bytes: Vec<u8>, ground_truth: Option<Mask>, frame: usize) -> Result<Self, String> {
        let looks_dicom = sonosam_dicom::is_dicom(&bytes) || name.to_ascii_lowercase().ends_with(".dcm");
        match sonosam_dicom::Dicom::read(&bytes) {
            Ok(file) => return Self::dicom_frame(name, Rc::new(file), 0, frame),
            Err(e) if looks_dicom => return Err(format!("{name}: {e}")),
            Err(_) => {} // an ordinary image
        }
        let rgb = decode_image(&bytes).map_err(|e| format!("{name}: {e}"))?;
        Ok(Self::from_rgb(name, rgb, bytes, ground_truth, frame, None))
    }

    /// Frame `n` of a DICOM file. Its bytes (for the cache key and the companion server) are
    /// the frame as a PNG.
    fn dicom_frame(name: String, file: Rc<sonosam_dicom::Dicom>, n: u32, frame: usize) -> Result<Self, String> {
        let rgb = file.frame(n).map_err(|e| format!("{name}: {e}"))?;
        let png = export::encode_png(&rgb)?;
        Ok(Self::from_rgb(name, rgb, png, None, frame, Some(DicomFrame { file, frame: n })))
    }

    fn from_rgb(name: String, rgb: RgbImage, bytes: Vec<u8>, ground_truth: Option<Mask>, frame: usize, dicom: Option<DicomFrame>) -> Self {
        let geometry = Geometry::new(rgb.height() as usize, rgb.width() as usize, frame);
        let rgba = rgb.as_raw().chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
        Self {
            name,
            rgba: Rc::new(rgba),
            rgb: Rc::new(rgb),
            sha256: sha256_hex(&bytes),
            ground_truth: ground_truth.filter(|m| (m.width, m.height) == (geometry.orig_w, geometry.orig_h)).map(Rc::new),
            geometry,
            bytes: Rc::new(bytes),
            dicom,
        }
    }

    /// The calibration of a lesion measured as `m` (pixels): the user's pixel spacing when
    /// typed, else the DICOM file's (the ultrasound region holding both calipers), else none.
    pub fn calibration(&self, m: &Measurements, settings: &Settings) -> sonosam_dicom::Calibration {
        sonosam_dicom::calibrate(self.dicom.as_ref().map(|d| &*d.file), &m.ends(), settings.mm_per_px())
    }

    /// A lesion's measurements in mm where its calibration allows, with that calibration.
    pub fn measure(&self, seg: &ObjectSegmentation, settings: &Settings) -> Option<(Measurements, sonosam_dicom::Calibration)> {
        let px = seg.measurements(None)?;
        let calibration = self.calibration(&px, settings);
        Some((Measurements { mm_per_px: calibration.isotropic(), ..px }, calibration))
    }

    pub fn size(&self) -> (usize, usize) {
        (self.geometry.orig_w, self.geometry.orig_h)
    }
}

/// The model's life: loading (what, fraction done), ready, failed to load (why), or stopped
/// after it was ready (why).
pub enum ModelState {
    Loading(String, Option<f64>),
    Ready(Rc<Model>),
    Failed(String),
    Stopped(String),
}

impl ModelState {
    pub fn ready(&self) -> Option<&Rc<Model>> {
        match self {
            ModelState::Ready(m) => Some(m),
            _ => None,
        }
    }
}

/// What the components share: the session's current values (compared by identity: each change
/// makes a new one) and the way to ask the app for a change.
#[derive(Clone)]
pub struct AppContext {
    pub model: Rc<ModelState>,
    pub image: Option<Rc<OpenImage>>,
    pub doc: Rc<Document>,
    pub settings: Rc<Settings>,
    pub send: Callback<Msg>,
}

impl PartialEq for AppContext {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.model, &other.model)
            && match (&self.image, &other.image) {
                (Some(a), Some(b)) => Rc::ptr_eq(a, b),
                (a, b) => a.is_none() && b.is_none(),
            }
            && Rc::ptr_eq(&self.doc, &other.doc)
            && Rc::ptr_eq(&self.settings, &other.settings)
            && self.send == other.send
    }
}

/// A change of a setting.
pub enum Setting {
    Backend(Option<BackendKind>),
    Opacity(f64),
    ToggleGroundTruth,
    ToggleMultimask,
    ToggleRefine,
    ToggleHover,
    ToggleShape,
    ToggleImageOnly,
    Spacing(String),
    /// The manual calibration's state (start, a picked mark, cancel).
    Ruler(crate::state::Ruler),
    /// A mark picked on the ruler (image pixels).
    RulerMark((f64, f64)),
    /// The typed distance between the two marks: sets the pixel spacing.
    RulerDistance(String),
    /// How the image is shown.
    Display(settings::Display),
    /// Zoom by a factor.
    Zoom(f64),
    /// Zoom to screen pixels per image pixel (a pinch, Ctrl + wheel).
    ZoomTo(f64),
    ZoomFit,
}

pub enum Msg {
    // The model.
    Progress(String, Option<f64>),
    ModelReady(Result<(Rc<Model>, Option<String>), String>),
    /// The model stopped (its worker died): pushed by the model, also while the page is idle.
    ModelFailed(String),
    /// A fine-tuned decoder file (`None`: back to the base decoder).
    DecoderFile(Option<web_sys::File>),
    DecoderSwitched(Result<String, String>),
    // Images and embeddings.
    Samples(Vec<SampleInfo>),
    OpenSample(usize),
    Files(Vec<web_sys::File>),
    Opened(Result<tasks::Loaded, String>),
    /// Show this frame of the open DICOM file.
    Frame(u32),
    /// The embedding of the image with this hash is ready (how it was obtained) or failed.
    Embedded(String, Result<String, String>),
    /// Result of probing a companion server (the URL asked).
    Companion(String, Result<Companion, String>),
    UseServer(bool),
    ServerUrl(String),
    // Editing.
    Prompt(PromptEdit),
    Hover((f64, f64)),
    Decoded { seq: u64, object: u32, result: Result<(Segmentation, f64), String> },
    Hovered { seq: u64, result: Result<Segmentation, String> },
    Undo,
    Redo,
    NewObject,
    Select(usize),
    Delete(usize),
    DeleteSelected,
    Choose(usize),
    Set(Setting),
    Export(ExportKind),
    /// Open (a fresh report of the current lesions) or close the report view.
    Report(bool),
    /// De-identify the report's DICOM exports (or not); the open report is made again.
    Deidentify(bool),
    /// Show (or close) the first-use guide.
    Guide(bool),
    Error(String),
    /// The canvas drew the document's masks.
    Drawn,
}

/// Timing of the last prompt: the decoder's latency and the time from releasing the pointer to
/// the mask on the canvas (shown; read by the end-to-end test).
#[derive(Clone, Copy, Default, PartialEq)]
pub struct Latency {
    pub decoder_ms: Option<f64>,
    pub release_to_draw_ms: Option<f64>,
    pub draws: u32,
    /// When the last prompt was released (page clock), until its mask is decoded …
    released_at: Option<f64>,
    /// … and then until it is drawn.
    decoded_release: Option<f64>,
}

pub struct App {
    model: Rc<ModelState>,
    notice: Option<String>,
    samples: Rc<Vec<SampleInfo>>,
    image: Option<Rc<OpenImage>>,
    /// Whether the open image's embedding is in the model.
    embedded: bool,
    doc: Rc<Document>,
    /// The lesions of the other frames of a DICOM cine (each frame keeps its own).
    frame_docs: std::collections::HashMap<u32, Rc<Document>>,
    history: History,
    decodes: DecodeSequencer,
    hover: HoverPreview,
    settings: Rc<Settings>,
    companion: tasks::CompanionChoice,
    status: String,
    busy_since: Option<f64>,
    error: Option<String>,
    latency: Latency,
    /// Whether the first-use guide is shown, and whether a report was opened (its last step).
    guide: bool,
    reported: bool,
    /// The open report (as HTML and JSON, and the file names' stem), a snapshot taken when
    /// it was opened.
    report: Option<report::ReportViewProps>,
    deidentify: bool,
    /// How components send messages (one callback for the app's life: the context stays
    /// equal between renders).
    send: Callback<Msg>,
    _keys: gloo::events::EventListener,
}

impl Component for App {
    type Message = Msg;
    type Properties = AppProps;

    fn create(ctx: &Context<Self>) -> Self {
        let link = ctx.link().clone();
        link.send_future(tasks::load_samples(ctx.props().samples_url.to_string()));
        let keys = {
            let link = link.clone();
            let window = web_sys::window().expect("a window");
            gloo::events::EventListener::new(&window, "keydown", move |e| {
                let e: &web_sys::KeyboardEvent = wasm_bindgen::JsCast::unchecked_ref(e);
                if let Some(msg) = shortcuts::message(e) {
                    e.prevent_default();
                    link.send_message(msg);
                }
            })
        };
        let mut app = Self {
            model: Rc::new(ModelState::Loading("starting".into(), None)),
            notice: None,
            samples: Rc::default(),
            image: None,
            embedded: false,
            doc: Rc::default(),
            frame_docs: Default::default(),
            history: History::default(),
            decodes: DecodeSequencer::default(),
            hover: HoverPreview::default(),
            settings: Rc::new(Settings { backend: ctx.props().backend, ..Settings::default() }),
            companion: tasks::CompanionChoice::default(),
            status: String::new(),
            busy_since: None,
            error: None,
            latency: Latency::default(),
            guide: !guide::done_before(),
            reported: false,
            report: None,
            deidentify: false,
            send: link.callback(|m| m),
            _keys: keys,
        };
        app.start_model(ctx);
        // Served by `sonosam serve`? Then its embeddings API is the default.
        ctx.link().send_future(tasks::probe_companion(String::new()));
        app
    }

    fn update(&mut self, ctx: &Context<Self>, msg: Msg) -> bool {
        let _stage = Stage::start("sonosam:update");
        match msg {
            Msg::Progress(what, fraction) => self.progress(what, fraction),
            Msg::ModelReady(r) => self.model_ready(ctx, r),
            Msg::ModelFailed(why) => self.model_failed(why),
            Msg::DecoderFile(file) => return self.switch_decoder(ctx, file),
            Msg::DecoderSwitched(r) => self.decoder_switched(ctx, r),
            Msg::Samples(s) => self.samples = Rc::new(s),
            Msg::OpenSample(i) => self.open_sample(ctx, i),
            Msg::Files(files) => self.open_files(ctx, files),
            Msg::Opened(r) => self.opened(ctx, r),
            Msg::Frame(n) => self.show_frame(ctx, n),
            Msg::Embedded(sha, r) => return self.embedded(ctx, &sha, r),
            Msg::Companion(url, r) => self.companion_answered(url, r),
            Msg::UseServer(on) => self.use_server(ctx, on),
            Msg::ServerUrl(url) => self.server_url(ctx, url),
            Msg::Prompt(edit) => self.prompt(ctx, edit),
            Msg::Hover(at) => return self.request_hover(ctx, at),
            Msg::Decoded { seq, object, result } => return self.decoded(seq, object, result),
            Msg::Hovered { seq, result } => self.hovered(ctx, seq, result),
            Msg::Undo => return self.undo_redo(true),
            Msg::Redo => return self.undo_redo(false),
            Msg::NewObject => {
                self.edit(Document::add_object);
            }
            Msg::Select(i) => self.select(i),
            Msg::Delete(i) => self.edit(|d| d.delete(i)),
            Msg::DeleteSelected => match self.doc.selected {
                Some(i) => self.edit(|d| d.delete(i)),
                None => return false,
            },
            Msg::Choose(k) => self.choose(k),
            Msg::Set(s) => self.set(ctx, s),
            Msg::Export(kind) => self.export(kind),
            Msg::Report(open) => self.report(open),
            Msg::Guide(show) => {
                self.guide = show;
                guide::remember(!show);
            }
            Msg::Deidentify(on) => {
                self.deidentify = on;
                if self.report.is_some() {
                    self.report(true);
                }
            }
            Msg::Error(e) => self.error = Some(e),
            Msg::Drawn => return self.drawn(),
        }
        true
    }

    fn view(&self, ctx: &Context<Self>) -> Html {
        let _stage = Stage::start("sonosam:view");
        let link = ctx.link();
        let context = AppContext {
            model: self.model.clone(),
            image: self.image.clone(),
            doc: self.doc.clone(),
            settings: self.settings.clone(),
            send: self.send.clone(),
        };
        let ondrop = link.callback(|e: DragEvent| {
            e.prevent_default();
            Msg::Files(gallery::file_vec(e.data_transfer().and_then(|d| d.files())))
        });
        let ondragover = Callback::from(|e: DragEvent| e.prevent_default());
        let onpaste = link.callback(|e: Event| {
            let e: web_sys::ClipboardEvent = wasm_bindgen::JsCast::unchecked_into(e);
            Msg::Files(gallery::file_vec(e.clipboard_data().and_then(|d| d.files())))
        });
        html! {
            <ContextProvider<AppContext> {context}>
                <div class="app" {ondrop} {ondragover} {onpaste}>
                    <header>
                        <h1>{ "sonosam" }</h1>
                        <span class="tagline">{ "breast-ultrasound lesion segmentation, in your browser — images never leave this machine" }</span>
                        <model_panel::ModelPanel />
                        if !self.guide {
                            <button id="guide-open" class="link" onclick={ link.callback(|_| Msg::Guide(true)) }>{ "Guide" }</button>
                        }
                    </header>
                    <status::Banners notice={ self.notice.clone() } error={ self.error.clone() } />
                    <gallery::Gallery samples={ self.samples.clone() } samples_url={ ctx.props().samples_url.clone() } />
                    <dicom_panel::DicomPanel />
                    if self.guide {
                        <guide::Guide reported={ self.reported } />
                    }
                    if let Some(r) = &self.report {
                        <report::ReportView html={ r.html.clone() } json={ r.json.clone() } seg={ r.seg.clone() } sr={ r.sr.clone() } deidentify={ r.deidentify } stem={ r.stem.clone() } />
                    }
                    <main>
                        <canvas::ImageCanvas hover_mask={ self.hover.mask.clone().map(canvas::Shared) }
                            busy={ self.decodes.in_flight() > 0 } />
                        <aside>
                            <status::StatusPanel status={ self.status.clone() } busy_since={ self.busy_since } latency={ self.latency } />
                            <lesions::LesionList can_undo={ self.history.can_undo() } can_redo={ self.history.can_redo() } />
                            <settings::SettingsPanel companion={ self.companion.clone() } />
                            <export::ExportBar />
                            <shortcuts::ShortcutList />
                        </aside>
                    </main>
                    <footer>{ "Samples: BUSI dataset (Al-Dhabyani et al., Data in Brief 28, 2020). Research use only — not a medical device." }</footer>
                </div>
            </ContextProvider<AppContext>>
        }
    }
}

/// The model's life: start, progress, ready, failed, decoder files.
impl App {
    fn start_model(&mut self, ctx: &Context<Self>) {
        let props = ctx.props();
        let placement = match &props.worker {
            Some(url) => Placement::Worker(url.to_string()),
            None => Placement::Page,
        };
        // The running model (and its worker) goes when the next one is ready or failed.
        self.model = Rc::new(ModelState::Loading("starting the model".into(), None));
        let link = ctx.link();
        let start = tasks::start_model(props.weights.clone(), self.settings.backend, placement, self.progress_reporter(ctx), link.callback(Msg::ModelFailed));
        link.send_future(start);
    }

    fn progress_reporter(&self, ctx: &Context<Self>) -> Progress {
        let link = ctx.link().clone();
        Rc::new(move |what, fraction| link.send_message(Msg::Progress(what, fraction)))
    }

    fn progress(&mut self, what: String, fraction: Option<f64>) {
        if let ModelState::Loading(..) = *self.model {
            self.model = Rc::new(ModelState::Loading(what, fraction));
        } else {
            self.status = match fraction {
                Some(f) => format!("{what} ({:.0} %)", f * 100.0),
                None => what,
            };
        }
    }

    fn model_ready(&mut self, ctx: &Context<Self>, r: Result<(Rc<Model>, Option<String>), String>) {
        match r {
            Ok((model, notice)) => {
                self.notice = notice;
                let frame = model.manifest().config.img_size();
                if let Some(img) = &self.image {
                    let geometry = Geometry::new(img.geometry.orig_h, img.geometry.orig_w, frame);
                    self.image = Some(Rc::new(OpenImage { geometry, ..(**img).clone() }));
                }
                self.embedded = false;
                self.model = Rc::new(ModelState::Ready(model));
                self.start_embedding(ctx);
            }
            Err(e) => self.model = Rc::new(ModelState::Failed(e)),
        }
    }

    /// The model's worker stopped (internal error, GPU device lost, killed): the model panel
    /// shows it with a Retry button; the document and its masks stay.
    fn model_failed(&mut self, why: String) {
        self.model = Rc::new(ModelState::Stopped(why));
        self.decodes.reset();
        self.hover.reset();
        self.busy_since = None;
        self.embedded = false;
    }

    fn switch_decoder(&mut self, ctx: &Context<Self>, file: Option<web_sys::File>) -> bool {
        let Some(model) = self.model.ready().cloned() else { return false };
        ctx.link().send_future(tasks::switch_decoder(model, file));
        false
    }

    fn decoder_switched(&mut self, ctx: &Context<Self>, r: Result<String, String>) {
        match r {
            Ok(_) => {
                self.error = None;
                self.decode_all(ctx);
            }
            Err(e) => self.error = Some(e),
        }
    }
}

/// Images and their embeddings.
impl App {
    fn open_sample(&mut self, ctx: &Context<Self>, i: usize) {
        let Some(sample) = self.samples.get(i).cloned() else { return };
        self.status = format!("loading {}", sample.name);
        ctx.link().send_future(tasks::load_sample(ctx.props().samples_url.to_string(), sample));
    }

    fn open_files(&mut self, ctx: &Context<Self>, files: Vec<web_sys::File>) {
        let Some(file) = files.into_iter().next() else { return };
        match tasks::read_image_file(file) {
            Ok(read) => ctx.link().send_future(read),
            Err(e) => self.error = Some(e),
        }
    }

    fn opened(&mut self, ctx: &Context<Self>, r: Result<tasks::Loaded, String>) {
        let frame = self.model.ready().map_or(sonosam_model::SamConfig::lite_medsam().img_size(), |m| m.manifest().config.img_size());
        match r.and_then(|l| OpenImage::decode(l.name, l.bytes, l.ground_truth, frame)) {
            Ok(image) => {
                self.image = Some(Rc::new(image));
                self.embedded = false;
                self.report = None; // a report is of the image it was made on
                self.doc = Rc::default();
                self.frame_docs.clear();
                self.decodes.reset();
                self.history.clear();
                self.hover.clear();
                self.status.clear();
                self.error = None;
                self.latency.decoder_ms = None;
                self.settings = Rc::new(Settings { zoom: 0.0, ..(*self.settings).clone() });
                self.start_embedding(ctx);
            }
            Err(e) => self.error = Some(e),
        }
    }

    /// Show frame `n` of the open DICOM file; each frame keeps its own lesions.
    fn show_frame(&mut self, ctx: &Context<Self>, n: u32) {
        let Some(image) = self.image.clone() else { return };
        let Some(d) = image.dicom.as_ref().filter(|d| d.frame != n) else { return };
        match OpenImage::dicom_frame(image.name.clone(), d.file.clone(), n, image.geometry.frame) {
            Ok(next) => {
                self.frame_docs.insert(d.frame, self.doc.clone());
                self.doc = self.frame_docs.remove(&n).unwrap_or_default();
                self.decodes.reset(); // answers for the other frame's lesions are dropped
                self.history.clear();
                self.hover.clear();
                self.image = Some(Rc::new(next));
                self.embedded = false;
                self.report = None;
                self.start_embedding(ctx);
            }
            Err(e) => self.error = Some(e),
        }
    }

    fn start_embedding(&mut self, ctx: &Context<Self>) {
        let (Some(model), Some(image)) = (self.model.ready().cloned(), self.image.clone()) else { return };
        if self.embedded {
            return;
        }
        let server = self.companion.server_for(&model.manifest().model);
        self.status = if server.is_some() { "asking the companion server…" } else { "preparing the image…" }.into();
        self.busy_since = Some(now_ms());
        ctx.link().send_future(tasks::embed(model, image, server, self.progress_reporter(ctx)));
    }

    fn embedded(&mut self, ctx: &Context<Self>, sha256: &str, r: Result<String, String>) -> bool {
        if self.image.as_ref().is_none_or(|i| i.sha256 != sha256) {
            return false; // another image was opened meanwhile
        }
        self.busy_since = None;
        match r {
            Ok(how) => {
                self.embedded = true;
                self.status = how;
                self.decode_all(ctx);
            }
            Err(e) => self.error = Some(format!("cannot compute the embedding: {e}")),
        }
        true
    }

    fn companion_answered(&mut self, url: String, r: Result<Companion, String>) {
        if let Err(e) = self.companion.answered(&url, r) {
            self.error = Some(e);
        }
    }

    fn use_server(&mut self, ctx: &Context<Self>, on: bool) {
        if let Some(url) = self.companion.use_server(on) {
            ctx.link().send_future(tasks::probe_companion(url));
        }
    }

    fn server_url(&mut self, ctx: &Context<Self>, url: String) {
        if let Some(url) = self.companion.set_url(url) {
            ctx.link().send_future(tasks::probe_companion(url));
        }
    }
}

/// Editing the document and decoding its prompts.
impl App {
    /// Change the document, keeping the previous one for undo.
    fn edit<R>(&mut self, f: impl FnOnce(&mut Document) -> R) -> R {
        self.history.push((*self.doc).clone());
        let mut doc = (*self.doc).clone();
        let r = f(&mut doc);
        self.doc = Rc::new(doc);
        r
    }

    fn prompt(&mut self, ctx: &Context<Self>, edit: PromptEdit) {
        self.latency.released_at = Some(now_ms());
        let index = self.edit(|d| d.apply(edit));
        self.error = None;
        self.hover.clear();
        self.request_decode(ctx, index);
    }

    fn ready_model(&self) -> Option<(Rc<Model>, Rc<OpenImage>)> {
        let model = self.model.ready()?.clone();
        let image = self.image.clone().filter(|_| self.embedded)?;
        Some((model, image))
    }

    /// Decode object `index` (after its prompts changed); answers to its older requests are
    /// dropped.
    fn request_decode(&mut self, ctx: &Context<Self>, index: usize) {
        let Some((model, image)) = self.ready_model() else { return };
        let Some(object) = self.doc.objects.get(index) else { return };
        if object.prompt.is_empty() {
            if object.segmentation.is_some() {
                let mut doc = (*self.doc).clone();
                doc.objects[index].segmentation = None;
                self.doc = Rc::new(doc);
            }
            return;
        }
        let mask_input = object.segmentation.as_ref().filter(|_| self.settings.refine).and_then(|s| s.low_res().map(<[f32]>::to_vec));
        let seq = self.decodes.request(object.id);
        let request = tasks::DecodeRequest { geometry: image.geometry, prompt: object.prompt.clone(), mask_input, multimask: self.settings.multimask };
        ctx.link().send_future(tasks::decode(model, request, seq, object.id));
    }

    fn decode_all(&mut self, ctx: &Context<Self>) {
        for i in 0..self.doc.objects.len() {
            self.request_decode(ctx, i);
        }
    }

    fn decoded(&mut self, seq: u64, object: u32, result: Result<(Segmentation, f64), String>) -> bool {
        if !self.decodes.answer(object, seq) {
            return false; // a newer request for this object is on its way
        }
        match result {
            Ok((segmentation, ms)) => {
                self.latency.decoder_ms = Some(ms);
                self.latency.decoded_release = self.latency.released_at.take();
                // Not an edit of its own: undo goes back to before the prompt.
                let mut doc = (*self.doc).clone();
                if let Some(o) = doc.objects.iter_mut().find(|o| o.id == object) {
                    o.segmentation = Some(ObjectSegmentation::new(segmentation));
                }
                self.doc = Rc::new(doc);
            }
            Err(e) => self.error = Some(e),
        }
        true
    }

    /// The pointer rests at `at` with no button down: preview a positive click there.
    fn request_hover(&mut self, ctx: &Context<Self>, at: (f64, f64)) -> bool {
        if !self.settings.hover {
            return false;
        }
        let Some((model, image)) = self.ready_model() else { return false };
        let Some(seq) = self.hover.want(at) else { return false };
        let mut prompt = self.doc.selected_object().map(|o| o.prompt.clone()).unwrap_or_default();
        prompt.points.push(sonosam_model::Point { x: at.0 as f32, y: at.1 as f32, label: PointLabel::Positive });
        let request = tasks::DecodeRequest { geometry: image.geometry, prompt, mask_input: None, multimask: false };
        ctx.link().send_future(tasks::hover(model, request, seq));
        false
    }

    fn hovered(&mut self, ctx: &Context<Self>, seq: u64, result: Result<Segmentation, String>) {
        let mask = result.ok().and_then(|s| s.masks.into_iter().next()).filter(|_| self.settings.hover);
        if let Some(next) = self.hover.answer(seq, mask) {
            self.request_hover(ctx, next);
        }
    }

    fn undo_redo(&mut self, undo: bool) -> bool {
        let mut doc = (*self.doc).clone();
        let changed = if undo { self.history.undo(&mut doc) } else { self.history.redo(&mut doc) };
        if changed {
            self.doc = Rc::new(doc);
        }
        changed
    }

    fn select(&mut self, i: usize) {
        let mut doc = (*self.doc).clone();
        doc.selected = Some(i);
        self.doc = Rc::new(doc);
    }

    fn choose(&mut self, k: usize) {
        let mut doc = (*self.doc).clone();
        if let Some(s) = doc.selected.and_then(|i| doc.objects.get_mut(i)).and_then(|o| o.segmentation.as_mut()) {
            s.choose(k);
        }
        self.doc = Rc::new(doc);
    }

    /// The canvas drew the masks: the mask of the last released prompt is visible now.
    fn drawn(&mut self) -> bool {
        let Some(t0) = self.latency.decoded_release.take() else { return false };
        self.latency.release_to_draw_ms = Some(now_ms() - t0);
        self.latency.draws += 1;
        true
    }
}

/// Settings and exports.
impl App {
    fn set(&mut self, ctx: &Context<Self>, setting: Setting) {
        let mut s = (*self.settings).clone();
        // Choosing a backend (the same one too: Retry) starts the model again.
        let restart = matches!(setting, Setting::Backend(_));
        match setting {
            Setting::Backend(b) => s.backend = b,
            Setting::Opacity(v) => s.opacity = v.clamp(0.0, 1.0),
            Setting::ToggleGroundTruth => s.show_gt = !s.show_gt,
            Setting::ToggleMultimask => s.multimask = !s.multimask,
            Setting::ToggleRefine => s.refine = !s.refine,
            Setting::ToggleHover => s.hover = !s.hover,
            Setting::ToggleShape => s.shape = !s.shape,
            Setting::ToggleImageOnly => s.image_only = !s.image_only,
            Setting::Spacing(v) => s.spacing = v,
            Setting::Ruler(r) => s.ruler = r,
            Setting::Display(d) => s.display = d,
            Setting::RulerMark(p) => s.ruler = s.ruler.pick(p),
            Setting::RulerDistance(mm) => match s.ruler.mm_per_px(&mm) {
                Ok(v) => {
                    s.spacing = format!("{v:.6}").trim_end_matches('0').to_string();
                    s.ruler = crate::state::Ruler::Off;
                }
                Err(e) => self.error = Some(e),
            },
            Setting::Zoom(f) => s.zoom = (if s.zoom > 0.0 { s.zoom } else { 1.0 } * f).clamp(MIN_ZOOM, MAX_ZOOM),
            Setting::ZoomTo(z) => s.zoom = z.clamp(MIN_ZOOM, MAX_ZOOM),
            Setting::ZoomFit => s.zoom = 0.0,
        }
        let before = std::mem::replace(&mut self.settings, Rc::new(s));
        if restart {
            self.embedded = false;
            self.start_model(ctx);
        }
        if before.multimask != self.settings.multimask
            && let Some(i) = self.doc.selected
        {
            self.request_decode(ctx, i);
        }
        if !self.settings.hover {
            self.hover.clear();
        }
    }

    fn export(&mut self, kind: ExportKind) {
        let Some(image) = &self.image else {
            self.error = Some("open an image first".into());
            return;
        };
        if let Err(e) = export::export(kind, image, &self.doc, &self.settings) {
            self.error = Some(e);
        }
    }

    fn report(&mut self, open: bool) {
        self.report = None;
        if !open {
            return;
        }
        let Some(image) = &self.image else {
            self.error = Some("open an image first".into());
            return;
        };
        self.reported = true;
        let report = report::build(image, &self.doc, &self.settings, self.model.ready().map(|m| &**m));
        match report::html(&report, image, &self.doc, &self.settings) {
            Ok(html) => {
                let stem = image.name.rsplit_once('.').map_or(image.name.as_str(), |(s, _)| s);
                // Without lesions there is nothing to put in a DICOM object.
                let deidentify = self.deidentify;
                let dicom = |segmentation| (!report.lesions.is_empty()).then(|| report::dicom(&report, image, segmentation, deidentify)).transpose();
                match (dicom(true), dicom(false)) {
                    (Ok(seg), Ok(sr)) => {
                        self.report = Some(report::ReportViewProps {
                            html: html.into(),
                            json: report.to_json().into(),
                            seg: seg.map(Rc::new),
                            sr: sr.map(Rc::new),
                            deidentify,
                            stem: stem.to_string().into(),
                        })
                    }
                    (Err(e), _) | (_, Err(e)) => self.error = Some(e),
                }
            }
            Err(e) => self.error = Some(e),
        }
    }
}
