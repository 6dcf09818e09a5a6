/*
 * auth.c - SASL client encoders for the upstream leg: PLAIN (RFC 4616),
 * LOGIN, CRAM-MD5 (RFC 2195), XOAUTH2 (Google/Microsoft), OAUTHBEARER
 * (RFC 7628), base64 via wolfSSL, and the choice of mechanism. No I/O.
 * Every plaintext buffer that held a secret is wiped before it is freed.
 */
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/coding.h>
#include <wolfssl/wolfcrypt/hmac.h>

#include "relay25/auth.h"
#include "relay25/smtp_parse.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AUTH_PLAIN_MAX 2048     /* "\0" user "\0" pass, plaintext */
#define AUTH_TOKEN_PLAIN_MAX 12288 /* XOAUTH2 / OAUTHBEARER plaintext */

enum cfg_auth auth_choose(enum cfg_auth configured, unsigned offered)
{
	if (configured != CFG_AUTH_AUTO)
		return configured;
	if (offered & SMTP_AUTH_PLAIN)
		return CFG_AUTH_PLAIN;
	if (offered & SMTP_AUTH_LOGIN)
		return CFG_AUTH_LOGIN;
	if (offered & SMTP_AUTH_CRAM_MD5)
		return CFG_AUTH_CRAM_MD5;
	return CFG_AUTH_AUTO;
}

const char *auth_name(enum cfg_auth a)
{
	switch (a) {
	case CFG_AUTH_PLAIN:    return "PLAIN";
	case CFG_AUTH_LOGIN:    return "LOGIN";
	case CFG_AUTH_CRAM_MD5: return "CRAM-MD5";
	case CFG_AUTH_XOAUTH2:  return "XOAUTH2";
	case CFG_AUTH_OAUTHBEARER: return "OAUTHBEARER";
	case CFG_AUTH_AUTO:     return "auto";
	}
	return "unknown";
}

/* Encoded size of n bytes, plus the NUL; 0 on overflow. */
static size_t b64_need(size_t n)
{
	if (n > (SIZE_MAX - 3) / 4 - 1)
		return 0;
	return (n + 2) / 3 * 4 + 1;
}

size_t auth_b64(const char *in, size_t inlen, char *out, size_t outlen)
{
	size_t need = b64_need(inlen);
	word32 wl;

	if (need == 0 || outlen < need || inlen > 0x3fffffffu)
		return 0;
	if (inlen == 0) {
		out[0] = '\0';
		return 0;
	}
	wl = (word32)need;
	if (Base64_Encode_NoNl((const byte *)in, (word32)inlen, (byte *)out,
	    &wl) != 0 || wl != need - 1)
		return 0;
	out[wl] = '\0';
	return wl;
}

size_t auth_plain(const char *user, const char *pass, char *out,
    size_t outlen)
{
	char buf[AUTH_PLAIN_MAX];
	size_t ul = strlen(user), pl = strlen(pass), n, r;

	if (ul > sizeof(buf) - 2 || pl > sizeof(buf) - 2 - ul)
		return 0;
	buf[0] = '\0';
	memcpy(buf + 1, user, ul);
	buf[1 + ul] = '\0';
	memcpy(buf + 2 + ul, pass, pl);
	n = 2 + ul + pl;
	r = auth_b64(buf, n, out, outlen);
	explicit_bzero(buf, sizeof(buf));
	return r;
}

static bool is_b64_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* Strict base64: whole quanta, alphabet only, '=' padding only at the
 * very end (at most two). Returns the decoded size or (size_t)-1. */
static size_t b64_check(const char *in, size_t n)
{
	size_t pad = 0;

	if (n % 4 != 0)
		return (size_t)-1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c == '=' && i + 2 >= n && (i + 1 == n || in[i + 1] == '='))
			pad++;
		else if (!is_b64_char(c) || pad > 0)
			return (size_t)-1;
	}
	return n / 4 * 3 - pad;
}

size_t auth_b64_decode(const char *in, size_t inlen, char *out,
    size_t outlen)
{
	byte tail[3];
	word32 wl;
	size_t size, head;

	while (inlen > 0 && (in[inlen - 1] == '\n' || in[inlen - 1] == '\r' ||
	    in[inlen - 1] == ' '))
		inlen--;
	size = b64_check(in, inlen);
	if (size == (size_t)-1 || size > outlen || inlen > 0xffffffu)
		return (size_t)-1;
	if (inlen == 0) {
		if (outlen > 0)
			out[0] = '\0';
		return 0;
	}
	/* All quanta but the last straight into out, the last one through
	 * a small buffer (wolfSSL wants room for 3 bytes per quantum). */
	head = inlen - 4;
	if (head > 0) {
		wl = (word32)(head / 4 * 3);
		if (Base64_Decode((const byte *)in, (word32)head, (byte *)out,
		    &wl) != 0 || wl != head / 4 * 3)
			return (size_t)-1;
	}
	wl = sizeof(tail);
	if (Base64_Decode((const byte *)in + head, 4, tail, &wl) != 0 ||
	    head / 4 * 3 + wl != size)
		return (size_t)-1;
	memcpy(out + head / 4 * 3, tail, wl);
	explicit_bzero(tail, sizeof(tail));
	if (size < outlen)
		out[size] = '\0';
	return size;
}

