/* cli_audit.c -- operator commands of the audit log: signing key generation and rotation,
 * the public keys, and the ledger export (see cli.h, docs/AUDIT.md). Blocking libpq over
 * database.admin_url: these run instead of the server, never on its event loop. */
#include "cli.h"
#include "common.h"
#include "config.h"
#include "crypto.h"
#include "log.h"
#include "merkle.h"
#include "tlog.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------- */
/* keys                                                                                      */
/* ---------------------------------------------------------------------------------------- */

static EVP_PKEY *load_key(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (k && EVP_PKEY_get_base_id(k) != EVP_PKEY_ED25519) {
        EVP_PKEY_free(k);
        return NULL;
    }
    return k;
}

/* Writes a new key to path, which must not exist (O_EXCL), readable by the owner only. */
static EVP_PKEY *write_new_key(const char *path)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!k) {
        log_error("cannot generate an Ed25519 key");
        return NULL;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        log_error("cannot create %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        EVP_PKEY_free(k);
        return NULL;
    }
    bool ok = PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) == 1;
    ok = fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
    fclose(f);
    if (!ok) {
        log_error("cannot write %s", path);
        unlink(path);
        EVP_PKEY_free(k);
        return NULL;
    }
    return k;
}

/* Registers the key's public half; prints the result. 0 on success. */
static int register_key(PGconn *c, const char *origin, EVP_PKEY *k, bool rotate, char *key_id_out)
{
    uint8_t pub[32], id[4];
    char vkey[512], hexpub[65], hexid[9];
    if (!tlog_ed25519_public(k, pub) || !tlog_vkey_format(origin, pub, vkey, sizeof vkey))
        return 1;
    tlog_key_id(origin, pub, id);
    crypto_hex(id, sizeof id, hexid);
    crypto_hex(pub, sizeof pub, hexpub);
    const char *p[] = {hexid, origin, hexpub, vkey, rotate ? "true" : "false"};
    PGresult *r = PQexecParams(c,
                               "SELECT gp_audit_key_register($1, $2, decode($3, 'hex'), $4, "
                               "$5::boolean)",
                               5, NULL, p, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *hint = PQresultErrorField(r, PG_DIAG_MESSAGE_HINT);
        log_error("cannot register the key: %s%s%s", PQresultErrorMessage(r), hint ? " -- " : "",
                  hint ? hint : "");
        rc = 1;
    } else {
        printf("%s\nvkey %s\n", PQgetvalue(r, 0, 0), vkey);
    }
    PQclear(r);
    if (key_id_out)
        snprintf(key_id_out, 9, "%s", hexid);
    return rc;
}

int cli_audit_keygen(const struct config *cfg, int argc, char **argv, bool rotate)
{
    const char *path = cfg->audit_key_file;
    if (!*path) {
        fprintf(stderr, "set audit.key_file (or GRIDPOINTS_AUDIT_KEY_FILE) to the key's path\n");
        return 2;
    }
    if (!tlog_name_valid(cfg->audit_origin)) {
        fprintf(stderr, "audit.origin must be printable, without spaces or '+'\n");
        return 2;
    }
    bool exists = access(path, F_OK) == 0;
    PGconn *c = NULL;
    EVP_PKEY *k = NULL, *old = NULL;
    int rc = 1;
    if (!rotate) {
        if (exists && !cli_flag(argc, argv, "--if-missing")) {
            fprintf(stderr, "%s exists: rotate it with audit-rotate-key (or pass --if-missing)\n",
                    path);
            return 2;
        }
        if (!(c = cli_connect_admin(cfg)))
            return 1;
        if (exists) {
            /* --if-missing: make sure the key in place is the registered one */
            if (!(k = load_key(path))) {
                log_error("%s is not an Ed25519 private key in PEM", path);
                goto out;
            }
            rc = register_key(c, cfg->audit_origin, k, false, NULL);
            goto out;
        }
        if (!(k = write_new_key(path)))
            goto out;
        rc = register_key(c, cfg->audit_origin, k, false, NULL);
        if (rc != 0)
            unlink(path); /* not registered: a key nobody can verify is worse than none */
        else
            printf("wrote %s (mode 0600)\n", path);
        goto out;
    }
    /* rotate */
    if (!exists || !(old = load_key(path))) {
        fprintf(stderr, "%s is missing or not an Ed25519 key: create one with audit-keygen\n",
                path);
        return 2;
    }
    if (!(c = cli_connect_admin(cfg)))
        goto out;
    char next[1024], retired[1100], old_id[9] = "";
    snprintf(next, sizeof next, "%s.new", path);
    unlink(next); /* a leftover of an interrupted rotation was never registered */
    if (!(k = write_new_key(next)))
        goto out;
    uint8_t pub[32], id[4];
    if (tlog_ed25519_public(old, pub)) {
        tlog_key_id(cfg->audit_origin, pub, id);
        crypto_hex(id, sizeof id, old_id);
    }
    if (register_key(c, cfg->audit_origin, k, true, NULL) != 0) {
        unlink(next);
        goto out;
    }
    snprintf(retired, sizeof retired, "%s.%s.retired", path, old_id);
    if (rename(path, retired) != 0 || rename(next, path) != 0) {
        log_error("the new key is registered but moving the files failed (%s): put %s in place "
                  "of %s by hand",
                  strerror(errno), next, path);
        goto out;
    }
    printf("rotated: %s is the new key, the old one is kept as %s; restart the servers so that "
           "they sign with the new key\n",
           path, retired);
    rc = 0;
out:
    EVP_PKEY_free(k);
    EVP_PKEY_free(old);
    PQfinish(c);
    return rc;
}

