// The real stack the browser tests run against: a private PostgreSQL + Redis
// (scripts/services.sh, as tests/api does), `gridpointsd migrate`, one gridpointsd on a free
// loopback port serving build/web/app/ under /app/, and helpers to set data up through the
// API (and to check it in PostgreSQL). Nothing is mocked: the browser talks to this server.
import { spawn, spawnSync } from 'node:child_process';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { copyFileSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { createServer as createHttpServer, request as httpRequest } from 'node:http';
import { extname } from 'node:path';
import { gzipSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(fileURLToPath(new URL('../../..', import.meta.url)));
export const BIN = process.env.GRIDPOINTS_BIN || join(REPO, 'build/gridpointsd');
export const CONF = join(REPO, 'tests/browser/test.conf');
export const WEB_DIR = join(REPO, 'build/web');
export const ARTIFACTS = join(REPO, 'build/browser-artifacts');

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

function run(cmd, args, opts = {}) {
  const p = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 300000, ...opts });
  if (p.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${p.status}):\n${p.stderr}${p.stdout}`);
  return p.stdout;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export { sleep };

export class Stack {
  constructor(name = 'browser') {
    this.name = name;
    this.dir = mkdtempSync(join(tmpdir(), 'gp-browser-'));
    this.env = null;
    this.proc = null;
    this.url = null;
  }

  baseEnv(extra = {}) {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('GRIDPOINTS_')));
    // The sanitizers of a build/asan binary: a report ends the process (and fails the tests).
    env.ASAN_OPTIONS = 'abort_on_error=1:detect_leaks=0';
    env.UBSAN_OPTIONS = 'print_stacktrace=1:halt_on_error=1';
    return { ...env, ...this.env, ...extra };
  }

  cli(...args) {
    return this.cliEnv({}, ...args);
  }

  cliEnv(env, ...args) {
    return run(BIN, ['-c', CONF, ...args], { cwd: REPO, env: this.baseEnv(env) });
  }

  /** A started stack, or nothing left running when starting failed. */
  static async up(name = 'browser', extraEnv = {}) {
    const s = new Stack(name);
    try {
      return await s.start(extraEnv);
    } catch (e) {
      await s.stop().catch(() => {});
      throw e;
    }
  }

  async start(extraEnv = {}) {
    if (!existsSync(BIN)) throw new Error(`gridpointsd not found at ${BIN}: run make (or set GRIDPOINTS_BIN)`);
    if (!existsSync(join(WEB_DIR, 'app/index.html')))
      throw new Error(`the worker app is not built (${WEB_DIR}/app/index.html): run make web`);
    run('bash', [join(REPO, 'scripts/services.sh'), 'start', this.dir]);
    const env = {};
    for (const line of readFileSync(join(this.dir, 'env'), 'utf8').split('\n')) {
      const m = /^export (GRIDPOINTS_[A-Z_]+)=(.*)$/.exec(line);
      if (m) env[m[1]] = m[2];
    }
    this.env = env;
    this.admin_url = env.GRIDPOINTS_DATABASE_ADMIN_URL;
    this.cli('migrate');
    this.port = await freePort();
    this.url = `http://127.0.0.1:${this.port}`;
    this.logPath = join(this.dir, 'server.log');
    const fd = openSync(this.logPath, 'a');
    this.proc = spawn(BIN, ['-c', CONF, 'serve'], {
      cwd: REPO,
      env: this.baseEnv({
        GRIDPOINTS_SERVER_LISTEN: `127.0.0.1:${this.port}`,
        GRIDPOINTS_WEB_DIR: WEB_DIR,
        GRIDPOINTS_EVIDENCE_DIR: join(this.dir, 'evidence'),
        ...extraEnv,
      }),
      stdio: ['ignore', fd, fd],
      detached: true,
    });
    closeSync(fd);
    this.exited = new Promise((r) => this.proc.on('exit', (code, sig) => r({ code, sig })));
    const deadline = Date.now() + 30000;
    for (;;) {
      if (this.proc.exitCode !== null) throw new Error(`gridpointsd exited before it was ready:\n${this.logTail()}`);
      try {
        const r = await fetch(`${this.url}/readyz`);
        if (r.ok) break;
      } catch {
        /* not yet listening */
      }
      if (Date.now() > deadline) throw new Error(`gridpointsd not ready in 30 s:\n${this.logTail()}`);
      await sleep(100);
    }
    this.serverUrl = this.url;
    this.pending = [];
    const app = await fetch(`${this.url}/app/`);
    if (!app.ok) {
      // Issue 13 item 1 (static serving) is not in this gridpointsd yet: serve the build from
      // here, in front of it, on one origin, with the server's headers. Said loudly, and the
      // test that checks gridpointsd's own serving stays a TODO until it lands.
      this.pending.push('static serving of /app/ by gridpointsd (issue 13, item 1)');
      console.log(`NOTE: ${this.url}/app/ answered ${app.status}: the harness serves build/web/app/ in front of gridpointsd`);
      await this.frontProxy();
    }
    // Routes of issue 13 built alongside the app: probed, so that the steps needing them are
    // marked TODO (not skipped silently) while they are missing.
    const status = async (method, path) => (await fetch(this.serverUrl + path, { method })).status;
    this.has = {
      // 401: the route is there, behind the session guard; 404: no such route.
      evidence: (await status('GET', `/api/v1/evidence/${'0'.repeat(64)}`)) === 401,
      wechat: (await status('POST', '/api/v1/auth/wechat')) !== 404,
    };
    if (!this.has.evidence) this.pending.push('PUT/GET /api/v1/evidence/{sha256} (issue 13, item 3)');
    if (!this.has.wechat) this.pending.push('POST /api/v1/auth/wechat (issue 13, item 2)');
    return this;
  }

  async frontProxy() {
    const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml', '.png': 'image/png', '.webmanifest': 'application/manifest+json', '.json': 'application/json' };
    const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; worker-src 'self'; manifest-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'";
    const upstream = new URL(this.serverUrl);
    const root = join(WEB_DIR, 'app');
    this.proxy = createHttpServer((req, res) => {
      const u = new URL(req.url, 'http://x');
      if (u.pathname === '/app' || u.pathname.startsWith('/app/')) {
        let rel = decodeURIComponent(u.pathname.slice(5)) || 'index.html';
        if (rel.includes('..')) return res.writeHead(400).end();
        if (!extname(rel)) rel = 'index.html';
        let body;
        try {
          body = readFileSync(join(root, rel));
        } catch {
          res.writeHead(404, { 'Content-Type': 'application/json' });
          return res.end('{"error":{"code":"not_found","message":"no such file"}}');
        }
        const hashed = rel.startsWith('assets/');
        const text = /^(text|application)\/(html|javascript|css|json|manifest)|svg/.test(TYPES[extname(rel)] ?? '');
        const gz = text && /gzip/.test(req.headers['accept-encoding'] ?? '');
        if (gz) body = gzipSync(body, { level: 9 });
        res.writeHead(200, {
          ...(gz ? { 'Content-Encoding': 'gzip', Vary: 'Accept-Encoding' } : {}),
          'Content-Type': TYPES[extname(rel)] ?? 'application/octet-stream',
          'Cache-Control': hashed ? 'public, max-age=31536000, immutable' : 'no-cache',
          'Content-Security-Policy': CSP,
          'X-Content-Type-Options': 'nosniff',
        });
        return res.end(body);
      }
      const up = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode, r.headers);
        r.pipe(res);
      });
      up.on('error', () => res.destroy());
      req.pipe(up);
    });
    const port = await freePort();
    await new Promise((r) => this.proxy.listen(port, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${port}`;
  }

  logTail(n = 60) {
    try {
      return readFileSync(this.logPath, 'utf8').split('\n').slice(-n).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** Lines of the server log at level error (a failed suite shows them). */
  errorLines() {
    try {
      return readFileSync(this.logPath, 'utf8').split('\n').filter((l) => /level=error|AddressSanitizer|runtime error:/.test(l));
    } catch {
      return [];
    }
  }

  async stop() {
    if (this.proxy) {
      this.proxy.closeAllConnections?.();
      await new Promise((r) => this.proxy.close(r));
    }
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGTERM');
      const t = setTimeout(() => this.proc.kill('SIGKILL'), 20000);
      await this.exited;
      clearTimeout(t);
    }
    // The server's log is kept with the screenshots (a failed run is read there).
    try {
      mkdirSync(ARTIFACTS, { recursive: true });
      copyFileSync(this.logPath, join(ARTIFACTS, `server-${this.name}.log`));
    } catch {
      /* it never started */
    }
    try {
      run('bash', [join(REPO, 'scripts/services.sh'), 'purge', this.dir]);
    } finally {
      rmSync(this.dir, { recursive: true, force: true });
    }
  }

  /** One SQL statement as the superuser, in the gp schema; rows as arrays of strings. */
  sql(query, ...params) {
    const q = params.reduce((s, p, i) => s.replaceAll(`$${i + 1}`, typeof p === 'number' ? String(p) : `'${String(p).replaceAll("'", "''")}'`), query);
    const out = run('psql', [this.admin_url, '-XAtq', '-v', 'ON_ERROR_STOP=1', '-F', '\t', '-c', 'SET search_path = gp, public', '-c', q]);
    return out.split('\n').filter((l) => l !== '').map((l) => l.split('\t'));
  }

  /** JSON over HTTP: {status, body}. */
  async api(method, path, { token, body, headers = {} } = {}) {
    const h = { ...headers };
    if (token) h.Authorization = `Bearer ${token}`;
    if (body !== undefined) h['Content-Type'] = 'application/json';
    const r = await fetch(this.url + path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = text;
    }
    return { status: r.status, body: json };
  }

  async ok(method, path, opts, want = [200, 201]) {
    const r = await this.api(method, path, opts);
    if (!want.includes(r.status)) throw new Error(`${method} ${path} -> ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }

  /** A merchant request signed as docs/openapi.yaml's merchantSignature says. */
  async merchant(key, method, path, body) {
    const raw = body === undefined ? '' : JSON.stringify(body);
    const ts = Math.floor(Date.now() / 1000);
    const nonce = randomBytes(12).toString('hex');
    const bodyHash = createHash('sha256').update(raw).digest('hex');
    const msg = `GP1-HMAC-SHA256\n${key.key_id}\n${method}\n${path}\n${ts}\n${nonce}\n${bodyHash}\n`;
    const sig = createHmac('sha256', key.secret).update(msg).digest('hex');
    const headers = { Authorization: `GP1-HMAC-SHA256 key=${key.key_id},ts=${ts},nonce=${nonce},sig=${sig}` };
    if (method !== 'GET') headers['Idempotency-Key'] = `k-${nonce}`;
    if (raw) headers['Content-Type'] = 'application/json';
    const r = await fetch(this.url + path, { method, headers, body: raw || undefined });
    const json = await r.json().catch(() => null);
    if (r.status >= 300) throw new Error(`${method} ${path} -> ${r.status} ${JSON.stringify(json)}`);
    return json;
  }
}

let seq = 0;
export function uniquePhone() {
  seq++;
  return `139${String(Date.now() % 100000).padStart(5, '0')}${String(seq % 1000).padStart(3, '0')}`;
}

export const iso = (ms) => new Date(ms).toISOString();
