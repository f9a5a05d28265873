//! The gallery: an "Open image…" file input (PNG, JPEG, BMP, DICOM) and the bundled samples (from
//! `samples/index.json`). Dropping or pasting a file anywhere on the page opens it too.

use std::rc::Rc;

use web_sys::HtmlInputElement;
use yew::prelude::*;

use super::{AppContext, Msg};

/// A bundled sample (from `samples/index.json`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct SampleInfo {
    pub name: String,
    pub image: String,
    /// Its ground-truth masks (one per lesion).
    #[serde(default)]
    pub masks: Vec<String>,
    /// `benign`, `malignant`, `normal`.
    #[serde(default)]
    pub class: String,
}

/// The files of a file input, drop or paste.
pub fn file_vec(list: Option<web_sys::FileList>) -> Vec<web_sys::File> {
    list.map(|l| (0..l.length()).filter_map(|i| l.get(i)).collect()).unwrap_or_default()
}

#[derive(Properties, PartialEq)]
pub struct GalleryProps {
    pub samples: Rc<Vec<SampleInfo>>,
    pub samples_url: AttrValue,
}

#[function_component]
pub fn Gallery(props: &GalleryProps) -> Html {
    let app = use_context::<AppContext>().expect("AppContext");
    let onchange = app.send.reform(|e: Event| Msg::Files(file_vec(e.target_unchecked_into::<HtmlInputElement>().files())));
    let samples = props.samples.iter().enumerate().map(|(i, s)| {
        html! {
            <button class="sample" data-sample={ s.name.clone() } onclick={ app.send.reform(move |_| Msg::OpenSample(i)) }
                    title={ format!("{} ({})", s.name, s.class) }>
                <img src={ format!("{}/{}", props.samples_url, s.image) } alt={ s.name.clone() } loading="lazy" />
                <span>{ s.name.clone() }</span>
            </button>
        }
    });
    html! {
        <nav class="gallery" id="gallery">
            <label class="file">{ "Open image… " }<input id="file" type="file" accept="image/png,image/jpeg,image/bmp,application/dicom,.dcm" {onchange} /></label>
            { for samples }
        </nav>
    }
}
