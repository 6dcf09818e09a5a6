/*
 * test_metrics.c - the exposition text (values, histogram arithmetic,
 * format well-formedness, bounded output) and the HTTP endpoint on
 * 127.0.0.1 port 0 driven by ev_run with plain client sockets: /metrics,
 * HEAD, /healthz transitions, 404/405/505/400, over-long heads (431),
 * slow and silent clients (408), the connection cap, early client close,
 * stop with open connections. Every loop is bounded by a timer.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "relay25/metrics.h"
#include "relay25/reap.h"

/* ---- exposition text ------------------------------------------------- */

static char text[METRICS_TEXT_MAX];

static void
assert_line(const char *t, const char *line)
{
	char want[256];

	snprintf(want, sizeof(want), "\n%s\n", line);
	cr_assert_not_null(strstr(t, want), "missing line: %s", line);
}

static bool
name_char(char c, bool first)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
	    c == ':' || (!first && c >= '0' && c <= '9');
}

/*
 * Check the text format: "# HELP name text" then "# TYPE name type", then
 * samples of that family only (histograms: _bucket/_sum/_count), each
 * "name{label="v",...} value" with a number that parses to the end;
 * families unique; every histogram bucket series ends with le="+Inf".
 */
static void
check_format(const char *t)
{
	char family[128] = "", type[32] = "";
	char seen[64][128];
	size_t nseen = 0, nsamples = 0;
	const char *p = t;

	cr_assert(t[0] != '\0' && t[strlen(t) - 1] == '\n');
	while (*p != '\0') {
		const char *nl = strchr(p, '\n');
		char line[512], name[128];
		size_t ll, i = 0;

		cr_assert_not_null(nl);
		ll = (size_t)(nl - p);
		cr_assert_lt(ll, sizeof(line));
		memcpy(line, p, ll);
		line[ll] = '\0';
		p = nl + 1;
		if (strncmp(line, "# HELP ", 7) == 0) {
			cr_assert_eq(sscanf(line + 7, "%127s", family), 1);
			cr_assert(strncmp(family, "relay25_", 8) == 0, "%s",
			    family);
			for (size_t k = 0; k < nseen; k++)
				cr_assert_str_neq(seen[k], family, "dup %s",
				    family);
			cr_assert_lt(nseen, 64);
			snprintf(seen[nseen++], sizeof(seen[0]), "%s", family);
			cr_assert_gt(strlen(line), 8 + strlen(family),
			    "empty help: %s", line);
			type[0] = '\0';
			continue;
		}
		if (strncmp(line, "# TYPE ", 7) == 0) {
			char n2[128];
			cr_assert_eq(sscanf(line + 7, "%127s %31s", n2, type), 2);
			cr_assert_str_eq(n2, family);
			cr_assert(strcmp(type, "counter") == 0 ||
			    strcmp(type, "gauge") == 0 ||
			    strcmp(type, "histogram") == 0, "%s", type);
			continue;
		}
		cr_assert_neq(line[0], '#', "stray comment: %s", line);
		cr_assert_neq(type[0], '\0', "sample before TYPE: %s", line);
		while (name_char(line[i], i == 0))
			i++;
		cr_assert_gt(i, 0);
		memcpy(name, line, i);
		name[i] = '\0';
		if (strcmp(type, "histogram") == 0) {
			char b[160], s[160], c[160];
			snprintf(b, sizeof(b), "%s_bucket", family);
			snprintf(s, sizeof(s), "%s_sum", family);
			snprintf(c, sizeof(c), "%s_count", family);
			cr_assert(strcmp(name, b) == 0 || strcmp(name, s) == 0 ||
			    strcmp(name, c) == 0, "%s in %s", name, family);
		} else
			cr_assert_str_eq(name, family);
		if (strcmp(type, "counter") == 0)
			cr_assert(strlen(name) > 6 &&
			    strcmp(name + strlen(name) - 6, "_total") == 0,
			    "counter without _total: %s", name);
		if (line[i] == '{') {
			const char *q = line + i + 1;
			for (;;) {
				size_t k = 0;
				while (name_char(q[k], k == 0))
					k++;
				cr_assert_gt(k, 0, "label name: %s", line);
				cr_assert(q[k] == '=' && q[k + 1] == '"', "%s", line);
				q += k + 2;
				while (*q != '"' && *q != '\0')
					cr_assert_neq(*q++, '\\');
				cr_assert_eq(*q, '"');
				q++;
				if (*q == ',') {
					q++;
					continue;
				}
				cr_assert_eq(*q, '}', "%s", line);
				q++;
				break;
			}
			i = (size_t)(q - line);
		}
		cr_assert_eq(line[i], ' ', "%s", line);
		char *end;
		errno = 0;
		double v = strtod(line + i + 1, &end);
		cr_assert(end != line + i + 1 && *end == '\0' && errno == 0,
		    "value: %s", line);
		cr_assert(!isnan(v));
		nsamples++;
	}
	cr_assert_gt(nsamples, 40);
}

