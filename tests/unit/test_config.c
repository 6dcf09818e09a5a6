/*
 * test_config.c - configuration loading: value parsers, file syntax and
 * its errors (file:line: message), environment overrides, password
 * sources, validation, redaction and CIDR matching.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "relay25/config.h"

static char tmpdir[64];
static int nfiles;

static void
setup(void)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/relay25-cfg-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
}

static void
teardown(void)
{
	DIR *d = opendir(tmpdir);
	struct dirent *e;
	char p[512];

	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
		unlink(p);
	}
	if (d)
		closedir(d);
	rmdir(tmpdir);
}

TestSuite(config, .init = setup, .fini = teardown);

/* Write text to a new file in tmpdir; the path lives until the test ends. */
static const char *
write_file(const char *text, mode_t mode)
{
	static char paths[32][256];
	char *p = paths[nfiles % 32];
	FILE *fp;

	snprintf(p, 256, "%s/f%d.ini", tmpdir, nfiles++);
	fp = fopen(p, "w");
	cr_assert_not_null(fp);
	fwrite(text, 1, strlen(text), fp);
	fclose(fp);
	cr_assert_eq(chmod(p, mode), 0);
	return p;
}

struct run {
	struct cfg *cfg;
	char *err, *warn;
	size_t errlen, warnlen;
	const char *path;
};

static struct run
load_path(const char *path, char *const *envp)
{
	struct run r = { .path = path };
	FILE *e = open_memstream(&r.err, &r.errlen);
	FILE *w = open_memstream(&r.warn, &r.warnlen);

	cr_assert(e && w);
	r.cfg = cfg_load(path, envp, e, w);
	fclose(e);
	fclose(w);
	return r;
}

static struct run
load(const char *text, char *const *envp)
{
	return load_path(write_file(text, 0600), envp);
}

static void
done(struct run *r)
{
	cfg_free(r->cfg);
	free(r->err);
	free(r->warn);
}

/* The load failed, and one error line starts with "path:line: " and
 * contains msg. */
static void
expect_error(const char *text, int line, const char *msg)
{
	struct run r = load(text, NULL);
	char want[512];
	const char *p;
	bool found = false;

	snprintf(want, sizeof want, "%s:%d: ", r.path, line);
	cr_assert_null(r.cfg, "loaded although bad:\n%s", text);
	for (p = r.err; p && *p && !found; p = strchr(p, '\n'), p = p ? p + 1 : p) {
		size_t n = strcspn(p, "\n");
		char *l = strndup(p, n);
		found = strncmp(l, want, strlen(want)) == 0 && strstr(l, msg);
		free(l);
	}
	cr_assert(found, "want \"%s...%s\" in:\n%s", want, msg, r.err);
	done(&r);
}

static void
expect_env_error(const char *text, char *const *envp, const char *msg)
{
	struct run r = text ? load(text, envp) : load_path(NULL, envp);

	cr_assert_null(r.cfg);
	cr_assert_not_null(strstr(r.err, msg), "want \"%s\" in:\n%s", msg,
	    r.err);
	done(&r);
}

#define UP "[upstream]\nhost = smtp.example.net\n"

/* ---- pure value parsers ---- */

Test(config, parse_size)
{
	static const struct { const char *s; uint64_t v; } good[] = {
		{ "0", 0 }, { "1024", 1024 }, { "512K", 512 * 1024 },
		{ "25M", 25ull << 20 }, { "2G", 2ull << 30 }, { "3k", 3072 },
		{ "18446744073709551615", UINT64_MAX },
		{ "17179869183G", 17179869183ull << 30 },
	};
	static const char *const bad[] = {
		"", "M", "25Mx", "25 M", " 25", "-1", "+1", "1.5M", "25MB", "1T",
		"0x10", "18446744073709551616", "17179869184G",
		"18014398509481984K", "99999999999999999999999",
	};
	uint64_t v;

	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		cr_assert_eq(cfg_parse_size(good[i].s, &v), 0, "%s", good[i].s);
		cr_assert_eq(v, good[i].v, "%s", good[i].s);
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		v = 42;
		cr_assert_eq(cfg_parse_size(bad[i], &v), -1, "%s", bad[i]);
		cr_assert_eq(v, 42, "output touched for %s", bad[i]);
	}
}

Test(config, parse_duration)
{
	static const struct { const char *s; double v; } good[] = {
		{ "10", 10 }, { "30s", 30 }, { "5m", 300 }, { "1h", 3600 },
		{ "1.5s", 1.5 }, { "0.25m", 15 }, { "0", 0 }, { "2.5", 2.5 },
		{ "5d", 432000 }, { "1.5d", 129600 }, { "0d", 0 },
	};
	static const char *const bad[] = {
		"", "s", "1.", ".5", "5x", "5 m", " 5", "-1", "1e3", "5M", "5ms",
		"5sec", "inf", "nan", "0x10", "99999999999999999999",
		"1000000000h", "5D", "5dd", "d", "5d5h", "20000d",
	};
	double v;

	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		cr_assert_eq(cfg_parse_duration(good[i].s, &v), 0, "%s",
		    good[i].s);
		cr_assert_float_eq(v, good[i].v, 1e-9, "%s", good[i].s);
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		v = 42;
		cr_assert_eq(cfg_parse_duration(bad[i], &v), -1, "%s", bad[i]);
		cr_assert_float_eq(v, 42, 0, "output touched for %s", bad[i]);
	}
}

Test(config, parse_bool)
{
	static const char *const yes[] = { "yes", "true", "on", "1", "YES", "On" };
	static const char *const no[] = { "no", "false", "off", "0", "No" };
	static const char *const bad[] = { "", "y", "n", "2", "yess", " yes" };
	bool b;

	for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
		b = false;
		cr_assert_eq(cfg_parse_bool(yes[i], &b), 0);
		cr_assert(b, "%s", yes[i]);
	}
	for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
		b = true;
		cr_assert_eq(cfg_parse_bool(no[i], &b), 0);
		cr_assert(!b, "%s", no[i]);
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		cr_assert_eq(cfg_parse_bool(bad[i], &b), -1, "%s", bad[i]);
}

static void
check_addr(const char *s, int family, const char *addr, unsigned port,
    const char *text)
{
	struct cfg_addr a;
	char t[INET6_ADDRSTRLEN];

	cr_assert_eq(cfg_parse_addr(s, &a, 25), 0, "%s", s);
	cr_assert_eq(a.sa.ss_family, family, "%s", s);
	if (family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&a.sa;
		cr_assert_eq(a.salen, sizeof *in);
		inet_ntop(AF_INET, &in->sin_addr, t, sizeof t);
		cr_assert_eq(ntohs(in->sin_port), port, "%s", s);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a.sa;
		cr_assert_eq(a.salen, sizeof *in6);
		inet_ntop(AF_INET6, &in6->sin6_addr, t, sizeof t);
		cr_assert_eq(ntohs(in6->sin6_port), port, "%s", s);
	}
	cr_assert_str_eq(t, addr, "%s", s);
	cr_assert_str_eq(a.text, text);
}

