/* cli_verify.c -- the offline verifier: `gridpointsd verify`. No configuration, no database:
 * an export (or a proof document) and the log's public keys are all it reads (docs/AUDIT.md §7).
 *
 * A complete export is checked in one streaming pass with constant memory in the number of
 * transactions (state per account only):
 *   - every transaction line: its position is the next log index; the SHA-256 leaf hash of its
 *     exact bytes; the postings sum to zero; each account's postings form an unbroken chain
 *     (version n follows n - 1 and balance_after = previous balance + amount), so no balance
 *     but the issuance account's ever went below zero at any point of its history;
 *   - the leaf hashes fold into a compact range; every checkpoint line must carry a valid
 *     signature by a trusted key and a root equal to the recomputed root at its size, which
 *     also proves each checkpoint consistent with the previous one;
 *   - at the end: no broken chain, the trial balance (sum of all balances) is zero.
 * A partial export (a subtree or a time range) carries an inclusion proof per transaction
 * against its anchor checkpoint instead. The first bad entry is reported with its line number
 * and transaction, and the exit code is 1. */
#include "cli.h"
#include "common.h"
#include "crypto.h"
#include "merkle.h"
#include "tlog.h"
#include "utf8.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- trusted keys ---- */

struct keyring {
    struct tlog_vkey k[32];
    int n;
};

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = xmalloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n - 1 == 0)
            buf = xrealloc(buf, cap *= 2);
    }
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

static int64_t json_time_s(json_t *v, int64_t dflt, bool round_up)
{
    const char *s = json_string_value(v);
    if (!s)
        return dflt;
    /* PostgreSQL writes "2026-01-02T03:04:05.123456+00:00"; tlog_parse_time wants Z */
    char buf[64];
    snprintf(buf, sizeof buf, "%.19sZ", s);
    int64_t t;
    if (!tlog_parse_time(buf, &t))
        return dflt;
    return round_up ? t + 1 : t;
}

/* The --pubkey file: the JSON of /.well-known/gridpoints/checkpoint-keys (`audit-pubkey`),
 * with validity windows, or plain verifier-key lines. */
static bool load_keys(const char *path, struct keyring *kr)
{
    char *text = slurp(path, NULL);
    if (!text) {
        fprintf(stderr, "verify: cannot read %s: %s\n", path, strerror(errno));
        return false;
    }
    kr->n = 0;
    const char *p = text + strspn(text, " \t\r\n");
    if (*p == '{') {
        json_error_t err;
        json_t *doc = json_loads(p, 0, &err);
        json_t *keys = json_object_get(doc, "keys");
        size_t i;
        json_t *k;
        json_array_foreach(keys, i, k)
        {
            if (kr->n >= (int)ARRAY_SIZE(kr->k))
                break;
            const char *vk = json_string_value(json_object_get(k, "vkey"));
            if (!vk || !tlog_vkey_parse(vk, &kr->k[kr->n])) {
                fprintf(stderr, "verify: %s: key %zu is not a valid verifier key\n", path, i);
                json_decref(doc);
                free(text);
                return false;
            }
            kr->k[kr->n].valid_from =
                json_time_s(json_object_get(k, "valid_from"), INT64_MIN, false);
            kr->k[kr->n].valid_until =
                json_time_s(json_object_get(k, "valid_until"), INT64_MAX, true);
            kr->n++;
        }
        json_decref(doc);
    } else {
        char *save = NULL;
        for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            line += strspn(line, " \t\r");
            line[strcspn(line, "\r")] = '\0';
            if (!*line || *line == '#')
                continue;
            if (kr->n >= (int)ARRAY_SIZE(kr->k) || !tlog_vkey_parse(line, &kr->k[kr->n])) {
                fprintf(stderr, "verify: %s: \"%s\" is not a valid verifier key\n", path, line);
                free(text);
                return false;
            }
            kr->n++;
        }
    }
    free(text);
    if (kr->n == 0) {
        fprintf(stderr, "verify: no key in %s\n", path);
        return false;
    }
    return true;
}

/* ---- account state: open addressing on the account id ---- */

struct pend {
    int64_t version, amount, balance_after, txn;
    long line;
};

struct account {
    int64_t id; /* 0 = empty slot */
    char kind[16];
    int64_t next_version; /* the version the next posting must carry */
    int64_t balance;
    struct pend *pend; /* postings that arrived before their predecessor (log order is
                        * xid order, not lock order; bounded by the writers in flight) */
    int npend, cappend;
};

struct accounts {
    struct account *a;
    size_t cap, n;
};

static struct account *acct_get(struct accounts *as, int64_t id)
{
    if (as->n * 2 >= as->cap) {
        size_t ncap = as->cap ? as->cap * 2 : 1024;
        struct account *na = xcalloc(ncap, sizeof *na);
        for (size_t i = 0; i < as->cap; i++) {
            if (!as->a[i].id)
                continue;
            size_t j = (size_t)((uint64_t)as->a[i].id * 0x9E3779B97F4A7C15ull) & (ncap - 1);
            while (na[j].id)
                j = (j + 1) & (ncap - 1);
            na[j] = as->a[i];
        }
        free(as->a);
        as->a = na;
        as->cap = ncap;
    }
    size_t j = (size_t)((uint64_t)id * 0x9E3779B97F4A7C15ull) & (as->cap - 1);
    while (as->a[j].id && as->a[j].id != id)
        j = (j + 1) & (as->cap - 1);
    if (!as->a[j].id) {
        as->a[j].id = id;
        as->a[j].next_version = 1;
        as->n++;
    }
    return &as->a[j];
}