/* One suite: libcriterion 2.4.1's runner leaks 48 bytes (reported by
 * LSan) when several suites run with --jobs > 1. */
TestSuite(metrics, .timeout = 20);

Test(metrics, counters_and_gauges, .init = metrics_reset)
{
	size_t n;

	metrics_session_accepted();
	metrics_session_accepted();
	metrics_session_refused(METRICS_REFUSED_MAX_CLIENTS_PER_IP);
	metrics_session_refused(METRICS_REFUSED_EARLY_TALKER);
	metrics_session_refused(METRICS_REFUSED_EARLY_TALKER);
	metrics_session_refused((enum metrics_refusal)99);     /* ignored */
	metrics_session_active(1);
	metrics_session_active(1);
	metrics_session_active(-1);
	metrics_message(METRICS_SENT, 1000);
	metrics_message(METRICS_SENT, 24);
	metrics_message(METRICS_ABORTED, 7);
	metrics_message(METRICS_OUTCOME_N, 7);                 /* ignored */
	metrics_upstream_failure(METRICS_UPFAIL_AUTH_TEMP);
	metrics_upstream_failure(METRICS_UPFAIL_TIMEOUT);
	metrics_upstream_attempt(true);
	metrics_upstream_attempt(false);
	metrics_pool_size(3);
	metrics_set_listening(true);

	n = metrics_format(text, sizeof(text));
	cr_assert_gt(n, 0);
	cr_assert_eq(n, strlen(text));
	check_format(text);
	assert_line(text, "relay25_sessions_accepted_total 2");
	assert_line(text, "relay25_sessions_refused_total{reason=\"not_allowed\"} 0");
	assert_line(text, "relay25_sessions_refused_total{reason=\"max_clients\"} 0");
	assert_line(text, "relay25_sessions_refused_total{reason=\"max_clients_per_ip\"} 1");
	assert_line(text, "relay25_sessions_refused_total{reason=\"early_talker\"} 2");
	assert_line(text, "relay25_sessions_active 1");
	assert_line(text, "relay25_messages_total{outcome=\"sent\"} 2");
	assert_line(text, "relay25_messages_total{outcome=\"deferred\"} 0");
	assert_line(text, "relay25_messages_total{outcome=\"rejected\"} 0");
	assert_line(text, "relay25_messages_total{outcome=\"aborted\"} 1");
	assert_line(text, "relay25_message_bytes_total{outcome=\"sent\"} 1024");
	assert_line(text, "relay25_message_bytes_total{outcome=\"aborted\"} 7");
	assert_line(text, "relay25_upstream_failures_total{kind=\"connect\"} 0");
	assert_line(text, "relay25_upstream_failures_total{kind=\"auth_temp\"} 1");
	assert_line(text, "relay25_upstream_failures_total{kind=\"timeout\"} 1");
	assert_line(text, "relay25_upstream_attempts_total{result=\"ok\"} 1");
	assert_line(text, "relay25_upstream_attempts_total{result=\"failed\"} 1");
	assert_line(text, "relay25_upstream_last_attempt_ok 0");
	assert_line(text, "relay25_upstream_pool_sessions 3");
	assert_line(text, "relay25_listening 1");
	cr_assert(strncmp(text, "# HELP relay25_sessions_accepted_total ", 39) == 0);
}

Test(metrics, active_never_negative, .init = metrics_reset)
{
	metrics_session_active(-1);
	cr_assert_gt(metrics_format(text, sizeof(text)), 0);
	assert_line(text, "relay25_sessions_active 0");
}

