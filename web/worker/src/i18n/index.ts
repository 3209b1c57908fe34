// A small i18n: zh-CN is built in (the default, so the first screen needs no extra request),
// en is loaded on demand. Keys are the zh-CN object's paths, so a missing or misspelt key in a
// view or in en.ts fails the type check.
import { ref } from 'vue';
import zhCN, { type Messages } from './zh-CN';

export type Locale = 'zh-CN' | 'en';
type Leaves<T, P extends string = ''> = {
  [K in keyof T & string]: T[K] extends string ? `${P}${K}` : Leaves<T[K], `${P}${K}.`>;
}[keyof T & string];
export type MessageKey = Leaves<Messages>;

const loaded: Partial<Record<Locale, Messages>> = { 'zh-CN': zhCN };
export const locale = ref<Locale>('zh-CN');

function lookup(m: Messages, key: string): string | undefined {
  let cur: unknown = m;
  for (const part of key.split('.')) {
    if (cur && typeof cur === 'object') cur = (cur as Record<string, unknown>)[part];
    else return undefined;
  }
  return typeof cur === 'string' ? cur : undefined;
}

/** The message for key in the current locale, with {name} placeholders filled. */
export function t(key: MessageKey, params?: Record<string, string | number>): string {
  const m = loaded[locale.value] ?? zhCN;
  const s = lookup(m, key) ?? lookup(zhCN, key) ?? key;
  return params ? s.replace(/\{(\w+)\}/g, (_x, k: string) => String(params[k] ?? `{${k}}`)) : s;
}

/** A message key when it exists, for keys built at run time (error codes, states). */
export function tOr(key: string, fallback: string, params?: Record<string, string | number>) {
  const m = loaded[locale.value] ?? zhCN;
  const s = lookup(m, key) ?? lookup(zhCN, key);
  return s === undefined ? fallback : t(key as MessageKey, params);
}

export async function setLocale(l: Locale): Promise<void> {
  if (!loaded[l]) loaded[l] = (await import('./en')).default;
  // Vant's own texts (dialog buttons, pull-to-refresh) follow the app's language.
  const { Locale: VantLocale } = await import('vant/es/locale');
  if (l === 'en') {
    const enUS = (await import('vant/es/locale/lang/en-US')).default;
    VantLocale.use('en-US', enUS);
  } else {
    const zh = (await import('vant/es/locale/lang/zh-CN')).default;
    VantLocale.use('zh-CN', zh);
  }
  locale.value = l;
  document.documentElement.lang = l;
}

/** Dates and times as a worker reads them, in their locale. */
export function fmtTime(iso: string | null | undefined): string {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  return d.toLocaleString(locale.value, {
    month: 'numeric',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
  });
}

export function fmtDistance(m: number | null | undefined): string {
  if (m === null || m === undefined || !Number.isFinite(m)) return '';
  return m < 1000 ? t('unit.m', { n: Math.round(m) }) : t('unit.km', { n: (m / 1000).toFixed(1) });
}
