/* jv.c -- strict JSON parsing and typed field access for request bodies. */
#include "jv.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool jv_fail(struct jv_err *e, enum status st, const char *code, const char *field, const char *fmt,
             ...)
{
    if (e->st != ST_OK)
        return false;
    e->st = st;
    snprintf(e->code, sizeof e->code, "%s", code);
    snprintf(e->field, sizeof e->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return false;
}

/* jansson bounds depth only at a compile-time 2048, so we scan first: it costs one pass over
 * bytes that are already in memory and it refuses a 10^4-deep or 10^6-element body before
 * jansson builds a tree for it. */
static bool prescan(const char *buf, size_t len, int max_depth, int max_items, struct jv_err *e)
{
    int depth = 0;
    long items = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
            continue;
        }
        switch (c) {
        case '"':
            in_str = true;
            break;
        case '{':
        case '[':
            if (++depth > max_depth)
                return jv_fail(e, ST_INVALID, "json_too_deep", NULL,
                               "JSON nesting deeper than %d levels", max_depth);
            items++;
            break;
        case '}':
        case ']':
            depth--;
            break;
        case ',':
            items++;
            break;
        default:
            break;
        }
        if (items > max_items)
            return jv_fail(e, ST_INVALID, "json_too_large", NULL, "JSON has more than %d elements",
                           max_items);
    }
    return true;
}

bool jv_parse(const char *buf, size_t len, int max_depth, int max_items, json_t **out,
              struct jv_err *e)
{
    *out = NULL;
    if (len == 0)
        return jv_fail(e, ST_INVALID, "invalid_json", NULL, "request body is empty");
    if (!prescan(buf, len, max_depth, max_items, e))
        return false;
    json_error_t jerr;
    /* JSON_DECODE_ANY: a valid document that is not an object ("42", "\"x\"") is a wrong shape,
     * not malformed JSON, and gets the message that says so (JSONTestSuite y_ cases). */
    json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!j) {
        const char *code = strstr(jerr.text, "duplicate") ? "duplicate_key"
                           : strstr(jerr.text, "too big") ? "number_out_of_range"
                                                          : "invalid_json";
        return jv_fail(e, ST_INVALID, code, NULL, "malformed JSON at line %d column %d: %s",
                       jerr.line, jerr.column, jerr.text);
    }
    if (!json_is_object(j)) {
        json_decref(j);
        return jv_fail(e, ST_INVALID, "invalid_json", NULL, "request body must be a JSON object");
    }
    *out = j;
    return true;
}

bool jv_only(json_t *obj, const char *const *allowed, struct jv_err *e)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            if (!strcmp(*a, key)) {
                ok = true;
                break;
            }
        if (!ok)
            return jv_fail(e, ST_INVALID, "unknown_field", key, "unknown field \"%.64s\"", key);
    }
    return true;
}

bool jv_has(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return v && !json_is_null(v);
}

/* Common prologue: NULL when absent (and records missing_field if required). */
static json_t *member(json_t *obj, const char *key, bool required, bool *ok, struct jv_err *e)
{
    json_t *v = json_object_get(obj, key);
    if (v && !json_is_null(v)) {
        *ok = true;
        return v;
    }
    *ok = !required;
    if (required)
        jv_fail(e, ST_INVALID, "missing_field", key, "%s is required", key);
    return NULL;
}

bool jv_i64(json_t *obj, const char *key, bool required, int64_t min, int64_t max, int64_t *out,
            struct jv_err *e)
{
    bool ok;
    json_t *v = member(obj, key, required, &ok, e);
    if (!v)
        return ok;
    if (!json_is_integer(v))
        return jv_fail(e, ST_INVALID, "invalid_type", key, "%s must be an integer", key);
    json_int_t n = json_integer_value(v);
    if (n < min || n > max)
        return jv_fail(e, ST_INVALID, "out_of_range", key, "%s must be between %lld and %lld", key,
                       (long long)min, (long long)max);
    *out = (int64_t)n;
    return true;
}

bool jv_f64(json_t *obj, const char *key, bool required, double min, double max, double *out,
            struct jv_err *e)
{
    bool ok;
    json_t *v = member(obj, key, required, &ok, e);
    if (!v)
        return ok;
    if (!json_is_number(v))
        return jv_fail(e, ST_INVALID, "invalid_type", key, "%s must be a number", key);
    double d = json_number_value(v);
    if (!isfinite(d) || d < min || d > max)
        return jv_fail(e, ST_INVALID, "out_of_range", key, "%s must be between %g and %g", key, min,
                       max);
    *out = d;
    return true;
}