Test(metrics, histogram, .init = metrics_reset)
{
	const char *b = "relay25_upstream_stage_duration_seconds";
	char l[200];

	metrics_upstream_latency(METRICS_STAGE_CONNECT, 0.003);
	metrics_upstream_latency(METRICS_STAGE_CONNECT, 0.005); /* le is <= */
	metrics_upstream_latency(METRICS_STAGE_CONNECT, 0.2);
	metrics_upstream_latency(METRICS_STAGE_CONNECT, 20);   /* +Inf only */
	metrics_upstream_latency(METRICS_STAGE_CONNECT, NAN);  /* ignored */
	metrics_upstream_latency(METRICS_STAGE_CONNECT, -1);   /* ignored */
	metrics_upstream_latency(METRICS_STAGE_CONNECT, INFINITY);
	metrics_upstream_latency(METRICS_STAGE_AUTH, 1.5);
	cr_assert_gt(metrics_format(text, sizeof(text)), 0);
	check_format(text);

	static const struct { const char *le; int n; } want[] = {
		{ "0.005", 2 }, { "0.01", 2 }, { "0.025", 2 }, { "0.05", 2 },
		{ "0.1", 2 }, { "0.25", 3 }, { "0.5", 3 }, { "1", 3 },
		{ "2.5", 3 }, { "5", 3 }, { "10", 3 }, { "+Inf", 4 },
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		snprintf(l, sizeof(l), "%s_bucket{stage=\"connect\",le=\"%s\"} %d",
		    b, want[i].le, want[i].n);
		assert_line(text, l);
	}
	snprintf(l, sizeof(l), "%s_count{stage=\"connect\"} 4", b);
	assert_line(text, l);
	snprintf(l, sizeof(l), "%s_sum{stage=\"connect\"} 20.208", b);
	assert_line(text, l);
	snprintf(l, sizeof(l), "%s_bucket{stage=\"tls\",le=\"+Inf\"} 0", b);
	assert_line(text, l);
	snprintf(l, sizeof(l), "%s_bucket{stage=\"auth\",le=\"1\"} 0", b);
	assert_line(text, l);
	snprintf(l, sizeof(l), "%s_bucket{stage=\"auth\",le=\"2.5\"} 1", b);
	assert_line(text, l);
	snprintf(l, sizeof(l), "%s_sum{stage=\"auth\"} 1.5", b);
	assert_line(text, l);
	snprintf(l, sizeof(l), "# TYPE %s histogram", b);
	assert_line(text, l);
}

Test(metrics, bounded_output, .init = metrics_reset)
{
	size_t n = metrics_format(text, sizeof(text));

	cr_assert_gt(n, 0);
	cr_assert_lt(n, sizeof(text) / 2, "%zu bytes: keep headroom", n);
	for (size_t cap = 0; cap <= n; cap += (cap < 64 ? 1 : 97))
		cr_assert_eq(metrics_format(text, cap), 0, "cap %zu", cap);
	cr_assert_eq(metrics_format(text, n + 1), n);
}

Test(metrics, healthy, .init = metrics_reset)
{
	const char *why;

	cr_assert_not(metrics_healthy(&why));
	cr_assert_str_eq(why, "not listening");
	metrics_set_listening(true);
	cr_assert(metrics_healthy(&why));
	cr_assert_null(why);
	metrics_upstream_attempt(false);
	cr_assert_not(metrics_healthy(&why));
	cr_assert_str_eq(why, "last upstream attempt failed");
	metrics_upstream_attempt(true);
	cr_assert(metrics_healthy(NULL));
}

