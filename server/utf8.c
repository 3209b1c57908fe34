/* utf8.c -- UTF-8 validation and repair (see utf8.h). */
#include "utf8.h"

#include <string.h>

/* Length of the well-formed sequence at s (at most avail bytes), or 0 when it is ill-formed
 * (Unicode Table 3-7, the same rules as jansson's and PostgreSQL's validators). */
static size_t seq_len(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else
        return 0;
    if (avail < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return n;
}

size_t utf8_valid_prefix(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        size_t n = seq_len(p + i, len - i);
        if (n == 0)
            break;
        i += n;
    }
    return i;
}

bool utf8_is_valid(const char *s, size_t len)
{
    return utf8_valid_prefix(s, len) == len && memchr(s, '\0', len) == NULL;
}

size_t utf8_sanitize(char *dst, size_t cap, const char *src, size_t len)
{
    static const char replacement[] = "\xEF\xBF\xBD"; /* U+FFFD */
    const unsigned char *p = (const unsigned char *)src;
    size_t i = 0, o = 0;
    while (i < len && p[i] != '\0') {
        size_t n = seq_len(p + i, len - i);
        const char *from = n ? src + i : replacement;
        size_t w = n ? n : 3;
        if (o + w + 1 > cap)
            break;
        memcpy(dst + o, from, w);
        o += w;
        i += n ? n : 1;
    }
    dst[o] = '\0';
    return o;
}
