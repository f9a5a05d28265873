//! sonosam browser app entry point (built by Trunk: see index.html and Trunk.toml).

#[cfg(target_arch = "wasm32")]
unsafe extern "C" {
    /// The static constructors (burn/cubecl register kernels with `inventory`), synthesised by
    /// the linker.
    fn __wasm_call_ctors();
}

#[cfg(target_arch = "wasm32")]
fn main() {
    // Run the constructors once, here. A binary that never calls them is linked as a
    // "command": wasm-ld then runs every constructor again at the start of *each* exported
    // function — every call from JavaScript into the module (each DOM callback, each
    // JsValue handed over) — which cost ≈ 300 ms per rendering of the app.
    // SAFETY: called once, first, before any code that reads what the constructors register.
    unsafe { __wasm_call_ctors() };
    sonosam_web::start();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!(
        "sonosam-web is the browser app: build it with `trunk build` (see the README). \
         For the native tool run `sonosam --help`."
    );
}
