/*
 * relay.h - pairing a client session with an upstream session.
 *
 * The session hands over the transaction commands it has checked; the
 * relay obtains an upstream (ordered failover, §1.7-8 of the spec),
 * forwards each command and gives the upstream's reply back to the session
 * through session_relay_reply(). The body is streamed from the client conn
 * through the DATA decoder to the upstream with back-pressure. Every
 * upstream failure becomes a 4xx for the client; 250 for a message is only
 * ever the upstream's own 250. One log line per message.
 *
 * A reply may be delivered before the calling function returns (for
 * example when no upstream can be reached and none is left to try), so the
 * session sets its waiting state before calling.
 */
#ifndef RELAY25_RELAY_H
#define RELAY25_RELAY_H

#include <stdbool.h>
#include <stddef.h>

struct ev_loop;
struct conn;
struct session;
struct setup;

struct relay;

struct spool;

/* spool: where a transaction goes when every upstream of its route is
 * unavailable (connect, TLS, AUTH, or a 4xx at MAIL); NULL: 451 then. */
struct relay *relay_new(struct ev_loop *, struct setup *, struct spool *,
    struct session *,
    struct conn *client, const char *log_id, const char *client_addr);
/* End the pairing. quit: the client said QUIT, so an idle upstream gets a
 * polite QUIT; otherwise any upstream is dropped at once (no final dot). */
void relay_free(struct relay *, bool quit);

/* Begin a transaction. arg is the client's MAIL argument ("FROM:<a> ..."),
 * already checked by the session; the line sent upstream keeps only the
 * parameters that upstream supports. sender is for the log. */
void relay_mail(struct relay *, const char *arg, size_t len,
    const char *sender);
/* arg: the client's checked RCPT argument ("TO:<b> ..."). */
void relay_rcpt(struct relay *, const char *arg, size_t len);
void relay_data(struct relay *);
void relay_rset(struct relay *);

/* Body mode (after the upstream's 354): decode what the client conn holds
 * and stream it. Returns true when the end of data was reached (the reply
 * follows through session_relay_reply). Pauses the client conn while the
 * upstream cannot take more. */
bool relay_body(struct relay *);

/* The client reset its transaction without RSET (a new EHLO): drop the
 * upstream's open transaction (silently; no reply follows). */
void relay_abandon(struct relay *);

/* Is a transaction open upstream (MAIL accepted)? */
bool relay_in_transaction(const struct relay *);

/* Start-up probe: connect to every upstream once to learn its EHLO
 * capabilities (and surface configuration errors early). */
void relay_probe(struct ev_loop *, struct setup *);

#endif
