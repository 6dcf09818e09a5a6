/*
 * main.c - command line, start-up, signals, privilege drop.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <ev.h>

#include "relay25/check.h"
#include "relay25/config.h"
#include "relay25/conn.h"
#include "relay25/delivery.h"
#include "relay25/listener.h"
#include "relay25/log.h"
#include "relay25/metrics.h"
#include "relay25/notify.h"
#include "relay25/ping.h"
#include "relay25/reap.h"
#include "relay25/relay.h"
#include "relay25/setup.h"
#include "relay25/spool.h"
#include "relay25/tls.h"
#include "relay25/workers.h"

#define RELAY25_VERSION "0.1.0"

extern char **environ;

struct opts {
	const char *config;
	bool test_config;
	bool check;
	bool ping;
	bool spool_list;
	bool flush;
	int verbose;
};

struct daemon {
	struct ev_loop *loop;
	struct server *srv;
	struct setup *setup;
	bool forked;               /* serving in worker processes */
	struct metrics_server *metrics;
	struct opts opts;
	ev_signal sigterm, sigint, sighup, sigusr1;
	struct spool *spool;
	ev_timer drain_check, deadline;
	bool stopping;
};

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: relay25 [-c FILE] [-t] [--check] [--ping] [--spool] [--flush]\n"
	    "               [-v] [-V] [-h]\n"
	    "  -c, --config FILE   configuration file (default %s;\n"
	    "                      without it, RELAY25_* environment variables)\n"
	    "  -t, --test-config   validate and print the effective configuration\n"
	    "                      (secrets shown as ********); exit 0 or 1\n"
	    "      --check         connect to every upstream: DNS, TCP, TLS,\n"
	    "                      certificate, EHLO, AUTH; report; exit 0 or 1\n"
	    "      --ping          health probe: greeting and NOOP against the\n"
	    "                      first listen address; exit 0 or 1\n"
	    "      --spool         list the messages in the spool (spool_dir)\n"
	    "      --flush         ask the running relay25 to retry the spool now\n"
	    "  -v, --verbose       more log detail (repeatable)\n"
	    "  -V, --version       print the version\n"
	    "  -h, --help          this text\n", CFG_DEFAULT_FILE);
}

static int
parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "test-config", no_argument, NULL, 't' },
		{ "check", no_argument, NULL, 'C' },
		{ "ping", no_argument, NULL, 'P' },
		{ "spool", no_argument, NULL, 'S' },
		{ "flush", no_argument, NULL, 'F' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int ch;

	while ((ch = getopt_long(argc, argv, "c:tvVh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c': o->config = optarg; break;
		case 't': o->test_config = true; break;
		case 'C': o->check = true; break;
		case 'P': o->ping = true; break;
		case 'S': o->spool_list = true; break;
		case 'F': o->flush = true; break;
		case 'v': o->verbose++; break;
		case 'V':
			printf("relay25 %s\n", RELAY25_VERSION);
			exit(0);
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "relay25: unexpected argument: %s\n",
		    argv[optind]);
		usage(stderr);
		return -1;
	}
	return 0;
}

static enum cfg_log_level
effective_level(const struct cfg *cfg, int verbose)
{
	int l = (int)cfg->log_level + verbose;

	return l > CFG_LOG_DEBUG ? CFG_LOG_DEBUG : (enum cfg_log_level)l;
}

/* setgroups, setresgid, setresuid; any failure is fatal. */
static int
drop_privileges(const char *user)
{
	struct passwd *pw;
	uid_t r, e, s;

	errno = 0;
	pw = getpwnam(user);
	if (pw == NULL) {
		log_error("user %s: %s", user, errno ? strerror(errno) :
		    "no such user");
		return -1;
	}
	if (setgroups(1, &pw->pw_gid) < 0 ||
	    setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) < 0 ||
	    setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) < 0) {
		log_error("cannot drop privileges to %s: %s", user,
		    strerror(errno));
		return -1;
	}
	if (getresuid(&r, &e, &s) < 0 || r != pw->pw_uid || e != pw->pw_uid ||
	    s != pw->pw_uid || (pw->pw_uid != 0 && setuid(0) == 0)) {
		log_error("privilege drop to %s did not hold", user);
		return -1;
	}
	log_info("running as user %s (uid %u)", user, (unsigned)pw->pw_uid);
	return 0;
}

