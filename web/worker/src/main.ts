import { createApp } from 'vue';
import 'vant/es/style/base.css';
import './styles.css';
import App from './App.vue';
import { router } from './router';
import { applySettings } from './stores/settings';

async function boot(): Promise<void> {
  await applySettings();
  createApp(App).use(router).mount('#app');
  // The service worker makes the app open offline; registered after the first screen so that
  // its precaching does not compete with it for a slow link.
  if ('serviceWorker' in navigator && import.meta.env.PROD) {
    window.addEventListener('load', () => {
      void navigator.serviceWorker.register(`${import.meta.env.BASE_URL}sw.js`, { scope: import.meta.env.BASE_URL });
    });
  }
}

void boot();
