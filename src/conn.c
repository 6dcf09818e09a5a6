/*
 * conn.c - one non-blocking byte stream over a plain or TLS socket.
 *
 * Owns the fd, the libev watchers (embedded, recovered with container_of),
 * the bounded input/output buffers and the WOLFSSL session. Protocol code
 * sees conn_event values only.
 *
 * Rules kept throughout:
 *  - conn_write/consume/pause/resume/starttls/set_timeout never call the
 *    user callback; events are only delivered from libev callbacks.
 *  - after every user callback the dispatch path checks `dead` (and the
 *    state) before touching the conn again; memory stays valid until the
 *    reaper runs, so reading the flag is safe.
 *  - a TLS write that returned WANT_* is retried with the same pointer and
 *    length (tls_wlen); the output buffer is neither moved nor compacted
 *    meanwhile.
 *  - bytes wolfSSL already holds do not wake libev, and neither does input
 *    left buffered by a paused reader: the `kick` ev_idle watcher runs a
 *    deferred read/deliver pass. It has the highest priority, so busy I/O
 *    cannot starve it, and an active idle watcher keeps the loop from
 *    blocking, wherever conn_resume()/conn_consume() was called from.
 */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/hash.h>

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay25/conn.h"
#include "relay25/reap.h"
#include "relay25/tls.h"

#define container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#define CONN_FLUSH_TIMEOUT 5.0	/* bound for conn_close_after_flush() */

enum conn_state {
	CS_CONNECTING,	/* non-blocking connect in progress */
	CS_OPEN,	/* plain or TLS data phase */
	CS_HANDSHAKE,	/* TLS client handshake in progress */
	CS_FAILED,	/* CONN_ERROR delivered; waiting for conn_free */
};

struct conn {
	struct ev_loop *loop;
	ev_io rio;
	ev_io wio;
	ev_timer timer;		/* user timeout */
	ev_timer flush_timer;	/* bound for close_after_flush */
	ev_idle kick;		/* deferred read/deliver/error pass */
	int fd;
	enum conn_state state;
	conn_cb *cb;
	void *arg;

	char *in;		/* NULL while empty */
	size_t inlen, inmax;
	char *out;		/* NULL while empty; bytes [outoff, outlen) */
	size_t outoff, outlen, outmax;
	size_t tls_wlen;	/* >0: WANT_* write of this length pending */

	WOLFSSL *ssl;
	struct tls_ctx *tls;
	char *tls_name;
	int io_errno;		/* errno seen by the TLS I/O callbacks */

	unsigned dead:1;	/* conn_free called: no more events */
	unsigned closing:1;	/* close_after_flush: no more events */
	unsigned flushing:1;	/* counted in conn_flushing */
	unsigned paused:1;
	unsigned eof:1;		/* read side finished */
	unsigned rd_want_write:1; /* TLS read waits for writability */
	unsigned wr_want_read:1;  /* TLS write waits for readability */
	unsigned hs_want_write:1; /* handshake waits for writability */
	unsigned tls_more:1;	/* wolfSSL may hold bytes: read pass later */
	unsigned deliver:1;	/* resume: re-deliver buffered input */
	unsigned had_out:1;	/* output had data since the last DRAIN */

	int pending_errno;	/* connect() failed at once: report later */
	char err[256];
	struct sockaddr_storage peer;
	socklen_t peerlen;
	char peertxt[INET6_ADDRSTRLEN + 8];
};

static void conn_rio_cb(struct ev_loop *, ev_io *, int);
static void conn_wio_cb(struct ev_loop *, ev_io *, int);
static void conn_timer_cb(struct ev_loop *, ev_timer *, int);
static void conn_flush_timer_cb(struct ev_loop *, ev_timer *, int);
static void conn_kick_cb(struct ev_loop *, ev_idle *, int);
static bool conn_do_read(struct conn *, bool notify);
static bool conn_do_write(struct conn *);
static void conn_update(struct conn *);

/* ---- helpers ---------------------------------------------------------- */

static void conn_seterr(struct conn *, const char *, ...)
    __attribute__((format(printf, 2, 3)));

static void
conn_seterr(struct conn *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
}

