/* kv.c -- the one asynchronous Redis connection of the process (hiredis 0.14 async API on
 * its libevent adapter).
 *
 * Owns: the redisAsyncContext of the moment, the connect/reconnect/drop timers, one
 * struct kv_cmd per command in flight (with its timeout timer), the Lua scripts, the stats.
 *
 * hiredis 0.14 has neither connect nor command timeouts for async contexts, so both are our
 * own libevent timers. The connection moves through:
 *
 *   KV_DOWN --start_connect--> KV_CONNECTING --PING/AUTH/SELECT ok--> KV_UP
 *      ^                          |  (connect error, connect timeout,      |
 *      |                          |   handshake error)                     | (command timeout)
 *      |                          v                                        v
 *      +----reconnect timer---- (dropped) <------ drop_ev (next turn) -- KV_CLOSING
 *
 * and a lost connection (hiredis calls disconnect_cb) goes straight back to KV_DOWN. Only
 * KV_UP accepts commands; in every other state a command fails with ST_UNAVAILABLE on the
 * next loop turn. Commands are pipelined on the single connection.
 *
 * Who frees what (hiredis 0.14 rules, see async.c there):
 *  - hiredis frees the context itself after a failed connect (connect_cb with REDIS_ERR) and
 *    after a lost connection (disconnect_cb); we only forget our pointer then.
 *  - We free it with redisAsyncFree() only from our own timer callbacks and kv_free(), never
 *    from inside a hiredis callback (its connect callback is not even guarded against that).
 *  - redisAsyncFree() and a lost connection run every pending reply callback with a NULL
 *    reply before the disconnect callback: that is how each command still in hiredis learns
 *    that its connection is gone.
 *  - A struct kv_cmd handed to hiredis as privdata is freed only by reply_cb, because hiredis
 *    will call it exactly once more; `fired` tells reply_cb that the caller already got its
 *    answer (timeout, kv_free) and only the memory is left.
 *
 * Non-positive timeouts in kv_config fall back to the defaults below. */
#include "kv.h"
#include "crypto.h"
#include "log.h"

#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/util.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libevent.h>
#include <openssl/evp.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_CONNECT_TIMEOUT_MS 1000
#define DEFAULT_COMMAND_TIMEOUT_MS 1000
#define DEFAULT_RECONNECT_MAX_MS   5000
#define RECONNECT_MIN_MS           100

enum kv_state {
    KV_DOWN,       /* no context; the reconnect timer is armed (unless kv_free runs) */
    KV_CONNECTING, /* context exists: TCP connect, then the PING/AUTH/SELECT handshake */
    KV_UP,         /* handshake done: commands go to Redis */
    KV_CLOSING,    /* condemned (command timeout, refused handshake): drop_ev frees it next turn */
};

struct kv_script {
    struct kv_script *next; /* kv->scripts, freed by kv_free */
    char sha[41];           /* lower-case hex SHA-1 of lua, as EVALSHA wants it */
    char *lua;
    size_t lua_len;
};

struct kv_cmd {
    struct kv *kv;
    struct event timer; /* command timeout; zero-timeout "fail soon" when kv was down */
    kv_cb cb;           /* NULL: fire-and-forget */
    void *arg;
    bool in_hiredis;            /* hiredis holds us as privdata: only reply_cb may free us */
    bool fired;                 /* the caller has had its one callback */
    struct kv_cmd *prev, *next; /* kv->pending, while !fired */

    /* kv_eval only: the EVALSHA argv, copied so that it can be resent as EVAL. */
    const struct kv_script *script;
    bool retried_as_eval;
    int eval_argc;
    const char **eval_argv;
    size_t *eval_argvlen;
    char *eval_blob; /* the copied argument bytes eval_argv points into */
    char nkeys[16];
};

struct kv {
    struct event_base *base;
    char *host, *unix_path;
    char *user, *password; /* AUTH [user] password on every connect; never logged */
    int port, db;
    int connect_timeout_ms, command_timeout_ms, reconnect_max_ms;
    char addr[128]; /* for log lines: "host:port" or the socket path */

