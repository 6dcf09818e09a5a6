/*
 * test_policy.c - the sender policy: allowed_senders patterns matched
 * against envelope senders.
 */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include "relay25/config.h"
#include "relay25/policy.h"

static bool
match(const char *pattern, const char *addr)
{
	return policy_match(pattern, addr, strlen(addr));
}

Test(policy, exact_address)
{
	cr_assert(match("alerts@host.example", "alerts@host.example"));
	cr_assert(match("alerts@host.example", "ALERTS@Host.Example"));
	cr_assert(match("Alerts@HOST.example", "alerts@host.example"));
	cr_assert_not(match("alerts@host.example", "alerts@host.example.com"));
	cr_assert_not(match("alerts@host.example", "xalerts@host.example"));
	cr_assert_not(match("alerts@host.example", "alerts@host.exampl"));
	cr_assert_not(match("alerts@host.example", "alerts"));
}

Test(policy, domain_wildcard)
{
	cr_assert(match("*@example.com", "a@example.com"));
	cr_assert(match("*@example.com", "first.last+tag@EXAMPLE.COM"));
	cr_assert(match("*@example.com", "@example.com"));  /* '*' may be empty */
	cr_assert_not(match("*@example.com", "a@sub.example.com"));
	cr_assert_not(match("*@example.com", "a@example.com.evil"));
	cr_assert_not(match("*@example.com", "a@notexample.com"));
	cr_assert_not(match("*@example.com", "a@example.co"));
	/* the '@' is matched literally: no '@' in the domain part */
	cr_assert(match("*@example.com", "a@b@example.com"));
}

Test(policy, subdomain_wildcard)
{
	cr_assert(match("*@*.example.org", "a@mx.example.org"));
	cr_assert(match("*@*.example.org", "a@deep.sub.Example.ORG"));
	cr_assert_not(match("*@*.example.org", "a@example.org"));
	cr_assert_not(match("*@*.example.org", "a@evilexample.org"));
	cr_assert_not(match("*@*.example.org", "a@mx.example.org.evil"));
}

Test(policy, local_part_wildcards)
{
	cr_assert(match("alerts-*@example.com", "alerts-db@example.com"));
	cr_assert(match("alerts-*@example.com", "alerts-@example.com"));
	cr_assert_not(match("alerts-*@example.com", "alert-db@example.com"));
	cr_assert(match("*bot*@*", "cronbot1@host"));
	cr_assert(match("a*b*c@x", "aXbYbZc@x"));
	cr_assert_not(match("a*b*c@x", "aXbYbZ@x"));
	cr_assert(match("**@x", "abc@x"));
}

Test(policy, star_and_null_sender)
{
	cr_assert(match("*", "anyone@anywhere"));
	cr_assert(match("*", "postmaster"));
	cr_assert_not(match("*", ""));          /* <> only matches "<>" */
	cr_assert_not(match("*@*", ""));
	cr_assert(match("<>", ""));
	cr_assert_not(match("<>", "a@b"));
	cr_assert_not(match("<>", "<>"));
}

Test(policy, length_not_nul)
{
	/* the address is bytes with a length: no NUL terminator needed, and
	 * bytes after len are not looked at */
	const char buf[] = { 'a', '@', 'x', '.', 'c', 'o', 'm', 'X', 'Y' };
	cr_assert(policy_match("*@x.com", buf, 7));
	cr_assert_not(policy_match("*@x.com", buf, 9));
	cr_assert_not(policy_match("a@x.com", "a@x.com\0", 8));
}

Test(policy, pathological_pattern_is_fast)
{
	/* backtracking stays polynomial: this would take ages if each '*'
	 * tried every split recursively */
	char addr[513];
	memset(addr, 'a', 512);
	addr[512] = '\0';
	cr_assert_not(match("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", addr));
	cr_assert(match("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a", addr));
}

Test(policy, sender_allowed_uses_the_config)
{
	struct cfg *cfg = calloc(1, sizeof *cfg);

	cr_assert_not_null(cfg);
	/* no patterns: everyone, the null sender too */
	cr_assert(policy_sender_allowed(cfg, "x@y", 3));
	cr_assert(policy_sender_allowed(cfg, "", 0));
	strcpy(cfg->allowed_senders[0], "*@example.com");
	strcpy(cfg->allowed_senders[1], "alerts@host.example");
	cfg->nallowed_senders = 2;
	cr_assert(policy_sender_allowed(cfg, "a@example.com", 13));
	cr_assert(policy_sender_allowed(cfg, "Alerts@host.example", 19));
	cr_assert_not(policy_sender_allowed(cfg, "a@example.org", 13));
	cr_assert_not(policy_sender_allowed(cfg, "", 0));
	strcpy(cfg->allowed_senders[2], "<>");
	cfg->nallowed_senders = 3;
	cr_assert(policy_sender_allowed(cfg, "", 0));
	free(cfg);
}
