/*
 * spool.c - the durable spool (see spool.h): writing messages crash-safely
 * into spool_dir, indexing queue/, scheduling their delivery with back-off
 * on the event loop, and the --spool / --flush command-line helpers.
 *
 * In memory: every queued message is one struct spool_item, in an array
 * sorted by id (= by age) and in exactly one of two heaps while it is not
 * claimed: "wait" ordered by next attempt time, "ready" (due) ordered by
 * id, so spool_next_due() hands out the oldest due message in O(log n).
 * The envelope is read from the file only when a message is claimed.
 */
#include "relay25/spool.h"
#include "relay25/log.h"

#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/random.h>
#endif

#define SPOOL_BUF (64 * 1024)   /* writer buffer */
#define SPOOL_STATE_MAX 4096    /* largest state file read */
#define SPOOL_HDR_LINE_MAX 4096 /* longest envelope line read */
#define SPOOL_BUSY_DELAY 5.0    /* claimed elsewhere: look again after */
#define SPOOL_MAGIC "relay25-spool 1"
#define SPOOL_STATE_MAGIC "relay25-spool-state 1"
#define SPOOL_PIDFILE "relay25.pid"

const char *spool_crash_point;

enum spool_heap_kind { SPOOL_IN_NONE, SPOOL_IN_WAIT, SPOOL_IN_READY };

struct spool_heap {
	struct spool_item **v;
	size_t n, cap;
	enum spool_heap_kind kind;
};

/* What a claimed item carries: its envelope, read from the file. */
struct spool_claim {
	struct spool_envelope env;
	char *sender, *params, *last_error;
	char **rcpts;
	size_t nrcpt;
	off_t body_off;
};

struct spool_item {
	char id[SPOOL_ID_SIZE];
	uint64_t size;          /* file size, envelope included */
	double created;
	double next;            /* next attempt, seconds since the epoch */
	unsigned attempts;
	enum spool_heap_kind in;
	size_t hidx;
	bool seen;              /* rescan mark */
	int lockfd;             /* >= 0 while claimed */
	int queuefd_hint;       /* the spool's queue/ (for open_body) */
	struct spool_claim *claim;
};

struct spool {
	struct ev_loop *loop;
	char *dir;
	int dfd, newfd, queuefd, failedfd;
	struct spool_params p;
	struct spool_item **items;      /* sorted by id */
	size_t nitems, capitems;
	struct spool_heap wait, ready;
	unsigned inflight;
	uint64_t queued_bytes;
	uint64_t reserved;              /* bytes held by open writers */
	struct spool_stats st;
	ev_timer timer;
	bool timer_on;
	bool kick_pending;
	double last_kick, last_rescan;
	uint64_t rng;
	uint64_t last_us;
	unsigned counter;
};

struct spool_writer {
	struct spool *sp;
	int fd;
	char id[SPOOL_ID_SIZE];
	int err;                /* sticky errno */
	uint64_t bytes;         /* written + buffered, reserved in sp */
	size_t blen;
	char buf[SPOOL_BUF];
};

/* ---- small helpers ---- */

static void
spool_crash(const char *where)
{
	if (spool_crash_point && strcmp(spool_crash_point, where) == 0)
		_exit(SPOOL_CRASH_EXIT);
}

static double
spool_time(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
spool_random(void *buf, size_t len)
{
#ifdef __linux__
	if (getrandom(buf, len, GRND_NONBLOCK) == (ssize_t)len)
		return;
#else
	arc4random_buf(buf, len);
	return;
#endif
	/* Fallback: not secret, only needs to differ between processes. */
	uint64_t x = (uint64_t)getpid() * 0x9e3779b97f4a7c15u ^
	    (uint64_t)(spool_time() * 1e6);
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		((unsigned char *)buf)[i] = (unsigned char)x;
	}
}

/* Uniform in [0, 1). */
static double
spool_unit(struct spool *sp)
{
	uint64_t x = sp->rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	sp->rng = x;
	return (double)((x * 0x2545f4914f6cdd1dULL) >> 11) * 0x1.0p-53;
}

static int
spool_write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static bool
spool_valid_id(const char *s)
{
	size_t i;

	for (i = 0; s[i]; i++) {
		char c = s[i];
		if (i == 14 || i == 19) {
			if (c != '-')
				return false;
		} else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
			return false;
		}
	}
	return i == SPOOL_ID_LEN;
}

static double
spool_id_time(const char *id)
{
	return (double)strtoull(id, NULL, 16) / 1e6;
}

/* Copy text for a one-line file field: CR, LF, TAB become spaces, other
 * control bytes '?', cut to SPOOL_REASON_MAX. */
static void
spool_oneline(char *dst, size_t n, const char *src)
{
	size_t j = 0;

	for (; src && *src && j + 1 < n && j < SPOOL_REASON_MAX; src++) {
		unsigned char c = (unsigned char)*src;
		if (c == '\r' || c == '\n' || c == '\t')
			c = ' ';
		else if (c < 0x20 || c == 0x7f)
			c = '?';
		dst[j++] = (char)c;
	}
	while (j > 0 && dst[j - 1] == ' ')
		j--;
	dst[j] = '\0';
}

static bool
spool_has_eol(const char *s)
{
	return s && strpbrk(s, "\r\n") != NULL;
}

/* "2h03m", "45s", "3d04h". */
static void
spool_fmt_dur(char *buf, size_t n, double secs)
{
	unsigned long long s = secs > 0 ? (unsigned long long)secs : 0;

	if (s < 60)
		snprintf(buf, n, "%llus", s);
	else if (s < 3600)
		snprintf(buf, n, "%llum%02llus", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, n, "%lluh%02llum", s / 3600, s % 3600 / 60);
	else
		snprintf(buf, n, "%llud%02lluh", s / 86400, s % 86400 / 3600);
}

double
spool_backoff(const struct spool_params *p, unsigned attempts, double u)
{
	double d = p->retry_min;

	for (unsigned i = 0; i < attempts && d < p->retry_max; i++)
		d *= 2;
	if (d > p->retry_max)
		d = p->retry_max;
	if (u < 0)
		u = 0;
	if (u >= 1)
		u = 0.999999;
	return d * (0.8 + 0.4 * u);
}

/* ---- heaps ---- */

static bool
spool_heap_less(const struct spool_heap *h, const struct spool_item *a,
    const struct spool_item *b)
{
	if (h->kind == SPOOL_IN_WAIT && a->next != b->next)
		return a->next < b->next;
	return strcmp(a->id, b->id) < 0;
}

static void
spool_heap_set(struct spool_heap *h, size_t i, struct spool_item *it)
{
	h->v[i] = it;
	it->hidx = i;
}

