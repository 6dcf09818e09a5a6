/*
 * config.c - relay25's configuration: the INI file (read through inih), the
 * RELAY25_* environment overrides, and validation of the whole.
 *
 * Every key lives in one table, cfg_keys[]: section, name, type (parser and
 * printer), field offset, default text, secret flag and help. Defaults are
 * applied in one place by parsing the default text (cfg_defaults());
 * cfg_print() walks the same table.
 *
 * inih is driven through ini_parse_stream() with our own line reader. The
 * reader counts lines (Debian's handler gets no line number), rejects
 * over-long lines and NUL bytes instead of letting them be truncated, and
 * checks section headers itself (inih reports none, and truncates long
 * ones). Multi-line values and inih's inline comments are turned off;
 * quotes and inline comments are handled in the key handler.
 */
#include "relay25/config.h"
#include "relay25/inbound_auth.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define CFG_MAX_LINE 4096      /* longest line in the file, without CR LF */
#define CFG_MAX_NAME 32        /* longest NAME in [upstream:NAME] */
#define CFG_MAX_SECRET 4096    /* longest password from a file or command */
#define CFG_MAX_DURATION 1e9   /* seconds; anything longer is a typo */
#define CFG_WHY 160

enum cfg_kind { CFG_K_SERVER, CFG_K_UPSTREAM, CFG_K_METRICS };

struct cfg_key;
struct cfg_buf {
	char s[4096];
	size_t len;
};

/* Parse v (never NULL, may be "") into the field of base described by k.
 * On error return -1 with a reason in why and the field untouched. The
 * reason never contains the value. */
typedef int cfg_parse_fn(const struct cfg_key *k, void *base, const char *v,
    char *why, size_t whylen);
typedef void cfg_print_fn(const struct cfg_key *k, const void *base,
    struct cfg_buf *out);

struct cfg_type {
	cfg_parse_fn *parse;
	cfg_print_fn *print;
	bool string;            /* the field is a char * owned by the struct */
};

struct cfg_key {
	enum cfg_kind kind;
	const char *key;
	const struct cfg_type *type;
	size_t off;
	size_t off_n;           /* lists: offset of the count; fingerprint: flag */
	const char *def;        /* default, as text; "" means unset/automatic */
	bool secret;            /* never printed, never echoed in errors */
	double min, max;        /* numbers and durations; lists: max entries */
	const char *const *names; /* enums: the values in enum order */
	const char *help;
};

_Static_assert(sizeof(enum cfg_tls) == sizeof(int), "enums are int-sized");

static cfg_parse_fn cfg_set_str, cfg_set_host, cfg_set_helo, cfg_set_envname,
    cfg_set_uint, cfg_set_port, cfg_set_size, cfg_set_duration, cfg_set_bool,
    cfg_set_enum, cfg_set_tlsver, cfg_set_listen, cfg_set_addr, cfg_set_allow,
    cfg_set_fpr, cfg_set_senders, cfg_set_workers;
static cfg_print_fn cfg_pr_workers, cfg_pr_str, cfg_pr_secret, cfg_pr_uint, cfg_pr_port,
    cfg_pr_size, cfg_pr_duration, cfg_pr_bool, cfg_pr_enum, cfg_pr_tlsver,
    cfg_pr_listen, cfg_pr_addr, cfg_pr_allow, cfg_pr_fpr, cfg_pr_senders;

static const struct cfg_type
    cfg_t_str = { cfg_set_str, cfg_pr_str, true },
    cfg_t_secret = { cfg_set_str, cfg_pr_secret, true },
    cfg_t_host = { cfg_set_host, cfg_pr_str, true },
    cfg_t_helo = { cfg_set_helo, cfg_pr_str, true },
    cfg_t_envname = { cfg_set_envname, cfg_pr_str, true },
    cfg_t_uint = { cfg_set_uint, cfg_pr_uint, false },
    cfg_t_workers = { cfg_set_workers, cfg_pr_workers, false },
    cfg_t_port = { cfg_set_port, cfg_pr_port, false },
    cfg_t_size = { cfg_set_size, cfg_pr_size, false },
    cfg_t_duration = { cfg_set_duration, cfg_pr_duration, false },
    cfg_t_bool = { cfg_set_bool, cfg_pr_bool, false },
    cfg_t_enum = { cfg_set_enum, cfg_pr_enum, false },
    cfg_t_tlsver = { cfg_set_tlsver, cfg_pr_tlsver, false },
    cfg_t_listen = { cfg_set_listen, cfg_pr_listen, false },
    cfg_t_addr = { cfg_set_addr, cfg_pr_addr, false },
    cfg_t_allow = { cfg_set_allow, cfg_pr_allow, false },
    cfg_t_fpr = { cfg_set_fpr, cfg_pr_fpr, false },
    cfg_t_senders = { cfg_set_senders, cfg_pr_senders, false };

static const char *const cfg_tls_names[] =
    { "starttls", "implicit", "none", NULL };
static const char *const cfg_auth_names[] =
    { "auto", "plain", "login", "cram-md5", "xoauth2", "oauthbearer", NULL };
static const char *const cfg_bare_lf_names[] = { "normalize", "reject", NULL };
static const char *const cfg_log_level_names[] =
    { "error", "warn", "info", "debug", NULL };
static const char *const cfg_log_format_names[] = { "text", "json", NULL };
static const char *const cfg_log_target_names[] = { "stderr", "syslog", NULL };

#define SRV(f) .kind = CFG_K_SERVER, .off = offsetof(struct cfg, f)
#define UPS(f) .kind = CFG_K_UPSTREAM, .off = offsetof(struct cfg_upstream, f)
#define MET(f) .kind = CFG_K_METRICS, .off = offsetof(struct cfg, f)
#define DUR(lo) .type = &cfg_t_duration, .min = (lo), .max = CFG_MAX_DURATION

