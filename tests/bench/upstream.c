/*
 * upstream.c - bench-upstream: a small fast SMTP submission server for the
 * benchmark (the Python test ESP's ceiling is too low to measure relay25
 * against). libev + wolfSSL; STARTTLS and implicit TLS listeners, AUTH
 * PLAIN and LOGIN (required before MAIL), PIPELINING-safe (every complete
 * command in a read is answered, replies batched into one write), message
 * bodies are discarded: only counted.
 *
 *   bench-upstream --cert PEM --key KEY [--host 127.0.0.1]
 *                  [--starttls-port N] [--implicit-port N]   (0: any free)
 *                  [--user U --password P] [--workers W]
 *                  [--ready-file F] [--counter-file F] [--timeout SECS]
 *                  [--verbose 1]   (why each connection ended, on stderr)
 *
 * The counters (messages, body bytes, connections, AUTH successes, errors)
 * live in --counter-file, mmap()ed and shared by the workers: five
 * little-endian uint64 at offsets 0, 8, 16, 24, 32, so a reader sees them
 * at any time. SIGUSR1 prints them on stderr. --ready-file gets
 * {"starttls": PORT, "implicit": PORT, "pid": PID} once listening.
 * SIGTERM/SIGINT stop the workers and exit 0.
 *
 * Loopback only: --host must be a loopback address.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define IN_MAX   (32 * 1024)
#define LINE_MAX_LEN 4096
#define MAX_WORKERS 16

enum { C_MSGS, C_BYTES, C_CONNS, C_AUTH, C_ERRS, C_N };

static volatile uint64_t *counters;
static const char *opt_user, *opt_pass, *opt_cert, *opt_key;
static double opt_timeout = 300.0;
static bool opt_verbose;
static WOLFSSL_CTX *sctx;
static unsigned msg_seq;

enum kind { K_STARTTLS, K_IMPLICIT };
enum state { S_HANDSHAKE, S_CMD, S_DATA, S_AUTH_PLAIN, S_AUTH_USER,
	S_AUTH_PASS, S_CLOSING };

struct conn {
	ev_io io;
	ev_timer tmo;
	int fd;
	enum kind kind;
	enum state st;
	WOLFSSL *ssl;
	bool tls, authed, helo, mail, rcpt;
	bool starttls_after_flush, close_after_flush, toolong;
	int eod;                /* end-of-data matcher state, see scan_eod */
	char *in;
	size_t inoff, inlen;
	char *out;
	size_t outoff, outlen, outcap;
	char login_user[256];
};

static void conn_close(struct ev_loop *, struct conn *, const char *);
static bool conn_flush(struct ev_loop *, struct conn *);
static bool conn_read(struct ev_loop *, struct conn *);
static void conn_cb(struct ev_loop *, ev_io *, int);

static void
cnt(int i, uint64_t n)
{
	__atomic_add_fetch(&counters[i], n, __ATOMIC_RELAXED);
}

static void
die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("bench-upstream: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

static void
reply(struct conn *c, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		size_t room = c->outcap - c->outlen;

		va_start(ap, fmt);
		n = vsnprintf(c->out + c->outlen, room, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if ((size_t)n + 2 < room) {
			c->outlen += (size_t)n;
			memcpy(c->out + c->outlen, "\r\n", 2);
			c->outlen += 2;
			return;
		}
		c->outcap = c->outcap * 2 + (size_t)n + 2;
		if ((c->out = realloc(c->out, c->outcap)) == NULL)
			die("out of memory");
	}
}

static int
b64val(int ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+')
		return 62;
	if (ch == '/')
		return 63;
	return -1;
}

/* base64 -> out (NUL-terminated); returns length or -1 */
static int
b64dec(const char *s, char *out, size_t outsz)
{
	size_t n = 0;
	unsigned acc = 0;
	int bits = 0;

	for (; *s != '\0' && *s != '='; s++) {
		int v = b64val((unsigned char)*s);

		if (v < 0)
			return -1;
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (n + 1 >= outsz)
				return -1;
			out[n++] = (char)((acc >> bits) & 0xff);
		}
	}
	out[n] = '\0';
	return (int)n;
}

static bool
creds_ok(const char *user, const char *pass)
{
	if (opt_user == NULL)
		return true;
	return strcmp(user, opt_user) == 0 && strcmp(pass, opt_pass) == 0;
}

