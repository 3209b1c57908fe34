// IndexedDB, the phone's durable store: the outbox (reports and check-ins not yet accepted by
// the server, and those accepted, to show their state) and the photos they refer to. It
// survives closing the tab and restarting the browser; nothing here depends on the network.
export const DB_NAME = 'gridpoints-worker';
const DB_VERSION = 1;
export const OUTBOX = 'outbox';
export const PHOTOS = 'photos';

let opening: Promise<IDBDatabase> | null = null;

function promisify<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

export function openDb(): Promise<IDBDatabase> {
  if (opening) return opening;
  opening = new Promise<IDBDatabase>((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, DB_VERSION);
    req.onupgradeneeded = () => {
      const db = req.result;
      if (!db.objectStoreNames.contains(OUTBOX)) {
        const s = db.createObjectStore(OUTBOX, { keyPath: 'id' });
        s.createIndex('worker', 'worker_id');
      }
      if (!db.objectStoreNames.contains(PHOTOS)) db.createObjectStore(PHOTOS, { keyPath: 'sha256' });
    };
    req.onsuccess = () => {
      const db = req.result;
      // Another tab upgrading the schema: let it, and reopen on next use.
      db.onversionchange = () => {
        db.close();
        opening = null;
      };
      resolve(db);
    };
    req.onerror = () => {
      opening = null;
      reject(req.error);
    };
    req.onblocked = () => {
      /* another tab holds an older version open; it closes on versionchange */
    };
  });
  return opening;
}

export async function getAll<T>(store: string): Promise<T[]> {
  const db = await openDb();
  return promisify(db.transaction(store, 'readonly').objectStore(store).getAll() as IDBRequest<T[]>);
}

export async function get<T>(store: string, key: string): Promise<T | undefined> {
  const db = await openDb();
  return promisify(db.transaction(store, 'readonly').objectStore(store).get(key) as IDBRequest<T | undefined>);
}

/** Writes all values in one transaction: either every one is stored or none is. */
export async function putAll(entries: { store: string; value: unknown }[]): Promise<void> {
  const db = await openDb();
  const stores = [...new Set(entries.map((e) => e.store))];
  const tx = db.transaction(stores, 'readwrite');
  for (const e of entries) tx.objectStore(e.store).put(e.value);
  await new Promise<void>((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error('transaction aborted'));
  });
}

export async function del(store: string, keys: string[]): Promise<void> {
  const db = await openDb();
  const tx = db.transaction(store, 'readwrite');
  for (const k of keys) tx.objectStore(store).delete(k);
  await new Promise<void>((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
  });
}

/** Reads one record and replaces it in the same transaction (no lost update between tabs). */
export async function update<T>(store: string, key: string, fn: (v: T) => T | undefined): Promise<T | undefined> {
  const db = await openDb();
  const tx = db.transaction(store, 'readwrite');
  const os = tx.objectStore(store);
  let out: T | undefined;
  const req = os.get(key) as IDBRequest<T | undefined>;
  req.onsuccess = () => {
    if (req.result === undefined) return;
    out = fn(req.result);
    if (out !== undefined) os.put(out);
  };
  await new Promise<void>((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
  });
  return out;
}
