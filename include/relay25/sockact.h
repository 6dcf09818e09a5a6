/*
 * sockact.h - systemd socket activation (sd_listen_fds(3)) without
 * libsystemd. The manager passes listening sockets as fds 3, 4, ... and
 * says so in LISTEN_PID (must be our pid) and LISTEN_FDS (how many).
 *
 * The environment is untrusted input from the point of view of this
 * module: every value is checked, and every inherited fd must be a
 * listening SOCK_STREAM socket.
 */
#ifndef RELAY25_SOCKACT_H
#define RELAY25_SOCKACT_H

#include <stddef.h>

#define SOCKACT_FD_START 3

/*
 * Take the inherited listening sockets. Returns n > 0 and fds[0..n-1] =
 * 3..3+n-1 (each made FD_CLOEXEC and O_NONBLOCK; the caller owns them
 * now); 0 when not socket-activated (LISTEN_PID unset, not our pid, or
 * LISTEN_FDS = 0); -1 on a bad value or an fd that is not a listening
 * stream socket, with the reason logged (log_error). In every case
 * LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES are removed from the
 * environment, so children (password_command) never see them.
 * Call it once, before opening any other file.
 */
int sockact_fds(int *fds, size_t max);

/* The local address of a socket as text for logs ("127.0.0.1:25",
 * "[::1]:25", "unix:/path"); "?" when unknown. Returns buf. */
char *sockact_describe(int fd, char *buf, size_t len);

#endif
