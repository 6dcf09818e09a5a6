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
 * server offers (SMTP_AUTH_* bits): PLAIN, then LOGIN. Returns
 * CFG_AUTH_AUTO when nothing usable is offered. */
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

#endif
