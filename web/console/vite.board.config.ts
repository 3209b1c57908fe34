import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';
import vue from '@vitejs/plugin-vue';

// The public points board (积分公示), no login, served under /board/ (web.dir/board/): a page of
// its own, without Element Plus, small enough for a phone that scanned the notice's QR code.
export default defineConfig({
  root: fileURLToPath(new URL('./board', import.meta.url)),
  base: '/board/',
  plugins: [vue()],
  build: {
    outDir: fileURLToPath(new URL('../../build/web/board', import.meta.url)),
    emptyOutDir: true,
    target: 'es2020',
    manifest: true,
    modulePreload: { polyfill: false },
  },
});