static void accounts_free(struct accounts *as)
{
    for (size_t i = 0; i < as->cap; i++)
        free(as->a[i].pend);
    free(as->a);
}

/* ---- the verifier ---- */

struct verifier {
    const char *path;
    struct keyring keys;
    bool complete, have_header;
    long line;
    uint64_t pos; /* transactions seen (complete: the next log index) */
    struct merkle_range range;
    uint64_t last_cp_size;
    int64_t last_cp_time;
    uint64_t checkpoints;
    struct tlog_checkpoint anchor; /* partial: the checkpoint the proofs are against */
    bool have_anchor;
    uint64_t postings;
    struct accounts acc;
    char failure[1024];
    bool chain; /* check balance chains (complete exports) */
    /* --checkpoint: one published earlier (kept by audit.state_dir, or fetched from
     * /.well-known/gridpoints/checkpoint); the export must extend it or be reported behind it */
    struct tlog_checkpoint published;
    bool have_published, published_matched;
    struct fline *fl; /* the fast path's line and postings (reused) */
    struct fposting *fps;
    size_t fps_cap;
};

static bool fail(struct verifier *v, int64_t seq, int64_t txn, const char *fmt, ...)
    PRINTF_LIKE(4, 5);

static bool fail(struct verifier *v, int64_t seq, int64_t txn, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char where[160] = "";
    int n = snprintf(where, sizeof where, "line %ld", v->line);
    if (seq >= 0)
        n += snprintf(where + n, sizeof where - (size_t)n, ", log index %" PRId64, seq);
    if (txn > 0)
        snprintf(where + n, sizeof where - (size_t)n, ", transaction %" PRId64, txn);
    snprintf(v->failure, sizeof v->failure, "%s: %s", where, msg);
    return false;
}

static bool apply_posting(struct verifier *v, struct account *a, int64_t version, int64_t amount,
                          int64_t balance_after, int64_t txn, long line)
{
    int64_t expect;
    if (!i64_add(a->balance, amount, &expect) || expect != balance_after) {
        long save = v->line;
        v->line = line;
        fail(v, -1, txn,
             "account %" PRId64 " (%s) version %" PRId64 ": balance_after %" PRId64
             " is not the previous balance %" PRId64 " plus the amount %" PRId64,
             a->id, a->kind, version, balance_after, a->balance, amount);
        v->line = save;
        return false;
    }
    if (balance_after < 0 && strcmp(a->kind, "issuance") != 0) {
        long save = v->line;
        v->line = line;
        fail(v, -1, txn, "account %" PRId64 " (%s) went negative: %" PRId64 " at version %" PRId64,
             a->id, a->kind, balance_after, version);
        v->line = save;
        return false;
    }
    a->balance = balance_after;
    a->next_version = version + 1;
    return true;
}

static bool posting(struct verifier *v, int64_t txn, int64_t account, const char *kind,
                    int64_t amount, int64_t version, int64_t balance_after)
{
    struct account *a = acct_get(&v->acc, account);
    if (!a->kind[0])
        snprintf(a->kind, sizeof a->kind, "%s", kind);
    else if (strcmp(a->kind, kind) != 0)
        return fail(v, -1, txn, "account %" PRId64 " is %s here but %s before", account, kind,
                    a->kind);
    if (balance_after < 0 && strcmp(kind, "issuance") != 0)
        return fail(v, -1, txn, "account %" PRId64 " (%s) has a negative balance_after %" PRId64,
                    account, kind, balance_after);
    if (!v->chain)
        return true;
    if (version < a->next_version)
        return fail(v, -1, txn, "account %" PRId64 " has version %" PRId64 " twice", account,
                    version);
    if (version > a->next_version) {
        if (a->npend >= 4096)
            return fail(v, -1, txn, "account %" PRId64 ": version %" PRId64 " never appears",
                        account, a->next_version);
        if (a->npend == a->cappend)
            a->pend = xrealloc(a->pend, sizeof *a->pend *
                                            (size_t)(a->cappend = a->cappend ? a->cappend * 2 : 4));
        a->pend[a->npend++] = (struct pend){version, amount, balance_after, txn, v->line};
        return true;
    }
    if (!apply_posting(v, a, version, amount, balance_after, txn, v->line))
        return false;
    /* drain what was waiting for this one */
    for (bool again = true; again && a->npend;) {
        again = false;
        for (int i = 0; i < a->npend; i++) {
            if (a->pend[i].version != a->next_version)
                continue;
            struct pend p = a->pend[i];
            a->pend[i] = a->pend[--a->npend];
            if (!apply_posting(v, a, p.version, p.amount, p.balance_after, p.txn, p.line))
                return false;
            again = true;
            break;
        }
    }
    return true;
}

