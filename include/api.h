/* api.h -- the HTTP handlers, one module per resource family, and the helpers they share.
 *
 * A handler only parses and validates, calls the domain (mostly one SQL function, which
 * checks scope and state and returns the response body as jsonb), maps the status and
 * replies. Handlers are listed in routes.c, the one place that lists the API. The one way
 * to run a query, read a reply, page a list and check a body is in docs/CONVENTIONS.md. */
#ifndef GP_API_H
#define GP_API_H

#include "common.h"

#include <jansson.h>

struct config;
struct db_result;
struct req_ctx;
struct route_guard;

/* Runs one statement and replies with its row 0 column 0 JSON (success_code) or its error. */
void api_query(struct req_ctx *rc, const char *sql, int nparams, const char *const *params,
               int success_code);
/* For the functions that return gp_reply: sql is "SELECT body, effects FROM gp_x(...)". On
 * success the effects column (docs/CONVENTIONS.md, "Effects") is pushed to Redis before
 * replying with the body, which is sent as the database wrote it, never parsed. */
void api_write(struct req_ctx *rc, const char *sql, int nparams, const char *const *params,
               int success_code);
/* What happens to a reply between the database and the client (api_run). What a caller may
 * see is decided by the SQL function for its audience: nothing is stripped here. */
enum api_post {
    API_EFFECTS = 1 << 0, /* column 1 holds the post-commit effects (effects_apply) */
};
/* The one query path of the handlers: api_query is api_run(..., 0) and api_write is
 * api_run(..., API_EFFECTS). The body is parsed only by api_run_secret. Sets rc->state. */
void api_run(struct req_ctx *rc, const char *sql, int nparams, const char *const *params,
             int success_code, unsigned post);
/* api_run that adds the field name = secret to a successful reply, unless the reply is an
 * idempotent replay (a secret is shown once). secret comes from api_secret_buf. */
void api_run_secret(struct req_ctx *rc, const char *sql, int nparams, const char *const *params,
                    int success_code, unsigned post, const char *name, const char *secret);
/* For handlers that use a SQL function's reply before replying: the reply parsed
 * (db_result_json, a new reference), or NULL after replying with the error, 404 for no row,
 * or 500 for a reply that is not JSON. */
json_t *api_result_json_or_reply(struct req_ctx *rc, struct db_result *res, int success_code);
/* The body of every successful login (password or WeChat): {token, token_type: "Bearer",
 * expires_at, person}, person being the principal gp_session_create returned (borrowed). */
json_t *api_session_body(const char *token, json_t *principal);
/* A zeroed heap buffer for a secret, wiped and freed with the request. */
char *api_secret_buf(struct req_ctx *rc, size_t size);
/* The caller's person id as a SQL parameter. */
const char *api_actor(struct req_ctx *rc);
/* The idempotency triple of a write: the caller's key scope ("person:<id>"), the
 * Idempotency-Key header (NULL when absent) and the hash of the request it is bound to. */
void api_idem_params(struct req_ctx *rc, const char **principal, const char **key,
                     const char **hash);
/* Query-string filters of a list route, each with its type. */
enum api_qtype { API_Q_STR, API_Q_INT, API_Q_NUM, API_Q_BOOL };
struct api_qspec {
    const char *name;
    enum api_qtype type;
};
/* The filters present in the query string, plus the page ("limit" and an API_CURSOR_KEY
 * "cursor", api_page_or_reply), as the jsonb text (arena) that the list functions take. A bad
 * value is a 400 naming the parameter; NULL after replying. */
const char *api_query_args_or_reply(struct req_ctx *rc, const struct api_qspec *specs, size_t n);
/* Compact JSON text of j in the request arena; for rc->json itself, the request body as it came
 * (never modify rc->json in place: copy it). */
