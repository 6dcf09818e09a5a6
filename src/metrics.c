/*
 * metrics.c - relay25's counters, gauges and histograms (one static
 * struct: one process, one loop) and the HTTP endpoint that serves them:
 * GET/HEAD /metrics (Prometheus text format 0.0.4) and /healthz.
 *
 * The endpoint is deliberately minimal: one request per connection, a
 * bounded request head, a whole-request deadline, a bounded number of
 * connections, a response built in a fixed buffer, then a lingering
 * close (shut down our side, discard what the client still sends until
 * it closes or a short bound passes) so that an error response is not
 * lost to a TCP reset when the client sent more than we read.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <ev.h>

#include "relay25/conn.h"
#include "relay25/log.h"
#include "relay25/metrics.h"
#include "relay25/reap.h"

#define container_of(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

#define METRICS_ACCEPT_BURST 16
#define METRICS_LINGER 1.0          /* discard late client bytes this long */
#define METRICS_HEAD_MAX 512        /* our response header */
#define METRICS_OUT_MAX (METRICS_TEXT_MAX + METRICS_HEAD_MAX)

/* ---- the numbers ------------------------------------------------------ */

static const double lat_bounds[] = {
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};
/* As written in the le="" label: exact, stable text. */
static const char *const lat_labels[] = {
	"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5",
	"5", "10",
};
#define LAT_NBUCKETS (sizeof(lat_bounds) / sizeof(lat_bounds[0]))

static const char *const refusal_names[METRICS_REFUSED_N] = {
	"not_allowed", "max_clients", "max_clients_per_ip", "early_talker",
};
static const char *const outcome_names[METRICS_OUTCOME_N] = {
	"sent", "deferred", "rejected", "aborted",
};
static const char *const upfail_names[METRICS_UPFAIL_N] = {
	"connect", "tls", "auth", "auth_temp", "lost", "timeout",
};
static const char *const stage_names[METRICS_STAGE_N] = {
	"connect", "tls", "auth",
};

struct histogram {
	uint64_t bucket[LAT_NBUCKETS];  /* per bucket, not cumulative */
	uint64_t count;                 /* includes values above the last */
	uint64_t sum_ns;                /* sum of the values, nanoseconds */
};

/*
 * The numbers of one process. With worker processes every worker owns one
 * slot in a shared mapping (metrics_shared_init) and is its only writer;
 * the process serving /metrics reads them all, so every access is a
 * relaxed atomic (no lock, no torn value). Counters survive a worker's
 * restart in its slot; its gauges are reset (metrics_use_slot).
 */
struct slot {
	uint64_t accepted;
	uint64_t refused[METRICS_REFUSED_N];
	int64_t active;
	uint64_t messages[METRICS_OUTCOME_N];
	uint64_t bytes[METRICS_OUTCOME_N];
	uint64_t upfail[METRICS_UPFAIL_N];
	struct histogram lat[METRICS_STAGE_N];
	uint64_t attempts_ok, attempts_failed;
	uint64_t last_attempt;  /* monotonic ns << 1 | failed; 0: none yet */
	uint64_t pool;
	uint64_t listening;
	uint64_t spool[METRICS_SPOOL_N];
};

#define LOAD(x)         __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v)     __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define ADD(x, v)       ((void)__atomic_fetch_add(&(x), (v), __ATOMIC_RELAXED))

static struct slot local_slot;
static struct slot *slots = &local_slot;
static unsigned nslots = 1;
static struct slot *me = &local_slot;
static double start_time;               /* Unix time; 0: not known */