/* The semantic checks of one transaction's canonical data. */
static bool check_txn(struct verifier *v, json_t *t, int64_t seq, int64_t *txn_out)
{
    json_t *id = json_object_get(t, "id");
    json_t *ps = json_object_get(t, "postings");
    int64_t txn = json_is_integer(id) ? json_integer_value(id) : 0;
    *txn_out = txn;
    if (txn <= 0 || !json_is_string(json_object_get(t, "kind")) || !json_is_array(ps))
        return fail(v, seq, txn, "malformed transaction data");
    if (json_array_size(ps) < 2)
        return fail(v, seq, txn, "a transaction needs at least two postings, it has %zu",
                    json_array_size(ps));
    int64_t sum = 0, prev_account = 0;
    size_t i;
    json_t *p;
    json_array_foreach(ps, i, p)
    {
        json_t *acc = json_object_get(p, "account"), *kind = json_object_get(p, "account_kind");
        json_t *amt = json_object_get(p, "amount"), *ver = json_object_get(p, "version");
        json_t *bal = json_object_get(p, "balance_after");
        if (!json_is_integer(acc) || !json_is_string(kind) || !json_is_integer(amt) ||
            !json_is_integer(ver) || !json_is_integer(bal))
            return fail(v, seq, txn, "posting %zu is malformed", i);
        int64_t account = json_integer_value(acc), amount = json_integer_value(amt);
        if (account <= prev_account)
            return fail(v, seq, txn,
                        "postings are not in ascending account order, or an account "
                        "appears twice");
        prev_account = account;
        if (amount == 0)
            return fail(v, seq, txn, "posting to account %" PRId64 " has amount 0", account);
        if (!i64_add(sum, amount, &sum))
            return fail(v, seq, txn, "the postings overflow");
        v->postings++;
        if (!posting(v, txn, account, json_string_value(kind), amount, json_integer_value(ver),
                     json_integer_value(bal)))
            return false;
    }
    if (sum != 0)
        return fail(v, seq, txn, "the postings sum to %" PRId64 ", not 0", sum);
    return true;
}

static bool parse_hash(const char *hex, merkle_hash out)
{
    return hex && strlen(hex) == 64 && crypto_unhex(hex, out, 32);
}

static int parse_proof(json_t *arr, merkle_hash *out)
{
    if (!json_is_array(arr) || json_array_size(arr) > MERKLE_MAX_PROOF)
        return -1;
    size_t i;
    json_t *h;
    json_array_foreach(arr, i, h)
    {
        if (!parse_hash(json_string_value(h), out[i]))
            return -1;
    }
    return (int)json_array_size(arr);
}

static bool verify_note(struct verifier *v, const char *note, struct tlog_checkpoint *cp)
{
    if (!note)
        return fail(v, -1, 0, "checkpoint without a note");
    int which = -1;
    enum tlog_verdict r = tlog_note_verify(note, strlen(note), v->keys.k, v->keys.n, cp, &which);
    if (r != TLOG_OK)
        return fail(v, -1, 0, "checkpoint: %s", tlog_verdict_str(r));
    if (strcmp(cp->origin, v->keys.k[which].name) != 0)
        return fail(v, -1, 0, "checkpoint of origin %s signed by key %s", cp->origin,
                    v->keys.k[which].name);
    return true;
}

static bool on_checkpoint(struct verifier *v, json_t *j)
{
    struct tlog_checkpoint cp;
    if (!verify_note(v, json_string_value(json_object_get(j, "note")), &cp))
        return false;
    if ((json_int_t)cp.size != json_integer_value(json_object_get(j, "size")))
        return fail(v, -1, 0, "the checkpoint line's size differs from its signed note");
    if (cp.size <= v->last_cp_size && v->checkpoints)
        return fail(v, -1, 0, "checkpoint of size %" PRIu64 " after one of size %" PRIu64, cp.size,
                    v->last_cp_size);
    if (cp.time_s < v->last_cp_time)
        return fail(v, -1, 0, "checkpoint of size %" PRIu64 " is older than the one before",
                    cp.size);
    if (v->complete) {
        if (cp.size != v->pos)
            return fail(v, -1, 0,
                        "checkpoint of size %" PRIu64 " stands after %" PRIu64
                        " transactions: the export lost or gained transactions",
                        cp.size, v->pos);
        merkle_hash root;
        merkle_range_root(&v->range, root);
        if (memcmp(root, cp.root, 32) != 0) {
            char a[65], b[65];
            crypto_hex(root, 32, a);
            crypto_hex(cp.root, 32, b);
            return fail(v, -1, 0,
                        "the transactions before this checkpoint hash to %s, but the signed "
                        "root of size %" PRIu64 " is %s: history before it was changed (log "
                        "indexes %" PRIu64 "..%" PRIu64 ")",
                        a, cp.size, b, v->last_cp_size, cp.size - 1);
        }
    } else {
        v->anchor = cp;
        v->have_anchor = true;
    }
    v->last_cp_size = cp.size;
    v->last_cp_time = cp.time_s;
    v->checkpoints++;
    return true;
}

/* ---- the fast path: the exact line format the exporter writes ----
 *
 * A transaction line of an export is, byte for byte (docs/AUDIT.md §3, §6):
 *   line     = '{"t":"txn","seq":' (UINT | "null") ',"leaf":' (HASH | "null")
 *              [ ',"proof":[' [ HASH *( ',' HASH ) ] ']' ] ',"txn":' txn '}'
 *   txn      = '{"id":' INT ',"xid":' INT ',"kind":' STR ',"at":' STR ',"actor":' (INT | "null")
 *              ',"refs":' refs ',"memo":' (STR | "null") ',"postings":[' [ posting *( ',' posting )
 * ] ']}' posting  = '{"id":' INT ',"account":' INT ',"account_kind":' STR ',"amount":' INT
 *              ',"version":' INT ',"balance_after":' INT '}'
 *   refs     = '{}' | '{' STR ':' scalar *( ',' STR ':' scalar ) '}'   (distinct keys, at most 16)
 *   scalar   = INT | STR | "true" | "false" | "null"
 *   HASH     = '"' 64 hex digits '"';  INT = JSON integer within int64, not followed by a
 *              fraction or exponent;  STR = '"' valid UTF-8 without control characters,
 *              backslashes or quotes '"'
 * This is what PostgreSQL's audit_txn_data produces for every transaction without an escaped
 * character in its strings and with flat refs. Such a line is read without building a JSON
 * tree; any other line (an escape, nested refs, another order, whitespace, a malformed line)
 * goes through the general JSON path below (jansson), so every verdict and every message is the
 * one the general path gives: the fast path only ever accepts lines the general path reads the
 * same way. */

