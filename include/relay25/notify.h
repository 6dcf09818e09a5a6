/*
 * notify.h - the systemd readiness protocol (sd_notify(3)) without
 * libsystemd: one datagram of "KEY=VALUE" lines to the AF_UNIX socket
 * named by $NOTIFY_SOCKET (a path, or "@name" for the abstract
 * namespace). Used with Type=notify (or Type=notify-reload) units.
 *
 * Every function is a no-op returning 0 when $NOTIFY_SOCKET is unset or
 * empty, so callers need not know whether they run under systemd. None
 * ever blocks (MSG_DONTWAIT): a full socket queue is an error (-1, errno
 * EAGAIN), not a wait. Errors are returned, never logged here; a failed
 * notification is worth a warning at most. $NOTIFY_SOCKET is left in the
 * environment so that later notifications (reload, stop) still work.
 */
#ifndef RELAY25_NOTIFY_H
#define RELAY25_NOTIFY_H

/* Send `state` as it is (one or more "KEY=VALUE" lines separated by
 * '\n'). Returns 0 (also when not under systemd) or -1 with errno set:
 * EINVAL/ENAMETOOLONG for an unusable $NOTIFY_SOCKET, EAGAIN when the
 * manager's queue is full, or whatever socket(2)/sendto(2) said. */
int notify_send(const char *state);

/* "READY=1": start-up finished (listening); also after a reload. */
int notify_ready(void);
/* "RELOADING=1" with MONOTONIC_USEC (needed by Type=notify-reload): the
 * configuration is being reloaded; send notify_ready() when done. */
int notify_reloading(void);
/* "STOPPING=1": shutdown began (sessions in flight are draining). */
int notify_stopping(void);
/* "STATUS=<text>" shown by `systemctl status`. The formatted text is cut
 * at 512 bytes, and control characters in it (a '\n' would start a new
 * assignment) become spaces. */
int notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
