/*
 * tls.c - client TLS policy (wolfSSL): one WOLFSSL_CTX per upstream with
 * peer verification, minimum version, a pinned modern cipher list, the
 * key-exchange groups and an optional certificate pin. The per-connection
 * WOLFSSL objects live in conn.c.
 */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay25/tls.h"

#define TLS_SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"

struct tls_ctx {
	WOLFSSL_CTX *ctx;
	WOLFSSL_SESSION *resume;      /* newest resumable session, or NULL */
	bool verify;
	bool has_pin;
	uint8_t pin[32];
};

/*
 * TLS 1.3 AEAD suites, then TLS 1.2 ECDHE with AES-GCM or ChaCha20-Poly1305.
 * Nothing anonymous, NULL, RC4, 3DES, CBC, export or static-RSA: wolfSSL's
 * default list offers some of those.
 *
 * Order: a wolfSSL built without AES-NI (Debian's) does AES-GCM in software
 * at about 2.3x the CPU of ChaCha20-Poly1305 (measured with tests/bench), so
 * ChaCha20 is offered first there; with AES-NI, AES-GCM first. The server
 * still decides: many honour the client's order.
 */
#ifdef WOLFSSL_AESNI
#define TLS13_SUITES "TLS13-AES128-GCM-SHA256:TLS13-CHACHA20-POLY1305-SHA256:"
#define TLS12_SUITES \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
#else
#define TLS13_SUITES "TLS13-CHACHA20-POLY1305-SHA256:TLS13-AES128-GCM-SHA256:"
#define TLS12_SUITES \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:" \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
#endif
const char tls_cipher_list[] =
    TLS13_SUITES
    "TLS13-AES256-GCM-SHA384:"
    TLS12_SUITES
    "ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384";

bool
tls_cipher_allowed(const char *name)
{
	const char *p = tls_cipher_list;
	size_t n;

	if (name == NULL || *name == '\0')
		return false;
	n = strlen(name);
	while (*p != '\0') {
		const char *end = strchr(p, ':');
		size_t len = end ? (size_t)(end - p) : strlen(p);

		if (len == n && memcmp(p, name, n) == 0)
			return true;
		if (end == NULL)
			break;
		p = end + 1;
	}
	return false;
}

int
tls_global_init(void)
{
	return wolfSSL_Init() == WOLFSSL_SUCCESS ? 0 : -1;
}

void
tls_global_cleanup(void)
{
	wolfSSL_Cleanup();
}

static void tls_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
tls_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static int
tls_load_cas(WOLFSSL_CTX *ctx, const char *ca_file, char *err, size_t errlen)
{
	if (ca_file != NULL && *ca_file != '\0') {
		if (wolfSSL_CTX_load_verify_locations(ctx, ca_file, NULL) !=
		    WOLFSSL_SUCCESS) {
			tls_err(err, errlen, "cannot load CA file %s", ca_file);
			return -1;
		}
		return 0;
	}
#ifdef WOLFSSL_SYS_CA_CERTS
	if (wolfSSL_CTX_load_system_CA_certs(ctx) == WOLFSSL_SUCCESS)
		return 0;
#endif
	if (wolfSSL_CTX_load_verify_locations(ctx, TLS_SYSTEM_CA_BUNDLE, NULL) ==
	    WOLFSSL_SUCCESS)
		return 0;
	tls_err(err, errlen, "no system CA certificates found (set ca_file)");
	return -1;
}

static int
tls_set_groups(WOLFSSL_CTX *ctx, char *err, size_t errlen)
{
#ifdef WOLFSSL_TLS13
	int groups[] = { WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1,
	    WOLFSSL_ECC_SECP384R1 };

	if (wolfSSL_CTX_set_groups(ctx, groups,
	    (int)(sizeof(groups) / sizeof(groups[0]))) != WOLFSSL_SUCCESS) {
		tls_err(err, errlen, "cannot set key exchange groups");
		return -1;
	}
#else
	if (wolfSSL_CTX_UseSupportedCurve(ctx, WOLFSSL_ECC_X25519) !=
	    WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_UseSupportedCurve(ctx, WOLFSSL_ECC_SECP256R1) !=
	    WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_UseSupportedCurve(ctx, WOLFSSL_ECC_SECP384R1) !=
	    WOLFSSL_SUCCESS) {
		tls_err(err, errlen, "cannot set key exchange groups");
		return -1;
	}
#endif
	return 0;
}

