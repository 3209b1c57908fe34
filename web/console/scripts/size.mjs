// The first-load weight of each built app: the entry chunk and every chunk it imports
// statically (what the browser fetches before the first screen runs), gzipped at level 9 as
// gridpointsd serves them. Fails the build above the budget: screens, Element Plus components
// and ECharts load with the screen that needs them.
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const APPS = [
  { name: 'console', budget: 250 * 1024 },
  { name: 'board', budget: 80 * 1024 },
];
const kb = (n) => (n / 1024).toFixed(1);
let over = false;
for (const app of APPS) {
  const out = new URL(`../../../build/web/${app.name}/`, import.meta.url);
  const manifest = JSON.parse(readFileSync(new URL('.vite/manifest.json', out), 'utf8'));
  const gz = (f) => gzipSync(readFileSync(new URL(f, out)), { level: 9 }).length;
  const seen = new Set();
  const js = [];
  const walk = (key) => {
    if (seen.has(key)) return;
    seen.add(key);
    js.push(manifest[key].file);
    (manifest[key].imports ?? []).forEach(walk);
  };
  walk(Object.keys(manifest).find((k) => manifest[k].isEntry));
  const jsGz = js.reduce((s, f) => s + gz(f), 0);
  const allJs = Object.values(manifest).filter((c) => c.file.endsWith('.js'));
  const allGz = allJs.reduce((s, c) => s + gz(c.file), 0);
  console.log(`${app.name}: first-load JS ${kb(jsGz)} KB gzipped in ${js.length} file(s) (budget ${kb(app.budget)} KB); all JS ${kb(allGz)} KB in ${allJs.length} chunks`);
  if (jsGz > app.budget) {
    console.error(`${app.name}: first-load JS over budget`);
    over = true;
  }
}
if (over) process.exit(1);
