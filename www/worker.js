// The model's Web Worker: the app's own wasm module, started here without a window, answers
// the page's requests (src/worker.rs) so that encoding and decoding never freeze the page.
//
// Threads: when the page is cross-origin isolated (COOP/COEP headers: shared memory is
// available) the threaded build (mt/, wasm threads + a pool of Web Workers) runs, with one
// thread per core; otherwise, or if it cannot start, the single-threaded build, and the page is
// told why. `worker.js?threads=0` forces the single-threaded build.
const wanted = new URL(self.location.href).searchParams.get('threads') !== '0';

// Liveness: this worker holds a Web Lock named after itself (the page gives each worker its own
// name) for as long as it lives. The page asks for the same lock after our hello and is granted
// it only when this worker is gone — also when the browser ends it without an error event (out
// of memory, killed) — and then shows the model as stopped. Taken first, before any await.
if (self.name && self.navigator.locks) {
  self.navigator.locks.request(self.name, () => new Promise(() => {})).catch(() => {});
}

async function start() {
  let why = null;
  if (!wanted) why = 'threads are turned off (?threads=0)';
  else if (!self.crossOriginIsolated) why = 'the page is not cross-origin isolated (its server sends no COOP/COEP headers)';
  else if (typeof SharedArrayBuffer === 'undefined') why = 'this browser has no shared memory for wasm threads';
  if (!why) {
    try {
      const mt = await import('./mt/sonosam-web.js');
      await mt.default();
      await mt.initThreadPool(Math.max(1, navigator.hardwareConcurrency || 1));
      mt.sonosam_worker(null);
      return;
    } catch (e) {
      console.warn('sonosam worker: the threaded build did not start', e);
      why = `the threaded build did not start (${e && e.message || e})`;
    }
  }
  const st = await import('./sonosam-web.js');
  await st.default();
  st.sonosam_worker(why);
}

start().catch((e) => {
  // The page sees the worker's error event and runs the model itself.
  console.error('sonosam worker: the wasm module did not start', e);
  throw e;
});
