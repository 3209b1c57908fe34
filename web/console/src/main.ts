import { createApp } from 'vue';
import 'element-plus/theme-chalk/base.css';
import 'element-plus/theme-chalk/el-message.css';
import 'element-plus/theme-chalk/el-message-box.css';
import './styles.css';
import App from './App.vue';
import { router } from './router';
import { initLocale } from './i18n';

async function boot(): Promise<void> {
  await initLocale();
  createApp(App).use(router).mount('#app');
}
void boot();
