/*
 * relay.c - pairs a client session with an upstream session: obtains the
 * upstream (ordered failover), forwards transaction commands, streams the
 * body through the DATA decoder with back-pressure, and turns every
 * upstream failure into a 4xx. One log line per message.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ev.h>

#include "relay25/conn.h"
#include "relay25/dotstream.h"
#include "relay25/envelope.h"
#include "relay25/headers.h"
#include "relay25/log.h"
#include "relay25/metrics.h"
#include "relay25/pool.h"
#include "relay25/relay.h"
#include "relay25/route.h"
#include "relay25/session.h"
#include "relay25/setup.h"
#include "relay25/spool.h"
#include "relay25/upstream.h"

#define RELAY_CHUNK 16384
/* With the header filter: decode this much at a time, and only when the
 * upstream can take twice its worst-case filtered output (a held From:
 * field plus additions), so the filter never has to keep bytes back. */
#define RELAY_FILTER_CHUNK 4096
#define RELAY_FILTER_NEED (2 * (RELAY_FILTER_CHUNK + HDR_OUT_RESERVE))
#define RELAY_PROBE_AFTER 10.0   /* NOOP a pooled session idle this long
                                  * (or half pool_idle_timeout if less) */

enum relay_op { OP_NONE, OP_PROBE, OP_MAIL, OP_RCPT, OP_DATA, OP_RSET,
    OP_EOD };

struct relay {
	struct ev_loop *loop;
	struct setup *setup;
	struct session *session;
	struct conn *client;
	struct upstream *up;
	size_t up_idx;              /* which upstream `up` is */
	size_t route[CFG_MAX_UPSTREAMS];  /* upstreams for this sender */
	size_t nroute;
	size_t try_pos;             /* next position in route[] to try */
	size_t cur_pos;             /* position of `up` in route[] */
	bool reused;                /* `up` came from the pool */
	bool fresh_only;            /* a pooled session failed: connect anew */
	enum relay_op op;           /* command waiting for its reply */
	char pending[SMTP_LINE_MAX + 8];  /* the MAIL line while connecting */
	size_t pending_len;

	/* transaction */
	bool in_tx;                 /* MAIL accepted upstream */
	bool tx_broken;             /* upstream lost during the transaction */
	char sender[SMTP_PATH_MAX + 3];
	unsigned rcpts_ok;
	ev_tstamp tx_start;

	/* body */
	struct dot_decoder dot;
	bool in_body;               /* between the 354 and the end of data */
	struct hdr_filter *hdr;     /* header rewriting, NULL when off */

	/* spool mode: every upstream unavailable, the message goes to the
	 * durable spool and is delivered in the background */
	struct spool *spool;        /* NULL: no spool configured */
	bool spooling;
	struct spool_writer *sw;
	char **rcpts;               /* recipients kept for the spool */
	size_t nrcpts;
	bool discard;               /* keep reading to the end, send nothing */
	char discard_reply[200];    /* what the client gets at the end */
	bool oversize;
	bool bare_reject;

	char id[24];
	char client_addr[64];
	char failure[300];          /* last upstream failure, for logs */
};

static const struct upstream_events relay_upstream_events;

static void
relay_reply_local(struct relay *r, const char *text)
{
	enum relay_op op = r->op;

	r->op = OP_NONE;
	(void)op;
	session_relay_reply(r->session, text, strlen(text));
}

static const struct cfg_upstream *
relay_cfg_up(const struct relay *r, size_t i)
{
	return &r->setup->cfg->upstream[i];
}

static enum metrics_upfail
relay_metrics_kind(enum upstream_fail k)
{
	switch (k) {
	case UP_FAIL_CONNECT: return METRICS_UPFAIL_CONNECT;
	case UP_FAIL_TLS: return METRICS_UPFAIL_TLS;
	case UP_FAIL_AUTH: return METRICS_UPFAIL_AUTH;
	case UP_FAIL_AUTH_TEMP: return METRICS_UPFAIL_AUTH_TEMP;
	case UP_FAIL_LOST: return METRICS_UPFAIL_LOST;
	case UP_FAIL_TIMEOUT: break;
	}
	return METRICS_UPFAIL_TIMEOUT;
}

