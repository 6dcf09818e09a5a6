/*
 * upstream.c - the ESP leg: SMTP client state machine over conn.
 *
 * Entering a state sends that state's command and arms its timer;
 * upstream_reply() looks at the reply and picks the next state. Only the
 * owner's forwarded commands (MAIL, RCPT, DATA, RSET) and the body travel
 * after UP_READY.
 *
 * AUTH: after the last EHLO the mechanism is chosen and the secret (the
 * password or token) is obtained from the upstream's secret cache
 * (secret.h); while a password_command or token_command runs the session
 * waits in UP_SECRET (connect_timeout applies) without blocking the loop.
 * The session keeps its own copy of the secret until AUTH is over, wiped
 * then. When the server rejects a secret that can change (a command or a
 * token file) on the first try, the cache is invalidated, a fresh secret
 * obtained, and AUTH tried once more on the same connection; the same
 * secret twice is not retried.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ev.h>

#include "relay25/auth.h"
#include "relay25/conn.h"
#include "relay25/log.h"
#include "relay25/metrics.h"
#include "relay25/reap.h"
#include "relay25/resolve.h"
#include "relay25/secret.h"
#include "relay25/upstream.h"

#define UP_IN_MAX   8192
#define UP_OUT_MAX  (64 * 1024)
#define UP_MAX_ADDRS 8
#define UP_QUIT_WAIT 5.0

enum up_state {
	UP_RESOLVE, UP_CONNECT, UP_TLS_IMPLICIT, UP_BANNER, UP_EHLO,
	UP_STARTTLS, UP_TLS, UP_EHLO2, UP_SECRET, UP_AUTH_PLAIN, UP_AUTH_LOGIN,
	UP_AUTH_LOGIN_USER, UP_AUTH_LOGIN_PASS, UP_AUTH_CRAM,
	UP_AUTH_CRAM_RESP, UP_AUTH_XOAUTH2, UP_AUTH_OAUTHBEARER,
	UP_AUTH_TOKEN_ERR, UP_READY, UP_CMD, UP_BODY, UP_EOD, UP_QUIT, UP_DEAD,
};

static const char *const state_names[] = {
	"RESOLVE", "CONNECT", "TLS_IMPLICIT", "BANNER", "EHLO", "STARTTLS",
	"TLS", "EHLO2", "SECRET", "AUTH_PLAIN", "AUTH_LOGIN", "AUTH_LOGIN_USER",
	"AUTH_LOGIN_PASS", "AUTH_CRAM", "AUTH_CRAM_RESP", "AUTH_XOAUTH2",
	"AUTH_OAUTHBEARER", "AUTH_TOKEN_ERR", "READY", "CMD", "BODY", "EOD",
	"QUIT", "DEAD",
};
_Static_assert(sizeof(state_names) / sizeof(state_names[0]) == UP_DEAD + 1,
    "a name per state");

struct upstream {
	struct ev_loop *loop;
	struct upstream_params p;
	const struct upstream_events *ev;
	void *arg;
	enum up_state state;
	struct conn *conn;
	struct resolve_req *rreq;
	struct sockaddr_storage addrs[UP_MAX_ADDRS];
	socklen_t addrlens[UP_MAX_ADDRS];
	size_t naddrs, addr_idx;
	struct smtp_reply_parser rp;
	struct smtp_caps caps;
	bool sent_data;                 /* last command was DATA */
	unsigned messages;              /* 2xx at end of data */
	ev_tstamp t_stage;              /* start of the stage being timed */
	bool want_drain;
	enum cfg_auth mech;             /* chosen after the last EHLO */
	struct secret_req *sreq;        /* waiting for the secret cache */
	char *secret;                   /* own copy during AUTH (wiped) */
	char *rejected;                 /* the secret the server refused */
	unsigned auth_tries;            /* AUTH exchanges started */
	char auth_why[300];             /* the last rejection */
	char label[300];
	char port[8];
	char log_id[24];        /* own copy: the owner may go first */
};

static void upstream_enter(struct upstream *, enum up_state);
static void upstream_auth_begin(struct upstream *);
static void upstream_conn_cb(struct conn *, enum conn_event, void *);
static void upstream_connect_next(struct upstream *);

const char *
upstream_fail_name(enum upstream_fail f)
{
	switch (f) {
	case UP_FAIL_CONNECT: return "connect";
	case UP_FAIL_TLS: return "tls";
	case UP_FAIL_AUTH: return "auth";
	case UP_FAIL_AUTH_TEMP: return "auth-temporary";
	case UP_FAIL_LOST: return "lost";
	case UP_FAIL_TIMEOUT: return "timeout";
	}
	return "unknown";
}

static const char *
upstream_state_name(enum up_state s)
{
	return state_names[s];
}

static bool
before_ready(const struct upstream *u)
{
	return u->state < UP_READY;
}

static void
upstream_wipe(char **s)
{
	if (*s != NULL) {
		explicit_bzero(*s, strlen(*s));
		free(*s);
		*s = NULL;
	}
}

