/*
 * listener.h - listening sockets, accept, access control and connection
 * limits; the registry of live sessions for shutdown.
 */
#ifndef RELAY25_LISTENER_H
#define RELAY25_LISTENER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct ev_loop;
struct setup;
struct session;
struct server;

/* Bind every listen address of setup->cfg. NULL (and a logged error) if
 * any address cannot be bound. */
struct server *server_new(struct ev_loop *, struct setup *);
/* Start accepting (after privileges were dropped). */
void server_start(struct server *);
/* Stop accepting; sessions in flight go on. */
void server_stop_accepting(struct server *);
/* New sessions use this setup from now on (SIGHUP). */
void server_set_setup(struct server *, struct setup *);
struct setup *server_setup(struct server *);
struct ev_loop *server_loop(struct server *);
/* The durable fallback spool of this process, or NULL (spool_dir unset). */
struct spool;
void server_set_spool(struct server *, struct spool *);
struct spool *server_spool(struct server *);
size_t server_sessions(const struct server *);
/* Close every session with 421 4.3.2 (shutdown deadline). */
void server_shutdown_sessions(struct server *);
void server_free(struct server *);

/* Called by sessions. */
void server_session_add(struct server *, struct session *);
void server_session_gone(struct server *, struct session *,
    const struct sockaddr *peer);

#endif
