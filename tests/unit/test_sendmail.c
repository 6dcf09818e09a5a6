/*
 * test_sendmail.c - relay25-sendmail's pure parts: address lists (display
 * names, groups, comments, routes, folding), the header section (-t
 * recipients, Bcc removal, From added, the end of the section, the size
 * limit) and the DATA encoder (LF to CR LF, dot-stuffing, -i), each fed
 * whole and one byte at a time.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "sm_addr.h"
#include "sm_conf.h"
#include "sm_msg.h"

/* ---- address lists -------------------------------------------------- */

struct got {
	char s[2048];           /* addresses joined by '|' */
	int n;
};

static int
collect(const char *a, size_t len, void *arg)
{
	struct got *g = arg;
	size_t l = strlen(g->s);

	snprintf(g->s + l, sizeof g->s - l, "%s%.*s", g->n ? "|" : "",
	    (int)len, a);
	g->n++;
	return 0;
}

static int
addrs(const char *s, struct got *g)
{
	memset(g, 0, sizeof *g);
	return sm_addr_list(s, strlen(s), collect, g);
}

#define ADDRS(in, want, errs) do { \
	struct got g_; \
	int e_ = addrs(in, &g_); \
	cr_assert_str_eq(g_.s, want, "%s -> %s", in, g_.s); \
	cr_assert_eq(e_, errs, "%s: %d errors", in, e_); \
} while (0)

Test(addr, plain_and_lists)
{
	ADDRS("a@example.com", "a@example.com", 0);
	ADDRS("  a@example.com , b@example.org", "a@example.com|b@example.org", 0);
	ADDRS("<a@example.com>", "a@example.com", 0);
	ADDRS(", ,a@x,,b@y,", "a@x|b@y", 0);
	ADDRS("", "", 0);
	ADDRS("root", "root", 0);
}

Test(addr, display_names)
{
	ADDRS("Alice Example <alice@x>", "alice@x", 0);
	ADDRS("\"Doe, John\" <john@x>, k@y", "john@x|k@y", 0);
	ADDRS("\"A, B\" <a@b>", "a@b", 0);
	ADDRS("\"Quote \\\" and, comma\" <q@x>", "q@x", 0);
	ADDRS("=?utf-8?q?J=C3=BCrgen?= <j@x>", "j@x", 0);
	ADDRS("Jürgen Müller <jm@x>", "jm@x", 0);
}

Test(addr, comments)
{
	ADDRS("a@x (Alice)", "a@x", 0);
	ADDRS("a@x (Alice, (nested) one), b@y", "a@x|b@y", 0);
	ADDRS("(lead) Bob (mid) <b@y> (trail)", "b@y", 0);
	ADDRS("a@x (unterminated", "", 1);
}

Test(addr, groups)
{
	ADDRS("undisclosed-recipients:;", "", 0);
	ADDRS("team: a@x, \"C, D\" <c@d>;, e@f", "a@x|c@d|e@f", 0);
	ADDRS("Friends: a@x;", "a@x", 0);
	ADDRS("g: a@x", "a@x", 0);
}

Test(addr, routes_quotes_folding)
{
	ADDRS("<@r1.example,@r2.example:u@d>", "u@d", 0);
	ADDRS("\"a b\"@example.com", "\"a b\"@example.com", 0);
	ADDRS("A <a@x>,\r\n\tB <b@y>,\n c@z", "a@x|b@y|c@z", 0);
	ADDRS("a @ x . com", "a@x.com", 0);
	ADDRS("<>", "", 0);
}

Test(addr, malformed)
{
	ADDRS("John Smith", "", 1);
	ADDRS("John Smith, ok@x", "ok@x", 1);
	ADDRS("<a@x", "", 1);
	ADDRS("a@x>", "", 1);
	ADDRS("\"unterminated@x", "", 1);
	ADDRS("<a@x> junk, b@y", "b@y", 1);
	ADDRS("<a@x, b@y>", "", 1);
	ADDRS("a\001b@x", "", 1);

	char big[700];
	memset(big, 'a', sizeof big - 3);
	memcpy(big + sizeof big - 3, "@x", 3);
	ADDRS(big, "", 1);
}

static int
stop_first(const char *a, size_t len, void *arg)
{
	(void)a; (void)len;
	++*(int *)arg;
	return 1;
}

Test(addr, callback_stops)
{
	int n = 0;
	cr_assert_eq(sm_addr_list("a@x, b@y", 8, stop_first, &n), -1);
	cr_assert_eq(n, 1);
}

/* ---- the header section --------------------------------------------- */

struct out {
	char s[8192];
	size_t n;
	struct sm_enc enc;
};

