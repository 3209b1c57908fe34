/* utf8.h -- UTF-8 validation and repair for text that goes into replies and logs.
 *
 * Every text a reply quotes (error messages, field names, echoed values) may carry bytes a
 * client sent. jansson refuses to serialise invalid UTF-8, so a reply that quotes such bytes
 * would fail to encode; these helpers make any byte string valid and bounded first. */
#ifndef GP_UTF8_H
#define GP_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Length of the longest prefix of s[0..len) that is well-formed UTF-8 (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF). Equals len when all of it is. */
size_t utf8_valid_prefix(const char *s, size_t len);

/* True when s[0..len) is well-formed UTF-8 without NUL bytes. */
bool utf8_is_valid(const char *s, size_t len);

/* Copies src[0..len) into dst (capacity cap >= 4) as well-formed UTF-8: every ill-formed
 * byte becomes U+FFFD, NUL bytes end the text, and the copy is cut on a character boundary so
 * that it fits with its terminating NUL. Returns the length written (without the NUL). */
size_t utf8_sanitize(char *dst, size_t cap, const char *src, size_t len);

#endif
