/* config.c -- the configuration table, INI parsing (libinih) and env overrides.
 *
 * The table is the one place that knows every key. scripts/check-config-docs.sh checks that
 * config/gridpoints.conf and README.md mention each key of this table. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum cfg_type { CFG_STRING, CFG_INT, CFG_BOOL, CFG_DURATION, CFG_SECONDS, CFG_SIZE };

struct cfg_entry {
    const char *section;
    const char *name;
    enum cfg_type type;
    size_t offset;
    const char *def;
    long min, max; /* for numeric types, in the unit stored (ms, bytes, count) */
};

#define S(sec, key, field, def)                                                                    \
    {                                                                                              \
        sec, key, CFG_STRING, offsetof(struct config, field), def, 0, 0                            \
    }
#define I(sec, key, field, def, lo, hi)                                                            \
    {                                                                                              \
        sec, key, CFG_INT, offsetof(struct config, field), def, lo, hi                             \
    }
#define B(sec, key, field, def)                                                                    \
    {                                                                                              \
        sec, key, CFG_BOOL, offsetof(struct config, field), def, 0, 1                              \
    }
#define D(sec, key, field, def, lo, hi)                                                            \
    {                                                                                              \
        sec, key, CFG_DURATION, offsetof(struct config, field), def, lo, hi                        \
    }
#define T(sec, key, field, def, lo, hi)                                                            \
    {                                                                                              \
        sec, key, CFG_SECONDS, offsetof(struct config, field), def, lo, hi                         \
    }
#define Z(sec, key, field, def, lo, hi)                                                            \
    {                                                                                              \
        sec, key, CFG_SIZE, offsetof(struct config, field), def, lo, hi                            \
    }

