//! The app's state, independent of the browser so it is unit-tested natively: the document
//! (lesions with their prompts and segmentations, the selection, undo/redo, the exports built
//! from them), the pointer gesture that makes prompts, and the sequencing of decode and hover
//! requests.

use std::rc::Rc;

use sonosam_model::export::{ExportObject, coco_json};
use sonosam_model::measure::descriptors::{ShapeGeometry, shape_geometry};
use sonosam_model::measure::{Measurements, measure};
use sonosam_model::{Mask, Point, PointLabel, Prompt, Segmentation};

/// Most undo steps kept.
pub const HISTORY_LIMIT: usize = 100;

/// The decoder's answer for one object's prompt, and which candidate the user keeps.
#[derive(Debug, Clone)]
pub struct ObjectSegmentation {
    /// Candidate masks (1, or 3 in multimask mode) with their predicted IoU and low-res logits
    /// (fed back as the mask prompt when refining); shared, so that undo snapshots and the
    /// canvas's layer cache do not copy masks.
    pub decoded: Rc<Segmentation>,
    /// The candidate shown and exported.
    chosen: usize,
    /// Measurements of the chosen mask in pixels, computed once (drawing happens on every
    /// pointer move).
    measurements: Option<Measurements>,
    /// Its fitted ellipse and convex hull in pixels, computed once.
    geometry: Option<Rc<ShapeGeometry>>,
}

/// The same answer (by identity: masks are not compared pixel by pixel) and the same choice.
impl PartialEq for ObjectSegmentation {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.decoded, &other.decoded) && self.chosen == other.chosen
    }
}

impl ObjectSegmentation {
    /// Keep the decoder's answer, choosing the candidate with the best predicted IoU.
    pub fn new(decoded: Segmentation) -> Self {
        let mut s = Self { decoded: Rc::new(decoded), chosen: 0, measurements: None, geometry: None };
        s.choose(s.decoded.best());
        s
    }
    /// Show and export candidate `k` (ignored when there is no such candidate).
    pub fn choose(&mut self, k: usize) {
        if let Some(m) = self.decoded.masks.get(k) {
            self.chosen = k;
            self.measurements = measure(m, None);
            self.geometry = shape_geometry(m).map(Rc::new);
        }
    }
    pub fn chosen(&self) -> usize {
        self.chosen
    }
    /// Measurements of the chosen mask, in mm too when `mm_per_px` is given.
    pub fn measurements(&self, mm_per_px: Option<f64>) -> Option<Measurements> {
        self.measurements.map(|m| Measurements { mm_per_px, ..m })
    }
    pub fn mask(&self) -> Option<&Mask> {
        self.decoded.masks.get(self.chosen)
    }
    /// The chosen mask's fitted ellipse and convex hull (pixels), when it is measurable.
    pub fn geometry(&self) -> Option<&ShapeGeometry> {
        self.geometry.as_deref()
    }
    pub fn score(&self) -> f32 {
        self.decoded.iou.get(self.chosen).copied().unwrap_or(0.0)
    }
    /// Low-res logits of the chosen candidate.
    pub fn low_res(&self) -> Option<&[f32]> {
        self.decoded.low_res.get(self.chosen).map(Vec::as_slice)
    }
}

/// One lesion: its prompts in original-image pixels and its segmentation.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub id: u32,
    pub prompt: Prompt,
    pub segmentation: Option<ObjectSegmentation>,
}

impl Object {
    pub fn name(&self) -> String {
        format!("lesion {}", self.id)
    }
}

/// Everything the user made on one image; what undo/redo restores.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Document {
    pub objects: Vec<Object>,
    pub selected: Option<usize>,
    next_id: u32,
}

impl Document {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an empty object and select it; returns its index.
    pub fn add_object(&mut self) -> usize {
        self.next_id += 1;
        self.objects.push(Object {
            id: self.next_id,
            prompt: Prompt::default(),
            segmentation: None,
        });
        self.selected = Some(self.objects.len() - 1);
        self.objects.len() - 1
    }

    /// The selected object, creating one when there is none.
    pub fn selected_or_new(&mut self) -> usize {
        match self.selected {
            Some(i) if i < self.objects.len() => i,
            _ => self.add_object(),
        }
    }

    pub fn selected_object(&self) -> Option<&Object> {
        self.selected.and_then(|i| self.objects.get(i))
    }