static void
auth_done(struct conn *c, bool ok)
{
	c->st = S_CMD;
	if (ok) {
		c->authed = true;
		cnt(C_AUTH, 1);
		reply(c, "235 2.7.0 Authentication successful");
	} else {
		cnt(C_ERRS, 1);
		reply(c, "535 5.7.8 Authentication credentials invalid");
	}
}

static void
auth_plain(struct conn *c, const char *b64)
{
	char raw[1024];
	int n = b64dec(b64, raw, sizeof(raw));
	const char *user, *pass;
	size_t l1;

	if (n < 0) {
		c->st = S_CMD;
		reply(c, "501 5.5.2 Invalid base64");
		return;
	}
	l1 = strnlen(raw, (size_t)n);             /* authzid */
	if ((int)l1 >= n) {
		auth_done(c, false);
		return;
	}
	user = raw + l1 + 1;
	if ((int)(l1 + 1 + strnlen(user, (size_t)n - l1 - 1)) >= n) {
		auth_done(c, false);
		return;
	}
	pass = user + strlen(user) + 1;
	auth_done(c, creds_ok(user, pass));
}

static bool
verb_is(const char *line, const char *verb)
{
	size_t n = strlen(verb);

	return strncasecmp(line, verb, n) == 0 &&
	    (line[n] == '\0' || line[n] == ' ');
}

static void
command(struct conn *c, char *line)
{
	if (c->st == S_AUTH_PLAIN) {
		auth_plain(c, line);
		return;
	}
	if (c->st == S_AUTH_USER) {
		if (b64dec(line, c->login_user, sizeof(c->login_user)) < 0) {
			c->st = S_CMD;
			reply(c, "501 5.5.2 Invalid base64");
			return;
		}
		c->st = S_AUTH_PASS;
		reply(c, "334 UGFzc3dvcmQ6");
		return;
	}
	if (c->st == S_AUTH_PASS) {
		char pass[512];

		if (b64dec(line, pass, sizeof(pass)) < 0) {
			c->st = S_CMD;
			reply(c, "501 5.5.2 Invalid base64");
			return;
		}
		auth_done(c, creds_ok(c->login_user, pass));
		return;
	}
	if (verb_is(line, "EHLO")) {
		c->helo = true;
		c->mail = c->rcpt = false;
		reply(c, "250-bench-upstream greets %s", line[4] ? line + 5 : "");
		reply(c, "250-PIPELINING");
		reply(c, "250-8BITMIME");
		reply(c, "250-SIZE 104857600");
		if (c->kind == K_STARTTLS && !c->tls)
			reply(c, "250-STARTTLS");
		if (c->tls && !c->authed && opt_user != NULL)
			reply(c, "250-AUTH PLAIN LOGIN");
		reply(c, "250 ENHANCEDSTATUSCODES");
	} else if (verb_is(line, "HELO")) {
		c->helo = true;
		c->mail = c->rcpt = false;
		reply(c, "250 bench-upstream");
	} else if (verb_is(line, "STARTTLS")) {
		if (c->kind != K_STARTTLS || c->tls) {
			reply(c, "503 5.5.1 TLS already active");
			return;
		}
		reply(c, "220 2.0.0 Ready to start TLS");
		c->starttls_after_flush = true;
		c->inoff = c->inlen = 0;        /* drop plaintext read-ahead */
		c->st = S_HANDSHAKE;
	} else if (verb_is(line, "AUTH")) {
		char *mech = line + 5, *arg;

		if (line[4] == '\0' || !c->helo) {
			reply(c, "503 5.5.1 EHLO first");
			return;
		}
		if (!c->tls || opt_user == NULL) {
			reply(c, "538 5.7.11 Encryption required");
			return;
		}
		if (c->authed) {
			reply(c, "503 5.5.1 Already authenticated");
			return;
		}
		arg = strchr(mech, ' ');
		if (arg != NULL)
			*arg++ = '\0';
		if (strcasecmp(mech, "PLAIN") == 0) {
			if (arg != NULL)
				auth_plain(c, arg);
			else {
				c->st = S_AUTH_PLAIN;
				reply(c, "334 ");
			}
		} else if (strcasecmp(mech, "LOGIN") == 0) {
			if (arg != NULL) {
				if (b64dec(arg, c->login_user,
				    sizeof(c->login_user)) < 0) {
					reply(c, "501 5.5.2 Invalid base64");
					return;
				}
				c->st = S_AUTH_PASS;
				reply(c, "334 UGFzc3dvcmQ6");
			} else {
				c->st = S_AUTH_USER;
				reply(c, "334 VXNlcm5hbWU6");
			}
		} else
			reply(c, "504 5.5.4 Unrecognized authentication type");
	} else if (verb_is(line, "MAIL")) {
		if (!c->helo)
			reply(c, "503 5.5.1 EHLO first");
		else if (!c->tls)
			reply(c, "530 5.7.0 Must issue a STARTTLS command first");
		else if (opt_user != NULL && !c->authed)
			reply(c, "530 5.7.0 Authentication required");
		else if (c->mail)
			reply(c, "503 5.5.1 Nested MAIL command");
		else {
			c->mail = true;
			reply(c, "250 2.1.0 Ok");
		}
	} else if (verb_is(line, "RCPT")) {
		if (!c->mail)
			reply(c, "503 5.5.1 MAIL first");
		else {
			c->rcpt = true;
			reply(c, "250 2.1.5 Ok");
		}
	} else if (verb_is(line, "DATA")) {
		if (!c->rcpt)
			reply(c, "554 5.5.1 No valid recipients");
		else {
			reply(c, "354 End data with <CR><LF>.<CR><LF>");
			c->st = S_DATA;
			c->eod = 2;     /* the data starts after a CRLF */
		}
	} else if (verb_is(line, "RSET")) {
		c->mail = c->rcpt = false;
		reply(c, "250 2.0.0 Ok");
	} else if (verb_is(line, "NOOP")) {
		reply(c, "250 2.0.0 Ok");
	} else if (verb_is(line, "QUIT")) {
		reply(c, "221 2.0.0 Bye");
		c->close_after_flush = true;
		c->st = S_CLOSING;
	} else {
		cnt(C_ERRS, 1);
		reply(c, "502 5.5.2 Command not recognized");
	}
}

