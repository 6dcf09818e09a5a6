/*
 * inbound_auth.h - relay25's own AUTH (the client leg): the users file
 * ([server] auth_users_file: "user:crypt(3)-hash" lines) and checking a
 * user's password against it, plus the pure SASL PLAIN message decoder.
 * The SMTP dialogue itself is in session.c.
 *
 * Everything a client sends is untrusted and given with its length.
 * Passwords are never copied into the table, never logged; callers wipe
 * their decoded credentials with explicit_bzero().
 */
#ifndef RELAY25_INBOUND_AUTH_H
#define RELAY25_INBOUND_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define INBOUND_USER_MAX 255    /* bytes in a user name */
#define INBOUND_HASH_MAX 512    /* bytes in a hash */
#define INBOUND_MAX_USERS 10000

struct inbound_users;

/*
 * Read a users file from fp; name is the file's name for messages. Lines:
 * "user:hash" (hash in modular crypt format, "$y$...", "$6$..."), blank
 * lines, and comments starting with '#'. Surrounding whitespace and CR are
 * ignored. Errors (a line without ':', an empty or over-long user name, a
 * name with control characters or spaces, a user listed twice, a hash this
 * libcrypt does not support, no users at all, ...) go to err, one per line,
 * as "name:line: message" or "name: message", and make the result NULL;
 * *nerr (if not NULL) gets their number. Warnings (a hash method libcrypt
 * rates as legacy) go to warn as "warning: ..." lines. err and warn may be
 * NULL. Never prints a hash. The caller frees the result with
 * inbound_users_free().
 */
struct inbound_users *inbound_users_read(FILE *fp, const char *name,
    FILE *err, FILE *warn, unsigned *nerr);
void inbound_users_free(struct inbound_users *);
size_t inbound_users_count(const struct inbound_users *);

/*
 * Check a password (untrusted bytes: user ulen, pass plen). Hashes with
 * crypt_r() and compares in constant time. An unknown user costs the same
 * crypt as a known one (the password is hashed with the first user's
 * setting), so timing does not tell which users exist. A name or password
 * containing a NUL byte, or longer than the limits, never verifies.
 * Blocking: one crypt(3) computation (milliseconds for $6$, far more for
 * a costly $y$ or $2b$ setting).
 */
bool inbound_verify(const struct inbound_users *, const char *user,
    size_t ulen, const char *pass, size_t plen);

/*
 * Split a decoded SASL PLAIN message (RFC 4616: authzid NUL authcid NUL
 * passwd) in place: pointers into msg. Returns false if there are not
 * exactly two NULs or the user (authcid) is empty. The authorization
 * identity is returned for the caller to check (relay25 accepts only an
 * empty one or one equal to the user).
 */
struct inbound_plain {
	const char *authzid; size_t authzid_len;
	const char *user; size_t user_len;
	const char *pass; size_t pass_len;
};
bool inbound_plain_split(const char *msg, size_t len, struct inbound_plain *);

#endif