    /// Delete object `i`; the selection moves to its neighbour.
    pub fn delete(&mut self, i: usize) {
        if i < self.objects.len() {
            self.objects.remove(i);
            self.selected = if self.objects.is_empty() {
                None
            } else {
                Some(i.min(self.objects.len() - 1))
            };
        }
    }

    /// Set the box of the selected object (a new object when none is selected).
    pub fn set_box(&mut self, b: [f32; 4]) -> usize {
        let i = self.selected_or_new();
        self.objects[i].prompt.bbox = Some(b);
        i
    }

    /// Add a point to the selected object.
    pub fn add_point(&mut self, x: f32, y: f32, label: PointLabel) -> usize {
        let i = self.selected_or_new();
        self.objects[i].prompt.points.push(Point { x, y, label });
        i
    }

    /// Union of every object's chosen mask (masks of another size are left out).
    pub fn union_mask(&self, width: usize, height: usize) -> Mask {
        let mut out = Mask::new(width, height);
        for m in self.objects.iter().filter_map(|o| o.segmentation.as_ref()?.mask()) {
            let _ = out.union_with(m);
        }
        out
    }

    /// Whether any object has a mask.
    pub fn has_masks(&self) -> bool {
        self.objects.iter().any(|o| o.segmentation.is_some())
    }

    /// Apply a prompt edit to the selected object (a new one when none is selected); returns
    /// the edited object's index.
    pub fn apply(&mut self, edit: PromptEdit) -> usize {
        match edit {
            PromptEdit::Box(b) => self.set_box(b),
            PromptEdit::Point { x, y, label } => self.add_point(x, y, label),
        }
    }

    /// Measurements of each object (in object order; `None` for empty masks).
    pub fn measurements(&self, mm_per_px: Option<f64>) -> Vec<Option<Measurements>> {
        self.objects
            .iter()
            .map(|o| o.segmentation.as_ref()?.measurements(mm_per_px))
            .collect()
    }

    /// The COCO-style JSON export (pretty-printed), every measurement at `mm_per_px`.
    pub fn coco(&self, file_name: &str, width: usize, height: usize, mm_per_px: Option<f64>) -> String {
        self.coco_calibrated(file_name, width, height, |_| (mm_per_px, None))
    }

    /// The COCO-style JSON export, each lesion's measurements calibrated by `calibrate` (from
    /// its pixel measurements: mm per pixel, and the calibration to record with them).
    pub fn coco_calibrated(
        &self,
        file_name: &str,
        width: usize,
        height: usize,
        calibrate: impl Fn(&Measurements) -> (Option<f64>, Option<serde_json::Value>),
    ) -> String {
        let objects: Vec<ExportObject> = self
            .objects
            .iter()
            .filter_map(|o| {
                let seg = o.segmentation.as_ref()?;
                let px = seg.measurements(None);
                let (mm_per_px, calibration) = px.as_ref().map_or((None, None), &calibrate);
                Some(ExportObject {
                    name: o.name(),
                    mask: seg.mask()?,
                    score: seg.score(),
                    measurements: px.map(|m| Measurements { mm_per_px, ..m }),
                    calibration,
                })
            })
            .collect();
        serde_json::to_string_pretty(&coco_json(file_name, width, height, &objects))
            .unwrap_or_default()
    }
}

/// Undo/redo over document snapshots.
#[derive(Debug, Default)]
pub struct History {
    undo: Vec<Document>,
    redo: Vec<Document>,
}

impl History {
    /// Record `before` (the document before an edit).
    pub fn push(&mut self, before: Document) {
        self.undo.push(before);
        if self.undo.len() > HISTORY_LIMIT {
            self.undo.remove(0);
        }
        self.redo.clear();
    }

    pub fn undo(&mut self, current: &mut Document) -> bool {
        match self.undo.pop() {
            Some(prev) => {
                self.redo.push(std::mem::replace(current, prev));
                true
            }
            None => false,
        }
    }

    pub fn redo(&mut self, current: &mut Document) -> bool {
        match self.redo.pop() {
            Some(next) => {
                self.undo.push(std::mem::replace(current, next));
                true
            }
            None => false,
        }
    }

    pub fn clear(&mut self) {
        self.undo.clear();
        self.redo.clear();
    }

    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }
    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }
}

/// A pointer gesture on the image: a drag longer than this (in screen pixels) is a box,
/// anything shorter a click.
pub const DRAG_THRESHOLD_PX: f64 = 4.0;

