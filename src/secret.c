/*
 * secret.c - the per-upstream secret cache (see secret.h).
 *
 * A refresh is a job: `sh -c COMMAND` spawned (posix_spawn, its own
 * process group, stdin /dev/null, no inherited descriptors, default
 * signals) with stdout on a non-blocking pipe. The loop reads the pipe
 * (ev_io), reaps the child (ev_child: libev's default loop reaps every
 * child, so a waitpid() of our own would race it) and kills the process
 * group when the timer fires. The job ends when the child has exited; what
 * is still in the pipe then is drained, and a grandchild holding the pipe
 * open is not waited for.
 *
 * Requests waiting for a refresh are a list on the cache. When the job
 * ends the list is detached and each callback runs with a private copy of
 * the secret, so a callback may cancel other requests or free the cache.
 * A job whose cache was freed is orphaned: its child is killed and the job
 * frees itself once reaped.
 */
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "relay25/log.h"
#include "relay25/secret.h"

extern char **environ;

#define container_of(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

#define SECRET_WHY 200
#define SECRET_EARLY_MAX 60.0   /* refresh a token at most this early */

enum secret_kind { SK_STATIC, SK_COMMAND, SK_FILE };

struct secret_req {
	struct secret_req *next, **prevp;   /* the cache's waiters */
	struct secret_cache *c;
	secret_cb *cb;
	void *arg;
	bool delivering;        /* detached from the cache, callback due */
	bool cancelled;
};

struct secret_job {
	struct secret_job *next, **prevp;   /* live jobs */
	struct secret_cache *c;             /* NULL: orphaned */
	struct ev_loop *loop;
	pid_t pid;
	int fd;                             /* read end of stdout, or -1 */
	ev_io io;
	ev_child child;
	ev_timer timer;
	char *buf;                          /* SECRET_OUTPUT_MAX bytes */
	size_t len;
	bool exited, over, timed_out, read_error;
	int status;
};

struct secret_cache {
	enum secret_kind kind;
	bool token;
	char *command, *file;
	double timeout;
	char label[200];

	char *value;            /* the secret, or NULL */
	bool stale;             /* rejected by a server: obtain a new one */
	ev_tstamp refresh_at;   /* 0: never by time */
	ev_tstamp expires;      /* 0: never */
	bool have_id;           /* token_file identity of what value is */
	struct stat id;

	struct secret_job *job;
	struct secret_req *waiters, **wtail;

	bool failed;            /* the last refresh failed ... */
	ev_tstamp failed_at;    /* ... at this time */
	char why[SECRET_WHY];
	unsigned runs;
};

/* Jobs still running, orphaned ones included (reachable until reaped). */
static struct secret_job *live_jobs;

static void
secret_wipe_free(char *s)
{
	if (s == NULL)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}

const char *
secret_source(const struct secret_cache *c)
{
	switch (c->kind) {
	case SK_COMMAND: return c->token ? "token_command" : "password_command";
	case SK_FILE:    return "token_file";
	case SK_STATIC:  break;
	}
	return "password";
}

bool
secret_refreshable(const struct secret_cache *c)
{
	return c != NULL && c->kind != SK_STATIC;
}

unsigned
secret_runs(const struct secret_cache *c)
{
	return c->runs;
}

bool
secret_busy(const struct secret_cache *c)
{
	return c->job != NULL;
}

struct secret_cache *
secret_new(const struct secret_params *p)
{
	struct secret_cache *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->wtail = &c->waiters;
	c->token = p->token;
	c->timeout = p->timeout > 0 ? p->timeout : 60.0;
	snprintf(c->label, sizeof(c->label), "%s", p->label ? p->label : "");
	if (p->command != NULL) {
		c->kind = SK_COMMAND;
		c->command = strdup(p->command);
		if (c->command == NULL)
			goto fail;
	} else if (p->file != NULL) {
		c->kind = SK_FILE;
		c->file = strdup(p->file);
		if (c->file == NULL)
			goto fail;
	} else {
		c->kind = SK_STATIC;
		c->value = strdup(p->value ? p->value : "");
		if (c->value == NULL)
			goto fail;
	}
	return c;
fail:
	free(c->command);
	free(c->file);
	free(c);
	return NULL;
}

