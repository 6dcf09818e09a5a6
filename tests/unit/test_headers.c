/*
 * test_headers.c - the upstream header filter: From: rewriting, Reply-To:,
 * Sender:, Return-Path:, Date:/Message-ID: additions, the body untouched,
 * giving up, and exact pass-through when off. Every case is fed whole, one
 * byte at a time, and with the smallest output buffer (and both), and all
 * must give the same output and the same verdicts.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay25/headers.h"

struct run {
	char *out;
	size_t outlen, outmax;
	enum hdr_stop stop;
	bool changed, gave_up;
	char orig[HDR_ADDR_MAX + 1];
};

#define DATE "Date: Tue, 14 Nov 2023 23:13:20 +0100\r\n"
#define MSGID "Message-ID: <000102030405060708090a0b0c0d0e0f@relay.test>\r\n"
#define NEWFROM "noreply@example.com"

static struct hdr_params P;

#define S(x) x, sizeof(x) - 1

/* options: R rewrite_from, T add_reply_to, M add_missing */
enum { R = 1, T = 2, M = 4 };

static void params(int opts)
{
	memset(&P, 0, sizeof P);
	P.rewrite_from = opts & R ? NEWFROM : NULL;
	P.add_reply_to = (opts & T) != 0;
	P.add_missing = (opts & M) != 0;
	P.msgid_domain = "relay.test";
	P.now = 1700000000;
	P.tz_offset = 60;
	for (int i = 0; i < 16; i++)
		P.random[i] = (unsigned char)i;
}

/* Filter in[0..len) fed `chunk` bytes at a time into `outcap`-sized
 * pieces, then finish. */
static void filter(const char *in, size_t len, size_t chunk, size_t outcap,
    struct run *r)
{
	struct hdr_filter *f = malloc(sizeof *f);
	char *piece = malloc(outcap);
	size_t pos = 0, used, n;

	cr_assert(f && piece);
	free(r->out);
	memset(r, 0, sizeof *r);
	r->outmax = 2 * len + 4 * HDR_OUT_RESERVE;
	r->out = malloc(r->outmax);
	cr_assert(r->out);
	cr_assert(hdr_filter_init(f, &P));
	while (pos < len) {
		size_t k = len - pos < chunk ? len - pos : chunk;
		enum hdr_res res = hdr_filter_feed(f, in + pos, k, &used, piece,
		    outcap, &n);
		cr_assert_leq(used, k);
		cr_assert_leq(n, outcap);
		cr_assert(used > 0, "no progress at %zu", pos);
		cr_assert_eq(res, used < k ? HDR_FULL : HDR_AGAIN);
		cr_assert_leq(r->outlen + n, r->outmax);
		memcpy(r->out + r->outlen, piece, n);
		r->outlen += n;
		pos += used;
	}
	hdr_filter_finish(f, piece, outcap, &n);
	cr_assert_leq(r->outlen + n, r->outmax);
	memcpy(r->out + r->outlen, piece, n);
	r->outlen += n;
	/* finished: a second finish writes nothing */
	hdr_filter_finish(f, piece, outcap, &n);
	cr_assert_eq(n, 0);
	r->stop = hdr_filter_stop(f);
	r->changed = hdr_filter_changed(f);
	r->gave_up = hdr_filter_gave_up(f);
	strcpy(r->orig, hdr_filter_original_from(f));
	free(piece);
	free(f);
}

static struct run whole, bytes, tiny, tinybytes;

static void filter_all(const char *in, size_t len)
{
	filter(in, len, len ? len : 1, 65536, &whole);
	filter(in, len, 1, 65536, &bytes);
	filter(in, len, len ? len : 1, HDR_OUT_RESERVE, &tiny);
	filter(in, len, len > 100000 ? 4093 : 1, HDR_OUT_RESERVE, &tinybytes);
	const struct run *o[] = { &bytes, &tiny, &tinybytes };
	for (size_t i = 0; i < 3; i++) {
		cr_assert_eq(o[i]->outlen, whole.outlen, "variant %zu", i);
		cr_assert(memcmp(o[i]->out, whole.out, whole.outlen) == 0,
		    "variant %zu", i);
		cr_assert_eq(o[i]->stop, whole.stop, "variant %zu", i);
		cr_assert_eq(o[i]->changed, whole.changed, "variant %zu", i);
		cr_assert_eq(o[i]->gave_up, whole.gave_up, "variant %zu", i);
		cr_assert_str_eq(o[i]->orig, whole.orig, "variant %zu", i);
	}
	if (!whole.changed)
		cr_assert(whole.outlen == len && memcmp(whole.out, in, len) == 0,
		    "unchanged but different");
}