static const char *
conn_errno_words(int e)
{
	switch (e) {
	case ECONNREFUSED:	return "connection refused";
	case ETIMEDOUT:		return "connection timed out";
	case ECONNRESET:	return "connection reset by peer";
	case EPIPE:		return "connection closed by peer";
	case EHOSTUNREACH:	return "host unreachable";
	case ENETUNREACH:	return "network unreachable";
	case ENETDOWN:		return "network is down";
	case EADDRNOTAVAIL:	return "address not available";
	case ECONNABORTED:	return "connection aborted";
	case EACCES:
	case EPERM:		return "connection not permitted";
	default:		return strerror(e);
	}
}

static void
conn_set_io(struct conn *c, ev_io *w, bool on)
{
	if (on && !ev_is_active(w))
		ev_io_start(c->loop, w);
	else if (!on && ev_is_active(w))
		ev_io_stop(c->loop, w);
}

static void
conn_kick(struct conn *c)
{
	if (!c->dead && !ev_is_active(&c->kick))
		ev_idle_start(c->loop, &c->kick);
}

static bool
conn_can_read(const struct conn *c)
{
	return c->state == CS_OPEN && !c->dead && !c->closing && !c->paused &&
	    !c->eof && c->inlen < c->inmax;
}

static bool
conn_out_busy(const struct conn *c)
{
	return c->outlen > c->outoff;
}

/* Start exactly the I/O watchers the current state needs. */
static void
conn_update(struct conn *c)
{
	bool r = false, w = false;

	if (c->dead)
		return;
	switch (c->state) {
	case CS_CONNECTING:
		w = true;
		break;
	case CS_HANDSHAKE:
		if (c->hs_want_write)
			w = true;
		else
			r = true;
		break;
	case CS_OPEN:
		r = (conn_can_read(c) && !c->rd_want_write) || c->wr_want_read;
		w = (conn_out_busy(c) && !c->wr_want_read) || c->rd_want_write;
		break;
	case CS_FAILED:
		break;
	}
	conn_set_io(c, &c->rio, r);
	conn_set_io(c, &c->wio, w);
}

static void
conn_stop_all(struct conn *c)
{
	ev_io_stop(c->loop, &c->rio);
	ev_io_stop(c->loop, &c->wio);
	ev_timer_stop(c->loop, &c->timer);
	ev_timer_stop(c->loop, &c->flush_timer);
	ev_idle_stop(c->loop, &c->kick);
}

/*
 * Deliver one event. Returns false when the conn must not be driven any
 * further (freed, closing or failed in the callback).
 */
static bool
conn_emit(struct conn *c, enum conn_event ev)
{
	if (c->dead || c->closing)
		return false;
	c->cb(c, ev, c->arg);
	return !c->dead && !c->closing;
}

/*
 * Report a failure once. A closing conn has nobody to tell: it is freed.
 * Always returns false ("stop").
 */
static bool
conn_fail(struct conn *c)
{
	if (c->dead)
		return false;
	if (c->closing) {
		conn_free(c);
		return false;
	}
	c->state = CS_FAILED;
	conn_stop_all(c);
	c->cb(c, CONN_ERROR, c->arg);
	return false;
}

static void
conn_release(void *p)
{
	struct conn *c = p;

	free(c->in);
	free(c->out);
	free(c->tls_name);
	free(c);
}

static void
conn_peer_text(struct conn *c)
{
	const struct sockaddr *sa = (const struct sockaddr *)&c->peer;

	c->peertxt[0] = '\0';
	if (c->peerlen == 0)
		return;
	if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) {
		if (getnameinfo(sa, c->peerlen, c->peertxt, sizeof(c->peertxt),
		    NULL, 0, NI_NUMERICHOST) != 0)
			c->peertxt[0] = '\0';
	} else if (sa->sa_family == AF_UNIX)
		snprintf(c->peertxt, sizeof(c->peertxt), "local");
}

