/*
 * test_auth.c - PLAIN / LOGIN encoders, base64 decode, mechanism choice.
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
	cr_assert_eq(auth_choose(CFG_AUTH_AUTO, SMTP_AUTH_CRAM_MD5 | SMTP_AUTH_XOAUTH2), CFG_AUTH_AUTO);
	cr_assert_eq(auth_choose(CFG_AUTH_AUTO, 0), CFG_AUTH_AUTO);
	cr_assert_eq(auth_choose(CFG_AUTH_LOGIN, SMTP_AUTH_PLAIN), CFG_AUTH_LOGIN);
	cr_assert_eq(auth_choose(CFG_AUTH_PLAIN, 0), CFG_AUTH_PLAIN);
	cr_assert_eq(auth_choose(CFG_AUTH_XOAUTH2, SMTP_AUTH_PLAIN), CFG_AUTH_XOAUTH2);
	cr_assert_str_eq(auth_name(CFG_AUTH_PLAIN), "PLAIN");
	cr_assert_str_eq(auth_name(CFG_AUTH_LOGIN), "LOGIN");
	cr_assert_str_eq(auth_name(CFG_AUTH_CRAM_MD5), "CRAM-MD5");
	cr_assert_str_eq(auth_name(CFG_AUTH_XOAUTH2), "XOAUTH2");
	cr_assert_str_eq(auth_name(CFG_AUTH_AUTO), "auto");
}
