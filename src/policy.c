/*
 * policy.c - the sender policy: envelope senders matched against the
 * allowed_senders patterns. Pure.
 */
#include "relay25/policy.h"

#include <string.h>

#include "relay25/config.h"

static unsigned char
policy_lower(unsigned char ch)
{
	return ch >= 'A' && ch <= 'Z' ? (unsigned char)(ch + 32) : ch;
}

/*
 * Glob match with '*' as the only wildcard. Iterative, remembering only
 * the last '*': a later '*' makes every earlier choice final, so the cost
 * is O(len(pattern) * len(addr)) at worst and never exponential.
 */
static bool
policy_glob(const char *p, const char *s, size_t len)
{
	const char *star = NULL;
	size_t i = 0, resume = 0;

	while (i < len) {
		if (*p == '*') {
			star = ++p;
			resume = i;
		} else if (*p && policy_lower((unsigned char)*p) ==
		    policy_lower((unsigned char)s[i])) {
			p++;
			i++;
		} else if (star) {
			p = star;
			i = ++resume;
		} else {
			return false;
		}
	}
	while (*p == '*')
		p++;
	return *p == '\0';
}

bool
policy_match(const char *pattern, const char *addr, size_t len)
{
	if (strcmp(pattern, "<>") == 0)
		return len == 0;
	if (len == 0)
		return false;
	return policy_glob(pattern, addr, len);
}

bool
policy_sender_allowed(const struct cfg *cfg, const char *addr, size_t len)
{
	if (cfg->nallowed_senders == 0)
		return true;
	for (size_t i = 0; i < cfg->nallowed_senders; i++)
		if (policy_match(cfg->allowed_senders[i], addr, len))
			return true;
	return false;
}