static const struct cfg_key cfg_keys[] = {
	{ SRV(listen), .key = "listen", .type = &cfg_t_listen,
	  .off_n = offsetof(struct cfg, nlisten), .max = CFG_MAX_LISTEN,
	  .def = "127.0.0.1:25 [::1]:25",
	  .help = "addresses to listen on: host:port or [v6]:port, space separated" },
	{ SRV(hostname), .key = "hostname", .type = &cfg_t_helo, .def = "",
	  .help = "name in the greeting and EHLO reply; default: the system's name" },
	{ SRV(allow), .key = "allow", .type = &cfg_t_allow,
	  .off_n = offsetof(struct cfg, nallow), .max = CFG_MAX_ALLOW,
	  .def = "127.0.0.0/8 ::1",
	  .help = "client networks served (CIDR or address, space separated)" },
	{ SRV(workers), .key = "workers", .type = &cfg_t_workers,
	  .def = "1", .min = 1, .max = 64,
	  .help = "worker processes sharing the listeners: auto (one per "
	  "CPU) or 1-64" },
	{ SRV(max_clients), .key = "max_clients", .type = &cfg_t_uint,
	  .def = "1024", .min = 1, .max = 1000000,
	  .help = "clients served at once, in total" },
	{ SRV(max_clients_per_ip), .key = "max_clients_per_ip",
	  .type = &cfg_t_uint, .def = "64", .min = 1, .max = 1000000,
	  .help = "clients served at once from one address" },
	{ SRV(max_message_size), .key = "max_message_size", .type = &cfg_t_size,
	  .def = "25M", .min = 1, .max = 1e18,
	  .help = "largest message accepted (K, M, G: powers of 1024)" },
	{ SRV(max_recipients), .key = "max_recipients", .type = &cfg_t_uint,
	  .def = "100", .min = 1, .max = 100000,
	  .help = "recipients per message" },
	{ SRV(command_timeout), .key = "command_timeout", DUR(0.001),
	  .def = "5m",
	  .help = "waiting for a command or a reply, on either leg" },
	{ SRV(data_timeout), .key = "data_timeout", DUR(0.001), .def = "10m",
	  .help = "waiting for body bytes or the end-of-data reply, either leg" },
	{ SRV(shutdown_timeout), .key = "shutdown_timeout", DUR(0),
	  .def = "30s",
	  .help = "on SIGTERM, how long sessions in flight may finish" },
	{ SRV(add_missing_headers), .key = "add_missing_headers",
	  .type = &cfg_t_bool, .def = "no",
	  .help = "add Date: and Message-ID: to messages that have none" },
	{ SRV(bare_lf), .key = "bare_lf", .type = &cfg_t_enum,
	  .names = cfg_bare_lf_names, .def = "normalize",
	  .help = "bare CR or LF in commands and data: normalize | reject" },
	{ SRV(user), .key = "user", .type = &cfg_t_str, .def = "",
	  .help = "user to switch to after binding; default: stay who we are" },
	{ SRV(log_level), .key = "log_level", .type = &cfg_t_enum,
	  .names = cfg_log_level_names, .def = "info",
	  .help = "error | warn | info | debug" },
	{ SRV(log_format), .key = "log_format", .type = &cfg_t_enum,
	  .names = cfg_log_format_names, .def = "text", .help = "text | json" },
	{ SRV(log_target), .key = "log_target", .type = &cfg_t_enum,
	  .names = cfg_log_target_names, .def = "stderr",
	  .help = "stderr | syslog" },
	{ SRV(allowed_senders), .key = "allowed_senders", .type = &cfg_t_senders,
	  .off_n = offsetof(struct cfg, nallowed_senders),
	  .max = CFG_MAX_SENDERS, .def = "",
	  .help = "envelope senders served: patterns like *@example.com, "
	          "alerts@host.example, *@*.example.org, * or <>, space "
	          "separated; default: any sender" },
	{ SRV(auth_users_file), .key = "auth_users_file", .type = &cfg_t_str,
	  .def = "",
	  .help = "file of user:crypt-hash lines; when set, clients must AUTH "
	          "before MAIL; default: no AUTH" },
	{ SRV(spool_dir), .key = "spool_dir", .type = &cfg_t_str, .def = "",
	  .help = "durable spool used when every upstream is unavailable "
	          "(messages are accepted, fsync'd and delivered later); "
	          "default: off (451 instead)" },
	{ SRV(spool_max_size), .key = "spool_max_size", .type = &cfg_t_size,
	  .def = "1G", .min = 1, .max = 1e18,
	  .help = "bytes of queued messages; over it the spool refuses "
	          "(451 again)" },
	{ SRV(spool_max_age), .key = "spool_max_age", DUR(1), .def = "5d",
	  .help = "a spooled message older than this moves to "
	          "spool_dir/failed/ as expired" },
	{ SRV(spool_retry_min), .key = "spool_retry_min", DUR(0.001),
	  .def = "1m", .help = "first retry delay; doubled per attempt" },
	{ SRV(spool_retry_max), .key = "spool_retry_max", DUR(0.001),
	  .def = "1h", .help = "longest retry delay (plus or minus 20 percent jitter)" },
	{ SRV(spool_max_inflight), .key = "spool_max_inflight",
	  .type = &cfg_t_uint, .def = "4", .min = 1, .max = 1000,
	  .help = "spooled messages delivered at once (per worker)" },

	{ UPS(host), .key = "host", .type = &cfg_t_host, .def = "",
	  .help = "the ESP's SMTP server (required)" },
	{ UPS(port), .key = "port", .type = &cfg_t_port, .def = "",
	  .help = "default 465 when tls = implicit, else 587" },
	{ UPS(tls), .key = "tls", .type = &cfg_t_enum, .names = cfg_tls_names,
	  .def = "",
	  .help = "starttls | implicit | none (none: tests on loopback only); "
	          "default implicit for port 465, else starttls" },
	{ UPS(tls_verify), .key = "tls_verify", .type = &cfg_t_bool,
	  .def = "yes", .help = "verify the certificate and host name" },
	{ UPS(ca_file), .key = "ca_file", .type = &cfg_t_str, .def = "",
	  .help = "CA certificates (PEM); default: the system's trust store" },
	{ UPS(server_name), .key = "server_name", .type = &cfg_t_host, .def = "",
	  .help = "SNI and certificate name; default: host" },
	{ UPS(tls_min_version), .key = "tls_min_version", .type = &cfg_t_tlsver,
	  .def = "1.2", .help = "1.2 | 1.3" },
	{ UPS(fingerprint), .key = "fingerprint", .type = &cfg_t_fpr,
	  .off_n = offsetof(struct cfg_upstream, has_fingerprint), .def = "",
	  .help = "optional pin: SHA-256 of the certificate, 64 hex digits" },
	{ UPS(username), .key = "username", .type = &cfg_t_str, .def = "",
	  .help = "AUTH user name; default: no AUTH" },
	{ UPS(password), .key = "password", .type = &cfg_t_secret, .def = "",
	  .secret = true,
	  .help = "AUTH password (better: one of the three keys below)" },
	{ UPS(password_file), .key = "password_file", .type = &cfg_t_str,
	  .def = "", .help = "file whose first line is the password" },
	{ UPS(password_env), .key = "password_env", .type = &cfg_t_envname,
	  .def = "", .help = "environment variable holding the password" },
	{ UPS(password_command), .key = "password_command", .type = &cfg_t_str,
	  .def = "",
	  .help = "command (sh -c) whose first output line is the password; "
	          "run when first needed (off the event loop), cached, run "
	          "again after the server rejects the password" },
	{ UPS(token_command), .key = "token_command", .type = &cfg_t_str,
	  .def = "",
	  .help = "auth = xoauth2 | oauthbearer: command (sh -c) printing an "
	          "access token, optionally followed by its lifetime in seconds; "
	          "cached until shortly before it expires" },
	{ UPS(token_file), .key = "token_file", .type = &cfg_t_str, .def = "",
	  .help = "auth = xoauth2 | oauthbearer: file holding the access token "
	          "(re-read when it changes)" },
	{ UPS(auth), .key = "auth", .type = &cfg_t_enum, .names = cfg_auth_names,
	  .def = "auto",
	  .help = "auto | plain | login | cram-md5 | xoauth2 | oauthbearer "
	          "(auto: PLAIN, else LOGIN, else CRAM-MD5)" },
	{ UPS(rewrite_sender), .key = "rewrite_sender", .type = &cfg_t_str,
	  .def = "", .help = "envelope sender (MAIL FROM) used with this "
	  "upstream: the ESP's verified sender; <> stays <>" },
	{ UPS(rewrite_header_from), .key = "rewrite_header_from",
	  .type = &cfg_t_bool, .def = "no",
	  .help = "also rewrite the From: header to rewrite_sender (keeping "
	  "the display name); Sender: follows, Return-Path: is dropped" },
	{ UPS(rewrite_reply_to), .key = "rewrite_reply_to",
	  .type = &cfg_t_bool, .def = "no",
	  .help = "with rewrite_header_from: add Reply-To: with the original "
	  "From: address when the message has none" },
	{ UPS(sender_domains), .key = "sender_domains", .type = &cfg_t_str,
	  .def = "", .help = "route senders of these domains (space separated, "
	  "*.example.com for subdomains) to this upstream; upstreams without "
	  "it take the rest" },
	{ UPS(helo_name), .key = "helo_name", .type = &cfg_t_helo, .def = "",
	  .help = "name sent in EHLO; default: the server's hostname" },
	{ UPS(connect_timeout), .key = "connect_timeout", DUR(0.001),
	  .def = "30s", .help = "connect, TLS handshake and AUTH" },
	{ UPS(pool_size), .key = "pool_size", .type = &cfg_t_uint, .def = "0",
	  .min = 0, .max = 1000,
	  .help = "warm authenticated sessions kept ready" },
	{ UPS(pool_max_messages), .key = "pool_max_messages",
	  .type = &cfg_t_uint, .def = "100", .min = 1, .max = 1000000,
	  .help = "messages per upstream session before it is retired" },
	{ UPS(pool_idle_timeout), .key = "pool_idle_timeout", DUR(1),
	  .def = "60s",
	  .help = "an idle pooled session is closed after this; the pool "
	  "refills only while mail flowed this recently" },

	{ MET(metrics_listen), .key = "listen", .type = &cfg_t_addr, .def = "",
	  .help = "host:port for GET /metrics and GET /healthz; default: off" },
};

#define CFG_NKEYS (sizeof cfg_keys / sizeof cfg_keys[0])

static const char *const cfg_env_allowlist[] = {
	"RELAY25_BIN", "RELAY25_SUBMIT", "RELAY25_CONFIG",
	"RELAY25_SPOOL_CRASH",          /* spool.h: crash injection, tests */
	NULL
};

/* Where a value or a section came from, for messages. */
struct cfg_origin {
	int line;               /* file line, 0: none */
	const char *env;        /* environment entry "NAME=value", or NULL */
	bool given;             /* a non-empty value was given */
};

struct cfg_sect {
	enum cfg_kind kind;
	void *base;             /* struct cfg or struct cfg_upstream */
	struct cfg_origin where;/* header line or first variable */
	struct cfg_origin key[CFG_NKEYS];
};

struct cfg_ctx {
	struct cfg *cfg;
	FILE *err, *warn;
	char *const *envp;
	const char *file;       /* NULL: environment only */
	FILE *fp;
	int lineno;
	int nerr;
	bool in_section;        /* a section header has been seen */
	bool file_secret;       /* the file holds a password */
	struct cfg_sect *cur;   /* NULL: outside any valid section */
	struct cfg_sect server, metrics;
	struct cfg_sect up[CFG_MAX_UPSTREAMS];
};

/* ---- messages ---- */

