import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';
import vue from '@vitejs/plugin-vue';
import Components from 'unplugin-vue-components/vite';
import { ElementPlusResolver } from 'unplugin-vue-components/resolvers';

// The staff console and the street dashboard, served by gridpointsd under /console/ (web.dir/
// console/). Element Plus components (and their CSS) are imported where a template uses them,
// screens are chunks of their own (src/router.ts), ECharts is imported piecewise (src/charts.ts).
export default defineConfig({
  base: '/console/',
  plugins: [vue(), Components({ resolvers: [ElementPlusResolver({ importStyle: 'css' })], dts: false })],
  build: {
    outDir: fileURLToPath(new URL('../../build/web/console', import.meta.url)),
    emptyOutDir: true,
    target: 'es2020',
    manifest: true,
    modulePreload: { polyfill: false },
    chunkSizeWarningLimit: 600,
  },
});