    redisAsyncContext *ac; /* current context, NULL in KV_DOWN */
    enum kv_state state;
    int handshake_left; /* PING/AUTH/SELECT replies still awaited in KV_CONNECTING */
    int backoff_ms;     /* next reconnect delay before jitter */
    int fail_streak;    /* failed connects in a row, to log the first one loudly only */
    bool ever_up;
    bool freeing; /* kv_free runs: no reconnects */
    int cb_depth; /* > 0 while a caller's callback runs (kv_free must not) */

    struct event connect_timer;
    struct event reconnect_timer;
    struct event drop_ev;             /* frees a condemned context from a clean stack */
    const struct timeval *command_tv; /* a libevent common timeout: O(1) add/delete */

    struct kv_cmd *pending_head, *pending_tail; /* callbacks not yet fired */
    int npending;
    struct kv_script *scripts;
    struct kv_stats stats; /* reconnects counts connections re-established after the first */
};

static const struct timeval zero_tv = {0, 0};

static struct timeval ms_tv(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

static void start_connect(struct kv *kv);

/* ---- commands ---- */

static void pending_link(struct kv *kv, struct kv_cmd *cmd)
{
    cmd->prev = kv->pending_tail;
    cmd->next = NULL;
    if (kv->pending_tail)
        kv->pending_tail->next = cmd;
    else
        kv->pending_head = cmd;
    kv->pending_tail = cmd;
    kv->npending++;
}

static void pending_unlink(struct kv *kv, struct kv_cmd *cmd)
{
    if (cmd->prev)
        cmd->prev->next = cmd->next;
    else
        kv->pending_head = cmd->next;
    if (cmd->next)
        cmd->next->prev = cmd->prev;
    else
        kv->pending_tail = cmd->prev;
    cmd->prev = cmd->next = NULL;
    kv->npending--;
}

static void cmd_timer_cb(evutil_socket_t fd, short what, void *arg);

static struct kv_cmd *cmd_new(struct kv *kv, kv_cb cb, void *arg)
{
    struct kv_cmd *cmd = xcalloc(1, sizeof *cmd);
    cmd->kv = kv;
    cmd->cb = cb;
    cmd->arg = arg;
    evtimer_assign(&cmd->timer, kv->base, cmd_timer_cb, cmd);
    pending_link(kv, cmd);
    kv->stats.commands++;
    return cmd;
}

static void cmd_free(struct kv_cmd *cmd)
{
    /* STYLE anti-pattern 17: the timer goes before the memory, in every path. */
    evtimer_del(&cmd->timer);
    free(cmd->eval_argv);
    free(cmd->eval_argvlen);
    free(cmd->eval_blob);
    free(cmd);
}

/* The one place a caller's callback runs. The struct outlives the call while hiredis still
 * holds it; reply_cb frees it then. */
static void finish(struct kv_cmd *cmd, struct redisReply *reply, enum status st)
{
    struct kv *kv = cmd->kv;

    ASSERT(!cmd->fired);
    evtimer_del(&cmd->timer);
    pending_unlink(kv, cmd);
    cmd->fired = true;
    if (st != ST_OK)
        kv->stats.errors++;
    if (cmd->cb) {
        kv->cb_depth++;
        cmd->cb(reply, st, cmd->arg);
        kv->cb_depth--;
    }
    if (!cmd->in_hiredis)
        cmd_free(cmd);
}

static void reply_cb(redisAsyncContext *ac, void *r, void *privdata);

/* Hands argv to hiredis, which formats (copies) it at once, or -- when Redis is not usable --
 * arms a zero timeout so that the caller hears ST_UNAVAILABLE on the next loop turn and never
 * from inside kv_command(). hiredis refuses commands on a context it is tearing down
 * (REDIS_DISCONNECTING/REDIS_FREEING), which lands here too. */
/* Writes n in decimal at p; returns the end. */
static char *put_uint(char *p, size_t n)
{
    char tmp[24];
    int i = 0;
    do {
        tmp[i++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    while (i)
        *p++ = tmp[--i];
    return p;
}

/* Formats argv as a RESP array (what redisAsyncCommandArgv does through sds and printf-style
 * calls, at several times the cost on the hot read paths) and queues it; hiredis copies the
 * bytes. Small commands are formatted on the stack. */
static int queue_argv(redisAsyncContext *ac, struct kv_cmd *cmd, int argc, const char **argv,
                      const size_t *argvlen)
{
    size_t stack_lens[16], *lens = argc <= 16 ? stack_lens : xmalloc((size_t)argc * sizeof *lens);
    size_t total = 1 + 24 + 2;
    for (int i = 0; i < argc; i++) {
        lens[i] = argvlen ? argvlen[i] : strlen(argv[i]);
        total += 1 + 24 + 2 + lens[i] + 2;
    }
    char stack_buf[512], *buf = total <= sizeof stack_buf ? stack_buf : xmalloc(total);
    char *p = buf;
    *p++ = '*';
    p = put_uint(p, (size_t)argc);
    *p++ = '\r', *p++ = '\n';
    for (int i = 0; i < argc; i++) {
        *p++ = '$';
        p = put_uint(p, lens[i]);
        *p++ = '\r', *p++ = '\n';
        memcpy(p, argv[i], lens[i]);
        p += lens[i];
        *p++ = '\r', *p++ = '\n';
    }
    int r = redisAsyncFormattedCommand(ac, reply_cb, cmd, buf, (size_t)(p - buf));
    if (buf != stack_buf)
        free(buf);
    if (lens != stack_lens)
        free(lens);
    return r;
}

static void submit(struct kv *kv, struct kv_cmd *cmd, int argc, const char **argv,
                   const size_t *argvlen)
{
    if (kv->state == KV_UP && queue_argv(kv->ac, cmd, argc, argv, argvlen) == REDIS_OK) {
        cmd->in_hiredis = true;
        evtimer_add(&cmd->timer, kv->command_tv);
        return;
    }
    evtimer_add(&cmd->timer, &zero_tv);
}

/* ---- connection ---- */

static void connect_failed(struct kv *kv, const char *why)
{
    /* Redis down for an hour must not write a warning every few seconds. */
    if (kv->fail_streak++ == 0)
        log_warn("redis connect to %s failed: %s", kv->addr, why);
    else
        log_debug("redis connect to %s failed again (%d): %s", kv->addr, kv->fail_streak, why);
}

/* Exponential back-off with "equal jitter" (half fixed, half random), so that many server
 * processes losing the same Redis do not reconnect in lock step. */
static void schedule_reconnect(struct kv *kv)
{
    if (kv->freeing || evtimer_pending(&kv->reconnect_timer, NULL))
        return;
    int b = kv->backoff_ms;
    uint32_t r = 0;
    evutil_secure_rng_get_bytes(&r, sizeof r);
    int delay = b / 2 + (int)(r % (uint32_t)(b / 2 + 1));
    kv->backoff_ms = b >= kv->reconnect_max_ms / 2 ? kv->reconnect_max_ms : b * 2;
    struct timeval tv = ms_tv(delay);
    evtimer_add(&kv->reconnect_timer, &tv);
}

/* Frees the current context now. Only from our own event callbacks and kv_free(): hiredis
 * then runs each pending reply callback with a NULL reply (the callers get ST_UNAVAILABLE)
 * and disconnect_cb, which sees that kv->ac is no longer this context and leaves it alone. */
static void drop_now(struct kv *kv)
{
    redisAsyncContext *ac = kv->ac;

    evtimer_del(&kv->connect_timer);
    evtimer_del(&kv->drop_ev);
    kv->ac = NULL;
    kv->state = KV_DOWN;
    if (ac)
        redisAsyncFree(ac);
    schedule_reconnect(kv);
}

/* Marks the connection unusable at once (no new command reaches it) but frees it on the next
 * loop turn: we may be inside a hiredis callback here, where freeing is not ours to do. */
static void condemn(struct kv *kv, const char *why)
{
    if (!kv->ac || kv->state == KV_CLOSING)
        return;
    if (kv->state == KV_UP)
        log_warn("redis connection lost: %s", why);
    else
        connect_failed(kv, why);
    kv->state = KV_CLOSING;
    evtimer_add(&kv->drop_ev, &zero_tv);
}

static void drop_cb(evutil_socket_t fd, short what, void *arg)
{
    drop_now(arg);
}

static void reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
    start_connect(arg);
}

static void connect_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct kv *kv = arg;
    char why[64];

    snprintf(why, sizeof why, "no answer within %d ms", kv->connect_timeout_ms);
    connect_failed(kv, why);
    drop_now(kv);
}

static void mark_up(struct kv *kv)
{
    evtimer_del(&kv->connect_timer);
    kv->state = KV_UP;
    kv->backoff_ms = RECONNECT_MIN_MS;
    if (kv->ever_up)
        kv->stats.reconnects++;
    kv->ever_up = true;
    if (kv->fail_streak > 1)
        log_info("redis connected to %s after %d failed attempts", kv->addr, kv->fail_streak);
    else
        log_info("redis connected to %s", kv->addr);
    kv->fail_streak = 0;
}

/* privdata is the kv: handshake commands have no caller and no struct kv_cmd. */
static void handshake_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    struct kv *kv = privdata;
    redisReply *reply = r;

    /* NULL: the context is being freed; whoever frees it already takes care of the state. */
    if (!reply || kv->ac != ac || kv->state != KV_CONNECTING)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        /* Wrong password, bad db, or "LOADING" while Redis reads its dataset: try later.
         * Redis error texts carry no secrets. */
        char why[160];
        snprintf(why, sizeof why, "handshake refused: %.120s", reply->str);
        condemn(kv, why);
        return;
    }
    if (--kv->handshake_left == 0)
        mark_up(kv);
}

