// The outbox: reports, check-ins and care visits are saved on the phone first (IndexedDB, with their client
// id and the time and place they were made) and sent when the network allows. Sending is safe
// to repeat at any point -- the server applies a client_report_id, a client_visit_id (and a
// check-in's (assignment, at)) once and replays its first answer -- so a retry after a timeout, a reply
// lost on the way, a closed tab or a second tab sending the same report never counts twice.
//
// Order within one report: its photos first (PUT /api/v1/evidence/{sha256}, idempotent by
// content), then the report that refers to them. Items go oldest first, so a check-in made
// before a report reaches the server before it.
import { api, ApiError } from '../api/client';
import * as db from './db';
import { sha256Hex } from './photo';

export type ItemState = 'saved' | 'sending' | 'received' | 'approved' | 'rejected' | 'refused';

export interface ItemError {
  status: number;
  code: string;
  message: string;
}

interface ItemBase {
  id: string;
  worker_id: number;
  assignment_id: number;
  task_id: number;
  task_title: string;
  lat: number | null;
  lng: number | null;
  state: ItemState;
  error?: ItemError;
  attempts: number;
  next_try_at: number;
  created_at: number;
  updated_at: number;
}

export interface ReportItem extends ItemBase {
  kind: 'report';
  made_at: string;
  notes: string;
  photos: string[]; // SHA-256 of each photo, in order
  report_id?: number;
  received_at?: string;
  reason?: string | null;
  flags?: string[];
}

export interface CheckinItem extends ItemBase {
  kind: 'checkin';
  at: string;
  distance_m?: number | null;
}

/** A care visit (docs/CARE.md): its id is the client_visit_id; assignment_id and task_id are 0,
 * task_title is what the worker reads in the queue (the resident's name). */
export interface VisitItem extends ItemBase {
  kind: 'visit';
  resident_id: number;
  made_at: string;
  outcome: 'well' | 'needs_help' | 'not_home' | 'moved';
  help_kind: 'health' | 'meals' | 'repairs' | 'mood' | 'other' | null;
  notes: string;
  photos: string[];
  photo_consent: boolean;
  visit_id?: number;
  points?: number;
  flags?: string[];
}

export type OutboxItem = ReportItem | CheckinItem | VisitItem;

export interface PhotoRecord {
  sha256: string;
  blob: Blob;
  type: string;
  size: number;
  uploaded: boolean;
}

export interface SyncSummary {
  sent: number;
  refused: number;
  pending: number;
  /** the last network or server error that left items waiting */
  waiting?: ItemError;
}

const BACKOFF_BASE_MS = 2000;
const BACKOFF_MAX_MS = 5 * 60 * 1000;
const channel = typeof BroadcastChannel !== 'undefined' ? new BroadcastChannel('gp-outbox') : null;
const listeners = new Set<() => void>();

/** fn runs after any change of the outbox, in this tab or another. Returns the unsubscribe. */
export function onChange(fn: () => void): () => void {
  listeners.add(fn);
  return () => listeners.delete(fn);
}
function changed(): void {
  listeners.forEach((fn) => fn());
  channel?.postMessage('changed');
}
if (channel) channel.onmessage = () => listeners.forEach((fn) => fn());