static void
relay_log_message(struct relay *r, const char *status, const char *reply,
    const char *queue_id)
{
	char up[300];

	if (strcmp(status, "spooled") != 0)   /* counted by the spool */
		metrics_message(strcmp(status, "sent") == 0 ? METRICS_SENT :
		    strcmp(status, "deferred") == 0 ? METRICS_DEFERRED :
		    strcmp(status, "rejected") == 0 ? METRICS_REJECTED :
		    METRICS_ABORTED, r->dot.out_bytes);

	if (r->up != NULL)
		snprintf(up, sizeof(up), "%s", upstream_label(r->up));
	else {
		const struct cfg_upstream *c = relay_cfg_up(r, r->up_idx);
		snprintf(up, sizeof(up), "%s%s%s:%u", c->name,
		    c->name[0] ? " " : "", c->host, c->port);
	}
	log_info("session=%s client=%s status=%s from=<%s> rcpts=%u size=%llu "
	    "upstream=\"%s\" reply=\"%s\" queue_id=%s duration=%.3fs",
	    r->id, r->client_addr, status, r->sender, r->rcpts_ok,
	    (unsigned long long)r->dot.out_bytes, up, reply,
	    queue_id[0] ? queue_id : "-",
	    ev_now(r->loop) - r->tx_start);
}

static void
relay_tx_reset(struct relay *r)
{
	r->in_tx = false;
	r->tx_broken = false;
	r->rcpts_ok = 0;
	r->sender[0] = '\0';
	r->in_body = false;
	free(r->hdr);
	r->hdr = NULL;
	if (r->sw != NULL) {
		spool_abort(r->sw);
		r->sw = NULL;
	}
	for (size_t i = 0; i < r->nrcpts; i++)
		free(r->rcpts[i]);
	free(r->rcpts);
	r->rcpts = NULL;
	r->nrcpts = 0;
	r->spooling = false;
	r->discard = false;
	r->oversize = false;
	r->bare_reject = false;
	memset(&r->dot, 0, sizeof(r->dot));
}

/* Let go of the upstream session without giving it back. */
static void
relay_drop_upstream(struct relay *r)
{
	if (r->up != NULL) {
		upstream_abort(r->up);
		r->up = NULL;
	}
	if (r->reused) {
		pool_release(r->setup->pool[r->up_idx]);
		r->reused = false;
	}
}

static void relay_send_path(struct relay *, const char *, size_t, bool);

/* No upstream of the route can take the transaction now: accept it into
 * the durable spool instead (when one is configured). */
static bool
relay_start_spooling(struct relay *r)
{
	if (r->spool == NULL || r->op != OP_MAIL)
		return false;
	relay_drop_upstream(r);
	r->spooling = true;
	r->in_tx = true;
	log_warn("session=%s client=%s from=<%s> upstream unavailable (%s): "
	    "accepting into the spool", r->id, r->client_addr, r->sender,
	    r->failure[0] ? r->failure : "4xx at MAIL");
	relay_reply_local(r, "250 2.1.0 Ok (the upstream is unavailable; the "
	    "message will be queued)\r\n");
	return true;
}
static void relay_release_upstream(struct relay *);

