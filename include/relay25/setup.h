/*
 * setup.h - a loaded configuration with everything derived from it (TLS
 * contexts per upstream, what each upstream's EHLO offered). Reference
 * counted: sessions keep the setup they started with when SIGHUP installs
 * a new one.
 */
#ifndef RELAY25_SETUP_H
#define RELAY25_SETUP_H

#include <stdbool.h>
#include <stddef.h>
#include "relay25/config.h"
#include "relay25/smtp_parse.h"
#include "relay25/upstream.h"

struct ev_loop;
struct pool;
struct secret_cache;
struct tls_ctx;

struct setup {
	int refs;
	struct cfg *cfg;                         /* owned */
	struct tls_ctx *tls[CFG_MAX_UPSTREAMS];  /* NULL for tls = none */
	struct smtp_caps caps[CFG_MAX_UPSTREAMS];/* learned from EHLO */
	bool caps_known[CFG_MAX_UPSTREAMS];
	struct pool *pool[CFG_MAX_UPSTREAMS];    /* NULL: pool_size = 0 */
	/* The AUTH secret (password or token) of each upstream with a
	 * username, shared by every connection to it (secret.h); NULL
	 * without AUTH. Pass it in upstream_params.secret. */
	struct secret_cache *secret[CFG_MAX_UPSTREAMS];
};

/* Takes ownership of cfg (also on failure). NULL + err on failure. */
struct setup *setup_new(struct cfg *cfg, char *err, size_t errlen);
/* How to open upstream i of this setup (its TLS context, secret, EHLO
 * name and timeouts); log_id is copied by upstream_open(). */
struct upstream_params setup_upstream_params(const struct setup *, size_t i,
    const char *log_id);

/* The header filter for a message sent through upstream i, or NULL when
 * that upstream rewrites nothing and no headers are added (caller frees). */
struct hdr_filter *setup_new_filter(const struct setup *, size_t i);

/* Start the warm pools of the upstreams that have pool_size > 0. */
void setup_start_pools(struct setup *, struct ev_loop *);
struct setup *setup_ref(struct setup *);
void setup_unref(struct setup *);

/* Record what upstream i offered in its EHLO. */
void setup_learn_caps(struct setup *, size_t i, const struct smtp_caps *);
/* May relay25 offer SMTPUTF8 / DSN? Only when every upstream is known to
 * support it (failover must not meet a server that lacks it). */
bool setup_all_offer_smtputf8(const struct setup *);
bool setup_all_offer_dsn(const struct setup *);

#endif
