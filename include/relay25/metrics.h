/*
 * metrics.h - process-wide counters, gauges and histograms, and a tiny
 * HTTP endpoint serving them in the Prometheus text exposition format
 * (version 0.0.4) on the same libev loop as the relay.
 *
 * The recording functions are cheap (no allocation, no I/O, a relaxed
 * atomic add) and may be called whether or not the endpoint runs. One
 * writer per process (one loop per process, like the rest of relay25);
 * worker processes share their numbers, see metrics_shared_init(). Enums
 * are fixed so the label sets, and thus the output size, are bounded.
 *
 * The endpoint serves GET/HEAD /metrics and /healthz only. Requests are
 * untrusted: at most METRICS_REQ_MAX bytes of request head (else 431),
 * a whole-request deadline (else 408), at most METRICS_MAX_CONNS open
 * connections (more are closed at once); every response carries
 * "Connection: close" and the connection is closed after it.
 */
#ifndef RELAY25_METRICS_H
#define RELAY25_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "relay25/config.h"

struct ev_loop;
struct metrics_server;

#define METRICS_REQ_MAX 2048            /* request line + headers */
#define METRICS_MAX_CONNS 16
#define METRICS_TIMEOUT 5.0             /* seconds, per request */
#define METRICS_TEXT_MAX 16384          /* the whole exposition */

/* Why the listener turned a client away (labels: reason="..."). */
enum metrics_refusal {
	METRICS_REFUSED_NOT_ALLOWED,        /* not in the allow list */
	METRICS_REFUSED_MAX_CLIENTS,
	METRICS_REFUSED_MAX_CLIENTS_PER_IP,
	METRICS_REFUSED_EARLY_TALKER,       /* talked before the greeting */
	METRICS_REFUSED_N
};

/* How a message transaction ended (labels: outcome="..."). */
enum metrics_outcome {
	METRICS_SENT,           /* the upstream said 2xx to the end of data */
	METRICS_DEFERRED,       /* 4xx, ours or the upstream's */
	METRICS_REJECTED,       /* 5xx from the upstream (or size limit) */
	METRICS_ABORTED,        /* client gone or timed out mid-DATA */
	METRICS_OUTCOME_N
};

/* Upstream failure kinds (labels: kind="..."); the same order as enum
 * upstream_fail in upstream.h. */
enum metrics_upfail {
	METRICS_UPFAIL_CONNECT,
	METRICS_UPFAIL_TLS,
	METRICS_UPFAIL_AUTH,
	METRICS_UPFAIL_AUTH_TEMP,
	METRICS_UPFAIL_LOST,
	METRICS_UPFAIL_TIMEOUT,
	METRICS_UPFAIL_N
};

/* Upstream session set-up stages timed (labels: stage="..."). */
enum metrics_stage {
	METRICS_STAGE_CONNECT,  /* resolve start .. TCP connected */
	METRICS_STAGE_TLS,      /* TLS handshake (STARTTLS or implicit) */
	METRICS_STAGE_AUTH,     /* AUTH command .. 235 */
	METRICS_STAGE_N
};

/* What happened to a message in the durable spool (labels: event="..."). */
enum metrics_spool_event {
	METRICS_SPOOL_SPOOLED,   /* accepted into the spool (client got 250) */
	METRICS_SPOOL_DELIVERED, /* the ESP said 250 on a later attempt */
	METRICS_SPOOL_RETRIED,   /* an attempt failed; tried again later */
	METRICS_SPOOL_FAILED,    /* a 5xx: moved to failed/ */
	METRICS_SPOOL_REFUSED,   /* the spool was full: the client got 451 */
	METRICS_SPOOL_N
};

/* ---- worker processes ------------------------------------------------ */

#define METRICS_MAX_SLOTS 256

/*
 * With N worker processes: call metrics_shared_init(N) once before
 * forking (the numbers then live in a shared anonymous mapping, one slot
 * per worker, and /metrics shows their sum), and metrics_use_slot(idx) in
 * each worker right after fork, before recording anything; a restarted
 * worker keeps its counters and has its gauges reset. Without these calls
 * everything lives in the process itself. -1 (errno) on failure: then the
 * numbers stay per process.
 */
int metrics_shared_init(unsigned nworkers);
void metrics_use_slot(unsigned idx);

/* ---- recording -------------------------------------------------------- */

void metrics_session_accepted(void);
void metrics_session_refused(enum metrics_refusal);
/* +1 when a session starts, -1 when it ends. */
void metrics_session_active(int delta);
/* One finished (or abandoned) transaction; bytes as sent upstream. */
void metrics_message(enum metrics_outcome, uint64_t bytes);
void metrics_spool(enum metrics_spool_event);
void metrics_upstream_failure(enum metrics_upfail);
/* Seconds one stage took; negative, NaN or absurd values are ignored. */
void metrics_upstream_latency(enum metrics_stage, double seconds);
/* The outcome of one attempt to get a ready upstream session (connect +
 * TLS + EHLO + AUTH). The latest one decides /healthz. */
void metrics_upstream_attempt(bool ok);
/* Warm authenticated sessions currently in the pool. */
void metrics_pool_size(unsigned n);
/* Are the SMTP listeners accepting? /healthz is 503 while not. */
void metrics_set_listening(bool);

/* Zero everything (tests; not needed in the daemon). */
void metrics_reset(void);

/* Healthy = listening and the last upstream attempt (if any) did not
 * fail. *why (may be NULL) gets a short reason when unhealthy. */
bool metrics_healthy(const char **why);

/* Write the exposition text into buf. Returns its length, or 0 if it does
 * not fit (buf then holds a truncated, unusable text). */
size_t metrics_format(char *buf, size_t len);

/* ---- the HTTP endpoint ----------------------------------------------- */

/*
 * Bind and listen on addr (non-blocking) and serve on loop. Returns NULL
 * with a message in err on failure (address in use, permission).
 * Bind before dropping privileges if the port is below 1024.
 */
struct metrics_server *metrics_server_start(struct ev_loop *,
    const struct cfg_addr *addr, char *err, size_t errlen);
/* Stop listening and close every open connection; srv may be NULL. */
void metrics_server_stop(struct metrics_server *);
/* Per-request deadline in seconds (default METRICS_TIMEOUT; for tests). */
void metrics_server_set_timeout(struct metrics_server *, double seconds);
/* The bound port (useful after binding port 0). */
uint16_t metrics_server_port(const struct metrics_server *);
/* Open client connections (for tests). */
size_t metrics_server_conns(const struct metrics_server *);

#endif