static struct conn *
conn_alloc(struct ev_loop *loop, int fd, size_t inmax, size_t outmax,
    conn_cb *cb, void *arg)
{
	struct conn *c;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->loop = loop;
	c->fd = fd;
	c->inmax = inmax ? inmax : 1;
	c->outmax = outmax ? outmax : 1;
	c->cb = cb;
	c->arg = arg;
	ev_io_init(&c->rio, conn_rio_cb, fd, EV_READ);
	ev_io_init(&c->wio, conn_wio_cb, fd, EV_WRITE);
	ev_timer_init(&c->timer, conn_timer_cb, 0., 0.);
	ev_timer_init(&c->flush_timer, conn_flush_timer_cb, 0., 0.);
	ev_idle_init(&c->kick, conn_kick_cb);
	ev_set_priority(&c->kick, EV_MAXPRI);
	reap_init(loop);
	return c;
}

static void
conn_sockopts(int fd)
{
	int one = 1;
	int fl = fcntl(fd, F_GETFL);

	if (fl != -1 && !(fl & O_NONBLOCK))
		(void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	(void)fcntl(fd, F_SETFD, FD_CLOEXEC);
	/* Only meaningful (and only succeeds) on TCP sockets. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* ---- creation --------------------------------------------------------- */

struct conn *
conn_new(struct ev_loop *loop, int fd, size_t inmax, size_t outmax,
    conn_cb *cb, void *arg)
{
	struct conn *c;

	if ((c = conn_alloc(loop, fd, inmax, outmax, cb, arg)) == NULL)
		return NULL;
	conn_sockopts(fd);
	c->peerlen = sizeof(c->peer);
	if (getpeername(fd, (struct sockaddr *)&c->peer, &c->peerlen) == -1)
		c->peerlen = 0;
	conn_peer_text(c);
	c->state = CS_OPEN;
	conn_update(c);
	return c;
}

struct conn *
conn_connect(struct ev_loop *loop, const struct sockaddr *sa, socklen_t salen,
    size_t inmax, size_t outmax, conn_cb *cb, void *arg)
{
	struct conn *c;
	int fd, e;

	if (salen > sizeof(c->peer)) {
		errno = EINVAL;
		return NULL;
	}
	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd == -1)
		return NULL;
	if ((c = conn_alloc(loop, fd, inmax, outmax, cb, arg)) == NULL) {
		e = errno;
		close(fd);
		errno = e;
		return NULL;
	}
	conn_sockopts(fd);
	memcpy(&c->peer, sa, salen);
	c->peerlen = salen;
	conn_peer_text(c);
	c->state = CS_CONNECTING;
	if (connect(fd, sa, salen) == -1 && errno != EINPROGRESS &&
	    errno != EINTR) {
		/* Never report from inside conn_connect(): defer. */
		c->pending_errno = errno;
		c->state = CS_FAILED;
		conn_kick(c);
		return c;
	}
	conn_update(c);
	return c;
}

void
conn_set_cb(struct conn *c, conn_cb *cb, void *arg)
{
	c->cb = cb;
	c->arg = arg;
}

/* ---- TLS -------------------------------------------------------------- */

static int
conn_tls_recv(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	struct conn *c = ctx;
	ssize_t n;

	(void)ssl;
	for (;;) {
		n = recv(c->fd, buf, (size_t)sz, 0);
		if (n > 0)
			return (int)n;
		if (n == 0)
			return WOLFSSL_CBIO_ERR_CONN_CLOSE;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return WOLFSSL_CBIO_ERR_WANT_READ;
		c->io_errno = errno;
		return errno == ECONNRESET ? WOLFSSL_CBIO_ERR_CONN_RST :
		    WOLFSSL_CBIO_ERR_GENERAL;
	}
}

static int
conn_tls_send(WOLFSSL *ssl, char *buf, int sz, void *ctx)
{
	struct conn *c = ctx;
	ssize_t n;

	(void)ssl;
	for (;;) {
		n = send(c->fd, buf, (size_t)sz, MSG_NOSIGNAL);
		if (n >= 0)
			return (int)n;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return WOLFSSL_CBIO_ERR_WANT_WRITE;
		c->io_errno = errno;
		if (errno == EPIPE)
			return WOLFSSL_CBIO_ERR_CONN_CLOSE;
		return errno == ECONNRESET ? WOLFSSL_CBIO_ERR_CONN_RST :
		    WOLFSSL_CBIO_ERR_GENERAL;
	}
}

static bool
conn_is_ip_literal(const char *name)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, name, buf) == 1 ||
	    inet_pton(AF_INET6, name, buf) == 1;
}

