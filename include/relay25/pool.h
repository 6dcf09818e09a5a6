/*
 * pool.h - warm upstream sessions: connected, TLS'd, EHLO'd and
 * authenticated, ready for a MAIL at once.
 *
 * One pool per upstream per setup (the setup owns it). A pool keeps up to
 * pool_size idle sessions while there is demand (a take within
 * pool_idle_timeout, or start-up), refills in the background with at most
 * one connection attempt in flight and exponential back-off after
 * failures, and retires a session after pool_max_messages messages, after
 * pool_idle_timeout idle, on a 421 or on any error. Only sessions whose
 * last transaction ended cleanly come back (pool_put sends RSET first and
 * keeps the session only on 250).
 */
#ifndef RELAY25_POOL_H
#define RELAY25_POOL_H

#include <stdbool.h>
#include <stddef.h>

struct ev_loop;
struct pool;
struct setup;
struct upstream;
struct upstream_events;

/* setup->cfg->upstream[idx] with pool_size > 0; starts filling at once. */
struct pool *pool_new(struct ev_loop *, struct setup *, size_t idx);
/* Close every idle session (QUIT) and stop refilling. */
void pool_free(struct pool *);

/* Take an idle, ready session and hand it to (ev, arg); NULL if none.
 * *idle is how long it sat unused (the caller probes it with NOOP when
 * that is long). */
struct upstream *pool_take(struct pool *, const struct upstream_events *,
    void *arg, double *idle);
/* Give a ready session back (no command in flight, not in DATA). It is
 * RSET and kept, or retired. The pool takes ownership either way. leased:
 * it came from pool_take() (sessions a relay opened itself may be adopted
 * when there is room). */
void pool_put(struct pool *, struct upstream *, bool leased);
/* A leased session is gone without coming back (failed, aborted): the
 * pool may open a replacement. */
void pool_release(struct pool *);

size_t pool_idle(const struct pool *);

#endif
