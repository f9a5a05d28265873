//! Moving around a zoomed image on the canvas: two fingers pinch to zoom (and move it along),
//! the middle mouse button drags it (pan), Ctrl + wheel (a trackpad's pinch) zooms. The
//! canvas's own gestures (boxes, points, window/level) never see these: a second finger
//! cancels the first one's gesture.

use web_sys::{Element, HtmlCanvasElement, PointerEvent, WheelEvent};

use super::Setting;
use crate::state::{MAX_ZOOM, MIN_ZOOM};

/// Fingers down on the canvas, and the pinch or pan under way.
#[derive(Default)]
pub struct Navigation {
    touches: Vec<(i32, (f64, f64))>,
    pinch: Option<Pinch>,
    pan: Option<Pan>,
}

/// A pinch from its start: the fingers' distance and midpoint, the zoom and scroll then.
struct Pinch {
    distance: f64,
    mid: (f64, f64),
    zoom: f64,
    scroll: (f64, f64),
}

/// A middle-button drag from its start: where, and the scroll then.
struct Pan {
    from: (f64, f64),
    scroll: (f64, f64),
}

/// Screen pixels per image pixel as shown now (also when the image is fitted to the space).
fn shown_zoom(canvas: &HtmlCanvasElement) -> f64 {
    let width = canvas.get_bounding_client_rect().width();
    if canvas.width() == 0 { 1.0 } else { width / f64::from(canvas.width()) }
}

/// The scrolling area around the canvas.
fn stage(canvas: &HtmlCanvasElement) -> Option<Element> {
    canvas.closest(".stage").ok().flatten()
}

fn scroll_of(stage: &Element) -> (f64, f64) {
    (f64::from(stage.scroll_left()), f64::from(stage.scroll_top()))
}

fn scroll_to(canvas: &HtmlCanvasElement, (x, y): (f64, f64)) {
    if let Some(s) = stage(canvas) {
        s.set_scroll_left(x.round());
        s.set_scroll_top(y.round());
    }
}

impl Navigation {
    fn fingers(&self) -> Option<((f64, f64), (f64, f64))> {
        match self.touches.as_slice() {
            [a, b, ..] => Some((a.1, b.1)),
            _ => None,
        }
    }

    /// A pointer went down. `true` when navigation takes it (the canvas's gesture must then
    /// be dropped): a second finger, or the middle button.
    pub fn down(&mut self, canvas: &HtmlCanvasElement, e: &PointerEvent) -> bool {
        let at = (e.client_x(), e.client_y());
        let scroll = stage(canvas).map_or((0.0, 0.0), |s| scroll_of(&s));
        if e.pointer_type() == "touch" {
            self.touches.retain(|t| t.0 != e.pointer_id());
            self.touches.push((e.pointer_id(), at));
            if let Some((a, b)) = self.fingers() {
                let distance = (a.0 - b.0).hypot(a.1 - b.1).max(1.0);
                let mid = ((a.0 + b.0) / 2.0, (a.1 + b.1) / 2.0);
                self.pinch = Some(Pinch { distance, mid, zoom: shown_zoom(canvas), scroll });
                return true;
            }
        }
        if e.button() == 1 {
            self.pan = Some(Pan { from: at, scroll });
            return true;
        }
        false
    }

    /// A pointer moved: the zoom to set when a pinch changed it. `None` and `false` when this
    /// move is not navigation's (the canvas's gesture then takes it).
    pub fn move_to(&mut self, canvas: &HtmlCanvasElement, e: &PointerEvent) -> (bool, Option<Setting>) {
        let at = (e.client_x(), e.client_y());
        if let Some(t) = self.touches.iter_mut().find(|t| t.0 == e.pointer_id()) {
            t.1 = at;
        }
        if let (Some(p), Some((a, b))) = (&self.pinch, self.fingers()) {
            let zoom = (p.zoom * (a.0 - b.0).hypot(a.1 - b.1) / p.distance).clamp(MIN_ZOOM, MAX_ZOOM);
            let mid = ((a.0 + b.0) / 2.0, (a.1 + b.1) / 2.0);
            // The image point under the fingers' first midpoint stays under their midpoint.
            let k = zoom / p.zoom;
            let origin = stage(canvas).map(|s| s.get_bounding_client_rect()).map_or((0.0, 0.0), |r| (r.left(), r.top()));
            let (x0, y0) = (p.scroll.0 + p.mid.0 - origin.0, p.scroll.1 + p.mid.1 - origin.1);
            scroll_to(canvas, (x0 * k - (mid.0 - origin.0), y0 * k - (mid.1 - origin.1)));
            return (true, Some(Setting::ZoomTo(zoom)));
        }
        if let Some(p) = &self.pan {
            scroll_to(canvas, (p.scroll.0 - (at.0 - p.from.0), p.scroll.1 - (at.1 - p.from.1)));
            return (true, None);
        }
        (false, None)
    }

    /// A pointer went up or was cancelled: `true` when it was navigation's.
    pub fn up(&mut self, e: &PointerEvent) -> bool {
        self.touches.retain(|t| t.0 != e.pointer_id());
        let pinching = self.pinch.is_some();
        if self.touches.len() < 2 {
            self.pinch = None;
        }
        if self.pan.is_some() && e.button() == 1 {
            self.pan = None;
            return true;
        }
        // The fingers of a pinch make no prompt, the first one up included.
        pinching
    }

    /// Whether a pinch holds the canvas (the remaining finger of one makes no gesture).
    pub fn pinching(&self) -> bool {
        self.pinch.is_some()
    }
}

/// Ctrl + wheel (and a trackpad's pinch, which the browser sends as one): zoom by the wheel's
/// amount. `None` for a plain wheel, which scrolls.
pub fn wheel_zoom(canvas: &HtmlCanvasElement, e: &WheelEvent) -> Option<Setting> {
    if !e.ctrl_key() {
        return None;
    }
    let factor = (-e.delta_y() / 300.0).exp2();
    Some(Setting::ZoomTo((shown_zoom(canvas) * factor).clamp(MIN_ZOOM, MAX_ZOOM)))
}