Test(config, parse_addr)
{
	static const char *const bad[] = {
		"", "example.com:25", "127.0.0.1:65536", "127.0.0.1:", ":25",
		"[::1]x", "[::1", "[::1]:", "1.2.3.4:25x", "256.1.1.1:25",
		"127.0.0.1:-1", "[127.0.0.1]:25", "127.0.0.1:+25", "::1:25:x",
		"127.0.0.1 :25", "[fe80::1%eth0]:25", "*:99999",
	};
	struct cfg_addr a;

	check_addr("127.0.0.1:25", AF_INET, "127.0.0.1", 25, "127.0.0.1:25");
	check_addr("[::1]:2525", AF_INET6, "::1", 2525, "[::1]:2525");
	check_addr("*:587", AF_INET, "0.0.0.0", 587, "*:587");
	check_addr("localhost:25", AF_INET, "127.0.0.1", 25, "localhost:25");
	check_addr("0.0.0.0:0", AF_INET, "0.0.0.0", 0, "0.0.0.0:0");
	check_addr("[::]:65535", AF_INET6, "::", 65535, "[::]:65535");
	check_addr("10.1.2.3", AF_INET, "10.1.2.3", 25, "10.1.2.3:25");
	check_addr("::1", AF_INET6, "::1", 25, "[::1]:25");
	check_addr("[::1]", AF_INET6, "::1", 25, "[::1]:25");
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		a.salen = 99;
		cr_assert_eq(cfg_parse_addr(bad[i], &a, 25), -1, "%s", bad[i]);
		cr_assert_eq(a.salen, 99, "output touched for %s", bad[i]);
	}
}

Test(config, parse_cidr)
{
	static const char *const bad[] = {
		"", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/ 8", "/8",
		"example.com/8", "10.0.0.0/-1", "10.0.0.0/8x", "10.0.0/8",
		"10.0.0.0/8/8", "10.0.0.0/0008", "*",
	};
	struct cfg_cidr c;
	char t[INET6_ADDRSTRLEN];

	cr_assert_eq(cfg_parse_cidr("10.1.2.3/8", &c), 0);
	cr_assert_eq(c.family, AF_INET);
	cr_assert_eq(c.prefix, 8);
	cr_assert_str_eq(inet_ntop(AF_INET, c.addr, t, sizeof t), "10.0.0.0");
	cr_assert_eq(cfg_parse_cidr("192.168.1.77/26", &c), 0);
	cr_assert_str_eq(inet_ntop(AF_INET, c.addr, t, sizeof t),
	    "192.168.1.64");
	cr_assert_eq(cfg_parse_cidr("192.168.1.1", &c), 0);
	cr_assert_eq(c.prefix, 32);
	cr_assert_eq(cfg_parse_cidr("::1", &c), 0);
	cr_assert_eq(c.family, AF_INET6);
	cr_assert_eq(c.prefix, 128);
	cr_assert_eq(cfg_parse_cidr("fe80::1234/10", &c), 0);
	cr_assert_str_eq(inet_ntop(AF_INET6, c.addr, t, sizeof t), "fe80::");
	cr_assert_eq(cfg_parse_cidr("0.0.0.0/0", &c), 0);
	cr_assert_eq(c.prefix, 0);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		c.prefix = 99;
		cr_assert_eq(cfg_parse_cidr(bad[i], &c), -1, "%s", bad[i]);
		cr_assert_eq(c.prefix, 99, "output touched for %s", bad[i]);
	}
}

/* ---- CIDR matching ---- */

static struct sockaddr_storage
sa_of(const char *addr)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof ss);
	if (strchr(addr, ':')) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		in6->sin6_family = AF_INET6;
		cr_assert_eq(inet_pton(AF_INET6, addr, &in6->sin6_addr), 1);
	} else {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		in->sin_family = AF_INET;
		cr_assert_eq(inet_pton(AF_INET, addr, &in->sin_addr), 1);
	}
	return ss;
}

static bool
match(const char *cidr, const char *addr)
{
	struct cfg_cidr c;
	struct sockaddr_storage ss = sa_of(addr);

	cr_assert_eq(cfg_parse_cidr(cidr, &c), 0, "%s", cidr);
	return cfg_cidr_match(&c, (struct sockaddr *)&ss);
}

Test(config, cidr_match)
{
	cr_assert(match("127.0.0.0/8", "127.1.2.3"));
	cr_assert(!match("127.0.0.0/8", "128.0.0.1"));
	cr_assert(match("10.16.0.0/12", "10.31.255.255"));
	cr_assert(!match("10.16.0.0/12", "10.32.0.0"));
	cr_assert(!match("10.16.0.0/12", "10.15.255.255"));
	cr_assert(match("192.168.1.1", "192.168.1.1"));
	cr_assert(!match("192.168.1.1", "192.168.1.2"));
	cr_assert(match("0.0.0.0/0", "203.0.113.9"));
	cr_assert(match("::1", "::1"));
	cr_assert(!match("::1", "::2"));
	cr_assert(match("2001:db8::/32", "2001:db8:ffff::1"));
	cr_assert(!match("2001:db8::/33", "2001:db8:8000::1"));
	/* IPv4-mapped IPv6 clients match IPv4 networks ... */
	cr_assert(match("127.0.0.0/8", "::ffff:127.0.0.1"));
	cr_assert(match("10.0.0.0/8", "::ffff:10.9.8.7"));
	cr_assert(!match("10.0.0.0/8", "::ffff:11.0.0.1"));
	/* ... and an IPv4 client is the same client as its mapped form. */
	cr_assert(match("::ffff:10.0.0.0/104", "10.1.1.1"));
	/* but a v4 network never matches a plain v6 address. */
	cr_assert(!match("0.0.0.0/0", "::1"));
	cr_assert(!match("::1", "127.0.0.1"));
}

Test(config, allowed_default_is_loopback)
{
	struct run r = load(UP, NULL);
	struct sockaddr_storage ss;

	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert(!r.cfg->allow_set);
	ss = sa_of("127.0.0.1");
	cr_assert(cfg_allowed(r.cfg, (struct sockaddr *)&ss));
	ss = sa_of("::1");
	cr_assert(cfg_allowed(r.cfg, (struct sockaddr *)&ss));
	ss = sa_of("::ffff:127.0.0.2");
	cr_assert(cfg_allowed(r.cfg, (struct sockaddr *)&ss));
	ss = sa_of("10.0.0.1");
	cr_assert(!cfg_allowed(r.cfg, (struct sockaddr *)&ss));
	ss = sa_of("::ffff:10.0.0.1");
	cr_assert(!cfg_allowed(r.cfg, (struct sockaddr *)&ss));
	done(&r);
}

/* ---- defaults and typed keys ---- */

Test(config, defaults)
{
	struct run r = load(UP, NULL);
	const struct cfg *c = r.cfg;
	const struct cfg_upstream *u;

	cr_assert_not_null(c, "%s", r.err);
	cr_assert_str_eq(r.err, "");
	cr_assert_str_eq(c->path, r.path);
	cr_assert_eq(c->nlisten, 2);
	cr_assert_str_eq(c->listen[0].text, "127.0.0.1:25");
	cr_assert_str_eq(c->listen[1].text, "[::1]:25");
	cr_assert_not_null(c->hostname);
	cr_assert_eq(c->nallow, 2);
	cr_assert_eq(c->max_clients, 1024);
	cr_assert_eq(c->max_clients_per_ip, 64);
	cr_assert_eq(c->max_message_size, 25u << 20);
	cr_assert_eq(c->max_recipients, 100);
	cr_assert_float_eq(c->command_timeout, 300, 0);
	cr_assert_float_eq(c->data_timeout, 600, 0);
	cr_assert_float_eq(c->shutdown_timeout, 30, 0);
	cr_assert_eq(c->bare_lf, CFG_BARE_LF_NORMALIZE);
	cr_assert_null(c->user);
	cr_assert_eq(c->log_level, CFG_LOG_INFO);
	cr_assert_eq(c->log_format, CFG_LOG_TEXT);
	cr_assert_eq(c->log_target, CFG_LOG_STDERR);
	cr_assert(!c->metrics_set);
	cr_assert_eq(c->nupstream, 1);
	u = &c->upstream[0];
	cr_assert_str_eq(u->name, "");
	cr_assert_str_eq(u->host, "smtp.example.net");
	cr_assert_eq(u->port, 587);
	cr_assert_eq(u->tls, CFG_TLS_STARTTLS);
	cr_assert(u->tls_verify);
	cr_assert_null(u->ca_file);
	cr_assert_null(u->server_name);
	cr_assert_eq(u->tls_min_version, 12);
	cr_assert(!u->has_fingerprint);
	cr_assert_null(u->username);
	cr_assert_null(u->password);
	cr_assert_eq(u->auth, CFG_AUTH_AUTO);
	cr_assert_null(u->helo_name);
	cr_assert_float_eq(u->connect_timeout, 30, 0);
	cr_assert_eq(u->pool_size, 0);
	done(&r);
}