/* wolfSSL errors that have plain words of their own. */
static const struct {
	int err;
	const char *words;
} conn_tls_words[] = {
	{ ASN_NO_SIGNER_E, "certificate not trusted" },
	{ ASN_SELF_SIGNED_E, "certificate not trusted" },
	{ ASN_AFTER_DATE_E, "certificate expired" },
	{ ASN_BEFORE_DATE_E, "certificate not yet valid" },
	{ ASN_SIG_CONFIRM_E, "certificate signature invalid" },
	{ ASN_SIG_OID_E, "certificate signature invalid" },
	{ ASN_SIG_HASH_E, "certificate signature invalid" },
	{ ASN_SIG_KEY_E, "certificate signature invalid" },
	{ VERIFY_CERT_ERROR, "certificate verification failed" },
	{ MATCH_SUITE_ERROR, "no cipher suite in common with the server" },
	{ VERSION_ERROR, "no TLS version in common with the server" },
	{ SOCKET_PEER_CLOSED_E, "connection closed by peer" },
	{ WOLFSSL_ERROR_ZERO_RETURN, "connection closed by peer" },
};

/* Put a failed handshake or TLS I/O error into plain words. */
static void
conn_tls_error(struct conn *c, int err, const char *what)
{
	const char *name = c->tls_name ? c->tls_name : "";
	char buf[WOLFSSL_MAX_ERROR_SZ];

	for (size_t i = 0; i < sizeof(conn_tls_words) /
	    sizeof(conn_tls_words[0]); i++) {
		if (conn_tls_words[i].err == err) {
			conn_seterr(c, "%s: %s", what, conn_tls_words[i].words);
			return;
		}
	}
	switch (err) {
	case DOMAIN_NAME_MISMATCH:
	case IPADDR_MISMATCH:
		conn_seterr(c, "%s: certificate name mismatch (expected %s)",
		    what, name);
		return;
	case FATAL_ERROR: {
		WOLFSSL_ALERT_HISTORY h;

		if (wolfSSL_get_alert_history(c->ssl, &h) == WOLFSSL_SUCCESS &&
		    h.last_rx.code > 0) {
			conn_seterr(c, "%s: server sent alert: %s", what,
			    wolfSSL_alert_desc_string_long(h.last_rx.code));
			return;
		}
		conn_seterr(c, "%s: server sent a fatal alert", what);
		return;
	}
	case SOCKET_ERROR_E:
		conn_seterr(c, "%s: %s", what, c->io_errno ?
		    conn_errno_words(c->io_errno) : "socket error");
		return;
	default:
		wolfSSL_ERR_error_string_n((unsigned long)err, buf, sizeof(buf));
		conn_seterr(c, "%s: %s (%d)", what, buf, err);
		return;
	}
}

/* 0 if there is no pin or the peer certificate matches it. */
static int
conn_check_pin(struct conn *c)
{
	const uint8_t *pin = tls_ctx_pin(c->tls);
	WOLFSSL_X509 *x;
	const unsigned char *der;
	unsigned char digest[32];
	unsigned char diff = 0;
	int len = 0, ok;

	if (pin == NULL)
		return 0;
	if ((x = wolfSSL_get_peer_certificate(c->ssl)) == NULL) {
		conn_seterr(c, "TLS handshake failed: no peer certificate");
		return -1;
	}
	der = wolfSSL_X509_get_der(x, &len);
	ok = der != NULL && len > 0 &&
	    wc_Sha256Hash(der, (word32)len, digest) == 0;
	wolfSSL_X509_free(x);
	if (ok) {
		for (size_t i = 0; i < sizeof(digest); i++)
			diff |= (unsigned char)(digest[i] ^ pin[i]);
	}
	if (!ok || diff != 0) {
		conn_seterr(c, "peer certificate does not match the pinned "
		    "fingerprint");
		return -1;
	}
	return 0;
}

