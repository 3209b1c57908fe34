/* common.h -- the few macros and allocation helpers every module shares.
 *
 * Allocation failure aborts (STYLE §21): a service behind a supervisor is better off
 * restarting than carrying hundreds of untested NULL branches. */
#ifndef GP_COMMON_H
#define GP_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define UNUSED(x)                       ((void)(x))
#define ARRAY_SIZE(a)                   (sizeof(a) / sizeof((a)[0]))
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define MUSTCHECK                       __attribute__((warn_unused_result))
#define PRINTF_LIKE(fmt, args)          __attribute__((format(printf, fmt, args)))
#define NORETURN                        __attribute__((noreturn))

/* Logs file and line, then aborts. For invariants only, never for client input. */
#define ASSERT(cond)                                                                               \
    do {                                                                                           \
        if (!(cond))                                                                               \
            common_assert_fail(#cond, __FILE__, __LINE__);                                         \
    } while (0)

NORETURN void common_assert_fail(const char *expr, const char *file, int line);

/* Never return NULL: on exhaustion they log and abort. Free with free(). */
void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* Monotonic milliseconds, for durations and in-process timeouts only. */
int64_t common_mono_ms(void);
/* Monotonic microseconds, for request latency. */
int64_t common_mono_us(void);
/* Wall-clock milliseconds since the epoch, for logs. Business time comes from PostgreSQL. */
int64_t common_wall_ms(void);

/* Writes v in decimal, as "%lld" prints it (at most 20 bytes, no NUL) at p; returns the end.
 * For hot replies and log lines that avoid the printf family. */
char *common_put_dec(char *p, long long v);

/* Overflow-checked int64 arithmetic: false when the result would not fit. */
static inline bool i64_add(int64_t a, int64_t b, int64_t *out)
{
    return !__builtin_add_overflow(a, b, out);
}
static inline bool i64_mul(int64_t a, int64_t b, int64_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}

#endif