static void
relay_open_next(struct relay *r)
{
	const struct setup *s = r->setup;
	const struct cfg *cfg = s->cfg;

	while (r->try_pos < r->nroute) {
		size_t i = r->route[r->try_pos];

		r->cur_pos = r->try_pos++;
		double idle = 0;

		r->up_idx = i;
		r->reused = false;
		if (!r->fresh_only && (r->up = pool_take(s->pool[i],
		    &relay_upstream_events, r, &idle)) != NULL) {
			r->reused = true;
			log_debug("session=%s upstream=\"%s\" from the pool "
			    "(idle %.1fs)", r->id, upstream_label(r->up), idle);
			double probe = cfg->upstream[i].pool_idle_timeout / 2;
			if (probe > RELAY_PROBE_AFTER)
				probe = RELAY_PROBE_AFTER;
			if (idle >= probe) {
				r->op = OP_PROBE;
				upstream_send(r->up, "NOOP", 4);
			} else
				relay_send_path(r, r->pending, r->pending_len,
				    true);
			return;
		}
		r->fresh_only = false;
		struct upstream_params p = setup_upstream_params(s, i, r->id);

		r->up = upstream_open(r->loop, &p, &relay_upstream_events, r);
		if (r->up != NULL)
			return;
		snprintf(r->failure, sizeof(r->failure), "out of memory");
	}
	/* Every upstream failed before the session was ready. */
	r->try_pos = 0;
	if (relay_start_spooling(r))
		return;
	log_error("session=%s client=%s no upstream available: %s", r->id,
	    r->client_addr, r->failure);
	relay_reply_local(r, "451 4.4.1 Upstream unavailable, try again later\r\n");
}

/* Compose MAIL or RCPT for the upstream from the client's argument, with
 * the parameters this upstream supports, and send it. */
static void
relay_send_path(struct relay *r, const char *arg, size_t len, bool is_mail)
{
	struct smtp_path path;
	char line[SMTP_LINE_MAX + 64];
	size_t n = 0;

	const char *rw = relay_cfg_up(r, r->up_idx)->rewrite_sender;

	if (smtp_path_parse(arg, len, is_mail ? "FROM:" : "TO:", is_mail,
	    &path) == SMTP_OK) {
		/* The ESP's verified sender; the null sender stays <>. */
		if (is_mail && rw != NULL && path.addr_len > 0) {
			path.addr = rw;
			path.addr_len = strlen(rw);
		}
		n = envelope_line(&path, is_mail, upstream_caps(r->up), line,
		    sizeof(line));
	}
	if (n == 0) {
		relay_reply_local(r, "501 5.5.4 Syntax error in parameters\r\n");
		return;
	}
	upstream_send(r->up, line, n);
}

static void
relay_up_ready(void *arg)
{
	struct relay *r = arg;

	setup_learn_caps(r->setup, r->up_idx, upstream_caps(r->up));
	metrics_upstream_attempt(true);
	log_debug("session=%s upstream=\"%s\" ready", r->id,
	    upstream_label(r->up));
	if (r->op == OP_MAIL)
		relay_send_path(r, r->pending, r->pending_len, true);
}

static void
relay_finish_message(struct relay *r, const struct smtp_reply *rep)
{
	char sum[256], qid[128] = "";

	smtp_reply_summary(rep, sum, sizeof(sum));
	if (rep->code >= 200 && rep->code < 300)
		smtp_reply_queue_id(rep, qid, sizeof(qid));
	relay_log_message(r, rep->code < 300 ? "sent" :
	    rep->code < 500 ? "deferred" : "rejected", sum, qid);
	relay_tx_reset(r);
}

/* Pass decoded message bytes through the header filter to the upstream;
 * the caller made sure there is room for all of it. */
static void
relay_filter_write(struct relay *r, const char *buf, size_t len, bool end)
{
	char out[RELAY_FILTER_CHUNK + HDR_OUT_RESERVE];

	while (len > 0 && r->up != NULL) {
		size_t used = 0, n = 0, room = upstream_body_room(r->up);

		if (room > sizeof(out))
			room = sizeof(out);
		hdr_filter_feed(r->hdr, buf, len, &used, out, room, &n);
		upstream_body(r->up, out, n);
		buf += used;
		len -= used;
	}
	if (end && r->up != NULL) {
		size_t n = 0;
		hdr_filter_finish(r->hdr, out, sizeof(out), &n);
		upstream_body(r->up, out, n);
		if (hdr_filter_gave_up(r->hdr))
			log_info("session=%s headers passed unchanged (%s)", r->id,
			    hdr_stop_name(hdr_filter_stop(r->hdr)));
	}
}