/* Forget every copy of the secret and stop waiting for one. */
static void
upstream_drop_secrets(struct upstream *u)
{
	if (u->sreq != NULL) {
		secret_cancel(u->sreq);
		u->sreq = NULL;
	}
	upstream_wipe(&u->secret);
	upstream_wipe(&u->rejected);
}

static void
upstream_release(void *p)
{
	upstream_drop_secrets(p);
	free(p);
}

/* Tear down I/O; the struct itself is reaped later. */
static void
upstream_close(struct upstream *u)
{
	upstream_drop_secrets(u);
	if (u->rreq != NULL) {
		resolve_cancel(u->rreq);
		u->rreq = NULL;
	}
	if (u->conn != NULL) {
		conn_free(u->conn);
		u->conn = NULL;
	}
	if (u->state != UP_DEAD) {
		u->state = UP_DEAD;
		reap_later(upstream_release, u);
	}
}

/* Report a failure once and go quiet; the owner then calls abort. */
static void
upstream_fail(struct upstream *u, enum upstream_fail kind, const char *why)
{
	const struct upstream_events *ev = u->ev;
	bool early = before_ready(u);

	if (u->state == UP_DEAD || ev == NULL)
		return;
	log_debug("session=%s upstream=\"%s\" state=%s failed=%s reason=\"%s\"",
	    u->p.log_id, u->label, upstream_state_name(u->state),
	    upstream_fail_name(kind), why);
	upstream_drop_secrets(u);
	if (u->conn != NULL) {
		conn_free(u->conn);
		u->conn = NULL;
	}
	u->ev = NULL;            /* one failure report, then silence */
	u->state = UP_QUIT;      /* not DEAD: the owner still aborts us */
	ev->failed(u->arg, kind, early, why);
}

static void
upstream_step(struct upstream *u, enum upstream_step st, const char *detail)
{
	if (u->ev != NULL && u->ev->step != NULL)
		u->ev->step(u->arg, st, detail);
}

static void
upstream_write_line(struct upstream *u, const char *line, size_t len,
    bool secret)
{
	char shown[160];

	if (secret) {
		/* "AUTH PLAIN ********"; a bare response line: "********" */
		const char *sp = memrchr(line, ' ', len);
		int shown_len = sp != NULL ? (int)(sp - line) : 0;
		log_debug("session=%s upstream=\"%s\" >>> %.*s%s********",
		    u->p.log_id, u->label, shown_len, line,
		    shown_len ? " " : "");
	}
	else if (log_enabled(CFG_LOG_DEBUG))
		log_debug("session=%s upstream=\"%s\" >>> %s", u->p.log_id,
		    u->label, log_sanitize(shown, sizeof(shown), line, len));
	if (conn_write(u->conn, line, len) < 0 ||
	    conn_write(u->conn, "\r\n", 2) < 0) {
		upstream_fail(u, UP_FAIL_LOST, "output buffer full");
		return;
	}
}

/* AUTH XOAUTH2|OAUTHBEARER <initial response>, built on the heap (a
 * token may be kilobytes long) and wiped. */
static void
upstream_send_token(struct upstream *u, bool xoauth2)
{
	const struct cfg_upstream *c = u->p.cfg;
	size_t cap = auth_b64_size(12288) + 32, n;
	char *line = malloc(cap);
	const char *verb = xoauth2 ? "AUTH XOAUTH2 " : "AUTH OAUTHBEARER ";
	size_t vl = strlen(verb);

	if (line == NULL) {
		upstream_fail(u, UP_FAIL_AUTH_TEMP, "out of memory");
		return;
	}
	memcpy(line, verb, vl);
	n = xoauth2 ? auth_xoauth2(c->username, u->secret, line + vl, cap - vl) :
	    auth_oauthbearer(c->username, c->server_name ? c->server_name :
	    c->host, c->port, u->secret, line + vl, cap - vl);
	if (n == 0) {
		free(line);
		upstream_fail(u, UP_FAIL_AUTH, "token or user name too long");
		return;
	}
	upstream_write_line(u, line, vl + n, true);
	explicit_bzero(line, cap);
	free(line);
	if (u->conn != NULL)
		conn_set_timeout(u->conn, u->p.command_timeout);
}

