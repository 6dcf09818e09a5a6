/*
 * headers.c - the upstream header filter (headers.h): a byte-driven state
 * machine over the header section, a bounded From: field parser, and the
 * additions. Only a From: field (and a field name) is ever held; other
 * fields stream through or, for Sender:/Return-Path:, are dropped as they
 * arrive. No I/O, no allocation, no clock.
 */
#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "relay25/headers.h"

enum {
	S_PASS,     /* body, given up, or off: copy */
	S_LINE,     /* at the start of a line in the header section */
	S_LINE_CR,  /* a line started with CR */
	S_NAME,     /* reading a field name into hold */
	S_HOLD,     /* inside a From: field, held */
	S_STREAM,   /* inside a field passing through */
	S_SKIP,     /* inside a field being removed */
};

/* what a continuation line belongs to */
enum { F_NONE, F_HOLD, F_STREAM, F_SKIP };

/* The most one step can write: a rewritten From: (never longer than the
 * held field plus the new address and punctuation), every addition (From:,
 * Reply-To:, Date: under 80 bytes, Message-ID:), and two bytes passed on.
 * Callers keep HDR_OUT_RESERVE free, so put() never runs out of room. */
_Static_assert(HDR_OUT_RESERVE >= HDR_FIELD_MAX + (HDR_ADDR_MAX + 8) +
    (8 + HDR_ADDR_MAX) + (15 + HDR_NAME_MAX + HDR_ADDR_MAX) + 80 +
    (49 + HDR_DOMAIN_MAX) + 2, "HDR_OUT_RESERVE too small");

struct out {
	char *p;
	size_t cap, len;
};

static void put(struct out *o, const void *s, size_t n)
{
	assert(n <= o->cap - o->len);
	memcpy(o->p + o->len, s, n);
	o->len += n;
}

static void put1(struct out *o, char c)
{
	put(o, &c, 1);
}

static void puts_(struct out *o, const char *s)
{
	put(o, s, strlen(s));
}

static bool is_wsp(int c)
{
	return c == ' ' || c == '\t';
}

/* RFC 5322 ftext: printable US-ASCII but ':' */
static bool is_ftext(int c)
{
	return c >= 33 && c <= 126 && c != ':';
}

