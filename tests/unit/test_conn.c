/*
 * test_conn.c - reap, and conn over socketpairs and loopback TCP: round
 * trip, back-pressure, pause/resume, EOF, timeout, free inside callbacks,
 * connect errors, STARTTLS read-ahead refusal; TLS against an in-process
 * wolfSSL server (certificate made by openssl(1) in a temporary dir):
 * verification, name mismatch, unknown CA, pin, cipher policy, bulk data.
 * Every loop is bounded by a timer.
 */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/hash.h>

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay25/conn.h"
#include "relay25/reap.h"
#include "relay25/tls.h"

static struct ev_loop *loop;
static bool timed_out;

static void
bound_cb(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	timed_out = true;
	ev_break(l, EVBREAK_ALL);
}

/* Run until cond() or `secs` passed. */
#define RUN_UNTIL(cond, secs) do {					\
	ev_timer t_;							\
	timed_out = false;						\
	ev_now_update(loop);	/* the cached time may be stale */	\
	ev_timer_init(&t_, bound_cb, (secs), 0.);			\
	ev_timer_start(loop, &t_);					\
	while (!(cond) && !timed_out)					\
		ev_run(loop, EVRUN_ONCE);				\
	ev_timer_stop(loop, &t_);					\
} while (0)

/* Run for `secs` regardless. */
static void
run_for(double secs)
{
	RUN_UNTIL(false, secs);
}

static void
setup(void)
{
	signal(SIGPIPE, SIG_IGN);
	loop = ev_loop_new(EVFLAG_AUTO);
	cr_assert_not_null(loop);
	reap_init(loop);
}

static void
teardown(void)
{
	reap_run();
	ev_loop_destroy(loop);
}

/* ---- a recording conn user ------------------------------------------- */

#define NEV 7

struct rec {
	struct conn *c;
	int n[NEV];
	char data[256 * 1024];
	size_t len;
	bool consume;		/* consume input on CONN_READ */
	bool pause_on_read;	/* pause after the first CONN_READ */
	int free_on;		/* conn_free on this event (-1: never) */
	char err[256];
	int seen_inside;	/* events seen after free (must stay 0) */
	bool freed;
};

static void
rec_cb(struct conn *c, enum conn_event ev, void *arg)
{
	struct rec *r = arg;

	if (r->freed)
		r->seen_inside++;
	r->n[ev]++;
	if (ev == CONN_READ) {
		size_t len;
		const char *p = conn_in(c, &len);

		if (r->consume) {
			cr_assert_leq(r->len + len, sizeof(r->data));
			memcpy(r->data + r->len, p, len);
			r->len += len;
			conn_consume(c, len);
		}
		if (r->pause_on_read)
			conn_pause(c);
	}
	if (ev == CONN_ERROR)
		snprintf(r->err, sizeof(r->err), "%s", conn_error(c));
	if ((int)ev == r->free_on) {
		conn_free(c);
		r->freed = true;
	}
}

static void
rec_init(struct rec *r)
{
	memset(r, 0, sizeof(*r));
	r->consume = true;
	r->free_on = -1;
}

static void
pair(int sv[2])
{
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
}

/* ---- reap -------------------------------------------------------------- */

static int reaped;

static void
reap_count(void *p)
{
	reaped++;
	free(p);
}

static void
reap_in_timer(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)l;
	(void)w;
	(void)revents;
	reap_later(reap_count, malloc(16));
	reap_later(reap_count, malloc(16));
	cr_assert_eq(reaped, 0, "released inside the callback");
}

TestSuite(reap, .init = setup, .fini = teardown, .timeout = 10);

Test(reap, runs_deferred_frees_before_blocking)
{
	ev_timer t;

	reaped = 0;
	ev_timer_init(&t, reap_in_timer, 0.01, 0.);
	ev_timer_start(loop, &t);
	/* The timer is the only referenced watcher: ev_run returns once
	 * it has fired, and the pending releases keep the loop for one more
	 * iteration so they run before ev_run returns. */
	ev_run(loop, 0);
	cr_assert_eq(reaped, 2);

	reap_later(reap_count, malloc(8));
	cr_assert_eq(reaped, 2);
	reap_run();
	cr_assert_eq(reaped, 3);
	ev_run(loop, 0);	/* idle: returns at once */
}

/* ---- plain conns ------------------------------------------------------- */

TestSuite(conn, .init = setup, .fini = teardown, .timeout = 20);

Test(conn, round_trip_and_drain)
{
	struct rec ra, rb;
	int sv[2];

	rec_init(&ra);
	rec_init(&rb);
	pair(sv);
	ra.c = conn_new(loop, sv[0], 1024, 1024, rec_cb, &ra);
	rb.c = conn_new(loop, sv[1], 1024, 1024, rec_cb, &rb);
	cr_assert_not_null(ra.c);
	cr_assert_not_null(rb.c);
	cr_assert_str_eq(conn_peer(rb.c), "local");
	cr_assert_eq(conn_write(ra.c, "HELO x\r\n", 8), 0);
	cr_assert_eq(conn_out_pending(ra.c), 8);
	cr_assert_eq(ra.n[CONN_DRAIN], 0, "event inside conn_write");
	RUN_UNTIL(rb.len == 8 && ra.n[CONN_DRAIN] == 1, 5);
	cr_assert_eq(rb.len, 8);
	cr_assert(memcmp(rb.data, "HELO x\r\n", 8) == 0);
	cr_assert_eq(ra.n[CONN_DRAIN], 1);
	cr_assert_eq(conn_out_pending(ra.c), 0);
	cr_assert_eq(conn_out_room(ra.c), 1024);
	cr_assert_eq(conn_write(rb.c, "250 ok\r\n", 8), 0);
	RUN_UNTIL(ra.len == 8, 5);
	cr_assert(memcmp(ra.data, "250 ok\r\n", 8) == 0);
	cr_assert_eq(ra.n[CONN_ERROR] + rb.n[CONN_ERROR], 0);
	conn_free(ra.c);
	conn_free(rb.c);
}

