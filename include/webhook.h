/* webhook.h -- delivering merchant webhook events over HTTPS, without blocking the loop.
 *
 * The events wait in PostgreSQL (merchant_events, written in the transaction of the capture,
 * charge, refund or expiry). The janitor's "webhooks" sweep leases due events
 * (gp_webhook_claim) and hands them here; each delivery then runs as a small state machine:
 *
 *   RESOLVE  evdns (or an IP literal), then every address is checked against the policy:
 *            loopback, private, link-local, CGNAT, unique-local, multicast, unspecified and
 *            reserved ranges are refused unless merchant.webhook_allow_private (tests only),
 *            and even then unspecified/multicast/broadcast are refused
 *   SEND     evhttp over bufferevent_openssl to the checked address (never to a name that could
 *            resolve again), certificate and host name verified, a signed POST
 *            (Gridpoints-Signature, Gridpoints-Event-Id), merchant.webhook_timeout
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
struct sockaddr;
struct webhooks;

enum webhook_addr {
    WEBHOOK_ADDR_PUBLIC,    /* a global unicast address */
    WEBHOOK_ADDR_PRIVATE,   /* loopback, RFC 1918, link-local, CGNAT, ULA: refused by default */
    WEBHOOK_ADDR_FORBIDDEN, /* unspecified, multicast, broadcast, reserved: always refused */
};

/* Classifies an AF_INET or AF_INET6 address (IPv4-mapped IPv6 as its IPv4 address). */
enum webhook_addr webhook_addr_class(const struct sockaddr *sa);
bool webhook_addr_allowed(const struct sockaddr *sa, bool allow_private);

/* Checks a webhook URL before it is stored: https, a host, no userinfo or fragment, at most
 * 500 bytes, and no literal address or "localhost" name outside the policy. On failure
 * returns false and sets *code ("invalid_webhook_url" or "webhook_url_not_allowed"). */
bool webhook_url_check(const char *url, bool allow_private, const char **code) MUSTCHECK;

/* Creates the client TLS context and the resolver. NULL (logged) when the CA file is bad. */
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
