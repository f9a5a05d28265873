//! The settings panel: mask opacity, ground truth (with Dice against it), decoding options
//! (multimask, refine, hover preview), the decoder in use, where embeddings come from,
//! calibration and zoom.

use sonosam_model::backend::BackendKind;
use web_sys::HtmlInputElement;
use yew::prelude::*;

use super::tasks::CompanionChoice;
use super::{AppContext, Msg, Setting};

/// The user's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Backend asked for; `None`: automatic.
    pub backend: Option<BackendKind>,
    /// Mask fill opacity, 0–1.
    pub opacity: f64,
    pub show_gt: bool,
    /// Three candidate masks per prompt.
    pub multimask: bool,
    /// Feed the previous mask back as the mask prompt.
    pub refine: bool,
    /// Preview the mask of a click at the resting pointer.
    pub hover: bool,
    /// Draw each lesion's fitted ellipse and convex hull.
    pub shape: bool,
    /// Manual calibration on the depth ruler, while it is under way.
    pub ruler: crate::state::Ruler,
    /// How the image is shown (not what the model sees).
    pub display: Display,
    /// Show the image alone: no masks, prompts, calipers or outlines.
    pub image_only: bool,
    /// Pixel spacing as typed (mm per pixel).
    pub spacing: String,
    /// Screen pixels per image pixel; 0: fit the image to the space.
    pub zoom: f64,
}

/// The image's display, as on an ultrasound console: brightness and contrast (1 = as it is)
/// and inversion. Only the display: the model always gets the image itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Display {
    pub brightness: f64,
    pub contrast: f64,
    pub invert: bool,
}

impl Default for Display {
    fn default() -> Self {
        Self { brightness: 1.0, contrast: 1.0, invert: false }
    }
}

impl Display {
    /// This display after a window/level drag of `offset` screen pixels (a right-drag on the
    /// image; see [`crate::state::window_level`]).
    pub fn dragged(self, offset: (f64, f64)) -> Display {
        let (brightness, contrast) = crate::state::window_level(self.brightness, self.contrast, offset);
        Display { brightness, contrast, ..self }
    }

    /// The canvas filter that shows it.
    pub fn css_filter(&self) -> String {
        if *self == Display::default() {
            return "none".into();
        }
        format!("brightness({}) contrast({}) invert({})", self.brightness, self.contrast, u8::from(self.invert))
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            backend: None,
            opacity: 0.45,
            show_gt: false,
            multimask: false,
            refine: false,
            hover: false,
            shape: false,
            ruler: Default::default(),
            display: Display::default(),
            image_only: false,
            spacing: String::new(),
            zoom: 0.0,
        }
    }
}

impl Settings {
    /// The pixel spacing, when it is a positive number.
    pub fn mm_per_px(&self) -> Option<f64> {
        self.spacing.trim().parse::<f64>().ok().filter(|v| *v > 0.0 && v.is_finite())
    }
}

/// A callback, for any event, that changes a setting.
fn set<E: 'static>(send: &Callback<Msg>, setting: fn() -> Setting) -> Callback<E> {
    send.reform(move |_| Msg::Set(setting()))
}

#[derive(Properties, PartialEq)]
pub struct SettingsProps {
    pub companion: CompanionChoice,
}

