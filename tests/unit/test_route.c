/* Unit tests: sender-domain routing. */
#include <criterion/criterion.h>
#include <string.h>

#include "relay25/route.h"

static struct cfg cfg;

static void
add(const char *host, const char *domains)
{
	struct cfg_upstream *u = &cfg.upstream[cfg.nupstream++];

	memset(u, 0, sizeof(*u));
	u->host = (char *)host;
	u->sender_domains = (char *)domains;
}

static size_t
route(const char *addr, size_t out[CFG_MAX_UPSTREAMS])
{
	return route_for_sender(&cfg, addr, strlen(addr), out);
}

static void
setup(void)
{
	memset(&cfg, 0, sizeof(cfg));
	add("default-a", NULL);                       /* 0 */
	add("corp", "corp.example *.corp.example");   /* 1 */
	add("default-b", NULL);                       /* 2 */
	add("corp-backup", "CORP.example");           /* 3 */
	add("shop", "shop.example");                  /* 4 */
}

TestSuite(route, .init = setup);

Test(route, domain_goes_to_its_accounts_in_order)
{
	size_t out[CFG_MAX_UPSTREAMS];

	cr_assert_eq(route("alerts@corp.example", out), 2);
	cr_assert_eq(out[0], 1);
	cr_assert_eq(out[1], 3);          /* case-insensitive, failover order */
	cr_assert_eq(route("x@Shop.Example", out), 1);
	cr_assert_eq(out[0], 4);
}

Test(route, subdomain_pattern)
{
	size_t out[CFG_MAX_UPSTREAMS];

	cr_assert_eq(route("a@mail.corp.example", out), 1);
	cr_assert_eq(out[0], 1);
	/* "*.shop.example" is not configured: a subdomain of shop goes to
	 * the default route */
	cr_assert_eq(route("a@eu.shop.example", out), 2);
	cr_assert_eq(out[0], 0);
	/* "*.corp.example" does not match a look-alike */
	cr_assert_eq(route("a@evilcorp.example", out), 2);
	cr_assert_eq(out[0], 0);
}

Test(route, others_take_the_default_route)
{
	size_t out[CFG_MAX_UPSTREAMS];

	cr_assert_eq(route("someone@elsewhere.test", out), 2);
	cr_assert_eq(out[0], 0);
	cr_assert_eq(out[1], 2);
	cr_assert_eq(route("", out), 2);             /* null sender <> */
	cr_assert_eq(route("no-domain", out), 2);
}

Test(route, no_default_route_means_no_upstream)
{
	size_t out[CFG_MAX_UPSTREAMS];

	memset(&cfg, 0, sizeof(cfg));
	add("corp", "corp.example");
	cr_assert_eq(route("a@corp.example", out), 1);
	cr_assert_eq(route("a@other.example", out), 0);
}

Test(route, list_separators)
{
	cr_assert(route_domain_match("a.test, b.test\tc.test", "c.test", 6));
	cr_assert(route_domain_match(" a.test ", "a.test", 6));
	cr_assert_not(route_domain_match("", "a.test", 6));
	cr_assert_not(route_domain_match("*.", "a.test", 6));
	cr_assert_not(route_domain_match("*.a.test", "a.test", 6));
}