static const struct cfg_entry table[] = {
    I("audit", "anomaly_max_completions_per_day", audit_anomaly_max_completions, "20", 1, 100000),
    T("audit", "anomaly_min_report_after_claim", audit_anomaly_min_report_s, "2m", 0, 86400),
    I("audit", "anomaly_shared_device_workers", audit_anomaly_shared_workers, "2", 2, 1000),
    T("audit", "checkpoint_interval", audit_checkpoint_interval_s, "60s", 1, 86400),
    I("audit", "checkpoint_max_tx", audit_checkpoint_max_tx, "10000", 1, 100000000),
    T("audit", "full_pass_interval", audit_full_pass_interval_s, "1d", 1, 31536000),
    S("audit", "key_file", audit_key_file, ""),
    S("audit", "origin", audit_origin, "gridpoints.local/ledger"),
    B("audit", "allow_rewind", audit_allow_rewind, "false"),
    S("audit", "state_dir", audit_state_dir, ""),
    I("audit", "seal_batch", audit_seal_batch, "1000", 1, 100000),
    I("audit", "verify_batch", audit_verify_batch, "20000", 1, 10000000),

    T("auth", "login_device_ttl", login_device_ttl_s, "90d", 60, 31536000),
    I("auth", "login_limit_per_addr", login_limit_per_addr, "30", 1, 1000000),
    I("auth", "login_limit_per_pair", login_limit_per_pair, "5", 1, 1000000),
    D("auth", "login_phone_delay", login_phone_delay_ms, "1s", 1, 86400000),
    D("auth", "login_phone_delay_max", login_phone_delay_max_ms, "1m", 1, 86400000),
    I("auth", "login_phone_free", login_phone_free, "10", 0, 1000000),
    T("auth", "login_phone_window", login_phone_window_s, "1h", 1, 604800),
    T("auth", "login_window", login_window_s, "5m", 1, 86400),
    I("auth", "pbkdf2_iterations", pbkdf2_iterations, "210000", 1000, 10000000),
    T("auth", "session_ttl", session_ttl_s, "12h", 60, 2592000),
    I("auth", "session_batch_max", session_batch_max, "500", 1, 10000),
    I("auth", "session_batches_in_flight", session_batches_in_flight, "2", 1, 256),

    T("care", "retention", care_retention_s, "365d", 0, 315360000),
    T("console", "dashboard_refresh", console_dashboard_refresh_s, "30s", 1, 3600),
    I("console", "dashboard_max_days", console_dashboard_max_days, "90", 1, 366),
    D("console", "dashboard_fold_interval", console_dashboard_fold_interval_ms, "1s", 50, 60000),
    I("console", "dashboard_fold_batch", console_dashboard_fold_batch, "5000", 1, 1000000),
    I("console", "export_max_rows", console_export_max_rows, "200000", 1, 10000000),
    I("console", "import_max_rows", console_import_max_rows, "5000", 1, 100000),

    S("database", "admin_url", database_admin_url, ""),
    D("database", "connect_timeout", db_connect_timeout_ms, "5s", 100, 600000),
    I("database", "pool_size", db_pool_size, "6", 1, 256),
    I("database", "queue_max", db_queue_max, "2048", 1, 1000000),
    D("database", "queue_timeout", db_queue_timeout_ms, "3s", 10, 600000),
    D("database", "reconnect_max", db_reconnect_max_ms, "2s", 100, 600000),
    D("database", "replica_max_lag", db_replica_max_lag_ms, "5s", 0, 3600000),
    D("database", "replica_own_writes_window", db_replica_own_writes_window_ms, "30s", 0, 86400000),
    D("database", "replica_poll_interval", db_replica_poll_interval_ms, "500ms", 50, 60000),
    I("database", "replica_pool_size", db_replica_pool_size, "4", 1, 256),
    S("database", "replica_url", db_replica_url, ""),
    I("database", "retries", db_retries, "3", 0, 20),
    S("database", "sql_dir", sql_dir, "sql"),
    D("database", "statement_timeout", db_statement_timeout_ms, "5s", 10, 3600000),
    S("database", "url", database_url, "postgresql://gp_app@127.0.0.1:5432/gridpoints"),

    T("evidence", "cache_max_age", evidence_cache_max_age_s, "1h", 0, 31536000),
    S("evidence", "dir", evidence_dir, "var/evidence"),
    T("evidence", "flagged_retention", evidence_flagged_retention_s, "1095d", 1, 315360000),
    Z("evidence", "max_size", evidence_max_size, "8m", 1024, 256 << 20),
    T("evidence", "retention", evidence_retention_s, "180d", 1, 315360000),

    B("exchange", "allow_private", exchange_allow_private, "false"),
    T("exchange", "backoff", exchange_backoff_s, "2s", 1, 3600),
    T("exchange", "backoff_max", exchange_backoff_max_s, "5m", 1, 86400),
    S("exchange", "ca_file", exchange_ca_file, ""),
    B("exchange", "enabled", exchange_enabled, "true"),
    S("exchange", "hosts_file", exchange_hosts_file, ""),
    T("exchange", "link_code_ttl", exchange_link_code_ttl_s, "10m", 60, 86400),
    T("exchange", "nonce_ttl", exchange_nonce_ttl_s, "10m", 2, 86400),
    T("exchange", "recon_lag", exchange_recon_lag_s, "1h", 0, 604800),
    T("exchange", "send_for", exchange_send_for_s, "1m", 1, 86400),
    T("exchange", "signature_window", exchange_signature_window_s, "5m", 1, 3600),
    T("exchange", "timeout", exchange_timeout_s, "10s", 1, 120),

    S("log", "level", log_level, "info"),

    T("merchant", "key_cache_ttl", merchant_key_cache_ttl_s, "60s", 0, 3600),
    S("merchant", "key_encryption_key", merchant_key_encryption_key, ""),
    T("merchant", "nonce_ttl", merchant_nonce_ttl_s, "10m", 2, 86400),
    S("merchant", "paycode_secret", merchant_paycode_secret, ""),
    T("merchant", "paycode_ttl", merchant_paycode_ttl_s, "60s", 10, 3600),
    I("merchant", "rate_limit", merchant_rate_limit, "100", 1, 1000000),
    T("merchant", "rate_window", merchant_rate_window_s, "1s", 1, 3600),
    T("merchant", "refund_window", merchant_refund_window_s, "7d", 0, 31536000),
    T("merchant", "signature_window", merchant_signature_window_s, "5m", 1, 3600),
    T("merchant", "voucher_ttl", merchant_voucher_ttl_s, "7d", 1, 7776000),
    B("merchant", "webhook_allow_private", merchant_webhook_allow_private, "false"),
    T("merchant", "webhook_backoff", merchant_webhook_backoff_s, "10s", 1, 3600),
    S("merchant", "webhook_ca_file", merchant_webhook_ca_file, ""),
    S("merchant", "webhook_hosts_file", merchant_webhook_hosts_file, ""),
    T("merchant", "webhook_retry_for", merchant_webhook_retry_for_s, "1d", 1, 604800),
    T("merchant", "webhook_timeout", merchant_webhook_timeout_s, "10s", 1, 60),

    D("redis", "command_timeout", redis_command_timeout_ms, "1s", 10, 600000),
    D("redis", "connect_timeout", redis_connect_timeout_ms, "1s", 10, 600000),
    S("redis", "password", redis_password, ""),
    D("redis", "reconnect_max", redis_reconnect_max_ms, "2s", 100, 600000),
    S("redis", "url", redis_url, "redis://127.0.0.1:6379/0"),

    D("server", "body_timeout", body_timeout_ms, "60s", 100, 3600000),
    D("server", "drain_delay", drain_delay_ms, "0s", 0, 600000),
    D("server", "head_timeout", head_timeout_ms, "10s", 100, 3600000),
    I("server", "json_max_depth", json_max_depth, "16", 1, 1000),
    I("server", "json_max_items", json_max_items, "1000", 1, 10000000),
    S("server", "listen", listen, "127.0.0.1:8080"),
    I("server", "max_connections", max_connections, "10000", 1, 1000000),
    I("server", "max_connections_per_address", max_connections_per_addr, "256", 0, 1000000),
    Z("server", "max_body_size", max_body_size, "64k", 256, 1 << 30),
    Z("server", "max_header_size", max_header_size, "16k", 1024, 1 << 20),
    S("server", "metrics_listen", metrics_listen, ""),
    S("server", "metrics_token", metrics_token, ""),
    I("server", "page_size_default", page_size_default, "50", 1, 10000),
    I("server", "page_size_max", page_size_max, "200", 1, 10000),
    D("server", "read_timeout", read_timeout_ms, "15s", 100, 3600000),
    D("server", "shutdown_timeout", shutdown_timeout_ms, "10s", 0, 3600000),
    S("server", "tls_cert", tls_cert, ""),
    S("server", "tls_key", tls_key, ""),
    S("server", "tls_listen", tls_listen, ""),
    B("server", "trust_proxy", trust_proxy, "false"),
    I("server", "worker_threads", worker_threads, "2", 1, 64),
    D("server", "write_timeout", write_timeout_ms, "15s", 100, 3600000),

    I("tasks", "claim_rate_limit", claim_rate_limit, "30", 1, 1000000),
    T("tasks", "report_future_skew", report_future_skew_s, "2m", 0, 86400),

    I("timers", "batch_size", timer_batch_size, "200", 1, 100000),
    D("timers", "sweep_hold", timer_sweep_hold_ms, "20ms", 1, 60000),
    T("timers", "reconcile_interval", reconcile_interval_s, "5m", 1, 86400),
    D("timers", "ops_gauges_interval", ops_gauges_interval_ms, "15s", 100, 3600000),
    D("timers", "sweep_interval", timer_sweep_interval_ms, "1s", 10, 3600000),

    S("web", "dir", web_dir, "build/web"),
    I("web", "max_files", web_max_files, "10000", 1, 1000000),
    Z("web", "max_size", web_max_size, "64m", 0, 1 << 30),
    S("web", "openapi_file", web_openapi_file, "docs/openapi.yaml"),

    S("wechat", "api_base", wechat_api_base, "https://api.weixin.qq.com"),
    S("wechat", "app_id", wechat_app_id, ""),
    S("wechat", "app_secret", wechat_app_secret, ""),
    I("wechat", "bind_ticket_attempts", wechat_bind_ticket_attempts, "5", 1, 100),
    T("wechat", "bind_ticket_ttl", wechat_bind_ticket_ttl_s, "10m", 60, 86400),
    S("wechat", "ca_file", wechat_ca_file, ""),
    T("wechat", "invite_ttl", wechat_invite_ttl_s, "7d", 600, 7776000),
    I("wechat", "max_inflight", wechat_max_inflight, "256", 1, 100000),
    S("wechat", "mini_app_id", wechat_mini_app_id, ""),
    S("wechat", "mini_app_secret", wechat_mini_app_secret, ""),
    T("wechat", "rate_limit_retry_after", wechat_rate_limit_retry_after_s, "60s", 1, 3600),
    D("wechat", "timeout", wechat_timeout_ms, "5s", 100, 60000),
    T("wechat", "unavailable_retry_after", wechat_unavailable_retry_after_s, "5s", 1, 3600),
};

