/*
 * sm_smtp.c - the client leg to relay25 (see sm_smtp.h).
 */
#include "sm_smtp.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

double
sm_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int
sm_wait(int fd, short events, double step, double deadline)
{
	struct pollfd p = { .fd = fd, .events = events };
	double now = sm_now(), end = step < 0 ? -1 : now + step;
	int r;

	if (deadline > 0 && (end < 0 || deadline < end))
		end = deadline;
	for (;;) {
		int ms = -1;

		if (end >= 0) {
			double left = end - sm_now();
			if (left <= 0)
				return 0;
			ms = (int)(left * 1000) + 1;
		}
		r = poll(&p, 1, ms);
		if (r > 0)
			return 1;
		if (r < 0 && errno != EINTR)
			return -1;
	}
}

static void
sm_show(const char *dir, const char *s, size_t n)
{
	char line[1100];
	size_t k = 0;

	for (size_t i = 0; i < n && k < sizeof line - 1; i++) {
		unsigned char c = (unsigned char)s[i];
		line[k++] = (c < 32 && c != '\t') || c == 127 ? '?' : (char)c;
	}
	line[k] = '\0';
	fprintf(stderr, "%s %s\n", dir, line);
}

int
sm_smtp_connect(struct sm_smtp *s, const char *host, const char *port)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
	    .ai_flags = AI_ADDRCONFIG }, *res, *a;
	int rc, err = 0;

	s->fd = -1;
	s->inlen = 0;
	smtp_reply_init(&s->rp);
	if ((rc = getaddrinfo(host, port, &hints, &res)) != 0) {
		hints.ai_flags = 0;     /* loopback-only hosts lack ADDRCONFIG */
		if ((rc = getaddrinfo(host, port, &hints, &res)) != 0) {
			snprintf(s->why, sizeof s->why, "%s", gai_strerror(rc));
			return -1;
		}
	}
	for (a = res; a; a = a->ai_next) {
		int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK |
		    SOCK_CLOEXEC, a->ai_protocol);
		socklen_t el = sizeof err;

		if (fd < 0) {
			err = errno;
			continue;
		}
		if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
			s->fd = fd;
			break;
		}
		if (errno != EINPROGRESS) {
			err = errno;
			close(fd);
			continue;
		}
		rc = sm_wait(fd, POLLOUT, s->step, s->deadline);
		if (rc == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err,
		    &el) == 0 && err == 0) {
			s->fd = fd;
			break;
		}
		if (rc == 0)
			err = ETIMEDOUT;
		else if (rc < 0)
			err = errno;
		close(fd);
	}
	freeaddrinfo(res);
	if (s->fd < 0) {
		snprintf(s->why, sizeof s->why, "%s",
		    strerror(err ? err : ECONNREFUSED));
		return -1;
	}
	return 0;
}

int
sm_smtp_write(struct sm_smtp *s, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = send(s->fd, buf, len, MSG_NOSIGNAL);

		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			snprintf(s->why, sizeof s->why, "write: %s",
			    strerror(errno));
			return -1;
		}
		int r = sm_wait(s->fd, POLLOUT, s->step, s->deadline);
		if (r <= 0) {
			snprintf(s->why, sizeof s->why, "%s",
			    r == 0 ? "timed out writing to relay25" :
			    strerror(errno));
			return -1;
		}
	}
	return 0;
}

int
sm_smtp_cmd(struct sm_smtp *s, const char *line)
{
	char buf[SMTP_LINE_MAX + 3];
	size_t n = strlen(line);

	if (n > SMTP_LINE_MAX) {
		snprintf(s->why, sizeof s->why, "command line too long");
		return -1;
	}
	if (s->verbose)
		sm_show(">>>", line, n);
	memcpy(buf, line, n);
	memcpy(buf + n, "\r\n", 2);
	return sm_smtp_write(s, buf, n + 2);
}

int
sm_smtp_reply(struct sm_smtp *s, struct smtp_reply *r)
{
	for (;;) {
		size_t used = 0;
		enum smtp_res res = SMTP_AGAIN;

		if (s->inlen)
			res = smtp_reply_feed(&s->rp, s->in, s->inlen, &used);
		memmove(s->in, s->in + used, s->inlen - used);
		s->inlen -= used;
		if (res == SMTP_ERROR) {
			snprintf(s->why, sizeof s->why,
			    "malformed reply from relay25");
			return -1;
		}
		if (res == SMTP_OK) {
			*r = s->rp.reply;
			smtp_reply_init(&s->rp);
			if (s->verbose) {
				char out[SMTP_REPLY_TEXT_MAX + 1024];
				size_t n = smtp_reply_format(r, out,
				    sizeof out), st = 0;

				for (size_t i = 0; i + 1 < n; i++)
					if (out[i] == '\r' &&
					    out[i + 1] == '\n') {
						sm_show("<<<", out + st,
						    i - st);
						st = i + 2;
					}
			}
			return 0;
		}
		int w = sm_wait(s->fd, POLLIN, s->step, s->deadline);
		if (w <= 0) {
			snprintf(s->why, sizeof s->why, "%s",
			    w == 0 ? "timed out waiting for relay25" :
			    strerror(errno));
			return -1;
		}
		ssize_t n = recv(s->fd, s->in, sizeof s->in, 0);
		if (n == 0) {
			snprintf(s->why, sizeof s->why,
			    "relay25 closed the connection");
			return -1;
		}
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN ||
			    errno == EWOULDBLOCK)
				continue;
			snprintf(s->why, sizeof s->why, "read: %s",
			    strerror(errno));
			return -1;
		}
		s->inlen = (size_t)n;
	}
}

void
sm_smtp_close(struct sm_smtp *s)
{
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
}

const char *
sm_reply_text(const struct smtp_reply *r, char *buf, size_t len)
{
	smtp_reply_summary(r, buf, len);
	return buf;
}
