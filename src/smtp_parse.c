/*
 * smtp_parse.c - pure SMTP parsers: line framing for client commands, the
 * command table, MAIL/RCPT paths with ESMTP parameters, the resumable
 * multi-line reply parser, reply formatting, queue-id extraction and EHLO
 * capabilities. No I/O, no allocation; all input is untrusted.
 */
#include "relay25/smtp_parse.h"

#include <limits.h>
#include <string.h>

/* ---- small character helpers (locale-independent) ------------------ */

static bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static bool is_alpha(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool is_alnum(unsigned char c) { return is_alpha(c) || is_digit(c); }

static unsigned char to_upper(unsigned char c)
{
	return (c >= 'a' && c <= 'z') ? (unsigned char)(c - 'a' + 'A') : c;
}

/* Control characters other than TAB (and DEL). */
static bool is_ctl(unsigned char c) { return (c < 0x20 && c != '\t') || c == 0x7f; }

/* Case-insensitive compare of s[0..n) with the NUL-terminated word. */
static bool eq_ci(const char *s, size_t n, const char *word)
{
	size_t wl = strlen(word);

	if (n != wl)
		return false;
	for (size_t i = 0; i < n; i++)
		if (to_upper((unsigned char)s[i]) != to_upper((unsigned char)word[i]))
			return false;
	return true;
}

/* Does s[0..n) start with word (case-insensitive)? */
static bool prefix_ci(const char *s, size_t n, const char *word)
{
	size_t wl = strlen(word);

	return n >= wl && eq_ci(s, wl, word);
}

/* ---- line framing --------------------------------------------------- */

void smtp_line_init(struct smtp_line_state *st, size_t max)
{
	st->max = max;
	st->skipping = false;
	st->cr_pending = false;
}

/* Fill *line for a line buf[0..n) that ended (bare or not). */
static void line_set(struct smtp_line_state *st, struct smtp_line *line,
    const char *buf, size_t n, bool bare, bool nul)
{
	line->bare_eol = bare;
	line->has_nul = nul;
	if (st->skipping || n > st->max) {
		/* Content discarded; has_nul is not reported for it, so the
		 * result does not depend on segmentation. */
		line->too_long = true;
		line->has_nul = false;
		line->ptr = buf;
		line->len = 0;
	} else {
		line->too_long = false;
		line->ptr = buf;
		line->len = n;
	}
	st->skipping = false;
}

/*
 * The caller passes the bytes it has not consumed yet; bytes returned as
 * consumed are never presented again. A CR as the last byte is left
 * unconsumed (or, inside an over-long line, consumed and remembered in
 * cr_pending) until the next byte tells whether LF follows.
 */
enum smtp_res smtp_line_next(struct smtp_line_state *st, const char *buf,
    size_t len, struct smtp_line *line, size_t *consumed)
{
	bool nul = false;
	size_t i = 0;

	*consumed = 0;
	memset(line, 0, sizeof(*line));
	line->ptr = buf;
	if (st->cr_pending) {
		/* Only reachable while skipping: the CR ended the long line. */
		if (len == 0)
			return SMTP_AGAIN;
		st->cr_pending = false;
		bool lf = buf[0] == '\n';
		line_set(st, line, buf, 0, !lf, false);
		line->too_long = true;
		*consumed = lf ? 1 : 0;
		return SMTP_OK;
	}
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)buf[i];

		if (c == '\n') {
			line_set(st, line, buf, i, true, nul);
			*consumed = i + 1;
			return SMTP_OK;
		}
		if (c == '\r') {
			if (i + 1 == len)
				break;          /* wait for the next byte */
			bool lf = buf[i + 1] == '\n';
			line_set(st, line, buf, i, !lf, nul);
			*consumed = i + (lf ? 2 : 1);
			return SMTP_OK;
		}
		if (c == '\0')
			nul = true;
	}
	/* No complete line. i is the content seen so far (a trailing CR
	 * excluded). */
	if (st->skipping || i > st->max) {
		st->skipping = true;
		if (i < len) {          /* trailing CR: consume it, remember */
			st->cr_pending = true;
			*consumed = len;
		} else {
			*consumed = i;
		}
	}
	return SMTP_AGAIN;
}

