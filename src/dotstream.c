/*
 * dotstream.c - the DATA decoder (SMTP-smuggling defence).
 *
 * End of data is recognised on the raw bytes only: CR LF "." CR LF, the
 * start of DATA counting as "just after CR LF". The output is the same
 * message with every line end written as CR LF (bare CR and bare LF each
 * end a line), NUL bytes dropped, and a line that is exactly "." written as
 * "..". One byte of input writes at most 5 bytes of output, so a free
 * space of DOT_OUT_RESERVE before each byte is always enough.
 *
 * The state packs a phase and what the current output line holds so far:
 *   BOL      just after a raw CR LF (or at the start): the only place an
 *            end marker may begin; the output line is empty
 *   DOT      raw CR LF "." seen; the dot is held back
 *   DOT_CR   raw CR LF "." CR seen; dot and CR held back
 *   TEXT     inside a line
 *   CR       inside a line, a CR held back until the next byte
 *   END      end of data found
 */
#include <string.h>

#include "relay25/dotstream.h"

enum { PH_BOL, PH_DOT, PH_DOT_CR, PH_TEXT, PH_CR, PH_END };
enum { LN_EMPTY, LN_DOT, LN_OTHER };   /* output line so far */

#define PHASE(s) ((s) & 0xff)
#define LINE(s)  ((s) >> 8)
#define STATE(ph, ln) ((ph) | ((ln) << 8))

void dot_init(struct dot_decoder *d, bool reject_bare)
{
	d->state = STATE(PH_BOL, LN_EMPTY);
	d->raw_clean = true;
	d->reject_bare = reject_bare;
	d->in_bytes = 0;
	d->out_bytes = 0;
	d->bare_eols = 0;
	d->nuls = 0;
}

struct sink {
	char *out;
	size_t n;
};

static void emit(struct sink *o, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		o->out[o->n++] = s[i];
}

/* Terminate the current output line: a lone "." is stuffed. */
static void end_line(struct sink *o, int line)
{
	if (line == LN_DOT)
		emit(o, ".\r\n", 3);
	else
		emit(o, "\r\n", 2);
}

static void bare_eol(struct dot_decoder *d)
{
	d->bare_eols++;
	d->raw_clean = false;
}

/* A byte inside a line (phase TEXT, no CR held back). */
static int text_byte(struct dot_decoder *d, int line, unsigned char c,
    struct sink *o)
{
	switch (c) {
	case '\r':
		return STATE(PH_CR, line);
	case '\n':
		bare_eol(d);
		end_line(o, line);
		return STATE(PH_TEXT, LN_EMPTY);
	case '\0':
		d->nuls++;
		d->raw_clean = false;
		return STATE(PH_TEXT, line);
	case '.':
		emit(o, ".", 1);
		return STATE(PH_TEXT, line == LN_EMPTY ? LN_DOT : LN_OTHER);
	default:
		emit(o, (const char *)&c, 1);
		return STATE(PH_TEXT, LN_OTHER);
	}
}

/* One raw byte; returns the new state. */
static int step(struct dot_decoder *d, int st, unsigned char c,
    struct sink *o)
{
	int line = LINE(st);

	switch (PHASE(st)) {
	case PH_BOL:
		if (c == '.')
			return STATE(PH_DOT, LN_DOT);
		return text_byte(d, LN_EMPTY, c, o);
	case PH_DOT:
		if (c == '\r')
			return STATE(PH_DOT_CR, LN_DOT);
		emit(o, ".", 1);        /* not an end marker: release the dot */
		return text_byte(d, LN_DOT, c, o);
	case PH_DOT_CR:
		if (c == '\n')
			return STATE(PH_END, LN_EMPTY);
		/* "." ended by a bare CR: written stuffed, then c is new. */
		bare_eol(d);
		emit(o, "..\r\n", 4);
		return text_byte(d, LN_EMPTY, c, o);
	case PH_CR:
		if (c == '\n') {
			end_line(o, line);
			return STATE(PH_BOL, LN_EMPTY);
		}
		bare_eol(d);
		end_line(o, line);
		return text_byte(d, LN_EMPTY, c, o);
	case PH_TEXT:
	default:
		return text_byte(d, line, c, o);
	}
}

enum dot_res dot_decode(struct dot_decoder *d, const char *in, size_t inlen,
    size_t *consumed, char *out, size_t outcap, size_t *outlen)
{
	struct sink o = { out, 0 };
	int st = d->state;
	size_t i = 0;

	while (i < inlen && PHASE(st) != PH_END) {
		if (outcap < DOT_OUT_RESERVE || outcap - o.n < DOT_OUT_RESERVE)
			break;
		if (st == STATE(PH_TEXT, LN_OTHER)) {
			/* Inside a line that already holds text, every byte but
			 * CR, LF and NUL is copied as it is: take the whole run
			 * (as far as the byte-by-byte room rule would go). */
			size_t room = outcap - o.n - DOT_OUT_RESERVE + 1;
			size_t lim = inlen - i < room ? inlen - i : room, k = 0;

			while (k < lim && in[i + k] != '\r' &&
			    in[i + k] != '\n' && in[i + k] != '\0')
				k++;
			if (k > 0) {
				memcpy(out + o.n, in + i, k);
				o.n += k;
				i += k;
				continue;
			}
		}
		st = step(d, st, (unsigned char)in[i], &o);
		i++;
	}
	d->state = st;
	d->in_bytes += i;
	d->out_bytes += o.n;
	*consumed = i;
	*outlen = o.n;
	return PHASE(st) == PH_END ? DOT_END : DOT_AGAIN;
}
