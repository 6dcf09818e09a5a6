/*
 * fuzz_line.c - libFuzzer target: command line framing, command split and
 * MAIL/RCPT path parsing. Checks that whole and byte-at-a-time framing
 * agree, that the caller's buffer stays bounded, and that every pointer a
 * parser returns lies inside its input.
 */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "relay25/smtp_parse.h"

#define MAXL 64

struct rec {
	size_t len;
	bool too_long, bare, nul;
	uint32_t sum;
};

static void check_cmd(const char *s, size_t n)
{
	struct smtp_cmd c;
	struct smtp_path p;

	if (smtp_cmd_parse(s, n, &c) != SMTP_OK) {
		assert(n == 0);
		return;
	}
	assert(c.arg >= s && c.arg + c.arg_len <= s + n);
	assert(smtp_verb_name(c.verb) != NULL);
	static const char *pre[] = { "FROM:", "TO:" };
	for (int k = 0; k < 2; k++) {
		if (smtp_path_parse(c.arg, c.arg_len, pre[k], k == 0, &p) != SMTP_OK)
			continue;
		assert(p.addr >= c.arg && p.addr + p.addr_len <= c.arg + c.arg_len);
		assert(p.addr_len <= SMTP_PATH_MAX);
		assert(k == 0 || p.addr_len > 0);
		assert(p.nparams <= SMTP_MAX_PARAMS);
		for (size_t i = 0; i < p.addr_len; i++)
			assert((unsigned char)p.addr[i] > 0x20 && p.addr[i] != 0x7f);
		for (size_t i = 0; i < p.nparams; i++) {
			const struct smtp_param *q = &p.params[i];
			assert(q->key_len > 0);
			assert(q->key >= c.arg && q->key + q->key_len <= c.arg + c.arg_len);
			assert(q->val + q->val_len <= c.arg + c.arg_len);
			for (size_t j = 0; j < q->val_len; j++)
				assert(q->val[j] > 32 && q->val[j] < 127 && q->val[j] != '=');
			char key[32];
			size_t kl = q->key_len < sizeof(key) - 1 ? q->key_len : sizeof(key) - 1;
			memcpy(key, q->key, kl);
			key[kl] = '\0';
			if (kl == q->key_len && memchr(key, '\0', kl) == NULL)
				assert(smtp_path_param(&p, key) != NULL);
		}
	}
}

/* Frame `in` `chunk` bytes at a time; returns lines recorded. */
static size_t frame(const char *in, size_t len, size_t chunk, size_t max,
    struct rec *out, size_t maxout, bool parse)
{
	static char buf[8192];
	struct smtp_line_state st;
	size_t have = 0, pos = 0, n = 0;

	smtp_line_init(&st, max);
	while (pos < len) {
		size_t k = len - pos < chunk ? len - pos : chunk;
		assert(have + k <= sizeof(buf));
		memcpy(buf + have, in + pos, k);
		have += k;
		pos += k;
		for (;;) {
			struct smtp_line l;
			size_t used;
			enum smtp_res r = smtp_line_next(&st, buf, have, &l, &used);
			assert(used <= have);
			if (r == SMTP_OK) {
				assert(l.len <= max);
				assert(l.ptr >= buf && l.ptr + l.len <= buf + have);
				assert(!l.too_long || l.len == 0);
				assert(memchr(l.ptr, '\n', l.len) == NULL);
				assert(memchr(l.ptr, '\r', l.len) == NULL);
				assert(l.has_nul == (memchr(l.ptr, 0, l.len) != NULL) || l.too_long);
				if (n < maxout) {
					uint32_t h = 2166136261u;
					for (size_t i = 0; i < l.len; i++)
						h = (h ^ (unsigned char)l.ptr[i]) * 16777619u;
					out[n] = (struct rec){ l.len, l.too_long, l.bare_eol, l.has_nul, h };
				}
				n++;
				if (parse && !l.too_long)
					check_cmd(l.ptr, l.len);
			} else {
				assert(r == SMTP_AGAIN);
			}
			memmove(buf, buf + used, have - used);
			have -= used;
			if (r != SMTP_OK)
				break;
		}
		/* bounded: never more than one line and a CR held */
		assert(have <= max + 1 || chunk > 1);
	}
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct rec a[4096], b[4096];
	size_t max;

	if (size < 1 || size > 4096)
		return 0;
	max = data[0] % 2 ? SMTP_LINE_MAX : (size_t)(data[0] % MAXL);
	const char *in = (const char *)data + 1;
	size--;
	size_t na = frame(in, size, size ? size : 1, max, a, 4096, true);
	size_t nb = frame(in, size, 1, max, b, 4096, false);
	assert(na == nb);
	for (size_t i = 0; i < na && i < 4096; i++)
		assert(memcmp(&a[i], &b[i], sizeof(a[i])) == 0);
	/* the whole input as one command too */
	check_cmd(in, size);
	return 0;
}