static void
upstream_enter(struct upstream *u, enum up_state s)
{
	char buf[1200];
	int n;

	log_debug("session=%s upstream=\"%s\" state %s -> %s", u->p.log_id,
	    u->label, upstream_state_name(u->state), upstream_state_name(s));
	u->state = s;
	switch (s) {
	case UP_EHLO:
	case UP_EHLO2:
		n = snprintf(buf, sizeof(buf), "EHLO %s", u->p.helo);
		upstream_write_line(u, buf, (size_t)n, false);
		conn_set_timeout(u->conn, u->p.command_timeout);
		break;
	case UP_STARTTLS:
		upstream_write_line(u, "STARTTLS", 8, false);
		conn_set_timeout(u->conn, u->p.command_timeout);
		break;
	case UP_SECRET:
		log_debug("session=%s upstream=\"%s\" waiting for %s",
		    u->p.log_id, u->label, secret_source(u->p.secret));
		conn_set_timeout(u->conn, u->p.cfg->connect_timeout);
		break;
	case UP_AUTH_PLAIN: {
		char b64[1100];
		u->t_stage = ev_now(u->loop);
		size_t bl = auth_plain(u->p.cfg->username, u->secret,
		    b64, sizeof(b64));
		if (bl == 0) {
			upstream_fail(u, UP_FAIL_AUTH, "credentials too long");
			return;
		}
		n = snprintf(buf, sizeof(buf), "AUTH PLAIN %s", b64);
		explicit_bzero(b64, sizeof(b64));
		upstream_write_line(u, buf, (size_t)n, true);
		explicit_bzero(buf, sizeof(buf));
		conn_set_timeout(u->conn, u->p.command_timeout);
		break;
	}
	case UP_AUTH_LOGIN:
		u->t_stage = ev_now(u->loop);
		upstream_write_line(u, "AUTH LOGIN", 10, false);
		conn_set_timeout(u->conn, u->p.command_timeout);
		break;
	case UP_AUTH_LOGIN_USER:
	case UP_AUTH_LOGIN_PASS: {
		const char *v = s == UP_AUTH_LOGIN_USER ? u->p.cfg->username :
		    u->secret;
		size_t bl = auth_b64(v, strlen(v), buf, sizeof(buf));
		if (bl == 0) {
			upstream_fail(u, UP_FAIL_AUTH, "credentials too long");
			return;
		}
		upstream_write_line(u, buf, bl, true);
		explicit_bzero(buf, sizeof(buf));
		conn_set_timeout(u->conn, u->p.command_timeout);
		break;
	}
	case UP_AUTH_CRAM:
		u->t_stage = ev_now(u->loop);
		upstream_write_line(u, "AUTH CRAM-MD5", 13, false);
		conn_set_timeout(u->conn, u->p.command_timeout);
		break;
	case UP_AUTH_XOAUTH2:
	case UP_AUTH_OAUTHBEARER:
		u->t_stage = ev_now(u->loop);
		upstream_send_token(u, s == UP_AUTH_XOAUTH2);
		break;
	case UP_AUTH_TOKEN_ERR:
		/* Acknowledge the error challenge: RFC 7628 3.2.3 (a single
		 * %x01) for OAUTHBEARER, an empty line for XOAUTH2. */
		if (u->mech == CFG_AUTH_OAUTHBEARER)
			upstream_write_line(u, "AQ==", 4, false);
		else
			upstream_write_line(u, "", 0, false);
		conn_set_timeout(u->conn, u->p.command_timeout);
		break;
	case UP_READY:
		conn_set_timeout(u->conn, 0);
		/* TLS 1.3 tickets have arrived by now: keep one for the
		 * next connection's resumption. */
		conn_tls_save_session(u->conn);
		break;
	case UP_QUIT:
		upstream_write_line(u, "QUIT", 4, false);
		conn_set_timeout(u->conn, UP_QUIT_WAIT);
		break;
	default:
		break;
	}
}

/* After EHLO (the last one before AUTH): authenticate or be ready. */
static void
upstream_after_ehlo(struct upstream *u)
{
	const struct cfg_upstream *c = u->p.cfg;
	enum cfg_auth mech;

	if (c->username == NULL) {
		upstream_enter(u, UP_READY);
		u->ev->ready(u->arg);
		return;
	}
	mech = auth_choose(c->auth, u->caps.auth);
	if (mech == CFG_AUTH_AUTO) {
		upstream_fail(u, UP_FAIL_AUTH, u->caps.auth == 0 ?
		    "server offers no AUTH (wrong port, or AUTH only after TLS?)" :
		    "server offers no AUTH mechanism relay25 can use with this configuration");
		return;
	}
	u->mech = mech;
	upstream_auth_begin(u);
}

/* The secret is here: start (or restart) the AUTH exchange. */
static void
upstream_auth_send(struct upstream *u)
{
	static const enum up_state first[] = {
		[CFG_AUTH_PLAIN] = UP_AUTH_PLAIN,
		[CFG_AUTH_LOGIN] = UP_AUTH_LOGIN,
		[CFG_AUTH_CRAM_MD5] = UP_AUTH_CRAM,
		[CFG_AUTH_XOAUTH2] = UP_AUTH_XOAUTH2,
		[CFG_AUTH_OAUTHBEARER] = UP_AUTH_OAUTHBEARER,
	};
	char why[sizeof(u->auth_why) + 100];

	if (u->rejected != NULL && strcmp(u->secret, u->rejected) == 0) {
		snprintf(why, sizeof(why), "%s (%s gave the same %s again)",
		    u->auth_why, secret_source(u->p.secret),
		    u->mech == CFG_AUTH_XOAUTH2 ||
		    u->mech == CFG_AUTH_OAUTHBEARER ? "token" : "password");
		upstream_fail(u, UP_FAIL_AUTH, why);
		return;
	}
	u->auth_tries++;
	upstream_enter(u, first[u->mech]);
}

