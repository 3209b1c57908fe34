/* The worker app's service worker (scope /app/). Written by hand; vite.config.ts replaces
 * PRECACHE_MANIFEST with the build's file list and VERSION with its hash.
 *
 *   the app shell   precached at install (every file of the build: all screens open offline);
 *                   served cache-first -- hashed names never change content; a new build is a
 *                   new sw.js (gridpointsd serves it no-cache), which precaches the new files
 *                   and drops the old cache when it takes over
 *   navigations     index.html from the cache (the app routes on the client)
 *   GET /api/...    network first; the last good answer is kept and served when the network
 *                   fails, marked X-GP-Cache: hit; without one, a 503 marked X-GP-Offline
 *   anything else   (writes, other origins) untouched: the app's outbox handles writes */
const VERSION = '__VERSION__';
const PRECACHE = __PRECACHE_MANIFEST__;
const SHELL = `gp-shell-${VERSION}`;
const API = 'gp-api-v1';
const BASE = new URL('./', self.location).pathname; // "/app/"

self.addEventListener('install', (event) => {
  event.waitUntil(
    caches
      .open(SHELL)
      .then((c) => c.addAll(PRECACHE.map((p) => BASE + p)))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith('gp-shell-') && k !== SHELL).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener('message', (event) => {
  // The cached API answers are the logged-out worker's: drop them.
  if (event.data && event.data.type === 'logout') event.waitUntil(caches.delete(API));
});

function offlineAnswer() {
  return new Response(JSON.stringify({ error: { code: 'offline', message: 'no network and nothing saved' } }), {
    status: 503,
    headers: { 'Content-Type': 'application/json', 'X-GP-Offline': '1' },
  });
}

async function apiNetworkFirst(request) {
  const cache = await caches.open(API);
  try {
    const res = await fetch(request);
    if (res.ok) await cache.put(request, res.clone());
    return res;
  } catch (e) {
    const hit = await cache.match(request);
    if (!hit) return offlineAnswer();
    const headers = new Headers(hit.headers);
    headers.set('X-GP-Cache', 'hit');
    return new Response(await hit.blob(), { status: hit.status, statusText: hit.statusText, headers });
  }
}

async function shellFirst(request) {
  const hit = await caches.match(request, { ignoreSearch: request.mode === 'navigate' });
  if (hit) return hit;
  try {
    return await fetch(request);
  } catch (e) {
    if (request.mode === 'navigate') {
      const index = await caches.match(BASE + 'index.html');
      if (index) return index;
    }
    throw e;
  }
}

self.addEventListener('fetch', (event) => {
  const req = event.request;
  if (req.method !== 'GET') return;
  const url = new URL(req.url);
  if (url.origin !== self.location.origin) return;
  if (url.pathname.startsWith('/api/')) {
    event.respondWith(apiNetworkFirst(req));
    return;
  }
  if (!url.pathname.startsWith(BASE)) return;
  if (req.mode === 'navigate') {
    event.respondWith(caches.match(BASE + 'index.html').then((hit) => hit || fetch(req)));
    return;
  }
  event.respondWith(shellFirst(req));
});