/// Normalise two corners to `[x0, y0, x1, y1]`.
pub fn corners_to_box(a: (f64, f64), b: (f64, f64)) -> [f32; 4] {
    [
        a.0.min(b.0) as f32,
        a.1.min(b.1) as f32,
        a.0.max(b.0) as f32,
        a.1.max(b.1) as f32,
    ]
}

/// A change of one object's prompt, in original-image pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PromptEdit {
    /// The object's box `[x0, y0, x1, y1]` (replaces the previous one).
    Box([f32; 4]),
    /// One more point.
    Point { x: f32, y: f32, label: PointLabel },
}

/// The zoom's range, in screen pixels per image pixel.
pub const MIN_ZOOM: f64 = 0.1;
pub const MAX_ZOOM: f64 = 16.0;

/// How long a touch or pen must rest without moving to make a negative point (the touch
/// screen's right click).
pub const LONG_PRESS_MS: f64 = 500.0;

/// Screen pixels of a right-drag that double or halve the contrast (horizontally) or the
/// brightness (vertically), as a console's window/level drag.
pub const WINDOW_LEVEL_PX: f64 = 200.0;

/// What pressed on the image, which decides what a click or a drag makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Press {
    /// The mouse's main button: a drag is a box, a click a positive point.
    #[default]
    Primary,
    /// A finger or a pen: as the main button, and a long press ([`LONG_PRESS_MS`]) is a
    /// negative point.
    Touch,
    /// Alt + the main button: a negative point where released, even after a drag.
    Negative,
    /// The right button: a click is a negative point, a drag adjusts the display
    /// (window/level: contrast across, brightness up and down).
    Secondary,
}

/// The pointer gesture on the image, from button down to release: a drag makes a box (or,
/// with the right button, adjusts the display), a click a point (positive; negative with the
/// right button, Alt, or a long touch). Positions are image pixels; `screen` positions decide
/// what counts as a drag; times are milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Gesture {
    #[default]
    Idle,
    Down {
        start: (f64, f64),
        screen: (f64, f64),
        now: (f64, f64),
        now_screen: (f64, f64),
        press: Press,
        moved: bool,
        since_ms: f64,
    },
}

impl Gesture {
    /// `press` went down at image position `at` (screen position `screen`) at `time_ms`.
    pub fn down(at: (f64, f64), screen: (f64, f64), press: Press, time_ms: f64) -> Self {
        Gesture::Down { start: at, screen, now: at, now_screen: screen, press, moved: false, since_ms: time_ms }
    }

    /// The pointer moved while pressed; `false` when no button is down (a hover).
    pub fn move_to(&mut self, at: (f64, f64), screen: (f64, f64)) -> bool {
        match self {
            Gesture::Down { screen: s0, now, now_screen, moved, .. } => {
                *now = at;
                *now_screen = screen;
                *moved |= (screen.0 - s0.0).hypot(screen.1 - s0.1) > DRAG_THRESHOLD_PX;
                true
            }
            Gesture::Idle => false,
        }
    }

    /// The box being dragged, to draw while the button is down.
    pub fn rubber_band(&self) -> Option<[f32; 4]> {
        match *self {
            Gesture::Down { start, now, moved: true, press: Press::Primary | Press::Touch, .. } => {
                Some(corners_to_box(start, now))
            }
            _ => None,
        }
    }

    /// A right-drag under way: how far it went on the screen since the button went down.
    pub fn window_level(&self) -> Option<(f64, f64)> {
        match *self {
            Gesture::Down { screen, now_screen, moved: true, press: Press::Secondary, .. } => {
                Some((now_screen.0 - screen.0, now_screen.1 - screen.1))
            }
            _ => None,
        }
    }

