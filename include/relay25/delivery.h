/*
 * delivery.h - background delivery of spooled messages.
 *
 * When the spool says a message is due, a delivery takes it: the route of
 * its sender (route.h), an upstream session (warm from the pool or new),
 * MAIL with the sender's parameters, every RCPT, DATA, the body read from
 * the spool file (through the header filter when the upstream rewrites),
 * the end of data. The ESP's 250 ends it (spool_done); a 4xx or a failure
 * retries it later with back-off (spool_retry); a 5xx moves it to failed/
 * (spool_fail). Recipients the ESP refuses with 5xx are dropped and logged;
 * a 4xx for any recipient retries the whole message before DATA, so no
 * recipient ever gets it twice.
 */
#ifndef RELAY25_DELIVERY_H
#define RELAY25_DELIVERY_H

struct server;
struct spool;

/* The spool's kick callback: arg is the struct server (for its current
 * setup and loop). Starts deliveries for everything due. */
void delivery_kick(void *server);

#endif
