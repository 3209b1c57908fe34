/* test_care_crypto.c -- cmocka tests of the sealing, lookup hashes, masks and reply opening of
 * the residents' personal data (care_crypto.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "care_crypto.h"
#include "config.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static char kek_hex[] = "0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";
static char empty[] = "", short_key[] = "zz";

static void keys(struct care_keys *k)
{
    struct config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.merchant_key_encryption_key = kek_hex;
    assert_true(care_keys_derive(&cfg, k));
}

static void test_derive_needs_a_key(void **state)
{
    struct config cfg;
    struct care_keys k;
    memset(&cfg, 0, sizeof cfg);
    cfg.merchant_key_encryption_key = empty;
    assert_false(care_keys_derive(&cfg, &k));
    cfg.merchant_key_encryption_key = short_key;
    assert_false(care_keys_derive(&cfg, &k));
    keys(&k);
    /* the two purposes get different keys */
    assert_memory_not_equal(k.seal, k.lookup, 32);
}

static void test_seal_open_bound_to_field(void **state)
{
    struct care_keys k;
    keys(&k);
    char *a = NULL, *b = NULL, out[256];
    assert_true(care_seal(&k, "name", "王秀英", &a));
    assert_true(care_seal(&k, "name", "王秀英", &b));
    assert_string_not_equal(a, b); /* a random IV per value */
    assert_null(strstr(a, "王"));
    assert_true(care_open(&k, "name", a, out, sizeof out));
    assert_string_equal(out, "王秀英");
    assert_false(care_open(&k, "phone", a, out, sizeof out)); /* another field */
    a[strlen(a) - 1] = a[strlen(a) - 1] == '0' ? '1' : '0';   /* tampered */
    assert_false(care_open(&k, "name", a, out, sizeof out));
    assert_false(care_open(&k, "name", "v1.zz", out, sizeof out));
    assert_false(care_open(&k, "name", "", out, sizeof out));
    free(a);
    free(b);
    char *big = malloc(CARE_FIELD_MAX + 2);
    memset(big, 'x', CARE_FIELD_MAX + 1);
    big[CARE_FIELD_MAX + 1] = '\0';
    char *c = NULL;
    assert_false(care_seal(&k, "notes", big, &c));
    free(big);
}

static void test_lookup_hash_normalises(void **state)
{
    struct care_keys k;
    keys(&k);
    char a[65], b[65], c[65];
    care_lookup_hash(&k, "phone", "139 1234-5678", a);
    care_lookup_hash(&k, "phone", "13912345678", b);
    assert_string_equal(a, b);
    care_lookup_hash(&k, "id_number", "51010419450101123x", a);
    care_lookup_hash(&k, "id_number", "51010419450101123X", b);
    assert_string_equal(a, b);
    care_lookup_hash(&k, "phone", "51010419450101123X", c); /* the field is part of it */
    assert_string_not_equal(b, c);
    assert_int_equal(strlen(a), 64);
}

static void test_masks(void **state)
{
    static const struct {
        const char *field, *in, *out;
    } cases[] = {
        {"name", "王秀英", "王**"},
        {"name", "王", "****"},
        {"phone", "13912345678", "139****5678"},
        {"phone", "12345", "1****"},
        {"address", "锦江区东风路12号3栋", "锦江区东风路****"},
        {"address", "短", "****"},
        {"id_number", "51010419450101123X", "5****"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[256];
        care_mask(cases[i].field, cases[i].in, out, sizeof out);
        assert_string_equal(out, cases[i].out);
    }
    char tiny[4];
    care_mask("name", "王秀英", tiny, sizeof tiny); /* never past the buffer */
    assert_true(strlen(tiny) < sizeof tiny);
}

static void test_open_json(void **state)
{
    struct care_keys k;
    keys(&k);
    char *n = NULL, *p = NULL;
    assert_true(care_seal(&k, "name", "李建国", &n));
    assert_true(care_seal(&k, "phone", "13900001111", &p));
    json_t *j = json_pack("{s:[{s:s, s:s, s:i}], s:{s:s, s:s}}", "items", "name_sealed", n,
                          "phone_sealed_masked", p, "id", 7, "one", "name_sealed_masked", n,
                          "notes_sealed", "v1.00");
    assert_int_equal(care_open_json(&k, j), 1); /* the bad one */
    json_t *item = json_array_get(json_object_get(j, "items"), 0);
    assert_string_equal(json_string_value(json_object_get(item, "name")), "李建国");
    assert_string_equal(json_string_value(json_object_get(item, "phone")), "139****1111");
    assert_null(json_object_get(item, "name_sealed"));
    json_t *one = json_object_get(j, "one");
    assert_string_equal(json_string_value(json_object_get(one, "name")), "李**");
    assert_true(json_is_null(json_object_get(one, "notes")));
    json_decref(j);
    free(n);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_derive_needs_a_key),
        cmocka_unit_test(test_seal_open_bound_to_field),
        cmocka_unit_test(test_lookup_hash_normalises),
        cmocka_unit_test(test_masks),
        cmocka_unit_test(test_open_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
