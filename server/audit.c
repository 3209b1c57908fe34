/* audit.c -- the checkpoint signer and the sealer sweep's hook (see audit.h). */
#include "audit.h"
#include "app.h"
#include "config.h"
#include "crypto.h"
#include "db.h"
#include "log.h"
#include "metrics.h"
#include "tlog.h"
#include "workpool.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct audit {
    struct app *app;
    EVP_PKEY *key; /* NULL: this instance signs nothing */
    char origin[TLOG_NAME_MAX + 1];
    char key_id[9];        /* hex */
    bool storing;          /* a gp_audit_checkpoint_store is in flight */
    char last_alarm[512];  /* the alarm logged last, so a standing one is logged once */
    char last_refusal[64]; /* likewise for refusals of the store */
    char *signing_note;    /* the note of the store in flight */
    /* audit.state_dir: the latest checkpoint this instance saw stored, kept outside the database */
    char *published_path;
    char *published_note; /* read at start; then the last one written */
    int64_t published_size;
    char published_root[64]; /* base64 */
    bool writing;            /* a write of the file is in flight (workpool) */
    void (*checked)(void *arg, const char *refusal, bool retry);
    void *checked_arg;
};

#define PUBLISHED_FILE "published-checkpoint.note"

/* Size and root (base64) from a checkpoint note's body: origin, size, root lines. */
static bool note_head(const char *note, int64_t *size, char *root, size_t cap)
{
    const char *l2 = strchr(note, '\n');
    if (!l2)
        return false;
    char *end;
    long long n = strtoll(l2 + 1, &end, 10);
    if (*end != '\n' || n <= 0)
        return false;
    const char *l3 = end + 1, *e3 = strchr(l3, '\n');
    if (!e3 || (size_t)(e3 - l3) >= cap || e3 == l3)
        return false;
    memcpy(root, l3, (size_t)(e3 - l3));
    root[e3 - l3] = '\0';
    *size = n;
    return true;
}

/* Start-up file I/O: the kept checkpoint, if any. False (logged) when it is unreadable. */
static bool published_load(struct audit *a, const char *dir)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", dir, PUBLISHED_FILE) >= (int)sizeof path) {
        log_error("audit.state_dir %s: path too long", dir);
        return false;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        log_error("cannot create audit.state_dir %s: %s", dir, strerror(errno));
        return false;
    }
    a->published_path = xstrdup(path);
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT)
            return true; /* nothing published yet */
        log_error("cannot read %s: %s", path, strerror(errno));
        return false;
    }
    char buf[TLOG_NOTE_MAX + 1];
    size_t n = fread(buf, 1, TLOG_NOTE_MAX, f);
    fclose(f);
    buf[n] = '\0';
    if (!note_head(buf, &a->published_size, a->published_root, sizeof a->published_root)) {
        log_error("%s is not a checkpoint note: restore it from a backup of this directory, or "
                  "remove it knowingly",
                  path);
        return false;
    }
    a->published_note = xstrdup(buf);
    log_info("audit: the latest published checkpoint kept in %s is of size %lld", path,
             (long long)a->published_size);
    return true;
}

struct note_write {
    struct audit *a;
    char *path, *note;
    int64_t size;
    char error[160];
};

