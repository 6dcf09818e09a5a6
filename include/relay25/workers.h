/*
 * workers.h - run the server in N worker processes that share the
 * listening sockets (each with its own event loop and upstream pools), and
 * supervise them: SIGTERM/SIGINT/SIGHUP are forwarded, a worker that dies
 * is restarted (a crash loop stops the whole service instead).
 */
#ifndef RELAY25_WORKERS_H
#define RELAY25_WORKERS_H

/* fn runs in each worker with its index (0..n-1) and returns the worker's
 * exit status. Returns the master's exit status: 0 after a clean stop. */
int workers_run(unsigned n, int (*fn)(void *arg, unsigned idx), void *arg);

/* "auto": the number of online processors (at least 1). */
unsigned workers_auto(void);

#endif
