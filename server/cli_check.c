/* cli_check.c -- `gridpointsd check-config`: everything `serve` checks before it opens a
 * socket, run without opening one. config_load (main.c) has already checked every key, its type
 * and bounds, the listen addresses and the Redis URL; here come the checks that read the files
 * the configuration names, done by the same functions `serve` calls. */
#include "app.h"
#include "audit.h"
#include "cli.h"
#include "config.h"
#include "log.h"
#include "merchant_crypto.h"
#include "static.h"
#include "webhook.h"
#include "wechat.h"

#include <errno.h>
#include <event2/event.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void problem(int *n, const char *what)
{
    fprintf(stderr, "gridpointsd: check-config: %s\n", what);
    (*n)++;
}

/* The certificate chain and key of server.tls_listen, loaded as http_server.c loads them. */
static void check_tls(const struct config *cfg, int *n)
{
    if (!*cfg->tls_listen)
        return;
    char why[PATH_MAX * 2 + 300];
    if (!*cfg->tls_cert || !*cfg->tls_key) {
        problem(n, "server.tls_listen is set: server.tls_cert and server.tls_key are needed");
        return;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        problem(n, "cannot create a TLS context");
        return;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        char ossl[256];
        ERR_error_string_n(ERR_get_error(), ossl, sizeof ossl);
        snprintf(why, sizeof why, "cannot load TLS certificate %s / key %s: %s", cfg->tls_cert,
                 cfg->tls_key, ossl);
        problem(n, why);
    }
    SSL_CTX_free(ctx);
}

/* evidence.dir: `serve` creates it; it must exist and be writable, or its nearest existing
 * parent must be (nothing is created here). */
static void check_evidence_dir(const struct config *cfg, int *n)
{
    char why[PATH_MAX + 200], dir[PATH_MAX];
    if (!*cfg->evidence_dir) {
        problem(n, "evidence.dir is empty");
        return;
    }
    snprintf(dir, sizeof dir, "%s", cfg->evidence_dir);
    struct stat st;
    while (stat(dir, &st) != 0) {
        char *slash = strrchr(dir, '/');
        if (!slash) {
            snprintf(dir, sizeof dir, ".");
            break;
        }
        if (slash == dir) {
            dir[1] = '\0';
            break;
        }
        *slash = '\0';
    }
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || access(dir, W_OK | X_OK) != 0) {
        snprintf(why, sizeof why, "evidence.dir %s: %s is not a writable directory",
                 cfg->evidence_dir, dir);
        problem(n, why);
    }
}

int cli_check_config(const struct config *cfg, const char *path)
{
    int n = 0;
    char why[PATH_MAX + 300];
    struct app app = {.cfg = cfg};
    app.base = event_base_new();
    if (!app.base) {
        problem(&n, "cannot create an event base");
        return 1;
    }
    /* Each of these logs its own reason (level=error) and returns NULL / false. */
    struct audit *audit = audit_new(&app);
    if (!audit)
        problem(&n, "the [audit] settings or audit.key_file (see the line above)");
    audit_free(audit);
    if (!mcrypto_config_check(cfg, why, sizeof why))
        problem(&n, why);
    struct webhooks *wh = webhooks_new(&app);
    if (!wh)
        problem(&n, "merchant.webhook_ca_file or webhook_hosts_file (see the line above)");
    webhooks_free(wh);
    struct wechat *wc = wechat_new(app.base, cfg);
    if (!wc)
        problem(&n, "the [wechat] settings (see the line above)");
    wechat_free(wc);
    struct static_files *web = static_load(cfg, why, sizeof why);
    if (!web)
        problem(&n, why);
    static_free(web);
    check_tls(cfg, &n);
    check_evidence_dir(cfg, &n);
    event_base_free(app.base);
    if (n) {
        fprintf(stderr, "gridpointsd: configuration %s: %d problem%s\n",
                path ? path : "(built-in defaults)", n, n == 1 ? "" : "s");
        return 2;
    }
    printf("configuration OK: %s\n", path ? path : "(built-in defaults)");
    return 0;
}
