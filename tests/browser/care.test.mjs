// Browser tests of the care visits in the worker app (issue 15; docs/CARE.md "In the worker
// app"): Chromium as a phone against a real gridpointsd with its own PostgreSQL and Redis.
//   GRIDPOINTS_BIN=build/asan/gridpointsd node --test tests/browser/care.test.mjs
// A worker of the demo-like street has three residents to visit: red and overdue, yellow and
// due now, blue not yet due. Screenshots go to build/browser-artifacts/ (care-*.png).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Stack, sleep } from './lib/stack.mjs';
import { makeWorld, PLACE, NEAR } from './lib/world.mjs';
import { PHONE, launch, photoPng, shot } from './lib/browser.mjs';

const stack = await Stack.up('care');
let world;
let browser;
try {
  world = await makeWorld(stack);
  browser = await launch();
} catch (e) {
  await stack.stop();
  throw e;
}

after(async () => {
  await browser?.close();
  const errors = stack.errorLines();
  await stack.stop();
  assert.deepEqual(errors, [], 'gridpointsd logged errors or a sanitizer report');
});

const app = (path = '') => `${stack.url}/app/${path}`;
const phoneCtx = (opts = {}) => browser.newContext({ ...PHONE, geolocation: NEAR, ...opts });
const A = () => world.admin.token;
let n = 0;

/** A resident on a list of the micro-grid, at PLACE, with the worker responsible. */
async function resident(worker, colour, name, over = {}) {
  n++;
  return stack.ok('POST', '/api/v1/care/residents', {
    token: A(),
    body: {
      unit_id: world.micro, colour, categories: ['living_alone', 'elderly'], worker_id: worker.id, name,
      phone: `1390000${String(1000 + n).slice(-4)}`, address: `锦华路 7 号 3 栋 ${n} 单元 501`,
      health_notes: '高血压，每天早上吃药', lat: PLACE.latitude, lng: PLACE.longitude, ...over,
    },
  });
}

/** Moves a resident's open due visit: due `dueH` hours ago, grace over `graceH` hours ago. */
function shiftDue(residentId, dueH, graceH) {
  stack.sql(
    `UPDATE care_dues SET due_at = now() - make_interval(hours => $2), grace_until = now() - make_interval(hours => $3)
      WHERE resident_id = $1 AND state = 'open'`,
    residentId, dueH, graceH,
  );
}

const visitsOf = (residentId) => stack.sql('SELECT outcome, help_kind, photo_consent, cardinality(photos), points FROM care_visits WHERE resident_id = $1', residentId);

async function uiLogin(page, w) {
  await page.goto(app('login'));
  await page.locator('[data-test=phone] input').fill(w.phone);
  await page.locator('[data-test=password] input').fill(w.password);
  await page.locator('[data-test=login]').click();
  await page.waitForSelector('[data-screen=tasks]');
}

let w;
let red;
let yellow;
let blue;
before(async () => {
  await stack.ok('POST', `/api/v1/care/budgets/${world.grid}/fund`, { token: A(), body: { amount: 1000, memo: '走访积分' } });
  w = await world.worker('李桂兰');
  red = await resident(w, 'red', '张秀珍');
  yellow = await resident(w, 'yellow', '刘德明');
  blue = await resident(w, 'blue', '陈玉兰');
  shiftDue(red.id, 9 * 24, 8 * 24); // red: weekly, grace of a day, 9 days late: overdue
  shiftDue(yellow.id, 2, -24); // yellow: due 2 hours ago, grace until tomorrow
  // blue: as listed, due in a month
});

