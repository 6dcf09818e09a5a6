/*
 * headers.h - the header filter on the message as it flows upstream.
 *
 * Input: the DATA decoder's output (dotstream.h): the message in SMTP wire
 * form, CRLF-terminated lines, dot-stuffing kept, without the final ".\r\n".
 * Output: the same stream, with optional changes to the header section
 * only (up to the first empty line); the body passes byte for byte.
 *
 *   rewrite_from   From: becomes `<display name> <rewrite_from>` (the first
 *                  mailbox's display name, comments dropped, folding kept)
 *                  or the bare `rewrite_from` when that mailbox has none or
 *                  no mailbox can be parsed (group-only, garbage). Several
 *                  authors collapse to one. Every From: field is rewritten.
 *                  The first Sender: becomes `Sender: rewrite_from`, later
 *                  ones and every Return-Path: are removed. A message with
 *                  no From: at all gets `From: rewrite_from` added.
 *   add_reply_to   (with rewrite_from) if the header section has no
 *                  Reply-To:, add `Reply-To: <first original mailbox>`
 *                  (display name kept when it is at most HDR_NAME_MAX
 *                  bytes); not added when there was no parseable original
 *                  address or it equals rewrite_from (case-insensitively).
 *   add_missing    add `Date:` (params.now, params.tz_offset) and/or
 *                  `Message-ID: <32 hex digits of params.random@domain>`
 *                  when the section has none (names matched
 *                  case-insensitively).
 *
 * Additions go just before the empty line ending the header section; at
 * the end when the data ends inside the header section; at the start when
 * the first line is empty. A malformed header line (no colon, a name with
 * a byte outside 33..126, a line starting with "." i.e. dot-stuffed, or
 * a line starting with CR not followed by LF) ends header processing: the
 * additions are written just before it, and it and everything after pass
 * unchanged (HDR_STOP_MALFORMED).
 *
 * Giving up (hdr_filter_gave_up()): the filter writes what it holds
 * unchanged and passes everything after through untouched; it never drops
 * or truncates bytes and writes no additions. Changes already written
 * (an earlier From:, Sender:, Return-Path:) stay. Causes:
 *   HDR_STOP_FIELD_TOO_LONG   a From: field (the only field held whole), or
 *                             a field name, longer than HDR_FIELD_MAX; other
 *                             fields stream and may be of any length.
 *   HDR_STOP_SECTION_TOO_LONG the header section passed HDR_SECTION_MAX
 *                             bytes (counted, not stored). A Sender: or
 *                             Return-Path: being removed is still removed to
 *                             its end first, so no field is cut in half.
 *   HDR_STOP_BAD_START        the first line starts with SP/HTAB (additions
 *                             before it would swallow it as a fold).
 *   HDR_STOP_TRUNCATED        the data ended inside a header line (never
 *                             with the DATA decoder's output): a From: line
 *                             there is written unchanged; no additions. (A
 *                             Sender:/Return-Path: being removed is just
 *                             removed, and the section ends: HDR_STOP_EOF.)
 *
 * Everything given to feed is untrusted network data. No I/O, no clock, no
 * allocation: the struct is caller-owned and of fixed size (about 10 KiB);
 * the parameters are copied by hdr_filter_init(), so their strings need not
 * outlive it. Not thread-safe per filter; filters are independent.
 */
#ifndef RELAY25_HEADERS_H
#define RELAY25_HEADERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define HDR_FIELD_MAX    8192          /* a From: field, or a name, held */
#define HDR_SECTION_MAX  (256 * 1024)  /* header section, counted */
#define HDR_ADDR_MAX     254           /* an address (addr-spec) */
#define HDR_NAME_MAX     512           /* display name kept for Reply-To */
#define HDR_DOMAIN_MAX   253           /* Message-ID domain */
/* The caller's out buffer must have at least this many bytes free at each
 * hdr_filter_feed()/hdr_filter_finish() call: a held field, rewritten,
 * plus every addition always fits. */
#define HDR_OUT_RESERVE  (HDR_FIELD_MAX + 2048)

struct hdr_params {
	const char *rewrite_from;  /* NULL or "": no From: rewriting */
	bool add_reply_to;         /* only with rewrite_from */
	bool add_missing;          /* Date: and Message-ID: when missing */
	const char *msgid_domain;  /* required with add_missing */
	time_t now;                /* for Date: */
	int tz_offset;             /* minutes east of UTC, |x| < 1440 */
	unsigned char random[16];  /* for Message-ID: (e.g. getrandom(2)) */
};

