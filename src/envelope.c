/*
 * envelope.c - MAIL/RCPT parameter policy and upstream line composition.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "relay25/envelope.h"

enum param_need { NEED_NONE, NEED_SMTPUTF8, NEED_DSN };

struct param_rule {
	const char *key;
	bool mail;              /* MAIL parameter (else RCPT) */
	enum param_need offered_if;
};

static const struct param_rule rules[] = {
	{ "SIZE",     true,  NEED_NONE },
	{ "BODY",     true,  NEED_NONE },
	{ "SMTPUTF8", true,  NEED_SMTPUTF8 },
	{ "RET",      true,  NEED_DSN },
	{ "ENVID",    true,  NEED_DSN },
	{ "NOTIFY",   false, NEED_DSN },
	{ "ORCPT",    false, NEED_DSN },
};

static const struct param_rule *
rule_for(const struct smtp_param *p, bool is_mail)
{
	for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++)
		if (rules[i].mail == is_mail &&
		    strlen(rules[i].key) == p->key_len &&
		    strncasecmp(rules[i].key, p->key, p->key_len) == 0)
			return &rules[i];
	return NULL;
}

const char *
envelope_check(const struct smtp_path *path, bool is_mail,
    const struct envelope_offer *offer)
{
	for (size_t i = 0; i < path->nparams; i++) {
		const struct smtp_param *p = &path->params[i];
		const struct param_rule *r = rule_for(p, is_mail);

		if (r == NULL ||
		    (r->offered_if == NEED_SMTPUTF8 && !offer->smtputf8) ||
		    (r->offered_if == NEED_DSN && !offer->dsn))
			return "555 5.5.4 Unsupported parameter\r\n";
		if (strcmp(r->key, "BODY") == 0 &&
		    !(p->val_len == 4 && strncasecmp(p->val, "7BIT", 4) == 0) &&
		    !(p->val_len == 8 &&
		    strncasecmp(p->val, "8BITMIME", 8) == 0))
			return "501 5.5.4 Bad BODY parameter\r\n";
		if (strcmp(r->key, "SIZE") == 0) {
			if (p->val_len == 0 || p->val_len > 20 ||
			    strspn(p->val, "0123456789") < p->val_len)
				return "501 5.5.4 Bad SIZE parameter\r\n";
		}
	}
	return NULL;
}

static bool
upstream_takes(const struct param_rule *r, const struct smtp_caps *c)
{
	if (strcmp(r->key, "SIZE") == 0)
		return c->size_known;
	if (strcmp(r->key, "BODY") == 0)
		return c->eightbitmime;
	if (r->offered_if == NEED_SMTPUTF8)
		return c->smtputf8;
	return c->dsn;
}

size_t
envelope_line(const struct smtp_path *path, bool is_mail,
    const struct smtp_caps *caps, char *out, size_t outlen)
{
	size_t o;
	int n;

	n = snprintf(out, outlen, "%s<%.*s>", is_mail ? "MAIL FROM:" :
	    "RCPT TO:", (int)path->addr_len, path->addr);
	if (n < 0 || (size_t)n >= outlen)
		return 0;
	o = (size_t)n;
	for (size_t i = 0; i < path->nparams; i++) {
		const struct smtp_param *p = &path->params[i];
		const struct param_rule *r = rule_for(p, is_mail);

		if (r == NULL || !upstream_takes(r, caps))
			continue;
		n = snprintf(out + o, outlen - o, " %.*s%s%.*s",
		    (int)p->key_len, p->key, p->val_len ? "=" : "",
		    (int)p->val_len, p->val);
		if (n < 0 || (size_t)n >= outlen - o)
			return 0;
		o += (size_t)n;
	}
	return o;
}