struct fposting {
    int64_t account, amount, version, balance_after;
    const char *kind;
    size_t kind_len;
};

struct fcur {
    const char *p, *end;
};

static bool f_lit(struct fcur *c, const char *s, size_t n)
{
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, s, n) != 0)
        return false;
    c->p += n;
    return true;
}
#define F_LIT(c, s) f_lit((c), (s), sizeof(s) - 1)

static bool f_int(struct fcur *c, int64_t *out)
{
    const char *p = c->p;
    bool neg = p < c->end && *p == '-';
    if (neg)
        p++;
    if (p >= c->end || *p < '0' || *p > '9')
        return false;
    if (*p == '0' && p + 1 < c->end && p[1] >= '0' && p[1] <= '9')
        return false;
    uint64_t v = 0;
    int digits = 0;
    for (; p < c->end && *p >= '0' && *p <= '9'; p++) {
        if (++digits > 18)
            return false; /* possibly beyond int64: the general path decides */
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (p < c->end && (*p == '.' || *p == 'e' || *p == 'E'))
        return false;
    *out = neg ? -(int64_t)v : (int64_t)v;
    c->p = p;
    return true;
}

static bool f_str(struct fcur *c, const char **s, size_t *n)
{
    if (c->p >= c->end || *c->p != '"')
        return false;
    const char *b = c->p + 1, *p = b;
    bool ascii = true;
    for (; p < c->end && *p != '"'; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch < 0x20 || ch == '\\')
            return false;
        if (ch >= 0x80)
            ascii = false;
    }
    if (p >= c->end || (!ascii && !utf8_is_valid(b, (size_t)(p - b))))
        return false;
    *s = b;
    *n = (size_t)(p - b);
    c->p = p + 1;
    return true;
}

static bool f_hash(struct fcur *c, merkle_hash out)
{
    char hex[65];
    if ((size_t)(c->end - c->p) < 66 || c->p[0] != '"' || c->p[65] != '"')
        return false;
    memcpy(hex, c->p + 1, 64);
    hex[64] = '\0';
    if (!crypto_unhex(hex, out, 32))
        return false;
    c->p += 66;
    return true;
}

static bool f_refs(struct fcur *c)
{
    if (F_LIT(c, "{}"))
        return true;
    if (!F_LIT(c, "{"))
        return false;
    const char *key[16];
    size_t klen[16];
    int n = 0;
    do {
        const char *s;
        size_t sn;
        int64_t i;
        if (n == 16 || !f_str(c, &key[n], &klen[n]) || !F_LIT(c, ":"))
            return false;
        for (int k = 0; k < n; k++)
            if (klen[k] == klen[n] && !memcmp(key[k], key[n], klen[n]))
                return false; /* a duplicate key: the general path rejects it */
        n++;
        if (!f_int(c, &i) && !f_str(c, &s, &sn) && !F_LIT(c, "true") && !F_LIT(c, "false") &&
            !F_LIT(c, "null"))
            return false;
    } while (F_LIT(c, ","));
    return F_LIT(c, "}");
}

struct fline {
    int64_t seq, txn;
    bool has_claim;
    merkle_hash claimed;
    int nproof;
    merkle_hash proof[MERKLE_MAX_PROOF];
    const char *data;
    size_t dlen;
    size_t nposting;
};

/* Parses a transaction line of exactly the format above; false = take the general path. The
 * postings go to *ps (grown as needed). */