Test(conn, output_bound_refuses_what_does_not_fit)
{
	struct rec ra, rb;
	int sv[2];
	char big[40];

	rec_init(&ra);
	rec_init(&rb);
	memset(big, 'x', sizeof(big));
	pair(sv);
	ra.c = conn_new(loop, sv[0], 64, 16, rec_cb, &ra);
	rb.c = conn_new(loop, sv[1], 64, 16, rec_cb, &rb);
	cr_assert_eq(conn_out_room(ra.c), 16);
	cr_assert_eq(conn_write(ra.c, big, 10), 0);
	cr_assert_eq(conn_out_room(ra.c), 6);
	cr_assert_eq(conn_write(ra.c, big, 7), -1);
	cr_assert_eq(conn_out_pending(ra.c), 10, "partial append");
	cr_assert_eq(conn_write(ra.c, big, 6), 0);
	cr_assert_eq(conn_out_room(ra.c), 0);
	cr_assert_eq(conn_write(ra.c, big, 1), -1);
	RUN_UNTIL(rb.len == 16, 5);
	cr_assert_eq(rb.len, 16);
	cr_assert_eq(conn_out_room(ra.c), 16);
	conn_free(ra.c);
	conn_free(rb.c);
}

Test(conn, input_bound_and_back_pressure)
{
	struct rec rb;
	int sv[2];
	char buf[100];

	rec_init(&rb);
	rb.consume = false;
	pair(sv);
	rb.c = conn_new(loop, sv[1], 8, 64, rec_cb, &rb);
	for (int i = 0; i < 100; i++)
		buf[i] = (char)('a' + i % 26);
	cr_assert_eq(write(sv[0], buf, sizeof(buf)), (ssize_t)sizeof(buf));
	RUN_UNTIL(rb.n[CONN_READ] >= 1, 5);
	run_for(0.05);
	/* Full buffer: reading stopped, no more events, 8 bytes held. */
	cr_assert_eq(rb.n[CONN_READ], 1);
	{
		size_t len;
		const char *p = conn_in(rb.c, &len);

		cr_assert_eq(len, 8);
		cr_assert(memcmp(p, buf, 8) == 0);
		conn_consume(rb.c, 3);
		p = conn_in(rb.c, &len);
		cr_assert_eq(len, 5);
		cr_assert(memcmp(p, buf + 3, 5) == 0);
	}
	/* Room again: reading resumes. Now consume everything. */
	rb.consume = true;
	RUN_UNTIL(rb.len >= 5 + 92, 5);
	cr_assert_eq(rb.len, 97);
	cr_assert(memcmp(rb.data, buf + 3, 97) == 0);
	close(sv[0]);
	RUN_UNTIL(rb.n[CONN_EOF] == 1, 5);
	cr_assert_eq(rb.n[CONN_EOF], 1);
	conn_free(rb.c);
}

Test(conn, pause_resume_delivers_buffered_bytes)
{
	struct rec rb;
	int sv[2];
	size_t len;

	rec_init(&rb);
	rb.consume = false;
	rb.pause_on_read = true;
	pair(sv);
	rb.c = conn_new(loop, sv[1], 1024, 64, rec_cb, &rb);
	cr_assert_eq(write(sv[0], "MAIL FROM:<a@b>\r\n", 17), 17);
	RUN_UNTIL(rb.n[CONN_READ] == 1, 5);
	cr_assert_eq(write(sv[0], "RCPT TO:<c@d>\r\n", 15), 15);
	run_for(0.05);
	cr_assert_eq(rb.n[CONN_READ], 1, "CONN_READ while paused");
	(void)conn_in(rb.c, &len);
	cr_assert_eq(len, 17, "read while paused");

	rb.pause_on_read = false;
	conn_resume(rb.c);
	cr_assert_eq(rb.n[CONN_READ], 1, "event inside conn_resume");
	conn_resume(rb.c);	/* no-op when not paused */
	RUN_UNTIL(rb.n[CONN_READ] >= 2, 5);
	cr_assert_geq(rb.n[CONN_READ], 2);
	RUN_UNTIL(conn_in(rb.c, &len) && len == 32, 5);
	cr_assert_eq(len, 32);
	cr_assert(memcmp(conn_in(rb.c, &len), "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n",
	    32) == 0);
	conn_free(rb.c);
	close(sv[0]);
}

Test(conn, eof_after_data)
{
	struct rec rb;
	int sv[2];

	rec_init(&rb);
	pair(sv);
	rb.c = conn_new(loop, sv[1], 64, 64, rec_cb, &rb);
	cr_assert_eq(write(sv[0], "QUIT\r\n", 6), 6);
	close(sv[0]);
	RUN_UNTIL(rb.n[CONN_EOF] == 1, 5);
	cr_assert_eq(rb.len, 6);
	cr_assert_eq(rb.n[CONN_EOF], 1);
	cr_assert_eq(rb.n[CONN_ERROR], 0);
	run_for(0.05);
	cr_assert_eq(rb.n[CONN_EOF], 1, "EOF repeated");
	conn_free(rb.c);
}