int
metrics_shared_init(unsigned n)
{
	void *p;

	if (n == 0 || n > METRICS_MAX_SLOTS) {
		errno = EINVAL;
		return -1;
	}
	p = mmap(NULL, n * sizeof(struct slot), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	if (slots != &local_slot)
		munmap(slots, nslots * sizeof(struct slot));
	slots = p;              /* zeroed by mmap */
	nslots = n;
	me = &slots[0];
	return 0;
}

void
metrics_use_slot(unsigned idx)
{
	me = &slots[idx < nslots ? idx : 0];
	STORE(me->active, 0);
	STORE(me->pool, 0);
	STORE(me->listening, 0);
}

void
metrics_session_accepted(void)
{
	ADD(me->accepted, 1);
}

void
metrics_session_refused(enum metrics_refusal r)
{
	if ((unsigned)r < METRICS_REFUSED_N)
		ADD(me->refused[r], 1);
}

void
metrics_session_active(int delta)
{
	ADD(me->active, delta);
}

static const char *const spool_event_names[METRICS_SPOOL_N] = {
	"spooled", "delivered", "retried", "failed", "refused",
};

void
metrics_spool(enum metrics_spool_event e)
{
	if ((unsigned)e < METRICS_SPOOL_N)
		ADD(me->spool[e], 1);
}

void
metrics_message(enum metrics_outcome o, uint64_t bytes)
{
	if ((unsigned)o >= METRICS_OUTCOME_N)
		return;
	ADD(me->messages[o], 1);
	ADD(me->bytes[o], bytes);
}

void
metrics_upstream_failure(enum metrics_upfail k)
{
	if ((unsigned)k < METRICS_UPFAIL_N)
		ADD(me->upfail[k], 1);
}

void
metrics_upstream_latency(enum metrics_stage s, double seconds)
{
	struct histogram *h;

	if ((unsigned)s >= METRICS_STAGE_N || !(seconds >= 0) ||
	    seconds > 1e6)
		return;         /* NaN, negative, infinite or absurd */
	h = &me->lat[s];
	for (size_t i = 0; i < LAT_NBUCKETS; i++) {
		if (seconds <= lat_bounds[i]) {
			ADD(h->bucket[i], 1);
			break;
		}
	}
	ADD(h->count, 1);
	ADD(h->sum_ns, (uint64_t)(seconds * 1e9 + 0.5));
}

void
metrics_upstream_attempt(bool ok)
{
	struct timespec ts;
	uint64_t ns = 1;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0)
		ns += (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	if (ok)
		ADD(me->attempts_ok, 1);
	else
		ADD(me->attempts_failed, 1);
	STORE(me->last_attempt, ns << 1 | (ok ? 0 : 1));
}

void
metrics_pool_size(unsigned n)
{
	STORE(me->pool, n);
}

void
metrics_set_listening(bool on)
{
	STORE(me->listening, on ? 1 : 0);
}

void
metrics_reset(void)
{
	memset(slots, 0, nslots * sizeof(struct slot));
	start_time = 0;
}

/* Every slot added up; the latest upstream attempt wins; listening if
 * any process listens. */
static void
metrics_sum(struct slot *a)
{
	memset(a, 0, sizeof(*a));
	for (unsigned s = 0; s < nslots; s++) {
		struct slot *x = &slots[s];
		uint64_t la = LOAD(x->last_attempt);

		a->accepted += LOAD(x->accepted);
		for (size_t i = 0; i < METRICS_REFUSED_N; i++)
			a->refused[i] += LOAD(x->refused[i]);
		a->active += LOAD(x->active);
		for (size_t i = 0; i < METRICS_OUTCOME_N; i++) {
			a->messages[i] += LOAD(x->messages[i]);
			a->bytes[i] += LOAD(x->bytes[i]);
		}
		for (size_t i = 0; i < METRICS_UPFAIL_N; i++)
			a->upfail[i] += LOAD(x->upfail[i]);
		for (size_t t = 0; t < METRICS_STAGE_N; t++) {
			struct histogram *h = &x->lat[t];

			for (size_t i = 0; i < LAT_NBUCKETS; i++)
				a->lat[t].bucket[i] += LOAD(h->bucket[i]);
			a->lat[t].count += LOAD(h->count);
			a->lat[t].sum_ns += LOAD(h->sum_ns);
		}
		a->attempts_ok += LOAD(x->attempts_ok);
		a->attempts_failed += LOAD(x->attempts_failed);
		if (la >> 1 > a->last_attempt >> 1)
			a->last_attempt = la;
		a->pool += LOAD(x->pool);
		for (size_t i = 0; i < METRICS_SPOOL_N; i++)
			a->spool[i] += LOAD(x->spool[i]);
		a->listening |= LOAD(x->listening);
	}
	if (a->active < 0)
		a->active = 0;  /* an unmatched -1 must not show nonsense */
}

bool
metrics_healthy(const char **why)
{
	struct slot a;
	const char *w = NULL;

	metrics_sum(&a);
	if (!a.listening)
		w = "not listening";
	else if (a.last_attempt & 1)
		w = "last upstream attempt failed";
	if (why != NULL)
		*why = w;
	return w == NULL;
}

/* ---- exposition text -------------------------------------------------- */

struct out {
	char *buf;
	size_t len, cap;
	bool over;
};

static void out_printf(struct out *, const char *, ...)
    __attribute__((format(printf, 2, 3)));

static void
out_printf(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->over)
		return;
	va_start(ap, fmt);
	n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= o->cap - o->len) {
		o->over = true;
		return;
	}
	o->len += (size_t)n;
}