/* On a pool thread: write to a temporary file, fsync, rename over, fsync the directory. */
static void write_work(void *arg)
{
    struct note_write *w = arg;
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", w->path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t len = strlen(w->note);
    if (fd < 0 || write(fd, w->note, len) != (ssize_t)len || fsync(fd) != 0) {
        snprintf(w->error, sizeof w->error, "%s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return;
    }
    close(fd);
    if (rename(tmp, w->path) != 0) {
        snprintf(w->error, sizeof w->error, "%s", strerror(errno));
        return;
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", w->path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
}

static void write_done(void *arg, bool cancelled)
{
    struct note_write *w = arg;
    if (!cancelled) {
        w->a->writing = false;
        if (w->error[0])
            log_error("audit: cannot keep the checkpoint of size %lld in %s: %s",
                      (long long)w->size, w->path, w->error);
    }
    free(w->path);
    free(w->note);
    free(w);
}

/* A checkpoint was stored (by us, or the same one by another instance): keep it. */
static void published_keep(struct audit *a, const char *note)
{
    int64_t size;
    char root[64];
    if (!a->published_path || a->writing || !note || !note_head(note, &size, root, sizeof root) ||
        size <= a->published_size)
        return;
    a->published_size = size;
    snprintf(a->published_root, sizeof a->published_root, "%s", root);
    free(a->published_note);
    a->published_note = xstrdup(note);
    struct note_write *w = xcalloc(1, sizeof *w);
    w->a = a;
    w->path = xstrdup(a->published_path);
    w->note = xstrdup(note);
    w->size = size;
    a->writing = true;
    workpool_submit(a->app->wp, write_work, write_done, w);
}

static void history_cb(struct db_result *res, void *arg)
{
    struct audit *a = arg;
    if (db_result_status(res) != ST_OK) {
        a->checked(a->checked_arg, NULL, true);
        return;
    }
    const char *match = db_result_value(res, 0, 0), *max = db_result_value(res, 0, 1);
    char why[PATH_MAX + 400] = "";
    if (match && !strcmp(match, "t")) {
        a->checked(a->checked_arg, NULL, false);
        return;
    }
    if (match) /* a checkpoint of that size with another root */
        snprintf(why, sizeof why,
                 "the database holds another checkpoint of size %lld than the one published "
                 "(kept in %s): its signed history forks from what was published",
                 (long long)a->published_size, a->published_path);
    else
        snprintf(why, sizeof why,
                 "the database's signed history ends at size %s, behind the checkpoint of size "
                 "%lld already published (kept in %s): it was restored to an earlier point",
                 max ? max : "0", (long long)a->published_size, a->published_path);
    if (!a->app->cfg->audit_allow_rewind) {
        char refusal[PATH_MAX + 1200];
        snprintf(refusal, sizeof refusal,
                 "%s; refusing to start (audit.allow_rewind = true starts anyway; docs/"
                 "OPERATIONS.md, \"Backup and restore\")",
                 why);
        a->checked(a->checked_arg, refusal, false);
        return;
    }
    /* Told to: set the kept checkpoint aside (one-time start-up file I/O) and go on. */
    char aside[PATH_MAX + 40];
    snprintf(aside, sizeof aside, "%s.superseded-%lld", a->published_path, (long long)time(NULL));
    if (rename(a->published_path, aside) != 0) {
        log_error("audit: cannot set %s aside as %s: %s", a->published_path, aside,
                  strerror(errno));
        a->checked(a->checked_arg, why, false);
        return;
    }
    log_warn("audit: %s; starting anyway (audit.allow_rewind): it is kept as %s, and the next "
             "checkpoints fork it -- tell the auditors",
             why, aside);
    a->published_size = 0;
    free(a->published_note);
    a->published_note = NULL;
    a->checked(a->checked_arg, NULL, false);
}

void audit_history_check(struct audit *a, void (*done)(void *arg, const char *refusal, bool retry),
                         void *arg)
{
    if (!a || !a->published_note) {
        done(arg, NULL, false);
        return;
    }
    a->checked = done;
    a->checked_arg = arg;
    char size[24];
    snprintf(size, sizeof size, "%lld", (long long)a->published_size);
    const char *params[] = {size, a->published_root};
    db_query(a->app->db,
             "SELECT (SELECT root = decode($2, 'base64') FROM audit_checkpoints WHERE size = "
             "$1::bigint), (SELECT coalesce(max(size), 0) FROM audit_checkpoints)",
             2, params, history_cb, a);
}

struct audit *audit_new(struct app *app)
{
    const struct config *cfg = app->cfg;
    if (!tlog_name_valid(cfg->audit_origin)) {
        log_error("audit.origin \"%s\" must be 1..200 printable characters without spaces or '+'",
                  cfg->audit_origin);
        return NULL;
    }
    struct audit *a = xcalloc(1, sizeof *a);
    a->app = app;
    snprintf(a->origin, sizeof a->origin, "%s", cfg->audit_origin);
    if (*cfg->audit_state_dir && !published_load(a, cfg->audit_state_dir)) {
        audit_free(a);
        return NULL;
    }
    if (!*cfg->audit_key_file) {
        log_warn("audit.key_file is not set: ledger transactions are sealed but this instance "
                 "neither verifies nor signs checkpoints (create a key with `gridpointsd "
                 "audit-keygen`)");
        return a;
    }
    /* Start-up file I/O, before the loop runs. */
    FILE *f = fopen(cfg->audit_key_file, "r");
    if (!f) {
        log_error("cannot open audit.key_file %s: %s", cfg->audit_key_file, strerror(errno));
        audit_free(a);
        return NULL;
    }
    a->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    uint8_t pub[32], id[4];
    if (!a->key || EVP_PKEY_get_base_id(a->key) != EVP_PKEY_ED25519 ||
        !tlog_ed25519_public(a->key, pub)) {
        log_error("audit.key_file %s is not an Ed25519 private key in PEM", cfg->audit_key_file);
        audit_free(a);
        return NULL;
    }
    tlog_key_id(a->origin, pub, id);
    crypto_hex(id, sizeof id, a->key_id);
    log_info("audit: checkpoints of %s are signed with key %s", a->origin, a->key_id);
    return a;
}

void audit_free(struct audit *a)
{
    if (!a)
        return;
    EVP_PKEY_free(a->key);
    free(a->signing_note);
    free(a->published_path);
    free(a->published_note);
    free(a);
}

/* An instance without a key seals but verifies nothing (verify_batch 0): a pass is work done
 * for a checkpoint, and it could not sign one. */
void audit_seal_args(const struct config *cfg, char *buf, size_t len)
{
    snprintf(buf, len,
             "{\"batch\":%d,\"verify_batch\":%d,\"interval_s\":%d,\"max_tx\":%d,"
             "\"full_interval_s\":%d}",
             cfg->audit_seal_batch, *cfg->audit_key_file ? cfg->audit_verify_batch : 0,
             cfg->audit_checkpoint_interval_s, cfg->audit_checkpoint_max_tx,
             cfg->audit_full_pass_interval_s);
}

static void store_cb(struct db_result *res, void *arg)
{
    struct audit *a = arg;
    a->storing = false;
    if (a->app->stopping)
        return; /* failed by the shutdown, or done: the next round finds out which */
    if (db_result_status(res) != ST_OK) {
        log_warn("audit: storing a checkpoint failed: %s", db_result_log_detail(res));
        return;
    }
    json_t *j = db_result_json(res);
    if (!j)
        return;
    const char *reason = json_string_value(json_object_get(j, "reason"));
    bool stored = json_is_true(json_object_get(j, "stored"));
    if (stored || (reason && !strcmp(reason, "already")))
        published_keep(a, a->signing_note); /* "already": the same note (Ed25519 is
                                               deterministic), stored by another instance */
    if (stored) {
        metrics_count(a->app->metrics, "audit_checkpoints_signed", 1);
        log_info("audit: checkpoint of size %lld signed with key %s",
                 (long long)json_integer_value(json_object_get(j, "size")), a->key_id);
        a->last_refusal[0] = '\0';
    } else if (reason && (!strcmp(reason, "already") || !strcmp(reason, "stale"))) {
        /* another instance was first, or the head moved on: nothing to say */
    } else if (reason && strcmp(reason, a->last_refusal) != 0) {
        snprintf(a->last_refusal, sizeof a->last_refusal, "%s", reason);
        if (!strcmp(reason, "key_not_valid"))
            log_warn("audit: key %s is not a current checkpoint key (rotated, or never "
                     "registered with `gridpointsd audit-keygen`): restart with the current key",
                     a->key_id);
        else if (strcmp(reason, "alarm") != 0) /* the alarm itself was logged already */
            log_error("audit: checkpoint refused (%s): %s", reason,
                      json_string_value(json_object_get(json_object_get(j, "alarm"), "message")));
    }
    json_decref(j);
}

/* Signs the candidate {"size", "root" (base64), "at"} and stores it. */
static void sign_and_store(struct audit *a, json_t *cand)
{
    json_int_t size = json_integer_value(json_object_get(cand, "size"));
    const char *root_b64 = json_string_value(json_object_get(cand, "root"));
    const char *at = json_string_value(json_object_get(cand, "at"));
    uint8_t root[32];
    size_t rl;
    if (size <= 0 || !root_b64 || !at ||
        !crypto_b64_decode(root_b64, strlen(root_b64), root, sizeof root, &rl) || rl != 32) {
        log_error("audit: malformed checkpoint candidate from the database");
        return;
    }
    char body[TLOG_NOTE_MAX], note[TLOG_NOTE_MAX];
    if (!tlog_checkpoint_body(a->origin, (uint64_t)size, root, at, body, sizeof body) ||
        !tlog_note_sign(a->key, a->origin, body, note, sizeof note)) {
        log_error("audit: cannot sign the checkpoint of size %lld", (long long)size);
        return;
    }
    char size_s[24];
    snprintf(size_s, sizeof size_s, "%lld", (long long)size);
    const char *params[] = {size_s, root_b64, at, a->key_id, note};
    a->storing = true;
    free(a->signing_note);
    a->signing_note = xstrdup(note);
    db_query(a->app->db, "SELECT gp_audit_checkpoint_store($1::bigint, $2, $3, $4, $5)", 5, params,
             store_cb, a);
}

int64_t audit_sealed(struct app *app, json_t *j)
{
    struct audit *a = app->audit;
    if (!a || json_is_true(json_object_get(j, "busy")))
        return 0;
    json_int_t sealed = json_integer_value(json_object_get(j, "sealed"));
    if (sealed > 0)
        metrics_count(app->metrics, "audit_transactions_sealed", (uint64_t)sealed);
    json_t *alarm = json_object_get(j, "alarm");
    if (json_is_object(alarm)) {
        const char *msg = json_string_value(json_object_get(alarm, "message"));
        if (msg && strncmp(msg, a->last_alarm, sizeof a->last_alarm - 1) != 0) {
            snprintf(a->last_alarm, sizeof a->last_alarm, "%s", msg);
            log_error("audit: ledger tampering detected, checkpoints refused: %s "
                      "(reason=%s log_index=%lld txn=%lld)",
                      msg, json_string_value(json_object_get(alarm, "reason")),
                      (long long)json_integer_value(json_object_get(alarm, "log_index")),
                      (long long)json_integer_value(json_object_get(alarm, "txn_id")));
        }
    } else if (a->last_alarm[0] && json_is_null(alarm)) {
        log_warn("audit: the ledger verifies again; the alarm is cleared");
        a->last_alarm[0] = '\0';
    }
    json_t *cand = json_object_get(j, "candidate");
    if (json_is_object(cand) && a->key && !a->storing)
        sign_and_store(a, cand);
    return json_is_true(json_object_get(j, "more")) ? 1 : 0;
}