static void
spool_heap_up(struct spool_heap *h, size_t i)
{
	struct spool_item *it = h->v[i];

	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (!spool_heap_less(h, it, h->v[parent]))
			break;
		spool_heap_set(h, i, h->v[parent]);
		i = parent;
	}
	spool_heap_set(h, i, it);
}

static void
spool_heap_down(struct spool_heap *h, size_t i)
{
	struct spool_item *it = h->v[i];

	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= h->n)
			break;
		if (c + 1 < h->n && spool_heap_less(h, h->v[c + 1], h->v[c]))
			c++;
		if (!spool_heap_less(h, h->v[c], it))
			break;
		spool_heap_set(h, i, h->v[c]);
		i = c;
	}
	spool_heap_set(h, i, it);
}

static int
spool_heap_push(struct spool_heap *h, struct spool_item *it)
{
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 64;
		struct spool_item **v = realloc(h->v, cap * sizeof *v);
		if (!v)
			return -1;
		h->v = v;
		h->cap = cap;
	}
	it->in = h->kind;
	spool_heap_set(h, h->n++, it);
	spool_heap_up(h, h->n - 1);
	return 0;
}

static void
spool_heap_remove(struct spool_heap *h, struct spool_item *it)
{
	size_t i = it->hidx;

	it->in = SPOOL_IN_NONE;
	if (--h->n == i)
		return;
	spool_heap_set(h, i, h->v[h->n]);
	spool_heap_down(h, i);
	spool_heap_up(h, h->v[i]->hidx);
}

static struct spool_heap *
spool_heap_of(struct spool *sp, const struct spool_item *it)
{
	return it->in == SPOOL_IN_WAIT ? &sp->wait :
	    it->in == SPOOL_IN_READY ? &sp->ready : NULL;
}

static void
spool_unheap(struct spool *sp, struct spool_item *it)
{
	struct spool_heap *h = spool_heap_of(sp, it);

	if (h)
		spool_heap_remove(h, it);
}

/* Into wait (not yet due) or ready. Out of memory: the item stays
 * indexed and unscheduled until a rescan or restart; logged. */
static void
spool_schedule_item(struct spool *sp, struct spool_item *it, double now)
{
	struct spool_heap *h = it->next <= now ? &sp->ready : &sp->wait;

	if (spool_heap_push(h, it) < 0)
		log_error("spool: id=%s out of memory scheduling", it->id);
	else if (h == &sp->ready)
		sp->kick_pending = true;
}

/* ---- the index (sorted by id) ---- */

