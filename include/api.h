/* api.h -- the HTTP handlers, one module per resource family, and the helpers they share.
 *
 * A handler only parses and validates, calls the domain (mostly one SQL function, which
 * checks scope and state and returns the response body as jsonb), maps the status and
 * replies. Handlers are listed in routes.c, the one place that lists the API. */
#ifndef GP_API_H
#define GP_API_H

#include "common.h"

struct req_ctx;

/* Runs one statement and replies with its row 0 column 0 JSON (success_code) or its error. */
void api_query(struct req_ctx *rc, const char *sql, int nparams, const char *const *params,
               int success_code);
/* Decimal text of v in the request arena (a SQL parameter). */
const char *api_i64(struct req_ctx *rc, int64_t v);
/* The "after" keyset cursor of list routes: absent, or a positive id; 400 otherwise. */
bool api_cursor_or_reply(struct req_ctx *rc, const char **after) MUSTCHECK;

/* api_core.c */
void api_healthz(struct req_ctx *rc);
void api_readyz(struct req_ctx *rc);
void api_metrics(struct req_ctx *rc);
void api_login(struct req_ctx *rc);
void api_logout(struct req_ctx *rc);
void api_me(struct req_ctx *rc);

/* api_org.c */
void api_unit_create(struct req_ctx *rc);
void api_unit_list(struct req_ctx *rc);
void api_unit_get(struct req_ctx *rc);
void api_person_create(struct req_ctx *rc);
void api_person_list(struct req_ctx *rc);
void api_person_get(struct req_ctx *rc);
void api_person_update(struct req_ctx *rc);
void api_person_role_grant(struct req_ctx *rc);
void api_person_role_revoke(struct req_ctx *rc);

#endif
