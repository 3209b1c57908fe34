/* gpload.c -- a small load generator on libevent for the benchmark scenarios that wrk cannot
 * express (scripts/bench.sh builds it with cc -O2).
 *
 *   gpload once -p PORT -c CONNS -f FILE
 *       Sends every request of FILE exactly once, over CONNS keep-alive connections, each
 *       connection sending its next request as soon as the previous one is answered ("as fast
 *       as they can"). The connections are opened and warmed with one GET /healthz each before
 *       the clock starts, so the figures measure requests, not TCP handshakes.
 *
 *   gpload idle -p PORT -c CONNS -t HOLD_S --pid PID
 *       Opens CONNS keep-alive connections (one GET /healthz on each, so the server has
 *       accepted and served every one of them), then holds them idle for HOLD_S seconds,
 *       sampling the VmRSS of process PID.
 *
 * FILE has one request per line: METHOD <tab> PATH <tab> TOKEN <tab> BODY [<tab> HEADERS], where
 * TOKEN "-" means no bearer token, BODY may be absent or empty, and HEADERS are extra header
 * lines ("Name: value") separated by the ASCII unit separator 0x1f (the signed merchant
 * requests carry their Authorization and Idempotency-Key this way).
 *
 * Output: one line of key=value pairs on stdout, e.g. for `once`:
 *   requests=10000 completed=10000 errors=0 duration_s=0.871 rps=11481 p50_ms=... p90_ms=...
 *   p99_ms=... p999_ms=... max_ms=... s2xx=100 s4xx=9900 s5xx=0 st_201=100 st_409=9900
 * duration_s runs from the first request sent to the last answer received (the drain time).
 * Latencies are per request, from the moment it was written to its last byte read. */
#define _GNU_SOURCE
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#define MAX_PENDING_CONNECTS 64 /* below evhttp's listen backlog of 128 */
#define MAX_HEADER           65536
#define CUR_NONE             (-2L)
#define CUR_WARMUP           (-1L)

enum phase { PH_CONNECT, PH_RUN, PH_HOLD, PH_DONE };

struct conn {
    struct bufferevent *bev;
    long cur; /* request in flight: index, CUR_WARMUP or CUR_NONE */
    double t0;
    int status;
    size_t need; /* body bytes still to read */
    bool in_body;
    bool close_after;
    bool ready; /* warmed up */
};

static struct event_base *base;
static struct sockaddr_in addr;
static int port;
static enum phase phase = PH_CONNECT;
static bool mode_idle;

static char **wire;
static size_t *wire_len;
static long nreq, next_req, ndone;
static double *lat_ms;
static short *status_of;

static struct conn *conns;
static int nconns, nstarted, npending, nready, nactive;
static long nerrors, nconnect_errors, nclosed_in_hold;
static double t_start, t_last;

static char warmup_req[256];
static size_t warmup_len;

static int rss_pid;
static long rss_before_kb, rss_ready_kb, rss_max_kb, rss_end_kb;
static double hold_s;
static struct event *hold_timer, *sample_timer;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long rss_kb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

static void die(const char *msg)
{
    fprintf(stderr, "gpload: %s\n", msg);
    exit(1);
}

static void start_connect(struct conn *c);
static void send_next(struct conn *c);

static void conn_close(struct conn *c)
{
    if (c->bev) {
        bufferevent_free(c->bev);
        c->bev = NULL;
        nactive--;
    }
}

static void maybe_finish(void)
{
    if (phase == PH_RUN && nactive == 0)
        event_base_loopbreak(base);
}

static void begin_run(void)
{
    t_start = now_s();
    if (mode_idle) {
        phase = PH_HOLD;
        rss_ready_kb = rss_pid ? rss_kb(rss_pid) : -1;
        rss_max_kb = rss_ready_kb;
        struct timeval tv = {(time_t)hold_s, (suseconds_t)((hold_s - (time_t)hold_s) * 1e6)};
        evtimer_add(hold_timer, &tv);
        struct timeval st = {0, 250000};
        evtimer_add(sample_timer, &st);
        return;
    }
    phase = PH_RUN;
    t_last = t_start;
    for (int i = 0; i < nconns; i++)
        if (conns[i].bev)
            send_next(&conns[i]);
    maybe_finish();
}

