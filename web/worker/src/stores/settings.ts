// Settings kept on the phone: language and the large-text mode (适老化). Applied before the
// first screen renders, so a worker who chose large text never sees small text flash.
import { reactive } from 'vue';
import { setLocale, type Locale } from '../i18n';

const KEY = 'gp.settings';

interface Settings {
  locale: Locale;
  large: boolean;
}

function load(): Settings {
  try {
    const s = JSON.parse(localStorage.getItem(KEY) ?? '{}') as Partial<Settings>;
    return { locale: s.locale === 'en' ? 'en' : 'zh-CN', large: s.large === true };
  } catch {
    return { locale: 'zh-CN', large: false };
  }
}

export const settings = reactive<Settings>(load());

function save(): void {
  localStorage.setItem(KEY, JSON.stringify({ locale: settings.locale, large: settings.large }));
}

export function applyLarge(): void {
  document.documentElement.classList.toggle('gp-large', settings.large);
}

export async function applySettings(): Promise<void> {
  applyLarge();
  if (settings.locale !== 'zh-CN') await setLocale(settings.locale);
}

export async function chooseLocale(l: Locale): Promise<void> {
  await setLocale(l);
  settings.locale = l;
  save();
}

export function setLarge(on: boolean): void {
  settings.large = on;
  applyLarge();
  save();
}