static void
out_head(struct out *o, const char *name, const char *type, const char *help)
{
	out_printf(o, "# HELP relay25_%s %s\n# TYPE relay25_%s %s\n", name,
	    help, name, type);
}

/* One labelled counter family from parallel name/value arrays. */
static void
out_family(struct out *o, const char *name, const char *help,
    const char *label, const char *const *names, const uint64_t *v,
    size_t n)
{
	out_head(o, name, "counter", help);
	for (size_t i = 0; i < n; i++)
		out_printf(o, "relay25_%s{%s=\"%s\"} %llu\n", name, label,
		    names[i], (unsigned long long)v[i]);
}

size_t
metrics_format(char *buf, size_t len)
{
	struct out o = { buf, 0, len, len == 0 };
	const char *lat = "upstream_stage_duration_seconds";
	struct slot m;

	metrics_sum(&m);

	out_head(&o, "sessions_accepted_total", "counter",
	    "Client SMTP sessions accepted.");
	out_printf(&o, "relay25_sessions_accepted_total %llu\n",
	    (unsigned long long)m.accepted);
	out_family(&o, "sessions_refused_total",
	    "Client connections refused, by reason.", "reason",
	    refusal_names, m.refused, METRICS_REFUSED_N);
	out_head(&o, "sessions_active", "gauge",
	    "Client SMTP sessions open now.");
	out_printf(&o, "relay25_sessions_active %lld\n", (long long)m.active);

	out_family(&o, "messages_total",
	    "Message transactions finished, by outcome.", "outcome",
	    outcome_names, m.messages, METRICS_OUTCOME_N);
	out_family(&o, "message_bytes_total",
	    "Message bytes sent upstream, by outcome of the transaction.",
	    "outcome", outcome_names, m.bytes, METRICS_OUTCOME_N);

	out_family(&o, "upstream_failures_total",
	    "Upstream session failures, by kind.", "kind", upfail_names,
	    m.upfail, METRICS_UPFAIL_N);
	out_head(&o, "upstream_attempts_total", "counter",
	    "Attempts to obtain a ready upstream session, by result.");
	out_printf(&o, "relay25_upstream_attempts_total{result=\"ok\"} %llu\n"
	    "relay25_upstream_attempts_total{result=\"failed\"} %llu\n",
	    (unsigned long long)m.attempts_ok,
	    (unsigned long long)m.attempts_failed);
	out_head(&o, "upstream_last_attempt_ok", "gauge",
	    "0 if the latest upstream attempt failed, else 1.");
	out_printf(&o, "relay25_upstream_last_attempt_ok %d\n",
	    (m.last_attempt & 1) ? 0 : 1);

	out_head(&o, lat, "histogram",
	    "Time taken by each upstream session set-up stage.");
	for (size_t s = 0; s < METRICS_STAGE_N; s++) {
		const struct histogram *h = &m.lat[s];
		uint64_t cum = 0;

		for (size_t i = 0; i < LAT_NBUCKETS; i++) {
			cum += h->bucket[i];
			out_printf(&o, "relay25_%s_bucket{stage=\"%s\","
			    "le=\"%s\"} %llu\n", lat, stage_names[s],
			    lat_labels[i], (unsigned long long)cum);
		}
		out_printf(&o, "relay25_%s_bucket{stage=\"%s\",le=\"+Inf\"} "
		    "%llu\n", lat, stage_names[s],
		    (unsigned long long)h->count);
		out_printf(&o, "relay25_%s_sum{stage=\"%s\"} %.9g\n", lat,
		    stage_names[s], (double)h->sum_ns / 1e9);
		out_printf(&o, "relay25_%s_count{stage=\"%s\"} %llu\n", lat,
		    stage_names[s], (unsigned long long)h->count);
	}

	out_head(&o, "upstream_pool_sessions", "gauge",
	    "Warm authenticated upstream sessions in the pool.");
	out_printf(&o, "relay25_upstream_pool_sessions %llu\n",
	    (unsigned long long)m.pool);
	out_family(&o, "spool_messages_total",
	    "Messages of the durable spool, by event.", "event",
	    spool_event_names, m.spool, METRICS_SPOOL_N);
	out_head(&o, "listening", "gauge",
	    "1 while the SMTP listeners accept connections.");
	out_printf(&o, "relay25_listening %d\n", m.listening ? 1 : 0);
	if (start_time > 0) {
		out_head(&o, "start_time_seconds", "gauge",
		    "Start time of the process, in seconds since the epoch.");
		out_printf(&o, "relay25_start_time_seconds %.3f\n",
		    start_time);
	}
	return o.over ? 0 : o.len;
}

