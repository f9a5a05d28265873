//! The DICOM panel, for a DICOM image: what the file is (modality, manufacturer, size, frames,
//! transfer syntax, where its calibration comes from) and, for a cine loop, a frame slider.
//! Patient identifiers are not read; nothing of the file leaves the page.

use yew::prelude::*;

use super::{AppContext, Msg};

#[function_component]
pub fn DicomPanel() -> Html {
    let app = use_context::<AppContext>().expect("AppContext");
    let Some(d) = app.image.as_ref().and_then(|i| i.dicom.clone()) else { return html! {} };
    let info = &d.file.info;
    let what = [info.modality.clone(), info.manufacturer.clone()].into_iter().flatten().collect::<Vec<_>>().join(", ");
    // How a measurement in the middle of the image would be calibrated.
    let centre = (f64::from(info.columns) / 2.0, f64::from(info.rows) / 2.0);
    let calibration = sonosam_dicom::calibrate(Some(&d.file), &[centre], app.settings.mm_per_px());
    let slider = (info.frames > 1).then(|| {
        let oninput = app.send.reform(|e: InputEvent| {
            let v = e.target_unchecked_into::<web_sys::HtmlInputElement>().value_as_number();
            Msg::Frame(v.max(0.0) as u32)
        });
        html! {
            <label class="frame">{ "Frame " }
                <input id="frame" type="range" min="0" max={ (info.frames - 1).to_string() } step="1"
                       value={ d.frame.to_string() } {oninput} aria-label="DICOM frame" />
                <output id="frame-number">{ format!("{} / {}", d.frame + 1, info.frames) }</output>
            </label>
        }
    });
    html! {
        <section class="dicom" id="dicom" data-frames={ info.frames.to_string() } data-frame={ d.frame.to_string() }>
            <div>{ format!("DICOM {what} · {} × {} · {} frame(s) · {}", info.columns, info.rows, info.frames, info.transfer_syntax_name) }</div>
            <div class="calibration" id="dicom-calibration">{ format!("calibration: {}", calibration.describe()) }</div>
            { slider }
        </section>
    }
}
