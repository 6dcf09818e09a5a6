/*
 * sm_conf.h - where relay25-sendmail submits: RELAY25_SUBMIT=host:port,
 * else RELAY25_SERVER_LISTEN, else the first address of [server] listen in
 * relay25's configuration file, else 127.0.0.1:25.
 *
 * Only [server] listen is read (with inih); relay25 itself validates the
 * file. Nothing else in it (passwords included) is looked at or kept.
 */
#ifndef RELAY25_SM_CONF_H
#define RELAY25_SM_CONF_H

#include <stdbool.h>
#include <stddef.h>

#define SM_CONF_DEFAULT_FILE "/etc/relay25/relay25.ini"

struct sm_target {
	char host[256];         /* literal address or name, without [] */
	char port[8];
	char text[272];         /* "host:port" / "[v6]:port", for messages */
	const char *source;     /* what chose it: "RELAY25_SUBMIT", a file... */
};

/* Parse the first space-separated address of s: "host:port", "[v6]:port",
 * "host" or "[v6]" (port 25). A wildcard listen address (0.0.0.0, *, ::)
 * becomes the loopback address of its family; "localhost" stays a name.
 * Returns 0, or -1 (malformed, port 0 or out of range). Pure. */
int sm_conf_parse_addr(const char *s, struct sm_target *);

/* Decide the target. file: -C FILE, or NULL for the default file, which
 * may be missing or unreadable (as for a user who may not read relay25's
 * password): then the default address is used. An explicit file that
 * cannot be read, or an unusable address, is an error: -1 with why. */
int sm_conf_target(const char *file, struct sm_target *, char *why,
    size_t whylen);

#endif
