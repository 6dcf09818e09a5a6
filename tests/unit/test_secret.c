/*
 * test_secret.c - the per-upstream secret cache: static secrets, commands
 * run as child processes watched by the loop (cache hit, expiry,
 * invalidation, joining, cancel, failure, timeout, bounded output, a slow
 * command that does not block the loop) and token files.
 */
#include <criterion/criterion.h>
#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "relay25/secret.h"

static struct ev_loop *loop;
static char dir[64];

struct got {
	int calls;
	char value[256];
	char why[256];
	bool ok;
};

static void
got_cb(void *arg, const char *secret, const char *why)
{
	struct got *g = arg;

	g->calls++;
	g->ok = secret != NULL;
	snprintf(g->value, sizeof(g->value), "%s", secret ? secret : "");
	snprintf(g->why, sizeof(g->why), "%s", why ? why : "");
}

static void
setup_loop(void)
{
	loop = ev_default_loop(0);
	snprintf(dir, sizeof(dir), "/tmp/relay25-secret-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void
teardown_loop(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

static double
now_wall(void)
{
	return ev_time();
}

/* Run the loop until *flag is non-zero or `secs` pass. */
static void
run_until(const int *flag, double secs)
{
	double end = now_wall() + secs;

	while (*flag == 0 && now_wall() < end)
		ev_run(loop, EVRUN_ONCE);
}

static void
run_while_busy(struct secret_cache *c, double secs)
{
	double end = now_wall() + secs;

	while (secret_busy(c) && now_wall() < end)
		ev_run(loop, EVRUN_ONCE);
}

static struct secret_cache *
cmd_cache(const char *cmd, bool token, double timeout)
{
	struct secret_params p = { .command = cmd, .token = token,
	    .timeout = timeout, .label = "test" };
	struct secret_cache *c = secret_new(&p);

	cr_assert_not_null(c);
	return c;
}

/* A command that counts its runs in dir/n and prints PREFIX<n> SUFFIX. */
static char *
counting(const char *prefix, const char *suffix)
{
	static char cmd[512];

	snprintf(cmd, sizeof(cmd), "n=$(cat %s/n 2>/dev/null || echo 0); "
	    "n=$((n+1)); echo $n > %s/n; echo \"%s$n%s\"", dir, dir, prefix,
	    suffix);
	return cmd;
}

/* get and wait: the secret (or "" on failure, with the reason in g). */
static const char *
get_wait(struct secret_cache *c, struct got *g)
{
	struct secret_req *req;
	const char *out;

	memset(g, 0, sizeof(*g));
	switch (secret_get(c, loop, got_cb, g, &req, &out)) {
	case SECRET_OK:
		snprintf(g->value, sizeof(g->value), "%s", out);
		g->ok = true;
		return g->value;
	case SECRET_FAILED:
		snprintf(g->why, sizeof(g->why), "%s", out);
		return "";
	case SECRET_PENDING:
		cr_assert_not_null(req);
		run_until(&g->calls, 10);
		cr_assert_eq(g->calls, 1);
		return g->value;
	}
	return "";
}

TestSuite(secret, .init = setup_loop, .fini = teardown_loop);

Test(secret, static_value)
{
	struct secret_params p = { .value = "pw", .label = "t" };
	struct secret_cache *c = secret_new(&p);
	struct secret_req *req = (void *)1;
	const char *out;

	cr_assert_eq(secret_get(c, loop, got_cb, NULL, &req, &out), SECRET_OK);
	cr_assert_str_eq(out, "pw");
	cr_assert_null(req);
	cr_assert_not(secret_refreshable(c));
	secret_invalidate(c, "pw");
	cr_assert_eq(secret_get(c, loop, got_cb, NULL, &req, &out), SECRET_OK);
	cr_assert_str_eq(out, "pw");
	cr_assert_str_eq(secret_source(c), "password");
	secret_free(c);
}

Test(secret, command_cached_and_invalidated)
{
	struct secret_cache *c = cmd_cache(counting("pw", ""), false, 10);
	struct secret_req *req;
	struct got g;
	const char *out;

	cr_assert(secret_refreshable(c));
	cr_assert_str_eq(secret_source(c), "password_command");
	cr_assert_str_eq(get_wait(c, &g), "pw1");
	/* a hit: answered at once, nothing run */
	cr_assert_eq(secret_get(c, loop, got_cb, &g, &req, &out), SECRET_OK);
	cr_assert_str_eq(out, "pw1");
	cr_assert_eq(secret_runs(c), 1);
	/* another connection already has a newer one: no effect */
	secret_invalidate(c, "something else");
	cr_assert_eq(secret_get(c, loop, got_cb, &g, &req, &out), SECRET_OK);
	cr_assert_eq(secret_runs(c), 1);
	/* the server rejected pw1: the next get runs the command again */
	secret_invalidate(c, "pw1");
	cr_assert_str_eq(get_wait(c, &g), "pw2");
	cr_assert_eq(secret_runs(c), 2);
	cr_assert_str_eq(get_wait(c, &g), "pw2");
	cr_assert_eq(secret_runs(c), 2);
	secret_free(c);
}

Test(secret, password_is_first_line)
{
	struct secret_cache *c = cmd_cache("printf 'p w;#\\r\\nmore\\n'", false,
	    10);
	struct got g;

	cr_assert_str_eq(get_wait(c, &g), "p w;#");
	secret_free(c);
}

Test(secret, token_lifetime_and_expiry)
{
	struct secret_cache *c = cmd_cache(counting("tok", " 1"), true, 10);
	struct secret_req *req;
	struct got g;
	const char *out;

	cr_assert_str_eq(secret_source(c), "token_command");
	cr_assert_str_eq(get_wait(c, &g), "tok1");
	cr_assert_eq(secret_get(c, loop, got_cb, &g, &req, &out), SECRET_OK);
	cr_assert_str_eq(out, "tok1");
	/* lifetime 1 s: expired after 1.1 s, the next get waits for a new
	 * token */
	ev_sleep(1.1);
	ev_now_update(loop);
	cr_assert_str_eq(get_wait(c, &g), "tok2");
	cr_assert_eq(secret_runs(c), 2);
	secret_free(c);
}

Test(secret, token_renewed_in_background)
{
	struct secret_cache *c = cmd_cache(counting("tok", " 2"), true, 10);
	struct secret_req *req;
	struct got g;
	const char *out;

	cr_assert_str_eq(get_wait(c, &g), "tok1");
	/* lifetime 2 s: renewed from 1.8 s on, while still valid */
	memset(&g, 0, sizeof(g));
	ev_sleep(1.85);
	ev_now_update(loop);
	cr_assert_eq(secret_get(c, loop, got_cb, &g, &req, &out), SECRET_OK);
	cr_assert_str_eq(out, "tok1");
	cr_assert(secret_busy(c));
	run_while_busy(c, 10);
	cr_assert_eq(secret_get(c, loop, got_cb, &g, &req, &out), SECRET_OK);
	cr_assert_str_eq(out, "tok2");
	cr_assert_eq(g.calls, 0);
	secret_free(c);
}

Test(secret, token_without_lifetime)
{
	struct secret_cache *c = cmd_cache("printf '  abc.DEF-123_x/+=  \\n'",
	    true, 10);
	struct got g;

	cr_assert_str_eq(get_wait(c, &g), "abc.DEF-123_x/+=");
	secret_free(c);
}

static void
expect_failure(const char *cmd, bool token, double timeout, const char *why)
{
	struct secret_cache *c = cmd_cache(cmd, token, timeout);
	struct got g;

	cr_assert_str_eq(get_wait(c, &g), "", "%s", cmd);
	cr_assert_not(g.ok);
	cr_assert_not_null(strstr(g.why, why), "%s: got \"%s\"", cmd, g.why);
	cr_assert_null(strstr(g.why, "leaked"));
	secret_free(c);
}

Test(secret, token_format_errors)
{
	expect_failure("true", true, 10, "no token in the output");
	expect_failure("echo 'tok 12x'", true, 10, "not a number of seconds");
	expect_failure("echo 'tok 0'", true, 10, "the lifetime after the token is 0");
	expect_failure("echo 'tok 10 leaked'", true, 10,
	    "unexpected output after the token");
	expect_failure("printf 'to\\001k'", true, 10, "control");
	expect_failure("head -c 9000 /dev/zero | tr '\\0' a", true, 10,
	    "the token is longer than 8192 bytes");
	expect_failure("true", false, 10, "the first line is empty");
	expect_failure("head -c 5000 /dev/zero | tr '\\0' a", false, 10,
	    "longer than 4096 bytes");
}

Test(secret, command_failure)
{
	struct secret_cache *c = cmd_cache("echo leaked; exit 3", false, 10);
	struct secret_req *req;
	struct got g;
	const char *out;

	cr_assert_str_eq(get_wait(c, &g), "");
	cr_assert_str_eq(g.why, "password_command failed: exited with status 3");
	/* remembered for a while: answered at once, not run again */
	cr_assert_eq(secret_get(c, loop, got_cb, &g, &req, &out), SECRET_FAILED);
	cr_assert_str_eq(out, "password_command failed: exited with status 3");
	cr_assert_eq(secret_runs(c), 1);
	secret_free(c);

	expect_failure("kill -9 $$", false, 10, "killed by signal 9");
	expect_failure("exec /nonexistent/relay25-cmd", true, 10,
	    "exited with status 127");
}

Test(secret, output_bounded)
{
	expect_failure("head -c 100000 /dev/zero | tr '\\0' a", false, 10,
	    "printed more than 65536 bytes");
	/* a command that never stops printing is killed */
	expect_failure("yes leaked", true, 10, "printed more than 65536 bytes");
}

Test(secret, timeout_kills_the_process_group)
{
	char cmd[256], path[128], buf[32];
	double t0 = now_wall();
	FILE *f;

	snprintf(path, sizeof(path), "%s/pid", dir);
	snprintf(cmd, sizeof(cmd), "sleep 30 & echo $! > %s; wait", path);
	expect_failure(cmd, false, 0.3, "timed out");
	cr_assert_lt(now_wall() - t0, 5.0);
	/* the grandchild (sleep) was killed with the group: gone or a
	 * zombie waiting for its new parent */
	f = fopen(path, "r");
	cr_assert_not_null(f);
	cr_assert_not_null(fgets(buf, sizeof(buf), f));
	fclose(f);
	pid_t pid = (pid_t)atoi(buf);
	char stat[64], line[256] = "";
	snprintf(stat, sizeof(stat), "/proc/%d/stat", (int)pid);
	for (int i = 0; i < 50; i++) {
		f = fopen(stat, "r");
		if (f == NULL)
			break;
		if (fgets(line, sizeof(line), f) == NULL)
			line[0] = '\0';
		fclose(f);
		if (strstr(line, ") Z ") != NULL)
			break;
		usleep(20000);
	}
	cr_assert(f == NULL || strstr(line, ") Z ") != NULL,
	    "sleep still running: %s", line);
}

static int ticks;

static void
tick_cb(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)l;
	(void)w;
	(void)revents;
	ticks++;
}

/* A slow command never blocks the loop: a 20 ms timer keeps firing while
 * it runs, and secret_get() itself returns at once. */
Test(secret, slow_command_does_not_block)
{
	struct secret_cache *c = cmd_cache("sleep 1; echo tok-slow", true, 10);
	struct secret_req *req;
	struct got g = { 0 };
	const char *out;
	ev_timer tick;
	double t0;

	ev_timer_init(&tick, tick_cb, 0.02, 0.02);
	ev_timer_start(loop, &tick);
	t0 = now_wall();
	cr_assert_eq(secret_get(c, loop, got_cb, &g, &req, &out),
	    SECRET_PENDING);
	cr_assert_lt(now_wall() - t0, 0.2);
	run_until(&g.calls, 10);
	ev_timer_stop(loop, &tick);
	cr_assert_eq(g.calls, 1);
	cr_assert_str_eq(g.value, "tok-slow");
	cr_assert_geq(now_wall() - t0, 0.9);
	cr_assert_geq(ticks, 25, "the loop stalled: %d ticks", ticks);
	secret_free(c);
}

/* Requests during a refresh join it: one run, every callback. */
Test(secret, concurrent_gets_join)
{
	struct secret_cache *c = cmd_cache(counting("j", ""), false, 10);
	struct secret_req *r1, *r2, *r3;
	struct got g1 = { 0 }, g2 = { 0 }, g3 = { 0 };
	const char *out;

	cr_assert_eq(secret_get(c, loop, got_cb, &g1, &r1, &out), SECRET_PENDING);
	cr_assert_eq(secret_get(c, loop, got_cb, &g2, &r2, &out), SECRET_PENDING);
	cr_assert_eq(secret_get(c, loop, got_cb, &g3, &r3, &out), SECRET_PENDING);
	secret_cancel(r2);
	run_until(&g3.calls, 10);
	cr_assert_eq(g1.calls, 1);
	cr_assert_eq(g2.calls, 0, "cancelled request called back");
	cr_assert_eq(g3.calls, 1);
	cr_assert_str_eq(g1.value, "j1");
	cr_assert_str_eq(g3.value, "j1");
	cr_assert_eq(secret_runs(c), 1);
	secret_free(c);
}

struct freeing {
	struct secret_cache *c;
	struct secret_req *other;
	int calls;
};

static void
free_cb(void *arg, const char *secret, const char *why)
{
	struct freeing *f = arg;

	(void)why;
	cr_assert_str_eq(secret, "x");
	f->calls++;
	secret_cancel(f->other);        /* delivered next: now cancelled */
	secret_free(f->c);
}

static void
never_cb(void *arg, const char *secret, const char *why)
{
	(void)arg;
	(void)secret;
	(void)why;
	cr_assert_fail("cancelled request called back");
}

/* A callback may cancel other requests and free the cache. */
Test(secret, callback_frees_cache)
{
	struct freeing f = { 0 };
	struct secret_req *r1;
	const char *out;

	f.c = cmd_cache("echo x", false, 10);
	cr_assert_eq(secret_get(f.c, loop, free_cb, &f, &r1, &out),
	    SECRET_PENDING);
	cr_assert_eq(secret_get(f.c, loop, never_cb, NULL, &f.other, &out),
	    SECRET_PENDING);
	run_until(&f.calls, 10);
	cr_assert_eq(f.calls, 1);
}

/* Freeing the cache kills a running command; the loop is not held. */
Test(secret, free_while_running)
{
	struct secret_cache *c = cmd_cache("sleep 30", false, 60);
	struct secret_req *req;
	const char *out;
	double t0 = now_wall();

	cr_assert_eq(secret_get(c, loop, never_cb, NULL, &req, &out),
	    SECRET_PENDING);
	secret_free(c);
	ev_run(loop, 0);        /* returns once the killed child is reaped */
	cr_assert_lt(now_wall() - t0, 5.0);
}

Test(secret, token_file_reread_when_changed)
{
	struct secret_params p = { .token = true, .label = "t" };
	char path[128];
	struct secret_cache *c;
	struct got g;
	FILE *f;

	snprintf(path, sizeof(path), "%s/token", dir);
	f = fopen(path, "w");
	fputs("tokA 3600\n", f);
	fclose(f);
	p.file = path;
	c = secret_new(&p);
	cr_assert_str_eq(secret_source(c), "token_file");
	cr_assert_str_eq(get_wait(c, &g), "tokA");
	cr_assert_str_eq(get_wait(c, &g), "tokA");
	cr_assert_eq(secret_runs(c), 1, "re-read although unchanged");
	f = fopen(path, "w");
	fputs("tokBB\n", f);
	fclose(f);
	cr_assert_str_eq(get_wait(c, &g), "tokBB");
	cr_assert_eq(secret_runs(c), 2);
	/* rejected: read again even though unchanged (same token again) */
	secret_invalidate(c, "tokBB");
	cr_assert_str_eq(get_wait(c, &g), "tokBB");
	cr_assert_eq(secret_runs(c), 3);
	unlink(path);
	cr_assert_str_eq(get_wait(c, &g), "");
	cr_assert_not_null(strstr(g.why, "No such file"), "%s", g.why);
	f = fopen(path, "w");
	fclose(f);
	cr_assert_str_eq(get_wait(c, &g), "");
	cr_assert_not_null(strstr(g.why, "no token"), "%s", g.why);
	secret_free(c);
}

Test(secret, commands_need_the_default_loop)
{
	struct ev_loop *other = ev_loop_new(EVFLAG_AUTO);
	struct secret_cache *c = cmd_cache("echo x", false, 10);
	struct secret_req *req;
	const char *out;

	cr_assert_eq(secret_get(c, other, got_cb, NULL, &req, &out),
	    SECRET_FAILED);
	cr_assert_not_null(strstr(out, "default event loop"));
	secret_free(c);
	ev_loop_destroy(other);
}
