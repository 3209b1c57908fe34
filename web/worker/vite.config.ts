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
    generateBundle(_opts, bundle) {
      const files = Object.keys(bundle).filter((f) => !f.endsWith('.map') && f !== 'sw.js' && !f.startsWith('.vite/'));
      const pub = ['manifest.webmanifest', 'icons/icon.svg', 'icons/icon-192.png', 'icons/icon-512.png'];
      const all = [...new Set([...files, ...pub])].sort();
      const version = createHash('sha256').update(all.join('\n')).update(readFileSync(new URL('./sw/sw.js', import.meta.url))).digest('hex').slice(0, 12);
      const src = readFileSync(new URL('./sw/sw.js', import.meta.url), 'utf8')
        .replace('__VERSION__', version)
        .replace('__PRECACHE_MANIFEST__', JSON.stringify(all));
      this.emitFile({ type: 'asset', fileName: 'sw.js', source: src });
    },
  };
}

export default defineConfig({
  base: '/app/',
  plugins: [vue(), Components({ resolvers: [VantResolver()], dts: false }), serviceWorker()],
  build: {
    outDir: fileURLToPath(new URL('../../build/web/app', import.meta.url)),
    emptyOutDir: true,
    target: 'es2020',
    manifest: true,
    modulePreload: { polyfill: false },
    chunkSizeWarningLimit: 200,
  },
});
