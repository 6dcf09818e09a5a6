/*
 * secret.h - the secret an upstream authenticates with (a password or an
 * OAuth access token), cached per upstream and refreshed without blocking
 * the event loop.
 *
 * Sources:
 *   static   password, password_file, password_env: read by cfg_load(),
 *            never refreshed;
 *   command  password_command or token_command: run with `sh -c` as a child
 *            process whose stdout is a pipe watched by the loop (ev_io),
 *            reaped with ev_child, killed (its whole process group) after
 *            the timeout; stdout is bounded (SECRET_OUTPUT_MAX), stderr is
 *            relay25's. A password is the first output line; a token is
 *            "TOKEN [LIFETIME-SECONDS]";
 *   file     token_file: the first whitespace-separated field of the file,
 *            re-read when the file changed (stat on each use; the read is a
 *            small local file and happens on the loop).
 *
 * Caching: a password from a command is kept until secret_invalidate(); a
 * token until shortly before its lifetime ends (min(60 s, lifetime/10)
 * early; a token printed without a lifetime is kept SECRET_TOKEN_TTL). In
 * that last stretch the old token is still handed out while a refresh runs
 * in the background. A failed run is remembered for SECRET_RETRY_AFTER so a
 * broken command is not re-run for every connection.
 *
 * Commands need the default libev loop (ev_child). Everything here runs on
 * that loop's thread. No secret and no command output is ever logged; the
 * reasons given for failures never contain output. Secrets are wiped
 * (explicit_bzero) when replaced or freed.
 */
#ifndef RELAY25_SECRET_H
#define RELAY25_SECRET_H

#include <stdbool.h>
#include <stddef.h>

struct ev_loop;
struct secret_cache;
struct secret_req;

#define SECRET_OUTPUT_MAX   (64 * 1024)  /* bytes of command output read */
#define SECRET_PASSWORD_MAX 4096         /* bytes in a password */
#define SECRET_TOKEN_MAX    8192         /* bytes in a token */
#define SECRET_TOKEN_TTL    300.0        /* token printed without lifetime */
#define SECRET_RETRY_AFTER  5.0          /* a failure is answered this long */

struct secret_params {
	const char *value;      /* static secret (copied), or NULL */
	const char *command;    /* sh -c COMMAND (copied), or NULL */
	const char *file;       /* token file (copied), or NULL */
	bool token;             /* a token (TOKEN [LIFETIME]), not a password */
	double timeout;         /* seconds a command may run */
	const char *label;      /* for log lines: "upstream NAME host:port" */
};

/* Exactly one of value, command, file. NULL when out of memory. */
struct secret_cache *secret_new(const struct secret_params *);
/* Pending requests are dropped without their callbacks; a running command
 * is killed. Safe from inside a secret callback. */
void secret_free(struct secret_cache *);

/* May a fresh secret differ from the current one (command or file)? */
bool secret_refreshable(const struct secret_cache *);
/* "password_command", "token_command", "token_file" or "password". */
const char *secret_source(const struct secret_cache *);

enum secret_res { SECRET_OK, SECRET_PENDING, SECRET_FAILED };

/* secret is NULL on failure, then why says why (never the output). Both
 * are valid only during the call: copy the secret, wipe the copy. */
typedef void secret_cb(void *arg, const char *secret, const char *why);

/*
 * Get the secret.
 *   SECRET_OK:      *out is the secret (valid until control returns to the
 *                   loop; copy it);
 *   SECRET_FAILED:  *out is the reason;
 *   SECRET_PENDING: a refresh runs (started now or joined); cb(arg, ...)
 *                   is called later from the loop, exactly once, unless
 *                   secret_cancel(*reqp) comes first. *reqp is gone once the
 *                   callback has been called.
 */
enum secret_res secret_get(struct secret_cache *, struct ev_loop *,
    secret_cb *cb, void *arg, struct secret_req **reqp, const char **out);
void secret_cancel(struct secret_req *);

/* The server rejected `rejected` (the secret that was used): the next
 * secret_get() obtains a new one. A no-op if the cache already holds a
 * different secret (another connection refreshed it) or is static. */
void secret_invalidate(struct secret_cache *, const char *rejected);

/* For tests and diagnostics: commands started, file reads done. */
unsigned secret_runs(const struct secret_cache *);
/* Is a command running for this cache? */
bool secret_busy(const struct secret_cache *);

#endif