/*
 * The end-of-data matcher: eod is how much of "\r\n.\r\n" was seen
 * (0 nothing, 1 "\r", 2 "\r\n", 3 "\r\n.", 4 "\r\n.\r"). Returns the
 * number of bytes of p[0..n) that belong to the data (including the final
 * "\r\n.\r\n"), and sets *done when the end was found.
 */
static size_t
scan_eod(struct conn *c, const char *p, size_t n, bool *done)
{
	size_t i = 0;
	int s = c->eod;

	*done = false;
	while (i < n) {
		if (s == 0) {
			const char *cr = memchr(p + i, '\r', n - i);

			if (cr == NULL) {
				i = n;
				break;
			}
			i = (size_t)(cr - p);
		}
		switch (p[i++]) {
		case '\r':
			s = s == 3 ? 4 : 1;
			break;
		case '\n':
			if (s == 4) {
				c->eod = 0;
				*done = true;
				return i;
			}
			s = s == 1 ? 2 : 0;
			break;
		case '.':
			s = s == 2 ? 3 : 0;
			break;
		default:
			s = 0;
		}
	}
	c->eod = s;
	return i;
}

static void
process(struct conn *c)
{
	while (c->inoff < c->inlen && c->st != S_HANDSHAKE &&
	    c->st != S_CLOSING) {
		char *p = c->in + c->inoff;
		size_t n = c->inlen - c->inoff;

		if (c->st == S_DATA) {
			bool done;
			size_t used = scan_eod(c, p, n, &done);

			c->inoff += used;
			cnt(C_BYTES, used);
			if (done) {
				c->st = S_CMD;
				c->mail = c->rcpt = false;
				cnt(C_MSGS, 1);
				reply(c, "250 2.0.0 Ok: queued as B%x%06X",
				    (unsigned)getpid(), ++msg_seq & 0xffffff);
			}
			continue;
		}
		char *nl = memchr(p, '\n', n);

		if (nl == NULL) {
			if (n >= LINE_MAX_LEN) {        /* drop the overlong part */
				c->toolong = true;
				c->inoff = c->inlen;
			}
			break;
		}
		c->inoff += (size_t)(nl - p) + 1;
		if (c->toolong) {
			c->toolong = false;
			reply(c, "500 5.5.2 Line too long");
			continue;
		}
		*nl = '\0';
		if (nl > p && nl[-1] == '\r')
			nl[-1] = '\0';
		command(c, p);
	}
	if (c->inoff == c->inlen)
		c->inoff = c->inlen = 0;
	else if (c->inoff > 0 && c->st != S_HANDSHAKE) {
		memmove(c->in, c->in + c->inoff, c->inlen - c->inoff);
		c->inlen -= c->inoff;
		c->inoff = 0;
	}
}