/* ---- commands ------------------------------------------------------- */

static const struct {
	const char *name;
	enum smtp_verb verb;
} verbs[] = {
	{ "HELO", SMTP_CMD_HELO },   { "EHLO", SMTP_CMD_EHLO },
	{ "MAIL", SMTP_CMD_MAIL },   { "RCPT", SMTP_CMD_RCPT },
	{ "DATA", SMTP_CMD_DATA },   { "RSET", SMTP_CMD_RSET },
	{ "NOOP", SMTP_CMD_NOOP },   { "QUIT", SMTP_CMD_QUIT },
	{ "VRFY", SMTP_CMD_VRFY },   { "HELP", SMTP_CMD_HELP },
	{ "EXPN", SMTP_CMD_EXPN },   { "AUTH", SMTP_CMD_AUTH },
	{ "STARTTLS", SMTP_CMD_STARTTLS }, { "BDAT", SMTP_CMD_BDAT },
};

enum smtp_res smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *cmd)
{
	size_t vl = 0;

	cmd->verb = SMTP_CMD_UNKNOWN;
	cmd->arg = line + len;
	cmd->arg_len = 0;
	if (len == 0)
		return SMTP_ERROR;
	while (vl < len && line[vl] != ' ')
		vl++;
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		if (eq_ci(line, vl, verbs[i].name)) {
			cmd->verb = verbs[i].verb;
			break;
		}
	}
	if (vl < len) {
		cmd->arg = line + vl + 1;
		cmd->arg_len = len - vl - 1;
	}
	return SMTP_OK;
}

const char *smtp_verb_name(enum smtp_verb v)
{
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (verbs[i].verb == v)
			return verbs[i].name;
	return "UNKNOWN";
}

/* ---- MAIL / RCPT paths -------------------------------------------- */

/* A mailbox character: printable (8-bit allowed for SMTPUTF8), no space,
 * no angle bracket. */
static bool is_addr_char(unsigned char c)
{
	return c > 0x20 && c != 0x7f && c != '<' && c != '>';
}

/* esmtp-value = 1*(%d33-60 / %d62-126) */
static bool is_value_char(unsigned char c)
{
	return c >= 33 && c <= 126 && c != '=';
}

/* Parse one "key[=value]" in s[0..n) (no spaces inside). */
static bool param_parse(const char *s, size_t n, struct smtp_param *p)
{
	size_t k = 0;

	if (n == 0 || !is_alnum((unsigned char)s[0]))
		return false;
	while (k < n && (is_alnum((unsigned char)s[k]) || s[k] == '-'))
		k++;
	p->key = s;
	p->key_len = k;
	p->val = s + k;
	p->val_len = 0;
	if (k == n)
		return true;
	if (s[k] != '=' || k + 1 == n)
		return false;
	for (size_t i = k + 1; i < n; i++)
		if (!is_value_char((unsigned char)s[i]))
			return false;
	p->val = s + k + 1;
	p->val_len = n - k - 1;
	return true;
}

/* Parameters: space-separated, surrounding spaces tolerated. */
static enum smtp_res params_parse(const char *s, size_t n, struct smtp_path *path)
{
	size_t i = 0;

	while (i < n) {
		if (s[i] == ' ') {
			i++;
			continue;
		}
		size_t start = i;
		while (i < n && s[i] != ' ')
			i++;
		if (path->nparams == SMTP_MAX_PARAMS)
			return SMTP_ERROR;
		if (!param_parse(s + start, i - start, &path->params[path->nparams]))
			return SMTP_ERROR;
		path->nparams++;
	}
	return SMTP_OK;
}

