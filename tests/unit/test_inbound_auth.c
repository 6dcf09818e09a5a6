/*
 * test_inbound_auth.c - relay25's own AUTH: the users file (syntax and
 * its errors as name:line: message), password checks with crypt_r, and
 * the SASL PLAIN message splitter.
 */
#include <criterion/criterion.h>

#include <crypt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay25/inbound_auth.h"

/* A fresh $6$ hash (cheap) of pw, made with crypt_r. */
static const char *
hash6(const char *pw, const char *salt)
{
	static struct crypt_data cd;
	static char out[4][CRYPT_OUTPUT_SIZE];
	static int i;
	char setting[64];
	const char *h;

	snprintf(setting, sizeof setting, "$6$%s$", salt);
	memset(&cd, 0, sizeof cd);
	h = crypt_r(pw, setting, &cd);
	cr_assert(h && h[0] == '$', "crypt_r failed");
	i = (i + 1) % 4;
	snprintf(out[i], sizeof out[i], "%s", h);
	return out[i];
}

struct read {
	struct inbound_users *u;
	char *err, *warn;
	size_t errlen, warnlen;
	unsigned nerr;
};

static struct read
read_text(const char *text)
{
	struct read r = { 0 };
	FILE *in = fmemopen((void *)text, strlen(text), "r");
	FILE *e = open_memstream(&r.err, &r.errlen);
	FILE *w = open_memstream(&r.warn, &r.warnlen);

	cr_assert(in && e && w);
	r.u = inbound_users_read(in, "users", e, w, &r.nerr);
	fclose(in);
	fclose(e);
	fclose(w);
	return r;
}

static void
done(struct read *r)
{
	inbound_users_free(r->u);
	free(r->err);
	free(r->warn);
}

static void
expect_error(const char *text, const char *where, const char *msg)
{
	struct read r = read_text(text);

	cr_assert_null(r.u, "read although bad:\n%s", text);
	cr_assert_gt(r.nerr, 0);
	cr_assert(strstr(r.err, where) != NULL && strstr(r.err, msg) != NULL,
	    "want \"%s...%s\" in:\n%s", where, msg, r.err);
	done(&r);
}

static bool
verify(const struct inbound_users *u, const char *user, const char *pass)
{
	return inbound_verify(u, user, strlen(user), pass, strlen(pass));
}

Test(inbound_auth, read_and_verify)
{
	char text[1024];
	struct read r;

	snprintf(text, sizeof text,
	    "# relay25 users\n"
	    "\n"
	    "alice:%s\n"
	    "   bob:%s   \r\n"
	    "  # indented comment\n"
	    "app@example.com:%s",        /* no final newline */
	    hash6("alice-pw", "saltsalt"), hash6("b0b pw!", "othersalt"),
	    hash6("", "emptysalt"));
	r = read_text(text);
	cr_assert_not_null(r.u, "%s", r.err);
	cr_assert_eq(r.nerr, 0);
	cr_assert_eq(inbound_users_count(r.u), 3);
	cr_assert(verify(r.u, "alice", "alice-pw"));
	cr_assert(verify(r.u, "bob", "b0b pw!"));
	cr_assert(verify(r.u, "app@example.com", ""));
	cr_assert_not(verify(r.u, "alice", "alice-pw "));
	cr_assert_not(verify(r.u, "alice", "Alice-pw"));
	cr_assert_not(verify(r.u, "alice", ""));
	cr_assert_not(verify(r.u, "alice", "b0b pw!"));
	cr_assert_not(verify(r.u, "Alice", "alice-pw"));   /* names: exact */
	cr_assert_not(verify(r.u, "carol", "alice-pw"));   /* unknown user */
	cr_assert_not(verify(r.u, "", ""));
	cr_assert_eq(r.warnlen, 0, "%s", r.warn);
	done(&r);
}

Test(inbound_auth, yescrypt_hash)
{
	struct crypt_data *cd = calloc(1, sizeof *cd);
	char text[512];
	struct read r;
	const char *h;

	cr_assert_not_null(cd);
	/* the cheapest yescrypt cost keeps the test fast */
	h = crypt_r("pw", "$y$j75$saltsaltsaltsalt$", cd);
	if (!h || h[0] != '$') {
		free(cd);
		cr_skip_test("this libcrypt has no yescrypt");
	}
	snprintf(text, sizeof text, "u:%s\n", h);
	free(cd);
	r = read_text(text);
	cr_assert_not_null(r.u, "%s", r.err);
	cr_assert(verify(r.u, "u", "pw"));
	cr_assert_not(verify(r.u, "u", "pW"));
	done(&r);
}

Test(inbound_auth, nul_bytes_and_limits_never_verify)
{
	char text[512], big[600];
	struct read r;

	snprintf(text, sizeof text, "alice:%s\n", hash6("pw", "s1"));
	r = read_text(text);
	cr_assert_not_null(r.u, "%s", r.err);
	cr_assert(inbound_verify(r.u, "alice", 5, "pw", 2));
	/* "pw\0x" is not "pw", although crypt would stop at the NUL */
	cr_assert_not(inbound_verify(r.u, "alice", 5, "pw\0x", 4));
	cr_assert_not(inbound_verify(r.u, "alice\0x", 7, "pw", 2));
	/* length given, not NUL-terminated */
	cr_assert(inbound_verify(r.u, "alicex", 5, "pwx", 2));
	memset(big, 'p', sizeof big);
	cr_assert_not(inbound_verify(r.u, "alice", 5, big, sizeof big));
	cr_assert_not(inbound_verify(r.u, big, sizeof big, "pw", 2));
	cr_assert_not(inbound_verify(NULL, "alice", 5, "pw", 2));
	done(&r);
}