static void cfg_err(struct cfg_ctx *c, const struct cfg_origin *o,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void cfg_warn(struct cfg_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
cfg_err(struct cfg_ctx *c, const struct cfg_origin *o, const char *fmt, ...)
{
	va_list ap;

	c->nerr++;
	if (!c->err)
		return;
	if (o && o->env)
		fprintf(c->err, "%.*s: ", (int)strcspn(o->env, "="), o->env);
	else if (o && o->line && c->file)
		fprintf(c->err, "%s:%d: ", c->file, o->line);
	else
		fprintf(c->err, "%s: ", c->file ? c->file : "environment");
	va_start(ap, fmt);
	vfprintf(c->err, fmt, ap);
	va_end(ap);
	fputc('\n', c->err);
}

static void
cfg_warn(struct cfg_ctx *c, const char *fmt, ...)
{
	va_list ap;

	if (!c->warn)
		return;
	fputs("warning: ", c->warn);
	va_start(ap, fmt);
	vfprintf(c->warn, fmt, ap);
	va_end(ap);
	fputc('\n', c->warn);
}

/* Copy untrusted text for a message: control bytes become '?', long text
 * is cut. */
static const char *
cfg_show(const char *s, size_t len, char *buf, size_t n)
{
	size_t i, j = 0;

	for (i = 0; i < len && s[i] && j + 4 < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		buf[j++] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
	}
	if (i < len && s[i] && n > 4) {
		memcpy(buf + (j < n - 4 ? j : n - 4), "...", 4);
		return buf;
	}
	buf[j] = '\0';
	return buf;
}

static void
cfg_buf_add(struct cfg_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
cfg_buf_add(struct cfg_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->len >= sizeof b->s - 1)
		return;
	va_start(ap, fmt);
	n = vsnprintf(b->s + b->len, sizeof b->s - b->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		b->len += (size_t)n < sizeof b->s - b->len ? (size_t)n :
		    sizeof b->s - b->len - 1;
}

/* ---- small helpers ---- */

static bool cfg_isdigit(char ch) { return ch >= '0' && ch <= '9'; }
static bool cfg_isspace(char ch) { return ch == ' ' || ch == '\t'; }
static bool
cfg_isalnum(char ch)
{
	return cfg_isdigit(ch) || (ch >= 'a' && ch <= 'z') ||
	    (ch >= 'A' && ch <= 'Z');
}
static char cfg_upper(char ch) { return ch >= 'a' && ch <= 'z' ? ch - 32 : ch; }
static char cfg_lower(char ch) { return ch >= 'A' && ch <= 'Z' ? ch + 32 : ch; }

static void *
cfg_field(const struct cfg_key *k, void *base)
{
	return (char *)base + k->off;
}

static const void *
cfg_cfield(const struct cfg_key *k, const void *base)
{
	return (const char *)base + k->off;
}

static bool
cfg_has_ctl(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

static void
cfg_str_free(char *s, bool secret)
{
	if (s && secret)
		explicit_bzero(s, strlen(s));
	free(s);
}

/* Digits only, at least one, no overflow. *end points after them. */
static int
cfg_u64(const char *s, uint64_t *out, const char **end)
{
	uint64_t v = 0;

	if (!cfg_isdigit(*s))
		return -1;
	for (; cfg_isdigit(*s); s++) {
		unsigned d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	*end = s;
	return 0;
}

/* Next whitespace-separated token of *p into buf. 1: token, 0: none left,
 * -1: token too long. */
static int
cfg_token(const char **p, char *buf, size_t n)
{
	const char *s = *p, *e;

	while (cfg_isspace(*s))
		s++;
	if (!*s)
		return 0;
	for (e = s; *e && !cfg_isspace(*e); e++)
		;
	*p = e;
	if ((size_t)(e - s) >= n)
		return -1;
	memcpy(buf, s, (size_t)(e - s));
	buf[e - s] = '\0';
	return 1;
}

static bool
cfg_valid_name(const char *s, size_t len)
{
	if (len == 0 || len > CFG_MAX_NAME)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!cfg_isalnum(s[i]) && s[i] != '-')
			return false;
	return true;
}

/* A DNS name (labels of letters, digits, '-', '_') or an IP literal. */
static bool
cfg_valid_host(const char *s)
{
	unsigned char a[16];
	size_t label = 0, total = strlen(s);

	if (inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1)
		return true;
	if (total == 0 || total > 253)
		return false;
	for (; *s; s++) {
		if (*s == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if (cfg_isalnum(*s) || *s == '-' || *s == '_') {
			if (++label > 63)
				return false;
		} else {
			return false;
		}
	}
	return true;
}

static bool
cfg_loopback_sa(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
		return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr) ||
		    (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) &&
		    in6->sin6_addr.s6_addr[12] == 127);
	}
	return false;
}

/* "localhost" or a loopback literal: the only hosts tls = none may use. */
static bool
cfg_loopback_host(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (strcasecmp(host, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6);
	return false;
}

/* ---- exported pure parsers ---- */

int
cfg_parse_size(const char *s, uint64_t *out)
{
	uint64_t v, mul = 1;
	const char *e;

	if (!s || cfg_u64(s, &v, &e) < 0)
		return -1;
	switch (*e) {
	case 'k': case 'K': mul = UINT64_C(1) << 10; e++; break;
	case 'm': case 'M': mul = UINT64_C(1) << 20; e++; break;
	case 'g': case 'G': mul = UINT64_C(1) << 30; e++; break;
	default: break;
	}
	if (*e || v > UINT64_MAX / mul)
		return -1;
	*out = v * mul;
	return 0;
}

int
cfg_parse_duration(const char *s, double *out)
{
	uint64_t whole;
	double d, scale = 0.1;
	const char *e;

	if (!s || cfg_u64(s, &whole, &e) < 0)
		return -1;
	d = (double)whole;
	if (*e == '.') {
		if (!cfg_isdigit(*++e))
			return -1;
		for (; cfg_isdigit(*e); e++, scale /= 10)
			d += (*e - '0') * scale;
	}
	switch (*e) {
	case 's': e++; break;
	case 'm': d *= 60; e++; break;
	case 'h': d *= 3600; e++; break;
	case 'd': d *= 86400; e++; break;
	default: break;
	}
	if (*e || !(d <= CFG_MAX_DURATION))
		return -1;
	*out = d;
	return 0;
}

int
cfg_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "yes", "true", "on", "1", NULL };
	static const char *const no[] = { "no", "false", "off", "0", NULL };

	for (size_t i = 0; s && yes[i]; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

static int
cfg_port(const char *s, unsigned lo, uint16_t *out)
{
	uint64_t v;
	const char *e;

	if (cfg_u64(s, &v, &e) < 0 || *e || v < lo || v > 65535)
		return -1;
	*out = (uint16_t)v;
	return 0;
}

/* host:port, [v6]:port, host, v6 or [v6]; host is an IPv4 literal,
 * "localhost" (127.0.0.1) or "*" (0.0.0.0). No DNS. Port 0 is allowed. */
int
cfg_parse_addr(const char *s, struct cfg_addr *out, uint16_t default_port)
{
	struct cfg_addr a;
	char host[INET6_ADDRSTRLEN + 1];
	const char *h = s, *colon, *port = NULL;
	size_t hlen;
	uint16_t pnum = default_port;
	bool v6;

	if (!s || !*s)
		return -1;
	memset(&a, 0, sizeof a);
	if (*s == '[') {
		const char *close = strchr(s, ']');
		if (!close || (close[1] && close[1] != ':'))
			return -1;
		h = s + 1;
		hlen = (size_t)(close - h);
		if (close[1] == ':')
			port = close + 2;
		v6 = true;
	} else if ((colon = strchr(s, ':')) && strchr(colon + 1, ':')) {
		hlen = strlen(s);       /* bare IPv6 literal, no port */
		v6 = true;
	} else {
		hlen = colon ? (size_t)(colon - s) : strlen(s);
		if (colon)
			port = colon + 1;
		v6 = false;
	}
	if (hlen == 0 || hlen >= sizeof host)
		return -1;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	if (port && cfg_port(port, 0, &pnum) < 0)
		return -1;

	if (v6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a.sa;
		if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1)
			return -1;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(pnum);
		a.salen = sizeof *in6;
	} else {
		struct sockaddr_in *in = (struct sockaddr_in *)&a.sa;
		const char *lit = host;
		if (strcmp(host, "*") == 0)
			lit = "0.0.0.0";
		else if (strcasecmp(host, "localhost") == 0)
			lit = "127.0.0.1";
		if (inet_pton(AF_INET, lit, &in->sin_addr) != 1)
			return -1;
		in->sin_family = AF_INET;
		in->sin_port = htons(pnum);
		a.salen = sizeof *in;
	}
	if (port)
		snprintf(a.text, sizeof a.text, "%s", s);
	else
		snprintf(a.text, sizeof a.text, v6 ? "[%s]:%u" : "%s:%u", host,
		    (unsigned)pnum);
	*out = a;
	return 0;
}

/* ADDR or ADDR/PREFIX, IPv4 or IPv6; host bits are zeroed. */
int
cfg_parse_cidr(const char *s, struct cfg_cidr *out)
{
	struct cfg_cidr c;
	char host[INET6_ADDRSTRLEN + 1];
	const char *slash;
	size_t hlen;
	unsigned maxp, i;

	if (!s)
		return -1;
	memset(&c, 0, sizeof c);
	slash = strchr(s, '/');
	hlen = slash ? (size_t)(slash - s) : strlen(s);
	if (hlen == 0 || hlen >= sizeof host)
		return -1;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (inet_pton(AF_INET, host, c.addr) == 1) {
		c.family = AF_INET;
		maxp = 32;
	} else if (inet_pton(AF_INET6, host, c.addr) == 1) {
		c.family = AF_INET6;
		maxp = 128;
	} else {
		return -1;
	}
	c.prefix = maxp;
	if (slash) {
		uint64_t p;
		const char *e;
		if (cfg_u64(slash + 1, &p, &e) < 0 || *e || p > maxp ||
		    e - (slash + 1) > 3)
			return -1;
		c.prefix = (unsigned)p;
	}
	for (i = c.prefix; i < maxp; i++)
		c.addr[i / 8] &= (uint8_t)~(0x80u >> (i % 8));
	*out = c;
	return 0;
}

static bool
cfg_prefix_eq(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	unsigned full = bits / 8, rest = bits % 8;

	if (memcmp(a, b, full) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xffu << (8 - rest));
	return (a[full] & mask) == (b[full] & mask);
}

/* The client address is compared in both forms, IPv4 and IPv4-mapped
 * IPv6, so a dual-stack listener sees the same answer as a v4 one. */
bool
cfg_cidr_match(const struct cfg_cidr *n, const struct sockaddr *sa)
{
	uint8_t v4[4], v6[16];
	bool has4 = false, has6 = false;

	if (!n || !sa)
		return false;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		memcpy(v4, &in->sin_addr, 4);
		memset(v6, 0, 10);
		v6[10] = v6[11] = 0xff;
		memcpy(v6 + 12, v4, 4);
		has4 = has6 = true;
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		memcpy(v6, &in6->sin6_addr, 16);
		has6 = true;
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
			memcpy(v4, v6 + 12, 4);
			has4 = true;
		}
	}
	if (n->family == AF_INET && has4)
		return cfg_prefix_eq(v4, n->addr, n->prefix);
	if (n->family == AF_INET6 && has6)
		return cfg_prefix_eq(v6, n->addr, n->prefix);
	return false;
}

bool
cfg_allowed(const struct cfg *cfg, const struct sockaddr *sa)
{
	for (size_t i = 0; cfg && i < cfg->nallow; i++)
		if (cfg_cidr_match(&cfg->allow[i], sa))
			return true;
	return false;
}

/* ---- typed setters (the table's parsers) ---- */

#define WHY(...) (snprintf(why, whylen, __VA_ARGS__), -1)

static int
cfg_set_str(const struct cfg_key *k, void *base, const char *v, char *why,
    size_t whylen)
{
	char **p = cfg_field(k, base), *s = NULL;

	if (cfg_has_ctl(v))
		return WHY("contains a control character");
	if (*v && !(s = strdup(v)))
		return WHY("out of memory");
	cfg_str_free(*p, k->secret);
	*p = s;
	return 0;
}

