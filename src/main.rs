//! sonosam browser app (Yew, built by Trunk). The full app is built in the browser-app issue;
//! this entry point keeps the workspace layout of the design.

#[cfg(target_arch = "wasm32")]
fn main() {
    web_sys::console::log_1(&"sonosam: model core loaded; the app UI is not built yet".into());
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("sonosam-web is the browser app: build it with `trunk build`. For the native tool run `sonosam --help`.");
}