const char *api_json_text(struct req_ctx *rc, json_t *j);
/* Decimal text of v in the request arena (a SQL parameter). */
const char *api_i64(struct req_ctx *rc, int64_t v);
/* The one pagination step of every list route: ?limit= (1..server.page_size_max, default
 * server.page_size_default) and ?cursor=, the keyset cursor from the previous page's
 * "next_cursor". The SQL function that reads the cursor decides its kind:
 *   API_CURSOR_ID   the last row's id: a positive integer, checked here;
 *   API_CURSOR_KEY  an opaque key the SQL function decodes (it answers 400 invalid_cursor
 *                   for a bad one): here at most API_CURSOR_KEY_MAX characters.
 * A bad limit is 400 invalid_query naming "limit", a bad cursor 400 invalid_cursor naming
 * "cursor"; false after replying. cursor is NULL when absent. */
enum api_cursor { API_CURSOR_ID, API_CURSOR_KEY };
#define API_CURSOR_KEY_MAX 200
struct api_page {
    int limit;
    const char *cursor;
};
bool api_page_or_reply(struct req_ctx *rc, enum api_cursor kind, struct api_page *page) MUSTCHECK;
/* The same with the route's own limits (the audit export's batches, not pages). */
bool api_page_sized_or_reply(struct req_ctx *rc, enum api_cursor kind, int default_limit,
                             int max_limit, struct api_page *page) MUSTCHECK;

/* api_core.c */
void api_healthz(struct req_ctx *rc);
void api_readyz(struct req_ctx *rc);
void api_metrics(struct req_ctx *rc);
/* The route guard of /metrics (router.h): whether the rules of server.metrics_listen /
 * metrics_token / loopback let the request through, from where it arrived (rc->origin);
 * replies 404, 401 or 403 itself when not. */
extern const struct route_guard api_guard_metrics;
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
void api_people_import(struct req_ctx *rc);
int api_people_import_max_size(const struct config *cfg);

/* api_wechat.c: WeChat login, binding with invite codes, unbinding (wechat.h) */
void api_wechat_login(struct req_ctx *rc);
void api_wechat_bind(struct req_ctx *rc);
void api_wechat_invite_create(struct req_ctx *rc);
void api_wechat_unbind_me(struct req_ctx *rc);
void api_wechat_unbind_person(struct req_ctx *rc);

/* api_evidence.c: evidence photos (evidence.h) */
void api_evidence_put(struct req_ctx *rc);
void api_evidence_get(struct req_ctx *rc);
/* The body limit of an upload (routes.c): evidence.max_size. */
int api_evidence_max_size(const struct config *cfg);

/* api_tasks.c */
void api_task_publish(struct req_ctx *rc);
void api_task_list(struct req_ctx *rc);
void api_task_get(struct req_ctx *rc);
void api_task_update(struct req_ctx *rc);
void api_task_cancel(struct req_ctx *rc);
void api_task_claim(struct req_ctx *rc);
void api_task_history(struct req_ctx *rc);
void api_assignment_list(struct req_ctx *rc);
void api_assignment_get(struct req_ctx *rc);
void api_assignment_release(struct req_ctx *rc);
void api_assignment_checkin(struct req_ctx *rc);
void api_assignment_approve(struct req_ctx *rc);
void api_assignment_reject(struct req_ctx *rc);
void api_report_submit(struct req_ctx *rc);
void api_review_queue(struct req_ctx *rc);

/* api_ledger.c */
void api_balance(struct req_ctx *rc);
void api_points(struct req_ctx *rc);
void api_statement(struct req_ctx *rc);
void api_rank(struct req_ctx *rc);
void api_budgets(struct req_ctx *rc);
void api_budget_issue(struct req_ctx *rc);
void api_budget_grant(struct req_ctx *rc);
void api_adjust(struct req_ctx *rc);
void api_task_reservation(struct req_ctx *rc);
void api_policy_get(struct req_ctx *rc);
void api_policy_set(struct req_ctx *rc);

