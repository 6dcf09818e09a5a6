/*
 * spool.h - the optional durable spool (§6 of the spec): when every
 * upstream is unavailable, a message is written to disk and acknowledged,
 * then delivered in the background by the same event loop.
 *
 * Layout of spool_dir (all created 0700):
 *   new/ID             a message being received (temporary; the writer holds
 *                      an flock on it until commit or abort)
 *   queue/ID           a committed message: immutable once renamed here
 *   queue/ID.state     its mutable part (attempts, next attempt, last
 *                      error), replaced atomically; absent = never tried
 *   queue/ID.state.tmp a state being written (ignored; overwritten)
 *   failed/ID          a message given up on (5xx, or expired)
 *   failed/ID.state    why: the ESP's reply or "expired", and the history
 *   relay25.pid        the pid `relay25 --flush` signals (spool_pidfile_*)
 *
 * Message file: a text envelope of "\n"-terminated lines, then the body:
 *   relay25-spool 1
 *   id ID
 *   created 1712345678.123456       (seconds since the epoch)
 *   sender a@example.com            (as given to spool_begin; may be empty)
 *   params SIZE=1234 BODY=8BITMIME  (as given; may be empty)
 *   rcpt b@example.net              (one line per recipient, >= 1)
 *   body                            (the body starts after this line)
 *   <body bytes in SMTP wire form, dot-stuffed, CRLF, no final ".\r\n">
 * State file: "relay25-spool-state 1", then "attempts N", "next T",
 * "updated T", "error TEXT" (and in failed/: "failed T", "reply TEXT").
 *
 * IDs: 14 hex digits of microseconds since the epoch, '-', a 4-hex-digit
 * per-process counter, '-', 8 random hex digits, e.g.
 * "00061a2b3c4d5e-0001-9f8e7d6c". Sorting ids as strings sorts messages by
 * creation time (strictly so within one process); they are unique across
 * processes and restarts, and filesystem-safe.
 *
 * Crash safety. spool_commit() writes the whole file, fdatasync()s it,
 * renames new/ID to queue/ID and fsync()s queue/; only after it returns 0
 * may the client get 250. A crash before the rename leaves a file in new/
 * that spool_open() removes (the client got no 250, so it retries or the
 * message was never acknowledged); after the rename the message is queued
 * exactly once. A crash of the process after rename() returned keeps the
 * rename (it is in the kernel); only a power loss or kernel crash before
 * the directory fsync could undo it, and then the client had no 250 yet.
 *
 * THE ONE DUPLICATE WINDOW. A message is removed only after the ESP's 250
 * for it: spool_done() unlinks queue/ID. If relay25 dies (kill -9, crash)
 * after the ESP's 250 reached relay25 and before the unlink() system call
 * returned - i.e. between reading the 250 and spool_done()'s unlink, a
 * span of microseconds on the event loop - or the machine loses power
 * after that 250 and before spool_done()'s fsync of queue/ completed, the
 * message is still queued after restart and is delivered a second time.
 * (SMTP itself adds the classic RFC 1047 window: if the connection drops
 * after the ESP received the final dot but before its 250 arrived, relay25
 * cannot know the ESP has the message and retries it.) Nothing else
 * delivers twice: a message being delivered is flock()ed, so no second
 * process (worker) delivers it at the same time, and a crash before the
 * ESP's 250 means the ESP did not acknowledge it.
 *
 * Several processes (workers = N) may share one spool_dir: each calls
 * spool_open() after fork; writers are independent files; deliveries
 * claim a message with a non-blocking flock() on queue/ID, re-checked to
 * be still linked, so each delivery happens in one process only; with
 * params.rescan > 0 each process picks up the others' messages. The size
 * limit is then checked against what each process last saw.
 *
 * Crash injection (tests only, but compiled in): spool_open() reads
 * RELAY25_SPOOL_CRASH into spool_crash_point; when the spool reaches the
 * point of that name it calls _exit(99). Points, in order of occurrence:
 *   write-partial            spool_write(): after the first body bytes hit
 *                            the file (a half-written message in new/)
 *   commit-before-fsync      spool_commit(): all bytes written, no fsync
 *   commit-after-fsync       file fsync'd, not yet renamed
 *   commit-after-rename      renamed into queue/, directory not fsync'd
 *   commit-after-dirsync     durable; spool_commit() has not returned (no
 *                            250 was sent: a duplicate the client may cause
 *                            by retrying, not one relay25 causes)
 *   deliver-after-claim      spool_next_due() claimed a message
 *   deliver-after-250        spool_done() entered (the ESP said 250), before
 *                            the unlink: the duplicate window above
 *   deliver-after-unlink     message unlinked, state/dir fsync not done
 *   retry-after-state-tmp    spool_retry(): ID.state.tmp written and
 *                            fsync'd, not renamed (the old state stays)
 *   retry-after-state-rename the new state is in place
 *   fail-after-state         spool_fail(): failed/ID.state written, the
 *                            message not yet moved (it stays queued)
 *   fail-after-rename        message in failed/, queue/ID.state not removed
 *
 * Threads: none; every call is on the loop's thread. Writing is
 * synchronous file I/O on the loop: spool_commit() blocks for one fdatasync
 * and one directory fsync (a few milliseconds on an SSD).
 */