static void
relay_up_reply(void *arg, const struct smtp_reply *rep)
{
	struct relay *r = arg;
	char wire[SMTP_REPLY_TEXT_MAX + 1024];
	size_t n;
	enum relay_op op = r->op;

	if (op == OP_PROBE) {
		if (rep->code == 250) {
			r->op = OP_MAIL;
			relay_send_path(r, r->pending, r->pending_len, true);
		} else {
			/* Not fit for use: a fresh session instead. */
			relay_drop_upstream(r);
			r->op = OP_MAIL;
			r->fresh_only = true;
			r->try_pos = r->cur_pos;
			relay_open_next(r);
		}
		return;
	}
	if (op == OP_MAIL && r->reused && rep->code == 421) {
		/* A pooled session the ESP no longer wants (messages per
		 * connection, idle limit): nothing of this transaction was
		 * accepted, so a fresh session takes it over. */
		log_debug("session=%s pooled session got 421 at MAIL; retrying "
		    "on a fresh one", r->id);
		relay_drop_upstream(r);
		r->fresh_only = true;
		r->try_pos = r->cur_pos;
		relay_open_next(r);
		return;
	}
	if (op == OP_MAIL && rep->code >= 400 && rep->code < 500 &&
	    relay_start_spooling(r))
		return;
	n = smtp_reply_format(rep, wire, sizeof(wire));
	if (n == 0)
		n = (size_t)snprintf(wire, sizeof(wire), "%d %s\r\n",
		    rep->code, rep->code < 400 ? "Ok" : "Error");
	switch (op) {
	case OP_MAIL:
		if (rep->code >= 200 && rep->code < 300)
			r->in_tx = true;
		break;
	case OP_RCPT:
		if (rep->code >= 200 && rep->code < 300)
			r->rcpts_ok++;
		break;
	case OP_DATA:
		if (rep->code == 354) {
			dot_init(&r->dot, r->setup->cfg->bare_lf ==
			    CFG_BARE_LF_REJECT);
			r->in_body = true;
			r->discard = false;
			r->discard_reply[0] = '\0';
			r->hdr = setup_new_filter(r->setup, r->up_idx);
		}
		break;
	case OP_EOD:
		relay_finish_message(r, rep);
		break;
	case OP_RSET:
		relay_tx_reset(r);
		break;
	case OP_PROBE:          /* handled above */
		break;
	case OP_NONE:
		/* The ESP spoke during the body: it gave up on the message.
		 * Its reply is what the client gets at the end of data. */
		if (r->in_body && !r->discard) {
			smtp_reply_summary(rep, r->discard_reply,
			    sizeof(r->discard_reply) - 2);
			size_t l = strlen(r->discard_reply);
			memcpy(r->discard_reply + l, "\r\n", 3);
			r->discard = true;
		}
		return;
	}
	r->op = OP_NONE;
	session_relay_reply(r->session, wire, n);
}

