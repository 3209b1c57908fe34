// The worker's due care visits (GET /api/v1/care/due), shared by the due list and the visit
// screen. Always the same request, so that offline the service worker answers it from its
// cache (the last list seen) and a visit can still be written at the door.
import { api } from '../api/client';
import type { CareDue, Page } from '../api/types';

const COLOUR_RANK = { red: 0, yellow: 1, blue: 2 } as const;
const PAGE = 200;
let last: CareDue[] = [];

export type DueState = 'overdue' | 'due' | 'upcoming';

export function dueState(d: CareDue, now = Date.now()): DueState {
  if (d.overdue || Date.parse(d.grace_until) < now) return 'overdue';
  return Date.parse(d.due_at) <= now ? 'due' : 'upcoming';
}

/** Most urgent first: overdue, then due now, then not yet due; within each, the longest
 * waiting (earliest due) first, red before yellow before blue. */
export function byUrgency(a: CareDue, b: CareDue): number {
  const now = Date.now();
  const rank = { overdue: 0, due: 1, upcoming: 2 };
  return (
    rank[dueState(a, now)] - rank[dueState(b, now)] ||
    Date.parse(a.due_at) - Date.parse(b.due_at) ||
    COLOUR_RANK[a.colour] - COLOUR_RANK[b.colour] ||
    a.id - b.id
  );
}

/** The worker's open due visits, most urgent first; fromCache: the network was not there. */
export async function loadDues(): Promise<{ items: CareDue[]; fromCache: boolean }> {
  const items: CareDue[] = [];
  let fromCache = false;
  let cursor: string | null = null;
  // The server's page is at most 200; a worker has far fewer residents, but the rest of a
  // longer list is read too (a few pages at most).
  for (let page = 0; page < 10; page++) {
    const r = await api.get('/api/v1/care/due', { query: cursor ? { limit: PAGE, cursor } : { limit: PAGE } });
    const p = r.data as unknown as Page<CareDue>;
    items.push(...p.items);
    fromCache ||= r.fromCache;
    cursor = p.next_cursor;
    if (!cursor) break;
  }
  last = items.sort(byUrgency);
  return { items: last, fromCache };
}

/** The due visit of a resident from the last list loaded, if any. */
export function knownDue(residentId: number): CareDue | null {
  return last.find((d) => d.resident_id === residentId) ?? null;
}