int cli_audit_pubkey(const struct config *cfg)
{
    PGconn *c = cli_connect_admin(cfg);
    if (!c)
        return 1;
    PGresult *r = PQexec(c, "SELECT gp_audit_keys_json()");
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        log_error("cannot read the keys: %s", PQresultErrorMessage(r));
        rc = 1;
    } else {
        printf("%s\n", PQgetvalue(r, 0, 0));
    }
    PQclear(r);
    PQfinish(c);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* audit-verify --full                                                                       */
/* ---------------------------------------------------------------------------------------- */

static json_t *query_json(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    json_t *j = NULL;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        log_error("audit-verify: %s", PQresultErrorMessage(r));
    else
        j = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
    PQclear(r);
    return j;
}

int cli_audit_verify(const struct config *cfg, int argc, char **argv)
{
    const char *wait_s = cli_opt(argc, argv, "--wait");
    char *end = NULL;
    long wait = wait_s ? strtol(wait_s, &end, 10) : 0;
    if (!cli_flag(argc, argv, "--full") || (wait_s && (*end || wait < 1 || wait > 86400))) {
        fprintf(stderr, "usage: gridpointsd audit-verify --full [--wait SECONDS (1..86400)]\n");
        return 2;
    }
    PGconn *c = cli_connect_admin(cfg);
    if (!c)
        return 1;
    int rc = 1;
    json_t *req = query_json(c, "SELECT gp_audit_request_full_pass()::text");
    if (!req)
        goto done;
    long long size = json_integer_value(json_object_get(req, "size"));
    printf("full verification pass requested (log size %lld)\n", size);
    json_decref(req);
    if (!wait_s) {
        rc = 0;
        goto done;
    }
    for (long ms = 0; ms <= wait * 1000; ms += 200) {
        json_t *st = query_json(c, "SELECT gp_audit_pass_state()::text");
        if (!st)
            goto done;
        json_t *alarm = json_object_get(st, "alarm");
        bool requested = json_is_true(json_object_get(st, "full_pass_requested"));
        if (alarm && !json_is_null(alarm)) {
            printf("FAIL: %s\n", json_string_value(json_object_get(alarm, "message")));
            json_decref(st);
            goto done;
        }
        if (!requested && json_is_true(json_object_get(st, "verified_full"))) {
            printf("OK: full pass verified log indexes %lld..%lld\n",
                   json_integer_value(json_object_get(st, "verified_from")),
                   json_integer_value(json_object_get(st, "verified_size")) - 1);
            json_decref(st);
            rc = 0;
            goto done;
        }
        json_decref(st);
        usleep(200000);
    }
    printf("FAIL: no full pass ended within %ld s (is a server holding the signing key "
           "running?)\n",
           wait);
done:
    PQfinish(c);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* export                                                                                    */
/* ---------------------------------------------------------------------------------------- */

#define FETCH   2000
#define FETCH_S "2000"

static bool ok_cmd(PGconn *c, const char *sql, int n, const char *const *p)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        log_error("export: %s", PQresultErrorMessage(r));
    PQclear(r);
    return ok;
}

static void csv_field(FILE *out, const char *v, bool last)
{
    if (strpbrk(v, ",\"\n\r")) {
        fputc('"', out);
        for (const char *p = v; *p; p++) {
            if (*p == '"')
                fputc('"', out);
            fputc(*p, out);
        }
        fputc('"', out);
    } else {
        fputs(v, out);
    }
    fputc(last ? '\n' : ',', out);
}

/* The rows to export: sealed transactions in log order (complete: every ledger row up to the
 * head in (xid, id) order with its leaf, so an unsealed row inside sealed history shows:
 * copy_complete_rows below), or the subtree/time selection with its inclusion proof against
 * the anchor checkpoint. */
static const char declare_partial[] =
    "DECLARE tx NO SCROLL CURSOR FOR "
    "SELECT l.idx, encode(l.hash, 'hex'), d.data, "
    "       gp_audit_hexes(gp_audit_path(l.idx, 0, $1::bigint))::text "
    "  FROM audit_leaves l JOIN audit_txn_data d ON d.id = l.txn_id "
    " WHERE l.idx < $1::bigint "
    "   AND ($3::timestamptz IS NULL OR d.created_at >= $3::timestamptz) "
    "   AND ($4::timestamptz IS NULL OR d.created_at < $4::timestamptz) "
    "   AND ($2::bigint IS NULL OR EXISTS (SELECT 1 FROM postings p "
    "        JOIN accounts a ON a.id = p.account_id JOIN org_units au ON au.id = a.unit_id "
    "        JOIN org_units s ON s.id = $2::bigint "
    "        WHERE p.txn_id = l.txn_id AND au.path <@ s.path)) "
    " ORDER BY l.idx";