static int
cfg_set_host(const struct cfg_key *k, void *base, const char *v, char *why,
    size_t whylen)
{
	if (*v && strchr(v, ':') && !strchr(strchr(v, ':') + 1, ':'))
		return WHY("a host name, without port (use the port key)");
	if (*v && !cfg_valid_host(v))
		return WHY("not a host name or IP address");
	return cfg_set_str(k, base, v, why, whylen);
}

/* Host name, or an address literal in brackets as EHLO allows. */
static int
cfg_set_helo(const struct cfg_key *k, void *base, const char *v, char *why,
    size_t whylen)
{
	size_t n = strlen(v);

	if (n > 2 && v[0] == '[' && v[n - 1] == ']') {
		char lit[INET6_ADDRSTRLEN + 1];
		unsigned char a[16];
		if (n - 2 >= sizeof lit)
			return WHY("not a host name or address literal");
		memcpy(lit, v + 1, n - 2);
		lit[n - 2] = '\0';
		if (inet_pton(AF_INET, lit, a) != 1 &&
		    inet_pton(AF_INET6, lit, a) != 1)
			return WHY("not a host name or address literal");
	} else if (*v && !cfg_valid_host(v)) {
		return WHY("not a host name");
	}
	return cfg_set_str(k, base, v, why, whylen);
}

static int
cfg_set_envname(const struct cfg_key *k, void *base, const char *v,
    char *why, size_t whylen)
{
	for (const char *s = v; *s; s++)
		if (!(cfg_isalnum(*s) || *s == '_') || (s == v && cfg_isdigit(*s)))
			return WHY("not an environment variable name");
	return cfg_set_str(k, base, v, why, whylen);
}

/* "auto" (stored as 0) or a count. */
static int
cfg_set_workers(const struct cfg_key *k, void *base, const char *v,
    char *why, size_t whylen)
{
	if (strcasecmp(v, "auto") == 0) {
		*(unsigned *)cfg_field(k, base) = 0;
		return 0;
	}
	return cfg_set_uint(k, base, v, why, whylen);
}

static void
cfg_pr_workers(const struct cfg_key *k, const void *base, struct cfg_buf *b)
{
	unsigned n = *(const unsigned *)cfg_cfield(k, base);

	if (n == 0)
		cfg_buf_add(b, "auto");
	else
		cfg_buf_add(b, "%u", n);
}

static int
cfg_set_uint(const struct cfg_key *k, void *base, const char *v, char *why,
    size_t whylen)
{
	uint64_t x;
	const char *e;

	if (cfg_u64(v, &x, &e) < 0 || *e)
		return WHY("not a whole number");
	if ((double)x < k->min || (double)x > k->max)
		return WHY("must be between %.0f and %.0f", k->min, k->max);
	*(unsigned *)cfg_field(k, base) = (unsigned)x;
	return 0;
}

static int
cfg_set_port(const struct cfg_key *k, void *base, const char *v, char *why,
    size_t whylen)
{
	uint16_t p = 0;

	if (*v && cfg_port(v, 1, &p) < 0)
		return WHY("must be a port number between 1 and 65535");
	*(uint16_t *)cfg_field(k, base) = p;
	return 0;
}

static int
cfg_set_size(const struct cfg_key *k, void *base, const char *v, char *why,
    size_t whylen)
{
	uint64_t x;

	if (cfg_parse_size(v, &x) < 0)
		return WHY("not a size (like 1024, 512K, 25M, 2G) or too large");
	if ((double)x < k->min || (double)x > k->max)
		return WHY("must be between %.0f and %.0f bytes", k->min, k->max);
	*(uint64_t *)cfg_field(k, base) = x;
	return 0;
}

static int
cfg_set_duration(const struct cfg_key *k, void *base, const char *v,
    char *why, size_t whylen)
{
	double d;

	if (cfg_parse_duration(v, &d) < 0)
		return WHY("not a duration (like 10, 30s, 1.5s, 5m, 1h)");
	if (d < k->min || d > k->max)
		return WHY(k->min > 0 ? "must be more than 0" :
		    "out of range");
	*(double *)cfg_field(k, base) = d;
	return 0;
}

static int
cfg_set_bool(const struct cfg_key *k, void *base, const char *v, char *why,
    size_t whylen)
{
	if (cfg_parse_bool(v, cfg_field(k, base)) < 0)
		return WHY("expected yes/no, true/false, on/off or 1/0");
	return 0;
}

/* "" selects the first value: only tls has an empty default, and its
 * real default is decided by the port after loading. */
static int
cfg_set_enum(const struct cfg_key *k, void *base, const char *v, char *why,
    size_t whylen)
{
	struct cfg_buf b = { .len = 0 };

	for (int i = 0; k->names[i]; i++) {
		if (!*v || strcasecmp(v, k->names[i]) == 0) {
			*(int *)cfg_field(k, base) = *v ? i : 0;
			return 0;
		}
		cfg_buf_add(&b, "%s%s", i ? " | " : "", k->names[i]);
	}
	return WHY("expected %s", b.s);
}

static int
cfg_set_tlsver(const struct cfg_key *k, void *base, const char *v,
    char *why, size_t whylen)
{
	int *p = cfg_field(k, base);

	if (strcmp(v, "1.2") == 0)
		*p = 12;
	else if (strcmp(v, "1.3") == 0)
		*p = 13;
	else
		return WHY("expected 1.2 or 1.3");
	return 0;
}

static int
cfg_set_listen(const struct cfg_key *k, void *base, const char *v,
    char *why, size_t whylen)
{
	struct cfg_addr tmp[CFG_MAX_LISTEN];
	char tok[128], show[64];
	size_t n = 0, cap = (size_t)k->max;
	int r;

	while ((r = cfg_token(&v, tok, sizeof tok)) != 0) {
		if (r < 0)
			return WHY("address too long");
		if (n == cap)
			return WHY("more than %zu addresses", cap);
		if (cfg_parse_addr(tok, &tmp[n], 25) < 0)
			return WHY("'%s' is not host:port or [v6]:port with a "
			    "literal address", cfg_show(tok, sizeof tok, show,
			    sizeof show));
		for (size_t i = 0; i < n; i++)
			if (tmp[i].salen == tmp[n].salen &&
			    memcmp(&tmp[i].sa, &tmp[n].sa, tmp[n].salen) == 0)
				return WHY("'%s' is listed twice", tmp[n].text);
		n++;
	}
	if (n == 0)
		return WHY("no address");
	memcpy(cfg_field(k, base), tmp, n * sizeof tmp[0]);
	*(size_t *)((char *)base + k->off_n) = n;
	return 0;
}

static int
cfg_set_addr(const struct cfg_key *k, void *base, const char *v, char *why,
    size_t whylen)
{
	struct cfg_addr a;

	memset(&a, 0, sizeof a);
	if (*v && cfg_parse_addr(v, &a, 9325) < 0)
		return WHY("not host:port or [v6]:port with a literal address");
	*(struct cfg_addr *)cfg_field(k, base) = a;
	return 0;
}

static int
cfg_set_allow(const struct cfg_key *k, void *base, const char *v, char *why,
    size_t whylen)
{
	struct cfg_cidr tmp[CFG_MAX_ALLOW];
	char tok[128], show[64];
	size_t n = 0, cap = (size_t)k->max;
	int r;

	while ((r = cfg_token(&v, tok, sizeof tok)) != 0) {
		if (r < 0)
			return WHY("network too long");
		if (n == cap)
			return WHY("more than %zu networks", cap);
		if (cfg_parse_cidr(tok, &tmp[n]) < 0)
			return WHY("'%s' is not an address or CIDR network",
			    cfg_show(tok, sizeof tok, show, sizeof show));
		n++;
	}
	if (n == 0)
		return WHY("no network");
	memcpy(cfg_field(k, base), tmp, n * sizeof tmp[0]);
	*(size_t *)((char *)base + k->off_n) = n;
	return 0;
}

/* Sender patterns (policy.h): "<>", or text with an '@' where '*' is a
 * wildcard, or "*". Anything else is most likely a typo ("example.com"
 * for "*@example.com", "<a@b>" for "a@b"). */
static int
cfg_set_senders(const struct cfg_key *k, void *base, const char *v,
    char *why, size_t whylen)
{
	char tmp[CFG_MAX_SENDERS][CFG_SENDER_MAX + 1];
	char tok[CFG_SENDER_MAX + 1], show[48];
	size_t n = 0, cap = (size_t)k->max;
	int r;

	while ((r = cfg_token(&v, tok, sizeof tok)) != 0) {
		if (r < 0)
			return WHY("a pattern is longer than %d bytes",
			    CFG_SENDER_MAX);
		if (n == cap)
			return WHY("more than %zu patterns", cap);
		if (cfg_has_ctl(tok))
			return WHY("contains a control character");
		cfg_show(tok, strlen(tok), show, sizeof show);
		if (strcmp(tok, "<>") != 0 && strpbrk(tok, "<>"))
			return WHY("'%s': write the address without <> (only "
			    "the null sender is written <>)", show);
		if (strcmp(tok, "*") != 0 && strcmp(tok, "<>") != 0 &&
		    !strchr(tok, '@'))
			return WHY("'%s' has no '@': for a whole domain write "
			    "*@%s", show, show);
		memcpy(tmp[n++], tok, strlen(tok) + 1);
	}
	memcpy(cfg_field(k, base), tmp, n * sizeof tmp[0]);
	*(size_t *)((char *)base + k->off_n) = n;
	return 0;
}