static void
upstream_secret_cb(void *arg, const char *secret, const char *why)
{
	struct upstream *u = arg;

	u->sreq = NULL;
	if (u->state != UP_SECRET || u->ev == NULL)
		return;
	if (secret == NULL) {
		upstream_fail(u, UP_FAIL_AUTH_TEMP, why);
		return;
	}
	if ((u->secret = strdup(secret)) == NULL) {
		upstream_fail(u, UP_FAIL_AUTH_TEMP, "out of memory");
		return;
	}
	upstream_auth_send(u);
}

/* Obtain the secret (at once from the cache, or wait in UP_SECRET), then
 * send AUTH. */
static void
upstream_auth_begin(struct upstream *u)
{
	const char *out = u->p.cfg->password;

	if (u->p.secret != NULL) {
		switch (secret_get(u->p.secret, u->loop, upstream_secret_cb, u,
		    &u->sreq, &out)) {
		case SECRET_OK:
			break;
		case SECRET_FAILED:
			upstream_fail(u, UP_FAIL_AUTH_TEMP, out);
			return;
		case SECRET_PENDING:
			upstream_enter(u, UP_SECRET);
			return;
		}
	}
	if (out == NULL) {
		upstream_fail(u, UP_FAIL_AUTH_TEMP,
		    "no password or token available (no secret cache)");
		return;
	}
	if ((u->secret = strdup(out)) == NULL) {
		upstream_fail(u, UP_FAIL_AUTH_TEMP, "out of memory");
		return;
	}
	upstream_auth_send(u);
}

/* The capabilities in words: "PIPELINING SIZE 1000 AUTH PLAIN LOGIN". */
static const char *
upstream_caps_text(const struct smtp_caps *c, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s%s%s%s%s%s%s%s%s%s%s%s%s%s",
	    c->starttls ? "STARTTLS " : "", c->pipelining ? "PIPELINING " : "",
	    c->eightbitmime ? "8BITMIME " : "", c->smtputf8 ? "SMTPUTF8 " : "",
	    c->dsn ? "DSN " : "", c->enhanced ? "ENHANCEDSTATUSCODES " : "",
	    c->chunking ? "CHUNKING " : "", c->size_known ? "SIZE " : "",
	    c->auth ? "AUTH" : "(no AUTH offered)",
	    c->auth & SMTP_AUTH_PLAIN ? " PLAIN" : "",
	    c->auth & SMTP_AUTH_LOGIN ? " LOGIN" : "",
	    c->auth & SMTP_AUTH_CRAM_MD5 ? " CRAM-MD5" : "",
	    c->auth & SMTP_AUTH_XOAUTH2 ? " XOAUTH2" : "",
	    c->auth & SMTP_AUTH_OAUTHBEARER ? " OAUTHBEARER" : "");
	return out;
}

static void
reply_text(const struct smtp_reply *r, char *out, size_t outlen)
{
	smtp_reply_summary(r, out, outlen);
}

/* CRAM-MD5: answer the server's challenge. */
static void
upstream_cram_respond(struct upstream *u, const struct smtp_reply *r)
{
	const char *user = u->p.cfg->username;
	size_t cap = auth_b64_size(strlen(user) + 34), n;
	char *line = cap ? malloc(cap) : NULL;

	if (line == NULL) {
		upstream_fail(u, UP_FAIL_AUTH_TEMP, "out of memory");
		return;
	}
	n = r->nlines > 0 ? auth_cram_md5(user, u->secret, r->text + r->off[0],
	    r->len[0], line, cap) : 0;
	if (n == 0) {
		free(line);
		upstream_fail(u, UP_FAIL_AUTH,
		    "AUTH CRAM-MD5: malformed challenge from server");
		return;
	}
	u->state = UP_AUTH_CRAM_RESP;
	upstream_write_line(u, line, n, true);
	explicit_bzero(line, cap);
	free(line);
	if (u->conn != NULL)
		conn_set_timeout(u->conn, u->p.command_timeout);
}

/* A token mechanism got a 334: the server's error challenge (base64 JSON
 * such as {"status":"401",...}). Log its gist, then acknowledge it. */
static void
upstream_token_error(struct upstream *u, const struct smtp_reply *r)
{
	char json[512], shown[200];
	size_t n = r->nlines > 0 ? auth_b64_decode(r->text + r->off[0],
	    r->len[0], json, sizeof(json) - 1) : (size_t)-1;

	if (n == (size_t)-1)
		n = 0;
	log_sanitize(shown, sizeof(shown), json, n);
	snprintf(u->auth_why, sizeof(u->auth_why), "AUTH %s rejected the "
	    "token: %s", auth_name(u->mech), n ? shown : "(no details)");
	upstream_enter(u, UP_AUTH_TOKEN_ERR);
}

