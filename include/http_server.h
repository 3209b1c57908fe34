/* http_server.h -- the listeners of the HTTP front: plain, TLS and the metrics listener, every
 * limit set on them, accept pausing at the connection limit, and the connection guard
 * (http_guard.h) wrapped around every connection. Each parsed request goes to the request side
 * (http.h: http_request_run). */
#ifndef GP_HTTP_SERVER_H
#define GP_HTTP_SERVER_H

struct app;
struct evbuffer;
struct http_server;

/* Binds the listeners of cfg (plain, and TLS when configured). NULL and a logged reason on
 * failure. */
struct http_server *http_server_new(struct app *app);
/* Stops accepting; requests already running finish. */
void http_server_stop_accepting(struct http_server *hs);
int http_server_inflight(const struct http_server *hs);
/* Called when in-flight drops to zero after stop_accepting. */
void http_server_on_drained(struct http_server *hs, void (*cb)(void *arg), void *arg);
void http_server_free(struct http_server *hs);
/* Appends the connection guard's counters (Prometheus text) to out, an evbuffer. */
void http_server_render_metrics(const struct http_server *hs, struct evbuffer *out);

#endif
