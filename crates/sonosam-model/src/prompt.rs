//! Prompts as the user gives them — clicked points and a box — in original-image pixels or,
//! once mapped, in the model frame; what the [prompt encoder](crate::prompt_encoder) encodes.
//! Model-free (no burn): the browser's UI module uses it too.

/// Label of a clicked point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PointLabel {
    /// Background click (label 0).
    Negative,
    /// Foreground click (label 1).
    Positive,
}

/// A clicked point: in original-image pixels where the user gives it (the app, the CLI, the
/// [`Predictor`](crate::Predictor)), in the model frame once mapped by
/// [`Geometry::prompt_to_frame`](crate::Geometry::prompt_to_frame) (what the encoder takes).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Point {
    pub x: f32,
    pub y: f32,
    pub label: PointLabel,
}

/// The sparse prompts of one decoding: clicked points and at most one box. The same type
/// carries them in original-image pixels (as given) and in the model frame (as encoded); see
/// [`Point`].
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Prompt {
    pub points: Vec<Point>,
    /// `[x0, y0, x1, y1]`.
    pub bbox: Option<[f32; 4]>,
}

impl Prompt {
    pub fn from_box(bbox: [f32; 4]) -> Self {
        Self {
            points: Vec::new(),
            bbox: Some(bbox),
        }
    }

    /// Number of sparse tokens this prompt produces (SAM appends a padding point when there
    /// are points but no box).
    pub fn num_tokens(&self) -> usize {
        let pad = usize::from(!self.points.is_empty() && self.bbox.is_none());
        self.points.len() + pad + if self.bbox.is_some() { 2 } else { 0 }
    }

    /// A single click and nothing else: SAM's ambiguous prompt, answered with three masks
    /// (whole, part, subpart) of which the best by predicted IoU is taken — and trained on
    /// the best of the three.
    pub fn is_ambiguous(&self) -> bool {
        self.bbox.is_none() && self.points.len() == 1
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty() && self.bbox.is_none()
    }
}
