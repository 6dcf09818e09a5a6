/*
 * resolve.h - DNS resolution off the event loop.
 *
 * getaddrinfo() runs on a helper thread; the answer comes back on the loop
 * through an ev_async. Answers are cached for a short time, so a busy relay
 * resolves its upstream once, not once per message.
 */
#ifndef RELAY25_RESOLVE_H
#define RELAY25_RESOLVE_H

#include <netdb.h>

struct ev_loop;
struct resolve_req;

/* err is 0 or an EAI_* code (gai_strerror() describes it); res is valid only
 * during the call. */
typedef void resolve_cb(void *arg, int err, const struct addrinfo *res);

/* Start resolving host:port (TCP). The callback is always called later,
 * from the loop, never from inside resolve_start(). Returns NULL only when
 * out of memory. */
struct resolve_req *resolve_start(struct ev_loop *, const char *host,
    const char *port, resolve_cb *, void *arg);
/* The callback will not be called; safe until the callback has run. */
void resolve_cancel(struct resolve_req *);

/* Drop cached answers (SIGHUP). */
void resolve_flush_cache(void);
/* How many requests were answered from the cache (metrics, tests). */
unsigned long resolve_cache_hits(void);

#endif
