// The offline module of the worker app (web/worker/src/offline/) on its own, in Chromium's real
// IndexedDB against the real server: the module is bundled with esbuild (from the app's own
// dependencies) and loaded into a page of the app's origin. Failures of the network are made
// by the browser (context.setOffline, page.route aborting a request or dropping a reply after
// the server answered), never by a stand-in for the server or for IndexedDB.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { REPO, Stack } from './lib/stack.mjs';
import { makeWorld, NEAR } from './lib/world.mjs';
import { PHONE, launch, photoPng } from './lib/browser.mjs';

const require = createRequire(join(REPO, 'web/worker/package.json'));
const esbuild = require('esbuild');

const out = await esbuild.build({
  stdin: {
    contents: "export * from './src/offline/index.ts'; export { setToken } from './src/api/client.ts';",
    resolveDir: join(REPO, 'web/worker'),
    loader: 'ts',
  },
  bundle: true,
  format: 'iife',
  globalName: 'gpOffline',
  target: 'es2020',
  write: false,
});
const bundle = out.outputFiles[0].text;
const stack = await Stack.up('offline');
let world;
let browser;
try {
  world = await makeWorld(stack);
  browser = await launch();
} catch (e) {
  await stack.stop();
  throw e;
}
for (const p of stack.pending) console.log(`# PENDING (TODO until it lands): ${p}`);
const needEvidence = stack.has.evidence ? {} : { todo: 'PUT /api/v1/evidence/{sha256} is not in this gridpointsd yet (issue 13, item 3)' };

after(async () => {
  await browser?.close();
  const errors = stack ? stack.errorLines() : [];
  await stack?.stop();
  assert.deepEqual(errors, [], 'gridpointsd logged errors or a sanitizer report');
});

const count = (crid) => Number(stack.sql('SELECT count(*) FROM reports WHERE client_report_id = $1', crid)[0][0]);

/** A page of the app's origin with the offline module loaded as window.gpOffline. */
async function modulePage(ctx, token) {
  const page = await ctx.newPage();
  await page.goto(`${stack.url}/app/login`);
  await page.addScriptTag({ content: bundle });
  await page.evaluate((t) => window.gpOffline.setToken(t), token);
  return page;
}

/** Saves a report (with photos made from PNG bytes) through the module; returns its item. */
function saveReport(page, r, pngs = []) {
  return page.evaluate(
    async ({ r, pngs }) => {
      const m = window.gpOffline;
      const photos = [];
      for (const b64 of pngs) {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const p = await m.preparePhoto(new Blob([bytes], { type: 'image/png' }));
        photos.push({ sha256: p.sha256, blob: p.blob });
      }
      return m.saveReport({ ...r, photos });
    },
    { r, pngs: pngs.map((b) => b.toString('base64')) },
  );
}

const items = (page, workerId) => page.evaluate((id) => window.gpOffline.listItems(id), workerId);
const sync = (page, workerId, force = true) => page.evaluate(({ id, f }) => window.gpOffline.syncNow(id, f), { id: workerId, f: force });

