// The session: the token and who the worker is, kept on the phone so that the app opens
// offline with the worker's own data (and their queued reports) after a restart.
import { reactive } from 'vue';
import { api, setToken, setUnauthorizedHandler } from '../api/client';
import type { Me } from '../api/types';

const KEY = 'gp.session';
const DEVICE_KEY = 'gp.device';

interface Session {
  token: string | null;
  expiresAt: string | null;
  me: Me | null;
}

function load(): Session {
  try {
    const s = JSON.parse(localStorage.getItem(KEY) ?? 'null') as Session | null;
    if (s?.token) return s;
  } catch {
    /* a damaged entry: start logged out */
  }
  return { token: null, expiresAt: null, me: null };
}

export const session = reactive<Session>(load());
setToken(session.token);

function save(): void {
  localStorage.setItem(KEY, JSON.stringify(session));
}

export function loggedIn(): boolean {
  return !!session.token && (!session.expiresAt || Date.parse(session.expiresAt) > Date.now());
}

/** The grid above (or at) the worker's unit: the one whose points board and rank apply. */
export function myGridId(): number | null {
  const path = (session.me as (Me & { unit_path?: { id: number; level: string }[] }) | null)?.unit_path;
  const g = path?.find((u) => u.level === 'grid');
  return g?.id ?? null;
}

async function start(token: string, expiresAt: string | null): Promise<void> {
  session.token = token;
  session.expiresAt = expiresAt;
  setToken(token);
  const me = await api.get('/api/v1/me');
  session.me = me.data as unknown as Me;
  save();
}

export async function loginWithPassword(phone: string, password: string): Promise<void> {
  const device = localStorage.getItem(DEVICE_KEY) ?? undefined;
  const r = await api.post('/api/v1/auth/login', { body: { phone, password, device_token: device } });
  if (r.data.device_token) localStorage.setItem(DEVICE_KEY, r.data.device_token);
  await start(r.data.token, r.data.expires_at);
}

export type WechatAnswer = { bound: true } | { bound: false; ticket: string; expiresAt: string | null };

/** POST /api/v1/auth/wechat: a bound openid logs in; an unbound one gets a bind ticket. */
export async function loginWithWechat(code: string, kind: 'web' | 'mini' = 'web'): Promise<WechatAnswer> {
  const r = await api.post('/api/v1/auth/wechat', { body: { kind, code } });
  const d = r.data as { bound?: boolean; token?: string; expires_at?: string; bind_ticket?: string };
  if (d.bound && d.token) {
    await start(d.token, d.expires_at ?? null);
    return { bound: true };
  }
  return { bound: false, ticket: d.bind_ticket ?? '', expiresAt: d.expires_at ?? null };
}

export async function bindWechat(ticket: string, phone: string, inviteCode: string): Promise<void> {
  const r = await api.post('/api/v1/auth/wechat/bind', { body: { ticket, phone, invite_code: inviteCode } });
  const d = r.data as { token: string; expires_at?: string };
  await start(d.token, d.expires_at ?? null);
}

/** Ends the session here and on the server; the outbox stays (it belongs to the worker). */
export async function logout(): Promise<void> {
  try {
    await api.post('/api/v1/auth/logout');
  } catch {
    /* offline or already expired: forgetting the token is what matters */
  }
  forget();
}

export function forget(): void {
  session.token = null;
  session.expiresAt = null;
  session.me = null;
  setToken(null);
  localStorage.removeItem(KEY);
  // Cached API answers belong to this worker: the service worker drops them.
  navigator.serviceWorker?.controller?.postMessage({ type: 'logout' });
}

setUnauthorizedHandler(() => {
  forget();
  if (!location.pathname.endsWith('/login')) location.assign(`${import.meta.env.BASE_URL}login`);
});