static int lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static bool eq_ci(const char *a, size_t alen, const char *b)
{
	size_t n = strlen(b);

	if (alen != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
			return false;
	return true;
}

/* ---- parameters ---------------------------------------------------- */

static bool is_atext(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

bool hdr_domain_valid(const char *d)
{
	size_t n = d ? strlen(d) : 0, label = 0;

	if (n == 0 || n > HDR_DOMAIN_MAX)
		return false;
	for (size_t i = 0; i <= n; i++) {
		int c = (unsigned char)d[i];
		if (c == '.' || c == '\0') {
			if (label == 0 || label > 63 || d[i - 1] == '-' ||
			    d[i - label] == '-')
				return false;
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-') {
			label++;
		} else {
			return false;
		}
	}
	return true;
}

bool hdr_addr_valid(const char *a)
{
	const char *at = a ? strchr(a, '@') : NULL;
	size_t n;

	if (!at || at == a || strlen(a) > HDR_ADDR_MAX)
		return false;
	n = (size_t)(at - a);
	if (a[0] == '.' || a[n - 1] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		if (a[i] == '.' ? a[i + 1] == '.' : !is_atext((unsigned char)a[i]))
			return false;
	}
	return hdr_domain_valid(at + 1);
}

int hdr_local_tz_offset(time_t now)
{
	struct tm tm;

	if (!localtime_r(&now, &tm))
		return 0;
	return (int)(tm.tm_gmtoff / 60);
}

static void set_off(struct hdr_filter *f)
{
	f->rewrite = f->add_reply_to = f->add_missing = false;
	f->state = S_PASS;
	f->stop = HDR_STOP_OFF;
}

bool hdr_filter_init(struct hdr_filter *f, const struct hdr_params *p)
{
	memset(f, 0, offsetof(struct hdr_filter, orig_name));
	f->orig_name[0] = '\0';
	f->state = S_LINE;
	f->fmode = F_NONE;
	f->stop = HDR_STOP_NONE;
	if (!p) {
		set_off(f);
		return true;
	}
	if (p->rewrite_from && *p->rewrite_from) {
		if (!hdr_addr_valid(p->rewrite_from)) {
			set_off(f);
			return false;
		}
		f->from_len = strlen(p->rewrite_from);
		memcpy(f->from, p->rewrite_from, f->from_len + 1);
		f->rewrite = true;
		f->add_reply_to = p->add_reply_to;
	}
	if (p->add_missing) {
		if (!hdr_domain_valid(p->msgid_domain) || p->tz_offset <= -1440 ||
		    p->tz_offset >= 1440) {
			set_off(f);
			return false;
		}
		f->domain_len = strlen(p->msgid_domain);
		memcpy(f->domain, p->msgid_domain, f->domain_len + 1);
		f->add_missing = true;
		f->now = p->now;
		f->tz_offset = p->tz_offset;
		memcpy(f->random, p->random, sizeof f->random);
	}
	if (!f->rewrite && !f->add_missing)
		set_off(f);
	return true;
}

bool hdr_filter_active(const struct hdr_filter *f)
{
	return f->rewrite || f->add_missing;
}

/* ---- From: field lexer --------------------------------------------- */

/* Tokens of the RFC 5322 address grammar over a held field value. CFWS is
 * skipped (and noted on the next token); a fold is CRLF followed by WSP;
 * the field's final CRLF ends the text. Bare CR, bare LF and control bytes
 * outside quoted strings and comments are errors. */
enum { T_END, T_ERR, T_WORD, T_SPECIAL };

struct lex {
	const char *s;
	size_t n, i;
};

struct tok {
	int type;
	size_t s, e;    /* raw span */
	bool ws;        /* CFWS before it */
	bool fold;      /* ... containing a line fold */
};

/* 1: a fold at i; 2: the final CRLF; 0: neither (a bare CR) */
static int crlf_kind(const char *s, size_t n, size_t i)
{
	if (s[i] != '\r' || i + 1 >= n || s[i + 1] != '\n')
		return 0;
	if (i + 2 == n)
		return 2;
	return is_wsp((unsigned char)s[i + 2]) ? 1 : 0;
}

/* A quoted string or domain literal from l->i (the opening byte) to the
 * closing byte `close`. */
static bool scan_quoted(struct lex *l, char close)
{
	size_t i = l->i + 1;

	while (i < l->n) {
		char c = l->s[i];
		if (c == close) {
			l->i = i + 1;
			return true;
		}
		if (c == '\\') {
			if (i + 1 >= l->n || l->s[i + 1] == '\r' || l->s[i + 1] == '\n')
				return false;
			i += 2;
		} else if (c == '\r') {
			if (crlf_kind(l->s, l->n, i) != 1)
				return false;
			i += 2;
		} else if (c == '\n') {
			return false;
		} else {
			i++;
		}
	}
	return false;
}

/* A comment, nested, from l->i (the "("). */
static bool scan_comment(struct lex *l, bool *fold)
{
	size_t i = l->i + 1, depth = 1;

	while (i < l->n) {
		char c = l->s[i];
		if (c == '\\') {
			if (i + 1 >= l->n || l->s[i + 1] == '\r' || l->s[i + 1] == '\n')
				return false;
			i += 2;
			continue;
		}
		if (c == '\r') {
			if (crlf_kind(l->s, l->n, i) != 1)
				return false;
			*fold = true;
			i += 2;
			continue;
		}
		if (c == '\n')
			return false;
		if (c == '(')
			depth++;
		else if (c == ')' && --depth == 0) {
			l->i = i + 1;
			return true;
		}
		i++;
	}
	return false;
}

static bool skip_cfws(struct lex *l, bool *ws, bool *fold)
{
	while (l->i < l->n) {
		char c = l->s[l->i];
		if (is_wsp(c)) {
			l->i++;
		} else if (c == '\r') {
			int k = crlf_kind(l->s, l->n, l->i);
			if (k == 0)
				return false;
			if (k == 2) {
				l->i = l->n;
				return true;
			}
			*fold = true;
			l->i += 2;
		} else if (c == '(') {
			if (!scan_comment(l, fold))
				return false;
		} else {
			return true;
		}
		*ws = true;
	}
	return true;
}

static bool is_special(int c)
{
	return c && strchr("()<>[]:;@\\,.\"", c) != NULL;
}

static bool is_atom(int c)
{
	return c > 32 && c != 127 && !is_special(c);
}

static void lex_next(struct lex *l, struct tok *t)
{
	t->ws = t->fold = false;
	if (!skip_cfws(l, &t->ws, &t->fold)) {
		t->type = T_ERR;
		return;
	}
	t->s = l->i;
	if (l->i >= l->n) {
		t->type = T_END;
		t->e = l->i;
		return;
	}
	int c = (unsigned char)l->s[l->i];
	if (c == '"' || c == '[') {
		t->type = scan_quoted(l, c == '"' ? '"' : ']') ? T_WORD : T_ERR;
	} else if (is_special(c)) {
		t->type = T_SPECIAL;
		l->i++;
	} else if (is_atom(c)) {
		t->type = T_WORD;
		while (l->i < l->n && is_atom((unsigned char)l->s[l->i]))
			l->i++;
	} else {
		t->type = T_ERR;
	}
	t->e = l->i;
}

static bool is_sp(const struct lex *l, const struct tok *t, char c)
{
	return t->type == T_SPECIAL && l->s[t->s] == c;
}

/* ---- From: field parser -------------------------------------------- */

/* An addr-spec built from its tokens, CFWS and folds removed. */
struct abuild {
	char b[HDR_ADDR_MAX + 1];
	size_t len;
	unsigned ats;
	bool bad, prev_word;
};

static void ab_reset(struct abuild *a)
{
	a->len = 0;
	a->ats = 0;
	a->bad = a->prev_word = false;
}

static void ab_put(struct abuild *a, char c)
{
	if (a->len >= HDR_ADDR_MAX)
		a->bad = true;
	else
		a->b[a->len++] = c;
}

static void ab_add(struct abuild *a, const struct lex *l, const struct tok *t)
{
	if (t->type == T_WORD) {
		if (a->prev_word)
			a->bad = true;  /* two words, no "." or "@" between */
		a->prev_word = true;
		for (size_t i = t->s; i < t->e; i++)
			if (l->s[i] != '\r' && l->s[i] != '\n')
				ab_put(a, l->s[i]);
		return;
	}
	char c = l->s[t->s];
	if (c == '@')
		a->ats++;
	else if (c != '.')
		a->bad = true;
	a->prev_word = false;
	ab_put(a, c);
}

static bool ab_ok(struct abuild *a)
{
	if (a->bad || a->ats != 1 || a->len < 3 || a->b[0] == '@' ||
	    a->b[a->len - 1] == '@')
		return false;
	a->b[a->len] = '\0';
	return true;
}

struct mbox {
	bool found, named;
	size_t ns, ne;          /* display name span in the field */
	struct abuild addr;
};

/* The rest of an angle address after "<": an optional obsolete route
 * ("@a,@b:"), the addr-spec, ">". */
static bool parse_angle(struct lex *l, struct abuild *a)
{
	struct tok t;

	ab_reset(a);
	lex_next(l, &t);
	if (is_sp(l, &t, '@')) {
		do {
			lex_next(l, &t);
			if (t.type == T_END || t.type == T_ERR || is_sp(l, &t, '>'))
				return false;
		} while (!is_sp(l, &t, ':'));
		lex_next(l, &t);
	}
	while (!is_sp(l, &t, '>')) {
		if (t.type == T_END || t.type == T_ERR)
			return false;
		ab_add(a, l, &t);
		lex_next(l, &t);
	}
	return ab_ok(a);
}

/* Skip to the end of a list entry: true after a "," or ";". */
static bool skip_entry(struct lex *l)
{
	struct tok t;

	for (;;) {
		lex_next(l, &t);
		if (t.type == T_END || t.type == T_ERR)
			return false;
		if (is_sp(l, &t, ',') || is_sp(l, &t, ';'))
			return true;
	}
}

/* The first mailbox of an address list (groups flattened; entries that are
 * not mailboxes skipped) in s[from..n), n being just past the final CRLF. */
static void parse_from(const char *s, size_t from, size_t n, struct mbox *m)
{
	struct lex l = { s, n, from };
	struct tok t;

	m->found = m->named = false;
	for (;;) {
		bool any = false;
		size_t ns = 0, ne = 0;

		ab_reset(&m->addr);
		for (;;) {
			lex_next(&l, &t);
			if (t.type == T_ERR)
				return;
			if (t.type == T_END || is_sp(&l, &t, ',') || is_sp(&l, &t, ';')) {
				if (any && ab_ok(&m->addr)) {
					m->found = true;
					return;
				}
				if (t.type == T_END)
					return;
				break;
			}
			if (is_sp(&l, &t, ':'))
				break;  /* a group's name */
			if (is_sp(&l, &t, '<')) {
				if (parse_angle(&l, &m->addr)) {
					m->found = true;
					m->named = any;
					m->ns = ns;
					m->ne = ne;
					return;
				}
				if (!skip_entry(&l))
					return;
				break;
			}
			if (!any)
				ns = t.s;
			ne = t.e;
			any = true;
			ab_add(&m->addr, &l, &t);
		}
	}
}

/* Write the display name s[from..to) with comments removed and each run of
 * CFWS as one space, or as a fold when it held one (so no line grows).
 * Never longer than the span. */
static void put_phrase(struct out *o, const char *s, size_t from, size_t to)
{
	struct lex l = { s, to, from };
	struct tok t;
	bool first = true;

	for (;;) {
		lex_next(&l, &t);
		if (t.type == T_END || t.type == T_ERR)
			return;
		if (!first && t.ws)
			puts_(o, t.fold ? "\r\n " : " ");
		put(o, s + t.s, t.e - t.s);
		first = false;
	}
}

/* ---- the filter ---------------------------------------------------- */

/* The held From: field is complete: write it rewritten. */
static void finish_from(struct hdr_filter *f, struct out *o)
{
	struct mbox m;
	size_t start = o->len;

	parse_from(f->hold, f->name_len, f->hold_len, &m);
	puts_(o, "From: ");
	if (m.found && m.named) {
		size_t ns = o->len;
		put_phrase(o, f->hold, m.ns, m.ne);
		if (!f->have_orig && o->len - ns <= HDR_NAME_MAX) {
			f->orig_name_len = o->len - ns;
			memcpy(f->orig_name, o->p + ns, f->orig_name_len);
			f->orig_named = true;
		}
		puts_(o, " <");
		put(o, f->from, f->from_len);
		puts_(o, ">\r\n");
	} else {
		put(o, f->from, f->from_len);
		puts_(o, "\r\n");
	}
	if (!f->have_orig) {
		if (m.found) {
			memcpy(f->orig_addr, m.addr.b, m.addr.len + 1);
			f->have_orig = true;
		} else {
			f->orig_named = false;
		}
	}
	if (o->len - start != f->hold_len ||
	    memcmp(o->p + start, f->hold, f->hold_len) != 0)
		f->changed = true;
	f->hold_len = 0;
	f->fmode = F_NONE;
}

static void put_date(const struct hdr_filter *f, struct out *o)
{
	static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu",
	    "Fri", "Sat" };
	static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May",
	    "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	char buf[80];
	struct tm tm;
	time_t t;
	int off = f->tz_offset < 0 ? -f->tz_offset : f->tz_offset;

	/* years 1000..9999 only (and no overflow below) */
	if ((long long)f->now < -30610224000LL + 86400 ||
	    (long long)f->now > 253402300799LL - 86400)
		return;
	t = f->now + (time_t)f->tz_offset * 60;
	if (!gmtime_r(&t, &tm) || tm.tm_year < -1900 + 1000 ||
	    tm.tm_year > 9999 - 1900)
		return;  /* not expressible as a 4-digit year: leave it out */
	int n = snprintf(buf, sizeof buf,
	    "Date: %s, %02d %s %04d %02d:%02d:%02d %c%02d%02d\r\n",
	    days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12],
	    tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec,
	    f->tz_offset < 0 ? '-' : '+', off / 60, off % 60);
	if (n > 0 && (size_t)n < sizeof buf)
		put(o, buf, (size_t)n);
}