Test(config, typed_keys)
{
	struct run r = load(
	    "[server]\n"
	    "listen = 127.0.0.1:2525 [::1]:0\n"
	    "hostname = mx.example.org\n"
	    "max_clients = 5\n"
	    "max_message_size = 512K\n"
	    "command_timeout = 1.5s\n"
	    "data_timeout = 2m\n"
	    "shutdown_timeout = 0\n"
	    "bare_lf = reject\n"
	    "user = relay25\n"
	    "log_level = debug\n"
	    "log_format = JSON\n"
	    "log_target = syslog\n"
	    "[upstream]\n"
	    "host = smtp.example.net\n"
	    "tls = implicit\n"
	    "tls_verify = off\n"
	    "tls_min_version = 1.3\n"
	    "fingerprint = sha256:AB:cd:EF:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:"
	    "ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89\n"
	    "auth = login\n"
	    "helo_name = [192.0.2.1]\n"
	    "server_name = mail.example.net\n"
	    "pool_size = 4\n"
	    "connect_timeout = 1h\n"
	    "[metrics]\n"
	    "listen = 127.0.0.1:9325\n", NULL);
	const struct cfg *c = r.cfg;
	const struct cfg_upstream *u;

	cr_assert_not_null(c, "%s", r.err);
	cr_assert_eq(c->nlisten, 2);
	cr_assert_str_eq(c->hostname, "mx.example.org");
	cr_assert_eq(c->max_clients, 5);
	cr_assert_eq(c->max_message_size, 512 * 1024);
	cr_assert_float_eq(c->command_timeout, 1.5, 1e-9);
	cr_assert_float_eq(c->data_timeout, 120, 0);
	cr_assert_float_eq(c->shutdown_timeout, 0, 0);
	cr_assert_eq(c->bare_lf, CFG_BARE_LF_REJECT);
	cr_assert_str_eq(c->user, "relay25");
	cr_assert_eq(c->log_level, CFG_LOG_DEBUG);
	cr_assert_eq(c->log_format, CFG_LOG_JSON);
	cr_assert_eq(c->log_target, CFG_LOG_SYSLOG);
	u = &c->upstream[0];
	cr_assert_eq(u->tls, CFG_TLS_IMPLICIT);
	cr_assert_eq(u->port, 465);
	cr_assert(!u->tls_verify);
	cr_assert_eq(u->tls_min_version, 13);
	cr_assert(u->has_fingerprint);
	cr_assert_eq(u->fingerprint[0], 0xab);
	cr_assert_eq(u->fingerprint[1], 0xcd);
	cr_assert_eq(u->fingerprint[31], 0x89);
	cr_assert_eq(u->auth, CFG_AUTH_LOGIN);
	cr_assert_str_eq(u->helo_name, "[192.0.2.1]");
	cr_assert_str_eq(u->server_name, "mail.example.net");
	cr_assert_eq(u->pool_size, 4);
	cr_assert_float_eq(u->connect_timeout, 3600, 0);
	cr_assert(c->metrics_set);
	cr_assert_str_eq(c->metrics_listen.text, "127.0.0.1:9325");
	done(&r);
}

Test(config, port_and_tls_defaults)
{
	struct run r = load(
	    "[upstream:a]\nhost = a.example\nport = 465\n"
	    "[upstream:b]\nhost = b.example\ntls = implicit\n"
	    "[upstream:c]\nhost = c.example\nport = 2525\n"
	    "[upstream:d]\nhost = d.example\nport = 465\ntls = starttls\n"
	    "[upstream:e]\nhost = 127.0.0.1\ntls = none\n", NULL);

	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert_eq(r.cfg->nupstream, 5);
	cr_assert_str_eq(r.cfg->upstream[0].name, "a");
	cr_assert_eq(r.cfg->upstream[0].tls, CFG_TLS_IMPLICIT);
	cr_assert_eq(r.cfg->upstream[1].port, 465);
	cr_assert_eq(r.cfg->upstream[2].tls, CFG_TLS_STARTTLS);
	cr_assert_eq(r.cfg->upstream[2].port, 2525);
	cr_assert_eq(r.cfg->upstream[3].tls, CFG_TLS_STARTTLS);
	cr_assert_eq(r.cfg->upstream[3].port, 465);
	cr_assert_eq(r.cfg->upstream[4].tls, CFG_TLS_NONE);
	cr_assert_eq(r.cfg->upstream[4].port, 587);
	done(&r);
}

Test(config, empty_value_means_default)
{
	struct run r = load("[server]\nhostname =\nmax_clients = ; default\n"
	    UP "ca_file =\n", NULL);

	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert_not_null(r.cfg->hostname);
	cr_assert_eq(r.cfg->max_clients, 1024);
	cr_assert_null(r.cfg->upstream[0].ca_file);
	done(&r);
}

Test(config, bad_values)
{
	static const struct { const char *line, *msg; } cases[] = {
		{ "max_clients = 0", "bad value '0' for max_clients: must be between 1" },
		{ "max_clients = 12x", "bad value '12x' for max_clients: not a whole number" },
		{ "max_clients = -1", "for max_clients" },
		{ "max_clients = 99999999999999999999999", "for max_clients" },
		{ "max_message_size = 25Mx", "bad value '25Mx' for max_message_size" },
		{ "max_message_size = 0", "for max_message_size: must be between 1" },
		{ "max_message_size = 17179869184G", "for max_message_size" },
		{ "command_timeout = 0", "bad value '0' for command_timeout: must be more than 0" },
		{ "data_timeout = 5 m", "for data_timeout: not a duration" },
		{ "bare_lf = strip", "bad value 'strip' for bare_lf: expected normalize | reject" },
		{ "log_level = verbose", "expected error | warn | info | debug" },
		{ "log_format = xml", "for log_format" },
		{ "log_target = file", "for log_target" },
		{ "listen = example.com:25", "for listen: 'example.com:25' is not host:port" },
		{ "listen = 127.0.0.1:25 127.0.0.1:25", "is listed twice" },
		{ "allow = 10.0.0.0/33", "for allow: '10.0.0.0/33' is not an address or CIDR" },
		{ "hostname = bad host", "for hostname: not a host name" },
	};
	char text[256];

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		snprintf(text, sizeof text, "[server]\n%s\n" UP, cases[i].line);
		expect_error(text, 2, cases[i].msg);
	}
}

Test(config, bad_upstream_values)
{
	static const struct { const char *line, *msg; } cases[] = {
		{ "port = 0", "bad value '0' for port: must be a port number between 1 and 65535" },
		{ "port = 65536", "for port" },
		{ "port = 25x", "for port" },
		{ "tls = ssl", "expected starttls | implicit | none" },
		{ "auth = ntlm", "expected auto | plain | login | cram-md5 | xoauth2" },
		{ "tls_verify = maybe", "for tls_verify: expected yes/no" },
		{ "tls_min_version = 1.1", "for tls_min_version: expected 1.2 or 1.3" },
		{ "fingerprint = abcd", "for fingerprint: expected 64 hex digits" },
		{ "fingerprint = sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg", "for fingerprint" },
		{ "fingerprint = 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef00", "for fingerprint" },
		{ "pool_size = 1001", "for pool_size: must be between 0 and 1000" },
		{ "connect_timeout = 30x", "for connect_timeout" },
		{ "password_env = 1BAD", "for password_env: not an environment variable name" },
		{ "helo_name = [999.1.1.1]", "for helo_name" },
		{ "server_name = mail.example.net:587", "for server_name: a host name, without port" },
	};
	char text[512];

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		snprintf(text, sizeof text, UP "%s\n", cases[i].line);
		expect_error(text, 3, cases[i].msg);
	}
	expect_error("[upstream]\nhost = smtp.example.net:587\n", 2,
	    "for host: a host name, without port (use the port key)");
	expect_error("[upstream]\nhost = smtp example\n", 2,
	    "for host: not a host name or IP address");
}