/** A client report id: unique per worker forever (random 128 bits), in the server's alphabet. */
export function newClientId(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return 'r-' + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

export interface NewReport {
  worker_id: number;
  assignment_id: number;
  task_id: number;
  task_title: string;
  made_at?: string;
  lat: number | null;
  lng: number | null;
  notes: string;
  photos: { sha256: string; blob: Blob }[];
}

/** Saves a report and its photos on the phone, in one transaction. Sending comes later. */
export async function saveReport(r: NewReport): Promise<ReportItem> {
  const now = Date.now();
  const item: ReportItem = {
    kind: 'report',
    id: newClientId(),
    worker_id: r.worker_id,
    assignment_id: r.assignment_id,
    task_id: r.task_id,
    task_title: r.task_title,
    made_at: r.made_at ?? new Date(now).toISOString(),
    lat: r.lat,
    lng: r.lng,
    notes: r.notes,
    photos: r.photos.map((p) => p.sha256),
    state: 'saved',
    attempts: 0,
    next_try_at: 0,
    created_at: now,
    updated_at: now,
  };
  const entries: { store: string; value: unknown }[] = r.photos.map((p) => ({
    store: db.PHOTOS,
    value: { sha256: p.sha256, blob: p.blob, type: p.blob.type, size: p.blob.size, uploaded: false } satisfies PhotoRecord,
  }));
  entries.push({ store: db.OUTBOX, value: item });
  await db.putAll(entries);
  changed();
  return item;
}

export interface NewCheckin {
  worker_id: number;
  assignment_id: number;
  task_id: number;
  task_title: string;
  lat: number;
  lng: number;
  at?: string;
}

export async function saveCheckin(c: NewCheckin): Promise<CheckinItem> {
  const now = Date.now();
  const at = c.at ?? new Date(now).toISOString();
  const item: CheckinItem = {
    kind: 'checkin',
    id: `c-${c.assignment_id}-${now}`,
    worker_id: c.worker_id,
    assignment_id: c.assignment_id,
    task_id: c.task_id,
    task_title: c.task_title,
    at,
    lat: c.lat,
    lng: c.lng,
    state: 'saved',
    attempts: 0,
    next_try_at: 0,
    created_at: now,
    updated_at: now,
  };
  await db.putAll([{ store: db.OUTBOX, value: item }]);
  changed();
  return item;
}

export interface NewVisit {
  worker_id: number;
  resident_id: number;
  resident_label: string;
  made_at?: string;
  lat: number | null;
  lng: number | null;
  outcome: VisitItem['outcome'];
  help_kind: VisitItem['help_kind'];
  notes: string;
  photo_consent: boolean;
  photos: { sha256: string; blob: Blob }[];
}

/** Saves a care visit and its photos on the phone, in one transaction, with a new
 * client_visit_id: however often it is sent, the server records it once. */
export async function saveVisit(v: NewVisit): Promise<VisitItem> {
  const now = Date.now();
  const item: VisitItem = {
    kind: 'visit',
    id: newClientId().replace(/^r-/, 'v-'),
    worker_id: v.worker_id,
    assignment_id: 0,
    task_id: 0,
    task_title: v.resident_label,
    resident_id: v.resident_id,
    made_at: v.made_at ?? new Date(now).toISOString(),
    lat: v.lat,
    lng: v.lng,
    outcome: v.outcome,
    help_kind: v.outcome === 'needs_help' ? v.help_kind : null,
    notes: v.notes,
    // No consent, no photo: not even kept on the phone.
    photos: v.photo_consent ? v.photos.map((p) => p.sha256) : [],
    photo_consent: v.photo_consent,
    state: 'saved',
    attempts: 0,
    next_try_at: 0,
    created_at: now,
    updated_at: now,
  };
  const entries: { store: string; value: unknown }[] = (v.photo_consent ? v.photos : []).map((p) => ({
    store: db.PHOTOS,
    value: { sha256: p.sha256, blob: p.blob, type: p.blob.type, size: p.blob.size, uploaded: false } satisfies PhotoRecord,
  }));
  entries.push({ store: db.OUTBOX, value: item });
  await db.putAll(entries);
  changed();
  return item;
}

/** The worker's items, newest first. */
export async function listItems(workerId: number): Promise<OutboxItem[]> {
  const all = await db.getAll<OutboxItem>(db.OUTBOX);
  return all.filter((i) => i.worker_id === workerId).sort((a, b) => b.created_at - a.created_at);
}

export async function getPhoto(sha256: string): Promise<PhotoRecord | undefined> {
  return db.get<PhotoRecord>(db.PHOTOS, sha256);
}

/** Removes an item the server refused or already decided, and photos no other item uses. */
export async function removeItem(id: string): Promise<void> {
  const all = await db.getAll<OutboxItem>(db.OUTBOX);
  const item = all.find((i) => i.id === id);
  if (!item) return;
  if (item.state === 'saved' || item.state === 'sending') throw new Error('item not yet sent');
  const keep = new Set(all.filter((i) => i.id !== id && i.kind !== 'checkin').flatMap((i) => (i as ReportItem | VisitItem).photos));
  const drop = item.kind !== 'checkin' ? item.photos.filter((p) => !keep.has(p)) : [];
  await db.del(db.OUTBOX, [id]);
  if (drop.length) await db.del(db.PHOTOS, drop);
  changed();
}

/** Puts a refused item back in the queue (the worker fixed the cause, e.g. went on site). */
export async function retryItem(id: string): Promise<void> {
  await db.update<OutboxItem>(db.OUTBOX, id, (i) =>
    i.state === 'refused' ? { ...i, state: 'saved', error: undefined, attempts: 0, next_try_at: 0 } : undefined,
  );
  changed();
}

function errOf(e: unknown): ItemError {
  if (e instanceof ApiError) return { status: e.status, code: e.code, message: e.message };
  return { status: 0, code: 'network', message: String(e) };
}

function backoff(attempts: number): number {
  const ms = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempts, 10));
  return ms / 2 + Math.random() * (ms / 2);
}