/* api_audit.c */
void api_audit_status(struct req_ctx *rc);
void api_audit_checkpoints(struct req_ctx *rc);
void api_audit_consistency(struct req_ctx *rc);
void api_audit_txn_search(struct req_ctx *rc);
void api_audit_txn_proof(struct req_ctx *rc);
void api_audit_statement(struct req_ctx *rc);
void api_audit_trial_balance(struct req_ctx *rc);
void api_audit_budget_use(struct req_ctx *rc);
void api_audit_log(struct req_ctx *rc);
void api_audit_anomalies(struct req_ctx *rc);
void api_audit_export(struct req_ctx *rc);
void api_audit_keys(struct req_ctx *rc);
void api_audit_latest_checkpoint(struct req_ctx *rc);
void api_points_board(struct req_ctx *rc);

/* api_export.c: XLSX exports (issue 14): runs sql (a gp_*_xlsx function) and replies with its
 * rows as a workbook named filename, or 413 export_too_large */
void api_xlsx(struct req_ctx *rc, const char *sql, int nparams, const char *const *params,
              const char *filename);

/* api_dashboard.c: the street dashboard (issue 14) */
void api_dashboard(struct req_ctx *rc);
void api_public_units(struct req_ctx *rc);

/* api_mrc_admin.c: street admins (merchant management) */
void api_merchant_create(struct req_ctx *rc);
void api_merchant_list(struct req_ctx *rc);
void api_merchant_get(struct req_ctx *rc);
void api_merchant_update(struct req_ctx *rc);
void api_merchant_suspend(struct req_ctx *rc);
void api_merchant_reinstate(struct req_ctx *rc);
void api_merchant_key_create(struct req_ctx *rc);
void api_merchant_key_revoke(struct req_ctx *rc);
void api_merchant_staff_add(struct req_ctx *rc);
void api_merchant_staff_remove(struct req_ctx *rc);
void api_merchant_statement(struct req_ctx *rc);
void api_merchant_settlements(struct req_ctx *rc);
void api_merchant_settle(struct req_ctx *rc);
void api_merchant_settlement_get(struct req_ctx *rc);
/* api_mrc_console.c: merchant staff with a session */
void api_console_merchants(struct req_ctx *rc);
void api_console_offers(struct req_ctx *rc);
void api_console_statement(struct req_ctx *rc);
void api_console_settlements(struct req_ctx *rc);
void api_console_settlement_get(struct req_ctx *rc);
/* api_mall.c: workers */
void api_mall_offers(struct req_ctx *rc);
void api_mall_offer_get(struct req_ctx *rc);
void api_mall_order(struct req_ctx *rc);
void api_voucher_list(struct req_ctx *rc);
void api_voucher_get(struct req_ctx *rc);
void api_voucher_cancel(struct req_ctx *rc);
void api_paycode_create(struct req_ctx *rc);
void api_charge_list(struct req_ctx *rc);
/* api_mrc_signed.c: signed merchant requests (/merchant/v1) */
void api_mrc_me(struct req_ctx *rc);
void api_mrc_offer_create(struct req_ctx *rc);
void api_mrc_offer_list(struct req_ctx *rc);
void api_mrc_offer_get(struct req_ctx *rc);
void api_mrc_offer_update(struct req_ctx *rc);
void api_mrc_voucher_get(struct req_ctx *rc);
void api_mrc_voucher_capture(struct req_ctx *rc);
void api_mrc_voucher_refund(struct req_ctx *rc);
void api_mrc_charge(struct req_ctx *rc);
void api_mrc_charge_get(struct req_ctx *rc);
void api_mrc_charge_refund(struct req_ctx *rc);
void api_mrc_statement(struct req_ctx *rc);
void api_mrc_settlements(struct req_ctx *rc);
void api_mrc_settlement_get(struct req_ctx *rc);
void api_mrc_webhook_set(struct req_ctx *rc);
void api_mrc_webhook_delete(struct req_ctx *rc);
void api_mrc_webhook_events(struct req_ctx *rc);

#endif
