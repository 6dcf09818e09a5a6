/*
 * fuzz_dot.c - libFuzzer target: the DATA decoder. Whole, byte-at-a-time
 * and minimum-output-buffer decoding must agree; the output must hold no
 * NUL, no bare CR or LF, no line that is exactly "."; the end must be the
 * first raw CRLF "." CRLF (counting the start as after CRLF).
 */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "relay25/dotstream.h"

struct run {
	enum dot_res res;
	size_t consumed, outlen;
	struct dot_decoder d;
};

static char outs[3][5 * 70000];

static void run(const char *in, size_t len, size_t chunk, size_t outcap,
    char *out, struct run *r)
{
	char piece[4096];
	size_t pos = 0;

	memset(r, 0, sizeof(*r));
	dot_init(&r->d, chunk == 1);
	r->res = DOT_AGAIN;
	while (pos < len && r->res == DOT_AGAIN) {
		size_t k = len - pos < chunk ? len - pos : chunk, used, n;
		r->res = dot_decode(&r->d, in + pos, k, &used, piece, outcap, &n);
		assert(used <= k && n <= outcap);
		assert(used > 0 || r->res == DOT_END);
		memcpy(out + r->outlen, piece, n);
		r->outlen += n;
		pos += used;
	}
	r->consumed = pos;
}

/* Offset just past the first CRLF.CRLF in "\r\n" + in, or 0. */
static size_t raw_end(const char *in, size_t len)
{
	static const char m[] = "\r\n.\r\n";
	if (len >= 3 && memcmp(in, ".\r\n", 3) == 0)
		return 3;
	for (size_t i = 0; i + 5 <= len; i++)
		if (memcmp(in + i, m, 5) == 0)
			return i + 5;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	struct run r[3];

	if (size > 65536)
		return 0;
	run(in, size, size ? size : 1, 4096, outs[0], &r[0]);
	run(in, size, 1, 4096, outs[1], &r[1]);
	run(in, size, size ? size : 1, DOT_OUT_RESERVE, outs[2], &r[2]);
	for (int i = 1; i < 3; i++) {
		assert(r[i].res == r[0].res && r[i].consumed == r[0].consumed);
		assert(r[i].outlen == r[0].outlen);
		assert(memcmp(outs[i], outs[0], r[0].outlen) == 0);
		assert(r[i].d.bare_eols == r[0].d.bare_eols);
		assert(r[i].d.nuls == r[0].d.nuls);
		assert(r[i].d.out_bytes == r[0].d.out_bytes);
	}
	size_t end = raw_end(in, size);
	if (end) {
		assert(r[0].res == DOT_END && r[0].consumed == end);
	} else {
		assert(r[0].res == DOT_AGAIN && r[0].consumed == size);
	}
	assert(r[0].d.in_bytes == r[0].consumed);
	assert(r[0].d.out_bytes == r[0].outlen);

	const char *o = outs[0];
	size_t n = r[0].outlen, bol = 0, nuls = 0;
	for (size_t i = 0; i < r[0].consumed; i++)
		nuls += in[i] == '\0';
	assert(nuls == r[0].d.nuls);
	for (size_t i = 0; i < n; i++) {
		assert(o[i] != '\0');
		if (o[i] == '\r')
			assert(i + 1 < n && o[i + 1] == '\n');
		if (o[i] == '\n') {
			assert(i > 0 && o[i - 1] == '\r');
			assert(!(i - bol == 2 && o[bol] == '.'));
			bol = i + 1;
		}
	}
	if (r[0].res == DOT_END)
		assert(bol == n);
	/* content preserved: output minus inserted CR/LF/dots equals the
	 * input minus CR/LF/NUL/dots, up to the end marker */
	size_t a = 0, b = 0, lim = end ? end - 3 : size;
	for (;;) {
		while (a < n && (o[a] == '\r' || o[a] == '\n' || o[a] == '.'))
			a++;
		while (b < lim && (in[b] == '\r' || in[b] == '\n' || in[b] == '\0' || in[b] == '.'))
			b++;
		if (a == n || b == lim)
			break;
		assert(o[a] == in[b]);
		a++;
		b++;
	}
	assert(a == n && b == lim);
	return 0;
}
