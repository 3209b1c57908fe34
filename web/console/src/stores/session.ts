// The staff session: the token and who is signed in (/api/v1/me), kept in this browser's
// localStorage. What the console shows follows the roles held (src/roles.ts); the server still
// decides every request.
import { reactive } from 'vue';
import { api, setToken, setUnauthorizedHandler } from '../api/client';
import type { Me } from '../api/types';

const KEY = 'gp.console.session';
const DEVICE_KEY = 'gp.console.device';

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

export function loggedIn(): boolean {
  return !!session.token && (!session.expiresAt || Date.parse(session.expiresAt) > Date.now());
}

export async function login(phone: string, password: string): Promise<void> {
  const device = localStorage.getItem(DEVICE_KEY) ?? undefined;
  const r = await api.post('/api/v1/auth/login', { body: { phone, password, device_token: device } });
  if (r.data.device_token) localStorage.setItem(DEVICE_KEY, r.data.device_token);
  session.token = r.data.token;
  session.expiresAt = r.data.expires_at;
  setToken(r.data.token);
  session.me = (await api.get('/api/v1/me')).data as unknown as Me;
  localStorage.setItem(KEY, JSON.stringify(session));
}

export async function logout(): Promise<void> {
  try {
    await api.post('/api/v1/auth/logout');
  } catch {
    /* already expired: forgetting the token is what matters */
  }
  forget();
}

export function forget(): void {
  session.token = null;
  session.expiresAt = null;
  session.me = null;
  setToken(null);
  localStorage.removeItem(KEY);
}

setUnauthorizedHandler(() => {
  forget();
  if (!location.pathname.endsWith('/login')) location.assign(`${import.meta.env.BASE_URL}login`);
});
