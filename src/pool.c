/*
 * pool.c - warm upstream sessions for one upstream (see pool.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <ev.h>

#include "relay25/log.h"
#include "relay25/metrics.h"
#include "relay25/pool.h"
#include "relay25/setup.h"
#include "relay25/upstream.h"

#define POOL_TICK 1.0
#define POOL_BACKOFF_MIN 1.0
#define POOL_BACKOFF_MAX 60.0

enum entry_state { E_OPENING, E_RESETTING, E_IDLE };

struct entry {
	struct entry *next;
	struct pool *pool;
	struct upstream *up;
	enum entry_state state;
	ev_tstamp since;              /* idle since */
};

struct pool {
	struct ev_loop *loop;
	struct setup *setup;          /* owner; not referenced */
	size_t idx;
	struct entry *entries;
	unsigned nidle, nopening, nresetting;
	unsigned nleased;             /* taken and not yet back */
	ev_timer tick;
	ev_tstamp last_demand;
	ev_tstamp next_attempt;
	double backoff;
	char id[16];
};

static const struct upstream_events pool_events;
static void pool_refill(struct pool *);
static void pool_count_idle(int);

static const struct cfg_upstream *
pool_cfg(const struct pool *p)
{
	return &p->setup->cfg->upstream[p->idx];
}

static void
entry_unlink(struct entry *e)
{
	struct pool *p = e->pool;

	for (struct entry **pp = &p->entries; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == e) {
			*pp = e->next;
			break;
		}
	}
	switch (e->state) {
	case E_OPENING: p->nopening--; break;
	case E_RESETTING: p->nresetting--; break;
	case E_IDLE: p->nidle--; pool_count_idle(-1); break;
	}
}

static void
entry_retire(struct entry *e, bool quit)
{
	entry_unlink(e);
	if (quit)
		upstream_quit(e->up);
	else
		upstream_abort(e->up);
	free(e);
}

/* Idle sessions of every pool in this process, for /metrics. */
static unsigned pool_idle_total;

static void
pool_count_idle(int delta)
{
	pool_idle_total = (unsigned)((int)pool_idle_total + delta);
	metrics_pool_size(pool_idle_total);
}

static void
entry_set(struct entry *e, enum entry_state st)
{
	struct pool *p = e->pool;

	switch (e->state) {
	case E_OPENING: p->nopening--; break;
	case E_RESETTING: p->nresetting--; break;
	case E_IDLE: p->nidle--; pool_count_idle(-1); break;
	}
	e->state = st;
	switch (st) {
	case E_OPENING: p->nopening++; break;
	case E_RESETTING: p->nresetting++; break;
	case E_IDLE: p->nidle++; pool_count_idle(1);
		e->since = ev_now(p->loop); break;
	}
}

static void
pool_ev_ready(void *arg)
{
	struct entry *e = arg;
	struct pool *p = e->pool;

	setup_learn_caps(p->setup, p->idx, upstream_caps(e->up));
	p->backoff = 0;
	entry_set(e, E_IDLE);
	log_debug("pool=%s upstream=\"%s\" session ready (%u idle)", p->id,
	    upstream_label(e->up), p->nidle);
	pool_refill(p);          /* the next one at once, not at the next tick */
}

static void
pool_ev_reply(void *arg, const struct smtp_reply *r)
{
	struct entry *e = arg;

	if (e->state == E_RESETTING && r->code == 250) {
		entry_set(e, E_IDLE);
		return;
	}
	entry_retire(e, r->code != 421);
}

static void
pool_ev_failed(void *arg, enum upstream_fail kind, bool before_ready,
    const char *why)
{
	struct entry *e = arg;
	struct pool *p = e->pool;

	if (before_ready) {
		p->backoff = p->backoff == 0 ? POOL_BACKOFF_MIN :
		    p->backoff * 2 > POOL_BACKOFF_MAX ? POOL_BACKOFF_MAX :
		    p->backoff * 2;
		p->next_attempt = ev_now(p->loop) + p->backoff;
		log_warn("pool=%s upstream %s:%u: cannot open a session (%s): "
		    "%s; next try in %.0fs", p->id, pool_cfg(p)->host,
		    pool_cfg(p)->port, upstream_fail_name(kind), why,
		    p->backoff);
	} else
		log_debug("pool=%s idle session lost (%s): %s", p->id,
		    upstream_fail_name(kind), why);
	entry_retire(e, false);
}