Test(metrics, worker_slots_are_summed)
{
	pid_t pid;
	int st;

	cr_assert_eq(metrics_shared_init(3), 0);
	metrics_use_slot(0);
	metrics_session_accepted();
	metrics_session_active(1);
	metrics_upstream_attempt(false);
	for (unsigned w = 1; w <= 2; w++) {
		fflush(NULL);
		pid = fork();
		cr_assert_geq(pid, 0);
		if (pid == 0) {
			metrics_use_slot(w);
			metrics_session_accepted();
			metrics_session_active(1);
			metrics_message(METRICS_SENT, 100 * w);
			metrics_upstream_latency(METRICS_STAGE_TLS, 0.04);
			metrics_pool_size(w);
			metrics_set_listening(w == 2);
			metrics_upstream_attempt(true);   /* later than slot 0's */
			_exit(0);
		}
		cr_assert_eq(waitpid(pid, &st, 0), pid);
		cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	cr_assert_gt(metrics_format(text, sizeof(text)), 0);
	check_format(text);
	assert_line(text, "relay25_sessions_accepted_total 3");
	assert_line(text, "relay25_sessions_active 3");
	assert_line(text, "relay25_messages_total{outcome=\"sent\"} 2");
	assert_line(text, "relay25_message_bytes_total{outcome=\"sent\"} 300");
	assert_line(text, "relay25_upstream_stage_duration_seconds_bucket"
	    "{stage=\"tls\",le=\"0.05\"} 2");
	assert_line(text, "relay25_upstream_stage_duration_seconds_sum"
	    "{stage=\"tls\"} 0.08");
	assert_line(text, "relay25_upstream_pool_sessions 3");
	assert_line(text, "relay25_listening 1");
	assert_line(text, "relay25_upstream_attempts_total{result=\"failed\"} 1");
	assert_line(text, "relay25_upstream_last_attempt_ok 1");
	cr_assert(metrics_healthy(NULL));

	/* A restarted worker keeps its counters, loses its gauges. */
	metrics_use_slot(2);
	cr_assert_gt(metrics_format(text, sizeof(text)), 0);
	assert_line(text, "relay25_sessions_accepted_total 3");
	assert_line(text, "relay25_sessions_active 2");
	assert_line(text, "relay25_upstream_pool_sessions 1");
	assert_line(text, "relay25_listening 0");
	cr_assert_not(metrics_healthy(NULL));
	metrics_upstream_attempt(false);
	assert_line(text, "relay25_upstream_last_attempt_ok 1");
	cr_assert_gt(metrics_format(text, sizeof(text)), 0);
	assert_line(text, "relay25_upstream_last_attempt_ok 0");
	cr_assert_eq(metrics_shared_init(0), -1);
}

/* ---- HTTP endpoint --------------------------------------------------- */

static struct ev_loop *loop;
static struct metrics_server *srv;
static bool timed_out;

static void
bound_cb(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	timed_out = true;
	ev_break(l, EVBREAK_ALL);
}

#define RUN_UNTIL(cond, secs) do {					\
	ev_timer t_;							\
	timed_out = false;						\
	ev_timer_init(&t_, bound_cb, (secs), 0.);			\
	ev_timer_start(loop, &t_);					\
	while (!(cond) && !timed_out)					\
		ev_run(loop, EVRUN_ONCE);				\
	ev_timer_stop(loop, &t_);					\
} while (0)

struct client {
	ev_io w;
	int fd;
	char buf[METRICS_TEXT_MAX * 2];
	size_t len;
	bool eof;
	bool reset;
};

