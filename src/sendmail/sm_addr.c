/*
 * sm_addr.c - address lists to envelope addresses (see sm_addr.h).
 *
 * One pass over the text. An element (between top-level commas) collects
 * its non-comment, non-space characters; "<" starts the angle address and
 * drops what came before it (the display name); ":" outside an angle opens
 * a group and drops its name, ";" closes it; ":" inside an angle ends a
 * source route. Quoted strings are copied whole, so their commas, colons
 * and brackets mean nothing.
 */
#include "sm_addr.h"

#include <stdbool.h>
#include <string.h>

struct sm_el {
	char cur[SM_ADDR_MAX];  /* the bare addr-spec, or junk after '>' */
	size_t n;
	char ang[SM_ADDR_MAX];  /* inside <...> */
	size_t an;
	bool in_angle, had_angle;
	bool gap;               /* whitespace or a comment since the last char */
	bool multiword;         /* two words with only a gap between them */
	bool bad;
	char last;
};

static void
sm_el_reset(struct sm_el *e)
{
	e->n = e->an = 0;
	e->in_angle = e->had_angle = e->gap = e->multiword = e->bad = false;
	e->last = 0;
}

static bool
sm_is_word(char c)
{
	return c != '.' && c != '@';
}

static void
sm_el_add(struct sm_el *e, char c)
{
	if (e->in_angle) {
		if (e->an == sizeof e->ang)
			e->bad = true;
		else
			e->ang[e->an++] = c;
		return;
	}
	if (e->had_angle) {             /* "<a@b> junk" */
		e->bad = true;
		return;
	}
	if (e->gap && e->n && sm_is_word(e->last) && sm_is_word(c))
		e->multiword = true;
	e->gap = false;
	e->last = c;
	if (e->n == sizeof e->cur)
		e->bad = true;
	else
		e->cur[e->n++] = c;
}

/* Report the element and reset it. Returns 1 if it was malformed, 0 if
 * not, -1 if the callback asked to stop. */
static int
sm_el_flush(struct sm_el *e, sm_addr_cb cb, void *arg)
{
	int bad = e->bad || e->in_angle, r = 0;

	if (!bad && e->had_angle) {
		if (e->an)              /* "<>": the null path, nobody */
			r = cb(e->ang, e->an, arg);
	} else if (!bad && e->n) {
		if (e->multiword)       /* "John Smith" with no address */
			bad = 1;
		else
			r = cb(e->cur, e->n, arg);
	}
	sm_el_reset(e);
	return r ? -1 : bad;
}

/* s[i] is '(': the index of the matching ')', or len if unbalanced. */
static size_t
sm_skip_comment(const char *s, size_t len, size_t i)
{
	int depth = 0;

	for (; i < len; i++) {
		if (s[i] == '\\')
			i++;
		else if (s[i] == '(')
			depth++;
		else if (s[i] == ')' && --depth == 0)
			return i;
	}
	return len;
}

/* s[i] is '"': copy the quoted string with its quotes and escapes as one
 * word. Returns the index of the closing quote, or len if unterminated. */
static size_t
sm_copy_quoted(struct sm_el *e, const char *s, size_t len, size_t i)
{
	sm_el_add(e, '"');              /* may mark "word word" */
	for (i++; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '\r' || c == '\n')   /* folding inside quotes */
			continue;
		if ((c < 32 && c != '\t') || c == 127)
			e->bad = true;
		if (c == '\\' && i + 1 < len) {
			sm_el_add(e, '\\');
			c = (unsigned char)s[++i];
		} else if (c == '"') {
			sm_el_add(e, '"');
			return i;
		}
		sm_el_add(e, (char)c);
	}
	e->bad = true;
	return len;
}

int
sm_addr_list(const char *s, size_t len, sm_addr_cb cb, void *arg)
{
	struct sm_el e;
	bool group = false;
	int errs = 0, r;

	sm_el_reset(&e);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		switch (c) {
		case '(':
			if ((i = sm_skip_comment(s, len, i)) == len)
				e.bad = true;
			e.gap = true;
			continue;
		case '"':
			if ((i = sm_copy_quoted(&e, s, len, i)) == len)
				e.bad = true;
			continue;
		case ' ': case '\t': case '\r': case '\n':
			e.gap = true;
			continue;
		case '\\':              /* obsolete quoted-pair outside quotes */
			if (i + 1 < len)
				sm_el_add(&e, s[++i]);
			continue;
		}
		if (c < 32 || c == 127) {
			e.bad = true;
			continue;
		}
		if (e.in_angle) {
			if (c == '>') {
				e.in_angle = false;
				e.had_angle = true;
			} else if (c == ':') {
				e.an = 0;       /* end of a source route */
			} else if (c == '<') {
				e.bad = true;
			} else {
				if (c == ',' && (e.an == 0 || e.ang[0] != '@'))
					e.bad = true;   /* a list inside <> */
				sm_el_add(&e, (char)c);
			}
			continue;
		}
		switch (c) {
		case '<':
			if (e.had_angle)
				e.bad = true;
			e.in_angle = true;
			e.an = e.n = 0;         /* the display name goes */
			e.multiword = false;
			break;
		case '>':
			e.bad = true;
			break;
		case ':':
			if (group || e.had_angle) {
				e.bad = true;
			} else {                /* "name:" opens a group */
				bool bad = e.bad;
				sm_el_reset(&e);
				e.bad = bad;
				group = true;
			}
			break;
		case ';':
		case ',':
			if ((r = sm_el_flush(&e, cb, arg)) < 0)
				return -1;
			errs += r;
			if (c == ';')
				group = false;
			break;
		default:
			sm_el_add(&e, (char)c);
		}
	}
	if ((r = sm_el_flush(&e, cb, arg)) < 0)
		return -1;
	return errs + r;
}
