//! The app's document model, independent of the browser so it is unit-tested natively:
//! lesions (objects) with their prompts and segmentations, the selection, undo/redo, and the
//! exports built from them.

use sonosam_model::export::{ExportObject, coco_json};
use sonosam_model::measure::{Measurements, measure};
use sonosam_model::{Mask, Point, PointLabel, Prompt, Segmentation};

/// Most undo steps kept.
pub const HISTORY_LIMIT: usize = 100;

/// The decoder's answer for one object's prompt, and which candidate the user keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectSegmentation {
    /// Candidate masks (1, or 3 in multimask mode) with their predicted IoU and low-res logits
    /// (fed back as the mask prompt when refining).
    pub decoded: Segmentation,
    /// The candidate shown and exported.
    chosen: usize,
    /// Measurements of the chosen mask in pixels, computed once (drawing happens on every
    /// pointer move).
    measurements: Option<Measurements>,
}

impl ObjectSegmentation {
    /// Keep the decoder's answer, choosing the candidate with the best predicted IoU.
    pub fn new(decoded: Segmentation) -> Self {
        let mut s = Self { decoded, chosen: 0, measurements: None };
        s.choose(s.decoded.best());
        s
    }
    /// Show and export candidate `k` (ignored when there is no such candidate).
    pub fn choose(&mut self, k: usize) {
        if let Some(m) = self.decoded.masks.get(k) {
            self.chosen = k;
            self.measurements = measure(m, None);
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

    /// Union of every object's chosen mask.
    pub fn union_mask(&self, width: usize, height: usize) -> Mask {
        let mut out = Mask::new(width, height);
        for m in self.objects.iter().filter_map(|o| o.segmentation.as_ref()?.mask()) {
            if (m.width, m.height) == (width, height) {
                for (o, &v) in out.data.iter_mut().zip(&m.data) {
                    *o |= v;
                }
            }
        }
        out
    }

    /// Measurements of each object (in object order; `None` for empty masks).
    pub fn measurements(&self, mm_per_px: Option<f64>) -> Vec<Option<Measurements>> {
        self.objects
            .iter()
            .map(|o| o.segmentation.as_ref()?.measurements(mm_per_px))
            .collect()
    }

    /// The COCO-style JSON export (pretty-printed).
    pub fn coco(&self, file_name: &str, width: usize, height: usize, mm_per_px: Option<f64>) -> String {
        let measurements = self.measurements(mm_per_px);
        let objects: Vec<ExportObject> = self
            .objects
            .iter()
            .zip(measurements)
            .filter_map(|(o, m)| {
                let seg = o.segmentation.as_ref()?;
                Some(ExportObject {
                    name: o.name(),
                    mask: seg.mask()?,
                    score: seg.score(),
                    measurements: m,
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

#[cfg(test)]
mod tests {
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
    }
}
