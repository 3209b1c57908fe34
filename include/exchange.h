/* exchange.h -- the outbound side of the points exchange with partner schemes (积分互通;
 * docs/EXCHANGE.md): signed calls to a partner over the shared outbound client (httpc.h),
 * never blocking the loop, and the two durable timers that drive them.
 *
 * Every call is signed with the partner's out key (merchant_auth.h's scheme, key ids "xp_"),
 * and its reply is acted on only when its GP-Signature verifies against the same key, the
 * request's nonce, the status and the body: anything else is "no answer", never a decision.
 *
 *   transfers  the janitor's "exchange" sweep leases due pending transfers (gp_xchg_claim);
 *              each is sent again with the same transfer id until exchange.send_for has
 *              passed, then its status is asked (which the partner answers definitely). A
 *              definite answer (accepted / rejected) resolves the hold (gp_xchg_out_result);
 *              no answer leaves it pending, retried after exchange.backoff, doubling.
 *   statements the "exchange_recon" sweep leases partners whose next statement day is over
 *              (gp_xchg_recon_claim), fetches the partner's signed statement of that day and
 *              compares it with ours (gp_xchg_recon_done).
 *
 * Handlers use exchange_call for the calls a person waits for (link confirmation, an admin's
 * reconciliation). */
#ifndef GP_EXCHANGE_H
#define GP_EXCHANGE_H

#include "common.h"

#include <jansson.h>

struct app;
struct exchange;
struct exchange_call;

/* The outcome of one call. verified: a complete reply whose signature checked out (then
 * status and body are set, body parsed when it is JSON); otherwise error says why. */
struct exchange_reply {
    bool verified;
    int status;
    json_t *body; /* borrowed: valid during the callback */
    const char *error;
};
typedef void (*exchange_cb)(const struct exchange_reply *r, void *arg);

/* Creates the client (exchange.ca_file, exchange.hosts_file). NULL (logged) when they are bad. */
struct exchange *exchange_new(struct app *app);

/* One signed call to a partner. info: {"base_url", "key_id", "secret_ct"} (gp_xchg_call_info);
 * path: "/exchange/v1/..."; body NULL for a GET. cb runs exactly once, from the loop. Returns
 * false (cb not called) when the secret cannot be opened. */
bool exchange_call(struct exchange *x, json_t *info, const char *method, const char *path,
                   const char *body, const char *label, exchange_cb cb, void *arg) MUSTCHECK;

/* The sweeps' hand-over: starts one job per claimed item; returns how many. */
int exchange_transfers_run(struct exchange *x, json_t *claimed);
int exchange_recon_run(struct exchange *x, json_t *claimed);
/* Jobs of the timers in flight. */
int exchange_inflight(const struct exchange *x);

/* Shutdown: jobs still calling a partner are dropped (their rows stay leased and are tried
 * again after the lease), reports already sent to PostgreSQL finish; then idle(arg) once.
 * Calls of handlers finish by themselves (each within exchange.timeout). */
void exchange_stop(struct exchange *x, void (*idle)(void *arg), void *arg);
/* NULL allowed; after exchange_stop's idle callback, or if the loop never ran. */
void exchange_free(struct exchange *x);

#endif