enum smtp_res smtp_path_parse(const char *arg, size_t len, const char *prefix,
    bool allow_empty, struct smtp_path *path)
{
	size_t i, pl = strlen(prefix), a0, a1;

	memset(path, 0, sizeof(*path));
	path->addr = arg;
	if (!prefix_ci(arg, len, prefix))
		return SMTP_ERROR;
	i = pl;
	while (i < len && arg[i] == ' ')
		i++;
	if (i < len && arg[i] == '<') {
		a0 = ++i;
		while (i < len && is_addr_char((unsigned char)arg[i]))
			i++;
		if (i == len || arg[i] != '>')
			return SMTP_ERROR;  /* unbalanced, space or control */
		a1 = i++;
		if (i < len && arg[i] != ' ')
			return SMTP_ERROR;  /* "<a@b>x" */
	} else {
		a0 = i;
		while (i < len && is_addr_char((unsigned char)arg[i]))
			i++;
		a1 = i;
		if (i < len && arg[i] != ' ')
			return SMTP_ERROR;  /* control character or bracket */
		if (a1 == a0)
			return SMTP_ERROR;  /* no path at all */
	}
	if (a1 - a0 > SMTP_PATH_MAX)
		return SMTP_ERROR;
	if (a1 == a0 && !allow_empty)
		return SMTP_ERROR;
	path->addr = arg + a0;
	path->addr_len = a1 - a0;
	return params_parse(arg + i, len - i, path);
}

const struct smtp_param *smtp_path_param(const struct smtp_path *path,
    const char *key)
{
	for (size_t i = 0; i < path->nparams && i < SMTP_MAX_PARAMS; i++)
		if (eq_ci(path->params[i].key, path->params[i].key_len, key))
			return &path->params[i];
	return NULL;
}

/* ---- replies -------------------------------------------------------- */

enum { RP_LINE = 0, RP_DONE = 1, RP_ERROR = 2 };

void smtp_reply_init(struct smtp_reply_parser *p)
{
	memset(p, 0, sizeof(*p));
	p->state = RP_LINE;
}

/* Length of an enhanced status code "c.d{1,3}.d{1,3}" at s[0..n) whose
 * class is `cls`, followed by end or a space; 0 if none. */
static size_t enh_len(const char *s, size_t n, char cls)
{
	size_t i = 2;

	if (n < 5 || s[0] != cls || s[1] != '.')
		return 0;
	for (int part = 0; part < 2; part++) {
		size_t d = 0;
		while (i < n && is_digit((unsigned char)s[i]) && d < 4) {
			i++;
			d++;
		}
		if (d == 0 || d > 3)
			return 0;
		if (part == 0) {
			if (i >= n || s[i] != '.')
				return 0;
			i++;
		}
	}
	return (i == n || s[i] == ' ') ? i : 0;
}

/* Store the text of one line, control characters made harmless;
 * truncated once text[] is full. */
static void reply_store(struct smtp_reply *r, const char *s, size_t n)
{
	size_t used = r->nlines ? (size_t)r->off[r->nlines - 1] +
	    r->len[r->nlines - 1] : 0;
	size_t room = SMTP_REPLY_TEXT_MAX - used;

	if (n > room)
		n = room;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		r->text[used + i] = is_ctl(c) ? '?' : (char)c;
	}
	r->off[r->nlines] = (uint16_t)used;
	r->len[r->nlines] = (uint16_t)n;
	r->nlines++;
}

/* Handle one complete line (terminator removed). Returns SMTP_OK for the
 * last line, SMTP_AGAIN for a continuation, SMTP_ERROR. */
static enum smtp_res reply_line(struct smtp_reply_parser *p, const char *s,
    size_t n)
{
	struct smtp_reply *r = &p->reply;
	bool last;
	int code;
	size_t el;

	if (n > SMTP_REPLY_LINE_MAX || n < 3)
		return SMTP_ERROR;
	if (p->total_lines >= SMTP_REPLY_MAX_LINES)
		return SMTP_ERROR;
	if (s[0] < '2' || s[0] > '5' || !is_digit((unsigned char)s[1]) ||
	    !is_digit((unsigned char)s[2]))
		return SMTP_ERROR;
	code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
	if (n == 3 || s[3] == ' ')
		last = true;
	else if (s[3] == '-')
		last = false;
	else
		return SMTP_ERROR;
	if (p->total_lines > 0 && code != r->code)
		return SMTP_ERROR;
	r->code = code;
	size_t skip = n > 3 ? 4 : 3;   /* code and separator */
	s += skip;
	n -= skip;
	if (p->total_lines == 0) {
		el = enh_len(s, n, (char)('0' + code / 100));
		memcpy(r->enh, s, el);
		r->enh[el] = '\0';
	} else {
		el = strlen(r->enh);
		if (el == 0 || enh_len(s, n, r->enh[0]) != el ||
		    memcmp(s, r->enh, el) != 0)
			el = 0;
	}
	if (el > 0) {               /* drop the code and one space */
		s += el;
		n -= el;
		if (n > 0) {
			s++;
			n--;
		}
	}
	reply_store(r, s, n);
	p->total_lines++;
	return last ? SMTP_OK : SMTP_AGAIN;
}

