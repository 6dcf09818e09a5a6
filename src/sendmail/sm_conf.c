/*
 * sm_conf.c - the submission address (see sm_conf.h).
 */
#include "sm_conf.h"

#include <errno.h>
#include <stdbool.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int
sm_conf_parse_addr(const char *s, struct sm_target *t)
{
	const char *p, *end, *port = "25";
	char portbuf[8];
	size_t hl;
	char *ep;
	long pn;
	bool v6 = false;

	while (*s == ' ' || *s == '\t')
		s++;
	end = s + strcspn(s, " \t");
	if (end == s)
		return -1;
	if (*s == '[') {                /* [v6] or [v6]:port */
		if (!(p = memchr(s, ']', (size_t)(end - s))))
			return -1;
		hl = (size_t)(p - s - 1);
		s++;
		v6 = true;
		if (++p < end) {
			if (*p++ != ':' || p == end ||
			    (size_t)(end - p) >= sizeof portbuf)
				return -1;
			memcpy(portbuf, p, (size_t)(end - p));
			portbuf[end - p] = '\0';
			port = portbuf;
		}
	} else {                        /* host or host:port (one colon) */
		const char *c = memchr(s, ':', (size_t)(end - s));

		if (c && memchr(c + 1, ':', (size_t)(end - c - 1))) {
			hl = (size_t)(end - s);     /* a bare IPv6 address */
			v6 = true;
		} else if (c) {
			hl = (size_t)(c - s);
			if ((size_t)(end - c - 1) >= sizeof portbuf ||
			    end == c + 1)
				return -1;
			memcpy(portbuf, c + 1, (size_t)(end - c - 1));
			portbuf[end - c - 1] = '\0';
			port = portbuf;
		} else {
			hl = (size_t)(end - s);
		}
	}
	if (hl == 0 || hl >= sizeof t->host)
		return -1;
	errno = 0;
	pn = strtol(port, &ep, 10);
	if (*ep || errno || pn < 1 || pn > 65535 || port[0] < '0' ||
	    port[0] > '9')
		return -1;
	memcpy(t->host, s, hl);
	t->host[hl] = '\0';
	for (size_t i = 0; i < hl; i++)
		if ((unsigned char)t->host[i] <= 32 || t->host[i] == '[' ||
		    t->host[i] == ']' || t->host[i] == '/')
			return -1;
	if (strcmp(t->host, "*") == 0 || strcmp(t->host, "0.0.0.0") == 0)
		snprintf(t->host, sizeof(t->host), "%s", "127.0.0.1");
	else if (strcmp(t->host, "::") == 0)
		snprintf(t->host, sizeof(t->host), "%s", "::1");
	if (strchr(t->host, ':'))
		v6 = true;
	snprintf(t->port, sizeof t->port, "%ld", pn);
	snprintf(t->text, sizeof t->text, v6 ? "[%s]:%s" : "%s:%s", t->host,
	    t->port);
	return 0;
}

struct sm_ini {
	char listen[1024];
	bool found;
	bool in_server;
};

/* inih handler: keep the first [server] listen value. */
static int
sm_conf_handler(void *user, const char *section, const char *name,
    const char *value)
{
	struct sm_ini *c = user;

	if (c->found || strcasecmp(section, "server") != 0 ||
	    strcasecmp(name, "listen") != 0)
		return 1;
	c->found = true;
	snprintf(c->listen, sizeof c->listen, "%s", value);
	return 1;
}

/* The value as relay25 reads it: "quoted", or up to an inline comment
 * (';' or '#' after whitespace). */
static void
sm_conf_unquote(char *v)
{
	size_t n;

	if (v[0] == '"') {
		char *q = strchr(v + 1, '"');

		n = q ? (size_t)(q - v - 1) : strlen(v + 1);
		memmove(v, v + 1, n);
		v[n] = '\0';
		return;
	}
	for (char *p = v; *p; p++)
		if ((*p == ';' || *p == '#') && p > v &&
		    (p[-1] == ' ' || p[-1] == '\t')) {
			*p = '\0';
			break;
		}
}

int
sm_conf_target(const char *file, struct sm_target *t, char *why,
    size_t whylen)
{
	const char *env = getenv("RELAY25_SUBMIT"), *what = "RELAY25_SUBMIT";
	const char *path = file ? file : SM_CONF_DEFAULT_FILE;
	struct sm_ini ini = { .found = false };
	FILE *fp;

	if (!env || !*env) {
		env = getenv("RELAY25_SERVER_LISTEN");
		what = "RELAY25_SERVER_LISTEN";
	}
	if (env && *env) {
		if (sm_conf_parse_addr(env, t) < 0) {
			snprintf(why, whylen, "%s: not host:port", what);
			return -1;
		}
		t->source = what;
		return 0;
	}
	if (!(fp = fopen(path, "re"))) {
		if (file) {
			snprintf(why, whylen, "%s: %s", path, strerror(errno));
			return -1;
		}
	} else {
		ini_parse_file(fp, sm_conf_handler, &ini);
		fclose(fp);
	}
	if (ini.found) {
		sm_conf_unquote(ini.listen);
		if (sm_conf_parse_addr(ini.listen, t) < 0) {
			snprintf(why, whylen, "%s: [server] listen: no usable "
			    "host:port", path);
			return -1;
		}
		t->source = file ? file : SM_CONF_DEFAULT_FILE;
		return 0;
	}
	sm_conf_parse_addr("127.0.0.1:25", t);
	t->source = "the default";
	return 0;
}