Test(inbound_auth, legacy_hash_warns)
{
	struct crypt_data *cd = calloc(1, sizeof *cd);
	char text[512];
	struct read r;
	const char *h;

	cr_assert_not_null(cd);
	h = crypt_r("pw", "$1$abcdefgh$", cd);
	if (!h || h[0] != '$') {
		free(cd);
		cr_skip_test("this libcrypt has no md5crypt");
	}
	snprintf(text, sizeof text, "old:%s\n", h);
	free(cd);
	r = read_text(text);
#ifdef CRYPT_CHECKSALT_AVAILABLE
	cr_assert_not_null(r.u, "%s", r.err);
	cr_assert(strstr(r.warn, "warning: users:1: user 'old'") != NULL,
	    "%s", r.warn);
	cr_assert(verify(r.u, "old", "pw"));
#endif
	done(&r);
}

Test(inbound_auth, errors)
{
	const char *h = hash6("pw", "salt");
	char text[2048];

	expect_error("", "users: ", "no users defined");
	expect_error("# only a comment\n\n", "users: ", "no users defined");
	expect_error("alice\n", "users:1: ", "expected 'user:hash'");
	snprintf(text, sizeof text, "\n:%s\n", h);
	expect_error(text, "users:2: ", "empty user name");
	expect_error("alice:\n", "users:1: ", "user 'alice' has no hash");
	expect_error("alice:secret\n", "users:1: ",
	    "not a modular crypt(3) hash");
	expect_error("alice:abcdefghijklm\n", "users:1: ",      /* DES */
	    "not a modular crypt(3) hash");
	expect_error("alice:$9$abc$def\n", "users:1: ", "user 'alice': ");
	snprintf(text, sizeof text, "al ice:%s\n", h);
	expect_error(text, "users:1: ", "user name contains a space");
	snprintf(text, sizeof text, "al\tice:%s\n", h);
	expect_error(text, "users:1: ", "user name contains a space");
	snprintf(text, sizeof text, "alice:%s x\n", h);
	expect_error(text, "users:1: ", "hash contains a space");
	snprintf(text, sizeof text, "alice:%s\nbob:%s\nalice:%s\n", h, h, h);
	expect_error(text, "users:3: ", "user 'alice' listed twice (first on "
	    "line 1)");
}

Test(inbound_auth, long_lines_and_names)
{
	const char *h = hash6("pw", "salt");
	static char text[4096];
	char name[300];
	struct read r;

	memset(name, 'n', sizeof name);
	name[256] = '\0';
	snprintf(text, sizeof text, "%s:%s\n", name, h);
	expect_error(text, "users:1: ", "user name longer than 255 bytes");
	name[255] = '\0';
	snprintf(text, sizeof text, "%s:%s\n", name, h);
	r = read_text(text);
	cr_assert_not_null(r.u, "%s", r.err);
	cr_assert(verify(r.u, name, "pw"));
	done(&r);

	memset(text, 'x', 2000);
	memcpy(text + 2000, "\nalice:y\n", 10);
	expect_error(text, "users:1: ", "line longer than 1024 bytes");
}

Test(inbound_auth, nul_byte_in_file)
{
	static const char text[] = "alice:$6$a\0b$c\n";
	struct read r = { 0 };
	FILE *in = fmemopen((void *)text, sizeof text - 1, "r");
	FILE *e = open_memstream(&r.err, &r.errlen);

	cr_assert(in && e);
	r.u = inbound_users_read(in, "users", e, NULL, &r.nerr);
	fclose(in);
	fclose(e);
	cr_assert_null(r.u);
	cr_assert(strstr(r.err, "users:1: line contains a NUL byte"), "%s",
	    r.err);
	done(&r);
}

Test(inbound_auth, every_error_reported_and_hashes_never_shown)
{
	const char *h = hash6("pw", "salt");
	char text[2048];
	struct read r;

	snprintf(text, sizeof text, "a:%s\nbad\nb:$6$zz$not-a-real-hash x\n"
	    "c\n", h);
	r = read_text(text);
	cr_assert_null(r.u);
	cr_assert_eq(r.nerr, 3, "%s", r.err);
	cr_assert(strstr(r.err, "users:2: "));
	cr_assert(strstr(r.err, "users:3: "));
	cr_assert(strstr(r.err, "users:4: "));
	cr_assert_null(strstr(r.err, "not-a-real-hash"), "%s", r.err);
	cr_assert_null(strstr(r.err, h), "%s", r.err);
	done(&r);
}

Test(inbound_auth, plain_split)
{
	struct inbound_plain p;

	cr_assert(inbound_plain_split("\0user\0pass", 10, &p));
	cr_assert_eq(p.authzid_len, 0);
	cr_assert_eq(p.user_len, 4);
	cr_assert(memcmp(p.user, "user", 4) == 0);
	cr_assert_eq(p.pass_len, 4);
	cr_assert(memcmp(p.pass, "pass", 4) == 0);

	cr_assert(inbound_plain_split("authz\0user\0", 11, &p));
	cr_assert_eq(p.authzid_len, 5);
	cr_assert_eq(p.user_len, 4);
	cr_assert_eq(p.pass_len, 0);

	cr_assert_not(inbound_plain_split("", 0, &p));
	cr_assert_not(inbound_plain_split("userpass", 8, &p));
	cr_assert_not(inbound_plain_split("\0userpass", 9, &p));
	cr_assert_not(inbound_plain_split("\0\0pass", 6, &p));      /* no user */
	cr_assert_not(inbound_plain_split("\0u\0p\0x", 6, &p));     /* 3 NULs */
}
