/*
 * fuzz_headers.c - libFuzzer target: the upstream header filter.
 *
 * Input: 4 control bytes, then the message. Byte 0 picks the options
 * (rewrite_from, add_reply_to, add_missing, the address, the time),
 * byte 1 the chunk size of the segmented run, bytes 2..3 an optional
 * expansion so that a small input can pass the bounds: when byte 2 is 0xEE
 * (0xEF) the first byte-3 bytes of the message are repeated up to just
 * past HDR_SECTION_MAX (HDR_FIELD_MAX) bytes before it. Other values of
 * byte 2 mean no expansion, so most inputs stay small and fast.
 *
 * Checks: options off, the output is the input; whole, chunked with the
 * minimum output buffer, and (for small messages) one byte at a time give
 * the same output and verdicts; unchanged means output == input; the bytes
 * after the first empty line come out unchanged at the end; clean CRLF
 * input gives clean CRLF output; a filter that did not give up is
 * idempotent (its output, filtered again, is the same); no crash, ASan and
 * UBSan clean.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "relay25/headers.h"

#define MSG_MAX (512 * 1024)
#define OUT_MAX (4 * MSG_MAX + 4 * HDR_OUT_RESERVE)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
	char *out;
	size_t outlen;
	enum hdr_stop stop;
	bool changed, gave_up;
	char orig[HDR_ADDR_MAX + 1];
};

static struct hdr_filter filt;
static char *msg, *piece;
static struct run runs[4];

static void run(const struct hdr_params *p, const char *in, size_t len,
    size_t chunk, size_t outcap, struct run *r)
{
	size_t pos = 0, used, n;

	hdr_filter_init(&filt, p);
	r->outlen = 0;
	while (pos < len) {
		size_t k = len - pos < chunk ? len - pos : chunk;
		hdr_filter_feed(&filt, in + pos, k, &used, piece, outcap, &n);
		assert(used <= k && n <= outcap);
		assert(used > 0);
		assert(r->outlen + n <= OUT_MAX);
		memcpy(r->out + r->outlen, piece, n);
		r->outlen += n;
		pos += used;
	}
	hdr_filter_finish(&filt, piece, outcap, &n);
	assert(n <= outcap && r->outlen + n <= OUT_MAX);
	memcpy(r->out + r->outlen, piece, n);
	r->outlen += n;
	r->stop = hdr_filter_stop(&filt);
	r->changed = hdr_filter_changed(&filt);
	r->gave_up = hdr_filter_gave_up(&filt);
	const char *o = hdr_filter_original_from(&filt);
	assert(strlen(o) <= HDR_ADDR_MAX);
	assert(!strchr(o, '\r') && !strchr(o, '\n'));
	strcpy(r->orig, o);
}

static bool same(const struct run *a, const struct run *b)
{
	return a->outlen == b->outlen &&
	    memcmp(a->out, b->out, a->outlen) == 0 && a->stop == b->stop &&
	    a->changed == b->changed && a->gave_up == b->gave_up &&
	    strcmp(a->orig, b->orig) == 0;
}

/* Only CRLF line ends, and ending with one (or empty). */
static bool clean_crlf(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\r' && (i + 1 == n || s[i + 1] != '\n'))
			return false;
		if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
			return false;
	}
	return n == 0 || s[n - 1] == '\n';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const froms[] = { "noreply@example.com",
	    "a@b.c", "x.y+z@relay25.example.org", "NoReply@Example.COM" };
	struct hdr_params p;
	size_t len = 0;

	if (size < 4 || size > MSG_MAX)
		return -1;
	if (!msg) {
		msg = malloc(MSG_MAX);
		piece = malloc(HDR_OUT_RESERVE > 65536 ? HDR_OUT_RESERVE : 65536);
		for (int i = 0; i < 4; i++)
			runs[i].out = malloc(OUT_MAX);
		if (!msg || !piece || !runs[3].out)
			abort();
	}
	uint8_t opt = data[0], ch = data[1], rep = data[2], pre = data[3];
	const char *body = (const char *)data + 4;
	size_t blen = size - 4;

	if ((rep == 0xEE || rep == 0xEF) && pre && blen) {
		size_t pl = pre < blen ? pre : blen;
		size_t upto = (rep == 0xEE ? HDR_SECTION_MAX : HDR_FIELD_MAX) + 300;
		while (len < upto) {
			memcpy(msg + len, body, pl);
			len += pl;
		}
	}
	if (len + blen > MSG_MAX)
		return -1;
	memcpy(msg + len, body, blen);
	len += blen;

	/* all off: exact pass-through */
	memset(&p, 0, sizeof p);
	run(&p, msg, len, len ? len : 1, 65536, &runs[0]);
	assert(runs[0].stop == HDR_STOP_OFF && !runs[0].changed);
	assert(runs[0].outlen == len && memcmp(runs[0].out, msg, len) == 0);

	p.rewrite_from = opt & 1 ? froms[(opt >> 3) & 3] : NULL;
	p.add_reply_to = (opt & 2) != 0;
	p.add_missing = (opt & 4) != 0;
	p.msgid_domain = "relay.example";
	p.now = opt & 0x20 ? (time_t)1700000000 : (time_t)(opt & 0x40 ? -1 : 0);
	p.tz_offset = opt & 0x80 ? -(int)ch * 5 : (int)ch;
	memcpy(p.random, data, size < 16 ? size : 16);
	assert(hdr_filter_init(&filt, &p));

	run(&p, msg, len, len ? len : 1, 65536, &runs[0]);
	run(&p, msg, len, (size_t)ch + 1, HDR_OUT_RESERVE, &runs[1]);
	assert(same(&runs[1], &runs[0]));
	if (len <= 8192) {
		run(&p, msg, len, 1, HDR_OUT_RESERVE, &runs[2]);
		assert(same(&runs[2], &runs[0]));
	}
	const struct run *r = &runs[0];
	if (!r->changed)
		assert(r->outlen == len && memcmp(r->out, msg, len) == 0);
	if (!p.rewrite_from && !p.add_missing)
		assert(r->stop == HDR_STOP_OFF && !r->changed);

	/* the bytes after the first empty line come out at the end */
	const char *e = len >= 2 && msg[0] == '\r' && msg[1] == '\n' ? msg :
	    memmem(msg, len, "\r\n\r\n", 4);
	if (e) {
		size_t skip = (size_t)(e - msg) + (e == msg ? 2 : 4), bl = len - skip;
		assert(r->outlen >= bl);
		assert(memcmp(r->out + r->outlen - bl, msg + skip, bl) == 0);
	}
	if (clean_crlf(msg, len))
		assert(clean_crlf(r->out, r->outlen));

	/* idempotent when it did not give up */
	if (!r->gave_up && r->stop != HDR_STOP_OFF && r->outlen <= MSG_MAX) {
		run(&p, r->out, r->outlen, r->outlen ? r->outlen : 1, 65536, &runs[3]);
		assert(runs[3].outlen == r->outlen);
		assert(memcmp(runs[3].out, r->out, r->outlen) == 0);
	}
	return 0;
}
