/*
 * conn.h - one non-blocking byte stream over a plain or TLS socket, driven
 * by libev. Protocol code sees "bytes arrived", "output drained",
 * "connected", "TLS up", "timeout", "closed/error" - never wolfSSL.
 *
 * Buffers are bounded: input holds at most `inmax` bytes (reading stops
 * while it is full), output at most `outmax` bytes (conn_write refuses what
 * does not fit; callers check conn_out_room()). Buffers are allocated on
 * first use and released when a connection is idle, so an idle connection
 * costs little memory.
 *
 * Lifetime: conn_free() may be called from inside the conn's own callback
 * (or any other); the memory is released only after the current libev
 * callback has returned (see reap.h). After conn_free() no further event is
 * delivered.
 */
#ifndef RELAY25_CONN_H
#define RELAY25_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct ev_loop;
struct conn;
struct tls_ctx;

enum conn_event {
	CONN_CONNECTED,   /* outgoing connect finished */
	CONN_TLS_READY,   /* TLS handshake done and peer verified */
	CONN_READ,        /* new bytes are in the input buffer */
	CONN_DRAIN,       /* output buffer became empty */
	CONN_EOF,         /* peer closed its side; input may still hold bytes */
	CONN_ERROR,       /* I/O, connect or TLS failure: see conn_error() */
	CONN_TIMEOUT,     /* the timer set by conn_set_timeout() expired */
};

typedef void conn_cb(struct conn *, enum conn_event, void *arg);

/* Wrap an accepted or connected socket (made non-blocking here; owned and
 * closed by the conn). Reading starts at once. */
struct conn *conn_new(struct ev_loop *, int fd, size_t inmax, size_t outmax,
    conn_cb *, void *arg);

/* Start a non-blocking connect; CONN_CONNECTED or CONN_ERROR follows.
 * Returns NULL (errno set) if the socket cannot even be created. */
struct conn *conn_connect(struct ev_loop *, const struct sockaddr *,
    socklen_t, size_t inmax, size_t outmax, conn_cb *, void *arg);

/* Replace the callback (e.g. when a conn changes owner). */
void conn_set_cb(struct conn *, conn_cb *, void *arg);

/* Begin a client TLS handshake: SNI and certificate name `name`, policy
 * (verification, pin, versions, ciphers) from ctx. Fails (-1) if plaintext
 * bytes are still buffered - read-ahead before STARTTLS is an attack.
 * CONN_TLS_READY or CONN_ERROR follows. */
int conn_starttls(struct conn *, struct tls_ctx *, const char *name);
bool conn_is_tls(const struct conn *);
/* Was this handshake a resumption? Save the session for the next one. */
bool conn_tls_resumed(const struct conn *);
void conn_tls_save_session(struct conn *);
const char *conn_tls_version(const struct conn *);  /* "TLSv1.3" or "" */
const char *conn_tls_cipher(const struct conn *);   /* or "" */
/* The verified peer certificate in words, for diagnostics (--check):
 * subject, issuer, expiry ("Jan  1 00:00:00 2027 GMT"). Empty strings
 * when unknown. */
struct conn_peer_cert {
	char subject[256], issuer[256], not_after[64];
};
void conn_tls_peer_cert(const struct conn *, struct conn_peer_cert *);

/* Input: conn_in() gives the buffered bytes; conn_consume() drops n of them
 * from the front. */
const char *conn_in(const struct conn *, size_t *len);
void conn_consume(struct conn *, size_t n);
/* Stop / resume delivering CONN_READ (back-pressure). Resuming delivers
 * CONN_READ again soon if bytes are buffered (also bytes TLS holds). */
void conn_pause(struct conn *);
void conn_resume(struct conn *);

/* Output: append bytes; -1 if they do not fit (nothing appended). */
int conn_write(struct conn *, const void *buf, size_t len);
size_t conn_out_room(const struct conn *);
size_t conn_out_pending(const struct conn *);

/* One-shot timer; 0 disarms. Re-arming replaces the previous one. */
void conn_set_timeout(struct conn *, double seconds);

/* Close once the output buffer has been written (or after a short bound),
 * without further events except CONN_DRAIN/CONN_ERROR being suppressed. */
void conn_close_after_flush(struct conn *);
/* How many conns are still flushing after conn_close_after_flush(): at
 * shutdown the loop runs until this is 0 (each is bounded by a timer). */
size_t conn_flushing_count(void);
/* Close now and release after the current callback (see above). */
void conn_free(struct conn *);

const char *conn_error(const struct conn *);  /* last error, plain words */
int conn_fd(const struct conn *);
/* Peer address in text ("127.0.0.1", "::1"); and the raw sockaddr. */
const char *conn_peer(const struct conn *);
const struct sockaddr *conn_peer_sa(const struct conn *);

#endif