static void
set_events(struct ev_loop *loop, struct conn *c, int ev)
{
	if ((c->io.events & (EV_READ | EV_WRITE)) == ev)
		return;
	ev_io_stop(loop, &c->io);
	ev_io_set(&c->io, c->fd, ev);
	ev_io_start(loop, &c->io);
}

/* each of these returns false when it closed (freed) the connection */
static bool
handshake(struct ev_loop *loop, struct conn *c)
{
	int r = wolfSSL_accept(c->ssl);

	if (r == WOLFSSL_SUCCESS) {
		c->tls = true;
		c->st = S_CMD;
		c->helo = c->mail = c->rcpt = false;
		set_events(loop, c, EV_READ);
		if (c->kind == K_IMPLICIT) {
			reply(c, "220 bench-upstream ESMTP");
			return conn_flush(loop, c);
		}
		/* a command may have come with the client's Finished */
		return conn_read(loop, c);
	}
	r = wolfSSL_get_error(c->ssl, r);
	if (r == WOLFSSL_ERROR_WANT_READ)
		set_events(loop, c, EV_READ);
	else if (r == WOLFSSL_ERROR_WANT_WRITE)
		set_events(loop, c, EV_READ | EV_WRITE);
	else {
		cnt(C_ERRS, 1);
		conn_close(loop, c, "TLS handshake failed");
		return false;
	}
	return true;
}

static bool
start_tls(struct ev_loop *loop, struct conn *c)
{
	if ((c->ssl = wolfSSL_new(sctx)) == NULL ||
	    wolfSSL_set_fd(c->ssl, c->fd) != WOLFSSL_SUCCESS) {
		cnt(C_ERRS, 1);
		conn_close(loop, c, "cannot start TLS");
		return false;
	}
	c->st = S_HANDSHAKE;
	return handshake(loop, c);
}

static bool
conn_flush(struct ev_loop *loop, struct conn *c)
{
	while (c->outoff < c->outlen) {
		size_t n = c->outlen - c->outoff;
		ssize_t w;

		if (c->ssl != NULL && c->tls) {
			int r = wolfSSL_write(c->ssl, c->out + c->outoff, (int)n);

			if (r <= 0) {
				int e = wolfSSL_get_error(c->ssl, r);

				if (e == WOLFSSL_ERROR_WANT_WRITE ||
				    e == WOLFSSL_ERROR_WANT_READ) {
					set_events(loop, c, EV_READ | EV_WRITE);
					return true;
				}
				conn_close(loop, c, "TLS write failed");
				return false;
			}
			w = r;
		} else {
			w = send(c->fd, c->out + c->outoff, n, MSG_NOSIGNAL);
			if (w < 0) {
				if (errno == EAGAIN || errno == EINTR) {
					set_events(loop, c, EV_READ | EV_WRITE);
					return true;
				}
				conn_close(loop, c, "send failed");
				return false;
			}
		}
		c->outoff += (size_t)w;
	}
	c->outoff = c->outlen = 0;
	if (c->close_after_flush) {
		conn_close(loop, c, "QUIT");
		return false;
	}
	if (c->starttls_after_flush) {
		c->starttls_after_flush = false;
		return start_tls(loop, c);
	}
	if (c->st != S_HANDSHAKE)
		set_events(loop, c, EV_READ);
	return true;
}

static bool
conn_read(struct ev_loop *loop, struct conn *c)
{
	int rounds;

	for (rounds = 0; rounds < 64; rounds++) {
		size_t room = IN_MAX - c->inlen;
		ssize_t r;

		if (room == 0) {
			process(c);
			room = IN_MAX - c->inlen;
			if (room == 0) {
				conn_close(loop, c, "input buffer full");
				return false;
			}
		}
		if (c->tls) {
			int n = wolfSSL_read(c->ssl, c->in + c->inlen, (int)room);

			if (n <= 0) {
				int e = wolfSSL_get_error(c->ssl, n);

				if (e == WOLFSSL_ERROR_WANT_READ)
					break;
				if (e == WOLFSSL_ERROR_WANT_WRITE) {
					set_events(loop, c, EV_READ | EV_WRITE);
					break;
				}
				conn_close(loop, c, "TLS read: closed or failed");
				return false;
			}
			r = n;
		} else {
			r = recv(c->fd, c->in + c->inlen, room, 0);
			if (r == 0) {
				conn_close(loop, c, "EOF");
				return false;
			}
			if (r < 0) {
				if (errno == EAGAIN || errno == EINTR)
					break;
				conn_close(loop, c, "recv failed");
				return false;
			}
		}
		c->inlen += (size_t)r;
		process(c);
		if (c->st == S_HANDSHAKE || c->st == S_CLOSING)
			break;
	}
	if (rounds == 64)       /* more may wait, in the socket or in wolfSSL */
		ev_feed_event(loop, &c->io, EV_READ);
	return conn_flush(loop, c);
}

