/*
 * test_spool.c - the durable spool: write/commit/reopen round trip, abort,
 * crash injection at every step of spooling and of delivery (in a forked
 * child that _exit()s at the named point) followed by recovery, atomic
 * state updates, back-off bounds, size and age limits, done/fail, listing,
 * id order, exclusive claims between processes, the kick timer, the
 * --flush pid file, and the [server] spool_* configuration keys.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "relay25/config.h"
#include "relay25/log.h"
#include "relay25/spool.h"

static char dir[64];
static struct ev_loop *loop;

static const char *const rcpts2[] = { "b@example.net", "c@example.org" };
static const char body1[] = "Subject: hi\r\n\r\nline one\r\n..dot line\r\n";

static void
rm_tree(const char *path)
{
	char cmd[256];

	snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
	if (system(cmd) != 0)
		cr_log_warn("cannot remove %s", path);
}

static void
setup(void)
{
	snprintf(dir, sizeof dir, "/tmp/relay25-spool.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	loop = ev_loop_new(EVFLAG_AUTO);
	cr_assert_not_null(loop);
	spool_crash_point = NULL;
	log_init(CFG_LOG_ERROR, CFG_LOG_TEXT, CFG_LOG_STDERR);
}

static void
teardown(void)
{
	ev_loop_destroy(loop);
	rm_tree(dir);
}

TestSuite(spool, .init = setup, .fini = teardown);

static struct spool_params
params(void)
{
	return (struct spool_params){ .max_size = 0, .max_age = 0,
	    .retry_min = 60, .retry_max = 3600, .max_inflight = 4 };
}

static struct spool *
open_sp(const struct spool_params *p)
{
	char err[256] = "";
	struct spool *sp = spool_open(loop, dir, p, err, sizeof err);

	cr_assert_not_null(sp, "spool_open: %s", err);
	return sp;
}

/* Entries of dir/sub whose name ends in suffix ("" = a message id). */
static int
count(const char *sub, const char *suffix)
{
	char path[128];
	DIR *d;
	struct dirent *de;
	int n = 0;

	snprintf(path, sizeof path, "%s/%s", dir, sub);
	if (!(d = opendir(path)))
		return -1;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name), sl = strlen(suffix);
		if (de->d_name[0] == '.')
			continue;
		if (!*suffix ? strchr(de->d_name, '.') == NULL :
		    l > sl && strcmp(de->d_name + l - sl, suffix) == 0)
			n++;
	}
	closedir(d);
	return n;
}

static bool
exists(const char *sub, const char *name)
{
	char path[160];

	snprintf(path, sizeof path, "%s/%s/%s", dir, sub, name);
	return access(path, F_OK) == 0;
}

static char *
slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t cap = 0, n = 0, k;

	cr_assert_not_null(f, "%s", path);
	do {
		if (n + 4096 > cap)
			buf = realloc(buf, cap = cap * 2 + 8192);
		k = fread(buf + n, 1, 4096, f);
		n += k;
	} while (k > 0);
	fclose(f);
	buf[n] = '\0';
	if (len)
		*len = n;
	return buf;
}

static int
spool_one(struct spool *sp, const char *body, char *id)
{
	struct spool_writer *w = spool_begin(sp, "a@example.com", rcpts2, 2,
	    "SIZE=100 BODY=8BITMIME");

	if (!w)
		return -1;
	if (spool_write(w, body, strlen(body)) < 0) {
		spool_abort(w);
		return -1;
	}
	return spool_commit(w, id, SPOOL_ID_SIZE);
}

static void
read_fd(int fd, char *buf, size_t n)
{
	size_t got = 0;
	ssize_t k;

	while (got < n && (k = read(fd, buf + got, n - got)) > 0)
		got += (size_t)k;
	buf[got] = '\0';
}