/* CRLF preserved: with input of whole CRLF lines, so is the output. */
static void check_crlf(const char *in, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((in[i] == '\n') != (i > 0 && in[i - 1] == '\r' && in[i] == '\n') ||
		    (in[i] == '\r' && (i + 1 == len || in[i + 1] != '\n')))
			return;         /* input not clean: nothing to check */
	if (len && in[len - 1] != '\n')
		return;
	for (size_t i = 0; i < whole.outlen; i++) {
		if (whole.out[i] == '\r')
			cr_assert(i + 1 < whole.outlen && whole.out[i + 1] == '\n',
			    "bare CR at %zu", i);
		if (whole.out[i] == '\n')
			cr_assert(i > 0 && whole.out[i - 1] == '\r', "bare LF at %zu", i);
	}
	cr_assert(whole.outlen == 0 || whole.out[whole.outlen - 1] == '\n');
}

static void expect_n(int opts, const char *in, size_t len, const char *out,
    size_t outlen, enum hdr_stop stop)
{
	params(opts);
	filter_all(in, len);
	check_crlf(in, len);
	cr_assert_eq(whole.outlen, outlen, "out %zu: [%.*s]\nwant %zu: [%.*s]",
	    whole.outlen, (int)whole.outlen, whole.out, outlen, (int)outlen, out);
	cr_assert(memcmp(whole.out, out, outlen) == 0,
	    "out: [%.*s]\nwant: [%.*s]", (int)whole.outlen, whole.out,
	    (int)outlen, out);
	cr_assert_eq(whole.stop, stop, "stop %s", hdr_stop_name(whole.stop));
	cr_assert_eq(whole.changed, outlen != len || memcmp(in, out, len) != 0);
}

static void expect(int opts, const char *in, const char *out,
    enum hdr_stop stop)
{
	expect_n(opts, in, strlen(in), out, strlen(out), stop);
}

/* ---- From: rewriting ------------------------------------------------ */

static void from_case(const char *from_field, const char *want_field,
    const char *orig)
{
	char in[1024], out[1024];

	snprintf(in, sizeof in, "Subject: hi\r\n%s\r\nTo: bob@x.test\r\n\r\nbody\r\n",
	    from_field);
	snprintf(out, sizeof out,
	    "Subject: hi\r\n%s\r\nTo: bob@x.test\r\n\r\nbody\r\n", want_field);
	expect(R, in, out, HDR_STOP_END);
	cr_assert_str_eq(whole.orig, orig, "orig of [%s]", from_field);
}

Test(from, quoted_display_name)
{
	from_case("From: \"Alice Example\" <alice@corp.test>",
	    "From: \"Alice Example\" <" NEWFROM ">", "alice@corp.test");
}

Test(from, unquoted_display_name)
{
	from_case("From: Alice Example <alice@corp.test>",
	    "From: Alice Example <" NEWFROM ">", "alice@corp.test");
	from_case("from:Alice<alice@corp.test>",
	    "From: Alice <" NEWFROM ">", "alice@corp.test");
	from_case("From: J. R. Doe <j@corp.test>",
	    "From: J. R. Doe <" NEWFROM ">", "j@corp.test");
	from_case("FROM :   Alice    Example   <alice@corp.test>   ",
	    "From: Alice Example <" NEWFROM ">", "alice@corp.test");
}

Test(from, display_name_with_comma_and_escapes)
{
	from_case("From: \"Example, Alice\" <alice@corp.test>",
	    "From: \"Example, Alice\" <" NEWFROM ">", "alice@corp.test");
	from_case("From: \"Alice \\\"Al\\\" Example\" <alice@corp.test>",
	    "From: \"Alice \\\"Al\\\" Example\" <" NEWFROM ">", "alice@corp.test");
	from_case("From: \"a\\\\\" <alice@corp.test>",
	    "From: \"a\\\\\" <" NEWFROM ">", "alice@corp.test");
	from_case("From: \"<x@y>, (z)\" <alice@corp.test>",
	    "From: \"<x@y>, (z)\" <" NEWFROM ">", "alice@corp.test");
	from_case("From: \"\" <alice@corp.test>",
	    "From: \"\" <" NEWFROM ">", "alice@corp.test");
}