static void
conn_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;

	ev_timer_again(loop, &c->tmo);
	if (c->st == S_HANDSHAKE && c->ssl != NULL) {
		handshake(loop, c);
		return;
	}
	if ((revents & EV_WRITE) && !conn_flush(loop, c))
		return;
	if (revents & EV_READ)
		conn_read(loop, c);
}

static void
tmo_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)revents;
	conn_close(loop, w->data, "idle timeout");
}

static void
conn_close(struct ev_loop *loop, struct conn *c, const char *why)
{
	if (opt_verbose)
		fprintf(stderr, "bench-upstream[%d]: connection %d closed: %s\n",
		    (int)getpid(), c->fd, why);
	ev_io_stop(loop, &c->io);
	ev_timer_stop(loop, &c->tmo);
	if (c->ssl != NULL) {
		wolfSSL_free(c->ssl);
		c->ssl = NULL;
	}
	close(c->fd);
	free(c->in);
	free(c->out);
	free(c);
}

static void
accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	enum kind kind = (enum kind)(intptr_t)w->data;

	(void)revents;
	for (int i = 0; i < 64; i++) {
		int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct conn *c;
		int one = 1;

		if (fd < 0)
			return;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if ((c = calloc(1, sizeof(*c))) == NULL ||
		    (c->in = malloc(IN_MAX)) == NULL ||
		    (c->out = malloc(1024)) == NULL)
			die("out of memory");
		cnt(C_CONNS, 1);
		c->fd = fd;
		c->kind = kind;
		c->outcap = 1024;
		ev_io_init(&c->io, conn_cb, fd, EV_READ);
		c->io.data = c;
		ev_init(&c->tmo, tmo_cb);
		c->tmo.repeat = opt_timeout;
		c->tmo.data = c;
		ev_timer_again(loop, &c->tmo);
		ev_io_start(loop, &c->io);
		if (kind == K_IMPLICIT)
			start_tls(loop, c);
		else {
			c->st = S_CMD;
			reply(c, "220 bench-upstream ESMTP");
			conn_flush(loop, c);
		}
	}
}

static int
listen_on(const char *host, int port)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int fd, one = 1;

	memset(&ss, 0, sizeof(ss));
	if (strchr(host, ':') != NULL) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1 ||
		    !IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr))
			die("--host must be a loopback address");
		sl = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, host, &s4->sin_addr) != 1 ||
		    (ntohl(s4->sin_addr.s_addr) >> 24) != 127)
			die("--host must be a loopback address");
		sl = sizeof(*s4);
	}
	if ((fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0)) < 0)
		die("socket: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0)
		die("bind %s:%d: %s", host, port, strerror(errno));
	if (listen(fd, 4096) < 0)
		die("listen: %s", strerror(errno));
	return fd;
}

static int
bound_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
		return -1;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void
