/*
 * test_notify.c - sd_notify messages to a unix datagram socket bound in a
 * temporary directory (and in the abstract namespace): READY, RELOADING,
 * STOPPING, STATUS (control characters neutralised); unset and unusable
 * $NOTIFY_SOCKET; a full queue is an error, never a wait.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "relay25/notify.h"

static char dir[64];
static char path[96];
static int rfd = -1;

static void
setup(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };

	snprintf(dir, sizeof(dir), "/tmp/relay25-notify.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/notify.sock", dir);
	rfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(rfd, 0);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	cr_assert_eq(bind(rfd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	setenv("NOTIFY_SOCKET", path, 1);
}

static void
teardown(void)
{
	if (rfd >= 0)
		close(rfd);
	unlink(path);
	rmdir(dir);
	unsetenv("NOTIFY_SOCKET");
}

/* The next datagram, or "" if none is queued. */
static const char *
next_msg(int fd)
{
	static char buf[1024];
	ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);

	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

TestSuite(notify, .init = setup, .fini = teardown, .timeout = 10);

Test(notify, ready)
{
	cr_assert_eq(notify_ready(), 0);
	cr_assert_str_eq(next_msg(rfd), "READY=1");
	cr_assert_str_eq(next_msg(rfd), "");
}

Test(notify, stopping_and_reloading)
{
	const char *m;

	cr_assert_eq(notify_stopping(), 0);
	cr_assert_str_eq(next_msg(rfd), "STOPPING=1");
	cr_assert_eq(notify_reloading(), 0);
	m = next_msg(rfd);
	cr_assert(strncmp(m, "RELOADING=1\nMONOTONIC_USEC=", 27) == 0, "%s", m);
	cr_assert_gt(strtoull(m + 27, NULL, 10), 0);
}

Test(notify, status_is_one_assignment)
{
	cr_assert_eq(notify_status("serving %d session(s)\nREADY=1", 3), 0);
	cr_assert_str_eq(next_msg(rfd), "STATUS=serving 3 session(s) READY=1");
}

Test(notify, status_is_bounded)
{
	char big[2000];
	const char *m;

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	cr_assert_eq(notify_status("%s", big), 0);
	m = next_msg(rfd);
	cr_assert_eq(strlen(m), strlen("STATUS=") + 512);
}

Test(notify, abstract_namespace)
{
	char name[64];
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	socklen_t len;
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	snprintf(name, sizeof(name), "@relay25-test-%ld", (long)getpid());
	memcpy(sun.sun_path + 1, name + 1, strlen(name) - 1);
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
	    strlen(name));
	cr_assert_eq(bind(fd, (struct sockaddr *)&sun, len), 0);
	setenv("NOTIFY_SOCKET", name, 1);
	cr_assert_eq(notify_ready(), 0);
	cr_assert_str_eq(next_msg(fd), "READY=1");
	close(fd);
}

Test(notify, unset_is_a_noop)
{
	unsetenv("NOTIFY_SOCKET");
	cr_assert_eq(notify_ready(), 0);
	cr_assert_eq(notify_status("x"), 0);
	setenv("NOTIFY_SOCKET", "", 1);
	cr_assert_eq(notify_stopping(), 0);
	cr_assert_str_eq(next_msg(rfd), "");
}

Test(notify, unusable_values)
{
	char longp[200];

	setenv("NOTIFY_SOCKET", "relative/path", 1);
	errno = 0;
	cr_assert_eq(notify_ready(), -1);
	cr_assert_eq(errno, EINVAL);
	setenv("NOTIFY_SOCKET", "@", 1);
	cr_assert_eq(notify_ready(), -1);
	memset(longp, 'a', sizeof(longp) - 1);
	longp[0] = '/';
	longp[sizeof(longp) - 1] = '\0';
	setenv("NOTIFY_SOCKET", longp, 1);
	errno = 0;
	cr_assert_eq(notify_ready(), -1);
	cr_assert_eq(errno, ENAMETOOLONG);
	/* Nobody listening there. */
	setenv("NOTIFY_SOCKET", "/nonexistent/relay25/notify", 1);
	cr_assert_eq(notify_ready(), -1);
}

Test(notify, full_queue_never_blocks)
{
	int i, rc = 0;

	/* Nobody reads rfd: the queue fills and sending must fail at once
	 * (the suite's timeout catches a blocking send). */
	for (i = 0; i < 100000 && rc == 0; i++)
		rc = notify_ready();
	cr_assert_eq(rc, -1);
	cr_assert(errno == EAGAIN || errno == EWOULDBLOCK, "errno %d", errno);
	cr_assert_str_eq(next_msg(rfd), "READY=1");
}
