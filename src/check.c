/*
 * check.c - `relay25 --check`: walk every upstream through DNS, TCP, TLS,
 * EHLO and AUTH with the real upstream state machine, and explain.
 */
#include <stdio.h>
#include <string.h>
#include <ev.h>

#include "relay25/check.h"
#include "relay25/log.h"
#include "relay25/reap.h"
#include "relay25/setup.h"
#include "relay25/upstream.h"

#define CHECK_TIMEOUT 20.0

struct check {
	struct ev_loop *loop;
	struct setup *setup;
	FILE *out;
	size_t idx;
	struct upstream *up;
	int reached;          /* last step passed, -1 none */
	bool tls_done;
	int failures;
	ev_tstamp t0;
};

static const char *const step_names[] = {
	"DNS", "TCP", "TLS", "EHLO", "AUTH",
};

static void check_next(struct check *);

/* Print a multi-line detail with the continuation lines indented. */
static void
check_print(struct check *c, const char *label, const char *status,
    const char *detail)
{
	const char *p = detail;
	bool first = true;

	while (*p != '\0' || first) {
		size_t n = strcspn(p, "\n");
		if (first && status[0] == '\0')
			fprintf(c->out, "  %-6s %.*s\n", label, (int)n, p);
		else if (first)
			fprintf(c->out, "  %-6s %s%s%.*s\n", label, status,
			    n ? ": " : "", (int)n, p);
		else
			fprintf(c->out, "  %-6s %*s  %.*s\n", "",
			    (int)strlen(status), "", (int)n, p);
		first = false;
		p += n;
		if (*p == '\n')
			p++;
	}
}

static void
check_step(void *arg, enum upstream_step st, const char *detail)
{
	struct check *c = arg;
	char d[1100];

	const struct cfg_upstream *u = &c->setup->cfg->upstream[c->idx];

	snprintf(d, sizeof(d), "%s (%.0f ms)", detail,
	    (ev_time() - c->t0) * 1000.0);
	if (st == UP_STEP_TLS)
		c->tls_done = true;
	if (st == UP_STEP_EHLO && !c->tls_done && u->tls == CFG_TLS_STARTTLS) {
		snprintf(d, sizeof(d), "greeting and EHLO answered, STARTTLS "
		    "%s (%.0f ms)", strstr(detail, "STARTTLS") ? "offered" :
		    "NOT offered", (ev_time() - c->t0) * 1000.0);
		check_print(c, "SMTP", "ok", d);
	} else
		check_print(c, step_names[st], "ok", st == UP_STEP_TLS ?
		    detail : d);
	c->reached = (int)st;
}

/* A hint for the failures people meet most. */
static const char *
check_hint(const struct cfg_upstream *u, enum upstream_fail kind,
    int failed_step, const char *why)
{
	if (strstr(why, "_command failed") || strstr(why, "token_file failed") ||
	    strstr(why, "gave no secret in time"))
		return "run the command by hand as the user relay25 runs as "
		    "(its stderr is shown; for tokens it must print TOKEN "
		    "[LIFETIME]), or check token_file";
	if (strstr(why, "rejected the token"))
		return "the ESP refused the OAuth2 token: check the scope "
		    "(Microsoft: SMTP.SendAsApp or SMTP.Send; Google: "
		    "https://mail.google.com/), that username is the mailbox "
		    "the token is for, and that SMTP AUTH is enabled for it";
	if (strstr(why, "resolve"))
		return "check the host name (and the machine's DNS)";
	if (strstr(why, "refused"))
		return "nothing listens there: check host and port";
	if (kind == UP_FAIL_TIMEOUT || strstr(why, "timed out")) {
		if (failed_step == UP_STEP_CONNECTED)
			return "no answer: the port may be blocked by a firewall "
			    "or your provider (common for 25, 465 and 587)";
		if (strstr(why, "BANNER") && u->tls == CFG_TLS_STARTTLS)
			return "no greeting: this port may speak implicit TLS "
			    "(usually 465): set tls = implicit";
		if (u->tls == CFG_TLS_STARTTLS && u->port == 465)
			return "port 465 speaks implicit TLS and waits for a TLS "
			    "handshake: set tls = implicit";
		return "the server did not answer in time";
	}
	if (strstr(why, "not offer STARTTLS"))
		return u->port == 465 ? "port 465 speaks implicit TLS: set "
		    "tls = implicit" : "this port does not offer STARTTLS; "
		    "try port 587, or port 465 with tls = implicit";
	if (strstr(why, "name mismatch"))
		return "the certificate is for another name: connect by the "
		    "name the ESP documents, or set server_name";
	if (strstr(why, "not trusted"))
		return "the certificate chain is not trusted: set ca_file, or "
		    "look for a TLS-intercepting proxy on the way";
	if (strstr(why, "expired"))
		return "the server's certificate has expired (or this "
		    "machine's clock is wrong)";
	if (strstr(why, "pinned"))
		return "the certificate changed: update fingerprint";
	if (kind == UP_FAIL_TLS && u->tls == CFG_TLS_IMPLICIT &&
	    u->port != 465)
		return "this port may speak STARTTLS (plain first): set "
		    "tls = starttls";
	if (kind == UP_FAIL_TLS)
		return "TLS failed: a STARTTLS port used with tls = implicit "
		    "(or the reverse) fails like this";
	if (strstr(why, " 535") || strstr(why, ": 535"))
		return "the ESP rejected the user name or password (many ESPs "
		    "want an API key as password and a fixed user name)";
	if (strstr(why, " 504") || strstr(why, ": 504") ||
	    strstr(why, "no AUTH mechanism"))
		return "set auth to a mechanism the server offers (see EHLO)";
	if (strstr(why, "no AUTH"))
		return "the server offers no AUTH here: AUTH is often offered "
		    "only after STARTTLS, or on another port";
	if (kind == UP_FAIL_AUTH_TEMP)
		return "the ESP refused AUTH for now (rate limit or account "
		    "state); try again later";
	return NULL;
}

