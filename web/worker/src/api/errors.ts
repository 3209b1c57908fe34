// A server refusal in words a worker understands: the error code picks the sentence; numbers
// the server put in its message (how far, how long to wait) are carried over.
import { t, tOr, fmtDistance } from '../i18n';
import { ApiError } from './client';

export interface ErrLike {
  status: number;
  code: string;
  message: string;
  field?: string;
  retryAfterS?: number;
}

function waitText(s: number | undefined): string {
  const n = Math.max(1, Math.round(s ?? 30));
  return n < 60 ? t('unit.s', { n }) : t('unit.min', { n: Math.ceil(n / 60) });
}

export function errorText(e: unknown): string {
  const err: ErrLike =
    e instanceof ApiError
      ? { status: e.status, code: e.code, message: e.message, field: e.field, retryAfterS: e.retryAfterS }
      : e && typeof e === 'object' && 'code' in e
        ? (e as ErrLike)
        : { status: 0, code: 'generic', message: String(e) };
  if (err.status === 0) return t('err.network');
  if (err.code === 'outside_geofence') {
    // "the report is 523 m from the task, more than 200 m"
    const m = /(\d+(?:\.\d+)?) m from the task, more than (\d+(?:\.\d+)?) m/.exec(err.message);
    return m
      ? t('err.outside_geofence', { distance: fmtDistance(Number(m[1])), limit: fmtDistance(Number(m[2])) })
      : t('err.outside_geofence_plain');
  }
  if (err.code === 'too_many_attempts' || err.code === 'login_delayed')
    return t('err.too_many_attempts', { wait: waitText(err.retryAfterS) });
  if (err.status === 401 && err.code !== 'invalid_credentials' && !err.code.startsWith('wechat') && !err.code.startsWith('invite'))
    return t('err.unauthorized');
  if (err.status >= 500) return t('err.server');
  // A field the worker typed that the server cannot use: said about that field.
  if (err.status === 400 && err.field === 'invite_code') return t('err.invite_invalid');
  if (err.status === 400 && err.field === 'phone') return t('login.badPhone');
  if (err.status === 413) return t('err.too_large');
  return tOr(`err.${err.code}`, t('err.generic', { message: err.message }));
}
