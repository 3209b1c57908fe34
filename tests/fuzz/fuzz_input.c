/* fuzz_input.c -- libFuzzer target for what an attacker controls first: the request body
 * (jv_parse with the server's limits, then the typed getters) and the request path
 * (router_match against the real route table). Built and run by `make fuzz`; `make test` runs
 * it briefly. Any crash, leak or sanitizer report fails the run. */
#include "jv.h"
#include "router.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *j = NULL;
    struct jv_err e = {0};
    if (jv_parse((const char *)data, size, 16, 1000, &j, &e)) {
        int64_t i;
        double d;
        bool b;
        const char *s;
        json_t *arr;
        static const char *const allowed[] = {"a", "b", "c", NULL};
        struct jv_err e2 = {0};
        (void)jv_only(j, allowed, &e2);
        memset(&e2, 0, sizeof e2);
        (void)jv_i64(j, "a", false, -100, 100, &i, &e2);
        (void)jv_f64(j, "b", false, -1e9, 1e9, &d, &e2);
        (void)jv_bool(j, "c", false, &b, &e2);
        (void)jv_str(j, "a", false, 1, 10, &s, &e2);
        (void)jv_time(j, "b", false, &s, &e2);
        (void)jv_str_array(j, "c", false, 5, 10, &arr, &e2);
        json_decref(j);
    }
    /* The same bytes as a path. */
    char path[512];
    size_t n = size < sizeof path - 2 ? size : sizeof path - 2;
    path[0] = '/';
    memcpy(path + 1, data, n);
    path[n + 1] = '\0';
    const struct route *r;
    struct router_params p;
    char allow[64];
    static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};
    (void)router_match(routes_table, routes_count, methods[size % 5], path, &r, &p, allow,
                       sizeof allow);
    return 0;
}