/* Run fn in a child with the crash point set; its exit status. */
static int
in_child(const char *point, void (*fn)(void))
{
	int st;
	pid_t pid = fork();

	cr_assert_geq(pid, 0);
	if (pid == 0) {
		ev_loop_destroy(loop);
		loop = ev_loop_new(EVFLAG_AUTO);
		spool_crash_point = point;
		fn();
		_exit(0);
	}
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- children (no Criterion asserts: exit codes say what failed) ---- */

static void
child_write(void)
{
	struct spool_params p = params();
	char err[128], id[SPOOL_ID_SIZE];
	struct spool *sp = spool_open(loop, dir, &p, err, sizeof err);
	struct spool_writer *w;

	if (!sp)
		_exit(2);
	if (!(w = spool_begin(sp, "a@example.com", rcpts2, 2, NULL)))
		_exit(3);
	if (spool_write(w, "Subject: x\r\n\r\n", 14) < 0 ||
	    spool_write(w, body1, strlen(body1)) < 0)
		_exit(4);
	if (spool_commit(w, id, sizeof id) < 0)
		_exit(5);
	spool_close(sp);
}

static struct spool_item *
child_claim(struct spool **out)
{
	struct spool_params p = params();
	char err[128];
	struct spool *sp = spool_open(loop, dir, &p, err, sizeof err);
	struct spool_item *it;

	if (!sp)
		_exit(2);
	spool_flush(sp);
	if (!(it = spool_next_due(sp)))
		_exit(3);
	*out = sp;
	return it;
}

static void
child_deliver(void)
{
	struct spool *sp;
	struct spool_item *it = child_claim(&sp);

	spool_done(sp, it);
	spool_close(sp);
}

static void
child_retry(void)
{
	struct spool *sp;
	struct spool_item *it = child_claim(&sp);

	spool_retry(sp, it, "451 4.4.1 try again");
	spool_close(sp);
}

static void
child_fail(void)
{
	struct spool *sp;
	struct spool_item *it = child_claim(&sp);

	spool_fail(sp, it, "550 5.1.1 <b@example.net>: no such user");
	spool_close(sp);
}

/* ---- tests ---- */

Test(spool, round_trip)
{
	struct spool_params p = params();
	struct spool *sp = open_sp(&p);
	char id[SPOOL_ID_SIZE], buf[256];
	const struct spool_envelope *env;
	struct spool_item *it;
	struct spool_stats st;
	struct stat sb;
	int fd;

	cr_assert_eq(spool_one(sp, body1, id), 0);
	cr_assert_eq(strlen(id), SPOOL_ID_LEN);
	cr_assert(exists("queue", id));
	cr_assert_eq(count("new", ""), 0);
	snprintf(buf, sizeof buf, "%s/queue/%s", dir, id);
	cr_assert_eq(stat(buf, &sb), 0);
	cr_assert_eq(sb.st_mode & 0777, 0600);
	snprintf(buf, sizeof buf, "%s/queue", dir);
	cr_assert_eq(stat(buf, &sb), 0);
	cr_assert_eq(sb.st_mode & 0777, 0700);
	/* Not due before retry_min. */
	cr_assert_null(spool_next_due(sp));
	spool_close(sp);

	sp = open_sp(&p);
	spool_get_stats(sp, &st);
	cr_assert_eq(st.queued, 1);
	spool_flush(sp);
	it = spool_next_due(sp);
	cr_assert_not_null(it);
	cr_assert_null(spool_next_due(sp), "claimed once only");
	env = spool_item_envelope(it);
	cr_assert_str_eq(env->id, id);
	cr_assert_str_eq(env->sender, "a@example.com");
	cr_assert_str_eq(env->params, "SIZE=100 BODY=8BITMIME");
	cr_assert_eq(env->nrcpt, 2);
	cr_assert_str_eq(env->rcpts[0], "b@example.net");
	cr_assert_str_eq(env->rcpts[1], "c@example.org");
	cr_assert_eq(env->attempts, 0);
	cr_assert_eq(env->body_size, strlen(body1));
	fd = spool_item_open_body(it);
	cr_assert_geq(fd, 0);
	read_fd(fd, buf, sizeof buf - 1);
	close(fd);
	cr_assert_str_eq(buf, body1);
	spool_get_stats(sp, &st);
	cr_assert_eq(st.inflight, 1);
	spool_done(sp, it);
	cr_assert_not(exists("queue", id));
	spool_get_stats(sp, &st);
	cr_assert_eq(st.queued, 0);
	cr_assert_eq(st.queued_bytes, 0);
	cr_assert_eq(st.delivered, 1);
	cr_assert_eq(st.inflight, 0);
	spool_close(sp);
	sp = open_sp(&p);
	spool_flush(sp);
	cr_assert_null(spool_next_due(sp));
	spool_close(sp);
}

Test(spool, large_body_and_empty_sender)
{
	struct spool_params p = params();
	struct spool *sp = open_sp(&p);
	const char *r[] = { "x@example.net" };
	struct spool_writer *w = spool_begin(sp, "", r, 1, NULL);
	char id[SPOOL_ID_SIZE], *got;
	size_t n = 300000, glen;
	char *big = malloc(n);
	struct spool_item *it;
	int fd;

	for (size_t i = 0; i < n; i++)
		big[i] = (char)('a' + i % 26);
	cr_assert_not_null(w);
	for (size_t off = 0; off < n; off += 7001)
		cr_assert_eq(spool_write(w, big + off,
		    n - off < 7001 ? n - off : 7001), 0);
	cr_assert_eq(spool_commit(w, id, sizeof id), 0);
	spool_flush(sp);
	it = spool_next_due(sp);
	cr_assert_not_null(it);
	cr_assert_str_eq(spool_item_envelope(it)->sender, "");
	cr_assert_str_eq(spool_item_envelope(it)->params, "");
	cr_assert_eq(spool_item_envelope(it)->body_size, n);
	fd = spool_item_open_body(it);
	got = malloc(n + 1);
	read_fd(fd, got, n + 1);
	glen = strlen(got);
	close(fd);
	cr_assert_eq(glen, n);
	cr_assert_eq(memcmp(got, big, n), 0);
	spool_release(sp, it);
	free(got);
	free(big);
	spool_close(sp);
}

Test(spool, bad_envelope_is_einval)
{
	struct spool_params p = params();
	struct spool *sp = open_sp(&p);
	const char *bad[] = { "b@example.net\r\nrcpt evil@example.org" };

	errno = 0;
	cr_assert_null(spool_begin(sp, "a@x\n", rcpts2, 2, NULL));
	cr_assert_eq(errno, EINVAL);
	cr_assert_null(spool_begin(sp, "a@x", bad, 1, NULL));
	cr_assert_eq(errno, EINVAL);
	cr_assert_null(spool_begin(sp, "a@x", rcpts2, 0, NULL));
	cr_assert_eq(errno, EINVAL);
	cr_assert_null(spool_begin(sp, "a@x", rcpts2, 1, "SIZE=1\rX"));
	cr_assert_eq(count("new", ""), 0);
	spool_close(sp);
}

Test(spool, abort_leaves_nothing)
{
	struct spool_params p = params();
	struct spool *sp = open_sp(&p);
	struct spool_writer *w = spool_begin(sp, "a@x", rcpts2, 2, NULL);
	struct spool_stats st;

	cr_assert_not_null(w);
	cr_assert_eq(spool_write(w, body1, strlen(body1)), 0);
	cr_assert_eq(count("new", ""), 1);
	spool_abort(w);
	spool_abort(NULL);
	cr_assert_eq(count("new", ""), 0);
	cr_assert_eq(count("queue", ""), 0);
	spool_get_stats(sp, &st);
	cr_assert_eq(st.queued, 0);
	spool_close(sp);
}

/* Crash while spooling, before the rename: nothing queued, new/ cleaned;
 * after it: exactly one message, complete. */
Test(spool, crash_while_spooling)
{
	static const struct { const char *point; int queued; } c[] = {
		{ "write-partial", 0 },
		{ "commit-before-fsync", 0 },
		{ "commit-after-fsync", 0 },
		{ "commit-after-rename", 1 },
		{ "commit-after-dirsync", 1 },
		{ NULL, 1 },            /* no crash */
	};

	for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
		struct spool_params p = params();
		struct spool *sp;
		struct spool_item *it;
		int rc = in_child(c[i].point, child_write);

		cr_assert_eq(rc, c[i].point ? SPOOL_CRASH_EXIT : 0, "%s: %d",
		    c[i].point, rc);
		if (c[i].queued == 0)
			cr_assert_eq(count("new", ""), 1, "%s", c[i].point);
		sp = open_sp(&p);
		cr_assert_eq(count("new", ""), 0, "%s", c[i].point);
		cr_assert_eq(count("queue", ""), c[i].queued, "%s",
		    c[i].point);
		spool_flush(sp);
		it = spool_next_due(sp);
		if (c[i].queued) {
			char buf[256];
			int fd;
			cr_assert_not_null(it, "%s", c[i].point);
			fd = spool_item_open_body(it);
			read_fd(fd, buf, sizeof buf - 1);
			close(fd);
			cr_assert_eq(strncmp(buf, "Subject: x\r\n\r\n", 14), 0);
			cr_assert_str_eq(buf + 14, body1, "%s", c[i].point);
			cr_assert_null(spool_next_due(sp));
			spool_done(sp, it);
		} else {
			cr_assert_null(it, "%s", c[i].point);
		}
		spool_close(sp);
		cr_assert_eq(count("queue", ""), 0);
	}
}

