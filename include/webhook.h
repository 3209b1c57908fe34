/* webhook.h -- delivering merchant webhook events over HTTPS, without blocking the loop.
 *
 * The events wait in PostgreSQL (merchant_events, written in the transaction of the capture,
 * charge, refund or expiry). The janitor's "webhooks" sweep leases due events
 * (gp_webhook_claim) and hands them here; each delivery then runs as a small state machine,
 * its first two steps in the shared outbound client (httpc.h):
 *
 *   RESOLVE  the host read as the resolver reads it (netaddr_parse_host: any IPv4 spelling,
 *            bracketed IPv6, local names), then evdns for a name (merchant.webhook_hosts_file
 *            first, if set), and EVERY address is checked (netaddr.h): only public addresses
 *            pass; merchant.webhook_allow_private (tests only) also admits loopback, private,
 *            shared and link-local ones, never unspecified, multicast, broadcast or reserved.
 *            One refused address refuses the attempt ("address_not_allowed", logged with the
 *            address and its kind), which is then retried like any failed attempt
 *   SEND     evhttp over bufferevent_openssl to the checked address itself, as an IP literal
 *            (pinned: nothing resolves the name again), Host header and certificate check for
 *            the URL's host, a signed POST (Gridpoints-Signature, Gridpoints-Event-Id),
 *            merchant.webhook_timeout; redirects are not followed (a 3xx is a failed attempt)
 *   REPORT   gp_webhook_result: delivered on 2xx, otherwise retried with back-off for
 *            merchant.webhook_retry_for
 *
 * Delivery is at least once (a crash after the merchant's 2xx and before the report means a
 * second delivery; receivers dedupe by event id). URLs are checked at registration as well
 * (webhook_url_check), and again here, after resolution. */
#ifndef GP_WEBHOOK_H
#define GP_WEBHOOK_H

#include "common.h"

#include <jansson.h>

struct app;
struct webhooks;

/* Checks a webhook URL before it is stored: https, a host, no userinfo or fragment, at most
 * 500 bytes; the host is read as the resolver would (netaddr_parse_host) and an IP literal in
 * any spelling or a local name ("localhost.", "x.localhost", single labels) outside the
 * policy is refused. On failure returns false and sets *code ("invalid_webhook_url" or
 * "webhook_url_not_allowed"). */
bool webhook_url_check(const char *url, bool allow_private, const char **code) MUSTCHECK;

/* Creates the outbound client (TLS context, resolver). NULL (logged) when the CA file or the
 * hosts file is bad. */
struct webhooks *webhooks_new(struct app *app);
/* Starts one delivery per item of gp_webhook_claim's result; returns how many it started. */
int webhooks_deliver(struct webhooks *w, json_t *claimed);
/* Deliveries in flight (for the sweep's pacing and /metrics). */
int webhooks_inflight(const struct webhooks *w);
/* Shutdown: cancels resolutions and sends in flight (their events stay leased and are retried
 * after the lease), waits for reports already sent to PostgreSQL, then calls idle(arg) once
 * (perhaps at once). */
void webhooks_stop(struct webhooks *w, void (*idle)(void *arg), void *arg);
/* NULL allowed; after webhooks_stop's idle callback, or if the loop never ran. */
void webhooks_free(struct webhooks *w);

#endif