static bool f_line(const char *line, size_t len, struct fline *fl, struct fposting **ps,
                   size_t *cap)
{
    struct fcur c = {line, line + len};
    int64_t i;
    const char *s;
    size_t sn;
    if (!F_LIT(&c, "{\"t\":\"txn\",\"seq\":"))
        return false;
    if (F_LIT(&c, "null"))
        fl->seq = -1;
    else if (!f_int(&c, &fl->seq) || fl->seq < 0)
        return false;
    if (!F_LIT(&c, ",\"leaf\":"))
        return false;
    fl->has_claim = !F_LIT(&c, "null");
    if (fl->has_claim && !f_hash(&c, fl->claimed))
        return false;
    fl->nproof = 0;
    if (F_LIT(&c, ",\"proof\":[")) {
        if (!F_LIT(&c, "]")) {
            do {
                if (fl->nproof == MERKLE_MAX_PROOF || !f_hash(&c, fl->proof[fl->nproof]))
                    return false;
                fl->nproof++;
            } while (F_LIT(&c, ","));
            if (!F_LIT(&c, "]"))
                return false;
        }
    }
    if (!F_LIT(&c, ",\"txn\":"))
        return false;
    fl->data = c.p;
    if (len < 1 || line[len - 1] != '}')
        return false;
    c.end = line + len - 1; /* the data ends before the line's closing brace */
    fl->dlen = (size_t)(c.end - c.p);
    if (!F_LIT(&c, "{\"id\":") || !f_int(&c, &fl->txn) || !F_LIT(&c, ",\"xid\":") ||
        !f_int(&c, &i) || !F_LIT(&c, ",\"kind\":") || !f_str(&c, &s, &sn) ||
        !F_LIT(&c, ",\"at\":") || !f_str(&c, &s, &sn) || !F_LIT(&c, ",\"actor\":") ||
        (!F_LIT(&c, "null") && !f_int(&c, &i)) || !F_LIT(&c, ",\"refs\":") || !f_refs(&c) ||
        !F_LIT(&c, ",\"memo\":") || (!F_LIT(&c, "null") && !f_str(&c, &s, &sn)) ||
        !F_LIT(&c, ",\"postings\":["))
        return false;
    fl->nposting = 0;
    if (!F_LIT(&c, "]")) {
        do {
            if (fl->nposting == *cap)
                *ps = xrealloc(*ps, sizeof **ps * (*cap = *cap ? *cap * 2 : 16));
            struct fposting *p = &(*ps)[fl->nposting];
            if (!F_LIT(&c, "{\"id\":") || !f_int(&c, &i) || !F_LIT(&c, ",\"account\":") ||
                !f_int(&c, &p->account) || !F_LIT(&c, ",\"account_kind\":") ||
                !f_str(&c, &p->kind, &p->kind_len) || p->kind_len >= 64 ||
                !F_LIT(&c, ",\"amount\":") || !f_int(&c, &p->amount) ||
                !F_LIT(&c, ",\"version\":") || !f_int(&c, &p->version) ||
                !F_LIT(&c, ",\"balance_after\":") || !f_int(&c, &p->balance_after) ||
                !F_LIT(&c, "}"))
                return false;
            fl->nposting++;
        } while (F_LIT(&c, ","));
        if (!F_LIT(&c, "]"))
            return false;
    }
    return F_LIT(&c, "}") && c.p == c.end;
}

/* check_txn over the fast path's postings: the same checks in the same order. */
static bool check_txn_fast(struct verifier *v, const struct fline *fl, const struct fposting *ps,
                           int64_t seq)
{
    int64_t txn = fl->txn;
    if (txn <= 0)
        return fail(v, seq, txn, "malformed transaction data");
    if (fl->nposting < 2)
        return fail(v, seq, txn, "a transaction needs at least two postings, it has %zu",
                    fl->nposting);
    int64_t sum = 0, prev_account = 0;
    for (size_t i = 0; i < fl->nposting; i++) {
        const struct fposting *p = &ps[i];
        if (p->account <= prev_account)
            return fail(v, seq, txn,
                        "postings are not in ascending account order, or an account "
                        "appears twice");
        prev_account = p->account;
        if (p->amount == 0)
            return fail(v, seq, txn, "posting to account %" PRId64 " has amount 0", p->account);
        if (!i64_add(sum, p->amount, &sum))
            return fail(v, seq, txn, "the postings overflow");
        v->postings++;
        char kind[64]; /* f_line took shorter kinds only */
        memcpy(kind, p->kind, p->kind_len);
        kind[p->kind_len] = '\0';
        if (!posting(v, txn, p->account, kind, p->amount, p->version, p->balance_after))
            return false;
    }
    if (sum != 0)
        return fail(v, seq, txn, "the postings sum to %" PRId64 ", not 0", sum);
    return true;
}

static bool txn_checks(struct verifier *v, int64_t seq, int64_t txn, const merkle_hash leaf,
                       bool has_claim, const merkle_hash claimed, const merkle_hash *proof,
                       int nproof, json_t *t, const struct fline *fl, const struct fposting *ps);

static bool on_txn_json(struct verifier *v, char *line, size_t len);

/* verify --general: every line through the general path (the fast path's differential test,
 * tests/api/test_verify_robust.py) */
static bool general_only;

static bool on_txn(struct verifier *v, char *line, size_t len)
{
    if (general_only)
        return on_txn_json(v, line, len);
    if (!v->fl)
        v->fl = xcalloc(1, sizeof *v->fl);
    struct fline *fl = v->fl;
    if (!f_line(line, len, fl, &v->fps, &v->fps_cap))
        return on_txn_json(v, line, len);
    merkle_hash leaf;
    merkle_leaf_hash(fl->data, fl->dlen, leaf);
    return txn_checks(v, fl->seq, fl->txn, leaf, fl->has_claim, fl->claimed,
                      (const merkle_hash *)fl->proof, fl->nproof, NULL, fl, v->fps);
}

/* The general path: any JSON the line may hold. */
static bool on_txn_json(struct verifier *v, char *line, size_t len)
{
    /* {"t":"txn","seq":N,"leaf":"HEX"[,"proof":[...]],"txn":DATA}: the leaf hashes DATA's
     * exact bytes, so DATA is cut out of the line rather than re-encoded. */
    char *mark = strstr(line, ",\"txn\":");
    if (!mark || line[len - 1] != '}')
        return fail(v, -1, 0, "malformed transaction line");
    char *data = mark + 7;
    size_t dlen = (size_t)(line + len - 1 - data);
    char saved = mark[0], saved2 = mark[1];
    mark[0] = '}';
    mark[1] = '\0';
    json_error_t err;
    json_t *head = json_loads(line, JSON_REJECT_DUPLICATES, &err);
    mark[0] = saved;
    mark[1] = saved2;
    if (!head)
        return fail(v, -1, 0, "malformed transaction line: %s", err.text);
    json_t *seqj = json_object_get(head, "seq");
    int64_t seq = json_is_integer(seqj) ? json_integer_value(seqj) : -1;
    merkle_hash leaf, claimed;
    merkle_leaf_hash(data, dlen, leaf);
    json_t *leafj = json_object_get(head, "leaf");
    bool has_claim = parse_hash(json_string_value(leafj), claimed);
    json_t *proofj = json_object_get(head, "proof");
    merkle_hash proof[MERKLE_MAX_PROOF];
    int nproof = proofj ? parse_proof(proofj, proof) : 0;
    json_decref(head);

    line[len - 1] = '\0';
    json_t *t = json_loads(data, JSON_REJECT_DUPLICATES, &err);
    line[len - 1] = '}';
    int64_t txn = 0;
    if (!t)
        return fail(v, seq, 0, "malformed transaction data: %s", err.text);
    txn = json_integer_value(json_object_get(t, "id"));
    bool ok = txn_checks(v, seq, txn, leaf, has_claim, claimed, (const merkle_hash *)proof, nproof,
                         t, NULL, NULL);
    json_decref(t);
    return ok;
}

