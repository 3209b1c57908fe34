// A small i18n (as the worker app's): zh-CN built in and the default, en loaded on demand. Keys
// are the zh-CN object's paths, so a misspelt key fails the type check. Element Plus's own
// texts (pagination, date pickers) follow through elLocale.
import { ref, shallowRef } from 'vue';
import zhCN, { type Messages } from './zh-CN';
import elZh from 'element-plus/es/locale/lang/zh-cn';

export type Locale = 'zh-CN' | 'en';
type Leaves<T, P extends string = ''> = {
  [K in keyof T & string]: T[K] extends string ? `${P}${K}` : Leaves<T[K], `${P}${K}.`>;
}[keyof T & string];
export type MessageKey = Leaves<Messages>;

const loaded: Partial<Record<Locale, Messages>> = { 'zh-CN': zhCN };
export const locale = ref<Locale>('zh-CN');
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const elLocale = shallowRef<any>(elZh);

function lookup(m: Messages, key: string): string | undefined {
  let cur: unknown = m;
  for (const part of key.split('.')) {
    if (cur && typeof cur === 'object') cur = (cur as Record<string, unknown>)[part];
    else return undefined;
  }
  return typeof cur === 'string' ? cur : undefined;
}

export function t(key: MessageKey, params?: Record<string, string | number>): string {
  const m = loaded[locale.value] ?? zhCN;
  const s = lookup(m, key) ?? lookup(zhCN, key) ?? key;
  return params ? s.replace(/\{(\w+)\}/g, (_x, k: string) => String(params[k] ?? `{${k}}`)) : s;
}

/** A key built at run time (roles, states, error codes), or fallback when there is none. */
export function tOr(key: string, fallback: string): string {
  const m = loaded[locale.value] ?? zhCN;
  return lookup(m, key) ?? lookup(zhCN, key) ?? fallback;
}

export async function setLocale(l: Locale): Promise<void> {
  if (!loaded[l]) loaded[l] = (await import('./en')).default;
  elLocale.value = l === 'en' ? (await import('element-plus/es/locale/lang/en')).default : elZh;
  locale.value = l;
  document.documentElement.lang = l;
  localStorage.setItem('gp.console.lang', l);
}

/** The language chosen before (?lang= wins: the tests and a shared link can pick one). */
export async function initLocale(): Promise<void> {
  const q = new URLSearchParams(location.search).get('lang');
  const l = q === 'en' || q === 'zh-CN' ? q : localStorage.getItem('gp.console.lang');
  if (l === 'en') await setLocale('en');
}

export function fmtTime(iso: string | null | undefined): string {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  return d.toLocaleString(locale.value, { year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit' });
}

export function fmtNum(n: number | null | undefined): string {
  return n === null || n === undefined ? '—' : n.toLocaleString(locale.value);
}
