/*
 * auth.h - SASL client mechanisms for the upstream leg (RFC 4954).
 * Encoders only; the upstream state machine drives the exchange. Base64 is
 * wolfSSL's. Callers wipe secret buffers with explicit_bzero() after use.
 */
#ifndef RELAY25_AUTH_H
#define RELAY25_AUTH_H

#include <stddef.h>
#include "relay25/config.h"

/* Which mechanism to use: `configured` unless auto, else the best the
 * server offers (SMTP_AUTH_* bits): PLAIN, then LOGIN, then CRAM-MD5 (auto
 * never picks a token mechanism: those need token_command/token_file).
 * Returns CFG_AUTH_AUTO when nothing usable is offered. */
enum cfg_auth auth_choose(enum cfg_auth configured, unsigned offered);
const char *auth_name(enum cfg_auth);      /* "PLAIN", "LOGIN", ... */

/* base64("\0" user "\0" pass) NUL-terminated into out. Returns length, or
 * 0 if out is too small or an input is too long. */
size_t auth_plain(const char *user, const char *pass, char *out,
    size_t outlen);
/* base64 of one string (AUTH LOGIN steps). Same return convention. */
size_t auth_b64(const char *in, size_t inlen, char *out, size_t outlen);
/* Decode base64; returns length or (size_t)-1 on bad input. */
size_t auth_b64_decode(const char *in, size_t inlen, char *out,
    size_t outlen);
/* Buffer size (with the NUL) for the base64 of n bytes; 0 on overflow. */
size_t auth_b64_size(size_t n);

/*
 * The token mechanisms' initial responses (the whole exchange is one line
 * unless the server rejects the token: then it sends a 334 with an error
 * JSON, the client answers an empty line (XOAUTH2) or "AQ==" (OAUTHBEARER,
 * RFC 7628 3.2.3) and the server replies 535). Same return convention as
 * auth_plain(); the plaintext is at most 12 KiB.
 *   XOAUTH2:     base64("user=" user "\1auth=Bearer " token "\1\1")
 *   OAUTHBEARER: base64("n,a=" saslname(user) ",\1host=" host "\1port=" port
 *                "\1auth=Bearer " token "\1\1"), saslname escaping ',' and
 *                '=' as "=2C" and "=3D" (RFC 5801)
 */
size_t auth_xoauth2(const char *user, const char *token, char *out,
    size_t outlen);
size_t auth_oauthbearer(const char *user, const char *host, unsigned port,
    const char *token, char *out, size_t outlen);

/* CRAM-MD5 (RFC 2195): challenge is the base64 text of the server's 334;
 * the answer is base64(user " " hex(HMAC-MD5(key = pass, decoded
 * challenge))). Returns 0 on a malformed challenge (or the usual). */
size_t auth_cram_md5(const char *user, const char *pass,
    const char *challenge, size_t chlen, char *out, size_t outlen);

#endif