static void
relay_up_failed(void *arg, enum upstream_fail kind, bool before_ready,
    const char *why)
{
	struct relay *r = arg;
	const struct cfg_upstream *c = relay_cfg_up(r, r->up_idx);
	enum relay_op op = r->op;
	const char *lost = kind == UP_FAIL_TIMEOUT ?
	    "451 4.4.2 Upstream timed out, try again later\r\n" :
	    "451 4.4.2 Upstream connection lost, try again later\r\n";

	snprintf(r->failure, sizeof(r->failure), "%s%s%s:%u: %s", c->name,
	    c->name[0] ? " " : "", c->host, c->port, why);
	metrics_upstream_failure(relay_metrics_kind(kind));
	if (before_ready)
		metrics_upstream_attempt(false);
	bool was_reused = r->reused;
	relay_drop_upstream(r);
	if (was_reused && (op == OP_PROBE || op == OP_MAIL)) {
		/* A pooled session died before this transaction reached the
		 * ESP: try again on a fresh one, the client never knows. */
		log_debug("session=%s pooled session failed (%s); retrying on "
		    "a fresh one", r->id, why);
		r->op = OP_MAIL;
		r->fresh_only = true;
		r->try_pos = r->cur_pos;
		relay_open_next(r);
		return;
	}
	if (before_ready) {
		if (kind == UP_FAIL_AUTH)
			log_error("session=%s configuration error: upstream %s "
			    "rejected the credentials of user %s: %s", r->id,
			    c->host, c->username ? c->username : "-", why);
		else
			log_warn("session=%s upstream %s failed (%s)", r->id,
			    r->failure, upstream_fail_name(kind));
		if (op == OP_MAIL)
			relay_open_next(r);     /* failover */
		return;
	}
	log_warn("session=%s upstream lost (%s): %s", r->id,
	    upstream_fail_name(kind), r->failure);
	switch (op) {
	case OP_NONE:
		if (r->in_body && !r->discard) {
			/* Read on to the client's end of data, then 451. */
			r->discard = true;
			snprintf(r->discard_reply, sizeof(r->discard_reply),
			    "%s", lost);
		} else if (r->in_tx)
			r->tx_broken = true;
		return;
	case OP_RSET:
		relay_tx_reset(r);
		relay_reply_local(r, "250 2.0.0 Ok\r\n");
		return;
	case OP_EOD:
		relay_log_message(r, "deferred", why, "");
		relay_tx_reset(r);
		relay_reply_local(r, lost);
		return;
	default:        /* MAIL, RCPT, DATA */
		r->tx_broken = r->in_tx;
		relay_reply_local(r, lost);
		return;
	}
}

static void
relay_up_drain(void *arg)
{
	struct relay *r = arg;

	conn_resume(r->client);
}

static const struct upstream_events relay_upstream_events = {
	.ready = relay_up_ready,
	.reply = relay_up_reply,
	.failed = relay_up_failed,
	.drain = relay_up_drain,
};

struct relay *
relay_new(struct ev_loop *loop, struct setup *setup, struct spool *spool,
    struct session *s,
    struct conn *client, const char *log_id, const char *client_addr)
{
	struct relay *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	r->loop = loop;
	r->setup = setup_ref(setup);
	r->spool = spool;
	r->session = s;
	r->client = client;
	snprintf(r->id, sizeof(r->id), "%s", log_id);
	snprintf(r->client_addr, sizeof(r->client_addr), "%s", client_addr);
	return r;
}

/* Done with a clean, idle upstream session: back to its pool, or QUIT. */
static void
relay_release_upstream(struct relay *r)
{
	struct pool *p = r->setup->pool[r->up_idx];

	if (p != NULL)
		pool_put(p, r->up, r->reused);
	else
		upstream_quit(r->up);
	r->up = NULL;
	r->reused = false;
}

void
relay_free(struct relay *r, bool quit)
{
	if (r == NULL)
		return;
	if (r->up != NULL) {
		bool idle = upstream_is_ready(r->up) && r->op == OP_NONE &&
		    !r->in_body;

		/* A clean session goes back to its pool (RSET first), or
		 * says QUIT; anything mid-transaction is dropped without the
		 * final dot. */
		if (idle && (r->setup->pool[r->up_idx] != NULL ||
		    (quit && !r->in_tx)))
			relay_release_upstream(r);
		else if (r->op == OP_EOD || r->in_body)
			relay_log_message(r, "aborted", "client went away before "
			    "the end of data", "");
	}
	relay_drop_upstream(r);   /* aborts what is left, ends a lease */
	relay_tx_reset(r);        /* filter, spool writer, recipients */
	setup_unref(r->setup);
	free(r);
}

