/* The worker app's service worker (scope /app/). Written by hand; vite.config.ts replaces
 * PRECACHE_MANIFEST with the build's file list and VERSION with its hash.
 *
 *   the app shell   precached at install (every file of the build: all screens open offline);
 *                   served cache-first -- hashed names never change content; a new build is a
 *                   new sw.js (gridpointsd serves it no-cache), which precaches the new files
 *                   and drops the old cache when it takes over
 *   navigations     index.html from the cache (the app routes on the client)
 *   GET /api/...    network first; the last good answer is kept and served when the network
 *                   fails, marked X-GP-Cache: hit; without one, a 503 marked X-GP-Offline.
 *                   Kept per login: one cache per session token (named by a hash of it), so
 *                   a phone shared by two workers never shows one the other's saved answers
 *                   (a care list holds residents' names, phones and health notes); logging
 *                   out drops every saved answer
 *   anything else   (writes, other origins) untouched: the app's outbox handles writes */
const VERSION = '__VERSION__';
const PRECACHE = __PRECACHE_MANIFEST__;
const SHELL = `gp-shell-${VERSION}`;
const API = 'gp-api-'; // + the first 16 hex digits of SHA-256(Authorization header)
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
      // old shells, and the single shared API cache of earlier versions ('gp-api-v1')
      .then((keys) => Promise.all(keys.filter((k) => (k.startsWith('gp-shell-') && k !== SHELL) || k === 'gp-api-v1').map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener('message', (event) => {
  // The cached API answers are the logged-out worker's: drop them (every login's, to be sure).
  if (event.data && event.data.type === 'logout') {
    event.waitUntil(caches.keys().then((keys) => Promise.all(keys.filter((k) => k.startsWith(API)).map((k) => caches.delete(k)))));
  }
});

function offlineAnswer() {
  return new Response(JSON.stringify({ error: { code: 'offline', message: 'no network and nothing saved' } }), {
    status: 503,
    headers: { 'Content-Type': 'application/json', 'X-GP-Offline': '1' },
  });
}

/** The cache of the login that sent `request`: answers are only ever served to the same token. */
async function apiCache(request) {
  const auth = new TextEncoder().encode(request.headers.get('Authorization') || '');
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', auth));
  const hex = Array.from(digest.slice(0, 8), (b) => b.toString(16).padStart(2, '0')).join('');
  return caches.open(API + hex);
}

async function apiNetworkFirst(request) {
  const cache = await apiCache(request);
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