/* One step of the client handshake. Returns false: stop driving. */
static bool
conn_handshake(struct conn *c)
{
	int ret, err;

	c->io_errno = 0;
	ret = wolfSSL_connect(c->ssl);
	if (ret == WOLFSSL_SUCCESS) {
		if (conn_check_pin(c) == -1)
			return conn_fail(c);
		c->state = CS_OPEN;
		c->hs_want_write = 0;
		conn_update(c);
		if (!conn_emit(c, CONN_TLS_READY))
			return false;
		/* The server may have sent data (greeting, session tickets)
		 * that wolfSSL already holds: read until WANT_READ. */
		c->tls_more = 1;
		conn_kick(c);
		return true;
	}
	err = wolfSSL_get_error(c->ssl, ret);
	if (err == WOLFSSL_ERROR_WANT_READ)
		c->hs_want_write = 0;
	else if (err == WOLFSSL_ERROR_WANT_WRITE)
		c->hs_want_write = 1;
	else {
		conn_tls_error(c, err, "TLS handshake failed");
		return conn_fail(c);
	}
	conn_update(c);
	return true;
}

int
conn_starttls(struct conn *c, struct tls_ctx *ctx, const char *name)
{
	WOLFSSL *ssl;

	if (c->dead || c->closing || c->state != CS_OPEN || c->ssl != NULL ||
	    c->eof || name == NULL) {
		errno = EINVAL;
		return -1;
	}
	/* Plaintext read-ahead (or unsent plaintext) must not cross into
	 * the TLS session: CVE-2011-0411 class. */
	if (c->inlen > 0 || conn_out_busy(c)) {
		errno = EPROTO;
		return -1;
	}
	if ((ssl = wolfSSL_new(tls_ctx_wolf(ctx))) == NULL)
		goto nomem;
	if ((c->tls_name = strdup(name)) == NULL) {
		wolfSSL_free(ssl);
		goto nomem;
	}
	wolfSSL_SSLSetIORecv(ssl, conn_tls_recv);
	wolfSSL_SSLSetIOSend(ssl, conn_tls_send);
	wolfSSL_SetIOReadCtx(ssl, c);
	wolfSSL_SetIOWriteCtx(ssl, c);
	if (!conn_is_ip_literal(name) && *name != '\0' &&
	    wolfSSL_UseSNI(ssl, WOLFSSL_SNI_HOST_NAME, name,
	    (unsigned short)strlen(name)) != WOLFSSL_SUCCESS)
		goto fail;
	if (tls_ctx_verifies(ctx) &&
	    wolfSSL_check_domain_name(ssl, name) != WOLFSSL_SUCCESS)
		goto fail;
	tls_ctx_offer_session(ctx, ssl);
	c->ssl = ssl;
	c->tls = ctx;
	c->state = CS_HANDSHAKE;
	c->hs_want_write = 1;	/* the ClientHello goes first */
	c->rd_want_write = c->wr_want_read = 0;
	c->tls_more = 0;
	conn_update(c);
	return 0;
fail:
	wolfSSL_free(ssl);
	free(c->tls_name);
	c->tls_name = NULL;
	errno = EINVAL;
	return -1;
nomem:
	errno = ENOMEM;
	return -1;
}

bool
conn_tls_resumed(const struct conn *c)
{
	return conn_is_tls(c) && wolfSSL_session_reused(c->ssl) == 1;
}

void
conn_tls_save_session(struct conn *c)
{
	if (conn_is_tls(c))
		tls_ctx_save_session(c->tls, c->ssl);
}

bool
conn_is_tls(const struct conn *c)
{
	return c->ssl != NULL && c->state == CS_OPEN;
}

const char *
conn_tls_version(const struct conn *c)
{
	const char *v;

	if (!conn_is_tls(c) || (v = wolfSSL_get_version(c->ssl)) == NULL)
		return "";
	return v;
}

const char *
conn_tls_cipher(const struct conn *c)
{
	const char *v;

	if (!conn_is_tls(c) ||
	    (v = wolfSSL_get_cipher_name(c->ssl)) == NULL)
		return "";
	return v;
}

