/* log.c -- logfmt lines on stderr. One write(2) per line so that lines from several
 * threads (the worker pool) never interleave. */
#include "log.h"

#include <event2/event.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum log_level log_min_level = LOG_LEVEL_INFO;

static const char *level_names[] = {"debug", "info", "warn", "error"};

int log_level_parse(const char *s)
{
    for (unsigned i = 0; i < sizeof level_names / sizeof level_names[0]; i++)
        if (strcmp(s, level_names[i]) == 0)
            return (int)i;
    return -1;
}

static bool needs_quotes(const char *v)
{
    if (!*v)
        return true;
    for (const char *p = v; *p; p++)
        if (*p == ' ' || *p == '"' || *p == '=' || *p == '\\' || (unsigned char)*p < 0x20)
            return true;
    return false;
}

void log_kv(char *buf, size_t cap, const char *key, const char *value)
{
    size_t len = strnlen(buf, cap);
    if (len + 1 >= cap)
        return;
    char *o = buf + len;
    char *end = buf + cap - 1;
    if (len > 0 && o < end)
        *o++ = ' ';
    for (const char *k = key; *k && o < end; k++)
        *o++ = *k;
    if (o < end)
        *o++ = '=';
    if (!value)
        value = "";
    bool q = needs_quotes(value);
    if (q && o < end)
        *o++ = '"';
    for (const char *p = value; *p && o < end; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            if (o + 2 > end)
                break;
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c == '\n') {
            if (o + 2 > end)
                break;
            *o++ = '\\';
            *o++ = 'n';
        } else if (c < 0x20) {
            *o++ = '?';
        } else {
            *o++ = (char)c;
        }
    }
    if (q && o < end)
        *o++ = '"';
    *o = '\0';
}

void log_write(enum log_level lvl, const char *ctx, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    char ts[40];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03ldZ", now.tv_nsec / 1000000);

    char line[2048] = "";
    log_kv(line, sizeof line, "ts", ts);
    log_kv(line, sizeof line, "level", level_names[lvl]);
    if (ctx && *ctx) {
        size_t len = strlen(line);
        snprintf(line + len, sizeof line - len, " %s", ctx);
    }
    log_kv(line, sizeof line, "msg", msg);
    size_t len = strlen(line);
    if (len + 1 < sizeof line) {
        line[len++] = '\n';
    } else {
        line[sizeof line - 2] = '\n';
        len = sizeof line - 1;
    }
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

static void libevent_log_cb(int severity, const char *msg)
{
    enum log_level lvl = severity == EVENT_LOG_DEBUG  ? LOG_LEVEL_DEBUG
                         : severity == EVENT_LOG_MSG  ? LOG_LEVEL_INFO
                         : severity == EVENT_LOG_WARN ? LOG_LEVEL_WARN
                                                      : LOG_LEVEL_ERROR;
    if (lvl < log_min_level)
        return;
    log_write(lvl, "src=libevent", "%s", msg);
}

void log_hook_libevent(void)
{
    event_set_log_callback(libevent_log_cb);
}
