/* api_mrc.h -- what the merchant handlers share (api_mrc_admin.c, api_mrc_signed.c,
 * api_mrc_console.c, api_mall.c). */
#ifndef GP_API_MRC_H
#define GP_API_MRC_H

#include "api.h"

struct db_result;

enum api_mrc_flag {
    API_MRC_EFFECTS = 1 << 0, /* push worker balances found in the reply to Redis */
    API_MRC_STRIP = 1 << 1,   /* drop "balances" from the reply (merchant-facing replies) */
    API_MRC_FORGET_KEYS =
        1 << 2, /* drop "key_ids" (and "key_id") of the reply from the key cache */
};

/* rc->state of a merchant query. */
struct api_mrc_state {
    int code;
    unsigned flags;
    const char *extra_name; /* a field added to a successful reply (a secret shown once) */
    char *extra_value;      /* malloc'd; wiped and freed with the arena */
};

/* Allocates the state of a query in the arena and makes it rc->state. */
struct api_mrc_state *api_mrc_state_new(struct req_ctx *rc, int code, unsigned flags);
/* Arena cleanup for a state holding a secret: wipes and frees extra_value. */
void api_mrc_wipe_extra(void *state);
/* The db_query callback: replies with row 0 column 0 (code) after applying the flags, and the
 * secret unless the reply is an idempotent replay; or with the error. */
void api_mrc_query_cb(struct db_result *res, void *arg);
/* api_mrc_state_new + db_query with api_mrc_query_cb. */
void api_mrc_query(struct req_ctx *rc, const char *sql, int n, const char *const *params, int code,
                   unsigned flags);
/* Just the "cursor" filter. */
extern const struct api_qspec api_mrc_page_specs[1];

/* Who reads a statement or settlements: an admin/auditor of the street, the merchant itself
 * (signed), or its staff (console). Each SQL text resolves the merchant (and with it the
 * caller's right to read it) inside the statement. */
enum api_mrc_who { API_MRC_ADMIN, API_MRC_MERCHANT, API_MRC_CONSOLE };
void api_mrc_statement_for(struct req_ctx *rc, enum api_mrc_who who);
void api_mrc_settlements_for(struct req_ctx *rc, enum api_mrc_who who);
void api_mrc_settlement_get_for(struct req_ctx *rc, enum api_mrc_who who);

#endif