void
conn_tls_peer_cert(const struct conn *c, struct conn_peer_cert *out)
{
	WOLFSSL_X509 *x;
	WOLFSSL_ASN1_TIME *t;

	memset(out, 0, sizeof(*out));
	if (!conn_is_tls(c) || (x = wolfSSL_get_peer_certificate(c->ssl)) ==
	    NULL)
		return;
	wolfSSL_X509_NAME_oneline(wolfSSL_X509_get_subject_name(x),
	    out->subject, (int)sizeof(out->subject));
	wolfSSL_X509_NAME_oneline(wolfSSL_X509_get_issuer_name(x),
	    out->issuer, (int)sizeof(out->issuer));
	if ((t = wolfSSL_X509_get_notAfter(x)) != NULL)
		wolfSSL_ASN1_TIME_to_string(t, out->not_after,
		    (int)sizeof(out->not_after));
	wolfSSL_X509_free(x);
}

/* ---- reading ---------------------------------------------------------- */

/*
 * Read until EAGAIN/WANT_READ, EOF or a full buffer. Delivers CONN_READ if
 * bytes arrived (or `notify` and bytes are buffered), then CONN_EOF.
 * Returns false: stop driving.
 */
static bool
conn_do_read(struct conn *c, bool notify)
{
	bool got = false, eof = false;
	ssize_t n;
	int err;

	if (c->in == NULL && (c->in = malloc(c->inmax)) == NULL) {
		conn_seterr(c, "out of memory");
		return conn_fail(c);
	}
	while (c->inlen < c->inmax) {
		size_t room = c->inmax - c->inlen;

		if (c->ssl == NULL) {
			n = recv(c->fd, c->in + c->inlen, room, 0);
			if (n > 0) {
				c->inlen += (size_t)n;
				got = true;
				continue;
			}
			if (n == 0) {
				eof = true;
				break;
			}
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			conn_seterr(c, "%s", conn_errno_words(errno));
			return conn_fail(c);
		}
		c->io_errno = 0;
		n = wolfSSL_read(c->ssl, c->in + c->inlen,
		    room > INT32_MAX ? INT32_MAX : (int)room);
		if (n > 0) {
			c->inlen += (size_t)n;
			got = true;
			continue;
		}
		err = wolfSSL_get_error(c->ssl, (int)n);
		if (err == WOLFSSL_ERROR_WANT_READ)
			break;
		if (err == WOLFSSL_ERROR_WANT_WRITE) {
			c->rd_want_write = 1;
			break;
		}
		if (err == WOLFSSL_ERROR_ZERO_RETURN ||
		    err == SOCKET_PEER_CLOSED_E) {
			eof = true;
			break;
		}
		conn_tls_error(c, err, "TLS read failed");
		return conn_fail(c);
	}
	if (c->ssl != NULL && c->inlen == c->inmax && !eof)
		c->tls_more = wolfSSL_pending(c->ssl) > 0 ||
		    wolfSSL_has_pending(c->ssl);
	if (eof)
		c->eof = 1;
	if (c->inlen == 0) {
		free(c->in);
		c->in = NULL;
	}
	conn_update(c);
	if ((got || notify) && c->inlen > 0 && !c->paused) {
		c->deliver = 0;
		if (!conn_emit(c, CONN_READ))
			return false;
	}
	if (eof && !conn_emit(c, CONN_EOF))
		return false;
	return true;
}

/* ---- writing ---------------------------------------------------------- */