Test(from, bare_address)
{
	from_case("From: alice@corp.test", "From: " NEWFROM, "alice@corp.test");
	from_case("From: <alice@corp.test>", "From: " NEWFROM, "alice@corp.test");
	from_case("From: \"a b\"@corp.test", "From: " NEWFROM, "\"a b\"@corp.test");
	from_case("From: alice . x @ corp . test", "From: " NEWFROM,
	    "alice.x@corp.test");
	from_case("From: alice@[192.0.2.1]", "From: " NEWFROM, "alice@[192.0.2.1]");
}

Test(from, comments)
{
	from_case("From: alice@corp.test (Alice Example)", "From: " NEWFROM,
	    "alice@corp.test");
	from_case("From: Alice (the (nested) boss) <alice@corp.test>",
	    "From: Alice <" NEWFROM ">", "alice@corp.test");
	from_case("From: (c) \"Alice\" (x) Smith <alice(y)@corp.test> (z)",
	    "From: \"Alice\" Smith <" NEWFROM ">", "alice@corp.test");
	from_case("From: Alice \\(x) <alice@corp.test>",
	    "From: Alice \\ <" NEWFROM ">", "alice@corp.test");
}

Test(from, encoded_words_kept)
{
	from_case("From: =?UTF-8?B?w4FsaWNl?= =?UTF-8?Q?_Ex?= <alice@corp.test>",
	    "From: =?UTF-8?B?w4FsaWNl?= =?UTF-8?Q?_Ex?= <" NEWFROM ">",
	    "alice@corp.test");
	from_case("From: \"=?UTF-8?Q?Al=C3=AFce?=\" <alice@corp.test>",
	    "From: \"=?UTF-8?Q?Al=C3=AFce?=\" <" NEWFROM ">", "alice@corp.test");
}

Test(from, groups)
{
	from_case("From: undisclosed-recipients:;", "From: " NEWFROM, "");
	from_case("From: Team: Alice <alice@corp.test>, bob@corp.test;",
	    "From: Alice <" NEWFROM ">", "alice@corp.test");
	from_case("From: Empty:;, \"Bob\" <bob@corp.test>",
	    "From: \"Bob\" <" NEWFROM ">", "bob@corp.test");
}

Test(from, several_authors)
{
	from_case("From: Alice <alice@corp.test>, Bob <bob@corp.test>",
	    "From: Alice <" NEWFROM ">", "alice@corp.test");
	from_case("From: alice@corp.test, Bob <bob@corp.test>",
	    "From: " NEWFROM, "alice@corp.test");
	from_case("From: Doe, John <john@corp.test>",
	    "From: John <" NEWFROM ">", "john@corp.test");
}

Test(from, folded)
{
	from_case("From: \"Alice\r\n Example\"\r\n <alice@corp.test>",
	    "From: \"Alice\r\n Example\" <" NEWFROM ">", "alice@corp.test");
	from_case("From:\r\n\tAlice\r\n\tExample\r\n <alice@corp.test>\r\n (c)",
	    "From: Alice\r\n Example <" NEWFROM ">", "alice@corp.test");
	from_case("From: Alice (a\r\n comment) Example <alice@corp.test>",
	    "From: Alice\r\n Example <" NEWFROM ">", "alice@corp.test");
}

Test(from, route_and_garbage)
{
	from_case("From: Alice <@relay.test,@r2.test:alice@corp.test>",
	    "From: Alice <" NEWFROM ">", "alice@corp.test");
	from_case("From: <<<", "From: " NEWFROM, "");
	from_case("From: Alice \"unterminated <alice@corp.test>", "From: " NEWFROM, "");
	from_case("From: Alice <alice@corp.test", "From: " NEWFROM, "");
	from_case("From: Alice alice@corp.test", "From: " NEWFROM, "");
	from_case("From:", "From: " NEWFROM, "");
	from_case("From: <>", "From: " NEWFROM, "");
	from_case("From: Alice <bad> , bob@corp.test",
	    "From: " NEWFROM, "bob@corp.test");
	from_case("From: a@b@c, d@corp.test", "From: " NEWFROM, "d@corp.test");
}

Test(from, already_rewritten_is_unchanged)
{
	expect(R | T, "From: Alice <" NEWFROM ">\r\n\r\nx\r\n",
	    "From: Alice <" NEWFROM ">\r\n\r\nx\r\n", HDR_STOP_END);
	cr_assert_not(whole.changed);
	cr_assert_str_eq(whole.orig, NEWFROM);
}