static void
check_finish(struct check *c, bool ok)
{
	fprintf(c->out, "  result %s\n\n", ok ? "PASS" : "FAIL");
	if (!ok)
		c->failures++;
	c->up = NULL;
	c->idx++;
	check_next(c);
}

static void
check_ready(void *arg)
{
	struct check *c = arg;
	const struct cfg_upstream *u = &c->setup->cfg->upstream[c->idx];

	if (u->username == NULL)
		check_print(c, "AUTH", "skipped", "no username configured");
	upstream_quit(c->up);
	check_finish(c, true);
}

static void
check_reply(void *arg, const struct smtp_reply *r)
{
	(void)arg;
	(void)r;
}

static void
check_failed(void *arg, enum upstream_fail kind, bool before_ready,
    const char *why)
{
	struct check *c = arg;
	const struct cfg_upstream *u = &c->setup->cfg->upstream[c->idx];
	int failed = c->reached + 1;
	const char *hint, *label;

	(void)before_ready;
	if (failed > UP_STEP_AUTH)
		failed = UP_STEP_AUTH;
	switch (kind) {
	case UP_FAIL_TLS: label = "TLS"; break;
	case UP_FAIL_AUTH: case UP_FAIL_AUTH_TEMP: label = "AUTH"; break;
	default:
		label = c->reached < 0 ? "DNS" :
		    c->reached == UP_STEP_RESOLVED ? "TCP" :
		    c->reached == UP_STEP_CONNECTED ? "SMTP" :
		    step_names[failed];
		break;
	}
	check_print(c, label, "FAILED", why);
	hint = check_hint(u, kind, failed, why);
	if (hint != NULL)
		check_print(c, "hint", "", hint);
	upstream_abort(c->up);
	check_finish(c, false);
}

static const struct upstream_events check_events = {
	.ready = check_ready,
	.reply = check_reply,
	.failed = check_failed,
	.drain = NULL,
	.step = check_step,
};

static void
check_next(struct check *c)
{
	const struct cfg *cfg = c->setup->cfg;
	const struct cfg_upstream *u;
	double t;

	if (c->idx >= cfg->nupstream) {
		ev_break(c->loop, EVBREAK_ALL);
		return;
	}
	u = &cfg->upstream[c->idx];
	t = u->connect_timeout < CHECK_TIMEOUT ? u->connect_timeout :
	    CHECK_TIMEOUT;
	fprintf(c->out, "upstream %s%s%s:%u (%s)\n", u->name,
	    u->name[0] ? " " : "", u->host, u->port,
	    u->tls == CFG_TLS_IMPLICIT ? "implicit TLS" :
	    u->tls == CFG_TLS_STARTTLS ? "STARTTLS" : "no TLS");
	struct upstream_params p = setup_upstream_params(c->setup, c->idx,
	    "check");

	p.command_timeout = p.data_timeout = t;    /* a check does not wait */
	c->reached = -1;
	c->tls_done = false;
	c->t0 = ev_time();
	c->up = upstream_open(c->loop, &p, &check_events, c);
	if (c->up == NULL) {
		check_print(c, "DNS", "FAILED", "out of memory");
		c->idx++;
		c->failures++;
		check_next(c);
	}
}

int
check_run(struct setup *s, FILE *out)
{
	struct check c = { 0 };

	c.loop = ev_default_loop(EVFLAG_AUTO);
	c.setup = s;
	c.out = out;
	reap_init(c.loop);
	check_next(&c);
	if (c.idx < s->cfg->nupstream)
		ev_run(c.loop, 0);
	reap_run();
	fprintf(out, "%s: %d of %zu upstream(s) failed\n",
	    c.failures ? "FAIL" : "PASS", c.failures, s->cfg->nupstream);
	return c.failures ? 1 : 0;
}
