// The one API client of the console (the same as the worker app's, web/worker/src/api). Its routes and their parameters are typed from
// docs/openapi.yaml (src/api/schema.gen.ts, generated at every build by openapi-typescript):
// a path that the spec does not list, or a method it does not allow on that path, fails the
// type check (`npm run typecheck`, part of `npm run build`).
import type { paths } from './schema.gen';

type Method = 'get' | 'post' | 'put' | 'patch' | 'delete';
/** The paths of the spec that allow method M. */
export type PathsWith<M extends Method> = {
  [P in keyof paths]: paths[P] extends Record<M, object> ? P : never;
}[keyof paths];

type Op<P extends keyof paths, M extends Method> = paths[P] extends Record<M, infer O> ? O : never;
type ParamsOf<O, K extends string> = O extends { parameters: infer Ps }
  ? Ps extends { [k in K]?: infer X }
    ? X
    : never
  : never;
type JsonBody<O> = O extends { requestBody?: { content: { 'application/json': infer B } } }
  ? B
  : never;
type JsonOk<O> = O extends { responses: infer R }
  ? R extends { 200: { content: { 'application/json': infer B } } }
    ? B
    : R extends { 201: { content: { 'application/json': infer B } } }
      ? B
      : unknown
  : unknown;

export interface CallOptions<P extends keyof paths, M extends Method> {
  path?: ParamsOf<Op<P, M>, 'path'>;
  query?: ParamsOf<Op<P, M>, 'query'>;
  body?: JsonBody<Op<P, M>>;
  /** a raw body (a photo), sent as is with rawType as its Content-Type */
  raw?: ArrayBuffer;
  rawType?: string;
  headers?: Record<string, string>;
  /** give up after this many ms (default 20 s): a hung request must not block the sync */
  timeoutMs?: number;
}

/** Every failure of a call: status 0 means the network (offline, timeout, dropped). */
export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
    public field?: string,
    public retryAfterS?: number,
  ) {
    super(message);
    this.name = 'ApiError';
  }
  get network(): boolean {
    return this.status === 0;
  }
  /** Worth trying again later with the same request (the server applies it once). */
  get transient(): boolean {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

export interface ApiResult<T> {
  data: T;
  status: number;
}

let token: string | null = null;
let onUnauthorized: (() => void) | null = null;

export function setToken(t: string | null): void {
  token = t;
}
export function setUnauthorizedHandler(fn: () => void): void {
  onUnauthorized = fn;
}

function fillPath(tpl: string, params: Record<string, unknown> | undefined): string {
  const path = tpl.replace(/\{([A-Za-z0-9_]+)\}/g, (_m, k: string) => {
    const v = params?.[k];
    if (v === undefined || v === null) throw new Error(`missing path parameter ${k}`);
    return encodeURIComponent(String(v));
  });
  if (/[{}]/.test(path)) throw new Error(`unfilled path template ${tpl}`);
  return path;
}

function queryString(q: Record<string, unknown> | undefined): string {
  if (!q) return '';
  const sp = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined && v !== null) sp.set(k, String(v));
  const s = sp.toString();
  return s ? `?${s}` : '';
}

async function call<P extends PathsWith<M>, M extends Method>(
  method: M,
  tpl: P,
  opt: CallOptions<P, M> = {},
): Promise<ApiResult<JsonOk<Op<P, M>>>> {
  const url =
    fillPath(tpl as string, opt.path as Record<string, unknown>) +
    queryString(opt.query as Record<string, unknown>);
  const headers: Record<string, string> = { Accept: 'application/json', ...opt.headers };
  if (token) headers.Authorization = `Bearer ${token}`;
  let body: BodyInit | undefined;
  if (opt.raw) {
    body = opt.raw;
    headers['Content-Type'] = opt.rawType || 'application/octet-stream';
  } else if (opt.body !== undefined) {
    body = JSON.stringify(opt.body);
    headers['Content-Type'] = 'application/json';
  }
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), opt.timeoutMs ?? 20000);
  let res: Response;
  try {
    res = await fetch(url, { method: method.toUpperCase(), headers, body, signal: ctl.signal });
  } catch {
    throw new ApiError(0, 'network', 'network unavailable');
  } finally {
    clearTimeout(timer);
  }
  let json: unknown = null;
  const text = await res.text().catch(() => '');
  if (text) {
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
  }
  if (!res.ok) {
    const e = (json as { error?: { code?: string; message?: string; field?: string } } | null)
      ?.error;
    const ra = Number(res.headers.get('Retry-After'));
    if (res.status === 401 && token && onUnauthorized) onUnauthorized();
    const status = res.status;
    throw new ApiError(
      status,
      e?.code ?? (status === 0 ? 'network' : `http_${res.status}`),
      e?.message ?? res.statusText,
      e?.field,
      Number.isFinite(ra) && ra > 0 ? ra : undefined,
    );
  }
  return {
    data: json as JsonOk<Op<P, M>>,
    status: res.status,
  };
}

export const api = {
  get: <P extends PathsWith<'get'>>(p: P, o?: CallOptions<P, 'get'>) => call('get', p, o),
  post: <P extends PathsWith<'post'>>(p: P, o?: CallOptions<P, 'post'>) => call('post', p, o),
  put: <P extends PathsWith<'put'>>(p: P, o?: CallOptions<P, 'put'>) => call('put', p, o),
  patch: <P extends PathsWith<'patch'>>(p: P, o?: CallOptions<P, 'patch'>) => call('patch', p, o),
  del: <P extends PathsWith<'delete'>>(p: P, o?: CallOptions<P, 'delete'>) =>
    call('delete', p, o),
};

/** A GET of a route that answers text (CSV, JSON Lines) or bytes (XLSX, photos): the body as a
 * Blob, with the reply's headers. The path is still one the spec lists. */
export async function getBlob<P extends PathsWith<'get'>>(
  tpl: P,
  opt: CallOptions<P, 'get'> = {},
  onProgress?: (done: number, total: number | null) => void,
): Promise<{ blob: Blob; headers: Headers }> {
  const url =
    fillPath(tpl as string, opt.path as Record<string, unknown>) +
    queryString(opt.query as Record<string, unknown>);
  const headers: Record<string, string> = { ...opt.headers };
  if (token) headers.Authorization = `Bearer ${token}`;
  let res: Response;
  try {
    res = await fetch(url, { headers });
  } catch {
    throw new ApiError(0, 'network', 'network unavailable');
  }
  if (!res.ok) {
    const j = (await res.json().catch(() => null)) as { error?: { code?: string; message?: string; field?: string } } | null;
    if (res.status === 401 && token && onUnauthorized) onUnauthorized();
    throw new ApiError(res.status, j?.error?.code ?? `http_${res.status}`, j?.error?.message ?? res.statusText, j?.error?.field);
  }
  if (!onProgress || !res.body) return { blob: await res.blob(), headers: res.headers };
  // Read as it arrives, so that a long export shows how far it got (Content-Length when sent).
  const total = Number(res.headers.get('Content-Length')) || null;
  const reader = res.body.getReader();
  const parts: Uint8Array[] = [];
  let done = 0;
  for (;;) {
    const { value, done: end } = await reader.read();
    if (end) break;
    parts.push(value);
    done += value.length;
    onProgress(done, total);
  }
  return { blob: new Blob(parts, { type: res.headers.get('Content-Type') ?? '' }), headers: res.headers };
}

/** Hands a Blob to the browser as a download named name. */
export function saveBlob(blob: Blob, name: string): void {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}