test('due list and visit form at phone size, in zh-CN, English and large text; the empty state', async () => {
  // One phone, logged in once; the language and the text size are the worker's settings (the
  // Me screen), set here in the phone's storage and applied by a reload.
  const ctx = await phoneCtx();
  try {
    const page = await ctx.newPage();
    await uiLogin(page, w);
    await page.locator('[data-test=tab-visits]').click();
    for (const [locale, large] of [['zh-CN', false], ['en', false], ['zh-CN', true]]) {
      await page.evaluate((s) => localStorage.setItem('gp.settings', s), JSON.stringify({ locale, large }));
      await page.goto(app('visits'));
      const tag = large ? `${locale}-large` : locale;
      await page.waitForSelector('[data-screen=visits] [data-test=due]');
      const order = await page.locator('[data-test=due]').evaluateAll((els) => els.map((e) => [Number(e.dataset.resident), e.dataset.state]));
      assert.deepEqual(order, [[red.id, 'overdue'], [yellow.id, 'due'], [blue.id, 'upcoming']], 'most urgent first');
      const first = await page.locator('[data-test=due]').first().innerText();
      // The colour is said in words, not by colour alone; the worker's view carries the name.
      assert.match(first, locale === 'en' ? /Red/ : /红色/);
      assert.match(first, /张秀珍/);
      assert.match(first, locale === 'en' ? /Overdue/ : /已超期/);
      await page.locator('[data-test=tab-visits] .van-icon').waitFor(); // the tab bar is drawn
      await sleep(300);
      await shot(page, `care-${tag}-visits`);
      // Large touch targets: every card and every outcome button at least 48 px high.
      const cardH = await page.locator('[data-test=due]').first().evaluate((e) => e.getBoundingClientRect().height);
      assert.ok(cardH >= 48, `card ${cardH}px`);

      await page.locator(`[data-test=due][data-resident="${yellow.id}"]`).click();
      await page.waitForSelector('[data-screen=visit] [data-test=resident]');
      await page.locator('[data-test=distance]').waitFor();
      await page.locator('[data-test=outcome-needs_help]').click();
      await page.locator('[data-test=help-meals]').click();
      const btnH = await page.locator('[data-test=outcome-well]').evaluate((e) => e.getBoundingClientRect().height);
      assert.ok(btnH >= 48, `outcome button ${btnH}px`);
      if (large) {
        const size = await page.locator('[data-test=outcome-well]').evaluate((e) => getComputedStyle(e).fontSize);
        assert.equal(size, '22px', 'large text is large');
      }
      await sleep(200);
      await shot(page, `care-${tag}-visit`);
      // No photo without consent: the camera appears only once the resident agreed.
      assert.equal(await page.locator('[data-test=camera]').count(), 0);
      await page.locator('[data-test=consent]').click();
      await page.locator('[data-test=camera]').waitFor({ state: 'attached' });
      await page.locator('[data-test=consent]').scrollIntoViewIfNeeded();
      await shot(page, `care-${tag}-visit-consent`);
    }
  } finally {
    await ctx.close();
  }
  // A worker with no one to visit sees it said plainly.
  const idle = await world.worker('赵建国');
  const ctx2 = await phoneCtx();
  try {
    const page = await ctx2.newPage();
    await uiLogin(page, idle);
    await page.goto(app('visits'));
    await page.locator('[data-test=visits-empty]').waitFor();
    await shot(page, 'care-zh-CN-visits-empty');
  } finally {
    await ctx2.close();
  }
});