worker(int lfd_st, int lfd_im)
{
	struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
	ev_io w_st, w_im;

	prctl(PR_SET_PDEATHSIG, SIGTERM);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	wolfSSL_Init();
	if ((sctx = wolfSSL_CTX_new(wolfSSLv23_server_method())) == NULL ||
	    wolfSSL_CTX_SetMinVersion(sctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_use_certificate_chain_file(sctx, opt_cert) !=
	    WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_use_PrivateKey_file(sctx, opt_key,
	    WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS)
		die("cannot set up TLS with %s / %s", opt_cert, opt_key);
	if (lfd_st >= 0) {
		ev_io_init(&w_st, accept_cb, lfd_st, EV_READ);
		w_st.data = (void *)(intptr_t)K_STARTTLS;
		ev_io_start(loop, &w_st);
	}
	if (lfd_im >= 0) {
		ev_io_init(&w_im, accept_cb, lfd_im, EV_READ);
		w_im.data = (void *)(intptr_t)K_IMPLICIT;
		ev_io_start(loop, &w_im);
	}
	ev_run(loop, 0);
	_exit(0);
}

static void
print_counters(void)
{
	fprintf(stderr, "bench-upstream: msgs=%llu bytes=%llu conns=%llu "
	    "auth=%llu errors=%llu\n",
	    (unsigned long long)counters[C_MSGS],
	    (unsigned long long)counters[C_BYTES],
	    (unsigned long long)counters[C_CONNS],
	    (unsigned long long)counters[C_AUTH],
	    (unsigned long long)counters[C_ERRS]);
}

static void
usage(void)
{
	fputs("usage: bench-upstream --cert PEM --key KEY [--host 127.0.0.1]\n"
	    "  [--starttls-port N] [--implicit-port N] [--user U --password P]\n"
	    "  [--workers W] [--ready-file F] [--counter-file F] "
	    "[--timeout SECS] [--verbose 1]\n", stderr);
	exit(2);
}

int
main(int argc, char **argv)
{
	const char *host = "127.0.0.1", *ready = NULL, *cfile = NULL;
	int port_st = -1, port_im = -1, workers = 1;
	int lfd_st = -1, lfd_im = -1;
	pid_t kids[MAX_WORKERS];
	sigset_t set;
	struct rlimit rl;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (v == NULL)
			usage();
		if (strcmp(a, "--cert") == 0)
			opt_cert = v;
		else if (strcmp(a, "--key") == 0)
			opt_key = v;
		else if (strcmp(a, "--host") == 0)
			host = v;
		else if (strcmp(a, "--starttls-port") == 0)
			port_st = atoi(v);
		else if (strcmp(a, "--implicit-port") == 0)
			port_im = atoi(v);
		else if (strcmp(a, "--user") == 0)
			opt_user = v;
		else if (strcmp(a, "--password") == 0)
			opt_pass = v;
		else if (strcmp(a, "--workers") == 0)
			workers = atoi(v);
		else if (strcmp(a, "--ready-file") == 0)
			ready = v;
		else if (strcmp(a, "--counter-file") == 0)
			cfile = v;
		else if (strcmp(a, "--timeout") == 0)
			opt_timeout = atof(v);
		else if (strcmp(a, "--verbose") == 0) {
			opt_verbose = atoi(v) != 0;
		} else
			usage();
		i++;
	}
	if (opt_cert == NULL || opt_key == NULL || (port_st < 0 && port_im < 0) ||
	    (opt_user == NULL) != (opt_pass == NULL) || workers < 1 ||
	    workers > MAX_WORKERS || opt_timeout <= 0)
		usage();
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (cfile != NULL) {
		int fd = open(cfile, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

		if (fd < 0 || ftruncate(fd, 4096) < 0)
			die("%s: %s", cfile, strerror(errno));
		counters = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED,
		    fd, 0);
		close(fd);
	} else
		counters = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (counters == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	if (port_st >= 0)
		lfd_st = listen_on(host, port_st);
	if (port_im >= 0)
		lfd_im = listen_on(host, port_im);

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, NULL);
	for (int i = 0; i < workers; i++) {
		if ((kids[i] = fork()) < 0)
			die("fork: %s", strerror(errno));
		if (kids[i] == 0) {
			sigprocmask(SIG_UNBLOCK, &set, NULL);
			worker(lfd_st, lfd_im);
		}
	}
	if (ready != NULL) {
		char tmp[4096];
		FILE *f;

		snprintf(tmp, sizeof(tmp), "%s.tmp", ready);
		if ((f = fopen(tmp, "w")) == NULL)
			die("%s: %s", tmp, strerror(errno));
		fprintf(f, "{\"starttls\": %d, \"implicit\": %d, \"pid\": %d}\n",
		    lfd_st >= 0 ? bound_port(lfd_st) : 0,
		    lfd_im >= 0 ? bound_port(lfd_im) : 0, (int)getpid());
		fclose(f);
		if (rename(tmp, ready) < 0)
			die("rename %s: %s", ready, strerror(errno));
	}
	for (;;) {
		int sig;

		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGUSR1) {
			print_counters();
			continue;
		}
		if (sig == SIGCHLD) {
			int st;
			pid_t p = waitpid(-1, &st, WNOHANG);

			if (p <= 0)
				continue;
			fprintf(stderr, "bench-upstream: worker %d exited\n",
			    (int)p);
			sig = SIGTERM;
		}
		for (int i = 0; i < workers; i++)
			kill(kids[i], SIGTERM);
		for (int i = 0; i < workers; i++)
			waitpid(kids[i], NULL, 0);
		print_counters();
		return 0;
	}
}
