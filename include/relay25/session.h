/*
 * session.h - the client leg: an SMTP server state machine for one
 * accepted connection.
 */
#ifndef RELAY25_SESSION_H
#define RELAY25_SESSION_H

#include <stddef.h>

struct ev_loop;
struct server;
struct setup;
struct session;

/* Take over an accepted, allowed socket: greet at once and serve. On
 * failure (NULL) the fd is closed and the listener's per-address count
 * released (server_session_gone). */
struct session *session_new(struct server *, struct setup *, int fd);

/* The relay's answer to the command the session handed over (wire text,
 * one or more CRLF-terminated reply lines). */
void session_relay_reply(struct session *, const char *wire, size_t len);

/* Shutdown deadline reached: say 421 4.3.2 and close. */
void session_shutdown(struct session *);

#endif