test('a "well" visit online, with two photos after consent: the list updates and the points rise', async () => {
  const ctx = await phoneCtx();
  try {
    const page = await ctx.newPage();
    await uiLogin(page, w);
    const b0 = await stack.ok('GET', '/api/v1/workers/me/balance', { token: w.token });
    await page.goto(app('visits'));
    await page.locator(`[data-test=due][data-resident="${yellow.id}"]`).click();
    await page.waitForSelector('[data-screen=visit] [data-test=resident]');
    // Saving without an outcome says what is missing and sends nothing.
    await page.locator('[data-test=save-visit]').click();
    await page.locator('[data-test=form-error]').waitFor();
    await page.locator('[data-test=outcome-well]').click();
    await page.locator('[data-test=visit-notes] textarea').fill('精神很好，刚从菜市场回来。');
    // The whole consent row is the switch (a large target).
    await page.getByText('居民同意拍照').click();
    assert.equal(await page.locator('[data-test=consent]').getAttribute('aria-checked'), 'true');
    await page.setInputFiles('[data-test=camera]', [
      { name: 'visit-1.png', mimeType: 'image/png', buffer: photoPng(1200, 900, 60) },
      { name: 'visit-2.png', mimeType: 'image/png', buffer: photoPng(900, 1200, 200) },
    ]);
    await page.locator('[data-test=photo]').nth(1).waitFor();
    await page.locator('[data-test=save-visit]').click();
    await page.waitForSelector('[data-screen=visits]');
    // Received by the server: the resident's next visit is a week away.
    await page.waitForSelector(`[data-test=due][data-resident="${yellow.id}"][data-state=upcoming]`, { timeout: 20000 });
    assert.equal(await page.locator('[data-test=visit-item]').count(), 0, 'nothing left waiting');
    assert.deepEqual(visitsOf(yellow.id), [['well', '', 't', '2', '8']], 'one visit, with its two photos and consent, paid 8');
    const b1 = await stack.ok('GET', '/api/v1/workers/me/balance', { token: w.token });
    assert.equal(b1.available + b1.pending, b0.available + b0.pending + 8, 'the points rose by the yellow visit');
    await shot(page, 'care-zh-CN-visits-after');
  } finally {
    await ctx.close();
  }
});

test("a phone shared by two workers: offline, the second never sees the first one's saved care list", async () => {
  // The service worker keeps the last answer of every GET for offline use -- per login. Worker
  // A opens the due list (names, phones, health notes: saved on the phone); worker B logs in on
  // the same phone without A logging out, loses the network and opens the visits tab: B gets
  // "offline", never A's residents.
  const other = await world.worker('周志强');
  const ctx = await phoneCtx();
  try {
    const page = await ctx.newPage();
    await uiLogin(page, w);
    await page.goto(app('visits'));
    await page.locator(`[data-test=due][data-resident="${red.id}"]`).waitFor();
    // A's list is saved: offline, a reload still shows it (marked as saved), to A.
    await ctx.setOffline(true);
    await page.reload();
    await page.locator(`[data-test=due][data-resident="${red.id}"]`).waitFor();
    await ctx.setOffline(false);

    await page.evaluate(() => localStorage.clear()); // A's session gone from the app, not logged out
    await uiLogin(page, other);
    await ctx.setOffline(true);
    await page.goto(app('visits'));
    await page.locator('[data-screen=visits] [data-test=error]').waitFor();
    assert.equal(await page.locator('[data-test=due]').count(), 0, "no resident of A's list");
    assert.doesNotMatch(await page.locator('[data-screen=visits]').innerText(), /张秀珍|刘德明|陈玉兰/);
    await shot(page, 'care-zh-CN-visits-shared-phone-offline');
  } finally {
    await ctx.setOffline(false);
    await ctx.close();
  }
});

