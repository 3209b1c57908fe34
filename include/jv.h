/* jv.h -- JSON input validation on top of jansson ("jv" = JSON validate; jansson owns json_*).
 *
 * Parsing is strict: the top level must be an object, duplicate keys are refused, nesting depth
 * and the total number of array elements and object members are bounded (checked by a scan of
 * the raw bytes before jansson allocates anything), and integers that do not fit int64 are
 * refused rather than rounded. Field getters record the first failure in a struct jv_err that
 * the HTTP layer renders as {"error":{"code","message","field"}}. */
#ifndef GP_JV_H
#define GP_JV_H

#include "common.h"
#include "status.h"

#include <jansson.h>

struct jv_err {
    enum status st; /* ST_OK until the first failure */
    char code[48];  /* machine code, e.g. "missing_field" */
    char field[64];
    char message[192];
};

/* Parses a request body. On success *out is a new reference to an object. */
bool jv_parse(const char *buf, size_t len, int max_depth, int max_items, json_t **out,
              struct jv_err *e) MUSTCHECK;

/* Records a failure unless one is already recorded; returns false for `return jv_fail(...)`. */
bool jv_fail(struct jv_err *e, enum status st, const char *code, const char *field, const char *fmt,
             ...) PRINTF_LIKE(5, 6);

/* Refuses members of obj not listed in allowed (NULL-terminated): 400 unknown_field. */
bool jv_only(json_t *obj, const char *const *allowed, struct jv_err *e) MUSTCHECK;

/* Getters: when the member is absent, a required one fails with missing_field and an optional
 * one leaves *out untouched and returns true (check jv_has if you need to know). JSON null
 * counts as absent for optional members. Wrong type -> invalid_type; bounds -> out_of_range. */
bool jv_has(json_t *obj, const char *key);
bool jv_i64(json_t *obj, const char *key, bool required, int64_t min, int64_t max, int64_t *out,
            struct jv_err *e) MUSTCHECK;
bool jv_f64(json_t *obj, const char *key, bool required, double min, double max, double *out,
            struct jv_err *e) MUSTCHECK;
bool jv_bool(json_t *obj, const char *key, bool required, bool *out, struct jv_err *e) MUSTCHECK;
/* Length bounds are in Unicode code points; *out points into obj (valid while obj lives). */
bool jv_str(json_t *obj, const char *key, bool required, size_t minlen, size_t maxlen,
            const char **out, struct jv_err *e) MUSTCHECK;
/* An RFC 3339 timestamp ("2026-11-21T08:00:00Z" or with an offset). */
bool jv_time(json_t *obj, const char *key, bool required, const char **out,
             struct jv_err *e) MUSTCHECK;
/* An array of strings, each 1..maxlen code points, at most maxn elements, no duplicates. */
bool jv_str_array(json_t *obj, const char *key, bool required, size_t maxn, size_t maxlen,
                  json_t **out, struct jv_err *e) MUSTCHECK;

/* True when s has the shape of an RFC 3339 time with a zone (see jv_time). */
bool jv_is_time(const char *s);
/* Validates a query-string or path integer (decimal, no sign unless min < 0). */
bool jv_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);
/* Number of code points in a UTF-8 string (jansson guarantees valid UTF-8 for parsed input). */
size_t jv_utf8_len(const char *s);

#endif