static void
upstream_auth_reply(struct upstream *u, const struct smtp_reply *r)
{
	char why[sizeof(u->auth_why)], sum[200];

	if (r->code == 235) {
		metrics_upstream_latency(METRICS_STAGE_AUTH,
		    ev_now(u->loop) - u->t_stage);
		log_debug("session=%s upstream=\"%s\" authenticated as %s",
		    u->p.log_id, u->label, u->p.cfg->username);
		snprintf(why, sizeof(why), "%s as %s accepted%s",
		    auth_name(u->mech), u->p.cfg->username, u->auth_tries > 1 ?
		    " (after a fresh secret)" : "");
		upstream_drop_secrets(u);
		upstream_step(u, UP_STEP_AUTH, why);
		upstream_enter(u, UP_READY);
		u->ev->ready(u->arg);
		return;
	}
	if (r->code == 334) {
		switch (u->state) {
		case UP_AUTH_LOGIN:
			upstream_enter(u, UP_AUTH_LOGIN_USER);
			return;
		case UP_AUTH_LOGIN_USER:
			upstream_enter(u, UP_AUTH_LOGIN_PASS);
			return;
		case UP_AUTH_CRAM:
			upstream_cram_respond(u, r);
			return;
		case UP_AUTH_XOAUTH2:
		case UP_AUTH_OAUTHBEARER:
			upstream_token_error(u, r);
			return;
		default:
			break;
		}
	}
	reply_text(r, sum, sizeof(sum));
	if (u->state == UP_AUTH_TOKEN_ERR)
		snprintf(why, sizeof(why), "%.160s; then %.130s", u->auth_why,
		    sum);
	else
		snprintf(why, sizeof(why), "AUTH %s rejected: %s",
		    auth_name(u->mech), sum);
	/* A secret that can change is fetched again and tried once more on
	 * this connection: the token had expired, the password was rotated. */
	if (r->code == 535 && u->auth_tries == 1 &&
	    secret_refreshable(u->p.secret) && u->secret != NULL) {
		log_info("session=%s upstream=\"%s\" %s; obtaining a new %s "
		    "from %s and retrying", u->p.log_id, u->label, why,
		    u->mech == CFG_AUTH_XOAUTH2 || u->mech ==
		    CFG_AUTH_OAUTHBEARER ? "token" : "password",
		    secret_source(u->p.secret));
		snprintf(u->auth_why, sizeof(u->auth_why), "%s", why);
		secret_invalidate(u->p.secret, u->secret);
		upstream_wipe(&u->rejected);
		u->rejected = u->secret;
		u->secret = NULL;
		upstream_auth_begin(u);
		return;
	}
	if (r->code >= 400 && r->code < 500)
		upstream_fail(u, UP_FAIL_AUTH_TEMP, why);
	else
		upstream_fail(u, UP_FAIL_AUTH, why);
}

static void
upstream_handshake_reply(struct upstream *u, const struct smtp_reply *r)
{
	char why[300], sum[200];

	reply_text(r, sum, sizeof(sum));
	switch (u->state) {
	case UP_BANNER:
		if (r->code != 220) {
			snprintf(why, sizeof(why), "greeting: %s", sum);
			upstream_fail(u, UP_FAIL_CONNECT, why);
			return;
		}
		upstream_enter(u, UP_EHLO);
		return;
	case UP_EHLO:
	case UP_EHLO2:
		if (r->code != 250) {
			snprintf(why, sizeof(why), "EHLO refused: %s", sum);
			upstream_fail(u, UP_FAIL_CONNECT, why);
			return;
		}
		smtp_caps_parse(r, &u->caps);
		upstream_step(u, UP_STEP_EHLO, upstream_caps_text(&u->caps,
		    why, sizeof(why)));
		if (u->state == UP_EHLO && u->p.cfg->tls == CFG_TLS_STARTTLS) {
			if (!u->caps.starttls) {
				upstream_fail(u, UP_FAIL_TLS,
				    "server does not offer STARTTLS (port for implicit TLS? try tls = implicit)");
				return;
			}
			upstream_enter(u, UP_STARTTLS);
			return;
		}
		upstream_after_ehlo(u);
		return;
	case UP_STARTTLS:
		if (r->code != 220) {
			snprintf(why, sizeof(why), "STARTTLS refused: %s", sum);
			upstream_fail(u, UP_FAIL_TLS, why);
			return;
		}
		/* Anything already buffered was sent in plaintext after the
		 * 220: an injection attempt (CVE-2011-0411 class). */
		u->t_stage = ev_now(u->loop);
		if (conn_starttls(u->conn, u->p.tls, u->p.cfg->server_name ?
		    u->p.cfg->server_name : u->p.cfg->host) < 0) {
			upstream_fail(u, UP_FAIL_TLS,
			    "plaintext bytes after the STARTTLS reply");
			return;
		}
		u->state = UP_TLS;
		conn_set_timeout(u->conn, u->p.cfg->connect_timeout);
		return;
	default:
		upstream_auth_reply(u, r);
		return;
	}
}

