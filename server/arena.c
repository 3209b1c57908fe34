/* arena.c -- bump allocator over a list of blocks, plus a cleanup stack. */
#include "arena.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_BLOCK 4096

struct block {
    struct block *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

struct cleanup {
    struct cleanup *next;
    void (*fn)(void *);
    void *ptr;
};

struct arena {
    struct block *blocks;
    struct cleanup *cleanups;
    struct arena *next_free; /* in the cache below */
    struct block *first;     /* allocated with the arena, right behind it */
};

/* Every request makes and frees an arena: a few are kept for reuse, so the common request
 * (whose needs fit the first block) costs no allocation at all. Arenas are made and freed on
 * the event loop only (http.c, the request contexts), so the cache needs no lock. */
#if defined(__SANITIZE_ADDRESS__)
#define ARENA_CACHE_MAX 0 /* AddressSanitizer sees every use after free */
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ARENA_CACHE_MAX 0
#endif
#endif
#ifndef ARENA_CACHE_MAX
#define ARENA_CACHE_MAX 64
#endif
static struct arena *arena_cache;
static int arena_cached;

/* The arena and its first block in one allocation, the block 16-byte aligned behind it. */
#define ARENA_HEAD ((sizeof(struct arena) + 15) & ~(size_t)15)

struct arena *arena_new(void)
{
    struct arena *a = arena_cache;
    if (a) {
        arena_cache = a->next_free;
        arena_cached--;
    } else {
        a = xmalloc(ARENA_HEAD + sizeof(struct block) + ARENA_BLOCK);
        a->first = (struct block *)((unsigned char *)a + ARENA_HEAD);
        a->first->cap = ARENA_BLOCK;
    }
    a->first->next = NULL;
    a->first->used = 0;
    a->blocks = a->first;
    a->cleanups = NULL;
    a->next_free = NULL;
    return a;
}

void arena_free(struct arena *a)
{
    if (!a)
        return;
    for (struct cleanup *c = a->cleanups; c; c = c->next)
        c->fn(c->ptr);
    struct block *b = a->blocks;
    while (b) {
        struct block *next = b->next;
        if (b != a->first)
            free(b);
        b = next;
    }
    if (arena_cached < ARENA_CACHE_MAX) {
        a->next_free = arena_cache;
        arena_cache = a;
        arena_cached++;
        return;
    }
    free(a);
}

void *arena_alloc(struct arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct block *b = a->blocks;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
        b = xmalloc(sizeof(struct block) + cap);
        b->used = 0;
        b->cap = cap;
        /* A large one-off allocation goes behind the current block so the current block's
         * free space stays usable. */
        if (a->blocks && n > ARENA_BLOCK) {
            b->next = a->blocks->next;
            a->blocks->next = b;
        } else {
            b->next = a->blocks;
            a->blocks = b;
        }
    }
    void *p = b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

char *arena_strndup(struct arena *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *arena_strdup(struct arena *a, const char *s)
{
    return arena_strndup(a, s, strlen(s));
}

char *arena_printf(struct arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    ASSERT(n >= 0);
    char *p = arena_alloc(a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

void arena_on_free(struct arena *a, void (*fn)(void *), void *ptr)
{
    struct cleanup *c = arena_alloc(a, sizeof *c);
    c->fn = fn;
    c->ptr = ptr;
    c->next = a->cleanups;
    a->cleanups = c;
}