Test(conn, timeout_fires_rearms_and_disarms)
{
	struct rec rb;
	int sv[2];

	rec_init(&rb);
	pair(sv);
	rb.c = conn_new(loop, sv[1], 64, 64, rec_cb, &rb);
	conn_set_timeout(rb.c, 0.05);
	RUN_UNTIL(rb.n[CONN_TIMEOUT] == 1, 5);
	cr_assert_eq(rb.n[CONN_TIMEOUT], 1);
	run_for(0.1);
	cr_assert_eq(rb.n[CONN_TIMEOUT], 1, "one-shot timer repeated");
	conn_set_timeout(rb.c, 10);
	conn_set_timeout(rb.c, 0.05);	/* replaces */
	RUN_UNTIL(rb.n[CONN_TIMEOUT] == 2, 5);
	cr_assert_eq(rb.n[CONN_TIMEOUT], 2);
	conn_set_timeout(rb.c, 0.05);
	conn_set_timeout(rb.c, 0);
	run_for(0.15);
	cr_assert_eq(rb.n[CONN_TIMEOUT], 2);
	conn_free(rb.c);
	close(sv[0]);
}

Test(conn, free_inside_callbacks)
{
	struct rec r1, r2, r3, r4;
	int s1[2], s2[2], s3[2], s4[2];

	/* READ then EOF in one pass: free on READ, EOF must not follow. */
	rec_init(&r1);
	r1.free_on = CONN_READ;
	pair(s1);
	r1.c = conn_new(loop, s1[1], 64, 64, rec_cb, &r1);
	cr_assert_eq(write(s1[0], "x", 1), 1);
	close(s1[0]);

	/* Free on TIMEOUT, with output pending and a peer writing. */
	rec_init(&r2);
	r2.free_on = CONN_TIMEOUT;
	pair(s2);
	r2.c = conn_new(loop, s2[1], 64, 64, rec_cb, &r2);
	conn_set_timeout(r2.c, 0.02);

	/* Free on DRAIN. */
	rec_init(&r3);
	r3.free_on = CONN_DRAIN;
	pair(s3);
	r3.c = conn_new(loop, s3[1], 64, 64, rec_cb, &r3);
	cr_assert_eq(conn_write(r3.c, "hi", 2), 0);

	/* Free on EOF. */
	rec_init(&r4);
	r4.free_on = CONN_EOF;
	pair(s4);
	r4.c = conn_new(loop, s4[1], 64, 64, rec_cb, &r4);
	close(s4[0]);

	RUN_UNTIL(r1.freed && r2.freed && r3.freed && r4.freed, 5);
	cr_assert(r1.freed && r2.freed && r3.freed && r4.freed);
	run_for(0.05);
	cr_assert_eq(r1.n[CONN_EOF], 0);
	cr_assert_eq(r1.seen_inside + r2.seen_inside + r3.seen_inside +
	    r4.seen_inside, 0);
	cr_assert_eq(r2.n[CONN_READ], 0);
	close(s2[0]);
	close(s3[0]);
}

static int
listen_tcp(struct sockaddr_in *sin)
{
	socklen_t len = sizeof(*sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	cr_assert_neq(fd, -1);
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(fd, (struct sockaddr *)sin, sizeof(*sin)), 0);
	cr_assert_eq(listen(fd, 8), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)sin, &len), 0);
	return fd;
}

Test(conn, connect_accept_round_trip_over_tcp)
{
	struct sockaddr_in sin;
	struct rec ra, rb;
	int lfd, fd;

	rec_init(&ra);
	rec_init(&rb);
	lfd = listen_tcp(&sin);
	ra.c = conn_connect(loop, (struct sockaddr *)&sin, sizeof(sin), 256,
	    256, rec_cb, &ra);
	cr_assert_not_null(ra.c);
	cr_assert_eq(ra.n[CONN_CONNECTED], 0, "event inside conn_connect");
	cr_assert_eq(conn_write(ra.c, "EHLO me\r\n", 9), 0);  /* queued */
	RUN_UNTIL(ra.n[CONN_CONNECTED] == 1, 5);
	cr_assert_eq(ra.n[CONN_CONNECTED], 1);
	cr_assert_str_eq(conn_peer(ra.c), "127.0.0.1");
	fd = accept(lfd, NULL, NULL);
	cr_assert_neq(fd, -1);
	rb.c = conn_new(loop, fd, 256, 256, rec_cb, &rb);
	cr_assert_str_eq(conn_peer(rb.c), "127.0.0.1");
	cr_assert_eq(conn_peer_sa(rb.c)->sa_family, AF_INET);
	RUN_UNTIL(rb.len == 9, 5);
	cr_assert(memcmp(rb.data, "EHLO me\r\n", 9) == 0);
	cr_assert_eq(conn_write(rb.c, "250 hi\r\n", 8), 0);
	RUN_UNTIL(ra.len == 8, 5);
	cr_assert(memcmp(ra.data, "250 hi\r\n", 8) == 0);
	conn_free(ra.c);
	RUN_UNTIL(rb.n[CONN_EOF] == 1, 5);
	cr_assert_eq(rb.n[CONN_EOF], 1);
	conn_free(rb.c);
	close(lfd);
}

