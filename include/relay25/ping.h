/*
 * ping.h - `relay25 --ping`: a health probe for container and service
 * managers. Connects to the relay's own first listen address (0.0.0.0
 * becomes 127.0.0.1, :: becomes ::1), waits for the 220 greeting, sends
 * NOOP and expects 250, then QUITs. No upstream is contacted.
 *
 * Blocking I/O with poll(2) deadlines: this is a separate command-line
 * mode, never run inside the event loop.
 */
#ifndef RELAY25_PING_H
#define RELAY25_PING_H

#include "relay25/config.h"

/*
 * Probe the relay. timeout bounds the whole exchange (seconds; <= 0 means
 * PING_TIMEOUT). Prints one line: "relay25: ping ADDR ok in 0.002s" to
 * stdout, or "relay25: ping ADDR failed: REASON" to stderr (server text
 * in the reason is sanitised). Returns 0 when healthy, 1 otherwise.
 */
#define PING_TIMEOUT 5.0
int ping_run(const struct cfg *, double timeout);

#endif
