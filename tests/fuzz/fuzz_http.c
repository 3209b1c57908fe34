/* fuzz_http.c -- libFuzzer target for the whole request path: arbitrary bytes as a complete
 * HTTP request, sent over loopback to the real server (http_server_new: evhttp framing,
 * http.c's checks, routing, JSON validation, the session and merchant-signature fronts, the
 * handlers' validation, the reply path), with PostgreSQL and Redis replaced by the
 * deterministic responder of fuzz_backend.c. Built and run by `make fuzz`; `make test` runs it
 * briefly and replays tests/fuzz/regressions/.
 *
 * Input: 4 bytes that steer the responder (byte k picks the answer to backend call k), then
 * the bytes written to the socket as they are. Two conveniences let the fuzzer reach past the
 * merchant signature: in an "Authorization: GP1-HMAC-SHA256 key=..,ts=..,nonce=..,sig=.."
 * header whose sig is 64 zeros the harness writes the real signature (the responder's keys
 * all open to the same secret), and ts=0 becomes the current time.
 *
 * Per input: connect, write, shut the write side down, run the loop until the server closed
 * and every request, backend reply and worker job has finished; then abort() unless every
 * reply is well-formed HTTP/1.x (status line, header syntax, one consistent body framing), a
 * JSON content type carries a body json_loads accepts (errors in the SPEC §5 shape), and no
 * status is 5xx unless the responder injected a fault (then 500 or 503 only). A request that
 * never completes aborts after FUZZ_DEADLINE_S. */
#include "app.h"
#include "audit.h"
#include "config.h"
#include "crypto.h"
#include "db.h"
#include "evidence_store.h"
#include "http_server.h"
#include "kv.h"
#include "ledger.h"
#include "log.h"
#include "login_throttle.h"
#include "merchant_auth.h"
#include "merchant_crypto.h"
#include "metrics.h"
#include "ratelimit.h"
#include "task_gate.h"
#include "webhook.h"
#include "workpool.h"

#include "fuzz_backend.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SCRIPT_LEN      4
#define FUZZ_DEADLINE_S 10
#define FUZZ_KEK        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define FUZZ_SECRET     "fuzz-merchant-secret-0123456789abcdef"
#define FUZZ_PASSWORD   "fuzz-password"
#define FUZZ_ITERATIONS "1000"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct {
    struct config cfg;
    struct app app;
    struct http_server *http;
    int port;
    bool verbose;
} G;

/* ---------------------------------------------------------------------------------------- */
/* Set-up: the objects of main.c's serve(), without the janitor (its timers would send        */
/* queries at arbitrary moments) and without signal handling.                                */
/* ---------------------------------------------------------------------------------------- */

static void die(const char *what)
{
    fprintf(stderr, "fuzz_http: %s\n", what);
    abort();
}

/* The evidence store's temporary directory, removed at exit. */
static char evidence_dir[] = "/tmp/fuzz-evidence-XXXXXX";