async function setItem(id: string, fn: (i: OutboxItem) => OutboxItem | undefined): Promise<void> {
  await db.update<OutboxItem>(db.OUTBOX, id, fn);
  changed();
}

/** The evidence URL the report carries: absolute, on this server (content-addressed). */
export function evidenceUrl(sha256: string): string {
  return `${location.origin}/api/v1/evidence/${sha256}`;
}

async function uploadPhotos(item: ReportItem | VisitItem): Promise<void> {
  for (const sha of item.photos) {
    const p = await getPhoto(sha);
    if (!p) throw new ApiError(400, 'photo_missing', 'a photo of this report is no longer on the phone');
    if (p.uploaded) continue;
    // The bytes, checked against their hash before they leave: storage that changed a photo
    // is said as such, not as a server refusal the worker cannot understand.
    const bytes = await p.blob.arrayBuffer();
    if ((await sha256Hex(bytes)) !== sha)
      throw new ApiError(400, 'hash_mismatch', 'a photo of this report changed on the phone');
    await api.put('/api/v1/evidence/{sha256}', { path: { sha256: sha }, raw: bytes, rawType: p.type, timeoutMs: 120000 });
    await db.update<PhotoRecord>(db.PHOTOS, sha, (r) => ({ ...r, uploaded: true }));
  }
}

function reportBody(item: ReportItem) {
  const body: {
    assignment_id: number;
    client_report_id: string;
    made_at: string;
    notes: string;
    evidence: { url: string; sha256: string }[];
    lat?: number;
    lng?: number;
  } = {
    assignment_id: item.assignment_id,
    client_report_id: item.id,
    made_at: item.made_at,
    notes: item.notes,
    evidence: item.photos.map((sha) => ({ url: evidenceUrl(sha), sha256: sha })),
  };
  if (item.lat !== null && item.lng !== null) {
    body.lat = item.lat;
    body.lng = item.lng;
  }
  return body;
}

interface ReportAnswer {
  report?: { id: number; received_at?: string; flags?: string[] };
  assignment?: { state: string; reason?: string | null };
}

function visitBody(item: VisitItem) {
  const body: {
    resident_id: number;
    client_visit_id: string;
    made_at: string;
    outcome: VisitItem['outcome'];
    notes: string;
    photo_consent: boolean;
    help_kind?: NonNullable<VisitItem['help_kind']>;
    photos?: string[];
    lat?: number;
    lng?: number;
  } = {
    resident_id: item.resident_id,
    client_visit_id: item.id,
    made_at: item.made_at,
    outcome: item.outcome,
    notes: item.notes,
    photo_consent: item.photo_consent,
  };
  if (item.outcome === 'needs_help' && item.help_kind) body.help_kind = item.help_kind;
  if (item.photos.length) body.photos = item.photos;
  if (item.lat !== null && item.lng !== null) {
    body.lat = item.lat;
    body.lng = item.lng;
  }
  return body;
}

interface VisitAnswer {
  visit?: { id: number; flags?: string[]; points?: number };
}