/* A writer alive in another process (worker) keeps its file in new/. */
Test(spool, live_writer_survives_recovery)
{
	int go[2], ready[2];
	char ch = 0;
	pid_t pid;
	struct spool_params p = params();
	struct spool *sp;
	int st;

	cr_assert_eq(pipe(go), 0);
	cr_assert_eq(pipe(ready), 0);
	pid = fork();
	if (pid == 0) {
		char err[128];
		struct spool *csp;
		ev_loop_destroy(loop);
		loop = ev_loop_new(EVFLAG_AUTO);
		csp = spool_open(loop, dir, &p, err, sizeof err);
		struct spool_writer *w = csp ? spool_begin(csp, "a@x", rcpts2,
		    2, NULL) : NULL;
		if (!w || spool_write(w, "x\r\n", 3) < 0)
			_exit(2);
		if (write(ready[1], "r", 1) != 1 || read(go[0], &ch, 1) != 1)
			_exit(3);
		_exit(9);       /* killed before commit */
	}
	close(ready[1]);        /* a failed child ends the read */
	cr_assert_eq(read(ready[0], &ch, 1), 1);
	sp = open_sp(&p);
	cr_assert_eq(count("new", ""), 1, "a live writer's file was removed");
	spool_close(sp);
	cr_assert_eq(write(go[1], "g", 1), 1);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert_eq(WEXITSTATUS(st), 9);
	sp = open_sp(&p);
	cr_assert_eq(count("new", ""), 0);
	cr_assert_eq(count("queue", ""), 0);
	spool_close(sp);
	close(go[0]);
	close(go[1]);
	close(ready[0]);
}

/* Crash during delivery. */
Test(spool, crash_while_delivering)
{
	static const struct { const char *point; int queued; } c[] = {
		{ "deliver-after-claim", 1 },   /* nothing sent: retried */
		{ "deliver-after-250", 1 },     /* THE duplicate window */
		{ "deliver-after-unlink", 0 },  /* delivered once, gone */
		{ NULL, 0 },
	};

	for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
		struct spool_params p = params();
		struct spool *sp = open_sp(&p);
		char id[SPOOL_ID_SIZE];
		struct spool_item *it;
		int rc;

		cr_assert_eq(spool_one(sp, body1, id), 0);
		/* A state file, so the orphan clean-up is exercised. */
		spool_flush(sp);
		it = spool_next_due(sp);
		cr_assert_not_null(it);
		spool_retry(sp, it, "451 first");
		cr_assert(exists("queue", "") || true);
		spool_close(sp);
		rc = in_child(c[i].point, child_deliver);
		cr_assert_eq(rc, c[i].point ? SPOOL_CRASH_EXIT : 0, "%s: %d",
		    c[i].point, rc);
		sp = open_sp(&p);
		cr_assert_eq(count("queue", ""), c[i].queued, "%s",
		    c[i].point);
		cr_assert_eq(count("queue", ".state"), c[i].queued, "%s",
		    c[i].point);
		spool_flush(sp);
		it = spool_next_due(sp);
		if (c[i].queued) {
			cr_assert_not_null(it);
			cr_assert_eq(spool_item_envelope(it)->attempts, 1);
			spool_done(sp, it);
		} else {
			cr_assert_null(it);
		}
		cr_assert_eq(count("queue", ""), 0);
		cr_assert_eq(count("queue", ".state"), 0);
		spool_close(sp);
	}
}

/* A crash between writing ID.state.tmp and the rename keeps the old
 * state; after the rename the new one. */
Test(spool, state_update_is_atomic)
{
	struct spool_params p = params();
	struct spool *sp = open_sp(&p);
	char id[SPOOL_ID_SIZE], path[160], *s;
	struct spool_item *it;

	cr_assert_eq(spool_one(sp, body1, id), 0);
	spool_flush(sp);
	it = spool_next_due(sp);
	spool_retry(sp, it, "451 4.4.1 first");
	spool_close(sp);
	snprintf(path, sizeof path, "%s/queue/%s.state", dir, id);
	s = slurp(path, NULL);
	cr_assert(strstr(s, "attempts 1\n"));
	free(s);

	cr_assert_eq(in_child("retry-after-state-tmp", child_retry),
	    SPOOL_CRASH_EXIT);
	s = slurp(path, NULL);
	cr_assert(strstr(s, "attempts 1\n"), "old state kept: %s", s);
	cr_assert(strstr(s, "error 451 4.4.1 first\n"));
	free(s);
	cr_assert_eq(count("queue", ".state.tmp"), 1);
	sp = open_sp(&p);
	spool_flush(sp);
	it = spool_next_due(sp);
	cr_assert_not_null(it);
	cr_assert_eq(spool_item_envelope(it)->attempts, 1);
	cr_assert_str_eq(spool_item_envelope(it)->last_error,
	    "451 4.4.1 first");
	spool_release(sp, it);
	spool_close(sp);

	cr_assert_eq(in_child("retry-after-state-rename", child_retry),
	    SPOOL_CRASH_EXIT);
	s = slurp(path, NULL);
	cr_assert(strstr(s, "attempts 2\n"), "%s", s);
	cr_assert(strstr(s, "error 451 4.4.1 try again\n"));
	free(s);
	cr_assert_eq(count("queue", ""), 1);
}