void
relay_mail(struct relay *r, const char *arg, size_t len, const char *sender)
{
	struct smtp_path path;
	bool on_route = false;

	relay_tx_reset(r);
	snprintf(r->sender, sizeof(r->sender), "%s", sender);
	r->tx_start = ev_now(r->loop);
	r->op = OP_MAIL;
	r->nroute = smtp_path_parse(arg, len, "FROM:", true, &path) == SMTP_OK ?
	    route_for_sender(r->setup->cfg, path.addr, path.addr_len,
	    r->route) : 0;
	if (r->nroute == 0) {
		log_warn("session=%s client=%s from=<%s> refused: no upstream "
		    "is configured for this sender's domain", r->id,
		    r->client_addr, r->sender);
		relay_reply_local(r, "550 5.7.1 No upstream is configured for "
		    "this sender's domain\r\n");
		return;
	}
	for (size_t i = 0; i < r->nroute; i++)
		if (r->up != NULL && r->route[i] == r->up_idx)
			on_route = true;
	if (r->up != NULL && upstream_is_ready(r->up) && on_route) {
		relay_send_path(r, arg, len, true);
		return;
	}
	if (r->up != NULL && upstream_is_ready(r->up))
		relay_release_upstream(r);     /* another account's session */
	if (len > sizeof(r->pending)) {
		relay_reply_local(r, "500 5.5.2 Line too long\r\n");
		return;
	}
	memcpy(r->pending, arg, len);
	r->pending_len = len;
	relay_drop_upstream(r);
	r->try_pos = 0;
	r->fresh_only = false;
	r->failure[0] = '\0';
	relay_open_next(r);
}

static bool
relay_usable(struct relay *r)
{
	if (r->up != NULL && upstream_is_ready(r->up) && !r->tx_broken)
		return true;
	relay_reply_local(r, "451 4.4.2 Upstream connection lost, try again later\r\n");
	return false;
}

void
relay_rcpt(struct relay *r, const char *arg, size_t len)
{
	r->op = OP_RCPT;
	if (r->spooling) {
		struct smtp_path path;
		char **n;

		if (smtp_path_parse(arg, len, "TO:", false, &path) != SMTP_OK ||
		    (n = realloc(r->rcpts, (r->nrcpts + 1) * sizeof(*n))) ==
		    NULL || (n[r->nrcpts] = strndup(path.addr,
		    path.addr_len)) == NULL) {
			relay_reply_local(r, "451 4.3.0 Cannot queue this "
			    "recipient, try again later\r\n");
			return;
		}
		r->rcpts = n;
		r->nrcpts++;
		r->rcpts_ok++;
		relay_reply_local(r, "250 2.1.5 Ok (queued)\r\n");
		return;
	}
	if (relay_usable(r))
		relay_send_path(r, arg, len, false);
}

void
relay_data(struct relay *r)
{
	r->op = OP_DATA;
	if (r->spooling) {
		struct smtp_path path;
		char params[SMTP_LINE_MAX];
		size_t o = 0;

		/* The sender's own parameters, kept for the delivery (which
		 * passes on what its upstream supports). */
		params[0] = '\0';
		if (smtp_path_parse(r->pending, r->pending_len, "FROM:", true,
		    &path) == SMTP_OK)
			for (size_t i = 0; i < path.nparams && o < sizeof(params);
			    i++) {
				const struct smtp_param *p = &path.params[i];
				int k = snprintf(params + o, sizeof(params) - o,
				    "%s%.*s%s%.*s", o ? " " : "", (int)p->key_len,
				    p->key, p->val_len ? "=" : "", (int)p->val_len,
				    p->val);
				if (k < 0)
					break;
				o += (size_t)k;
			}
		r->sw = spool_begin(r->spool, r->sender,
		    (const char *const *)r->rcpts, r->nrcpts, params);
		if (r->sw == NULL) {
			metrics_spool(METRICS_SPOOL_REFUSED);
			log_error("session=%s spool refused the message: %s",
			    r->id, strerror(errno));
			relay_reply_local(r, "451 4.3.1 Upstream unavailable and "
			    "the spool is full, try again later\r\n");
			return;
		}
		dot_init(&r->dot, r->setup->cfg->bare_lf == CFG_BARE_LF_REJECT);
		r->in_body = true;
		r->discard = false;
		r->discard_reply[0] = '\0';
		relay_reply_local(r, "354 End data with <CR><LF>.<CR><LF>\r\n");
		return;
	}
	if (relay_usable(r))
		upstream_send(r->up, "DATA", 4);
}