static void put_msgid(const struct hdr_filter *f, struct out *o)
{
	static const char hex[] = "0123456789abcdef";
	char id[2 * sizeof f->random];

	for (size_t i = 0; i < sizeof f->random; i++) {
		id[2 * i] = hex[f->random[i] >> 4];
		id[2 * i + 1] = hex[f->random[i] & 15];
	}
	puts_(o, "Message-ID: <");
	put(o, id, sizeof id);
	put1(o, '@');
	put(o, f->domain, f->domain_len);
	puts_(o, ">\r\n");
}

/* The header section ends here (cleanly or not): write the additions. */
static void additions(struct hdr_filter *f, struct out *o)
{
	size_t start = o->len;

	if (f->rewrite && !f->seen_from) {
		puts_(o, "From: ");
		put(o, f->from, f->from_len);
		puts_(o, "\r\n");
	}
	if (f->rewrite && f->add_reply_to && !f->seen_reply_to &&
	    f->have_orig && !eq_ci(f->orig_addr, strlen(f->orig_addr), f->from)) {
		puts_(o, "Reply-To: ");
		if (f->orig_named) {
			put(o, f->orig_name, f->orig_name_len);
			puts_(o, " <");
			puts_(o, f->orig_addr);
			puts_(o, ">\r\n");
		} else {
			puts_(o, f->orig_addr);
			puts_(o, "\r\n");
		}
	}
	if (f->add_missing && !f->seen_date)
		put_date(f, o);
	if (f->add_missing && !f->seen_msgid)
		put_msgid(f, o);
	if (o->len != start)
		f->changed = true;
}