/* A 421 means the server is closing: the session is finished, once its
 * reply has been passed on. */
static void
upstream_after_reply(struct upstream *u, const struct smtp_reply *r)
{
	if (r->code == 421 && u->state == UP_READY && u->ev != NULL)
		upstream_fail(u, UP_FAIL_LOST, "server closing (421)");
}

static void
upstream_reply(struct upstream *u, const struct smtp_reply *r)
{
	char sum[200];

	if (log_enabled(CFG_LOG_DEBUG)) {
		reply_text(r, sum, sizeof(sum));
		log_debug("session=%s upstream=\"%s\" <<< %s", u->p.log_id,
		    u->label, sum);
	}
	switch (u->state) {
	case UP_BANNER: case UP_EHLO: case UP_EHLO2: case UP_STARTTLS:
	case UP_AUTH_PLAIN: case UP_AUTH_LOGIN: case UP_AUTH_LOGIN_USER:
	case UP_AUTH_LOGIN_PASS: case UP_AUTH_CRAM: case UP_AUTH_CRAM_RESP:
	case UP_AUTH_XOAUTH2: case UP_AUTH_OAUTHBEARER: case UP_AUTH_TOKEN_ERR:
		upstream_handshake_reply(u, r);
		return;
	case UP_CMD:
		if (u->sent_data && r->code == 354) {
			u->state = UP_BODY;
			conn_set_timeout(u->conn, u->p.data_timeout);
		} else {
			u->state = UP_READY;
			conn_set_timeout(u->conn, 0);
		}
		u->ev->reply(u->arg, r);
		upstream_after_reply(u, r);
		return;
	case UP_EOD:
		u->state = UP_READY;
		conn_set_timeout(u->conn, 0);
		if (r->code >= 200 && r->code < 300)
			u->messages++;
		u->ev->reply(u->arg, r);
		upstream_after_reply(u, r);
		return;
	case UP_BODY:
		/* The ESP answered before the end of data (it gave up on the
		 * message): pass its reply on, the connection is finished. */
		u->ev->reply(u->arg, r);
		if (u->state == UP_BODY)
			upstream_fail(u, UP_FAIL_LOST,
			    "server replied before the end of data");
		return;
	case UP_QUIT:
		upstream_close(u);
		return;
	default:
		reply_text(r, sum, sizeof(sum));
		upstream_fail(u, UP_FAIL_LOST, "unexpected reply from server");
		return;
	}
}

static void
upstream_read(struct upstream *u)
{
	size_t len, used;
	const char *in;
	enum smtp_res res;

	while (u->conn != NULL && u->state != UP_DEAD) {
		in = conn_in(u->conn, &len);
		if (len == 0)
			return;
		if (u->state == UP_TLS || u->state == UP_TLS_IMPLICIT ||
		    u->state == UP_CONNECT) {
			return;  /* nothing should arrive; conn refuses TLS */
		}
		res = smtp_reply_feed(&u->rp, in, len, &used);
		conn_consume(u->conn, used);
		if (res == SMTP_AGAIN)
			return;
		if (res == SMTP_ERROR) {
			upstream_fail(u, UP_FAIL_LOST, "malformed reply from server");
			return;
		}
		struct smtp_reply r = u->rp.reply;
		smtp_reply_init(&u->rp);
		/* Replies are answered one at a time; anything the server
		 * sends unasked after that is an error caught on the next
		 * pass. */
		if (u->ev == NULL && u->state != UP_QUIT)
			return;
		upstream_reply(u, &r);
	}
}

