/* test_merchant_auth.c -- cmocka tests of the merchant signing helpers (merchant_auth.c), the
 * sealing of stored secrets and pay codes (merchant_crypto.c) and the webhook signature (the
 * webhook address policy is in test_netaddr.c). Table-driven where the cases are data.
 * test_doc_example reads the worked example of docs/MERCHANTS.md and checks it against these
 * functions, so that the document cannot drift from the server (run from the repository root, as
 * `make test` does). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "crypto.h"
#include "merchant_auth.h"
#include "merchant_crypto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define SIG64 "c3fffbc9cb5f753d6429c530434943b285fece7c51991eb49a726d6138bf2064"

/* ---- the Authorization header ---- */

static void test_parse_header(void **state)
{
    static const struct {
        const char *value;
        bool ok;
        const char *code;
    } cases[] = {
        {MAUTH_SCHEME " key=mk_0123456789abcdef,ts=1795000000,nonce=6f1d3c0a9b8e7d2c,sig=" SIG64,
         true, NULL},
        {MAUTH_SCHEME " key=mk_0123456789abcdef,ts=1,nonce=abcdefghijklmnop_-AZ,sig=" SIG64, true,
         NULL},
        {NULL, false, "missing_signature"},
        {"", false, "missing_signature"},
        {"Bearer abc", false, "missing_signature"},
        {"GP1-HMAC-SHA256key=mk_0123456789abcdef", false, "missing_signature"},
        {MAUTH_SCHEME " ts=1795000000,key=mk_0123456789abcdef,nonce=6f1d3c0a9b8e7d2c,sig=" SIG64,
         false, "malformed_signature"},
        {MAUTH_SCHEME " key=mk_0123456789ABCDEF,ts=1795000000,nonce=6f1d3c0a9b8e7d2c,sig=" SIG64,
         false, "malformed_signature"},
        {MAUTH_SCHEME " key=mk_0123456789abcde,ts=1795000000,nonce=6f1d3c0a9b8e7d2c,sig=" SIG64,
         false, "malformed_signature"},
        {MAUTH_SCHEME " key=mk_0123456789abcdef,ts=01795000000,nonce=6f1d3c0a9b8e7d2c,sig=" SIG64,
         false, "malformed_signature"},
        {MAUTH_SCHEME " key=mk_0123456789abcdef,ts=-5,nonce=6f1d3c0a9b8e7d2c,sig=" SIG64, false,
         "malformed_signature"},
        {MAUTH_SCHEME " key=mk_0123456789abcdef,ts=1795000000,nonce=short,sig=" SIG64, false,
         "malformed_signature"},
        {MAUTH_SCHEME " key=mk_0123456789abcdef,ts=1795000000,nonce=6f1d3c0a9b8e7d2c!,sig=" SIG64,
         false, "malformed_signature"},
        {MAUTH_SCHEME " key=mk_0123456789abcdef,ts=1795000000,nonce=6f1d3c0a9b8e7d2c,sig=" SIG64
                      "0",
         false, "malformed_signature"},
        {MAUTH_SCHEME " key=mk_0123456789abcdef,ts=1795000000,nonce=6f1d3c0a9b8e7d2c,sig="
                      "C3fffbc9cb5f753d6429c530434943b285fece7c51991eb49a726d6138bf2064",
         false, "malformed_signature"},
        {MAUTH_SCHEME " key=mk_0123456789abcdef,ts=1795000000,nonce=6f1d3c0a9b8e7d2c,sig=" SIG64
                      ",x=1",
         false, "malformed_signature"},
        {MAUTH_SCHEME " key=mk_0123456789abcdef, ts=1795000000,nonce=6f1d3c0a9b8e7d2c,sig=" SIG64,
         false, "malformed_signature"},
        {MAUTH_SCHEME " key=mk_0123456789abcdef,ts=1795000000,nonce=6f1d3c0a9b8e7d2c", false,
         "malformed_signature"},
        {MAUTH_SCHEME
         " key=mk_0123456789abcdef,ts=1795000000,ts=1795000000,nonce=6f1d3c0a9b8e7d2c,sig=" SIG64,
         false, "malformed_signature"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct mauth_header h;
        const char *code = NULL;
        bool ok = mauth_parse_header(cases[i].value, &h, &code);
        if (ok != cases[i].ok)
            fail_msg("case %zu: %s: expected %s", i, cases[i].value ? cases[i].value : "(null)",
                     cases[i].ok ? "ok" : cases[i].code);
        if (!ok)
            assert_string_equal(code, cases[i].code);
    }
    struct mauth_header h;
    const char *code;
    assert_true(mauth_parse_header(cases[0].value, &h, &code));
    assert_string_equal(h.key_id, "mk_0123456789abcdef");
    assert_true(h.ts == 1795000000);
    assert_string_equal(h.nonce, "6f1d3c0a9b8e7d2c");
    char hex[65];
    crypto_hex(h.sig, 32, hex);
    assert_string_equal(hex, SIG64);
}

static void test_timestamp_window(void **state)
{
    static const struct {
        int64_t now, ts;
        int window;
        bool ok;
    } cases[] = {
        {10000, 10000, 300, true},  {10000, 9701, 300, true},  /* 299 s old */
        {10000, 9700, 300, true},   {10000, 9699, 300, false}, /* 300 ok, 301 not */
        {10000, 10299, 300, true},  {10000, 10300, 300, true}, /* ahead */
        {10000, 10301, 300, false}, {10000, 0, 300, false},    {INT64_MAX, 0, 300, false},
        {0, INT64_MAX, 300, false}, {10000, 10000, -1, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (mauth_ts_ok(cases[i].now, cases[i].ts, cases[i].window) != cases[i].ok)
            fail_msg("case %zu", i);
}

static void test_sig_equal_and_key_ids(void **state)
{
    unsigned char a[32], b[32];
    memset(a, 7, sizeof a);
    memcpy(b, a, sizeof b);
    assert_true(mauth_sig_equal(a, b));
    for (int i = 0; i < 32; i += 31) {
        b[i] ^= 1;
        assert_false(mauth_sig_equal(a, b));
        b[i] ^= 1;
    }
    assert_true(mauth_key_id_ok("mk_0123456789abcdef"));
    assert_false(mauth_key_id_ok("mk_0123456789abcdeg"));
    assert_false(mauth_key_id_ok("mk_0123456789abcdef0"));
    assert_false(mauth_key_id_ok("xk_0123456789abcdef"));
    assert_false(mauth_key_id_ok(NULL));
}

/* One byte changed anywhere in method, path, query or body changes the signature. */
static void test_signature_covers_everything(void **state)
{
    const char *secret = "sk_x";
    const char body[] = "{\"amount\":60}";
    size_t n;
    unsigned char base[32], other[32];
    char *s = mauth_string_to_sign("mk_0123456789abcdef", "POST", "/merchant/v1/charges?a=1", 5,
                                   "nonce-nonce-nonce", body, strlen(body), &n);
    mauth_sign(secret, strlen(secret), s, n, base);
    free(s);
    const char *variants[][3] = {
        {"PUT", "/merchant/v1/charges?a=1", "{\"amount\":60}"},
        {"POST", "/merchant/v1/Charges?a=1", "{\"amount\":60}"},
        {"POST", "/merchant/v1/charges?a=2", "{\"amount\":60}"},
        {"POST", "/merchant/v1/charges", "{\"amount\":60}"},
        {"POST", "/merchant/v1/charges?a=1", "{\"amount\":61}"},
        {"POST", "/merchant/v1/charges?a=1", "{\"amount\": 60}"},
    };
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        s = mauth_string_to_sign("mk_0123456789abcdef", variants[i][0], variants[i][1], 5,
                                 "nonce-nonce-nonce", variants[i][2], strlen(variants[i][2]), &n);
        mauth_sign(secret, strlen(secret), s, n, other);
        free(s);
        if (mauth_sig_equal(base, other))
            fail_msg("variant %zu signs the same", i);
    }
    /* no body and an empty body are the same thing */
    char *a = mauth_string_to_sign("mk_0123456789abcdef", "GET", "/x", 5, "n", NULL, 0, &n);
    char *b = mauth_string_to_sign("mk_0123456789abcdef", "GET", "/x", 5, "n", "", 0, &n);
    assert_string_equal(a, b);
    assert_non_null(
        strstr(a, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"));
    free(a);
    free(b);
}

/* ---- the worked example of docs/MERCHANTS.md ---- */

struct kv_block {
    char keys[16][32];
    char values[16][512];
    int n;
};

static const char *kv_get(const struct kv_block *b, const char *key)
{
    for (int i = 0; i < b->n; i++)
        if (!strcmp(b->keys[i], key))
            return b->values[i];
    fail_msg("docs/MERCHANTS.md example: no \"%s\"", key);
    return NULL;
}

static void parse_kv(const char *text, struct kv_block *b)
{
    b->n = 0;
    const char *line = text;
    while (*line && b->n < 16) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        const char *eq = memchr(line, '=', len);
        if (eq && eq > line + 1 && eq[-1] == ' ' && eq + 1 < line + len && eq[1] == ' ') {
            size_t kl = (size_t)(eq - line);
            while (kl > 0 && line[kl - 1] == ' ')
                kl--;
            size_t vl = len - (size_t)(eq + 2 - line);
            assert_true(kl < sizeof b->keys[0] && vl < sizeof b->values[0]);
            memcpy(b->keys[b->n], line, kl);
            b->keys[b->n][kl] = '\0';
            memcpy(b->values[b->n], eq + 2, vl);
            b->values[b->n][vl] = '\0';
            b->n++;
        }
        line = end ? end + 1 : line + len;
    }
}

static void test_doc_example(void **state)
{
    FILE *f = fopen("docs/MERCHANTS.md", "r");
    if (!f)
        fail_msg("docs/MERCHANTS.md not found: run the unit tests from the repository root");
    static char doc[256 * 1024];
    size_t n = fread(doc, 1, sizeof doc - 1, f);
    fclose(f);
    doc[n] = '\0';
    char *begin = strstr(doc, "<!-- signing-example:begin -->");
    char *end = strstr(doc, "<!-- signing-example:end -->");
    assert_non_null(begin);
    assert_non_null(end);
    *end = '\0';
    /* The text blocks of the example, in order: request values, string to sign, response
     * values, response string. */
    char *blocks[4];
    char *p = begin;
    for (int i = 0; i < 4; i++) {
        char *open = strstr(p, "```text\n");
        assert_non_null(open);
        open += strlen("```text\n");
        char *close = strstr(open, "```");
        assert_non_null(close);
        *close = '\0';
        blocks[i] = open;
        p = close + 3;
    }
    struct kv_block req, resp;
    parse_kv(blocks[0], &req);
    parse_kv(blocks[2], &resp);
    const char *key_id = kv_get(&req, "key_id"), *secret = kv_get(&req, "secret");
    const char *body = kv_get(&req, "body"), *nonce = kv_get(&req, "nonce");
    int64_t ts = strtoll(kv_get(&req, "ts"), NULL, 10);

    unsigned char d[32];
    char hex[65];
    crypto_sha256(body, strlen(body), d);
    crypto_hex(d, 32, hex);
    assert_string_equal(hex, kv_get(&req, "body_sha256"));

    size_t len;
    char *sts = mauth_string_to_sign(key_id, kv_get(&req, "method"), kv_get(&req, "uri"), ts, nonce,
                                     body, strlen(body), &len);
    assert_string_equal(sts, blocks[1]);
    mauth_sign(secret, strlen(secret), sts, len, d);
    free(sts);
    crypto_hex(d, 32, hex);
    assert_string_equal(hex, kv_get(&req, "signature"));

    struct mauth_header h;
    const char *code;
    assert_true(mauth_parse_header(kv_get(&req, "authorization"), &h, &code));
    assert_string_equal(h.key_id, key_id);
    assert_true(h.ts == ts);
    assert_string_equal(h.nonce, nonce);
    assert_true(mauth_sig_equal(h.sig, d));

    const char *rbody = kv_get(&resp, "response_body");
    int64_t rts = strtoll(kv_get(&resp, "response_ts"), NULL, 10);
    char *rs = mauth_response_string(key_id, nonce, atoi(kv_get(&resp, "status")), rts, rbody,
                                     strlen(rbody), &len);
    assert_string_equal(rs, blocks[3]);
    mauth_sign(secret, strlen(secret), rs, len, d);
    free(rs);
    crypto_hex(d, 32, hex);
    assert_string_equal(hex, kv_get(&resp, "response_signature"));
    char gp[128];
    snprintf(gp, sizeof gp, "ts=%lld,sig=%s", (long long)rts, hex);
    assert_string_equal(gp, kv_get(&resp, "gp_signature"));
}

/* ---- sealed secrets ---- */

static void test_seal_open(void **state)
{
    unsigned char kek[32], other[32];
    assert_true(
        mcrypto_parse_kek("0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0", kek));
    assert_false(mcrypto_parse_kek("0f1e", other));
    assert_false(mcrypto_parse_kek(
        "zz1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0", other));
    assert_false(mcrypto_parse_kek(NULL, other));
    memcpy(other, kek, 32);
    other[5] ^= 0x40;
    const char *secret = "sk_cEOrMVWY_kiMwwoJKswrJweVcER32SUN_sf6aoXEgVM";
    char *a = NULL, *b = NULL, out[128];
    size_t n;
    assert_true(mcrypto_seal(kek, "mk_0123456789abcdef", secret, strlen(secret), &a));
    assert_true(mcrypto_seal(kek, "mk_0123456789abcdef", secret, strlen(secret), &b));
    assert_string_not_equal(a, b); /* a fresh IV each time */
    assert_int_equal(strncmp(a, "v1.", 3), 0);
    assert_null(strstr(a, "sk_"));
    assert_true(mcrypto_open(kek, "mk_0123456789abcdef", a, out, sizeof out, &n));
    assert_string_equal(out, secret);
    assert_int_equal(n, strlen(secret));
    assert_false(mcrypto_open(kek, "mk_fedcba9876543210", a, out, sizeof out, &n)); /* other row */
    assert_false(
        mcrypto_open(other, "mk_0123456789abcdef", a, out, sizeof out, &n)); /* other key */
    assert_false(mcrypto_open(kek, "mk_0123456789abcdef", a, out, 10, &n));  /* too long */
    for (size_t i = 3; i < strlen(a); i += 7) {                              /* tampering */
        char saved = a[i];
        a[i] = a[i] == '0' ? '1' : '0';
        if (mcrypto_open(kek, "mk_0123456789abcdef", a, out, sizeof out, &n))
            fail_msg("tampered byte %zu accepted", i);
        a[i] = saved;
    }
    assert_false(mcrypto_open(kek, "x", "v1.00", out, sizeof out, &n));
    assert_false(mcrypto_open(kek, "x", "v2.00", out, sizeof out, &n));
    assert_false(mcrypto_open(kek, "x", NULL, out, sizeof out, &n));
    free(a);
    free(b);
}

/* ---- pay codes ---- */

static void test_paycodes(void **state)
{
    const char *secret = "test-paycode-secret-0123456789abcdef";
    char code[MCRYPTO_PAYCODE_MAX], nonce[MCRYPTO_NONCE_HEX_LEN + 1];
    int64_t worker, exp;
    assert_true(mcrypto_paycode_make(secret, "c4ebbe480d6980cd2cdbd6d6ade27015", 1201, 1795000050,
                                     code, sizeof code));
    assert_int_equal(strncmp(code, "gpc1.c4ebbe480d6980cd2cdbd6d6ade27015.1201.1795000050.", 54),
                     0);
    assert_true(mcrypto_paycode_check(secret, code, nonce, &worker, &exp));
    assert_string_equal(nonce, "c4ebbe480d6980cd2cdbd6d6ade27015");
    assert_true(worker == 1201 && exp == 1795000050);
    assert_false(
        mcrypto_paycode_check("another-secret-0123456789abcdefxx", code, nonce, &worker, &exp));
    /* Every single-character change is refused (the worker id, the expiry, the nonce, the MAC). */
    size_t len = strlen(code);
    for (size_t i = 0; i < len; i++) {
        char saved = code[i];
        code[i] = saved == '1' ? '2' : '1';
        if (mcrypto_paycode_check(secret, code, nonce, &worker, &exp))
            fail_msg("changed byte %zu accepted", i);
        code[i] = saved;
    }
    static const char *bad[] = {
        "", "gpc1.", "gpc2.c4ebbe480d6980cd2cdbd6d6ade27015.1.1.00000000000000000000000000000000",
        "gpc1.c4ebbe480d6980cd2cdbd6d6ade27015.01.1.00000000000000000000000000000000",
        "gpc1.c4ebbe480d6980cd2cdbd6d6ade27015.1.1.0.00000000000000000000000000000000"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(mcrypto_paycode_check(secret, bad[i], nonce, &worker, &exp));
    assert_false(mcrypto_paycode_make(secret, "short", 1, 1, code, sizeof code));
    assert_false(
        mcrypto_paycode_make(secret, "c4ebbe480d6980cd2cdbd6d6ade27015", 0, 1, code, sizeof code));
}

static void test_webhook_signature(void **state)
{
    char out[128];
    const char body[] = "{\"id\":\"evt_1\"}";
    mcrypto_webhook_signature("whsec_test", 10, 1795000000, body, strlen(body), out, sizeof out);
    /* hmac.new(b"whsec_test", b'1795000000.{"id":"evt_1"}', hashlib.sha256).hexdigest() */
    assert_string_equal(
        out, "t=1795000000,v1=9768205fbb644a6a645cdd13f225c6791ed91580e4d16c14b9a8e73cd4ba4393");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_header),
        cmocka_unit_test(test_timestamp_window),
        cmocka_unit_test(test_sig_equal_and_key_ids),
        cmocka_unit_test(test_signature_covers_everything),
        cmocka_unit_test(test_doc_example),
        cmocka_unit_test(test_seal_open),
        cmocka_unit_test(test_paycodes),
        cmocka_unit_test(test_webhook_signature),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