Test(spool, backoff_bounds)
{
	struct spool_params p = params();
	double prev = 0;

	for (unsigned a = 0; a < 40; a++) {
		double base = p.retry_min * (a < 20 ? (double)(1u << a) : 1e9);
		if (base > p.retry_max)
			base = p.retry_max;
		double lo = spool_backoff(&p, a, 0);
		double mid = spool_backoff(&p, a, 0.5);
		double hi = spool_backoff(&p, a, 0.999999);
		cr_assert_float_eq(lo, base * 0.8, 1e-6, "a=%u", a);
		cr_assert_float_eq(mid, base, 1e-6, "a=%u", a);
		cr_assert_leq(hi, base * 1.2 + 1e-6);
		cr_assert_geq(mid, prev, "monotonic at a=%u", a);
		prev = mid;
		for (int k = 0; k < 50; k++) {
			double d = spool_backoff(&p, a, drand48());
			cr_assert_geq(d, base * 0.8 - 1e-9);
			cr_assert_leq(d, base * 1.2 + 1e-9);
		}
	}
	cr_assert_float_eq(spool_backoff(&p, 0, 0.5), 60, 1e-9);
	cr_assert_float_eq(spool_backoff(&p, 1, 0.5), 120, 1e-9);
	cr_assert_float_eq(spool_backoff(&p, 5, 0.5), 1920, 1e-9);
	cr_assert_float_eq(spool_backoff(&p, 6, 0.5), 3600, 1e-9);
	cr_assert_float_eq(spool_backoff(&p, 4000000000u, 0.5), 3600, 1e-9);
}

/* The persisted next attempt follows the back-off. */
Test(spool, retry_schedules_later)
{
	struct spool_params p = params();
	struct spool *sp = open_sp(&p);
	char id[SPOOL_ID_SIZE], path[160], *s, *n;
	struct spool_item *it;
	struct timespec ts;
	double next, now;

	cr_assert_eq(spool_one(sp, body1, id), 0);
	for (unsigned a = 1; a <= 3; a++) {
		spool_flush(sp);
		it = spool_next_due(sp);
		cr_assert_not_null(it);
		cr_assert_eq(spool_item_envelope(it)->attempts, a - 1);
		spool_retry(sp, it, "421 4.3.0 later");
		cr_assert_null(spool_next_due(sp), "not due right after");
		snprintf(path, sizeof path, "%s/queue/%s.state", dir, id);
		s = slurp(path, NULL);
		n = strstr(s, "next ");
		cr_assert_not_null(n);
		next = strtod(n + 5, NULL);
		clock_gettime(CLOCK_REALTIME, &ts);
		now = (double)ts.tv_sec + ts.tv_nsec / 1e9;
		double base = 60.0 * (1 << a);
		cr_assert_geq(next - now, base * 0.8 - 1, "a=%u", a);
		cr_assert_leq(next - now, base * 1.2 + 1, "a=%u", a);
		free(s);
	}
	spool_close(sp);
}

Test(spool, max_size_enospc)
{
	struct spool_params p = params();
	struct spool *sp;
	struct spool_writer *w;
	struct spool_stats st;
	char id[SPOOL_ID_SIZE], big[2000];

	p.max_size = 1500;
	sp = open_sp(&p);
	memset(big, 'x', sizeof big);
	/* The first fits; the second would go over while writing. */
	cr_assert_eq(spool_one(sp, "small\r\n", id), 0);
	w = spool_begin(sp, "a@x", rcpts2, 2, NULL);
	cr_assert_not_null(w);
	errno = 0;
	cr_assert_eq(spool_write(w, big, sizeof big), -1);
	cr_assert_eq(errno, ENOSPC);
	cr_assert_eq(spool_write(w, "x", 1), -1, "a failed writer stays failed");
	spool_abort(w);
	/* A second message that fits. */
	w = spool_begin(sp, "a@x", rcpts2, 2, NULL);
	cr_assert_eq(spool_write(w, big, 1000), 0);
	cr_assert_eq(spool_commit(w, id, sizeof id), 0);
	spool_get_stats(sp, &st);
	cr_assert_eq(st.queued, 2);
	cr_assert_eq(st.refused, 1);
	spool_close(sp);
	/* Exactly full (the index is rebuilt at open): spool_begin refuses. */
	p.max_size = st.queued_bytes;
	sp = open_sp(&p);
	errno = 0;
	cr_assert_null(spool_begin(sp, "a@x", rcpts2, 2, NULL));
	cr_assert_eq(errno, ENOSPC);
	cr_assert_eq(count("new", ""), 0);
	/* Delivering one makes room again. */
	spool_flush(sp);
	spool_done(sp, spool_next_due(sp));
	w = spool_begin(sp, "a@x", rcpts2, 2, NULL);
	cr_assert_not_null(w);
	spool_abort(w);
	spool_get_stats(sp, &st);
	cr_assert_eq(st.queued, 1);
	cr_assert_gt(st.queued_bytes, 1000);
	spool_close(sp);
}

