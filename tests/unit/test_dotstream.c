/*
 * test_dotstream.c - the DATA decoder: end of data, normalisation,
 * stuffing, and every published SMTP smuggling vector, each fed whole,
 * one byte at a time, and with the smallest output buffer.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "relay25/dotstream.h"

struct run {
	enum dot_res res;
	size_t consumed;
	char out[8192];
	size_t outlen;
	struct dot_decoder d;
};

/* Decode in[0..len) fed `chunk` bytes at a time into `outcap`-sized
 * output pieces. Stops at DOT_END. */
static void decode(const char *in, size_t len, size_t chunk, size_t outcap,
    struct run *r)
{
	char piece[4096];
	size_t pos = 0;

	cr_assert_leq(outcap, sizeof(piece));
	memset(r, 0, sizeof(*r));
	dot_init(&r->d, false);
	r->res = DOT_AGAIN;
	while (pos < len && r->res == DOT_AGAIN) {
		size_t k = len - pos < chunk ? len - pos : chunk, used, n;
		r->res = dot_decode(&r->d, in + pos, k, &used, piece, outcap, &n);
		cr_assert_leq(used, k);
		cr_assert_leq(n, outcap);
		cr_assert(used > 0 || r->res == DOT_END, "no progress");
		cr_assert_leq(r->outlen + n, sizeof(r->out));
		memcpy(r->out + r->outlen, piece, n);
		r->outlen += n;
		pos += used;
	}
	r->consumed = pos;
}

static struct run whole, bytes, tiny, tinybytes;

/* All four ways must give the same result. */
static void decode_all(const char *in, size_t len)
{
	decode(in, len, len ? len : 1, 4096, &whole);
	decode(in, len, 1, 4096, &bytes);
	decode(in, len, len ? len : 1, DOT_OUT_RESERVE, &tiny);
	decode(in, len, 1, DOT_OUT_RESERVE, &tinybytes);
	const struct run *o[] = { &bytes, &tiny, &tinybytes };
	for (size_t i = 0; i < 3; i++) {
		cr_assert_eq(o[i]->res, whole.res, "variant %zu", i);
		cr_assert_eq(o[i]->consumed, whole.consumed, "variant %zu", i);
		cr_assert_eq(o[i]->outlen, whole.outlen, "variant %zu", i);
		cr_assert(memcmp(o[i]->out, whole.out, whole.outlen) == 0);
		cr_assert_eq(o[i]->d.in_bytes, whole.d.in_bytes);
		cr_assert_eq(o[i]->d.out_bytes, whole.d.out_bytes);
		cr_assert_eq(o[i]->d.bare_eols, whole.d.bare_eols);
		cr_assert_eq(o[i]->d.nuls, whole.d.nuls);
	}
	cr_assert_eq(whole.d.in_bytes, whole.consumed);
	cr_assert_eq(whole.d.out_bytes, whole.outlen);
}

/* Output invariants: no NUL, CR only in CR LF, LF only after CR, no line
 * that is exactly ".", and (at the end) only complete lines. */
static void check_wire(const struct run *r)
{
	const char *s = r->out;
	size_t n = r->outlen, bol = 0;

	for (size_t i = 0; i < n; i++) {
		cr_assert_neq(s[i], '\0', "NUL at %zu", i);
		if (s[i] == '\r')
			cr_assert(i + 1 < n && s[i + 1] == '\n', "bare CR at %zu", i);
		if (s[i] == '\n') {
			cr_assert(i > 0 && s[i - 1] == '\r', "bare LF at %zu", i);
			cr_assert(!(i - 1 - bol == 1 && s[bol] == '.'),
			    "lone dot line at %zu", bol);
			bol = i + 1;
		}
	}
	if (r->res == DOT_END)
		cr_assert_eq(bol, n, "incomplete last line");
}

#define S(x) x, sizeof(x) - 1

static void expect(const char *in, size_t len, enum dot_res res,
    size_t consumed, const char *out, size_t outlen)
{
	decode_all(in, len);
	check_wire(&whole);
	cr_assert_eq(whole.res, res);
	cr_assert_eq(whole.consumed, consumed, "consumed %zu", whole.consumed);
	cr_assert_eq(whole.outlen, outlen, "out %zu: %.*s", whole.outlen,
	    (int)whole.outlen, whole.out);
	cr_assert(memcmp(whole.out, out, outlen) == 0, "out: %.*s",
	    (int)whole.outlen, whole.out);
}

Test(dot, empty_message)
{
	expect(S(".\r\n"), DOT_END, 3, "", 0);
	expect(S(".\r\nMAIL FROM:<x>\r\n"), DOT_END, 3, "", 0);
}

Test(dot, simple_and_stop_after_end)
{
	expect(S("Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"), DOT_END, 23,
	    "Subject: x\r\n\r\nbody\r\n", 20);
	cr_assert_eq(whole.d.bare_eols, 0);
	/* decoder stays ended */
	size_t used, n;
	char out[16];
	cr_assert_eq(dot_decode(&whole.d, "x", 1, &used, out, sizeof(out), &n), DOT_END);
	cr_assert_eq(used, 0);
	cr_assert_eq(n, 0);
}

Test(dot, stuffed_lines_pass)
{
	expect(S("..x\r\n..\r\n.x\r\n...\r\n.\r\n"), DOT_END, 21,
	    "..x\r\n..\r\n.x\r\n...\r\n", 18);
}

