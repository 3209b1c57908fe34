/* bare_evhttp.c -- the baseline of the balance-read benchmark: the least an evhttp server can
 * do per request. One event loop, no routing, no parsing beyond what evhttp does, a fixed JSON
 * body of the size gridpointsd answers, with its Content-Type.
 *
 *   bare_evhttp PORT BODY_BYTES
 *
 * Built and run by scripts/bench.sh; stops on SIGTERM or SIGINT. */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *body;
static size_t body_len;

static void on_request(struct evhttp_request *req, void *arg)
{
    (void)arg;
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    evbuffer_add_reference(out, body, body_len, NULL, NULL);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json; charset=utf-8");
    evhttp_send_reply(req, 200, "OK", NULL);
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s PORT BODY_BYTES\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    long n = atol(argv[2]);
    const char *head = "{\"worker_id\":1,\"pad\":\"";
    const char *tail = "\"}";
    size_t fixed = strlen(head) + strlen(tail);
    if (port <= 0 || port > 65535 || n < (long)fixed || n > 1 << 20) {
        fprintf(stderr, "bare_evhttp: bad port or body size (at least %zu bytes)\n", fixed);
        return 2;
    }
    body_len = (size_t)n;
    body = malloc(body_len + 1);
    memset(body, 'x', body_len);
    memcpy(body, head, strlen(head));
    memcpy(body + body_len - strlen(tail), tail, strlen(tail));
    body[body_len] = '\0';

    struct event_base *base = event_base_new();
    struct evhttp *http = evhttp_new(base);
    evhttp_set_gencb(http, on_request, NULL);
    if (evhttp_bind_socket(http, "127.0.0.1", (ev_uint16_t)port) != 0) {
        fprintf(stderr, "bare_evhttp: cannot listen on 127.0.0.1:%d\n", port);
        return 1;
    }
    struct event *sigterm = evsignal_new(base, SIGTERM, on_signal, base);
    struct event *sigint = evsignal_new(base, SIGINT, on_signal, base);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);
    event_base_dispatch(base);
    event_free(sigterm);
    event_free(sigint);
    evhttp_free(http);
    event_base_free(base);
    free(body);
    return 0;
}