static void
upstream_conn_cb(struct conn *c, enum conn_event e, void *arg)
{
	struct upstream *u = arg;
	char why[300];

	(void)c;
	switch (e) {
	case CONN_CONNECTED:
		log_debug("session=%s upstream=\"%s\" connected", u->p.log_id,
		    u->label);
		metrics_upstream_latency(METRICS_STAGE_CONNECT,
		    ev_now(u->loop) - u->t_stage);
		u->t_stage = ev_now(u->loop);    /* implicit TLS starts now */
		if (u->ev != NULL && u->ev->step != NULL) {
			char a[64] = "?";
			size_t i = u->addr_idx - 1;
			getnameinfo((const struct sockaddr *)&u->addrs[i],
			    u->addrlens[i], a, sizeof(a), NULL, 0,
			    NI_NUMERICHOST);
			snprintf(why, sizeof(why), "%s port %s", a, u->port);
			upstream_step(u, UP_STEP_CONNECTED, why);
		}
		if (u->p.cfg->tls == CFG_TLS_IMPLICIT) {
			if (conn_starttls(u->conn, u->p.tls,
			    u->p.cfg->server_name ? u->p.cfg->server_name :
			    u->p.cfg->host) < 0) {
				upstream_fail(u, UP_FAIL_TLS, "cannot start TLS");
				return;
			}
			u->state = UP_TLS_IMPLICIT;
		} else {
			u->state = UP_BANNER;
			conn_set_timeout(u->conn, u->p.command_timeout);
		}
		return;
	case CONN_TLS_READY:
		metrics_upstream_latency(METRICS_STAGE_TLS,
		    ev_now(u->loop) - u->t_stage);
		log_debug("session=%s upstream=\"%s\" tls=%s cipher=%s%s",
		    u->p.log_id, u->label, conn_tls_version(u->conn),
		    conn_tls_cipher(u->conn), conn_tls_resumed(u->conn) ?
		    " resumed" : "");
		if (u->ev != NULL && u->ev->step != NULL) {
			struct conn_peer_cert pc;
			char detail[1024];
			conn_tls_peer_cert(u->conn, &pc);
			snprintf(detail, sizeof(detail), "%s %s\n"
			    "certificate subject: %s\nissuer: %s\nexpires: %s\n"
			    "%s", conn_tls_version(u->conn),
			    conn_tls_cipher(u->conn), pc.subject, pc.issuer,
			    pc.not_after, u->p.cfg->tls_verify ?
			    "chain verified; name matched" :
			    "NOT verified (tls_verify = no)");
			upstream_step(u, UP_STEP_TLS, detail);
		}
		if (u->state == UP_TLS_IMPLICIT) {
			u->state = UP_BANNER;
			conn_set_timeout(u->conn, u->p.command_timeout);
		} else
			upstream_enter(u, UP_EHLO2);
		upstream_read(u);
		return;
	case CONN_READ:
		upstream_read(u);
		return;
	case CONN_DRAIN:
		if (u->state == UP_BODY && u->ev != NULL && u->ev->drain)
			u->ev->drain(u->arg);
		return;
	case CONN_EOF:
		if (u->state == UP_QUIT) {
			upstream_close(u);
			return;
		}
		upstream_read(u);   /* a last reply (e.g. 421) first */
		if (u->state == UP_DEAD || u->ev == NULL)
			return;
		if (u->state == UP_CONNECT) {
			upstream_connect_next(u);
			return;
		}
		upstream_fail(u, before_ready(u) && u->state != UP_READY ?
		    (u->state == UP_TLS || u->state == UP_TLS_IMPLICIT ?
		    UP_FAIL_TLS : UP_FAIL_CONNECT) : UP_FAIL_LOST,
		    "connection closed by server");
		return;
	case CONN_ERROR:
		if (u->state == UP_QUIT) {
			upstream_close(u);
			return;
		}
		snprintf(why, sizeof(why), "%s", conn_error(c));
		if (u->state == UP_CONNECT) {
			log_debug("session=%s upstream=\"%s\" connect: %s",
			    u->p.log_id, u->label, why);
			upstream_connect_next(u);
			return;
		}
		upstream_fail(u, (u->state == UP_TLS ||
		    u->state == UP_TLS_IMPLICIT) ? UP_FAIL_TLS :
		    before_ready(u) ? UP_FAIL_CONNECT : UP_FAIL_LOST, why);
		return;
	case CONN_TIMEOUT:
		if (u->state == UP_QUIT) {
			upstream_close(u);
			return;
		}
		if (u->state == UP_CONNECT) {
			snprintf(why, sizeof(why), "connect timed out");
			upstream_connect_next(u);
			return;
		}
		if (u->state == UP_SECRET)
			snprintf(why, sizeof(why), "%s gave no secret in time",
			    secret_source(u->p.secret));
		else
			snprintf(why, sizeof(why), "no answer in time (state %s)",
			    upstream_state_name(u->state));
		upstream_fail(u, UP_FAIL_TIMEOUT, why);
		return;
	}
}

static char last_connect_error[200];

/* Try the next resolved address; fail when none is left. */
static void
upstream_connect_next(struct upstream *u)
{
	if (u->conn != NULL) {
		snprintf(last_connect_error, sizeof(last_connect_error), "%s",
		    conn_error(u->conn));
		conn_free(u->conn);
		u->conn = NULL;
	}
	while (u->addr_idx < u->naddrs) {
		size_t i = u->addr_idx++;
		u->conn = conn_connect(u->loop,
		    (const struct sockaddr *)&u->addrs[i], u->addrlens[i],
		    UP_IN_MAX, UP_OUT_MAX, upstream_conn_cb, u);
		if (u->conn == NULL) {
			snprintf(last_connect_error,
			    sizeof(last_connect_error), "%s", strerror(errno));
			continue;
		}
		u->state = UP_CONNECT;
		conn_set_timeout(u->conn, u->p.cfg->connect_timeout);
		return;
	}
	char why[300];
	snprintf(why, sizeof(why), "cannot connect to %s port %u: %s",
	    u->p.cfg->host, u->p.cfg->port, last_connect_error[0] ?
	    last_connect_error : "no address");
	u->state = UP_CONNECT;
	upstream_fail(u, UP_FAIL_CONNECT, why);
}