Test(from, every_from_field_rewritten_first_kept)
{
	expect(R | T, "From: a@corp.test\r\nFrom: Bob <b@corp.test>\r\n\r\n",
	    "From: " NEWFROM "\r\nFrom: Bob <" NEWFROM ">\r\n"
	    "Reply-To: a@corp.test\r\n\r\n", HDR_STOP_END);
	cr_assert_str_eq(whole.orig, "a@corp.test");
}

Test(from, missing_from_added)
{
	expect(R, "Subject: x\r\n\r\nbody\r\n",
	    "Subject: x\r\nFrom: " NEWFROM "\r\n\r\nbody\r\n", HDR_STOP_END);
	cr_assert_str_eq(whole.orig, "");
}

Test(from, long_display_name_reply_to_bare)
{
	char in[2048], out[4096], name[700];

	memset(name, 'n', sizeof name - 1);
	name[sizeof name - 1] = '\0';
	snprintf(in, sizeof in, "From: %s <alice@corp.test>\r\n\r\n", name);
	snprintf(out, sizeof out, "From: %s <" NEWFROM ">\r\n"
	    "Reply-To: alice@corp.test\r\n\r\n", name);
	expect(R | T, in, out, HDR_STOP_END);
}

/* ---- Reply-To:, Sender:, Return-Path: ------------------------------- */

Test(reply_to, added_when_missing)
{
	expect(R | T,
	    "From: \"Alice Example\" <alice@corp.test>\r\nSubject: x\r\n\r\nb\r\n",
	    "From: \"Alice Example\" <" NEWFROM ">\r\nSubject: x\r\n"
	    "Reply-To: \"Alice Example\" <alice@corp.test>\r\n\r\nb\r\n",
	    HDR_STOP_END);
	expect(R | T, "From: alice@corp.test (Alice)\r\n\r\n",
	    "From: " NEWFROM "\r\nReply-To: alice@corp.test\r\n\r\n", HDR_STOP_END);
	expect(R | T, "From: Alice\r\n Example <alice@corp.test>\r\n\r\n",
	    "From: Alice\r\n Example <" NEWFROM ">\r\n"
	    "Reply-To: Alice\r\n Example <alice@corp.test>\r\n\r\n", HDR_STOP_END);
}

Test(reply_to, not_added_when_present_or_off)
{
	expect(R | T, "reply-TO: x@corp.test\r\nFrom: alice@corp.test\r\n\r\n",
	    "reply-TO: x@corp.test\r\nFrom: " NEWFROM "\r\n\r\n", HDR_STOP_END);
	expect(R | T, "From: alice@corp.test\r\nReply-To:\r\n x@corp.test\r\n\r\n",
	    "From: " NEWFROM "\r\nReply-To:\r\n x@corp.test\r\n\r\n", HDR_STOP_END);
	expect(R, "From: alice@corp.test\r\n\r\n", "From: " NEWFROM "\r\n\r\n",
	    HDR_STOP_END);
	/* no original address, or the same one */
	expect(R | T, "From: undisclosed-recipients:;\r\n\r\n",
	    "From: " NEWFROM "\r\n\r\n", HDR_STOP_END);
	expect(R | T, "From: NoReply@Example.com\r\n\r\n",
	    "From: " NEWFROM "\r\n\r\n", HDR_STOP_END);
	/* without rewrite_from, add_reply_to does nothing */
	expect(T, "From: alice@corp.test\r\n\r\n", "From: alice@corp.test\r\n\r\n",
	    HDR_STOP_OFF);
}

Test(sender, replaced)
{
	expect(R, "Sender: bob@corp.test\r\nFrom: a@corp.test\r\n\r\nb\r\n",
	    "Sender: " NEWFROM "\r\nFrom: " NEWFROM "\r\n\r\nb\r\n", HDR_STOP_END);
	expect(R, "From: a@corp.test\r\nSENDER:\r\n Bob\r\n <bob@corp.test>\r\n"
	    "Subject: s\r\nsender: c@corp.test\r\n\r\n",
	    "From: " NEWFROM "\r\nSender: " NEWFROM "\r\nSubject: s\r\n\r\n",
	    HDR_STOP_END);
	/* without rewrite_from: untouched */
	expect(M, "Sender: bob@corp.test\r\nDate: x\r\nMessage-ID: <y>\r\n\r\n",
	    "Sender: bob@corp.test\r\nDate: x\r\nMessage-ID: <y>\r\n\r\n",
	    HDR_STOP_END);
}

