/*
 * config.h - relay25's configuration: one INI file (inih) plus
 * RELAY25_<SECTION>_<KEY> environment overrides, validated as a whole.
 *
 * Ownership: cfg_load() returns a struct cfg the caller frees with
 * cfg_free(). Every string in it is owned by the struct. The file and the
 * environment are untrusted input: every error is reported, none is fatal
 * inside this module.
 */
#ifndef RELAY25_CONFIG_H
#define RELAY25_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#define CFG_DEFAULT_FILE "/etc/relay25/relay25.ini"
#define CFG_MAX_LISTEN 16
#define CFG_MAX_ALLOW 64
#define CFG_MAX_UPSTREAMS 16
#define CFG_MAX_SENDERS 64      /* allowed_senders patterns */
#define CFG_SENDER_MAX 255      /* bytes in one pattern */

struct inbound_users;

enum cfg_tls { CFG_TLS_STARTTLS, CFG_TLS_IMPLICIT, CFG_TLS_NONE };
enum cfg_auth { CFG_AUTH_AUTO, CFG_AUTH_PLAIN, CFG_AUTH_LOGIN,
                CFG_AUTH_CRAM_MD5, CFG_AUTH_XOAUTH2, CFG_AUTH_OAUTHBEARER };
enum cfg_bare_lf { CFG_BARE_LF_NORMALIZE, CFG_BARE_LF_REJECT };
enum cfg_log_level { CFG_LOG_ERROR, CFG_LOG_WARN, CFG_LOG_INFO, CFG_LOG_DEBUG };
enum cfg_log_format { CFG_LOG_TEXT, CFG_LOG_JSON };
enum cfg_log_target { CFG_LOG_STDERR, CFG_LOG_SYSLOG };

/* A listen address, already parsed (no DNS: literal addresses or
 * "localhost"/"*"). */
struct cfg_addr {
	struct sockaddr_storage sa;
	socklen_t salen;
	char text[64];          /* as written, for logs: "127.0.0.1:25" */
};

/* A client network in CIDR form. */
struct cfg_cidr {
	int family;             /* AF_INET or AF_INET6 */
	uint8_t addr[16];       /* network address, host bits zeroed */
	unsigned prefix;        /* 0..32 or 0..128 */
};

struct cfg_upstream {
	char *name;             /* "" for [upstream], NAME for [upstream:NAME] */
	char *host;
	uint16_t port;          /* default 587, or 465 when tls = implicit */
	enum cfg_tls tls;       /* default: 465 -> implicit, else starttls */
	bool tls_verify;        /* default yes */
	char *ca_file;          /* NULL: system trust store */
	char *server_name;      /* NULL: host */
	int tls_min_version;    /* 12 or 13 (TLS 1.2 / 1.3); default 12 */
	bool has_fingerprint;
	uint8_t fingerprint[32];/* sha256 of the DER certificate */
	char *username;         /* NULL: no AUTH; for xoauth2/oauthbearer the
	                         * user= / a= of the token mechanisms */
	char *password;         /* secret: resolved at load time from password,
	                         * _file or _env (whichever is set); NULL with
	                         * password_command, which is run later, off
	                         * the loop (secret.h), never by cfg_load() */
	char *password_file;
	char *password_env;
	char *password_command;
	char *token_command;    /* xoauth2/oauthbearer: prints TOKEN [LIFETIME] */
	char *token_file;       /* ... or a file holding the token */
	enum cfg_auth auth;     /* default auto */
	char *rewrite_sender;   /* NULL: keep the client's MAIL FROM */
	bool rewrite_header_from;
	bool rewrite_reply_to;
	char *sender_domains;   /* NULL: the default route */
	char *helo_name;        /* NULL: the server's hostname */
	double connect_timeout; /* seconds, default 30 */
	unsigned pool_size;     /* default 0 */
	unsigned pool_max_messages;  /* default 100 */
	double pool_idle_timeout;    /* seconds, default 60 */
};

struct cfg {
	char *path;             /* file loaded, or NULL (environment only) */