static void
upstream_resolved(void *arg, int err, const struct addrinfo *res)
{
	struct upstream *u = arg;
	char why[300];

	u->rreq = NULL;
	if (err != 0) {
		snprintf(why, sizeof(why), "cannot resolve %s: %s",
		    u->p.cfg->host, gai_strerror(err));
		upstream_fail(u, UP_FAIL_CONNECT, why);
		return;
	}
	for (const struct addrinfo *ai = res; ai != NULL &&
	    u->naddrs < UP_MAX_ADDRS; ai = ai->ai_next) {
		if (ai->ai_addrlen > sizeof(u->addrs[0]))
			continue;
		memcpy(&u->addrs[u->naddrs], ai->ai_addr, ai->ai_addrlen);
		u->addrlens[u->naddrs++] = ai->ai_addrlen;
	}
	last_connect_error[0] = '\0';
	if (u->ev != NULL && u->ev->step != NULL) {
		size_t o = 0;
		why[0] = '\0';
		for (size_t i = 0; i < u->naddrs && o < sizeof(why) - 1; i++) {
			char a[64] = "?";
			getnameinfo((const struct sockaddr *)&u->addrs[i],
			    u->addrlens[i], a, sizeof(a), NULL, 0,
			    NI_NUMERICHOST);
			int n = snprintf(why + o, sizeof(why) - o, "%s%s",
			    i ? ", " : "", a);
			if (n < 0)
				break;
			o += (size_t)n;
		}
		upstream_step(u, UP_STEP_RESOLVED, why);
	}
	upstream_connect_next(u);
}

struct upstream *
upstream_open(struct ev_loop *loop, const struct upstream_params *p,
    const struct upstream_events *ev, void *arg)
{
	struct upstream *u = calloc(1, sizeof(*u));

	if (u == NULL)
		return NULL;
	u->loop = loop;
	u->p = *p;
	snprintf(u->log_id, sizeof(u->log_id), "%s", p->log_id);
	u->p.log_id = u->log_id;
	u->ev = ev;
	u->arg = arg;
	u->state = UP_RESOLVE;
	u->t_stage = ev_now(loop);
	smtp_reply_init(&u->rp);
	snprintf(u->port, sizeof(u->port), "%u", p->cfg->port);
	snprintf(u->label, sizeof(u->label), "%s%s%s:%u", p->cfg->name,
	    p->cfg->name[0] ? " " : "", p->cfg->host, p->cfg->port);
	u->rreq = resolve_start(loop, p->cfg->host, u->port,
	    upstream_resolved, u);
	if (u->rreq == NULL) {
		free(u);
		return NULL;
	}
	return u;
}

void
upstream_send(struct upstream *u, const char *line, size_t len)
{
	if (u->state != UP_READY || u->conn == NULL)
		return;
	u->sent_data = (len == 4 && strncasecmp(line, "DATA", 4) == 0);
	u->state = UP_CMD;
	upstream_write_line(u, line, len, false);
	if (u->state == UP_CMD)
		conn_set_timeout(u->conn, u->p.command_timeout);
}

size_t
upstream_body_room(const struct upstream *u)
{
	if (u->state != UP_BODY || u->conn == NULL)
		return 0;
	return conn_out_room(u->conn);
}

void
upstream_body(struct upstream *u, const char *buf, size_t len)
{
	if (u->state != UP_BODY || u->conn == NULL || len == 0)
		return;
	if (conn_write(u->conn, buf, len) < 0) {
		upstream_fail(u, UP_FAIL_LOST, "body exceeds output buffer");
		return;
	}
	conn_set_timeout(u->conn, u->p.data_timeout);
}

void
upstream_end_data(struct upstream *u)
{
	if (u->state != UP_BODY || u->conn == NULL)
		return;
	u->state = UP_EOD;
	if (conn_write(u->conn, ".\r\n", 3) < 0) {
		upstream_fail(u, UP_FAIL_LOST, "output buffer full");
		return;
	}
	conn_set_timeout(u->conn, u->p.data_timeout);
}

void
upstream_quit(struct upstream *u)
{
	if (u == NULL || u->state == UP_DEAD)
		return;
	u->ev = NULL;
	if (u->conn != NULL && u->state == UP_READY) {
		upstream_enter(u, UP_QUIT);
		if (u->state == UP_QUIT && u->conn != NULL)
			return;
	}
	upstream_close(u);
}

void
upstream_abort(struct upstream *u)
{
	if (u == NULL || u->state == UP_DEAD)
		return;
	u->ev = NULL;
	upstream_close(u);
}

void
upstream_rebind(struct upstream *u, const struct upstream_events *ev,
    void *arg)
{
	u->ev = ev;
	u->arg = arg;
}

unsigned
upstream_messages(const struct upstream *u)
{
	return u->messages;
}

bool
upstream_is_ready(const struct upstream *u)
{
	return u != NULL && u->state == UP_READY && u->ev != NULL;
}

const struct smtp_caps *
upstream_caps(const struct upstream *u)
{
	return &u->caps;
}

const char *
upstream_label(const struct upstream *u)
{
	return u->label;
}
