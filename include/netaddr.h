/* netaddr.h -- what kind of address an outgoing connection would reach, and how a URL's host
 * is read by a resolver. Pure functions (no I/O, no DNS), used by the webhook client against
 * server-side request forgery (SSRF).
 *
 * The rule: decide on the address that will be connected to, never on the spelling. A host is
 * read the way getaddrinfo reads it (every IPv4 form that inet_aton accepts: "0x7f000001",
 * "2130706433", "127.1", "017700000001", "0177.0.0.1"; bracketed IPv6), and an IPv6 address
 * that carries an IPv4 one (IPv4-mapped ::ffff:a.b.c.d, IPv4-compatible ::a.b.c.d,
 * IPv4-translated ::ffff:0:a.b.c.d, NAT64 64:ff9b::/96, 6to4 2002::/16) is judged by the IPv4
 * address it carries. */
#ifndef GP_NETADDR_H
#define GP_NETADDR_H

#include "common.h"

#include <netinet/in.h>
#include <sys/socket.h>

enum netaddr_kind {
    NETADDR_PUBLIC,        /* global unicast: the only kind a production webhook may reach */
    NETADDR_LOOPBACK,      /* 127/8, ::1 */
    NETADDR_PRIVATE,       /* 10/8, 172.16/12, 192.168/16, fc00::/7, fec0::/10 */
    NETADDR_SHARED,        /* 100.64/10, carrier-grade NAT */
    NETADDR_LINK_LOCAL,    /* 169.254/16 (cloud metadata), fe80::/10 */
    NETADDR_UNSPECIFIED,   /* 0/8 "this network", :: */
    NETADDR_MULTICAST,     /* 224/4, ff00::/8 */
    NETADDR_BROADCAST,     /* 255.255.255.255 */
    NETADDR_DOCUMENTATION, /* 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20 */
    NETADDR_BENCHMARK,     /* 198.18/15, 2001:2::/48 */
    NETADDR_RESERVED,      /* 240/4, 192.0.0/24, 192.88.99/24, 2001::/23, 100::/64, 5f00::/16,
                              64:ff9b:1::/48, and IPv6 outside 2000::/3 */
    NETADDR_NOT_IP,        /* not AF_INET or AF_INET6 */
};

/* Classifies an IPv4 address given in host byte order. */
enum netaddr_kind netaddr_classify_v4(uint32_t addr);
/* Classifies an IPv6 address; an embedded IPv4 address is classified as IPv4. */
enum netaddr_kind netaddr_classify_v6(const struct in6_addr *addr);
/* Classifies an AF_INET or AF_INET6 socket address (NETADDR_NOT_IP for other families). */
enum netaddr_kind netaddr_classify(const struct sockaddr *sa);
/* A short lower-case name for logs and messages ("loopback", "link-local", ...). */
const char *netaddr_kind_name(enum netaddr_kind kind);
/* Whether a connection may go to an address of this kind. allow_private (tests only) also
 * admits loopback, private, shared and link-local; the other kinds are never admitted. */
bool netaddr_allowed(enum netaddr_kind kind, bool allow_private);
/* Writes sa's address (no port) in canonical text; false (and "?") when it is not IP. */
bool netaddr_format(const struct sockaddr *sa, char *buf, size_t cap);

enum netaddr_host {
    NETADDR_HOST_INVALID,    /* not a host a resolver would accept as a name or a literal */
    NETADDR_HOST_LITERAL,    /* an IP address in any spelling; *ss is filled (port 0) */
    NETADDR_HOST_LOCAL_NAME, /* localhost and its kin, a single-label name (which the resolver's
                                search list completes into the local domain), or a name in a
                                special-use local zone (.local, .internal, .home.arpa, ...) */
    NETADDR_HOST_NAME,       /* a DNS name that needs resolving */
};

/* Reads a URL's host (as evhttp_uri_get_host returns it: IPv6 in brackets) the way the
 * resolver would. One trailing dot is allowed. A name is letters, digits, '-', '_' and dots,
 * labels of 1..63 characters, at most 253 in all, and its last label is not numeric (such a
 * host is an IPv4 literal or nothing: "1.2.3.4.5" and "4294967296" are INVALID). */
enum netaddr_host netaddr_parse_host(const char *host, struct sockaddr_storage *ss);

#endif