/* base64 of the concatenation of n strings (a NULL entry ends early), via
 * a heap buffer that is wiped. Same return convention as auth_b64(). */
static size_t b64_concat(char *out, size_t outlen, const char *const *parts,
    size_t n)
{
	size_t total = 0, o = 0, r;
	char *buf;

	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(parts[i]);
		if (l > AUTH_TOKEN_PLAIN_MAX - total)
			return 0;
		total += l;
	}
	if ((buf = malloc(total + 1)) == NULL)
		return 0;
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(parts[i]);
		memcpy(buf + o, parts[i], l);
		o += l;
	}
	r = auth_b64(buf, total, out, outlen);
	explicit_bzero(buf, total + 1);
	free(buf);
	return r;
}

size_t auth_b64_size(size_t n)
{
	return b64_need(n);
}

size_t auth_xoauth2(const char *user, const char *token, char *out,
    size_t outlen)
{
	const char *parts[] = { "user=", user, "\x01" "auth=Bearer ", token,
	    "\x01\x01" };

	return b64_concat(out, outlen, parts, sizeof(parts) / sizeof(*parts));
}

/* RFC 5801 saslname: ',' -> "=2C", '=' -> "=3D". NULL if out of memory. */
static char *saslname(const char *user)
{
	size_t n = strlen(user), extra = 0;
	char *s, *p;

	for (size_t i = 0; i < n; i++)
		if (user[i] == ',' || user[i] == '=')
			extra += 2;
	if (n > AUTH_TOKEN_PLAIN_MAX || (s = malloc(n + extra + 1)) == NULL)
		return NULL;
	for (p = s; *user; user++) {
		if (*user == ',' || *user == '=') {
			memcpy(p, *user == ',' ? "=2C" : "=3D", 3);
			p += 3;
		} else
			*p++ = *user;
	}
	*p = '\0';
	return s;
}

size_t auth_oauthbearer(const char *user, const char *host, unsigned port,
    const char *token, char *out, size_t outlen)
{
	char portbuf[16], *name;
	size_t r;

	if ((name = saslname(user)) == NULL)
		return 0;
	snprintf(portbuf, sizeof(portbuf), "%u", port);
	const char *parts[] = { "n,a=", name, ",\x01" "host=", host,
	    "\x01" "port=", portbuf, "\x01" "auth=Bearer ", token, "\x01\x01" };
	r = b64_concat(out, outlen, parts, sizeof(parts) / sizeof(*parts));
	free(name);
	return r;
}

size_t auth_cram_md5(const char *user, const char *pass,
    const char *challenge, size_t chlen, char *out, size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	char chal[1024], digest_hex[2 * WC_MD5_DIGEST_SIZE + 1];
	byte digest[WC_MD5_DIGEST_SIZE];
	size_t clen, plen = strlen(pass);
	Hmac h;
	int rc;

	clen = auth_b64_decode(challenge, chlen, chal, sizeof(chal));
	if (clen == (size_t)-1 || plen > 0xffffu)
		return 0;
	if (wc_HmacInit(&h, NULL, INVALID_DEVID) != 0)
		return 0;
	rc = wc_HmacSetKey(&h, WC_MD5, (const byte *)pass, (word32)plen);
	if (rc == 0)
		rc = wc_HmacUpdate(&h, (const byte *)chal, (word32)clen);
	if (rc == 0)
		rc = wc_HmacFinal(&h, digest);
	wc_HmacFree(&h);
	explicit_bzero(&h, sizeof(h));
	if (rc != 0)
		return 0;
	for (size_t i = 0; i < sizeof(digest); i++) {
		digest_hex[2 * i] = hex[digest[i] >> 4];
		digest_hex[2 * i + 1] = hex[digest[i] & 15];
	}
	digest_hex[sizeof(digest_hex) - 1] = '\0';
	explicit_bzero(digest, sizeof(digest));
	const char *parts[] = { user, " ", digest_hex };
	size_t r = b64_concat(out, outlen, parts, 3);
	explicit_bzero(digest_hex, sizeof(digest_hex));
	return r;
}
