//! sonosam browser app entry point (built by Trunk: see index.html and Trunk.toml).

#[cfg(target_arch = "wasm32")]
fn main() {
    sonosam_web::start();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!(
        "sonosam-web is the browser app: build it with `trunk build` (see the README). \
         For the native tool run `sonosam --help`."
    );
}