/* ---- file syntax ---- */

Test(config, quotes_and_comments)
{
	struct run r = load(
	    "; a comment\n"
	    "# another\n"
	    "[server] ; trailing comment\n"
	    "hostname = mx.example.org ; the name\n"
	    "user = relay25# not a comment\n"
	    "[upstream] # comment\n"
	    "host = smtp.example.net   # comment\n"
	    "username = a;b\n"
	    "password_command = \"printf 'x;y #z\\\\n' ; : \\\"q\\\"\" ; comment\n"
	    "password_file =\n"
	    "ca_file = \"\"\n", NULL);
	const struct cfg_upstream *u;

	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert_str_eq(r.cfg->hostname, "mx.example.org");
	cr_assert_str_eq(r.cfg->user, "relay25# not a comment");
	u = &r.cfg->upstream[0];
	cr_assert_str_eq(u->host, "smtp.example.net");
	cr_assert_str_eq(u->username, "a;b");
	cr_assert_str_eq(u->password_command, "printf 'x;y #z\\n' ; : \"q\"");
	cr_assert_null(u->password);    /* the command runs later */
	cr_assert_null(u->ca_file);
	done(&r);
}

Test(config, quote_errors)
{
	expect_error(UP "username = \"abc\n", 3, "username: missing closing quote");
	expect_error(UP "username = \"abc\" def\n", 3,
	    "username: unexpected text after the closing quote");
	expect_error(UP "username = \"a\\nb\"\n", 3,
	    "username: only \\\" and \\\\ are escapes inside quotes");
}

Test(config, indented_line_is_not_a_continuation)
{
	struct run r;

	expect_error("[server]\nlisten = 127.0.0.1:25\n   [::1]:25\n" UP, 3,
	    "indented line without '='");
	expect_error(UP "username = joe\n\tpassword = x\n  more\n", 5,
	    "indented line without '='");
	/* An indented key = value line is a key of its own, not a
	 * continuation of the key above it. */
	r = load("[server]\nhostname = a.example\n  max_clients = 7\n" UP, NULL);
	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert_str_eq(r.cfg->hostname, "a.example");
	cr_assert_eq(r.cfg->max_clients, 7);
	done(&r);
}

Test(config, long_lines)
{
	char *text = malloc(12000), *p;
	struct run r;

	cr_assert_not_null(text);
	/* 300 bytes: more than inih's default 200, fine for us. */
	p = text + snprintf(text, 12000, UP "password_command = echo ");
	memset(p, 'x', 300);
	p += 300;
	p += snprintf(p, 64, "\nusername = u\n");
	r = load(text, NULL);
	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert_eq(strlen(r.cfg->upstream[0].password_command), 305);
	done(&r);

	/* 5000 bytes: an error on its own line, later lines still counted. */
	p = text + snprintf(text, 12000, "[server]\nhostname = a");
	memset(p, 'a', 5000);
	p += 5000;
	snprintf(p, 200, "\nmax_clients = 0\n" UP);
	expect_error(text, 2, "line too long (more than 4096 bytes)");
	expect_error(text, 3, "bad value '0' for max_clients");
	free(text);
}

Test(config, nul_byte)
{
	const char text[] = "[server]\nhostname = a\0b\n" UP;
	FILE *fp;
	char path[256];
	struct run r;

	snprintf(path, sizeof path, "%s/nul.ini", tmpdir);
	fp = fopen(path, "w");
	fwrite(text, 1, sizeof text - 1, fp);
	fclose(fp);
	r = load_path(path, NULL);
	cr_assert_null(r.cfg);
	cr_assert_not_null(strstr(r.err, ":2: line contains a NUL byte"), "%s",
	    r.err);
	done(&r);
}

Test(config, syntax_errors)
{
	expect_error("[server]\nmax_clients = 1\nmax_clients = 2\n" UP, 3,
	    "repeated key 'max_clients' (first on line 2)");
	expect_error("[server]\nmax_clients = 1\n" UP "[server]\n", 5,
	    "repeated section [server] (first on line 1)");
	expect_error("[metrics]\n[metrics]\n" UP, 2,
	    "repeated section [metrics] (first on line 1)");
	expect_error(UP "[upstream]\nhost = b\n", 3,
	    "repeated section [upstream] (first on line 1)");
	expect_error("[upstream:Main]\nhost = a\n[upstream:main]\nhost = b\n", 3,
	    "repeated section [upstream:main] (first on line 1)");
	expect_error("[server]\nmax_client = 1\n" UP, 2,
	    "unknown key 'max_client' in [server]");
	expect_error(UP "listen = 127.0.0.1:25\n", 3,
	    "unknown key 'listen' in [upstream]");
	expect_error("[sever]\nmax_clients = 1\n" UP, 1,
	    "unknown section [sever]");
	expect_error("[upstream:my_esp]\nhost = a\n" UP, 1,
	    "bad upstream name 'my_esp'");
	expect_error("[upstream:]\nhost = a\n" UP, 1, "bad upstream name ''");
	expect_error("max_clients = 1\n" UP, 1,
	    "key 'max_clients' outside of any section");
	expect_error("[server\n" UP, 1, "missing ']' in section header");
	expect_error("[server] x\n" UP, 1, "unexpected text after section header");
	expect_error(UP "tls_verify\n", 3, "expected 'key = value'");
	expect_error(UP "username: joe\n", 3, "expected 'key = value'");
	expect_error(UP "= joe\n", 3, "missing key name before '='");
}

Test(config, errors_are_all_reported)
{
	struct run r = load("[server]\nmax_clients = x\nbare_lf = y\n"
	    "[nope]\n" UP "port = 0\n", NULL);

	cr_assert_null(r.cfg);
	cr_assert_not_null(strstr(r.err, ":2: "));
	cr_assert_not_null(strstr(r.err, ":3: "));
	cr_assert_not_null(strstr(r.err, ":4: "));
	cr_assert_not_null(strstr(r.err, ":7: "));
	done(&r);
}

Test(config, bom_and_crlf)
{
	struct run r = load("\xEF\xBB\xBF[server]\r\nmax_clients = 3\r\n"
	    "[upstream]\r\nhost = smtp.example.net\r\n", NULL);

	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert_eq(r.cfg->max_clients, 3);
	cr_assert_str_eq(r.cfg->upstream[0].host, "smtp.example.net");
	done(&r);
}

Test(config, section_name_longer_than_inih_buffer)
{
	char text[256];

	snprintf(text, sizeof text, "[upstream:%s]\nhost = a\n",
	    "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz");
	expect_error(text, 1, "bad upstream name");
}

Test(config, limits)
{
	char text[4096];
	size_t n = 0;

	for (int i = 0; i <= CFG_MAX_UPSTREAMS; i++)
		n += (size_t)snprintf(text + n, sizeof text - n,
		    "[upstream:u%d]\nhost = h%d.example\n", i, i);
	expect_error(text, 2 * CFG_MAX_UPSTREAMS + 1,
	    "too many upstreams (at most 16)");

	n = (size_t)snprintf(text, sizeof text, "[server]\nlisten =");
	for (int i = 0; i <= CFG_MAX_LISTEN; i++)
		n += (size_t)snprintf(text + n, sizeof text - n, " 127.0.0.1:%d",
		    1000 + i);
	snprintf(text + n, sizeof text - n, "\n" UP);
	expect_error(text, 2, "more than 16 addresses");
}