enum smtp_res smtp_reply_feed(struct smtp_reply_parser *p, const char *buf,
    size_t len, size_t *consumed)
{
	*consumed = 0;
	if (p->state == RP_DONE)
		return SMTP_OK;
	if (p->state == RP_ERROR)
		return SMTP_ERROR;
	for (size_t i = 0; i < len; i++) {
		char c = buf[i];

		if (c != '\n') {
			/* Room for LINE_MAX bytes plus a CR. */
			if (p->line_len >= SMTP_REPLY_LINE_MAX + 1) {
				p->state = RP_ERROR;
				*consumed = i + 1;
				return SMTP_ERROR;
			}
			p->line[p->line_len++] = c;
			continue;
		}
		size_t n = p->line_len;
		if (n > 0 && p->line[n - 1] == '\r')
			n--;
		p->line_len = 0;
		enum smtp_res res = reply_line(p, p->line, n);
		if (res == SMTP_AGAIN)
			continue;
		*consumed = i + 1;
		p->state = res == SMTP_OK ? RP_DONE : RP_ERROR;
		return res;
	}
	*consumed = len;
	return SMTP_AGAIN;
}

/* Append s[0..n) to out at *pos; false when it does not fit. */
static bool put(char *out, size_t outlen, size_t *pos, const char *s, size_t n)
{
	if (n > outlen - *pos)
		return false;
	memcpy(out + *pos, s, n);
	*pos += n;
	return true;
}

/* "250-" / "250 " / "250" for line i of a reply. */
static bool put_line(const struct smtp_reply *r, size_t i, size_t nlines,
    char *out, size_t outlen, size_t *pos)
{
	char head[8];
	size_t el = strnlen(r->enh, sizeof(r->enh));
	size_t tl = nlines > r->nlines ? 0 : r->len[i];
	const char *t = nlines > r->nlines ? "" : r->text + r->off[i];
	bool last = i + 1 == nlines;
	int code = r->code >= 100 && r->code <= 999 ? r->code : 451;

	head[0] = (char)('0' + code / 100);
	head[1] = (char)('0' + code / 10 % 10);
	head[2] = (char)('0' + code % 10);
	head[3] = last ? ' ' : '-';
	if (!put(out, outlen, pos, head, (el || tl || !last) ? 4 : 3))
		return false;
	if (el && !put(out, outlen, pos, r->enh, el))
		return false;
	if (el && tl && !put(out, outlen, pos, " ", 1))
		return false;
	return put(out, outlen, pos, t, tl) && put(out, outlen, pos, "\r\n", 2);
}

size_t smtp_reply_format(const struct smtp_reply *r, char *out, size_t outlen)
{
	size_t pos = 0, n = r->nlines ? r->nlines : 1;

	if (r->nlines > SMTP_REPLY_MAX_LINES)
		return 0;
	for (size_t i = 0; i < r->nlines; i++)
		if ((size_t)r->off[i] + r->len[i] > SMTP_REPLY_TEXT_MAX)
			return 0;
	for (size_t i = 0; i < n; i++)
		if (!put_line(r, i, n, out, outlen, &pos))
			return 0;
	if (pos < outlen)
		out[pos] = '\0';
	return pos;
}

/* Append as much of s[0..n) as fits (leaving room for NUL), control
 * characters replaced. */
static void put_clean(char *out, size_t outlen, size_t *pos, const char *s,
    size_t n)
{
	for (size_t i = 0; i < n && *pos + 1 < outlen; i++) {
		unsigned char c = (unsigned char)s[i];
		out[(*pos)++] = is_ctl(c) || c == '\t' ? '?' : (char)c;
	}
}