#ifndef RELAY25_SPOOL_H
#define RELAY25_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

struct ev_loop;
struct spool;
struct spool_writer;
struct spool_item;

#define SPOOL_ID_LEN 28         /* strlen of an id */
#define SPOOL_ID_SIZE 32        /* a buffer that holds one, NUL included */
#define SPOOL_REASON_MAX 512    /* longest error/reply kept (bytes) */
#define SPOOL_CRASH_EXIT 99     /* exit status of an injected crash */

struct spool_params {
	uint64_t max_size;      /* bytes of messages in queue/ (0: no limit) */
	double max_age;         /* seconds; older -> failed/ "expired" (0: none) */
	double retry_min;       /* first back-off, seconds (> 0) */
	double retry_max;       /* back-off cap, seconds (>= retry_min) */
	unsigned max_inflight;  /* deliveries claimed at once, this process */
	double rescan;          /* seconds between re-reads of queue/ to see
	                         * other processes' messages; 0: never (one
	                         * process) */
	/* Called from the spool's own timer (never from inside another
	 * spool_* call) when a message is due and a delivery slot is free;
	 * the callee calls spool_next_due() until it returns NULL or it
	 * cannot start more. Not called again for the same items until
	 * something changes (a slot frees, more become due, a flush) or
	 * retry_min passes. It must not call spool_close(). */
	void (*kick)(void *arg);
	void *kick_arg;
};

/* Counters for metrics (this process). */
struct spool_stats {
	uint64_t queued;        /* messages in the index */
	uint64_t queued_bytes;  /* their file sizes */
	unsigned inflight;      /* claimed, not yet done/retried/failed */
	uint64_t spooled;       /* committed since spool_open() */
	uint64_t delivered;     /* spool_done() */
	uint64_t retried;       /* spool_retry() */
	uint64_t failed;        /* moved to failed/ on a 5xx (spool_fail) */
	uint64_t expired;       /* moved to failed/ for max_age */
	uint64_t refused;       /* spool_begin/write refused: over max_size */
};

/* A claimed message's envelope; valid until the item is given back. */
struct spool_envelope {
	const char *id;
	const char *sender;     /* "" for the null sender, if so given */
	const char *params;     /* MAIL parameters as given, or "" */
	const char *const *rcpts;
	size_t nrcpt;
	double created;         /* seconds since the epoch */
	unsigned attempts;      /* failed attempts so far */
	const char *last_error; /* "" if none */
	uint64_t body_size;     /* bytes after the envelope */
};

/*
 * Open (creating with mode 0700 what is missing) the spool in dir and
 * recover from a crash: files in new/ nobody holds are removed, orphan
 * state files are removed, and queue/ is indexed oldest first. Starts a
 * timer on loop (which keeps no loop alive: ev_unref). Call it after
 * privileges are dropped, in each worker after fork. NULL on error with a
 * message in err.
 */
struct spool *spool_open(struct ev_loop *, const char *dir,
    const struct spool_params *, char *err, size_t errlen);
/* Stop the timer and free everything. Items still claimed are released
 * unchanged (as spool_release()); the caller must not use them after. */
void spool_close(struct spool *);

/* ---- receiving one message ------------------------------------------ */

/*
 * Start spooling a message. sender, each rcpt and mail_params (may be
 * NULL) must not contain CR, LF (EINVAL); nrcpt >= 1. NULL with errno:
 * ENOSPC the spool is at spool_max_size (answer 451), EINVAL, or a file
 * system error. The writer owns an open file in new/ until commit/abort.
 */
