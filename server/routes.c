/* routes.c -- the API: every route, its handler, its authentication and its body limit.
 * This table is the one place that lists the API; docs/openapi.yaml must list the same
 * routes (tests/api/test_openapi.py checks it). */
#include "api.h"
#include "router.h"

#define BODY_NONE 0
#define BODY_DEFAULT (-1)
#define BODY_SMALL 4096

const struct route routes_table[] = {
    {"GET", "/healthz", api_healthz, AUTH_NONE, BODY_NONE, "liveness"},
    {"GET", "/readyz", api_readyz, AUTH_NONE, BODY_NONE, "readiness: PostgreSQL and Redis reachable"},
    {"GET", "/metrics", api_metrics, AUTH_NONE, BODY_NONE, "Prometheus metrics"},

    {"POST", "/api/v1/auth/login", api_login, AUTH_NONE, BODY_SMALL, "log in with phone and password"},
    {"POST", "/api/v1/auth/logout", api_logout, AUTH_SESSION, BODY_SMALL, "revoke the session"},
    {"GET", "/api/v1/me", api_me, AUTH_SESSION, BODY_NONE, "the caller, their unit and roles"},

    {"POST", "/api/v1/units", api_unit_create, AUTH_SESSION, BODY_SMALL, "create a child unit"},
    {"GET", "/api/v1/units", api_unit_list, AUTH_SESSION, BODY_NONE, "list units in scope"},
    {"GET", "/api/v1/units/{id}", api_unit_get, AUTH_SESSION, BODY_NONE, "one unit"},

    {"POST", "/api/v1/people", api_person_create, AUTH_SESSION, BODY_SMALL, "create a person"},
    {"GET", "/api/v1/people", api_person_list, AUTH_SESSION, BODY_NONE, "list people in scope"},
    {"GET", "/api/v1/people/{id}", api_person_get, AUTH_SESSION, BODY_NONE, "one person"},
    {"PATCH", "/api/v1/people/{id}", api_person_update, AUTH_SESSION, BODY_SMALL, "update name, tags, status"},
    {"POST", "/api/v1/people/{id}/roles", api_person_role_grant, AUTH_SESSION, BODY_SMALL, "grant a role"},
    {"DELETE", "/api/v1/people/{id}/roles/{role}/{unit_id}", api_person_role_revoke, AUTH_SESSION, BODY_NONE, "revoke a role"},

    {"POST", "/api/v1/tasks", api_task_publish, AUTH_SESSION, BODY_SMALL, "publish a task (staff)"},
    {"GET", "/api/v1/tasks", api_task_list, AUTH_SESSION, BODY_NONE, "tasks open to the caller, or in a staff's scope"},
    {"GET", "/api/v1/tasks/{id}", api_task_get, AUTH_SESSION, BODY_NONE, "one task with its free slots"},
    {"PATCH", "/api/v1/tasks/{id}", api_task_update, AUTH_SESSION, BODY_SMALL, "edit a task nobody claimed yet"},
    {"POST", "/api/v1/tasks/{id}/cancel", api_task_cancel, AUTH_SESSION, BODY_SMALL, "cancel a task"},
    {"POST", "/api/v1/tasks/{id}/claim", api_task_claim, AUTH_SESSION, BODY_SMALL, "claim a slot"},
    {"GET", "/api/v1/tasks/{id}/history", api_task_history, AUTH_SESSION, BODY_NONE, "every state change of a task"},
    {"GET", "/api/v1/assignments", api_assignment_list, AUTH_SESSION, BODY_NONE, "the caller's assignments"},
    {"GET", "/api/v1/assignments/{id}", api_assignment_get, AUTH_SESSION, BODY_NONE, "one assignment"},
    {"POST", "/api/v1/assignments/{id}/release", api_assignment_release, AUTH_SESSION, BODY_SMALL, "give the slot back"},
    {"POST", "/api/v1/assignments/{id}/checkins", api_assignment_checkin, AUTH_SESSION, BODY_SMALL, "check in at the place"},
    {"POST", "/api/v1/assignments/{id}/approve", api_assignment_approve, AUTH_SESSION, BODY_SMALL, "approve a report (staff)"},
    {"POST", "/api/v1/assignments/{id}/reject", api_assignment_reject, AUTH_SESSION, BODY_SMALL, "reject a report (staff)"},
    {"POST", "/api/v1/reports", api_report_submit, AUTH_SESSION, BODY_DEFAULT, "submit a completion report (idempotent by client_report_id)"},
    {"GET", "/api/v1/reviews", api_review_queue, AUTH_SESSION, BODY_NONE, "submitted reports awaiting review (staff)"},

    {"GET", "/api/v1/workers/{id}/balance", api_balance, AUTH_SESSION, BODY_NONE, "available and pending points (Redis first); id may be me"},
    {"GET", "/api/v1/workers/{id}/points", api_points, AUTH_SESSION, BODY_NONE, "balance from the ledger with points expiring soon"},
    {"GET", "/api/v1/workers/{id}/statement", api_statement, AUTH_SESSION, BODY_NONE, "postings, newest first, by kind and time"},
    {"GET", "/api/v1/workers/{id}/rank", api_rank, AUTH_SESSION, BODY_NONE, "rank in grid, community or street, by month or all-time"},
    {"GET", "/api/v1/budgets", api_budgets, AUTH_SESSION, BODY_NONE, "budgets of a unit's subtree (staff)"},
    {"POST", "/api/v1/budgets/issue", api_budget_issue, AUTH_SESSION, BODY_SMALL, "issue points into a street's budget (street admin)"},
    {"POST", "/api/v1/budgets/grants", api_budget_grant, AUTH_SESSION, BODY_SMALL, "grant budget to a child unit"},
    {"POST", "/api/v1/adjustments", api_adjust, AUTH_SESSION, BODY_SMALL, "adjust a worker's points with a reason (street admin)"},
    {"GET", "/api/v1/tasks/{id}/reservation", api_task_reservation, AUTH_SESSION, BODY_NONE, "a task's reservation and its postings"},
    {"GET", "/api/v1/units/{id}/points-policy", api_policy_get, AUTH_SESSION, BODY_NONE, "a street's objection period and expiry policy"},
    {"PUT", "/api/v1/units/{id}/points-policy", api_policy_set, AUTH_SESSION, BODY_SMALL, "set a street's objection period and expiry policy"},

    /* partner merchants (docs/MERCHANTS.md): street admins onboard and settle them ... */
    {"POST", "/api/v1/merchants", api_merchant_create, AUTH_SESSION, BODY_SMALL, "onboard a merchant (street admin)"},
    {"GET", "/api/v1/merchants", api_merchant_list, AUTH_SESSION, BODY_NONE, "merchants of the streets the caller reads"},
    {"GET", "/api/v1/merchants/{id}", api_merchant_get, AUTH_SESSION, BODY_NONE, "one merchant with its keys, staff and balance"},
    {"PATCH", "/api/v1/merchants/{id}", api_merchant_update, AUTH_SESSION, BODY_SMALL, "edit a merchant's details or served unit"},
    {"POST", "/api/v1/merchants/{id}/suspend", api_merchant_suspend, AUTH_SESSION, BODY_SMALL, "suspend a merchant: its keys stop at once"},
    {"POST", "/api/v1/merchants/{id}/reinstate", api_merchant_reinstate, AUTH_SESSION, BODY_SMALL, "reinstate a suspended merchant"},
    {"POST", "/api/v1/merchants/{id}/keys", api_merchant_key_create, AUTH_SESSION, BODY_SMALL, "issue or rotate an API key (secret shown once)"},
    {"POST", "/api/v1/merchants/{id}/keys/{key_id}/revoke", api_merchant_key_revoke, AUTH_SESSION, BODY_SMALL, "revoke an API key, effective at once"},
    {"POST", "/api/v1/merchants/{id}/staff", api_merchant_staff_add, AUTH_SESSION, BODY_SMALL, "make a person merchant staff (console login)"},
    {"DELETE", "/api/v1/merchants/{id}/staff/{person_id}", api_merchant_staff_remove, AUTH_SESSION, BODY_NONE, "remove a merchant staff member"},
    {"GET", "/api/v1/merchants/{id}/statement", api_merchant_statement, AUTH_SESSION, BODY_NONE, "captures, charges and refunds of a time window (JSON or CSV)"},
    {"GET", "/api/v1/merchants/{id}/settlements", api_merchant_settlements, AUTH_SESSION, BODY_NONE, "a merchant's settled periods"},
    {"POST", "/api/v1/merchants/{id}/settlements", api_merchant_settle, AUTH_SESSION, BODY_SMALL, "close the open period as settled (street admin)"},
    {"GET", "/api/v1/merchants/{id}/settlements/{settlement_id}", api_merchant_settlement_get, AUTH_SESSION, BODY_NONE, "one settlement with its statement (JSON or CSV)"},
    /* ... merchant staff read their merchant's console ... */
    {"GET", "/api/v1/console/merchants", api_console_merchants, AUTH_SESSION, BODY_NONE, "the merchants the caller is staff of"},
    {"GET", "/api/v1/console/merchants/{id}/offers", api_console_offers, AUTH_SESSION, BODY_NONE, "the merchant's offers (staff)"},
    {"GET", "/api/v1/console/merchants/{id}/statement", api_console_statement, AUTH_SESSION, BODY_NONE, "the merchant's statement (staff, JSON or CSV)"},
    {"GET", "/api/v1/console/merchants/{id}/settlements", api_console_settlements, AUTH_SESSION, BODY_NONE, "the merchant's settlements (staff)"},
    {"GET", "/api/v1/console/merchants/{id}/settlements/{settlement_id}", api_console_settlement_get, AUTH_SESSION, BODY_NONE, "one settlement (staff, JSON or CSV)"},
    /* ... workers use the points mall and pay at the till ... */
    {"GET", "/api/v1/mall/offers", api_mall_offers, AUTH_SESSION, BODY_NONE, "offers visible to the worker, with stock left"},
    {"GET", "/api/v1/mall/offers/{id}", api_mall_offer_get, AUTH_SESSION, BODY_NONE, "one offer of the mall"},
    {"POST", "/api/v1/mall/offers/{id}/orders", api_mall_order, AUTH_SESSION, BODY_SMALL, "order an offer: points held, a voucher issued"},
    {"GET", "/api/v1/vouchers", api_voucher_list, AUTH_SESSION, BODY_NONE, "the caller's vouchers"},
    {"GET", "/api/v1/vouchers/{id}", api_voucher_get, AUTH_SESSION, BODY_NONE, "one of the caller's vouchers, with its code"},
    {"POST", "/api/v1/vouchers/{id}/cancel", api_voucher_cancel, AUTH_SESSION, BODY_SMALL, "cancel an uncaptured voucher: points back"},
    {"POST", "/api/v1/paycodes", api_paycode_create, AUTH_SESSION, BODY_SMALL, "a short-lived signed pay code for the till"},
    {"GET", "/api/v1/charges", api_charge_list, AUTH_SESSION, BODY_NONE, "the caller's counter charges and their refunds"},
    /* ... and the merchant's own signed API (merchant_auth.h) */
    {"GET", "/merchant/v1/me", api_mrc_me, AUTH_MERCHANT, BODY_NONE, "the merchant, its balance and settled-until"},
    {"POST", "/merchant/v1/offers", api_mrc_offer_create, AUTH_MERCHANT, BODY_SMALL, "publish an offer"},
    {"GET", "/merchant/v1/offers", api_mrc_offer_list, AUTH_MERCHANT, BODY_NONE, "the merchant's offers"},
    {"GET", "/merchant/v1/offers/{id}", api_mrc_offer_get, AUTH_MERCHANT, BODY_NONE, "one offer"},
    {"PATCH", "/merchant/v1/offers/{id}", api_mrc_offer_update, AUTH_MERCHANT, BODY_SMALL, "edit or pause an offer"},
    {"GET", "/merchant/v1/vouchers/{code}", api_mrc_voucher_get, AUTH_MERCHANT, BODY_NONE, "look a voucher up by its code"},
    {"POST", "/merchant/v1/vouchers/{code}/capture", api_mrc_voucher_capture, AUTH_MERCHANT, BODY_SMALL, "capture a voucher at the counter"},
    {"POST", "/merchant/v1/vouchers/{code}/refunds", api_mrc_voucher_refund, AUTH_MERCHANT, BODY_SMALL, "refund a captured voucher, fully or partly"},
    {"POST", "/merchant/v1/charges", api_mrc_charge, AUTH_MERCHANT, BODY_SMALL, "charge points with a worker's pay code"},
    {"GET", "/merchant/v1/charges/{id}", api_mrc_charge_get, AUTH_MERCHANT, BODY_NONE, "one charge with its refunds"},
    {"POST", "/merchant/v1/charges/{id}/refunds", api_mrc_charge_refund, AUTH_MERCHANT, BODY_SMALL, "refund a charge, fully or partly"},
    {"GET", "/merchant/v1/statement", api_mrc_statement, AUTH_MERCHANT, BODY_NONE, "captures, charges and refunds of a time window (JSON or CSV)"},
    {"GET", "/merchant/v1/settlements", api_mrc_settlements, AUTH_MERCHANT, BODY_NONE, "settled periods"},
    {"GET", "/merchant/v1/settlements/{id}", api_mrc_settlement_get, AUTH_MERCHANT, BODY_NONE, "one settlement with its statement (JSON or CSV)"},
    {"PUT", "/merchant/v1/webhook", api_mrc_webhook_set, AUTH_MERCHANT, BODY_SMALL, "set the webhook URL (new signing secret shown once)"},
    {"DELETE", "/merchant/v1/webhook", api_mrc_webhook_delete, AUTH_MERCHANT, BODY_NONE, "remove the webhook"},
    {"GET", "/merchant/v1/webhook/events", api_mrc_webhook_events, AUTH_MERCHANT, BODY_NONE, "recent webhook events and their delivery"},

    /* audit (docs/AUDIT.md): auditors and street admins, scoped to their subtree; public keys,
     * the latest checkpoint and the points board need no session */
    {"GET", "/audit/v1/status", api_audit_status, AUTH_SESSION, BODY_NONE, "sealer state: log size, last checkpoint, verification, alarm"},
    {"GET", "/audit/v1/checkpoints", api_audit_checkpoints, AUTH_SESSION, BODY_NONE, "signed checkpoints, newest first"},
    {"GET", "/audit/v1/checkpoints/consistency", api_audit_consistency, AUTH_SESSION, BODY_NONE, "consistency proof between two checkpoints"},
    {"GET", "/audit/v1/transactions", api_audit_txn_search, AUTH_SESSION, BODY_NONE, "search ledger transactions of a subtree"},
    {"GET", "/audit/v1/transactions/{id}/proof", api_audit_txn_proof, AUTH_SESSION, BODY_NONE, "log position and inclusion proof of a transaction"},
    {"GET", "/audit/v1/workers/{id}/statement", api_audit_statement, AUTH_SESSION, BODY_NONE, "a worker's statement with log positions and inclusion proofs"},
    {"GET", "/audit/v1/trial-balance", api_audit_trial_balance, AUTH_SESSION, BODY_NONE, "trial balance of a subtree by account kind and unit"},
    {"GET", "/audit/v1/budget-use", api_audit_budget_use, AUTH_SESSION, BODY_NONE, "budget use per community and per task"},
    {"GET", "/audit/v1/log", api_audit_log, AUTH_SESSION, BODY_NONE, "the audit log of privileged actions"},
    {"GET", "/audit/v1/anomalies", api_audit_anomalies, AUTH_SESSION, BODY_NONE, "anomalies of the work loop with their evidence"},
    {"GET", "/audit/v1/export", api_audit_export, AUTH_SESSION, BODY_NONE, "one page of the ledger export (JSON Lines or CSV)"},
    {"GET", "/.well-known/gridpoints/checkpoint-keys", api_audit_keys, AUTH_NONE, BODY_NONE, "public keys of the checkpoints with validity"},
    {"GET", "/.well-known/gridpoints/checkpoint", api_audit_latest_checkpoint, AUTH_NONE, BODY_NONE, "the latest signed checkpoint (signed note)"},
    {"GET", "/api/v1/public/grids/{id}/points-board", api_points_board, AUTH_NONE, BODY_NONE, "points board of a grid for a month, names masked"},
};

const size_t routes_count = sizeof routes_table / sizeof routes_table[0];