async function sendOne(item: OutboxItem): Promise<void> {
  if (item.kind === 'visit') {
    await uploadPhotos(item);
    const r = await api.post('/api/v1/care/visits', { body: visitBody(item) });
    const d = r.data as VisitAnswer;
    await setItem(item.id, (i) => ({
      ...i,
      state: 'received',
      error: undefined,
      // The server keeps the notes (sealed); the phone no longer needs them.
      notes: '',
      visit_id: d.visit?.id,
      points: d.visit?.points ?? 0,
      flags: d.visit?.flags,
      updated_at: Date.now(),
    }));
    return;
  }
  if (item.kind === 'checkin') {
    const r = await api.post('/api/v1/assignments/{id}/checkins', {
      path: { id: item.assignment_id },
      body: { lat: item.lat as number, lng: item.lng as number, at: item.at },
    });
    const d = r.data as { distance_m?: number | null };
    await setItem(item.id, (i) => ({ ...i, state: 'received', error: undefined, distance_m: d?.distance_m ?? null, updated_at: Date.now() }));
    return;
  }
  await uploadPhotos(item);
  const r = await api.post('/api/v1/reports', { body: reportBody(item) });
  const d = r.data as ReportAnswer;
  const st = d.assignment?.state;
  await setItem(item.id, (i) => ({
    ...i,
    state: st === 'approved' ? 'approved' : st === 'rejected' ? 'rejected' : 'received',
    error: undefined,
    report_id: d.report?.id,
    received_at: d.report?.received_at,
    flags: d.report?.flags,
    reason: d.assignment?.reason ?? null,
    updated_at: Date.now(),
  }));
}

let running: Promise<SyncSummary> | null = null;

/**
 * Sends every waiting item of the worker, oldest first. One run at a time in a tab (a second
 * call joins the first). force: ignore the backoff (the network just came back, or the
 * worker pressed "send now"). A transient failure (network, timeout, 429, 5xx) leaves the
 * item waiting with a backoff; a refusal (4xx) marks it refused with the server's code; 401
 * stops the run (the session ended: the items wait for the next login).
 */
export function syncNow(workerId: number, force = false): Promise<SyncSummary> {
  if (running) return running;
  running = (async () => {
    const summary: SyncSummary = { sent: 0, refused: 0, pending: 0 };
    const items = (await db.getAll<OutboxItem>(db.OUTBOX))
      .filter((i) => i.worker_id === workerId && (i.state === 'saved' || i.state === 'sending'))
      .sort((a, b) => a.created_at - b.created_at);
    // Items of one assignment (or of one resident) go in order: a later one waits for an
    // earlier one that still waits.
    const chain = (i: OutboxItem) => (i.kind === 'visit' ? `v${i.resident_id}` : `a${i.assignment_id}`);
    const blocked = new Set<string>();
    for (const item of items) {
      if (blocked.has(chain(item)) || (!force && item.next_try_at > Date.now())) {
        blocked.add(chain(item));
        summary.pending++;
        continue;
      }
      await setItem(item.id, (i) => ({ ...i, state: 'sending', updated_at: Date.now() }));
      try {
        await sendOne(item);
        summary.sent++;
      } catch (e) {
        const err = errOf(e);
        if (err.status === 401) {
          await setItem(item.id, (i) => ({ ...i, state: 'saved', updated_at: Date.now() }));
          summary.pending += items.length - summary.sent - summary.refused;
          summary.waiting = err;
          break;
        }
        const transient = e instanceof ApiError ? e.transient : true;
        if (transient) {
          await setItem(item.id, (i) => ({
            ...i,
            state: 'saved',
            error: err,
            attempts: i.attempts + 1,
            next_try_at: Date.now() + backoff(i.attempts),
            updated_at: Date.now(),
          }));
          summary.pending++;
          summary.waiting = err;
          blocked.add(chain(item));
          if (err.status === 0) {
            // The network is gone: the rest would fail the same way.
            summary.pending += items.length - items.indexOf(item) - 1;
            break;
          }
        } else {
          await setItem(item.id, (i) => ({ ...i, state: 'refused', error: err, updated_at: Date.now() }));
          summary.refused++;
        }
      }
    }
    return summary;
  })().finally(() => {
    running = null;
  });
  return running;
}

/** Reads the review outcome of received reports (approved / rejected) from the server. */
export async function refreshStates(workerId: number): Promise<void> {
  const items = (await listItems(workerId)).filter((i) => i.kind === 'report' && i.state === 'received');
  for (const item of items) {
    try {
      const r = await api.get('/api/v1/assignments/{id}', { path: { id: item.assignment_id } });
      const a = r.data as { state?: string; reason?: string | null };
      if (r.fromCache) continue;
      if (a.state === 'approved' || a.state === 'rejected')
        await setItem(item.id, (i) => ({ ...i, state: a.state as ItemState, reason: a.reason ?? null, updated_at: Date.now() }));
    } catch {
      return; // offline or the session ended: try again later
    }
  }
}
