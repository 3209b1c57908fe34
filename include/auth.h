/* auth.h -- who is calling: session tokens for people (signed merchant requests: merchant_auth.h).
 *
 * A session token is 32 random bytes (base64url) handed out at login; only its SHA-256 is
 * stored (PostgreSQL is the truth, Redis caches the principal for a short while so that most
 * requests cost no database round trip). Roles are re-checked by the SQL functions on every
 * business operation; the cached roles only gate routes early. */
#ifndef GP_AUTH_H
#define GP_AUTH_H

#include "common.h"
#include "principal.h"

struct app;
struct req_ctx;
struct route_guard;

/* Parses a role name; 0 when unknown. */
unsigned auth_role_parse(const char *name);

/* Route guards (router.h; routes.c names one per route). Both resolve the request's
 * Authorization: Bearer token into rc->principal and then let the request through. On a
 * missing, malformed, expired or revoked token they reply 401 and stop; when neither Redis nor
 * PostgreSQL can answer, 503.
 *   auth_guard_session: any person with a valid session.
 *   auth_guard_auditor: and holding the auditor or street admin role (403 otherwise): the
 *                       /audit/v1 routes; the SQL functions re-check the scope of each object. */
extern const struct route_guard auth_guard_session;
extern const struct route_guard auth_guard_auditor;

/* The coalescer of session cache misses (app->sessions): the misses waiting at a moment are
 * looked up in one query (auth.session_batch_max, auth.session_batches_in_flight). Free it
 * after the database pool (a failing batch still answers its requests). */
struct auth_sessions *auth_sessions_new(struct app *app);
void auth_sessions_free(struct auth_sessions *as);
/* Session cache misses queued and the batch queries that looked them up, since start. */
void auth_sessions_stats(const struct auth_sessions *as, unsigned long long *misses,
                         unsigned long long *lookups);

/* Drops the cached principal of the request's token (logout); fire-and-forget. */
void auth_session_forget(struct req_ctx *rc);
/* Drops the cached principal of a session by its hex SHA-256 (a suspension revoked it). */
void auth_session_forget_hash(struct app *app, const char *token_hash_hex);

#endif