/* ---- HTTP endpoint ---------------------------------------------------- */

enum mc_state {
	MC_READ,        /* reading the request head */
	MC_RESP,        /* response queued, flushing */
	MC_LINGER,      /* our side shut down; discarding until EOF */
};

struct mconn {
	struct mconn *next, *prev;
	struct metrics_server *srv;
	struct conn *c;
	enum mc_state state;
	bool peer_eof;
};

struct metrics_server {
	struct ev_loop *loop;
	ev_io io;
	int fd;
	double timeout;
	uint16_t port;
	struct mconn *conns;
	size_t nconns;
	char text[64];
};

/* One response body at a time: single-threaded, built and copied into
 * the connection's output buffer at once. */
static char metrics_text[METRICS_TEXT_MAX];

static void
mc_release(void *p)
{
	free(p);
}

/* The one close path: unlink, close the conn (no more events), release
 * the state after the current callback. */
static void
mc_close(struct mconn *mc)
{
	struct metrics_server *srv = mc->srv;

	if (mc->prev != NULL)
		mc->prev->next = mc->next;
	else
		srv->conns = mc->next;
	if (mc->next != NULL)
		mc->next->prev = mc->prev;
	srv->nconns--;
	conn_free(mc->c);
	mc->c = NULL;
	reap_later(mc_release, mc);
}

static const char *
mc_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	default:  return "Error";
	}
}

/* Queue one complete response and go to MC_RESP. body == NULL: the
 * reason phrase and a newline. */