Test(dot, incomplete)
{
	expect(S("abc\r\n."), DOT_AGAIN, 6, "abc\r\n", 5);
	expect(S("abc\r\n.\r"), DOT_AGAIN, 7, "abc\r\n", 5);
	expect(S("abc\r"), DOT_AGAIN, 4, "abc", 3);
}

Test(dot, split_end_marker)
{
	struct dot_decoder d;
	char out[64];
	size_t used, n;

	dot_init(&d, false);
	cr_assert_eq(dot_decode(&d, S("a\r\n.\r"), &used, out, sizeof(out), &n), DOT_AGAIN);
	cr_assert_eq(used, 5);
	cr_assert_eq(n, 3);
	cr_assert_eq(dot_decode(&d, S("\nrest"), &used, out, sizeof(out), &n), DOT_END);
	cr_assert_eq(used, 1);
	cr_assert_eq(n, 0);
	cr_assert_eq(d.in_bytes, 6);
}

Test(dot, dot_cr_then_other)
{
	expect(S("a\r\n.\rX\r\n.\r\n"), DOT_END, 11, "a\r\n..\r\nX\r\n", 10);
	cr_assert_eq(whole.d.bare_eols, 1);
}

Test(dot, bare_endings_normalised)
{
	expect(S("a\nb\rc\r\n\nd\r\n.\r\n"), DOT_END, 14,
	    "a\r\nb\r\nc\r\n\r\nd\r\n", 14);
	cr_assert_eq(whole.d.bare_eols, 3);
	/* a "." after a bare LF is not the end, and is stuffed */
	expect(S("c\r\n\n.\r\n"), DOT_AGAIN, 7, "c\r\n\r\n..\r\n", 9);
	expect(S("a\r\r\n.\r\n"), DOT_END, 7, "a\r\n\r\n", 5);
	cr_assert_eq(whole.d.bare_eols, 1);
}

Test(dot, nul_removed)
{
	expect(S("a\0b\r\n\0\r\n.\r\n"), DOT_END, 11, "ab\r\n\r\n", 6);
	cr_assert_eq(whole.d.nuls, 2);
}

Test(dot, reject_bare_counts_same)
{
	struct dot_decoder d;
	char out[64];
	size_t used, n;

	dot_init(&d, true);
	cr_assert_eq(dot_decode(&d, S("a\nb\r\n.\r\n"), &used, out, sizeof(out), &n), DOT_END);
	cr_assert_eq(d.bare_eols, 1);
	cr_assert_eq(n, 6);
	cr_assert(memcmp(out, "a\r\nb\r\n", 6) == 0);
}

/* SEC Consult 2023 SMTP smuggling vectors and relatives. */
Test(dot, smuggling_vectors)
{
	static const struct { const char *v; size_t n; } vec[] = {
		{ S("\n.\n") }, { S("\n.\r\n") }, { S("\r\n.\n") },
		{ S("\r.\r") }, { S("\r\n.\r") }, { S("\r\n\0.\r\n") },
		{ S("\r\n.\0\r\n") }, { S("\r.\n") }, { S("\n.\r") },
		{ S("\r.\r\n") }, { S("\r\n.\r\r\n") }, { S("\r\n.\n\r\n") },
		{ S("\r\n\0.\0\r\n") }, { S("\n\n.\n\n") },
	};
	static const char tail[] = "MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\n"
	    "DATA\r\nsmuggled\r\n";
	char msg[256];

	for (size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++) {
		size_t n = 0;
		msg[n++] = 'A';
		memcpy(msg + n, vec[i].v, vec[i].n);
		n += vec[i].n;
		memcpy(msg + n, tail, sizeof(tail) - 1);
		n += sizeof(tail) - 1;
		memcpy(msg + n, ".\r\nNEXT", 7);
		size_t end = n + 3;
		n += 7;

		decode_all(msg, n);
		check_wire(&whole);
		cr_assert_eq(whole.res, DOT_END, "vector %zu", i);
		cr_assert_eq(whole.consumed, end, "vector %zu ended at %zu", i,
		    whole.consumed);
		cr_assert(whole.outlen > 0 && whole.out[whole.outlen - 1] == '\n');
		/* the smuggled commands are inside the message */
		cr_assert_not_null(memmem(whole.out, whole.outlen,
		    "\r\nMAIL FROM:<evil@x>\r\n", 22), "vector %zu", i);
		cr_assert_not_null(memmem(whole.out, whole.outlen,
		    "..\r\n", 4), "vector %zu not stuffed", i);
	}
}

Test(dot, long_input_tiny_output)
{
	static char in[6000];
	size_t n = 0;

	for (int i = 0; i < 500; i++) {
		const char *pieces[] = { ".\n", "x\r", "\0", "..\r\n", "ab\n" };
		const char *p = pieces[i % 5];
		size_t pl = i % 5 == 2 ? 1 : strlen(p);
		memcpy(in + n, p, pl);
		n += pl;
	}
	memcpy(in + n, "\r\n.\r\n", 5);
	n += 5;
	decode_all(in, n);
	check_wire(&whole);
	cr_assert_eq(whole.res, DOT_END);
	cr_assert_eq(whole.consumed, n);
}
