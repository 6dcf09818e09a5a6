/*
 * workers.c - a pre-forked worker supervisor (see workers.h). The master
 * runs no event loop: it waits for signals with sigwaitinfo().
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "relay25/log.h"
#include "relay25/notify.h"
#include "relay25/workers.h"

#define WORKERS_MAX 64
#define CRASH_WINDOW 2.0     /* a worker dying this soon after start ... */
#define CRASH_LIMIT 5        /* ... this many times in a row: give up */

struct worker {
	pid_t pid;
	double started;
};

static double
now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static pid_t
spawn(int (*fn)(void *, unsigned), void *arg, unsigned idx,
    const sigset_t *oldmask)
{
	pid_t pid = fork();

	if (pid == 0) {
		sigprocmask(SIG_SETMASK, oldmask, NULL);
		_exit(fn(arg, idx));
	}
	if (pid < 0)
		log_error("fork: %s", strerror(errno));
	return pid;
}

static void
forward(struct worker *w, unsigned n, int sig)
{
	for (unsigned i = 0; i < n; i++)
		if (w[i].pid > 0)
			kill(w[i].pid, sig);
}

int
workers_run(unsigned n, int (*fn)(void *, unsigned), void *arg)
{
	struct worker w[WORKERS_MAX] = { { 0, 0 } };
	sigset_t set, old;
	bool stopping = false;
	unsigned alive = 0, crashes = 0;
	int rc = 0;

	if (n > WORKERS_MAX)
		n = WORKERS_MAX;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, &old);
	for (unsigned i = 0; i < n; i++) {
		if ((w[i].pid = spawn(fn, arg, i, &old)) > 0) {
			w[i].started = now_mono();
			alive++;
		}
	}
	log_info("started %u worker(s)", alive);
	notify_ready();           /* the master is the service's main PID */
	while (alive > 0) {
		siginfo_t si;
		int sig = sigwaitinfo(&set, &si);

		if (sig < 0)
			continue;
		if (sig == SIGTERM || sig == SIGINT) {
			if (!stopping) {
				log_info("signal %d: stopping %u worker(s)", sig,
				    alive);
				notify_stopping();
			}
			stopping = true;
			forward(w, n, sig);
			continue;
		}
		if (sig == SIGHUP || sig == SIGUSR1) {
			forward(w, n, sig);
			continue;
		}
		/* SIGCHLD: collect every worker that ended. */
		for (;;) {
			int status;
			pid_t pid = waitpid(-1, &status, WNOHANG);
			unsigned i;

			if (pid <= 0)
				break;
			for (i = 0; i < n && w[i].pid != pid; i++)
				;
			if (i == n)
				continue;
			w[i].pid = 0;
			alive--;
			bool clean = WIFEXITED(status) &&
			    WEXITSTATUS(status) == 0;
			if (stopping) {
				if (!clean)
					rc = 1;
				continue;
			}
			log_error("worker %u (pid %d) %s %d; restarting", i,
			    (int)pid, WIFSIGNALED(status) ? "killed by signal" :
			    "exited with", WIFSIGNALED(status) ?
			    WTERMSIG(status) : WEXITSTATUS(status));
			crashes = now_mono() - w[i].started < CRASH_WINDOW ?
			    crashes + 1 : 0;
			if (crashes >= CRASH_LIMIT) {
				log_error("workers keep dying at start; stopping");
				stopping = true;
				rc = 1;
				forward(w, n, SIGTERM);
				continue;
			}
			if ((w[i].pid = spawn(fn, arg, i, &old)) > 0) {
				w[i].started = now_mono();
				alive++;
			}
		}
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	log_info("all workers stopped");
	return rc;
}

unsigned
workers_auto(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n < 1 ? 1 : n > WORKERS_MAX ? WORKERS_MAX : (unsigned)n;
}
