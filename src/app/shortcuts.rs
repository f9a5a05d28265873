//! Keyboard shortcuts: one table that the window's key handler matches against and the help
//! list shows, so the two cannot disagree. Pointer gestures are listed too (help only).

use yew::prelude::*;

use super::{ExportKind, Msg, Setting};

/// How a shortcut is triggered.
#[derive(Clone, Copy)]
pub enum Trigger {
    /// One of these keys (`KeyboardEvent.key`), with Ctrl/⌘ held or not, Shift held or not
    /// (`None`: either).
    Key { keys: &'static [&'static str], ctrl: bool, shift: Option<bool> },
    /// A pointer gesture on the image (handled by the canvas).
    Pointer,
}

/// One shortcut: its trigger, how the help names it, what it does, and the message it sends.
pub struct Shortcut {
    pub trigger: Trigger,
    pub keys: &'static str,
    pub action: &'static str,
    /// What a key shortcut sends (pointer gestures are the canvas's).
    message: Option<fn() -> Msg>,
}

const fn key(keys: &'static [&'static str], ctrl: bool, shift: Option<bool>, label: &'static str, action: &'static str, message: fn() -> Msg) -> Shortcut {
    Shortcut { trigger: Trigger::Key { keys, ctrl, shift }, keys: label, action, message: Some(message) }
}

const fn pointer(label: &'static str, action: &'static str) -> Shortcut {
    Shortcut { trigger: Trigger::Pointer, keys: label, action, message: None }
}

/// Every shortcut, in the order the help lists them.
pub const SHORTCUTS: [Shortcut; 21] = [
    pointer("drag", "box around a lesion"),
    pointer("click", "positive point"),
    pointer("right/alt-click", "negative point"),
    pointer("long press (touch)", "negative point"),
    pointer("right-drag", "contrast (across), brightness (up/down) — display only"),
    pointer("two fingers", "pinch to zoom, move to pan"),
    pointer("middle-drag", "pan a zoomed image"),
    pointer("Ctrl + wheel", "zoom"),
    key(&["n", "N"], false, None, "N", "new lesion", || Msg::NewObject),
    key(&["Delete", "Backspace"], false, None, "Delete", "delete the selected lesion", || Msg::DeleteSelected),
    key(&["z", "Z"], true, Some(false), "Ctrl+Z", "undo", || Msg::Undo),
    key(&["z", "Z"], true, Some(true), "Ctrl+Shift+Z", "redo", || Msg::Redo),
    key(&["y", "Y"], true, None, "Ctrl+Y", "redo", || Msg::Redo),
    key(&["m", "M"], false, None, "M", "multimask candidates on/off", || Msg::Set(Setting::ToggleMultimask)),
    key(&["g", "G"], false, None, "G", "ground truth on/off", || Msg::Set(Setting::ToggleGroundTruth)),
    key(&["s", "S"], false, None, "S", "fitted ellipse and convex hull on/off", || Msg::Set(Setting::ToggleShape)),
    key(&["h", "H"], false, None, "H", "image only (hide all overlays) on/off", || Msg::Set(Setting::ToggleImageOnly)),
    key(&["+", "="], false, None, "+", "zoom in", || Msg::Set(Setting::Zoom(1.25))),
    key(&["-"], false, None, "−", "zoom out", || Msg::Set(Setting::Zoom(0.8))),
    key(&["0"], false, None, "0", "zoom to fit", || Msg::Set(Setting::ZoomFit)),
    key(&["e", "E"], false, None, "E", "export the mask PNG", || Msg::Export(ExportKind::Mask)),
];

/// The message of the shortcut `e` triggers, if any. Keys typed into a form field are the
/// field's.
pub fn message(e: &web_sys::KeyboardEvent) -> Option<Msg> {
    use wasm_bindgen::JsCast;
    let in_field = e
        .target()
        .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
        .is_some_and(|el| matches!(el.tag_name().as_str(), "INPUT" | "SELECT" | "TEXTAREA"));
    if in_field {
        return None;
    }
    let (ctrl, shift, k) = (e.ctrl_key() || e.meta_key(), e.shift_key(), e.key());
    SHORTCUTS.iter().find_map(|s| match s.trigger {
        Trigger::Key { keys, ctrl: c, shift: sh } if c == ctrl && sh.is_none_or(|sh| sh == shift) && keys.contains(&k.as_str()) => {
            s.message.map(|m| m())
        }
        _ => None,
    })
}

/// The help: every shortcut from [`SHORTCUTS`].
#[function_component]
pub fn ShortcutList() -> Html {
    html! {
        <details class="shortcuts"><summary>{ "Keyboard shortcuts" }</summary>
            <dl>{ for SHORTCUTS.iter().map(|s| html! { <><dt>{ s.keys }</dt><dd>{ s.action }</dd></> }) }</dl>
        </details>
    }
}
