/* log.h -- structured, one-line-per-event logging (logfmt on stderr).
 *
 * Every line: ts=... level=... then the message as msg="..." and, for request-scoped lines,
 * rid=... (see http.h rlog_*). The level is tested before any formatting happens.
 * Secrets, tokens, signatures and SQL parameter values never go to the log. */
#ifndef GP_LOG_H
#define GP_LOG_H

/* Below common.h, which logs its fatal errors through this module: only standard headers. */
#include <stddef.h>

enum log_level { LOG_LEVEL_DEBUG = 0, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

extern enum log_level log_min_level;

/* Parses "debug|info|warn|error"; returns -1 when unknown. */
int log_level_parse(const char *s);

/* Writes one line. `ctx` is an already formatted logfmt fragment ("rid=abc user=12") or NULL. */
void log_write(enum log_level lvl, const char *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* log_write with a message that is already text (no format): the access log's line. */
void log_write_text(enum log_level lvl, const char *ctx, const char *msg);

/* Appends key=value to a logfmt buffer, quoting and escaping the value when needed.
 * Truncates silently at cap. */
void log_kv(char *buf, size_t cap, const char *key, const char *value);

/* Routes libevent's internal messages into our log. */
void log_hook_libevent(void);

#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_min_level <= LOG_LEVEL_DEBUG)                                                      \
            log_write(LOG_LEVEL_DEBUG, NULL, __VA_ARGS__);                                         \
    } while (0)
#define log_info(...)                                                                              \
    do {                                                                                           \
        if (log_min_level <= LOG_LEVEL_INFO)                                                       \
            log_write(LOG_LEVEL_INFO, NULL, __VA_ARGS__);                                          \
    } while (0)
#define log_warn(...)                                                                              \
    do {                                                                                           \
        if (log_min_level <= LOG_LEVEL_WARN)                                                       \
            log_write(LOG_LEVEL_WARN, NULL, __VA_ARGS__);                                          \
    } while (0)
#define log_error(...) log_write(LOG_LEVEL_ERROR, NULL, __VA_ARGS__)

#endif
