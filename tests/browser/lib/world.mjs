// The data the browser tests need, made through the API as staff would (create-admin, units, a
// worker with a password, a funded grid budget, tasks at known places, a merchant and its
// offer): a street 锦华街道 in Chengdu with one community, grid and micro-grid.
import { randomBytes } from 'node:crypto';
import { uniquePhone, iso } from './stack.mjs';

export const PLACE = { latitude: 30.6571, longitude: 104.0812 }; // the 7号楼 fire exit
export const NEAR = { latitude: 30.6572, longitude: 104.0811 }; // ~14 m from it
export const FAR = { latitude: 30.6671, longitude: 104.0812 }; // ~1.1 km north

export async function makeWorld(stack) {
  const phone = uniquePhone();
  const password = `Pw-${randomBytes(9).toString('base64url')}`;
  const out = stack.cliEnv({ GRIDPOINTS_ADMIN_PASSWORD: password }, 'create-admin', '--phone', phone, '--name', '街道管理员', '--street', '锦华街道');
  const ids = JSON.parse(out.split('\n').filter((l) => l.startsWith('{')).pop());
  const login = await stack.ok('POST', '/api/v1/auth/login', { body: { phone, password } });
  const admin = { token: login.token, id: ids.person_id, street: ids.unit_id, phone, password };
  const unit = async (parent, name) =>
    (await stack.ok('POST', '/api/v1/units', { token: admin.token, body: { parent_id: parent, name } })).id;
  const community = await unit(admin.street, '锦华社区');
  const grid = await unit(community, '第三网格');
  const micro = await unit(grid, '7号楼微网格');
  const T = admin.token;
  await stack.ok('POST', '/api/v1/budgets/issue', { token: T, body: { unit_id: admin.street, amount: 1000000 } });
  await stack.ok('POST', '/api/v1/budgets/grants', { token: T, body: { from_unit_id: admin.street, to_unit_id: community, amount: 500000 } });
  await stack.ok('POST', '/api/v1/budgets/grants', { token: T, body: { from_unit_id: community, to_unit_id: grid, amount: 400000 } });

  const world = { stack, admin, community, grid, micro, n: 0 };

  /** A worker of the micro-grid with a password: {id, phone, password, token}. */
  world.worker = async (name = '王秀英', tags = ['党员']) => {
    const p = await stack.ok('POST', '/api/v1/people', {
      token: T,
      body: { phone: uniquePhone(), name, unit_id: micro, tags, roles: [{ role: 'worker', unit_id: micro }] },
    });
    const s = await stack.ok('POST', '/api/v1/auth/login', { body: { phone: p.phone, password: p.initial_password } });
    return { id: p.id, phone: p.phone, password: p.initial_password, token: s.token, name };
  };

  /** A task of the grid at PLACE; over: any TaskInput field. */
  world.task = async (over = {}) => {
    world.n++;
    return stack.ok('POST', '/api/v1/tasks', {
      token: T,
      headers: { 'Idempotency-Key': `task-${Date.now()}-${world.n}` },
      body: {
        unit_id: grid, title: `检查7号楼消防通道 ${world.n}`, description: '看看楼道和消防通道是否畅通，拍两张照片。',
        category: 'fire_safety', reward: 25, slots: 3, lat: PLACE.latitude, lng: PLACE.longitude,
        geofence_m: 200, ends_at: iso(Date.now() + 2 * 3600e3), claim_ttl_s: 3600, review_window_s: 3600,
        ...over,
      },
    });
  };

  /** Points for a worker (a street admin's adjustment). */
  world.give = (workerId, amount) =>
    stack.ok('POST', '/api/v1/adjustments', { token: T, body: { worker_id: workerId, amount, reason: '测试：发放积分' } });

  /** A merchant of the street with one offer. */
  world.offer = async (over = {}) => {
    const m = await stack.ok('POST', '/api/v1/merchants', {
      token: T,
      body: { name: `锦华便民超市 ${++world.n}`, address: '锦华路 1 号', unit_id: admin.street, contact_name: '李经理', contact_phone: '028-8888-0000' },
    });
    const key = await stack.ok('POST', `/api/v1/merchants/${m.id}/keys`, { token: T, body: {} });
    const offer = await stack.merchant(key, 'POST', '/merchant/v1/offers', {
      title: '大米 5 斤', description: '凭券到店领取', price: 100, stock: 20, ends_at: '2099-01-01T00:00:00Z', ...over,
    });
    return { merchant: m, key, offer };
  };
  return world;
}
