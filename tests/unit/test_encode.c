/* test_encode.c -- the one hex and the one base64 encoder (crypto.h): RFC 4648 vectors,
 * strict decoding of what a peer sends, and session tokens in base64url. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "crypto.h"

#include <string.h>

static void test_b64_rfc4648_vectors(void **state)
{
    static const struct {
        const char *in, *out;
    } v[] = {{"", ""},
             {"f", "Zg=="},
             {"fo", "Zm8="},
             {"foo", "Zm9v"},
             {"foob", "Zm9vYg=="},
             {"fooba", "Zm9vYmE="},
             {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char out[16];
        size_t len = crypto_b64_encode(v[i].in, strlen(v[i].in), out);
        assert_int_equal(len, strlen(v[i].out));
        assert_string_equal(out, v[i].out);
        unsigned char back[16];
        size_t n = 99;
        assert_true(crypto_b64_decode(v[i].out, strlen(v[i].out), back, sizeof back, &n));
        assert_int_equal(n, strlen(v[i].in));
        assert_memory_equal(back, v[i].in, n);
    }
}

static void test_b64_all_bytes_round_trip(void **state)
{
    unsigned char in[256], back[256];
    char text[4 * 86 + 1];
    for (int i = 0; i < 256; i++)
        in[i] = (unsigned char)(255 - i);
    for (size_t n = 0; n <= sizeof in; n += 37) {
        size_t len = crypto_b64_encode(in, n, text);
        assert_int_equal(len, 4 * ((n + 2) / 3));
        size_t got;
        assert_true(crypto_b64_decode(text, len, back, sizeof back, &got));
        assert_int_equal(got, n);
        assert_memory_equal(back, in, n);
    }
}

/* EVP_DecodeBlock alone skips whitespace and takes '=' anywhere; ours does not. */
static void test_b64_decode_is_strict(void **state)
{
    static const char *const bad[] = {
        "Zm9",      /* not a multiple of 4 */
        "Zm=v",     /* padding inside */
        "Z!9v",     /* outside the alphabet */
        " Zm9v",    /* leading whitespace (length 5) */
        "Zm9v ",    /* trailing whitespace */
        "Zm9 ",     /* whitespace in place of a character */
        "Zm9-",     /* base64url letter */
        "=Zm9",     /* padding first */
        "====",     /* nothing but padding */
        "Zm9vY===", /* three padding characters */
        "Zg=a",     /* data after padding */
    };
    unsigned char b[16];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t n = 77;
        assert_false(crypto_b64_decode(bad[i], strlen(bad[i]), b, sizeof b, &n));
        assert_int_equal(n, 77); /* untouched */
    }
}

static void test_b64_decode_respects_max(void **state)
{
    unsigned char b[8];
    memset(b, 0xAA, sizeof b);
    size_t n;
    /* "foobar" is 6 bytes: fits in 6, not in 5, and nothing past max is written. */
    assert_false(crypto_b64_decode("Zm9vYmFy", 8, b, 5, &n));
    assert_int_equal(b[0], 0xAA);
    assert_true(crypto_b64_decode("Zm9vYmFy", 8, b, 6, &n));
    assert_int_equal(n, 6);
    assert_memory_equal(b, "foobar", 6);
    assert_int_equal(b[6], 0xAA);
    /* "Zm8=" is 2 bytes although EVP_DecodeBlock writes 3. */
    memset(b, 0xAA, sizeof b);
    assert_true(crypto_b64_decode("Zm8=", 4, b, 2, &n));
    assert_int_equal(n, 2);
    assert_int_equal(b[2], 0xAA);
}

static void test_token_is_base64url_without_padding(void **state)
{
    char a[CRYPTO_TOKEN_LEN + 1], b[CRYPTO_TOKEN_LEN + 1];
    bool seen_url_letter = false;
    for (int round = 0; round < 64; round++) {
        assert_true(crypto_token(a));
        assert_int_equal(strlen(a), CRYPTO_TOKEN_LEN);
        assert_int_equal(strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                   "0123456789-_"),
                         CRYPTO_TOKEN_LEN);
        seen_url_letter |= strpbrk(a, "-_") != NULL;
    }
    /* 64 tokens of 43 characters without '-' or '_' would mean the swap is missing. */
    assert_true(seen_url_letter);
    assert_true(crypto_token(b));
    assert_string_not_equal(a, b);
}

static void test_hex_round_trip(void **state)
{
    const unsigned char in[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
    char hex[2 * sizeof in + 1];
    crypto_hex(in, sizeof in, hex);
    assert_string_equal(hex, "00017f80abff");
    unsigned char back[sizeof in];
    assert_true(crypto_unhex(hex, back, sizeof back));
    assert_memory_equal(back, in, sizeof in);
    assert_true(crypto_unhex("00017F80ABFF", back, sizeof back));
    assert_false(crypto_unhex("00017f80abf", back, sizeof back));   /* short */
    assert_false(crypto_unhex("00017f80abff0", back, sizeof back)); /* long */
    assert_false(crypto_unhex("0x017f80abff", back, sizeof back));  /* not hex */
    assert_false(crypto_unhex(" 0017f80abff", back, sizeof back));  /* space */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64_rfc4648_vectors),
        cmocka_unit_test(test_b64_all_bytes_round_trip),
        cmocka_unit_test(test_b64_decode_is_strict),
        cmocka_unit_test(test_b64_decode_respects_max),
        cmocka_unit_test(test_token_is_base64url_without_padding),
        cmocka_unit_test(test_hex_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