/* Stop filtering: write what is held, unchanged; pass the rest. */
static void give_up(struct hdr_filter *f, enum hdr_stop why, struct out *o)
{
	if (f->state == S_NAME || f->state == S_HOLD ||
	    (f->state == S_LINE && f->fmode == F_HOLD))
		put(o, f->hold, f->hold_len);
	else if (f->state == S_LINE_CR)
		put1(o, '\r');
	f->hold_len = 0;
	f->state = S_PASS;
	f->stop = why;
}

/* A line that is not a header line ends the section: additions first. */
static void malformed(struct hdr_filter *f, struct out *o)
{
	additions(f, o);
	f->state = S_PASS;
	f->stop = HDR_STOP_MALFORMED;
}

/* Hold one more byte, or give up when the field is too long. */
static bool hold(struct hdr_filter *f, char c, struct out *o)
{
	if (f->hold_len >= HDR_FIELD_MAX) {
		give_up(f, HDR_STOP_FIELD_TOO_LONG, o);
		put1(o, c);
		return false;
	}
	f->hold[f->hold_len++] = c;
	return true;
}

/* The name in hold ended with ':' (also held): decide the field's fate. */
static void name_done(struct hdr_filter *f, struct out *o)
{
	size_t n = f->hold_len - 1;

	while (n > 0 && is_wsp((unsigned char)f->hold[n - 1]))
		n--;
	f->cr = false;
	if (f->rewrite && eq_ci(f->hold, n, "from")) {
		f->seen_from = true;
		f->name_len = f->hold_len;
		f->fmode = F_HOLD;
		f->state = S_HOLD;
		return;
	}
	if (f->rewrite && eq_ci(f->hold, n, "sender")) {
		if (!f->seen_sender) {
			puts_(o, "Sender: ");
			put(o, f->from, f->from_len);
			puts_(o, "\r\n");
		}
		f->seen_sender = true;
		f->changed = true;
		f->hold_len = 0;
		f->fmode = F_SKIP;
		f->state = S_SKIP;
		return;
	}
	if (f->rewrite && eq_ci(f->hold, n, "return-path")) {
		f->changed = true;
		f->hold_len = 0;
		f->fmode = F_SKIP;
		f->state = S_SKIP;
		return;
	}
	if (eq_ci(f->hold, n, "date"))
		f->seen_date = true;
	else if (eq_ci(f->hold, n, "message-id"))
		f->seen_msgid = true;
	else if (eq_ci(f->hold, n, "reply-to"))
		f->seen_reply_to = true;
	else if (eq_ci(f->hold, n, "from"))
		f->seen_from = true;
	put(o, f->hold, f->hold_len);
	f->hold_len = 0;
	f->fmode = F_STREAM;
	f->state = S_STREAM;
}