size_t smtp_reply_summary(const struct smtp_reply *r, char *out, size_t outlen)
{
	char code[4];
	size_t pos = 0, el = strnlen(r->enh, sizeof(r->enh));

	if (outlen == 0)
		return 0;
	code[0] = (char)('0' + (r->code / 100) % 10);
	code[1] = (char)('0' + (r->code / 10) % 10);
	code[2] = (char)('0' + r->code % 10);
	put_clean(out, outlen, &pos, code, 3);
	if (el) {
		put_clean(out, outlen, &pos, " ", 1);
		put_clean(out, outlen, &pos, r->enh, el);
	}
	if (r->nlines > 0 && r->len[0] > 0 &&
	    (size_t)r->off[0] + r->len[0] <= SMTP_REPLY_TEXT_MAX) {
		put_clean(out, outlen, &pos, " ", 1);
		put_clean(out, outlen, &pos, r->text + r->off[0], r->len[0]);
	}
	out[pos] = '\0';
	return pos;
}

/* ---- queue ids ------------------------------------------------------ */

static bool is_id_char(unsigned char c)
{
	return is_alnum(c) || c == '.' || c == '_' || c == '@' || c == '-' ||
	    c == '<' || c == '>';
}

/* Copy the id in s[0..n) without <> and trailing dots; 0 (and out
 * emptied) if it does not fit or is empty. outlen >= 2. */
static size_t id_copy(const char *s, size_t n, char *out, size_t outlen)
{
	size_t k = 0;

	while (n > 0 && (s[n - 1] == '.' || s[n - 1] == '>'))
		n--;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '<' || s[i] == '>')
			continue;
		if (k + 1 >= outlen) {
			out[0] = '\0';
			return 0;
		}
		out[k++] = s[i];
	}
	if (k == 0)
		return 0;
	out[k] = '\0';
	return k;
}

/* Length of the run of id characters at s[0..n). */
static size_t id_span(const char *s, size_t n)
{
	size_t i = 0;

	while (i < n && is_id_char((unsigned char)s[i]))
		i++;
	return i;
}

/* "queued as X", "queued as: X", "id=X" anywhere in the line. */
static size_t id_marked(const char *s, size_t n, char *out, size_t outlen)
{
	for (size_t i = 0; i < n; i++) {
		size_t j = 0;

		if (prefix_ci(s + i, n - i, "queued as")) {
			j = i + 9;
			if (j < n && s[j] == ':')
				j++;
			if (j == n || s[j] != ' ')
				continue;
			while (j < n && s[j] == ' ')
				j++;
		} else if (prefix_ci(s + i, n - i, "id=") &&
		    (i == 0 || !is_alnum((unsigned char)s[i - 1]))) {
			j = i + 3;
		} else {
			continue;
		}
		size_t k = id_copy(s + j, id_span(s + j, n - j), out, outlen);
		if (k > 0)
			return k;
	}
	return 0;
}

/* The last token, when it looks like an id: at least 6 id characters and
 * a digit, or enclosed in <>. Gmail's trailing "- gsmtp" is skipped. */
static size_t id_last_token(const char *s, size_t n, char *out, size_t outlen)
{
	size_t end = n, start;

	for (int pass = 0; pass < 3; pass++) {
		while (end > 0 && s[end - 1] == ' ')
			end--;
		start = end;
		while (start > 0 && s[start - 1] != ' ')
			start--;
		if (pass == 0 && eq_ci(s + start, end - start, "gsmtp"))
			end = start;
		else if (pass == 1 && eq_ci(s + start, end - start, "-"))
			end = start;
		else
			break;
	}
	start = end;
	while (start > 0 && s[start - 1] != ' ')
		start--;
	size_t tl = end - start;
	const char *t = s + start;
	bool digit = false, bracket = tl >= 2 && t[0] == '<' && t[tl - 1] == '>';
	if (tl < 6 || id_span(t, tl) != tl)
		return 0;
	for (size_t i = 0; i < tl; i++)
		digit = digit || is_digit((unsigned char)t[i]);
	return digit || bracket ? id_copy(t, tl, out, outlen) : 0;
}

