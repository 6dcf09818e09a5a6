/*
 * fuzz_reply.c - libFuzzer target: reply parser (whole vs byte-at-a-time),
 * capabilities, summary, queue id, and the format round trip: a formatted
 * reply parses back to the same reply.
 */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "relay25/smtp_parse.h"

static struct smtp_reply_parser pa, pb, pc;
static char wire[SMTP_REPLY_MAX_LINES * (SMTP_REPLY_LINE_MAX + 32)];

static bool id_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '@' || c == '-';
}

static void check_reply(const struct smtp_reply *r)
{
	char buf[512];
	struct smtp_caps caps;
	size_t n;

	assert(r->code >= 200 && r->code <= 599);
	assert(r->nlines >= 1 && r->nlines <= SMTP_REPLY_MAX_LINES);
	assert(strlen(r->enh) < sizeof(r->enh));
	for (size_t i = 0; i < r->nlines; i++) {
		assert((size_t)r->off[i] + r->len[i] <= SMTP_REPLY_TEXT_MAX);
		for (size_t j = 0; j < r->len[i]; j++) {
			unsigned char c = (unsigned char)r->text[r->off[i] + j];
			assert(c == '\t' || (c >= 0x20 && c != 0x7f));
		}
	}
	n = smtp_reply_summary(r, buf, sizeof(buf));
	assert(n < sizeof(buf) && buf[n] == '\0' && strlen(buf) == n);
	for (size_t i = 0; i < n; i++)
		assert((unsigned char)buf[i] >= 0x20 && buf[i] != 0x7f);
	n = smtp_reply_queue_id(r, buf, sizeof(buf));
	assert(n < sizeof(buf) && strlen(buf) == n);
	for (size_t i = 0; i < n; i++)
		assert(id_char(buf[i]));
	smtp_caps_parse(r, &caps);
	assert(caps.auth < (1u << 5));

	/* format, then parse back */
	n = smtp_reply_format(r, wire, sizeof(wire));
	assert(n > 0);
	assert(smtp_reply_format(r, buf, 3) == 0);
	bool long_line = false;
	for (size_t i = 0, bol = 0; i < n; i++) {
		unsigned char c = (unsigned char)wire[i];
		if (c == '\r')
			assert(i + 1 < n && wire[i + 1] == '\n');
		if (c == '\n') {
			assert(wire[i - 1] == '\r');
			long_line |= i - 1 - bol > SMTP_REPLY_LINE_MAX;
			bol = i + 1;
		} else if (c != '\r') {
			assert(c == '\t' || (c >= 0x20 && c != 0x7f));
		}
	}
	assert(wire[n - 1] == '\n');
	size_t used;
	smtp_reply_init(&pc);
	enum smtp_res res = smtp_reply_feed(&pc, wire, n, &used);
	if (long_line) {
		/* an enhanced code added to a line that lacked it */
		assert(res == SMTP_ERROR || res == SMTP_OK);
		return;
	}
	assert(res == SMTP_OK && used == n);
	const struct smtp_reply *q = &pc.reply;
	assert(q->code == r->code && strcmp(q->enh, r->enh) == 0);
	assert(q->nlines == r->nlines);
	for (size_t i = 0; i < r->nlines; i++) {
		assert(q->len[i] == r->len[i]);
		assert(memcmp(q->text + q->off[i], r->text + r->off[i], r->len[i]) == 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	size_t ua, ub = 0, uc = 0, split;
	enum smtp_res ra, rb = SMTP_AGAIN, rc;

	if (size < 1)
		return 0;
	split = data[0];
	in++;
	size--;
	smtp_reply_init(&pa);
	smtp_reply_init(&pb);
	smtp_reply_init(&pc);
	ra = smtp_reply_feed(&pa, in, size, &ua);
	assert(ua <= size);
	assert(ra != SMTP_AGAIN || ua == size);
	for (size_t i = 0; i < size && rb == SMTP_AGAIN; i++) {
		size_t c;
		rb = smtp_reply_feed(&pb, in + i, 1, &c);
		assert(c == 1);
		ub++;
	}
	assert(ra == rb && ua == ub);
	/* two pieces, split at the first byte's value */
	split = split < size ? split : size;
	rc = smtp_reply_feed(&pc, in, split, &uc);
	if (rc == SMTP_AGAIN) {
		size_t c2;
		rc = smtp_reply_feed(&pc, in + split, size - split, &c2);
		uc += c2;
	}
	assert(rc == ra && uc == ua);
	if (ra == SMTP_OK) {
		assert(memcmp(&pa.reply, &pb.reply, sizeof(pa.reply)) == 0);
		assert(memcmp(&pa.reply, &pc.reply, sizeof(pa.reply)) == 0);
		check_reply(&pa.reply);
	}
	return 0;
}
