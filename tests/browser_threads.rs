//! The browser parity tests on the threaded build (wasm atomics, burn-flex on a rayon pool of
//! Web Workers): the same checks as `browser.rs` (`parity_web`), in a dedicated worker as the
//! app runs its model, with one thread per core.
//!
//! Built by the pinned nightly with the `threads` feature (see scripts/test.sh):
//! `cargo +nightly test --target wasm32-unknown-unknown -Z build-std=panic_abort,std
//!  --features threads --test browser_threads` with the atomics target features.
#![cfg(all(target_arch = "wasm32", feature = "threads"))]

use std::cell::Cell;

use sonosam_model::backend::BackendKind;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

mod parity_web;

use parity_web::{decoder_parity, encoder_parity, log};

thread_local! {
    static POOL: Cell<bool> = const { Cell::new(false) };
}

/// Start the thread pool once (one thread per core, at least two); its size.
async fn pool() -> usize {
    if !POOL.with(Cell::get) {
        let cores = js_sys::Reflect::get(&js_sys::global(), &"navigator".into())
            .and_then(|n| js_sys::Reflect::get(&n, &"hardwareConcurrency".into()))
            .ok()
            .and_then(|v| v.as_f64())
            .unwrap_or(2.0) as usize;
        JsFuture::from(sonosam_web::init_thread_pool(cores.max(2))).await.expect("the thread pool starts");
        POOL.with(|p| p.set(true));
    }
    let n = sonosam_web::engine::cpu_threads();
    log(&format!("threaded build: {n} threads"));
    assert!(n >= 2, "the pool has {n} threads");
    n
}

#[wasm_bindgen_test]
async fn decoder_matches_reference_on_cpu_threaded() {
    pool().await;
    decoder_parity(BackendKind::Cpu).await;
}

#[wasm_bindgen_test]
async fn encoder_matches_reference_on_cpu_threaded() {
    pool().await;
    encoder_parity(BackendKind::Cpu).await;
}
