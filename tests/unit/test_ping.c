/*
 * test_ping.c - the --ping probe against a scripted fake SMTP server in a
 * forked child on 127.0.0.1: healthy (single- and multi-line replies, a
 * 0.0.0.0 listen address), refused, silent (deadline), 554 greeting, NOOP
 * refused, connection closed. The child is bounded by alarm().
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "relay25/config.h"
#include "relay25/ping.h"

enum script { S_OK, S_MULTILINE, S_SILENT, S_554, S_NOOP_500, S_CLOSE };

static int lfd = -1;
static uint16_t port;
static pid_t child = -1;
static struct cfg *cfg;

static void
say(int fd, const char *s)
{
	ssize_t n = send(fd, s, strlen(s), MSG_NOSIGNAL);
	(void)n;
}

/* Read one line (bounded); false on EOF. */
static bool
hear(int fd, char *buf, size_t len)
{
	size_t o = 0;

	while (o + 1 < len) {
		ssize_t n = recv(fd, buf + o, 1, 0);
		if (n <= 0)
			return false;
		if (buf[o++] == '\n')
			break;
	}
	buf[o] = '\0';
	return true;
}

static void
serve(enum script s)
{
	char line[256];
	int fd;

	alarm(5);
	if ((fd = accept(lfd, NULL, NULL)) < 0)
		_exit(2);
	switch (s) {
	case S_SILENT:
		sleep(3);
		_exit(0);
	case S_554:
		say(fd, "554 5.7.1 Access denied\r\n");
		_exit(0);
	case S_CLOSE:
		say(fd, "220 fake ESMTP\r\n");
		close(fd);
		_exit(0);
	case S_MULTILINE:
		say(fd, "220-fake ESMTP\r\n220-more\r\n220 end\r\n");
		break;
	default:
		say(fd, "220 fake ESMTP\r\n");
		break;
	}
	if (!hear(fd, line, sizeof(line)) || strcmp(line, "NOOP\r\n") != 0)
		_exit(3);
	if (s == S_NOOP_500) {
		say(fd, "500 5.5.1 no\r\n");
		_exit(0);
	}
	say(fd, s == S_MULTILINE ? "250-a\r\n250 2.0.0 Ok\r\n" :
	    "250 2.0.0 Ok\r\n");
	if (!hear(fd, line, sizeof(line)) || strcmp(line, "QUIT\r\n") != 0)
		_exit(4);
	say(fd, "221 2.0.0 Bye\r\n");
	_exit(0);
}

static void
start(enum script s)
{
	fflush(NULL);
	child = fork();
	cr_assert_geq(child, 0);
	if (child == 0)
		serve(s);
}

/* The fake server's exit status (0: the client behaved). */
static int
finish(void)
{
	int st;

	cr_assert_eq(waitpid(child, &st, 0), child);
	child = -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 100;
}

static void
set_listen(const char *ip)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)(void *)&cfg->listen[0].sa;

	memset(&cfg->listen[0], 0, sizeof(cfg->listen[0]));
	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	inet_pton(AF_INET, ip, &sin->sin_addr);
	cfg->listen[0].salen = sizeof(*sin);
	cfg->nlisten = 1;
}

static void
setup(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);

	signal(SIGPIPE, SIG_IGN);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(lfd, 0);
	cr_assert_eq(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	cr_assert_eq(listen(lfd, 4), 0);
	cr_assert_eq(getsockname(lfd, (struct sockaddr *)&sin, &sl), 0);
	port = ntohs(sin.sin_port);
	cfg = calloc(1, sizeof(*cfg));
	cr_assert_not_null(cfg);
	set_listen("127.0.0.1");
}

static void
teardown(void)
{
	if (child > 0) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	}
	close(lfd);
	free(cfg);
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

TestSuite(ping, .init = setup, .fini = teardown, .timeout = 20);

Test(ping, healthy)
{
	start(S_OK);
	cr_assert_eq(ping_run(cfg, 2.0), 0);
	cr_assert_eq(finish(), 0);
}

Test(ping, multiline_replies)
{
	start(S_MULTILINE);
	cr_assert_eq(ping_run(cfg, 2.0), 0);
	cr_assert_eq(finish(), 0);
}

Test(ping, wildcard_listen_means_loopback)
{
	set_listen("0.0.0.0");
	start(S_OK);
	cr_assert_eq(ping_run(cfg, 2.0), 0);
	cr_assert_eq(finish(), 0);
}

Test(ping, refused)
{
	double t0 = now();

	close(lfd);
	lfd = socket(AF_INET, SOCK_STREAM, 0);     /* keep teardown simple */
	cr_assert_eq(ping_run(cfg, 2.0), 1);
	cr_assert_lt(now() - t0, 1.0);
}

Test(ping, silent_server_hits_the_deadline)
{
	double t0 = now(), t;

	start(S_SILENT);
	cr_assert_eq(ping_run(cfg, 0.5), 1);
	t = now() - t0;
	cr_assert(t >= 0.45 && t < 2.0, "%.3f s", t);
}

Test(ping, greeting_554)
{
	start(S_554);
	cr_assert_eq(ping_run(cfg, 2.0), 1);
	cr_assert_eq(finish(), 0);
}

Test(ping, noop_refused)
{
	start(S_NOOP_500);
	cr_assert_eq(ping_run(cfg, 2.0), 1);
	cr_assert_eq(finish(), 0);
}

Test(ping, closed_after_greeting)
{
	start(S_CLOSE);
	cr_assert_eq(ping_run(cfg, 2.0), 1);
	cr_assert_eq(finish(), 0);
}

Test(ping, no_listen_address)
{
	cfg->nlisten = 0;
	cr_assert_eq(ping_run(cfg, 1.0), 1);
}
