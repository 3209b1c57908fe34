/* api_exchange.h -- the routes of the points exchange with partner schemes (docs/EXCHANGE.md):
 *
 *   /api/v1/exchange/...   street admins register partners, reconcile and settle; workers
 *                          make link codes, link and unlink, transfer out and read their
 *                          transfers (session guard)
 *   /exchange/v1/...       what partner schemes call: transfer in, status query, link confirm,
 *                          daily statement (the partner signature guard below)
 *   /audit/v1/exchange/... reconciliation mismatches as anomalies (auditor guard)
 *
 * The partner signature guard reuses the merchant request signing (merchant_auth.h) with the
 * partner's in key ("xp_" key ids): the timestamp window exchange.signature_window, a nonce
 * remembered in Redis for exchange.nonce_ttl (writes fail closed without Redis), and every
 * reply to a verified request signed with the same key (GP-Signature). */
#ifndef GP_API_EXCHANGE_H
#define GP_API_EXCHANGE_H

struct req_ctx;
struct route_guard;

extern const struct route_guard exchange_partner_guard;

/* street admins */
void api_xchg_partner_create(struct req_ctx *rc);
void api_xchg_partner_list(struct req_ctx *rc);
void api_xchg_partner_get(struct req_ctx *rc);
void api_xchg_partner_update(struct req_ctx *rc);
void api_xchg_reconcile(struct req_ctx *rc);
void api_xchg_reconciliations(struct req_ctx *rc);
void api_xchg_settle(struct req_ctx *rc);
void api_xchg_settlements(struct req_ctx *rc);
/* workers */
void api_xchg_link_code_create(struct req_ctx *rc);
void api_xchg_link_list(struct req_ctx *rc);
void api_xchg_link_create(struct req_ctx *rc);
void api_xchg_link_delete(struct req_ctx *rc);
void api_xchg_transfer_create(struct req_ctx *rc);
void api_xchg_transfer_list(struct req_ctx *rc);
void api_xchg_transfer_get(struct req_ctx *rc);
/* partners (signed) */
void api_xp_transfer_in(struct req_ctx *rc);
void api_xp_transfer_status(struct req_ctx *rc);
void api_xp_link_confirm(struct req_ctx *rc);
void api_xp_statement(struct req_ctx *rc);
/* auditors */
void api_audit_xchg_mismatches(struct req_ctx *rc);

#endif