struct spool_writer *spool_begin(struct spool *, const char *sender,
    const char *const *rcpts, size_t nrcpt, const char *mail_params);
/* Append body bytes (SMTP wire form: dot-stuffed CRLF lines, without the
 * final ".\r\n"). Buffered. -1 with errno (ENOSPC: this message would put
 * the spool over max_size) - the writer is then failed: abort it. */
int spool_write(struct spool_writer *, const char *buf, size_t len);
/* Make the message durable (write, fdatasync, rename, fsync queue/) and
 * queue it; the id goes to id_out (SPOOL_ID_SIZE bytes suffice). 0: the
 * client may now get 250. -1 with errno: nothing was queued (the temp is
 * removed). The writer is freed either way. */
int spool_commit(struct spool_writer *, char *id_out, size_t idlen);
/* Drop the message (client gone, size exceeded, ...): unlink, free. NULL
 * is fine. */
void spool_abort(struct spool_writer *);
/* The id the message will have (for the log line), valid until commit or
 * abort. */
const char *spool_writer_id(const struct spool_writer *);

/* ---- delivering ------------------------------------------------------ */

/*
 * The oldest due message not being delivered, claimed for delivery (locked
 * against other processes), or NULL: nothing due, max_inflight reached, or
 * every due one is claimed elsewhere. Expired messages met on the way are
 * moved to failed/. The caller must give the item back with exactly one of
 * spool_done/retry/fail/release.
 */
struct spool_item *spool_next_due(struct spool *);
const struct spool_envelope *spool_item_envelope(const struct spool_item *);
/* A new read-only fd positioned at the first body byte (the caller closes
 * it); -1 with errno. Send its body_size bytes, then ".\r\n". */
int spool_item_open_body(const struct spool_item *);

/* The ESP said 250: remove the message for good (the duplicate window
 * above ends when this returns). */
void spool_done(struct spool *, struct spool_item *);
/* A temporary failure (reason: the 4xx or the cause, for the log and
 * state; sanitised, cut to SPOOL_REASON_MAX): attempts + 1, next attempt
 * after spool_backoff(), persisted atomically. If the message is past
 * max_age it goes to failed/ as "expired" instead. */
void spool_retry(struct spool *, struct spool_item *, const char *reason);
/* A permanent failure: move to failed/ with the ESP's reply; logged,
 * counted. */
void spool_fail(struct spool *, struct spool_item *, const char *reply);
/* Give back unchanged (shutting down, no attempt was made): due again at
 * once, no attempt counted. */
void spool_release(struct spool *, struct spool_item *);

/* Make everything due now (SIGUSR1 / relay25 --flush). */
void spool_flush(struct spool *);
void spool_get_stats(const struct spool *, struct spool_stats *);

/*
 * Back-off after `attempts` failed attempts (0: the first try after
 * spooling): min(retry_min * 2^attempts, retry_max), times a jitter factor
 * 0.8 + 0.4 * u for u in [0, 1). Pure.
 */
double spool_backoff(const struct spool_params *, unsigned attempts, double u);

/* ---- the command line ------------------------------------------------ */

/* relay25 --spool: print what queue/ and failed/ of dir hold (id, age,
 * size, sender, recipients, attempts, next attempt, last error) to out.
 * No event loop, no locks, read-only. 0, or -1 with errno. */
int spool_list(const char *dir, FILE *out);

/* The daemon writes its pid to dir/relay25.pid (atomically) after opening
 * the spool - the process that handles SIGUSR1 by calling spool_flush()
 * (the master when there are workers: it forwards SIGUSR1) - and removes
 * it at exit. 0 or -1 with errno. */
int spool_pidfile_write(const char *dir);
void spool_pidfile_remove(const char *dir);
/* relay25 --flush: read dir/relay25.pid, check that the process lives and
 * is relay25 (/proc/PID/comm, or an argv word named relay25, where /proc
 * exists), and send it SIGUSR1. 0, or -1 with errno (ENOENT: no pid file,
 * ESRCH: not running, EPERM: not relay25 or not ours) and a message in
 * err. */
int spool_request_flush(const char *dir, char *err, size_t errlen);

/* Crash injection (see above): NULL, or the name of the point at which
 * the process calls _exit(SPOOL_CRASH_EXIT). Tests may set it directly. */
extern const char *spool_crash_point;

#endif