    /// The button was released at `at` at `time_ms` on an image of `width × height`: the
    /// prompt edit it makes, `Ok(None)` for no edit (no gesture, a display drag, a click
    /// outside the image), or an error for a box entirely outside the image. A box is clipped
    /// to the image.
    pub fn release(
        self,
        at: (f64, f64),
        time_ms: f64,
        width: usize,
        height: usize,
    ) -> Result<Option<PromptEdit>, &'static str> {
        let Gesture::Down { start, press, moved, since_ms, .. } = self else { return Ok(None) };
        let (w, h) = (width as f64, height as f64);
        match (press, moved) {
            (Press::Primary | Press::Touch, true) => {
                let b = corners_to_box(start, at);
                let b = [b[0].max(0.0), b[1].max(0.0), b[2].min(w as f32 - 1.0), b[3].min(h as f32 - 1.0)];
                if b[2] <= b[0] || b[3] <= b[1] {
                    return Err("the box lies outside the image");
                }
                return Ok(Some(PromptEdit::Box(b)));
            }
            (Press::Secondary, true) => return Ok(None),
            _ => {}
        }
        if at.0 < 0.0 || at.1 < 0.0 || at.0 > w - 1.0 || at.1 > h - 1.0 {
            return Ok(None);
        }
        let long = press == Press::Touch && time_ms - since_ms >= LONG_PRESS_MS;
        let label = match press {
            Press::Negative | Press::Secondary => PointLabel::Negative,
            Press::Touch if long => PointLabel::Negative,
            Press::Primary | Press::Touch => PointLabel::Positive,
        };
        Ok(Some(PromptEdit::Point { x: at.0 as f32, y: at.1 as f32, label }))
    }
}

/// Brightness and contrast after a window/level drag of `(dx, dy)` screen pixels from
/// `(brightness, contrast)`: right raises the contrast, up the brightness, each doubling per
/// [`WINDOW_LEVEL_PX`]; both kept within the sliders' range, 0.2–3.
pub fn window_level(brightness: f64, contrast: f64, (dx, dy): (f64, f64)) -> (f64, f64) {
    let scale = |v: f64, d: f64| (v * (d / WINDOW_LEVEL_PX).exp2()).clamp(0.2, 3.0);
    (scale(brightness, -dy), scale(contrast, dx))
}

/// Latest-wins sequencing of decode requests: for each object only the answer to its newest
/// request is kept (the user moved on since the older ones were sent).
#[derive(Debug, Default)]
pub struct DecodeSequencer {
    next: u64,
    /// Newest request per object id.
    latest: Vec<(u32, u64)>,
    in_flight: usize,
}

impl DecodeSequencer {
    /// A new request for `object`: its sequence number.
    pub fn request(&mut self, object: u32) -> u64 {
        self.next += 1;
        self.latest.retain(|(o, _)| *o != object);
        self.latest.push((object, self.next));
        self.in_flight += 1;
        self.next
    }

    /// The answer to request `seq` for `object` arrived: whether it is the newest (to keep).
    pub fn answer(&mut self, object: u32, seq: u64) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.latest.contains(&(object, seq))
    }

    /// Requests sent and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Forget every request (the model stopped: their answers will not come).
    pub fn reset(&mut self) {
        self.latest.clear();
        self.in_flight = 0;
    }
}

/// The hover preview: the mask a positive click at the resting pointer would give. At most one
/// request is in flight; moves meanwhile keep only the latest position, asked for next.
#[derive(Debug, Default)]
pub struct HoverPreview {
    seq: u64,
    busy: bool,
    pending: Option<(f64, f64)>,
    /// The latest preview's mask.
    pub mask: Option<Rc<Mask>>,
}

impl HoverPreview {
    /// The pointer rests at `at`: the sequence number of a request to send now, or `None`
    /// when one is in flight (then `at` is asked for once it answers).
    pub fn want(&mut self, at: (f64, f64)) -> Option<u64> {
        if self.busy {
            self.pending = Some(at);
            return None;
        }
        self.busy = true;
        self.seq += 1;
        Some(self.seq)
    }

    /// The answer to request `seq`: shown when it is the newest. Returns the position to ask
    /// for next, if the pointer moved meanwhile.
    pub fn answer(&mut self, seq: u64, mask: Option<Mask>) -> Option<(f64, f64)> {
        self.busy = false;
        if seq == self.seq {
            self.mask = mask.map(Rc::new);
        }
        self.pending.take()
    }

    /// Hide the preview; an answer on its way is dropped.
    pub fn clear(&mut self) {
        self.seq += 1;
        self.pending = None;
        self.mask = None;
    }

    /// Forget a request that will not be answered (the model stopped).
    pub fn reset(&mut self) {
        self.clear();
        self.busy = false;
    }
}

/// Manual calibration on the image's depth ruler (for screenshots and files without a scale):
/// the user picks two points on the ruler, then types their distance in mm.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Ruler {
    #[default]
    Off,
    /// Points picked so far (0 or 1), in image pixels.
    Picking(Vec<(f64, f64)>),
    /// Both points picked: waiting for their distance.
    Picked([(f64, f64); 2]),
}