static const char declare_csv[] =
    "DECLARE tx NO SCROLL CURSOR FOR "
    "SELECT l.idx, t.id, t.kind, gp_audit_ts(t.created_at), t.actor_id, t.memo, p.id, "
    "       p.account_id, a.kind, p.amount, p.account_version, p.balance_after, "
    "       encode(l.hash, 'hex') "
    "  FROM audit_leaves l JOIN ledger_txns t ON t.id = l.txn_id "
    "  JOIN postings p ON p.txn_id = t.id LEFT JOIN accounts a ON a.id = p.account_id "
    " WHERE ($3::timestamptz IS NULL OR t.created_at >= $3::timestamptz) "
    "   AND ($4::timestamptz IS NULL OR t.created_at < $4::timestamptz) "
    "   AND ($1::bigint IS NULL OR l.idx < $1::bigint) "
    "   AND ($2::bigint IS NULL OR EXISTS (SELECT 1 FROM postings q "
    "        JOIN accounts b ON b.id = q.account_id JOIN org_units au ON au.id = b.unit_id "
    "        JOIN org_units s ON s.id = $2::bigint "
    "        WHERE q.txn_id = t.id AND au.path <@ s.path)) "
    " ORDER BY l.idx, p.account_id";

/* The complete JSON Lines export reads the rows set-based — transactions in (xid, id) order with
 * their postings, one row per posting, no per-transaction subquery — and writes each leaf data
 * in C, in the canonical encoding of the audit_txn_data view (docs/AUDIT.md §3). The view stays
 * the definition: a transaction whose encoding here does not hash to its sealed leaf (a tampered
 * row, an unsealed one, or anything this encoder writes differently) is written with the view's
 * own bytes, fetched for it alone. So the export is byte for byte what the view gives.
 * The rows come as one COPY on a second connection that shares the export's snapshot: COPY
 * streams (the database produces the next rows while this process formats and hashes the last
 * ones, where FETCH from a cursor alternates the two), and it is planned for the whole result
 * (hash joins and one sort) where a cursor is planned for its first rows (an index probe per
 * transaction and per posting). */
static const char copy_complete_rows[] =
    "COPY (SELECT t.id, t.xid, t.kind, t.created_at, t.actor_id, t.refs, t.memo, l.idx, l.hash, "
    "             p.id, p.account_id, p.amount, p.account_version, p.balance_after "
    "        FROM ledger_txns t LEFT JOIN audit_leaves l ON l.txn_id = t.id "
    "        LEFT JOIN postings p ON p.txn_id = t.id "
    "       WHERE (t.xid, t.id) <= (SELECT last_xid, last_txn FROM audit_head) "
    "       ORDER BY t.xid, t.id, p.account_id, p.id) TO STDOUT";
#define COPY_FIELDS 14
/* The columns come in their types' own text (cheaper for the database than to_char, ::text
 * and encode, about a third of its time): created_at in DateStyle ISO at TimeZone UTC,
 * rewritten here as the view writes it (sb_ts), the leaf hash as bytea's hex. The account
 * kinds come before the rows, into a table of their own (struct kinds), rather than by a join
 * per posting. */
static const char *const copy_settings[] = {
    "SET LOCAL work_mem = '256MB'", "SET LOCAL jit = off", "SET LOCAL TimeZone = 'UTC'",
    "SET LOCAL DateStyle = 'ISO, YMD'", "SET LOCAL bytea_output = 'hex'"};

struct sbuf {
    char *p;
    size_t n, cap;
};

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        while (b->n + n + 1 > b->cap)
            b->cap = b->cap ? b->cap * 2 : 4096;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}
#define SB_LIT(b, s) sb_put((b), (s), sizeof(s) - 1)