static int
cfg_hexval(char ch)
{
	if (cfg_isdigit(ch))
		return ch - '0';
	ch = cfg_lower(ch);
	return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* [sha256:]64 hex digits, optionally with ':' between the byte pairs. */
static int
cfg_set_fpr(const struct cfg_key *k, void *base, const char *v, char *why,
    size_t whylen)
{
	uint8_t fp[32];
	bool set = *v != '\0';

	memset(fp, 0, sizeof fp);
	if (set) {
		if (strncasecmp(v, "sha256:", 7) == 0)
			v += 7;
		for (size_t i = 0; i < sizeof fp; i++) {
			int hi, lo;
			if (i > 0 && *v == ':')
				v++;
			if ((hi = cfg_hexval(v[0])) < 0 ||
			    (lo = cfg_hexval(v[1])) < 0)
				return WHY("expected 64 hex digits (SHA-256)");
			fp[i] = (uint8_t)(hi << 4 | lo);
			v += 2;
		}
		if (*v)
			return WHY("expected 64 hex digits (SHA-256)");
	}
	memcpy(cfg_field(k, base), fp, sizeof fp);
	*(bool *)((char *)base + k->off_n) = set;
	return 0;
}

/* ---- printers (effective values, as INI text that reads back the same) ---- */

static void
cfg_pr_text(struct cfg_buf *b, const char *s)
{
	if (!s)
		return;
	if (!strpbrk(s, " \t;#\"\\")) {
		cfg_buf_add(b, "%s", s);
		return;
	}
	cfg_buf_add(b, "\"");
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			cfg_buf_add(b, "\\");
		cfg_buf_add(b, "%c", *s);
	}
	cfg_buf_add(b, "\"");
}

static void
cfg_pr_str(const struct cfg_key *k, const void *base, struct cfg_buf *b)
{
	cfg_pr_text(b, *(char *const *)cfg_cfield(k, base));
}

/* Only an inline password is shown, and only as stars; one read from a
 * file, a variable or a command is not shown at all. */
static void
cfg_pr_secret(const struct cfg_key *k, const void *base, struct cfg_buf *b)
{
	const struct cfg_upstream *u = base;

	(void)k;
	if (u->password && !u->password_file && !u->password_env &&
	    !u->password_command)
		cfg_buf_add(b, "********");
}

static void
cfg_pr_uint(const struct cfg_key *k, const void *base, struct cfg_buf *b)
{
	cfg_buf_add(b, "%u", *(const unsigned *)cfg_cfield(k, base));
}

static void
cfg_pr_port(const struct cfg_key *k, const void *base, struct cfg_buf *b)
{
	uint16_t p = *(const uint16_t *)cfg_cfield(k, base);

	if (p)
		cfg_buf_add(b, "%u", (unsigned)p);
}

static void
cfg_pr_size(const struct cfg_key *k, const void *base, struct cfg_buf *b)
{
	static const char units[] = "GMK";
	uint64_t x = *(const uint64_t *)cfg_cfield(k, base);

	for (int i = 0; x && i < 3; i++) {
		uint64_t m = UINT64_C(1) << (10 * (3 - i));
		if (x % m == 0) {
			cfg_buf_add(b, "%llu%c", (unsigned long long)(x / m),
			    units[i]);
			return;
		}
	}
	cfg_buf_add(b, "%llu", (unsigned long long)x);
}

static void
cfg_pr_duration(const struct cfg_key *k, const void *base, struct cfg_buf *b)
{
	double d = *(const double *)cfg_cfield(k, base);
	char t[64];
	size_t n;

	if (d >= 1 && d == (double)(unsigned long long)d) {
		unsigned long long x = (unsigned long long)d;
		if (x % 86400 == 0)
			cfg_buf_add(b, "%llud", x / 86400);
		else if (x % 3600 == 0)
			cfg_buf_add(b, "%lluh", x / 3600);
		else if (x % 60 == 0)
			cfg_buf_add(b, "%llum", x / 60);
		else
			cfg_buf_add(b, "%llus", x);
		return;
	}
	snprintf(t, sizeof t, "%.3f", d);
	n = strlen(t);
	while (n > 1 && t[n - 1] == '0')
		n--;
	if (t[n - 1] == '.')
		n--;
	cfg_buf_add(b, "%.*ss", (int)n, t);
}

static void
cfg_pr_bool(const struct cfg_key *k, const void *base, struct cfg_buf *b)
{
	cfg_buf_add(b, "%s", *(const bool *)cfg_cfield(k, base) ? "yes" : "no");
}

static void
cfg_pr_enum(const struct cfg_key *k, const void *base, struct cfg_buf *b)
{
	cfg_buf_add(b, "%s", k->names[*(const int *)cfg_cfield(k, base)]);
}

static void
cfg_pr_tlsver(const struct cfg_key *k, const void *base, struct cfg_buf *b)
{
	cfg_buf_add(b, "1.%d", *(const int *)cfg_cfield(k, base) - 10);
}

static void
cfg_pr_listen(const struct cfg_key *k, const void *base, struct cfg_buf *b)
{
	const struct cfg_addr *a = cfg_cfield(k, base);
	size_t n = *(const size_t *)((const char *)base + k->off_n);

	for (size_t i = 0; i < n; i++)
		cfg_buf_add(b, "%s%s", i ? " " : "", a[i].text);
}

static void
cfg_pr_addr(const struct cfg_key *k, const void *base, struct cfg_buf *b)
{
	const struct cfg_addr *a = cfg_cfield(k, base);

	if (a->salen)
		cfg_buf_add(b, "%s", a->text);
}

static void
cfg_pr_allow(const struct cfg_key *k, const void *base, struct cfg_buf *b)
{
	const struct cfg_cidr *c = cfg_cfield(k, base);
	size_t n = *(const size_t *)((const char *)base + k->off_n);
	char t[INET6_ADDRSTRLEN];

	for (size_t i = 0; i < n; i++) {
		if (!inet_ntop(c[i].family, c[i].addr, t, sizeof t))
			continue;
		cfg_buf_add(b, "%s%s/%u", i ? " " : "", t, c[i].prefix);
	}
}

/* Space separated; quoted as a whole if a pattern holds ';', '#', '"' or
 * '\\' (which cannot be written bare). */
static void
cfg_pr_senders(const struct cfg_key *k, const void *base, struct cfg_buf *b)
{
	const char (*p)[CFG_SENDER_MAX + 1] = cfg_cfield(k, base);
	size_t n = *(const size_t *)((const char *)base + k->off_n);
	bool quote = false;

	for (size_t i = 0; i < n; i++)
		quote |= strpbrk(p[i], ";#\"\\") != NULL;
	cfg_buf_add(b, "%s", quote ? "\"" : "");
	for (size_t i = 0; i < n; i++) {
		cfg_buf_add(b, "%s", i ? " " : "");
		for (const char *s = p[i]; *s; s++)
			cfg_buf_add(b, "%s%c", quote && (*s == '"' ||
			    *s == '\\') ? "\\" : "", *s);
	}
	cfg_buf_add(b, "%s", quote ? "\"" : "");
}

static void
cfg_pr_fpr(const struct cfg_key *k, const void *base, struct cfg_buf *b)
{
	const uint8_t *fp = cfg_cfield(k, base);

	if (!*(const bool *)((const char *)base + k->off_n))
		return;
	cfg_buf_add(b, "sha256:");
	for (size_t i = 0; i < 32; i++)
		cfg_buf_add(b, "%02x", fp[i]);
}

/* ---- sections and keys ---- */

static const struct cfg_key *
cfg_find_key(enum cfg_kind kind, const char *name)
{
	for (size_t i = 0; i < CFG_NKEYS; i++)
		if (cfg_keys[i].kind == kind && strcmp(cfg_keys[i].key, name) == 0)
			return &cfg_keys[i];
	return NULL;
}

static struct cfg_origin *
cfg_key_origin(struct cfg_sect *s, const char *name)
{
	const struct cfg_key *k = cfg_find_key(s->kind, name);

	return k ? &s->key[k - cfg_keys] : &s->where;
}

/* Where the key was set, or else where its section was. */
static const struct cfg_origin *
cfg_origin(struct cfg_sect *s, const char *name)
{
	const struct cfg_origin *o = cfg_key_origin(s, name);

	return (o->line || o->env) ? o : &s->where;
}

static bool
cfg_given(struct cfg_sect *s, const char *name)
{
	return cfg_key_origin(s, name)->given;
}

/* Parse a value (or, for "", the key's default) into the section. */
static void
cfg_set(struct cfg_ctx *c, struct cfg_sect *s, const struct cfg_key *k,
    const char *v, const struct cfg_origin *o)
{
	char why[CFG_WHY] = "", show[80];

	if (k->type->parse(k, s->base, *v ? v : k->def, why, sizeof why) == 0)
		return;
	if (k->secret)
		cfg_err(c, o, "bad value for %s: %s", k->key, why);
	else
		cfg_err(c, o, "bad value '%s' for %s: %s",
		    cfg_show(v, strlen(v), show, sizeof show), k->key, why);
}

/* The one place defaults are applied: parse every default text. */
static void
cfg_defaults(struct cfg_ctx *c, struct cfg_sect *s)
{
	for (size_t i = 0; i < CFG_NKEYS; i++) {
		const struct cfg_key *k = &cfg_keys[i];
		char why[CFG_WHY];
		if (k->kind == s->kind &&
		    k->type->parse(k, s->base, k->def, why, sizeof why) < 0)
			cfg_err(c, NULL, "internal error: default of %s: %s",
			    k->key, why);
	}
}

static struct cfg_sect *
cfg_find_upstream(struct cfg_ctx *c, const char *name, size_t len)
{
	for (size_t i = 0; i < c->cfg->nupstream; i++) {
		const char *n = c->cfg->upstream[i].name;
		if (strlen(n) == len && strncasecmp(n, name, len) == 0)
			return &c->up[i];
	}
	return NULL;
}

static struct cfg_sect *
cfg_new_upstream(struct cfg_ctx *c, const char *name, size_t len,
    bool lower, const struct cfg_origin *o)
{
	struct cfg *cfg = c->cfg;
	struct cfg_upstream *u;
	struct cfg_sect *s;
	char *n;

	if (cfg->nupstream == CFG_MAX_UPSTREAMS) {
		cfg_err(c, o, "too many upstreams (at most %d)",
		    CFG_MAX_UPSTREAMS);
		return NULL;
	}
	if (!(n = strndup(name, len))) {
		cfg_err(c, o, "out of memory");
		return NULL;
	}
	for (size_t i = 0; lower && i < len; i++)
		n[i] = cfg_lower(n[i]);
	u = &cfg->upstream[cfg->nupstream];
	s = &c->up[cfg->nupstream++];
	memset(u, 0, sizeof *u);
	u->name = n;
	*s = (struct cfg_sect){ .kind = CFG_K_UPSTREAM, .base = u, .where = *o };
	s->where.given = false;
	cfg_defaults(c, s);
	return s;
}