impl Ruler {
    /// Start picking.
    pub fn start() -> Self {
        Ruler::Picking(Vec::new())
    }

    /// Pick a point (only while picking).
    pub fn pick(&self, p: (f64, f64)) -> Self {
        match self {
            Ruler::Picking(v) if v.is_empty() => Ruler::Picking(vec![p]),
            Ruler::Picking(v) => Ruler::Picked([v[0], p]),
            other => other.clone(),
        }
    }

    pub fn is_picking(&self) -> bool {
        matches!(self, Ruler::Picking(_))
    }

    /// The points picked, for drawing.
    pub fn points(&self) -> Vec<(f64, f64)> {
        match self {
            Ruler::Off => Vec::new(),
            Ruler::Picking(v) => v.clone(),
            Ruler::Picked(p) => p.to_vec(),
        }
    }

    /// What the user should do next.
    pub fn hint(&self) -> &'static str {
        match self {
            Ruler::Picking(v) if v.is_empty() => "click a mark on the depth ruler",
            Ruler::Picking(_) => "click a second mark on the ruler, as far from the first as you can",
            Ruler::Picked(_) => "type the distance between the two marks",
            Ruler::Off => "",
        }
    }

    /// Millimetres per pixel when the picked points are `mm` (as typed) apart.
    pub fn mm_per_px(&self, mm: &str) -> Result<f64, String> {
        let Ruler::Picked([a, b]) = self else {
            return Err("pick two marks on the ruler first".into());
        };
        let px = (b.0 - a.0).hypot(b.1 - a.1);
        if px < 5.0 {
            return Err(format!("the two marks are {px:.1} px apart: pick marks farther apart"));
        }
        let mm: f64 = mm.trim().replace(',', ".").parse().map_err(|_| format!("`{}` is not a distance in mm", mm.trim()))?;
        if !(mm > 0.0 && mm.is_finite()) {
            return Err("the distance must be a positive number of mm".into());
        }
        Ok(mm / px)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ruler_calibration() {
        use super::Ruler;
        let r = Ruler::start();
        assert!(r.is_picking() && r.mm_per_px("10").is_err());
        let r = r.pick((10.0, 20.0)).pick((10.0, 120.0));
        assert_eq!(r, Ruler::Picked([(10.0, 20.0), (10.0, 120.0)]));
        assert_eq!(r.mm_per_px(" 20 ").unwrap(), 0.2);
        assert_eq!(r.mm_per_px("20,0").unwrap(), 0.2);
        for bad in ["", "abc", "-5", "0", "inf"] {
            assert!(r.mm_per_px(bad).is_err(), "{bad}");
        }
        assert!(Ruler::start().pick((1.0, 1.0)).pick((2.0, 2.0)).mm_per_px("1").unwrap_err().contains("farther apart"));
        assert_eq!(Ruler::Off.pick((1.0, 1.0)), Ruler::Off);
    }

    use super::*;

    fn seg(mask: Mask) -> ObjectSegmentation {
        ObjectSegmentation::new(Segmentation { masks: vec![mask], iou: vec![0.9], low_res: vec![vec![]], low_res_size: 0 })
    }

    #[test]
    fn prompts_go_to_the_selected_object() {
        let mut d = Document::new();
        let i = d.set_box([1.0, 2.0, 10.0, 12.0]);
        d.add_point(5.0, 5.0, PointLabel::Positive);
        d.add_point(6.0, 6.0, PointLabel::Negative);
        assert_eq!(d.objects.len(), 1);
        let o = &d.objects[i];
        assert_eq!(o.prompt.bbox, Some([1.0, 2.0, 10.0, 12.0]));
        assert_eq!(o.prompt.points.len(), 2);
        let j = d.add_object();
        d.set_box([20.0, 20.0, 30.0, 30.0]);
        assert_eq!((j, d.objects.len()), (1, 2));
        assert_eq!(d.objects[1].name(), "lesion 2");
        d.delete(0);
        assert_eq!(d.selected, Some(0));
        assert_eq!(d.objects[0].id, 2);
        d.delete(0);
        assert_eq!(d.selected, None);
    }

    #[test]
    fn undo_redo_restores_documents() {
        let mut d = Document::new();
        let mut h = History::default();
        h.push(d.clone());
        d.set_box([0.0, 0.0, 4.0, 4.0]);
        h.push(d.clone());
        d.add_point(1.0, 1.0, PointLabel::Positive);
        assert!(h.undo(&mut d));
        assert_eq!(d.objects[0].prompt.points.len(), 0);
        assert!(h.undo(&mut d));
        assert!(d.objects.is_empty());
        assert!(!h.undo(&mut d));
        assert!(h.redo(&mut d) && h.redo(&mut d));
        assert_eq!(d.objects[0].prompt.points.len(), 1);
        assert!(!h.can_redo());
        // A new edit drops the redo stack.
        h.undo(&mut d);
        h.push(d.clone());
        assert!(!h.can_redo());
    }

    #[test]
    fn union_measurements_and_coco() {
        let mut d = Document::new();
        let a = d.set_box([0.0, 0.0, 3.0, 3.0]);
        d.objects[a].segmentation = Some(seg(Mask::from_fn(20, 10, |i| i % 20 < 5 && i / 20 < 5)));
        let b = d.add_object();
        d.objects[b].segmentation = Some(seg(Mask::from_fn(20, 10, |i| i % 20 >= 15 && i / 20 >= 5)));
        assert_eq!(d.union_mask(20, 10).area(), 25 + 25);
        let m = d.measurements(Some(0.5));
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].unwrap().area_px, 25);
        let json: serde_json::Value = serde_json::from_str(&d.coco("a.png", 20, 10, Some(0.5))).unwrap();
        assert_eq!(json["annotations"].as_array().unwrap().len(), 2);
        assert_eq!(json["annotations"][1]["name"], "lesion 2");
        assert_eq!(corners_to_box((5.0, 1.0), (2.0, 7.0)), [2.0, 1.0, 5.0, 7.0]);
        assert!(d.has_masks());
    }

    #[test]
    fn right_drags_adjust_the_display_and_long_touches_are_negative() {
        // The right button: a click is a negative point; a drag is window/level, no prompt.
        let g = Gesture::down((5.0, 5.0), (10.0, 10.0), Press::Secondary, 0.0);
        assert_eq!(g.window_level(), None);
        assert!(matches!(g.release((5.0, 5.0), 50.0, 50, 40), Ok(Some(PromptEdit::Point { label: PointLabel::Negative, .. }))));
        let mut g = Gesture::down((5.0, 5.0), (10.0, 10.0), Press::Secondary, 0.0);
        g.move_to((30.0, 0.0), (210.0, -90.0));
        assert_eq!(g.window_level(), Some((200.0, -100.0)));
        assert_eq!(g.rubber_band(), None);
        assert_eq!(g.release((30.0, 0.0), 50.0, 50, 40), Ok(None));
        // Right doubles the contrast per WINDOW_LEVEL_PX, up raises the brightness; clamped.
        let (b, c) = window_level(1.0, 1.0, (WINDOW_LEVEL_PX, -WINDOW_LEVEL_PX / 2.0));
        assert!((c - 2.0).abs() < 1e-12 && (b - 2f64.sqrt()).abs() < 1e-12, "{b} {c}");
        assert_eq!(window_level(2.0, 0.5, (-10.0 * WINDOW_LEVEL_PX, -10.0 * WINDOW_LEVEL_PX)), (3.0, 0.2));
        assert_eq!(window_level(0.7, 1.3, (0.0, 0.0)), (0.7, 1.3));
        // A finger resting LONG_PRESS_MS is a negative point; a tap a positive one; a drag a box.
        let touch = |t: f64| Gesture::down((5.0, 5.0), (0.0, 0.0), Press::Touch, 100.0).release((5.0, 5.0), 100.0 + t, 50, 40);
        assert!(matches!(touch(LONG_PRESS_MS), Ok(Some(PromptEdit::Point { label: PointLabel::Negative, .. }))));
        assert!(matches!(touch(120.0), Ok(Some(PromptEdit::Point { label: PointLabel::Positive, .. }))));
        let mut g = Gesture::down((5.0, 5.0), (0.0, 0.0), Press::Touch, 0.0);
        g.move_to((20.0, 25.0), (30.0, 30.0));
        assert_eq!(g.release((20.0, 25.0), 2000.0, 50, 40), Ok(Some(PromptEdit::Box([5.0, 5.0, 20.0, 25.0]))));
        // A mouse held long is still a positive click.
        let g = Gesture::down((5.0, 5.0), (0.0, 0.0), Press::Primary, 0.0);
        assert!(matches!(g.release((5.0, 5.0), 5000.0, 50, 40), Ok(Some(PromptEdit::Point { label: PointLabel::Positive, .. }))));
    }

    #[test]
    fn gestures_make_boxes_and_points() {
        let down = |at, screen, press| Gesture::down(at, screen, press, 0.0);
        // A drag beyond the threshold is a box, clipped to the image.
        let mut g = down((10.0, 10.0), (100.0, 100.0), Press::Primary);
        assert!(g.move_to((30.0, 40.0), (120.0, 130.0)));
        assert_eq!(g.rubber_band(), Some([10.0, 10.0, 30.0, 40.0]));
        assert_eq!(g.window_level(), None);
        assert_eq!(g.release((60.0, -5.0), 10.0, 50, 40), Ok(Some(PromptEdit::Box([10.0, 0.0, 49.0, 10.0]))));
        // A short move is a click: a point where released.
        let mut g = down((5.0, 5.0), (0.0, 0.0), Press::Primary);
        g.move_to((6.0, 5.0), (3.0, 0.0));
        assert_eq!(g.rubber_band(), None);
        assert_eq!(g.release((6.0, 5.0), 900.0, 50, 40), Ok(Some(PromptEdit::Point { x: 6.0, y: 5.0, label: PointLabel::Positive })));
        // Alt: a negative point even when dragged; outside the image: nothing.
        let mut g = down((5.0, 5.0), (0.0, 0.0), Press::Negative);
        g.move_to((20.0, 20.0), (50.0, 50.0));
        assert_eq!(g.rubber_band(), None);
        assert!(matches!(g.release((20.0, 20.0), 10.0, 50, 40), Ok(Some(PromptEdit::Point { label: PointLabel::Negative, .. }))));
        assert_eq!(down((1.0, 1.0), (0.0, 0.0), Press::Primary).release((60.0, 1.0), 10.0, 50, 40), Ok(None));
        // A box dragged entirely outside is refused; no gesture, no edit.
        let mut g = down((60.0, 50.0), (0.0, 0.0), Press::Primary);
        g.move_to((80.0, 70.0), (40.0, 40.0));
        assert!(g.release((80.0, 70.0), 10.0, 50, 40).is_err());
        assert_eq!(Gesture::Idle.release((1.0, 1.0), 10.0, 50, 40), Ok(None));
        assert!(!Gesture::Idle.move_to((1.0, 1.0), (1.0, 1.0)));
        // Edits go to the selected object.
        let mut d = Document::new();
        let i = d.apply(PromptEdit::Box([1.0, 1.0, 5.0, 5.0]));
        assert_eq!(d.apply(PromptEdit::Point { x: 2.0, y: 2.0, label: PointLabel::Positive }), i);
        assert_eq!(d.objects[i].prompt.points.len(), 1);
    }

    #[test]
    fn decode_answers_are_latest_wins_per_object() {
        let mut s = DecodeSequencer::default();
        let a1 = s.request(1);
        let b1 = s.request(2);
        let a2 = s.request(1);
        assert_eq!(s.in_flight(), 3);
        assert!(!s.answer(1, a1), "an older request's answer is dropped");
        assert!(s.answer(2, b1));
        assert!(s.answer(1, a2));
        assert_eq!(s.in_flight(), 0);
        let a3 = s.request(1);
        s.reset();
        assert_eq!(s.in_flight(), 0);
        assert!(!s.answer(1, a3), "answers after a reset are dropped");
    }

    #[test]
    fn hover_keeps_one_request_in_flight_and_the_latest_position() {
        let mut h = HoverPreview::default();
        let s1 = h.want((1.0, 1.0)).unwrap();
        assert_eq!(h.want((2.0, 2.0)), None);
        assert_eq!(h.want((3.0, 3.0)), None);
        let next = h.answer(s1, Some(Mask::new(2, 2)));
        assert_eq!(next, Some((3.0, 3.0)));
        assert!(h.mask.is_some());
        let s2 = h.want((3.0, 3.0)).unwrap();
        h.clear();
        assert_eq!(h.answer(s2, Some(Mask::new(2, 2))), None);
        assert!(h.mask.is_none(), "an answer after clear() is not shown");
        h.want((4.0, 4.0));
        h.reset();
        assert!(h.want((5.0, 5.0)).is_some(), "a request lost with the model does not block the next");
    }
}