void
relay_rset(struct relay *r)
{
	r->op = OP_RSET;
	if (r->up != NULL && upstream_is_ready(r->up) && r->in_tx &&
	    !r->spooling) {
		upstream_send(r->up, "RSET", 4);
		return;
	}
	relay_tx_reset(r);
	relay_reply_local(r, "250 2.0.0 Ok\r\n");
}

void
relay_abandon(struct relay *r)
{
	if (r->in_tx)
		relay_drop_upstream(r);
	relay_tx_reset(r);
}

bool
relay_in_transaction(const struct relay *r)
{
	return r->in_tx;
}

/* The end of data was reached: commit upstream, or answer locally. */
static void
relay_body_end(struct relay *r)
{
	char text[256];

	if (!r->discard && r->dot.bare_eols > 0 && r->dot.reject_bare) {
		r->discard = true;
		snprintf(r->discard_reply, sizeof(r->discard_reply),
		    "554 5.6.0 Message contains bare CR or LF (bare_lf = reject)\r\n");
	}
	if (r->discard) {
		relay_drop_upstream(r);
		snprintf(text, sizeof(text), "%.*s", (int)strcspn(
		    r->discard_reply, "\r\n"), r->discard_reply);
		relay_log_message(r, r->discard_reply[0] == '5' ? "rejected" :
		    "deferred", text, "");
		relay_tx_reset(r);
		relay_reply_local(r, r->discard_reply);
		return;
	}
	r->in_body = false;
	if (r->spooling) {
		char id[SPOOL_ID_SIZE], reply[160];
		int rc = spool_commit(r->sw, id, sizeof(id));

		r->sw = NULL;
		if (rc < 0) {
			log_error("session=%s spool commit failed: %s", r->id,
			    strerror(errno));
			relay_log_message(r, "deferred", "spool write failed", "");
			relay_tx_reset(r);
			relay_reply_local(r, "451 4.3.0 Cannot queue the message, "
			    "try again later\r\n");
			return;
		}
		/* Durable (fsync'd, renamed, directory fsync'd): only now 250. */
		metrics_spool(METRICS_SPOOL_SPOOLED);
		relay_log_message(r, "spooled", "queued in the spool", id);
		relay_tx_reset(r);
		snprintf(reply, sizeof(reply), "250 2.0.0 Ok: queued as %s "
		    "(spooled; the upstream is unavailable)\r\n", id);
		relay_reply_local(r, reply);
		return;
	}
	r->op = OP_EOD;
	upstream_end_data(r->up);
}