static void
mc_respond(struct mconn *mc, int status, const char *ctype, const char *body,
    size_t blen, bool head)
{
	char hdr[METRICS_HEAD_MAX];
	char small[64];
	int n;

	if (body == NULL) {
		n = snprintf(small, sizeof(small), "%s\n", mc_reason(status));
		body = small;
		blen = (size_t)n;
	}
	n = snprintf(hdr, sizeof(hdr), "HTTP/1.1 %d %s\r\n"
	    "Content-Type: %s\r\n"
	    "Content-Length: %zu\r\n"
	    "%s"
	    "Cache-Control: no-store\r\n"
	    "Connection: close\r\n\r\n", status, mc_reason(status),
	    ctype ? ctype : "text/plain; charset=utf-8", blen,
	    status == 405 ? "Allow: GET, HEAD\r\n" : "");
	if (n < 0 || (size_t)n >= sizeof(hdr) ||
	    conn_write(mc->c, hdr, (size_t)n) < 0 ||
	    (!head && conn_write(mc->c, body, blen) < 0)) {
		mc_close(mc);
		return;
	}
	mc->state = MC_RESP;
	conn_set_timeout(mc->c, mc->srv->timeout);
	/* The request is answered: what the client still sends is noise. */
	size_t len;
	(void)conn_in(mc->c, &len);
	conn_consume(mc->c, len);
}