/* Write until EAGAIN or empty; CONN_DRAIN when it empties. */
static bool
conn_do_write(struct conn *c)
{
	ssize_t n;
	int err;

	while (conn_out_busy(c)) {
		size_t len = c->outlen - c->outoff;

		if (c->ssl == NULL) {
			n = send(c->fd, c->out + c->outoff, len, MSG_NOSIGNAL);
			if (n > 0) {
				c->outoff += (size_t)n;
				continue;
			}
			if (n == 0)
				break;
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			conn_seterr(c, "%s", conn_errno_words(errno));
			return conn_fail(c);
		}
		if (c->tls_wlen != 0)
			len = c->tls_wlen;	/* same pointer, same length */
		else if (len > INT32_MAX)
			len = INT32_MAX;
		c->io_errno = 0;
		n = wolfSSL_write(c->ssl, c->out + c->outoff, (int)len);
		if (n > 0) {
			c->tls_wlen = 0;
			c->outoff += (size_t)n;
			continue;
		}
		err = wolfSSL_get_error(c->ssl, (int)n);
		if (err == WOLFSSL_ERROR_WANT_WRITE) {
			c->tls_wlen = len;
			break;
		}
		if (err == WOLFSSL_ERROR_WANT_READ) {
			c->tls_wlen = len;
			c->wr_want_read = 1;
			break;
		}
		conn_tls_error(c, err, "TLS write failed");
		return conn_fail(c);
	}
	if (conn_out_busy(c)) {
		conn_update(c);
		return true;
	}
	free(c->out);
	c->out = NULL;
	c->outoff = c->outlen = 0;
	conn_update(c);
	if (c->closing) {
		if (c->ssl != NULL)
			(void)wolfSSL_shutdown(c->ssl);	/* best effort */
		conn_free(c);
		return false;
	}
	if (c->had_out) {
		c->had_out = 0;
		return conn_emit(c, CONN_DRAIN);
	}
	return true;
}

/* ---- libev callbacks -------------------------------------------------- */

static void
conn_rio_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = container_of(w, struct conn, rio);

	(void)loop;
	(void)revents;
	if (c->dead)
		return;
	if (c->state == CS_HANDSHAKE) {
		(void)conn_handshake(c);
		return;
	}
	if (c->state != CS_OPEN)
		return;
	if (c->wr_want_read) {
		c->wr_want_read = 0;
		if (!conn_do_write(c))
			return;
	}
	if (conn_can_read(c) && !c->rd_want_write && !conn_do_read(c, false))
		return;
	conn_update(c);
}

static void
conn_wio_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = container_of(w, struct conn, wio);
	socklen_t len = sizeof(int);
	int soerr = 0;

	(void)loop;
	(void)revents;
	if (c->dead)
		return;
	switch (c->state) {
	case CS_CONNECTING:
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == -1)
			soerr = errno;
		if (soerr == EINPROGRESS || soerr == EINTR)
			return;
		if (soerr != 0) {
			conn_seterr(c, "%s", conn_errno_words(soerr));
			(void)conn_fail(c);
			return;
		}
		c->state = CS_OPEN;
		conn_update(c);
		(void)conn_emit(c, CONN_CONNECTED);
		return;
	case CS_HANDSHAKE:
		(void)conn_handshake(c);
		return;
	case CS_OPEN:
		break;
	case CS_FAILED:
		return;
	}
	if (c->rd_want_write) {
		c->rd_want_write = 0;
		if (conn_can_read(c) && !conn_do_read(c, false))
			return;
	}
	if (conn_out_busy(c) && !c->wr_want_read && !conn_do_write(c))
		return;
	conn_update(c);
}

static void
conn_kick_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
	struct conn *c = container_of(w, struct conn, kick);

	(void)revents;
	ev_idle_stop(loop, w);
	if (c->dead)
		return;
	if (c->pending_errno != 0) {
		int e = c->pending_errno;

		c->pending_errno = 0;
		conn_seterr(c, "%s", conn_errno_words(e));
		(void)conn_fail(c);
		return;
	}
	if (c->state != CS_OPEN || c->paused)
		return;
	if (c->tls_more && conn_can_read(c) && !c->rd_want_write) {
		c->tls_more = 0;
		(void)conn_do_read(c, c->deliver);
		return;
	}
	if (c->deliver) {
		c->deliver = 0;
		if (c->inlen > 0)
			(void)conn_emit(c, CONN_READ);
	}
}

static void
conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = container_of(w, struct conn, timer);

	(void)loop;
	(void)revents;
	if (c->dead)
		return;
	(void)conn_emit(c, CONN_TIMEOUT);
}

static void
conn_flush_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = container_of(w, struct conn, flush_timer);

	(void)loop;
	(void)revents;
	conn_free(c);
}

/* ---- public buffer API ------------------------------------------------ */

const char *
conn_in(const struct conn *c, size_t *len)
{
	*len = c->inlen;
	return c->in != NULL ? c->in : "";
}

