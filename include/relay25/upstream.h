/*
 * upstream.h - the ESP leg: an SMTP client state machine.
 *
 * upstream_open() resolves (off the loop), connects, does implicit TLS or
 * EHLO + STARTTLS, EHLO again, AUTH, and then reports ready. Entering a
 * state sends its command; the reply picks the next state. After ready the
 * owner forwards transaction commands one at a time (upstream_send), the
 * body (upstream_body) and the end of data (upstream_end_data); each reply
 * comes back through ev->reply exactly as the ESP sent it.
 *
 * Failure: ev->failed is called once, and the upstream is unusable after
 * it (the owner calls upstream_abort()). The kind says whether the failure
 * happened before the session was ready (a failover candidate) or during a
 * transaction. Secrets are sent only after TLS is up and verified.
 *
 * AUTH takes its password or token from params.secret (secret.h): at once
 * when cached, else the session waits (state SECRET, connect_timeout) for
 * a password_command / token_command running off the loop. A 535 (after
 * the 334 error challenge for XOAUTH2 / OAUTHBEARER) to a secret that can
 * change invalidates it; a fresh one is obtained and AUTH retried once on
 * the same connection. A failing command is UP_FAIL_AUTH_TEMP.
 */
#ifndef RELAY25_UPSTREAM_H
#define RELAY25_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include "relay25/config.h"
#include "relay25/smtp_parse.h"

struct ev_loop;
struct secret_cache;
struct tls_ctx;
struct upstream;

enum upstream_fail {
	UP_FAIL_CONNECT,   /* DNS, TCP connect, banner, EHLO */
	UP_FAIL_TLS,       /* handshake, verification, STARTTLS refused */
	UP_FAIL_AUTH,      /* 5xx to AUTH: a configuration error */
	UP_FAIL_AUTH_TEMP, /* 4xx to AUTH */
	UP_FAIL_LOST,      /* connection lost or garbled after ready */
	UP_FAIL_TIMEOUT,   /* no answer in time (any stage) */
};
const char *upstream_fail_name(enum upstream_fail);

/* Milestones, for diagnostics (relay25 --check); detail is plain words. */
enum upstream_step {
	UP_STEP_RESOLVED,   /* "192.0.2.1, 2001:db8::1" */
	UP_STEP_CONNECTED,  /* "192.0.2.1 port 587" */
	UP_STEP_TLS,        /* version, cipher, certificate, name */
	UP_STEP_EHLO,       /* the capabilities offered */
	UP_STEP_AUTH,       /* mechanism and user accepted */
};

struct upstream_events {
	void (*ready)(void *arg);
	void (*reply)(void *arg, const struct smtp_reply *);
	void (*failed)(void *arg, enum upstream_fail, bool before_ready,
	    const char *why);
	void (*drain)(void *arg);          /* room for more body bytes */
	void (*step)(void *arg, enum upstream_step, const char *detail);
	                                   /* optional */
};

struct upstream_params {
	const struct cfg_upstream *cfg;
	struct tls_ctx *tls;               /* NULL when cfg->tls is none */
	struct secret_cache *secret;       /* setup->secret[i]: the AUTH
	                                    * password or token (NULL: only
	                                    * a static cfg->password works) */
	const char *helo;
	double command_timeout, data_timeout;
	const char *log_id;                /* session id for log lines (copied) */
};

struct upstream *upstream_open(struct ev_loop *, const struct upstream_params *,
    const struct upstream_events *, void *arg);

/* Send one command line (without CRLF); the reply comes via ev->reply. A
 * reply of 354 to DATA switches to body mode. */
void upstream_send(struct upstream *, const char *line, size_t len);
/* Body mode: how many bytes may be written now, and write them (already
 * in wire form, dot-stuffed). ev->drain fires when room comes back. */
size_t upstream_body_room(const struct upstream *);
void upstream_body(struct upstream *, const char *buf, size_t len);
/* Send the final ".\r\n"; the ESP's reply comes via ev->reply. */
void upstream_end_data(struct upstream *);

/* Say QUIT politely and close in the background; no further events. */
void upstream_quit(struct upstream *);
/* Drop the connection now (no final dot, no QUIT); no further events. */
void upstream_abort(struct upstream *);

/* Hand the session to another owner (the pool, a relay). */
void upstream_rebind(struct upstream *, const struct upstream_events *,
    void *arg);
/* Messages this session carried to a 2xx at the end of data. */
unsigned upstream_messages(const struct upstream *);

bool upstream_is_ready(const struct upstream *);   /* idle, usable */
const struct smtp_caps *upstream_caps(const struct upstream *);
const char *upstream_label(const struct upstream *); /* "name host:port" */

#endif
