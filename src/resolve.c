/*
 * resolve.c - getaddrinfo() off the event loop, with a small answer cache.
 *
 * Each request runs getaddrinfo() on its own detached thread (signals
 * blocked there). The finished request is queued under a mutex and the loop
 * is woken through an ev_async; callbacks run from that async callback, so
 * never inside resolve_start(). Cache hits take the same queue.
 *
 * The async watcher does not keep the loop alive by itself; every pending,
 * not cancelled request holds one loop reference.
 *
 * State is per thread: one loop per thread.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "relay25/resolve.h"

#define RESOLVE_CACHE_MAX 32
#define RESOLVE_CACHE_TTL 60.0	/* seconds */

struct resolve_state;

struct resolve_req {
	struct resolve_req *next;	/* done queue */
	struct resolve_state *st;
	resolve_cb *cb;
	void *arg;
	char *host;
	char *port;
	int err;
	struct addrinfo *res;
	bool res_is_copy;	/* res from the cache (ours) or getaddrinfo */
	bool from_cache;
	bool addrconfig;
	bool cancelled;		/* loop thread only */
	bool holds_ref;		/* loop thread only */
};

struct resolve_cache_entry {
	char *host;
	char *port;
	struct addrinfo *ai;	/* our copy */
	ev_tstamp expires;
};

struct resolve_state {
	struct ev_loop *loop;
	ev_async async;
	bool mu_ready;
	pthread_mutex_t mu;
	struct resolve_req *done_head;	/* under mu */
	struct resolve_req **done_tail;	/* under mu */
	unsigned live;			/* requests holding a loop ref */
	unsigned long hits;
	struct resolve_cache_entry cache[RESOLVE_CACHE_MAX];
};

static _Thread_local struct resolve_state rs;

/* ---- addrinfo copies (one block per node) ----------------------------- */

static void
resolve_ai_free(struct addrinfo *ai)
{
	while (ai != NULL) {
		struct addrinfo *next = ai->ai_next;

		free(ai);
		ai = next;
	}
}

static struct addrinfo *
resolve_ai_copy(const struct addrinfo *src)
{
	struct addrinfo *head = NULL, **tail = &head;

	for (; src != NULL; src = src->ai_next) {
		size_t clen = src->ai_canonname ? strlen(src->ai_canonname) + 1 : 0;
		struct addrinfo *n;
		char *p;

		if ((n = malloc(sizeof(*n) + src->ai_addrlen + clen)) == NULL) {
			resolve_ai_free(head);
			return NULL;
		}
		*n = *src;
		p = (char *)(n + 1);
		n->ai_addr = (struct sockaddr *)(void *)p;
		memcpy(p, src->ai_addr, src->ai_addrlen);
		n->ai_canonname = NULL;
		if (clen) {
			n->ai_canonname = p + src->ai_addrlen;
			memcpy(n->ai_canonname, src->ai_canonname, clen);
		}
		n->ai_next = NULL;
		*tail = n;
		tail = &n->ai_next;
	}
	return head;
}

/* ---- cache ------------------------------------------------------------ */

static void
resolve_cache_drop(struct resolve_cache_entry *e)
{
	free(e->host);
	free(e->port);
	resolve_ai_free(e->ai);
	memset(e, 0, sizeof(*e));
}

static struct resolve_cache_entry *
resolve_cache_find(const char *host, const char *port, ev_tstamp now)
{
	for (size_t i = 0; i < RESOLVE_CACHE_MAX; i++) {
		struct resolve_cache_entry *e = &rs.cache[i];

		if (e->host == NULL)
			continue;
		if (e->expires <= now) {
			resolve_cache_drop(e);
			continue;
		}
		if (strcasecmp(e->host, host) == 0 && strcmp(e->port, port) == 0)
			return e;
	}
	return NULL;
}

static void
resolve_cache_put(const char *host, const char *port,
    const struct addrinfo *ai, ev_tstamp now)
{
	struct resolve_cache_entry *victim;

	/* Same key, else a free slot (expired ones were just dropped), else
	 * the entry closest to expiry. */
	if ((victim = resolve_cache_find(host, port, now)) == NULL) {
		for (size_t i = 0; victim == NULL && i < RESOLVE_CACHE_MAX; i++)
			if (rs.cache[i].host == NULL)
				victim = &rs.cache[i];
	}
	if (victim == NULL) {
		victim = &rs.cache[0];
		for (size_t i = 1; i < RESOLVE_CACHE_MAX; i++)
			if (rs.cache[i].expires < victim->expires)
				victim = &rs.cache[i];
	}
	resolve_cache_drop(victim);
	victim->host = strdup(host);
	victim->port = strdup(port);
	victim->ai = resolve_ai_copy(ai);
	victim->expires = now + RESOLVE_CACHE_TTL;
	if (victim->host == NULL || victim->port == NULL || victim->ai == NULL)
		resolve_cache_drop(victim);
}

void
resolve_flush_cache(void)
{
	for (size_t i = 0; i < RESOLVE_CACHE_MAX; i++)
		resolve_cache_drop(&rs.cache[i]);
}