Test(spool, max_age_expires_to_failed)
{
	struct spool_params p = params();
	struct spool *sp;
	char id[SPOOL_ID_SIZE], id2[SPOOL_ID_SIZE], path[160], *s;
	struct spool_item *it;
	struct spool_stats st;

	p.max_age = 0.3;
	sp = open_sp(&p);
	cr_assert_eq(spool_one(sp, body1, id), 0);
	cr_assert_eq(spool_one(sp, body1, id2), 0);
	/* One gets a retry first, so its last error is kept. */
	spool_flush(sp);
	it = spool_next_due(sp);
	cr_assert_str_eq(spool_item_envelope(it)->id, id);
	spool_retry(sp, it, "451 4.4.1 unreachable");
	usleep(400000);
	spool_flush(sp);
	cr_assert_null(spool_next_due(sp));
	cr_assert(exists("failed", id));
	cr_assert(exists("failed", id2));
	cr_assert_eq(count("queue", ""), 0);
	cr_assert_eq(count("queue", ".state"), 0);
	snprintf(path, sizeof path, "%s/failed/%s.state", dir, id);
	s = slurp(path, NULL);
	cr_assert(strstr(s, "reply expired: last error: 451 4.4.1 unreachable"),
	    "%s", s);
	free(s);
	spool_get_stats(sp, &st);
	cr_assert_eq(st.expired, 2);
	cr_assert_eq(st.queued, 0);
	spool_close(sp);
}

/* spool_retry of a message past max_age fails it as expired. */
Test(spool, retry_past_max_age)
{
	struct spool_params p = params();
	struct spool *sp;
	char id[SPOOL_ID_SIZE];
	struct spool_item *it;

	p.max_age = 0.2;
	sp = open_sp(&p);
	cr_assert_eq(spool_one(sp, body1, id), 0);
	spool_flush(sp);
	it = spool_next_due(sp);
	cr_assert_not_null(it);
	usleep(300000);
	spool_retry(sp, it, "451 still down");
	cr_assert(exists("failed", id));
	cr_assert_not(exists("queue", id));
	spool_close(sp);
}

Test(spool, fail_moves_to_failed_and_lists)
{
	struct spool_params p = params();
	struct spool *sp = open_sp(&p);
	char id[SPOOL_ID_SIZE], id2[SPOOL_ID_SIZE], path[160], *s, *out;
	struct spool_item *it;
	struct spool_stats st;
	size_t len;
	FILE *f;

	cr_assert_eq(spool_one(sp, body1, id), 0);
	cr_assert_eq(spool_one(sp, body1, id2), 0);
	spool_flush(sp);
	it = spool_next_due(sp);
	cr_assert_str_eq(spool_item_envelope(it)->id, id, "oldest first");
	spool_fail(sp, it, "550 5.1.1 <b@example.net>: no such user\r\n");
	it = spool_next_due(sp);
	cr_assert_str_eq(spool_item_envelope(it)->id, id2);
	spool_retry(sp, it, "451 4.4.1 \"upstream\" down");
	cr_assert(exists("failed", id));
	cr_assert(exists("failed", "") || true);
	cr_assert_not(exists("queue", id));
	snprintf(path, sizeof path, "%s/failed/%s.state", dir, id);
	s = slurp(path, NULL);
	cr_assert(strstr(s, "reply 550 5.1.1 <b@example.net>: no such user\n"),
	    "%s", s);
	free(s);
	spool_get_stats(sp, &st);
	cr_assert_eq(st.failed, 1);
	cr_assert_eq(st.retried, 1);
	cr_assert_eq(st.queued, 1);

	snprintf(path, sizeof path, "%s/list.txt", dir);
	f = fopen(path, "w+");
	cr_assert_eq(spool_list(dir, f), 0);
	fclose(f);
	out = slurp(path, &len);
	cr_assert(strstr(out, "queue: 1 message(s)"), "%s", out);
	cr_assert(strstr(out, "failed: 1 message(s)"), "%s", out);
	cr_assert(strstr(out, id2), "%s", out);
	cr_assert(strstr(out, "from <a@example.com>  rcpts 2  attempts 1  "
	    "next in "), "%s", out);
	cr_assert(strstr(out, "error \"451 4.4.1 \\\"upstream\\\" down\""),
	    "%s", out);
	cr_assert(strstr(out, "reason \"550 5.1.1 <b@example.net>: no such "
	    "user\""), "%s", out);
	/* queue section before failed section */
	cr_assert_lt(strstr(out, id2) - out, strstr(out, id) - out);
	free(out);
	spool_close(sp);
	errno = 0;
	cr_assert_eq(spool_list("/nonexistent/relay25", stdout), -1);
	cr_assert_eq(errno, ENOENT);
}

Test(spool, crash_while_failing)
{
	static const struct { const char *point; int queued, failed; } c[] = {
		{ "fail-after-state", 1, 0 },   /* still queued: retried */
		{ "fail-after-rename", 0, 1 },
		{ NULL, 0, 1 },
	};

	for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
		struct spool_params p = params();
		struct spool *sp;
		char id[SPOOL_ID_SIZE];
		int rc;

		rm_tree(dir);
		cr_assert_eq(mkdir(dir, 0700), 0);
		sp = open_sp(&p);
		cr_assert_eq(spool_one(sp, body1, id), 0);
		spool_flush(sp);
		spool_retry(sp, spool_next_due(sp), "451 first");
		spool_close(sp);
		rc = in_child(c[i].point, child_fail);
		cr_assert_eq(rc, c[i].point ? SPOOL_CRASH_EXIT : 0, "%s: %d",
		    c[i].point, rc);
		sp = open_sp(&p);
		cr_assert_eq(count("queue", ""), c[i].queued, "%s", c[i].point);
		cr_assert_eq(count("queue", ".state"), c[i].queued, "%s",
		    c[i].point);
		cr_assert_eq(count("failed", ""), c[i].failed, "%s", c[i].point);
		cr_assert_eq(count("failed", ".state"), c[i].failed, "%s",
		    c[i].point);
		spool_close(sp);
	}
}

