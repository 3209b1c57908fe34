// WeChat's login API on 127.0.0.1 for the browser tests: HTTPS with a certificate made here
// (gridpointsd trusts it through wechat.ca_file), speaking the web OAuth contract
// (GET /sns/oauth2/access_token) and the mini-program one (GET /sns/jscode2session). A code
// is registered with peer.code(openid) and works once; any other code is WeChat's 40029.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

export const WEB_APP = 'wxbrowsertestweb01';
export const WEB_SECRET = 'browser-test-web-secret-0123456789';

export class WechatPeer {
  async start() {
    this.dir = mkdtempSync(join(tmpdir(), 'gp-wechat-'));
    this.cert = join(this.dir, 'cert.pem');
    const key = join(this.dir, 'key.pem');
    const p = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', key, '-out', this.cert, '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { encoding: 'utf8' });
    if (p.status !== 0) throw new Error(`openssl: ${p.stderr}`);
    this.codes = new Map();
    this.calls = 0;
    this.server = createServer({ key: readFileSync(key), cert: readFileSync(this.cert) }, (req, res) => this.answer(req, res));
    await new Promise((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `https://127.0.0.1:${this.server.address().port}`;
    return this;
  }

  /** A one-time code that WeChat trades for openid. */
  code(openid) {
    const c = `code_${randomBytes(8).toString('hex')}`;
    this.codes.set(c, openid);
    return c;
  }

  answer(req, res) {
    this.calls++;
    const u = new URL(req.url, this.url);
    const q = u.searchParams;
    const send = (o) => {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(o));
    };
    if (u.pathname !== '/sns/oauth2/access_token') return send({ errcode: 40066, errmsg: 'invalid url' });
    if (q.get('appid') !== WEB_APP) return send({ errcode: 40013, errmsg: 'invalid appid' });
    if (q.get('secret') !== WEB_SECRET) return send({ errcode: 40125, errmsg: 'invalid appsecret' });
    const openid = this.codes.get(q.get('code'));
    if (!openid) return send({ errcode: 40029, errmsg: 'invalid code' });
    this.codes.delete(q.get('code'));
    send({ access_token: 'ACCESS', expires_in: 7200, refresh_token: 'REFRESH', openid, scope: 'snsapi_base' });
  }

  /** The server's settings that point it at this peer. */
  env() {
    return {
      GRIDPOINTS_WECHAT_API_BASE: this.url,
      GRIDPOINTS_WECHAT_APP_ID: WEB_APP,
      GRIDPOINTS_WECHAT_APP_SECRET: WEB_SECRET,
      GRIDPOINTS_WECHAT_CA_FILE: this.cert,
    };
  }

  async stop() {
    this.server?.closeAllConnections?.();
    await new Promise((r) => (this.server ? this.server.close(r) : r()));
    rmSync(this.dir, { recursive: true, force: true });
  }
}