void
conn_consume(struct conn *c, size_t n)
{
	bool was_full = c->inlen == c->inmax;

	if (n > c->inlen)
		n = c->inlen;
	if (n == 0)
		return;
	c->inlen -= n;
	if (c->inlen == 0) {
		free(c->in);
		c->in = NULL;
	} else
		memmove(c->in, c->in + n, c->inlen);
	if (was_full && c->tls_more)
		conn_kick(c);
	conn_update(c);
}

void
conn_pause(struct conn *c)
{
	if (c->dead)
		return;
	c->paused = 1;
	conn_update(c);
}

void
conn_resume(struct conn *c)
{
	if (c->dead || !c->paused)
		return;
	c->paused = 0;
	if (c->inlen > 0 || c->tls_more) {
		c->deliver = c->inlen > 0;
		conn_kick(c);
	}
	conn_update(c);
}

size_t
conn_out_pending(const struct conn *c)
{
	return c->outlen - c->outoff;
}

size_t
conn_out_room(const struct conn *c)
{
	/* A pending TLS write pins the buffer: no compaction until done. */
	if (c->tls_wlen != 0)
		return c->outmax - c->outlen;
	return c->outmax - conn_out_pending(c);
}

int
conn_write(struct conn *c, const void *buf, size_t len)
{
	if (c->dead || c->closing || c->state == CS_FAILED) {
		errno = EPIPE;
		return -1;
	}
	if (len == 0)
		return 0;
	if (len > conn_out_room(c)) {
		errno = ENOBUFS;
		return -1;
	}
	if (c->out == NULL) {
		if ((c->out = malloc(c->outmax)) == NULL) {
			errno = ENOMEM;
			return -1;
		}
		c->outoff = c->outlen = 0;
	} else if (c->outlen + len > c->outmax) {
		/* Room exists only at the front: tls_wlen is 0 here. */
		memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
		c->outlen -= c->outoff;
		c->outoff = 0;
	}
	memcpy(c->out + c->outlen, buf, len);
	c->outlen += len;
	c->had_out = 1;
	conn_update(c);
	return 0;
}

void
conn_set_timeout(struct conn *c, double seconds)
{
	if (c->dead)
		return;
	ev_timer_stop(c->loop, &c->timer);
	if (seconds > 0) {
		ev_timer_set(&c->timer, seconds, 0.);
		ev_timer_start(c->loop, &c->timer);
	}
}

/* ---- closing ---------------------------------------------------------- */

/* Conns handed to conn_close_after_flush() still writing (one loop per
 * thread, so per thread). */
static _Thread_local size_t conn_flushing;

void
conn_close_after_flush(struct conn *c)
{
	if (c->dead || c->closing)
		return;
	c->closing = 1;
	ev_timer_stop(c->loop, &c->timer);
	ev_idle_stop(c->loop, &c->kick);
	if (c->state != CS_OPEN || !conn_out_busy(c)) {
		if (c->state == CS_OPEN && c->ssl != NULL)
			(void)wolfSSL_shutdown(c->ssl);	/* best effort */
		conn_free(c);
		return;
	}
	ev_timer_set(&c->flush_timer, CONN_FLUSH_TIMEOUT, 0.);
	ev_timer_start(c->loop, &c->flush_timer);
	c->flushing = 1;
	conn_flushing++;
	conn_update(c);
}

size_t
conn_flushing_count(void)
{
	return conn_flushing;
}

void
conn_free(struct conn *c)
{
	if (c == NULL || c->dead)
		return;
	c->dead = 1;
	if (c->flushing) {
		c->flushing = 0;
		conn_flushing--;
	}
	conn_stop_all(c);
	if (c->ssl != NULL) {
		wolfSSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd != -1) {
		close(c->fd);
		c->fd = -1;
	}
	reap_later(conn_release, c);
}

/* ---- accessors -------------------------------------------------------- */

const char *
conn_error(const struct conn *c)
{
	return c->err;
}

int
conn_fd(const struct conn *c)
{
	return c->fd;
}

const char *
conn_peer(const struct conn *c)
{
	return c->peertxt;
}

const struct sockaddr *
conn_peer_sa(const struct conn *c)
{
	return c->peerlen ? (const struct sockaddr *)&c->peer : NULL;
}