Test(spool, corrupt_file_goes_to_failed)
{
	struct spool_params p = params();
	struct spool *sp;
	const char *id = "00000000000001-0001-00000000";
	char path[160];
	FILE *f;

	sp = open_sp(&p);
	spool_close(sp);
	snprintf(path, sizeof path, "%s/queue/%s", dir, id);
	f = fopen(path, "w");
	fputs("garbage\n", f);
	fclose(f);
	snprintf(path, sizeof path, "%s/queue/not-an-id", dir);
	f = fopen(path, "w");
	fclose(f);
	sp = open_sp(&p);
	spool_flush(sp);
	cr_assert_null(spool_next_due(sp));
	cr_assert(exists("failed", id));
	cr_assert(exists("queue", "not-an-id"), "foreign files untouched");
	spool_close(sp);
}

Test(spool, ids_are_ordered_and_unique)
{
	struct spool_params p = params();
	struct spool *sp = open_sp(&p);
	char prev[SPOOL_ID_SIZE] = "";

	for (int i = 0; i < 2000; i++) {
		struct spool_writer *w = spool_begin(sp, "a@x", rcpts2, 1, NULL);
		const char *id;
		cr_assert_not_null(w);
		id = spool_writer_id(w);
		cr_assert_eq(strlen(id), SPOOL_ID_LEN);
		cr_assert_eq(strspn(id, "0123456789abcdef-"), SPOOL_ID_LEN);
		cr_assert_gt(strcmp(id, prev), 0, "%s after %s", id, prev);
		snprintf(prev, sizeof prev, "%s", id);
		spool_abort(w);
	}
	spool_close(sp);
}

/* Two processes (workers) on one spool: a claimed message is not handed
 * out by the other; what one delivers disappears from the other. */
Test(spool, claims_are_exclusive_between_processes)
{
	struct spool_params p = params();
	struct spool *sp = open_sp(&p), *sp2;
	char id[SPOOL_ID_SIZE], ch;
	int go[2], ready[2], st;
	pid_t pid;

	cr_assert_eq(spool_one(sp, body1, id), 0);
	cr_assert_eq(pipe(go), 0);
	cr_assert_eq(pipe(ready), 0);
	pid = fork();
	if (pid == 0) {
		struct spool *csp;
		struct spool_item *it;
		ev_loop_destroy(loop);
		loop = ev_loop_new(EVFLAG_AUTO);
		it = child_claim(&csp);
		if (write(ready[1], "r", 1) != 1 || read(go[0], &ch, 1) != 1)
			_exit(4);
		spool_done(csp, it);
		spool_close(csp);
		_exit(0);
	}
	close(ready[1]);
	cr_assert_eq(read(ready[0], &ch, 1), 1);
	spool_flush(sp);
	cr_assert_null(spool_next_due(sp), "claimed by the other process");
	cr_assert_eq(write(go[1], "g", 1), 1);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert_eq(WEXITSTATUS(st), 0);
	spool_flush(sp);
	cr_assert_null(spool_next_due(sp));
	struct spool_stats s;
	spool_get_stats(sp, &s);
	cr_assert_eq(s.queued, 0);
	/* A message committed by another process is picked up by a rescan
	 * (flush rescans). */
	cr_assert_eq(in_child(NULL, child_write), 0);
	sp2 = sp;
	spool_flush(sp2);
	struct spool_item *it = spool_next_due(sp2);
	cr_assert_not_null(it);
	spool_done(sp2, it);
	spool_close(sp2);
	close(go[0]);
	close(go[1]);
	close(ready[0]);
}

Test(spool, max_inflight)
{
	struct spool_params p = params();
	struct spool *sp;
	struct spool_item *its[3];
	char id[SPOOL_ID_SIZE];

	p.max_inflight = 2;
	sp = open_sp(&p);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(spool_one(sp, body1, id), 0);
	spool_flush(sp);
	its[0] = spool_next_due(sp);
	its[1] = spool_next_due(sp);
	cr_assert_not_null(its[0]);
	cr_assert_not_null(its[1]);
	cr_assert_null(spool_next_due(sp));
	cr_assert_lt(strcmp(spool_item_envelope(its[0])->id,
	    spool_item_envelope(its[1])->id), 0);
	spool_done(sp, its[0]);
	its[2] = spool_next_due(sp);
	cr_assert_not_null(its[2]);
	spool_release(sp, its[1]);
	spool_release(sp, its[2]);
	spool_close(sp);
	cr_assert_eq(count("queue", ""), 2);
}

struct kickctx {
	struct spool *sp;
	int kicks, delivered;
};

static void
on_kick(void *arg)
{
	struct kickctx *k = arg;
	struct spool_item *it;

	k->kicks++;
	while ((it = spool_next_due(k->sp))) {
		k->delivered++;
		spool_done(k->sp, it);
	}
	if (k->delivered == 2)
		ev_break(loop, EVBREAK_ALL);
}

static void
on_guard(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	ev_break(l, EVBREAK_ALL);
}

/* The timer kicks the deliverer when messages become due. */
Test(spool, kick_when_due)
{
	struct spool_params p = params();
	struct kickctx k = { 0 };
	char id[SPOOL_ID_SIZE];
	ev_timer guard;

	p.retry_min = 0.05;
	p.retry_max = 0.1;
	p.kick = on_kick;
	p.kick_arg = &k;
	k.sp = open_sp(&p);
	cr_assert_eq(spool_one(k.sp, body1, id), 0);
	cr_assert_eq(spool_one(k.sp, body1, id), 0);
	cr_assert_eq(k.kicks, 0, "never kicked from inside a spool call");
	ev_timer_init(&guard, on_guard, 3, 0);
	ev_timer_start(loop, &guard);
	ev_run(loop, 0);
	ev_timer_stop(loop, &guard);
	cr_assert_eq(k.delivered, 2);
	cr_assert_geq(k.kicks, 1);
	spool_close(k.sp);
	cr_assert_eq(count("queue", ""), 0);
}