Test(config, missing_file)
{
	char path[256];
	struct run r;

	snprintf(path, sizeof path, "%s/nonexistent.ini", tmpdir);
	r = load_path(path, NULL);
	cr_assert_null(r.cfg);
	cr_assert_not_null(strstr(r.err, "nonexistent.ini: cannot open: No such file"),
	    "%s", r.err);
	done(&r);
	r = load_path(tmpdir, NULL);
	cr_assert_null(r.cfg);
	cr_assert_not_null(strstr(r.err, "is a directory"), "%s", r.err);
	done(&r);
}

Test(config, no_upstream)
{
	struct run r = load("[server]\n", NULL);

	cr_assert_null(r.cfg);
	cr_assert_not_null(strstr(r.err, "no upstream configured"), "%s", r.err);
	done(&r);
	expect_error("[upstream:b]\nport = 2525\n", 1, "[upstream:b] has no host");
}

/* ---- validation ---- */

Test(config, tls_none_only_on_loopback)
{
	struct run r;

	expect_error("[upstream]\nhost = smtp.example.net\ntls = none\n", 3,
	    "tls = none is for tests on loopback only");
	expect_error("[upstream]\nhost = 10.0.0.1\ntls = none\n", 3,
	    "tls = none is for tests on loopback only");
	r = load("[upstream:a]\nhost = 127.0.0.1\ntls = none\n"
	    "[upstream:b]\nhost = ::1\ntls = none\n"
	    "[upstream:c]\nhost = localhost\ntls = none\n", NULL);
	cr_assert_not_null(r.cfg, "%s", r.err);
	done(&r);
}

Test(config, non_loopback_listen_needs_allow)
{
	struct run r;

	expect_error("[server]\nlisten = 0.0.0.0:25\n" UP, 2,
	    "listen 0.0.0.0:25 is not a loopback address: set allow");
	expect_error("[server]\nlisten = 127.0.0.1:25 *:2525\n" UP, 2,
	    "listen *:2525 is not a loopback address");
	r = load("[server]\nlisten = *:25 [::]:25\nallow = 10.0.0.0/8 fd00::/8\n"
	    UP, NULL);
	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert(r.cfg->allow_set);
	cr_assert_eq(r.cfg->nallow, 2);
	done(&r);
	r = load("[server]\nlisten = 127.0.0.2:25 [::1]:0 localhost:2525\n" UP,
	    NULL);
	cr_assert_not_null(r.cfg, "%s", r.err);
	done(&r);
}

Test(config, ca_file_must_be_readable)
{
	expect_error(UP "ca_file = /nonexistent/ca.pem\n", 3,
	    "ca_file /nonexistent/ca.pem: No such file");
}

/* ---- password sources ---- */

Test(config, password_source_rules)
{
	expect_error(UP "username = joe\n", 3,
	    "username needs one of password, password_file, password_env or "
	    "password_command");
	expect_error(UP "password = pw\n", 3, "password is set but username is not");
	expect_error(UP "password_env = X\n", 3,
	    "password_env is set but username is not");
	expect_error(UP "username = joe\npassword = pw\npassword_env = X\n", 5,
	    "password and password_env are both set: use exactly one");
	expect_error(UP "username = joe\npassword_command = echo a\n"
	    "password_file = /x\n", 4,
	    "password_file and password_command are both set");
}

Test(config, password_inline)
{
	struct run r = load(UP "username = joe\npassword = \"p w;#\"\n", NULL);

	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert_str_eq(r.cfg->upstream[0].username, "joe");
	cr_assert_str_eq(r.cfg->upstream[0].password, "p w;#");
	done(&r);
}

Test(config, password_file)
{
	const char *pf = write_file("s3cret-Pw\r\nsecond line\n", 0600);
	char text[512];
	struct run r;

	snprintf(text, sizeof text, UP "username = joe\npassword_file = %s\n", pf);
	r = load(text, NULL);
	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert_str_eq(r.cfg->upstream[0].password, "s3cret-Pw");
	cr_assert_str_eq(r.cfg->upstream[0].password_file, pf);
	done(&r);

	pf = write_file("", 0600);
	snprintf(text, sizeof text, UP "username = joe\npassword_file = %s\n", pf);
	expect_error(text, 4, "the first line is empty");

	expect_error(UP "username = joe\npassword_file = /nonexistent/pw\n", 4,
	    "password_file /nonexistent/pw: No such file or directory");
}

Test(config, password_file_content_never_shown)
{
	char big[5000], text[512];
	const char *pf;
	struct run r;

	memset(big, 'Q', sizeof big - 2);
	big[sizeof big - 2] = '\n';
	big[sizeof big - 1] = '\0';
	pf = write_file(big, 0600);
	snprintf(text, sizeof text, UP "username = joe\npassword_file = %s\n", pf);
	r = load(text, NULL);
	cr_assert_null(r.cfg);
	cr_assert_not_null(strstr(r.err, "longer than 4096 bytes"), "%s", r.err);
	cr_assert_null(strstr(r.err, "QQQQ"));
	done(&r);
}

Test(config, password_env)
{
	char *env[] = { "SMTP_PW=from-env", "EMPTY=", NULL };
	char *env2[] = { "RELAY25_PW=also", NULL };
	struct run r = load(UP "username = joe\npassword_env = SMTP_PW\n", env);

	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert_str_eq(r.cfg->upstream[0].password, "from-env");
	done(&r);
	/* A RELAY25_ variable named by password_env is not "unknown". */
	r = load(UP "username = joe\npassword_env = RELAY25_PW\n", env2);
	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert_str_eq(r.cfg->upstream[0].password, "also");
	done(&r);
	r = load(UP "username = joe\npassword_env = MISSING\n", env);
	cr_assert_null(r.cfg);
	cr_assert_not_null(strstr(r.err, ":4: password_env: MISSING is not set"),
	    "%s", r.err);
	done(&r);
	r = load(UP "username = joe\npassword_env = EMPTY\n", env);
	cr_assert_null(r.cfg);
	cr_assert_not_null(strstr(r.err, "password_env: EMPTY is empty"), "%s",
	    r.err);
	done(&r);
}

/* password_command is not run by cfg_load(): it runs when the password is
 * first needed, off the event loop (secret.h, test_secret.c). */
Test(config, password_command)
{
	char dir[] = "/tmp/relay25-cfg-XXXXXX", text[512], marker[300];
	struct run r;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(marker, sizeof marker, "%s/ran", dir);
	snprintf(text, sizeof text, UP "username = joe\n"
	    "password_command = touch %s; echo pw\n", marker);
	r = load(text, NULL);
	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert_null(r.cfg->upstream[0].password);
	cr_assert_eq(strncmp(r.cfg->upstream[0].password_command, "touch ",
	    6), 0);
	cr_assert_neq(access(marker, F_OK), 0, "cfg_load ran the command");
	done(&r);
	rmdir(dir);

	/* A command that would fail is no load error either. */
	r = load(UP "username = joe\npassword_command = echo leaked; exit 3\n",
	    NULL);
	cr_assert_not_null(r.cfg, "%s", r.err);
	done(&r);
}