static bool
is_tchar(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	    (ch >= '0' && ch <= '9') || (ch != '\0' &&
	    strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

struct request {
	bool get, head;         /* method */
	const char *path;       /* target without the query */
	size_t pathlen;
};

/*
 * Parse "METHOD SP target SP HTTP/1.x" (CR already stripped). Returns 0
 * or the HTTP status to answer with.
 */
static int
mc_parse_line(const char *l, size_t len, struct request *rq)
{
	size_t i = 0, m0, t0;

	while (i < len && is_tchar((unsigned char)l[i]))
		i++;
	if (i == 0 || i > 16 || i >= len || l[i] != ' ')
		return 400;
	m0 = i;
	rq->get = m0 == 3 && memcmp(l, "GET", 3) == 0;
	rq->head = m0 == 4 && memcmp(l, "HEAD", 4) == 0;
	t0 = ++i;
	while (i < len && (unsigned char)l[i] > 0x20 &&
	    (unsigned char)l[i] < 0x7f)
		i++;
	if (i == t0 || i >= len || l[i] != ' ')
		return 400;
	rq->path = l + t0;
	rq->pathlen = i - t0;
	i++;
	if (len - i != 8 || memcmp(l + i, "HTTP/", 5) != 0 ||
	    l[i + 5] < '0' || l[i + 5] > '9' || l[i + 6] != '.' ||
	    l[i + 7] < '0' || l[i + 7] > '9')
		return 400;
	if (l[i + 5] != '1')
		return 505;
	if (rq->path[0] != '/')
		return 400;     /* only origin-form ("/metrics") */
	const char *q = memchr(rq->path, '?', rq->pathlen);
	if (q != NULL)
		rq->pathlen = (size_t)(q - rq->path);
	return 0;
}

/* "Name: value": a token, a colon, then visible text or tabs. */
static bool
mc_header_ok(const char *l, size_t len)
{
	size_t i = 0;

	while (i < len && is_tchar((unsigned char)l[i]))
		i++;
	if (i == 0 || i >= len || l[i] != ':')
		return false;
	for (i++; i < len; i++) {
		unsigned char ch = (unsigned char)l[i];
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
			return false;
	}
	return true;
}

static void
mc_serve(struct mconn *mc, const struct request *rq)
{
	bool head = rq->head;

	if (rq->pathlen == 8 && memcmp(rq->path, "/metrics", 8) == 0) {
		if (!rq->get && !rq->head) {
			mc_respond(mc, 405, NULL, NULL, 0, false);
			return;
		}
		size_t n = metrics_format(metrics_text, sizeof(metrics_text));
		if (n == 0) {
			log_error("metrics: exposition text larger than %zu "
			    "bytes", sizeof(metrics_text));
			mc_respond(mc, 500, NULL, NULL, 0, head);
			return;
		}
		mc_respond(mc, 200, "text/plain; version=0.0.4; charset=utf-8",
		    metrics_text, n, head);
	} else if (rq->pathlen == 8 && memcmp(rq->path, "/healthz", 8) == 0) {
		const char *why;
		char body[128];
		int n;

		if (!rq->get && !rq->head) {
			mc_respond(mc, 405, NULL, NULL, 0, false);
			return;
		}
		if (metrics_healthy(&why))
			mc_respond(mc, 200, NULL, "ok\n", 3, head);
		else {
			n = snprintf(body, sizeof(body), "unhealthy: %s\n",
			    why);
			mc_respond(mc, 503, NULL, body, (size_t)n, head);
		}
	} else
		mc_respond(mc, 404, NULL, NULL, 0, head);
}

/* Look at what arrived; answer once the request head is complete or
 * cannot become valid. eof: the client will send nothing more. */
static void
mc_process(struct mconn *mc, bool eof)
{
	struct request rq = { 0 };
	size_t len, ll;
	const char *in = conn_in(mc->c, &len);
	const char *p, *nl, *end = in + len;
	int st;

	if (len == 0) {
		if (eof)
			mc_close(mc);
		return;
	}
	if (memchr(in, '\0', len) != NULL) {
		mc_respond(mc, 400, NULL, NULL, 0, false);
		return;
	}
	if ((nl = memchr(in, '\n', len)) == NULL) {
		/* Binary noise (a TLS hello, say) is rejected at once, not
		 * after the deadline: the method must be a short token. */
		size_t i = 0;
		while (i < len && i <= 16 && is_tchar((unsigned char)in[i]))
			i++;
		if (i > 16 || (i < len && in[i] != ' ')) {
			mc_respond(mc, 400, NULL, NULL, 0, false);
			return;
		}
		goto incomplete;
	}
	ll = (size_t)(nl - in);
	if (ll > 0 && in[ll - 1] == '\r')
		ll--;
	if ((st = mc_parse_line(in, ll, &rq)) != 0) {
		mc_respond(mc, st, NULL, NULL, 0, rq.head);
		return;
	}
	for (p = nl + 1; p < end; p = nl + 1) {
		if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL)
			goto incomplete;
		ll = (size_t)(nl - p);
		if (ll > 0 && p[ll - 1] == '\r')
			ll--;
		if (ll == 0) {
			mc_serve(mc, &rq);
			return;
		}
		if (!mc_header_ok(p, ll)) {
			mc_respond(mc, 400, NULL, NULL, 0, rq.head);
			return;
		}
	}
incomplete:
	if (len >= METRICS_REQ_MAX)
		mc_respond(mc, 431, NULL, NULL, 0, rq.head);
	else if (eof)
		mc_respond(mc, 400, NULL, NULL, 0, rq.head);
}

static void
mc_discard(struct mconn *mc)
{
	size_t len;

	(void)conn_in(mc->c, &len);
	conn_consume(mc->c, len);
}

static void
mc_conn_cb(struct conn *c, enum conn_event ev, void *arg)
{
	struct mconn *mc = arg;

	(void)c;
	switch (ev) {
	case CONN_READ:
		if (mc->state == MC_READ)
			mc_process(mc, false);
		else
			mc_discard(mc);
		return;
	case CONN_EOF:
		mc->peer_eof = true;
		if (mc->state == MC_READ)
			mc_process(mc, true);
		else if (mc->state == MC_LINGER)
			mc_close(mc);
		return;
	case CONN_DRAIN:
		if (mc->state != MC_RESP)
			return;
		if (mc->peer_eof) {
			mc_close(mc);
			return;
		}
		(void)shutdown(conn_fd(mc->c), SHUT_WR);
		mc->state = MC_LINGER;
		mc_discard(mc);
		conn_set_timeout(mc->c, mc->srv->timeout < METRICS_LINGER ?
		    mc->srv->timeout : METRICS_LINGER);
		return;
	case CONN_TIMEOUT:
		if (mc->state == MC_READ)
			mc_respond(mc, 408, NULL, NULL, 0, false);
		else
			mc_close(mc);
		return;
	case CONN_ERROR:
		mc_close(mc);
		return;
	case CONN_CONNECTED:
	case CONN_TLS_READY:
		return;
	}
}

static void
metrics_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct metrics_server *srv = container_of(w, struct metrics_server, io);

	(void)revents;
	for (int i = 0; i < METRICS_ACCEPT_BURST; i++) {
		int fd = accept4(srv->fd, NULL, NULL,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct mconn *mc;

		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK &&
			    errno != EINTR && errno != ECONNABORTED)
				log_warn("metrics: accept on %s: %s", srv->text,
				    strerror(errno));
			return;
		}
		if (srv->nconns >= METRICS_MAX_CONNS ||
		    (mc = calloc(1, sizeof(*mc))) == NULL) {
			close(fd);
			continue;
		}
		mc->srv = srv;
		mc->state = MC_READ;
		mc->c = conn_new(loop, fd, METRICS_REQ_MAX, METRICS_OUT_MAX,
		    mc_conn_cb, mc);
		if (mc->c == NULL) {
			close(fd);
			free(mc);
			continue;
		}
		mc->next = srv->conns;
		if (srv->conns != NULL)
			srv->conns->prev = mc;
		srv->conns = mc;
		srv->nconns++;
		conn_set_timeout(mc->c, srv->timeout);
	}
}

