/*
 * sm_smtp.h - relay25-sendmail's SMTP client leg: one blocking-style
 * connection to relay25 where every wait is a poll() bounded by the step
 * timeout and by the session deadline. Replies are read with the pure
 * parser of smtp_parse.h.
 */
#ifndef RELAY25_SM_SMTP_H
#define RELAY25_SM_SMTP_H

#include <stdbool.h>
#include <stddef.h>

#include "relay25/smtp_parse.h"

struct sm_smtp {
	int fd;
	double step;            /* seconds one wait may take */
	double deadline;        /* CLOCK_MONOTONIC seconds for the session */
	bool verbose;           /* show the dialogue on stderr */
	char in[4096];          /* bytes read, not yet parsed */
	size_t inlen;
	struct smtp_reply_parser rp;
	char why[320];          /* the last error, for the user */
};

double sm_now(void);
/* Wait until fd is ready for events, at most step seconds and never past
 * deadline (deadline 0: no deadline; step < 0: no step limit). Returns 1
 * ready (or hung up), 0 timed out, -1 error. */
int sm_wait(int fd, short events, double step, double deadline);

/* Connect to host:port (every address getaddrinfo gives, in turn). On
 * success the socket is non-blocking and s->fd is set. -1 with s->why. */
int sm_smtp_connect(struct sm_smtp *, const char *host, const char *port);
/* Write all of buf. -1 with s->why (timeout, peer gone). */
int sm_smtp_write(struct sm_smtp *, const char *buf, size_t len);
/* Send one command line (CR LF added); shown with -v. */
int sm_smtp_cmd(struct sm_smtp *, const char *line);
/* Read the next reply into *r (shown with -v). -1 with s->why: timeout,
 * connection closed, malformed reply. */
int sm_smtp_reply(struct sm_smtp *, struct smtp_reply *r);
void sm_smtp_close(struct sm_smtp *);

/* The reply's first line for messages: control characters replaced. */
const char *sm_reply_text(const struct smtp_reply *, char *buf, size_t len);

#endif