/* The next queued connect, if any (PH_CONNECT keeps at most MAX_PENDING_CONNECTS in flight). */
static void connect_more(void)
{
    while (phase == PH_CONNECT && nstarted < nconns && npending < MAX_PENDING_CONNECTS)
        start_connect(&conns[nstarted++]);
    if (phase == PH_CONNECT && nstarted == nconns && npending == 0)
        begin_run();
}

static void send_next(struct conn *c)
{
    if (phase != PH_RUN || next_req >= nreq) {
        c->cur = CUR_NONE;
        conn_close(c);
        maybe_finish();
        return;
    }
    c->cur = next_req++;
    c->in_body = false;
    c->close_after = false;
    c->t0 = now_s();
    bufferevent_write(c->bev, wire[c->cur], wire_len[c->cur]);
}

static void complete(struct conn *c)
{
    double t = now_s();
    if (c->cur >= 0) {
        lat_ms[c->cur] = (t - c->t0) * 1000.0;
        status_of[c->cur] = (short)c->status;
        ndone++;
        t_last = t;
    }
    bool warm = c->cur == CUR_WARMUP;
    c->cur = CUR_NONE;
    if (c->close_after) {
        conn_close(c);
        if (warm && phase == PH_CONNECT) {
            npending--;
            nconnect_errors++;
            connect_more();
        } else if (phase == PH_RUN && next_req < nreq) {
            start_connect(c);
        } else {
            maybe_finish();
        }
        return;
    }
    if (warm) {
        c->ready = true;
        nready++;
        npending--;
        connect_more();
        return;
    }
    send_next(c);
}

static bool parse_headers(struct conn *c, const char *h, size_t n)
{
    if (n < 12 || strncmp(h, "HTTP/1.", 7) != 0)
        return false;
    c->status = atoi(h + 9);
    c->need = 0;
    const char *p = h;
    const char *end = h + n;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            break;
        if (!strncasecmp(p, "Content-Length:", 15))
            c->need = (size_t)strtoul(p + 15, NULL, 10);
        else if (!strncasecmp(p, "Connection:", 11)) {
            const char *v = p + 11;
            while (*v == ' ')
                v++;
            if (!strncasecmp(v, "close", 5))
                c->close_after = true;
        }
        p = eol + 1;
    }
    return true;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        if (c->cur == CUR_NONE) {
            evbuffer_drain(in, evbuffer_get_length(in)); /* unsolicited: ignore */
            return;
        }
        if (!c->in_body) {
            struct evbuffer_ptr pos = evbuffer_search(in, "\r\n\r\n", 4, NULL);
            if (pos.pos < 0) {
                if (evbuffer_get_length(in) > MAX_HEADER)
                    die("response header too large");
                return;
            }
            size_t hl = (size_t)pos.pos + 4;
            const char *h = (const char *)evbuffer_pullup(in, (ev_ssize_t)hl);
            if (!parse_headers(c, h, hl))
                die("malformed response");
            evbuffer_drain(in, hl);
            c->in_body = true;
        }
        size_t have = evbuffer_get_length(in);
        if (have < c->need)
            return;
        evbuffer_drain(in, c->need);
        complete(c);
        if (!c->bev || evbuffer_get_length(in) == 0)
            return;
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (phase == PH_CONNECT) {
            c->cur = CUR_WARMUP;
            c->in_body = false;
            c->close_after = false;
            bufferevent_write(c->bev, warmup_req, warmup_len);
        } else {
            send_next(c);
        }
        return;
    }
    /* EOF or error */
    bool warm = c->cur == CUR_WARMUP;
    bool connecting = !c->ready && phase == PH_CONNECT;
    if (c->cur >= 0) {
        status_of[c->cur] = 0;
        lat_ms[c->cur] = -1;
        nerrors++;
        ndone++;
    }
    c->cur = CUR_NONE;
    conn_close(c);
    if (phase == PH_HOLD) {
        nclosed_in_hold++;
        return;
    }
    if (connecting || warm) {
        npending--;
        nconnect_errors++;
        connect_more();
        return;
    }
    if (nerrors > nreq + 100)
        die("too many errors: is the server up?");
    if (phase == PH_RUN && next_req < nreq)
        start_connect(c);
    else
        maybe_finish();
}

