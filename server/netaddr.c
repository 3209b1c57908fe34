/* netaddr.c -- address kinds and host parsing against SSRF (netaddr.h has the contract).
 *
 * The ranges follow the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890 and
 * its updates). Where a block holds a few globally reachable exceptions (192.0.0.9/32 in
 * 192.0.0/24, the anycast and ORCHID blocks in 2001::/23) the whole block is refused: none of
 * them is a web server a merchant could run. */
#include "netaddr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* First match wins, so the broadcast /32 comes before 240/4. */
static const struct {
    uint32_t net;
    int bits;
    enum netaddr_kind kind;
} v4_ranges[] = {
    {0xFFFFFFFFu, 32, NETADDR_BROADCAST},     /* 255.255.255.255 */
    {0x00000000u, 8, NETADDR_UNSPECIFIED},    /* 0/8 "this network" */
    {0x0A000000u, 8, NETADDR_PRIVATE},        /* 10/8 */
    {0x64400000u, 10, NETADDR_SHARED},        /* 100.64/10 */
    {0x7F000000u, 8, NETADDR_LOOPBACK},       /* 127/8 */
    {0xA9FE0000u, 16, NETADDR_LINK_LOCAL},    /* 169.254/16 */
    {0xAC100000u, 12, NETADDR_PRIVATE},       /* 172.16/12 */
    {0xC0000000u, 24, NETADDR_RESERVED},      /* 192.0.0/24 IETF protocol assignments */
    {0xC0000200u, 24, NETADDR_DOCUMENTATION}, /* 192.0.2/24 TEST-NET-1 */
    {0xC0586300u, 24, NETADDR_RESERVED},      /* 192.88.99/24 6to4 relay anycast */
    {0xC0A80000u, 16, NETADDR_PRIVATE},       /* 192.168/16 */
    {0xC6120000u, 15, NETADDR_BENCHMARK},     /* 198.18/15 */
    {0xC6336400u, 24, NETADDR_DOCUMENTATION}, /* 198.51.100/24 TEST-NET-2 */
    {0xCB007100u, 24, NETADDR_DOCUMENTATION}, /* 203.0.113/24 TEST-NET-3 */
    {0xE0000000u, 4, NETADDR_MULTICAST},      /* 224/4 */
    {0xF0000000u, 4, NETADDR_RESERVED},       /* 240/4 */
};

enum netaddr_kind netaddr_classify_v4(uint32_t addr)
{
    for (size_t i = 0; i < ARRAY_SIZE(v4_ranges); i++) {
        uint32_t mask = 0xFFFFFFFFu << (32 - v4_ranges[i].bits);
        if ((addr & mask) == v4_ranges[i].net)
            return v4_ranges[i].kind;
    }
    return NETADDR_PUBLIC;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static bool all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

enum netaddr_kind netaddr_classify_v6(const struct in6_addr *addr)
{
    const unsigned char *b = addr->s6_addr;
    if (all_zero(b, 16))
        return NETADDR_UNSPECIFIED;
    if (all_zero(b, 15) && b[15] == 1)
        return NETADDR_LOOPBACK;
    /* Forms that carry an IPv4 address: a kernel, a translator or a relay may turn them into
     * an IPv4 connection, so the IPv4 address decides. */
    if (all_zero(b, 10) && b[10] == 0xff && b[11] == 0xff)
        return netaddr_classify_v4(be32(b + 12)); /* ::ffff:a.b.c.d, IPv4-mapped */
    if (all_zero(b, 12))
        return netaddr_classify_v4(be32(b + 12)); /* ::a.b.c.d, IPv4-compatible */
    if (all_zero(b, 8) && b[8] == 0xff && b[9] == 0xff && b[10] == 0 && b[11] == 0)
        return netaddr_classify_v4(be32(b + 12)); /* ::ffff:0:a.b.c.d, IPv4-translated */
    if (b[0] == 0 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b) {
        if (all_zero(b + 4, 8))
            return netaddr_classify_v4(be32(b + 12)); /* 64:ff9b::/96, NAT64 */
        return NETADDR_RESERVED; /* 64:ff9b:1::/48 local-use NAT64 and the rest of the /32 */
    }
    if (b[0] == 0x20 && b[1] == 0x02)
        return netaddr_classify_v4(be32(b + 2)); /* 2002:aabb:ccdd::/48, 6to4 */
    if (b[0] == 0xff)
        return NETADDR_MULTICAST;
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
        return NETADDR_LINK_LOCAL; /* fe80::/10 */
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0)
        return NETADDR_PRIVATE; /* fec0::/10, deprecated site-local */
    if ((b[0] & 0xfe) == 0xfc)
        return NETADDR_PRIVATE; /* fc00::/7 unique local */
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8)
        return NETADDR_DOCUMENTATION; /* 2001:db8::/32 */
    if (b[0] == 0x3f && b[1] == 0xff && (b[2] & 0xf0) == 0)
        return NETADDR_DOCUMENTATION; /* 3fff::/20 */
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0x02 && b[4] == 0 && b[5] == 0)
        return NETADDR_BENCHMARK; /* 2001:2::/48 */
    if (b[0] == 0x20 && b[1] == 0x01 && (b[2] & 0xfe) == 0)
        return NETADDR_RESERVED; /* 2001::/23 IETF protocol assignments, Teredo included */
    if ((b[0] & 0xe0) != 0x20)
        return NETADDR_RESERVED; /* outside 2000::/3, the only global unicast allocation
                                    (100::/64 discard, 5f00::/16 SRv6 and the rest) */
    return NETADDR_PUBLIC;
}

