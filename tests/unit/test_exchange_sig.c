/* test_exchange_sig.c -- the signing of exchange partner calls (merchant_auth.c's shared
 * helpers with "xp_" keys): the worked example of docs/EXCHANGE.md, byte for byte, through the
 * functions the server uses (mauth_authorization, mauth_reply_signature, mauth_reply_verify),
 * and the key id prefixes keeping merchant and partner keys apart. Run from the repository
 * root, as `make test` does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "merchant_auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char doc[128 * 1024];

/* The value of an indented "    name   value" line of the example. */
static void value_of(const char *ex, const char *name, char *out, size_t cap)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\n    %s ", name);
    const char *p = strstr(ex, pat);
    if (!p)
        fail_msg("docs/EXCHANGE.md example: no \"%s\"", name);
    p += strlen(pat);
    while (*p == ' ')
        p++;
    size_t n = strcspn(p, "\n");
    assert_true(n < cap);
    memcpy(out, p, n);
    out[n] = '\0';
}

static void test_doc_example(void **state)
{
    FILE *f = fopen("docs/EXCHANGE.md", "r");
    if (!f)
        fail_msg("docs/EXCHANGE.md not found: run the unit tests from the repository root");
    size_t n = fread(doc, 1, sizeof doc - 1, f);
    fclose(f);
    doc[n] = '\0';
    char *ex = strstr(doc, "## 8. Worked example");
    assert_non_null(ex);
    char key_id[32], secret[64], method[8], path[64], tss[16], nonce[64];
    value_of(ex, "key id", key_id, sizeof key_id);
    value_of(ex, "secret", secret, sizeof secret);
    value_of(ex, "method", method, sizeof method);
    value_of(ex, "path", path, sizeof path);
    value_of(ex, "ts", tss, sizeof tss);
    value_of(ex, "nonce", nonce, sizeof nonce);
    int64_t ts = strtoll(tss, NULL, 10);
    /* the fenced blocks: body, string to sign, Authorization, reply, response string, GP-Sig */
    char *blocks[6];
    char *p = ex;
    for (int i = 0; i < 6; i++) {
        char *open = strstr(p, "```");
        assert_non_null(open);
        open = strchr(open, '\n') + 1;
        char *close = strstr(open, "```");
        assert_non_null(close);
        *close = '\0';
        blocks[i] = open;
        p = close + 3;
    }
    for (int i = 0; i < 6; i++)
        if (i != 1 && i != 4) /* one-line blocks: without their newline */
            blocks[i][strcspn(blocks[i], "\n")] = '\0';

    size_t len;
    char *sts =
        mauth_string_to_sign(key_id, method, path, ts, nonce, blocks[0], strlen(blocks[0]), &len);
    assert_string_equal(sts, blocks[1]);
    free(sts);
    char auth[256];
    mauth_authorization(secret, strlen(secret), key_id, method, path, ts, nonce, blocks[0],
                        strlen(blocks[0]), auth, sizeof auth);
    assert_string_equal(auth, blocks[2]);

    struct mauth_header h;
    const char *code;
    assert_true(mauth_parse_header_prefix(auth, "xp_", &h, &code));
    assert_string_equal(h.key_id, key_id);
    assert_false(mauth_parse_header(auth, &h, &code)); /* not a merchant key */
    assert_string_equal(code, "malformed_signature");

    int64_t rts = strtoll(blocks[5] + 3, NULL, 10);
    char *rs = mauth_response_string(key_id, nonce, 200, rts, blocks[3], strlen(blocks[3]), &len);
    assert_string_equal(rs, blocks[4]);
    free(rs);
    char sig[96];
    mauth_reply_signature(secret, strlen(secret), key_id, nonce, 200, rts, blocks[3],
                          strlen(blocks[3]), sig, sizeof sig);
    assert_string_equal(sig, blocks[5]);
    assert_true(mauth_reply_verify(secret, strlen(secret), key_id, nonce, 200, sig, rts, 300,
                                   blocks[3], strlen(blocks[3])));
    /* anything else does not verify: another status, body, nonce, secret, or a stale reply */
    assert_false(mauth_reply_verify(secret, strlen(secret), key_id, nonce, 500, sig, rts, 300,
                                    blocks[3], strlen(blocks[3])));
    assert_false(
        mauth_reply_verify(secret, strlen(secret), key_id, nonce, 200, sig, rts, 300, "{}", 2));
    assert_false(mauth_reply_verify(secret, strlen(secret), key_id, "other-nonce-000001", 200, sig,
                                    rts, 300, blocks[3], strlen(blocks[3])));
    assert_false(mauth_reply_verify("wrong", 5, key_id, nonce, 200, sig, rts, 300, blocks[3],
                                    strlen(blocks[3])));
    assert_false(mauth_reply_verify(secret, strlen(secret), key_id, nonce, 200, sig, rts + 301, 300,
                                    blocks[3], strlen(blocks[3])));
    assert_false(mauth_reply_verify(secret, strlen(secret), key_id, nonce, 200, NULL, rts, 300,
                                    blocks[3], strlen(blocks[3])));
    assert_false(mauth_reply_verify(secret, strlen(secret), key_id, nonce, 200, "ts=1,sig=zz", rts,
                                    300, blocks[3], strlen(blocks[3])));
}

static void test_key_prefixes(void **state)
{
    assert_true(mauth_key_id_ok_prefix("xp_0123456789abcdef", "xp_"));
    assert_false(mauth_key_id_ok_prefix("mk_0123456789abcdef", "xp_"));
    assert_false(mauth_key_id_ok_prefix("xp_0123456789ABCDEF", "xp_"));
    assert_false(mauth_key_id_ok_prefix("xp_0123456789abcde", "xp_"));
    assert_true(mauth_key_id_ok("mk_0123456789abcdef"));
    assert_false(mauth_key_id_ok("xp_0123456789abcdef"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_doc_example),
        cmocka_unit_test(test_key_prefixes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
