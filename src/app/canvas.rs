//! The image canvas: the image with every lesion's mask, the ground truth and the hover
//! preview, and the prompts and calipers on top; pointer gestures on it become prompts.
//!
//! Two stacked canvases keep a drag cheap on large images: the lower one (`#image-layers`)
//! holds the image and the masks, composed from cached layers (the image, and each lesion's
//! fill and contour) and redrawn only when one of them changes; the upper one
//! (`#image-canvas`, the one that takes the pointer) holds the vector drawing — boxes,
//! points, calipers, the box being dragged — and is redrawn on every move of a drag.

use std::rc::Rc;

use sonosam_model::{Mask, Segmentation};
use wasm_bindgen::JsCast;
use web_sys::{HtmlCanvasElement, PointerEvent, WheelEvent};
use yew::prelude::*;

use super::navigation::{self, Navigation};
use super::settings::Display;
use super::{AppContext, Msg, OpenImage, Setting, Settings};
use crate::draw;
use crate::perf::Stage;
use crate::state::{Document, Gesture, Press};

/// A shared value compared by identity (not pixel by pixel).
#[derive(Clone)]
pub struct Shared<T>(pub Rc<T>);

impl<T> PartialEq for Shared<T> {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

#[derive(Properties, PartialEq)]
pub struct CanvasProps {
    /// The hover preview's mask.
    pub hover_mask: Option<Shared<Mask>>,
    /// Whether a decode is on its way.
    pub busy: bool,
}

#[function_component]
pub fn ImageCanvas(props: &CanvasProps) -> Html {
    let app = use_context::<AppContext>().expect("AppContext");
    let layers_ref = use_node_ref();
    let pointer_ref = use_node_ref();
    let gesture = use_mut_ref(Gesture::default);
    // The display when a right-drag (window/level) began.
    let display_at_press = use_mut_ref(Display::default);
    let nav = use_mut_ref(Navigation::default);
    let cache = use_mut_ref(LayerCache::default);
    {
        let (app, layers_ref, pointer_ref, gesture, cache) =
            (app.clone(), layers_ref.clone(), pointer_ref.clone(), gesture.clone(), cache.clone());
        let hover = props.hover_mask.clone().map(|h| h.0);
        use_effect(move || {
            let (Some(image), Some(layers), Some(pointer)) =
                (&app.image, layers_ref.cast::<HtmlCanvasElement>(), pointer_ref.cast::<HtmlCanvasElement>())
            else {
                return;
            };
            let view = View { image: image.clone(), doc: app.doc.clone(), settings: app.settings.clone(), hover };
            if cache.borrow_mut().draw(&layers, &view) {
                app.send.emit(Msg::Drawn);
            }
            draw_annotations(&pointer, image, &app.doc, &app.settings, gesture.borrow().rubber_band());
        });
    }
    {
        // Ctrl + wheel zooms the image, not the page: a listener that may prevent the
        // default (Yew's own wheel listeners are passive).
        let (app, pointer_ref) = (app.clone(), pointer_ref.clone());
        use_effect_with(app.image.is_some(), move |_| {
            let canvas = pointer_ref.cast::<HtmlCanvasElement>();
            let listener = canvas.clone().map(|c| {
                let options = gloo::events::EventListenerOptions::enable_prevent_default();
                gloo::events::EventListener::new_with_options(&c, "wheel", options, move |e| {
                    let (Some(canvas), Some(e)) = (canvas.as_ref(), e.dyn_ref::<WheelEvent>()) else { return };
                    if let Some(zoom) = navigation::wheel_zoom(canvas, e) {
                        e.prevent_default();
                        app.send.emit(Msg::Set(zoom));
                    }
                })
            });
            move || drop(listener)
        });
    }
    let Some(image) = app.image.clone() else {
        return html! { <div class="stage empty">{ "Drop an ultrasound image (PNG, JPEG or DICOM) here, paste one, open a file, or pick a sample — then drag a box around the lesion." }</div> };
    };
    let (w, h) = image.size();
    let redraw_annotations = {
        let (app, image, pointer_ref, gesture) = (app.clone(), image.clone(), pointer_ref.clone(), gesture.clone());
        move || {
            if let Some(canvas) = pointer_ref.cast::<HtmlCanvasElement>() {
                draw_annotations(&canvas, &image, &app.doc, &app.settings, gesture.borrow().rubber_band());
            }
        }
    };
    let onpointerdown = {
        let (app, pointer_ref, gesture, display_at_press) =
            (app.clone(), pointer_ref.clone(), gesture.clone(), display_at_press.clone());
        let (nav, redraw) = (nav.clone(), redraw_annotations.clone());
        Callback::from(move |e: PointerEvent| {
            e.prevent_default();
            let Some(at) = image_xy(&pointer_ref, &e) else { return };
            if let Some(t) = e.target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()) {
                let _ = t.set_pointer_capture(e.pointer_id());
            }
            let Some(canvas) = pointer_ref.cast::<HtmlCanvasElement>() else { return };
            if nav.borrow_mut().down(&canvas, &e) {
                // A second finger (pinch) or the middle button (pan): no box, no point.
                *gesture.borrow_mut() = Gesture::Idle;
                redraw();
                return;
            }
            if nav.borrow().pinching() {
                return;
            }
            *display_at_press.borrow_mut() = app.settings.display;
            *gesture.borrow_mut() = Gesture::down(at, screen_xy(&e), press(&e), e.time_stamp());
        })
    };
    let onpointermove = {
        let (app, pointer_ref, gesture, redraw) = (app.clone(), pointer_ref.clone(), gesture.clone(), redraw_annotations.clone());
        let nav = nav.clone();
        Callback::from(move |e: PointerEvent| {
            let Some(at) = image_xy(&pointer_ref, &e) else { return };
            if let Some(canvas) = pointer_ref.cast::<HtmlCanvasElement>() {
                let (taken, zoom) = nav.borrow_mut().move_to(&canvas, &e);
                if let Some(z) = zoom {
                    app.send.emit(Msg::Set(z));
                }
                if taken {
                    return;
                }
            }
            let dragging = gesture.borrow_mut().move_to(at, screen_xy(&e));
            let window_level = gesture.borrow().window_level();
            if let Some(offset) = window_level {
                let display = display_at_press.borrow().dragged(offset);
                app.send.emit(Msg::Set(Setting::Display(display)));
            } else if dragging {
                let _stage = Stage::start("sonosam:draw");
                redraw();
            } else if app.settings.hover {
                app.send.emit(Msg::Hover(at));
            }
        })
    };
    let onpointerup = {
        let (app, pointer_ref, gesture, redraw) = (app.clone(), pointer_ref.clone(), gesture.clone(), redraw_annotations.clone());
        let nav = nav.clone();
        Callback::from(move |e: PointerEvent| {
            if nav.borrow_mut().up(&e) {
                return;
            }
            let g = std::mem::take(&mut *gesture.borrow_mut());
            let Gesture::Down { now, .. } = g else { return };
            let at = image_xy(&pointer_ref, &e).unwrap_or(now);
            if app.settings.ruler.is_picking() {
                // Calibrating: the click marks the ruler, it is not a prompt.
                app.send.emit(Msg::Set(Setting::RulerMark(at)));
                return;
            }
            redraw(); // the dragged box goes; the prompt it makes comes with the document
            match g.release(at, e.time_stamp(), w, h) {
                Ok(Some(edit)) => app.send.emit(Msg::Prompt(edit)),
                Ok(None) => {}
                Err(why) => app.send.emit(Msg::Error(why.into())),
            }
        })
    };
    let onpointercancel = {
        let (gesture, redraw, nav) = (gesture.clone(), redraw_annotations, nav.clone());
        Callback::from(move |e: PointerEvent| {
            nav.borrow_mut().up(&e);
            *gesture.borrow_mut() = Gesture::Idle;
            redraw();
        })
    };
    let zoom = app.settings.zoom;
    // The image fills the space at its own aspect ratio (no bands), or the zoom's width.
    let zoomed = if zoom > 0.0 { format!(";width:{}px", (w as f64 * zoom).round()) } else { String::new() };
    let style = format!("--aspect:{w}/{h}{zoomed}");
    html! {
        <div class="stage" aria-busy={ props.busy.to_string() }>
            <div class={ classes!("canvas-wrap", (zoom > 0.0).then_some("zoomed")) } {style}>
                <canvas id="image-layers" ref={ layers_ref } width={ w.to_string() } height={ h.to_string() } />
                <canvas id="image-canvas" ref={ pointer_ref } width={ w.to_string() } height={ h.to_string() }
                    {onpointerdown} {onpointermove} {onpointerup} {onpointercancel}
                    oncontextmenu={ Callback::from(|e: MouseEvent| e.prevent_default()) } />
            </div>
        </div>
    }
}

