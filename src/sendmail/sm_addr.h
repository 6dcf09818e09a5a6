/*
 * sm_addr.h - RFC 5322 address lists (To:, Cc:, Bcc: values and sendmail
 * command-line arguments) reduced to the addr-specs an SMTP envelope needs.
 *
 * Pure: no I/O, no allocation. The input is untrusted message text with an
 * explicit length; folding (CR LF + WSP) is whitespace like any other.
 */
#ifndef RELAY25_SM_ADDR_H
#define RELAY25_SM_ADDR_H

#include <stddef.h>

#define SM_ADDR_MAX 512         /* longest addr-spec (SMTP_PATH_MAX) */

/* Called once per address found, in order: addr[0..len) is the addr-spec
 * ("user@example.com", "\"a b\"@example.com", or a bare "root"), without
 * angle brackets, display name, comments, whitespace or source route.
 * Not NUL-terminated. Returns 0 to go on, non-zero to stop the walk. */
typedef int (*sm_addr_cb)(const char *addr, size_t len, void *arg);

/* Walk the address list s[0..len). Understood: display names, quoted or
 * not ("A, B" <a@b>), comments (nested, anywhere), quoted local parts,
 * groups ("team: a@b, c@d;", "undisclosed-recipients:;"), obsolete
 * source routes (<@x,@y:a@b>), empty list elements, and the "<>" null
 * path (skipped). Returns the number of malformed elements (a phrase
 * without an address, unbalanced <>, "" or (), an address over
 * SM_ADDR_MAX, a control character); well-formed ones are still reported.
 * Returns -1 if cb asked to stop. */
int sm_addr_list(const char *s, size_t len, sm_addr_cb cb, void *arg);

#endif
