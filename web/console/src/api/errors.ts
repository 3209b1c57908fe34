// A server refusal in words staff understand: the error code picks the sentence when there is
// one, else the server's own message is shown (staff can read it), with the field it names.
import { t, tOr } from '../i18n';
import { ApiError } from './client';

export function errorText(e: unknown): string {
  if (e instanceof ApiError) {
    if (e.status === 0) return t('err.network');
    if (e.status >= 500) return t('err.server');
    const base = tOr(`err.${e.code}`, e.message);
    return e.field ? `${base} (${e.field})` : base;
  }
  return String(e instanceof Error ? e.message : e);
}