/* A run of decimal digits at the start of s (no sign, no leading blanks: strtoll would take
 * " +12"), into *out; *end is the first byte after it. False on no digits or overflow. */
static bool leading_digits(const char *s, long long *out, const char **end)
{
    if (!isdigit((unsigned char)*s))
        return false;
    errno = 0;
    char *e;
    long long v = strtoll(s, &e, 10);
    if (errno)
        return false;
    *out = v;
    *end = e;
    return true;
}

/* The whole of s is a decimal number (an optional '-' then digits), into *out. */
static bool parse_integer(const char *s, long long *out)
{
    const char *end;
    bool neg = *s == '-';
    if (!leading_digits(s + neg, out, &end) || *end != '\0')
        return false;
    if (neg)
        *out = -*out;
    return true;
}

bool config_parse_duration_ms(const char *s, long long *out)
{
    long long v;
    const char *end;
    if (!leading_digits(s, &v, &end))
        return false;
    while (*end == ' ')
        end++;
    long long mult;
    if (*end == '\0' || strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "m") == 0)
        mult = 60000;
    else if (strcmp(end, "h") == 0)
        mult = 3600000;
    else if (strcmp(end, "d") == 0)
        mult = 86400000;
    else
        return false;
    if (v > LLONG_MAX / mult)
        return false;
    *out = v * mult;
    return true;
}

