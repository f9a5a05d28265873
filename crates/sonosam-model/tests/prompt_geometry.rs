//! Property tests of prompt geometry: any box or point, inside the image, partly outside,
//! far outside, degenerate or not finite, becomes either a clear error or a valid prompt in
//! the model frame — never a panic, a coordinate outside the frame or a zero-area box.

use proptest::prelude::*;
use sonosam_model::{Geometry, Point, PointLabel, Prompt, SamError};

/// Coordinates as users, files and fuzzers give them: ordinary values, the image's edges,
/// huge and tiny magnitudes, and non-finite values.
fn coordinate() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => -50.0f32..3000.0,
        1 => Just(0.0f32),
        1 => Just(-0.5f32),
        1 => prop::num::f32::ANY,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(f32::MAX),
    ]
}

fn geometry() -> impl Strategy<Value = Geometry> {
    (1usize..4000, 1usize..4000, prop_oneof![Just(256usize), Just(1024usize)])
        .prop_map(|(h, w, frame)| Geometry::new(h, w, frame))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn boxes_become_valid_frame_boxes_or_clear_errors(
        g in geometry(),
        b in [coordinate(), coordinate(), coordinate(), coordinate()],
    ) {
        match g.box_to_frame(b) {
            Ok([x0, y0, x1, y1]) => {
                let f = g.frame as f32;
                prop_assert!([x0, y0, x1, y1].iter().all(|v| v.is_finite() && *v >= 0.0 && *v < f));
                prop_assert!(x1 > x0 && y1 > y0, "zero-area frame box {:?} from {:?}", [x0, y0, x1, y1], b);
            }
            Err(SamError::Prompt(msg)) => prop_assert!(msg.contains("box"), "{}", msg),
            Err(other) => prop_assert!(false, "not a prompt error: {}", other),
        }
    }

    #[test]
    fn points_become_frame_points_or_clear_errors(
        g in geometry(),
        x in coordinate(),
        y in coordinate(),
        positive in any::<bool>(),
    ) {
        let label = if positive { PointLabel::Positive } else { PointLabel::Negative };
        let prompt = Prompt { points: vec![Point { x, y, label }], bbox: None };
        match g.prompt_to_frame(&prompt) {
            Ok(p) => {
                let q = p.points[0];
                let f = g.frame as f32;
                prop_assert!(q.x.is_finite() && q.y.is_finite());
                prop_assert!(q.x >= 0.0 && q.y >= 0.0 && q.x < f && q.y < f);
                prop_assert_eq!(q.label, label);
            }
            Err(SamError::Prompt(msg)) => prop_assert!(msg.contains("point"), "{}", msg),
            Err(other) => prop_assert!(false, "not a prompt error: {}", other),
        }
    }
}