Test(conn, connect_refused)
{
	struct sockaddr_in sin;
	struct rec ra;
	int lfd;

	rec_init(&ra);
	lfd = listen_tcp(&sin);
	close(lfd);	/* the port is now closed */
	ra.c = conn_connect(loop, (struct sockaddr *)&sin, sizeof(sin), 256,
	    256, rec_cb, &ra);
	cr_assert_not_null(ra.c);
	cr_assert_eq(ra.n[CONN_ERROR], 0, "event inside conn_connect");
	RUN_UNTIL(ra.n[CONN_ERROR] == 1, 5);
	cr_assert_eq(ra.n[CONN_ERROR], 1);
	cr_assert_eq(ra.n[CONN_CONNECTED], 0);
	cr_assert_str_eq(ra.err, "connection refused");
	run_for(0.05);
	cr_assert_eq(ra.n[CONN_ERROR], 1);
	conn_free(ra.c);
}

Test(conn, close_after_flush_delivers_then_closes)
{
	struct rec ra, rb;
	int sv[2];
	static char big[100000];

	rec_init(&ra);
	rec_init(&rb);
	memset(big, 'z', sizeof(big));
	pair(sv);
	ra.c = conn_new(loop, sv[0], 64, sizeof(big), rec_cb, &ra);
	rb.c = conn_new(loop, sv[1], 4096, 64, rec_cb, &rb);
	cr_assert_eq(conn_write(ra.c, big, sizeof(big)), 0);
	conn_close_after_flush(ra.c);
	cr_assert_eq(conn_write(ra.c, "x", 1), -1);
	RUN_UNTIL(rb.n[CONN_EOF] == 1, 5);
	cr_assert_eq(rb.len, sizeof(big));
	cr_assert_eq(rb.n[CONN_EOF], 1);
	cr_assert_eq(ra.n[CONN_DRAIN] + ra.n[CONN_ERROR], 0);
	conn_free(rb.c);
}

/* ---- TLS --------------------------------------------------------------- */

static char tmpdir[64];
static char cert1[128], key1[128], cert2[128], key2[128];
static bool have_certs;

static void
make_cert(const char *cert, const char *key, const char *cn)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd),
	    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
	    "-nodes -subj /CN=%s -addext subjectAltName=DNS:%s -days 2 "
	    "-keyout %s -out %s >/dev/null 2>&1", cn, cn, key, cert);
	cr_assert_eq(system(cmd), 0, "openssl req failed");
}

static void
tls_setup(void)
{
	setup();
	cr_assert_eq(tls_global_init(), 0);
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/relay25-tls-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
	snprintf(cert1, sizeof(cert1), "%s/cert1.pem", tmpdir);
	snprintf(key1, sizeof(key1), "%s/key1.pem", tmpdir);
	snprintf(cert2, sizeof(cert2), "%s/cert2.pem", tmpdir);
	snprintf(key2, sizeof(key2), "%s/key2.pem", tmpdir);
	make_cert(cert1, key1, "localhost");
	make_cert(cert2, key2, "localhost");	/* same name, other key */
	have_certs = true;
}

static void
tls_teardown(void)
{
	char cmd[128];

	teardown();
	tls_global_cleanup();
	if (have_certs) {
		snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
		if (system(cmd) != 0)
			cr_log_warn("cannot remove %s", tmpdir);
	}
}

/* An in-process TLS server on one end of a socketpair. */
struct tsrv {
	WOLFSSL_CTX *ctx;
	WOLFSSL *ssl;
	int fd;
	ev_io w;
	bool up, failed;
	const char *greeting;
	size_t bulk;		/* after the greeting, send this many bytes */
	size_t bulk_sent;
	bool read_slowly;	/* do not read until told */
	char rx[1024 * 1024];
	size_t rxlen;
};

static void tsrv_drive(struct tsrv *s);

static void
tsrv_watch(struct tsrv *s, int events)
{
	if (ev_is_active(&s->w) && (s->w.events & (EV_READ | EV_WRITE)) ==
	    events)
		return;
	ev_io_stop(loop, &s->w);	/* stop before ev_io_set */
	ev_io_set(&s->w, s->fd, events);
	ev_io_start(loop, &s->w);
}

static void
tsrv_cb(struct ev_loop *l, ev_io *w, int revents)
{
	(void)l;
	(void)revents;
	tsrv_drive(w->data);
}

static void
tsrv_drive(struct tsrv *s)
{
	int ret, err;

	if (s->failed)
		return;
	if (!s->up) {
		ret = wolfSSL_accept(s->ssl);
		if (ret != WOLFSSL_SUCCESS) {
			err = wolfSSL_get_error(s->ssl, ret);
			if (err == WOLFSSL_ERROR_WANT_READ)
				tsrv_watch(s, EV_READ);
			else if (err == WOLFSSL_ERROR_WANT_WRITE)
				tsrv_watch(s, EV_WRITE);
			else {
				s->failed = true;
				ev_io_stop(loop, &s->w);
			}
			return;
		}
		s->up = true;
		if (s->greeting != NULL)
			cr_assert_eq(wolfSSL_write(s->ssl, s->greeting,
			    (int)strlen(s->greeting)), (int)strlen(s->greeting));
	}
	while (s->bulk_sent < s->bulk) {
		char chunk[16384];
		size_t n = s->bulk - s->bulk_sent;

		if (n > sizeof(chunk))
			n = sizeof(chunk);
		for (size_t i = 0; i < n; i++)
			chunk[i] = (char)((s->bulk_sent + i) % 251);
		ret = wolfSSL_write(s->ssl, chunk, (int)n);
		if (ret <= 0) {
			err = wolfSSL_get_error(s->ssl, ret);
			cr_assert(err == WOLFSSL_ERROR_WANT_WRITE);
			tsrv_watch(s, EV_WRITE);
			return;	/* retried with the same content */
		}
		s->bulk_sent += (size_t)ret;
	}
	if (s->read_slowly) {
		ev_io_stop(loop, &s->w);
		return;
	}
	for (;;) {
		ret = wolfSSL_read(s->ssl, s->rx + s->rxlen,
		    (int)(sizeof(s->rx) - s->rxlen));
		if (ret > 0) {
			s->rxlen += (size_t)ret;
			continue;
		}
		err = wolfSSL_get_error(s->ssl, ret);
		if (err == WOLFSSL_ERROR_WANT_READ)
			tsrv_watch(s, EV_READ);
		else if (err == WOLFSSL_ERROR_WANT_WRITE)
			tsrv_watch(s, EV_WRITE);
		else
			ev_io_stop(loop, &s->w);
		return;
	}
}