static void sb_str(struct sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

/* PostgreSQL's to_json(text) (escape_json); NULL is null. */
static void sb_json(struct sbuf *b, const char *s)
{
    if (!s) {
        SB_LIT(b, "null");
        return;
    }
    SB_LIT(b, "\"");
    for (const char *q = s; *q; q++) {
        unsigned char ch = (unsigned char)*q;
        const char *e = NULL;
        char u[8];
        switch (ch) {
        case '"':
            e = "\\\"";
            break;
        case '\\':
            e = "\\\\";
            break;
        case '\b':
            e = "\\b";
            break;
        case '\f':
            e = "\\f";
            break;
        case '\n':
            e = "\\n";
            break;
        case '\r':
            e = "\\r";
            break;
        case '\t':
            e = "\\t";
            break;
        default:
            if (ch < 0x20) {
                snprintf(u, sizeof u, "\\u%04x", ch);
                e = u;
            }
        }
        if (e)
            sb_str(b, e);
        else
            sb_put(b, q, 1);
    }
    SB_LIT(b, "\"");
}

/* refs as gp_audit_jobj writes it (members in byte order of the keys, no spaces), from jsonb's
 * text (members in jsonb's order, ": " and ", "), for a flat object; anything else is written
 * as it came, and the leaf check sends the transaction to the view. */
struct member {
    const char *p;
    size_t klen, len; /* the key with its quotes; the whole "key": value */
};

static const char *json_str_end(const char *q)
{
    for (q++; *q && *q != '"'; q++)
        if (*q == '\\' && q[1])
            q++;
    return *q ? q + 1 : NULL;
}

static int member_cmp(const void *a, const void *b)
{
    const struct member *x = a, *y = b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->p + 1, y->p + 1, n - 2); /* inside the quotes */
    return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

static void sb_refs(struct sbuf *b, const char *s)
{
    struct member m[32];
    int n = 0;
    const char *q = s;
    if (*q++ != '{')
        goto raw;
    while (*q == '"') {
        const char *k = json_str_end(q);
        if (!k || n == 32 || k[0] != ':' || k[1] != ' ')
            goto raw;
        const char *v = k + 2, *e = v;
        if (*v == '"')
            e = json_str_end(v);
        else
            while (*e && *e != ',' && *e != '}' && *e != '{' && *e != '[' && *e != '"')
                e++;
        if (!e || (*e != ',' && *e != '}'))
            goto raw;
        m[n++] = (struct member){q, (size_t)(k - q), (size_t)(e - q)};
        if (*e == '}') {
            q = e;
            break;
        }
        if (e[1] != ' ')
            goto raw;
        q = e + 2;
    }
    if (*q != '}' || q[1])
        goto raw;
    qsort(m, (size_t)n, sizeof *m, member_cmp);
    SB_LIT(b, "{");
    for (int i = 0; i < n; i++) {
        if (i)
            SB_LIT(b, ",");
        sb_put(b, m[i].p, m[i].klen);
        SB_LIT(b, ":");
        sb_put(b, m[i].p + m[i].klen + 2, m[i].len - m[i].klen - 2);
    }
    SB_LIT(b, "}");
    return;
raw:
    sb_str(b, s);
}

/* The view's bytes for one transaction (the fallback above). */
static bool view_data(PGconn *c, const char *txn, struct sbuf *b)
{
    const char *p[] = {txn};
    PGresult *r = PQexecParams(c, "SELECT data FROM audit_txn_data WHERE id = $1::bigint", 1, NULL,
                               p, NULL, NULL, 0);
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (ok) {
        b->n = 0;
        sb_str(b, PQgetvalue(r, 0, 0));
    } else {
        log_error("export: transaction %s: %s", txn, PQresultErrorMessage(r));
    }
    PQclear(r);
    return ok;
}

static void put_checkpoint(FILE *out, const char *size, const char *note)
{
    json_t *j = json_pack("{s:s, s:I, s:s}", "t", "checkpoint", "size",
                          (json_int_t)strtoll(size, NULL, 10), "note", note);
    char *s = json_dumps(j, JSON_COMPACT);
    fprintf(out, "%s\n", s);
    free(s);
    json_decref(j);
}

/* The next checkpoint row of the cp cursor: *cp holds the current batch (row *cpi), fetched
 * 1,000 at a time; false once the cursor is exhausted (remembered, with *cpi = -1, so that the
 * transactions after the last checkpoint do not each ask the database again). */
static bool cp_more(PGconn *c, PGresult **cp, int *cpi)
{
    if (*cpi < 0)
        return false;
    if (*cp && *cpi < PQntuples(*cp))
        return true;
    PQclear(*cp);
    *cp = PQexec(c, "FETCH 1000 FROM cp");
    *cpi = 0;
    if (PQresultStatus(*cp) == PGRES_TUPLES_OK && PQntuples(*cp) > 0)
        return true;
    *cpi = -1;
    return false;
}

/* The complete JSON Lines export while it streams: the transaction being assembled from its
 * posting rows, and the checkpoints cursor (on the export's own connection, c). */
/* A timestamptz as PostgreSQL writes it in DateStyle ISO at TimeZone UTC
 * ("2026-12-07 19:43:38.2771+00": trailing zeros of the fraction dropped) the way the view's
 * to_char(... AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') does
 * ("2026-12-07T19:43:38.277100Z"); anything else as it came (the leaf check then sends the
 * transaction to the view). */
static void sb_ts(struct sbuf *b, const char *s)
{
    size_t n = strlen(s), fl = 0;
    const char *frac = s + 19;
    if (n < 22 || s[4] != '-' || s[10] != ' ' || strcmp(s + n - 3, "+00") != 0)
        goto raw;
    if (*frac == '.') {
        frac++;
        fl = (size_t)(s + n - 3 - frac);
        if (fl < 1 || fl > 6)
            goto raw;
    } else if (frac != s + n - 3) {
        goto raw;
    }
    char out[27];
    memcpy(out, s, 10);
    out[10] = 'T';
    memcpy(out + 11, s + 11, 8);
    out[19] = '.';
    memcpy(out + 20, frac, fl);
    memset(out + 20 + fl, '0', 6 - fl);
    out[26] = 'Z';
    sb_put(b, out, sizeof out);
    return;
raw:
    sb_str(b, s);
}

/* Account id -> kind (as a JSON string), open addressing; kinds interned (a handful). */
struct kinds {
    int64_t *id;
    uint8_t *k; /* 0 = empty slot, else 1 + index into json */
    size_t cap, n;
    char *json[255];
    int nk;
};

static void kinds_put(struct kinds *t, int64_t id, uint8_t k);

static void kinds_grow(struct kinds *t)
{
    struct kinds old = *t;
    t->cap = old.cap ? old.cap * 2 : 1 << 16;
    t->id = xcalloc(t->cap, sizeof *t->id);
    t->k = xcalloc(t->cap, 1);
    t->n = 0;
    for (size_t i = 0; i < old.cap; i++)
        if (old.k[i])
            kinds_put(t, old.id[i], old.k[i]);
    free(old.id);
    free(old.k);
}

static size_t kinds_slot(const struct kinds *t, int64_t id)
{
    size_t i = ((uint64_t)id * 0x9E3779B97F4A7C15ull) >> 20 & (t->cap - 1);
    while (t->k[i] && t->id[i] != id)
        i = (i + 1) & (t->cap - 1);
    return i;
}

static void kinds_put(struct kinds *t, int64_t id, uint8_t k)
{
    if (2 * (t->n + 1) > t->cap)
        kinds_grow(t);
    size_t i = kinds_slot(t, id);
    if (!t->k[i])
        t->n++;
    t->id[i] = id;
    t->k[i] = k;
}

/* the kind of an account as JSON, or NULL when there is no such account (the join's NULL) */
static const char *kinds_get(const struct kinds *t, const char *id)
{
    if (!t->cap || !id)
        return NULL;
    size_t i = kinds_slot(t, strtoll(id, NULL, 10));
    return t->k[i] ? t->json[t->k[i] - 1] : NULL;
}

static void kinds_free(struct kinds *t)
{
    free(t->id);
    free(t->k);
    for (int i = 0; i < t->nk; i++)
        free(t->json[i]);
}

struct txw {
    PGconn *c;
    FILE *out;
    struct kinds kinds;
    struct sbuf data, line;
    char txn[24], idx[24], leaf[65];
    bool sealed, have;
    long long ntx, ncp, nview;
    PGresult *cp;
    int cpi;
};

/* The checkpoints whose size the transactions written so far complete. */
static void txw_checkpoints(struct txw *w)
{
    while (cp_more(w->c, &w->cp, &w->cpi)) {
        long long size = strtoll(PQgetvalue(w->cp, w->cpi, 0), NULL, 10);
        if (size > w->ntx)
            break;
        put_checkpoint(w->out, PQgetvalue(w->cp, w->cpi, 0), PQgetvalue(w->cp, w->cpi, 1));
        w->ncp++;
        w->cpi++;
    }
}

/* Writes the transaction assembled so far: its encoding if it hashes to its sealed leaf, else
 * the view's bytes; then the checkpoints it completes. */
static bool txw_finish(struct txw *w)
{
    SB_LIT(&w->data, "]}");
    bool match = false;
    if (w->sealed) {
        merkle_hash lh;
        char hex[65];
        merkle_leaf_hash(w->data.p, w->data.n, lh);
        crypto_hex(lh, 32, hex);
        match = !strcmp(hex, w->leaf);
    }
    if (!match) {
        w->nview++;
        if (!view_data(w->c, w->txn, &w->data))
            return false;
    }
    struct sbuf *l = &w->line;
    l->n = 0;
    SB_LIT(l, "{\"t\":\"txn\",\"seq\":");
    if (w->sealed) {
        sb_str(l, w->idx);
        SB_LIT(l, ",\"leaf\":\"");
        sb_str(l, w->leaf);
        SB_LIT(l, "\"");
    } else {
        SB_LIT(l, "null,\"leaf\":null");
    }
    SB_LIT(l, ",\"txn\":");
    sb_put(l, w->data.p, w->data.n);
    SB_LIT(l, "}\n");
    fwrite(l->p, 1, l->n, w->out);
    w->ntx++;
    w->have = false;
    txw_checkpoints(w);
    return true;
}

static void txw_posting(struct txw *w, char *const *f)
{
    struct sbuf *d = &w->data;
    SB_LIT(d, "{\"id\":");
    sb_str(d, f[9]);
    SB_LIT(d, ",\"account\":");
    sb_str(d, f[10] ? f[10] : "null");
    SB_LIT(d, ",\"account_kind\":");
    const char *kind = kinds_get(&w->kinds, f[10]);
    sb_str(d, kind ? kind : "null");
    SB_LIT(d, ",\"amount\":");
    sb_str(d, f[11] ? f[11] : "null");
    SB_LIT(d, ",\"version\":");
    sb_str(d, f[12] ? f[12] : "null");
    SB_LIT(d, ",\"balance_after\":");
    sb_str(d, f[13] ? f[13] : "null");
    SB_LIT(d, "}");
}

/* One row of copy_complete_rows (f[i] NULL for SQL NULL): a posting of the transaction being
 * assembled, or the first row of the next one. */
static bool txw_row(struct txw *w, char *const *f)
{
    if (!f[0])
        return false;
    if (w->have && !strcmp(f[0], w->txn)) {
        if (f[9]) {
            SB_LIT(&w->data, ",");
            txw_posting(w, f);
        }
        return true;
    }
    if (w->have && !txw_finish(w))
        return false;
    snprintf(w->txn, sizeof w->txn, "%s", f[0]);
    w->sealed = f[7] != NULL;
    snprintf(w->idx, sizeof w->idx, "%s", f[7] ? f[7] : "");
    const char *hash = f[8] && !strncmp(f[8], "\\x", 2) ? f[8] + 2 : f[8]; /* bytea's hex */
    snprintf(w->leaf, sizeof w->leaf, "%s", hash ? hash : "");
    w->have = true;
    struct sbuf *d = &w->data;
    d->n = 0;
    SB_LIT(d, "{\"id\":");
    sb_str(d, w->txn);
    SB_LIT(d, ",\"xid\":");
    sb_str(d, f[1] ? f[1] : "");
    SB_LIT(d, ",\"kind\":");
    sb_json(d, f[2]);
    SB_LIT(d, ",\"at\":\"");
    sb_ts(d, f[3] ? f[3] : "");
    SB_LIT(d, "\",\"actor\":");
    sb_str(d, f[4] ? f[4] : "null");
    SB_LIT(d, ",\"refs\":");
    if (f[5])
        sb_refs(d, f[5]);
    else
        SB_LIT(d, "{}");
    SB_LIT(d, ",\"memo\":");
    sb_json(d, f[6]);
    SB_LIT(d, ",\"postings\":[");
    if (f[9])
        txw_posting(w, f);
    return true;
}

/* Splits one line of COPY's text format into nf fields in place: \N is NULL, the backslash
 * escapes COPY writes (\b \f \n \r \t \v, and a backslash before any other byte) are decoded.
 * False when the line does not hold exactly nf fields. */
static bool copy_fields(char *s, size_t len, char **f, int nf)
{
    if (len > 0 && s[len - 1] == '\n')
        len--;
    char *end = s + len, *p = s;
    for (int k = 0; k < nf; k++) {
        char *start = p, *o = p;
        if (end - p >= 2 && p[0] == '\\' && p[1] == 'N' && (end - p == 2 || p[2] == '\t')) {
            f[k] = NULL;
            p += 2;
        } else {
            while (p < end && *p != '\t') {
                if (*p == '\\' && p + 1 < end) {
                    p++;
                    switch (*p) {
                    case 'b':
                        *o = '\b';
                        break;
                    case 'f':
                        *o = '\f';
                        break;
                    case 'n':
                        *o = '\n';
                        break;
                    case 'r':
                        *o = '\r';
                        break;
                    case 't':
                        *o = '\t';
                        break;
                    case 'v':
                        *o = '\v';
                        break;
                    default:
                        *o = *p;
                    }
                    o++;
                    p++;
                } else {
                    *o++ = *p++;
                }
            }
            f[k] = start;
        }
        bool last = p == end;
        if (f[k])
            *o = '\0'; /* o <= p: over the tab, or the line's end ('\n' or NUL) */
        if (k < nf - 1) {
            if (last)
                return false;
            p++;
        } else if (!last) {
            return false;
        }
    }
    return true;
}

/* Every account's kind, by one COPY (the export's snapshot). */

/* The end of a COPY ... TO STDOUT read on c: n is PQgetCopyData's last return (-1 done, -2
 * failed). Drains the results; false (logged) when the COPY or its command failed. */
static bool copy_finish(PGconn *c, int n)
{
    bool ok = true;
    if (n == -2) {
        log_error("export: %s", PQerrorMessage(c));
        ok = false;
    }
    PGresult *r;
    while ((r = PQgetResult(c))) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            log_error("export: %s", PQresultErrorMessage(r));
            ok = false;
        }
        PQclear(r);
    }
    return ok;
}
static bool load_kinds(PGconn *c2, struct kinds *t)
{
    PGresult *r = PQexec(c2, "COPY (SELECT id, kind FROM accounts) TO STDOUT");
    bool ok = PQresultStatus(r) == PGRES_COPY_OUT;
    if (!ok)
        log_error("export: %s", PQresultErrorMessage(r));
    PQclear(r);
    if (!ok)
        return false;
    kinds_grow(t);
    char *buf, *f[2];
    int n;
    while ((n = PQgetCopyData(c2, &buf, 0)) > 0) {
        if (ok && (!copy_fields(buf, (size_t)n, f, 2) || !f[0])) {
            log_error("export: an account row that is not 2 fields");
            ok = false;
        }
        if (ok) {
            int k = 0;
            struct sbuf js = {0};
            sb_json(&js, f[1]);
            while (k < t->nk && strcmp(t->json[k], js.p))
                k++;
            if (k == t->nk) {
                if (t->nk == (int)(sizeof t->json / sizeof *t->json)) {
                    log_error("export: more than %d kinds of accounts", t->nk);
                    ok = false;
                } else {
                    t->json[t->nk++] = js.p;
                    js.p = NULL;
                }
            }
            free(js.p);
            if (ok)
                kinds_put(t, strtoll(f[0], NULL, 10), (uint8_t)(k + 1));
        }
        PQfreemem(buf);
    }
    if (!copy_finish(c2, n))
        ok = false;
    return ok;
}

