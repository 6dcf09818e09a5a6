/*
 * inbound_auth.c - relay25's own AUTH: the users file and password checks
 * with crypt_r(3). The SASL dialogue is session.c's.
 */
#include "relay25/inbound_auth.h"

#include <crypt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define INBOUND_LINE_MAX 1024   /* longest line in the users file */

struct inbound_user {
	char *name;
	char *hash;
	int line;
};

struct inbound_users {
	struct inbound_user *v;
	size_t n, cap;
};

struct inbound_reader {
	FILE *err, *warn;
	const char *name;
	unsigned nerr;
};

static void inbound_err(struct inbound_reader *, int line, const char *fmt,
    ...) __attribute__((format(printf, 3, 4)));
static void inbound_warn(struct inbound_reader *, int line, const char *fmt,
    ...) __attribute__((format(printf, 3, 4)));

static void
inbound_err(struct inbound_reader *r, int line, const char *fmt, ...)
{
	va_list ap;

	r->nerr++;
	if (!r->err)
		return;
	if (line)
		fprintf(r->err, "%s:%d: ", r->name, line);
	else
		fprintf(r->err, "%s: ", r->name);
	va_start(ap, fmt);
	vfprintf(r->err, fmt, ap);
	va_end(ap);
	fputc('\n', r->err);
}

static void
inbound_warn(struct inbound_reader *r, int line, const char *fmt, ...)
{
	va_list ap;

	if (!r->warn)
		return;
	fprintf(r->warn, "warning: %s:%d: ", r->name, line);
	va_start(ap, fmt);
	vfprintf(r->warn, fmt, ap);
	va_end(ap);
	fputc('\n', r->warn);
}

static bool
inbound_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\v' ||
	    ch == '\f';
}

static bool
inbound_ctl(unsigned char ch)
{
	return ch < 0x20 || ch == 0x7f;
}

/* One line of fp into buf (without LF). Returns its length, -1 at end of
 * file; *over / *nul flag a line cut at n - 1 bytes / a NUL byte. */
static int
inbound_getline(FILE *fp, char *buf, size_t n, bool *over, bool *nul)
{
	size_t len = 0;
	bool any = false;
	int ch;

	*over = *nul = false;
	while ((ch = getc(fp)) != EOF) {
		any = true;
		if (ch == '\n')
			break;
		if (ch == '\0')
			*nul = true;
		if (len + 1 < n)
			buf[len++] = (char)ch;
		else
			*over = true;
	}
	buf[len] = '\0';
	return any ? (int)len : -1;
}

static struct inbound_user *
inbound_find(const struct inbound_users *u, const char *name, size_t len)
{
	for (size_t i = 0; i < u->n; i++)
		if (strlen(u->v[i].name) == len &&
		    memcmp(u->v[i].name, name, len) == 0)
			return &u->v[i];
	return NULL;
}

/* The hash must be one crypt_r() can use: modular crypt format ("$id$"),
 * a method this libcrypt supports. Returns NULL or the reason. */
static const char *
inbound_check_hash(const char *h, bool *legacy)
{
	*legacy = false;
	if (*h != '$')
		return "not a modular crypt(3) hash: expected $y$..., $6$... "
		    "(made by mkpasswd or openssl passwd -6)";
	if (strlen(h) > INBOUND_HASH_MAX)
		return "hash too long";
	for (const char *p = h; *p; p++)
		if (inbound_ctl((unsigned char)*p) || *p == ' ' || *p == ':')
			return "hash contains a space, ':' or a control "
			    "character";
#ifdef CRYPT_CHECKSALT_AVAILABLE
	switch (crypt_checksalt(h)) {
	case CRYPT_SALT_OK:
		break;
	case CRYPT_SALT_METHOD_LEGACY:
		*legacy = true;
		break;
	case CRYPT_SALT_METHOD_DISABLED:
		return "hash method disabled in this system's libcrypt";
	default:
		return "malformed hash or a method this system's libcrypt "
		    "does not support";
	}
#endif
	return NULL;
}

static void
inbound_line(struct inbound_reader *r, struct inbound_users *u, char *s,
    int line)
{
	char *colon, *end, *name, *hash;
	struct inbound_user *prev;
	const char *why;
	size_t nlen;
	bool legacy;

	while (inbound_space(*s))
		s++;
	for (end = s + strlen(s); end > s && inbound_space(end[-1]); )
		*--end = '\0';
	if (!*s || *s == '#')
		return;
	if (!(colon = strchr(s, ':'))) {
		inbound_err(r, line, "expected 'user:hash'");
		return;
	}
	*colon = '\0';
	name = s;
	hash = colon + 1;
	nlen = strlen(name);
	if (nlen == 0) {
		inbound_err(r, line, "empty user name");
		return;
	}
	if (nlen > INBOUND_USER_MAX) {
		inbound_err(r, line, "user name longer than %d bytes",
		    INBOUND_USER_MAX);
		return;
	}
	for (const char *p = name; *p; p++) {
		if (inbound_ctl((unsigned char)*p) || inbound_space(*p)) {
			inbound_err(r, line, "user name contains a space or a "
			    "control character");
			return;
		}
	}
	if (!*hash) {
		inbound_err(r, line, "user '%s' has no hash", name);
		return;
	}
	if ((why = inbound_check_hash(hash, &legacy)) != NULL) {
		inbound_err(r, line, "user '%s': %s", name, why);
		return;
	}
	if (legacy)
		inbound_warn(r, line, "user '%s': libcrypt rates this hash "
		    "method as weak; prefer $y$ or $6$", name);
	if ((prev = inbound_find(u, name, nlen)) != NULL) {
		inbound_err(r, line, "user '%s' listed twice (first on line %d)",
		    name, prev->line);
		return;
	}
	if (u->n == INBOUND_MAX_USERS) {
		inbound_err(r, line, "more than %d users", INBOUND_MAX_USERS);
		return;
	}
	if (u->n == u->cap) {
		size_t cap = u->cap ? u->cap * 2 : 16;
		struct inbound_user *v = realloc(u->v, cap * sizeof *v);
		if (!v) {
			inbound_err(r, line, "out of memory");
			return;
		}
		u->v = v;
		u->cap = cap;
	}
	u->v[u->n].name = strdup(name);
	u->v[u->n].hash = strdup(hash);
	u->v[u->n].line = line;
	if (!u->v[u->n].name || !u->v[u->n].hash) {
		free(u->v[u->n].name);
		free(u->v[u->n].hash);
		inbound_err(r, line, "out of memory");
		return;
	}
	u->n++;
}