bool config_parse_size(const char *s, int *out)
{
    long long v;
    const char *end;
    if (!leading_digits(s, &v, &end))
        return false;
    long long mult = 1;
    if (*end == 'k' || *end == 'K')
        mult = 1024, end++;
    else if (*end == 'm' || *end == 'M')
        mult = 1024 * 1024, end++;
    if (*end != '\0' || v > INT_MAX / mult)
        return false;
    *out = (int)(v * mult);
    return true;
}

static bool set_value(struct config *cfg, const struct cfg_entry *e, const char *value, char *err,
                      size_t errlen)
{
    char *base = (char *)cfg;
    void *field = base + e->offset;
    long v;
    switch (e->type) {
    case CFG_STRING: {
        char **sp = field;
        free(*sp);
        *sp = xstrdup(value);
        return true;
    }
    case CFG_BOOL:
        if (!strcmp(value, "true") || !strcmp(value, "yes") || !strcmp(value, "on") ||
            !strcmp(value, "1")) {
            *(bool *)field = true;
            return true;
        }
        if (!strcmp(value, "false") || !strcmp(value, "no") || !strcmp(value, "off") ||
            !strcmp(value, "0")) {
            *(bool *)field = false;
            return true;
        }
        snprintf(err, errlen, "%s.%s: expected true or false, got \"%s\"", e->section, e->name,
                 value);
        return false;
    case CFG_INT: {
        long long n;
        if (!parse_integer(value, &n)) {
            snprintf(err, errlen, "%s.%s: expected an integer, got \"%s\"", e->section, e->name,
                     value);
            return false;
        }
        if (n < e->min || n > e->max)
            goto range;
        v = (long)n;
        break;
    }
    case CFG_DURATION:
    case CFG_SECONDS: {
        long long ms;
        if (!config_parse_duration_ms(value, &ms)) {
            snprintf(err, errlen, "%s.%s: expected a duration like 500ms, 15s, 5m, got \"%s\"",
                     e->section, e->name, value);
            return false;
        }
        /* "1500ms" for a key kept in whole seconds would silently become 1 s. */
        if (e->type == CFG_SECONDS && ms % 1000 != 0) {
            snprintf(err, errlen, "%s.%s: expected whole seconds, got \"%s\"", e->section, e->name,
                     value);
            return false;
        }
        long long q = e->type == CFG_SECONDS ? ms / 1000 : ms;
        if (q < e->min || q > e->max)
            goto range;
        v = (long)q;
        break;
    }
    case CFG_SIZE: {
        int n;
        if (!config_parse_size(value, &n)) {
            snprintf(err, errlen, "%s.%s: expected a size like 16384, 64k, 1m, got \"%s\"",
                     e->section, e->name, value);
            return false;
        }
        v = n;
        break;
    }
    default:
        return false;
    }
    if (v < e->min || v > e->max)
        goto range;
    *(int *)field = (int)v;
    return true;
range:
    snprintf(err, errlen, "%s.%s: \"%s\" is out of range [%ld, %ld]%s", e->section, e->name, value,
             e->min, e->max,
             e->type == CFG_DURATION  ? " ms"
             : e->type == CFG_SECONDS ? " s"
                                      : "");
    return false;
}

