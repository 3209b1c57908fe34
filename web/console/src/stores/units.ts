// The org units in the caller's scope (every page of /api/v1/units), once per session, as a
// list, a map and a tree for the pickers.
import { shallowRef } from 'vue';
import { api } from '../api/client';
import type { Page, Unit } from '../api/types';

export interface UnitNode extends Unit {
  children: UnitNode[];
}
export const units = shallowRef<Unit[]>([]);
export const byId = shallowRef(new Map<number, Unit>());
export const tree = shallowRef<UnitNode[]>([]);
let loading: Promise<void> | null = null;

export function loadUnits(force = false): Promise<void> {
  if (loading && !force) return loading;
  loading = (async () => {
    const all: Unit[] = [];
    let cursor: string | undefined;
    do {
      const r = (await api.get('/api/v1/units', { query: { limit: 200, cursor } })).data as unknown as Page<Unit>;
      all.push(...r.items);
      cursor = r.next_cursor ?? undefined;
    } while (cursor);
    const m = new Map(all.map((u) => [u.id, u]));
    const nodes = new Map<number, UnitNode>(all.map((u) => [u.id, { ...u, children: [] }]));
    const roots: UnitNode[] = [];
    for (const n of nodes.values()) {
      const p = n.parent_id !== null ? nodes.get(n.parent_id) : undefined;
      if (p) p.children.push(n);
      else roots.push(n);
    }
    units.value = all;
    byId.value = m;
    tree.value = roots;
  })();
  loading.catch(() => (loading = null));
  return loading;
}

export function unitName(id: number | null | undefined): string {
  return (id && byId.value.get(id)?.name) || (id ? `#${id}` : '');
}

export function unitsOf(level: Unit['level']): Unit[] {
  return units.value.filter((u) => u.level === level);
}