/* ---- parsing what a command printed or a file holds ------------------ */

static bool
is_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' ||
	    ch == '\f' || ch == '\v';
}

/* A password: the first line, trailing CRs removed. */
static char *
secret_parse_password(const char *buf, size_t len, char *why, size_t whylen)
{
	const char *nl = memchr(buf, '\n', len);
	size_t n = nl ? (size_t)(nl - buf) : len;
	char *s;

	while (n > 0 && buf[n - 1] == '\r')
		n--;
	if (n == 0) {
		snprintf(why, whylen, "the first line is empty");
		return NULL;
	}
	if (memchr(buf, '\0', n) != NULL) {
		snprintf(why, whylen, "the first line contains a NUL byte");
		return NULL;
	}
	if (n > SECRET_PASSWORD_MAX) {
		snprintf(why, whylen, "the first line is longer than %d bytes",
		    SECRET_PASSWORD_MAX);
		return NULL;
	}
	if ((s = malloc(n + 1)) == NULL) {
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	memcpy(s, buf, n);
	s[n] = '\0';
	return s;
}

/* A token: "TOKEN [LIFETIME]" with any whitespace around. strict: nothing
 * may follow (commands); else the rest is ignored (files). *lifetime is 0
 * when none was given. */
static char *
secret_parse_token(const char *buf, size_t len, bool strict, double *lifetime,
    char *why, size_t whylen)
{
	size_t i = 0, t0, tn, l0;
	double life = 0;
	char *s;

	*lifetime = 0;
	while (i < len && is_space(buf[i]))
		i++;
	for (t0 = i; i < len && !is_space(buf[i]); i++) {
		unsigned char ch = (unsigned char)buf[i];
		if (ch < 0x21 || ch > 0x7e) {
			snprintf(why, whylen, "the token contains a control "
			    "or non-ASCII byte");
			return NULL;
		}
	}
	tn = i - t0;
	if (tn == 0) {
		snprintf(why, whylen, "no token in the output");
		return NULL;
	}
	if (tn > SECRET_TOKEN_MAX) {
		snprintf(why, whylen, "the token is longer than %d bytes",
		    SECRET_TOKEN_MAX);
		return NULL;
	}
	if (strict) {
		while (i < len && is_space(buf[i]))
			i++;
		for (l0 = i; i < len && !is_space(buf[i]); i++) {
			if (buf[i] < '0' || buf[i] > '9' || i - l0 >= 9) {
				snprintf(why, whylen, "the lifetime after the "
				    "token is not a number of seconds");
				return NULL;
			}
			life = life * 10 + (buf[i] - '0');
		}
		if (i > l0 && life < 1) {
			snprintf(why, whylen, "the lifetime after the token is 0");
			return NULL;
		}
		while (i < len && is_space(buf[i]))
			i++;
		if (i < len) {
			snprintf(why, whylen, "unexpected output after the "
			    "token and its lifetime");
			return NULL;
		}
	}
	if ((s = malloc(tn + 1)) == NULL) {
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	memcpy(s, buf + t0, tn);
	s[tn] = '\0';
	*lifetime = life;
	return s;
}

/* ---- results ---------------------------------------------------------- */

/* Install a new secret (taken over) obtained at now. */
static void
secret_install(struct secret_cache *c, char *value, double lifetime,
    ev_tstamp now)
{
	double early;

	secret_wipe_free(c->value);
	c->value = value;
	c->stale = false;
	c->failed = false;
	c->refresh_at = c->expires = 0;
	if (c->kind == SK_COMMAND && c->token) {
		if (lifetime <= 0)
			lifetime = SECRET_TOKEN_TTL;
		early = lifetime / 10 < SECRET_EARLY_MAX ? lifetime / 10 :
		    SECRET_EARLY_MAX;
		c->expires = now + lifetime;
		c->refresh_at = c->expires - early;
	}
}

static void
secret_set_failed(struct secret_cache *c, ev_tstamp now, const char *why)
{
	c->failed = true;
	c->failed_at = now;
	snprintf(c->why, sizeof(c->why), "%s failed: %s", secret_source(c),
	    why);
	log_warn("%s: %s", c->label, c->why);
}

/* Call every waiting request's callback (the secret or the failure). */
static void
secret_deliver(struct secret_cache *c, bool ok)
{
	struct secret_req *list = c->waiters, *r, *next;
	char *copy = NULL;
	char why[SECRET_WHY];

	c->waiters = NULL;
	c->wtail = &c->waiters;
	for (r = list; r != NULL; r = r->next)
		r->delivering = true;
	snprintf(why, sizeof(why), "%s", c->why);
	if (ok && (copy = strdup(c->value)) == NULL)
		snprintf(why, sizeof(why), "out of memory");
	/* From here on c may be freed by a callback. */
	for (r = list; r != NULL; r = next) {
		next = r->next;
		if (!r->cancelled)
			r->cb(r->arg, copy, copy ? NULL : why);
		free(r);
	}
	secret_wipe_free(copy);
}

/* ---- command jobs ----------------------------------------------------- */

static void
secret_job_close_fd(struct secret_job *j)
{
	if (j->fd < 0)
		return;
	ev_io_stop(j->loop, &j->io);
	close(j->fd);
	j->fd = -1;
}

/* Read what the pipe holds now; false once it is finished (EOF, error,
 * too much output). */
static bool
secret_job_read(struct secret_job *j)
{
	char tmp[512];
	ssize_t n;

	for (;;) {
		if (j->len < SECRET_OUTPUT_MAX)
			n = read(j->fd, j->buf + j->len,
			    SECRET_OUTPUT_MAX - j->len);
		else
			n = read(j->fd, tmp, sizeof(tmp));
		if (n > 0) {
			if (j->len >= SECRET_OUTPUT_MAX) {
				explicit_bzero(tmp, sizeof(tmp));
				j->over = true;
				if (!j->exited)
					kill(-j->pid, SIGKILL);
				return false;
			}
			j->len += (size_t)n;
			continue;
		}
		if (n == 0)
			return false;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return true;
		j->read_error = true;
		return false;
	}
}

static void
secret_job_free(struct secret_job *j)
{
	secret_job_close_fd(j);
	ev_child_stop(j->loop, &j->child);
	ev_timer_stop(j->loop, &j->timer);
	*j->prevp = j->next;
	if (j->next != NULL)
		j->next->prevp = j->prevp;
	explicit_bzero(j->buf, SECRET_OUTPUT_MAX);
	free(j->buf);
	free(j);
}

/* The child has exited: judge the output and hand it to the cache. */
static void
secret_job_done(struct secret_job *j)
{
	struct secret_cache *c = j->c;
	ev_tstamp now = ev_now(j->loop);
	char why[SECRET_WHY];
	double life = 0;
	char *v = NULL;
	int st = j->status;

	if (c == NULL) {
		secret_job_free(j);
		return;
	}
	c->job = NULL;
	if (j->timed_out)
		snprintf(why, sizeof(why), "timed out after %.0f s (killed)",
		    c->timeout);
	else if (j->over)
		snprintf(why, sizeof(why), "printed more than %d bytes",
		    SECRET_OUTPUT_MAX);
	else if (j->read_error)
		snprintf(why, sizeof(why), "cannot read its output");
	else if (WIFSIGNALED(st))
		snprintf(why, sizeof(why), "killed by signal %d", WTERMSIG(st));
	else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		snprintf(why, sizeof(why), "exited with status %d",
		    WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	else if (c->token)
		v = secret_parse_token(j->buf, j->len, true, &life, why,
		    sizeof(why));
	else
		v = secret_parse_password(j->buf, j->len, why, sizeof(why));
	secret_job_free(j);
	if (v != NULL) {
		secret_install(c, v, life, now);
		if (c->token && life > 0)
			log_debug("%s: %s gave a token (lifetime %.0f s)",
			    c->label, secret_source(c), life);
		else
			log_debug("%s: %s gave a %s", c->label,
			    secret_source(c), c->token ? "token" : "password");
	} else
		secret_set_failed(c, now, why);
	secret_deliver(c, v != NULL);
}

static void
secret_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct secret_job *j = container_of(w, struct secret_job, io);

	(void)loop;
	(void)revents;
	if (!secret_job_read(j))
		secret_job_close_fd(j);
}

static void
secret_child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
	struct secret_job *j = container_of(w, struct secret_job, child);

	(void)loop;
	(void)revents;
	j->exited = true;
	j->status = w->rstatus;
	ev_child_stop(j->loop, &j->child);
	/* What the child wrote before exiting is in the pipe; a grandchild
	 * that still holds it open is not waited for. */
	if (j->fd >= 0)
		secret_job_read(j);
	secret_job_done(j);
}

static void
secret_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct secret_job *j = container_of(w, struct secret_job, timer);

	(void)loop;
	(void)revents;
	j->timed_out = true;
	if (!j->exited)
		kill(-j->pid, SIGKILL);
}