Test(config, world_readable_password_warning)
{
	const char *text = UP "username = joe\npassword = pw\n";
	struct run r = load_path(write_file(text, 0644), NULL);
	char want[512];

	cr_assert_not_null(r.cfg, "%s", r.err);
	snprintf(want, sizeof want, "warning: %s contains a password and is "
	    "readable by group or others: chmod 600 %s, or use password_file",
	    r.path, r.path);
	cr_assert_not_null(strstr(r.warn, want), "%s", r.warn);
	cr_assert_null(strstr(r.warn, "pw\n"));
	done(&r);

	r = load_path(write_file(text, 0640), NULL);
	cr_assert_not_null(strstr(r.warn, "warning: "), "%s", r.warn);
	done(&r);
	r = load_path(write_file(text, 0600), NULL);
	cr_assert_str_eq(r.warn, "");
	done(&r);
	r = load_path(write_file(UP, 0644), NULL);
	cr_assert_str_eq(r.warn, "");
	done(&r);
}

/* ---- environment ---- */

Test(config, env_overrides_file)
{
	char *env[] = {
		"RELAY25_SERVER_MAX_CLIENTS=5",
		"RELAY25_UPSTREAM_HOST=env.example.net",
		"RELAY25_UPSTREAM_PORT=2525",
		"RELAY25_METRICS_LISTEN=127.0.0.1:9325",
		"RELAY25_BIN=/usr/sbin/relay25",
		"RELAY25_SUBMIT=x", "RELAY25_CONFIG=/etc/x.ini",
		"PATH=/bin", NULL,
	};
	struct run r = load("[server]\nmax_clients = 1\n" UP "port = 25\n", env);

	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert_eq(r.cfg->max_clients, 5);
	cr_assert_str_eq(r.cfg->upstream[0].host, "env.example.net");
	cr_assert_eq(r.cfg->upstream[0].port, 2525);
	cr_assert(r.cfg->metrics_set);
	done(&r);
}

Test(config, env_empty_value_resets_to_default)
{
	char *env[] = { "RELAY25_SERVER_MAX_CLIENTS=", NULL };
	struct run r = load("[server]\nmax_clients = 1\n" UP, env);

	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert_eq(r.cfg->max_clients, 1024);
	done(&r);
}

Test(config, env_named_upstreams)
{
	char *env[] = {
		"RELAY25_UPSTREAM_PRIMARY_PORT=2525",
		"RELAY25_UPSTREAM_BACKUP_HOST=backup.example.net",
		"RELAY25_UPSTREAM_BACKUP_TLS=implicit",
		"RELAY25_UPSTREAM_primary_TLS_VERIFY=no",
		"RELAY25_UPSTREAM_PASSWORD_FILE=",
		NULL,
	};
	struct run r = load("[upstream:Primary]\nhost = p.example.net\n", env);
	const struct cfg *c = r.cfg;

	cr_assert_not_null(c, "%s", r.err);
	cr_assert_eq(c->nupstream, 2);
	cr_assert_str_eq(c->upstream[0].name, "Primary");
	cr_assert_eq(c->upstream[0].port, 2525);
	cr_assert(!c->upstream[0].tls_verify);
	cr_assert_str_eq(c->upstream[1].name, "backup");
	cr_assert_str_eq(c->upstream[1].host, "backup.example.net");
	cr_assert_eq(c->upstream[1].tls, CFG_TLS_IMPLICIT);
	cr_assert_eq(c->upstream[1].port, 465);
	/* An empty RELAY25_UPSTREAM_PASSWORD_FILE resets a key; it does not
	 * create an [upstream] without a host. */
	done(&r);
}

Test(config, env_disambiguation)
{
	char *env[] = {
		"RELAY25_UPSTREAM_TLS_VERIFY=no",
		"RELAY25_UPSTREAM_HOST=main.example.net",
		NULL,
	};
	struct run r = load("[upstream:tls]\nhost = t.example.net\n", env);

	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert_eq(r.cfg->nupstream, 2);
	/* The whole rest is a key, so it is [upstream]'s, not [upstream:tls]'s
	 * "verify" (which would not exist). */
	cr_assert(r.cfg->upstream[0].tls_verify);
	cr_assert_str_eq(r.cfg->upstream[1].name, "");
	cr_assert(!r.cfg->upstream[1].tls_verify);
	cr_assert_not_null(strstr(r.warn, "warning: RELAY25_UPSTREAM_TLS_VERIFY "
	    "sets tls_verify of [upstream], not VERIFY of [upstream:tls]"),
	    "%s", r.warn);
	done(&r);

	char *env2[] = { "RELAY25_UPSTREAM_PASSWORD_FILE=/x", NULL };
	expect_env_error("[upstream:a]\nhost = a.example\n", env2,
	    "[upstream] has no host");
}

Test(config, env_errors)
{
	char *bad_value[] = { "RELAY25_SERVER_MAX_CLIENTS=lots", NULL };
	char *unknown[] = { "RELAY25_SERVER_MAX_CLIENT=5", NULL };
	char *lower[] = { "RELAY25_SERVER_max_clients=5", NULL };
	char *unknown_up[] = { "RELAY25_UPSTREAM_HOSTNAME=x", NULL };
	char *unknown_named[] = { "RELAY25_UPSTREAM_A_HOSTNAME=x", NULL };
	char *unknown_sect[] = { "RELAY25_LOG_LEVEL=debug", NULL };
	char *bad_name[] = { "RELAY25_UPSTREAM__HOST=x", NULL };
	char *twice[] = { "RELAY25_UPSTREAM_B_HOST=x", "RELAY25_UPSTREAM_b_HOST=y",
	    NULL };

	expect_env_error(UP, bad_value,
	    "RELAY25_SERVER_MAX_CLIENTS: bad value 'lots' for max_clients");
	expect_env_error(UP, unknown, "RELAY25_SERVER_MAX_CLIENT: unknown variable");
	expect_env_error(UP, lower, "RELAY25_SERVER_max_clients: unknown variable");
	expect_env_error(UP, unknown_up, "RELAY25_UPSTREAM_HOSTNAME: unknown variable");
	expect_env_error(UP, unknown_named,
	    "RELAY25_UPSTREAM_A_HOSTNAME: unknown variable");
	expect_env_error(UP, unknown_sect, "RELAY25_LOG_LEVEL: unknown variable");
	expect_env_error(UP, bad_name, "RELAY25_UPSTREAM__HOST: unknown variable");
	expect_env_error(UP, twice,
	    "RELAY25_UPSTREAM_b_HOST: host is already set by RELAY25_UPSTREAM_B_HOST");
}

Test(config, env_only)
{
	struct stat st;
	char *env[] = {
		"RELAY25_UPSTREAM_HOST=smtp.example.net",
		"RELAY25_UPSTREAM_USERNAME=joe",
		"RELAY25_UPSTREAM_PASSWORD=pw",
		"RELAY25_SERVER_LISTEN=127.0.0.1:2525",
		NULL,
	};
	char *named[] = { "RELAY25_UPSTREAM_ESP_HOST=smtp.example.net", NULL };
	char *none[] = { "HOME=/root", NULL };
	char *noenv[] = { NULL };
	struct run r;

	if (stat(CFG_DEFAULT_FILE, &st) == 0)
		cr_skip_test("%s exists", CFG_DEFAULT_FILE);
	r = load_path(NULL, env);
	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert_null(r.cfg->path);
	cr_assert_eq(r.cfg->nupstream, 1);
	cr_assert_str_eq(r.cfg->upstream[0].password, "pw");
	cr_assert_str_eq(r.cfg->listen[0].text, "127.0.0.1:2525");
	done(&r);
	r = load_path(NULL, named);
	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert_str_eq(r.cfg->upstream[0].name, "esp");
	done(&r);
	expect_env_error(NULL, none,
	    "environment: no upstream configured (set RELAY25_UPSTREAM_HOST)");
	expect_env_error(NULL, noenv, "no upstream configured");
	r = load_path(NULL, NULL);
	cr_assert_null(r.cfg);
	done(&r);
}