static const struct cfg_entry *find_entry(const char *section, const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(table); i++)
        if (!strcmp(table[i].section, section) && !strcmp(table[i].name, name))
            return &table[i];
    return NULL;
}

struct parse_state {
    struct config *cfg;
    const char *path;
    char *err;
    size_t errlen;
    bool failed;
};

static int ini_cb(void *user, const char *section, const char *name, const char *value)
{
    struct parse_state *ps = user;
    if (ps->failed)
        return 0;
    const struct cfg_entry *e = find_entry(section, name);
    if (!e) {
        snprintf(ps->err, ps->errlen, "%s: unknown key \"%s\" in section [%s]", ps->path, name,
                 section);
        ps->failed = true;
        return 0;
    }
    char sub[256];
    if (!set_value(ps->cfg, e, value, sub, sizeof sub)) {
        snprintf(ps->err, ps->errlen, "%s: %s", ps->path, sub);
        ps->failed = true;
        return 0;
    }
    return 1;
}

static bool check_addresses(const struct config *cfg, char *err, size_t errlen)
{
    const struct {
        const char *key, *value;
    } listeners[] = {
        {"server.listen", cfg->listen},
        {"server.tls_listen", cfg->tls_listen},
        {"server.metrics_listen", cfg->metrics_listen},
    };
    for (size_t i = 0; i < ARRAY_SIZE(listeners); i++) {
        char host[128];
        int port;
        if ((i == 0 || *listeners[i].value) &&
            !config_parse_hostport(listeners[i].value, host, sizeof host, &port)) {
            snprintf(err, errlen, "%s: expected host:port with a port from 0 to 65535, got \"%s\"",
                     listeners[i].key, listeners[i].value);
            return false;
        }
    }
    if (*cfg->metrics_listen && (!strcmp(cfg->metrics_listen, cfg->listen) ||
                                 !strcmp(cfg->metrics_listen, cfg->tls_listen))) {
        snprintf(err, errlen,
                 "server.metrics_listen must differ from server.listen and tls_listen");
        return false;
    }
    /* A bearer token an attacker could guess or that breaks the header is worse than none. */
    size_t tl = strlen(cfg->metrics_token);
    if (tl) {
        bool ok = tl >= 16 && tl <= 256;
        for (size_t i = 0; ok && i < tl; i++)
            ok = cfg->metrics_token[i] > 0x20 && cfg->metrics_token[i] < 0x7f;
        if (!ok) {
            snprintf(err, errlen,
                     "server.metrics_token must be 16 to 256 visible ASCII characters");
            return false;
        }
    }
    struct config_redis r;
    bool ok = config_redis(cfg, &r, err, errlen);
    explicit_bzero(&r, sizeof r);
    return ok;
}

bool config_load(struct config *cfg, const char *path, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < ARRAY_SIZE(table); i++) {
        char sub[256];
        if (!set_value(cfg, &table[i], table[i].def, sub, sizeof sub)) {
            snprintf(err, errlen, "bad built-in default: %s", sub);
            return false;
        }
    }
    if (path) {
        FILE *f = fopen(path, "r");
        if (!f) {
            snprintf(err, errlen, "cannot open config file %s: %s", path, strerror(errno));
            return false;
        }
        struct parse_state ps = {cfg, path, err, errlen, false};
        int rc = ini_parse_file(f, ini_cb, &ps);
        fclose(f);
        if (ps.failed)
            return false;
        if (rc != 0) {
            snprintf(err, errlen, "%s:%d: syntax error", path, rc);
            return false;
        }
    }
    for (size_t i = 0; i < ARRAY_SIZE(table); i++) {
        char var[128];
        int n = snprintf(var, sizeof var, "GRIDPOINTS_%s_%s", table[i].section, table[i].name);
        for (int j = 0; j < n; j++)
            var[j] = (char)toupper((unsigned char)var[j]);
        const char *v = getenv(var);
        if (!v)
            continue;
        char sub[256];
        if (!set_value(cfg, &table[i], v, sub, sizeof sub)) {
            snprintf(err, errlen, "environment %s: %s", var, sub);
            return false;
        }
    }
    if (cfg->page_size_default > cfg->page_size_max) {
        snprintf(err, errlen, "server.page_size_default exceeds server.page_size_max");
        return false;
    }
    if (cfg->merchant_nonce_ttl_s < 2 * cfg->merchant_signature_window_s) {
        snprintf(err, errlen,
                 "merchant.nonce_ttl must be at least twice merchant.signature_window");
        return false;
    }
    if (*cfg->tls_listen && (!*cfg->tls_cert || !*cfg->tls_key)) {
        snprintf(err, errlen, "server.tls_listen needs server.tls_cert and server.tls_key");
        return false;
    }
    return check_addresses(cfg, err, errlen);
}

