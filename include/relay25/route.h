/*
 * route.h - which upstreams may carry a transaction, by sender domain
 * (pure; no I/O).
 *
 * An upstream with `sender_domains` takes the senders of those domains;
 * upstreams without it form the default route for everything else. The
 * result keeps configuration order: that is the failover order, and
 * failover never leaves the route (another account must not send a
 * domain it is not verified for).
 */
#ifndef RELAY25_ROUTE_H
#define RELAY25_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include "relay25/config.h"

/* addr: the envelope sender without <> (may be empty for the null
 * sender). Writes upstream indexes to out; returns how many (0: no
 * upstream takes this sender). */
size_t route_for_sender(const struct cfg *, const char *addr, size_t len,
    size_t out[CFG_MAX_UPSTREAMS]);

/* Does `domain` match the space-separated list: "example.com" exactly,
 * "*.example.com" any subdomain of it (case-insensitive)? */
bool route_domain_match(const char *list, const char *domain, size_t dlen);

#endif
