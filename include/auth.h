/* auth.h -- who is calling: session tokens for people (signed merchant requests: merchant_auth.h).
 *
 * A session token is 32 random bytes (base64url) handed out at login; only its SHA-256 is
 * stored (PostgreSQL is the truth, Redis caches the principal for a short while so that most
 * requests cost no database round trip). Roles are re-checked by the SQL functions on every
 * business operation; the cached roles only gate routes early. */
#ifndef GP_AUTH_H
#define GP_AUTH_H

#include "common.h"

struct app;
struct req_ctx;

enum auth_role {
    ROLE_WORKER = 1 << 0,
    ROLE_VOLUNTEER = 1 << 1,
    ROLE_GRID_STAFF = 1 << 2,
    ROLE_COMMUNITY_ADMIN = 1 << 3,
    ROLE_STREET_ADMIN = 1 << 4,
    ROLE_AUDITOR = 1 << 5,
    ROLE_MERCHANT_STAFF = 1 << 6,
};
#define ROLE_STAFF (ROLE_GRID_STAFF | ROLE_COMMUNITY_ADMIN | ROLE_STREET_ADMIN)

struct principal {
    int64_t person_id; /* 0 = anonymous */
    int64_t unit_id;   /* home unit */
    unsigned roles;    /* union of enum auth_role over all the person's grants */
    /* The home unit's path (ids of the unit and its ancestors, "1.5.12"), and whether the
     * person is an active worker or volunteer there: what the claim gate needs to know that a
     * task reaches the caller (gp_task_in_area) before it may answer (task_gate.h). Empty /
     * false when unknown: then nothing but PostgreSQL answers about the caller's scope. */
    char area[96];
    bool worker;
    char token_hash[65]; /* hex SHA-256 of the session token */
    int64_t merchant_id; /* a verified merchant request (AUTH_MERCHANT): its merchant */
    char key_id[24];     /* ... and the key it was signed with (merchant_auth.h) */
};

/* Parses a role name; 0 when unknown. */
unsigned auth_role_parse(const char *name);

/* Resolves the request's Authorization: Bearer token into rc->principal, then calls next(rc).
 * On a missing, malformed, expired or revoked token it replies 401 itself and does not call
 * next; when neither Redis nor PostgreSQL can answer it replies 503. */
void auth_session_resolve(struct req_ctx *rc, void (*next)(struct req_ctx *rc));

/* Drops the cached principal of the request's token (logout); fire-and-forget. */
void auth_session_forget(struct req_ctx *rc);
/* Drops the cached principal of a session by its hex SHA-256 (a suspension revoked it). */
void auth_session_forget_hash(struct app *app, const char *token_hash_hex);

/* Replies 403 and returns false unless the principal holds one of `roles`. */
bool auth_require_role_or_reply(struct req_ctx *rc, unsigned roles) MUSTCHECK;

#endif