/* One byte of the header section. */
static void step(struct hdr_filter *f, char c, struct out *o)
{
	bool eol;

	if (++f->section > HDR_SECTION_MAX && f->state != S_SKIP &&
	    !(f->state == S_LINE && f->fmode == F_SKIP && is_wsp(c))) {
		give_up(f, HDR_STOP_SECTION_TOO_LONG, o);
		put1(o, c);
		return;
	}
	switch (f->state) {
	case S_LINE:
		if (is_wsp(c)) {
			switch (f->fmode) {
			case F_HOLD:
				f->state = S_HOLD;
				hold(f, c, o);
				return;
			case F_STREAM:
				f->state = S_STREAM;
				put1(o, c);
				return;
			case F_SKIP:
				f->state = S_SKIP;
				return;
			default:
				give_up(f, HDR_STOP_BAD_START, o);
				put1(o, c);
				return;
			}
		}
		if (f->fmode == F_HOLD)
			finish_from(f, o);
		f->fmode = F_NONE;
		if (c == '\r') {
			f->state = S_LINE_CR;
		} else if (is_ftext((unsigned char)c) && c != '.') {
			f->hold[0] = c;
			f->hold_len = 1;
			f->name_ws = false;
			f->state = S_NAME;
		} else {
			malformed(f, o);
			put1(o, c);
		}
		return;
	case S_LINE_CR:
		if (c == '\n') {
			additions(f, o);
			puts_(o, "\r\n");
			f->state = S_PASS;
			f->stop = HDR_STOP_END;
		} else {
			malformed(f, o);
			put1(o, '\r');
			put1(o, c);
		}
		return;
	case S_NAME:
		if (c == ':') {
			if (hold(f, c, o))
				name_done(f, o);
		} else if (is_wsp(c) || (is_ftext((unsigned char)c) && !f->name_ws)) {
			f->name_ws |= is_wsp(c);
			hold(f, c, o);
		} else {
			malformed(f, o);
			put(o, f->hold, f->hold_len);
			f->hold_len = 0;
			put1(o, c);
		}
		return;
	case S_HOLD:
		eol = c == '\n' && f->cr;
		f->cr = c == '\r';
		if (hold(f, c, o) && eol)
			f->state = S_LINE;
		return;
	case S_STREAM:
		put1(o, c);
		/* fall through */
	case S_SKIP:
		eol = c == '\n' && f->cr;
		f->cr = c == '\r';
		if (eol)
			f->state = S_LINE;
		return;
	default:
		put1(o, c);
		return;
	}
}

