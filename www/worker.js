// The model's Web Worker: the app's own wasm module, started here without a window. Its main
// sees that it runs in a worker and answers the page's requests (src/worker.rs) instead of
// drawing the app, so that encoding and decoding never freeze the page.
import init from './sonosam-web.js';

init().catch((e) => {
  // The page sees the worker's error event and runs the model itself.
  console.error('sonosam worker: the wasm module did not start', e);
  throw e;
});