/* The AUTH reply: a refusal is a configuration error worth saying so plainly (the generic
 * handshake line would not name the password as the cause). Redis counts as down until a
 * later reconnect authenticates. */
static void auth_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    struct kv *kv = privdata;
    redisReply *reply = r;

    if (reply && kv->ac == ac && kv->state == KV_CONNECTING && reply->type == REDIS_REPLY_ERROR) {
        char why[256];
        snprintf(why, sizeof why,
                 "AUTH%s refused, check the password in redis.url or redis.password "
                 "(GRIDPOINTS_REDIS_PASSWORD): %.100s",
                 kv->user ? " with a user name" : "", reply->str);
        condemn(kv, why);
        return;
    }
    handshake_cb(ac, r, privdata);
}

/* Called by hiredis once the socket is writable or failed. Sending from here is fine;
 * freeing the context is not (hiredis 0.14 touches it after we return). */
static void connect_cb(const redisAsyncContext *cac, int status)
{
    struct kv *kv = cac->data;

    if (kv->ac != cac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context as soon as we return, without calling disconnect_cb. It
         * copies the error into cac->err only after this callback, so read the inner one. */
        evtimer_del(&kv->connect_timer);
        evtimer_del(&kv->drop_ev);
        connect_failed(kv, cac->c.err ? cac->c.errstr : "connect failed");
        kv->ac = NULL;
        kv->state = KV_DOWN;
        schedule_reconnect(kv);
        return;
    }

    /* Pipelined: AUTH, SELECT, then PING, all answered before kv counts as up. The PING also
     * proves that the server answers at all (a stopped or still loading Redis accepts TCP).
     * The connect timer stays armed until the last reply. */
    redisAsyncContext *ac = kv->ac;
    kv->handshake_left = 0;
    if (kv->password) {
        /* AUTH user password is the Redis 6 ACL form; AUTH password logs in as "default". */
        const char *argv[] = {"AUTH", kv->user ? kv->user : kv->password, kv->password};
        if (redisAsyncCommandArgv(ac, auth_cb, kv, kv->user ? 3 : 2, argv, NULL) == REDIS_OK)
            kv->handshake_left++;
    }
    if (kv->db != 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", kv->db);
        const char *argv[] = {"SELECT", db};
        if (redisAsyncCommandArgv(ac, handshake_cb, kv, 2, argv, NULL) == REDIS_OK)
            kv->handshake_left++;
    }
    const char *ping[] = {"PING"};
    if (redisAsyncCommandArgv(ac, handshake_cb, kv, 1, ping, NULL) == REDIS_OK)
        kv->handshake_left++;
    else
        condemn(kv, "handshake could not be sent");
}

