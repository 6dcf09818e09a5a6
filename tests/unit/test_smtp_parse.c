/*
 * test_smtp_parse.c - line framing, commands, paths, replies, caps and
 * queue ids. Every resumable case is fed whole and one byte at a time.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "relay25/smtp_parse.h"

/* ---- line framing ------------------------------------------------- */

struct got_line {
	char text[SMTP_LINE_MAX + 1];
	size_t len;
	bool too_long, bare, nul;
};

/* Act as the session does: a buffer of unconsumed bytes, `chunk` new
 * bytes appended at a time, lines taken until AGAIN. Returns the number
 * of lines; *left is what stays unconsumed at the end. */
static size_t frame(const char *in, size_t len, size_t chunk,
    struct got_line *got, size_t maxgot, size_t *left)
{
	static char buf[3 * SMTP_LINE_MAX];
	struct smtp_line_state st;
	size_t have = 0, pos = 0, n = 0;

	smtp_line_init(&st, SMTP_LINE_MAX);
	while (pos < len) {
		size_t k = len - pos < chunk ? len - pos : chunk;
		cr_assert_leq(have + k, sizeof(buf));
		memcpy(buf + have, in + pos, k);
		have += k;
		pos += k;
		for (;;) {
			struct smtp_line l;
			size_t used;
			enum smtp_res r = smtp_line_next(&st, buf, have, &l, &used);
			cr_assert_leq(used, have);
			if (r == SMTP_OK) {
				cr_assert_lt(n, maxgot);
				cr_assert_leq(l.len, SMTP_LINE_MAX);
				memcpy(got[n].text, l.ptr, l.len);
				got[n].text[l.len] = '\0';
				got[n].len = l.len;
				got[n].too_long = l.too_long;
				got[n].bare = l.bare_eol;
				got[n].nul = l.has_nul;
				n++;
			}
			memmove(buf, buf + used, have - used);
			have -= used;
			if (r != SMTP_OK)
				break;
		}
	}
	*left = have;
	return n;
}

static struct got_line g_whole[64], g_bytes[64];

/* Frame whole and byte by byte; both must agree. */
static size_t frame_both(const char *in, size_t len, size_t *left)
{
	size_t lw, lb;
	size_t nw = frame(in, len, len ? len : 1, g_whole, 64, &lw);
	size_t nb = frame(in, len, 1, g_bytes, 64, &lb);

	cr_assert_eq(nw, nb, "whole %zu lines, bytewise %zu", nw, nb);
	cr_assert_eq(lw, lb);
	for (size_t i = 0; i < nw; i++) {
		cr_assert_eq(g_whole[i].len, g_bytes[i].len);
		cr_assert(memcmp(g_whole[i].text, g_bytes[i].text, g_whole[i].len) == 0);
		cr_assert_eq(g_whole[i].too_long, g_bytes[i].too_long);
		cr_assert_eq(g_whole[i].bare, g_bytes[i].bare);
		cr_assert_eq(g_whole[i].nul, g_bytes[i].nul);
	}
	*left = lw;
	return nw;
}

#define S(x) x, sizeof(x) - 1

Test(line, crlf_and_bare_endings)
{
	size_t left, n = frame_both(S("HELO a\r\nNOOP\nRSET\rQUIT\r\n"), &left);

	cr_assert_eq(n, 4);
	cr_assert_eq(left, 0);
	cr_assert_str_eq(g_whole[0].text, "HELO a");
	cr_assert(!g_whole[0].bare);
	cr_assert_str_eq(g_whole[1].text, "NOOP");
	cr_assert(g_whole[1].bare);
	cr_assert_str_eq(g_whole[2].text, "RSET");
	cr_assert(g_whole[2].bare);
	cr_assert_str_eq(g_whole[3].text, "QUIT");
	cr_assert(!g_whole[3].bare);
}

