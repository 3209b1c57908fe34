// What the console reads from answers that docs/openapi.yaml describes loosely (a Page of
// items: {}, or a description without a schema). Field names are the server's.
import type { components } from './schema.gen';

export interface Unit {
  id: number;
  parent_id: number | null;
  level: 'street' | 'community' | 'grid' | 'micro_grid';
  name: string;
  path: string;
}
export interface Me {
  id: number;
  name: string;
  phone: string;
  unit_id: number;
  unit?: Unit;
  unit_path?: { id: number; name: string; level: string }[];
  roles?: { role: string; unit_id: number }[];
  tags?: string[];
}
export type Person = components['schemas']['Person'] & { initial_password?: string };
export type Task = components['schemas']['Task'] & {
  description?: string;
  category?: string;
  required_tags?: string[];
  lat?: number | null;
  lng?: number | null;
  geofence_m?: number | null;
  geofence_enforced?: boolean;
  starts_at?: string;
  ends_at?: string;
  evidence_photos?: number;
  evidence_checkin?: boolean;
  created_at?: string;
  cancel_reason?: string | null;
  counts?: Record<string, number>;
};
export interface TaskEvent {
  id: number;
  at: string;
  kind: string;
  event: string;
  from: string | null;
  to: string | null;
  actor_id: number | null;
  timer: string | null;
  reason: string | null;
  worker_id: number | null;
  assignment_id: number | null;
}
export interface Checkin {
  id: number;
  at: string;
  distance_m?: number | null;
  flags?: string[];
}
export interface Review {
  id: number;
  task_id: number;
  worker_id: number;
  state: string;
  submitted_at?: string;
  review_due_at?: string | null;
  worker?: { id: number; name: string; unit_id: number };
  can_decide?: boolean;
  task?: Task;
  report?: {
    id: number;
    notes?: string | null;
    made_at?: string;
    lat?: number | null;
    lng?: number | null;
    distance_m?: number | null;
    flags?: string[];
    evidence?: { url: string; sha256: string }[];
  };
  checkins?: Checkin[];
  flags?: string[];
}
export interface Budget {
  id: number;
  unit_id: number;
  name: string;
  level: string;
  budget: number;
  reserved: number;
  open_tasks: number;
}
export type Merchant = components['schemas']['Merchant'];
export type Offer = components['schemas']['Offer'];
export type Settlement = components['schemas']['Settlement'];
export type Dashboard = components['schemas']['Dashboard'];
export type Figures = components['schemas']['DashboardFigures'];
export type ImportResult = components['schemas']['ImportResult'];
export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}
