/* test_netaddr.c -- the SSRF address policy (netaddr.c) and the webhook URL check built on it
 * (webhook.c), table-driven: every special-purpose range at its edges, every IPv6 form that
 * carries an IPv4 address, every IPv4 spelling inet_aton reads, and the host forms a URL can
 * hold. Expected addresses are written in canonical form and parsed with inet_pton, so a table
 * row checks the parser against an independent reading. */
#include "netaddr.h"
#include "webhook.h"

#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include <cmocka.h>

static struct sockaddr_storage addr_of(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (inet_pton(AF_INET, ip, &((struct sockaddr_in *)&ss)->sin_addr) == 1)
        ss.ss_family = AF_INET;
    else if (inet_pton(AF_INET6, ip, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1)
        ss.ss_family = AF_INET6;
    else
        fail_msg("bad test address %s", ip);
    return ss;
}

static enum netaddr_kind kind_of(const char *ip)
{
    struct sockaddr_storage ss = addr_of(ip);
    return netaddr_classify((struct sockaddr *)&ss);
}

struct kind_case {
    const char *ip;
    enum netaddr_kind want;
};

static void run_kinds(const struct kind_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        enum netaddr_kind got = kind_of(cases[i].ip);
        if (got != cases[i].want)
            fail_msg("%s: got %s, want %s", cases[i].ip, netaddr_kind_name(got),
                     netaddr_kind_name(cases[i].want));
    }
}

static void test_v4_ranges(void **state)
{
    static const struct kind_case cases[] = {
        {"0.0.0.0", NETADDR_UNSPECIFIED},
        {"0.255.255.255", NETADDR_UNSPECIFIED},
        {"1.0.0.0", NETADDR_PUBLIC},
        {"8.8.8.8", NETADDR_PUBLIC},
        {"9.255.255.255", NETADDR_PUBLIC},
        {"10.0.0.0", NETADDR_PRIVATE},
        {"10.255.255.255", NETADDR_PRIVATE},
        {"11.0.0.0", NETADDR_PUBLIC},
        {"100.63.255.255", NETADDR_PUBLIC},
        {"100.64.0.0", NETADDR_SHARED},
        {"100.127.255.255", NETADDR_SHARED},
        {"100.128.0.0", NETADDR_PUBLIC},
        {"126.255.255.255", NETADDR_PUBLIC},
        {"127.0.0.0", NETADDR_LOOPBACK},
        {"127.0.0.1", NETADDR_LOOPBACK},
        {"127.255.255.255", NETADDR_LOOPBACK},
        {"128.0.0.0", NETADDR_PUBLIC},
        {"169.253.255.255", NETADDR_PUBLIC},
        {"169.254.0.0", NETADDR_LINK_LOCAL},
        {"169.254.169.254", NETADDR_LINK_LOCAL},
        {"169.254.255.255", NETADDR_LINK_LOCAL},
        {"169.255.0.0", NETADDR_PUBLIC},
        {"172.15.255.255", NETADDR_PUBLIC},
        {"172.16.0.0", NETADDR_PRIVATE},
        {"172.31.255.255", NETADDR_PRIVATE},
        {"172.32.0.0", NETADDR_PUBLIC},
        {"191.255.255.255", NETADDR_PUBLIC},
        {"192.0.0.0", NETADDR_RESERVED},
        {"192.0.0.170", NETADDR_RESERVED},
        {"192.0.0.255", NETADDR_RESERVED},
        {"192.0.1.0", NETADDR_PUBLIC},
        {"192.0.2.0", NETADDR_DOCUMENTATION},
        {"192.0.2.255", NETADDR_DOCUMENTATION},
        {"192.0.3.0", NETADDR_PUBLIC},
        {"192.88.98.255", NETADDR_PUBLIC},
        {"192.88.99.1", NETADDR_RESERVED},
        {"192.88.100.0", NETADDR_PUBLIC},
        {"192.167.255.255", NETADDR_PUBLIC},
        {"192.168.0.0", NETADDR_PRIVATE},
        {"192.168.255.255", NETADDR_PRIVATE},
        {"192.169.0.0", NETADDR_PUBLIC},
        {"198.17.255.255", NETADDR_PUBLIC},
        {"198.18.0.0", NETADDR_BENCHMARK},
        {"198.19.255.255", NETADDR_BENCHMARK},
        {"198.20.0.0", NETADDR_PUBLIC},
        {"198.51.99.255", NETADDR_PUBLIC},
        {"198.51.100.0", NETADDR_DOCUMENTATION},
        {"198.51.100.255", NETADDR_DOCUMENTATION},
        {"198.51.101.0", NETADDR_PUBLIC},
        {"203.0.112.255", NETADDR_PUBLIC},
        {"203.0.113.0", NETADDR_DOCUMENTATION},
        {"203.0.113.255", NETADDR_DOCUMENTATION},
        {"203.0.114.0", NETADDR_PUBLIC},
        {"223.255.255.255", NETADDR_PUBLIC},
        {"224.0.0.0", NETADDR_MULTICAST},
        {"239.255.255.250", NETADDR_MULTICAST},
        {"239.255.255.255", NETADDR_MULTICAST},
        {"240.0.0.0", NETADDR_RESERVED},
        {"255.255.255.254", NETADDR_RESERVED},
        {"255.255.255.255", NETADDR_BROADCAST},
    };
    run_kinds(cases, ARRAY_SIZE(cases));
}