/* hiredis calls this after it ran every pending reply callback with NULL, and frees the
 * context right after we return. It does not call it for a context that never connected. */
static void disconnect_cb(const redisAsyncContext *cac, int status)
{
    struct kv *kv = cac->data;

    if (kv->ac != cac)
        return; /* dropped by us (drop_now, kv_free): nothing left to do */
    /* errstr is a buffer inside the context, "" when err == 0. */
    const char *why = cac->c.err ? cac->c.errstr : "connection closed";
    if (kv->state == KV_UP)
        log_warn("redis connection lost: %s", why);
    else if (kv->state == KV_CONNECTING)
        connect_failed(kv, why);
    evtimer_del(&kv->connect_timer);
    evtimer_del(&kv->drop_ev);
    kv->ac = NULL;
    kv->state = KV_DOWN;
    schedule_reconnect(kv);
}

static void start_connect(struct kv *kv)
{
    redisAsyncContext *ac = kv->unix_path ? redisAsyncConnectUnix(kv->unix_path)
                                          : redisAsyncConnect(kv->host, kv->port);
    if (!ac) {
        log_error("out of memory creating a redis context");
        abort();
    }
    if (ac->err) {
        /* Refused at once (common on loopback). No callbacks are set and nothing is pending,
         * so freeing here runs no code of ours. */
        connect_failed(kv, ac->errstr);
        redisAsyncFree(ac);
        schedule_reconnect(kv);
        return;
    }
    ac->data = kv;
    redisLibeventAttach(ac, kv->base);
    redisAsyncSetConnectCallback(ac, connect_cb);
    redisAsyncSetDisconnectCallback(ac, disconnect_cb);
    kv->ac = ac;
    kv->state = KV_CONNECTING;
    struct timeval tv = ms_tv(kv->connect_timeout_ms);
    evtimer_add(&kv->connect_timer, &tv);
}