static int remove_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void remove_evidence_dir(void)
{
    nftw(evidence_dir, remove_cb, 8, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    signal(SIGPIPE, SIG_IGN);
    G.verbose = getenv("FUZZ_HTTP_VERBOSE") != NULL;

    /* A port of our own: bound (not listening) with SO_REUSEADDR while evhttp binds the same
     * port, so no other process can take it in between. */
    int hold = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(hold, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t slen = sizeof sa;
    if (bind(hold, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(hold, (struct sockaddr *)&sa, &slen) != 0)
        die("cannot reserve a loopback port");
    G.port = ntohs(sa.sin_port);

    /* The test config: the table's defaults, plus what a server cannot start without. */
    char listen[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", G.port);
    setenv("GRIDPOINTS_SERVER_LISTEN", listen, 1);
    setenv("GRIDPOINTS_SERVER_TLS_LISTEN", "", 1);
    setenv("GRIDPOINTS_SERVER_WORKER_THREADS", "1", 1);
    setenv("GRIDPOINTS_AUTH_PBKDF2_ITERATIONS", FUZZ_ITERATIONS, 1);
    setenv("GRIDPOINTS_AUDIT_KEY_FILE", "", 1);
    setenv("GRIDPOINTS_MERCHANT_KEY_ENCRYPTION_KEY", FUZZ_KEK, 1);
    setenv("GRIDPOINTS_MERCHANT_PAYCODE_SECRET", "fuzz-paycode-secret-0123456789abcdef", 1);
    char err[512];
    if (!config_load(&G.cfg, NULL, err, sizeof err)) {
        fprintf(stderr, "fuzz_http: config: %s\n", err);
        abort();
    }
    /* Quiet: a line per request would cost more than the request. */
    log_min_level = G.verbose ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR;
    log_hook_libevent();

    char pw_hash[256];
    if (!crypto_password_hash(FUZZ_PASSWORD, G.cfg.pbkdf2_iterations, pw_hash, sizeof pw_hash))
        die("cannot hash the fuzz password");
    fuzz_backend_setup(FUZZ_KEK, FUZZ_SECRET, pw_hash);

    struct app *app = &G.app;
    app->cfg = &G.cfg;
    app->base = event_base_new();
    app->metrics = metrics_new();
    app->started = true; /* no janitor here: its start-up checks are the real server's */
    struct db_pool_config dc = {.conninfo = G.cfg.database_url, .size = G.cfg.db_pool_size};
    app->db = db_pool_new(app->base, &dc);
    struct kv_config kc = {.host = "127.0.0.1", .port = 6379};
    app->kv = kv_new(app->base, &kc);
    app->rl = ratelimit_new(app->kv);
    app->login = login_throttle_new(app->kv, &G.cfg);
    app->ledger = ledger_cache_new(app->kv);
    app->gate = task_gate_new(app->kv);
    app->wp = workpool_new(app->base, G.cfg.worker_threads);
    app->audit = audit_new(app);
    if (!app->audit)
        die("audit_new failed");
    char why[200];
    if (!mcrypto_config_check(&G.cfg, why, sizeof why))
        die(why);
    app->webhooks = webhooks_new(app);
    if (!app->webhooks)
        die("webhooks_new failed");
    if (!mkdtemp(evidence_dir))
        die("cannot create the evidence directory");
    atexit(remove_evidence_dir);
    app->evidence = evidence_store_dir_new(evidence_dir, why, sizeof why);
    if (!app->evidence)
        die(why);
    G.http = http_server_new(app);
    if (!G.http)
        die("http_server_new failed");
    close(hold);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* The merchant signature convenience                                                        */
/* ---------------------------------------------------------------------------------------- */

static const char *find_bytes(const char *h, size_t hn, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; n <= hn && i <= hn - n; i++)
        if (memcmp(h + i, needle, n) == 0)
            return h + i;
    return NULL;
}

/* Returns a new buffer when the request carries a merchant header to complete; NULL if not. */
static char *sign_request(const char *req, size_t len, size_t *outlen)
{
    static const char hdr[] = "\nAuthorization: " MAUTH_SCHEME " key=";
    const char *h = find_bytes(req, len, hdr);
    if (!h)
        return NULL;
    const char *end = req + len;
    const char *key = h + strlen(hdr);
    const char *ts = key + MAUTH_KEY_ID_LEN;
    if (end - ts < 4 || memcmp(ts, ",ts=", 4) != 0)
        return NULL;
    ts += 4;
    const char *ts_end = ts;
    while (ts_end < end && *ts_end >= '0' && *ts_end <= '9')
        ts_end++;
    if (end - ts_end < 7 || memcmp(ts_end, ",nonce=", 7) != 0 || ts_end - ts > 12)
        return NULL;
    const char *nonce = ts_end + 7;
    const char *nonce_end = nonce;
    while (nonce_end < end && *nonce_end != ',' && *nonce_end != '\r' && *nonce_end != '\n')
        nonce_end++;
    if (end - nonce_end < 5 + 64 || memcmp(nonce_end, ",sig=", 5) != 0 ||
        nonce_end - nonce > MAUTH_NONCE_MAX)
        return NULL;
    const char *sig = nonce_end + 5;
    for (int i = 0; i < 64; i++)
        if (sig[i] != '0')
            return NULL;
    /* The request line: METHOD SP target SP ... */
    const char *sp1 = memchr(req, ' ', (size_t)(h - req));
    if (!sp1)
        return NULL;
    const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(h - sp1 - 1));
    if (!sp2)
        return NULL;
    char method[16], uri[2048], key_id[MAUTH_KEY_ID_LEN + 1], nonce_s[MAUTH_NONCE_MAX + 1];
    if ((size_t)(sp1 - req) >= sizeof method || (size_t)(sp2 - sp1 - 1) >= sizeof uri)
        return NULL;
    memcpy(method, req, (size_t)(sp1 - req));
    method[sp1 - req] = '\0';
    memcpy(uri, sp1 + 1, (size_t)(sp2 - sp1 - 1));
    uri[sp2 - sp1 - 1] = '\0';
    memcpy(key_id, key, MAUTH_KEY_ID_LEN);
    key_id[MAUTH_KEY_ID_LEN] = '\0';
    memcpy(nonce_s, nonce, (size_t)(nonce_end - nonce));
    nonce_s[nonce_end - nonce] = '\0';
    long long tsv = 0;
    for (const char *p = ts; p < ts_end; p++)
        tsv = tsv * 10 + (*p - '0');
    if (tsv == 0)
        tsv = (long long)time(NULL);
    const char *body = find_bytes(req, len, "\r\n\r\n");
    body = body ? body + 4 : end;

    size_t n;
    char *sts =
        mauth_string_to_sign(key_id, method, uri, tsv, nonce_s, body, (size_t)(end - body), &n);
    unsigned char mac[32];
    mauth_sign(FUZZ_SECRET, strlen(FUZZ_SECRET), sts, n, mac);
    free(sts);
    char hex[65], tsbuf[24];
    crypto_hex(mac, 32, hex);
    int tslen = snprintf(tsbuf, sizeof tsbuf, "%lld", tsv);

    /* prefix | ts | ,nonce=... ,sig= | hex | rest */
    size_t a = (size_t)(ts - req), b = (size_t)(sig - ts_end), c = (size_t)(end - (sig + 64));
    char *out = malloc(a + (size_t)tslen + b + 64 + c);
    memcpy(out, req, a);
    memcpy(out + a, tsbuf, (size_t)tslen);
    memcpy(out + a + tslen, ts_end, b);
    memcpy(out + a + tslen + b, hex, 64);
    memcpy(out + a + tslen + b + 64, sig + 64, c);
    *outlen = a + (size_t)tslen + b + 64 + c;
    return out;
}

/* ---------------------------------------------------------------------------------------- */
/* The client                                                                                */
/* ---------------------------------------------------------------------------------------- */

struct client {
    int fd;
    const char *out;
    size_t outlen, outpos;
    bool wr_shut;
    char *in;
    size_t inlen, incap;
    bool eof, reset;
    struct event *rev, *wev;
};

static void client_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct client *c = arg;
    while (c->outpos < c->outlen) {
        ssize_t n = send(fd, c->out + c->outpos, c->outlen - c->outpos, MSG_NOSIGNAL);
        if (n > 0) {
            c->outpos += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        break; /* the server closed (EPIPE, ECONNRESET): the rest cannot be sent */
    }
    shutdown(fd, SHUT_WR);
    c->wr_shut = true;
    event_del(c->wev);
}

static void client_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct client *c = arg;
    for (;;) {
        if (c->incap - c->inlen < 4096) {
            c->incap = c->incap * 2 + 4096;
            c->in = realloc(c->in, c->incap);
        }
        ssize_t n = recv(fd, c->in + c->inlen, c->incap - c->inlen, 0);
        if (n > 0) {
            c->inlen += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (n < 0)
            c->reset = true; /* ECONNRESET: the server closed with our bytes unread */
        c->eof = true;
        event_del(c->rev);
        return;
    }
}

static bool deadline_hit;

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    deadline_hit = true;
}

/* ---------------------------------------------------------------------------------------- */
/* The checks                                                                                */
/* ---------------------------------------------------------------------------------------- */

static void violation(const char *what, const char *at, size_t len)
{
    fprintf(stderr, "fuzz_http: VIOLATION: %s\n", what);
    if (at) {
        fprintf(stderr, "fuzz_http: reply bytes (%zu): ", len);
        fwrite(at, 1, len > 2000 ? 2000 : len, stderr);
        fprintf(stderr, "\n");
    }
    abort();
}

static bool tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static bool is_json_type(const char *v)
{
    while (*v == ' ' || *v == '\t')
        v++;
    return strncasecmp(v, "application/json", 16) == 0 &&
           (v[16] == '\0' || v[16] == ';' || v[16] == ' ');
}

static void check_json_body(int status, const char *body, size_t len, const char *reply,
                            size_t reply_len)
{
    json_error_t je;
    json_t *j =
        json_loadb(body, len, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &je);
    if (!j) {
        char msg[300];
        snprintf(msg, sizeof msg, "status %d: JSON content type but json_loads fails: %s", status,
                 je.text);
        violation(msg, reply, reply_len);
    }
    /* /readyz's 503 is the readiness document ({"status","checks"}), not an error. */
    bool readiness = status == 503 && json_is_object(json_object_get(j, "checks"));
    if (status >= 400 && !readiness) {
        json_t *e = json_object_get(j, "error");
        if (!json_is_string(json_object_get(e, "code")) ||
            !json_is_string(json_object_get(e, "message"))) {
            json_decref(j);
            violation("error reply without {\"error\":{\"code\",\"message\"}}", reply, reply_len);
        }
    }
    json_decref(j);
}

/* Parses the replies in buf; returns how many. reset: the stream may end early (an RST may
 * have cut it); head_possible: a reply may lack the body its Content-Length announces. */
static int check_replies(const char *buf, size_t len, bool reset, bool head_possible, bool faulted)
{
    size_t pos = 0;
    int count = 0;
    while (pos < len) {
        const char *r = buf + pos;
        size_t rem = len - pos;
        const char *eoh = find_bytes(r, rem, "\r\n\r\n");
        if (!eoh) {
            if (reset)
                return count;
            violation("reply head incomplete or not CRLF-terminated", r, rem);
        }
        size_t head_len = (size_t)(eoh - r) + 4;
        /* Status line. */
        if (rem < 13 || (memcmp(r, "HTTP/1.1 ", 9) != 0 && memcmp(r, "HTTP/1.0 ", 9) != 0))
            violation("status line does not start with HTTP/1.x", r, rem);
        bool v10 = r[7] == '0';
        if (r[9] < '1' || r[9] > '5' || r[10] < '0' || r[10] > '9' || r[11] < '0' || r[11] > '9' ||
            r[12] != ' ')
            violation("malformed status code", r, rem);
        int status = (r[9] - '0') * 100 + (r[10] - '0') * 10 + (r[11] - '0');
        const char *line = r;
        const char *eol = find_bytes(line, head_len, "\r\n");
        for (const char *p = r + 13; p < eol; p++)
            if ((unsigned char)*p < 0x20 && *p != '\t')
                violation("control byte in the reason phrase", r, rem);
        /* Headers. */
        int ncl = 0, nte = 0;
        long long cl = -1;
        bool chunked = false, json = false, close_conn = false;
        line = eol + 2;
        while (line < eoh + 2) {
            eol = find_bytes(line, (size_t)(eoh + 2 - line), "\r\n");
            if (eol == line)
                break;
            const char *colon = memchr(line, ':', (size_t)(eol - line));
            if (!colon || colon == line)
                violation("header line without a name and colon", r, rem);
            for (const char *p = line; p < colon; p++)
                if (!tchar((unsigned char)*p))
                    violation("header name with a non-token byte", r, rem);
            for (const char *p = colon + 1; p < eol; p++)
                if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
                    violation("control byte in a header value", r, rem);
            size_t nlen = (size_t)(colon - line);
            const char *val = colon + 1;
            while (val < eol && (*val == ' ' || *val == '\t'))
                val++;
            size_t vlen = (size_t)(eol - val);
            char v[256];
            snprintf(v, sizeof v, "%.*s", (int)(vlen < 255 ? vlen : 255), val);
            if (nlen == 14 && !strncasecmp(line, "Content-Length", 14)) {
                ncl++;
                char *endp;
                cl = strtoll(v, &endp, 10);
                if (!*v || *endp || cl < 0 || v[0] == '-' || v[0] == '+')
                    violation("malformed Content-Length", r, rem);
            } else if (nlen == 17 && !strncasecmp(line, "Transfer-Encoding", 17)) {
                nte++;
                chunked = !strcasecmp(v, "chunked");
                if (!chunked)
                    violation("Transfer-Encoding other than chunked", r, rem);
            } else if (nlen == 12 && !strncasecmp(line, "Content-Type", 12)) {
                json = is_json_type(v);
            } else if (nlen == 10 && !strncasecmp(line, "Connection", 10)) {
                close_conn = strcasestr(v, "close") != NULL;
            }
            line = eol + 2;
        }
        if (ncl > 1 || nte > 1 || (ncl && nte))
            violation("conflicting body framing (Content-Length / Transfer-Encoding)", r, rem);
        /* One 5xx describes the client's request, not a failure of ours (issue 10 item 3,
         * RFC 9110 15.6.2): 501 for a method we do not implement. Allowed, but only as that
         * JSON error. */
        bool client_5xx = json && status == 501 &&
                          find_bytes(eoh, rem - head_len + 4, "\"code\":\"method_not_implemented\"");
        if (status >= 500 && status != 500 && status != 503 && !client_5xx)
            violation("5xx other than 500 or 503", r, rem);
        if (status >= 500 && !faulted && !client_5xx)
            violation("5xx although every backend answer was healthy", r, rem);

        /* Body. */
        size_t bpos = head_len;
        const char *body = r + bpos;
        size_t blen = 0;
        bool no_body = status < 200 || status == 204 || status == 304;
        if (!no_body && head_possible &&
            (rem == bpos || find_bytes(r + bpos, rem - bpos, "HTTP/1.") == r + bpos))
            no_body = true; /* a reply to HEAD: the framing headers, no body */
        if (no_body) {
            pos += bpos;
        } else if (chunked) {
            size_t p = bpos;
            char *acc = NULL;
            size_t acc_len = 0;
            for (;;) {
                const char *ce = find_bytes(r + p, rem - p, "\r\n");
                if (!ce) {
                    free(acc);
                    if (reset)
                        return count;
                    violation("chunk size line incomplete", r, rem);
                }
                char *endp;
                unsigned long long sz = strtoull(r + p, &endp, 16);
                if (endp == r + p || (endp != ce && *endp != ';'))
                    violation("malformed chunk size", r, rem);
                p = (size_t)(ce - r) + 2;
                if (sz == 0) {
                    /* trailers, then CRLF */
                    for (;;) {
                        const char *te = find_bytes(r + p, rem - p, "\r\n");
                        if (!te) {
                            free(acc);
                            if (reset)
                                return count;
                            violation("chunked trailer incomplete", r, rem);
                        }
                        bool empty = te == r + p;
                        p = (size_t)(te - r) + 2;
                        if (empty)
                            break;
                    }
                    break;
                }
                if (sz > rem - p || rem - p - sz < 2) {
                    free(acc);
                    if (reset)
                        return count;
                    violation("chunk data incomplete", r, rem);
                }
                acc = realloc(acc, acc_len + sz + 1);
                memcpy(acc + acc_len, r + p, sz);
                acc_len += sz;
                p += sz;
                if (memcmp(r + p, "\r\n", 2) != 0)
                    violation("chunk data not followed by CRLF", r, rem);
                p += 2;
            }
            if (json)
                check_json_body(status, acc ? acc : "", acc_len, r, rem);
            free(acc);
            pos += p;
            count++;
            continue;
        } else if (ncl) {
            if ((unsigned long long)cl > rem - bpos) {
                if (reset)
                    return count;
                violation("body shorter than its Content-Length", r, rem);
            }
            blen = (size_t)cl;
            pos += bpos + blen;
        } else {
            /* No framing: only an HTTP/1.0 reply or one that closes may do that; the body runs
             * to the end of the stream. */
            if (!v10 && !close_conn)
                violation(head_possible ? "HTTP/1.1 reply with a body but neither Content-Length "
                                          "nor chunked (a reply to HEAD must carry no body)"
                                        : "HTTP/1.1 reply with a body but neither Content-Length "
                                          "nor chunked",
                          r, rem);
            blen = rem - bpos;
            pos = len;
        }
        if (json && !no_body && !(reset && pos == len && !ncl))
            check_json_body(status, body, blen, r, rem);
        count++;
    }
    return count;
}

/* ---------------------------------------------------------------------------------------- */
/* One input                                                                                 */
/* ---------------------------------------------------------------------------------------- */

static bool settled(void)
{
    return http_server_inflight(G.http) == 0 && fuzz_backend_pending() == 0 &&
           workpool_pending(G.app.wp) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t script[SCRIPT_LEN] = {0};
    size_t sl = size < SCRIPT_LEN ? size : SCRIPT_LEN;
    memcpy(script, data, sl);
    const char *req = (const char *)data + sl;
    size_t req_len = size - sl;
    fuzz_backend_begin(script, SCRIPT_LEN);

    size_t signed_len = 0;
    char *signed_req = sign_request(req, req_len, &signed_len);
    if (signed_req) {
        req = signed_req;
        req_len = signed_len;
    }
    bool head_possible =
        req_len >= 5 && (memcmp(req, "HEAD ", 5) == 0 || find_bytes(req, req_len, "\nHEAD ") ||
                         find_bytes(req, req_len, "\rHEAD "));

    struct client c = {.out = req, .outlen = req_len};
    c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c.fd < 0)
        die("socket failed");
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)G.port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(c.fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS)
        die("connect failed");
    struct event_base *base = G.app.base;
    c.rev = event_new(base, c.fd, EV_READ | EV_PERSIST, client_read_cb, &c);
    c.wev = event_new(base, c.fd, EV_WRITE | EV_PERSIST, client_write_cb, &c);
    struct event *deadline = evtimer_new(base, deadline_cb, NULL);
    struct timeval dl = {FUZZ_DEADLINE_S, 0};
    deadline_hit = false;
    evtimer_add(deadline, &dl);
    event_add(c.rev, NULL);
    event_add(c.wev, NULL);

    while (!(c.eof && c.wr_shut && settled()) && !deadline_hit)
        event_base_loop(base, EVLOOP_ONCE);
    if (deadline_hit) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "no completion within %d s (eof=%d written=%zu/%zu inflight=%d pending=%d)",
                 FUZZ_DEADLINE_S, c.eof, c.outpos, c.outlen, http_server_inflight(G.http),
                 fuzz_backend_pending());
        violation(msg, c.in, c.inlen);
    }
    event_free(deadline);
    event_free(c.rev);
    event_free(c.wev);
    /* No TIME_WAIT per input: reset rather than close gracefully (the server closed already). */
    struct linger lg = {1, 0};
    setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(c.fd);

    int n =
        check_replies(c.in ? c.in : "", c.inlen, c.reset, head_possible, fuzz_backend_faulted());
#ifndef FUZZ_ALLOW_LOST_REPLIES
    /* A request that got as far as the backend was complete and dispatched: a client that
     * half-closed after sending it is still owed the reply (RFC 9112 §9.6). */
    if (n == 0 && !c.reset && fuzz_backend_calls() > 0)
        violation("a request reached the backend but its reply never arrived", NULL, 0);
#endif
    if (G.verbose)
        fprintf(stderr, "fuzz_http: %d replies, %u backend calls, faulted=%d reset=%d\n%.*s\n", n,
                fuzz_backend_calls(), fuzz_backend_faulted(), c.reset, (int)c.inlen,
                c.in ? c.in : "");
    free(c.in);
    free(signed_req);
    return 0;
}