#[function_component]
pub fn SettingsPanel(props: &SettingsProps) -> Html {
    let app = use_context::<AppContext>().expect("AppContext");
    let s = &app.settings;
    let opacity = app.send.reform(|e: InputEvent| Msg::Set(Setting::Opacity(e.target_unchecked_into::<HtmlInputElement>().value_as_number())));
    let spacing = app.send.reform(|e: InputEvent| Msg::Set(Setting::Spacing(e.target_unchecked_into::<HtmlInputElement>().value())));
    let truth = app.image.as_ref().and_then(|i| i.ground_truth.clone().map(|gt| (i.size(), gt)));
    let dice = truth.as_ref().filter(|_| s.show_gt).map(|((w, h), gt)| {
        let text = match app.doc.has_masks() {
            true => app.doc.union_mask(*w, *h).dice(gt).map(|d| format!("Dice vs ground truth: {d:.4}")).unwrap_or_default(),
            false => "Dice: segment a lesion first".into(),
        };
        html! { <div id="dice">{ text }</div> }
    });
    html! {
        <div class="settings">
            <label>{ "Opacity " }<input id="opacity" type="range" min="0" max="1" step="0.05" value={ s.opacity.to_string() } oninput={ opacity } /></label>
            <label><input type="checkbox" id="multimask" checked={ s.multimask } onchange={ set(&app.send, || Setting::ToggleMultimask) } />{ " multimask (3 candidates)" }</label>
            <label><input type="checkbox" id="refine" checked={ s.refine } onchange={ set(&app.send, || Setting::ToggleRefine) } />{ " refine with the previous mask" }</label>
            <label><input type="checkbox" id="hover" checked={ s.hover } onchange={ set(&app.send, || Setting::ToggleHover) } />{ " hover preview" }</label>
            <label><input type="checkbox" id="show-shape" checked={ s.shape } onchange={ set(&app.send, || Setting::ToggleShape) } />{ " fitted ellipse and convex hull" }</label>
            <label><input type="checkbox" id="image-only" checked={ s.image_only } onchange={ set(&app.send, || Setting::ToggleImageOnly) } />{ " image only (hide all overlays)" }</label>
            <label><input type="checkbox" id="show-gt" disabled={ truth.is_none() } checked={ s.show_gt } onchange={ set(&app.send, || Setting::ToggleGroundTruth) } />{ " ground truth" }</label>
            { dice }
            <DecoderChoice />
            <EmbeddingSource companion={ props.companion.clone() } />
            <label>{ "Pixel spacing (mm/px) " }<input id="spacing" type="text" inputmode="decimal" placeholder="e.g. 0.1" value={ s.spacing.clone() } oninput={ spacing } /></label>
            <RulerCalibration />
            <DisplayControls />
            <div class="zoom">
                <button onclick={ set(&app.send, || Setting::Zoom(0.8)) }>{ "−" }</button>
                <button onclick={ set(&app.send, || Setting::ZoomFit) }>{ "fit" }</button>
                <button onclick={ set(&app.send, || Setting::Zoom(1.25)) }>{ "+" }</button>
            </div>
        </div>
    }
}

/// The decoder in use: the model's own, or a fine-tuned file (`sonosam finetune` writes them).
#[function_component]
fn DecoderChoice() -> Html {
    let app = use_context::<AppContext>().expect("AppContext");
    let name = app.model.ready().map(|m| m.decoder_name()).unwrap_or_default();
    let file = app.send.reform(|e: Event| {
        let input: HtmlInputElement = e.target_unchecked_into();
        Msg::DecoderFile(input.files().and_then(|l| l.get(0)))
    });
    html! {
        <fieldset class="decoder">
            <legend>{ "Decoder" }</legend>
            <span id="decoder-name">{ name }</span>
            <button id="decoder-base" onclick={ app.send.reform(|_| Msg::DecoderFile(None)) }>{ "base" }</button>
            <label class="file">{ " fine-tuned… " }<input id="decoder-file" type="file" accept=".safetensors" onchange={ file } /></label>
        </fieldset>
    }
}

#[derive(Properties, PartialEq)]
struct SourceProps {
    companion: CompanionChoice,
}