/* ---- replies and timeouts ---- */

static bool is_noscript(const redisReply *reply)
{
    return reply->type == REDIS_REPLY_ERROR && reply->len >= 8 &&
           strncmp(reply->str, "NOSCRIPT", 8) == 0;
}

/* The trampoline hiredis calls exactly once per command: with the reply, or with NULL when
 * the context goes away. The reply is hiredis's and is freed when we return (STYLE 24). */
static void reply_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    struct kv_cmd *cmd = privdata;
    struct kv *kv = cmd->kv;
    redisReply *reply = r;

    cmd->in_hiredis = false;
    if (cmd->fired) {
        cmd_free(cmd);
        return;
    }
    if (!reply) {
        finish(cmd, NULL, ST_UNAVAILABLE);
        return;
    }
    if (cmd->script && !cmd->retried_as_eval && is_noscript(reply)) {
        /* Redis restarted or its script cache was flushed: EVAL loads the script again. The
         * command keeps its timer, so the deadline covers both round trips. */
        cmd->retried_as_eval = true;
        cmd->eval_argv[0] = "EVAL";
        cmd->eval_argvlen[0] = 4;
        cmd->eval_argv[1] = cmd->script->lua;
        cmd->eval_argvlen[1] = cmd->script->lua_len;
        if (kv->state == KV_UP && kv->ac == ac &&
            redisAsyncCommandArgv(ac, reply_cb, cmd, cmd->eval_argc, cmd->eval_argv,
                                  cmd->eval_argvlen) == REDIS_OK) {
            cmd->in_hiredis = true;
            return;
        }
        finish(cmd, NULL, ST_UNAVAILABLE);
        return;
    }
    finish(cmd, reply, reply->type == REDIS_REPLY_ERROR ? ST_INTERNAL : ST_OK);
}