/* Spawn sh -c command; -1 with c->why on failure. */
static int
secret_job_start(struct secret_cache *c, struct ev_loop *loop)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, dfl;
	struct secret_job *j;
	char *argv[] = { "sh", "-c", c->command, NULL };
	int fds[2], rc;
	static const int dfl_sigs[] = { SIGPIPE, SIGINT, SIGQUIT, SIGTERM,
	    SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2, SIGALRM };

	if ((j = calloc(1, sizeof(*j))) == NULL ||
	    (j->buf = malloc(SECRET_OUTPUT_MAX)) == NULL) {
		free(j);
		secret_set_failed(c, ev_now(loop), "out of memory");
		return -1;
	}
	if (pipe2(fds, O_CLOEXEC) < 0) {
		char why[SECRET_WHY];
		snprintf(why, sizeof(why), "cannot run: %s", strerror(errno));
		free(j->buf);
		free(j);
		secret_set_failed(c, ev_now(loop), why);
		return -1;
	}
	fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);

	sigemptyset(&none);
	sigemptyset(&dfl);
	for (size_t i = 0; i < sizeof(dfl_sigs) / sizeof(dfl_sigs[0]); i++)
		sigaddset(&dfl, dfl_sigs[i]);
	posix_spawnattr_init(&at);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP |
	    POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	posix_spawnattr_setpgroup(&at, 0);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &dfl);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 34)
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
#endif
	rc = posix_spawn(&j->pid, "/bin/sh", &fa, &at, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	close(fds[1]);
	if (rc != 0) {
		char why[SECRET_WHY];
		snprintf(why, sizeof(why), "cannot run: %s", strerror(rc));
		close(fds[0]);
		free(j->buf);
		free(j);
		secret_set_failed(c, ev_now(loop), why);
		return -1;
	}
	c->runs++;
	log_debug("%s: running %s (pid %ld)", c->label, secret_source(c),
	    (long)j->pid);
	j->c = c;
	j->loop = loop;
	j->fd = fds[0];
	j->next = live_jobs;
	j->prevp = &live_jobs;
	if (live_jobs != NULL)
		live_jobs->prevp = &j->next;
	live_jobs = j;
	ev_io_init(&j->io, secret_io_cb, j->fd, EV_READ);
	ev_io_start(loop, &j->io);
	ev_child_init(&j->child, secret_child_cb, j->pid, 0);
	ev_child_start(loop, &j->child);
	ev_timer_init(&j->timer, secret_timer_cb, c->timeout, 0);
	ev_timer_start(loop, &j->timer);
	c->job = j;
	return 0;
}