static size_t
spool_index_pos(const struct spool *sp, const char *id, bool *found)
{
	size_t lo = 0, hi = sp->nitems;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(sp->items[mid]->id, id);
		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

static int
spool_index_add(struct spool *sp, struct spool_item *it)
{
	bool found;
	size_t pos = spool_index_pos(sp, it->id, &found);

	if (found)
		return -1;
	if (sp->nitems == sp->capitems) {
		size_t cap = sp->capitems ? sp->capitems * 2 : 64;
		struct spool_item **v = realloc(sp->items, cap * sizeof *v);
		if (!v)
			return -1;
		sp->items = v;
		sp->capitems = cap;
	}
	memmove(&sp->items[pos + 1], &sp->items[pos],
	    (sp->nitems - pos) * sizeof *sp->items);
	sp->items[pos] = it;
	sp->nitems++;
	sp->queued_bytes += it->size;
	return 0;
}

static void
spool_claim_free(struct spool_claim *c)
{
	if (!c)
		return;
	free(c->sender);
	free(c->params);
	free(c->last_error);
	for (size_t i = 0; i < c->nrcpt; i++)
		free(c->rcpts[i]);
	free(c->rcpts);
	free(c);
}

/* Unindex, unschedule and free an item (its lock, if any, is closed). */
static void
spool_forget(struct spool *sp, struct spool_item *it)
{
	bool found;
	size_t pos = spool_index_pos(sp, it->id, &found);

	if (found && sp->items[pos] == it) {
		memmove(&sp->items[pos], &sp->items[pos + 1],
		    (sp->nitems - pos - 1) * sizeof *sp->items);
		sp->nitems--;
		sp->queued_bytes -= it->size < sp->queued_bytes ? it->size :
		    sp->queued_bytes;
	}
	spool_unheap(sp, it);
	if (it->lockfd >= 0)
		close(it->lockfd);
	spool_claim_free(it->claim);
	free(it);
}

/* ---- state files ---- */

struct spool_state {
	unsigned attempts;
	double next;            /* 0: not given */
	double failed;          /* failed/: when */
	char error[SPOOL_REASON_MAX + 1];
	char reply[SPOOL_REASON_MAX + 1]; /* failed/: why */
};

/* Read dirfd/name as a state file. 0 (st filled), -1 with errno (ENOENT:
 * none; EINVAL: not a state file). */
static int
spool_state_read(int dirfd, const char *name, struct spool_state *st)
{
	char buf[SPOOL_STATE_MAX + 1];
	size_t len = 0;
	char *line, *save = NULL;
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);

	memset(st, 0, sizeof *st);
	if (fd < 0)
		return -1;
	while (len < SPOOL_STATE_MAX) {
		ssize_t n = read(fd, buf + len, SPOOL_STATE_MAX - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	line = strtok_r(buf, "\n", &save);
	if (!line || strcmp(line, SPOOL_STATE_MAGIC) != 0) {
		errno = EINVAL;
		return -1;
	}
	while ((line = strtok_r(NULL, "\n", &save))) {
		if (strncmp(line, "attempts ", 9) == 0)
			st->attempts = (unsigned)strtoul(line + 9, NULL, 10);
		else if (strncmp(line, "next ", 5) == 0)
			st->next = strtod(line + 5, NULL);
		else if (strncmp(line, "error ", 6) == 0)
			snprintf(st->error, sizeof st->error, "%s", line + 6);
		else if (strncmp(line, "failed ", 7) == 0)
			st->failed = strtod(line + 7, NULL);
		else if (strncmp(line, "reply ", 6) == 0)
			snprintf(st->reply, sizeof st->reply, "%s", line + 6);
	}
	return 0;
}

/* Write dirfd/name atomically: name.tmp, fdatasync, rename. extra: more
 * lines (may be NULL). crash_tmp/crash_rename: injection points. */
static int
spool_state_write(int dirfd, const char *name, unsigned attempts,
    double next, const char *error, const char *extra,
    const char *crash_tmp, const char *crash_rename)
{
	char tmp[SPOOL_ID_SIZE + 16], text[2 * SPOOL_REASON_MAX + 256];
	int fd, n, e;

	snprintf(tmp, sizeof tmp, "%s.tmp", name);
	n = snprintf(text, sizeof text, "%s\nattempts %u\nnext %.6f\n"
	    "updated %.6f\nerror %s\n%s", SPOOL_STATE_MAGIC, attempts, next,
	    spool_time(), error ? error : "", extra ? extra : "");
	if (n < 0 || (size_t)n >= sizeof text) {
		errno = EOVERFLOW;
		return -1;
	}
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	if (spool_write_all(fd, text, (size_t)n) < 0 || fdatasync(fd) < 0) {
		e = errno;
		close(fd);
		unlinkat(dirfd, tmp, 0);
		errno = e;
		return -1;
	}
	close(fd);
	spool_crash(crash_tmp);
	if (renameat(dirfd, tmp, dirfd, name) < 0) {
		e = errno;
		unlinkat(dirfd, tmp, 0);
		errno = e;
		return -1;
	}
	spool_crash(crash_rename);
	return 0;
}

static void
spool_unlink_state(int dirfd, const char *id)
{
	char name[SPOOL_ID_SIZE + 16];

	snprintf(name, sizeof name, "%s.state", id);
	unlinkat(dirfd, name, 0);
	snprintf(name, sizeof name, "%s.state.tmp", id);
	unlinkat(dirfd, name, 0);
}

/* ---- envelope files ---- */

static int
spool_add_rcpt(struct spool_claim *c, const char *r)
{
	char **v = realloc(c->rcpts, (c->nrcpt + 1) * sizeof *v);

	if (!v)
		return -1;
	c->rcpts = v;
	if (!(v[c->nrcpt] = strdup(r)))
		return -1;
	c->nrcpt++;
	return 0;
}

/* Parse the envelope of the message open on fd (offset untouched). NULL
 * with errno (EINVAL: not a spool file, or not the one named id). */
static struct spool_claim *
spool_envelope_read(int fd, const char *id)
{
	struct spool_claim *c = calloc(1, sizeof *c);
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int lineno = 0, dfd = dup(fd);
	bool body = false, ok = true;
	double created = 0;
	FILE *f;

	if (!c || dfd < 0 || !(f = fdopen(dfd, "r"))) {
		if (dfd >= 0)
			close(dfd);
		free(c);
		return NULL;
	}
	rewind(f);
	while (ok && !body && (n = getline(&line, &cap, f)) > 0) {
		if (line[n - 1] != '\n' || n > SPOOL_HDR_LINE_MAX) {
			ok = false;
			break;
		}
		line[n - 1] = '\0';
		if (lineno++ == 0)
			ok = strcmp(line, SPOOL_MAGIC) == 0;
		else if (strncmp(line, "id ", 3) == 0)
			ok = !id || strcmp(line + 3, id) == 0;
		else if (strncmp(line, "created ", 8) == 0)
			created = strtod(line + 8, NULL);
		else if (strncmp(line, "sender", 6) == 0 && !c->sender)
			ok = (c->sender = strdup(line[6] ? line + 7 : "")) != NULL;
		else if (strncmp(line, "params", 6) == 0 && !c->params)
			ok = (c->params = strdup(line[6] ? line + 7 : "")) != NULL;
		else if (strncmp(line, "rcpt ", 5) == 0)
			ok = spool_add_rcpt(c, line + 5) == 0;
		else if (strcmp(line, "body") == 0)
			body = true;
	}
	if (body)
		c->body_off = ftello(f);
	free(line);
	fclose(f);
	if (!ok || !body || !c->sender || c->nrcpt == 0 || c->body_off <= 0) {
		spool_claim_free(c);
		errno = EINVAL;
		return NULL;
	}
	if (!c->params && !(c->params = strdup(""))) {
		spool_claim_free(c);
		return NULL;
	}
	c->env.created = created;
	return c;
}

/* ---- the timer ---- */

static void
spool_timer_stop(struct spool *sp)
{
	if (!sp->timer_on)
		return;
	ev_ref(sp->loop);
	ev_timer_stop(sp->loop, &sp->timer);
	sp->timer_on = false;
}

static double
spool_min_delay(double cur, double d)
{
	if (d < 0)
		d = 0;
	return cur < 0 || d < cur ? d : cur;
}

/* Re-arm the timer for the next thing to do: a kick (due messages and a
 * free slot), the next message to become due, the next rescan. Due
 * messages without a free slot need no timer: freeing a slot re-arms. */
static void
spool_arm(struct spool *sp)
{
	double now = spool_time(), delay = -1;
	unsigned max = sp->p.max_inflight ? sp->p.max_inflight : 1;

	if (sp->ready.n && sp->inflight < max && sp->p.kick)
		delay = spool_min_delay(delay, sp->kick_pending ? 0 :
		    sp->last_kick + sp->p.retry_min - now);
	if (sp->wait.n)
		delay = spool_min_delay(delay, sp->wait.v[0]->next - now);
	if (sp->p.rescan > 0)
		delay = spool_min_delay(delay, sp->last_rescan + sp->p.rescan -
		    now);
	spool_timer_stop(sp);
	if (delay < 0)
		return;         /* nothing to wait for */
	ev_timer_set(&sp->timer, delay, 0);
	ev_timer_start(sp->loop, &sp->timer);
	ev_unref(sp->loop);     /* the spool keeps no loop alive */
	sp->timer_on = true;
}

/* Move what became due from wait to ready. */
static void
spool_promote(struct spool *sp, double now)
{
	while (sp->wait.n && sp->wait.v[0]->next <= now) {
		struct spool_item *it = sp->wait.v[0];
		spool_heap_remove(&sp->wait, it);
		spool_schedule_item(sp, it, now);
	}
}

static void spool_rescan(struct spool *sp, bool at_open);

static void
spool_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct spool *sp = w->data;
	unsigned max = sp->p.max_inflight ? sp->p.max_inflight : 1;
	double now = spool_time();

	(void)loop;
	(void)revents;
	ev_ref(sp->loop);
	sp->timer_on = false;
	if (sp->p.rescan > 0 && now >= sp->last_rescan + sp->p.rescan)
		spool_rescan(sp, false);
	spool_promote(sp, now);
	if (sp->ready.n && sp->inflight < max && sp->p.kick &&
	    (sp->kick_pending || now >= sp->last_kick + sp->p.retry_min)) {
		sp->kick_pending = false;
		sp->last_kick = now;
		sp->p.kick(sp->p.kick_arg);
	}
	spool_arm(sp);
}

/* ---- opening, recovery ---- */

static int
spool_mkdirat(int dirfd, const char *name)
{
	int fd;

	if (mkdirat(dirfd, name, 0700) < 0 && errno != EEXIST)
		return -1;
	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return fd;
}

/* A directory stream of its own (a dup() would share the offset). */
static DIR *
spool_opendir(int dirfd)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;

	if (fd < 0)
		return NULL;
	if (!(d = fdopendir(fd)))
		close(fd);
	return d;
}