static int
enc_put(const char *d, size_t len, void *arg)
{
	struct out *o = arg;

	while (len) {
		size_t used, n;
		sm_enc_feed(&o->enc, d, len, &used, o->s + o->n,
		    sizeof o->s - o->n - 1, &n);
		o->n += n;
		d += used;
		len -= used;
		if (o->enc.ended)
			break;
		cr_assert_lt(o->n + SM_ENC_RESERVE, sizeof o->s);
	}
	o->s[o->n] = '\0';
	return 0;
}

/* Feed msg (chunk bytes at a time; 0: whole) into a header section. */
static void
head_of(struct sm_head *h, const char *msg, size_t chunk, bool dot_ends)
{
	size_t len = strlen(msg), pos = 0;
	enum sm_res r = SM_AGAIN;

	sm_head_init(h, dot_ends, SM_HEAD_MAX);
	if (!chunk)
		chunk = len ? len : 1;
	while (pos < len && r == SM_AGAIN) {
		size_t k = len - pos < chunk ? len - pos : chunk;
		r = sm_head_feed(h, msg + pos, k);
		pos += k;
	}
	cr_assert_neq(r, SM_ERROR);
	if (r == SM_AGAIN)
		sm_head_finish(h);
}

/* The message as sent, with stdin's remainder after the head appended. */
static void
emit(const char *msg, size_t chunk, bool dot_ends, const char *from,
    struct out *o)
{
	struct sm_head h;
	size_t len = strlen(msg), pos = 0;
	enum sm_res r = SM_AGAIN;

	memset(o, 0, sizeof *o);
	sm_enc_init(&o->enc, dot_ends);
	sm_head_init(&h, dot_ends, SM_HEAD_MAX);
	if (!chunk)
		chunk = len ? len : 1;
	while (pos < len && r == SM_AGAIN) {
		size_t k = len - pos < chunk ? len - pos : chunk;
		r = sm_head_feed(&h, msg + pos, k);
		pos += k;
	}
	if (r == SM_AGAIN)
		sm_head_finish(&h);
	sm_head_emit(&h, from, enc_put, o);
	if (!h.dot_end && pos < len)
		enc_put(msg + pos, len - pos, o);
	o->n += sm_enc_finish(&o->enc, o->s + o->n);
	o->s[o->n] = '\0';
	sm_head_free(&h);
}

#define EMIT(in, dots, from, want) do { \
	struct out o_, b_; \
	emit(in, 0, dots, from, &o_); \
	emit(in, 1, dots, from, &b_); \
	cr_assert_str_eq(o_.s, want, "got [%s]", o_.s); \
	cr_assert_str_eq(b_.s, want, "bytewise got [%s]", b_.s); \
} while (0)

static void
rcpts_of(const char *msg, size_t chunk, struct got *g, int *errs,
    const char **field)
{
	struct sm_head h;

	memset(g, 0, sizeof *g);
	head_of(&h, msg, chunk, false);
	*errs = sm_head_recipients(&h, collect, g, field);
	sm_head_free(&h);
}

#define RCPTS(in, want) do { \
	for (size_t c_ = 0; c_ < 2; c_++) { \
		struct got g_; int e_; const char *f_; \
		rcpts_of(in, c_, &g_, &e_, &f_); \
		cr_assert_str_eq(g_.s, want, "got %s", g_.s); \
		cr_assert_eq(e_, 0); \
	} \
} while (0)

Test(head, recipients_to_cc_bcc)
{
	RCPTS("To: a@x, \"B, b\" <b@y>\nCc: c@z\nBcc: hidden@w\n"
	    "Subject: s\n\nTo: not@body\n", "a@x|b@y|c@z|hidden@w");
	RCPTS("to: a@x\nCC: (c) c@z\nBCC: d@w\n\n", "a@x|c@z|d@w");
	RCPTS("Subject: none\n\nbody\n", "");
	RCPTS("To: undisclosed-recipients:;\nBcc: x@y\n\n", "x@y");
}

Test(head, recipients_folded)
{
	RCPTS("To: A <a@x>,\n B <b@y>,\r\n\tC\r\n <c@z>\r\nSubject: s\r\n\r\n",
	    "a@x|b@y|c@z");
}

Test(head, recipients_resent)
{
	RCPTS("To: old@x\nResent-To: new@y\nResent-Bcc: nb@z\n\n", "new@y|nb@z");
}

Test(head, recipients_malformed)
{
	struct got g;
	int errs;
	const char *field;

	rcpts_of("To: ok@x\nCc: John Smith\n\n", 0, &g, &errs, &field);
	cr_assert_eq(errs, 1);
	cr_assert_str_eq(field, "Cc");
	cr_assert_str_eq(g.s, "ok@x");
}

