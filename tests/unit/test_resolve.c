/*
 * test_resolve.c - asynchronous resolution: literals, localhost, cache,
 * cancellation, errors. Every loop is bounded by a timer.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <ev.h>
#include <netinet/in.h>
#include <string.h>

#include "relay25/resolve.h"

struct rtest {
	int calls;
	int err;
	int n_v4, n_v6;
	int port;
	bool saw_127;
	bool saw_v6_loop;
};

static struct ev_loop *loop;
static bool timed_out;

static void
bound_cb(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	timed_out = true;
	ev_break(l, EVBREAK_ALL);
}

/* Run the loop until *done or `secs` passed. */
static void
run_until(int *done, int want, double secs)
{
	ev_timer t;

	timed_out = false;
	ev_now_update(loop);	/* the cached time may be stale */
	ev_timer_init(&t, bound_cb, secs, 0.);
	ev_timer_start(loop, &t);
	while (*done < want && !timed_out)
		ev_run(loop, EVRUN_ONCE);
	ev_timer_stop(loop, &t);
}

static void
on_resolved(void *arg, int err, const struct addrinfo *res)
{
	struct rtest *t = arg;

	t->calls++;
	t->err = err;
	for (; res != NULL; res = res->ai_next) {
		if (res->ai_family == AF_INET) {
			const struct sockaddr_in *sin =
			    (const struct sockaddr_in *)(const void *)res->ai_addr;

			t->n_v4++;
			t->port = ntohs(sin->sin_port);
			if (ntohl(sin->sin_addr.s_addr) == INADDR_LOOPBACK)
				t->saw_127 = true;
		} else if (res->ai_family == AF_INET6) {
			const struct sockaddr_in6 *sin6 =
			    (const struct sockaddr_in6 *)(const void *)res->ai_addr;

			t->n_v6++;
			t->port = ntohs(sin6->sin6_port);
			if (IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr))
				t->saw_v6_loop = true;
		}
	}
}

static void
setup(void)
{
	loop = ev_loop_new(EVFLAG_AUTO);
	cr_assert_not_null(loop);
}

static void
teardown(void)
{
	resolve_flush_cache();
	ev_loop_destroy(loop);
}

TestSuite(resolve, .init = setup, .fini = teardown, .timeout = 20);

Test(resolve, ipv4_literal_is_async)
{
	struct rtest t = { 0 };
	struct resolve_req *r;

	r = resolve_start(loop, "127.0.0.1", "25", on_resolved, &t);
	cr_assert_not_null(r);
	cr_assert_eq(t.calls, 0, "callback ran inside resolve_start");
	run_until(&t.calls, 1, 5);
	cr_assert_eq(t.calls, 1);
	cr_assert_eq(t.err, 0, "%s", gai_strerror(t.err));
	cr_assert(t.saw_127);
	cr_assert_eq(t.port, 25);
	cr_assert_eq(t.n_v6, 0);
}

Test(resolve, ipv6_literal)
{
	struct rtest t = { 0 };

	cr_assert_not_null(resolve_start(loop, "::1", "587", on_resolved, &t));
	cr_assert_eq(t.calls, 0);
	run_until(&t.calls, 1, 5);
	cr_assert_eq(t.calls, 1);
	cr_assert_eq(t.err, 0, "%s", gai_strerror(t.err));
	cr_assert(t.saw_v6_loop);
	cr_assert_eq(t.port, 587);
}

Test(resolve, localhost)
{
	struct rtest t = { 0 };

	cr_assert_not_null(resolve_start(loop, "localhost", "465", on_resolved,
	    &t));
	cr_assert_eq(t.calls, 0);
	run_until(&t.calls, 1, 5);
	cr_assert_eq(t.calls, 1);
	cr_assert_eq(t.err, 0, "%s", gai_strerror(t.err));
	cr_assert(t.saw_127 || t.saw_v6_loop);
	cr_assert_eq(t.port, 465);
}

Test(resolve, loop_exits_when_done)
{
	struct rtest t = { 0 };

	/* No bounding timer: the pending request alone keeps the loop
	 * running, and an idle resolver does not keep it alive. */
	cr_assert_not_null(resolve_start(loop, "127.0.0.1", "25", on_resolved,
	    &t));
	ev_run(loop, 0);
	cr_assert_eq(t.calls, 1);
	ev_run(loop, 0);	/* returns at once */
}

