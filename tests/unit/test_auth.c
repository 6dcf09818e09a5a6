/*
 * test_auth.c - PLAIN / LOGIN / CRAM-MD5 / XOAUTH2 / OAUTHBEARER encoders,
 * base64 decode, mechanism choice.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "relay25/auth.h"
#include "relay25/smtp_parse.h"

Test(auth, plain)
{
	char out[64];

	cr_assert_eq(auth_plain("user", "pass", out, sizeof(out)), 16);
	cr_assert_str_eq(out, "AHVzZXIAcGFzcw==");
	cr_assert_eq(auth_plain("user", "pass", out, 17), 16);
	cr_assert_eq(auth_plain("user", "pass", out, 16), 0);
	cr_assert_eq(auth_plain("", "", out, sizeof(out)), 4);
	cr_assert_str_eq(out, "AAA=");
}

Test(auth, plain_too_long)
{
	static char user[4096], out[8192];

	memset(user, 'u', sizeof(user) - 1);
	cr_assert_eq(auth_plain(user, "p", out, sizeof(out)), 0);
	user[1000] = '\0';
	cr_assert_gt(auth_plain(user, "p", out, sizeof(out)), 0);
}

Test(auth, login_steps)
{
	char out[64];

	cr_assert_eq(auth_b64("user", 4, out, sizeof(out)), 8);
	cr_assert_str_eq(out, "dXNlcg==");
	cr_assert_eq(auth_b64("pass", 4, out, sizeof(out)), 8);
	cr_assert_str_eq(out, "cGFzcw==");
	cr_assert_eq(auth_b64("abc", 3, out, 5), 4);
	cr_assert_str_eq(out, "YWJj");
	cr_assert_eq(auth_b64("abc", 3, out, 4), 0);
	cr_assert_eq(auth_b64("", 0, out, sizeof(out)), 0);
	cr_assert_str_eq(out, "");
}

Test(auth, decode)
{
	char out[64];

	cr_assert_eq(auth_b64_decode("VXNlcm5hbWU6", 12, out, sizeof(out)), 9);
	cr_assert_str_eq(out, "Username:");
	cr_assert_eq(auth_b64_decode("UGFzc3dvcmQ6\r\n", 14, out, sizeof(out)), 9);
	cr_assert_str_eq(out, "Password:");
	cr_assert_eq(auth_b64_decode("YQ==", 4, out, 1), 1);
	cr_assert_eq(out[0], 'a');
	cr_assert_eq(auth_b64_decode("YWJjZA==", 8, out, 4), 4);
	cr_assert(memcmp(out, "abcd", 4) == 0);
	cr_assert_eq(auth_b64_decode("YWJjZA==", 8, out, 3), (size_t)-1);
	cr_assert_eq(auth_b64_decode("", 0, out, sizeof(out)), 0);
	const char *bad[] = { "YQ", "YQ=", "Y===", "YQ=A", "!!!!", "YQ==YQ==",
	    "YW Jj", "=AAA" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(auth_b64_decode(bad[i], strlen(bad[i]), out,
		    sizeof(out)), (size_t)-1, "%s", bad[i]);
}

Test(auth, round_trip)
{
	char in[300], enc[512], dec[300];

	for (size_t n = 0; n < sizeof(in); n++) {
		for (size_t i = 0; i < n; i++)
			in[i] = (char)(i * 7 + n);
		size_t e = auth_b64(in, n, enc, sizeof(enc));
		cr_assert_eq(e, (n + 2) / 3 * 4);
		cr_assert_eq(auth_b64_decode(enc, e, dec, n), n);
		cr_assert(memcmp(in, dec, n) == 0);
	}
}

Test(auth, choose)
{
	cr_assert_eq(auth_choose(CFG_AUTH_AUTO, SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN), CFG_AUTH_PLAIN);
	cr_assert_eq(auth_choose(CFG_AUTH_AUTO, SMTP_AUTH_LOGIN | SMTP_AUTH_CRAM_MD5), CFG_AUTH_LOGIN);
	cr_assert_eq(auth_choose(CFG_AUTH_AUTO, SMTP_AUTH_CRAM_MD5 | SMTP_AUTH_XOAUTH2), CFG_AUTH_CRAM_MD5);
	cr_assert_eq(auth_choose(CFG_AUTH_AUTO, SMTP_AUTH_PLAIN | SMTP_AUTH_CRAM_MD5), CFG_AUTH_PLAIN);
	/* auto never picks a token mechanism */
	cr_assert_eq(auth_choose(CFG_AUTH_AUTO, SMTP_AUTH_XOAUTH2 | SMTP_AUTH_OAUTHBEARER), CFG_AUTH_AUTO);
	cr_assert_eq(auth_choose(CFG_AUTH_OAUTHBEARER, SMTP_AUTH_PLAIN), CFG_AUTH_OAUTHBEARER);
	cr_assert_eq(auth_choose(CFG_AUTH_AUTO, 0), CFG_AUTH_AUTO);
	cr_assert_eq(auth_choose(CFG_AUTH_LOGIN, SMTP_AUTH_PLAIN), CFG_AUTH_LOGIN);
	cr_assert_eq(auth_choose(CFG_AUTH_PLAIN, 0), CFG_AUTH_PLAIN);
	cr_assert_eq(auth_choose(CFG_AUTH_XOAUTH2, SMTP_AUTH_PLAIN), CFG_AUTH_XOAUTH2);
	cr_assert_str_eq(auth_name(CFG_AUTH_PLAIN), "PLAIN");
	cr_assert_str_eq(auth_name(CFG_AUTH_LOGIN), "LOGIN");
	cr_assert_str_eq(auth_name(CFG_AUTH_CRAM_MD5), "CRAM-MD5");
	cr_assert_str_eq(auth_name(CFG_AUTH_XOAUTH2), "XOAUTH2");
	cr_assert_str_eq(auth_name(CFG_AUTH_OAUTHBEARER), "OAUTHBEARER");
	cr_assert_str_eq(auth_name(CFG_AUTH_AUTO), "auto");
}