/* The spool's timer alone keeps no loop running. */
Test(spool, timer_keeps_no_loop_alive)
{
	struct spool_params p = params();
	struct spool *sp = open_sp(&p);
	char id[SPOOL_ID_SIZE];

	cr_assert_eq(spool_one(sp, body1, id), 0);
	ev_run(loop, 0);        /* returns at once */
	spool_close(sp);
}

Test(spool, pidfile_and_request_flush)
{
	char err[256], path[160];
	sigset_t set, old;
	pid_t pid;
	int st;
	FILE *f;

	errno = 0;
	cr_assert_eq(spool_request_flush(dir, err, sizeof err), -1);
	cr_assert_eq(errno, ENOENT);
	cr_assert(strstr(err, "relay25.pid"), "%s", err);
	cr_assert_eq(spool_pidfile_write(dir), 0);
	/* We are test_spool, not relay25. */
	errno = 0;
	cr_assert_eq(spool_request_flush(dir, err, sizeof err), -1);
	cr_assert_eq(errno, EPERM, "%s", err);
	spool_pidfile_remove(dir);
	snprintf(path, sizeof path, "%s/relay25.pid", dir);
	cr_assert_neq(access(path, F_OK), 0);

	/* A process named relay25 gets SIGUSR1. */
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, &old);
	pid = fork();
	if (pid == 0) {
		int sig = 0;
		prctl(PR_SET_NAME, "relay25");
		alarm(5);
		sigwait(&set, &sig);
		_exit(sig == SIGUSR1 ? 0 : 1);
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	f = fopen(path, "w");
	fprintf(f, "%ld\n", (long)pid);
	fclose(f);
	/* Let the child rename itself first. */
	for (int i = 0; i < 100; i++) {
		char comm[64] = "", cp[64];
		FILE *c;
		snprintf(cp, sizeof cp, "/proc/%ld/comm", (long)pid);
		if ((c = fopen(cp, "r"))) {
			if (!fgets(comm, sizeof comm, c))
				comm[0] = '\0';
			fclose(c);
		}
		if (strncmp(comm, "relay25", 7) == 0)
			break;
		usleep(10000);
	}
	cr_assert_eq(spool_request_flush(dir, err, sizeof err), 0, "%s", err);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* Now dead. */
	errno = 0;
	cr_assert_eq(spool_request_flush(dir, err, sizeof err), -1);
	cr_assert_eq(errno, ESRCH, "%s", err);
}

/* Real SIGKILLs at random moments, alternating between a child that
 * spools messages in a loop, reporting "ack ID" on a pipe once
 * spool_commit() returned (= the client got 250), and a child that
 * delivers what is queued, reporting "250 ID" when the (simulated) ESP
 * accepted it, just before spool_done(). After each kill -9 and a restart:
 * new/ is empty; every acknowledged message is queued or was delivered;
 * a queued message nobody acknowledged is at most the one being committed
 * when the kill came; a delivered message still queued is at most the
 * last one of its round (killed between the ESP's 250 and the unlink: the
 * duplicate window of spool.h). At the end everything is delivered, and
 * exactly the messages caught in that window were delivered twice. */
#define KILL_MAX 8192

struct kill_book {
	char id[KILL_MAX][SPOOL_ID_SIZE];
	int delivered[KILL_MAX];
	size_t n;
	int windows;            /* deliveries caught in the window */
};

static char *
read_all(int fd)
{
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap);
	ssize_t k;

	while ((k = read(fd, buf + n, cap - n - 1)) > 0) {
		n += (size_t)k;
		if (cap - n < 64)
			buf = realloc(buf, cap *= 2);
	}
	buf[n] = '\0';
	return buf;
}

static size_t
book_find(struct kill_book *b, const char *id, bool add)
{
	for (size_t i = 0; i < b->n; i++)
		if (strcmp(b->id[i], id) == 0)
			return i;
	cr_assert(add, "unknown id %s", id);
	cr_assert_lt(b->n, KILL_MAX);
	snprintf(b->id[b->n], SPOOL_ID_SIZE, "%s", id);
	b->delivered[b->n] = 0;
	return b->n++;
}

static void
killed_child(int wfd, bool deliver)
{
	struct spool_params p = params();
	char err[128], id[SPOOL_ID_SIZE], line[64];
	struct spool *sp;
	struct spool_item *it;
	int n;

	ev_loop_destroy(loop);
	loop = ev_loop_new(EVFLAG_AUTO);
	if (!(sp = spool_open(loop, dir, &p, err, sizeof err)))
		_exit(2);
	if (deliver) {
		spool_flush(sp);
		while ((it = spool_next_due(sp))) {
			n = snprintf(line, sizeof line, "250 %s\n",
			    spool_item_envelope(it)->id);
			if (write(wfd, line, (size_t)n) != n)
				_exit(3);
			spool_done(sp, it);
		}
		pause();        /* wait for the kill */
	}
	for (;;) {
		if (spool_one(sp, body1, id) < 0)
			_exit(4);
		n = snprintf(line, sizeof line, "ack %s\n", id);
		if (write(wfd, line, (size_t)n) != n)
			_exit(3);
	}
}

/* The message ids in dir/queue. */
static size_t
queue_ids(char (*ids)[SPOOL_ID_SIZE], size_t max)
{
	char path[128];
	DIR *d;
	struct dirent *de;
	size_t n = 0;

	snprintf(path, sizeof path, "%s/queue", dir);
	cr_assert_not_null(d = opendir(path));
	while ((de = readdir(d)) && n < max)
		if (strlen(de->d_name) == SPOOL_ID_LEN)
			snprintf(ids[n++], SPOOL_ID_SIZE, "%s", de->d_name);
	closedir(d);
	return n;
}