size_t smtp_reply_queue_id(const struct smtp_reply *r, char *out,
    size_t outlen)
{
	size_t k;

	if (outlen > 0)
		out[0] = '\0';
	if (outlen < 2 || r->code / 100 != 2 || r->nlines == 0 ||
	    r->nlines > SMTP_REPLY_MAX_LINES)
		return 0;
	for (size_t i = 0; i < r->nlines; i++) {
		if ((size_t)r->off[i] + r->len[i] > SMTP_REPLY_TEXT_MAX)
			return 0;
		k = id_marked(r->text + r->off[i], r->len[i], out, outlen);
		if (k > 0)
			return k;
	}
	size_t last = r->nlines - 1;
	return id_last_token(r->text + r->off[last], r->len[last], out, outlen);
}

/* ---- EHLO capabilities ------------------------------------------- */

static const struct {
	const char *name;
	unsigned bit;
} mechs[] = {
	{ "PLAIN", SMTP_AUTH_PLAIN }, { "LOGIN", SMTP_AUTH_LOGIN },
	{ "CRAM-MD5", SMTP_AUTH_CRAM_MD5 }, { "XOAUTH2", SMTP_AUTH_XOAUTH2 },
	{ "OAUTHBEARER", SMTP_AUTH_OAUTHBEARER },
};

/* Mechanism names separated by spaces in s[0..n). */
static unsigned auth_mechs(const char *s, size_t n)
{
	unsigned bits = 0;
	size_t i = 0;

	while (i < n) {
		size_t st = i;
		while (i < n && s[i] != ' ')
			i++;
		for (size_t m = 0; m < sizeof(mechs) / sizeof(mechs[0]); m++)
			if (eq_ci(s + st, i - st, mechs[m].name))
				bits |= mechs[m].bit;
		while (i < n && s[i] == ' ')
			i++;
	}
	return bits;
}

/* Decimal, saturating at UINT64_MAX; 0 when absent or not a number. */
static uint64_t parse_u64(const char *s, size_t n)
{
	uint64_t v = 0;

	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit((unsigned char)s[i]))
			return 0;
		unsigned d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return UINT64_MAX;
		v = v * 10 + d;
	}
	return v;
}

/* One capability line: keyword, then arguments. */
static void caps_line(const char *s, size_t n, struct smtp_caps *c)
{
	size_t k = 0, a;

	while (k < n && s[k] != ' ' && s[k] != '=')
		k++;
	a = k;
	while (a < n && (s[a] == ' ' || s[a] == '='))
		a++;
	if (eq_ci(s, k, "STARTTLS"))
		c->starttls = true;
	else if (eq_ci(s, k, "PIPELINING"))
		c->pipelining = true;
	else if (eq_ci(s, k, "8BITMIME"))
		c->eightbitmime = true;
	else if (eq_ci(s, k, "SMTPUTF8"))
		c->smtputf8 = true;
	else if (eq_ci(s, k, "DSN"))
		c->dsn = true;
	else if (eq_ci(s, k, "ENHANCEDSTATUSCODES"))
		c->enhanced = true;
	else if (eq_ci(s, k, "CHUNKING"))
		c->chunking = true;
	else if (eq_ci(s, k, "AUTH"))
		c->auth |= auth_mechs(s + a, n - a);
	else if (eq_ci(s, k, "SIZE")) {
		size_t e = a;
		while (e < n && s[e] != ' ')
			e++;
		c->size_known = true;
		c->size = parse_u64(s + a, e - a);
	}
}

void smtp_caps_parse(const struct smtp_reply *r, struct smtp_caps *c)
{
	memset(c, 0, sizeof(*c));
	if (r->code != 250 || r->nlines > SMTP_REPLY_MAX_LINES)
		return;
	for (size_t i = 1; i < r->nlines; i++) {
		if ((size_t)r->off[i] + r->len[i] > SMTP_REPLY_TEXT_MAX)
			return;
		caps_line(r->text + r->off[i], r->len[i], c);
	}
}
