/*
 * ping.c - the `--ping` health probe: greeting, NOOP, QUIT against the
 * relay's own first listener, bounded by one overall deadline.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "relay25/log.h"
#include "relay25/ping.h"

#define PING_LINE_MAX 1024      /* one reply line; longer is an error */
#define PING_QUIT_WAIT 1.0

struct ping {
	int fd;
	double deadline;                /* CLOCK_MONOTONIC seconds */
	char buf[PING_LINE_MAX * 2];
	size_t len;
	char why[256];
};

static double
ping_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Wait for `events` until the deadline. 0 ready, -1 timeout or error. */
static int
ping_wait(struct ping *p, short events)
{
	for (;;) {
		struct pollfd pfd = { .fd = p->fd, .events = events };
		double left = p->deadline - ping_now();
		int r;

		if (left <= 0) {
			snprintf(p->why, sizeof(p->why), "no answer in time");
			return -1;
		}
		r = poll(&pfd, 1, (int)(left * 1000) + 1);
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR) {
			snprintf(p->why, sizeof(p->why), "poll: %s",
			    strerror(errno));
			return -1;
		}
	}
}

static int
ping_connect(struct ping *p, const struct sockaddr *sa, socklen_t salen)
{
	int soerr = 0;
	socklen_t l = sizeof(soerr);

	p->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (p->fd < 0) {
		snprintf(p->why, sizeof(p->why), "socket: %s", strerror(errno));
		return -1;
	}
	if (connect(p->fd, sa, salen) == 0)
		return 0;
	if (errno != EINPROGRESS && errno != EINTR) {
		snprintf(p->why, sizeof(p->why), "connect: %s",
		    strerror(errno));
		return -1;
	}
	if (ping_wait(p, POLLOUT) < 0)
		return -1;
	if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &soerr, &l) < 0)
		soerr = errno;
	if (soerr != 0) {
		snprintf(p->why, sizeof(p->why), "connect: %s",
		    strerror(soerr));
		return -1;
	}
	return 0;
}

static int
ping_send(struct ping *p, const char *s)
{
	size_t off = 0, len = strlen(s);

	while (off < len) {
		ssize_t n = send(p->fd, s + off, len - off, MSG_NOSIGNAL);

		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (ping_wait(p, POLLOUT) < 0)
				return -1;
			continue;
		}
		snprintf(p->why, sizeof(p->why), "send: %s",
		    n < 0 ? strerror(errno) : "nothing written");
		return -1;
	}
	return 0;
}

/*
 * Read one SMTP reply (continuation lines "ddd-" up to the final "ddd ").
 * Returns the code, or -1 with p->why set. text gets the final line,
 * sanitised.
 */
static int
ping_reply(struct ping *p, char *text, size_t textlen)
{
	for (;;) {
		char *nl = memchr(p->buf, '\n', p->len);

		if (nl != NULL) {
			size_t ll = (size_t)(nl - p->buf);
			size_t cl = ll > 0 && p->buf[ll - 1] == '\r' ?
			    ll - 1 : ll;
			bool ok = cl >= 3 && p->buf[0] >= '2' &&
			    p->buf[0] <= '5' && p->buf[1] >= '0' &&
			    p->buf[1] <= '9' && p->buf[2] >= '0' &&
			    p->buf[2] <= '9' && (cl == 3 || p->buf[3] == ' ' ||
			    p->buf[3] == '-');
			bool last = ok && (cl == 3 || p->buf[3] == ' ');
			int code = ok ? (p->buf[0] - '0') * 100 +
			    (p->buf[1] - '0') * 10 + (p->buf[2] - '0') : -1;

			log_sanitize(text, textlen, p->buf, cl);
			memmove(p->buf, nl + 1, p->len - ll - 1);
			p->len -= ll + 1;
			if (!ok) {
				snprintf(p->why, sizeof(p->why),
				    "not an SMTP reply: \"%s\"", text);
				return -1;
			}
			if (last)
				return code;
			continue;
		}
		if (p->len >= PING_LINE_MAX) {
			snprintf(p->why, sizeof(p->why), "reply line too long");
			return -1;
		}
		ssize_t n = recv(p->fd, p->buf + p->len,
		    sizeof(p->buf) - p->len, 0);
		if (n > 0) {
			p->len += (size_t)n;
			continue;
		}
		if (n == 0) {
			snprintf(p->why, sizeof(p->why),
			    "connection closed by the server");
			return -1;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			snprintf(p->why, sizeof(p->why), "recv: %s",
			    strerror(errno));
			return -1;
		}
		if (ping_wait(p, POLLIN) < 0)
			return -1;
	}
}

/* One command and its expected reply code. */
static int
ping_step(struct ping *p, const char *cmd, int expect, const char *what)
{
	char text[160];
	int code;

	if (cmd != NULL && ping_send(p, cmd) < 0)
		return -1;
	if ((code = ping_reply(p, text, sizeof(text))) < 0)
		return -1;
	if (code != expect) {
		snprintf(p->why, sizeof(p->why), "%s: expected %d, got \"%s\"",
		    what, expect, text);
		return -1;
	}
	return 0;
}

int
ping_run(const struct cfg *cfg, double timeout)
{
	struct ping p = { .fd = -1 };
	struct sockaddr_storage ss;
	socklen_t salen;
	char addr[80] = "?", host[INET6_ADDRSTRLEN], port[8];
	double start = ping_now();
	int rc = 1;

	if (timeout <= 0)
		timeout = PING_TIMEOUT;
	p.deadline = start + timeout;
	if (cfg->nlisten == 0) {
		fprintf(stderr, "relay25: ping failed: no listen address\n");
		return 1;
	}
	memcpy(&ss, &cfg->listen[0].sa, sizeof(ss));
	salen = cfg->listen[0].salen;
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)(void *)&ss;
		if (in->sin_addr.s_addr == htonl(INADDR_ANY))
			in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	} else if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)(void *)&ss;
		if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
			in6->sin6_addr = in6addr_loopback;
	}
	if (getnameinfo((struct sockaddr *)&ss, salen, host, sizeof(host),
	    port, sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) == 0)
		snprintf(addr, sizeof(addr), ss.ss_family == AF_INET6 ?
		    "[%s]:%s" : "%s:%s", host, port);

	if (ping_connect(&p, (struct sockaddr *)&ss, salen) < 0 ||
	    ping_step(&p, NULL, 220, "greeting") < 0 ||
	    ping_step(&p, "NOOP\r\n", 250, "NOOP") < 0) {
		fprintf(stderr, "relay25: ping %s failed: %s\n", addr, p.why);
		goto out;
	}
	/* The relay is healthy; QUIT politely, but its answer is a bonus
	 * not worth waiting long for. */
	if (p.deadline > ping_now() + PING_QUIT_WAIT)
		p.deadline = ping_now() + PING_QUIT_WAIT;
	(void)ping_step(&p, "QUIT\r\n", 221, "QUIT");
	fprintf(stdout, "relay25: ping %s ok in %.3fs\n", addr,
	    ping_now() - start);
	rc = 0;
out:
	if (p.fd >= 0)
		close(p.fd);
	return rc;
}
