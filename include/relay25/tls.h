/*
 * tls.h - client TLS policy for upstream connections (wolfSSL).
 *
 * A tls_ctx holds one upstream's policy: verification against the system
 * store or a CA file, minimum version, a modern cipher list (no anonymous,
 * NULL, RC4, 3DES or export suites), key-exchange groups X25519, P-256,
 * P-384, and an optional certificate pin (sha256 of the DER certificate).
 * The host name is checked with the name given to conn_starttls().
 */
#ifndef RELAY25_TLS_H
#define RELAY25_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tls_ctx;

/* Once per process, before any other tls_* call. 0 or -1. */
int tls_global_init(void);
void tls_global_cleanup(void);

/* verify: check the chain and the name; ca_file NULL: system store;
 * min_version 12 or 13; pin NULL or 32 bytes. On error returns NULL with a
 * message in err. */
struct tls_ctx *tls_ctx_new(bool verify, const char *ca_file, int min_version,
    const uint8_t *pin, char *err, size_t errlen);
void tls_ctx_free(struct tls_ctx *);

/* For conn.c (and tests): the wolfSSL context behind a tls_ctx, whether it
 * verifies the peer, and its pin (NULL or 32 bytes). */
struct WOLFSSL_CTX;
struct WOLFSSL;
struct WOLFSSL_CTX *tls_ctx_wolf(struct tls_ctx *);
bool tls_ctx_verifies(const struct tls_ctx *);
const uint8_t *tls_ctx_pin(const struct tls_ctx *);

/* The offered cipher suites (wolfSSL names, ':'-separated), and whether a
 * negotiated suite name is one of them. */
extern const char tls_cipher_list[];
bool tls_cipher_allowed(const char *name);

/* TLS session resumption for one upstream (a tls_ctx is per upstream, so
 * host, port and verified name are fixed): remember the newest resumable
 * session (TLS 1.3 tickets arrive after the handshake, so save once the
 * session has carried data), offer it on the next connection. */
void tls_ctx_offer_session(struct tls_ctx *, struct WOLFSSL *);
void tls_ctx_save_session(struct tls_ctx *, struct WOLFSSL *);
void tls_ctx_forget_session(struct tls_ctx *);

#endif