/* In a field's line (streamed, skipped or held): take the bytes up to and
 * including the next LF at once, as step() would one by one. Stops short
 * of every bound step() checks (section, hold, output), so step() decides
 * there. Returns how many bytes were taken. */
static size_t run_line(struct hdr_filter *f, const char *in, size_t n,
    struct out *o)
{
	const char *lf = memchr(in, '\n', n);
	size_t k = lf ? (size_t)(lf - in) + 1 : n;

	if (f->state != S_SKIP) {
		size_t room = f->section < HDR_SECTION_MAX ?
		    (size_t)(HDR_SECTION_MAX - f->section) : 0;
		if (k > room)
			k = room;
	}
	if (f->state == S_STREAM && k > o->cap - o->len)
		k = o->cap - o->len;
	if (f->state == S_HOLD && k > HDR_FIELD_MAX - f->hold_len)
		k = HDR_FIELD_MAX - f->hold_len;
	if (k == 0)
		return 0;
	bool eol = in[k - 1] == '\n' && (k >= 2 ? in[k - 2] == '\r' : f->cr);
	if (f->state == S_STREAM) {
		put(o, in, k);
	} else if (f->state == S_HOLD) {
		memcpy(f->hold + f->hold_len, in, k);
		f->hold_len += k;
	}
	f->section += k;
	f->cr = in[k - 1] == '\r';
	if (eol)
		f->state = S_LINE;
	return k;
}

