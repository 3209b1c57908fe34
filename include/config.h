/* config.h -- the server's configuration: one typed table, an INI file, env overrides.
 *
 * Every key lives in the table in config.c (alphabetical within its section) with its type,
 * default and bounds, and in config/gridpoints.conf with a comment. Any key can be overridden
 * from the environment as GRIDPOINTS_<SECTION>_<KEY> (upper case): that is how addresses and
 * secrets reach a deployment without being written in a file. Unknown keys are an error. */
#ifndef GP_CONFIG_H
#define GP_CONFIG_H

#include "common.h"

struct config {
    /* [server] */
    char *listen;         /* host:port of the plain HTTP listener */
    char *tls_listen;     /* host:port of the TLS listener, "" = none */
    char *tls_cert;       /* PEM certificate chain */
    char *tls_key;        /* PEM private key */
    char *metrics_listen; /* host:port serving only /metrics, "" = none (see api_metrics) */
    char *metrics_token;  /* bearer token /metrics requires when set, "" = none */
    int max_connections;
    int max_header_size; /* bytes */
    int max_body_size;   /* bytes, default for routes that do not set their own */
    int json_max_depth;
    int json_max_items; /* array elements / object members, all nesting levels */
    int read_timeout_ms;
    int write_timeout_ms;
    int head_timeout_ms;          /* first byte of a request to the end of its head */
    int body_timeout_ms;          /* end of the head to the end of the body */
    int max_connections_per_addr; /* open connections from one peer address; 0 = no cap */
    int shutdown_timeout_ms;
    int drain_delay_ms; /* after SIGTERM: /readyz 503, still serving, before the listeners close */
    int page_size_default;
    int page_size_max;
    int worker_threads; /* CPU pool for password hashing */
    bool trust_proxy;   /* take the client address from X-Forwarded-For */
    /* [database] */
    char *database_url;
    char *database_admin_url; /* migrations and CLI; "" = database_url */
    int db_pool_size;
    int db_queue_max;
    int db_queue_timeout_ms;
    int db_statement_timeout_ms;
    int db_connect_timeout_ms;
    int db_reconnect_max_ms;
    int db_retries;
    char *db_replica_url; /* read replica (replica.h); "" = none */
    int db_replica_pool_size;
    int db_replica_max_lag_ms;
    int db_replica_poll_interval_ms;
    int db_replica_own_writes_window_ms;
    char *sql_dir; /* migrations/ and functions/ (used by `migrate` only) */
    /* [exchange] (exchange.h, docs/EXCHANGE.md) */
    bool exchange_allow_private;     /* partner URLs may resolve to loopback/private (tests) */
    int exchange_backoff_s;          /* first retry of an unanswered transfer, doubled per try */
    int exchange_backoff_max_s;      /* ... at most this */
    char *exchange_ca_file;          /* CA bundle for partner TLS; "" = system default */
    bool exchange_enabled;           /* false: no calls to or from partners (routes 404) */
    char *exchange_hosts_file;       /* extra hosts file for partner names; "" = none */
    int exchange_link_code_ttl_s;    /* a link code's life */
    int exchange_nonce_ttl_s;        /* replay memory of partner request nonces */
    int exchange_recon_lag_s;        /* a day is reconciled this long after it ended */
    int exchange_send_for_s;         /* resend a transfer this long, then ask for its status */
    int exchange_signature_window_s; /* accepted clock skew of signed requests and replies */
    int exchange_timeout_s;          /* one call to a partner */
    /* [care] */
    int care_retention_s; /* sealed data of a removed resident is purged this long after */
    /* [evidence] */
    char *evidence_dir;               /* the directory store's root (evidence_store.h) */
    int evidence_max_size;            /* bytes: the body limit of an upload */
    int evidence_retention_s;         /* kept this long after upload ... */
    int evidence_flagged_retention_s; /* ... or this long when a flagged/rejected report uses it */
    int evidence_cache_max_age_s;     /* Cache-Control: private, max-age of a download */
    /* [redis] */
    char *redis_url;
    char *redis_password; /* AUTH password; "" = the one in redis_url, if any */
    int redis_connect_timeout_ms;
    int redis_command_timeout_ms;
    int redis_reconnect_max_ms;
    /* [audit] */
    int audit_anomaly_max_completions; /* per worker per day before it is an anomaly */
    int audit_anomaly_min_report_s;    /* a report sooner than this after the claim is one */
    int audit_anomaly_shared_workers;  /* workers sharing a device or evidence hash */
    int audit_checkpoint_interval_s;   /* verify and sign a checkpoint this often */
    int audit_checkpoint_max_tx;       /* ... or once this many transactions were sealed */
    int audit_full_pass_interval_s;    /* a full verification pass (from index 0) this often */
    char *audit_key_file;              /* Ed25519 private key (PEM); "" = no checkpoints */
    char *audit_origin;                /* log origin = key name of the checkpoints */
    char *audit_state_dir;   /* the latest published checkpoint, outside the database; "" = none */
    bool audit_allow_rewind; /* start although the database is behind that checkpoint */
    int audit_seal_batch;    /* transactions sealed per sealer round */
    int audit_verify_batch;  /* leaves re-derived per round of a verification pass */
    /* [auth] */
    int session_ttl_s;
    int session_batch_max;         /* session cache misses looked up per query */
    int session_batches_in_flight; /* such queries at a time */
    int pbkdf2_iterations;
    int login_limit_per_pair;     /* failures per (phone, address or known device) per window */
    int login_limit_per_addr;     /* attempts per client address over all phones per window */
    int login_window_s;           /* the window of both */
    int login_phone_free;         /* failures per phone before its slow-down starts */
    int login_phone_window_s;     /* a phone's failures are forgotten this long after the last */
    int login_phone_delay_ms;     /* first slow-down delay, doubled per further failure */
    int login_phone_delay_max_ms; /* ... up to this */
    int login_device_ttl_s;       /* a known device is forgotten this long after its last login */
    /* [console] (issue 14) */
    int console_dashboard_refresh_s; /* how often the dashboard screen polls (in its reply) */
    int console_dashboard_max_days;  /* longest trend GET /api/v1/dashboard serves */
    int console_export_max_rows;     /* rows of one XLSX export, else 413 export_too_large */
    int console_import_max_rows;     /* rows of one roster import, else 413 */
    /* the dashboard sweep: how often it folds the counters, events (and txns) per fold */
    int console_dashboard_fold_interval_ms;
    int console_dashboard_fold_batch;
    /* [log] */
    char *log_level;
    /* [merchant] */
    int merchant_key_cache_ttl_s;      /* Redis cache of a key's sealed secret */
    char *merchant_key_encryption_key; /* 64 hex: AES-256-GCM key of stored secrets */
    int merchant_nonce_ttl_s;          /* replay memory, >= 2 x signature_window */
    char *merchant_paycode_secret;     /* HMAC key of pay codes, shared by instances */
    int merchant_paycode_ttl_s;
    int merchant_rate_limit; /* requests per merchant per rate_window */
    int merchant_rate_window_s;
    int merchant_refund_window_s;
    int merchant_signature_window_s;     /* allowed |server clock - request ts| */
    int merchant_voucher_ttl_s;          /* default validity of a voucher */
    bool merchant_webhook_allow_private; /* deliver to loopback/private addresses (tests) */
    int merchant_webhook_backoff_s;      /* first retry delay, doubled per attempt */
    char *merchant_webhook_ca_file;      /* CA bundle for webhook TLS; "" = system default */
    char *merchant_webhook_hosts_file;   /* extra hosts file for webhook names; "" = none */
    int merchant_webhook_retry_for_s;    /* give an event up after this */
    int merchant_webhook_timeout_s;      /* per delivery attempt */
    /* [timers] */
    int timer_sweep_interval_ms;
    int timer_batch_size;
    int timer_sweep_hold_ms; /* a timer sweep commits once it has held task rows this long */
    int reconcile_interval_s;
    int ops_gauges_interval_ms; /* how often the gauges of gp_ops_gauges are read */
    /* [tasks] */
    int report_future_skew_s;
    int claim_rate_limit; /* claims per worker per minute */
    /* [web] (static.c: loaded into memory at start-up) */
    char *web_dir;          /* the built browser apps: <dir>/app/ is served under /app/ */
    int web_max_files;      /* start-up fails when web_dir holds more files */
    int web_max_size;       /* ... or more bytes (gzip copies of text files come on top) */
    char *web_openapi_file; /* served at /openapi.yaml; "" = not served */
    /* [wechat] (wechat.h; the secrets come from the environment) */
    char *wechat_api_base;                /* https://api.weixin.qq.com, or a proxy of it */
    char *wechat_app_id;                  /* official account: web OAuth (kind "web") */
    char *wechat_app_secret;              /* its AppSecret */
    int wechat_bind_ticket_attempts;      /* bind attempts one ticket allows */
    int wechat_bind_ticket_ttl_s;         /* an unbound openid's bind ticket lives this long */
    char *wechat_ca_file;                 /* CA bundle for WeChat's TLS; "" = system default */
    int wechat_invite_ttl_s;              /* an invite code staff issue lives this long */
    int wechat_max_inflight;              /* calls to WeChat at once; more get 503 */
    char *wechat_mini_app_id;             /* mini-program: wx.login codes (kind "mini") */
    char *wechat_mini_app_secret;         /* its AppSecret */
    int wechat_rate_limit_retry_after_s;  /* Retry-After when WeChat rate-limits us (45011) */
    int wechat_timeout_ms;                /* one call to WeChat, resolution included */
    int wechat_unavailable_retry_after_s; /* Retry-After of 503 wechat_unavailable */
};

