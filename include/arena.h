/* arena.h -- a per-request region: many small allocations, one free.
 *
 * Transient strings, SQL parameter arrays and the like live here. Things that are not
 * plain memory (a json_t, a PGresult) register a cleanup with arena_on_free; cleanups run
 * in reverse order of registration when the arena is freed. */
#ifndef GP_ARENA_H
#define GP_ARENA_H

#include "common.h"

struct arena;

struct arena *arena_new(void);
/* Runs cleanups, then releases every block. NULL is allowed. */
void arena_free(struct arena *a);
/* 16-byte aligned, zeroed memory owned by the arena. Never NULL. */
void *arena_alloc(struct arena *a, size_t n);
char *arena_strdup(struct arena *a, const char *s);
char *arena_strndup(struct arena *a, const char *s, size_t n);
char *arena_printf(struct arena *a, const char *fmt, ...) PRINTF_LIKE(2, 3);
/* Registers fn(ptr) to run when the arena is freed. */
void arena_on_free(struct arena *a, void (*fn)(void *), void *ptr);

#endif