enum hdr_res {
	HDR_AGAIN = 0,  /* all input consumed: feed more, or finish */
	HDR_FULL = 1,   /* out is (nearly) full: drain it and feed the rest */
};

enum hdr_stop {
	HDR_STOP_NONE = 0,          /* still in the header section */
	HDR_STOP_OFF,               /* no option set: exact pass-through */
	HDR_STOP_END,               /* the empty line ended the section */
	HDR_STOP_EOF,               /* data ended in the section (additions at end) */
	HDR_STOP_MALFORMED,         /* a malformed line ended the section */
	HDR_STOP_FIELD_TOO_LONG,    /* gave up */
	HDR_STOP_SECTION_TOO_LONG,  /* gave up */
	HDR_STOP_BAD_START,         /* gave up */
	HDR_STOP_TRUNCATED,         /* gave up */
};

struct hdr_filter {
	/* configuration, copied by hdr_filter_init() */
	char from[HDR_ADDR_MAX + 1];
	char domain[HDR_DOMAIN_MAX + 1];
	size_t from_len, domain_len;
	bool rewrite, add_reply_to, add_missing;
	time_t now;
	int tz_offset;
	unsigned char random[16];
	/* state: internal */
	int state, fmode;
	bool cr, name_ws;
	bool seen_from, seen_sender, seen_reply_to, seen_date, seen_msgid;
	bool changed, have_orig, orig_named;
	enum hdr_stop stop;
	size_t hold_len, name_len, orig_name_len;
	uint64_t section;
	char orig_addr[HDR_ADDR_MAX + 1];
	char orig_name[HDR_NAME_MAX];
	char hold[HDR_FIELD_MAX];
};

/* Set up a filter for one message. Returns false (and sets the filter to
 * an exact pass-through) when a parameter is invalid: rewrite_from not a
 * plain address (hdr_addr_valid()), add_missing without a valid
 * msgid_domain (hdr_domain_valid()), tz_offset out of range. params may be
 * NULL (all off). */
bool hdr_filter_init(struct hdr_filter *, const struct hdr_params *);

/* False when no option is set: the filter is then an exact pass-through,
 * and the caller may skip it altogether. */
bool hdr_filter_active(const struct hdr_filter *);

/* Filter in[0..inlen) into out[0..outcap). Any segmentation gives the same
 * output. *consumed is how much of in was used, *outlen how much of out was
 * written. Returns HDR_AGAIN when all input was used, HDR_FULL when it
 * stopped because out had fewer than HDR_OUT_RESERVE bytes free (in the
 * header section) or none (in the body). outcap must be at least
 * HDR_OUT_RESERVE; with that, a call on an empty out always makes progress. */
enum hdr_res hdr_filter_feed(struct hdr_filter *, const char *in, size_t inlen,
    size_t *consumed, char *out, size_t outcap, size_t *outlen);

/* End of data: write what is still held and, if the data ended inside the
 * header section, the additions. outcap must be at least HDR_OUT_RESERVE;
 * one call always completes. Later calls, and later feeds, pass through. */
void hdr_filter_finish(struct hdr_filter *, char *out, size_t outcap,
    size_t *outlen);

/* Did (or will) the output differ from the input? Known for sure after
 * hdr_filter_finish(). False means output == input byte for byte. */
bool hdr_filter_changed(const struct hdr_filter *);
/* Did the filter give up (see above)? The caller logs it. */
bool hdr_filter_gave_up(const struct hdr_filter *);
enum hdr_stop hdr_filter_stop(const struct hdr_filter *);
const char *hdr_stop_name(enum hdr_stop);
/* The first original From: address (addr-spec, comments and folding
 * removed), "" when none was parsed or rewrite_from is off. Untrusted:
 * sanitise before logging. Valid until the next hdr_filter_init(). */
const char *hdr_filter_original_from(const struct hdr_filter *);

/* A plain address: dot-atom local part, "@", hostname; at most
 * HDR_ADDR_MAX bytes. */
bool hdr_addr_valid(const char *addr);
/* A hostname: LDH labels of 1..63 bytes, at most HDR_DOMAIN_MAX bytes. */
bool hdr_domain_valid(const char *domain);
/* The local time zone's offset from UTC at `now`, in minutes east (reads
 * the time zone database: call it outside the filter, pass the result in
 * hdr_params.tz_offset). */
int hdr_local_tz_offset(time_t now);

#endif
