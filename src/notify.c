/*
 * notify.c - sd_notify(3) readiness messages over $NOTIFY_SOCKET, without
 * libsystemd. A fresh datagram socket per message: messages are rare
 * (start, reload, stop), and no descriptor is kept across fork/exec.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "relay25/notify.h"

#define NOTIFY_STATUS_MAX 512

/*
 * Fill *sun from $NOTIFY_SOCKET. Returns 1 when set, 0 when unset or empty,
 * -1 (errno) when unusable. A leading '@' means the abstract namespace:
 * sun_path starts with NUL and the length counts no terminator.
 */
static int
notify_address(struct sockaddr_un *sun, socklen_t *len)
{
	const char *e = getenv("NOTIFY_SOCKET");
	size_t n;

	if (e == NULL || e[0] == '\0')
		return 0;
	if (e[0] != '/' && e[0] != '@') {
		errno = EINVAL;         /* e.g. "vsock:..." is not supported */
		return -1;
	}
	n = strlen(e);
	if (n > sizeof(sun->sun_path) - (e[0] == '/' ? 1 : 0) || n < 2) {
		errno = n < 2 ? EINVAL : ENAMETOOLONG;
		return -1;
	}
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	memcpy(sun->sun_path, e, n);
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	if (e[0] == '@')
		sun->sun_path[0] = '\0';
	else
		(*len)++;               /* a path counts its NUL */
	return 1;
}

int
notify_send(const char *state)
{
	struct sockaddr_un sun;
	socklen_t len = 0;
	ssize_t n;
	int fd, r, e;

	if ((r = notify_address(&sun, &len)) <= 0)
		return r;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	do {
		n = sendto(fd, state, strlen(state),
		    MSG_DONTWAIT | MSG_NOSIGNAL, (const struct sockaddr *)&sun,
		    len);
	} while (n == -1 && errno == EINTR);
	e = errno;
	close(fd);
	if (n == -1) {
		errno = e;
		return -1;
	}
	if ((size_t)n != strlen(state)) {
		errno = EMSGSIZE;
		return -1;
	}
	return 0;
}

int
notify_ready(void)
{
	return notify_send("READY=1");
}

int
notify_reloading(void)
{
	struct timespec ts;
	char msg[64];

	if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1)
		return notify_send("RELOADING=1");
	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
	    (unsigned long long)ts.tv_sec * 1000000ULL +
	    (unsigned long long)ts.tv_nsec / 1000ULL);
	return notify_send(msg);
}

int
notify_stopping(void)
{
	return notify_send("STOPPING=1");
}

int
notify_status(const char *fmt, ...)
{
	char msg[sizeof("STATUS=") + NOTIFY_STATUS_MAX];
	const size_t off = sizeof("STATUS=") - 1;
	va_list ap;

	if (getenv("NOTIFY_SOCKET") == NULL)
		return 0;               /* do not even format */
	memcpy(msg, "STATUS=", off);
	va_start(ap, fmt);
	if (vsnprintf(msg + off, sizeof(msg) - off, fmt, ap) < 0)
		msg[off] = '\0';
	va_end(ap);
	for (char *p = msg + off; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
	return notify_send(msg);
}