Test(config, env_secret_not_echoed)
{
	char *env[] = { "RELAY25_UPSTREAM_PASSWORD=Hunter2\x01", NULL };
	struct run r = load(UP "username = joe\n", env);

	cr_assert_null(r.cfg);
	cr_assert_not_null(strstr(r.err, "RELAY25_UPSTREAM_PASSWORD: bad value "
	    "for password: contains a control character"), "%s", r.err);
	cr_assert_null(strstr(r.err, "Hunter2"));
	done(&r);
	expect_error(UP "username = joe\npassword = \"Hunter2\n", 4,
	    "password: missing closing quote");
	r = load(UP "username = joe\npassword = \"Hunter2\n", NULL);
	cr_assert_null(strstr(r.err, "Hunter2"));
	done(&r);
}

/* ---- printing ---- */

static char *
print_cfg(const struct cfg *c)
{
	char *out = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&out, &len);

	cr_assert_not_null(fp);
	cfg_print(c, fp);
	fclose(fp);
	return out;
}

Test(config, print_redacts_passwords)
{
	const char *pf = write_file("FromFile-Secret\n", 0600);
	char *env[] = { "MY_PW=FromEnv-Secret", NULL };
	char text[1024];
	struct run r;
	char *out;

	snprintf(text, sizeof text,
	    "[upstream:a]\nhost = a.example\nusername = joe\n"
	    "password = Inline-Secret\n"
	    "[upstream:b]\nhost = b.example\nusername = joe\npassword_file = %s\n"
	    "[upstream:c]\nhost = c.example\nusername = joe\npassword_env = MY_PW\n"
	    "[upstream:d]\nhost = d.example\nusername = joe\n"
	    "password_command = echo Command-Secret\n", pf);
	r = load(text, env);
	cr_assert_not_null(r.cfg, "%s", r.err);
	out = print_cfg(r.cfg);
	cr_assert_null(strstr(out, "Secret\n"), "%s", out);
	cr_assert_null(strstr(out, "Inline-Secret"));
	cr_assert_null(strstr(out, "FromFile-Secret"));
	cr_assert_null(strstr(out, "FromEnv-Secret"));
	cr_assert_not_null(strstr(out, "[upstream:a]\nhost = a.example\n"));
	cr_assert_not_null(strstr(out, "password = ********\n"));
	cr_assert_not_null(strstr(out, "password_env = MY_PW\n"));
	cr_assert_not_null(strstr(out,
	    "password_command = \"echo Command-Secret\"\n"));
	free(out);
	done(&r);
}

Test(config, print_round_trip)
{
	struct run r = load(
	    "[server]\nlisten = 127.0.0.1:2525 [::1]:0\nallow = 10.1.2.3/8 ::1\n"
	    "hostname = mx.example.org\nmax_message_size = 1536K\n"
	    "command_timeout = 1.5s\ndata_timeout = 90\nshutdown_timeout = 2h\n"
	    "[upstream:one]\nhost = smtp.example.net\nport = 465\n"
	    "fingerprint = " "0123456789ABCDEF0123456789ABCDEF"
	    "0123456789abcdef0123456789abcdef\n"
	    "username = \"a b\"\npassword = \"x\\\"y\"\nhelo_name = [::1]\n"
	    "[upstream]\nhost = 127.0.0.1\ntls = none\n"
	    "[metrics]\nlisten = [::1]:9325\n", NULL);
	struct run r2;
	char *out, *out2;

	cr_assert_not_null(r.cfg, "%s", r.err);
	out = print_cfg(r.cfg);
	cr_assert_not_null(strstr(out, "allow = 10.0.0.0/8 ::1/128\n"), "%s", out);
	cr_assert_not_null(strstr(out, "max_message_size = 1536K\n"), "%s", out);
	cr_assert_not_null(strstr(out, "command_timeout = 1.5s\n"), "%s", out);
	cr_assert_not_null(strstr(out, "data_timeout = 90s\n"), "%s", out);
	cr_assert_not_null(strstr(out, "shutdown_timeout = 2h\n"), "%s", out);
	cr_assert_not_null(strstr(out, "tls = implicit\n"), "%s", out);
	cr_assert_not_null(strstr(out, "username = \"a b\"\n"), "%s", out);
	r2 = load(out, NULL);
	cr_assert_not_null(r2.cfg, "%s\n%s", r2.err, out);
	out2 = print_cfg(r2.cfg);
	/* Same text apart from the first line, which names the file. */
	cr_assert_str_eq(strchr(out2, '\n'), strchr(out, '\n'));
	free(out);
	free(out2);
	done(&r);
	done(&r2);
}

/* The shipped example must load as it is, without errors or warnings. */
Test(config, example_file_loads)
{
	struct run r;

	if (access("etc/relay25.ini", R_OK) != 0)
		cr_skip_test("run from the top of the source tree");
	r = load_path("etc/relay25.ini", NULL);
	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert_str_eq(r.warn, "");
	cr_assert_str_eq(r.cfg->upstream[0].host, "smtp.example.net");
	done(&r);
}

/* auth = xoauth2 | oauthbearer: username plus exactly one token source, no
 * password source; token sources only with those mechanisms. */
Test(config, token_auth)
{
	const char *tf = write_file("tok\n", 0600);
	char text[512];
	struct run r;

	r = load(UP "username = u@example.com\nauth = xoauth2\n"
	    "token_command = printf 'tok 3600'\n", NULL);
	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert_eq(r.cfg->upstream[0].auth, CFG_AUTH_XOAUTH2);
	cr_assert_str_eq(r.cfg->upstream[0].token_command, "printf 'tok 3600'");
	cr_assert_null(r.cfg->upstream[0].password);
	done(&r);

	snprintf(text, sizeof text, UP "username = u\nauth = oauthbearer\n"
	    "token_file = %s\n", tf);
	r = load(text, NULL);
	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert_eq(r.cfg->upstream[0].auth, CFG_AUTH_OAUTHBEARER);
	cr_assert_str_eq(r.cfg->upstream[0].token_file, tf);
	done(&r);

	r = load(UP "username = u\npassword = p\nauth = cram-md5\n", NULL);
	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert_eq(r.cfg->upstream[0].auth, CFG_AUTH_CRAM_MD5);
	done(&r);

	expect_error(UP "username = u\nauth = xoauth2\n", 4,
	    "auth = xoauth2 needs token_command or token_file");
	expect_error(UP "auth = oauthbearer\ntoken_command = x\n", 4,
	    "token_command is set but username is not");
	expect_error(UP "auth = xoauth2\n", 3,
	    "auth = xoauth2 needs username");
	expect_error(UP "username = u\nauth = xoauth2\ntoken_command = x\n"
	    "password = p\n", 6, "password is not used with auth = xoauth2");
	expect_error(UP "username = u\nauth = xoauth2\ntoken_command = x\n"
	    "token_file = /etc/hostname\n", 6,
	    "token_command and token_file are both set");
	expect_error(UP "username = u\npassword = p\ntoken_command = x\n", 5,
	    "token_command needs auth = xoauth2 or auth = oauthbearer");
	expect_error(UP "username = u\nauth = xoauth2\n"
	    "token_file = /nonexistent/relay25-token\n", 5,
	    "token_file /nonexistent/relay25-token: No such file or directory");
}

/* ---- sender policy and inbound AUTH ---- */

