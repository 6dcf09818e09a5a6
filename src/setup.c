/*
 * setup.c - a configuration plus what is derived from it, refcounted.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>

/* How long a password_command or token_command may run. */
#define SETUP_SECRET_TIMEOUT 60.0

#include "relay25/headers.h"
#include "relay25/log.h"
#include "relay25/pool.h"
#include "relay25/secret.h"
#include "relay25/setup.h"
#include "relay25/tls.h"

struct setup *
setup_new(struct cfg *cfg, char *err, size_t errlen)
{
	struct setup *s = calloc(1, sizeof(*s));

	if (s == NULL) {
		snprintf(err, errlen, "out of memory");
		cfg_free(cfg);
		return NULL;
	}
	s->refs = 1;
	s->cfg = cfg;
	for (size_t i = 0; i < cfg->nupstream; i++) {
		const struct cfg_upstream *u = &cfg->upstream[i];
		char why[256], label[300];

		if (u->username != NULL) {
			struct secret_params sp = {
				.timeout = SETUP_SECRET_TIMEOUT,
				.label = label,
			};
			snprintf(label, sizeof(label), "upstream=\"%s%s%s:%u\"",
			    u->name, u->name[0] ? " " : "", u->host, u->port);
			if (u->token_command != NULL) {
				sp.command = u->token_command;
				sp.token = true;
			} else if (u->token_file != NULL) {
				sp.file = u->token_file;
				sp.token = true;
			} else if (u->password_command != NULL)
				sp.command = u->password_command;
			else
				sp.value = u->password;
			if ((s->secret[i] = secret_new(&sp)) == NULL) {
				snprintf(err, errlen, "out of memory");
				setup_unref(s);
				return NULL;
			}
		}
		if (u->tls == CFG_TLS_NONE)
			continue;
		s->tls[i] = tls_ctx_new(u->tls_verify, u->ca_file,
		    u->tls_min_version, u->has_fingerprint ? u->fingerprint :
		    NULL, why, sizeof(why));
		if (s->tls[i] == NULL) {
			snprintf(err, errlen, "upstream %s%s%s: %s", u->name,
			    u->name[0] ? " " : "", u->host, why);
			setup_unref(s);
			return NULL;
		}
	}
	return s;
}

struct upstream_params
setup_upstream_params(const struct setup *s, size_t i, const char *log_id)
{
	const struct cfg *cfg = s->cfg;
	struct upstream_params p = {
		.cfg = &cfg->upstream[i],
		.tls = s->tls[i],
		.secret = s->secret[i],
		.helo = cfg->upstream[i].helo_name ?
		    cfg->upstream[i].helo_name : cfg->hostname,
		.command_timeout = cfg->command_timeout,
		.data_timeout = cfg->data_timeout,
		.log_id = log_id,
	};
	return p;
}

struct hdr_filter *
setup_new_filter(const struct setup *s, size_t i)
{
	const struct cfg *cfg = s->cfg;
	const struct cfg_upstream *u = &cfg->upstream[i];
	struct hdr_params hp = { 0 };
	struct hdr_filter *f;

	if (!u->rewrite_header_from && !cfg->add_missing_headers)
		return NULL;
	hp.rewrite_from = u->rewrite_header_from ? u->rewrite_sender : NULL;
	hp.add_reply_to = u->rewrite_reply_to;
	hp.add_missing = cfg->add_missing_headers;
	hp.msgid_domain = cfg->hostname;
	hp.now = time(NULL);
	hp.tz_offset = hdr_local_tz_offset(hp.now);
	if (getrandom(hp.random, sizeof(hp.random), 0) !=
	    (ssize_t)sizeof(hp.random))
		for (size_t k = 0; k < sizeof(hp.random); k++)
			hp.random[k] ^= (unsigned char)(rand() >> 3);
	if ((f = malloc(sizeof(*f))) == NULL)
		return NULL;             /* unchanged rather than refused */
	if (!hdr_filter_init(f, &hp)) {
		log_warn("header rewriting is off: bad parameters for upstream "
		    "%s", u->host);
		free(f);
		return NULL;
	}
	return f;
}

void
setup_start_pools(struct setup *s, struct ev_loop *loop)
{
	for (size_t i = 0; i < s->cfg->nupstream; i++)
		if (s->cfg->upstream[i].pool_size > 0 && s->pool[i] == NULL)
			s->pool[i] = pool_new(loop, s, i);
}

struct setup *
setup_ref(struct setup *s)
{
	s->refs++;
	return s;
}

void
setup_unref(struct setup *s)
{
	if (s == NULL || --s->refs > 0)
		return;
	for (size_t i = 0; i < CFG_MAX_UPSTREAMS; i++)
		pool_free(s->pool[i]);
	for (size_t i = 0; i < CFG_MAX_UPSTREAMS; i++)
		tls_ctx_free(s->tls[i]);
	for (size_t i = 0; i < CFG_MAX_UPSTREAMS; i++)
		secret_free(s->secret[i]);
	cfg_free(s->cfg);
	free(s);
}

void
setup_learn_caps(struct setup *s, size_t i, const struct smtp_caps *caps)
{
	if (i >= s->cfg->nupstream)
		return;
	s->caps[i] = *caps;
	s->caps_known[i] = true;
}

static bool
all_known_and(const struct setup *s, bool (*pred)(const struct smtp_caps *))
{
	for (size_t i = 0; i < s->cfg->nupstream; i++)
		if (!s->caps_known[i] || !pred(&s->caps[i]))
			return false;
	return s->cfg->nupstream > 0;
}

static bool has_smtputf8(const struct smtp_caps *c) { return c->smtputf8; }
static bool has_dsn(const struct smtp_caps *c) { return c->dsn; }

bool
setup_all_offer_smtputf8(const struct setup *s)
{
	return all_known_and(s, has_smtputf8);
}

bool
setup_all_offer_dsn(const struct setup *s)
{
	return all_known_and(s, has_dsn);
}