static void
client_cb(struct ev_loop *l, ev_io *w, int revents)
{
	struct client *c = (struct client *)(void *)w;

	(void)revents;
	for (int i = 0; i < 64; i++) {
		ssize_t n = recv(c->fd, c->buf + c->len,
		    sizeof(c->buf) - 1 - c->len, 0);
		if (n > 0) {
			c->len += (size_t)n;
			c->buf[c->len] = '\0';
			cr_assert_lt(c->len, sizeof(c->buf) - 1);
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		c->reset = n < 0;
		c->eof = true;
		ev_io_stop(l, w);
		return;
	}
}

static struct client *
client_open(void)
{
	struct client *c = calloc(1, sizeof(*c));
	struct sockaddr_in sin = { .sin_family = AF_INET };

	cr_assert_not_null(c);
	sin.sin_port = htons(metrics_server_port(srv));
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(c->fd, 0);
	cr_assert_eq(connect(c->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
	ev_io_init(&c->w, client_cb, c->fd, EV_READ);
	ev_io_start(loop, &c->w);
	return c;
}

static void
client_send(struct client *c, const void *data, size_t len)
{
	cr_assert_eq(send(c->fd, data, len, MSG_NOSIGNAL), (ssize_t)len);
}

static void
client_close(struct client *c)
{
	ev_io_stop(loop, &c->w);
	close(c->fd);
	free(c);
}

/* Send a request, run until the server closed, return the client. */
static struct client *
request(const char *req, size_t len)
{
	struct client *c = client_open();

	client_send(c, req, len);
	RUN_UNTIL(c->eof, 3.0);
	cr_assert(c->eof, "no end of response");
	cr_assert_not(c->reset, "connection reset");
	return c;
}

#define REQ(s) request((s), sizeof(s) - 1)

static const char *
body_of(const struct client *c)
{
	const char *b = strstr(c->buf, "\r\n\r\n");

	cr_assert_not_null(b);
	return b + 4;
}

static void
assert_status(const struct client *c, const char *status)
{
	size_t n = strlen(status);

	cr_assert(strncmp(c->buf, status, n) == 0 && c->buf[n] == '\r',
	    "want \"%s\", got \"%.60s\"", status, c->buf);
	cr_assert_not_null(strstr(c->buf, "\r\nConnection: close\r\n"));
	/* Content-Length tells the truth (HEAD responses aside). */
	const char *cl = strstr(c->buf, "\r\nContent-Length: ");
	cr_assert_not_null(cl);
	size_t blen = strlen(body_of(c));
	cr_assert(blen == 0 || strtoul(cl + 18, NULL, 10) == blen,
	    "Content-Length %lu, body %zu", strtoul(cl + 18, NULL, 10), blen);
}

static void
http_setup(void)
{
	struct cfg_addr a;
	struct sockaddr_in *sin = (struct sockaddr_in *)(void *)&a.sa;
	char err[256];

	signal(SIGPIPE, SIG_IGN);
	metrics_reset();
	loop = ev_loop_new(EVFLAG_AUTO);
	cr_assert_not_null(loop);
	reap_init(loop);
	memset(&a, 0, sizeof(a));
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.salen = sizeof(*sin);
	snprintf(a.text, sizeof(a.text), "127.0.0.1:0");
	srv = metrics_server_start(loop, &a, err, sizeof(err));
	cr_assert_not_null(srv, "%s", err);
	cr_assert_gt(metrics_server_port(srv), 0);
}

static void
http_teardown(void)
{
	metrics_server_stop(srv);
	reap_run();
	ev_loop_destroy(loop);
}

Test(metrics, get_metrics,
    .init = http_setup, .fini = http_teardown)
{
	struct client *c;

	metrics_session_accepted();
	metrics_set_listening(true);
	c = REQ("GET /metrics HTTP/1.1\r\nHost: localhost\r\n"
	    "User-Agent: test\r\nAccept: */*\r\n\r\n");
	assert_status(c, "HTTP/1.1 200 OK");
	cr_assert_not_null(strstr(c->buf,
	    "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
	const char *b = body_of(c);
	cr_assert_eq(strtoul(strstr(c->buf, "Content-Length: ") + 16, NULL,
	    10), strlen(b));
	cr_assert_not_null(strstr(b, "\nrelay25_sessions_accepted_total 1\n"));
	cr_assert_not_null(strstr(b, "\nrelay25_listening 1\n"));
	cr_assert_not_null(strstr(b, "\nrelay25_start_time_seconds "));
	check_format(b);
	client_close(c);
	RUN_UNTIL(metrics_server_conns(srv) == 0, 2.0);
	cr_assert_eq(metrics_server_conns(srv), 0);
}

Test(metrics, head_and_http10_bare_lf,
    .init = http_setup, .fini = http_teardown)
{
	struct client *c = REQ("HEAD /metrics HTTP/1.0\r\n\r\n");

	assert_status(c, "HTTP/1.1 200 OK");
	cr_assert_str_eq(body_of(c), "");
	cr_assert_gt(strtoul(strstr(c->buf, "Content-Length: ") + 16, NULL,
	    10), 1000);
	client_close(c);
	c = REQ("GET /metrics HTTP/1.0\n\n");
	assert_status(c, "HTTP/1.1 200 OK");
	cr_assert_gt(strlen(body_of(c)), 1000);
	client_close(c);
}

Test(metrics, healthz_transitions,
    .init = http_setup, .fini = http_teardown)
{
	struct client *c;

	c = REQ("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_status(c, "HTTP/1.1 503 Service Unavailable");
	cr_assert_str_eq(body_of(c), "unhealthy: not listening\n");
	client_close(c);

	metrics_set_listening(true);
	c = REQ("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_status(c, "HTTP/1.1 200 OK");
	cr_assert_str_eq(body_of(c), "ok\n");
	client_close(c);

	metrics_upstream_attempt(false);
	c = REQ("GET /healthz?verbose=1 HTTP/1.0\r\n\r\n");
	assert_status(c, "HTTP/1.1 503 Service Unavailable");
	cr_assert_str_eq(body_of(c), "unhealthy: last upstream attempt failed\n");
	client_close(c);

	metrics_upstream_attempt(true);
	c = REQ("HEAD /healthz HTTP/1.1\r\n\r\n");
	assert_status(c, "HTTP/1.1 200 OK");
	cr_assert_str_eq(body_of(c), "");
	client_close(c);
}

Test(metrics, not_found_and_method,
    .init = http_setup, .fini = http_teardown)
{
	struct client *c;

	c = REQ("GET / HTTP/1.1\r\n\r\n");
	assert_status(c, "HTTP/1.1 404 Not Found");
	client_close(c);
	c = REQ("GET /metricsx HTTP/1.1\r\n\r\n");
	assert_status(c, "HTTP/1.1 404 Not Found");
	client_close(c);
	c = REQ("POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
	assert_status(c, "HTTP/1.1 405 Method Not Allowed");
	cr_assert_not_null(strstr(c->buf, "\r\nAllow: GET, HEAD\r\n"));
	client_close(c);
	c = REQ("DELETE /healthz HTTP/1.1\r\n\r\n");
	assert_status(c, "HTTP/1.1 405 Method Not Allowed");
	client_close(c);
	c = REQ("GET /metrics HTTP/2.0\r\n\r\n");
	assert_status(c, "HTTP/1.1 505 HTTP Version Not Supported");
	client_close(c);
}

Test(metrics, garbage_is_400_and_closed,
    .init = http_setup, .fini = http_teardown)
{
	static const char *const bad[] = {
		"hello\r\n\r\n",
		"GET /metrics\r\n\r\n",                 /* HTTP/0.9 */
		"GET  /metrics HTTP/1.1\r\n\r\n",
		"GET /metrics HTTP/1.1 \r\n\r\n",
		"GET http://x/metrics HTTP/1.1\r\n\r\n",
		"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
		"GET /metrics HTTP/1.1\r\n folded: x\r\n\r\n",
		"GET /metrics HTTP/1.1\r\nX: a\x01z\r\n\r\n",
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  /* TLS */
		"BLAH\r\n",                             /* no end of head */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct client *c = client_open();

		client_send(c, bad[i], strlen(bad[i]));
		RUN_UNTIL(c->eof, 3.0);
		cr_assert(c->eof && !c->reset, "case %zu", i);
		assert_status(c, "HTTP/1.1 400 Bad Request");
		client_close(c);
	}
	/* A NUL byte */
	struct client *c = REQ("GET /metrics HTTP/1.1\r\nX: \0\r\n\r\n");
	assert_status(c, "HTTP/1.1 400 Bad Request");
	client_close(c);
	RUN_UNTIL(metrics_server_conns(srv) == 0, 2.0);
	cr_assert_eq(metrics_server_conns(srv), 0);
}

Test(metrics, overlong_head_is_431,
    .init = http_setup, .fini = http_teardown)
{
	static char req[8000];
	struct client *c;
	size_t n;

	n = (size_t)snprintf(req, sizeof(req), "GET /metrics HTTP/1.1\r\nX: ");
	memset(req + n, 'a', sizeof(req) - n - 1);
	c = request(req, sizeof(req) - 1);
	assert_status(c, "HTTP/1.1 431 Request Header Fields Too Large");
	client_close(c);

	/* An over-long request line alone. */
	memset(req, 'A', sizeof(req));
	memcpy(req, "GET /", 5);
	c = request(req, 3000);
	assert_status(c, "HTTP/1.1 431 Request Header Fields Too Large");
	client_close(c);
}

Test(metrics, slow_client_times_out,
    .init = http_setup, .fini = http_teardown)
{
	struct client *c;
	ev_tstamp t0;

	metrics_server_set_timeout(srv, 0.3);
	c = client_open();
	client_send(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n", 32);
	t0 = ev_time();
	RUN_UNTIL(c->eof, 3.0);
	cr_assert(c->eof);
	cr_assert_geq(ev_time() - t0, 0.25);
	cr_assert_lt(ev_time() - t0, 2.0);
	assert_status(c, "HTTP/1.1 408 Request Timeout");
	client_close(c);

	/* Silent client: nothing at all. */
	c = client_open();
	RUN_UNTIL(c->eof, 3.0);
	cr_assert(c->eof);
	assert_status(c, "HTTP/1.1 408 Request Timeout");
	client_close(c);
	RUN_UNTIL(metrics_server_conns(srv) == 0, 2.0);
	cr_assert_eq(metrics_server_conns(srv), 0);
}

Test(metrics, connection_cap,
    .init = http_setup, .fini = http_teardown)
{
	struct client *cs[METRICS_MAX_CONNS + 4];
	size_t n = sizeof(cs) / sizeof(cs[0]), closed = 0;

	/* One at a time: a blocking connect must not wait on a full
	 * backlog while the loop is not running. */
	for (size_t i = 0; i < n; i++) {
		cs[i] = client_open();
		RUN_UNTIL(metrics_server_conns(srv) == i + 1 || cs[i]->eof,
		    2.0);
		cr_assert_not(timed_out, "client %zu", i);
	}
	cr_assert_eq(metrics_server_conns(srv), METRICS_MAX_CONNS);
	for (size_t i = 0; i < n; i++)
		closed += cs[i]->eof;
	cr_assert_eq(closed, 4);
	/* Served connections still work. */
	client_send(cs[0], "GET /healthz HTTP/1.0\r\n\r\n", 25);
	RUN_UNTIL(cs[0]->eof, 3.0);
	cr_assert_not_null(strstr(cs[0]->buf, " 503 "));
	for (size_t i = 0; i < n; i++)
		client_close(cs[i]);
	RUN_UNTIL(metrics_server_conns(srv) == 0, 3.0);
	cr_assert_eq(metrics_server_conns(srv), 0);
}

Test(metrics, client_gone_early,
    .init = http_setup, .fini = http_teardown)
{
	struct client *c = client_open();

	client_send(c, "GET /met", 8);
	RUN_UNTIL(metrics_server_conns(srv) == 1, 2.0);
	client_close(c);
	RUN_UNTIL(metrics_server_conns(srv) == 0, 2.0);
	cr_assert_eq(metrics_server_conns(srv), 0);

	/* Half-close after a complete request: the answer still comes. */
	c = client_open();
	client_send(c, "GET /healthz HTTP/1.0\r\n\r\n", 25);
	shutdown(c->fd, SHUT_WR);
	RUN_UNTIL(c->eof, 2.0);
	assert_status(c, "HTTP/1.1 503 Service Unavailable");
	client_close(c);
}

Test(metrics, stop_with_open_connections,
    .init = http_setup, .fini = http_teardown)
{
	struct client *a = client_open(), *b = client_open();

	client_send(a, "GET /metrics HTTP/1.1\r\n", 23);
	RUN_UNTIL(metrics_server_conns(srv) == 2, 2.0);
	cr_assert_eq(metrics_server_conns(srv), 2);
	metrics_server_stop(srv);
	srv = NULL;
	RUN_UNTIL(a->eof && b->eof, 2.0);
	cr_assert(a->eof && b->eof);
	client_close(a);
	client_close(b);
}

Test(metrics, address_in_use,
    .init = http_setup, .fini = http_teardown)
{
	struct cfg_addr a;
	struct sockaddr_in *sin = (struct sockaddr_in *)(void *)&a.sa;
	char err[256] = "";

	memset(&a, 0, sizeof(a));
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin->sin_port = htons(metrics_server_port(srv));
	a.salen = sizeof(*sin);
	snprintf(a.text, sizeof(a.text), "127.0.0.1:%u",
	    metrics_server_port(srv));
	cr_assert_null(metrics_server_start(loop, &a, err, sizeof(err)));
	cr_assert_not_null(strstr(err, "cannot listen on 127.0.0.1:"), "%s",
	    err);
}
