/*
 * policy.h - the sender policy: may this envelope sender use relay25?
 * Pure (no I/O, no allocation); the patterns come from the configuration
 * ([server] allowed_senders), the address from the network (untrusted,
 * given with its length, never assumed NUL-terminated).
 */
#ifndef RELAY25_POLICY_H
#define RELAY25_POLICY_H

#include <stdbool.h>
#include <stddef.h>

struct cfg;

/*
 * Is the envelope sender addr (the MAIL FROM path without <>; len 0 for
 * the null sender <>) allowed? With no patterns configured every sender
 * is. Otherwise the address must match one pattern, compared without
 * regard to ASCII case:
 *   "*"              any non-null sender
 *   "*@example.com"  any sender at example.com ('*' is any run of bytes,
 *                    also an empty one)
 *   "*@*.example.org" any sender at a subdomain of example.org
 *   "alerts@host.example"  exactly that address
 *   "<>"             the null sender, which no other pattern matches
 */
bool policy_sender_allowed(const struct cfg *, const char *addr, size_t len);

/* Does addr (len bytes) match one pattern (NUL-terminated)? Same rules;
 * exported for tests. */
bool policy_match(const char *pattern, const char *addr, size_t len);

#endif
