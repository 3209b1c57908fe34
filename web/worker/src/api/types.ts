// What the app reads from the answers that docs/openapi.yaml describes only loosely (a Page of
// items: {}, or a description without a schema). Field names are the server's (the JSON built
// by sql/functions/*.sql); every field the app does not need is left out.
import type { components } from './schema.gen';

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
  claimable?: boolean;
  distance_m?: number;
  can_claim?: boolean;
  missing_tags?: string[];
  my_assignment?: Assignment | null;
};

export type Assignment = components['schemas']['Assignment'] & {
  submitted_at?: string | null;
  review_due_at?: string | null;
  decided_at?: string | null;
  reason?: string | null;
  report_id?: number | null;
  task?: Task;
  checkins?: { id: number; at: string; distance_m?: number | null; flags?: string[] }[];
};

export interface Me {
  id: number;
  name: string;
  phone: string;
  unit_id: number;
  unit?: { id: number; name: string; level: string; path?: string };
  roles?: { role: string; unit_id: number }[];
  tags?: string[];
}

export type Balance = components['schemas']['Balance'];

export interface StatementLine {
  kind: string;
  amount: number;
  balance_after?: number;
  txn_id: number;
  at?: string;
  created_at?: string;
  refs?: Record<string, unknown>;
  memo?: string;
}

export interface Rank {
  rank: number | null;
  level: string;
  total: number;
  period: string;
  points: number;
  unit_id: number;
}

export interface BoardRow {
  rank: number;
  name: string;
  micro_grid?: string | null;
  points: number;
  pending?: number;
  objection_until?: string | null;
}
export interface Board {
  grid?: { id: number; name: string } | string;
  month: string;
  items: BoardRow[];
}

export type Offer = components['schemas']['Offer'] & {
  merchant_name?: string;
  stock_left?: number;
  can_order?: boolean;
};
export type Voucher = components['schemas']['Voucher'];

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

// Care visits (docs/CARE.md): a due visit as GET /api/v1/care/due gives it to a worker, the
// resident in the worker's view (what a visit needs: name, phone, address, health notes, the
// home's point; never the ID number), and the answer to POST /api/v1/care/visits.
export type CareColour = 'red' | 'yellow' | 'blue';
export type CareOutcome = 'well' | 'needs_help' | 'not_home' | 'moved';
export type CareHelpKind = 'health' | 'meals' | 'repairs' | 'mood' | 'other';

export interface CareResidentView {
  id: number;
  colour: CareColour;
  categories?: string[];
  status?: string;
  last_visit_at?: string | null;
  lat?: number | null;
  lng?: number | null;
  name?: string;
  phone?: string;
  address?: string;
  health_notes?: string;
}

export interface CareDue {
  id: number;
  resident_id: number;
  colour: CareColour;
  due_at: string;
  grace_until: string;
  state: string;
  overdue: boolean;
  as_backup?: boolean;
  resident: CareResidentView;
}

export interface CareVisitAnswer {
  visit?: { id: number; outcome: CareOutcome; flags?: string[]; points?: number };
  next_due?: { due_at: string } | null;
  award?: { amount: number } | null;
  idempotent_replay?: boolean;
}