struct inbound_users *
inbound_users_read(FILE *fp, const char *name, FILE *err, FILE *warn,
    unsigned *nerr)
{
	struct inbound_reader r = { .err = err, .warn = warn, .name = name };
	struct inbound_users *u = calloc(1, sizeof *u);
	char buf[INBOUND_LINE_MAX + 2];
	int line = 0, len;
	bool over, nul;

	if (!u) {
		inbound_err(&r, 0, "out of memory");
	} else {
		while ((len = inbound_getline(fp, buf, sizeof buf, &over,
		    &nul)) >= 0) {
			line++;
			if (over)
				inbound_err(&r, line, "line longer than %d bytes",
				    INBOUND_LINE_MAX);
			else if (nul)
				inbound_err(&r, line, "line contains a NUL byte");
			else
				inbound_line(&r, u, buf, line);
		}
		if (ferror(fp))
			inbound_err(&r, 0, "read error");
		else if (r.nerr == 0 && u->n == 0)
			inbound_err(&r, 0, "no users defined");
	}
	explicit_bzero(buf, sizeof buf);
	if (nerr)
		*nerr = r.nerr;
	if (r.nerr) {
		inbound_users_free(u);
		return NULL;
	}
	return u;
}

void
inbound_users_free(struct inbound_users *u)
{
	if (!u)
		return;
	for (size_t i = 0; i < u->n; i++) {
		explicit_bzero(u->v[i].hash, strlen(u->v[i].hash));
		free(u->v[i].hash);
		free(u->v[i].name);
	}
	free(u->v);
	free(u);
}

size_t
inbound_users_count(const struct inbound_users *u)
{
	return u ? u->n : 0;
}

/* Equal strings? The time taken depends on the stored hash's length only,
 * not on where the strings differ. */
static bool
inbound_ct_equal(const char *computed, const char *stored)
{
	size_t lc = strlen(computed), ls = strlen(stored);
	volatile unsigned char diff = (unsigned char)(lc != ls);

	for (size_t i = 0; i < ls; i++)
		diff |= (unsigned char)((i < lc ? computed[i] : 0) ^ stored[i]);
	return diff == 0;
}

bool
inbound_verify(const struct inbound_users *u, const char *user, size_t ulen,
    const char *pass, size_t plen)
{
	char pw[CRYPT_MAX_PASSPHRASE_SIZE];
	const struct inbound_user *found = NULL;
	struct crypt_data *cd;
	const char *out;
	bool usable, ok = false;

	if (!u || u->n == 0)
		return false;
	usable = ulen <= INBOUND_USER_MAX && plen < sizeof pw &&
	    !memchr(user, '\0', ulen) && !memchr(pass, '\0', plen);
	if (usable)
		found = inbound_find(u, user, ulen);
	/* Always one crypt: an unknown user's password is hashed with the
	 * first user's setting and the result thrown away. */
	if (plen >= sizeof pw)
		plen = sizeof pw - 1;
	memcpy(pw, pass, plen);
	pw[plen] = '\0';
	if ((cd = calloc(1, sizeof *cd)) != NULL) {
		out = crypt_r(pw, found ? found->hash : u->v[0].hash, cd);
		if (out && found && usable)
			ok = inbound_ct_equal(out, found->hash);
		explicit_bzero(cd, sizeof *cd);
		free(cd);
	}
	explicit_bzero(pw, sizeof pw);
	return ok;
}

bool
inbound_plain_split(const char *msg, size_t len, struct inbound_plain *p)
{
	const char *nul1 = memchr(msg, '\0', len), *nul2;

	if (!nul1)
		return false;
	nul2 = memchr(nul1 + 1, '\0', len - (size_t)(nul1 + 1 - msg));
	if (!nul2 || memchr(nul2 + 1, '\0', len - (size_t)(nul2 + 1 - msg)))
		return false;
	p->authzid = msg;
	p->authzid_len = (size_t)(nul1 - msg);
	p->user = nul1 + 1;
	p->user_len = (size_t)(nul2 - p->user);
	p->pass = nul2 + 1;
	p->pass_len = len - (size_t)(p->pass - msg);
	return p->user_len > 0;
}
