// The browser benchmark's measurement (bench.html): sonosam's engine timed on the yardstick's
// inputs by the engine module's `sonosam_bench`. It runs in a Web Worker by default, as the app
// runs the model (www/worker.js), so that a threaded build's caller blocks while the pool works
// instead of spinning on the page's thread; bench.html?worker=0 runs it in the page.
export async function measure({ part, warmup, runs, threaded, threads }) {
  const mod = await import(threaded ? './mt/sonosam-engine.js' : './engine/sonosam-engine.js');
  const wasm = await mod.default();
  if (threaded) await mod.initThreadPool(threads);
  const r = await mod.sonosam_bench(part, warmup, runs);
  r.wasm_memory_bytes = wasm.memory.buffer.byteLength;
  r.js_heap_bytes = self.performance && performance.memory ? performance.memory.usedJSHeapSize : null;
  r.crossOriginIsolated = self.crossOriginIsolated === true;
  r.hardwareConcurrency = navigator.hardwareConcurrency;
  r.userAgent = navigator.userAgent;
  return r;
}

if (typeof WorkerGlobalScope !== 'undefined' && self instanceof WorkerGlobalScope) {
  self.onmessage = async (e) => {
    try {
      self.postMessage({ ok: true, result: await measure(e.data) });
    } catch (err) {
      self.postMessage({ ok: false, error: String(err && err.stack || err) });
    }
  };
}