Test(head, bcc_removed)
{
	EMIT("To: a@x\nBcc: secret@y,\n  other@z\nSubject: s\n\nbody\n", true,
	    NULL, "To: a@x\r\nSubject: s\r\n\r\nbody\r\n");
	EMIT("Resent-Bcc: r@x\nbcc: s@y\nFrom: f@x\n\nb\n", true, NULL,
	    "From: f@x\r\n\r\nb\r\n");
}

Test(head, from_added_only_when_missing)
{
	EMIT("Subject: s\n\nb\n", true, "From: me@host\n",
	    "Subject: s\r\nFrom: me@host\r\n\r\nb\r\n");
	EMIT("FROM: them@x\nSubject: s\n\nb\n", true, "From: me@host\n",
	    "FROM: them@x\r\nSubject: s\r\n\r\nb\r\n");
	/* no header section at all: From and a separator come first */
	EMIT("just a body\nline 2\n", true, "From: me@host\n",
	    "From: me@host\r\n\r\njust a body\r\nline 2\r\n");
	/* an unterminated last field is ended before the added From */
	EMIT("Subject: s", true, "From: me@host\n",
	    "Subject: s\r\nFrom: me@host\r\n");
}

Test(head, section_end)
{
	/* a body line without an empty line before it */
	EMIT("Subject: s\nthis is body\n", true, NULL,
	    "Subject: s\r\n\r\nthis is body\r\n");
	/* an mbox envelope line is dropped */
	EMIT("From someone@x Mon Jan  1 00:00:00 2024\nSubject: s\n\nb\n", true,
	    NULL, "Subject: s\r\n\r\nb\r\n");
	/* obsolete space before the colon is still a field */
	EMIT("Subject : s\n\nb\n", true, NULL, "Subject : s\r\n\r\nb\r\n");
	/* headers only */
	EMIT("Subject: s\n", true, NULL, "Subject: s\r\n");
	EMIT("Subject: s\n\n", true, NULL, "Subject: s\r\n\r\n");
	/* a field name starting with a dot is stuffed */
	EMIT(".X: y\n\nb\n", true, NULL, "..X: y\r\n\r\nb\r\n");
}

Test(head, dot_in_header_section)
{
	EMIT("Subject: s\n.\nnot sent\n", true, NULL, "Subject: s\r\n");
	EMIT("Subject: s\n.\nsent\n", false, NULL,
	    "Subject: s\r\n\r\n..\r\nsent\r\n");
	EMIT(".\n", true, "From: me@h\n", "From: me@h\r\n");
}

Test(head, limit)
{
	struct sm_head h;
	char line[100];

	sm_head_init(&h, true, 1000);
	memset(line, 'x', sizeof line);
	memcpy(line, "X-Long: ", 8);
	line[sizeof line - 1] = '\n';
	enum sm_res r = SM_AGAIN;
	for (int i = 0; i < 20 && r == SM_AGAIN; i++)
		r = sm_head_feed(&h, line, sizeof line);
	cr_assert_eq(r, SM_ERROR);
	sm_head_free(&h);

	/* a section that ends in time is fine, whatever follows */
	sm_head_init(&h, true, 1000);
	cr_assert_eq(sm_head_feed(&h, "A: b\n\n", 6), SM_DONE);
	sm_head_free(&h);
}

/* ---- the DATA encoder ----------------------------------------------- */

/* Encode in (len bytes) fed chunk bytes at a time into outcap pieces. */
static size_t
encode(const char *in, size_t len, bool dot_ends, size_t chunk, size_t outcap,
    char *out, size_t *consumed)
{
	struct sm_enc e;
	size_t pos = 0, olen = 0;

	sm_enc_init(&e, dot_ends);
	while (pos < len && !e.ended) {
		size_t k = len - pos < chunk ? len - pos : chunk, used, n;
		sm_enc_feed(&e, in + pos, k, &used, out + olen, outcap, &n);
		cr_assert(used > 0 || e.ended);
		cr_assert_leq(n, outcap);
		olen += n;
		pos += used;
	}
	olen += sm_enc_finish(&e, out + olen);
	out[olen] = '\0';
	*consumed = pos;
	return olen;
}

