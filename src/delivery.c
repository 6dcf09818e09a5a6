/*
 * delivery.c - deliver spooled messages in the background (delivery.h).
 * A small SMTP transaction driver on top of the upstream leg: the reply
 * to each command picks the next step.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <ev.h>

#include "relay25/delivery.h"
#include "relay25/envelope.h"
#include "relay25/headers.h"
#include "relay25/listener.h"
#include "relay25/log.h"
#include "relay25/metrics.h"
#include "relay25/pool.h"
#include "relay25/route.h"
#include "relay25/setup.h"
#include "relay25/spool.h"
#include "relay25/upstream.h"

#define DLV_CHUNK 8192
#define DLV_NEED (2 * (DLV_CHUNK + HDR_OUT_RESERVE))

enum dlv_state { D_CONNECT, D_MAIL, D_RCPT, D_DATA, D_BODY, D_EOD };

struct delivery {
	struct ev_loop *loop;
	struct spool *spool;
	struct spool_item *item;
	const struct spool_envelope *env;
	struct setup *setup;
	size_t route[CFG_MAX_UPSTREAMS], nroute, pos, up_idx;
	struct upstream *up;
	bool reused;
	enum dlv_state state;
	size_t rcpt;                  /* next recipient to send */
	unsigned accepted;
	bool temp_rcpt;               /* a recipient got 4xx */
	int fd;                       /* body, or -1 */
	struct hdr_filter *hdr;
	char failure[SPOOL_REASON_MAX];
};

static const struct upstream_events dlv_events;
static void dlv_open_next(struct delivery *);
static void dlv_body(struct delivery *);

static void
dlv_free(struct delivery *d)
{
	if (d->up != NULL) {
		upstream_abort(d->up);
		if (d->reused)
			pool_release(d->setup->pool[d->up_idx]);
	}
	if (d->fd >= 0)
		close(d->fd);
	free(d->hdr);
	setup_unref(d->setup);
	free(d);
}

static void
dlv_log(struct delivery *d, const char *status, const char *reply)
{
	char shown[300];

	log_info("spool=%s status=%s from=<%s> rcpts=%u upstream=\"%s\" "
	    "reply=\"%s\" attempts=%u", d->env->id, status, d->env->sender,
	    d->accepted, d->up ? upstream_label(d->up) : "-",
	    log_sanitize(shown, sizeof(shown), reply, strlen(reply)),
	    d->env->attempts + 1);
}

/* Try later (4xx, connection trouble): back-off is the spool's. */
static void
dlv_retry(struct delivery *d, const char *why)
{
	dlv_log(d, "deferred", why);
	metrics_spool(METRICS_SPOOL_RETRIED);
	spool_retry(d->spool, d->item, why);
	dlv_free(d);
}

/* A permanent refusal: the message moves to failed/ with the reply. */
static void
dlv_fail(struct delivery *d, const char *reply)
{
	dlv_log(d, "failed", reply);
	metrics_spool(METRICS_SPOOL_FAILED);
	spool_fail(d->spool, d->item, reply);
	dlv_free(d);
}

/* The session is clean again (after the end of data): back to the pool,
 * or QUIT. */
static void
dlv_release_upstream(struct delivery *d)
{
	struct pool *p = d->setup->pool[d->up_idx];

	if (p != NULL)
		pool_put(p, d->up, d->reused);
	else
		upstream_quit(d->up);
	d->up = NULL;
	d->reused = false;
}

static void
dlv_send_path(struct delivery *d, const char *addr, bool is_mail)
{
	char arg[SMTP_LINE_MAX], line[SMTP_LINE_MAX + 64];
	struct smtp_path path;
	const char *rw = d->setup->cfg->upstream[d->up_idx].rewrite_sender;
	size_t n = 0;
	int k;

	k = snprintf(arg, sizeof(arg), "%s<%s>%s%s", is_mail ? "FROM:" : "TO:",
	    addr, is_mail && d->env->params[0] ? " " : "",
	    is_mail ? d->env->params : "");
	if (k > 0 && (size_t)k < sizeof(arg) && smtp_path_parse(arg,
	    (size_t)k, is_mail ? "FROM:" : "TO:", is_mail, &path) == SMTP_OK) {
		if (is_mail && rw != NULL && path.addr_len > 0) {
			path.addr = rw;
			path.addr_len = strlen(rw);
		}
		n = envelope_line(&path, is_mail, upstream_caps(d->up), line,
		    sizeof(line));
	}
	if (n == 0) {
		dlv_fail(d, "554 5.5.4 the spooled envelope cannot be sent");
		return;
	}
	upstream_send(d->up, line, n);
}

static void
dlv_ready(void *arg)
{
	struct delivery *d = arg;

	setup_learn_caps(d->setup, d->up_idx, upstream_caps(d->up));
	d->state = D_MAIL;
	dlv_send_path(d, d->env->sender, true);
}

static void
dlv_next_rcpt(struct delivery *d)
{
	while (d->rcpt < d->env->nrcpt) {
		d->state = D_RCPT;
		dlv_send_path(d, d->env->rcpts[d->rcpt++], false);
		return;
	}
	if (d->temp_rcpt) {
		/* Before DATA nothing was delivered: all of it later. */
		dlv_retry(d, d->failure);
		return;
	}
	if (d->accepted == 0) {
		dlv_fail(d, d->failure);
		return;
	}
	d->state = D_DATA;
	upstream_send(d->up, "DATA", 4);
}