Test(line, cr_at_buffer_end_waits)
{
	struct smtp_line_state st;
	struct smtp_line l;
	size_t used;

	smtp_line_init(&st, SMTP_LINE_MAX);
	cr_assert_eq(smtp_line_next(&st, "NOOP\r", 5, &l, &used), SMTP_AGAIN);
	cr_assert_eq(used, 0);
	cr_assert_eq(smtp_line_next(&st, "NOOP\r\n", 6, &l, &used), SMTP_OK);
	cr_assert_eq(used, 6);
	cr_assert_eq(l.len, 4);
	cr_assert(!l.bare_eol);
	cr_assert_eq(smtp_line_next(&st, "NOOP\rX", 6, &l, &used), SMTP_OK);
	cr_assert_eq(used, 5);
	cr_assert(l.bare_eol);

	size_t left, n = frame_both(S("A\r\rB\r"), &left);
	cr_assert_eq(n, 2);
	cr_assert_str_eq(g_whole[0].text, "A");
	cr_assert_str_eq(g_whole[1].text, "");
	cr_assert(g_whole[1].bare);
	cr_assert_eq(left, 2);       /* "B\r" waits */
}

Test(line, incomplete_and_empty)
{
	size_t left, n = frame_both(S("\r\nEHLO x"), &left);

	cr_assert_eq(n, 1);
	cr_assert_eq(g_whole[0].len, 0);
	cr_assert_eq(left, 6);
}

static char big[3 * SMTP_LINE_MAX + 64];

static size_t make_line(size_t n, const char *tail)
{
	memset(big, 'a', n);
	memcpy(big + n, tail, strlen(tail));
	return n + strlen(tail);
}

Test(line, max_length_ok)
{
	size_t left, n = frame_both(big, make_line(SMTP_LINE_MAX, "\r\n"), &left);

	cr_assert_eq(n, 1);
	cr_assert(!g_whole[0].too_long);
	cr_assert_eq(g_whole[0].len, SMTP_LINE_MAX);
}

Test(line, too_long_then_next_line)
{
	const char *tails[] = { "\r\nNOOP\r\n", "\nNOOP\r\n", "\rNOOP\r\n" };

	for (size_t t = 0; t < 3; t++) {
		size_t left, n = frame_both(big,
		    make_line(SMTP_LINE_MAX + 1, tails[t]), &left);
		cr_assert_eq(n, 2, "tail %zu", t);
		cr_assert(g_whole[0].too_long);
		cr_assert_eq(g_whole[0].len, 0);
		cr_assert_eq(g_whole[0].bare, t != 0);
		cr_assert(!g_whole[1].too_long);
		cr_assert_str_eq(g_whole[1].text, "NOOP");
		cr_assert_eq(left, 0);
	}
	/* Much longer than the caller's buffer: skipped piecewise. */
	size_t left, n = frame(big, make_line(2 * SMTP_LINE_MAX + 7, "\r\nQUIT\r\n"),
	    100, g_whole, 64, &left);
	cr_assert_eq(n, 2);
	cr_assert(g_whole[0].too_long);
	cr_assert_str_eq(g_whole[1].text, "QUIT");
}

Test(line, nul_flagged)
{
	size_t left, n = frame_both(S("NO\0OP\r\nNOOP\r\n"), &left);

	cr_assert_eq(n, 2);
	cr_assert(g_whole[0].nul);
	cr_assert_eq(g_whole[0].len, 5);
	cr_assert(!g_whole[1].nul);
}

/* ---- commands ------------------------------------------------------ */