/// Where embeddings come from: this browser or a companion server (`sonosam serve`).
#[function_component]
fn EmbeddingSource(props: &SourceProps) -> Html {
    let app = use_context::<AppContext>().expect("AppContext");
    let c = &props.companion;
    let url = app.send.reform(|e: Event| Msg::ServerUrl(e.target_unchecked_into::<HtmlInputElement>().value()));
    let server = c.server.as_ref().filter(|_| c.use_server).map(|s| {
        let at = if s.url.is_empty() { "this page's" } else { s.url.as_str() };
        html! { <div class="status" id="server-status">{ format!("server: {at} ({})", s.model) }</div> }
    });
    html! {
        <fieldset class="source">
            <legend>{ "Embeddings from" }</legend>
            <label><input type="radio" name="source" id="source-browser" checked={ !c.use_server } onchange={ app.send.reform(|_| Msg::UseServer(false)) } />{ " this browser" }</label>
            <label><input type="radio" name="source" id="source-server" checked={ c.use_server } onchange={ app.send.reform(|_| Msg::UseServer(true)) } />{ " companion server " }</label>
            <input id="server-url" type="url" placeholder="this page's server, or http://host:8080" value={ c.url.clone() } onchange={ url } />
            { server }
        </fieldset>
    }
}

/// Manual calibration: two marks picked on the image's depth ruler and their distance typed
/// give the pixel spacing (its source then shows as "manual").
#[function_component]
fn RulerCalibration() -> Html {
    let app = use_context::<AppContext>().expect("AppContext");
    let mm = use_state(String::new);
    let ruler = &app.settings.ruler;
    let cancel = set(&app.send, || Setting::Ruler(crate::state::Ruler::Off));
    let body = match ruler {
        crate::state::Ruler::Off => html! {
            <button id="ruler-start" disabled={ app.image.is_none() } title="For images without a scale: click two marks on the depth ruler and type their distance"
                onclick={ set(&app.send, || Setting::Ruler(crate::state::Ruler::start())) }>{ "Calibrate on the ruler" }</button>
        },
        crate::state::Ruler::Picking(_) => html! {
            <><span id="ruler-hint" role="status">{ ruler.hint() }</span><button id="ruler-cancel" onclick={ cancel }>{ "Cancel" }</button></>
        },
        crate::state::Ruler::Picked(_) => {
            let oninput = { let mm = mm.clone(); Callback::from(move |e: InputEvent| mm.set(e.target_unchecked_into::<HtmlInputElement>().value())) };
            let value = (*mm).clone();
            html! {
                <>
                    <label>{ "distance (mm) " }<input id="ruler-mm" type="text" inputmode="decimal" size="6" value={ value.clone() } {oninput} /></label>
                    <button id="ruler-set" onclick={ app.send.reform(move |_| Msg::Set(Setting::RulerDistance(value.clone()))) }>{ "Set" }</button>
                    <button id="ruler-cancel" onclick={ cancel }>{ "Cancel" }</button>
                </>
            }
        }
    };
    html! { <div class="ruler">{ body }</div> }
}

/// Brightness, contrast, invert and reset of the image's display.
#[function_component]
fn DisplayControls() -> Html {
    let app = use_context::<AppContext>().expect("AppContext");
    let d = app.settings.display;
    let slider = |id: &'static str, label: &'static str, value: f64, make: fn(Display, f64) -> Display| {
        let onchange = app.send.reform(move |e: InputEvent| {
            let v = e.target_unchecked_into::<HtmlInputElement>().value_as_number();
            Msg::Set(Setting::Display(make(d, v)))
        });
        html! { <label>{ label }<input {id} type="range" min="0.2" max="3" step="0.05" value={ value.to_string() } oninput={ onchange } /></label> }
    };
    html! {
        <fieldset class="display" title="Changes what you see, never what the model segments">
            <legend>{ "Display (not the model's input)" }</legend>
            { slider("brightness", "brightness ", d.brightness, |d, v| Display { brightness: v, ..d }) }
            { slider("contrast", "contrast ", d.contrast, |d, v| Display { contrast: v, ..d }) }
            <label><input id="invert" type="checkbox" checked={ d.invert }
                onchange={ app.send.reform(move |_| Msg::Set(Setting::Display(Display { invert: !d.invert, ..d }))) } />{ " invert" }</label>
            <button id="display-reset" onclick={ app.send.reform(|_| Msg::Set(Setting::Display(Display::default()))) }>{ "reset" }</button>
        </fieldset>
    }
}