Test(config, allowed_senders)
{
	struct run r = load("[server]\nallowed_senders = *@example.com "
	    "alerts@host.example\t*@*.example.org  <> *\n" UP, NULL);
	const struct cfg *c = r.cfg;
	char *out;

	cr_assert_not_null(c, "%s", r.err);
	cr_assert_eq(c->nallowed_senders, 5);
	cr_assert_str_eq(c->allowed_senders[0], "*@example.com");
	cr_assert_str_eq(c->allowed_senders[1], "alerts@host.example");
	cr_assert_str_eq(c->allowed_senders[2], "*@*.example.org");
	cr_assert_str_eq(c->allowed_senders[3], "<>");
	cr_assert_str_eq(c->allowed_senders[4], "*");
	out = print_cfg(c);
	cr_assert_not_null(strstr(out, "allowed_senders = *@example.com "
	    "alerts@host.example *@*.example.org <> *\n"), "%s", out);
	free(out);
	done(&r);

	/* default: no patterns (every sender); printed empty */
	r = load(UP, NULL);
	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert_eq(r.cfg->nallowed_senders, 0);
	cr_assert_null(r.cfg->auth_users_file);
	cr_assert_null(r.cfg->auth_users);
	out = print_cfg(r.cfg);
	cr_assert_not_null(strstr(out, "allowed_senders =\n"), "%s", out);
	cr_assert_not_null(strstr(out, "auth_users_file =\n"), "%s", out);
	free(out);
	done(&r);
}

Test(config, allowed_senders_quoted_round_trip)
{
	struct run r = load("[server]\nallowed_senders = \"a#b@x.example "
	    "c;d@y.example\"\n" UP, NULL), r2;
	char *out, *out2;

	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert_eq(r.cfg->nallowed_senders, 2);
	cr_assert_str_eq(r.cfg->allowed_senders[0], "a#b@x.example");
	out = print_cfg(r.cfg);
	cr_assert_not_null(strstr(out, "allowed_senders = \"a#b@x.example "
	    "c;d@y.example\"\n"), "%s", out);
	r2 = load(out, NULL);
	cr_assert_not_null(r2.cfg, "%s", r2.err);
	out2 = print_cfg(r2.cfg);
	cr_assert_str_eq(strchr(out2, '\n'), strchr(out, '\n'));
	free(out);
	free(out2);
	done(&r);
	done(&r2);
}

Test(config, allowed_senders_errors)
{
	static const struct { const char *line, *msg; } cases[] = {
		{ "allowed_senders = example.com",
		  "for allowed_senders: 'example.com' has no '@': for a whole "
		  "domain write *@example.com" },
		{ "allowed_senders = *@a.example <alerts@b.example>",
		  "'<alerts@b.example>': write the address without <>" },
		{ "allowed_senders = <",
		  "write the address without <>" },
	};
	char text[8192], *p;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		snprintf(text, sizeof text, "[server]\n%s\n" UP, cases[i].line);
		expect_error(text, 2, cases[i].msg);
	}
	/* 65 patterns; a pattern of 256 bytes */
	p = text + sprintf(text, "[server]\nallowed_senders =");
	for (int i = 0; i < 65; i++)
		p += sprintf(p, " u%d@x.example", i);
	sprintf(p, "\n" UP);
	expect_error(text, 2, "for allowed_senders: more than 64 patterns");
	p = text + sprintf(text, "[server]\nallowed_senders = *@");
	memset(p, 'd', 254);
	sprintf(p + 254, "\n" UP);
	expect_error(text, 2, "a pattern is longer than 255 bytes");
	p[253] = '\n';
	sprintf(p + 254, UP);
	{
		struct run r = load(text, NULL);
		cr_assert_not_null(r.cfg, "%s", r.err);   /* 255 bytes: fine */
		cr_assert_eq(strlen(r.cfg->allowed_senders[0]), 255);
		done(&r);
	}
}

Test(config, allowed_senders_env)
{
	char *env[] = { "RELAY25_SERVER_ALLOWED_SENDERS=*@env.example <>",
	    NULL };
	char *bad[] = { "RELAY25_SERVER_ALLOWED_SENDERS=env.example", NULL };
	struct run r = load("[server]\nallowed_senders = *@file.example\n" UP,
	    env);

	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert_eq(r.cfg->nallowed_senders, 2);
	cr_assert_str_eq(r.cfg->allowed_senders[0], "*@env.example");
	done(&r);
	r = load(UP, bad);
	cr_assert_null(r.cfg);
	cr_assert_not_null(strstr(r.err, "RELAY25_SERVER_ALLOWED_SENDERS: bad "
	    "value 'env.example' for allowed_senders"), "%s", r.err);
	done(&r);
}

/* A users file with one user and a well-formed $6$ hash (loading only
 * checks the form; test_inbound_auth.c verifies real ones). */
#define USERS_OK "# users\napp:$6$saltsalt$" \
	"t2L7K3x0sQ2gJ6fNm0hQz3m7rT0c2iN8c6J8y1g0vE8hTq0jB7m3xQw9aZ5kL2pO4u" \
	"R6sT8vW0yX2zA4bC6d\n"

static const char *
users_file(const char *text, mode_t mode)
{
	return write_file(text, mode);
}

Test(config, auth_users_file)
{
	char text[512];
	const char *uf = users_file(USERS_OK, 0640);
	struct run r;
	char *out;

	snprintf(text, sizeof text, "[server]\nauth_users_file = %s\n" UP, uf);
	r = load(text, NULL);
	cr_assert_not_null(r.cfg, "%s", r.err);
	cr_assert_str_eq(r.cfg->auth_users_file, uf);
	cr_assert_not_null(r.cfg->auth_users);
	cr_assert_str_eq(r.warn, "", "group-readable is fine: %s", r.warn);
	out = print_cfg(r.cfg);
	cr_assert_null(strstr(out, "$6$"), "hashes are never printed: %s", out);
	free(out);
	done(&r);
}

Test(config, auth_users_file_readable_by_others_warns)
{
	char text[512], want[512];
	const char *uf = users_file(USERS_OK, 0644);
	struct run r;

	snprintf(text, sizeof text, "[server]\nauth_users_file = %s\n" UP, uf);
	r = load(text, NULL);
	cr_assert_not_null(r.cfg, "%s", r.err);
	snprintf(want, sizeof want, "warning: %s (auth_users_file) holds "
	    "password hashes and is readable by others: chmod o-r %s", uf, uf);
	cr_assert_not_null(strstr(r.warn, want), "%s", r.warn);
	done(&r);
}

Test(config, auth_users_file_errors)
{
	char text[512], want[512];
	const char *bad;
	struct run r;

	/* missing file: reported at the key's line */
	snprintf(text, sizeof text, "[server]\nauth_users_file = %s/nope\n" UP,
	    tmpdir);
	expect_error(text, 2, "auth_users_file ");
	expect_error(text, 2, "/nope: No such file or directory");
	snprintf(text, sizeof text, "[server]\nauth_users_file = %s\n" UP,
	    tmpdir);
	expect_error(text, 2, "is a directory");

	/* errors inside the users file: users-file:line: message, all */
	bad = users_file("app:$6$x$y\nnocolon\n\n:$6$x$y\nb:plaintext\n",
	    0600);
	snprintf(text, sizeof text, "[server]\nauth_users_file = %s\n" UP, bad);
	r = load(text, NULL);
	cr_assert_null(r.cfg);
	snprintf(want, sizeof want, "%s:2: expected 'user:hash'\n", bad);
	cr_assert_not_null(strstr(r.err, want), "%s", r.err);
	snprintf(want, sizeof want, "%s:4: empty user name\n", bad);
	cr_assert_not_null(strstr(r.err, want), "%s", r.err);
	snprintf(want, sizeof want, "%s:5: user 'b': not a modular crypt(3) "
	    "hash", bad);
	cr_assert_not_null(strstr(r.err, want), "%s", r.err);
	cr_assert_null(strstr(r.err, "plaintext"), "%s", r.err);
	done(&r);

	bad = users_file("# nobody\n", 0600);
	snprintf(text, sizeof text, "[server]\nauth_users_file = %s\n" UP, bad);
	r = load(text, NULL);
	cr_assert_null(r.cfg);
	snprintf(want, sizeof want, "%s: no users defined\n", bad);
	cr_assert_not_null(strstr(r.err, want), "%s", r.err);
	done(&r);
}