static void
kill_round(struct kill_book *b, bool deliver, bool kill_it)
{
	static char q[KILL_MAX][SPOOL_ID_SIZE];
	struct spool_params p = params();
	char *out, *line, *save = NULL, last[SPOOL_ID_SIZE] = "";
	int pfd[2], st, extra = 0;
	struct spool *sp;
	size_t nq;
	pid_t pid;

	cr_assert_eq(pipe(pfd), 0);
	pid = fork();
	if (pid == 0) {
		close(pfd[0]);
		killed_child(pfd[1], deliver);
	}
	close(pfd[1]);
	usleep(kill_it ? 1000 + (useconds_t)(lrand48() % 50000) : 300000);
	kill(pid, SIGKILL);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	out = read_all(pfd[0]);
	close(pfd[0]);
	for (line = strtok_r(out, "\n", &save); line;
	    line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "ack ", 4) == 0)
			book_find(b, line + 4, true);
		if (strncmp(line, "250 ", 4) == 0) {
			b->delivered[book_find(b, line + 4, false)]++;
			snprintf(last, sizeof last, "%s", line + 4);
		}
	}
	free(out);
	sp = open_sp(&p);       /* recovery */
	spool_close(sp);
	cr_assert_eq(count("new", ""), 0);
	nq = queue_ids(q, KILL_MAX);
	for (size_t i = 0; i < nq; i++) {
		size_t k;
		for (k = 0; k < b->n && strcmp(b->id[k], q[i]) != 0; k++)
			;
		if (k == b->n) {
			/* Committed, killed before the client got 250. */
			cr_assert(!deliver, "%s appeared", q[i]);
			cr_assert_eq(++extra, 1, "more than one unacked");
			book_find(b, q[i], true);
		} else if (b->delivered[k] > 0) {
			cr_assert(deliver && strcmp(q[i], last) == 0, "%s "
			    "delivered and still queued, not the last one",
			    q[i]);
			b->windows++;
		}
	}
	for (size_t k = 0; k < b->n; k++) {
		bool queued = false;
		for (size_t i = 0; i < nq && !queued; i++)
			queued = strcmp(q[i], b->id[k]) == 0;
		cr_assert(queued || b->delivered[k] > 0, "%s lost", b->id[k]);
	}
}

Test(spool, kill_9_while_spooling_and_delivering, .timeout = 120)
{
	struct kill_book *b = calloc(1, sizeof *b);
	int dup = 0;

	srand48(getpid());
	for (int round = 0; round < 30; round++)
		kill_round(b, round % 2 == 1, true);
	kill_round(b, true, false);     /* drain */
	cr_assert_eq(count("queue", ""), 0);
	for (size_t k = 0; k < b->n; k++) {
		cr_assert_geq(b->delivered[k], 1, "%s never delivered",
		    b->id[k]);
		dup += b->delivered[k] - 1;
	}
	cr_assert_eq(dup, b->windows);
	cr_log_info("kill -9: %zu messages, %d duplicate(s) in the window",
	    b->n, dup);
	free(b);
}

/* ---- [server] spool_* keys ---- */

static struct cfg *
load_ini(const char *text, char *err, size_t errlen)
{
	char path[160];
	FILE *f, *e;
	struct cfg *c;
	static char *const noenv[] = { NULL };

	snprintf(path, sizeof path, "%s/r.ini", dir);
	f = fopen(path, "w");
	fputs(text, f);
	fclose(f);
	e = fmemopen(err, errlen, "w");
	c = cfg_load(path, noenv, e, NULL);
	fclose(e);
	return c;
}

Test(spool, config_keys)
{
	char err[1024] = "", out[8192] = "";
	struct cfg *c;
	FILE *f;

	c = load_ini("[upstream]\nhost = smtp.example.net\n", err, sizeof err);
	cr_assert_not_null(c, "%s", err);
	cr_assert_null(c->spool_dir);
	cr_assert_eq(c->spool_max_size, UINT64_C(1) << 30);
	cr_assert_float_eq(c->spool_max_age, 5 * 86400, 1e-9);
	cr_assert_float_eq(c->spool_retry_min, 60, 1e-9);
	cr_assert_float_eq(c->spool_retry_max, 3600, 1e-9);
	cr_assert_eq(c->spool_max_inflight, 4);
	f = fmemopen(out, sizeof out, "w");
	cfg_print(c, f);
	fclose(f);
	cr_assert(strstr(out, "spool_max_age = 5d\n"), "%s", out);
	cr_assert(strstr(out, "spool_max_size = 1G\n"), "%s", out);
	cfg_free(c);

	c = load_ini("[server]\nspool_dir = /var/spool/relay25\n"
	    "spool_max_size = 200M\nspool_max_age = 36h\n"
	    "spool_retry_min = 30s\nspool_retry_max = 2h\n"
	    "spool_max_inflight = 8\n"
	    "[upstream]\nhost = smtp.example.net\n", err, sizeof err);
	cr_assert_not_null(c, "%s", err);
	cr_assert_str_eq(c->spool_dir, "/var/spool/relay25");
	cr_assert_eq(c->spool_max_size, UINT64_C(200) << 20);
	cr_assert_float_eq(c->spool_max_age, 36 * 3600, 1e-9);
	cr_assert_float_eq(c->spool_retry_min, 30, 1e-9);
	cr_assert_float_eq(c->spool_retry_max, 7200, 1e-9);
	cr_assert_eq(c->spool_max_inflight, 8);
	cfg_free(c);

	c = load_ini("[server]\nspool_retry_min = 2h\nspool_retry_max = 1h\n"
	    "[upstream]\nhost = smtp.example.net\n", err, sizeof err);
	cr_assert_null(c);
	cr_assert(strstr(err, "r.ini:3: spool_retry_max is shorter than "
	    "spool_retry_min"), "%s", err);
	c = load_ini("[server]\nspool_max_inflight = 0\n"
	    "[upstream]\nhost = smtp.example.net\n", err, sizeof err);
	cr_assert_null(c);
	c = load_ini("[server]\nspool_max_age = 5D\n"
	    "[upstream]\nhost = smtp.example.net\n", err, sizeof err);
	cr_assert_null(c);
}