/* The complete JSON Lines export: the rows by COPY on a second connection that imports the
 * snapshot of c (the head, the checkpoints and the rows agree), the checkpoints by a cursor on
 * c beside them, then the checkpoints beyond what was exported (only when the ledger lost rows:
 * the verifier must see them to report the shortfall). */
static bool export_complete(const struct config *cfg, struct txw *w)
{
    PGconn *c = w->c, *c2 = NULL;
    bool ok = false;
    char snap[128] = "";
    PGresult *r = PQexec(c, "SELECT pg_export_snapshot()");
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
        strspn(PQgetvalue(r, 0, 0), "0123456789ABCDEFabcdef-") == strlen(PQgetvalue(r, 0, 0)))
        snprintf(snap, sizeof snap, "SET TRANSACTION SNAPSHOT '%s'", PQgetvalue(r, 0, 0));
    else
        log_error("export: cannot export the snapshot: %s", PQresultErrorMessage(r));
    PQclear(r);
    if (!*snap || !(c2 = cli_connect_admin(cfg)))
        goto out;
    /* one statement for the whole ledger: no default timeout of the role or database cuts it */
    if (!ok_cmd(c2, "SET statement_timeout = 0", 0, NULL) ||
        !ok_cmd(c2, "SET idle_in_transaction_session_timeout = 0", 0, NULL) ||
        !ok_cmd(c2, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL) ||
        !ok_cmd(c2, snap, 0, NULL) ||
        !ok_cmd(c,
                "DECLARE cp NO SCROLL CURSOR FOR SELECT size, note FROM audit_checkpoints "
                "ORDER BY size",
                0, NULL))
        goto out;
    for (size_t i = 0; i < sizeof copy_settings / sizeof *copy_settings; i++)
        if (!ok_cmd(c2, copy_settings[i], 0, NULL))
            goto out;
    if (!load_kinds(c2, &w->kinds))
        goto out;
    r = PQexec(c2, copy_complete_rows);
    if (PQresultStatus(r) != PGRES_COPY_OUT) {
        log_error("export: %s", PQresultErrorMessage(r));
        PQclear(r);
        goto out;
    }
    PQclear(r);
    ok = true;
    char *buf, *f[COPY_FIELDS];
    int n;
    while ((n = PQgetCopyData(c2, &buf, 0)) > 0) {
        if (ok && !copy_fields(buf, (size_t)n, f, COPY_FIELDS)) {
            log_error("export: a row of the ledger that is not %d fields", COPY_FIELDS);
            ok = false;
        }
        if (ok && !txw_row(w, f))
            ok = false; /* logged; the rest of the COPY is read and dropped */
        PQfreemem(buf);
    }
    if (!copy_finish(c2, n))
        ok = false;
    if (ok && w->have)
        ok = txw_finish(w);
    while (ok && cp_more(c, &w->cp, &w->cpi)) {
        put_checkpoint(w->out, PQgetvalue(w->cp, w->cpi, 0), PQgetvalue(w->cp, w->cpi, 1));
        w->ncp++;
        w->cpi++;
    }