/// What a pointer press makes (see [`Press`]): the right button adjusts the display or makes a
/// negative point, Alt a negative point, a finger or pen a box or point (long: negative).
fn press(e: &PointerEvent) -> Press {
    match (e.button(), e.alt_key(), e.pointer_type().as_str()) {
        (2, _, _) => Press::Secondary,
        (_, true, _) => Press::Negative,
        (_, _, "touch" | "pen") => Press::Touch,
        _ => Press::Primary,
    }
}

fn screen_xy(e: &PointerEvent) -> (f64, f64) {
    (e.client_x(), e.client_y())
}

/// The pointer's position in image pixels.
fn image_xy(canvas: &NodeRef, e: &PointerEvent) -> Option<(f64, f64)> {
    let canvas: HtmlCanvasElement = canvas.cast()?;
    let rect = canvas.get_bounding_client_rect();
    if rect.width() <= 0.0 || rect.height() <= 0.0 {
        return None;
    }
    let (x, y) = screen_xy(e);
    Some((
        (x - rect.left()) * f64::from(canvas.width()) / rect.width(),
        (y - rect.top()) * f64::from(canvas.height()) / rect.height(),
    ))
}

/// Image pixels per screen pixel (lines and labels keep their screen size when zoomed).
fn pixel_scale(canvas: &HtmlCanvasElement) -> f64 {
    let w = canvas.get_bounding_client_rect().width();
    if w > 0.0 { f64::from(canvas.width()) / w } else { 1.0 }
}