	struct cfg_addr listen[CFG_MAX_LISTEN];
	size_t nlisten;         /* default 127.0.0.1:25 and [::1]:25 */
	char *hostname;         /* default: gethostname() */
	struct cfg_cidr allow[CFG_MAX_ALLOW];
	size_t nallow;          /* default 127.0.0.0/8 ::1/128 */
	bool allow_set;         /* allow given explicitly */
	unsigned workers;            /* 1; 0 = auto (one per CPU) */
	unsigned max_clients;        /* 1024 (per worker) */
	unsigned max_clients_per_ip; /* 64 */
	uint64_t max_message_size;   /* 25M */
	unsigned max_recipients;     /* 100 */
	double command_timeout;      /* 300 s */
	double data_timeout;         /* 600 s */
	double shutdown_timeout;     /* 30 s */
	enum cfg_bare_lf bare_lf;    /* normalize */
	bool add_missing_headers;    /* no */
	char *user;                  /* NULL: stay who we are */
	enum cfg_log_level log_level;   /* info */
	enum cfg_log_format log_format; /* text */
	enum cfg_log_target log_target; /* stderr */
	/* Sender policy: MAIL FROM must match one of these patterns
	 * (policy.h); none: every sender is accepted. */
	char allowed_senders[CFG_MAX_SENDERS][CFG_SENDER_MAX + 1];
	size_t nallowed_senders;
	char *auth_users_file;       /* NULL: no inbound AUTH */
	struct inbound_users *auth_users; /* loaded from auth_users_file at
	                              * load time (owned; NULL without it) */
	/* The durable spool (spool.h): used when every upstream is
	 * unavailable; off while spool_dir is NULL. */
	char *spool_dir;             /* NULL: no spool */
	uint64_t spool_max_size;     /* 1G of queued messages; over: 451 */
	double spool_max_age;        /* 5d; older -> spool_dir/failed/ */
	double spool_retry_min;      /* 1m: first back-off */
	double spool_retry_max;      /* 1h: back-off cap */
	unsigned spool_max_inflight; /* 4 deliveries at once (per process) */

	struct cfg_upstream upstream[CFG_MAX_UPSTREAMS];
	size_t nupstream;            /* >= 1 after a successful load, in file
	                              * order (failover order) */

	bool metrics_set;
	struct cfg_addr metrics_listen;
};

/*
 * Load the configuration. path may be NULL: then CFG_DEFAULT_FILE is used if
 * it exists, otherwise the environment alone (which must then name at least
 * RELAY25_UPSTREAM_HOST). envp is the environment to read overrides from
 * (pass `environ`); tests pass their own.
 *
 * On error returns NULL and writes every problem, one per line, as
 * "file:line: message" (or "RELAY25_X: message" for the environment) to err.
 * Warnings (a password in a file readable by others, ...) go to warn as
 * "warning: ..." lines even on success. err/warn may be NULL.
 *
 * auth_users_file, if set, is read here (inbound_auth.h); problems in it
 * are reported as "users-file:line: message".
 *
 * Blocking, not thread-safe: it sets inih's global options while parsing
 * (and restores them). It runs no command: password_command and
 * token_command are run when a secret is needed (secret.h).
 */
struct cfg *cfg_load(const char *path, char *const *envp, FILE *err,
    FILE *warn);
void cfg_free(struct cfg *);

/* Print the effective configuration as INI, secrets as "********". */
void cfg_print(const struct cfg *, FILE *out);

/* Pure value parsers, exported for tests. Return 0 on success, -1 on a bad
 * value (with *out untouched). */
int cfg_parse_size(const char *s, uint64_t *out);       /* "25M", "1024", "2G" */
int cfg_parse_duration(const char *s, double *out);     /* "5m", "30s", "1h", "5d", "10" */
int cfg_parse_bool(const char *s, bool *out);           /* yes/no/true/false/on/off/1/0 */
int cfg_parse_addr(const char *s, struct cfg_addr *out, uint16_t default_port);
int cfg_parse_cidr(const char *s, struct cfg_cidr *out);

/* Is this socket address inside one of the networks? IPv4-mapped IPv6
 * addresses (::ffff:a.b.c.d) match IPv4 networks and vice versa. */
bool cfg_allowed(const struct cfg *, const struct sockaddr *sa);
bool cfg_cidr_match(const struct cfg_cidr *, const struct sockaddr *sa);

#endif
