/*
 * loadgen.c - bench-loadgen: the benchmark's SMTP load generator (libev +
 * wolfSSL). N connections at once, M messages of S bytes in all, K
 * messages per session (K = 1: one session per message, as a legacy
 * application does); every command waits for its reply (no pipelining).
 *
 *   bench-loadgen --port P [--host 127.0.0.1] [--mode plain|starttls|implicit]
 *       [--user U --password P] [--ca PEM] [--server-name localhost]
 *       [--ciphers LIST]   (default: relay25's list)
 *       [--conns N] [--msgs M] [--size S] [--per-session K]
 *       [--hold ehlo|data] [--hold-max SECS] [--connect-batch B]
 *       [--timeout SECS] [--max-time SECS]
 *
 * Latency of a message: from the moment the application starts on it (the
 * connect() of a new session, or the end of the previous message in the
 * same session) to the 250 reply to its end of data.
 *
 * --hold ehlo: N sessions greet (and STARTTLS/AUTH when asked) and then
 * stay idle; --hold data: N sessions send MAIL, RCPT, DATA and half of
 * the message, then wait. When every session is held (or failed) the line
 * "HELD n" is printed on stdout; SIGUSR1 (or --hold-max seconds) lets them
 * go on: idle sessions QUIT, the others finish their message.
 *
 * At the end one line on stdout:
 *   RESULT {"ok":..,"err":..,"elapsed":..,"mps":..,"p50_ms":..,"p90_ms":..,
 *           "p99_ms":..,"mean_ms":..,"mib_s":..,"errors":[..]}
 * Every run is bounded: --max-time (default 300 s) ends it. Loopback only.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IN_MAX 8192
#define CHUNK  16384
#define MAX_ERRS_KEPT 5

enum mode { M_PLAIN, M_STARTTLS, M_IMPLICIT };
enum hold { H_NONE, H_EHLO, H_DATA };
enum st { ST_IDLE, ST_CONNECT, ST_HANDSHAKE, ST_GREETING, ST_EHLO,
	ST_STARTTLS, ST_AUTH, ST_MAIL, ST_RCPT, ST_DATA, ST_BODY, ST_HELD,
	ST_QUIT };

struct cl {
	ev_io io;
	ev_timer tmo;
	int fd;
	enum st st;
	WOLFSSL *ssl;
	bool tls, authed, in_setup, has_msg, counted_hold;
	char in[IN_MAX];
	size_t inlen;
	const char *out;        /* what is being sent */
	size_t outlen, outoff;
	size_t body_stop;       /* --hold data: send the body up to here first */
	char cmd[600];
	int msgs_in_session;
	unsigned gen;           /* changes whenever a session ends or starts */
	double t0;              /* latency start of the current message */
};

static struct {
	const char *host, *user, *pass, *ca, *sni, *ciphers;
	int port;
	enum mode mode;
	enum hold hold;
	int conns, per_session, batch;
	long msgs;
	size_t size;
	double timeout, max_time, hold_max;
} o = { "127.0.0.1", NULL, NULL, NULL, "localhost", NULL, 0, M_PLAIN, H_NONE,
	1, 1, 1000, 1, 1024, 60.0, 300.0, 120.0 };

static const char cipher_list[] =
    "TLS13-AES128-GCM-SHA256:TLS13-CHACHA20-POLY1305-SHA256:"
    "TLS13-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:"
    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:"
    "ECDHE-RSA-CHACHA20-POLY1305";
static int groups[] = { WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1,
	WOLFSSL_ECC_SECP384R1 };

static struct ev_loop *loop;
static WOLFSSL_CTX *cctx;
static struct cl *cls;
static struct sockaddr_storage dst;
static socklen_t dstlen;
static char *body;
static size_t bodylen;
static char auth_cmd[1200];
static long claimed, ok, err;
static long sessions_started;
static int started, in_setup, live, held, dead_in_hold;
static bool released, holding_announced, finished;
static double *lat;
static long nlat;
static double t_begin, t_end;
static char errs[MAX_ERRS_KEPT][200];
static int nerrs;
static ev_timer max_timer, hold_timer;
static ev_signal usr1;

static void cl_start(struct cl *);
static void cl_fail(struct cl *, const char *, ...)
    __attribute__((format(printf, 2, 3)));