/* Parses `path` (NULL = defaults only), then applies environment overrides.
 * On error returns false and writes a message naming the file, line and key into err. */
bool config_load(struct config *cfg, const char *path, char *err, size_t errlen) MUSTCHECK;
void config_free(struct config *cfg);
/* Where Redis is and how to log in: redis.url parsed, redis.password applied. */
struct config_redis {
    char host[256];      /* TCP host ("" with unix_path), brackets of an IPv6 literal removed */
    char unix_path[256]; /* socket path, "" with TCP */
    int port;
    int db;
    char user[128];     /* ACL user (Redis 6+), "" = the default user */
    char password[256]; /* "" = no AUTH */
};
/* Parses redis://[user[:password]@]host[:port][/db] (user and password %-decoded; an IPv6
 * host in brackets) or unix:///path[?db=n], strictly: trailing bytes after a number, a port
 * outside 1..65535 or an unknown scheme are errors. The message in err never quotes the URL
 * (it may hold a password). */
bool config_parse_redis_url(const char *url, struct config_redis *out, char *err,
                            size_t errlen) MUSTCHECK;
/* config_parse_redis_url(cfg->redis_url) with cfg->redis_password (which wins) applied. */
bool config_redis(const struct config *cfg, struct config_redis *out, char *err,
                  size_t errlen) MUSTCHECK;
/* host:port (port 0..65535, digits only; the host is everything before the last ':'). */
bool config_parse_hostport(const char *s, char *host, size_t hostlen, int *port) MUSTCHECK;
/* Writes every key with its current value as INI, for `gridpointsd print-config`. */
void config_dump(const struct config *cfg, void (*emit)(const char *line, void *arg), void *arg);
/* Parses "15s", "500ms", "2m", "1h", "30" (ms) into milliseconds; false on garbage/overflow. */
bool config_parse_duration_ms(const char *s, long long *out) MUSTCHECK;
/* Parses "64k", "1m", "16384" into bytes; false on garbage/overflow. */
bool config_parse_size(const char *s, int *out) MUSTCHECK;

#endif