static void
dlv_reply(void *arg, const struct smtp_reply *r)
{
	struct delivery *d = arg;
	char sum[SPOOL_REASON_MAX], qid[128] = "";

	smtp_reply_summary(r, sum, sizeof(sum));
	switch (d->state) {
	case D_MAIL:
		if (r->code >= 200 && r->code < 300) {
			dlv_next_rcpt(d);
			return;
		}
		break;
	case D_RCPT:
		if (r->code >= 200 && r->code < 300)
			d->accepted++;
		else {
			log_warn("spool=%s recipient <%s> refused: %s",
			    d->env->id, d->env->rcpts[d->rcpt - 1], sum);
			if (r->code < 500)
				d->temp_rcpt = true;
			snprintf(d->failure, sizeof(d->failure), "%s", sum);
		}
		dlv_next_rcpt(d);
		return;
	case D_DATA:
		if (r->code == 354) {
			d->fd = spool_item_open_body(d->item);
			if (d->fd < 0) {
				dlv_retry(d, "cannot open the spooled body");
				return;
			}
			d->hdr = setup_new_filter(d->setup, d->up_idx);
			d->state = D_BODY;
			dlv_body(d);
			return;
		}
		break;
	case D_EOD:
		if (r->code >= 200 && r->code < 300) {
			smtp_reply_queue_id(r, qid, sizeof(qid));
			dlv_log(d, "sent", sum);
			metrics_spool(METRICS_SPOOL_DELIVERED);
			spool_done(d->spool, d->item);
			dlv_release_upstream(d);
			dlv_free(d);
			return;
		}
		break;
	default:
		break;
	}
	if (r->code >= 500)
		dlv_fail(d, sum);
	else
		dlv_retry(d, sum);
}

static void
dlv_failed(void *arg, enum upstream_fail kind, bool before_ready,
    const char *why)
{
	struct delivery *d = arg;
	bool was_reused = d->reused;

	snprintf(d->failure, sizeof(d->failure), "%s: %s",
	    upstream_fail_name(kind), why);
	upstream_abort(d->up);
	d->up = NULL;
	if (d->reused)
		pool_release(d->setup->pool[d->up_idx]);
	d->reused = false;
	if (before_ready || (was_reused && d->state == D_MAIL)) {
		if (was_reused)
			d->pos--;          /* the same upstream, fresh */
		dlv_open_next(d);
		return;
	}
	dlv_retry(d, d->failure);
}

/* Stream the body from the spool file while the upstream takes it. */
static void
dlv_body(struct delivery *d)
{
	char buf[DLV_CHUNK], out[DLV_CHUNK + HDR_OUT_RESERVE];

	while (d->state == D_BODY && d->up != NULL) {
		size_t room = upstream_body_room(d->up);
		ssize_t n;

		if (room < DLV_NEED)
			return;                       /* resumed on drain */
		n = read(d->fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			dlv_retry(d, "cannot read the spooled body");
			return;
		}
		if (d->hdr == NULL) {
			if (n > 0)
				upstream_body(d->up, buf, (size_t)n);
		} else {
			size_t off = 0;
			while (off < (size_t)n) {
				size_t used = 0, o = 0;
				hdr_filter_feed(d->hdr, buf + off, (size_t)n - off,
				    &used, out, sizeof(out), &o);
				upstream_body(d->up, out, o);
				off += used;
			}
			if (n == 0) {
				size_t o = 0;
				hdr_filter_finish(d->hdr, out, sizeof(out), &o);
				upstream_body(d->up, out, o);
			}
		}
		if (n == 0) {
			d->state = D_EOD;
			upstream_end_data(d->up);
			return;
		}
	}
}

static void
dlv_drain(void *arg)
{
	dlv_body(arg);
}

static const struct upstream_events dlv_events = {
	.ready = dlv_ready,
	.reply = dlv_reply,
	.failed = dlv_failed,
	.drain = dlv_drain,
	.step = NULL,
};

static void
dlv_open_next(struct delivery *d)
{

	while (d->pos < d->nroute) {
		size_t i = d->route[d->pos++];
		double idle;

		d->up_idx = i;
		d->state = D_CONNECT;
		if ((d->up = pool_take(d->setup->pool[i], &dlv_events, d,
		    &idle)) != NULL) {
			d->reused = true;
			dlv_ready(d);
			return;
		}
		struct upstream_params p = setup_upstream_params(d->setup, i,
		    d->env->id);

		if ((d->up = upstream_open(d->loop, &p, &dlv_events, d)) != NULL)
			return;
	}
	dlv_retry(d, d->failure[0] ? d->failure : "no upstream available");
}

static void
dlv_start(struct server *srv, struct spool *sp, struct spool_item *item)
{
	struct delivery *d = calloc(1, sizeof(*d));

	if (d == NULL) {
		spool_release(sp, item);
		return;
	}
	d->loop = server_loop(srv);
	d->spool = sp;
	d->item = item;
	d->env = spool_item_envelope(item);
	d->setup = setup_ref(server_setup(srv));
	d->fd = -1;
	d->nroute = route_for_sender(d->setup->cfg, d->env->sender,
	    strlen(d->env->sender), d->route);
	if (d->nroute == 0) {
		dlv_fail(d, "550 5.7.1 no upstream is configured for this "
		    "sender's domain");
		return;
	}
	log_debug("spool=%s delivering (attempt %u, %zu recipient(s))",
	    d->env->id, d->env->attempts + 1, d->env->nrcpt);
	dlv_open_next(d);
}

void
delivery_kick(void *arg)
{
	struct server *srv = arg;
	struct spool *sp = server_spool(srv);
	struct spool_item *item;

	while (sp != NULL && (item = spool_next_due(sp)) != NULL)
		dlv_start(srv, sp, item);
}
