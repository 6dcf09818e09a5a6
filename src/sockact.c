/*
 * sockact.c - inherited listening sockets from systemd (LISTEN_PID /
 * LISTEN_FDS), checked and made non-blocking and close-on-exec.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "relay25/log.h"
#include "relay25/sockact.h"

/* Strict decimal: digits only, no sign, no spaces, no overflow. */
static int
sockact_parse(const char *s, unsigned long *out)
{
	char *end;
	unsigned long v;

	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	*out = v;
	return 0;
}

static void
sockact_unsetenv(void)
{
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
}

/* Is fd an open, listening SOCK_STREAM socket? Sets *why if not. */
static int
sockact_check(int fd, const char **why)
{
	int type = 0, acc = 0;
	socklen_t l;

	if (fcntl(fd, F_GETFD) == -1) {
		*why = "not open";
		return -1;
	}
	l = sizeof(type);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) == -1) {
		*why = errno == ENOTSOCK ? "not a socket" : strerror(errno);
		return -1;
	}
	if (type != SOCK_STREAM) {
		*why = "not a stream socket (use ListenStream=)";
		return -1;
	}
	l = sizeof(acc);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &l) == -1) {
		*why = strerror(errno);
		return -1;
	}
	if (!acc) {
		*why = "not listening (Accept=yes is not supported)";
		return -1;
	}
	return 0;
}

int
sockact_fds(int *fds, size_t max)
{
	const char *spid = getenv("LISTEN_PID");
	const char *sn = getenv("LISTEN_FDS");
	unsigned long pid, n;
	const char *why = NULL;
	int rc = -1;

	if (spid == NULL) {
		sockact_unsetenv();
		return 0;
	}
	if (sockact_parse(spid, &pid) < 0 || pid == 0) {
		log_error("socket activation: bad LISTEN_PID value");
		goto out;
	}
	if (pid != (unsigned long)getpid()) {
		rc = 0;                 /* meant for another process */
		goto out;
	}
	if (sockact_parse(sn, &n) < 0) {
		log_error("socket activation: bad or missing LISTEN_FDS value");
		goto out;
	}
	if (n == 0) {
		rc = 0;
		goto out;
	}
	if (n > max || n > (unsigned long)(INT_MAX - SOCKACT_FD_START)) {
		log_error("socket activation: LISTEN_FDS=%lu, at most %zu "
		    "listening sockets are supported", n, max);
		goto out;
	}
	for (unsigned long i = 0; i < n; i++) {
		int fd = SOCKACT_FD_START + (int)i;
		int fl;

		if (sockact_check(fd, &why) < 0) {
			log_error("socket activation: fd %d: %s", fd, why);
			goto out;
		}
		if (fcntl(fd, F_SETFD, FD_CLOEXEC) == -1 ||
		    (fl = fcntl(fd, F_GETFL)) == -1 ||
		    fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1) {
			log_error("socket activation: fd %d: %s", fd,
			    strerror(errno));
			goto out;
		}
		fds[i] = fd;
	}
	rc = (int)n;
out:
	sockact_unsetenv();
	return rc;
}

char *
sockact_describe(int fd, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[INET6_ADDRSTRLEN], port[8];

	if (len == 0)
		return buf;
	snprintf(buf, len, "?");
	memset(&ss, 0, sizeof(ss));
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == -1)
		return buf;
	switch (ss.ss_family) {
	case AF_INET:
	case AF_INET6:
		if (getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host),
		    port, sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) != 0)
			return buf;
		snprintf(buf, len, ss.ss_family == AF_INET6 ? "[%s]:%s" :
		    "%s:%s", host, port);
		break;
	case AF_UNIX: {
		const struct sockaddr_un *sun = (const void *)&ss;
		size_t pl = sl > offsetof(struct sockaddr_un, sun_path) ?
		    sl - offsetof(struct sockaddr_un, sun_path) : 0;

		if (pl > 0 && sun->sun_path[0] != '\0')
			snprintf(buf, len, "unix:%.*s", (int)strnlen(
			    sun->sun_path, pl), sun->sun_path);
		else
			snprintf(buf, len, "unix:(abstract)");
		break;
	}
	default:
		break;
	}
	return buf;
}