/* Stop once no session is left and every last reply (221, 421) has been
 * written; each closing conn is bounded by its own flush timer. */
static void
on_drain_check(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct daemon *d = w->data;

	(void)revents;
	if (server_sessions(d->srv) == 0 && conn_flushing_count() == 0)
		ev_break(loop, EVBREAK_ALL);
}

static void
on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct daemon *d = w->data;

	(void)loop;
	(void)revents;
	log_warn("shutdown_timeout reached; closing %zu session(s)",
	    server_sessions(d->srv));
	server_shutdown_sessions(d->srv);   /* 421 4.3.2, flushed, closed */
}

/* Log what cfg_load() wrote (one problem per line) as log records, so a
 * daemon configured for JSON logs prints nothing else. */
static void
log_lines(enum cfg_log_level level, char *text)
{
	char *save = NULL;

	for (char *line = strtok_r(text, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "warning: ", 9) == 0)
			line += 9;
		log_msg(level, "config: %s", line);
	}
}

/* cfg_load() for the daemon: errors and warnings become log records.
 * At start-up the log format is only known once the configuration is:
 * errors of an invalid one go to stderr as they are. */
static struct cfg *
load_config(const struct opts *o, bool startup)
{
	char *errs = NULL, *warns = NULL;
	size_t el = 0, wl = 0;
	FILE *ef = open_memstream(&errs, &el), *wf = open_memstream(&warns, &wl);
	struct cfg *cfg;

	if (ef == NULL || wf == NULL) {
		if (ef != NULL)
			fclose(ef);
		if (wf != NULL)
			fclose(wf);
		free(errs);
		free(warns);
		return cfg_load(o->config, environ, stderr, stderr);
	}
	cfg = cfg_load(o->config, environ, ef, wf);
	fclose(ef);
	fclose(wf);
	if (cfg != NULL && startup)
		log_init(effective_level(cfg, o->verbose), cfg->log_format,
		    o->check ? CFG_LOG_STDERR : cfg->log_target);
	if (cfg == NULL && startup)
		fputs(errs, stderr);
	else
		log_lines(CFG_LOG_ERROR, errs);
	if (warns[0] != '\0' && (cfg != NULL || !startup))
		log_lines(CFG_LOG_WARN, warns);
	else
		fputs(warns, stderr);
	free(errs);
	free(warns);
	return cfg;
}

static void
on_stop(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct daemon *d = w->data;
	const struct cfg *cfg = server_setup(d->srv)->cfg;

	(void)revents;
	if (d->stopping) {
		log_warn("second stop signal: closing now");
		server_shutdown_sessions(d->srv);
		return;            /* the drain check ends the loop */
	}
	d->stopping = true;
	if (!d->forked)
		notify_stopping();
	metrics_set_listening(false);
	log_info("signal %d: no new sessions; waiting for %zu session(s) "
	    "(at most %.0fs)", w->signum, server_sessions(d->srv),
	    cfg->shutdown_timeout);
	server_stop_accepting(d->srv);
	ev_timer_init(&d->drain_check, on_drain_check, 0., 0.05);
	d->drain_check.data = d;
	ev_timer_again(loop, &d->drain_check);
	ev_timer_init(&d->deadline, on_deadline, cfg->shutdown_timeout, 0.);
	d->deadline.data = d;
	ev_timer_start(loop, &d->deadline);
}

static void
on_usr1(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct daemon *d = w->data;

	(void)loop;
	(void)revents;
	if (d->spool != NULL) {
		log_info("SIGUSR1: retrying the spool now");
		spool_flush(d->spool);
	}
}

static void
on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct daemon *d = w->data;
	struct cfg *cfg;
	struct setup *s;
	char err[512];

	(void)revents;
	log_info("SIGHUP: reloading configuration");
	if (!d->forked)
		notify_reloading();
	cfg = load_config(&d->opts, false);
	if (cfg == NULL) {
		log_error("reload failed; keeping the running configuration");
		if (!d->forked)
			notify_ready();
		return;
	}
	s = setup_new(cfg, err, sizeof(err));
	if (s == NULL) {
		log_error("reload failed: %s; keeping the running configuration",
		    err);
		if (!d->forked)
			notify_ready();
		return;
	}
	log_set_level(effective_level(s->cfg, d->opts.verbose));
	server_set_setup(d->srv, s);
	relay_probe(loop, s);
	setup_start_pools(s, loop);
	setup_unref(s);
	log_info("configuration reloaded (listen addresses need a restart "
	    "to change)");
	if (!d->forked)
		notify_ready();
}