bool jv_bool(json_t *obj, const char *key, bool required, bool *out, struct jv_err *e)
{
    bool ok;
    json_t *v = member(obj, key, required, &ok, e);
    if (!v)
        return ok;
    if (!json_is_boolean(v))
        return jv_fail(e, ST_INVALID, "invalid_type", key, "%s must be true or false", key);
    *out = json_is_true(v);
    return true;
}

size_t jv_utf8_len(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

static bool has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 && *s != '\n' && *s != '\t')
            return true;
    return false;
}

bool jv_str(json_t *obj, const char *key, bool required, size_t minlen, size_t maxlen,
            const char **out, struct jv_err *e)
{
    bool ok;
    json_t *v = member(obj, key, required, &ok, e);
    if (!v)
        return ok;
    if (!json_is_string(v))
        return jv_fail(e, ST_INVALID, "invalid_type", key, "%s must be a string", key);
    const char *s = json_string_value(v);
    /* jansson allows \u0000 inside strings; PostgreSQL text does not. */
    if (strlen(s) != json_string_length(v) || has_control(s))
        return jv_fail(e, ST_INVALID, "invalid_value", key, "%s contains control characters", key);
    size_t n = jv_utf8_len(s);
    if (n < minlen || n > maxlen)
        return jv_fail(e, ST_INVALID, "invalid_length", key,
                       "%s must be %zu to %zu characters long", key, minlen, maxlen);
    *out = s;
    return true;
}

/* Shape check only (YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM)); PostgreSQL parses the value and a
 * date like Feb 30 comes back as 22007/22008, which the db layer maps to 400. */
bool jv_is_time(const char *s)
{
    const char *p = s;
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    for (const char *q = shape; *q; q++, p++) {
        if (*q == 'd' ? (*p < '0' || *p > '9') : (*p != *q && !(*q == 'T' && *p == ' ')))
            return false;
    }
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return false;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p == 'Z' && p[1] == '\0')
        return true;
    return (*p == '+' || *p == '-') && p[1] >= '0' && p[1] <= '9' && p[2] >= '0' && p[2] <= '9' &&
           p[3] == ':' && p[4] >= '0' && p[4] <= '9' && p[5] >= '0' && p[5] <= '9' && p[6] == '\0';
}

bool jv_time(json_t *obj, const char *key, bool required, const char **out, struct jv_err *e)
{
    const char *s = NULL;
    if (!jv_str(obj, key, required, 1, 40, &s, e))
        return false;
    if (!s)
        return true;
    if (jv_is_time(s)) {
        *out = s;
        return true;
    }
    return jv_fail(e, ST_INVALID, "invalid_time", key,
                   "%s must be an RFC 3339 time with a zone, like 2026-11-21T08:00:00+08:00", key);
}

bool jv_str_array(json_t *obj, const char *key, bool required, size_t maxn, size_t maxlen,
                  json_t **out, struct jv_err *e)
{
    bool ok;
    json_t *v = member(obj, key, required, &ok, e);
    if (!v)
        return ok;
    if (!json_is_array(v))
        return jv_fail(e, ST_INVALID, "invalid_type", key, "%s must be an array of strings", key);
    if (json_array_size(v) > maxn)
        return jv_fail(e, ST_INVALID, "too_many_items", key, "%s has more than %zu items", key,
                       maxn);
    size_t i, j;
    json_t *s;
    json_array_foreach(v, i, s)
    {
        if (!json_is_string(s) || jv_utf8_len(json_string_value(s)) < 1 ||
            jv_utf8_len(json_string_value(s)) > maxlen || has_control(json_string_value(s)) ||
            strlen(json_string_value(s)) != json_string_length(s))
            return jv_fail(e, ST_INVALID, "invalid_value", key,
                           "%s must hold strings of 1 to %zu characters", key, maxlen);
        for (j = 0; j < i; j++)
            if (!strcmp(json_string_value(json_array_get(v, j)), json_string_value(s)))
                return jv_fail(e, ST_INVALID, "duplicate_value", key, "%s has duplicates", key);
    }
    *out = v;
    return true;
}

bool jv_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (!s || !*s || (*s == '-' && min >= 0) || *s == '+' || *s == ' ')
        return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end || errno || v < min || v > max)
        return false;
    *out = v;
    return true;
}