static void
cfg_open_fixed(struct cfg_ctx *c, struct cfg_sect *s, const char *name,
    const struct cfg_origin *o)
{
	if (s->where.line) {
		cfg_err(c, o, "repeated section [%s] (first on line %d)", name,
		    s->where.line);
		return;
	}
	s->where = *o;
	c->cur = s;
}

#define CFG_NO_CONTINUATION "indented line without '=': continuation " \
	"lines are not supported, put the value on one line"

/* A "[...]" line: check it and make its section current. An indented
 * line that is no valid header is taken for a continuation attempt. */
static void
cfg_section(struct cfg_ctx *c, const char *s, bool indented,
    const struct cfg_origin *o)
{
	const char *close = strchr(s, ']'), *rest, *name = s + 1;
	char show[80];
	size_t len;

	c->in_section = true;
	c->cur = NULL;
	for (rest = close ? close + 1 : ""; cfg_isspace(*rest); rest++)
		;
	if (indented && (!close || (*rest && *rest != ';' && *rest != '#'))) {
		cfg_err(c, o, CFG_NO_CONTINUATION);
		return;
	}
	if (!close) {
		cfg_err(c, o, "missing ']' in section header");
		return;
	}
	if (*rest && *rest != ';' && *rest != '#') {
		cfg_err(c, o, "unexpected text after section header");
		return;
	}
	while (cfg_isspace(*name))
		name++;
	for (len = (size_t)(close - name); len && cfg_isspace(name[len - 1]); )
		len--;
	if (len == 6 && memcmp(name, "server", 6) == 0) {
		cfg_open_fixed(c, &c->server, "server", o);
	} else if (len == 7 && memcmp(name, "metrics", 7) == 0) {
		cfg_open_fixed(c, &c->metrics, "metrics", o);
	} else if (len >= 8 && memcmp(name, "upstream", 8) == 0 &&
	    (len == 8 || name[8] == ':')) {
		const char *n = len == 8 ? "" : name + 9;
		size_t nl = len == 8 ? 0 : len - 9;
		struct cfg_sect *old;
		if (len > 8 && !cfg_valid_name(n, nl)) {
			cfg_err(c, o, "bad upstream name '%s': use 1 to %d "
			    "letters, digits or '-'", cfg_show(n, nl, show,
			    sizeof show), CFG_MAX_NAME);
		} else if ((old = cfg_find_upstream(c, n, nl))) {
			cfg_err(c, o, "repeated section [%s] (first on line %d)",
			    cfg_show(name, len, show, sizeof show),
			    old->where.line);
		} else {
			c->cur = cfg_new_upstream(c, n, nl, false, o);
		}
	} else {
		cfg_err(c, o, "unknown section [%s]: expected [server], "
		    "[upstream], [upstream:NAME] or [metrics]",
		    cfg_show(name, len, show, sizeof show));
	}
}

/* Check one line before inih sees it. Returns false if the line must be
 * hidden from inih (it was a section header or an error). */
static bool
cfg_check_line(struct cfg_ctx *c, const char *line)
{
	struct cfg_origin o = { .line = c->lineno };
	const char *s = line, *sep;

	if (c->lineno == 1 && strncmp(s, "\xEF\xBB\xBF", 3) == 0)
		s += 3;
	line = s;
	while (*s && strchr(" \t\v\f\r", *s))
		s++;
	if (!*s || *s == ';' || *s == '#')
		return true;
	if (*s == '[') {
		cfg_section(c, s, s != line, &o);
		return false;
	}
	sep = s + strcspn(s, "=:");
	if (*sep != '=') {
		if (s != line)
			cfg_err(c, &o, CFG_NO_CONTINUATION);
		else
			cfg_err(c, &o, "expected 'key = value'");
		return false;
	}
	if (sep == s) {
		cfg_err(c, &o, "missing key name before '='");
		return false;
	}
	return true;
}

/* inih's reader: one line per call, counted; over-long lines and NUL
 * bytes are errors, never truncated. num is ini_max_line. */
static char *
cfg_reader(char *str, int num, void *stream)
{
	struct cfg_ctx *c = stream;
	struct cfg_origin o;
	size_t len = 0, max = num > 3 ? (size_t)num - 3 : 0;
	bool any = false, over = false, nul = false;
	int ch;

	while ((ch = getc(c->fp)) != EOF) {
		any = true;
		if (ch == '\n')
			break;
		if (ch == '\0')
			nul = true;
		if (len < max + 1)      /* room for a final '\r' */
			str[len++] = (char)ch;
		else
			over = true;
	}
	if (!any) {
		if (ferror(c->fp))
			cfg_err(c, NULL, "read error: %s", strerror(errno));
		return NULL;
	}
	o = (struct cfg_origin){ .line = ++c->lineno };
	if (len && str[len - 1] == '\r')
		len--;
	str[len] = '\0';
	if (over || len > max)
		cfg_err(c, &o, "line too long (more than %zu bytes)", max);
	else if (nul)
		cfg_err(c, &o, "line contains a NUL byte");
	else if (cfg_check_line(c, str))
		return str;
	str[0] = '\0';
	return str;
}

/* The value as written: "quoted" with \" and \\ escapes, or bare up to an
 * inline comment (';' or '#' after whitespace). */
static int
cfg_unquote(const char *v, char *out, size_t n, char *why, size_t whylen)
{
	size_t j = 0;

	if (*v == '"') {
		for (v++; *v != '"'; v++) {
			if (!*v)
				return WHY("missing closing quote");
			if (*v == '\\' && *++v != '"' && *v != '\\')
				return WHY("only \\\" and \\\\ are escapes "
				    "inside quotes");
			if (j + 1 >= n)
				return WHY("value too long");
			out[j++] = *v;
		}
		for (v++; cfg_isspace(*v); v++)
			;
		if (*v && *v != ';' && *v != '#')
			return WHY("unexpected text after the closing quote");
	} else {
		for (size_t i = 0; v[i]; i++) {
			if ((v[i] == ';' || v[i] == '#') &&
			    (i == 0 || cfg_isspace(v[i - 1])))
				break;
			if (j + 1 >= n)
				return WHY("value too long");
			out[j++] = v[i];
		}
		while (j && cfg_isspace(out[j - 1]))
			j--;
	}
	out[j] = '\0';
	return 0;
}

static int
cfg_handler(void *user, const char *section, const char *name,
    const char *value)
{
	struct cfg_ctx *c = user;
	struct cfg_origin o = { .line = c->lineno };
	const struct cfg_key *k;
	struct cfg_origin *prev;
	char buf[CFG_MAX_LINE + 1], why[CFG_WHY], show[80];

	(void)section;          /* inih's copy may be truncated: use ours */
	if (!c->cur) {
		if (!c->in_section)
			cfg_err(c, &o, "key '%s' outside of any section",
			    cfg_show(name, strlen(name), show, sizeof show));
		return 1;       /* in a bad section: reported at its header */
	}
	if (!(k = cfg_find_key(c->cur->kind, name))) {
		cfg_err(c, &o, "unknown key '%s' in [%s]",
		    cfg_show(name, strlen(name), show, sizeof show),
		    c->cur->kind == CFG_K_SERVER ? "server" :
		    c->cur->kind == CFG_K_METRICS ? "metrics" : "upstream");
		return 1;
	}
	prev = &c->cur->key[k - cfg_keys];
	if (prev->line) {
		cfg_err(c, &o, "repeated key '%s' (first on line %d)", k->key,
		    prev->line);
		return 1;
	}
	o.given = true;         /* corrected below for an empty value */
	*prev = o;
	if (cfg_unquote(value, buf, sizeof buf, why, sizeof why) < 0) {
		cfg_err(c, &o, "%s: %s", k->key, why);
	} else {
		prev->given = o.given = buf[0] != '\0';
		if (k->secret && o.given)
			c->file_secret = true;
		cfg_set(c, c->cur, k, buf, &o);
	}
	if (k->secret)
		explicit_bzero(buf, sizeof buf);
	return 1;
}

struct cfg_inih {
	bool multiline, inline_comments, use_stack, realloc_, stop, no_value,
	    bom;
	int max_line;
};

static void
cfg_inih_swap(struct cfg_inih *save, bool restore)
{
	if (restore) {
		ini_allow_multiline = save->multiline;
		ini_allow_inline_comments = save->inline_comments;
		ini_use_stack = save->use_stack;
		ini_allow_realloc = save->realloc_;
		ini_stop_on_first_error = save->stop;
		ini_allow_no_value = save->no_value;
		ini_allow_bom = save->bom;
		ini_max_line = save->max_line;
		return;
	}
	*save = (struct cfg_inih){ ini_allow_multiline,
	    ini_allow_inline_comments, ini_use_stack, ini_allow_realloc,
	    ini_stop_on_first_error, ini_allow_no_value, ini_allow_bom,
	    ini_max_line };
	ini_allow_multiline = false;     /* indented lines are not continuations */
	ini_allow_inline_comments = false; /* we handle quotes and comments */
	ini_use_stack = true;            /* a line buffer of ini_max_line */
	ini_allow_realloc = false;
	ini_stop_on_first_error = false; /* report every error */
	ini_allow_no_value = false;
	ini_allow_bom = true;
	ini_max_line = CFG_MAX_LINE + 3; /* + CR, LF, NUL */
}