static bool txn_checks(struct verifier *v, int64_t seq, int64_t txn, const merkle_hash leaf,
                       bool has_claim, const merkle_hash claimed, const merkle_hash *proof,
                       int nproof, json_t *t, const struct fline *fl, const struct fposting *ps)
{
    bool ok = true;
    if (v->complete) {
        if (seq < 0)
            ok = fail(v, -1, txn,
                      "this transaction has no log position: it was never sealed, so it was "
                      "inserted into sealed history (expected log index %" PRIu64 " here)",
                      v->pos);
        else if ((uint64_t)seq != v->pos)
            ok = fail(v, seq, txn,
                      "expected log index %" PRIu64 " here: a transaction before it is missing, "
                      "or the order changed",
                      v->pos);
    } else if (!v->have_anchor) {
        ok = fail(v, seq, txn, "a partial export needs its checkpoint before the transactions");
    } else if (seq < 0 || nproof < 0 || (uint64_t)seq >= v->anchor.size ||
               !merkle_verify_inclusion((uint64_t)seq, v->anchor.size, leaf, proof, nproof,
                                        v->anchor.root)) {
        ok = fail(v, seq, txn,
                  "the inclusion proof does not lead to the checkpoint of size %" PRIu64
                  ": the transaction is not in the signed log as shown",
                  v->anchor.size);
    }
    if (ok && has_claim && memcmp(claimed, leaf, 32) != 0)
        ok = fail(v, seq, txn,
                  "the transaction differs from the leaf sealed for it (a posting or a field "
                  "was changed after sealing)");
    if (ok && !has_claim && v->complete)
        ok = fail(v, seq, txn, "no sealed leaf hash");
    if (ok)
        ok = t ? check_txn(v, t, seq, &txn) : check_txn_fast(v, fl, ps, seq);
    if (!ok)
        return false;
    if (v->complete)
        merkle_range_append(&v->range, leaf);
    v->pos++;
    if (v->complete && v->have_published && v->pos == v->published.size) {
        merkle_hash root;
        merkle_range_root(&v->range, root);
        if (memcmp(root, v->published.root, 32) != 0)
            return fail(v, seq, 0,
                        "the published checkpoint of size %" PRIu64 " (--checkpoint) has another "
                        "root than these transactions: this log forks from what was published",
                        v->published.size);
        v->published_matched = true;
    }
    return true;
}

static bool on_line(struct verifier *v, char *line, size_t len)
{
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        line[--len] = '\0';
    if (!len)
        return true;
    if (!strncmp(line, "{\"t\":\"txn\",", 11)) {
        if (!v->have_header)
            return fail(v, -1, 0, "the export does not start with its header");
        return on_txn(v, line, len);
    }
    json_error_t err;
    json_t *j = json_loads(line, JSON_REJECT_DUPLICATES, &err);
    if (!j)
        return fail(v, -1, 0, "not JSON: %s", err.text);
    const char *t = json_string_value(json_object_get(j, "t"));
    bool ok = true;
    if (!t) {
        ok = fail(v, -1, 0, "a line without a type");
    } else if (!strcmp(t, "header")) {
        if (v->have_header)
            ok = fail(v, -1, 0, "a second header");
        else if (!json_string_value(json_object_get(j, "format")) ||
                 strcmp(json_string_value(json_object_get(j, "format")),
                        "gridpoints-ledger-export/1"))
            ok = fail(v, -1, 0, "not a gridpoints ledger export");
        v->have_header = true;
        v->complete = json_is_true(json_object_get(j, "complete"));
        v->chain = v->complete;
    } else if (!v->have_header) {
        ok = fail(v, -1, 0, "the export does not start with its header");
    } else if (!strcmp(t, "checkpoint")) {
        ok = on_checkpoint(v, j);
    } else if (!strcmp(t, "end")) {
        json_t *n = json_object_get(j, "transactions");
        if (json_is_integer(n) && (uint64_t)json_integer_value(n) != v->pos)
            ok = fail(v, -1, 0, "the export ends after %" PRIu64 " transactions but says %lld",
                      v->pos, (long long)json_integer_value(n));
    } else if (strcmp(t, "keys") && strcmp(t, "page")) {
        ok = fail(v, -1, 0, "unknown line type \"%s\"", t);
    }
    json_decref(j);
    return ok;
}

static int kind_cmp(const void *a, const void *b)
{
    return strcmp(((const struct account *)a)->kind, ((const struct account *)b)->kind);
}

