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

#define FETCH 2000

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
 * declare_complete_rows below), or the subtree/time selection with its inclusion proof against
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
 * own bytes, fetched for it alone. So the export is byte for byte what the view gives. */
static const char declare_complete_rows[] =
    "DECLARE tx NO SCROLL CURSOR FOR "
    "SELECT t.id, t.xid::text, t.kind, to_char(t.created_at AT TIME ZONE 'UTC', "
    "       'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), t.actor_id, t.refs::text, t.memo, "
    "       l.idx, encode(l.hash, 'hex'), p.id, p.account_id, a.kind, p.amount, "
    "       p.account_version, p.balance_after "
    "  FROM ledger_txns t LEFT JOIN audit_leaves l ON l.txn_id = t.id "
    "  LEFT JOIN postings p ON p.txn_id = t.id LEFT JOIN accounts a ON a.id = p.account_id "
    " WHERE (t.xid, t.id) <= (SELECT last_xid, last_txn FROM audit_head) "
    " ORDER BY t.xid, t.id, p.account_id, p.id";

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
static void sb_json(struct sbuf *b, PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col)) {
        SB_LIT(b, "null");
        return;
    }
    const char *s = PQgetvalue(r, row, col);
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
    /* One snapshot for the whole export: the head, the rows and the checkpoints agree. */
    if (!ok_cmd(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL))
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
    if (csv        ? !ok_cmd(c, declare_csv, 4, p)
        : complete ? !ok_cmd(c, declare_complete_rows, 0, NULL)
                   : !ok_cmd(c, declare_partial, 4, p))
        goto done;
    /* Checkpoints stream beside the rows (complete JSON Lines: after the transaction that
     * completes their size; partial: the anchor first). */
    PGresult *cp = NULL;
    int cpi = 0;
    if (!csv && complete) {
        if (!ok_cmd(c,
                    "DECLARE cp NO SCROLL CURSOR FOR SELECT size, note FROM audit_checkpoints "
                    "ORDER BY size",
                    0, NULL))
            goto done;
    } else if (!csv) {
        const char *ap[] = {anchor};
        PGresult *a = PQexecParams(c, "SELECT size, note FROM audit_checkpoints WHERE size = $1", 1,
                                   NULL, ap, NULL, NULL, 0);
        if (PQresultStatus(a) == PGRES_TUPLES_OK && PQntuples(a) == 1) {
            put_checkpoint(out, PQgetvalue(a, 0, 0), PQgetvalue(a, 0, 1));
            ncp++;
        }
        PQclear(a);
    }
    /* complete JSON Lines: the transaction being assembled from its posting rows */
    bool rows = !csv && complete;
    struct sbuf data = {0}, line = {0};
    char cur_txn[24] = "", cur_idx[24] = "", cur_leaf[65] = "";
    bool cur_sealed = false, have_cur = false, failed = false;
    for (;;) {
        PGresult *r = PQexec(c, "FETCH "
                                "2000"
                                " FROM tx");
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            log_error("export: %s", PQresultErrorMessage(r));
            PQclear(r);
            PQclear(cp);
            free(data.p);
            free(line.p);
            goto done;
        }
        int n = PQntuples(r);
        for (int i = 0; i <= n; i++) {
            if (csv) {
                if (i == n)
                    break;
                for (int f = 0; f < 13; f++)
                    csv_field(out, PQgetvalue(r, i, f), f == 12);
                continue;
            }
            if (rows) {
                /* a new transaction (or the end of this batch/the rows): finish the current */
                bool last_batch = n < FETCH;
                bool same = i < n && have_cur && !strcmp(PQgetvalue(r, i, 0), cur_txn);
                if (i < n && same) {
                    if (!PQgetisnull(r, i, 9)) {
                        SB_LIT(&data, ",");
                        goto posting;
                    }
                    continue;
                }
                if (i == n && !last_batch)
                    break; /* the next batch may continue this transaction */
                if (have_cur) {
                    SB_LIT(&data, "]}");
                    bool match = false;
                    if (cur_sealed) {
                        merkle_hash lh;
                        char hex[65];
                        merkle_leaf_hash(data.p, data.n, lh);
                        crypto_hex(lh, 32, hex);
                        match = !strcmp(hex, cur_leaf);
                    }
                    if (!match) {
                        nview++;
                        if (!view_data(c, cur_txn, &data)) {
                            failed = true;
                            break;
                        }
                    }
                    line.n = 0;
                    SB_LIT(&line, "{\"t\":\"txn\",\"seq\":");
                    if (cur_sealed) {
                        sb_str(&line, cur_idx);
                        SB_LIT(&line, ",\"leaf\":\"");
                        sb_str(&line, cur_leaf);
                        SB_LIT(&line, "\"");
                    } else {
                        SB_LIT(&line, "null,\"leaf\":null");
                    }
                    SB_LIT(&line, ",\"txn\":");
                    sb_put(&line, data.p, data.n);
                    SB_LIT(&line, "}\n");
                    fwrite(line.p, 1, line.n, out);
                    ntx++;
                    have_cur = false;
                    goto checkpoints;
                }
            next_txn:
                if (i == n)
                    break;
                snprintf(cur_txn, sizeof cur_txn, "%s", PQgetvalue(r, i, 0));
                cur_sealed = !PQgetisnull(r, i, 7);
                snprintf(cur_idx, sizeof cur_idx, "%s", PQgetvalue(r, i, 7));
                snprintf(cur_leaf, sizeof cur_leaf, "%s", PQgetvalue(r, i, 8));
                have_cur = true;
                data.n = 0;
                SB_LIT(&data, "{\"id\":");
                sb_str(&data, cur_txn);
                SB_LIT(&data, ",\"xid\":");
                sb_str(&data, PQgetvalue(r, i, 1));
                SB_LIT(&data, ",\"kind\":");
                sb_json(&data, r, i, 2);
                SB_LIT(&data, ",\"at\":\"");
                sb_str(&data, PQgetvalue(r, i, 3));
                SB_LIT(&data, "\",\"actor\":");
                sb_str(&data, PQgetisnull(r, i, 4) ? "null" : PQgetvalue(r, i, 4));
                SB_LIT(&data, ",\"refs\":");
                if (PQgetisnull(r, i, 5))
                    SB_LIT(&data, "{}");
                else
                    sb_refs(&data, PQgetvalue(r, i, 5));
                SB_LIT(&data, ",\"memo\":");
                sb_json(&data, r, i, 6);
                SB_LIT(&data, ",\"postings\":[");
                if (PQgetisnull(r, i, 9))
                    continue;
            posting:
                SB_LIT(&data, "{\"id\":");
                sb_str(&data, PQgetvalue(r, i, 9));
                SB_LIT(&data, ",\"account\":");
                sb_str(&data, PQgetvalue(r, i, 10));
                SB_LIT(&data, ",\"account_kind\":");
                sb_json(&data, r, i, 11);
                SB_LIT(&data, ",\"amount\":");
                sb_str(&data, PQgetvalue(r, i, 12));
                SB_LIT(&data, ",\"version\":");
                sb_str(&data, PQgetvalue(r, i, 13));
                SB_LIT(&data, ",\"balance_after\":");
                sb_str(&data, PQgetvalue(r, i, 14));
                SB_LIT(&data, "}");
                continue;
            }
            if (i == n)
                break;
            bool sealed = !PQgetisnull(r, i, 0);
            fprintf(out, "{\"t\":\"txn\",\"seq\":%s,\"leaf\":%s%s%s",
                    sealed ? PQgetvalue(r, i, 0) : "null", sealed ? "\"" : "",
                    sealed ? PQgetvalue(r, i, 1) : "null", sealed ? "\"" : "");
            if (!complete)
                fprintf(out, ",\"proof\":%s", PQgetvalue(r, i, 3));
            fprintf(out, ",\"txn\":%s}\n", PQgetvalue(r, i, 2));
            ntx++;
        checkpoints:
            while (complete && cp_more(c, &cp, &cpi)) {
                long long size = strtoll(PQgetvalue(cp, cpi, 0), NULL, 10);
                if (size > ntx)
                    break;
                put_checkpoint(out, PQgetvalue(cp, cpi, 0), PQgetvalue(cp, cpi, 1));
                ncp++;
                cpi++;
            }
            if (rows)
                goto next_txn;
        }
        PQclear(r);
        if (failed) {
            PQclear(cp);
            free(data.p);
            free(line.p);
            goto done;
        }
        if (n < FETCH)
            break;
    }
    free(data.p);
    free(line.p);
    /* checkpoints beyond what was exported (only when the ledger lost rows): the verifier
     * must see them to report the shortfall */
    while (!csv && complete && cp_more(c, &cp, &cpi)) {
        put_checkpoint(out, PQgetvalue(cp, cpi, 0), PQgetvalue(cp, cpi, 1));
        ncp++;
        cpi++;
    }
    PQclear(cp);
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