static void
cfg_read_file(struct cfg_ctx *c)
{
	struct cfg_inih save;
	struct stat st;
	int rc;

	if (!(c->fp = fopen(c->file, "re"))) {
		cfg_err(c, NULL, "cannot open: %s", strerror(errno));
		return;
	}
	if (fstat(fileno(c->fp), &st) < 0 || S_ISDIR(st.st_mode)) {
		cfg_err(c, NULL, "cannot read: %s",
		    S_ISDIR(st.st_mode) ? "is a directory" : strerror(errno));
		fclose(c->fp);
		return;
	}
	cfg_inih_swap(&save, false);
	rc = ini_parse_stream(cfg_reader, c, cfg_handler, c);
	cfg_inih_swap(&save, true);
	if (rc < 0)
		cfg_err(c, NULL, "out of memory");
	else if (rc > 0 && c->nerr == 0)
		cfg_err(c, &(struct cfg_origin){ .line = rc }, "syntax error");
	if (c->file_secret && (st.st_mode & (S_IRGRP | S_IROTH)))
		cfg_warn(c, "%s contains a password and is readable by group "
		    "or others: chmod 600 %s, or use password_file", c->file,
		    c->file);
	fclose(c->fp);
	c->fp = NULL;
}

/* ---- environment ---- */

/* The key named by the upper-case text s (len bytes), or NULL. */
static const struct cfg_key *
cfg_env_key(enum cfg_kind kind, const char *s, size_t len)
{
	for (size_t i = 0; i < CFG_NKEYS; i++) {
		const struct cfg_key *k = &cfg_keys[i];
		size_t j;
		if (k->kind != kind || strlen(k->key) != len)
			continue;
		for (j = 0; j < len && s[j] == cfg_upper(k->key[j]); j++)
			;
		if (j == len)
			return k;
	}
	return NULL;
}

/* Map the name of a RELAY25_ variable (nlen bytes) to a key; for upstream
 * keys un and ul give the NAME ("" for [upstream]). NULL: unknown. After
 * RELAY25_UPSTREAM_, a whole known key wins over NAME_KEY. */
static const struct cfg_key *
cfg_env_split(const char *e, size_t nlen, const char **un, size_t *ul)
{
	const char *r = e + 8, *us;
	size_t rl = nlen - 8;
	const struct cfg_key *k;

	*un = "";
	*ul = 0;
	if (rl > 7 && memcmp(r, "SERVER_", 7) == 0)
		return cfg_env_key(CFG_K_SERVER, r + 7, rl - 7);
	if (rl > 8 && memcmp(r, "METRICS_", 8) == 0)
		return cfg_env_key(CFG_K_METRICS, r + 8, rl - 8);
	if (rl <= 9 || memcmp(r, "UPSTREAM_", 9) != 0)
		return NULL;
	r += 9;
	rl -= 9;
	if ((k = cfg_env_key(CFG_K_UPSTREAM, r, rl)))
		return k;
	if (!(us = memchr(r, '_', rl)) || !cfg_valid_name(r, (size_t)(us - r)))
		return NULL;
	*un = r;
	*ul = (size_t)(us - r);
	return cfg_env_key(CFG_K_UPSTREAM, us + 1, rl - *ul - 1);
}

static bool
cfg_env_allowlisted(const char *e, size_t nlen)
{
	for (size_t i = 0; cfg_env_allowlist[i]; i++)
		if (strlen(cfg_env_allowlist[i]) == nlen &&
		    memcmp(e, cfg_env_allowlist[i], nlen) == 0)
			return true;
	return false;
}

static void
cfg_env_apply(struct cfg_ctx *c, const char *e, size_t nlen)
{
	struct cfg_origin o = { .env = e, .given = e[nlen + 1] != '\0' };
	struct cfg_sect *s, *named;
	const struct cfg_key *k;
	const char *un, *us;
	size_t ul;

	if (!(k = cfg_env_split(e, nlen, &un, &ul)))
		return;         /* reported by cfg_env_check() */
	if (k->kind == CFG_K_SERVER)
		s = &c->server;
	else if (k->kind == CFG_K_METRICS)
		s = &c->metrics;
	else if (!(s = cfg_find_upstream(c, un, ul)) && o.given)
		s = cfg_new_upstream(c, un, ul, true, &o);
	if (!s)
		return;         /* empty: nothing to reset; or too many */
	if (k->kind == CFG_K_UPSTREAM && ul == 0 &&
	    (us = memchr(e + 17, '_', nlen - 17)) &&
	    (named = cfg_find_upstream(c, e + 17, (size_t)(us - (e + 17)))))
		cfg_warn(c, "%.*s sets %s of [upstream], not %.*s of "
		    "[upstream:%s]", (int)nlen, e, k->key,
		    (int)(e + nlen - (us + 1)), us + 1,
		    ((struct cfg_upstream *)named->base)->name);
	if (s->key[k - cfg_keys].env) {
		const char *p = s->key[k - cfg_keys].env;
		cfg_err(c, &o, "%s is already set by %.*s", k->key,
		    (int)strcspn(p, "="), p);
		return;
	}
	s->key[k - cfg_keys] = o;
	cfg_set(c, s, k, e + nlen + 1, &o);
}

/* Is the variable named by some upstream's password_env? */
static bool
cfg_env_is_password(struct cfg_ctx *c, const char *e, size_t nlen)
{
	for (size_t i = 0; i < c->cfg->nupstream; i++) {
		const char *p = c->cfg->upstream[i].password_env;
		if (p && strlen(p) == nlen && memcmp(p, e, nlen) == 0)
			return true;
	}
	return false;
}

/* Apply every RELAY25_* override, then reject the unknown ones. */
static void
cfg_env(struct cfg_ctx *c)
{
	for (int pass = 0; pass < 2; pass++) {
		for (char *const *ep = c->envp; *ep; ep++) {
			const char *e = *ep, *un;
			size_t nlen = strcspn(e, "="), ul;
			struct cfg_origin o = { .env = e };
			if (strncmp(e, "RELAY25_", 8) != 0 || !e[nlen] ||
			    cfg_env_allowlisted(e, nlen))
				continue;
			if (pass == 0)
				cfg_env_apply(c, e, nlen);
			else if (!cfg_env_split(e, nlen, &un, &ul) &&
			    !cfg_env_is_password(c, e, nlen))
				cfg_err(c, &o, "unknown variable: expected "
				    "RELAY25_SERVER_<KEY>, RELAY25_UPSTREAM_"
				    "[<NAME>_]<KEY> or RELAY25_METRICS_<KEY>");
		}
	}
}

/* ---- secrets ---- */

static const char *
cfg_getenv(char *const *envp, const char *name)
{
	size_t n = strlen(name);

	for (; *envp; envp++)
		if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
			return *envp + n + 1;
	return NULL;
}

/* The first line of fp into buf, trailing CR LF removed. Returns its
 * length, or -1 with why. drain: read to the end (a pipe). */
static int
cfg_first_line(FILE *fp, char *buf, size_t n, bool drain, char *why,
    size_t whylen)
{
	size_t len = 0;
	bool over = false, nul = false;
	int ch;

	while ((ch = getc(fp)) != EOF && ch != '\n') {
		if (ch == '\0')
			nul = true;
		if (len + 1 < n)
			buf[len++] = (char)ch;
		else
			over = true;
	}
	while (drain && ch != EOF)
		ch = getc(fp);
	while (len && buf[len - 1] == '\r')
		len--;
	buf[len] = '\0';
	if (ferror(fp))
		return WHY("read error");
	if (over)
		return WHY("the first line is longer than %d bytes",
		    CFG_MAX_SECRET);
	if (nul)
		return WHY("the first line contains a NUL byte");
	if (len == 0)
		return WHY("the first line is empty");
	return (int)len;
}

static char *
cfg_secret_file(const char *path, char *why, size_t whylen)
{
	char buf[CFG_MAX_SECRET + 2];
	char *s = NULL;
	FILE *fp;

	if (!(fp = fopen(path, "re"))) {
		snprintf(why, whylen, "%s", strerror(errno));
		return NULL;
	}
	if (cfg_first_line(fp, buf, sizeof buf, false, why, whylen) > 0 &&
	    !(s = strdup(buf)))
		snprintf(why, whylen, "out of memory");
	fclose(fp);
	explicit_bzero(buf, sizeof buf);
	return s;
}

/* AUTH sources. Passwords: username needs exactly one of password,
 * password_file, password_env, password_command, and a source needs a
 * username; the first three are read now, into password (the command is
 * run later, off the loop: secret.h). Tokens (auth = xoauth2 |
 * oauthbearer): username and exactly one of token_command, token_file,
 * and no password source. */
static void
cfg_finish_auth(struct cfg_ctx *c, struct cfg_sect *s, struct cfg_upstream *u)
{
	static const char *const src[] = { "password", "password_file",
	    "password_env", "password_command", "token_command", "token_file" };
	const char *val[] = { u->password, u->password_file, u->password_env,
	    u->password_command, u->token_command, u->token_file };
	bool tok_mech = u->auth == CFG_AUTH_XOAUTH2 ||
	    u->auth == CFG_AUTH_OAUTHBEARER;
	const char *mech = u->auth == CFG_AUTH_XOAUTH2 ? "xoauth2" :
	    "oauthbearer";
	const struct cfg_origin *o;
	int n = 0, first = -1, second = -1, ntok = 0, tok = -1;
	char why[CFG_WHY];
	const char *v;
	char *pw = NULL;

	for (int i = 0; i < 6; i++) {
		if (!val[i])
			continue;
		if (i >= 4) {
			if (ntok++ == 0)
				tok = i;
			continue;
		}
		if (n++ == 0)
			first = i;
		else if (second < 0)
			second = i;
	}
	if (!u->username) {
		if (n || ntok)
			cfg_err(c, cfg_origin(s, src[n ? first : tok]),
			    "%s is set but username is not",
			    src[n ? first : tok]);
		else if (tok_mech)
			cfg_err(c, cfg_origin(s, "auth"), "auth = %s needs "
			    "username (the account the token is for)", mech);
		return;
	}
	if (tok_mech) {
		if (n)
			cfg_err(c, cfg_origin(s, src[first]), "%s is not used "
			    "with auth = %s: remove it (the token comes from "
			    "token_command or token_file)", src[first], mech);
		if (ntok == 0)
			cfg_err(c, cfg_origin(s, "auth"), "auth = %s needs "
			    "token_command or token_file", mech);
		else if (ntok > 1)
			cfg_err(c, cfg_origin(s, "token_file"), "token_command "
			    "and token_file are both set: use exactly one");
		else if (u->token_file && access(u->token_file, R_OK) < 0)
			cfg_err(c, cfg_origin(s, "token_file"), "token_file "
			    "%s: %s", u->token_file, strerror(errno));
		return;
	}
	if (ntok) {
		cfg_err(c, cfg_origin(s, src[tok]), "%s needs auth = xoauth2 "
		    "or auth = oauthbearer", src[tok]);
		return;
	}
	if (n == 0) {
		cfg_err(c, cfg_origin(s, "username"), "username needs one of "
		    "password, password_file, password_env or password_command");
		return;
	}
	if (n > 1) {
		cfg_err(c, cfg_origin(s, src[second]), "%s and %s are both set: "
		    "use exactly one password source", src[first], src[second]);
		return;
	}
	o = cfg_origin(s, src[first]);
	if (first == 0 || first == 3)
		return;
	if (first == 1) {
		if (!(pw = cfg_secret_file(u->password_file, why, sizeof why)))
			cfg_err(c, o, "password_file %s: %s", u->password_file,
			    why);
	} else {
		if (!(v = cfg_getenv(c->envp, u->password_env)) || !*v)
			cfg_err(c, o, "password_env: %s is %s", u->password_env,
			    v ? "empty" : "not set");
		else if (!(pw = strdup(v)))
			cfg_err(c, o, "out of memory");
	}
	u->password = pw;
}