static void start_connect(struct conn *c)
{
    if (phase == PH_CONNECT)
        npending++;
    c->cur = CUR_NONE;
    if (phase == PH_CONNECT)
        c->ready = false;
    c->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev)
        die("bufferevent_socket_new failed");
    nactive++;
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&addr, sizeof addr) != 0) {
        conn_close(c);
        if (phase == PH_CONNECT) {
            npending--;
            nconnect_errors++;
        }
    }
}

static void on_hold_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    rss_end_kb = rss_pid ? rss_kb(rss_pid) : -1;
    phase = PH_DONE;
    event_base_loopbreak(base);
}

static void on_sample(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    long kb = rss_pid ? rss_kb(rss_pid) : -1;
    if (kb > rss_max_kb)
        rss_max_kb = kb;
    struct timeval st = {0, 250000};
    evtimer_add(sample_timer, &st);
}

/* Splits FILE into prebuilt request bytes. */
static void load_requests(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        die("cannot open the request file");
    size_t cap = 1024;
    wire = malloc(cap * sizeof *wire);
    wire_len = malloc(cap * sizeof *wire_len);
    char *line = NULL;
    size_t lcap = 0;
    ssize_t n;
    while ((n = getline(&line, &lcap, f)) > 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0)
            continue;
        char *fields[5] = {0};
        char *p = line;
        for (int i = 0; i < 5 && p; i++) {
            fields[i] = p;
            p = i < 4 ? strchr(p, '\t') : NULL;
            if (p)
                *p++ = '\0';
        }
        /* extra headers: 0x1f-separated lines */
        char *extra = NULL;
        size_t elen = 0;
        if (fields[4] && *fields[4]) {
            extra = malloc(2 * strlen(fields[4]) + 3);
            for (char *h = strtok(fields[4], "\x1f"); h; h = strtok(NULL, "\x1f"))
                elen += (size_t)sprintf(extra + elen, "%s\r\n", h);
        }
        if (!fields[0] || !fields[1])
            die("a request line needs METHOD <tab> PATH");
        const char *tok = fields[2] && strcmp(fields[2], "-") != 0 ? fields[2] : NULL;
        const char *body = fields[3] && *fields[3] ? fields[3] : NULL;
        bool has_body = body || strcmp(fields[0], "GET") != 0;
        size_t blen = body ? strlen(body) : 0;
        size_t sz =
            strlen(fields[0]) + strlen(fields[1]) + (tok ? strlen(tok) : 0) + blen + elen + 256;
        char *w = malloc(sz);
        int len = snprintf(w, sz, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s%s%s%s%s", fields[0],
                           fields[1], port, tok ? "Authorization: Bearer " : "", tok ? tok : "",
                           tok ? "\r\n" : "", body ? "Content-Type: application/json\r\n" : "",
                           extra ? extra : "");
        free(extra);
        if (has_body)
            len += snprintf(w + len, sz - (size_t)len, "Content-Length: %zu\r\n", blen);
        len += snprintf(w + len, sz - (size_t)len, "\r\n%s", body ? body : "");
        if ((size_t)nreq == cap) {
            cap *= 2;
            wire = realloc(wire, cap * sizeof *wire);
            wire_len = realloc(wire_len, cap * sizeof *wire_len);
        }
        wire[nreq] = w;
        wire_len[nreq] = (size_t)len;
        nreq++;
    }
    free(line);
    fclose(f);
    if (nreq == 0)
        die("no requests in the file");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *sorted, long n, double p)
{
    if (n == 0)
        return 0;
    long i = (long)(p / 100.0 * (double)n + 0.999999) - 1;
    if (i < 0)
        i = 0;
    if (i >= n)
        i = n - 1;
    return sorted[i];
}

