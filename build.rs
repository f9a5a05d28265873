//! The threaded browser build (feature `threads` on wasm32) links with a shared, imported
//! memory (2 GiB at most) and exports the thread-local-storage symbols wasm-bindgen needs to
//! start threads: the linker does not do either by itself.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let wasm = std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32");
    if wasm && std::env::var_os("CARGO_FEATURE_THREADS").is_some() {
        for arg in [
            "--shared-memory",
            "--max-memory=2147483648",
            "--import-memory",
            "--export=__wasm_init_tls",
            "--export=__tls_size",
            "--export=__tls_align",
            "--export=__tls_base",
        ] {
            println!("cargo:rustc-link-arg={arg}");
        }
    }
}
