/*
 * envelope.h - compose the MAIL / RCPT lines relay25 sends upstream from a
 * client's parsed path, keeping only the ESMTP parameters the upstream
 * advertised (pure; no I/O).
 */
#ifndef RELAY25_ENVELOPE_H
#define RELAY25_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include "relay25/smtp_parse.h"

/* What relay25 itself offered the client: which parameters it accepts. */
struct envelope_offer {
	bool smtputf8, dsn;
};

/* Check a client's MAIL (is_mail) or RCPT parameters against what relay25
 * offered. Returns NULL when acceptable, else the reply to send. */
const char *envelope_check(const struct smtp_path *, bool is_mail,
    const struct envelope_offer *);

/* "MAIL FROM:<addr> SIZE=.. BODY=.." or "RCPT TO:<addr> NOTIFY=.." with
 * the parameters the upstream supports. Returns the length, 0 if out is
 * too small. */
size_t envelope_line(const struct smtp_path *, bool is_mail,
    const struct smtp_caps *upstream, char *out, size_t outlen);

#endif
