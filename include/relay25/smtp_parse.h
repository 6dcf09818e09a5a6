/*
 * smtp_parse.h - pure SMTP parsers: command lines, ESMTP paths and
 * parameters, multi-line replies, EHLO capabilities, queue ids.
 *
 * No I/O, no allocation. Every input is untrusted network data given with
 * an explicit length (never assumed NUL-terminated). Resumable parsers keep
 * their state in a caller-owned struct and may be fed any segmentation,
 * down to one byte at a time.
 */
#ifndef RELAY25_SMTP_PARSE_H
#define RELAY25_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum smtp_res { SMTP_AGAIN = 0, SMTP_OK = 1, SMTP_ERROR = -1 };

#define SMTP_LINE_MAX 4096      /* longest command line, without CRLF */

/* ---- line framing (client commands) -------------------------------- */

/* Line terminators: CRLF; a bare LF or bare CR is taken as a line end
 * (normalised) and flagged. A line longer than max is skipped up to its end
 * and reported as too long. NUL bytes are flagged (the line is kept). */
struct smtp_line_state {
	size_t max;             /* set by smtp_line_init() */
	bool skipping;          /* inside an over-long line */
	bool cr_pending;        /* internal */
};
struct smtp_line {
	const char *ptr;        /* into the caller's buffer; valid until consumed */
	size_t len;             /* without terminator */
	bool too_long;          /* line exceeded max (ptr/len empty) */
	bool bare_eol;          /* ended by a bare CR or bare LF */
	bool has_nul;           /* contains a NUL byte */
};
void smtp_line_init(struct smtp_line_state *, size_t max);
/* Look for the next line in buf[0..len). Returns SMTP_OK with *line and
 * *consumed (bytes to drop, terminator included), or SMTP_AGAIN with
 * *consumed bytes that may be dropped (parts of an over-long line) and no
 * line yet. */
enum smtp_res smtp_line_next(struct smtp_line_state *, const char *buf,
    size_t len, struct smtp_line *line, size_t *consumed);

/* ---- commands ------------------------------------------------------ */

enum smtp_verb {
	SMTP_CMD_UNKNOWN = 0, SMTP_CMD_HELO, SMTP_CMD_EHLO, SMTP_CMD_MAIL,
	SMTP_CMD_RCPT, SMTP_CMD_DATA, SMTP_CMD_RSET, SMTP_CMD_NOOP,
	SMTP_CMD_QUIT, SMTP_CMD_VRFY, SMTP_CMD_HELP, SMTP_CMD_EXPN,
	SMTP_CMD_AUTH, SMTP_CMD_STARTTLS, SMTP_CMD_BDAT,
};
struct smtp_cmd {
	enum smtp_verb verb;
	const char *arg;        /* after the verb and one space; may be empty */
	size_t arg_len;
};
/* Split a command line (no terminator). The verb is matched
 * case-insensitively and must be followed by end of line or a space.
 * Returns SMTP_OK or SMTP_ERROR (empty line). */
enum smtp_res smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *);
const char *smtp_verb_name(enum smtp_verb);

#define SMTP_PATH_MAX 512       /* longest mailbox we accept */
#define SMTP_MAX_PARAMS 16

struct smtp_param {
	const char *key; size_t key_len;    /* e.g. "SIZE" */
	const char *val; size_t val_len;    /* may be empty (no '=') */
};
struct smtp_path {
	const char *addr; size_t addr_len;  /* without <>; empty for <> */
	struct smtp_param params[SMTP_MAX_PARAMS];
	size_t nparams;
};
/* Parse the argument of MAIL ("FROM:<a@b> SIZE=10") or RCPT ("TO:<x>")
 * with prefix "FROM:" / "TO:" (case-insensitive). Tolerated, as legacy
 * clients need: spaces after the colon, a path without angle brackets.
 * Rejected: missing prefix, unbalanced brackets, control characters or
 * spaces inside the address, address over SMTP_PATH_MAX, malformed or
 * too many parameters, an empty RCPT path. */
enum smtp_res smtp_path_parse(const char *arg, size_t len, const char *prefix,
    bool allow_empty, struct smtp_path *);
/* Find a parameter by key (case-insensitive); NULL if absent. */
const struct smtp_param *smtp_path_param(const struct smtp_path *,
    const char *key);

/* ---- replies (upstream) -------------------------------------------- */

#define SMTP_REPLY_LINE_MAX 1024     /* longer lines: ERROR */
#define SMTP_REPLY_MAX_LINES 64      /* more lines: ERROR */
#define SMTP_REPLY_TEXT_MAX 4096     /* text kept; the rest is cut */

struct smtp_reply {
	int code;                    /* 200..599 */
	char enh[16];                /* "2.0.0" or "" when absent (first line) */
	size_t nlines;               /* lines kept in text[] */
	/* line i is text + off[i], len[i] (without code, separator, CRLF and
	 * without the enhanced code) */
	uint16_t off[SMTP_REPLY_MAX_LINES], len[SMTP_REPLY_MAX_LINES];
	char text[SMTP_REPLY_TEXT_MAX];
};
struct smtp_reply_parser {
	int state;                   /* internal, zeroed by smtp_reply_init() */
	size_t line_len;
	size_t total_lines;
	char line[SMTP_REPLY_LINE_MAX + 2];
	struct smtp_reply reply;
};
void smtp_reply_init(struct smtp_reply_parser *);
/* Feed bytes; stops after one complete reply. Returns SMTP_OK (reply in
 * p->reply; *consumed bytes used; call smtp_reply_init() before the next),
 * SMTP_AGAIN (all input consumed, reply incomplete) or SMTP_ERROR
 * (malformed: bad code, codes differ between lines, line too long, too
 * many lines, bare LF is accepted as line end). */
enum smtp_res smtp_reply_feed(struct smtp_reply_parser *, const char *buf,
    size_t len, size_t *consumed);
/* Write the reply as SMTP wire text ("250-a\r\n250 b\r\n"), enhanced code
 * kept on every line where it was present. Returns bytes written, or 0 if
 * out is too small. */
size_t smtp_reply_format(const struct smtp_reply *, char *out, size_t outlen);
/* One-line text for logs: "250 2.0.0 Ok: queued as X" (first line only,
 * control characters replaced). */
size_t smtp_reply_summary(const struct smtp_reply *, char *out, size_t outlen);
/* Extract the ESP's queue id from a 250 reply to end of data ("queued as
 * ABC", "id=ABC", "Ok 0100018c..." ...). Returns its length, 0 if none. */
size_t smtp_reply_queue_id(const struct smtp_reply *, char *out,
    size_t outlen);

/* ---- EHLO capabilities ------------------------------------------- */

enum smtp_auth_mech_bit {
	SMTP_AUTH_PLAIN = 1u << 0, SMTP_AUTH_LOGIN = 1u << 1,
	SMTP_AUTH_CRAM_MD5 = 1u << 2, SMTP_AUTH_XOAUTH2 = 1u << 3,
	SMTP_AUTH_OAUTHBEARER = 1u << 4,
};
struct smtp_caps {
	bool starttls, pipelining, eightbitmime, smtputf8, dsn, enhanced,
	     chunking, size_known;
	uint64_t size;               /* SIZE value, 0 = no limit given */
	unsigned auth;               /* SMTP_AUTH_* bits */
};
/* From a 250 EHLO reply (lines after the first are keywords). */
void smtp_caps_parse(const struct smtp_reply *, struct smtp_caps *);

#endif
