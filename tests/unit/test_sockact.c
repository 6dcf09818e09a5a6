/*
 * test_sockact.c - systemd socket activation: each case runs in a forked
 * child that puts sockets on fds 3, 4 (dup2), sets LISTEN_PID/LISTEN_FDS
 * and calls sockact_fds(); the child's exit code names the first check
 * that failed (0: all passed).
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "relay25/sockact.h"

/* A loopback TCP (or UDP) socket, listening if asked, on fd `target`. */
static int
place_socket(int target, int type, bool listening)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	int fd = socket(AF_INET, type, 0), hi;

	if (fd < 0)
		return -1;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
		return -1;
	if (listening && listen(fd, 4) < 0)
		return -1;
	/* Move it high first so creating it cannot collide with target. */
	if ((hi = fcntl(fd, F_DUPFD, 40)) < 0)
		return -1;
	close(fd);
	if (dup2(hi, target) < 0)
		return -1;
	close(hi);
	return target;
}

static void
set_env(const char *pid, const char *n)
{
	char buf[32];

	if (pid == NULL) {
		snprintf(buf, sizeof(buf), "%ld", (long)getpid());
		pid = buf;
	}
	setenv("LISTEN_PID", pid, 1);
	if (n != NULL)
		setenv("LISTEN_FDS", n, 1);
	else
		unsetenv("LISTEN_FDS");
	setenv("LISTEN_FDNAMES", "smtp:smtp", 1);
}

static bool
env_clean(void)
{
	return getenv("LISTEN_PID") == NULL && getenv("LISTEN_FDS") == NULL &&
	    getenv("LISTEN_FDNAMES") == NULL;
}

static int
case_two_sockets(void)
{
	int fds[4] = { -1, -1, -1, -1 };
	char txt[64];
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);

	if (place_socket(3, SOCK_STREAM, true) < 0 ||
	    place_socket(4, SOCK_STREAM, true) < 0)
		return 10;
	set_env(NULL, "2");
	if (sockact_fds(fds, 4) != 2)
		return 11;
	if (fds[0] != 3 || fds[1] != 4 || fds[2] != -1)
		return 12;
	for (int i = 0; i < 2; i++) {
		if (!(fcntl(fds[i], F_GETFD) & FD_CLOEXEC))
			return 13;
		if (!(fcntl(fds[i], F_GETFL) & O_NONBLOCK))
			return 14;
	}
	if (!env_clean())
		return 15;
	if (getsockname(3, (struct sockaddr *)&sin, &sl) < 0)
		return 16;
	char want[64];
	snprintf(want, sizeof(want), "127.0.0.1:%u", ntohs(sin.sin_port));
	if (strcmp(sockact_describe(3, txt, sizeof(txt)), want) != 0)
		return 17;
	/* Called again: nothing left in the environment. */
	if (sockact_fds(fds, 4) != 0)
		return 18;
	return 0;
}

static int
case_not_for_us(void)
{
	int fds[2];

	if (place_socket(3, SOCK_STREAM, true) < 0)
		return 10;
	set_env("1", "1");
	if (sockact_fds(fds, 2) != 0)
		return 11;
	if (!env_clean())
		return 12;
	return 0;
}

static int
case_not_activated(void)
{
	int fds[2];

	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	if (sockact_fds(fds, 2) != 0)
		return 10;
	set_env(NULL, "0");
	if (sockact_fds(fds, 2) != 0 || !env_clean())
		return 11;
	return 0;
}

static int
case_bad_values(void)
{
	int fds[2];
	static const char *const bad_n[] = { "abc", "", "-1", " 1", "1x",
	    "99999999999999999999999", NULL };

	if (place_socket(3, SOCK_STREAM, true) < 0)
		return 10;
	for (int i = 0; bad_n[i] != NULL; i++) {
		set_env(NULL, bad_n[i]);
		if (sockact_fds(fds, 2) != -1 || !env_clean())
			return 20 + i;
	}
	set_env(NULL, NULL);                 /* LISTEN_FDS missing */
	if (sockact_fds(fds, 2) != -1)
		return 30;
	set_env("12abc", "1");
	if (sockact_fds(fds, 2) != -1)
		return 31;
	set_env("0", "1");
	if (sockact_fds(fds, 2) != -1)
		return 32;
	set_env(NULL, "3");                  /* more than max */
	if (sockact_fds(fds, 2) != -1)
		return 33;
	return 0;
}

static int
case_bad_fds(void)
{
	int fds[2];

	if (place_socket(3, SOCK_DGRAM, false) < 0)
		return 10;
	set_env(NULL, "1");
	if (sockact_fds(fds, 2) != -1)
		return 11;
	close(3);
	if (place_socket(3, SOCK_STREAM, false) < 0)
		return 12;
	set_env(NULL, "1");                  /* bound, not listening */
	if (sockact_fds(fds, 2) != -1)
		return 13;
	close(3);
	set_env(NULL, "1");                  /* not open at all */
	if (sockact_fds(fds, 2) != -1)
		return 14;
	if (open("/dev/null", O_RDONLY) != 3)
		return 15;
	set_env(NULL, "1");                  /* not a socket */
	if (sockact_fds(fds, 2) != -1)
		return 16;
	close(3);
	if (place_socket(3, SOCK_STREAM, true) < 0)
		return 17;
	set_env(NULL, "2");                  /* second one missing */
	if (sockact_fds(fds, 2) != -1)
		return 18;
	return 0;
}

/* Run fn in a child; its exit status is the result. */
static int
in_child(int (*fn)(void))
{
	int status;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(fn());
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status), "child did not exit normally");
	return WEXITSTATUS(status);
}

TestSuite(sockact, .timeout = 10);

Test(sockact, two_listening_sockets)
{
	cr_assert_eq(in_child(case_two_sockets), 0);
}

Test(sockact, meant_for_another_process)
{
	cr_assert_eq(in_child(case_not_for_us), 0);
}

Test(sockact, not_activated)
{
	cr_assert_eq(in_child(case_not_activated), 0);
}

Test(sockact, bad_values)
{
	cr_assert_eq(in_child(case_bad_values), 0);
}

Test(sockact, bad_descriptors)
{
	cr_assert_eq(in_child(case_bad_fds), 0);
}