Test(cmd, every_verb)
{
	static const struct { const char *s; enum smtp_verb v; } t[] = {
		{ "HELO x", SMTP_CMD_HELO }, { "EHLO x", SMTP_CMD_EHLO },
		{ "MAIL FROM:<>", SMTP_CMD_MAIL }, { "RCPT TO:<a@b>", SMTP_CMD_RCPT },
		{ "DATA", SMTP_CMD_DATA }, { "RSET", SMTP_CMD_RSET },
		{ "NOOP", SMTP_CMD_NOOP }, { "QUIT", SMTP_CMD_QUIT },
		{ "VRFY x", SMTP_CMD_VRFY }, { "HELP", SMTP_CMD_HELP },
		{ "EXPN x", SMTP_CMD_EXPN }, { "AUTH PLAIN", SMTP_CMD_AUTH },
		{ "STARTTLS", SMTP_CMD_STARTTLS }, { "BDAT 10 LAST", SMTP_CMD_BDAT },
		{ "ehlo x", SMTP_CMD_EHLO }, { "MaIl FROM:<>", SMTP_CMD_MAIL },
		{ "starttls", SMTP_CMD_STARTTLS },
		{ "MAILX FROM:<>", SMTP_CMD_UNKNOWN }, { "XYZZY", SMTP_CMD_UNKNOWN },
		{ "MAI", SMTP_CMD_UNKNOWN }, { "MAIL\tFROM:<>", SMTP_CMD_UNKNOWN },
		{ " MAIL", SMTP_CMD_UNKNOWN },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct smtp_cmd c;
		cr_assert_eq(smtp_cmd_parse(t[i].s, strlen(t[i].s), &c), SMTP_OK);
		cr_assert_eq(c.verb, t[i].v, "%s", t[i].s);
	}
	cr_assert_str_eq(smtp_verb_name(SMTP_CMD_STARTTLS), "STARTTLS");
	cr_assert_str_eq(smtp_verb_name(SMTP_CMD_UNKNOWN), "UNKNOWN");
}

Test(cmd, argument)
{
	struct smtp_cmd c;

	cr_assert_eq(smtp_cmd_parse(S("EHLO  client.example"), &c), SMTP_OK);
	cr_assert_eq(c.arg_len, 15);
	cr_assert(memcmp(c.arg, " client.example", 15) == 0);
	cr_assert_eq(smtp_cmd_parse(S("DATA"), &c), SMTP_OK);
	cr_assert_eq(c.arg_len, 0);
	cr_assert_eq(smtp_cmd_parse(S("NOOP "), &c), SMTP_OK);
	cr_assert_eq(c.verb, SMTP_CMD_NOOP);
	cr_assert_eq(c.arg_len, 0);
	cr_assert_eq(smtp_cmd_parse("", 0, &c), SMTP_ERROR);
}

/* ---- paths ---------------------------------------------------------- */

static struct smtp_path P;

static enum smtp_res mail(const char *s)
{
	return smtp_path_parse(s, strlen(s), "FROM:", true, &P);
}

static enum smtp_res rcpt(const char *s)
{
	return smtp_path_parse(s, strlen(s), "TO:", false, &P);
}

static bool addr_is(const char *a)
{
	return P.addr_len == strlen(a) && memcmp(P.addr, a, P.addr_len) == 0;
}

Test(path, forms)
{
	cr_assert_eq(mail("FROM:<a@b>"), SMTP_OK);
	cr_assert(addr_is("a@b"));
	cr_assert_eq(P.nparams, 0);
	cr_assert_eq(mail("from:<>"), SMTP_OK);
	cr_assert(addr_is(""));
	cr_assert_eq(rcpt("TO:<>"), SMTP_ERROR);
	cr_assert_eq(mail("FROM: <a@b>"), SMTP_OK);
	cr_assert(addr_is("a@b"));
	cr_assert_eq(mail("FROM:a@b"), SMTP_OK);
	cr_assert(addr_is("a@b"));
	cr_assert_eq(rcpt("To:<Postmaster>"), SMTP_OK);
	cr_assert(addr_is("Postmaster"));
	cr_assert_eq(mail("FROM:<a@b>  "), SMTP_OK);
	cr_assert_eq(rcpt("TO:<@relay.example:u@d.example>"), SMTP_OK);
	cr_assert_eq(mail("FROM:<us\xc3\xa9r@d.example> SMTPUTF8"), SMTP_OK);
}