Test(return_path, removed)
{
	expect(R, "Return-Path: <bounce@corp.test>\r\nFrom: a@corp.test\r\n\r\nb\r\n",
	    "From: " NEWFROM "\r\n\r\nb\r\n", HDR_STOP_END);
	expect(R, "From: a@corp.test\r\nreturn-path:\r\n\t<b@corp.test>\r\n"
	    "Return-Path: <>\r\nX: y\r\n\r\n",
	    "From: " NEWFROM "\r\nX: y\r\n\r\n", HDR_STOP_END);
	expect(R, "From: a@corp.test\r\nReturn-Path: <b@corp.test>\r\n",
	    "From: " NEWFROM "\r\n", HDR_STOP_EOF);
	/* the data ends inside it: still removed, section complete */
	expect(R | M, "From: a@corp.test\r\nReturn-Path: <b@co",
	    "From: " NEWFROM "\r\n" DATE MSGID, HDR_STOP_EOF);
}

/* ---- Date:, Message-ID: --------------------------------------------- */

Test(missing, added_when_missing)
{
	expect(M, "From: a@corp.test\r\nSubject: x\r\n\r\nbody\r\n",
	    "From: a@corp.test\r\nSubject: x\r\n" DATE MSGID "\r\nbody\r\n",
	    HDR_STOP_END);
	expect(M, "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n",
	    "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n" MSGID "\r\n", HDR_STOP_END);
	expect(M, "Message-ID: <x@y>\r\n\r\n",
	    "Message-ID: <x@y>\r\n" DATE "\r\n", HDR_STOP_END);
}

Test(missing, detection_case_insensitive_and_folded)
{
	const char *in = "DATE:\r\n Mon, 1 Jan 2024 00:00:00 +0000\r\n"
	    "message-id\t:\r\n\t<x@y>\r\n\r\nb\r\n";
	expect(M, in, in, HDR_STOP_END);
	cr_assert_not(whole.changed);
	in = "Message-Id: <x@y>\r\ndate: x\r\n\r\n";
	expect(M, in, in, HDR_STOP_END);
	/* names that only begin like them do not count */
	expect(M, "Dates: x\r\nMessage-IDs: y\r\nX-Date: z\r\n\r\n",
	    "Dates: x\r\nMessage-IDs: y\r\nX-Date: z\r\n" DATE MSGID "\r\n",
	    HDR_STOP_END);
}

Test(missing, date_formats)
{
	params(M);
	P.now = 0;
	P.tz_offset = -330;
	filter("\r\n", 2, 2, 65536, &whole);
	cr_assert(memmem(whole.out, whole.outlen,
	    S("Date: Wed, 31 Dec 1969 18:30:00 -0530\r\n")));
	params(M);
	P.now = 951782400;      /* 2000-02-29 */
	P.tz_offset = 0;
	filter("\r\n", 2, 2, 65536, &whole);
	cr_assert(memmem(whole.out, whole.outlen,
	    S("Date: Tue, 29 Feb 2000 00:00:00 +0000\r\n")));
}

Test(missing, all_options)
{
	expect(R | T | M,
	    "Return-Path: <b@corp.test>\r\nFrom: Alice <alice@corp.test>\r\n"
	    "Sender: s@corp.test\r\nSubject: hello\r\n\r\nFrom: body\r\n",
	    "From: Alice <" NEWFROM ">\r\nSender: " NEWFROM "\r\n"
	    "Subject: hello\r\nReply-To: Alice <alice@corp.test>\r\n" DATE MSGID
	    "\r\nFrom: body\r\n", HDR_STOP_END);
}

/* ---- body, structure ------------------------------------------------ */

Test(body, untouched)
{
	const char *body = "From: x@corp.test\r\nDate: y\r\n..dot\r\n...\r\n"
	    "Sender: z\r\n\r\nReturn-Path: <q>\r\n \r\n";
	char in[512], out[1024];

	snprintf(in, sizeof in, "From: a@corp.test\r\n\r\n%s", body);
	snprintf(out, sizeof out, "From: " NEWFROM "\r\nReply-To: a@corp.test\r\n"
	    DATE MSGID "\r\n%s", body);
	expect(R | T | M, in, out, HDR_STOP_END);
	size_t bl = strlen(body);
	cr_assert(memcmp(whole.out + whole.outlen - bl, body, bl) == 0);
}

