/*
 * sm_msg.h - the message as relay25-sendmail reads it from standard input:
 * the header section (buffered, bounded, parsed for -t, Bcc taken out) and
 * the encoder that turns LF-terminated input into the SMTP DATA wire form.
 *
 * Pure: no I/O. Input is untrusted; lengths are explicit.
 */
#ifndef RELAY25_SM_MSG_H
#define RELAY25_SM_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sm_addr.h"

enum sm_res { SM_AGAIN = 0, SM_DONE = 1, SM_ERROR = -1 };

/* ---- the header section ------------------------------------------- */

#define SM_HEAD_MAX (1024 * 1024)       /* default limit, bytes */

struct sm_field {
	size_t off, len;        /* raw bytes in buf, folded lines and line
	                         * terminators included */
	size_t name_len;        /* the field name at buf + off */
	size_t value_off;       /* after the colon, at buf + value_off */
};

/* The header section ends at the first empty line (consumed: it is the
 * separator), at the first line that is neither a field ("Name: value")
 * nor a continuation (it is the first body line), or at end of input.
 * With dot_ends (no -i), a line that is a single "." ends the whole input.
 * A first line "From ..." (an mbox envelope line) is dropped. */
struct sm_head {
	bool dot_ends;
	size_t max;
	char *buf;              /* everything fed so far; caller reads only */
	size_t len, cap;
	size_t scan;            /* next line to classify */
	bool done;
	bool blank;             /* ended by an empty line */
	bool dot_end;           /* the input ended with a "." line */
	size_t body;            /* when done: body bytes are buf[body..len) */
	struct sm_field *fields;
	size_t nfields, fcap;
};

void sm_head_init(struct sm_head *, bool dot_ends, size_t max);
void sm_head_free(struct sm_head *);
/* Add input. SM_DONE: the section is complete (more input is body, not for
 * sm_head_feed); SM_AGAIN: feed more; SM_ERROR: over max bytes without the
 * section ending, or out of memory. */
enum sm_res sm_head_feed(struct sm_head *, const char *data, size_t len);
/* End of input: the last, unterminated line is classified. SM_DONE. */
enum sm_res sm_head_finish(struct sm_head *);

/* Case-insensitive field-name match. */
bool sm_field_is(const struct sm_head *, const struct sm_field *,
    const char *name);
/* The first field with this name, or NULL. */
const struct sm_field *sm_head_get(const struct sm_head *, const char *name);
/* Fields that never leave relay25-sendmail: Bcc and Resent-Bcc. */
bool sm_field_hidden(const struct sm_head *, const struct sm_field *);

/* -t: call cb for every address in To, Cc and Bcc, or in Resent-To,
 * Resent-Cc and Resent-Bcc when any Resent- recipient field is present
 * (a resent message goes to the new recipients only). Returns the number
 * of malformed addresses (bad_field: the name of the first field that had
 * one), or -1 if cb stopped the walk. */
int sm_head_recipients(const struct sm_head *, sm_addr_cb cb, void *arg,
    const char **bad_field);

/* The message as it leaves, up to what is still on standard input: the
 * fields but Bcc and Resent-Bcc (an unterminated last field gets a line
 * end), from_line (a whole "From: ...\n" line) if there is no From: field
 * and from_line is not NULL, the empty separator line when the input had
 * one or has a body, and the body bytes read so far. put() gets raw input
 * for the encoder; a non-zero return stops the walk and is returned. */
int sm_head_emit(const struct sm_head *, const char *from_line,
    int (*put)(const char *data, size_t len, void *arg), void *arg);

/* ---- LF to CR LF, dot-stuffing ------------------------------------ */

/* Line ends: LF and CR LF both become CR LF; a CR not followed by LF is
 * passed as it is (relay25 decides about bare CRs). A line that starts with
 * "." gets another "." in front. With dot_ends, a line that is a single "."
 * (LF or CR LF ended, or the last line) is the end of input instead. */
struct sm_enc {
	bool dot_ends;
	int st;                 /* internal */
	bool cr;                /* internal: a CR is held */
	bool ended;             /* the "." line was seen */
	uint64_t in_bytes, out_bytes;
};

#define SM_ENC_RESERVE 8        /* out must have this much room */

void sm_enc_init(struct sm_enc *, bool dot_ends);
/* Encode in[0..inlen) into out[0..outcap). Stops when the input is used
 * up, when fewer than SM_ENC_RESERVE bytes of out are left (SM_AGAIN), or
 * at the "." line (SM_DONE; *consumed includes it). */
enum sm_res sm_enc_feed(struct sm_enc *, const char *in, size_t inlen,
    size_t *consumed, char *out, size_t outcap, size_t *outlen);
/* End of input: ends an unterminated last line with CR LF. Writes at most
 * SM_ENC_RESERVE bytes; returns the count. The caller then sends ".\r\n". */
size_t sm_enc_finish(struct sm_enc *, char *out);

#endif