static void
enc_check(const char *in, bool dot_ends, const char *want, size_t want_used)
{
	static char a[8192], b[8192], c[8192];
	size_t len = strlen(in), ua, ub, uc;

	encode(in, len, dot_ends, len ? len : 1, 4096, a, &ua);
	encode(in, len, dot_ends, 1, 4096, b, &ub);
	encode(in, len, dot_ends, 3, SM_ENC_RESERVE, c, &uc);
	cr_assert_str_eq(a, want, "[%s] -> [%s]", in, a);
	cr_assert_str_eq(b, want, "bytewise [%s] -> [%s]", in, b);
	cr_assert_str_eq(c, want, "tiny [%s] -> [%s]", in, c);
	cr_assert_eq(ua, want_used, "[%s]: used %zu", in, ua);
	cr_assert_eq(ub, want_used);
	cr_assert_eq(uc, want_used);
}

Test(enc, line_ends)
{
	enc_check("a\nb\n", false, "a\r\nb\r\n", 4);
	enc_check("a\r\nb\r\n", false, "a\r\nb\r\n", 6);
	enc_check("a\nb", false, "a\r\nb\r\n", 3);
	enc_check("a\rb\n", false, "a\rb\r\n", 4);     /* bare CR kept */
	enc_check("a\r", false, "a\r\n", 2);     /* CR at the end ends the line */
	enc_check("\n\n", false, "\r\n\r\n", 2);
	enc_check("", false, "", 0);
}

Test(enc, dot_stuffing)
{
	enc_check(".hidden\n", false, "..hidden\r\n", 8);
	enc_check("a\n.b\n..c\n", false, "a\r\n..b\r\n...c\r\n", 9);
	enc_check("x.\n", false, "x.\r\n", 3);
	enc_check("a\r\n.\r\nb\r\n", false, "a\r\n..\r\nb\r\n", 9);
	enc_check("a\n.", false, "a\r\n..\r\n", 3);
	/* with dot_ends, a dot that is not alone is stuffed too */
	enc_check(".b\n", true, "..b\r\n", 3);
	enc_check(".\rx\n", true, "..\rx\r\n", 4);
}

Test(enc, dot_ends_input)
{
	enc_check("a\n.\nnot this\n", true, "a\r\n", 4);
	enc_check("a\r\n.\r\nnot this\r\n", true, "a\r\n", 6);
	enc_check(".\n", true, "", 2);
	enc_check("a\n.", true, "a\r\n", 3);           /* "." as the last line */
	enc_check("a\n.\r", true, "a\r\n", 4);
	/* with -i the same input is all delivered */
	enc_check("a\n.\nthis too\n", false, "a\r\n..\r\nthis too\r\n", 13);
}

Test(enc, eight_bit_and_nul)
{
	enc_check("gr\xc3\xbc\xc3\x9f\n\xff\n", false,
	    "gr\xc3\xbc\xc3\x9f\r\n\xff\r\n", 9);
}

/* ---- the submission address ------------------------------------------ */

Test(conf, addresses)
{
	struct sm_target t;

	cr_assert_eq(sm_conf_parse_addr("127.0.0.1:2525", &t), 0);
	cr_assert_str_eq(t.host, "127.0.0.1");
	cr_assert_str_eq(t.port, "2525");
	cr_assert_eq(sm_conf_parse_addr("[::1]:25 127.0.0.1:25", &t), 0);
	cr_assert_str_eq(t.host, "::1");
	cr_assert_str_eq(t.text, "[::1]:25");
	cr_assert_eq(sm_conf_parse_addr("localhost", &t), 0);
	cr_assert_str_eq(t.text, "localhost:25");
	cr_assert_eq(sm_conf_parse_addr("0.0.0.0:25", &t), 0);
	cr_assert_str_eq(t.host, "127.0.0.1");
	cr_assert_eq(sm_conf_parse_addr("*:587", &t), 0);
	cr_assert_str_eq(t.text, "127.0.0.1:587");
	cr_assert_eq(sm_conf_parse_addr("[::]:25", &t), 0);
	cr_assert_str_eq(t.host, "::1");
	cr_assert_eq(sm_conf_parse_addr("[::1]", &t), 0);
	cr_assert_str_eq(t.port, "25");
	cr_assert_eq(sm_conf_parse_addr("relay25:25", &t), 0);
	cr_assert_str_eq(t.host, "relay25");

	cr_assert_eq(sm_conf_parse_addr("", &t), -1);
	cr_assert_eq(sm_conf_parse_addr("127.0.0.1:0", &t), -1);
	cr_assert_eq(sm_conf_parse_addr("127.0.0.1:65536", &t), -1);
	cr_assert_eq(sm_conf_parse_addr("127.0.0.1:", &t), -1);
	cr_assert_eq(sm_conf_parse_addr("127.0.0.1:x", &t), -1);
	cr_assert_eq(sm_conf_parse_addr("[::1", &t), -1);
	cr_assert_eq(sm_conf_parse_addr("[::1]x", &t), -1);
}
