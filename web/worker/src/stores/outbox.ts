// The outbox as the screens see it: the worker's items (reactive), kept in step with
// IndexedDB (this tab and others), and the automatic sending -- at start, when the network
// comes back, when the app comes to the foreground, after each save, and every 10 s while
// something waits.
import { reactive } from 'vue';
import { session } from './session';
import type { OutboxItem, SyncSummary } from '../offline';

type Offline = typeof import('../offline');
let mod: Promise<Offline> | null = null;
/** The offline module, loaded on first use (it is not needed to show the first screen). */
export function offline(): Promise<Offline> {
  mod ??= import('../offline');
  return mod;
}

export const outbox = reactive({
  items: [] as OutboxItem[],
  syncing: false,
  online: navigator.onLine,
  last: null as SyncSummary | null,
});

/** Items not yet sent; kind: only reports (with their check-ins) or only care visits. */
export function waitingCount(kind?: 'report' | 'visit'): number {
  return outbox.items.filter(
    (i) => (i.state === 'saved' || i.state === 'sending') && (!kind || (kind === 'visit') === (i.kind === 'visit')),
  ).length;
}

export async function reload(): Promise<void> {
  const id = session.me?.id;
  if (!id) {
    outbox.items = [];
    return;
  }
  outbox.items = await (await offline()).listItems(id);
}

export async function sync(force = false): Promise<void> {
  const id = session.me?.id;
  if (!id || !session.token || !navigator.onLine) return;
  outbox.syncing = true;
  try {
    const o = await offline();
    outbox.last = await o.syncNow(id, force);
    await o.refreshStates(id);
  } finally {
    outbox.syncing = false;
    await reload();
  }
}

let started = false;
export async function startAutoSync(): Promise<void> {
  if (started) return;
  started = true;
  const o = await offline();
  o.onChange(() => void reload());
  window.addEventListener('online', () => {
    outbox.online = true;
    void sync(true);
  });
  window.addEventListener('offline', () => {
    outbox.online = false;
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') void sync();
  });
  setInterval(() => {
    const waiting = waitingCount() > 0;
    const undecided = outbox.items.some((i) => i.state === 'received');
    if (waiting || undecided) void sync();
  }, 10000);
  await reload();
  void sync(true);
}