void config_free(struct config *cfg)
{
    for (size_t i = 0; i < ARRAY_SIZE(table); i++) {
        if (table[i].type != CFG_STRING)
            continue;
        char **sp = (char **)((char *)cfg + table[i].offset);
        free(*sp);
        *sp = NULL;
    }
}

void config_dump(const struct config *cfg, void (*emit)(const char *line, void *arg), void *arg)
{
    const char *section = "";
    char line[512];
    for (size_t i = 0; i < ARRAY_SIZE(table); i++) {
        const struct cfg_entry *e = &table[i];
        if (strcmp(section, e->section)) {
            section = e->section;
            snprintf(line, sizeof line, "[%s]", section);
            emit(line, arg);
        }
        const char *base = (const char *)cfg;
        const void *field = base + e->offset;
        bool secret = strstr(e->name, "url") || strstr(e->name, "key") ||
                      strstr(e->name, "secret") || strstr(e->name, "password") ||
                      strstr(e->name, "token");
        switch (e->type) {
        case CFG_STRING:
            snprintf(line, sizeof line, "%s = %s", e->name,
                     secret && **(char *const *)field ? "(set)" : *(char *const *)field);
            break;
        case CFG_BOOL:
            snprintf(line, sizeof line, "%s = %s", e->name,
                     *(const bool *)field ? "true" : "false");
            break;
        case CFG_DURATION:
            snprintf(line, sizeof line, "%s = %dms", e->name, *(const int *)field);
            break;
        case CFG_SECONDS:
            snprintf(line, sizeof line, "%s = %ds", e->name, *(const int *)field);
            break;
        default:
            snprintf(line, sizeof line, "%s = %d", e->name, *(const int *)field);
        }
        emit(line, arg);
    }
}

/* ---- addresses ---- */

/* Copies [s, s+n) into out (cap bytes), decoding %XX. False on a bad escape, an encoded NUL
 * or control byte, or when it does not fit. */
static bool percent_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= n || !isxdigit((unsigned char)s[i + 1]) ||
                !isxdigit((unsigned char)s[i + 2]))
                return false;
            char hex[3] = {s[i + 1], s[i + 2], '\0'};
            c = (unsigned char)strtol(hex, NULL, 16);
            i += 2;
        }
        if (c < 0x20 || c == 0x7f || o + 1 >= cap)
            return false;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return true;
}

/* Digits only (no sign, no blanks, no trailing bytes), within [min, max]. */
static bool parse_bounded(const char *s, size_t n, long min, long max, int *out)
{
    if (n == 0 || n > 10)
        return false;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v < min || v > max)
        return false;
    *out = (int)v;
    return true;
}

#define REDIS_DB_MAX 1000000

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, errlen, __VA_ARGS__);                                                        \
        return false;                                                                              \
    } while (0)