struct metrics_server *
metrics_server_start(struct ev_loop *loop, const struct cfg_addr *addr,
    char *err, size_t errlen)
{
	struct metrics_server *srv;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int one = 1, e;

	if ((srv = calloc(1, sizeof(*srv))) == NULL) {
		snprintf(err, errlen, "metrics: out of memory");
		return NULL;
	}
	srv->loop = loop;
	srv->timeout = METRICS_TIMEOUT;
	snprintf(srv->text, sizeof(srv->text), "%s", addr->text);
	srv->fd = socket(addr->sa.ss_family,
	    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (srv->fd < 0)
		goto fail;
	(void)setsockopt(srv->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (addr->sa.ss_family == AF_INET6)
		(void)setsockopt(srv->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one,
		    sizeof(one));
	if (bind(srv->fd, (const struct sockaddr *)&addr->sa,
	    addr->salen) < 0 ||
	    listen(srv->fd, 16) < 0 ||
	    getsockname(srv->fd, (struct sockaddr *)&ss, &sl) < 0)
		goto fail;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)&ss;
		srv->port = ntohs(in->sin_port);
	} else if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)&ss;
		srv->port = ntohs(in6->sin6_port);
	}
	reap_init(loop);
	ev_io_init(&srv->io, metrics_accept_cb, srv->fd, EV_READ);
	ev_io_start(loop, &srv->io);
	if (start_time == 0) {
		struct timespec ts;
		if (clock_gettime(CLOCK_REALTIME, &ts) == 0)
			start_time = (double)ts.tv_sec + ts.tv_nsec / 1e9;
	}
	return srv;
fail:
	e = errno;
	snprintf(err, errlen, "metrics: cannot listen on %s: %s%s", addr->text,
	    strerror(e), e == EACCES ? " (ports below 1024 need root or "
	    "CAP_NET_BIND_SERVICE)" : "");
	if (srv->fd >= 0)
		close(srv->fd);
	free(srv);
	return NULL;
}

void
metrics_server_stop(struct metrics_server *srv)
{
	if (srv == NULL)
		return;
	ev_io_stop(srv->loop, &srv->io);
	close(srv->fd);
	while (srv->conns != NULL)
		mc_close(srv->conns);
	free(srv);
}

void
metrics_server_set_timeout(struct metrics_server *srv, double seconds)
{
	if (seconds > 0)
		srv->timeout = seconds;
}

uint16_t
metrics_server_port(const struct metrics_server *srv)
{
	return srv->port;
}

size_t
metrics_server_conns(const struct metrics_server *srv)
{
	return srv->nconns;
}
