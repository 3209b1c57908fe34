/* test_wechat.c -- how WeChat's replies are read (wechat_classify, wechat.c), table-driven:
 * both contracts' successes (jscode2session with session_key, oauth2/access_token with
 * access_token), each errcode the API maps, and every malformed or failed reply, which must
 * come out as 503 wechat_unavailable and never as a 500 or a login. The black-box side, over
 * real sockets against a peer that speaks both contracts, is tests/api/test_wechat.py. */
#include "status.h"
#include "wechat.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

struct reply_case {
    bool got_response;
    int status;
    const char *body;
    enum status want;
    const char *want_code; /* NULL with ST_OK */
    const char *openid;    /* with ST_OK */
    const char *unionid;   /* with ST_OK; "" = none */
};

static const struct reply_case cases[] = {
    /* successes */
    {true, 200, "{\"openid\":\"oAbC_12-x\",\"session_key\":\"c2VjcmV0\"}", ST_OK, NULL, "oAbC_12-x",
     ""},
    {true, 200, "{\"openid\":\"o1\",\"session_key\":\"k\",\"unionid\":\"u-9\"}", ST_OK, NULL, "o1",
     "u-9"},
    {true, 200,
     "{\"access_token\":\"AT\",\"expires_in\":7200,\"refresh_token\":\"RT\",\"openid\":\"o2\","
     "\"scope\":\"snsapi_base\"}",
     ST_OK, NULL, "o2", ""},
    {true, 200, "{\"errcode\":0,\"errmsg\":\"ok\",\"openid\":\"o3\",\"unionid\":null}", ST_OK, NULL,
     "o3", ""},
    /* WeChat's errors */
    {true, 200, "{\"errcode\":40029,\"errmsg\":\"invalid code\"}", ST_UNAUTHORIZED,
     "wechat_code_invalid", NULL, NULL},
    {true, 200, "{\"errcode\":40163,\"errmsg\":\"code been used\"}", ST_UNAUTHORIZED,
     "wechat_code_invalid", NULL, NULL},
    {true, 200, "{\"errcode\":45011,\"errmsg\":\"api minute-quota reach limit\"}", ST_RATE_LIMITED,
     "wechat_rate_limited", NULL, NULL},
    {true, 200, "{\"errcode\":40226,\"errmsg\":\"high risk user\"}", ST_FORBIDDEN,
     "wechat_user_blocked", NULL, NULL},
    {true, 200, "{\"errcode\":-1,\"errmsg\":\"system error\"}", ST_UNAVAILABLE,
     "wechat_unavailable", NULL, NULL},
    {true, 200, "{\"errcode\":40013,\"errmsg\":\"invalid appid\"}", ST_UNAVAILABLE,
     "wechat_unavailable", NULL, NULL},
    {true, 200, "{\"errcode\":12345}", ST_UNAVAILABLE, "wechat_unavailable", NULL, NULL},
    /* an errcode wins over an openid next to it */
    {true, 200, "{\"errcode\":40029,\"openid\":\"o4\"}", ST_UNAUTHORIZED, "wechat_code_invalid",
     NULL, NULL},
    /* failures and nonsense */
    {false, 0, NULL, ST_UNAVAILABLE, "wechat_unavailable", NULL, NULL},
    {true, 500, "{\"openid\":\"o5\"}", ST_UNAVAILABLE, "wechat_unavailable", NULL, NULL},
    {true, 502, "bad gateway", ST_UNAVAILABLE, "wechat_unavailable", NULL, NULL},
    {true, 302, "", ST_UNAVAILABLE, "wechat_unavailable", NULL, NULL},
    {true, 404, "{\"errcode\":40029}", ST_UNAVAILABLE, "wechat_unavailable", NULL, NULL},
    {true, 200, "", ST_UNAVAILABLE, "wechat_unavailable", NULL, NULL},
    {true, 200, "<html>busy</html>", ST_UNAVAILABLE, "wechat_unavailable", NULL, NULL},
    {true, 200, "[\"openid\"]", ST_UNAVAILABLE, "wechat_unavailable", NULL, NULL},
    {true, 200, "{\"openid\":\"o6\"", ST_UNAVAILABLE, "wechat_unavailable", NULL, NULL},
    {true, 200, "{}", ST_UNAVAILABLE, "wechat_unavailable", NULL, NULL},
    {true, 200, "{\"openid\":\"\"}", ST_UNAVAILABLE, "wechat_unavailable", NULL, NULL},
    {true, 200, "{\"openid\":12}", ST_UNAVAILABLE, "wechat_unavailable", NULL, NULL},
    {true, 200, "{\"openid\":\"a b\"}", ST_UNAVAILABLE, "wechat_unavailable", NULL, NULL},
    {true, 200, "{\"openid\":\"o7\",\"unionid\":\"x/y\"}", ST_UNAVAILABLE, "wechat_unavailable",
     NULL, NULL},
    {true, 200, "{\"openid\":\"o8\",\"unionid\":5}", ST_UNAVAILABLE, "wechat_unavailable", NULL,
     NULL},
    {true, 200, "{\"errcode\":\"40029\"}", ST_UNAVAILABLE, "wechat_unavailable", NULL, NULL},
    {true, 200, "{\"errcode\":1.5}", ST_UNAVAILABLE, "wechat_unavailable", NULL, NULL},
    {true, 200, "{\"openid\":\"o9\",\"openid\":\"o10\"}", ST_UNAVAILABLE, "wechat_unavailable",
     NULL, NULL},
};

static void test_classify_table(void **state)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct reply_case *c = &cases[i];
        struct wechat_identity id;
        memset(&id, 0x5a, sizeof id);
        wechat_classify(c->got_response, c->status, c->body, c->body ? strlen(c->body) : 0, &id);
        if (id.st != c->want)
            fail_msg("case %zu (%s): status %d, want %d", i, c->body ? c->body : "(none)",
                     (int)id.st, (int)c->want);
        if (c->want == ST_OK) {
            assert_null(id.code);
            assert_string_equal(id.openid, c->openid);
            assert_string_equal(id.unionid, c->unionid);
        } else {
            assert_non_null(id.code);
            if (strcmp(id.code, c->want_code) != 0)
                fail_msg("case %zu: code %s, want %s", i, id.code, c->want_code);
            assert_string_equal(id.openid, "");
        }
        assert_non_null(id.detail);
    }
}

/* An id of exactly the longest length passes; one byte more is malformed. */
static void test_classify_lengths(void **state)
{
    char body[400], id128[WECHAT_ID_MAX + 2];
    memset(id128, 'a', WECHAT_ID_MAX);
    id128[WECHAT_ID_MAX] = '\0';
    struct wechat_identity id;
    snprintf(body, sizeof body, "{\"openid\":\"%s\"}", id128);
    wechat_classify(true, 200, body, strlen(body), &id);
    assert_int_equal(id.st, ST_OK);
    assert_int_equal(strlen(id.openid), WECHAT_ID_MAX);
    id128[WECHAT_ID_MAX] = 'a';
    id128[WECHAT_ID_MAX + 1] = '\0';
    snprintf(body, sizeof body, "{\"openid\":\"%s\"}", id128);
    wechat_classify(true, 200, body, strlen(body), &id);
    assert_int_equal(id.st, ST_UNAVAILABLE);
    /* a body with a NUL inside is not JSON */
    static const char nul[] = "{\"openid\":\"o\"}\0trailing";
    wechat_classify(true, 200, nul, sizeof nul - 1, &id);
    assert_int_equal(id.st, ST_UNAVAILABLE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify_table),
        cmocka_unit_test(test_classify_lengths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