Test(body, message_without_body)
{
	expect(R | M, "From: a@corp.test\r\nSubject: x\r\n",
	    "From: " NEWFROM "\r\nSubject: x\r\n" DATE MSGID, HDR_STOP_EOF);
	expect(R | M, "Subject: x\r\nFrom: a@corp.test\r\n",
	    "Subject: x\r\nFrom: " NEWFROM "\r\n" DATE MSGID, HDR_STOP_EOF);
	expect(R | M, "Subject: x\r\nFrom: a@corp.test\r\n (c)\r\n",
	    "Subject: x\r\nFrom: " NEWFROM "\r\n" DATE MSGID, HDR_STOP_EOF);
}

Test(body, message_without_headers)
{
	expect(M, "\r\nbody\r\nFrom: x\r\n", DATE MSGID "\r\nbody\r\nFrom: x\r\n",
	    HDR_STOP_END);
	expect(R | M, "\r\n", "From: " NEWFROM "\r\n" DATE MSGID "\r\n",
	    HDR_STOP_END);
	expect(M, "", DATE MSGID, HDR_STOP_EOF);
}

Test(body, malformed_line_ends_headers)
{
	expect(R | M, "From: a@corp.test\r\nthis is not a header\r\nDate: x\r\n",
	    "From: " NEWFROM "\r\n" DATE MSGID
	    "this is not a header\r\nDate: x\r\n", HDR_STOP_MALFORMED);
	/* a dot-stuffed line is never a header line */
	expect(M, "Subject: x\r\n..X: y\r\n\r\n",
	    "Subject: x\r\n" DATE MSGID "..X: y\r\n\r\n", HDR_STOP_MALFORMED);
	expect(M, "Subject: x\r\n: empty name\r\n",
	    "Subject: x\r\n" DATE MSGID ": empty name\r\n", HDR_STOP_MALFORMED);
	expect(M, "Subject: x\r\n\rX\r\n",
	    "Subject: x\r\n" DATE MSGID "\rX\r\n", HDR_STOP_MALFORMED);
	expect(M, "Subject: x\r\nBad\x80name: y\r\n",
	    "Subject: x\r\n" DATE MSGID "Bad\x80name: y\r\n", HDR_STOP_MALFORMED);
	expect(M, "Subject: x\r\nNo colon",
	    "Subject: x\r\n" DATE MSGID "No colon", HDR_STOP_MALFORMED);
	/* the pending From: is finished first */
	expect(R, "From: a@corp.test\r\n\tB\r\n",
	    "From: " NEWFROM "\r\n", HDR_STOP_EOF);
	expect(R, "From: a@corp.test\r\n-x-\r\n",
	    "From: " NEWFROM "\r\n-x-\r\n", HDR_STOP_MALFORMED);
}

Test(giveup, leading_continuation)
{
	const char *in = " folded first\r\nSubject: x\r\n\r\nb\r\n";
	expect(R | M, in, in, HDR_STOP_BAD_START);
	cr_assert(whole.gave_up);
}

Test(giveup, truncated_inside_a_line)
{
	const char *in = "Subject: x\r\nX-Y: abc";
	expect(R | M, in, in, HDR_STOP_TRUNCATED);
	cr_assert(whole.gave_up);
	in = "Subject: x\r\nFrom: a@corp.test";
	expect(R | M, in, in, HDR_STOP_TRUNCATED);
	cr_assert(whole.gave_up);
}

/* ---- bounds --------------------------------------------------------- */

static char *make_field(const char *name, size_t vlen, size_t *len)
{
	size_t nl = strlen(name);
	char *s = malloc(nl + vlen + 64);
	size_t n = 0;

	cr_assert(s);
	memcpy(s, name, nl);
	n = nl;
	for (size_t i = 0; i < vlen; i++) {
		/* fold every 70 bytes */
		if (i % 72 == 70) {
			s[n++] = '\r';
			s[n++] = '\n';
			s[n++] = ' ';
			i += 2;
		} else {
			s[n++] = (char)('a' + i % 26);
		}
	}
	s[n] = '\0';
	*len = n;
	return s;
}

Test(giveup, overlong_from_field)
{
	size_t fl;
	char *field = make_field("From: ", HDR_FIELD_MAX + 100, &fl);
	char *in = malloc(fl + 256);
	int n = sprintf(in, "Subject: x\r\n%s@corp.test\r\nTo: y\r\n\r\nbody\r\n", field);

	expect_n(R | T | M, in, (size_t)n, in, (size_t)n, HDR_STOP_FIELD_TOO_LONG);
	cr_assert(whole.gave_up);
	cr_assert_not(whole.changed);
	free(field);
	free(in);
}