static void cl_send(struct cl *);
static void check_hold(void);
static void maybe_finish(void);

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("bench-loadgen: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

static void
b64enc(const unsigned char *in, size_t n, char *out)
{
	static const char t[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t i;

	for (i = 0; i + 2 < n; i += 3) {
		*out++ = t[in[i] >> 2];
		*out++ = t[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
		*out++ = t[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
		*out++ = t[in[i + 2] & 63];
	}
	if (n - i == 1) {
		*out++ = t[in[i] >> 2];
		*out++ = t[(in[i] & 3) << 4];
		*out++ = '=';
		*out++ = '=';
	} else if (n - i == 2) {
		*out++ = t[in[i] >> 2];
		*out++ = t[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
		*out++ = t[(in[i + 1] & 15) << 2];
		*out++ = '=';
	}
	*out = '\0';
}

static void
make_body(void)
{
	size_t cap = o.size + 256, n;
	unsigned line = 0;

	if ((body = malloc(cap + 16)) == NULL)
		die("out of memory");
	n = (size_t)snprintf(body, cap,
	    "From: <bench@example.test>\r\nTo: <sink@example.test>\r\n"
	    "Subject: bench %zu bytes\r\nMessage-ID: <bench@example.test>\r\n"
	    "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n", o.size);
	while (n + 80 <= o.size) {
		n += (size_t)snprintf(body + n, cap - n, "%08u %s\r\n", line++,
		    "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123");
	}
	while (n + 2 < o.size)
		body[n++] = 'x';
	memcpy(body + n, "\r\n.\r\n", 5);
	bodylen = n + 5;
}

static void
note_err(const char *msg)
{
	err++;
	if (nerrs < MAX_ERRS_KEPT) {
		for (int i = 0; i < nerrs; i++)
			if (strcmp(errs[i], msg) == 0)
				return;
		snprintf(errs[nerrs++], sizeof(errs[0]), "%s", msg);
	}
}

static void
set_events(struct cl *c, int ev)
{
	if ((c->io.events & (EV_READ | EV_WRITE)) == ev && ev_is_active(&c->io))
		return;
	ev_io_stop(loop, &c->io);
	ev_io_set(&c->io, c->fd, ev);
	ev_io_start(loop, &c->io);
}

static void
leave_setup(struct cl *c)
{
	if (c->in_setup) {
		c->in_setup = false;
		in_setup--;
	}
}

static void
start_more(void)
{
	while (!finished && started < o.conns && in_setup < o.batch) {
		struct cl *c = &cls[started++];

		cl_start(c);
	}
}

/* close the connection; start a new session in the same slot if needed */
static void
cl_close(struct cl *c)
{
	ev_io_stop(loop, &c->io);
	ev_timer_stop(loop, &c->tmo);
	if (c->ssl != NULL) {
		wolfSSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->gen++;
	leave_setup(c);
	if (c->st == ST_HELD)
		held--;
	c->st = ST_IDLE;
	live--;
	if (o.hold != H_NONE) {
		if (!c->counted_hold) {
			c->counted_hold = true;
			dead_in_hold++;
		}
		check_hold();
		start_more();
		maybe_finish();
		return;
	}
	if (!finished && claimed < o.msgs)
		cl_start(c);
	maybe_finish();
}

static void
cl_fail(struct cl *c, const char *fmt, ...)
{
	char msg[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (c->has_msg || o.hold == H_EHLO)
		note_err(msg);
	c->has_msg = false;
	cl_close(c);
}

static void
send_cmd(struct cl *c, enum st st, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->cmd, sizeof(c->cmd), fmt, ap);
	va_end(ap);
	c->st = st;
	c->out = c->cmd;
	c->outlen = strlen(c->cmd);
	c->outoff = 0;
	cl_send(c);
}

static void
send_body(struct cl *c)
{
	c->st = ST_BODY;
	c->out = body;
	c->outlen = o.hold == H_DATA && !released ? bodylen / 2 : bodylen;
	c->body_stop = c->outlen;
	c->outoff = 0;
	cl_send(c);
}

static void
next_message(struct cl *c)
{
	if (o.hold == H_EHLO) {
		leave_setup(c);
		c->st = ST_HELD;
		held++;
		set_events(c, EV_READ);
		check_hold();
		start_more();
		return;
	}
	if (!c->has_msg) {
		if (c->msgs_in_session >= o.per_session || claimed >= o.msgs ||
		    finished) {
			send_cmd(c, ST_QUIT, "QUIT\r\n");
			return;
		}
		claimed++;
		c->has_msg = true;
		c->t0 = now();
	}
	send_cmd(c, ST_MAIL, "MAIL FROM:<bench@example.test>\r\n");
}

static bool
start_tls(struct cl *c)
{
	if ((c->ssl = wolfSSL_new(cctx)) == NULL ||
	    wolfSSL_set_fd(c->ssl, c->fd) != WOLFSSL_SUCCESS ||
	    wolfSSL_UseSNI(c->ssl, WOLFSSL_SNI_HOST_NAME, o.sni,
	    (unsigned short)strlen(o.sni)) != WOLFSSL_SUCCESS ||
	    wolfSSL_check_domain_name(c->ssl, o.sni) != WOLFSSL_SUCCESS) {
		cl_fail(c, "cannot set up TLS");
		return false;
	}
	c->st = ST_HANDSHAKE;
	c->inlen = 0;
	return true;
}

static void
handshake(struct cl *c)
{
	int r = wolfSSL_connect(c->ssl);

	if (r == WOLFSSL_SUCCESS) {
		c->tls = true;
		if (o.mode == M_IMPLICIT) {
			c->st = ST_GREETING;
			set_events(c, EV_READ);
		} else
			send_cmd(c, ST_EHLO, "EHLO loadgen.test\r\n");
		return;
	}
	r = wolfSSL_get_error(c->ssl, r);
	if (r == WOLFSSL_ERROR_WANT_READ)
		set_events(c, EV_READ);
	else if (r == WOLFSSL_ERROR_WANT_WRITE)
		set_events(c, EV_READ | EV_WRITE);
	else {
		char buf[80];

		cl_fail(c, "TLS handshake failed: %s",
		    wolfSSL_ERR_error_string((unsigned long)r, buf));
	}
}

static void
on_reply(struct cl *c, int code, const char *text)
{
	switch (c->st) {
	case ST_GREETING:
		if (code != 220)
			goto bad;
		send_cmd(c, ST_EHLO, "EHLO loadgen.test\r\n");
		return;
	case ST_EHLO:
		if (code != 250)
			goto bad;
		if (o.mode == M_STARTTLS && !c->tls) {
			send_cmd(c, ST_STARTTLS, "STARTTLS\r\n");
			return;
		}
		if (o.user != NULL && !c->authed) {
			send_cmd(c, ST_AUTH, "%s", auth_cmd);
			return;
		}
		next_message(c);
		return;
	case ST_STARTTLS:
		if (code != 220)
			goto bad;
		if (start_tls(c))
			handshake(c);
		return;
	case ST_AUTH:
		if (code != 235)
			goto bad;
		c->authed = true;
		next_message(c);
		return;
	case ST_MAIL:
		if (code != 250)
			goto bad;
		leave_setup(c);
		send_cmd(c, ST_RCPT, "RCPT TO:<sink@example.test>\r\n");
		return;
	case ST_RCPT:
		if (code != 250)
			goto bad;
		send_cmd(c, ST_DATA, "DATA\r\n");
		return;
	case ST_DATA:
		if (code != 354)
			goto bad;
		send_body(c);
		return;
	case ST_BODY:
		if (code != 250)
			goto bad;
		{
			double t = now();

			lat[nlat++] = t - c->t0;
			ok++;
			c->has_msg = false;
			c->msgs_in_session++;
			if (o.per_session > 1) {
				/* the next message starts now */
				if (c->msgs_in_session < o.per_session &&
				    claimed < o.msgs && !finished) {
					claimed++;
					c->has_msg = true;
					c->t0 = t;
				}
			}
		}
		next_message(c);
		return;
	case ST_QUIT:
		cl_close(c);
		return;
	default:
		goto bad;
	}
bad:
	cl_fail(c, "unexpected reply in state %d: %d %s", (int)c->st, code,
	    text);
}

/* parse complete replies in c->in */
static void
parse(struct cl *c)
{
	size_t pos = 0;

	for (;;) {
		char *start = c->in + pos;
		char *nl = memchr(start, '\n', c->inlen - pos);
		size_t linelen;

		if (nl == NULL)
			break;
		linelen = (size_t)(nl - start) + 1;
		if (linelen >= 4 && start[3] == '-') {
			pos += linelen;
			continue;
		}
		/* last line of a reply */
		{
			char text[160];
			int code = atoi(start);
			size_t tl = linelen > 6 ? linelen - 6 : 0;

			if (tl >= sizeof(text))
				tl = sizeof(text) - 1;
			memcpy(text, start + (linelen > 4 ? 4 : linelen - 1), tl);
			text[tl] = '\0';
			pos += linelen;
			memmove(c->in, c->in + pos, c->inlen - pos);
			c->inlen -= pos;
			pos = 0;
			if (c->st == ST_HELD) {
				cl_fail(c, "reply while idle: %d %s", code, text);
				return;
			}
			if (c->st == ST_BODY && c->outoff < c->outlen) {
				cl_fail(c, "reply during the body: %d %s", code,
				    text);
				return;
			}
			{
				enum st before = c->st;
				unsigned gen = c->gen;

				on_reply(c, code, text);
				/* stop if the session ended or the reply was
				 * the STARTTLS 220 (the rest is TLS) */
				if (c->gen != gen || c->st == ST_IDLE ||
				    before == ST_STARTTLS || c->inlen == 0)
					return;
			}
		}
	}
	if (pos > 0) {
		memmove(c->in, c->in + pos, c->inlen - pos);
		c->inlen -= pos;
	}
	if (c->inlen == IN_MAX)
		cl_fail(c, "reply too long");
}

static void
cl_send(struct cl *c)
{
	while (c->outoff < c->outlen) {
		size_t n = c->outlen - c->outoff;
		ssize_t w;

		if (n > CHUNK)
			n = CHUNK;
		if (c->tls) {
			int r = wolfSSL_write(c->ssl, c->out + c->outoff, (int)n);

			if (r <= 0) {
				int e = wolfSSL_get_error(c->ssl, r);

				if (e == WOLFSSL_ERROR_WANT_WRITE ||
				    e == WOLFSSL_ERROR_WANT_READ) {
					set_events(c, EV_READ | EV_WRITE);
					return;
				}
				cl_fail(c, "TLS write failed (%d)", e);
				return;
			}
			w = r;
		} else {
			w = send(c->fd, c->out + c->outoff, n, MSG_NOSIGNAL);
			if (w < 0) {
				if (errno == EAGAIN || errno == EINTR) {
					set_events(c, EV_READ | EV_WRITE);
					return;
				}
				cl_fail(c, "send: %s", strerror(errno));
				return;
			}
		}
		c->outoff += (size_t)w;
	}
	if (c->st == ST_BODY && o.hold == H_DATA && c->outlen < bodylen) {
		/* half of the body is out: hold here */
		c->st = ST_HELD;
		leave_setup(c);
		held++;
		set_events(c, EV_READ);
		check_hold();
		start_more();
		return;
	}
	set_events(c, EV_READ);
}

static void
cl_read(struct cl *c)
{
	for (int rounds = 0; rounds < 16; rounds++) {
		size_t room = IN_MAX - c->inlen;
		ssize_t r;

		if (c->tls) {
			int n = wolfSSL_read(c->ssl, c->in + c->inlen, (int)room);

			if (n <= 0) {
				int e = wolfSSL_get_error(c->ssl, n);

				if (e == WOLFSSL_ERROR_WANT_READ)
					return;
				if (e == WOLFSSL_ERROR_WANT_WRITE) {
					set_events(c, EV_READ | EV_WRITE);
					return;
				}
				cl_fail(c, "connection closed (TLS %d) in state %d",
				    e, (int)c->st);
				return;
			}
			r = n;
		} else {
			r = recv(c->fd, c->in + c->inlen, room, 0);
			if (r == 0) {
				cl_fail(c, "connection closed in state %d",
				    (int)c->st);
				return;
			}
			if (r < 0) {
				if (errno == EAGAIN || errno == EINTR)
					return;
				cl_fail(c, "recv: %s", strerror(errno));
				return;
			}
		}
		c->inlen += (size_t)r;
		{
			unsigned gen = c->gen;
			enum st before = c->st;

			parse(c);
			if (c->gen != gen || c->st == ST_IDLE ||
			    c->st == ST_HANDSHAKE || before == ST_HANDSHAKE)
				return;
		}
	}
}

static void
io_cb(struct ev_loop *l, ev_io *w, int revents)
{
	struct cl *c = w->data;

	(void)l;
	if (c->st != ST_HELD)
		ev_timer_again(loop, &c->tmo);
	if (c->st == ST_CONNECT) {
		int e = 0;
		socklen_t el = sizeof(e);

		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &el);
		if (e != 0) {
			cl_fail(c, "connect: %s", strerror(e));
			return;
		}
		if (o.mode == M_IMPLICIT) {
			if (start_tls(c))
				handshake(c);
		} else {
			c->st = ST_GREETING;
			set_events(c, EV_READ);
		}
		return;
	}
	if (c->st == ST_HANDSHAKE) {
		handshake(c);
		return;
	}
	if (revents & EV_WRITE) {
		unsigned gen = c->gen;

		cl_send(c);
		if (c->gen != gen || c->st == ST_IDLE)
			return;
	}
	if (revents & EV_READ)
		cl_read(c);
}

static void
tmo_cb(struct ev_loop *l, ev_timer *w, int revents)
{
	struct cl *c = w->data;

	(void)l;
	(void)revents;
	cl_fail(c, "timeout in state %d", (int)c->st);
}

static void
cl_start(struct cl *c)
{
	int fd, one = 1;

	if (o.hold == H_NONE || o.hold == H_DATA) {
		if (claimed >= o.msgs)
			return;
		claimed++;
		c->has_msg = true;
	}
	c->t0 = now();
	c->gen++;
	c->tls = c->authed = false;
	c->inlen = 0;
	c->msgs_in_session = 0;
	c->counted_hold = false;
	live++;
	sessions_started++;
	c->in_setup = true;
	in_setup++;
	fd = socket(dst.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	c->fd = fd;
	c->st = ST_CONNECT;
	ev_io_init(&c->io, io_cb, fd, EV_WRITE);
	c->io.data = c;
	ev_init(&c->tmo, tmo_cb);
	c->tmo.repeat = o.timeout;
	c->tmo.data = c;
	if (fd < 0) {
		c->fd = -1;
		cl_fail(c, "socket: %s", strerror(errno));
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	ev_timer_again(loop, &c->tmo);
	if (connect(fd, (struct sockaddr *)&dst, dstlen) < 0 &&
	    errno != EINPROGRESS) {
		cl_fail(c, "connect: %s", strerror(errno));
		return;
	}
	ev_io_start(loop, &c->io);
}

static void
release(void)
{
	if (released)
		return;
	released = true;
	ev_timer_stop(loop, &hold_timer);
	ev_signal_stop(loop, &usr1);
	for (int i = 0; i < o.conns; i++) {
		struct cl *c = &cls[i];

		if (c->st != ST_HELD)
			continue;
		held--;
		ev_timer_again(loop, &c->tmo);
		if (o.hold == H_EHLO) {
			send_cmd(c, ST_QUIT, "QUIT\r\n");
		} else {
			c->st = ST_BODY;
			c->outlen = bodylen;
			cl_send(c);
		}
	}
}

static void
hold_cb(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)l;
	(void)w;
	(void)revents;
	release();
}

static void
usr1_cb(struct ev_loop *l, ev_signal *w, int revents)
{
	(void)l;
	(void)w;
	(void)revents;
	release();
}

static void
check_hold(void)
{
	if (holding_announced || o.hold == H_NONE)
		return;
	if (held + dead_in_hold < o.conns)
		return;
	holding_announced = true;
	for (int i = 0; i < o.conns; i++)   /* no timeouts while held */
		if (cls[i].st == ST_HELD)
			ev_timer_stop(loop, &cls[i].tmo);
	printf("HELD %d\n", held);
	fflush(stdout);
	ev_signal_init(&usr1, usr1_cb, SIGUSR1);
	ev_signal_start(loop, &usr1);
	ev_timer_init(&hold_timer, hold_cb, o.hold_max, 0.);
	ev_timer_start(loop, &hold_timer);
}

static void
maybe_finish(void)
{
	if (live > 0 || finished)
		return;
	if (o.hold != H_NONE && started < o.conns)
		return;
	if (o.hold == H_NONE && claimed < o.msgs)
		return;
	finished = true;
	t_end = now();
	ev_break(loop, EVBREAK_ALL);
}

static void
max_cb(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	if (!finished) {
		long left = o.msgs - ok - err;

		finished = true;
		t_end = now();
		if (o.hold == H_NONE && left > 0) {
			char m[100];

			snprintf(m, sizeof(m), "--max-time reached, %ld messages "
			    "not done", left);
			note_err(m);
			err += left - 1;
		}
	}
	ev_break(l, EVBREAK_ALL);
}

static int
cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double
pct(double p)
{
	long i;

	if (nlat == 0)
		return 0;
	i = (long)(p * (double)(nlat - 1) + 0.5);
	return lat[i] * 1000.0;
}

static void
usage(void)
{
	fputs("usage: bench-loadgen --port P [--host 127.0.0.1] "
	    "[--mode plain|starttls|implicit]\n"
	    "  [--user U --password P] [--ca PEM] [--server-name NAME] "
	    "[--ciphers LIST]\n"
	    "  [--conns N] [--msgs M] [--size BYTES] [--per-session K]\n"
	    "  [--hold ehlo|data] [--hold-max SECS] [--connect-batch B]\n"
	    "  [--timeout SECS] [--max-time SECS]\n", stderr);
	exit(2);
}

int
main(int argc, char **argv)
{
	struct rlimit rl;
	double sum = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (v == NULL)
			usage();
		if (strcmp(a, "--host") == 0)
			o.host = v;
		else if (strcmp(a, "--port") == 0)
			o.port = atoi(v);
		else if (strcmp(a, "--mode") == 0) {
			if (strcmp(v, "plain") == 0)
				o.mode = M_PLAIN;
			else if (strcmp(v, "starttls") == 0)
				o.mode = M_STARTTLS;
			else if (strcmp(v, "implicit") == 0)
				o.mode = M_IMPLICIT;
			else
				usage();
		} else if (strcmp(a, "--user") == 0)
			o.user = v;
		else if (strcmp(a, "--password") == 0)
			o.pass = v;
		else if (strcmp(a, "--ca") == 0)
			o.ca = v;
		else if (strcmp(a, "--server-name") == 0)
			o.sni = v;
		else if (strcmp(a, "--ciphers") == 0)
			o.ciphers = v;
		else if (strcmp(a, "--conns") == 0)
			o.conns = atoi(v);
		else if (strcmp(a, "--msgs") == 0)
			o.msgs = atol(v);
		else if (strcmp(a, "--size") == 0)
			o.size = (size_t)atol(v);
		else if (strcmp(a, "--per-session") == 0)
			o.per_session = atoi(v);
		else if (strcmp(a, "--hold") == 0) {
			if (strcmp(v, "ehlo") == 0)
				o.hold = H_EHLO;
			else if (strcmp(v, "data") == 0)
				o.hold = H_DATA;
			else
				usage();
		} else if (strcmp(a, "--hold-max") == 0)
			o.hold_max = atof(v);
		else if (strcmp(a, "--connect-batch") == 0)
			o.batch = atoi(v);
		else if (strcmp(a, "--timeout") == 0)
			o.timeout = atof(v);
		else if (strcmp(a, "--max-time") == 0)
			o.max_time = atof(v);
		else
			usage();
		i++;
	}
	if (o.port <= 0 || o.conns < 1 || o.per_session < 1 || o.batch < 1 ||
	    o.size < 512 || (o.user == NULL) != (o.pass == NULL) ||
	    o.timeout <= 0 || o.max_time <= 0 || o.max_time > 3600)
		usage();
	if (o.hold != H_NONE)
		o.msgs = o.hold == H_DATA ? o.conns : 0;
	if (o.hold == H_NONE && o.msgs < 1)
		usage();
	if (o.hold == H_DATA)
		o.per_session = 1;
	if (o.hold == H_NONE && o.conns > o.msgs)
		o.conns = (int)o.msgs;

	memset(&dst, 0, sizeof(dst));
	if (strchr(o.host, ':') != NULL) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&dst;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)o.port);
		if (inet_pton(AF_INET6, o.host, &s6->sin6_addr) != 1 ||
		    !IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr))
			die("--host must be a loopback address");
		dstlen = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&dst;

		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)o.port);
		if (inet_pton(AF_INET, o.host, &s4->sin_addr) != 1 ||
		    (ntohl(s4->sin_addr.s_addr) >> 24) != 127)
			die("--host must be a loopback address");
		dstlen = sizeof(*s4);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);
	if (o.user != NULL) {
		unsigned char raw[600];
		size_t ul = strlen(o.user), pl = strlen(o.pass);
		char b[820];

		if (ul + pl + 2 > sizeof(raw))
			die("credentials too long");
		raw[0] = '\0';
		memcpy(raw + 1, o.user, ul);
		raw[1 + ul] = '\0';
		memcpy(raw + 2 + ul, o.pass, pl);
		b64enc(raw, ul + pl + 2, b);
		snprintf(auth_cmd, sizeof(auth_cmd), "AUTH PLAIN %s\r\n", b);
	}
	if (o.mode != M_PLAIN) {
		wolfSSL_Init();
		if ((cctx = wolfSSL_CTX_new(wolfSSLv23_client_method())) == NULL)
			die("cannot create a TLS context");
		/* the same TLS client settings as relay25 (src/tls.c), so the
		 * direct path and relay25 pay the same per handshake */
		if (wolfSSL_CTX_SetMinVersion(cctx, WOLFSSL_TLSV1_2) !=
		    WOLFSSL_SUCCESS ||
		    wolfSSL_CTX_set_cipher_list(cctx, o.ciphers != NULL ?
		    o.ciphers : cipher_list) !=
		    WOLFSSL_SUCCESS ||
		    wolfSSL_CTX_set_groups(cctx, groups, 3) != WOLFSSL_SUCCESS)
			die("cannot configure the TLS context");
		if (o.ca != NULL) {
			if (wolfSSL_CTX_load_verify_locations(cctx, o.ca, NULL) !=
			    WOLFSSL_SUCCESS)
				die("cannot load %s", o.ca);
			wolfSSL_CTX_set_verify(cctx, WOLFSSL_VERIFY_PEER, NULL);
		} else
			wolfSSL_CTX_set_verify(cctx, WOLFSSL_VERIFY_NONE, NULL);
	}
	make_body();
	if ((cls = calloc((size_t)o.conns, sizeof(*cls))) == NULL ||
	    (lat = calloc((size_t)(o.msgs > 0 ? o.msgs : 1), sizeof(*lat))) ==
	    NULL)
		die("out of memory");
	for (int i = 0; i < o.conns; i++)
		cls[i].fd = -1;
	loop = ev_default_loop(EVFLAG_AUTO);
	ev_timer_init(&max_timer, max_cb, o.max_time, 0.);
	ev_timer_start(loop, &max_timer);
	t_begin = now();
	if (o.hold == H_NONE)
		o.batch = o.conns;
	start_more();
	ev_run(loop, 0);
	if (!finished)
		t_end = now();

	qsort(lat, (size_t)nlat, sizeof(*lat), cmp_d);
	for (long i = 0; i < nlat; i++)
		sum += lat[i];
	{
		double el = t_end - t_begin;

		printf("RESULT {\"ok\": %ld, \"err\": %ld, \"sessions\": %ld, "
		    "\"elapsed\": %.4f, \"mps\": %.2f, \"p50_ms\": %.3f, "
		    "\"p90_ms\": %.3f, \"p99_ms\": %.3f, \"mean_ms\": %.3f, "
		    "\"mib_s\": %.2f, \"held\": %d, \"errors\": [",
		    ok, err, sessions_started, el, el > 0 ? (double)ok / el : 0,
		    pct(0.50), pct(0.90), pct(0.99),
		    nlat ? sum / (double)nlat * 1000.0 : 0,
		    el > 0 ? (double)ok * (double)bodylen / el / 1048576.0 : 0,
		    held);
		for (int i = 0; i < nerrs; i++) {
			printf("%s\"", i ? ", " : "");
			for (const char *p = errs[i]; *p; p++) {
				if (*p == '"' || *p == '\\')
					putchar('\\');
				if ((unsigned char)*p >= 0x20)
					putchar(*p);
			}
			putchar('"');
		}
		printf("]}\n");
	}
	return 0;
}