static void cmd_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct kv_cmd *cmd = arg;
    struct kv *kv = cmd->kv;

    if (!cmd->in_hiredis) {
        /* Submitted while Redis was not usable: this is the promised next-turn failure. */
        finish(cmd, NULL, ST_UNAVAILABLE);
        return;
    }
    /* A Redis that does not answer in time is treated as gone: every command behind this one
     * in the pipeline would wait just as long. Condemn first, so that whatever the caller
     * submits from its callback waits for a fresh connection. */
    kv->stats.timeouts++;
    char why[64];
    snprintf(why, sizeof why, "command timed out after %d ms", kv->command_timeout_ms);
    condemn(kv, why);
    finish(cmd, NULL, ST_UNAVAILABLE);
}

/* ---- public ---- */

struct kv *kv_new(struct event_base *base, const struct kv_config *cfg)
{
    struct kv *kv = xcalloc(1, sizeof *kv);

    kv->base = base;
    kv->host = cfg->host ? xstrdup(cfg->host) : NULL;
    kv->unix_path = cfg->unix_path ? xstrdup(cfg->unix_path) : NULL;
    kv->password = cfg->password && *cfg->password ? xstrdup(cfg->password) : NULL;
    kv->user = kv->password && cfg->user && *cfg->user ? xstrdup(cfg->user) : NULL;
    kv->port = cfg->port;
    kv->db = cfg->db;
    ASSERT(kv->unix_path || kv->host);
    kv->connect_timeout_ms =
        cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
    kv->command_timeout_ms =
        cfg->command_timeout_ms > 0 ? cfg->command_timeout_ms : DEFAULT_COMMAND_TIMEOUT_MS;
    kv->reconnect_max_ms =
        cfg->reconnect_max_ms > 0 ? cfg->reconnect_max_ms : DEFAULT_RECONNECT_MAX_MS;
    if (kv->reconnect_max_ms < RECONNECT_MIN_MS)
        kv->reconnect_max_ms = RECONNECT_MIN_MS;
    kv->backoff_ms = RECONNECT_MIN_MS;
    if (kv->unix_path)
        snprintf(kv->addr, sizeof kv->addr, "%s", kv->unix_path);
    else
        snprintf(kv->addr, sizeof kv->addr, "%s:%d", kv->host, kv->port);

    evtimer_assign(&kv->connect_timer, base, connect_timeout_cb, kv);
    evtimer_assign(&kv->reconnect_timer, base, reconnect_cb, kv);
    evtimer_assign(&kv->drop_ev, base, drop_cb, kv);
    /* Every command has the same timeout: a common timeout keeps thousands of them in a
     * queue instead of the timer heap. */
    struct timeval tv = ms_tv(kv->command_timeout_ms);
    kv->command_tv = event_base_init_common_timeout(base, &tv);
    if (!kv->command_tv) {
        log_error("could not create the redis command timeout queue");
        abort();
    }
    kv->state = KV_DOWN;
    /* The first connect starts when the loop runs, not now: the start-up work that follows
     * (CA bundles, key files) may block for longer than connect_timeout on a slow or loaded
     * machine, and its timer would then expire before the loop ever looked at the socket. */
    evtimer_add(&kv->reconnect_timer, &zero_tv);
    return kv;
}

void kv_shutdown(struct kv *kv)
{
    if (kv->freeing)
        return;
    ASSERT(kv->cb_depth == 0);
    kv->freeing = true; /* no reconnects; later commands fail on the next loop turn */
    evtimer_del(&kv->reconnect_timer);
    drop_now(kv);
    log_info("redis client shut down: pending commands fail with 503");
}

