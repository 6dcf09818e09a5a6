/*
 * sm_msg.c - the header section and the DATA encoder (see sm_msg.h).
 */
#include "sm_msg.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- the header section ------------------------------------------- */

void
sm_head_init(struct sm_head *h, bool dot_ends, size_t max)
{
	memset(h, 0, sizeof *h);
	h->dot_ends = dot_ends;
	h->max = max;
}

void
sm_head_free(struct sm_head *h)
{
	free(h->buf);
	free(h->fields);
	memset(h, 0, sizeof *h);
}

static int
sm_head_add_field(struct sm_head *h, const struct sm_field *f)
{
	if (h->nfields == h->fcap) {
		size_t cap = h->fcap ? h->fcap * 2 : 32;
		struct sm_field *nf = realloc(h->fields, cap * sizeof *nf);

		if (!nf)
			return -1;
		h->fields = nf;
		h->fcap = cap;
	}
	h->fields[h->nfields++] = *f;
	return 0;
}

/* Classify the line buf[ls..le), where next is the offset after its
 * terminator. Sets done (and body) when the section ends here. */
static int
sm_head_line(struct sm_head *h, size_t ls, size_t le, size_t next)
{
	const char *p = h->buf + ls;
	size_t n = le - ls, i = 0;

	if (n && p[n - 1] == '\r')
		n--;
	if (h->dot_ends && n == 1 && p[0] == '.') {
		h->done = h->dot_end = true;
		h->body = h->len;       /* nothing after the "." counts */
		return 0;
	}
	if (n == 0) {
		h->done = h->blank = true;
		h->body = next;
		return 0;
	}
	if (ls == 0 && n >= 5 && memcmp(p, "From ", 5) == 0)
		return 0;               /* mbox envelope line: dropped */
	if (p[0] == ' ' || p[0] == '\t') {
		if (h->nfields) {
			struct sm_field *f = &h->fields[h->nfields - 1];
			f->len = next - f->off;
			return 0;
		}
	} else {
		while (i < n && p[i] > 32 && p[i] < 127 && p[i] != ':')
			i++;
		size_t name_len = i;
		while (i < n && (p[i] == ' ' || p[i] == '\t'))
			i++;
		if (name_len && i < n && p[i] == ':') {
			struct sm_field f = { .off = ls, .len = next - ls,
			    .name_len = name_len, .value_off = ls + i + 1 };
			return sm_head_add_field(h, &f);
		}
	}
	h->done = true;                 /* a body line, without a separator */
	h->body = ls;
	return 0;
}

enum sm_res
sm_head_feed(struct sm_head *h, const char *data, size_t len)
{
	if (h->done)
		return SM_DONE;
	if (h->len + len > h->cap) {
		size_t cap = h->cap ? h->cap : 16384;
		char *nb;

		while (cap < h->len + len)
			cap *= 2;
		if (!(nb = realloc(h->buf, cap)))
			return SM_ERROR;
		h->buf = nb;
		h->cap = cap;
	}
	memcpy(h->buf + h->len, data, len);
	h->len += len;
	while (!h->done) {
		char *nl = memchr(h->buf + h->scan, '\n', h->len - h->scan);
		size_t le;

		if (!nl)
			break;
		le = (size_t)(nl - h->buf);
		if (sm_head_line(h, h->scan, le, le + 1) < 0)
			return SM_ERROR;
		h->scan = le + 1;
	}
	if (h->done)
		return SM_DONE;
	return h->len > h->max ? SM_ERROR : SM_AGAIN;
}

enum sm_res
sm_head_finish(struct sm_head *h)
{
	if (!h->done && h->scan < h->len)
		sm_head_line(h, h->scan, h->len, h->len);
	if (!h->done) {
		h->done = true;
		h->body = h->len;
	}
	return SM_DONE;
}

bool
sm_field_is(const struct sm_head *h, const struct sm_field *f,
    const char *name)
{
	return strlen(name) == f->name_len &&
	    strncasecmp(h->buf + f->off, name, f->name_len) == 0;
}

const struct sm_field *
sm_head_get(const struct sm_head *h, const char *name)
{
	for (size_t i = 0; i < h->nfields; i++)
		if (sm_field_is(h, &h->fields[i], name))
			return &h->fields[i];
	return NULL;
}

bool
sm_field_hidden(const struct sm_head *h, const struct sm_field *f)
{
	return sm_field_is(h, f, "Bcc") || sm_field_is(h, f, "Resent-Bcc");
}