Test(resolve, cache_hit_is_async_and_counted)
{
	struct rtest a = { 0 }, b = { 0 }, c = { 0 };
	unsigned long hits = resolve_cache_hits();

	cr_assert_not_null(resolve_start(loop, "localhost", "25", on_resolved,
	    &a));
	run_until(&a.calls, 1, 5);
	cr_assert_eq(a.calls, 1);
	cr_assert_eq(a.err, 0);
	cr_assert_eq(resolve_cache_hits(), hits);

	cr_assert_not_null(resolve_start(loop, "LOCALHOST", "25", on_resolved,
	    &b));
	cr_assert_eq(b.calls, 0, "cache hit answered synchronously");
	cr_assert_eq(resolve_cache_hits(), hits + 1);
	run_until(&b.calls, 1, 5);
	cr_assert_eq(b.calls, 1);
	cr_assert_eq(b.err, 0);
	cr_assert_eq(b.n_v4, a.n_v4);
	cr_assert_eq(b.n_v6, a.n_v6);

	/* Another port is another key; a flush empties the cache. */
	resolve_flush_cache();
	cr_assert_not_null(resolve_start(loop, "localhost", "25", on_resolved,
	    &c));
	cr_assert_eq(resolve_cache_hits(), hits + 1);
	run_until(&c.calls, 1, 5);
	cr_assert_eq(c.calls, 1);
}

static void
idle_break(struct ev_loop *l, ev_timer *w, int revents)
{
	int *fired = w->data;

	(void)revents;
	(*fired)++;
	ev_break(l, EVBREAK_ALL);
}

/* Run the loop for `secs` regardless. */
static void
run_for(double secs)
{
	ev_timer t;
	int fired = 0;

	ev_now_update(loop);
	ev_timer_init(&t, idle_break, secs, 0.);
	t.data = &fired;
	ev_timer_start(loop, &t);
	while (!fired)
		ev_run(loop, EVRUN_ONCE);
	ev_timer_stop(loop, &t);
}

Test(resolve, cancel_before_completion)
{
	struct rtest t = { 0 }, hit = { 0 }, warm = { 0 };
	struct resolve_req *r;

	r = resolve_start(loop, "127.0.0.1", "25", on_resolved, &t);
	cr_assert_not_null(r);
	resolve_cancel(r);
	run_for(0.3);	/* the worker finishes; memory must be freed (LSan) */
	cr_assert_eq(t.calls, 0);

	/* Cancelling a cache hit too. */
	cr_assert_not_null(resolve_start(loop, "127.0.0.1", "25", on_resolved,
	    &warm));
	run_until(&warm.calls, 1, 5);
	r = resolve_start(loop, "127.0.0.1", "25", on_resolved, &hit);
	resolve_cancel(r);
	run_for(0.1);
	cr_assert_eq(hit.calls, 0);

	/* A cancelled request does not keep the loop alive. */
	r = resolve_start(loop, "127.0.0.1", "25", on_resolved, &hit);
	resolve_cancel(r);
	ev_run(loop, 0);
	cr_assert_eq(hit.calls, 0);
	run_for(0.2);
}

struct pair {
	struct resolve_req *other;
	struct rtest t;
	struct rtest *other_t;
};

static void
on_first(void *arg, int err, const struct addrinfo *res)
{
	struct pair *p = arg;

	on_resolved(&p->t, err, res);
	resolve_cancel(p->other);
}

Test(resolve, cancel_from_another_callback)
{
	struct pair p = { 0 };
	struct rtest second = { 0 };

	cr_assert_not_null(resolve_start(loop, "127.0.0.1", "25", on_resolved,
	    &second));
	run_until(&second.calls, 1, 5);	/* warm the cache: both are hits */
	second.calls = 0;
	cr_assert_not_null(resolve_start(loop, "127.0.0.1", "25", on_first, &p));
	p.other = resolve_start(loop, "127.0.0.1", "25", on_resolved, &second);
	run_until(&p.t.calls, 1, 5);
	run_for(0.1);
	cr_assert_eq(p.t.calls, 1);
	cr_assert_eq(second.calls, 0);
}

Test(resolve, error_is_reported)
{
	struct rtest t = { 0 };

	cr_assert_not_null(resolve_start(loop, "127.0.0.1",
	    "no-such-service-relay25", on_resolved, &t));
	run_until(&t.calls, 1, 5);
	cr_assert_eq(t.calls, 1);
	cr_assert_neq(t.err, 0);
	cr_assert_eq(t.n_v4 + t.n_v6, 0);
}

Test(resolve, many_parallel)
{
	struct rtest t[16];

	memset(t, 0, sizeof(t));
	for (int i = 0; i < 16; i++)
		cr_assert_not_null(resolve_start(loop, i % 2 ? "::1" :
		    "127.0.0.1", i % 3 ? "25" : "587", on_resolved, &t[i]));
	for (int i = 0; i < 16; i++) {
		run_until(&t[i].calls, 1, 5);
		cr_assert_eq(t[i].calls, 1);
		cr_assert_eq(t[i].err, 0);
	}
}