enum netaddr_kind netaddr_classify(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return netaddr_classify_v4(ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr));
    if (sa->sa_family == AF_INET6)
        return netaddr_classify_v6(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return NETADDR_NOT_IP;
}

const char *netaddr_kind_name(enum netaddr_kind kind)
{
    switch (kind) {
    case NETADDR_PUBLIC:
        return "public";
    case NETADDR_LOOPBACK:
        return "loopback";
    case NETADDR_PRIVATE:
        return "private";
    case NETADDR_SHARED:
        return "shared (carrier-grade NAT)";
    case NETADDR_LINK_LOCAL:
        return "link-local";
    case NETADDR_UNSPECIFIED:
        return "unspecified";
    case NETADDR_MULTICAST:
        return "multicast";
    case NETADDR_BROADCAST:
        return "broadcast";
    case NETADDR_DOCUMENTATION:
        return "documentation";
    case NETADDR_BENCHMARK:
        return "benchmarking";
    case NETADDR_RESERVED:
        return "reserved";
    case NETADDR_NOT_IP:
        break;
    }
    return "not an IP address";
}

bool netaddr_allowed(enum netaddr_kind kind, bool allow_private)
{
    if (kind == NETADDR_PUBLIC)
        return true;
    return allow_private && (kind == NETADDR_LOOPBACK || kind == NETADDR_PRIVATE ||
                             kind == NETADDR_SHARED || kind == NETADDR_LINK_LOCAL);
}

bool netaddr_format(const struct sockaddr *sa, char *buf, size_t cap)
{
    const void *a = NULL;
    if (sa->sa_family == AF_INET)
        a = &((const struct sockaddr_in *)sa)->sin_addr;
    else if (sa->sa_family == AF_INET6)
        a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (a && inet_ntop(sa->sa_family, a, buf, (socklen_t)cap))
        return true;
    if (cap)
        snprintf(buf, cap, "?");
    return false;
}

/* ---- hosts ---- */

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_hex(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* A label a resolver would read as a number ("1", "0x7f", "0377"): no top-level domain looks
 * like that, so a host ending in one is an IPv4 literal or invalid, never a name. */
static bool numeric_label(const char *s)
{
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        for (s += 2; *s; s++)
            if (!is_hex(*s))
                return false;
        return true;
    }
    for (; *s; s++)
        if (!is_digit(*s))
            return false;
    return true;
}

/* Top-level labels that name the local host or a private network, never a public one:
 * RFC 6761 (localhost), RFC 6762 (local and the private-use names of its appendix G), the
 * ICANN private-use .internal, and the localdomain of many /etc/hosts files. */
static const char *const local_tlds[] = {
    "localhost", "local", "internal", "localdomain", "intranet", "private", "corp", "home", "lan",
};

static bool local_name(const char *name, const char *last)
{
    if (!strchr(name, '.'))
        return true; /* single label: the search list completes it into the local domain */
    for (size_t i = 0; i < ARRAY_SIZE(local_tlds); i++)
        if (!strcasecmp(last, local_tlds[i]))
            return true;
    size_t n = strlen(name);
    return n >= 10 && !strcasecmp(name + n - 10, ".home.arpa"); /* RFC 8375 */
}

enum netaddr_host netaddr_parse_host(const char *host, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    size_t n = host ? strlen(host) : 0;
    if (n == 0)
        return NETADDR_HOST_INVALID;
    if (host[0] == '[') {
        /* An IP-literal: IPv6 only. No zone id ("%25eth0"), no IPvFuture. */
        char buf[INET6_ADDRSTRLEN];
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        if (n < 3 || host[n - 1] != ']' || n - 2 >= sizeof buf)
            return NETADDR_HOST_INVALID;
        memcpy(buf, host + 1, n - 2);
        buf[n - 2] = '\0';
        if (inet_pton(AF_INET6, buf, &s6->sin6_addr) != 1)
            return NETADDR_HOST_INVALID;
        s6->sin6_family = AF_INET6;
        return NETADDR_HOST_LITERAL;
    }
    if (host[n - 1] == '.')
        n--; /* one trailing dot: the absolute form of the same name or address */
    if (n == 0 || n > 253)
        return NETADDR_HOST_INVALID;
    char name[254];
    memcpy(name, host, n);
    name[n] = '\0';
    size_t label = 0;
    const char *last = name;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (c == '.') {
            if (label == 0)
                return NETADDR_HOST_INVALID;
            label = 0;
            last = name + i + 1;
            continue;
        }
        if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '_')
            return NETADDR_HOST_INVALID;
        if (++label > 63)
            return NETADDR_HOST_INVALID;
    }
    if (label == 0)
        return NETADDR_HOST_INVALID;
    /* inet_aton is what getaddrinfo uses for a numeric host: it takes 1 to 4 parts, each
     * decimal, octal (leading 0) or hex (0x), the last one filling the remaining bytes. The
     * characters were checked above, so its tolerance of trailing blanks does not matter. */
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    if (inet_aton(name, &s4->sin_addr)) {
        s4->sin_family = AF_INET;
        return NETADDR_HOST_LITERAL;
    }
    s4->sin_addr.s_addr = 0;
    if (numeric_label(last))
        return NETADDR_HOST_INVALID;
    if (local_name(name, last))
        return NETADDR_HOST_LOCAL_NAME;
    return NETADDR_HOST_NAME;
}