out:
    kinds_free(&w->kinds);
    PQclear(w->cp);
    free(w->data.p);
    free(w->line.p);
    PQfinish(c2);
    return ok;
}

int cli_export(const struct config *cfg, int argc, char **argv)
{
    const char *unit = cli_opt(argc, argv, "--unit"), *from = cli_opt(argc, argv, "--from");
    const char *to = cli_opt(argc, argv, "--to"), *format = cli_opt(argc, argv, "--format");
    const char *out_path = cli_opt(argc, argv, "--out");
    if (!format)
        format = "jsonl";
    if (strcmp(format, "jsonl") && strcmp(format, "csv")) {
        fprintf(stderr, "usage: gridpointsd export [--unit ID] [--from T] [--to T] "
                        "[--format jsonl|csv] [--out FILE]\n");
        return 2;
    }
    bool complete = !unit && !from && !to;
    FILE *out = out_path ? fopen(out_path, "w") : stdout;
    if (!out) {
        log_error("cannot create %s: %s", out_path, strerror(errno));
        return 1;
    }
    PGconn *c = cli_connect_admin(cfg);
    int rc = 1;
    long long ntx = 0, ncp = 0, nview = 0;
    if (!c)
        goto done;
    /* One snapshot for the whole export: the head, the rows and the checkpoints agree. This
     * connection waits, in its transaction, while the complete export's COPY streams on a
     * second one: no default idle-in-transaction timeout of the role or database may end it. */
    if (!ok_cmd(c, "SET idle_in_transaction_session_timeout = 0", 0, NULL) ||
        !ok_cmd(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL))
        goto done;
    /* one sort of the rows in memory rather than on disk; no JIT compilation for one scan */
    if (!ok_cmd(c, "SET LOCAL work_mem = '256MB'", 0, NULL) ||
        !ok_cmd(c, "SET LOCAL jit = off", 0, NULL))
        goto done;
    PGresult *h = PQexec(c, "SELECT h.size, now(), (SELECT max(size) FROM audit_checkpoints), "
                            "gp_audit_keys_json()::text FROM audit_head h");
    if (PQresultStatus(h) != PGRES_TUPLES_OK) {
        log_error("export: %s", PQresultErrorMessage(h));
        PQclear(h);
        goto done;
    }
    char anchor[24];
    snprintf(anchor, sizeof anchor, "%s", PQgetvalue(h, 0, 2));
    if (!complete && !*anchor) {
        log_error("export: no signed checkpoint yet, so a partial export cannot carry proofs");
        PQclear(h);
        goto done;
    }
    if (!strcmp(format, "jsonl")) {
        json_t *hd = json_pack(
            "{s:s, s:s, s:b, s:s, s:I, s:s}", "t", "header", "format", "gridpoints-ledger-export/1",
            "complete", complete, "origin", cfg->audit_origin, "sealed_size",
            (json_int_t)strtoll(PQgetvalue(h, 0, 0), NULL, 10), "exported_at", PQgetvalue(h, 0, 1));
        if (unit)
            json_object_set_new(hd, "unit_id", json_integer(strtoll(unit, NULL, 10)));
        if (from)
            json_object_set_new(hd, "from", json_string(from));
        if (to)
            json_object_set_new(hd, "to", json_string(to));
        char *s = json_dumps(hd, JSON_COMPACT);
        fprintf(out, "%s\n{\"t\":\"keys\",\"keys\":%s}\n", s, PQgetvalue(h, 0, 3));
        free(s);
        json_decref(hd);
    } else {
        fputs("log_index,txn_id,kind,created_at,actor_id,memo,posting_id,account_id,account_kind,"
              "amount,version,balance_after,leaf_hash\n",
              out);
    }
    PQclear(h);

    const char *p[] = {complete ? NULL : anchor, unit, from, to};
    bool csv = !strcmp(format, "csv");
    if (!csv && complete) {
        struct txw w = {.c = c, .out = out};
        bool ok = export_complete(cfg, &w);
        ntx = w.ntx, ncp = w.ncp, nview = w.nview;
        if (!ok)
            goto done;
    } else {
        if (csv ? !ok_cmd(c, declare_csv, 4, p) : !ok_cmd(c, declare_partial, 4, p))
            goto done;
        if (!csv) { /* the anchor checkpoint first */
            const char *ap[] = {anchor};
            PGresult *a =
                PQexecParams(c, "SELECT size, note FROM audit_checkpoints WHERE size = $1", 1, NULL,
                             ap, NULL, NULL, 0);
            if (PQresultStatus(a) == PGRES_TUPLES_OK && PQntuples(a) == 1) {
                put_checkpoint(out, PQgetvalue(a, 0, 0), PQgetvalue(a, 0, 1));
                ncp++;
            }
            PQclear(a);
        }
        for (;;) {
            PGresult *r = PQexec(c, "FETCH " FETCH_S " FROM tx");
            if (PQresultStatus(r) != PGRES_TUPLES_OK) {
                log_error("export: %s", PQresultErrorMessage(r));
                PQclear(r);
                goto done;
            }
            int n = PQntuples(r);
            for (int i = 0; i < n; i++) {
                if (csv) {
                    for (int f = 0; f < 13; f++)
                        csv_field(out, PQgetvalue(r, i, f), f == 12);
                    continue;
                }
                bool sealed = !PQgetisnull(r, i, 0);
                fprintf(out, "{\"t\":\"txn\",\"seq\":%s,\"leaf\":%s%s%s,\"proof\":%s,\"txn\":%s}\n",
                        sealed ? PQgetvalue(r, i, 0) : "null", sealed ? "\"" : "",
                        sealed ? PQgetvalue(r, i, 1) : "null", sealed ? "\"" : "",
                        PQgetvalue(r, i, 3), PQgetvalue(r, i, 2));
                ntx++;
            }
            PQclear(r);
            if (n < FETCH)
                break;
        }
    }
    if (!csv)
        fprintf(out, "{\"t\":\"end\",\"transactions\":%lld,\"checkpoints\":%lld}\n", ntx, ncp);
    ok_cmd(c, "COMMIT", 0, NULL);
    rc = 0;
    log_info("exported %lld transactions and %lld checkpoints (%s, %s); %lld written from the "
             "audit_txn_data view (unsealed, or not their sealed leaf)",
             ntx, ncp, format, complete ? "complete" : "partial, with inclusion proofs", nview);
done:
    PQfinish(c);
    if (out != stdout) {
        if (fclose(out) != 0) {
            log_error("cannot write %s: %s", out_path, strerror(errno));
            rc = 1;
        }
    } else {
        fflush(stdout);
    }
    return rc;
}