/* Decode out (base64) and compare with the expected plaintext. */
static void
expect_b64(const char *b64, size_t n, const char *want, size_t wantlen)
{
	char dec[512];

	cr_assert_eq(strlen(b64), n);
	cr_assert_eq(auth_b64_decode(b64, n, dec, sizeof(dec)), wantlen,
	    "%s", b64);
	cr_assert(memcmp(dec, want, wantlen) == 0, "%s", b64);
}

Test(auth, xoauth2)
{
	static const char want[] =
	    "user=someuser@example.com\x01" "auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01";
	char out[512];
	size_t n;

	n = auth_xoauth2("someuser@example.com",
	    "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg", out, sizeof(out));
	expect_b64(out, n, want, sizeof(want) - 1);
	/* The example from Google's XOAUTH2 documentation. */
	cr_assert_str_eq(out, "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ==");
	cr_assert_eq(auth_xoauth2("u", "t", out, 8), 0, "too small");
}

Test(auth, oauthbearer)
{
	static const char want[] = "n,a=user@example.com,\x01host=server.example.com"
	    "\x01port=587\x01" "auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01";
	static const char want_esc[] = "n,a=a=2Cb=3Dc,\x01host=h\x01port=465"
	    "\x01" "auth=Bearer t\x01\x01";
	char out[512];
	size_t n;

	/* RFC 7628 4.1 (its example, with SMTP's port). */
	n = auth_oauthbearer("user@example.com", "server.example.com", 587,
	    "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==", out, sizeof(out));
	expect_b64(out, n, want, sizeof(want) - 1);
	/* ',' and '=' in the user name are escaped (RFC 5801 saslname). */
	n = auth_oauthbearer("a,b=c", "h", 465, "t", out, sizeof(out));
	expect_b64(out, n, want_esc, sizeof(want_esc) - 1);
}

Test(auth, token_too_long)
{
	static char tok[20000], out[40000];

	memset(tok, 'a', sizeof(tok) - 1);
	cr_assert_eq(auth_xoauth2("u", tok, out, sizeof(out)), 0);
	cr_assert_eq(auth_oauthbearer("u", "h", 1, tok, out, sizeof(out)), 0);
	tok[8192] = '\0';
	cr_assert_gt(auth_xoauth2("u", tok, out, sizeof(out)), 0);
	cr_assert_gt(auth_oauthbearer("u", "h", 1, tok, out, sizeof(out)), 0);
}

/* RFC 2195 section 2's example. */
Test(auth, cram_md5)
{
	char chal[128], out[128], dec[128];
	const char *c = "<1896.697170952@postoffice.reston.mci.net>";
	size_t cl = auth_b64(c, strlen(c), chal, sizeof(chal)), n;

	cr_assert_str_eq(chal, "PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+");
	n = auth_cram_md5("tim", "tanstaaftanstaaf", chal, cl, out, sizeof(out));
	cr_assert_gt(n, 0);
	cr_assert_str_eq(out, "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw");
	n = auth_b64_decode(out, n, dec, sizeof(dec));
	cr_assert_eq(n, 36);
	cr_assert_str_eq(dec, "tim b913a602c7eda7a495b4e6e7334d3890");
	/* A long key (more than one MD5 block) and an empty one work. */
	cr_assert_gt(auth_cram_md5("u", "0123456789012345678901234567890123456789"
	    "0123456789012345678901234567890123456789", chal, cl, out,
	    sizeof(out)), 0);
	cr_assert_gt(auth_cram_md5("u", "", chal, cl, out, sizeof(out)), 0);
	/* A challenge that is not base64 is refused. */
	cr_assert_eq(auth_cram_md5("tim", "x", "not base64!", 11, out,
	    sizeof(out)), 0);
}