bool
relay_body(struct relay *r)
{
	char out[RELAY_CHUNK];
	uint64_t max = r->setup->cfg->max_message_size;

	for (;;) {
		size_t inlen, used = 0, outlen = 0, room;
		const char *in = conn_in(r->client, &inlen);
		enum dot_res res;

		if (inlen == 0)
			return false;
		if (r->spooling && !r->discard) {
			room = sizeof(out);
		} else if (r->discard || r->up == NULL) {
			room = sizeof(out);
			if (!r->discard) {
				r->discard = true;
				snprintf(r->discard_reply, sizeof(r->discard_reply),
				    "451 4.4.2 Upstream connection lost, try again later\r\n");
			}
		} else {
			room = upstream_body_room(r->up);
			if (r->hdr != NULL) {
				if (room < RELAY_FILTER_NEED) {
					conn_pause(r->client);
					return false;
				}
				room = RELAY_FILTER_CHUNK;
			}
			if (room > sizeof(out))
				room = sizeof(out);
			if (room < DOT_OUT_RESERVE * 2) {
				conn_pause(r->client);  /* resumed on drain */
				return false;
			}
		}
		res = dot_decode(&r->dot, in, inlen, &used, out, room, &outlen);
		if (!r->discard && max > 0 && r->dot.out_bytes > max) {
			r->discard = true;
			r->oversize = true;
			snprintf(r->discard_reply, sizeof(r->discard_reply),
			    "552 5.3.4 Message size exceeds fixed limit\r\n");
			relay_drop_upstream(r);
		}
		if (!r->discard && r->dot.reject_bare && r->dot.bare_eols > 0) {
			r->discard = true;
			snprintf(r->discard_reply, sizeof(r->discard_reply),
			    "554 5.6.0 Message contains bare CR or LF (bare_lf = reject)\r\n");
			relay_drop_upstream(r);
		}
		if (r->discard)
			;                       /* read on to the end, send nothing */
		else if (r->spooling) {
			if (outlen > 0 && spool_write(r->sw, out, outlen) < 0) {
				metrics_spool(METRICS_SPOOL_REFUSED);
				r->discard = true;
				snprintf(r->discard_reply,
				    sizeof(r->discard_reply), "451 4.3.1 "
				    "Upstream unavailable and the spool is full, "
				    "try again later\r\n");
			}
		} else if (r->hdr != NULL)
			relay_filter_write(r, out, outlen, res == DOT_END);
		else
			upstream_body(r->up, out, outlen);
		conn_consume(r->client, used);
		if (res == DOT_END) {
			relay_body_end(r);
			return true;
		}
	}
}

/* ---- start-up probe -------------------------------------------------- */

struct probe {
	struct setup *setup;
	struct upstream *up;
	size_t idx;
	char id[16];
};

static void
probe_done(struct probe *p)
{
	setup_unref(p->setup);
	free(p);
}

static void
probe_ready(void *arg)
{
	struct probe *p = arg;
	const struct smtp_caps *c = upstream_caps(p->up);

	setup_learn_caps(p->setup, p->idx, c);
	metrics_upstream_attempt(true);
	log_info("probe upstream=\"%s\" ok: authenticated, size=%llu "
	    "smtputf8=%s dsn=%s", upstream_label(p->up),
	    (unsigned long long)c->size, c->smtputf8 ? "yes" : "no",
	    c->dsn ? "yes" : "no");
	upstream_quit(p->up);
	probe_done(p);
}

static void
probe_reply(void *arg, const struct smtp_reply *rep)
{
	(void)arg;
	(void)rep;
}

static void
probe_failed(void *arg, enum upstream_fail kind, bool before_ready,
    const char *why)
{
	struct probe *p = arg;
	const struct cfg_upstream *c = &p->setup->cfg->upstream[p->idx];

	(void)before_ready;
	metrics_upstream_failure(relay_metrics_kind(kind));
	metrics_upstream_attempt(false);
	if (kind == UP_FAIL_AUTH)
		log_error("probe: configuration error: upstream %s rejected the "
		    "credentials of user %s: %s", c->host,
		    c->username ? c->username : "-", why);
	else
		log_warn("probe: upstream %s:%u not usable now (%s): %s",
		    c->host, c->port, upstream_fail_name(kind), why);
	upstream_abort(p->up);
	probe_done(p);
}

static const struct upstream_events probe_events = {
	.ready = probe_ready,
	.reply = probe_reply,
	.failed = probe_failed,
	.drain = NULL,
};

void
relay_probe(struct ev_loop *loop, struct setup *s)
{
	for (size_t i = 0; i < s->cfg->nupstream; i++) {
		struct probe *p = calloc(1, sizeof(*p));
		struct upstream_params prm = setup_upstream_params(s, i, "probe");

		if (p == NULL)
			return;
		p->setup = setup_ref(s);
		p->idx = i;
		p->up = upstream_open(loop, &prm, &probe_events, p);
		if (p->up == NULL)
			probe_done(p);
	}
}