struct tls_ctx *
tls_ctx_new(bool verify, const char *ca_file, int min_version,
    const uint8_t *pin, char *err, size_t errlen)
{
	struct tls_ctx *t;
	int minv;

	if (min_version == 12)
		minv = WOLFSSL_TLSV1_2;
	else if (min_version == 13)
		minv = WOLFSSL_TLSV1_3;
	else {
		tls_err(err, errlen, "unsupported minimum TLS version %d",
		    min_version);
		return NULL;
	}
	if ((t = calloc(1, sizeof(*t))) == NULL) {
		tls_err(err, errlen, "out of memory");
		return NULL;
	}
	t->verify = verify;
	if (pin != NULL) {
		t->has_pin = true;
		memcpy(t->pin, pin, sizeof(t->pin));
	}
	if ((t->ctx = wolfSSL_CTX_new(wolfSSLv23_client_method())) == NULL) {
		tls_err(err, errlen, "cannot create TLS context");
		goto fail;
	}
	if (wolfSSL_CTX_SetMinVersion(t->ctx, minv) != WOLFSSL_SUCCESS) {
		tls_err(err, errlen, "cannot set minimum TLS version");
		goto fail;
	}
	if (wolfSSL_CTX_set_cipher_list(t->ctx, tls_cipher_list) !=
	    WOLFSSL_SUCCESS) {
		tls_err(err, errlen, "cannot set cipher list");
		goto fail;
	}
	if (tls_set_groups(t->ctx, err, errlen) == -1)
		goto fail;
	if (verify) {
		if (tls_load_cas(t->ctx, ca_file, err, errlen) == -1)
			goto fail;
		wolfSSL_CTX_set_verify(t->ctx, WOLFSSL_VERIFY_PEER, NULL);
	} else
		wolfSSL_CTX_set_verify(t->ctx, WOLFSSL_VERIFY_NONE, NULL);
	return t;
fail:
	tls_ctx_free(t);
	return NULL;
}

void
tls_ctx_free(struct tls_ctx *t)
{
	if (t == NULL)
		return;
	tls_ctx_forget_session(t);
	if (t->ctx != NULL)
		wolfSSL_CTX_free(t->ctx);
	free(t);
}

struct WOLFSSL_CTX *
tls_ctx_wolf(struct tls_ctx *t)
{
	return t->ctx;
}

bool
tls_ctx_verifies(const struct tls_ctx *t)
{
	return t->verify;
}

const uint8_t *
tls_ctx_pin(const struct tls_ctx *t)
{
	return t->has_pin ? t->pin : NULL;
}

void
tls_ctx_offer_session(struct tls_ctx *t, WOLFSSL *ssl)
{
	wolfSSL_UseSessionTicket(ssl);
	if (t->resume != NULL)
		wolfSSL_set_session(ssl, t->resume);
}

void
tls_ctx_save_session(struct tls_ctx *t, WOLFSSL *ssl)
{
	WOLFSSL_SESSION *s = wolfSSL_get1_session(ssl);

	if (s == NULL)
		return;
	if (!wolfSSL_SESSION_is_resumable(s)) {
		wolfSSL_SESSION_free(s);
		return;
	}
	tls_ctx_forget_session(t);
	t->resume = s;
}

void
tls_ctx_forget_session(struct tls_ctx *t)
{
	if (t->resume != NULL) {
		wolfSSL_SESSION_free(t->resume);
		t->resume = NULL;
	}
}
