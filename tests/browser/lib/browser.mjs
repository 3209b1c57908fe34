// Chromium (Debian's /usr/bin/chromium) driven by playwright-core, as a phone: 390x844 at
// 2x, touch, mobile. Geolocation, offline and slow networks are the browser's emulation
// (context.setGeolocation, context.setOffline, CDP Network.emulateNetworkConditions); the app
// is not told it is under test.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { ARTIFACTS, REPO } from './stack.mjs';

// playwright-core is a dev dependency of the app (web/worker/package.json, one lockfile).
const require = createRequire(join(REPO, 'web/worker/package.json'));
export const { chromium } = require('playwright-core');

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
];
export const PHONE = {
  viewport: { width: 390, height: 844 },
  deviceScaleFactor: 2,
  isMobile: true,
  hasTouch: true,
  userAgent: 'Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36',
  locale: 'zh-CN',
  timezoneId: 'Asia/Shanghai',
  permissions: ['geolocation'],
};

export function launch() {
  return chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
}

/** A browser with its own profile directory, kept across close() and relaunch: a phone's
 * browser being closed and started again. */
export class PersistentPhone {
  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'gp-profile-'));
  }
  async open(opts = {}) {
    this.ctx = await chromium.launchPersistentContext(this.dir, { executablePath: CHROMIUM, args: ARGS, headless: true, ...PHONE, ...opts });
    return this.ctx;
  }
  async close() {
    await this.ctx?.close();
    this.ctx = null;
  }
  remove() {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Slow 3G as issue 13 sets it: 400 kbit/s each way, 400 ms round trip. */
export async function slow3g(page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false, latency: 400, downloadThroughput: 400000 / 8, uploadThroughput: 400000 / 8,
  });
  return cdp;
}

export async function shot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: false });
  return path;
}

/** Waits until the service worker controls the page (the shell is then precached). */
export async function swReady(page) {
  await page.evaluate(async () => {
    const reg = await navigator.serviceWorker.ready;
    if (!navigator.serviceWorker.controller)
      await new Promise((r) => navigator.serviceWorker.addEventListener('controllerchange', r, { once: true }));
    return reg.active?.state;
  });
}

// ---- test photos: a PNG written here (no image library), as a phone camera would give ----
const CRC = new Int32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c;
});
function crc32(buf) {
  let c = -1;
  for (const b of buf) c = CRC[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}
function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}
/** A w x h RGB PNG: a gradient in the given hue with some texture. */
export function photoPng(w, h, hue) {
  const row = 1 + w * 3;
  const raw = Buffer.alloc(row * h);
  for (let y = 0; y < h; y++) {
    raw[y * row] = 0;
    for (let x = 0; x < w; x++) {
      const o = y * row + 1 + x * 3;
      const v = (x * 255) / w;
      const t = ((x >> 4) + (y >> 4)) & 1 ? 30 : 0;
      raw[o] = (v + hue) & 255;
      raw[o + 1] = ((y * 255) / h + t) & 255;
      raw[o + 2] = (hue * 3 + t) & 255;
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  return Buffer.concat([
    Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}