/* Serve until stopped: in the single process, or in each worker (which
 * inherited the bound listeners and a loop created before fork). */
static int
serve(void *arg, unsigned idx)
{
	struct daemon *d = arg;
	struct setup *setup = d->setup;

	if (d->forked) {
		ev_loop_fork(d->loop);
		metrics_use_slot(idx);
	}
	ev_signal_init(&d->sigterm, on_stop, SIGTERM);
	ev_signal_init(&d->sigint, on_stop, SIGINT);
	ev_signal_init(&d->sighup, on_hup, SIGHUP);
	d->sigterm.data = d->sigint.data = d->sighup.data = d;
	ev_signal_start(d->loop, &d->sigterm);
	ev_signal_start(d->loop, &d->sigint);
	ev_signal_start(d->loop, &d->sighup);

	server_start(d->srv);
	metrics_set_listening(true);
	if (idx == 0 && setup->cfg->metrics_set) {
		char err[256];
		/* One worker serves /metrics: the numbers are shared. */
		d->metrics = metrics_server_start(d->loop,
		    &setup->cfg->metrics_listen, err, sizeof(err));
		if (d->metrics == NULL) {
			log_error("metrics: %s", err);
			return 1;
		}
		log_info("metrics on http://%s/metrics",
		    setup->cfg->metrics_listen.text);
	}
	if (setup->cfg->spool_dir != NULL) {
		struct spool_params sp = {
			.max_size = setup->cfg->spool_max_size,
			.max_age = setup->cfg->spool_max_age,
			.retry_min = setup->cfg->spool_retry_min,
			.retry_max = setup->cfg->spool_retry_max,
			.max_inflight = setup->cfg->spool_max_inflight,
			.rescan = d->forked ? 30.0 : 0,
			.kick = delivery_kick,
			.kick_arg = d->srv,
		};
		char err[256];

		d->spool = spool_open(d->loop, setup->cfg->spool_dir, &sp, err,
		    sizeof(err));
		if (d->spool == NULL) {
			log_error("spool %s: %s", setup->cfg->spool_dir, err);
			return 1;
		}
		server_set_spool(d->srv, d->spool);
		/* --flush signals this pid (with workers: the master's, which
		 * forwards SIGUSR1 to every worker). */
		if (!d->forked && spool_pidfile_write(setup->cfg->spool_dir) < 0)
			log_warn("spool: cannot write the pid file: %s (--flush "
			    "will not find relay25)", strerror(errno));
		ev_signal_init(&d->sigusr1, on_usr1, SIGUSR1);
		d->sigusr1.data = d;
		ev_signal_start(d->loop, &d->sigusr1);
	}
	relay_probe(d->loop, setup);
	setup_start_pools(setup, d->loop);
	if (!d->forked)
		notify_ready();
	log_info("relay25 %s started%s %u (%zu upstream(s), first %s:%u)",
	    RELAY25_VERSION, d->forked ? " worker" : "", idx,
	    setup->cfg->nupstream,
	    setup->cfg->upstream[0].host, setup->cfg->upstream[0].port);
	ev_run(d->loop, 0);
	log_info("relay25 stopped");

	ev_signal_stop(d->loop, &d->sigterm);
	ev_signal_stop(d->loop, &d->sigint);
	ev_signal_stop(d->loop, &d->sighup);
	ev_timer_stop(d->loop, &d->drain_check);
	ev_timer_stop(d->loop, &d->deadline);
	metrics_server_stop(d->metrics);
	d->metrics = NULL;
	if (d->spool != NULL) {
		ev_signal_stop(d->loop, &d->sigusr1);
		if (!d->forked)
			spool_pidfile_remove(setup->cfg->spool_dir);
		server_set_spool(d->srv, NULL);
		spool_close(d->spool);
		d->spool = NULL;
	}
	server_free(d->srv);
	d->srv = NULL;
	reap_run();
	setup_unref(setup);
	tls_global_cleanup();
	return 0;
}

