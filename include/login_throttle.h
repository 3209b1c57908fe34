/* login_throttle.h -- who may try a password now: login throttling that slows an attacker
 * without locking the phone's owner out.
 *
 * Three counters in Redis, all about failed attempts (an attempt counts when it is let
 * through and is taken back when it turns out to be a success):
 *
 *   pair   per (phone, client address), or per (phone, known device) when the login presents
 *          a device token this phone was given before: auth.login_limit_per_pair failures
 *          within auth.login_window, then that pair alone is refused (429 too_many_attempts)
 *          until the window ends. Reset by a success of the same pair.
 *   addr   per client address over all phones: auth.login_limit_per_addr attempts within
 *          auth.login_window (429 too_many_attempts). Refused attempts count too: an address
 *          that keeps knocking stays out.
 *   phone  per phone from anywhere: after auth.login_phone_free failures (kept for
 *          auth.login_phone_window after the last one), every further attempt must wait
 *          auth.login_phone_delay x 2^(failures - free), at most auth.login_phone_delay_max,
 *          after the previous attempt that was let through (429 login_delayed). It slows,
 *          never locks: a refused attempt neither counts nor moves the clock, so whoever asks
 *          after Retry-After gets a turn. A known device is exempt from it.
 *
 * A device token is 32 random bytes (base64url, like a session token) handed out by a
 * successful login; Redis keeps only its SHA-256, under the phone, for auth.login_device_ttl
 * (renewed by each login that presents it).
 *
 * Keys: login:{<phone>}:... for the pair, phone and device keys (one hash slot, so the check
 * is one atomic script even on Redis Cluster) and login:addr:{<addr>} for the address.
 * Phone numbers and addresses are personal data: keys are never logged.
 *
 * Redis down or answering nonsense: the check fails OPEN (allowed, no known device). Redis
 * holds no truth here; the password is still checked at PBKDF2 cost on the few worker
 * threads (which caps guesses per second), while failing closed would stop every login of every
 * street for as long as Redis is away.
 *
 * Contract: login_throttle_check() calls its callback exactly once and never from inside the
 * call itself. All strings are copied. */
#ifndef GP_LOGIN_THROTTLE_H
#define GP_LOGIN_THROTTLE_H

#include "common.h"

struct kv;
struct config;
struct login_throttle;

/* What one login presents; device_hash is the hex SHA-256 of the device token, or NULL. */
struct login_throttle_req {
    const char *phone;
    const char *addr;
    const char *device_hash;
};

enum login_throttle_verdict {
    LOGIN_THROTTLE_ALLOW, /* go on and verify the password */
    LOGIN_THROTTLE_PAIR,  /* this (phone, address/device) failed too often: wait the window */
    LOGIN_THROTTLE_ADDR,  /* this address failed too often over all phones */
    LOGIN_THROTTLE_SLOW,  /* this phone is being slowed down: wait retry_after_s */
};

/* retry_after_s >= 1 unless ALLOW; known_device: the device token is one this phone was given
 * (then the pair counted is (phone, device) and the phone slow-down did not apply). */
typedef void (*login_throttle_cb)(enum login_throttle_verdict v, int retry_after_s,
                                  bool known_device, void *arg);

/* Registers the scripts with kv (kv owns them). cfg must outlive the throttle. */
struct login_throttle *login_throttle_new(struct kv *kv, const struct config *cfg);
void login_throttle_free(struct login_throttle *lt);

/* Before verifying a password: counts the attempt (tentatively as a failure) if it may go on. */
void login_throttle_check(struct login_throttle *lt, const struct login_throttle_req *r,
                          login_throttle_cb cb, void *arg);

/* After a correct password: takes the attempt back (resets its pair, uncounts it for the
 * address and the phone) and, when remember_device_hash is not NULL, remembers that device
 * for the phone (value person_id) for auth.login_device_ttl from now. known_device is what the
 * check answered. Fire and forget: a Redis failure here only leaves the attempt counted. */
void login_throttle_success(struct login_throttle *lt, const struct login_throttle_req *r,
                            bool known_device, const char *remember_device_hash, int64_t person_id);

/* Logins that present no phone (a WeChat code): only the address counter applies
 * (auth.login_limit_per_addr per auth.login_window). The callback gets ALLOW or ADDR (never
 * known_device), exactly once and never from inside the call; fails open like the rest. */
void login_throttle_check_addr(struct login_throttle *lt, const char *addr, login_throttle_cb cb,
                               void *arg);
/* Takes an address-only attempt back (the login was not a failure). Fire and forget. */
void login_throttle_success_addr(struct login_throttle *lt, const char *addr);

#endif