test('the outbox: saved first, waits offline, survives reloads, every retry applied once', async (t) => {
  const task = await world.task({ evidence_photos: 1, review_window_s: 3600 });
  const w = await world.worker('孙师傅');
  const claim = await stack.ok('POST', `/api/v1/tasks/${task.id}/claim`, { token: w.token });
  // The module alone: no service worker between the page and the network (page.route, which
  // cuts requests here, does not see requests that pass through one).
  const ctx = await browser.newContext({ ...PHONE, geolocation: NEAR, bypassCSP: true, serviceWorkers: 'block' });
  const base = { worker_id: w.id, assignment_id: claim.id, task_id: task.id, task_title: task.title, lat: NEAR.latitude, lng: NEAR.longitude };
  try {
    let page = await modulePage(ctx, w.token);
    let item;

    await t.test('saved on the phone with its photo, intact after a reload', async () => {
      item = await saveReport(page, { ...base, notes: 'offline module' }, [photoPng(3000, 2000, 60)]);
      assert.match(item.id, /^r-[0-9a-f]{32}$/);
      assert.equal(item.state, 'saved');
      assert.ok(Date.parse(item.made_at) <= Date.now());
      await page.close();
      page = await modulePage(ctx, w.token);
      const [again] = await items(page, w.id);
      assert.equal(again.id, item.id);
      assert.equal(again.state, 'saved');
      const ok = await page.evaluate(async (sha) => {
        const p = await window.gpOffline.getPhoto(sha);
        return (await window.gpOffline.sha256Hex(await p.blob.arrayBuffer())) === sha && p.type === 'image/jpeg';
      }, again.photos[0]);
      assert.ok(ok, 'the stored photo still hashes to its address');
    });

    await t.test('offline: nothing is lost, the item waits with a backoff', async () => {
      await ctx.setOffline(true);
      const s = await sync(page, w.id);
      assert.equal(s.sent, 0);
      assert.equal(s.pending, 1);
      assert.equal(s.waiting.status, 0);
      const [it] = await items(page, w.id);
      assert.equal(it.state, 'saved');
      assert.equal(it.attempts, 1);
      assert.ok(it.next_try_at > Date.now(), 'a backoff before the next try');
      const s2 = await sync(page, w.id, false);
      assert.equal(s2.sent, 0, 'not retried before its time');
      await ctx.setOffline(false);
      assert.equal(count(item.id), 0);
    });

    await t.test('an upload cut off is sent again; then the report, once', needEvidence, async () => {
      let cut = 0;
      await page.route('**/api/v1/evidence/**', (route) => (cut++ ? route.continue() : route.abort('connectionreset')));
      const s = await sync(page, w.id);
      assert.equal(s.sent, 0);
      assert.equal(cut, 1);
      assert.equal(count(item.id), 0, 'no report before its evidence');
      const s2 = await sync(page, w.id);
      assert.equal(s2.sent, 1);
      await page.unroute('**/api/v1/evidence/**');
      const [it] = await items(page, w.id);
      assert.equal(it.state, 'received');
      assert.equal(count(item.id), 1);
      const s3 = await sync(page, w.id);
      assert.equal(s3.sent + s3.pending, 0, 'nothing left to send');
    });

    await t.test('a reply lost after the server applied it: the retry gets the first answer', async () => {
      const task2 = await world.task({ evidence_photos: 0 });
      const claim2 = await stack.ok('POST', `/api/v1/tasks/${task2.id}/claim`, { token: w.token });
      const it2 = await saveReport(page, { ...base, assignment_id: claim2.id, task_id: task2.id, notes: 'lost reply' });
      let dropped = 0;
      await page.route('**/api/v1/reports', async (route) => {
        if (dropped++) return route.continue();
        await route.fetch(); // the server gets it and answers ...
        await route.abort('connectionreset'); // ... the phone never sees the answer
      });
      const s = await sync(page, w.id);
      assert.equal(s.sent, 0);
      assert.equal(count(it2.id), 1, 'the server applied it');
      const s2 = await sync(page, w.id);
      assert.equal(s2.sent, 1);
      await page.unroute('**/api/v1/reports');
      const it = (await items(page, w.id)).find((i) => i.id === it2.id);
      assert.equal(it.state, 'received');
      assert.equal(count(it2.id), 1, 'still once');
    });

    await t.test('a refusal keeps the server code; the worker may retry or remove it', async () => {
      const it3 = await saveReport(page, { ...base, assignment_id: 999999999, notes: 'not mine' });
      const s = await sync(page, w.id);
      assert.equal(s.refused, 1);
      let it = (await items(page, w.id)).find((i) => i.id === it3.id);
      assert.equal(it.state, 'refused');
      assert.equal(it.error.status, 404);
      assert.equal(it.error.code, 'assignment_not_found');
      await page.evaluate((id) => window.gpOffline.retryItem(id), it3.id);
      it = (await items(page, w.id)).find((i) => i.id === it3.id);
      assert.equal(it.state, 'saved');
      await sync(page, w.id);
      await page.evaluate((id) => window.gpOffline.removeItem(id), it3.id);
      assert.equal((await items(page, w.id)).some((i) => i.id === it3.id), false);
      // An item still waiting cannot be removed (it would be lost unsent).
      const it4 = await saveReport(page, { ...base, assignment_id: 999999998, notes: 'waiting' });
      await assert.rejects(page.evaluate((id) => window.gpOffline.removeItem(id), it4.id), /not yet sent/);
    });
  } finally {
    await ctx.close();
  }
});