static void report_once(void)
{
    double *ok = malloc((size_t)nreq * sizeof *ok);
    long n = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0;
    static long by_status[600];
    for (long i = 0; i < nreq; i++) {
        int st = status_of[i];
        if (st <= 0)
            continue;
        ok[n++] = lat_ms[i];
        if (st >= 100 && st < 600)
            by_status[st]++;
        if (st / 100 == 2)
            s2++;
        else if (st / 100 == 3)
            s3++;
        else if (st / 100 == 4)
            s4++;
        else if (st / 100 == 5)
            s5++;
    }
    qsort(ok, (size_t)n, sizeof *ok, cmp_double);
    double dur = t_last - t_start;
    printf("requests=%ld completed=%ld errors=%ld connect_errors=%ld conns=%d duration_s=%.3f "
           "rps=%.0f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f p999_ms=%.2f max_ms=%.2f s2xx=%ld "
           "s3xx=%ld s4xx=%ld s5xx=%ld",
           nreq, n, nerrors, nconnect_errors, nconns, dur, dur > 0 ? (double)n / dur : 0,
           pct(ok, n, 50), pct(ok, n, 90), pct(ok, n, 99), pct(ok, n, 99.9), n ? ok[n - 1] : 0, s2,
           s3, s4, s5);
    for (int st = 100; st < 600; st++)
        if (by_status[st])
            printf(" st_%d=%ld", st, by_status[st]);
    /* Per status: winners and losers of a claim storm wait for very different things. */
    for (int st = 100; st < 600; st++) {
        if (!by_status[st])
            continue;
        long m = 0;
        for (long i = 0; i < nreq; i++)
            if (status_of[i] == st)
                ok[m++] = lat_ms[i];
        qsort(ok, (size_t)m, sizeof *ok, cmp_double);
        printf(" st_%d_p50_ms=%.2f st_%d_p99_ms=%.2f st_%d_max_ms=%.2f", st, pct(ok, m, 50), st,
               pct(ok, m, 99), st, ok[m - 1]);
    }
    printf("\n");
    free(ok);
}

static void usage(void)
{
    fprintf(stderr, "usage: gpload once -p PORT -c CONNS -f FILE\n"
                    "       gpload idle -p PORT -c CONNS -t HOLD_S [--pid PID]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    if (!strcmp(argv[1], "idle"))
        mode_idle = true;
    else if (strcmp(argv[1], "once") != 0)
        usage();
    const char *file = NULL;
    static const struct option opts[] = {{"pid", required_argument, NULL, 'P'}, {0, 0, 0, 0}};
    int o;
    optind = 2;
    while ((o = getopt_long(argc, argv, "p:c:f:t:", opts, NULL)) != -1) {
        switch (o) {
        case 'p':
            port = atoi(optarg);
            break;
        case 'c':
            nconns = atoi(optarg);
            break;
        case 'f':
            file = optarg;
            break;
        case 't':
            hold_s = atof(optarg);
            break;
        case 'P':
            rss_pid = atoi(optarg);
            break;
        default:
            usage();
        }
    }
    if (port <= 0 || nconns <= 0 || (!mode_idle && !file) || (mode_idle && hold_s <= 0))
        usage();

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)nconns + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < (rlim_t)nconns + 64)
            die("the open-file limit is below the number of connections");
    }
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(0x7f000001);
    warmup_len = (size_t)snprintf(warmup_req, sizeof warmup_req,
                                  "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", port);

    if (!mode_idle) {
        load_requests(file);
        lat_ms = calloc((size_t)nreq, sizeof *lat_ms);
        status_of = calloc((size_t)nreq, sizeof *status_of);
        for (long i = 0; i < nreq; i++)
            status_of[i] = -1;
    }
    base = event_base_new();
    conns = calloc((size_t)nconns, sizeof *conns);
    hold_timer = evtimer_new(base, on_hold_done, NULL);
    sample_timer = evtimer_new(base, on_sample, NULL);
    rss_before_kb = rss_pid ? rss_kb(rss_pid) : -1;
    double t_conn = now_s();
    connect_more();
    event_base_dispatch(base);

    if (mode_idle) {
        printf("conns=%d connected=%d connect_errors=%ld connect_s=%.2f closed_in_hold=%ld "
               "hold_s=%.1f rss_before_kb=%ld rss_connected_kb=%ld rss_max_kb=%ld rss_end_kb=%ld\n",
               nconns, nready, nconnect_errors, (t_start > 0 ? t_start : now_s()) - t_conn,
               nclosed_in_hold, hold_s, rss_before_kb, rss_ready_kb, rss_max_kb, rss_end_kb);
    } else {
        report_once();
    }
    for (int i = 0; i < nconns; i++)
        if (conns[i].bev)
            bufferevent_free(conns[i].bev);
    event_free(hold_timer);
    event_free(sample_timer);
    event_base_free(base);
    return 0;
}