Test(giveup, overlong_field_name)
{
	size_t fl;
	char *in = make_field("X", HDR_FIELD_MAX + 10, &fl);

	/* no fold in a name: make it one long token */
	memset(in, 'N', fl);
	memcpy(in + fl, ": v\r\n\r\n", 8);
	fl += 7;
	expect_n(M, in, fl, in, fl, HDR_STOP_FIELD_TOO_LONG);
	free(in);
}

Test(giveup, overlong_other_field_streams)
{
	size_t fl;
	char *field = make_field("References: ", 3 * HDR_FIELD_MAX, &fl);
	char *in = malloc(fl + 256), *out = malloc(fl + 512);
	int n = sprintf(in, "%s\r\nFrom: a@corp.test\r\n\r\nbody\r\n", field);
	int m = sprintf(out, "%s\r\nFrom: " NEWFROM "\r\n" DATE MSGID "\r\nbody\r\n",
	    field);

	expect_n(R | M, in, (size_t)n, out, (size_t)m, HDR_STOP_END);
	cr_assert_not(whole.gave_up);
	free(field);
	free(in);
	free(out);
}

static size_t pad_lines(char *s, size_t upto)
{
	size_t n = 0;

	for (unsigned i = 0; n < upto; i++)
		n += (size_t)sprintf(s + n, "X-Pad-%u: %060u\r\n", i, i);
	return n;
}

Test(giveup, huge_header_section)
{
	size_t cap = HDR_SECTION_MAX + 4096;
	char *in = malloc(cap);
	size_t n = pad_lines(in, HDR_SECTION_MAX + 100);

	n += (size_t)sprintf(in + n, "From: a@corp.test\r\n\r\nbody\r\n");
	expect_n(R | T | M, in, n, in, n, HDR_STOP_SECTION_TOO_LONG);
	cr_assert(whole.gave_up);
	free(in);
}

Test(giveup, huge_section_after_changes)
{
	size_t cap = HDR_SECTION_MAX + 4096;
	char *in = malloc(cap), *out = malloc(cap);
	size_t n = (size_t)sprintf(in, "From: a@corp.test\r\n");
	size_t m = (size_t)sprintf(out, "From: " NEWFROM "\r\n");
	size_t pad = pad_lines(in + n, HDR_SECTION_MAX);

	memcpy(out + m, in + n, pad);
	n += pad;
	m += pad;
	n += (size_t)sprintf(in + n, "Date: x\r\n\r\nbody\r\n");
	m += (size_t)sprintf(out + m, "Date: x\r\n\r\nbody\r\n");
	expect_n(R | T | M, in, n, out, m, HDR_STOP_SECTION_TOO_LONG);
	cr_assert(whole.gave_up);
	cr_assert(whole.changed);
	free(in);
	free(out);
}

Test(giveup, huge_sender_removed_to_its_end)
{
	size_t fl;
	char *field = make_field("Sender: ", HDR_SECTION_MAX + 1000, &fl);
	char *in = malloc(fl + 256), *out = malloc(256);
	int n = sprintf(in, "%s\r\nFrom: a@corp.test\r\n\r\nbody\r\n", field);
	int m = sprintf(out, "Sender: " NEWFROM "\r\nFrom: a@corp.test\r\n\r\nbody\r\n");

	expect_n(R | M, in, (size_t)n, out, (size_t)m, HDR_STOP_SECTION_TOO_LONG);
	free(field);
	free(in);
	free(out);
}

/* ---- pass-through and parameters ------------------------------------ */

static unsigned long long rng_state = 88172645463325252ULL;

static unsigned rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (unsigned)(rng_state >> 11);
}

static size_t random_message(char *s, size_t cap)
{
	static const char *const bits[] = { "\r\n", "\r\n", "\r\n", ": ", " ",
	    "\t", "From:", "from: ", "Sender:", "Return-Path:", "Date:",
	    "Message-ID:", "Reply-To:", "<", ">", "@", "\"", "(", ")", "\\", ",",
	    ";", ".", "a", "b@c.d", "X-Y", "\r", "\n", "\r\n\r\n", "=?x?q?y?=" };
	size_t n = 0, want = rnd() % (cap / 4);

	while (n < want) {
		if (rnd() % 8 == 0) {
			s[n++] = (char)(rnd() & 0xff);
		} else {
			const char *b = bits[rnd() % (sizeof bits / sizeof bits[0])];
			size_t l = strlen(b);
			if (n + l > cap)
				break;
			memcpy(s + n, b, l);
			n += l;
		}
	}
	return n;
}