/* ---- validation of the whole ---- */

/* Read auth_users_file now: at start-up and on every reload. Its errors
 * are "users-file:line: message". Group-readable is fine (root:relay25
 * 0640 is how a relay25 that dropped privileges reads it on SIGHUP);
 * readable by others is warned about. */
static void
cfg_load_users(struct cfg_ctx *c)
{
	struct cfg *cfg = c->cfg;
	const struct cfg_origin *o = cfg_origin(&c->server, "auth_users_file");
	const char *path = cfg->auth_users_file;
	struct stat st;
	unsigned n = 0;
	FILE *fp;

	if (!(fp = fopen(path, "re"))) {
		cfg_err(c, o, "auth_users_file %s: %s", path, strerror(errno));
		return;
	}
	if (fstat(fileno(fp), &st) < 0 || S_ISDIR(st.st_mode)) {
		cfg_err(c, o, "auth_users_file %s: %s", path,
		    S_ISDIR(st.st_mode) ? "is a directory" : strerror(errno));
		fclose(fp);
		return;
	}
	if (st.st_mode & S_IROTH)
		cfg_warn(c, "%s (auth_users_file) holds password hashes and is "
		    "readable by others: chmod o-r %s", path, path);
	cfg->auth_users = inbound_users_read(fp, path, c->err, c->warn, &n);
	c->nerr += (int)n;
	fclose(fp);
}

static void
cfg_finish_server(struct cfg_ctx *c)
{
	struct cfg *cfg = c->cfg;
	char h[256];

	cfg->allow_set = cfg_given(&c->server, "allow");
	for (size_t i = 0; i < cfg->nlisten && !cfg->allow_set; i++) {
		if (cfg_loopback_sa(&cfg->listen[i].sa))
			continue;
		cfg_err(c, cfg_origin(&c->server, "listen"), "listen %s is not a "
		    "loopback address: set allow to the client networks to "
		    "serve", cfg->listen[i].text);
		break;
	}
	if (cfg->auth_users_file)
		cfg_load_users(c);
	if (cfg->spool_retry_max < cfg->spool_retry_min)
		cfg_err(c, cfg_origin(&c->server, "spool_retry_max"),
		    "spool_retry_max is shorter than spool_retry_min");
	if (cfg->hostname)
		return;
	if (gethostname(h, sizeof h) < 0) {
		cfg_err(c, NULL, "cannot get the system's host name (%s): set "
		    "hostname", strerror(errno));
		return;
	}
	h[sizeof h - 1] = '\0';
	if (!cfg_valid_host(h))
		cfg_err(c, NULL, "the system's host name is not usable: set "
		    "hostname");
	else if (!(cfg->hostname = strdup(h)))
		cfg_err(c, NULL, "out of memory");
}

static void
cfg_finish_upstream(struct cfg_ctx *c, size_t i)
{
	struct cfg_upstream *u = &c->cfg->upstream[i];
	struct cfg_sect *s = &c->up[i];

	if (!u->host)
		cfg_err(c, &s->where, "[upstream%s%s] has no host",
		    *u->name ? ":" : "", u->name);
	if (!cfg_given(s, "tls"))
		u->tls = u->port == 465 ? CFG_TLS_IMPLICIT : CFG_TLS_STARTTLS;
	if (!cfg_given(s, "port"))
		u->port = u->tls == CFG_TLS_IMPLICIT ? 465 : 587;
	if (u->tls == CFG_TLS_NONE && u->host && !cfg_loopback_host(u->host))
		cfg_err(c, cfg_origin(s, "tls"),
		    "tls = none is for tests on loopback only");
	if (u->ca_file && access(u->ca_file, R_OK) < 0)
		cfg_err(c, cfg_origin(s, "ca_file"), "ca_file %s: %s",
		    u->ca_file, strerror(errno));
	if (u->rewrite_sender != NULL && (strchr(u->rewrite_sender, '@') ==
	    NULL || strpbrk(u->rewrite_sender, " <>\t\"") != NULL))
		cfg_err(c, cfg_origin(s, "rewrite_sender"), "rewrite_sender must "
		    "be a plain address such as noreply@example.com");
	if ((u->rewrite_header_from || u->rewrite_reply_to) &&
	    u->rewrite_sender == NULL)
		cfg_err(c, cfg_origin(s, u->rewrite_header_from ?
		    "rewrite_header_from" : "rewrite_reply_to"),
		    "needs rewrite_sender");
	cfg_finish_auth(c, s, u);
}

static void
cfg_finish(struct cfg_ctx *c)
{
	struct cfg *cfg = c->cfg;

	cfg_finish_server(c);
	if (cfg->nupstream == 0)
		cfg_err(c, NULL, "no upstream configured (%s)", c->file ?
		    "add an [upstream] section" : "set RELAY25_UPSTREAM_HOST");
	for (size_t i = 0; i < cfg->nupstream; i++)
		cfg_finish_upstream(c, i);
	cfg->metrics_set = cfg->metrics_listen.salen != 0;
}

/* ---- public ---- */

struct cfg *
cfg_load(const char *path, char *const *envp, FILE *err, FILE *warn)
{
	static char *const noenv[] = { NULL };
	struct cfg_ctx *c = calloc(1, sizeof *c);
	struct cfg *cfg = calloc(1, sizeof *cfg);
	struct stat st;

	if (!c || !cfg) {
		if (err)
			fputs("relay25: out of memory\n", err);
		free(c);
		free(cfg);
		return NULL;
	}
	c->cfg = cfg;
	c->err = err;
	c->warn = warn;
	c->envp = envp ? envp : noenv;
	c->server = (struct cfg_sect){ .kind = CFG_K_SERVER, .base = cfg };
	c->metrics = (struct cfg_sect){ .kind = CFG_K_METRICS, .base = cfg };
	cfg_defaults(c, &c->server);
	cfg_defaults(c, &c->metrics);

	if (!path) {
		if (stat(CFG_DEFAULT_FILE, &st) == 0) {
			path = CFG_DEFAULT_FILE;
		} else if (errno != ENOENT) {
			c->file = CFG_DEFAULT_FILE;
			cfg_err(c, NULL, "%s", strerror(errno));
		}
	}
	if (path) {
		c->file = path;
		if (!(cfg->path = strdup(path)))
			cfg_err(c, NULL, "out of memory");
		else
			cfg_read_file(c);
	}
	cfg_env(c);
	cfg_finish(c);
	if (c->nerr) {
		cfg_free(cfg);
		cfg = NULL;
	}
	free(c);
	return cfg;
}

void
cfg_free(struct cfg *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < CFG_NKEYS; i++) {
		const struct cfg_key *k = &cfg_keys[i];
		if (!k->type->string)
			continue;
		if (k->kind != CFG_K_UPSTREAM) {
			cfg_str_free(*(char **)cfg_field(k, cfg), k->secret);
			continue;
		}
		for (size_t j = 0; j < cfg->nupstream; j++)
			cfg_str_free(*(char **)cfg_field(k, &cfg->upstream[j]),
			    k->secret);
	}
	for (size_t j = 0; j < cfg->nupstream; j++)
		free(cfg->upstream[j].name);
	inbound_users_free(cfg->auth_users);
	free(cfg->path);
	free(cfg);
}

static void
cfg_print_sect(enum cfg_kind kind, const void *base, FILE *out)
{
	for (size_t i = 0; i < CFG_NKEYS; i++) {
		const struct cfg_key *k = &cfg_keys[i];
		struct cfg_buf b = { .len = 0 };
		if (k->kind != kind)
			continue;
		b.s[0] = '\0';
		k->type->print(k, base, &b);
		if (b.len)
			fprintf(out, "%s = %s\n", k->key, b.s);
		else
			fprintf(out, "%s =\n", k->key);
	}
}

void
cfg_print(const struct cfg *cfg, FILE *out)
{
	fprintf(out, "; relay25 effective configuration%s%s\n",
	    cfg->path ? " from " : " (environment only)",
	    cfg->path ? cfg->path : "");
	fputs("[server]\n", out);
	cfg_print_sect(CFG_K_SERVER, cfg, out);
	for (size_t i = 0; i < cfg->nupstream; i++) {
		const struct cfg_upstream *u = &cfg->upstream[i];
		fprintf(out, "\n[upstream%s%s]\n", *u->name ? ":" : "", u->name);
		cfg_print_sect(CFG_K_UPSTREAM, u, out);
	}
	fputs("\n[metrics]\n", out);
	cfg_print_sect(CFG_K_METRICS, cfg, out);
}