/* ---- token files ------------------------------------------------------ */

static bool
same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino &&
	    a->st_size == b->st_size &&
	    a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
	    a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	    a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
	    a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static enum secret_res
secret_file_get(struct secret_cache *c, struct ev_loop *loop,
    const char **out)
{
	char why[SECRET_WHY], *buf = NULL, *v = NULL;
	struct stat st;
	double life;
	ssize_t n;
	size_t len = 0;
	int fd;

	if (stat(c->file, &st) == 0 && c->value != NULL && !c->stale &&
	    c->have_id && same_file(&st, &c->id)) {
		*out = c->value;
		return SECRET_OK;
	}
	c->runs++;
	if ((fd = open(c->file, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0) {
		snprintf(why, sizeof(why), "%s: %s", c->file, strerror(errno));
		goto fail;
	}
	if (fstat(fd, &st) < 0) {
		snprintf(why, sizeof(why), "%s: %s", c->file, strerror(errno));
		close(fd);
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(why, sizeof(why), "%s: not a regular file", c->file);
		close(fd);
		goto fail;
	}
	if ((buf = malloc(SECRET_OUTPUT_MAX)) == NULL) {
		snprintf(why, sizeof(why), "out of memory");
		close(fd);
		goto fail;
	}
	while (len < SECRET_OUTPUT_MAX &&
	    (n = read(fd, buf + len, SECRET_OUTPUT_MAX - len)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(why, sizeof(why), "%s: %s", c->file,
			    strerror(errno));
			close(fd);
			goto fail;
		}
		len += (size_t)n;
	}
	close(fd);
	v = secret_parse_token(buf, len, false, &life, why, sizeof(why));
	if (v == NULL)
		goto fail;
	explicit_bzero(buf, SECRET_OUTPUT_MAX);
	free(buf);
	secret_install(c, v, 0, ev_now(loop));
	c->id = st;
	c->have_id = true;
	log_debug("%s: read token_file", c->label);
	*out = c->value;
	return SECRET_OK;
fail:
	if (buf != NULL) {
		explicit_bzero(buf, SECRET_OUTPUT_MAX);
		free(buf);
	}
	secret_set_failed(c, ev_now(loop), why);
	*out = c->why;
	return SECRET_FAILED;
}

/* ---- the API ---------------------------------------------------------- */

enum secret_res
secret_get(struct secret_cache *c, struct ev_loop *loop, secret_cb *cb,
    void *arg, struct secret_req **reqp, const char **out)
{
	struct secret_req *r;
	ev_tstamp now = ev_now(loop);

	*reqp = NULL;
	if (c->kind == SK_STATIC) {
		*out = c->value;
		return SECRET_OK;
	}
	if (c->kind == SK_FILE)
		return secret_file_get(c, loop, out);
	if (!ev_is_default_loop(loop)) {
		snprintf(c->why, sizeof(c->why), "%s needs the default event "
		    "loop", secret_source(c));
		*out = c->why;
		return SECRET_FAILED;
	}
	if (c->value != NULL && !c->stale &&
	    (c->expires == 0 || now < c->expires)) {
		/* Still valid; close to its end, renew in the background. */
		if (c->refresh_at != 0 && now >= c->refresh_at &&
		    c->job == NULL && !(c->failed &&
		    now - c->failed_at < SECRET_RETRY_AFTER))
			(void)secret_job_start(c, loop);
		*out = c->value;
		return SECRET_OK;
	}
	if (c->job == NULL) {
		if (c->failed && now - c->failed_at < SECRET_RETRY_AFTER) {
			*out = c->why;
			return SECRET_FAILED;
		}
		if (secret_job_start(c, loop) < 0) {
			*out = c->why;
			return SECRET_FAILED;
		}
	}
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		*out = "out of memory";
		return SECRET_FAILED;
	}
	r->c = c;
	r->cb = cb;
	r->arg = arg;
	r->prevp = c->wtail;
	*c->wtail = r;
	c->wtail = &r->next;
	*reqp = r;
	*out = NULL;
	return SECRET_PENDING;
}

void
secret_cancel(struct secret_req *r)
{
	if (r == NULL)
		return;
	if (r->delivering) {
		r->cancelled = true;
		return;
	}
	*r->prevp = r->next;
	if (r->next != NULL)
		r->next->prevp = r->prevp;
	else
		r->c->wtail = r->prevp;
	free(r);
}

void
secret_invalidate(struct secret_cache *c, const char *rejected)
{
	if (c == NULL || c->kind == SK_STATIC || c->value == NULL)
		return;
	if (rejected != NULL && strcmp(c->value, rejected) != 0)
		return;
	c->stale = true;
}

void
secret_free(struct secret_cache *c)
{
	struct secret_req *r, *next;

	if (c == NULL)
		return;
	if (c->job != NULL) {
		c->job->c = NULL;
		if (!c->job->exited)
			kill(-c->job->pid, SIGKILL);
		c->job = NULL;
	}
	for (r = c->waiters; r != NULL; r = next) {
		next = r->next;
		free(r);
	}
	secret_wipe_free(c->value);
	free(c->command);
	free(c->file);
	explicit_bzero(c->why, sizeof(c->why));
	free(c);
}