Test(passthrough, all_off_is_identity)
{
	char in[4096];

	for (int iter = 0; iter < 400; iter++) {
		size_t n = random_message(in, sizeof in);
		params(0);
		filter_all(in, n);
		cr_assert_eq(whole.stop, HDR_STOP_OFF);
		cr_assert_eq(whole.outlen, n, "iter %d", iter);
		cr_assert(memcmp(whole.out, in, n) == 0, "iter %d", iter);
		cr_assert_not(whole.changed);
		cr_assert_not(whole.gave_up);
	}
}

Test(passthrough, random_with_options_consistent)
{
	char in[4096];

	for (int iter = 0; iter < 400; iter++) {
		size_t n = random_message(in, sizeof in);
		params(1 + iter % 7);
		filter_all(in, n);  /* all four feeds agree; unchanged == same */
		/* bytes after the first empty line come out unchanged */
		const char *e = n >= 2 && in[0] == '\r' && in[1] == '\n' ? in :
		    memmem(in, n, "\r\n\r\n", 4);
		if (e) {
			size_t skip = (size_t)(e - in) + (e == in ? 2 : 4);
			size_t bl = n - skip;
			cr_assert_geq(whole.outlen, bl);
			cr_assert(memcmp(whole.out + whole.outlen - bl, in + skip, bl) == 0,
			    "iter %d", iter);
		}
	}
}

Test(params, off_and_invalid)
{
	struct hdr_filter f;
	char out[HDR_OUT_RESERVE];
	size_t used, n;

	cr_assert(hdr_filter_init(&f, NULL));
	cr_assert_not(hdr_filter_active(&f));
	params(0);
	cr_assert(hdr_filter_init(&f, &P));
	cr_assert_not(hdr_filter_active(&f));
	/* off: any outcap works */
	cr_assert_eq(hdr_filter_feed(&f, "abc", 3, &used, out, 2, &n), HDR_FULL);
	cr_assert_eq(used, 2);
	cr_assert_eq(n, 2);

	params(R);
	cr_assert(hdr_filter_init(&f, &P));
	cr_assert(hdr_filter_active(&f));
	const char *bad_from[] = { "nobody", "@x.test", "a@", "a b@x.test",
	    "a..b@x.test", ".a@x.test", "a@x..test", "a@-x.test", "<a@x.test>",
	    "a@x.test\r\nBcc: y" };
	for (size_t i = 0; i < sizeof bad_from / sizeof bad_from[0]; i++) {
		P.rewrite_from = bad_from[i];
		cr_assert_not(hdr_filter_init(&f, &P), "%s", bad_from[i]);
		cr_assert_not(hdr_filter_active(&f));
		cr_assert_eq(hdr_filter_stop(&f), HDR_STOP_OFF);
	}
	params(M);
	P.msgid_domain = NULL;
	cr_assert_not(hdr_filter_init(&f, &P));
	P.msgid_domain = "bad domain";
	cr_assert_not(hdr_filter_init(&f, &P));
	P.msgid_domain = "ok.test";
	P.tz_offset = 1440;
	cr_assert_not(hdr_filter_init(&f, &P));
	P.tz_offset = -1439;
	cr_assert(hdr_filter_init(&f, &P));
	cr_assert(hdr_addr_valid("a.b+c@x-y.test"));
	cr_assert(hdr_domain_valid("localhost"));
	cr_assert_str_eq(hdr_stop_name(HDR_STOP_SECTION_TOO_LONG), "section-too-long");
	cr_assert_str_eq(hdr_stop_name((enum hdr_stop)99), "?");
}

Test(params, strings_copied)
{
	struct hdr_filter f;
	char from[] = "copy@example.com", dom[] = "h.test";
	char out[HDR_OUT_RESERVE + 64];
	size_t used, n, m;

	params(R | M);
	P.rewrite_from = from;
	P.msgid_domain = dom;
	cr_assert(hdr_filter_init(&f, &P));
	memset(from, 'x', sizeof from - 1);
	memset(dom, 'y', sizeof dom - 1);
	hdr_filter_feed(&f, "From: a@b.c\r\n\r\n", 15, &used, out, sizeof out, &n);
	cr_assert_eq(used, 15);
	hdr_filter_finish(&f, out + n, sizeof out - n, &m);
	cr_assert_eq(m, 0);
	cr_assert(memmem(out, n, "From: copy@example.com\r\n", 24));
	cr_assert(memmem(out, n, "@h.test>\r\n\r\n", 12));
}

Test(params, local_tz_offset)
{
	int off = hdr_local_tz_offset(1700000000);
	cr_assert(off > -1440 && off < 1440);
}