int
main(int argc, char **argv)
{
	struct daemon d = { 0 };
	struct cfg *cfg;
	struct setup *setup;
	char err[512];
	unsigned workers;
	int rc = 1;

	if (parse_opts(argc, argv, &d.opts) < 0)
		return 2;
	/* -t, --ping, --spool, --flush: a person reads the output; the daemon
	 * logs it. */
	cfg = d.opts.test_config || d.opts.ping || d.opts.spool_list ||
	    d.opts.flush ?
	    cfg_load(d.opts.config, environ, stderr, stderr) :
	    load_config(&d.opts, true);
	if (cfg == NULL) {
		fprintf(stderr, "relay25: configuration is not valid\n");
		return 1;
	}
	if (d.opts.test_config) {
		cfg_print(cfg, stdout);
		fprintf(stderr, "relay25: configuration %s is valid\n",
		    cfg->path ? cfg->path : "(environment)");
		cfg_free(cfg);
		return 0;
	}
	if (d.opts.ping) {
		rc = ping_run(cfg, PING_TIMEOUT);
		cfg_free(cfg);
		return rc;
	}
	if (d.opts.spool_list || d.opts.flush) {
		char why[256];
		if (cfg->spool_dir == NULL) {
			fprintf(stderr, "relay25: no spool_dir configured\n");
			rc = 1;
		} else if (d.opts.spool_list)
			rc = spool_list(cfg->spool_dir, stdout) < 0;
		else if ((rc = spool_request_flush(cfg->spool_dir, why,
		    sizeof(why)) < 0))
			fprintf(stderr, "relay25: --flush: %s\n", why);
		else
			printf("relay25: asked the running relay25 to retry the "
			    "spool now\n");
		cfg_free(cfg);
		return rc;
	}
	signal(SIGPIPE, SIG_IGN);
	/* --flush may arrive before a worker's loop installs its handler:
	 * ignored until then rather than fatal. */
	signal(SIGUSR1, SIG_IGN);
	if (tls_global_init() < 0) {
		log_error("TLS library initialisation failed");
		cfg_free(cfg);
		return 1;
	}
	setup = setup_new(cfg, err, sizeof(err));
	if (setup == NULL) {
		log_error("%s", err);
		goto out_tls;
	}
	if (d.opts.check) {
		/* Diagnostics speak for themselves; keep the log quiet. */
		if (d.opts.verbose == 0)
			log_set_level(CFG_LOG_ERROR);
		rc = check_run(setup, stdout);
		goto out_setup;
	}
	d.loop = ev_default_loop(EVFLAG_AUTO);
	reap_init(d.loop);
	d.srv = server_new(d.loop, setup);
	if (d.srv == NULL)
		goto out_setup;
	if (setup->cfg->user != NULL) {
		if (drop_privileges(setup->cfg->user) < 0)
			goto out_server;
	} else if (geteuid() == 0)
		log_warn("running as root: set `user` in [server] to drop "
		    "privileges after binding");
	d.setup = setup;
	workers = setup->cfg->workers ? setup->cfg->workers : workers_auto();
	d.forked = workers > 1;
	if (d.forked && metrics_shared_init(workers) < 0)
		log_warn("metrics: no shared memory; /metrics shows one worker");
	if (d.forked && setup->cfg->spool_dir != NULL) {
		(void)mkdir(setup->cfg->spool_dir, 0700);
		if (spool_pidfile_write(setup->cfg->spool_dir) < 0)
			log_warn("spool: cannot write the pid file: %s",
			    strerror(errno));
	}
	if (!d.forked)
		return serve(&d, 0);   /* serve() releases everything */
	rc = workers_run(workers, serve, &d);
	if (setup->cfg->spool_dir != NULL)
		spool_pidfile_remove(setup->cfg->spool_dir);
	/* The master never ran the loop: nothing of the server is in use,
	 * only memory to give back. */
	server_free(d.srv);
	goto out_setup;
out_server:
	server_free(d.srv);
	reap_run();
out_setup:
	setup_unref(setup);
out_tls:
	tls_global_cleanup();
	return rc;
}