/* tls12: TLS 1.2 only; ciphers: server list or NULL. */
static void
tsrv_start(struct tsrv *s, int fd, bool tls12, const char *ciphers)
{
	memset(s, 0, sizeof(*s));
	s->ctx = wolfSSL_CTX_new(tls12 ? wolfTLSv1_2_server_method() :
	    wolfSSLv23_server_method());
	cr_assert_not_null(s->ctx);
	cr_assert_eq(wolfSSL_CTX_use_certificate_file(s->ctx, cert1,
	    WOLFSSL_FILETYPE_PEM), WOLFSSL_SUCCESS);
	cr_assert_eq(wolfSSL_CTX_use_PrivateKey_file(s->ctx, key1,
	    WOLFSSL_FILETYPE_PEM), WOLFSSL_SUCCESS);
	if (ciphers != NULL)
		cr_assert_eq(wolfSSL_CTX_set_cipher_list(s->ctx, ciphers),
		    WOLFSSL_SUCCESS);
	s->ssl = wolfSSL_new(s->ctx);
	cr_assert_not_null(s->ssl);
	s->fd = fd;
	cr_assert_eq(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
	wolfSSL_set_fd(s->ssl, fd);
	s->greeting = "220 tls ok\r\n";
	ev_io_init(&s->w, tsrv_cb, fd, EV_READ);
	s->w.data = s;
	ev_io_start(loop, &s->w);
}

static void
tsrv_stop(struct tsrv *s)
{
	ev_io_stop(loop, &s->w);
	wolfSSL_free(s->ssl);
	wolfSSL_CTX_free(s->ctx);
	close(s->fd);
}

struct tclient {
	struct rec r;
	struct tsrv s;
	struct tls_ctx *ctx;
};

static void
tclient_start(struct tclient *t, struct tls_ctx *ctx, const char *name,
    bool tls12, const char *server_ciphers, size_t inmax)
{
	int sv[2];

	rec_init(&t->r);
	t->ctx = ctx;
	cr_assert_not_null(ctx);
	pair(sv);
	tsrv_start(&t->s, sv[1], tls12, server_ciphers);
	t->r.c = conn_new(loop, sv[0], inmax, 64 * 1024, rec_cb, &t->r);
	cr_assert_not_null(t->r.c);
	cr_assert_eq(conn_starttls(t->r.c, ctx, name), 0);
	cr_assert_eq(t->r.n[CONN_TLS_READY] + t->r.n[CONN_ERROR], 0);
	RUN_UNTIL(t->r.n[CONN_TLS_READY] + t->r.n[CONN_ERROR] > 0, 5);
}

static void
tclient_end(struct tclient *t)
{
	conn_free(t->r.c);
	reap_run();
	tsrv_stop(&t->s);
	tls_ctx_free(t->ctx);
}

static struct tls_ctx *
ctx_ca(const char *ca, int minv, const uint8_t *pin)
{
	char err[256] = "";
	struct tls_ctx *ctx = tls_ctx_new(true, ca, minv, pin, err, sizeof(err));

	cr_assert_not_null(ctx, "%s", err);
	return ctx;
}

TestSuite(tls, .init = tls_setup, .fini = tls_teardown, .timeout = 30);

Test(tls, handshake_verifies_name_and_ca)
{
	struct tclient t;

	tclient_start(&t, ctx_ca(cert1, 12, NULL), "localhost", false, NULL,
	    4096);
	cr_assert_eq(t.r.n[CONN_ERROR], 0, "%s", t.r.err);
	cr_assert_eq(t.r.n[CONN_TLS_READY], 1);
	cr_assert(conn_is_tls(t.r.c));
	cr_assert_str_eq(conn_tls_version(t.r.c), "TLSv1.3");
	cr_assert(tls_cipher_allowed(conn_tls_cipher(t.r.c)), "cipher %s",
	    conn_tls_cipher(t.r.c));
	RUN_UNTIL(t.r.len == 12, 5);
	cr_assert_eq(t.r.len, 12);
	cr_assert(memcmp(t.r.data, "220 tls ok\r\n", 12) == 0);
	cr_assert_eq(conn_write(t.r.c, "QUIT\r\n", 6), 0);
	RUN_UNTIL(t.s.rxlen == 6, 5);
	cr_assert_eq(t.s.rxlen, 6);
	cr_assert(memcmp(t.s.rx, "QUIT\r\n", 6) == 0);
	cr_assert_eq(t.r.n[CONN_ERROR], 0, "%s", t.r.err);
	tclient_end(&t);
}

Test(tls, tls12_server_negotiates_allowed_suite)
{
	struct tclient t;

	tclient_start(&t, ctx_ca(cert1, 12, NULL), "localhost", true, NULL,
	    4096);
	cr_assert_eq(t.r.n[CONN_TLS_READY], 1, "%s", t.r.err);
	cr_assert_str_eq(conn_tls_version(t.r.c), "TLSv1.2");
	cr_assert(tls_cipher_allowed(conn_tls_cipher(t.r.c)), "cipher %s",
	    conn_tls_cipher(t.r.c));
	cr_assert(strncmp(conn_tls_cipher(t.r.c), "ECDHE-", 6) == 0);
	tclient_end(&t);
}

Test(tls, min_version_13_refuses_tls12_server)
{
	struct tclient t;

	tclient_start(&t, ctx_ca(cert1, 13, NULL), "localhost", true, NULL,
	    4096);
	cr_assert_eq(t.r.n[CONN_TLS_READY], 0);
	cr_assert_eq(t.r.n[CONN_ERROR], 1);
	cr_assert(strstr(t.r.err, "TLS handshake failed") != NULL, "%s",
	    t.r.err);
	tclient_end(&t);
}

Test(tls, server_with_only_weak_suites_is_refused)
{
	/* CBC/SHA1, static RSA and (when compiled in) 3DES, RC4, NULL. */
	static const char *weak[] = {
		"ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA",
		"ECDHE-ECDSA-DES-CBC3-SHA", "ECDHE-ECDSA-RC4-SHA",
		"ECDHE-ECDSA-NULL-SHA", "ECDHE-ECDSA-AES128-SHA256",
		"ADH-AES128-SHA", "AES128-GCM-SHA256",
	};
	int tried = 0;

	for (size_t i = 0; i < sizeof(weak) / sizeof(weak[0]); i++) {
		struct tclient t;
		WOLFSSL_CTX *probe = wolfSSL_CTX_new(wolfTLSv1_2_server_method());
		bool usable = wolfSSL_CTX_set_cipher_list(probe, weak[i]) ==
		    WOLFSSL_SUCCESS;

		wolfSSL_CTX_free(probe);
		if (!usable)
			continue;	/* not compiled into this wolfSSL */
		tried++;
		tclient_start(&t, ctx_ca(cert1, 12, NULL), "localhost", true,
		    weak[i], 4096);
		cr_assert_eq(t.r.n[CONN_TLS_READY], 0, "negotiated %s",
		    weak[i]);
		cr_assert_eq(t.r.n[CONN_ERROR], 1, "%s", weak[i]);
		tclient_end(&t);
	}
	cr_assert_geq(tried, 2);
}

static unsigned
be16(const unsigned char *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

/*
 * Capture the ClientHello conn sends and check every offered cipher suite
 * and key-exchange group against the policy (IANA code points).
 */
Test(tls, client_hello_offers_only_allowed_suites_and_groups)
{
	static const unsigned allowed_suites[] = {
		0x1301, 0x1302, 0x1303,		/* TLS 1.3 AEAD */
		0xC02B, 0xC02F, 0xC02C, 0xC030,	/* ECDHE AES-GCM */
		0xCCA9, 0xCCA8,			/* ECDHE ChaCha20-Poly1305 */
		0x00FF,				/* renegotiation SCSV */
	};
	static const unsigned allowed_groups[] = { 0x001D, 0x0017, 0x0018 };
	struct tls_ctx *ctx = ctx_ca(cert1, 12, NULL);
	unsigned char hello[4096];
	size_t have = 0, off, end, ncs = 0, ngroups = 0;
	struct rec rb;
	int sv[2];
	bool saw_groups = false;

	rec_init(&rb);
	pair(sv);
	rb.c = conn_new(loop, sv[1], 1024, 1024, rec_cb, &rb);
	cr_assert_eq(conn_starttls(rb.c, ctx, "localhost"), 0);
	cr_assert_eq(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
	for (int i = 0; i < 100 && (have < 5 || have < 5 + be16(hello + 3));
	    i++) {
		ssize_t n;

		run_for(0.01);
		n = read(sv[0], hello + have, sizeof(hello) - have);
		if (n > 0)
			have += (size_t)n;
	}
	cr_assert_geq(have, 5);
	cr_assert_eq(hello[0], 0x16, "not a handshake record");
	cr_assert_eq(have, 5 + be16(hello + 3));
	cr_assert_eq(hello[5], 0x01, "not a ClientHello");
	off = 5 + 4 + 2 + 32;			/* headers, version, random */
	off += 1 + hello[off];			/* session id */
	end = off + 2 + be16(hello + off);	/* cipher suites */
	for (off += 2; off < end; off += 2, ncs++) {
		unsigned cs = be16(hello + off);
		bool ok = false;

		for (size_t k = 0; k < sizeof(allowed_suites) /
		    sizeof(allowed_suites[0]); k++)
			ok |= cs == allowed_suites[k];
		cr_assert(ok, "ClientHello offers suite 0x%04X", cs);
	}
	cr_assert_geq(ncs, 9);
	off = end;
	off += 1 + hello[off];			/* compression methods */
	end = off + 2 + be16(hello + off);	/* extensions */
	cr_assert_eq(end, have);
	for (off += 2; off < end; ) {
		unsigned type = be16(hello + off);
		size_t len = be16(hello + off + 2);

		if (type == 0x000A) {		/* supported_groups */
			size_t gl = be16(hello + off + 4);

			saw_groups = true;
			for (size_t g = 0; g < gl; g += 2, ngroups++) {
				unsigned grp = be16(hello + off + 6 + g);
				bool ok = false;

				for (size_t k = 0; k < 3; k++)
					ok |= grp == allowed_groups[k];
				cr_assert(ok, "ClientHello offers group 0x%04X",
				    grp);
			}
		}
		off += 4 + len;
	}
	cr_assert(saw_groups);
	cr_assert_eq(ngroups, 3);
	conn_free(rb.c);
	reap_run();
	close(sv[0]);
	tls_ctx_free(ctx);
	cr_assert(tls_cipher_allowed("TLS13-AES128-GCM-SHA256"));
	cr_assert_not(tls_cipher_allowed("ECDHE-RSA-DES-CBC3-SHA"));
	cr_assert_not(tls_cipher_allowed("TLS13"));
	cr_assert_not(tls_cipher_allowed(""));
}

Test(tls, wrong_name_fails)
{
	struct tclient t;

	tclient_start(&t, ctx_ca(cert1, 12, NULL), "smtp.example.net", false,
	    NULL, 4096);
	cr_assert_eq(t.r.n[CONN_TLS_READY], 0);
	cr_assert_eq(t.r.n[CONN_ERROR], 1);
	cr_assert_str_eq(t.r.err, "TLS handshake failed: certificate name "
	    "mismatch (expected smtp.example.net)");
	tclient_end(&t);
}

Test(tls, unknown_ca_fails)
{
	struct tclient t;

	tclient_start(&t, ctx_ca(cert2, 12, NULL), "localhost", false, NULL,
	    4096);
	cr_assert_eq(t.r.n[CONN_TLS_READY], 0);
	cr_assert_eq(t.r.n[CONN_ERROR], 1);
	cr_assert_str_eq(t.r.err, "TLS handshake failed: certificate not "
	    "trusted");
	tclient_end(&t);
}

Test(tls, system_store_does_not_trust_self_signed)
{
	struct tclient t;
	char err[256] = "";
	struct tls_ctx *ctx = tls_ctx_new(true, NULL, 12, NULL, err,
	    sizeof(err));

	cr_assert_not_null(ctx, "%s", err);
	tclient_start(&t, ctx, "localhost", false, NULL, 4096);
	cr_assert_eq(t.r.n[CONN_TLS_READY], 0);
	cr_assert_str_eq(t.r.err, "TLS handshake failed: certificate not "
	    "trusted");
	tclient_end(&t);
}

static void
cert_sha256(const char *path, uint8_t out[32])
{
	WOLFSSL_X509 *x = wolfSSL_X509_load_certificate_file(path,
	    WOLFSSL_FILETYPE_PEM);
	const unsigned char *der;
	int len = 0;

	cr_assert_not_null(x);
	der = wolfSSL_X509_get_der(x, &len);
	cr_assert_not_null(der);
	cr_assert_eq(wc_Sha256Hash(der, (word32)len, out), 0);
	wolfSSL_X509_free(x);
}

Test(tls, pin_match_and_mismatch)
{
	struct tclient t;
	uint8_t pin[32];
	char err[256];

	/* Pin only (verification off): the right pin passes. */
	cert_sha256(cert1, pin);
	tclient_start(&t, tls_ctx_new(false, NULL, 12, pin, err, sizeof(err)),
	    "localhost", false, NULL, 4096);
	cr_assert_eq(t.r.n[CONN_TLS_READY], 1, "%s", t.r.err);
	tclient_end(&t);

	/* Verified chain and name, but the pin is of another cert. */
	cert_sha256(cert2, pin);
	tclient_start(&t, ctx_ca(cert1, 12, pin), "localhost", false, NULL,
	    4096);
	cr_assert_eq(t.r.n[CONN_TLS_READY], 0);
	cr_assert_eq(t.r.n[CONN_ERROR], 1);
	cr_assert_str_eq(t.r.err, "peer certificate does not match the pinned "
	    "fingerprint");
	tclient_end(&t);
}

static void
check_bulk(const struct rec *r, size_t skip, size_t n)
{
	for (size_t i = 0; i < n; i++)
		cr_assert_eq((unsigned char)r->data[skip + i],
		    (unsigned char)(i % 251), "byte %zu", i);
}

Test(tls, bulk_read_through_small_buffer_drains_wolfssl_pending)
{
	struct tclient t;
	const size_t bulk = 200000;

	/* inmax 1000 < a 16K record: wolfSSL holds decrypted bytes the
	 * socket will never signal again. */
	rec_init(&t.r);
	tclient_start(&t, ctx_ca(cert1, 12, NULL), "localhost", false, NULL,
	    1000);
	cr_assert_eq(t.r.n[CONN_TLS_READY], 1, "%s", t.r.err);
	t.s.bulk = bulk;
	tsrv_drive(&t.s);
	RUN_UNTIL(t.r.len == 12 + bulk, 10);
	cr_assert_eq(t.r.len, 12 + bulk);
	check_bulk(&t.r, 12, bulk);
	tclient_end(&t);
}

Test(tls, bulk_read_with_pause_resume)
{
	struct tclient t;
	const size_t bulk = 100000;
	int rounds = 0;

	tclient_start(&t, ctx_ca(cert1, 12, NULL), "localhost", false, NULL,
	    1000);
	cr_assert_eq(t.r.n[CONN_TLS_READY], 1, "%s", t.r.err);
	t.r.pause_on_read = true;
	t.s.bulk = bulk;
	tsrv_drive(&t.s);
	while (t.r.len < 12 + bulk && rounds++ < 10000) {
		int before = t.r.n[CONN_READ];

		RUN_UNTIL(t.r.n[CONN_READ] > before, 5);
		cr_assert_gt(t.r.n[CONN_READ], before, "stalled at %zu",
		    t.r.len);
		conn_resume(t.r.c);
	}
	cr_assert_eq(t.r.len, 12 + bulk);
	check_bulk(&t.r, 12, bulk);
	tclient_end(&t);
}

static void
refill_cb(struct conn *c, enum conn_event ev, void *arg)
{
	struct rec *r = arg;
	static char chunk[60000];
	static size_t sent;

	rec_cb(c, ev, arg);
	if (ev == CONN_TLS_READY || ev == CONN_DRAIN) {
		while (sent < 600000 && conn_out_room(c) > 0) {
			size_t n = conn_out_room(c);

			if (n > sizeof(chunk))
				n = sizeof(chunk);
			if (n > 600000 - sent)
				n = 600000 - sent;
			for (size_t i = 0; i < n; i++)
				chunk[i] = (char)((sent + i) % 251);
			cr_assert_eq(conn_write(c, chunk, n), 0);
			sent += n;
		}
		r->len = sent;	/* reuse: bytes queued so far */
	}
}

Test(tls, bulk_write_against_slow_reader)
{
	struct tclient t;
	const size_t total = 600000;

	rec_init(&t.r);
	t.r.consume = true;
	{
		int sv[2];

		t.ctx = ctx_ca(cert1, 12, NULL);
		int small = 4096;

		pair(sv);
		cr_assert_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small,
		    sizeof(small)), 0);
		cr_assert_eq(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small,
		    sizeof(small)), 0);
		tsrv_start(&t.s, sv[1], false, NULL);
		t.s.greeting = NULL;
		t.s.read_slowly = true;
		t.r.c = conn_new(loop, sv[0], 4096, 64 * 1024, refill_cb, &t.r);
		cr_assert_eq(conn_starttls(t.r.c, t.ctx, "localhost"), 0);
	}
	RUN_UNTIL(t.r.n[CONN_TLS_READY] + t.r.n[CONN_ERROR] > 0, 5);
	cr_assert_eq(t.r.n[CONN_TLS_READY], 1, "%s", t.r.err);
	/* The socket fills (WANT_WRITE) while the server does not read. */
	run_for(0.2);
	cr_assert_gt(conn_out_pending(t.r.c), 0);
	t.s.read_slowly = false;
	tsrv_drive(&t.s);
	RUN_UNTIL(t.s.rxlen == total, 10);
	cr_assert_eq(t.s.rxlen, total);
	for (size_t i = 0; i < total; i++)
		cr_assert_eq((unsigned char)t.s.rx[i], (unsigned char)(i % 251),
		    "byte %zu", i);
	cr_assert_eq(t.r.n[CONN_ERROR], 0, "%s", t.r.err);
	tclient_end(&t);
}

