// The first-load weight of the built app: the entry chunk and every chunk it imports
// statically (what the browser must fetch before the first screen runs), gzipped at level 9
// as gridpointsd serves them. Fails the build above the budget (issue 13: 200 KB of JS).
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const BUDGET_JS = 200 * 1024;
const out = new URL('../../../build/web/app/', import.meta.url);
const manifest = JSON.parse(readFileSync(new URL('.vite/manifest.json', out), 'utf8'));
const gz = (f) => gzipSync(readFileSync(new URL(f, out)), { level: 9 }).length;

const seen = new Set();
const js = [];
const css = new Set();
function walk(key) {
  if (seen.has(key)) return;
  seen.add(key);
  const c = manifest[key];
  js.push(c.file);
  (c.css ?? []).forEach((f) => css.add(f));
  (c.imports ?? []).forEach(walk);
}
const entry = Object.keys(manifest).find((k) => manifest[k].isEntry);
walk(entry);

const jsGz = js.reduce((s, f) => s + gz(f), 0);
const cssGz = [...css].reduce((s, f) => s + gz(f), 0);
const allJs = Object.values(manifest).filter((c) => c.file.endsWith('.js'));
const allGz = allJs.reduce((s, c) => s + gz(c.file), 0);
const kb = (n) => (n / 1024).toFixed(1);
console.log(`first-load JS: ${kb(jsGz)} KB gzipped in ${js.length} file(s) (budget ${kb(BUDGET_JS)} KB); first-load CSS: ${kb(cssGz)} KB gzipped`);
console.log(`all JS of the app: ${kb(allGz)} KB gzipped in ${allJs.length} chunks (screens load on demand)`);
if (jsGz > BUDGET_JS) {
  console.error(`first-load JS over budget: ${kb(jsGz)} KB > ${kb(BUDGET_JS)} KB`);
  process.exit(1);
}
