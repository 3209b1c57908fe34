// Which screens a person's roles open. Only a guide for the menu and the routes: the server
// decides every request by scope (a screen someone cannot use is simply not offered).
import { session } from './stores/session';

export type Screen = 'dashboard' | 'people' | 'tasks' | 'review' | 'budgets' | 'merchants' | 'audit' | 'shop';

const STAFF = ['grid_staff', 'community_admin', 'street_admin'];

export function roleNames(): string[] {
  return (session.me?.roles ?? []).map((r) => r.role);
}

export function has(...roles: string[]): boolean {
  return roleNames().some((r) => roles.includes(r));
}

export function canSee(s: Screen): boolean {
  switch (s) {
    case 'dashboard':
      return has(...STAFF, 'auditor');
    case 'people':
    case 'tasks':
    case 'review':
    case 'budgets':
      return has(...STAFF);
    case 'merchants':
      return has('street_admin');
    case 'audit':
      return has('auditor', 'street_admin');
    case 'shop':
      return has('merchant_staff');
  }
}

export const SCREENS: Screen[] = ['dashboard', 'people', 'tasks', 'review', 'budgets', 'merchants', 'audit', 'shop'];

export function firstScreen(): Screen | null {
  return SCREENS.find((s) => s !== 'dashboard' && canSee(s)) ?? null;
}
