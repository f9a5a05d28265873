// sonosam service worker: the app shell (page, wasm, script, styles, samples) keeps working
// when the server is unreachable. Network first, so a running server always serves the newest
// build; the cached copy answers only when the network fails. Model weights and image
// embeddings are cached by the app itself (Cache API, verified by SHA-256), not here.
const SHELL = 'sonosam-shell-v3';

// What the page loads before this worker controls it: the page itself and the assets it names
// (Trunk gives them hashed names, so read them from the page), plus the samples list.
async function precache() {
  const cache = await caches.open(SHELL);
  const page = await fetch('./', { cache: 'no-cache' });
  if (!page.ok) return;
  const html = await page.clone().text();
  await cache.put('./', page);
  // The engine the model's worker loads when the page is not isolated (a first visit to a
  // static host), and where the browser has WebGPU the WebGPU engine, so that the app also
  // runs offline on the backend it was not using online; the threaded one is cached when it
  // is first fetched.
  const assets = new Set(['samples/index.json', 'worker.js', 'engine/sonosam-engine.js', 'engine/sonosam-engine_bg.wasm']);
  if (self.navigator && self.navigator.gpu) {
    assets.add('engine-webgpu/sonosam-engine.js');
    assets.add('engine-webgpu/sonosam-engine_bg.wasm');
  }
  for (const m of html.matchAll(/["']([^"'\s]+\.(?:js|wasm|css))["']/g)) {
    assets.add(m[1]);
    if (m[1].endsWith('.js')) assets.add(m[1].replace(/\.js$/, '_bg.wasm'));
  }
  assets.delete('sw.js');
  await Promise.all([...assets].map(async (a) => {
    try {
      const r = await fetch(a, { cache: 'no-cache' });
      if (r.ok) await cache.put(a, r);
    } catch (e) { /* best effort */ }
  }));
}

self.addEventListener('install', (event) => {
  event.waitUntil(precache().catch(() => {}).then(() => self.skipWaiting()));
});
self.addEventListener('activate', (event) => { event.waitUntil(self.clients.claim()); });

self.addEventListener('fetch', (event) => {
  const req = event.request;
  const url = new URL(req.url);
  if (req.method !== 'GET' || url.origin !== self.location.origin) return;
  if (url.pathname.includes('/weights/') || url.pathname.startsWith('/api/')) return;
  event.respondWith((async () => {
    const cache = await caches.open(SHELL);
    try {
      const resp = await fetch(req);
      if (resp.ok) await cache.put(req, resp.clone());
      return isolated(resp);
    } catch (err) {
      // Query strings select options (`worker.js?threads=0`, `?backend=cpu`), not content.
      const page = req.mode === 'navigate';
      const hit = await cache.match(page ? './' : req, { ignoreSearch: true });
      if (hit) return isolated(hit);
      throw err;
    }
  })());
});

// Static hosts rarely send COOP/COEP: the app's own files get them here, so that from the
// second visit on the page is cross-origin isolated and the model worker runs threaded.
function isolated(resp) {
  if (resp.status === 0 || resp.headers.get('Cross-Origin-Embedder-Policy')) return resp;
  const headers = new Headers(resp.headers);
  headers.set('Cross-Origin-Opener-Policy', 'same-origin');
  headers.set('Cross-Origin-Embedder-Policy', 'require-corp');
  return new Response(resp.body, { status: resp.status, statusText: resp.statusText, headers });
}
