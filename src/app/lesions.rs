//! The lesion list: one entry per lesion with its colour, predicted IoU, measurements, shape
//! descriptors and, in multimask mode, its candidate masks; new lesion, undo and redo.

use sonosam_model::measure::descriptors::{Descriptors, NotMeasurable, describe};
use sonosam_model::segmentation::low_predicted_iou;
use yew::prelude::*;

use super::{AppContext, Msg};
use crate::draw;
use crate::state::Object;

#[derive(Properties, PartialEq)]
pub struct LesionListProps {
    pub can_undo: bool,
    pub can_redo: bool,
}

#[function_component]
pub fn LesionList(props: &LesionListProps) -> Html {
    let app = use_context::<AppContext>().expect("AppContext");
    let lesions = app.doc.objects.iter().enumerate().map(|(i, o)| {
        html! { <Lesion index={ i } object={ o.clone() } selected={ app.doc.selected == Some(i) } /> }
    });
    html! {
        <>
            <div class="tools">
                <button id="new-object" onclick={ app.send.reform(|_| Msg::NewObject) }>{ "New lesion (N)" }</button>
                <button id="undo" disabled={ !props.can_undo } onclick={ app.send.reform(|_| Msg::Undo) }>{ "Undo" }</button>
                <button id="redo" disabled={ !props.can_redo } onclick={ app.send.reform(|_| Msg::Redo) }>{ "Redo" }</button>
            </div>
            <ul class="objects" id="objects">{ for lesions }</ul>
            <p id="lesion-announce" class="visually-hidden" aria-live="polite">{ announcement(&app) }</p>
        </>
    }
}

/// What a screen reader announces when a lesion is segmented or chosen: "lesion 1: 13.5 ×
/// 6.8 mm" (cached measurements only: the list renders often).
fn announcement(app: &AppContext) -> String {
    let Some(o) = app.doc.selected_object() else { return String::new() };
    let Some(seg) = o.segmentation.as_ref() else { return String::new() };
    let Some((m, _)) = app.image.as_ref().and_then(|i| i.measure(seg, &app.settings)) else {
        return format!("{}: no lesion found", o.name());
    };
    let size = match (m.long_mm(), m.short_mm()) {
        (Some(l), Some(s)) => format!("{l:.1} × {s:.1} mm"),
        _ => format!("{:.0} × {:.0} px", m.long_axis.length_px, m.short_axis.length_px),
    };
    format!("{}: {size}", o.name())
}

#[derive(Properties, PartialEq)]
struct LesionProps {
    index: usize,
    object: Object,
    selected: bool,
}

#[function_component]
fn Lesion(props: &LesionProps) -> Html {
    let app = use_context::<AppContext>().expect("AppContext");
    let (i, o) = (props.index, &props.object);
    let [r, g, b] = draw::object_color(i);
    let seg = o.segmentation.as_ref();
    let measured = seg.zip(app.image.as_ref()).and_then(|(s, image)| image.measure(s, &app.settings));
    // Tracing the outline is not free: once per mask and calibration, not per redraw.
    let spacing = measured.as_ref().and_then(|(_, c)| c.mm_per_px);
    let descriptors = use_memo((o.segmentation.clone(), spacing), |(seg, spacing)| {
        seg.as_ref().and_then(|s| s.mask()).map(|m| describe(m, *spacing))
    });
    let candidates = seg.filter(|s| s.decoded.masks.len() > 1).map(|s| {
        let buttons = s.decoded.iou.iter().enumerate().map(|(k, iou)| html! {
            <button class={ classes!("candidate", (k == s.chosen()).then_some("chosen")) }
                onclick={ app.send.reform(move |_| Msg::Choose(k)) }>
                { format!("#{} IoU {:.3}", k + 1, iou) }
            </button>
        });
        html! { <div class="candidates">{ for buttons }</div> }
    });
    let delete = app.send.reform(move |e: MouseEvent| {
        e.stop_propagation();
        Msg::Delete(i)
    });
    html! {
        <li class={ classes!("object", props.selected.then_some("selected")) } data-object={ o.id.to_string() }
            data-area={ seg.and_then(|s| s.mask()).map(|m| m.area().to_string()) }
            data-box={ o.prompt.bbox.map(|b| format!("{},{},{},{}", b[0], b[1], b[2], b[3])) }
            onclick={ app.send.reform(move |_| Msg::Select(i)) }>
            <span class="swatch" style={ format!("background:rgb({r},{g},{b})") }></span>
            <strong>{ o.name() }</strong>
            { seg.map(|s| html! { <span class="score">{ format!(" predicted IoU {:.3}", s.score()) }</span> }) }
            <button class="delete" title="Delete" onclick={ delete }>{ "✕" }</button>
            { seg.filter(|s| low_predicted_iou(s.score())).map(|_| html! {
                <div class="low-iou" role="note">
                    { "⚠ low predicted IoU: check the outline; a box drawn tight on the lesion's edges usually does better" }
                </div>
            }) }
            { measured.map(|(m, c)| html! {
                <>
                    <div class="measure">{ m.summary() }</div>
                    <div class="calibration" data-source={ serde_json::to_value(c.source).ok().and_then(|v| v.as_str().map(str::to_string)) }>
                        { format!("calibration: {}", c.describe()) }
                    </div>
                </>
            }) }
            { descriptors.as_ref().clone().map(|d| html! { <DescriptorPanel descriptors={ d } /> }) }
            { candidates }
        </li>
    }
}

#[derive(Properties, PartialEq)]
struct DescriptorPanelProps {
    descriptors: Result<Descriptors, NotMeasurable>,
}

/// A lesion's shape descriptors: the BI-RADS-style calls (computed suggestions) and the
/// numbers behind them, folded by default.
#[function_component]
fn DescriptorPanel(props: &DescriptorPanelProps) -> Html {
    let d = match &props.descriptors {
        Ok(d) => d,
        Err(e) => return html! { <div class="descriptors not-measurable">{ format!("shape: not measurable ({e})") }</div> },
    };
    let calls = d.calls.words();
    let rows = d.table();
    html! {
        <details class="descriptors" onclick={ |e: MouseEvent| e.stop_propagation() }>
            <summary>{ "shape: " }<span class="calls">{ calls }</span></summary>
            <table>
                { for rows.iter().map(|(k, v)| html! { <tr><th scope="row">{ *k }</th><td>{ v.clone() }</td></tr> }) }
            </table>
            if d.touches_border {
                <p class="note">{ "The lesion reaches the image edge: its shape may be cut off." }</p>
            }
            <p class="note">{ "Computed suggestions from the outline (thresholds chosen on BUSI's training split), not a diagnosis." }</p>
        </details>
    }
}
