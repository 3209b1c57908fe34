/* ratelimit.h -- hit counters in Redis for throttling logins, SMS codes, claims and the like.
 *
 * Fixed windows: the first hit on a key starts a window of window_s seconds, and up to `limit`
 * hits are allowed inside it. INCR and PEXPIRE run in one Lua script, so a key never outlives
 * its window. As with any fixed window, a client can get up to 2 x limit hits through in a
 * short burst that straddles two windows; pick limits with that in mind.
 *
 * When Redis is down (or answers with something unexpected) the caller's on_down decides:
 * RATELIMIT_FAIL_OPEN lets the hit through, RATELIMIT_FAIL_CLOSED refuses it with
 * ST_UNAVAILABLE. Keys may hold personal data (phone numbers) and are never logged.
 *
 * Contract: ratelimit_hit() calls its callback exactly once and never from inside the call
 * itself (it rides on kv_eval's contract). */
#ifndef GP_RATELIMIT_H
#define GP_RATELIMIT_H

#include "common.h"
#include "status.h"

struct kv;
struct ratelimit;

enum ratelimit_on_down { RATELIMIT_FAIL_OPEN, RATELIMIT_FAIL_CLOSED };

/* st: ST_OK        allowed; retry_after_s = 0; remaining = hits left in this window, or -1
 *                  when Redis could not be asked (fail open);
 *     ST_RATE_LIMITED  refused; retry_after_s >= 1 (seconds until the window ends);
 *                  remaining = 0;
 *     ST_UNAVAILABLE   Redis down and fail closed; retry_after_s = 1; remaining = -1. */
typedef void (*ratelimit_cb)(enum status st, int retry_after_s, int remaining, void *arg);

/* Registers the Lua script with kv (kv owns it and frees it in kv_free). Never fails. */
struct ratelimit *ratelimit_new(struct kv *kv);
/* Frees the limiter. Hits in flight still complete normally: they do not refer to it. */
void ratelimit_free(struct ratelimit *rl);

/* Counts one hit against `key` (e.g. "rl:login:phone:138...") allowing `limit` (> 0) hits per
 * `window_s` (> 0) seconds. The key is copied. */
void ratelimit_hit(struct ratelimit *rl, const char *key, int limit, int window_s,
                   enum ratelimit_on_down on_down, ratelimit_cb cb, void *arg);

#endif
