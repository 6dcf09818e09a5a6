/*
 * route.c - sender-domain routing over the configured upstreams.
 */
#include <string.h>
#include <strings.h>

#include "relay25/route.h"

bool
route_domain_match(const char *list, const char *domain, size_t dlen)
{
	const char *p = list;

	while (*p != '\0') {
		size_t n;

		p += strspn(p, " \t,");
		n = strcspn(p, " \t,");
		if (n == 0)
			break;
		if (n > 2 && p[0] == '*' && p[1] == '.') {
			/* "*.example.com": strictly a subdomain */
			size_t sl = n - 1;                 /* ".example.com" */
			if (dlen > sl && strncasecmp(domain + dlen - sl, p + 1,
			    sl) == 0)
				return true;
		} else if (n == dlen && strncasecmp(p, domain, n) == 0)
			return true;
		p += n;
	}
	return false;
}

size_t
route_for_sender(const struct cfg *cfg, const char *addr, size_t len,
    size_t out[CFG_MAX_UPSTREAMS])
{
	const char *at = len ? memchr(addr, '@', len) : NULL;
	const char *dom = at ? at + 1 : "";
	size_t dlen = at ? len - (size_t)(at + 1 - addr) : 0;
	size_t n = 0;

	/* Domains other than the sender's own do not count: "a@b@c" has
	 * domain "b@c", which matches nothing. */
	if (dlen > 0) {
		for (size_t i = 0; i < cfg->nupstream; i++)
			if (cfg->upstream[i].sender_domains != NULL &&
			    route_domain_match(cfg->upstream[i].sender_domains,
			    dom, dlen))
				out[n++] = i;
	}
	if (n > 0)
		return n;
	for (size_t i = 0; i < cfg->nupstream; i++)
		if (cfg->upstream[i].sender_domains == NULL)
			out[n++] = i;
	return n;
}