Test(tls, starttls_refused_with_plaintext_buffered)
{
	struct rec rb;
	int sv[2];
	size_t len;
	struct tls_ctx *ctx = ctx_ca(cert1, 12, NULL);

	rec_init(&rb);
	rb.consume = false;
	pair(sv);
	rb.c = conn_new(loop, sv[1], 1024, 1024, rec_cb, &rb);
	/* Reply and injected command arrive together. */
	cr_assert_eq(write(sv[0], "220 go ahead\r\n250 injected\r\n", 28), 28);
	RUN_UNTIL(rb.n[CONN_READ] >= 1 && conn_in(rb.c, &len) && len == 28, 5);
	conn_consume(rb.c, 14);	/* the 220 line only */
	errno = 0;
	cr_assert_eq(conn_starttls(rb.c, ctx, "localhost"), -1);
	cr_assert(!conn_is_tls(rb.c));
	conn_consume(rb.c, 14);
	/* Unsent plaintext output is refused as well. */
	cr_assert_eq(conn_write(rb.c, "x", 1), 0);
	cr_assert_eq(conn_starttls(rb.c, ctx, "localhost"), -1);
	RUN_UNTIL(conn_out_pending(rb.c) == 0, 5);
	cr_assert_eq(conn_starttls(rb.c, ctx, "localhost"), 0);
	conn_free(rb.c);
	reap_run();
	close(sv[0]);
	tls_ctx_free(ctx);
}

Test(tls, peer_not_speaking_tls)
{
	struct rec rb;
	int sv[2];
	struct tls_ctx *ctx = ctx_ca(cert1, 12, NULL);

	rec_init(&rb);
	pair(sv);
	rb.c = conn_new(loop, sv[1], 1024, 1024, rec_cb, &rb);
	cr_assert_eq(conn_starttls(rb.c, ctx, "localhost"), 0);
	cr_assert_eq(write(sv[0], "500 what?\r\n", 11), 11);
	close(sv[0]);
	RUN_UNTIL(rb.n[CONN_ERROR] == 1, 5);
	cr_assert_eq(rb.n[CONN_ERROR], 1);
	cr_assert_eq(rb.n[CONN_TLS_READY], 0);
	cr_assert(strncmp(rb.err, "TLS handshake failed", 20) == 0, "%s",
	    rb.err);
	conn_free(rb.c);
	reap_run();
	tls_ctx_free(ctx);
}