/* Remove what dead writers left in new/ (files nobody holds a lock on). */
static unsigned
spool_clean_new(struct spool *sp)
{
	DIR *d = spool_opendir(sp->newfd);
	struct dirent *de;
	unsigned n = 0;

	if (!d)
		return 0;
	while ((de = readdir(d))) {
		int f;
		if (de->d_name[0] == '.')
			continue;
		f = openat(sp->newfd, de->d_name, O_RDONLY | O_CLOEXEC |
		    O_NOFOLLOW);
		if (f < 0)
			continue;
		if (flock(f, LOCK_EX | LOCK_NB) == 0 &&
		    unlinkat(sp->newfd, de->d_name, 0) == 0)
			n++;
		close(f);
	}
	closedir(d);
	if (n)
		fsync(sp->newfd);
	return n;
}

/* A message named id exists in dirfd? */
static bool
spool_exists(int dirfd, const char *id)
{
	struct stat st;

	return fstatat(dirfd, id, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

/* Orphans: state files of messages that are gone (done, or moved); in
 * failed/, a state written before a crash kept its message in queue/. */
static void
spool_clean_orphans(struct spool *sp, int dirfd, bool failed)
{
	DIR *d = spool_opendir(dirfd);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		char id[SPOOL_ID_SIZE];
		const char *dot = strchr(de->d_name, '.');
		int q;
		if (!dot || dot - de->d_name != SPOOL_ID_LEN ||
		    (strcmp(dot, ".state") != 0 &&
		    strcmp(dot, ".state.tmp") != 0))
			continue;
		memcpy(id, de->d_name, SPOOL_ID_LEN);
		id[SPOOL_ID_LEN] = '\0';
		if (!spool_valid_id(id) || spool_exists(dirfd, id))
			continue;
		if (failed && (q = openat(sp->queuefd, id, O_RDONLY |
		    O_CLOEXEC)) >= 0) {
			/* Still queued: being failed by a live process
			 * (locked), or its failer crashed (then retried). */
			bool busy = flock(q, LOCK_EX | LOCK_NB) < 0;
			close(q);
			if (busy)
				continue;
		}
		unlinkat(dirfd, de->d_name, 0);
	}
	closedir(d);
}

/* Bring the index in line with queue/: add what is new (another process's
 * messages, or everything at open), drop what is gone and not claimed. */
static void
spool_rescan(struct spool *sp, bool at_open)
{
	DIR *d = spool_opendir(sp->queuefd);
	struct dirent *de;
	double now = spool_time();

	sp->last_rescan = now;
	if (!d) {
		log_error("spool: cannot read %s/queue: %s", sp->dir,
		    strerror(errno));
		return;
	}
	for (size_t i = 0; i < sp->nitems; i++)
		sp->items[i]->seen = false;
	while ((de = readdir(d))) {
		struct spool_item *it;
		struct spool_state st;
		struct stat sb;
		char sname[SPOOL_ID_SIZE + 8];
		bool found;
		size_t pos;

		if (!spool_valid_id(de->d_name))
			continue;
		pos = spool_index_pos(sp, de->d_name, &found);
		if (found) {
			sp->items[pos]->seen = true;
			continue;
		}
		if (fstatat(sp->queuefd, de->d_name, &sb,
		    AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(sb.st_mode))
			continue;
		if (!(it = calloc(1, sizeof *it))) {
			log_error("spool: out of memory indexing queue/");
			break;
		}
		memcpy(it->id, de->d_name, SPOOL_ID_LEN + 1);
		it->lockfd = -1;
		it->seen = true;
		it->size = (uint64_t)sb.st_size;
		it->created = spool_id_time(it->id);
		it->next = it->created + sp->p.retry_min;
		snprintf(sname, sizeof sname, "%s.state", it->id);
		if (spool_state_read(sp->queuefd, sname, &st) == 0) {
			it->attempts = st.attempts;
			if (st.next > 0)
				it->next = st.next;
		}
		if (spool_index_add(sp, it) < 0) {
			free(it);
			continue;
		}
		spool_schedule_item(sp, it, now);
	}
	closedir(d);
	for (size_t i = sp->nitems; i-- > 0;) {
		struct spool_item *it = sp->items[i];
		if (!it->seen && it->lockfd < 0)
			spool_forget(sp, it);
	}
	if (at_open && sp->nitems)
		log_info("spool: %zu message(s), %" PRIu64 " bytes queued in %s",
		    sp->nitems, sp->queued_bytes, sp->dir);
}

struct spool *
spool_open(struct ev_loop *loop, const char *dir,
    const struct spool_params *p, char *err, size_t errlen)
{
	struct spool *sp = calloc(1, sizeof *sp);
	const char *crash = getenv("RELAY25_SPOOL_CRASH");
	unsigned n;

	if (crash && *crash)
		spool_crash_point = crash;
	if (!sp || !(sp->dir = strdup(dir))) {
		snprintf(err, errlen, "spool: out of memory");
		free(sp);
		return NULL;
	}
	sp->loop = loop;
	sp->p = *p;
	if (!(sp->p.retry_min > 0))
		sp->p.retry_min = 60;
	if (sp->p.retry_max < sp->p.retry_min)
		sp->p.retry_max = sp->p.retry_min;
	sp->wait.kind = SPOOL_IN_WAIT;
	sp->ready.kind = SPOOL_IN_READY;
	sp->newfd = sp->queuefd = sp->failedfd = -1;
	spool_random(&sp->rng, sizeof sp->rng);
	sp->rng |= 1;
	if ((mkdir(dir, 0700) < 0 && errno != EEXIST) ||
	    (sp->dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		snprintf(err, errlen, "spool_dir %s: %s", dir, strerror(errno));
		sp->dfd = -1;
		spool_close(sp);
		return NULL;
	}
	if ((sp->newfd = spool_mkdirat(sp->dfd, "new")) < 0 ||
	    (sp->queuefd = spool_mkdirat(sp->dfd, "queue")) < 0 ||
	    (sp->failedfd = spool_mkdirat(sp->dfd, "failed")) < 0) {
		snprintf(err, errlen, "spool_dir %s: %s", dir, strerror(errno));
		spool_close(sp);
		return NULL;
	}
	fsync(sp->dfd);
	if ((n = spool_clean_new(sp)))
		log_info("spool: removed %u unfinished message(s) from %s/new "
		    "(never acknowledged)", n, dir);
	spool_clean_orphans(sp, sp->queuefd, false);
	spool_clean_orphans(sp, sp->failedfd, true);
	ev_timer_init(&sp->timer, spool_on_timer, 0, 0);
	sp->timer.data = sp;
	spool_rescan(sp, true);
	spool_arm(sp);
	return sp;
}

void
spool_close(struct spool *sp)
{
	if (!sp)
		return;
	if (sp->loop)
		spool_timer_stop(sp);
	while (sp->nitems)
		spool_forget(sp, sp->items[sp->nitems - 1]);
	free(sp->items);
	free(sp->wait.v);
	free(sp->ready.v);
	if (sp->dfd >= 0)
		close(sp->dfd);
	if (sp->newfd >= 0)
		close(sp->newfd);
	if (sp->queuefd >= 0)
		close(sp->queuefd);
	if (sp->failedfd >= 0)
		close(sp->failedfd);
	free(sp->dir);
	free(sp);
}

/* ---- writing ---- */

static void
spool_new_id(struct spool *sp, char *id)
{
	uint64_t us = (uint64_t)(spool_time() * 1e6);
	uint32_t r;

	if (us <= sp->last_us)
		us = sp->last_us;       /* never backwards in one process */
	else
		sp->counter = 0;
	sp->last_us = us;
	if (++sp->counter > 0xffff) {   /* 65536 ids in one microsecond */
		sp->last_us = ++us;
		sp->counter = 1;
	}
	spool_random(&r, sizeof r);
	snprintf(id, SPOOL_ID_SIZE, "%014" PRIx64 "-%04x-%08" PRIx32,
	    us & UINT64_C(0xffffffffffffff), sp->counter, r);
}

static int
spool_flush_buf(struct spool_writer *w)
{
	if (w->blen && spool_write_all(w->fd, w->buf, w->blen) < 0) {
		w->err = errno;
		return -1;
	}
	w->blen = 0;
	return 0;
}

static int
spool_add(struct spool_writer *w, const char *p, size_t len)
{
	w->bytes += len;
	w->sp->reserved += len;
	while (len > 0) {
		size_t room = sizeof w->buf - w->blen;
		size_t k = len < room ? len : room;
		memcpy(w->buf + w->blen, p, k);
		w->blen += k;
		p += k;
		len -= k;
		if (w->blen == sizeof w->buf && spool_flush_buf(w) < 0)
			return -1;
	}
	return 0;
}

static int
spool_addf(struct spool_writer *w, const char *key, const char *val)
{
	if (spool_add(w, key, strlen(key)) < 0 ||
	    (val && *val && (spool_add(w, " ", 1) < 0 ||
	    spool_add(w, val, strlen(val)) < 0)))
		return -1;
	return spool_add(w, "\n", 1);
}

static void
spool_writer_free(struct spool_writer *w, bool unlink_it)
{
	struct spool *sp = w->sp;

	sp->reserved -= w->bytes < sp->reserved ? w->bytes : sp->reserved;
	if (w->fd >= 0) {
		if (unlink_it)
			unlinkat(sp->newfd, w->id, 0);
		close(w->fd);
	}
	free(w);
}

struct spool_writer *
spool_begin(struct spool *sp, const char *sender, const char *const *rcpts,
    size_t nrcpt, const char *mail_params)
{
	struct spool_writer *w;
	char line[64];

	if (!sender || nrcpt == 0 || !rcpts || spool_has_eol(sender) ||
	    spool_has_eol(mail_params)) {
		errno = EINVAL;
		return NULL;
	}
	for (size_t i = 0; i < nrcpt; i++)
		if (!rcpts[i] || spool_has_eol(rcpts[i])) {
			errno = EINVAL;
			return NULL;
		}
	if (sp->p.max_size && sp->queued_bytes + sp->reserved >=
	    sp->p.max_size) {
		sp->st.refused++;
		errno = ENOSPC;
		return NULL;
	}
	if (!(w = malloc(sizeof *w)))
		return NULL;
	w->sp = sp;
	w->err = 0;
	w->bytes = 0;
	w->blen = 0;
	spool_new_id(sp, w->id);
	w->fd = openat(sp->newfd, w->id, O_WRONLY | O_CREAT | O_EXCL |
	    O_CLOEXEC, 0600);
	if (w->fd < 0 || flock(w->fd, LOCK_EX) < 0) {
		int e = errno;
		spool_writer_free(w, true);
		errno = e;
		return NULL;
	}
	snprintf(line, sizeof line, "%.6f", spool_id_time(w->id));
	if (spool_addf(w, SPOOL_MAGIC, NULL) < 0 ||
	    spool_addf(w, "id", w->id) < 0 ||
	    spool_addf(w, "created", line) < 0 ||
	    spool_addf(w, "sender", sender) < 0 ||
	    spool_addf(w, "params", mail_params) < 0)
		goto fail;
	for (size_t i = 0; i < nrcpt; i++)
		if (spool_addf(w, "rcpt", rcpts[i]) < 0)
			goto fail;
	if (spool_addf(w, "body", NULL) < 0)
		goto fail;
	return w;
fail:;
	int e = w->err ? w->err : errno;
	spool_writer_free(w, true);
	errno = e;
	return NULL;
}

int
spool_write(struct spool_writer *w, const char *buf, size_t len)
{
	struct spool *sp = w->sp;

	if (w->err) {
		errno = w->err;
		return -1;
	}
	if (sp->p.max_size && sp->queued_bytes + sp->reserved + len >
	    sp->p.max_size) {
		sp->st.refused++;
		errno = w->err = ENOSPC;
		return -1;
	}
	if (spool_add(w, buf, len) < 0) {
		errno = w->err;
		return -1;
	}
	if (spool_crash_point && strcmp(spool_crash_point,
	    "write-partial") == 0 && len > 0) {
		spool_flush_buf(w);
		spool_crash("write-partial");
	}
	return 0;
}

int
spool_commit(struct spool_writer *w, char *id_out, size_t idlen)
{
	struct spool *sp = w->sp;
	struct spool_item *it;
	double now;
	int e;

	if (w->err || spool_flush_buf(w) < 0) {
		e = w->err;
		goto fail;
	}
	spool_crash("commit-before-fsync");
	if (fdatasync(w->fd) < 0) {
		e = errno;
		goto fail;
	}
	spool_crash("commit-after-fsync");
	if (!(it = calloc(1, sizeof *it))) {
		e = ENOMEM;
		goto fail;
	}
	if (renameat(sp->newfd, w->id, sp->queuefd, w->id) < 0) {
		e = errno;
		free(it);
		goto fail;
	}
	spool_crash("commit-after-rename");
	if (fsync(sp->queuefd) < 0) {
		/* The rename may or may not survive a power loss: take it
		 * back so no 250 is given for it. */
		e = errno;
		unlinkat(sp->queuefd, w->id, 0);
		free(it);
		spool_writer_free(w, false);
		errno = e;
		return -1;
	}
	spool_crash("commit-after-dirsync");
	now = spool_time();
	snprintf(it->id, sizeof it->id, "%s", w->id);
	it->lockfd = -1;
	it->size = w->bytes;
	it->created = spool_id_time(it->id);
	it->next = now + spool_backoff(&sp->p, 0, spool_unit(sp));
	if (id_out && idlen)
		snprintf(id_out, idlen, "%s", it->id);
	spool_writer_free(w, false);
	sp->st.spooled++;
	if (spool_index_add(sp, it) < 0) {
		/* Durable all the same: a restart or rescan finds it. */
		log_error("spool: id=%s out of memory indexing", it->id);
		free(it);
		return 0;
	}
	spool_schedule_item(sp, it, now);
	spool_arm(sp);
	return 0;
fail:
	spool_writer_free(w, true);
	errno = e;
	return -1;
}

void
spool_abort(struct spool_writer *w)
{
	if (w)
		spool_writer_free(w, true);
}

const char *
spool_writer_id(const struct spool_writer *w)
{
	return w->id;
}

/* ---- delivering ---- */

/* Move a message to failed/ with why; forget it. The state goes first, so
 * a crash leaves either the message queued (retried) or both in failed/. */
static void
spool_move_failed(struct spool *sp, struct spool_item *it, const char *why,
    bool expired)
{
	char sname[SPOOL_ID_SIZE + 8], reason[SPOOL_REASON_MAX + 1],
	    extra[2 * SPOOL_REASON_MAX + 64], last[SPOOL_REASON_MAX + 1],
	    sh[32];
	const char *prev = it->claim && it->claim->last_error ?
	    it->claim->last_error : "";

	spool_oneline(reason, sizeof reason, why);
	spool_oneline(last, sizeof last, prev);
	snprintf(extra, sizeof extra, "failed %.6f\nreply %s\n", spool_time(),
	    reason);
	snprintf(sname, sizeof sname, "%s.state", it->id);
	if (spool_state_write(sp->failedfd, sname, it->attempts, 0, last,
	    extra, "", "") < 0)
		log_error("spool: id=%s cannot write failed/%s: %s", it->id,
		    sname, strerror(errno));
	spool_crash("fail-after-state");
	if (renameat(sp->queuefd, it->id, sp->failedfd, it->id) < 0) {
		log_error("spool: id=%s cannot move to failed/: %s", it->id,
		    strerror(errno));
		unlinkat(sp->failedfd, sname, 0);
		/* Leave it queued; try again after the longest back-off. */
		if (it->lockfd >= 0) {
			close(it->lockfd);
			it->lockfd = -1;
		}
		spool_claim_free(it->claim);
		it->claim = NULL;
		it->next = spool_time() + sp->p.retry_max;
		spool_schedule_item(sp, it, spool_time());
		return;
	}
	fsync(sp->failedfd);
	spool_crash("fail-after-rename");
	spool_unlink_state(sp->queuefd, it->id);
	fsync(sp->queuefd);
	spool_fmt_dur(sh, sizeof sh, spool_time() - it->created);
	log_sanitize(extra, sizeof extra, reason, strlen(reason));
	log_warn("spool: id=%s %s after %u attempt(s), age %s, moved to "
	    "failed/: %s", it->id, expired ? "expired" : "failed permanently",
	    it->attempts, sh, extra);
	if (expired)
		sp->st.expired++;
	else
		sp->st.failed++;
	spool_forget(sp, it);
}

static void
spool_expire(struct spool *sp, struct spool_item *it)
{
	char why[SPOOL_REASON_MAX + 32];
	const char *last = it->claim && it->claim->last_error ?
	    it->claim->last_error : "";

	snprintf(why, sizeof why, "expired%s%s", *last ? ": last error: " : "",
	    last);
	spool_move_failed(sp, it, why, true);
}

enum spool_claim_rc { SPOOL_CLAIMED, SPOOL_GONE, SPOOL_BUSY, SPOOL_LATER,
    SPOOL_MOVED };

/* Lock it against other processes and read its envelope. */
static enum spool_claim_rc
spool_claim(struct spool *sp, struct spool_item *it, double now)
{
	struct spool_state st;
	struct stat a, b;
	char sname[SPOOL_ID_SIZE + 8];
	struct spool_claim *c;
	int fd = openat(sp->queuefd, it->id, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return SPOOL_GONE;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		close(fd);
		return SPOOL_BUSY;
	}
	/* Delivered or moved by another process between open and lock? */
	if (fstat(fd, &a) < 0 || fstatat(sp->queuefd, it->id, &b,
	    AT_SYMLINK_NOFOLLOW) < 0 || a.st_ino != b.st_ino ||
	    a.st_dev != b.st_dev) {
		close(fd);
		return SPOOL_GONE;
	}
	it->lockfd = fd;
	it->queuefd_hint = sp->queuefd;
	snprintf(sname, sizeof sname, "%s.state", it->id);
	memset(&st, 0, sizeof st);
	if (spool_state_read(sp->queuefd, sname, &st) == 0 &&
	    st.attempts > it->attempts) {
		/* Another process tried it since we looked. */
		it->attempts = st.attempts;
		if (st.next > now) {
			it->next = st.next;
			close(fd);
			it->lockfd = -1;
			return SPOOL_LATER;
		}
	}
	c = spool_envelope_read(fd, it->id);
	if (!c && errno != EINVAL) {
		close(fd);
		it->lockfd = -1;
		return SPOOL_BUSY;      /* out of memory, I/O: not its fault */
	}
	if (!c) {
		char why[128];
		snprintf(why, sizeof why, "unreadable spool file: %s",
		    strerror(errno));
		spool_move_failed(sp, it, why, false);
		return SPOOL_MOVED;
	}
	it->claim = c;
	if (!(c->last_error = strdup(st.error))) {
		close(fd);
		it->lockfd = -1;
		spool_claim_free(c);
		it->claim = NULL;
		return SPOOL_BUSY;
	}
	if (sp->p.max_age > 0 && now >= it->created + sp->p.max_age) {
		spool_expire(sp, it);
		return SPOOL_MOVED;
	}
	it->size = (uint64_t)a.st_size;
	c->env.id = it->id;
	c->env.sender = c->sender;
	c->env.params = c->params;
	c->env.rcpts = (const char *const *)c->rcpts;
	c->env.nrcpt = c->nrcpt;
	c->env.created = it->created;
	c->env.attempts = it->attempts;
	c->env.last_error = c->last_error;
	c->env.body_size = (uint64_t)a.st_size - (uint64_t)c->body_off;
	return SPOOL_CLAIMED;
}

struct spool_item *
spool_next_due(struct spool *sp)
{
	unsigned max = sp->p.max_inflight ? sp->p.max_inflight : 1;
	double now = spool_time();

	spool_promote(sp, now);
	while (sp->inflight < max && sp->ready.n) {
		struct spool_item *it = sp->ready.v[0];
		spool_heap_remove(&sp->ready, it);
		switch (spool_claim(sp, it, now)) {
		case SPOOL_CLAIMED:
			sp->inflight++;
			spool_crash("deliver-after-claim");
			return it;
		case SPOOL_GONE:
			spool_forget(sp, it);
			break;
		case SPOOL_BUSY:
			it->next = now + SPOOL_BUSY_DELAY;
			spool_schedule_item(sp, it, now);
			break;
		case SPOOL_LATER:
			spool_schedule_item(sp, it, now);
			break;
		case SPOOL_MOVED:
			break;
		}
	}
	spool_arm(sp);
	return NULL;
}

const struct spool_envelope *
spool_item_envelope(const struct spool_item *it)
{
	return &it->claim->env;
}

int
spool_item_open_body(const struct spool_item *it)
{
	int fd;

	/* A fresh open file description, so its offset is the caller's.
	 * While claimed, nobody else may move or remove queue/ID. */
	fd = openat(it->queuefd_hint, it->id, O_RDONLY | O_CLOEXEC |
	    O_NOFOLLOW);
	if (fd < 0)
		return -1;
	if (lseek(fd, it->claim->body_off, SEEK_SET) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* A claimed item is no longer in flight. */
static void
spool_unclaim(struct spool *sp, struct spool_item *it)
{
	(void)it;
	if (sp->inflight)
		sp->inflight--;
	sp->kick_pending = true;        /* a slot is free */
}

void
spool_done(struct spool *sp, struct spool_item *it)
{
	char sh[32];

	spool_crash("deliver-after-250");
	if (unlinkat(sp->queuefd, it->id, 0) < 0)
		log_error("spool: id=%s delivered but cannot remove it: %s "
		    "(it will be delivered again)", it->id, strerror(errno));
	spool_crash("deliver-after-unlink");
	spool_unlink_state(sp->queuefd, it->id);
	fsync(sp->queuefd);
	spool_fmt_dur(sh, sizeof sh, spool_time() - it->created);
	log_info("spool: id=%s delivered after %u failed attempt(s), "
	    "age %s", it->id, it->attempts, sh);
	sp->st.delivered++;
	spool_unclaim(sp, it);
	spool_forget(sp, it);
	spool_arm(sp);
}

void
spool_retry(struct spool *sp, struct spool_item *it, const char *reason)
{
	char sname[SPOOL_ID_SIZE + 8], why[SPOOL_REASON_MAX + 1], sh[32],
	    lg[SPOOL_REASON_MAX + 64];
	double now = spool_time();

	spool_unclaim(sp, it);
	spool_oneline(why, sizeof why, reason ? reason : "");
	it->attempts++;
	free(it->claim->last_error);
	it->claim->last_error = strdup(why);
	if (sp->p.max_age > 0 && now >= it->created + sp->p.max_age) {
		spool_expire(sp, it);
		spool_arm(sp);
		return;
	}
	it->next = now + spool_backoff(&sp->p, it->attempts, spool_unit(sp));
	if (sp->p.max_age > 0 && it->next > it->created + sp->p.max_age)
		it->next = it->created + sp->p.max_age;
	snprintf(sname, sizeof sname, "%s.state", it->id);
	if (spool_state_write(sp->queuefd, sname, it->attempts, it->next, why,
	    NULL, "retry-after-state-tmp", "retry-after-state-rename") < 0)
		log_error("spool: id=%s cannot write its state: %s", it->id,
		    strerror(errno));
	spool_fmt_dur(sh, sizeof sh, it->next - now);
	log_info("spool: id=%s attempt %u failed, next in %s: %s", it->id,
	    it->attempts, sh, log_sanitize(lg, sizeof lg, why, strlen(why)));
	sp->st.retried++;
	close(it->lockfd);
	it->lockfd = -1;
	spool_claim_free(it->claim);
	it->claim = NULL;
	spool_schedule_item(sp, it, now);
	spool_arm(sp);
}

void
spool_fail(struct spool *sp, struct spool_item *it, const char *reply)
{
	spool_unclaim(sp, it);
	it->attempts++;         /* this one failed too, for good */
	spool_move_failed(sp, it, reply && *reply ? reply : "(no reply)",
	    false);
	spool_arm(sp);
}

void
spool_release(struct spool *sp, struct spool_item *it)
{
	double now = spool_time();

	spool_unclaim(sp, it);
	close(it->lockfd);
	it->lockfd = -1;
	spool_claim_free(it->claim);
	it->claim = NULL;
	it->next = now;
	spool_schedule_item(sp, it, now);
	spool_arm(sp);
}

void
spool_flush(struct spool *sp)
{
	double now = spool_time();

	spool_rescan(sp, false);
	while (sp->wait.n) {
		struct spool_item *it = sp->wait.v[0];
		spool_heap_remove(&sp->wait, it);
		it->next = now;
		spool_schedule_item(sp, it, now);
	}
	if (sp->ready.n)
		sp->kick_pending = true;
	log_info("spool: flush: %zu message(s) due now", sp->ready.n);
	spool_arm(sp);
}

void
spool_get_stats(const struct spool *sp, struct spool_stats *out)
{
	*out = sp->st;
	out->queued = sp->nitems;
	out->queued_bytes = sp->queued_bytes;
	out->inflight = sp->inflight;
}

/* ---- the command line ---- */

static int
spool_cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The message ids in dirpath, sorted; *n of them. NULL on error (or none
 * with *n = 0: a valid empty array may be NULL too; check errno). */
static char **
spool_ids(const char *dirpath, size_t *n)
{
	DIR *d = opendir(dirpath);
	struct dirent *de;
	char **v = NULL;
	size_t cap = 0;

	*n = 0;
	if (!d)
		return NULL;
	while ((de = readdir(d))) {
		if (!spool_valid_id(de->d_name))
			continue;
		if (*n == cap) {
			char **nv = realloc(v, (cap = cap ? cap * 2 : 32) *
			    sizeof *nv);
			if (!nv)
				break;
			v = nv;
		}
		if (!(v[*n] = strdup(de->d_name)))
			break;
		(*n)++;
	}
	closedir(d);
	if (*n)
		qsort(v, *n, sizeof *v, spool_cmp_names);
	return v;
}

static void
spool_list_one(FILE *out, int dirfd, const char *id, bool failed,
    double now)
{
	char sname[SPOOL_ID_SIZE + 8], age[32], nx[32], from[300],
	    why[2 * SPOOL_REASON_MAX + 8];
	struct spool_claim *c = NULL;
	struct spool_state st;
	struct stat sb;
	bool have_state;
	int fd = openat(dirfd, id, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0 || fstat(fd, &sb) < 0) {
		if (fd >= 0)
			close(fd);
		return;         /* gone meanwhile */
	}
	c = spool_envelope_read(fd, id);
	close(fd);
	snprintf(sname, sizeof sname, "%s.state", id);
	have_state = spool_state_read(dirfd, sname, &st) == 0;
	spool_fmt_dur(age, sizeof age, now - spool_id_time(id));
	log_sanitize(from, sizeof from, c ? c->sender : "?",
	    strlen(c ? c->sender : "?"));
	fprintf(out, "%s  age %s  size %lld  from <%s>  rcpts %zu  "
	    "attempts %u", id, age, (long long)sb.st_size, from,
	    c ? c->nrcpt : 0, have_state ? st.attempts : 0);
	if (!c)
		fputs("  (unreadable envelope)", out);
	if (failed) {
		if (have_state && st.failed > 0) {
			spool_fmt_dur(nx, sizeof nx, now - st.failed);
			fprintf(out, "  failed %s ago", nx);
		}
		log_sanitize(why, sizeof why, st.reply, strlen(st.reply));
		fprintf(out, "  reason \"%s\"\n", have_state && *st.reply ?
		    why : "unknown (no state file)");
	} else {
		double next = have_state && st.next > 0 ? st.next : 0;
		if (next > now) {
			spool_fmt_dur(nx, sizeof nx, next - now);
			fprintf(out, "  next in %s", nx);
		} else {
			fputs(have_state ? "  next now" : "  not yet tried",
			    out);
		}
		if (have_state && *st.error) {
			log_sanitize(why, sizeof why, st.error,
			    strlen(st.error));
			fprintf(out, "  error \"%s\"", why);
		}
		fputc('\n', out);
	}
	spool_claim_free(c);
}

int
spool_list(const char *dir, FILE *out)
{
	static const char *const sub[] = { "queue", "failed" };
	double now = spool_time();
	struct stat sb;

	if (stat(dir, &sb) < 0)
		return -1;
	if (!S_ISDIR(sb.st_mode)) {
		errno = ENOTDIR;
		return -1;
	}

	for (int k = 0; k < 2; k++) {
		char path[4096];
		char **ids;
		size_t n;
		uint64_t bytes = 0;
		int dirfd;

		snprintf(path, sizeof path, "%s/%s", dir, sub[k]);
		errno = 0;
		ids = spool_ids(path, &n);
		if (!ids && errno && errno != ENOENT)
			return -1;
		if ((dirfd = open(path, O_RDONLY | O_DIRECTORY |
		    O_CLOEXEC)) < 0) {
			if (errno != ENOENT) {
				for (size_t i = 0; i < n; i++)
					free(ids[i]);
				free(ids);
				return -1;
			}
		}
		for (size_t i = 0; i < n && dirfd >= 0; i++) {
			struct stat fsb;
			if (fstatat(dirfd, ids[i], &fsb, 0) == 0)
				bytes += (uint64_t)fsb.st_size;
		}
		fprintf(out, "%s: %zu message(s), %" PRIu64 " bytes (%s)\n",
		    sub[k], n, bytes, path);
		for (size_t i = 0; i < n; i++) {
			if (dirfd >= 0)
				spool_list_one(out, dirfd, ids[i], k == 1, now);
			free(ids[i]);
		}
		free(ids);
		if (dirfd >= 0)
			close(dirfd);
	}
	return 0;
}

int
spool_pidfile_write(const char *dir)
{
	char path[4096], tmp[4096 + 8], text[32];
	int fd, n, e;

	snprintf(path, sizeof path, "%s/%s", dir, SPOOL_PIDFILE);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	n = snprintf(text, sizeof text, "%ld\n", (long)getpid());
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0600)) < 0)
		return -1;
	if (spool_write_all(fd, text, (size_t)n) < 0 || close(fd) < 0 ||
	    rename(tmp, path) < 0) {
		e = errno;
		unlink(tmp);
		errno = e;
		return -1;
	}
	return 0;
}

/* The pid in dir/relay25.pid, or -1 with errno. */
static long
spool_pidfile_read(const char *dir)
{
	char path[4096], text[32];
	FILE *f;
	char *end;
	long pid;

	snprintf(path, sizeof path, "%s/%s", dir, SPOOL_PIDFILE);
	if (!(f = fopen(path, "re")))
		return -1;
	if (!fgets(text, sizeof text, f)) {
		fclose(f);
		errno = EINVAL;
		return -1;
	}
	fclose(f);
	pid = strtol(text, &end, 10);
	if (pid <= 0 || (*end && *end != '\n')) {
		errno = EINVAL;
		return -1;
	}
	return pid;
}

void
spool_pidfile_remove(const char *dir)
{
	char path[4096];

	if (spool_pidfile_read(dir) != (long)getpid())
		return;         /* not ours (any more) */
	snprintf(path, sizeof path, "%s/%s", dir, SPOOL_PIDFILE);
	unlink(path);
}

static bool
spool_basename_is(const char *s, const char *name)
{
	const char *b = strrchr(s, '/');

	return strcmp(b ? b + 1 : s, name) == 0;
}

/* Is pid relay25? true where /proc is not there to ask. */
static bool
spool_is_relay25(long pid)
{
	char path[64], buf[4096];
	size_t len;
	FILE *f;

	if (access("/proc/self/comm", R_OK) < 0)
		return true;
	snprintf(path, sizeof path, "/proc/%ld/comm", pid);
	if ((f = fopen(path, "re"))) {
		len = fread(buf, 1, sizeof buf - 1, f);
		fclose(f);
		buf[len] = '\0';
		buf[strcspn(buf, "\n")] = '\0';
		if (strcmp(buf, "relay25") == 0)
			return true;
	}
	/* Run under a wrapper (valgrind): an argv word named relay25. */
	snprintf(path, sizeof path, "/proc/%ld/cmdline", pid);
	if (!(f = fopen(path, "re")))
		return false;
	len = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[len] = '\0';
	for (size_t i = 0; i < len; i += strlen(buf + i) + 1)
		if (spool_basename_is(buf + i, "relay25"))
			return true;
	return false;
}

int
spool_request_flush(const char *dir, char *err, size_t errlen)
{
	long pid = spool_pidfile_read(dir);
	int e;

	if (pid < 0) {
		e = errno;
		snprintf(err, errlen, "%s/%s: %s", dir, SPOOL_PIDFILE,
		    e == ENOENT ? "not found (is relay25 running with this "
		    "spool_dir?)" : strerror(e));
		errno = e;
		return -1;
	}
	if (kill((pid_t)pid, 0) < 0 && errno == ESRCH) {
		snprintf(err, errlen, "relay25 (pid %ld) is not running", pid);
		errno = ESRCH;
		return -1;
	}
	if (!spool_is_relay25(pid)) {
		snprintf(err, errlen, "pid %ld in %s/%s is not relay25", pid,
		    dir, SPOOL_PIDFILE);
		errno = EPERM;
		return -1;
	}
	if (kill((pid_t)pid, SIGUSR1) < 0) {
		e = errno;
		snprintf(err, errlen, "cannot signal pid %ld: %s", pid,
		    strerror(e));
		errno = e;
		return -1;
	}
	return 0;
}
