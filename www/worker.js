// The model's Web Worker: an engine module (the model without the UI; the page runs the UI
// module) answers the page's requests (src/worker.rs) so that encoding and decoding never
// freeze the page.
//
// Three engines, each the model without the UI: `worker.js?webgpu=1` (the page asks for it
// when it runs on WebGPU) loads engine-webgpu/ (single-threaded: wgpu's WebGPU objects are
// not thread-safe under wasm atomics; five times the CPU engines' size). For the CPU: when the
// page is cross-origin isolated (COOP/COEP headers: shared memory is available) the threaded
// engine (mt/, wasm threads + a pool of Web Workers) runs, with one thread per core;
// otherwise, or if it cannot start, the single-threaded one (engine/), and the page is told
// why. `worker.js?threads=0` forces the single-threaded engine.
const params = new URL(self.location.href).searchParams;
const webgpu = params.get('webgpu') === '1';
const wanted = params.get('threads') !== '0';

// Liveness: this worker holds a Web Lock named after itself (the page gives each worker its own
// name) for as long as it lives. The page asks for the same lock after our hello and is granted
// it only when this worker is gone — also when the browser ends it without an error event (out
// of memory, killed) — and then shows the model as stopped. Taken first, before any await.
if (self.name && self.navigator.locks) {
  self.navigator.locks.request(self.name, () => new Promise(() => {})).catch(() => {});
}

// Whether wasm relaxed SIMD validates: a module with one function, `f32x4.relaxed_madd` of
// three zero vectors (the threaded build's matrix kernel is made of it).
function relaxedSimd() {
  const zero = [0xfd, 0x0c, ...new Array(16).fill(0)]; // v128.const 0
  const body = [0x00, ...zero, ...zero, ...zero, 0xfd, 0x85, 0x02, 0x1a, 0x0b]; // relaxed_madd; drop; end
  const bytes = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
    0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
    0x0a, body.length + 2, 0x01, body.length, ...body]; // code section
  try { return WebAssembly.validate(new Uint8Array(bytes)); } catch (e) { return false; }
}

async function start() {
  let why = null;
  if (webgpu) why = 'WebGPU runs the model';
  else if (!wanted) why = 'threads are turned off (?threads=0)';
  else if (!self.crossOriginIsolated) why = 'the page is not cross-origin isolated (its server sends no COOP/COEP headers)';
  else if (typeof SharedArrayBuffer === 'undefined') why = 'this browser has no shared memory for wasm threads';
  else if (!relaxedSimd()) why = 'this browser has no relaxed SIMD, which the threaded build uses';
  if (!why) {
    try {
      const mt = await import('./mt/sonosam-engine.js');
      await mt.default();
      await mt.initThreadPool(Math.max(1, navigator.hardwareConcurrency || 1));
      mt.sonosam_worker(null);
      return;
    } catch (e) {
      console.warn('sonosam worker: the threaded build did not start', e);
      why = `the threaded build did not start (${e && e.message || e})`;
    }
  }
  let st = null;
  if (webgpu) {
    try {
      st = await import('./engine-webgpu/sonosam-engine.js');
    } catch (e) {
      // Offline before it was ever cached, say: the CPU engine still segments (the page is
      // told why, and the engine's own WebGPU start fails over to the CPU).
      console.warn('sonosam worker: the WebGPU engine did not load', e);
      why = `the WebGPU engine did not load (${e && e.message || e})`;
    }
  }
  st = st || await import('./engine/sonosam-engine.js');
  await st.default();
  st.sonosam_worker(why);
}

start().catch((e) => {
  // The page sees the worker's error event and runs the model itself.
  console.error('sonosam worker: the wasm module did not start', e);
  throw e;
});