test('a "needs help" visit offline is queued, then synced once when the network is back', async () => {
  const ctx = await phoneCtx();
  try {
    const page = await ctx.newPage();
    await uiLogin(page, w);
    await page.goto(app('visits'));
    await page.locator(`[data-test=due][data-resident="${red.id}"]`).waitFor();
    await ctx.setOffline(true);
    await page.locator(`[data-test=due][data-resident="${red.id}"]`).click();
    await page.waitForSelector('[data-screen=visit] [data-test=resident]');
    await page.locator('[data-test=outcome-needs_help]').click();
    await page.locator('[data-test=help-repairs]').click();
    await page.locator('[data-test=visit-notes] textarea').fill('厨房水管漏水，需要找人修。');
    await page.locator('[data-test=save-visit]').click();
    await page.waitForSelector('[data-screen=visits]');
    const item = page.locator('[data-test=visit-item]').first();
    await item.waitFor();
    const cvid = await item.getAttribute('data-id');
    assert.equal(await item.getAttribute('data-state'), 'saved');
    await page.locator('[data-test=visits-queued]').waitFor();
    await shot(page, 'care-zh-CN-visits-queued');
    assert.equal(visitsOf(red.id).length, 0, 'nothing sent while offline');

    await ctx.setOffline(false);
    await page.waitForSelector(`[data-test=due][data-resident="${red.id}"][data-state=upcoming]`, { timeout: 30000 });
    assert.equal(await page.locator('[data-test=visit-item]').count(), 0);
    assert.deepEqual(visitsOf(red.id), [['needs_help', 'repairs', 'f', '0', '10']], 'one visit, late but paid');
    const [[fu]] = stack.sql("SELECT count(*) FROM care_followups WHERE resident_id = $1 AND kind = 'needs_help'", red.id);
    assert.equal(fu, '1', 'staff got one follow-up');

    // The phone dropped the notes of the visit the server has.
    const kept = await page.evaluate(
      (id) =>
        new Promise((res) => {
          const r = indexedDB.open('gridpoints-worker');
          r.onsuccess = () => {
            const g = r.result.transaction('outbox').objectStore('outbox').get(id);
            g.onsuccess = () => res(g.result.notes);
          };
        }),
      cvid,
    );
    assert.equal(kept, '');
    // The same visit sent again, as the phone had it (its reply lost on the way): the same
    // answer, still one visit.
    const before = stack.sql('SELECT id, points FROM care_visits WHERE resident_id = $1', red.id);
    await page.evaluate(async (id) => {
      const db = await new Promise((res, rej) => {
        const r = indexedDB.open('gridpoints-worker');
        r.onsuccess = () => res(r.result);
        r.onerror = () => rej(r.error);
      });
      await new Promise((res, rej) => {
        const tx = db.transaction('outbox', 'readwrite');
        const os = tx.objectStore('outbox');
        const g = os.get(id);
        g.onsuccess = () => os.put({ ...g.result, state: 'saved', visit_id: undefined, notes: '厨房水管漏水，需要找人修。' });
        tx.oncomplete = res;
        tx.onerror = () => rej(tx.error);
      });
      window.dispatchEvent(new Event('online'));
    }, cvid);
    // The visit id is taken from the same read that sees the item received: a later read
    // could race the app's own bookkeeping of its outbox.
    // (waitForFunction treats an async predicate's promise as truthy: poll from here.)
    let again;
    for (let t0 = Date.now(); !again && Date.now() - t0 < 20000; await new Promise((r) => setTimeout(r, 200))) {
      again = await page.evaluate(async (id) => {
        const db = await new Promise((res) => {
          const r = indexedDB.open('gridpoints-worker');
          r.onsuccess = () => res(r.result);
        });
        const it = await new Promise((res) => {
          const g = db.transaction('outbox').objectStore('outbox').get(id);
          g.onsuccess = () => res(g.result);
        });
        return it.state === 'received' && it.visit_id;
      }, cvid);
    }
    assert.equal(String(again), before[0][0], 'the replay answers the same visit');
    assert.deepEqual(stack.sql('SELECT id, points FROM care_visits WHERE resident_id = $1', red.id), before, 'still one visit');
    const [[awards]] = stack.sql("SELECT count(*) FROM care_visits v JOIN ledger_txns t ON t.id = v.award_txn WHERE v.resident_id = $1", red.id);
    assert.equal(awards, '1', 'paid once');
    const api = await stack.ok('GET', '/api/v1/care/due', { token: w.token });
    assert.deepEqual(api.items.filter((d) => d.resident_id === red.id).map((d) => d.overdue), [false], 'the overdue visit is done; the next is open');
  } finally {
    await ctx.close();
  }
});