/// The vector drawing: each lesion's box, points and calipers (in mm where calibrated), and
/// the box being dragged.
fn draw_annotations(canvas: &HtmlCanvasElement, image: &OpenImage, doc: &Document, settings: &Settings, dragged: Option<[f32; 4]>) {
    let Some(ctx) = draw::context_2d(canvas) else { return };
    ctx.clear_rect(0.0, 0.0, f64::from(canvas.width()), f64::from(canvas.height()));
    let scale = pixel_scale(canvas);
    let lesions = if settings.image_only { &[][..] } else { &doc.objects[..] };
    for (i, o) in lesions.iter().enumerate() {
        let color = if doc.selected == Some(i) { "rgb(0,120,255)" } else { "rgba(0,120,255,0.5)" };
        if let Some(b) = o.prompt.bbox {
            draw::draw_box(&ctx, b, color, scale, false);
        }
        draw::draw_points(&ctx, &o.prompt, scale);
        if let Some(g) = o.segmentation.as_ref().and_then(|s| s.geometry()).filter(|_| settings.shape) {
            draw::draw_shape(&ctx, g, draw::object_color(i), scale);
        }
        if let Some((m, _)) = o.segmentation.as_ref().and_then(|s| image.measure(s, settings)) {
            draw::draw_calipers(&ctx, &m, draw::object_color(i), scale);
        }
    }
    draw::draw_ruler(&ctx, &settings.ruler.points(), scale);
    if let Some(b) = dragged {
        draw::draw_box(&ctx, b, "rgb(255,255,255)", scale, true);
    }
}

/// What the lower canvas shows.
struct View {
    image: Rc<OpenImage>,
    doc: Rc<Document>,
    settings: Rc<Settings>,
    hover: Option<Rc<Mask>>,
}

/// One lesion's mask as layers, for the answer and candidate it was made from.
struct LesionLayers {
    decoded: Rc<Segmentation>,
    chosen: usize,
    color: [u8; 3],
    fill: HtmlCanvasElement,
    contour: HtmlCanvasElement,
}

/// The lower canvas's layers, kept between draws, and what was drawn last.
#[derive(Default)]
struct LayerCache {
    image: Option<(Rc<OpenImage>, HtmlCanvasElement)>,
    truth: Option<(Rc<Mask>, HtmlCanvasElement)>,
    hover: Option<(Rc<Mask>, HtmlCanvasElement)>,
    lesions: Vec<LesionLayers>,
    /// The view drawn last (its values are compared by identity).
    drawn: Option<View>,
}

fn same<T>(a: &Option<Rc<T>>, b: &Option<Rc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Rc::ptr_eq(a, b),
        (a, b) => a.is_none() && b.is_none(),
    }
}