enum hdr_res hdr_filter_feed(struct hdr_filter *f, const char *in, size_t inlen,
    size_t *consumed, char *out, size_t outcap, size_t *outlen)
{
	struct out o = { out, outcap, 0 };
	size_t i = 0;

	while (i < inlen) {
		if (f->state == S_PASS) {
			size_t n = inlen - i < outcap - o.len ? inlen - i : outcap - o.len;
			if (n == 0)
				break;
			memcpy(out + o.len, in + i, n);
			o.len += n;
			i += n;
			continue;
		}
		if (f->state == S_STREAM || f->state == S_SKIP || f->state == S_HOLD) {
			size_t k = run_line(f, in + i, inlen - i, &o);
			if (k > 0) {
				i += k;
				continue;
			}
		}
		if (outcap - o.len < HDR_OUT_RESERVE)
			break;
		step(f, in[i++], &o);
	}
	*consumed = i;
	*outlen = o.len;
	return i < inlen ? HDR_FULL : HDR_AGAIN;
}

void hdr_filter_finish(struct hdr_filter *f, char *out, size_t outcap,
    size_t *outlen)
{
	struct out o = { out, outcap, 0 };

	switch (f->state) {
	case S_LINE:
		if (f->fmode == F_HOLD)
			finish_from(f, &o);
		/* fall through */
	case S_SKIP:
		additions(f, &o);
		f->stop = HDR_STOP_EOF;
		break;
	case S_LINE_CR:
		malformed(f, &o);
		put1(&o, '\r');
		break;
	case S_NAME:
		malformed(f, &o);
		put(&o, f->hold, f->hold_len);
		break;
	case S_HOLD:
	case S_STREAM:
		give_up(f, HDR_STOP_TRUNCATED, &o);
		break;
	default:
		break;
	}
	f->hold_len = 0;
	f->state = S_PASS;
	*outlen = o.len;
}

bool hdr_filter_changed(const struct hdr_filter *f)
{
	return f->changed;
}

bool hdr_filter_gave_up(const struct hdr_filter *f)
{
	return f->stop >= HDR_STOP_FIELD_TOO_LONG;
}

enum hdr_stop hdr_filter_stop(const struct hdr_filter *f)
{
	return f->stop;
}

const char *hdr_stop_name(enum hdr_stop s)
{
	static const char *const names[] = {
		[HDR_STOP_NONE] = "none",
		[HDR_STOP_OFF] = "off",
		[HDR_STOP_END] = "end",
		[HDR_STOP_EOF] = "eof",
		[HDR_STOP_MALFORMED] = "malformed",
		[HDR_STOP_FIELD_TOO_LONG] = "field-too-long",
		[HDR_STOP_SECTION_TOO_LONG] = "section-too-long",
		[HDR_STOP_BAD_START] = "bad-start",
		[HDR_STOP_TRUNCATED] = "truncated",
	};
	if ((unsigned)s >= sizeof names / sizeof names[0] || !names[s])
		return "?";
	return names[s];
}

const char *hdr_filter_original_from(const struct hdr_filter *f)
{
	return f->have_orig ? f->orig_addr : "";
}