void kv_free(struct kv *kv)
{
    if (!kv)
        return;
    /* Freeing from inside one of our callbacks would pull the kv from under the code that
     * called it; shutdown happens from main() after the loop. */
    ASSERT(kv->cb_depth == 0);
    kv->freeing = true;
    evtimer_del(&kv->reconnect_timer);

    /* Commands in hiredis get their NULL reply (ST_UNAVAILABLE) from redisAsyncFree; timed
     * out ones are only freed there. */
    drop_now(kv);
    /* Those that never reached hiredis, and any a callback submitted meanwhile. */
    while (kv->pending_head)
        finish(kv->pending_head, NULL, ST_UNAVAILABLE);
    ASSERT(kv->npending == 0);

    for (struct kv_script *s = kv->scripts, *next; s; s = next) {
        next = s->next;
        free(s->lua);
        free(s);
    }
    free(kv->host);
    free(kv->unix_path);
    free(kv->user);
    if (kv->password)
        explicit_bzero(kv->password, strlen(kv->password));
    free(kv->password);
    free(kv);
}

bool kv_is_up(const struct kv *kv)
{
    return kv->state == KV_UP;
}

void kv_get_stats(const struct kv *kv, struct kv_stats *out)
{
    *out = kv->stats;
    out->up = kv->state == KV_UP;
    out->pending = kv->npending;
}

void kv_command(struct kv *kv, kv_cb cb, void *arg, int argc, const char *const *argv,
                const size_t *argvlen)
{
    ASSERT(argc > 0 && argv);
    struct kv_cmd *cmd = cmd_new(kv, cb, arg);
    /* hiredis takes `const char **`; it does not write through it. */
    submit(kv, cmd, argc, (const char **)argv, argvlen);
}

struct kv_script *kv_script_new(struct kv *kv, const char *lua)
{
    struct kv_script *s = xcalloc(1, sizeof *s);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    s->lua_len = strlen(lua);
    s->lua = xstrndup(lua, s->lua_len);
    if (EVP_Digest(s->lua, s->lua_len, md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20) {
        log_error("SHA-1 of a redis script failed");
        abort();
    }
    crypto_hex(md, mdlen, s->sha);
    s->next = kv->scripts;
    kv->scripts = s;
    return s;
}

void kv_eval(struct kv *kv, const struct kv_script *script, int nkeys, int argc,
             const char *const *argv, kv_cb cb, void *arg)
{
    ASSERT(script && nkeys >= 0 && argc >= nkeys && (argc == 0 || argv));
    struct kv_cmd *cmd = cmd_new(kv, cb, arg);
    int n = argc + 3;

    /* EVALSHA sha nkeys keys... args...; the arguments are copied because a NOSCRIPT answer
     * arrives after the caller's argv is gone, and they have to be sent again. */
    cmd->script = script;
    cmd->eval_argc = n;
    cmd->eval_argv = xcalloc((size_t)n, sizeof *cmd->eval_argv);
    cmd->eval_argvlen = xcalloc((size_t)n, sizeof *cmd->eval_argvlen);
    size_t total = 0;
    for (int i = 0; i < argc; i++) {
        cmd->eval_argvlen[i + 3] = strlen(argv[i]);
        total += cmd->eval_argvlen[i + 3];
    }
    cmd->eval_blob = xmalloc(total);
    char *p = cmd->eval_blob;
    for (int i = 0; i < argc; i++) {
        memcpy(p, argv[i], cmd->eval_argvlen[i + 3]);
        cmd->eval_argv[i + 3] = p;
        p += cmd->eval_argvlen[i + 3];
    }
    snprintf(cmd->nkeys, sizeof cmd->nkeys, "%d", nkeys);
    cmd->eval_argv[0] = "EVALSHA";
    cmd->eval_argvlen[0] = 7;
    cmd->eval_argv[1] = script->sha;
    cmd->eval_argvlen[1] = 40;
    cmd->eval_argv[2] = cmd->nkeys;
    cmd->eval_argvlen[2] = strlen(cmd->nkeys);
    submit(kv, cmd, n, cmd->eval_argv, cmd->eval_argvlen);
}