static const struct upstream_events pool_events = {
	.ready = pool_ev_ready,
	.reply = pool_ev_reply,
	.failed = pool_ev_failed,
	.drain = NULL,
	.step = NULL,
};

static bool
pool_wanted(const struct pool *p)
{
	const struct cfg *cfg = p->setup->cfg;

	return ev_now(p->loop) - p->last_demand < cfg->upstream[p->idx]
	    .pool_idle_timeout;
}

/* One connection attempt at a time; back off after failures. */
static void
pool_refill(struct pool *p)
{
	const struct cfg_upstream *u = pool_cfg(p);
	struct entry *e;

	if (!pool_wanted(p) || p->nopening > 0 ||
	    p->nidle + p->nresetting + p->nleased >= u->pool_size ||
	    ev_now(p->loop) < p->next_attempt)
		return;
	if ((e = calloc(1, sizeof(*e))) == NULL)
		return;
	struct upstream_params prm = setup_upstream_params(p->setup, p->idx,
	    p->id);
	e->pool = p;
	e->state = E_OPENING;
	e->up = upstream_open(p->loop, &prm, &pool_events, e);
	if (e->up == NULL) {
		free(e);
		return;
	}
	p->nopening++;
	e->next = p->entries;
	p->entries = e;
}

/* Retire what sat idle too long; refill. */
static void
pool_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct pool *p = w->data;
	const struct cfg_upstream *u = pool_cfg(p);
	ev_tstamp now = ev_now(loop);
	struct entry *e, *next;

	(void)revents;
	for (e = p->entries; e != NULL; e = next) {
		next = e->next;
		if (e->state == E_IDLE && now - e->since >= u->pool_idle_timeout)
			entry_retire(e, true);
	}
	pool_refill(p);
}

struct pool *
pool_new(struct ev_loop *loop, struct setup *s, size_t idx)
{
	struct pool *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return NULL;
	p->loop = loop;
	p->setup = s;
	p->idx = idx;
	snprintf(p->id, sizeof(p->id), "pool%zu", idx);
	p->last_demand = ev_now(loop);     /* warm at start-up */
	ev_timer_init(&p->tick, pool_tick, POOL_TICK, POOL_TICK);
	p->tick.data = p;
	ev_timer_start(loop, &p->tick);
	ev_unref(loop);                    /* the pool keeps no loop alive */
	pool_refill(p);
	return p;
}

void
pool_free(struct pool *p)
{
	if (p == NULL)
		return;
	ev_ref(p->loop);
	ev_timer_stop(p->loop, &p->tick);
	while (p->entries != NULL)
		entry_retire(p->entries, p->entries->state == E_IDLE);
	free(p);
}

struct upstream *
pool_take(struct pool *p, const struct upstream_events *ev, void *arg,
    double *idle)
{
	struct entry *best = NULL;

	if (p == NULL)
		return NULL;
	p->last_demand = ev_now(p->loop);
	/* The most recently used: the others may then age out. */
	for (struct entry *e = p->entries; e != NULL; e = e->next)
		if (e->state == E_IDLE && (best == NULL || e->since > best->since))
			best = e;
	if (best == NULL) {
		pool_refill(p);
		return NULL;
	}
	struct upstream *up = best->up;
	*idle = ev_now(p->loop) - best->since;
	entry_unlink(best);
	free(best);
	p->nleased++;
	upstream_rebind(up, ev, arg);
	return up;
}

void
pool_release(struct pool *p)
{
	if (p != NULL && p->nleased > 0) {
		p->nleased--;
		pool_refill(p);
	}
}

void
pool_put(struct pool *p, struct upstream *up, bool leased)
{
	const struct cfg_upstream *u = pool_cfg(p);
	struct entry *e;

	if (leased && p->nleased > 0)
		p->nleased--;
	if (!upstream_is_ready(up) ||
	    upstream_messages(up) >= u->pool_max_messages ||
	    p->nidle + p->nresetting + p->nopening + p->nleased >=
	    u->pool_size || (e = calloc(1, sizeof(*e))) == NULL) {
		upstream_quit(up);
		pool_refill(p);
		return;
	}
	e->pool = p;
	e->up = up;
	e->state = E_RESETTING;
	p->nresetting++;
	e->next = p->entries;
	p->entries = e;
	upstream_rebind(up, &pool_events, e);
	upstream_send(up, "RSET", 4);
}

size_t
pool_idle(const struct pool *p)
{
	return p ? p->nidle : 0;
}