static int verify_export(const char *path, const struct keyring *keys, const char *published)
{
    FILE *f = !strcmp(path, "-") ? stdin : fopen(path, "r");
    if (!f) {
        fprintf(stderr, "verify: cannot read %s: %s\n", path, strerror(errno));
        return 2;
    }
    struct verifier *v = xcalloc(1, sizeof *v);
    v->path = path;
    v->keys = *keys;
    merkle_range_init(&v->range);
    if (published) {
        size_t plen;
        char *note = slurp(published, &plen);
        if (!note) {
            fprintf(stderr, "verify: cannot read %s: %s\n", published, strerror(errno));
            free(v);
            if (f != stdin)
                fclose(f);
            return 2;
        }
        bool good = verify_note(v, note, &v->published);
        free(note);
        if (!good) {
            printf("FAIL %s: %s\n", published, v->failure);
            free(v);
            if (f != stdin)
                fclose(f);
            return 1;
        }
        v->have_published = true;
    }
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    bool ok = true;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (ok && (n = getline(&line, &cap, f)) >= 0) {
        v->line++;
        ok = on_line(v, line, (size_t)n);
    }
    free(line);
    if (f != stdin)
        fclose(f);
    if (ok && !v->have_header)
        ok = fail(v, -1, 0, "empty export");
    /* end of a complete export: broken chains, trial balance */
    int64_t total = 0;
    if (ok && v->complete) {
        for (size_t i = 0; ok && i < v->acc.cap; i++) {
            struct account *a = &v->acc.a[i];
            if (a->id && a->npend)
                ok = fail(v, -1, a->pend[0].txn,
                          "account %" PRId64 " (%s): version %" PRId64 " never appears, yet "
                          "version %" PRId64 " does (a transaction is missing)",
                          a->id, a->kind, a->next_version, a->pend[0].version);
            if (a->id && ok && !i64_add(total, a->balance, &total))
                ok = fail(v, -1, 0, "the trial balance overflows");
        }
        if (ok && total != 0)
            ok = fail(v, -1, 0, "the trial balance is %" PRId64 ", not 0", total);
        if (ok && v->checkpoints == 0 && v->pos > 0)
            ok = fail(v, -1, 0, "no checkpoint: nothing in this export is signed");
        if (ok && v->have_published && v->published.size > v->pos)
            ok = fail(v, -1, 0,
                      "the published checkpoint of size %" PRIu64 " (--checkpoint) is newer "
                      "than this log, which ends at size %" PRIu64 ": %" PRIu64
                      " transactions signed before are missing (a restore to an earlier point?); "
                      "a checkpoint that continues this log would fork the published one",
                      v->published.size, v->pos, v->published.size - v->pos);
    } else if (ok && v->have_published) {
        ok = fail(v, -1, 0, "--checkpoint needs a complete export");
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    int rc;
    if (!ok) {
        printf("FAIL %s: %s\n", path, v->failure);
        rc = 1;
    } else {
        printf("OK %s: %s export, %" PRIu64 " transactions, %" PRIu64 " postings, %" PRIu64
               " checkpoints verified in %.2f s\n",
               path, v->complete ? "complete" : "partial", v->pos, v->postings, v->checkpoints,
               secs);
        if (v->complete) {
            merkle_hash root;
            char rh[65];
            merkle_range_root(&v->range, root);
            crypto_hex(root, 32, rh);
            printf("  log: size %" PRIu64 ", root %s; last signed checkpoint at size %" PRIu64
                   "%s\n",
                   v->pos, rh, v->last_cp_size,
                   v->pos > v->last_cp_size ? " (the transactions after it are sealed but not "
                                              "yet covered by a signature)"
                                            : "");
            if (v->published_matched)
                printf("  the published checkpoint of size %" PRIu64
                       " (--checkpoint) is a prefix of this log\n",
                       v->published.size);
            /* trial balance by account kind */
            struct account *copy = xcalloc(v->acc.n ? v->acc.n : 1, sizeof *copy);
            size_t m = 0;
            for (size_t i = 0; i < v->acc.cap; i++)
                if (v->acc.a[i].id)
                    copy[m++] = v->acc.a[i];
            qsort(copy, m, sizeof *copy, kind_cmp);
            printf("  trial balance over %zu accounts:", m);
            for (size_t i = 0; i < m;) {
                int64_t s = 0;
                size_t j = i;
                for (; j < m && !strcmp(copy[j].kind, copy[i].kind); j++)
                    s += copy[j].balance;
                printf(" %s=%" PRId64, copy[i].kind, s);
                i = j;
            }
            printf(" total=%" PRId64 "\n", total);
            free(copy);
        } else {
            printf("  every transaction is included in the checkpoint of size %" PRIu64 "\n",
                   v->anchor.size);
        }
        rc = 0;
    }
    accounts_free(&v->acc);
    free(v->fps);
    free(v->fl);
    free(v);
    return rc;
}

/* ---- proof documents: a statement with proofs, one transaction's proof, a consistency
 * proof between two checkpoints (as the /audit/v1 routes return them) ---- */

static int verify_proofs(const char *path, const struct keyring *keys)
{
    json_error_t err;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
    if (!doc) {
        fprintf(stderr, "verify: %s: %s (line %d)\n", path, err.text, err.line);
        return 2;
    }
    struct verifier v = {.keys = *keys};
    int rc = 1;
    if (json_object_get(doc, "from") && json_object_get(doc, "to")) {
        struct tlog_checkpoint a, b;
        merkle_hash proof[MERKLE_MAX_PROOF];
        int n = parse_proof(json_object_get(doc, "proof"), proof);
        if (!verify_note(
                &v, json_string_value(json_object_get(json_object_get(doc, "from"), "note")), &a) ||
            !verify_note(&v, json_string_value(json_object_get(json_object_get(doc, "to"), "note")),
                         &b)) {
            printf("FAIL %s: %s\n", path, v.failure);
        } else if (n < 0 || !merkle_verify_consistency(a.size, b.size, a.root, b.root,
                                                       (const merkle_hash *)proof, n)) {
            printf("FAIL %s: the checkpoint of size %" PRIu64 " is not a prefix of the one of "
                   "size %" PRIu64 "\n",
                   path, a.size, b.size);
        } else {
            printf("OK %s: the checkpoint of size %" PRIu64 " is consistent with the one of size "
                   "%" PRIu64 "\n",
                   path, a.size, b.size);
            rc = 0;
        }
        json_decref(doc);
        return rc;
    }
    struct tlog_checkpoint cp;
    if (!verify_note(&v,
                     json_string_value(json_object_get(json_object_get(doc, "checkpoint"), "note")),
                     &cp)) {
        printf("FAIL %s: %s\n", path, v.failure);
        json_decref(doc);
        return 1;
    }
    json_t *items = json_object_get(doc, "items");
    json_t *single = NULL;
    if (!json_is_array(items)) {
        single = json_array();
        json_array_append(single, doc);
        items = single;
    }
    size_t i, proved = 0, pending = 0;
    json_t *it;
    rc = 0;
    json_array_foreach(items, i, it)
    {
        const char *data = json_string_value(json_object_get(it, "leaf_data"));
        json_t *proofj = json_object_get(it, "proof");
        int64_t txn = json_integer_value(json_object_get(it, "txn_id"));
        if (!json_is_array(proofj)) {
            pending++; /* not sealed yet, or sealed after the checkpoint */
            continue;
        }
        int64_t idx = json_integer_value(json_object_get(it, "log_index"));
        merkle_hash leaf, proof[MERKLE_MAX_PROOF];
        int n = parse_proof(proofj, proof);
        if (!data || n < 0 || idx < 0) {
            printf("FAIL %s: item %zu (transaction %" PRId64 "): malformed\n", path, i, txn);
            rc = 1;
            break;
        }
        merkle_leaf_hash(data, strlen(data), leaf);
        json_t *t = json_loads(data, JSON_REJECT_DUPLICATES, NULL);
        bool match = t && json_integer_value(json_object_get(t, "id")) == txn;
        /* the item's own amount must be one of the sealed postings */
        if (match && json_object_get(it, "amount")) {
            match = false;
            size_t k;
            json_t *p;
            json_array_foreach(json_object_get(t, "postings"), k, p)
            {
                if (json_integer_value(json_object_get(p, "amount")) ==
                        json_integer_value(json_object_get(it, "amount")) &&
                    json_integer_value(json_object_get(p, "balance_after")) ==
                        json_integer_value(json_object_get(it, "balance_after")))
                    match = true;
            }
        }
        json_decref(t);
        if (!match) {
            printf("FAIL %s: item %zu (transaction %" PRId64 "): the line does not match the "
                   "sealed transaction data\n",
                   path, i, txn);
            rc = 1;
            break;
        }
        if (!merkle_verify_inclusion((uint64_t)idx, cp.size, leaf, (const merkle_hash *)proof, n,
                                     cp.root)) {
            printf("FAIL %s: item %zu (transaction %" PRId64 ", log index %" PRId64 "): the "
                   "inclusion proof does not lead to the checkpoint of size %" PRIu64 "\n",
                   path, i, txn, idx, cp.size);
            rc = 1;
            break;
        }
        proved++;
    }
    if (rc == 0)
        printf("OK %s: %zu entries proved included in the checkpoint of size %" PRIu64
               " (signed %s)%s\n",
               path, proved, cp.size, cp.time, pending ? "; some are not covered yet" : "");
    json_decref(single);
    json_decref(doc);
    return rc;
}

int cli_verify(int argc, char **argv)
{
    const char *exp = cli_opt(argc, argv, "--export"), *proofs = cli_opt(argc, argv, "--proofs");
    const char *pub = cli_opt(argc, argv, "--pubkey");
    const char *published = cli_opt(argc, argv, "--checkpoint");
    general_only = cli_flag(argc, argv, "--general");
    if (!pub || (!exp == !proofs) || (published && !exp)) {
        fprintf(stderr, "usage: gridpointsd verify --export FILE --pubkey KEYS [--checkpoint NOTE] "
                        "[--general]\n"
                        "       gridpointsd verify --proofs FILE --pubkey KEYS\n"
                        "KEYS: the JSON of /.well-known/gridpoints/checkpoint-keys (or\n"
                        "`gridpointsd audit-pubkey`), or verifier-key lines\n"
                        "NOTE: a checkpoint published earlier (audit.state_dir's "
                        "published-checkpoint.note):\n"
                        "      the export must extend it; one newer than the export is "
                        "reported\n"
                        "--general: read every line as general JSON (slower; for cross-checks)\n");
        return 2;
    }
    struct keyring *kr = xcalloc(1, sizeof *kr);
    int rc = 2;
    if (load_keys(pub, kr))
        rc = exp ? verify_export(exp, kr, published) : verify_proofs(proofs, kr);
    free(kr);
    return rc;
}