/* Error texts never quote the URL: it may hold a password. */
bool config_parse_redis_url(const char *url, struct config_redis *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (!strncmp(url, "unix://", 7)) {
        const char *p = url + 7;
        const char *q = strchr(p, '?');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        if (n == 0 || p[0] != '/')
            FAIL("redis.url: unix:// needs an absolute socket path (unix:///path?db=n)");
        if (n >= sizeof out->unix_path)
            FAIL("redis.url: the socket path is longer than %zu bytes", sizeof out->unix_path - 1);
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)p[i] < 0x20)
                FAIL("redis.url: control character in the socket path");
        memcpy(out->unix_path, p, n);
        out->unix_path[n] = '\0';
        if (q && (strncmp(q, "?db=", 4) != 0 ||
                  !parse_bounded(q + 4, strlen(q + 4), 0, REDIS_DB_MAX, &out->db)))
            FAIL("redis.url: after the socket path only ?db=N (0 to %d) is allowed", REDIS_DB_MAX);
        return true;
    }
    if (!strncmp(url, "rediss://", 9))
        FAIL("redis.url: rediss:// (TLS) is not supported; use a local TLS tunnel");
    if (strncmp(url, "redis://", 8) != 0)
        FAIL("redis.url: expected redis://[user:password@]host[:port][/db] or "
             "unix:///path?db=n");

    /* Authority up to the first '/', as RFC 3986 has it; a '/' or '@' inside the password
     * must be percent-encoded, but the credentials end at the last '@' (as in urllib). */
    const char *a = url + 8;
    const char *slash = strchr(a, '/');
    const char *aend = slash ? slash : a + strlen(a);
    const char *at = NULL;
    for (const char *c = a; c < aend; c++)
        if (*c == '@')
            at = c;
    const char *hp = a;
    if (at) {
        const char *colon = memchr(a, ':', (size_t)(at - a));
        size_t ulen = colon ? (size_t)(colon - a) : (size_t)(at - a);
        if (!percent_decode(a, ulen, out->user, sizeof out->user))
            FAIL("redis.url: the user name is too long or has a bad %%-escape or control "
                 "character");
        if (colon && !percent_decode(colon + 1, (size_t)(at - colon - 1), out->password,
                                     sizeof out->password))
            FAIL("redis.url: the password is too long (max %zu bytes) or has a bad %%-escape "
                 "or control character",
                 sizeof out->password - 1);
        hp = at + 1;
    }

    /* host, [v6-host], then :port */
    const char *hend;
    const char *after;
    if (*hp == '[') {
        const char *rb = memchr(hp, ']', (size_t)(aend - hp));
        if (!rb)
            FAIL("redis.url: unclosed [ in the host");
        hp++;
        hend = rb;
        after = rb + 1;
    } else {
        const char *colon = memchr(hp, ':', (size_t)(aend - hp));
        hend = colon ? colon : aend;
        after = hend;
    }
    size_t hl = (size_t)(hend - hp);
    if (hl == 0)
        FAIL("redis.url: no host");
    if (hl >= sizeof out->host)
        FAIL("redis.url: the host is longer than %zu bytes", sizeof out->host - 1);
    for (size_t i = 0; i < hl; i++) {
        unsigned char c = (unsigned char)hp[i];
        if (c <= 0x20 || c == 0x7f || c == '%' || c == '@' || c == '?' || c == '#')
            FAIL("redis.url: invalid character in the host");
    }
    memcpy(out->host, hp, hl);
    out->host[hl] = '\0';
    if (after < aend) {
        if (*after != ':' ||
            !parse_bounded(after + 1, (size_t)(aend - after - 1), 1, 65535, &out->port))
            FAIL("redis.url: the port must be a number from 1 to 65535 (digits only)");
    }

    /* /db, nothing after it */
    if (slash && slash[1] &&
        !parse_bounded(slash + 1, strlen(slash + 1), 0, REDIS_DB_MAX, &out->db))
        FAIL("redis.url: the database after / must be a number from 0 to %d (digits only, "
             "no query)",
             REDIS_DB_MAX);
    return true;
}

bool config_redis(const struct config *cfg, struct config_redis *out, char *err, size_t errlen)
{
    if (!config_parse_redis_url(cfg->redis_url, out, err, errlen))
        return false;
    /* redis.password (or GRIDPOINTS_REDIS_PASSWORD) wins over one in the URL: that is how a
     * secret stays out of the config file. */
    if (cfg->redis_password && *cfg->redis_password) {
        size_t n = strlen(cfg->redis_password);
        if (n >= sizeof out->password)
            FAIL("redis.password is longer than %zu bytes", sizeof out->password - 1);
        memcpy(out->password, cfg->redis_password, n + 1);
    }
    if (*out->user && !*out->password)
        FAIL("redis.url names a user but no password: add :password to the URL or set "
             "redis.password (GRIDPOINTS_REDIS_PASSWORD)");
    return true;
}

bool config_parse_hostport(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= hostlen)
        return false;
    for (const char *c = s; c < colon; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f)
            return false;
    if (!parse_bounded(colon + 1, strlen(colon + 1), 0, 65535, port))
        return false;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    return true;
}