impl View {
    /// Whether `other` shows the same thing.
    fn same_as(&self, other: &View) -> bool {
        let lesions = |v: &View| v.doc.objects.iter().map(|o| o.segmentation.clone()).collect::<Vec<_>>();
        Rc::ptr_eq(&self.image, &other.image)
            && lesions(self) == lesions(other)
            && self.settings.opacity == other.settings.opacity
            && self.settings.show_gt == other.settings.show_gt
            && self.settings.display == other.settings.display
            && self.settings.image_only == other.settings.image_only
            && same(&self.hover, &other.hover)
    }
}

/// A cached layer for `key`, made by `make` when the cache holds another key's.
fn cached<K>(slot: &mut Option<(Rc<K>, HtmlCanvasElement)>, key: &Rc<K>, make: impl FnOnce(&K) -> Option<HtmlCanvasElement>) -> Option<HtmlCanvasElement> {
    if !slot.as_ref().is_some_and(|(k, _)| Rc::ptr_eq(k, key)) {
        *slot = make(key).map(|c| (key.clone(), c));
    }
    slot.as_ref().map(|(_, c)| c.clone())
}

impl LayerCache {
    /// Draw `view` on `canvas` unless it is what was drawn last; whether it drew.
    fn draw(&mut self, canvas: &HtmlCanvasElement, view: &View) -> bool {
        if self.drawn.as_ref().is_some_and(|d| d.same_as(view)) {
            return false;
        }
        let _stage = Stage::start("sonosam:compose");
        let Some(ctx) = draw::context_2d(canvas) else { return false };
        let (w, h) = view.image.size();
        let Some(image) = cached(&mut self.image, &view.image, |i| draw::pixel_layer(&i.rgba, w, h).ok()) else { return false };
        let alpha = view.settings.opacity;
        // Brightness / contrast / invert change what is shown only: the model's input is the
        // image as it is.
        ctx.set_filter(&view.settings.display.css_filter());
        let _ = ctx.draw_image_with_html_canvas_element(&image, 0.0, 0.0);
        ctx.set_filter("none");
        if view.settings.image_only {
            self.drawn = Some(View { image: view.image.clone(), doc: view.doc.clone(), settings: view.settings.clone(), hover: view.hover.clone() });
            return true;
        }
        self.refresh_lesions(&view.doc);
        for l in &self.lesions {
            ctx.set_global_alpha(alpha);
            let _ = ctx.draw_image_with_html_canvas_element(&l.fill, 0.0, 0.0);
            ctx.set_global_alpha(1.0);
            let _ = ctx.draw_image_with_html_canvas_element(&l.contour, 0.0, 0.0);
        }
        if let Some(hover) = &view.hover
            && let Some(layer) = cached(&mut self.hover, hover, |m| draw::mask_layer(m, [0, 255, 255], false).ok())
        {
            ctx.set_global_alpha(alpha * 0.5);
            let _ = ctx.draw_image_with_html_canvas_element(&layer, 0.0, 0.0);
        }
        if let Some(truth) = view.image.ground_truth.as_ref().filter(|_| view.settings.show_gt)
            && let Some(layer) = cached(&mut self.truth, truth, |m| draw::mask_layer(m, [0, 230, 0], true).ok())
        {
            ctx.set_global_alpha(1.0);
            let _ = ctx.draw_image_with_html_canvas_element(&layer, 0.0, 0.0);
        }
        ctx.set_global_alpha(1.0);
        self.drawn = Some(View { image: view.image.clone(), doc: view.doc.clone(), settings: view.settings.clone(), hover: view.hover.clone() });
        true
    }

    /// Layers for each lesion's chosen mask, in the document's order: kept from the last
    /// draw when its answer, candidate and colour are the same, made otherwise.
    fn refresh_lesions(&mut self, doc: &Document) {
        let mut old = std::mem::take(&mut self.lesions);
        for (i, o) in doc.objects.iter().enumerate() {
            let Some(seg) = &o.segmentation else { continue };
            let Some(mask) = seg.mask() else { continue };
            let color = draw::object_color(i);
            let kept = old.iter().position(|l| Rc::ptr_eq(&l.decoded, &seg.decoded) && l.chosen == seg.chosen() && l.color == color);
            let layers = match kept {
                Some(k) => old.swap_remove(k),
                None => match (draw::mask_layer(mask, color, false), draw::mask_layer(mask, color, true)) {
                    (Ok(fill), Ok(contour)) => LesionLayers { decoded: seg.decoded.clone(), chosen: seg.chosen(), color, fill, contour },
                    _ => continue,
                },
            };
            self.lesions.push(layers);
        }
    }
}
