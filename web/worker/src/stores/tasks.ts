// Tasks the worker has looked at, kept on the phone so that a claimed task's details (title,
// place, geofence, photos needed) are there when the report is written offline.
import type { Task } from '../api/types';

const KEY = 'gp.tasks';
const MAX = 50;

function all(): Record<string, Task & { _seen: number }> {
  try {
    return JSON.parse(localStorage.getItem(KEY) ?? '{}');
  } catch {
    return {};
  }
}

export function rememberTask(task: Task): void {
  const m = all();
  m[String(task.id)] = { ...task, _seen: Date.now() };
  const keys = Object.keys(m).sort((a, b) => m[b]._seen - m[a]._seen);
  for (const k of keys.slice(MAX)) delete m[k];
  try {
    localStorage.setItem(KEY, JSON.stringify(m));
  } catch {
    /* storage full: the service worker's cache still has it */
  }
}

export function knownTask(id: number): Task | null {
  return all()[String(id)] ?? null;
}
