import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { defineConfig, type Plugin } from 'vite';
import vue from '@vitejs/plugin-vue';
import Components from 'unplugin-vue-components/vite';
import { VantResolver } from '@vant/auto-import-resolver';

// The service worker: sw/sw.js with the list of every emitted file (and the public ones) and a
// version derived from them, emitted as sw.js at the app's root (scope /app/).
function serviceWorker(): Plugin {
  return {
    name: 'gp-service-worker',
    apply: 'build',
    enforce: 'post',
    generateBundle(_opts, bundle) {
      const files = Object.keys(bundle).filter((f) => !f.endsWith('.map') && f !== 'sw.js' && !f.startsWith('.vite/'));
      // index.html is emitted by Vite's own html plugin, possibly after this hook: named here.
      const pub = ['index.html', 'manifest.webmanifest', 'icons/icon.svg', 'icons/icon-192.png', 'icons/icon-512.png'];
      const all = [...new Set([...files, ...pub])].sort();
      const version = createHash('sha256').update(all.join('\n')).update(readFileSync(new URL('./sw/sw.js', import.meta.url))).digest('hex').slice(0, 12);
      const src = readFileSync(new URL('./sw/sw.js', import.meta.url), 'utf8')
        .replace('__VERSION__', version)
        .replace('__PRECACHE_MANIFEST__', JSON.stringify(all));
      this.emitFile({ type: 'asset', fileName: 'sw.js', source: src });
    },
  };
}

// Vant's icon font comes inlined in its CSS as a 28 KB base64 woff2 (followed by a fallback on a
// CDN, which the CSP refuses and an offline phone cannot reach). Inlined, it would weigh on the
// first screen, which needs no icon: it becomes a file of its own (assets/, content-hashed, so
// cached for good and precached by the service worker) that the browser fetches only when an
// icon is drawn, and the CDN fallback is dropped.
function vantIconFont(): Plugin {
  const MARK = '__GP_VANT_ICON_WOFF2__';
  let font: Buffer | null = null;
  return {
    name: 'gp-vant-icon-font',
    apply: 'build',
    enforce: 'pre',
    transform(code, id) {
      if (!/vant\/es\/icon\/index\.css$/.test(id)) return null;
      const re = /url\(data:font\/woff2;charset=utf-8;base64,([A-Za-z0-9+/=]+)\) format\("woff2"\),url\([^)]*\) format\("woff"\)/;
      const m = re.exec(code);
      if (!m) this.error('Vant icon font not found in vant/es/icon/index.css: update gp-vant-icon-font');
      font = Buffer.from(m[1], 'base64');
      return code.replace(re, `url(${MARK}) format("woff2")`);
    },
    generateBundle(_opts, bundle) {
      if (!font) return;
      const fileName = `assets/vant-icon-${createHash('sha256').update(font).digest('hex').slice(0, 10)}.woff2`;
      this.emitFile({ type: 'asset', fileName, source: font });
      for (const f of Object.values(bundle))
        if (f.type === 'asset' && f.fileName.endsWith('.css') && typeof f.source === 'string')
          f.source = f.source.replaceAll(MARK, `/app/${fileName}`);
    },
  };
}

export default defineConfig({
  base: '/app/',
  plugins: [vue(), Components({ resolvers: [VantResolver()], dts: false }), vantIconFont(), serviceWorker()],
  build: {
    outDir: fileURLToPath(new URL('../../build/web/app', import.meta.url)),
    emptyOutDir: true,
    target: 'es2020',
    manifest: true,
    modulePreload: { polyfill: false },
    chunkSizeWarningLimit: 200,
  },
});