Test(path, params)
{
	const struct smtp_param *p;

	cr_assert_eq(mail("FROM:<a@b> SIZE=10 BODY=8BITMIME SMTPUTF8"), SMTP_OK);
	cr_assert_eq(P.nparams, 3);
	p = smtp_path_param(&P, "size");
	cr_assert_not_null(p);
	cr_assert_eq(p->val_len, 2);
	cr_assert(memcmp(p->val, "10", 2) == 0);
	p = smtp_path_param(&P, "SMTPUTF8");
	cr_assert_not_null(p);
	cr_assert_eq(p->val_len, 0);
	cr_assert_null(smtp_path_param(&P, "RET"));
	cr_assert_eq(rcpt("TO:<a@b> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+40b"), SMTP_OK);
	cr_assert_eq(P.nparams, 2);
	cr_assert_eq(mail("FROM:a@b SIZE=1"), SMTP_OK);
	cr_assert_eq(P.nparams, 1);
	cr_assert_eq(mail("FROM:<a@b> X-FOO-1=bar"), SMTP_OK);
}

Test(path, bad_params)
{
	const char *bad[] = {
		"FROM:<a@b> SIZE=", "FROM:<a@b> =10", "FROM:<a@b> -X=1",
		"FROM:<a@b> SIZE==1", "FROM:<a@b> SIZE=1=2", "FROM:<a@b> S_Z=1",
		"FROM:<a@b> SIZE=\x01", "FROM:<a@b> BODY=\xc3\xa9",
		"FROM:<a@b>SIZE=10",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(mail(bad[i]), SMTP_ERROR, "%zu", i);
}

Test(path, too_many_params)
{
	char s[512] = "FROM:<a@b>";
	size_t n = strlen(s);

	for (int i = 0; i < SMTP_MAX_PARAMS; i++)
		n += (size_t)snprintf(s + n, sizeof(s) - n, " P%d=%d", i, i);
	cr_assert_eq(mail(s), SMTP_OK);
	cr_assert_eq(P.nparams, SMTP_MAX_PARAMS);
	snprintf(s + n, sizeof(s) - n, " ONEMORE");
	cr_assert_eq(mail(s), SMTP_ERROR);
}

Test(path, rejected)
{
	const char *bad[] = {
		"<a@b>", "FROM<a@b>", "FROM :<a@b>", "FROM:", "FROM: ",
		"FROM:<a@b", "FROM:a@b>", "FROM:<<a@b>>", "FROM:<a b@c>",
		"FROM:<a\x01@b>", "FROM:<a@b\x7f>", "FROM:a\x01@b", "FROM:<a@b>x",
		"FROM:<a@b>\t", "FROM:<a@b>>",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(mail(bad[i]), SMTP_ERROR, "%zu", i);
	cr_assert_eq(rcpt("TO:"), SMTP_ERROR);
	cr_assert_eq(rcpt("FROM:<a@b>"), SMTP_ERROR);
}

Test(path, overlong_address)
{
	char s[SMTP_PATH_MAX + 32];
	size_t n;

	memcpy(s, "TO:<", 4);
	memset(s + 4, 'x', SMTP_PATH_MAX);
	n = 4 + SMTP_PATH_MAX;
	s[n++] = '>';
	cr_assert_eq(smtp_path_parse(s, n, "TO:", false, &P), SMTP_OK);
	cr_assert_eq(P.addr_len, SMTP_PATH_MAX);
	memmove(s + 5, s + 4, n - 4);
	n++;
	cr_assert_eq(smtp_path_parse(s, n, "TO:", false, &P), SMTP_ERROR);
}

/* ---- replies -------------------------------------------------------- */

static struct smtp_reply_parser rw, rb;

/* Parse whole and byte by byte; results, consumed and reply must agree. */
static enum smtp_res reply_both(const char *in, size_t len, size_t *consumed)
{
	size_t cw, cb = 0;
	enum smtp_res w, b = SMTP_AGAIN;

	smtp_reply_init(&rw);
	smtp_reply_init(&rb);
	w = smtp_reply_feed(&rw, in, len, &cw);
	for (size_t i = 0; i < len && b == SMTP_AGAIN; i++) {
		size_t c;
		b = smtp_reply_feed(&rb, in + i, 1, &c);
		cr_assert_eq(c, 1);
		cb++;
	}
	cr_assert_eq(w, b);
	cr_assert_eq(cw, cb);
	if (w == SMTP_OK)
		cr_assert(memcmp(&rw.reply, &rb.reply, sizeof(rw.reply)) == 0);
	*consumed = cw;
	return w;
}

static bool line_is(const struct smtp_reply *r, size_t i, const char *s)
{
	return i < r->nlines && r->len[i] == strlen(s) &&
	    memcmp(r->text + r->off[i], s, r->len[i]) == 0;
}

Test(reply, single_line)
{
	size_t c;

	cr_assert_eq(reply_both(S("220 mx.example ESMTP\r\n"), &c), SMTP_OK);
	cr_assert_eq(c, 22);
	cr_assert_eq(rw.reply.code, 220);
	cr_assert_str_eq(rw.reply.enh, "");
	cr_assert_eq(rw.reply.nlines, 1);
	cr_assert(line_is(&rw.reply, 0, "mx.example ESMTP"));

	cr_assert_eq(reply_both(S("250\r\n"), &c), SMTP_OK);
	cr_assert_eq(rw.reply.code, 250);
	cr_assert(line_is(&rw.reply, 0, ""));
	cr_assert_eq(reply_both(S("354 go\n"), &c), SMTP_OK);   /* bare LF */
	cr_assert(line_is(&rw.reply, 0, "go"));
}

Test(reply, multi_line)
{
	size_t c;

	cr_assert_eq(reply_both(S("250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\n"), &c), SMTP_OK);
	cr_assert_eq(rw.reply.nlines, 3);
	cr_assert(line_is(&rw.reply, 0, "mx.example"));
	cr_assert(line_is(&rw.reply, 2, "SIZE 100"));
	cr_assert_eq(reply_both(S("250-a\r\n250-\r\n250\r\n"), &c), SMTP_OK);
	cr_assert_eq(rw.reply.nlines, 3);
	cr_assert(line_is(&rw.reply, 1, ""));
}

Test(reply, incomplete)
{
	size_t c;

	cr_assert_eq(reply_both(S("250-a\r\n250 b"), &c), SMTP_AGAIN);
	cr_assert_eq(c, 12);
}

Test(reply, enhanced_codes)
{
	size_t c;
	char out[256];

	cr_assert_eq(reply_both(S("550-5.1.1 no such user\r\n550 5.1.1 see help\r\n"), &c), SMTP_OK);
	cr_assert_str_eq(rw.reply.enh, "5.1.1");
	cr_assert(line_is(&rw.reply, 0, "no such user"));
	cr_assert(line_is(&rw.reply, 1, "see help"));
	size_t n = smtp_reply_format(&rw.reply, out, sizeof(out));
	cr_assert_eq(n, 44);
	cr_assert_str_eq(out, "550-5.1.1 no such user\r\n550 5.1.1 see help\r\n");

	/* class must match the code */
	cr_assert_eq(reply_both(S("550 2.0.0 odd\r\n"), &c), SMTP_OK);
	cr_assert_str_eq(rw.reply.enh, "");
	cr_assert(line_is(&rw.reply, 0, "2.0.0 odd"));
	/* wide subject/detail, no text */
	cr_assert_eq(reply_both(S("451 4.123.456\r\n"), &c), SMTP_OK);
	cr_assert_str_eq(rw.reply.enh, "4.123.456");
	cr_assert(line_is(&rw.reply, 0, ""));
	/* not codes */
	cr_assert_eq(reply_both(S("250 2.0.0x\r\n"), &c), SMTP_OK);
	cr_assert_str_eq(rw.reply.enh, "");
	cr_assert_eq(reply_both(S("250 2.1234.0 x\r\n"), &c), SMTP_OK);
	cr_assert_str_eq(rw.reply.enh, "");
	cr_assert_eq(reply_both(S("250 2..0 x\r\n"), &c), SMTP_OK);
	cr_assert_str_eq(rw.reply.enh, "");
}

Test(reply, bad)
{
	const char *bad[] = {
		"25\r\n", "\r\n", "2500 x\r\n", "250x\r\n", "abc x\r\n",
		"150 x\r\n", "650 x\r\n", "25a x\r\n", "250-a\r\n251 b\r\n",
		"250-a\r\n550 b\r\n", "250_x\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t c;
		cr_assert_eq(reply_both(bad[i], strlen(bad[i]), &c), SMTP_ERROR, "%zu", i);
	}
	/* sticky */
	size_t c;
	cr_assert_eq(smtp_reply_feed(&rw, S("250 ok\r\n"), &c), SMTP_ERROR);
}

Test(reply, line_too_long)
{
	static char s[SMTP_REPLY_LINE_MAX + 16];
	size_t c, n;

	memcpy(s, "250 ", 4);
	memset(s + 4, 'x', SMTP_REPLY_LINE_MAX - 4);
	n = SMTP_REPLY_LINE_MAX;
	memcpy(s + n, "\r\n", 2);
	cr_assert_eq(reply_both(s, n + 2, &c), SMTP_OK);
	cr_assert_eq(rw.reply.len[0], SMTP_REPLY_LINE_MAX - 4);
	s[n] = 'x';
	memcpy(s + n + 1, "\r\n", 2);
	cr_assert_eq(reply_both(s, n + 3, &c), SMTP_ERROR);
	memset(s + 4, 'x', sizeof(s) - 4);   /* never ends */
	cr_assert_eq(reply_both(s, sizeof(s), &c), SMTP_ERROR);
}

Test(reply, too_many_lines)
{
	static char s[SMTP_REPLY_MAX_LINES * 8 + 16];
	size_t n = 0, c;

	for (int i = 0; i < SMTP_REPLY_MAX_LINES - 1; i++) {
		memcpy(s + n, "250-ab\r\n", 8);
		n += 8;
	}
	memcpy(s + n, "250 ab\r\n", 8);
	cr_assert_eq(reply_both(s, n + 8, &c), SMTP_OK);
	cr_assert_eq(rw.reply.nlines, SMTP_REPLY_MAX_LINES);
	memcpy(s + n, "250-ab\r\n250 ab\r\n", 16);
	cr_assert_eq(reply_both(s, n + 16, &c), SMTP_ERROR);
}

Test(reply, text_truncated_but_parsed)
{
	static char s[8 * 1024];
	size_t n = 0, c;

	for (int i = 0; i < 9; i++) {
		memcpy(s + n, "250-", 4);
		memset(s + n + 4, 'a' + i, 600);
		memcpy(s + n + 604, "\r\n", 2);
		n += 606;
	}
	memcpy(s + n, "250 end\r\n", 9);
	n += 9;
	cr_assert_eq(reply_both(s, n, &c), SMTP_OK);
	cr_assert_eq(c, n);
	cr_assert_eq(rw.reply.nlines, 10);
	cr_assert_eq(rw.reply.len[6], SMTP_REPLY_TEXT_MAX - 6 * 600);
	cr_assert_eq(rw.reply.len[7], 0);
	cr_assert_eq(rw.reply.len[9], 0);
}

Test(reply, control_chars_replaced)
{
	size_t c;

	cr_assert_eq(reply_both(S("250 a\x01" "b\tc\x7f\rd\x1b[31m\r\n"), &c), SMTP_OK);
	cr_assert(line_is(&rw.reply, 0, "a?b\tc??d?[31m"));
	cr_assert_eq(reply_both(S("250 a\0b\r\n"), &c), SMTP_OK);
	cr_assert(line_is(&rw.reply, 0, "a?b"));
}

Test(reply, back_to_back)
{
	const char in[] = "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n";
	size_t c;

	cr_assert_eq(reply_both(in, sizeof(in) - 1, &c), SMTP_OK);
	cr_assert_eq(c, 14);
	cr_assert_str_eq(rw.reply.enh, "2.1.0");
	/* after OK the parser takes nothing more until re-initialised */
	size_t c2;
	cr_assert_eq(smtp_reply_feed(&rw, in + c, sizeof(in) - 1 - c, &c2), SMTP_OK);
	cr_assert_eq(c2, 0);
	cr_assert_eq(reply_both(in + 14, sizeof(in) - 15, &c), SMTP_OK);
	cr_assert_eq(c, 14);
	cr_assert_str_eq(rw.reply.enh, "2.1.5");
}

Test(reply, fragmented)
{
	const char in[] = "250-smtp.example\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n";
	size_t total = sizeof(in) - 1;

	/* every split point into two pieces */
	for (size_t cut = 0; cut <= total; cut++) {
		size_t c1, c2 = 0;
		smtp_reply_init(&rb);
		enum smtp_res r = smtp_reply_feed(&rb, in, cut, &c1);
		if (r == SMTP_AGAIN)
			r = smtp_reply_feed(&rb, in + cut, total - cut, &c2);
		cr_assert_eq(r, SMTP_OK);
		cr_assert_eq(c1 + c2, total);
		cr_assert_eq(rb.reply.nlines, 3);
	}
}

Test(reply, format_and_summary)
{
	size_t c;
	char out[128];

	cr_assert_eq(reply_both(S("250-2.0.0 first\r\n250-second\r\n250 2.0.0\r\n"), &c), SMTP_OK);
	size_t n = smtp_reply_format(&rw.reply, out, sizeof(out));
	cr_assert_str_eq(out, "250-2.0.0 first\r\n250-2.0.0 second\r\n250 2.0.0\r\n");
	cr_assert_eq(n, strlen(out));
	cr_assert_eq(smtp_reply_format(&rw.reply, out, n - 1), 0);
	cr_assert_eq(smtp_reply_format(&rw.reply, out, n), n);
	n = smtp_reply_summary(&rw.reply, out, sizeof(out));
	cr_assert_str_eq(out, "250 2.0.0 first");
	cr_assert_eq(n, 15);
	n = smtp_reply_summary(&rw.reply, out, 8);
	cr_assert_str_eq(out, "250 2.0");
	cr_assert_eq(reply_both(S("250\r\n"), &c), SMTP_OK);
	smtp_reply_format(&rw.reply, out, sizeof(out));
	cr_assert_str_eq(out, "250\r\n");
	smtp_reply_summary(&rw.reply, out, sizeof(out));
	cr_assert_str_eq(out, "250");
}

/* ---- queue ids ------------------------------------------------------ */

static const char *qid(const char *wire)
{
	static char out[128];
	size_t c;

	cr_assert_eq(reply_both(wire, strlen(wire), &c), SMTP_OK);
	size_t n = smtp_reply_queue_id(&rw.reply, out, sizeof(out));
	cr_assert_eq(n, strlen(out));
	return out;
}

Test(queue_id, providers)
{
	cr_assert_str_eq(qid("250 2.0.0 Ok: queued as 4ABC123\r\n"), "4ABC123");
	cr_assert_str_eq(qid("250 Ok: queued as X1y-Z\r\n"), "X1y-Z");
	cr_assert_str_eq(qid("250 Ok 0100018c1e2f3a4b-abcd1234-5678-90ab-cdef-1234567890ab-000000\r\n"),
	    "0100018c1e2f3a4b-abcd1234-5678-90ab-cdef-1234567890ab-000000");
	cr_assert_str_eq(qid("250 Great success\r\n"), "");
	cr_assert_str_eq(qid("250 OK id=1rABCD-0001Xy-2Z\r\n"), "1rABCD-0001Xy-2Z");
	cr_assert_str_eq(qid("250 2.0.0 Ok: queued as: AB12CD.\r\n"), "AB12CD");
	cr_assert_str_eq(qid("250 2.0.0 OK  1700000000 d12-20020a05600c.123 - gsmtp\r\n"),
	    "d12-20020a05600c.123");
	cr_assert_str_eq(qid("250 Ok <msg.abc@example.com>\r\n"), "msg.abc@example.com");
	cr_assert_str_eq(qid("250 2.0.0 Ok\r\n"), "");
	cr_assert_str_eq(qid("250 Queued as \x01\r\n"), "");
	cr_assert_str_eq(qid("550 5.0.0 queued as ABC\r\n"), "");
	cr_assert_str_eq(qid("250 Ok abc$12345\r\n"), "");
}

Test(queue_id, small_output)
{
	char out[4];
	size_t c;

	cr_assert_eq(reply_both(S("250 queued as ABCDEF\r\n"), &c), SMTP_OK);
	cr_assert_eq(smtp_reply_queue_id(&rw.reply, out, sizeof(out)), 0);
	cr_assert_str_eq(out, "");
	cr_assert_eq(reply_both(S("250 Ok 0100018c1e2f3a4b-abcd\r\n"), &c), SMTP_OK);
	cr_assert_eq(smtp_reply_queue_id(&rw.reply, out, sizeof(out)), 0);
	cr_assert_str_eq(out, "");
}

/* ---- capabilities ------------------------------------------------- */

static struct smtp_caps caps(const char *wire)
{
	struct smtp_caps c;
	size_t n;

	cr_assert_eq(reply_both(wire, strlen(wire), &n), SMTP_OK);
	smtp_caps_parse(&rw.reply, &c);
	return c;
}

Test(caps, postfix)
{
	struct smtp_caps c = caps("250-mail.example.org\r\n250-PIPELINING\r\n"
	    "250-SIZE 10240000\r\n250-VRFY\r\n250-ETRN\r\n250-STARTTLS\r\n"
	    "250-AUTH PLAIN LOGIN\r\n250-AUTH=PLAIN LOGIN\r\n"
	    "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n"
	    "250-SMTPUTF8\r\n250 CHUNKING\r\n");

	cr_assert(c.pipelining && c.starttls && c.enhanced && c.eightbitmime);
	cr_assert(c.dsn && c.smtputf8 && c.chunking && c.size_known);
	cr_assert_eq(c.size, 10240000);
	cr_assert_eq(c.auth, SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN);
}

Test(caps, gmail)
{
	struct smtp_caps c = caps("250-smtp.gmail.com at your service, [203.0.113.5]\r\n"
	    "250-SIZE 35882577\r\n250-8BITMIME\r\n"
	    "250-AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH\r\n"
	    "250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n250-CHUNKING\r\n"
	    "250 SMTPUTF8\r\n");

	cr_assert(!c.starttls && !c.dsn);
	cr_assert_eq(c.size, 35882577);
	cr_assert_eq(c.auth, SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN |
	    SMTP_AUTH_XOAUTH2 | SMTP_AUTH_OAUTHBEARER);
}

Test(caps, ses_and_variants)
{
	struct smtp_caps c = caps("250-email-smtp.amazonaws.com\r\n250-8BITMIME\r\n"
	    "250-STARTTLS\r\n250-AUTH=PLAIN LOGIN\r\n250-SIZE 10485760\r\n250 Ok\r\n");

	cr_assert(c.starttls && c.eightbitmime && !c.pipelining);
	cr_assert_eq(c.auth, SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN);

	c = caps("250-x\r\n250-auth cram-md5\r\n250-size\r\n250 starttls\r\n");
	cr_assert_eq(c.auth, SMTP_AUTH_CRAM_MD5);
	cr_assert(c.size_known && c.size == 0 && c.starttls);
	c = caps("250-x\r\n250 SIZE 99999999999999999999999\r\n");
	cr_assert_eq(c.size, UINT64_MAX);
	/* the first line is the greeting name, never a keyword */
	c = caps("250 STARTTLS\r\n");
	cr_assert(!c.starttls);
	c = caps("550 5.0.0 no\r\n");
	cr_assert(!c.starttls && c.auth == 0);
	c = caps("250-x\r\n250 STARTTLSX\r\n");
	cr_assert(!c.starttls);
}