static void test_v6_ranges(void **state)
{
    static const struct kind_case cases[] = {
        {"::", NETADDR_UNSPECIFIED},
        {"::1", NETADDR_LOOPBACK},
        {"2606:4700:4700::1111", NETADDR_PUBLIC},
        {"2a00:1450:4001::200e", NETADDR_PUBLIC},
        {"2001:200::1", NETADDR_PUBLIC},
        {"3fff:1000::1", NETADDR_PUBLIC},
        {"ff02::1", NETADDR_MULTICAST},
        {"ff05::1:3", NETADDR_MULTICAST},
        {"ff0e::1", NETADDR_MULTICAST},
        {"fe80::1", NETADDR_LINK_LOCAL},
        {"febf:ffff::1", NETADDR_LINK_LOCAL},
        {"fec0::1", NETADDR_PRIVATE},
        {"fc00::1", NETADDR_PRIVATE},
        {"fd12:3456:789a::1", NETADDR_PRIVATE},
        {"fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NETADDR_PRIVATE},
        {"2001:db8::1", NETADDR_DOCUMENTATION},
        {"2001:db8:ffff:ffff::1", NETADDR_DOCUMENTATION},
        {"3fff::1", NETADDR_DOCUMENTATION},
        {"3fff:fff:ffff::1", NETADDR_DOCUMENTATION},
        {"2001:2::1", NETADDR_BENCHMARK},
        {"2001::1", NETADDR_RESERVED}, /* Teredo */
        {"2001:0:4136:e378:8000:63bf:3fff:fdd2", NETADDR_RESERVED},
        {"2001:1ff:ffff::1", NETADDR_RESERVED}, /* end of 2001::/23 */
        {"100::1", NETADDR_RESERVED},           /* discard-only */
        {"5f00::1", NETADDR_RESERVED},          /* SRv6 SIDs */
        {"4000::1", NETADDR_RESERVED},          /* outside 2000::/3 */
        {"1fff:ffff::1", NETADDR_RESERVED},
        {"::1:0:0:1", NETADDR_RESERVED},
        /* IPv4-mapped: judged by the IPv4 address */
        {"::ffff:127.0.0.1", NETADDR_LOOPBACK},
        {"::ffff:7f00:1", NETADDR_LOOPBACK},
        {"0:0:0:0:0:ffff:7f00:0001", NETADDR_LOOPBACK},
        {"::ffff:10.1.2.3", NETADDR_PRIVATE},
        {"::ffff:169.254.169.254", NETADDR_LINK_LOCAL},
        {"::ffff:100.64.0.1", NETADDR_SHARED},
        {"::ffff:0.0.0.0", NETADDR_UNSPECIFIED},
        {"::ffff:255.255.255.255", NETADDR_BROADCAST},
        {"::ffff:224.0.0.1", NETADDR_MULTICAST},
        {"::ffff:8.8.8.8", NETADDR_PUBLIC},
        /* IPv4-compatible (deprecated) */
        {"::127.0.0.1", NETADDR_LOOPBACK},
        {"::7f00:1", NETADDR_LOOPBACK},
        {"::192.168.1.1", NETADDR_PRIVATE},
        {"::0.0.0.2", NETADDR_UNSPECIFIED},
        {"::8.8.8.8", NETADDR_PUBLIC},
        /* IPv4-translated (SIIT) */
        {"::ffff:0:127.0.0.1", NETADDR_LOOPBACK},
        {"::ffff:0:8.8.8.8", NETADDR_PUBLIC},
        /* NAT64 well-known prefix, and the local-use one */
        {"64:ff9b::127.0.0.1", NETADDR_LOOPBACK},
        {"64:ff9b::a9fe:a9fe", NETADDR_LINK_LOCAL},
        {"64:ff9b::192.0.2.33", NETADDR_DOCUMENTATION},
        {"64:ff9b::8.8.8.8", NETADDR_PUBLIC},
        {"64:ff9b:1::808:808", NETADDR_RESERVED},
        /* 6to4 */
        {"2002:7f00:1::1", NETADDR_LOOPBACK},
        {"2002:c0a8:101::1", NETADDR_PRIVATE},
        {"2002:a9fe:a9fe::", NETADDR_LINK_LOCAL},
        {"2002:808:808::1", NETADDR_PUBLIC},
    };
    run_kinds(cases, ARRAY_SIZE(cases));
}

static void test_policy(void **state)
{
    static const struct {
        enum netaddr_kind kind;
        bool strict, lax; /* allowed with allow_private false, true */
    } cases[] = {
        {NETADDR_PUBLIC, true, true},          {NETADDR_LOOPBACK, false, true},
        {NETADDR_PRIVATE, false, true},        {NETADDR_SHARED, false, true},
        {NETADDR_LINK_LOCAL, false, true},     {NETADDR_UNSPECIFIED, false, false},
        {NETADDR_MULTICAST, false, false},     {NETADDR_BROADCAST, false, false},
        {NETADDR_DOCUMENTATION, false, false}, {NETADDR_BENCHMARK, false, false},
        {NETADDR_RESERVED, false, false},      {NETADDR_NOT_IP, false, false},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        if (netaddr_allowed(cases[i].kind, false) != cases[i].strict ||
            netaddr_allowed(cases[i].kind, true) != cases[i].lax)
            fail_msg("policy for %s", netaddr_kind_name(cases[i].kind));
        assert_non_null(netaddr_kind_name(cases[i].kind));
    }
    struct sockaddr_un un;
    memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    assert_int_equal(netaddr_classify((struct sockaddr *)&un), NETADDR_NOT_IP);
    char buf[INET6_ADDRSTRLEN];
    assert_false(netaddr_format((struct sockaddr *)&un, buf, sizeof buf));
    assert_string_equal(buf, "?");
    struct sockaddr_storage ss = addr_of("::ffff:127.0.0.1");
    assert_true(netaddr_format((struct sockaddr *)&ss, buf, sizeof buf));
    assert_string_equal(buf, "::ffff:127.0.0.1");
}

/* Every spelling of an IPv4 address that inet_aton (hence getaddrinfo) accepts is a literal,
 * read as the resolver reads it, and classified by the address it names. */
static void test_ipv4_spellings(void **state)
{
    static const struct {
        const char *host;
        const char *addr; /* canonical */
        enum netaddr_kind kind;
    } cases[] = {
        {"127.0.0.1", "127.0.0.1", NETADDR_LOOPBACK},
        {"0x7f000001", "127.0.0.1", NETADDR_LOOPBACK},
        {"0X7F000001", "127.0.0.1", NETADDR_LOOPBACK},
        {"2130706433", "127.0.0.1", NETADDR_LOOPBACK},
        {"017700000001", "127.0.0.1", NETADDR_LOOPBACK},
        {"127.1", "127.0.0.1", NETADDR_LOOPBACK},
        {"127.0.1", "127.0.0.1", NETADDR_LOOPBACK},
        {"0177.0.0.1", "127.0.0.1", NETADDR_LOOPBACK},
        {"0177.1", "127.0.0.1", NETADDR_LOOPBACK},
        {"0x7f.1", "127.0.0.1", NETADDR_LOOPBACK},
        {"0x7f.0x0.0x0.0x1", "127.0.0.1", NETADDR_LOOPBACK},
        {"127.000.000.001", "127.0.0.1", NETADDR_LOOPBACK},
        {"127.0.0.1.", "127.0.0.1", NETADDR_LOOPBACK},
        {"0x7f000001.", "127.0.0.1", NETADDR_LOOPBACK},
        {"127.255.255.254", "127.255.255.254", NETADDR_LOOPBACK},
        {"0", "0.0.0.0", NETADDR_UNSPECIFIED},
        {"0x0", "0.0.0.0", NETADDR_UNSPECIFIED},
        {"0.0", "0.0.0.0", NETADDR_UNSPECIFIED},
        {"0xa9fea9fe", "169.254.169.254", NETADDR_LINK_LOCAL},
        {"2852039166", "169.254.169.254", NETADDR_LINK_LOCAL},
        {"169.254.43518", "169.254.169.254", NETADDR_LINK_LOCAL},
        {"0251.0376.0251.0376", "169.254.169.254", NETADDR_LINK_LOCAL},
        {"3232235521", "192.168.0.1", NETADDR_PRIVATE},
        {"0300.0250.0.1", "192.168.0.1", NETADDR_PRIVATE},
        {"192.168.1", "192.168.0.1", NETADDR_PRIVATE},
        {"10.1", "10.0.0.1", NETADDR_PRIVATE},
        {"012.0.0.1", "10.0.0.1", NETADDR_PRIVATE},
        {"0xac100001", "172.16.0.1", NETADDR_PRIVATE},
        {"100.64.1", "100.64.0.1", NETADDR_SHARED},
        {"0xe0000001", "224.0.0.1", NETADDR_MULTICAST},
        {"4294967295", "255.255.255.255", NETADDR_BROADCAST},
        {"0xffffffff", "255.255.255.255", NETADDR_BROADCAST},
        {"0x08080808", "8.8.8.8", NETADDR_PUBLIC},
        {"134744072", "8.8.8.8", NETADDR_PUBLIC},
        {"8.8.2056", "8.8.8.8", NETADDR_PUBLIC},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct sockaddr_storage ss, want = addr_of(cases[i].addr);
        enum netaddr_host h = netaddr_parse_host(cases[i].host, &ss);
        if (h != NETADDR_HOST_LITERAL)
            fail_msg("%s: not read as a literal (%d)", cases[i].host, h);
        assert_int_equal(ss.ss_family, AF_INET);
        struct in_addr direct;
        char name[64];
        snprintf(name, sizeof name, "%s", cases[i].host);
        size_t n = strlen(name);
        if (name[n - 1] == '.')
            name[n - 1] = '\0';
        assert_int_equal(inet_aton(name, &direct), 1); /* the resolver's reading agrees */
        if (((struct sockaddr_in *)&ss)->sin_addr.s_addr !=
                ((struct sockaddr_in *)&want)->sin_addr.s_addr ||
            direct.s_addr != ((struct sockaddr_in *)&want)->sin_addr.s_addr)
            fail_msg("%s: not read as %s", cases[i].host, cases[i].addr);
        enum netaddr_kind k = netaddr_classify((struct sockaddr *)&ss);
        if (k != cases[i].kind)
            fail_msg("%s: got %s, want %s", cases[i].host, netaddr_kind_name(k),
                     netaddr_kind_name(cases[i].kind));
    }
}

static void test_hosts(void **state)
{
    static char long_label[80], long_name[300], max_name[300];
    memset(long_label, 'a', 64);
    long_label[64] = '\0';
    /* 4 labels of 63 = 255 characters; 3 of 63 and one of 61 = 253 */
    snprintf(long_name, sizeof long_name, "%.63s.%.63s.%.63s.%.63s", long_label, long_label,
             long_label, long_label);
    snprintf(max_name, sizeof max_name, "%.63s.%.63s.%.63s.%.61s", long_label, long_label,
             long_label, long_label);
    const struct {
        const char *host;
        enum netaddr_host want;
        const char *addr; /* for literals */
    } cases[] = {
        /* IPv6 literals, as evhttp_uri_get_host returns them (in brackets) */
        {"[::1]", NETADDR_HOST_LITERAL, "::1"},
        {"[0:0:0:0:0:0:0:1]", NETADDR_HOST_LITERAL, "::1"},
        {"[::ffff:127.0.0.1]", NETADDR_HOST_LITERAL, "::ffff:127.0.0.1"},
        {"[::ffff:7f00:1]", NETADDR_HOST_LITERAL, "::ffff:127.0.0.1"},
        {"[::127.0.0.1]", NETADDR_HOST_LITERAL, "::127.0.0.1"},
        {"[64:ff9b::7f00:1]", NETADDR_HOST_LITERAL, "64:ff9b::7f00:1"},
        {"[FE80::1]", NETADDR_HOST_LITERAL, "fe80::1"},
        {"[2606:4700:4700::1111]", NETADDR_HOST_LITERAL, "2606:4700:4700::1111"},
        {"[fe80::1%25eth0]", NETADDR_HOST_INVALID, NULL}, /* zone ids are not for us */
        {"[fe80::1%eth0]", NETADDR_HOST_INVALID, NULL},
        {"[v1.fe80::1]", NETADDR_HOST_INVALID, NULL}, /* IPvFuture */
        {"[127.0.0.1]", NETADDR_HOST_INVALID, NULL},
        {"[::1", NETADDR_HOST_INVALID, NULL},
        {"[]", NETADDR_HOST_INVALID, NULL},
        {"[", NETADDR_HOST_INVALID, NULL},
        {"::1", NETADDR_HOST_INVALID, NULL},
        /* numeric but not an address: no name ends in a numeric label */
        {"1.2.3.4.5", NETADDR_HOST_INVALID, NULL},
        {"256.0.0.1", NETADDR_HOST_INVALID, NULL},
        {"127.0.0.256", NETADDR_HOST_INVALID, NULL},
        {"4294967296", NETADDR_HOST_INVALID, NULL},
        {"0x100000000", NETADDR_HOST_INVALID, NULL},
        {"08", NETADDR_HOST_INVALID, NULL},
        {"0x", NETADDR_HOST_INVALID, NULL}, /* glibc inet_aton refuses it */
        {"example.0x1f", NETADDR_HOST_INVALID, NULL},
        {"example.123", NETADDR_HOST_INVALID, NULL},
        /* malformed names */
        {"", NETADDR_HOST_INVALID, NULL},
        {".", NETADDR_HOST_INVALID, NULL},
        {"..", NETADDR_HOST_INVALID, NULL},
        {".example.com", NETADDR_HOST_INVALID, NULL},
        {"example..com", NETADDR_HOST_INVALID, NULL},
        {"example.com..", NETADDR_HOST_INVALID, NULL},
        {"127.0.0.1..", NETADDR_HOST_INVALID, NULL},
        {"exa mple.com", NETADDR_HOST_INVALID, NULL},
        {"exa%2eple.com", NETADDR_HOST_INVALID, NULL},
        {"%31%32%37.0.0.1", NETADDR_HOST_INVALID, NULL},
        {"example.com:443", NETADDR_HOST_INVALID, NULL},
        {"user@example.com", NETADDR_HOST_INVALID, NULL},
        {"ex\xc3\xa4mple.com", NETADDR_HOST_INVALID, NULL},
        {long_label, NETADDR_HOST_INVALID, NULL},
        {long_name, NETADDR_HOST_INVALID, NULL},
        {max_name, NETADDR_HOST_NAME, NULL},
        /* obviously local names */
        {"localhost", NETADDR_HOST_LOCAL_NAME, NULL},
        {"LocalHost", NETADDR_HOST_LOCAL_NAME, NULL},
        {"localhost.", NETADDR_HOST_LOCAL_NAME, NULL},
        {"api.localhost", NETADDR_HOST_LOCAL_NAME, NULL},
        {"api.LOCALHOST.", NETADDR_HOST_LOCAL_NAME, NULL},
        {"localhost.localdomain", NETADDR_HOST_LOCAL_NAME, NULL},
        {"ip6-localhost", NETADDR_HOST_LOCAL_NAME, NULL},
        {"ip6-loopback", NETADDR_HOST_LOCAL_NAME, NULL},
        {"intranet", NETADDR_HOST_LOCAL_NAME, NULL},
        {"metadata", NETADDR_HOST_LOCAL_NAME, NULL},
        {"metadata.", NETADDR_HOST_LOCAL_NAME, NULL},
        {"metadata.google.internal", NETADDR_HOST_LOCAL_NAME, NULL},
        {"printer.local", NETADDR_HOST_LOCAL_NAME, NULL},
        {"nas.home.arpa", NETADDR_HOST_LOCAL_NAME, NULL},
        {"git.corp", NETADDR_HOST_LOCAL_NAME, NULL},
        {"router.lan", NETADDR_HOST_LOCAL_NAME, NULL},
        /* names that need DNS (checked again after resolution, at delivery) */
        {"shop.example.cn", NETADDR_HOST_NAME, NULL},
        {"shop.example.cn.", NETADDR_HOST_NAME, NULL},
        {"hooks.gridpoints.test", NETADDR_HOST_NAME, NULL},
        {"xn--fiqs8s.xn--fiqs8s", NETADDR_HOST_NAME, NULL},
        {"_hooks.example.com", NETADDR_HOST_NAME, NULL},
        {"1.2.3.example", NETADDR_HOST_NAME, NULL},
        {"127.0.0.1.nip.io", NETADDR_HOST_NAME, NULL},
        {"localhost.example.com", NETADDR_HOST_NAME, NULL},
        {"home.arpa.example.com", NETADDR_HOST_NAME, NULL},
        {"0x7f000001.example.com", NETADDR_HOST_NAME, NULL},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct sockaddr_storage ss;
        enum netaddr_host h = netaddr_parse_host(cases[i].host, &ss);
        if (h != cases[i].want)
            fail_msg("%s: got %d, want %d", cases[i].host, h, cases[i].want);
        if (h != NETADDR_HOST_LITERAL) {
            assert_int_equal(ss.ss_family, AF_UNSPEC);
            continue;
        }
        struct sockaddr_storage want = addr_of(cases[i].addr);
        assert_int_equal(ss.ss_family, want.ss_family);
        if (want.ss_family == AF_INET6 ? memcmp(&((struct sockaddr_in6 *)&ss)->sin6_addr,
                                                &((struct sockaddr_in6 *)&want)->sin6_addr, 16) != 0
                                       : ((struct sockaddr_in *)&ss)->sin_addr.s_addr !=
                                             ((struct sockaddr_in *)&want)->sin_addr.s_addr)
            fail_msg("%s: not read as %s", cases[i].host, cases[i].addr);
    }
    struct sockaddr_storage ss;
    assert_int_equal(netaddr_parse_host(NULL, &ss), NETADDR_HOST_INVALID);
}

static void test_webhook_urls(void **state)
{
    static const char *const refused[] = {
        /* every spelling of loopback, private, link-local, ... */
        "https://127.0.0.1:9000/h",
        "https://127.0.0.1./h",
        "https://0x7f000001/h",
        "https://2130706433/h",
        "https://127.1/h",
        "https://017700000001/h",
        "https://0177.0.0.1/h",
        "https://0x7f.0.0.1/h",
        "https://[::1]:9000/h",
        "https://[::ffff:127.0.0.1]/h",
        "https://[::ffff:7f00:1]/h",
        "https://[::127.0.0.1]/h",
        "https://[64:ff9b::7f00:1]/h",
        "https://[2002:7f00:1::1]/h",
        "https://169.254.169.254/latest/meta-data",
        "https://0xa9fea9fe/latest/meta-data",
        "https://2852039166/latest/meta-data",
        "https://[::ffff:169.254.169.254]/h",
        "https://[fe80::1]/h",
        "https://10.0.0.8/h",
        "https://3232235521/h",
        "https://172.16.0.1/h",
        "https://100.64.0.1/h",
        "https://[fd00::1]/h",
        "https://localhost/h",
        "https://LOCALHOST/h",
        "https://localhost./h",
        "https://api.localhost/h",
        "https://api.localhost./h",
        "https://runsc/h",
        "https://metadata.google.internal/computeMetadata/v1/",
        /* never, not even in tests */
        "https://0.0.0.0/h",
        "https://0/h",
        "https://[::]/h",
        "https://224.0.0.1/h",
        "https://[ff02::1]/h",
        "https://255.255.255.255/h",
        "https://4294967295/h",
        "https://192.0.2.1/h",
        "https://198.51.100.1/h",
        "https://203.0.113.1/h",
        "https://198.18.0.1/h",
        "https://240.0.0.1/h",
        "https://192.0.0.170/h",
        "https://[2001:db8::1]/h",
        "https://[2001::1]/h",
        "https://[100::1]/h",
    };
    static const char *const never[] = {
        "https://0.0.0.0/h",    "https://0/h",
        "https://[::]/h",       "https://224.0.0.1/h",
        "https://4294967295/h", "https://192.0.2.1/h",
        "https://198.18.0.1/h", "https://[2001:db8::1]/h",
        "https://240.0.0.1/h",
    };
    for (size_t i = 0; i < ARRAY_SIZE(refused); i++) {
        const char *code = NULL;
        if (webhook_url_check(refused[i], false, &code))
            fail_msg("%s: accepted", refused[i]);
        if (strcmp(code, "webhook_url_not_allowed") != 0)
            fail_msg("%s: %s", refused[i], code);
    }
    for (size_t i = 0; i < ARRAY_SIZE(never); i++) {
        const char *code = NULL;
        if (webhook_url_check(never[i], true, &code))
            fail_msg("%s: accepted with allow_private", never[i]);
        assert_string_equal(code, "webhook_url_not_allowed");
    }

    static const struct {
        const char *url;
        bool allow_private;
        bool ok;
        const char *code;
    } cases[] = {
        {"https://shop.example.cn/hooks/gridpoints", false, true, NULL},
        {"https://shop.example.cn.:8443/h?x=1", false, true, NULL},
        {"https://hooks.gridpoints.test/h", false, true, NULL},
        {"https://8.8.8.8/h", false, true, NULL},
        {"https://0x08080808/h", false, true, NULL},
        {"https://[2606:4700:4700::1111]/h", false, true, NULL},
        {"https://127.0.0.1:9000/h", true, true, NULL},
        {"https://0x7f000001:9000/h", true, true, NULL},
        {"https://[::1]:9000/h", true, true, NULL},
        {"https://localhost/h", true, true, NULL},
        {"https://api.localhost/h", true, true, NULL},
        {"https://1.2.3.4.5/h", false, false, "invalid_webhook_url"},
        {"https://256.0.0.1/h", false, false, "invalid_webhook_url"},
        {"https://4294967296/h", false, false, "invalid_webhook_url"},
        {"https://127.0.0.1../h", false, false, "invalid_webhook_url"},
        {"https://[fe80::1%25eth0]/h", false, false, "invalid_webhook_url"},
        {"https://%31%32%37.0.0.1/h", false, false, "invalid_webhook_url"},
        {"https://[v1.x]/h", false, false, "invalid_webhook_url"},
        {"http://shop.example.cn/h", false, false, "invalid_webhook_url"},
        {"ftp://shop.example.cn/h", false, false, "invalid_webhook_url"},
        {"https://user:pw@shop.example.cn/h", false, false, "invalid_webhook_url"},
        {"https://shop.example.cn:0/h", false, false, "invalid_webhook_url"},
        {"https:///h", false, false, "invalid_webhook_url"},
        {"https://shop.example.cn/h#frag", false, false, "invalid_webhook_url"},
        {"https://shop.example.cn/h x", false, false, "invalid_webhook_url"},
        {"shop.example.cn/h", false, false, "invalid_webhook_url"},
        {"", false, false, "invalid_webhook_url"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        const char *code = NULL;
        bool ok = webhook_url_check(cases[i].url, cases[i].allow_private, &code);
        if (ok != cases[i].ok)
            fail_msg("%s (allow_private=%d): expected %s", cases[i].url, cases[i].allow_private,
                     cases[i].ok ? "ok" : cases[i].code);
        if (!ok)
            assert_string_equal(code, cases[i].code);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v4_ranges), cmocka_unit_test(test_v6_ranges),
        cmocka_unit_test(test_policy),    cmocka_unit_test(test_ipv4_spellings),
        cmocka_unit_test(test_hosts),     cmocka_unit_test(test_webhook_urls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