int
sm_head_recipients(const struct sm_head *h, sm_addr_cb cb, void *arg,
    const char **bad_field)
{
	static const char *plain[] = { "To", "Cc", "Bcc", NULL };
	static const char *resent[] = { "Resent-To", "Resent-Cc",
	    "Resent-Bcc", NULL };
	const char **names = plain;
	int errs = 0;

	*bad_field = NULL;
	for (size_t i = 0; i < h->nfields; i++)
		for (size_t k = 0; resent[k]; k++)
			if (sm_field_is(h, &h->fields[i], resent[k]))
				names = resent;
	for (size_t i = 0; i < h->nfields; i++) {
		const struct sm_field *f = &h->fields[i];
		bool want = false;
		int r;

		for (size_t k = 0; names[k]; k++)
			want = want || sm_field_is(h, f, names[k]);
		if (!want)
			continue;
		r = sm_addr_list(h->buf + f->value_off,
		    f->off + f->len - f->value_off, cb, arg);
		if (r < 0)
			return -1;
		if (r && !*bad_field)
			*bad_field = names == plain ?
			    (sm_field_is(h, f, "To") ? "To" :
			    sm_field_is(h, f, "Cc") ? "Cc" : "Bcc") :
			    (sm_field_is(h, f, "Resent-To") ? "Resent-To" :
			    sm_field_is(h, f, "Resent-Cc") ? "Resent-Cc" :
			    "Resent-Bcc");
		errs += r;
	}
	return errs;
}

int
sm_head_emit(const struct sm_head *h, const char *from_line,
    int (*put)(const char *, size_t, void *), void *arg)
{
	int rc = 0;

	for (size_t i = 0; i < h->nfields && !rc; i++) {
		const struct sm_field *f = &h->fields[i];

		if (sm_field_hidden(h, f))
			continue;
		rc = put(h->buf + f->off, f->len, arg);
		if (!rc && h->buf[f->off + f->len - 1] != '\n')
			rc = put("\n", 1, arg);
	}
	if (!rc && from_line && !sm_head_get(h, "From"))
		rc = put(from_line, strlen(from_line), arg);
	if (!rc && (h->blank || (!h->dot_end && h->body < h->len)))
		rc = put("\n", 1, arg);
	if (!rc && !h->dot_end && h->body < h->len)
		rc = put(h->buf + h->body, h->len - h->body, arg);
	return rc;
}

/* ---- LF to CR LF, dot-stuffing ------------------------------------ */

enum { ENC_BOL, ENC_MID, ENC_DOT, ENC_DOTCR };

void
sm_enc_init(struct sm_enc *e, bool dot_ends)
{
	memset(e, 0, sizeof *e);
	e->dot_ends = dot_ends;
	e->st = ENC_BOL;
}

/* One input byte; returns the bytes written to o (at most 5), or -1 for
 * the end-of-input "." line. */
static int
sm_enc_byte(struct sm_enc *e, unsigned char c, char *o)
{
	int n = 0;

	if (e->cr) {                    /* a held CR */
		e->cr = false;
		if (c == '\n') {
			o[0] = '\r';
			o[1] = '\n';
			e->st = ENC_BOL;
			return 2;
		}
		o[n++] = '\r';          /* bare CR: passed on */
		e->st = ENC_MID;
	}
	switch (e->st) {
	case ENC_DOT:                   /* "." at line start, held */
		if (c == '\n')
			return -1;
		if (c == '\r') {
			e->st = ENC_DOTCR;
			return n;
		}
		o[n++] = '.';
		o[n++] = '.';
		e->st = ENC_MID;
		break;
	case ENC_DOTCR:                 /* ".\r" at line start, held */
		if (c == '\n')
			return -1;
		o[n++] = '.';
		o[n++] = '.';
		o[n++] = '\r';
		e->st = ENC_MID;
		break;
	case ENC_BOL:
		if (c == '.') {
			if (e->dot_ends) {
				e->st = ENC_DOT;
				return n;
			}
			o[n++] = '.';
			o[n++] = '.';
			e->st = ENC_MID;
			return n;
		}
		break;
	}
	if (c == '\n') {
		o[n++] = '\r';
		o[n++] = '\n';
		e->st = ENC_BOL;
	} else if (c == '\r') {
		e->cr = true;
	} else {
		o[n++] = (char)c;
		e->st = ENC_MID;
	}
	return n;
}

enum sm_res
sm_enc_feed(struct sm_enc *e, const char *in, size_t inlen,
    size_t *consumed, char *out, size_t outcap, size_t *outlen)
{
	size_t i = 0, o = 0;
	enum sm_res res = SM_AGAIN;

	while (i < inlen && outcap - o >= SM_ENC_RESERVE && !e->ended) {
		int n = sm_enc_byte(e, (unsigned char)in[i++], out + o);

		if (n < 0) {
			e->ended = true;
			res = SM_DONE;
			break;
		}
		o += (size_t)n;
	}
	if (e->ended)
		res = SM_DONE;
	e->in_bytes += i;
	e->out_bytes += o;
	*consumed = i;
	*outlen = o;
	return res;
}

size_t
sm_enc_finish(struct sm_enc *e, char *out)
{
	size_t n = 0;

	if (e->ended)
		return 0;
	if (e->cr) {                    /* "...\r" at the end: a line end */
		e->cr = false;
		e->st = ENC_MID;
	}
	if (e->st == ENC_DOT || e->st == ENC_DOTCR)
		e->ended = true;        /* the last line is "." (dot_ends only) */
	else if (e->st == ENC_MID) {
		out[n++] = '\r';
		out[n++] = '\n';
	}
	e->st = ENC_BOL;
	e->out_bytes += n;
	return n;
}