unsigned long
resolve_cache_hits(void)
{
	return rs.hits;
}

/* ---- requests --------------------------------------------------------- */

static void
resolve_req_free(struct resolve_req *r)
{
	if (r->res != NULL) {
		if (r->res_is_copy)
			resolve_ai_free(r->res);
		else
			freeaddrinfo(r->res);
	}
	free(r);
}

static void
resolve_drop_ref(struct resolve_req *r)
{
	if (!r->holds_ref)
		return;
	r->holds_ref = false;
	if (--rs.live == 0)
		ev_unref(rs.loop);
}

/* Any thread: hand a finished request to the loop. */
static void
resolve_done(struct resolve_req *r)
{
	struct resolve_state *st = r->st;

	pthread_mutex_lock(&st->mu);
	r->next = NULL;
	*st->done_tail = r;
	st->done_tail = &r->next;
	pthread_mutex_unlock(&st->mu);
	ev_async_send(st->loop, &st->async);
}

static void
resolve_async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct resolve_req *r, *next;

	(void)w;
	(void)revents;
	pthread_mutex_lock(&rs.mu);
	r = rs.done_head;
	rs.done_head = NULL;
	rs.done_tail = &rs.done_head;
	pthread_mutex_unlock(&rs.mu);

	for (; r != NULL; r = next) {
		next = r->next;
		/* Checked here, one by one: an earlier callback may cancel. */
		if (!r->cancelled) {
			if (r->err == 0 && !r->from_cache && r->res != NULL)
				resolve_cache_put(r->host, r->port, r->res,
				    ev_now(loop));
			resolve_drop_ref(r);
			r->cb(r->arg, r->err, r->err == 0 ? r->res : NULL);
		}
		resolve_req_free(r);
	}
}

static void *
resolve_worker(void *p)
{
	struct resolve_req *r = p;
	struct addrinfo hints;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	hints.ai_flags = r->addrconfig ? AI_ADDRCONFIG : 0;
	r->res = NULL;
	r->err = getaddrinfo(r->host, r->port, &hints, &r->res);
	if (r->err != 0)
		r->res = NULL;
	resolve_done(r);
	return NULL;
}

/* Literals and localhost must resolve even without non-loopback
 * addresses (tests in network namespaces): no AI_ADDRCONFIG for them. */
static bool
resolve_wants_addrconfig(const char *host)
{
	unsigned char buf[sizeof(struct in6_addr)];
	size_t n = strlen(host);

	if (inet_pton(AF_INET, host, buf) == 1 ||
	    inet_pton(AF_INET6, host, buf) == 1)
		return false;
	if (strcasecmp(host, "localhost") == 0 ||
	    (n > 10 && strcasecmp(host + n - 10, ".localhost") == 0))
		return false;
	return true;
}

static void
resolve_bind(struct ev_loop *loop)
{
	if (!rs.mu_ready) {
		pthread_mutex_init(&rs.mu, NULL);
		rs.done_tail = &rs.done_head;
		rs.mu_ready = true;
	}
	if (rs.loop == loop)
		return;
	rs.loop = loop;
	rs.live = 0;
	ev_async_init(&rs.async, resolve_async_cb);
	ev_async_start(loop, &rs.async);
	ev_unref(loop);
}

struct resolve_req *
resolve_start(struct ev_loop *loop, const char *host, const char *port,
    resolve_cb *cb, void *arg)
{
	struct resolve_cache_entry *e;
	struct resolve_req *r;
	size_t hl = strlen(host) + 1, pl = strlen(port) + 1;
	pthread_attr_t attr;
	pthread_t tid;
	sigset_t all, old;
	int rc;

	resolve_bind(loop);
	if ((r = calloc(1, sizeof(*r) + hl + pl)) == NULL)
		return NULL;
	r->st = &rs;
	r->cb = cb;
	r->arg = arg;
	r->host = (char *)(r + 1);
	r->port = r->host + hl;
	memcpy(r->host, host, hl);
	memcpy(r->port, port, pl);
	r->addrconfig = resolve_wants_addrconfig(host);
	r->holds_ref = true;
	if (rs.live++ == 0)
		ev_ref(loop);

	if ((e = resolve_cache_find(host, port, ev_now(loop))) != NULL &&
	    (r->res = resolve_ai_copy(e->ai)) != NULL) {
		r->res_is_copy = true;
		r->from_cache = true;
		rs.hits++;
		resolve_done(r);
		return r;
	}

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_attr_init(&attr);
	if (rc == 0) {
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		rc = pthread_create(&tid, &attr, resolve_worker, r);
		pthread_attr_destroy(&attr);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		/* No thread: report a temporary failure, still via the loop. */
		r->err = EAI_AGAIN;
		resolve_done(r);
	}
	return r;
}

void
resolve_cancel(struct resolve_req *r)
{
	if (r == NULL || r->cancelled)
		return;
	r->cancelled = true;
	resolve_drop_ref(r);
}
