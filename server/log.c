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

/* The "ts=... level=..." start of a line. The second's part ("2026-12-07T19:39:30") is made
 * with strftime once a second per thread (each thread keeps its own: the worker pool logs
 * too), the milliseconds are appended by hand. */
static size_t line_start(char *line, size_t cap, enum log_level lvl)
{
    static _Thread_local time_t sec_at = -1;
    static _Thread_local char sec_text[24];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (now.tv_sec != sec_at) {
        struct tm tm;
        if (!gmtime_r(&now.tv_sec, &tm) ||
            strftime(sec_text, sizeof sec_text, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
            sec_text[0] = '\0';
        else
            sec_at = now.tv_sec;
    }
    char ts[40];
    size_t n = strlen(sec_text);
    memcpy(ts, sec_text, n);
    long ms = now.tv_nsec / 1000000;
    ts[n++] = '.';
    ts[n++] = (char)('0' + ms / 100);
    ts[n++] = (char)('0' + ms / 10 % 10);
    ts[n++] = (char)('0' + ms % 10);
    ts[n++] = 'Z';
    ts[n] = '\0';
    line[0] = '\0';
    log_kv(line, cap, "ts", ts);
    log_kv(line, cap, "level", level_names[lvl]);
    return strlen(line);
}

void log_write_text(enum log_level lvl, const char *ctx, const char *msg)
{
    char line[2048];
    size_t len = line_start(line, sizeof line, lvl);
    if (ctx && *ctx) {
        size_t n = strnlen(ctx, sizeof line - len - 2);
        line[len++] = ' ';
        memcpy(line + len, ctx, n);
        len += n;
        line[len] = '\0';
    }
    log_kv(line, sizeof line, "msg", msg);
    len = strlen(line);
    if (len + 1 < sizeof line) {
        line[len++] = '\n';
    } else {
        line[sizeof line - 2] = '\n';
        len = sizeof line - 1;
    }
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void log_write(enum log_level lvl, const char *ctx, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_write_text(lvl, ctx, msg);
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
