/*
 * main.c - relay25-sendmail: the sendmail(8) command line for programs
 * that pipe mail to /usr/sbin/sendmail (cron, PHP mail(), logwatch,
 * smartd). The message is read from standard input, converted to the SMTP
 * wire form and submitted to the local relay25 over plain SMTP; relay25
 * does the rest (TLS, AUTH, the ESP). Nothing is queued: the exit code
 * says whether relay25 (and so the ESP) accepted the message.
 *
 * Exit codes (sysexits.h): 0 accepted; EX_USAGE bad command line;
 * EX_DATAERR no recipients or a malformed header address; EX_UNAVAILABLE a
 * 5xx reply; EX_TEMPFAIL relay25 unreachable, timed out or a 4xx reply
 * (try again later); EX_IOERR reading standard input failed; EX_CONFIG
 * the -C file cannot be read; EX_SOFTWARE out of memory.
 */
#include <errno.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sysexits.h>
#include <unistd.h>

#include "relay25/smtp_parse.h"
#include "sm_addr.h"
#include "sm_conf.h"
#include "sm_msg.h"
#include "sm_smtp.h"

#define PROG "relay25-sendmail"
#define SM_STEP_DEFAULT 60.0    /* seconds per network wait */
#define SM_SESSION_STEPS 10     /* the whole session: this many steps */
#define SM_MAX_RCPT 10000
#define SM_IO_CHUNK 65536

enum sm_mode { MODE_DELIVER, MODE_SMTP };

struct sm_opts {
	enum sm_mode mode;
	bool from_headers;      /* -t */
	bool dot_ends;          /* no -i / -oi */
	bool verbose;           /* -v */
	const char *from;       /* -f / -r, NULL: login@host */
	const char *fullname;   /* -F */
	const char *config;     /* -C */
	const char *body;       /* -B 7BIT | 8BITMIME */
	char **args;            /* recipient arguments */
	int nargs;
};

struct sm_rcpts {
	char **v;
	size_t n, cap;
	const char *domain;     /* qualifies bare local parts */
	bool oom, too_many;
	bool too_long;          /* an address over SM_ADDR_MAX once qualified */
};

static void sm_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
sm_err(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void
sm_usage(void)
{
	fprintf(stderr,
	    "usage: " PROG " [-t] [-i] [-f sender] [-F name] [-C file] [-v]\n"
	    "                        [-bm | -bs] [--] [recipient ...]\n"
	    "Reads a message on standard input and submits it to relay25.\n"
	    "See relay25-sendmail(8).\n");
}

/* ---- the command line ---------------------------------------------- */

/* -o options sendmail programs pass that mean nothing here: delivery mode
 * (d), error mode (e), me-too (m), old headers (o), save (s), queue
 * directory (Q), log level (L), queue timeout (T), alias file (A). */
static const char sm_ignored_o[] = "demosQLTA";

static int
sm_parse_args(int argc, char **argv, struct sm_opts *o)
{
	int i;

	memset(o, 0, sizeof *o);
	o->dot_ends = true;
	for (i = 1; i < argc; i++) {
		char *a = argv[i];

		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		if (a[0] != '-' || a[1] == '\0')
			break;
		for (size_t k = 1; a[k]; k++) {
			char c = a[k];
			const char *val = NULL;

			switch (c) {
			case 't': o->from_headers = true; continue;
			case 'i': o->dot_ends = false; continue;
			case 'v': o->verbose = true; continue;
			case 'm': case 'n': case 'U': case 'G':
				continue;       /* me-too, no aliases, initial
				                 * submission, gateway: ignored */
			case 'o':
				if (!a[k + 1]) {
					sm_err("-o needs an option letter");
					return EX_USAGE;
				}
				if (a[k + 1] == 'i' && (!a[k + 2] ||
				    strcmp(a + k + 2, "true") == 0 ||
				    strcmp(a + k + 2, "True") == 0))
					o->dot_ends = false;
				else if (!strchr(sm_ignored_o, a[k + 1])) {
					sm_err("unsupported option -o%s",
					    a + k + 1);
					return EX_USAGE;
				}
				break;          /* the rest of the word is -o's */
			case 'A':               /* -Am / -Ac: which .cf file */
				break;
			case 'b':
				if (strcmp(a + k + 1, "m") == 0)
					o->mode = MODE_DELIVER;
				else if (strcmp(a + k + 1, "s") == 0)
					o->mode = MODE_SMTP;
				else {
					sm_err("unsupported mode -b%s (only "
					    "-bm and -bs)", a + k + 1);
					return EX_USAGE;
				}
				break;
			case 'f': case 'r': case 'F': case 'C': case 'B':
			case 'N': case 'R': case 'V': case 'X': case 'h':
			case 'L': case 'O':
				if (a[k + 1])
					val = a + k + 1;
				else if (i + 1 < argc)
					val = argv[++i];
				else {
					sm_err("-%c needs an argument", c);
					return EX_USAGE;
				}
				if (c == 'f' || c == 'r')
					o->from = val;
				else if (c == 'F')
					o->fullname = val;
				else if (c == 'C')
					o->config = val;
				else if (c == 'B') {
					if (strcasecmp(val, "8BITMIME") &&
					    strcasecmp(val, "7BIT")) {
						sm_err("-B: 7BIT or 8BITMIME");
						return EX_USAGE;
					}
					o->body = val;
				}
				/* -N -R -V (DSN), -X (log), -h (hops), -L
				 * (syslog tag), -O (option): ignored */
				break;
			default:
				sm_err("unknown option -%c", c);
				sm_usage();
				return EX_USAGE;
			}
			break;                  /* the option took the word */
		}
	}
	o->args = argv + i;
	o->nargs = argc - i;
	return 0;
}

/* ---- addresses ------------------------------------------------------ */

static bool
sm_atext_ok(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s <= 32 || (unsigned char)*s >= 127 ||
		    strchr("\"(),:;<>@[\\]", *s))
			return false;
	return true;
}

/* The user's login name: LOGNAME, USER, then the password file. */
static const char *
sm_login(void)
{
	const char *env[] = { "LOGNAME", "USER" };
	struct passwd *pw;

	for (size_t i = 0; i < 2; i++) {
		const char *v = getenv(env[i]);
		if (v && strlen(v) < 64 && sm_atext_ok(v))
			return v;
	}
	pw = getpwuid(getuid());
	if (pw && strlen(pw->pw_name) < 64 && sm_atext_ok(pw->pw_name))
		return pw->pw_name;
	return "nobody";
}

static void
sm_hostname(char *out, size_t len)
{
	if (gethostname(out, len) < 0 || !out[0])
		snprintf(out, len, "localhost");
	out[len - 1] = '\0';
	for (char *p = out; *p; p++)
		if (!(((*p | 32) >= 'a' && (*p | 32) <= 'z') ||
		    (*p >= '0' && *p <= '9') || *p == '-' || *p == '.')) {
			snprintf(out, len, "localhost");
			break;
		}
}

/* addr has a domain: an '@' after any quoted local part. */
static bool
sm_qualified(const char *addr, size_t len)
{
	const char *q = NULL, *at = NULL;

	for (size_t i = 0; i < len; i++) {
		if (addr[i] == '"')
			q = addr + i;
		else if (addr[i] == '@')
			at = addr + i;
	}
	return at && (!q || at > q);
}

static int
sm_rcpt_add(const char *addr, size_t len, void *arg)
{
	struct sm_rcpts *r = arg;
	bool qual = sm_qualified(addr, len);
	size_t dl = qual ? 0 : strlen(r->domain) + 1;
	char *s;

	if (len + dl > SM_ADDR_MAX) {
		r->too_long = true;     /* the caller treats it as malformed */
		return 0;
	}
	if (!(s = malloc(len + dl + 1))) {
		r->oom = true;
		return 1;
	}
	memcpy(s, addr, len);
	if (!qual) {
		s[len] = '@';
		memcpy(s + len + 1, r->domain, dl - 1);
	}
	s[len + dl] = '\0';
	for (size_t i = 0; i < r->n; i++)
		if (strcmp(r->v[i], s) == 0) {
			free(s);        /* a recipient named twice gets one */
			return 0;
		}
	if (r->n == SM_MAX_RCPT) {
		free(s);
		r->too_many = true;
		return 1;
	}
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 16;
		char **nv = realloc(r->v, cap * sizeof *nv);
		if (!nv) {
			free(s);
			r->oom = true;
			return 1;
		}
		r->v = nv;
		r->cap = cap;
	}
	r->v[r->n++] = s;
	return 0;
}

static void
sm_rcpts_free(struct sm_rcpts *r)
{
	for (size_t i = 0; i < r->n; i++)
		free(r->v[i]);
	free(r->v);
}

struct sm_one {
	char addr[SM_ADDR_MAX + 1];
	int n;
};

static int
sm_one_add(const char *addr, size_t len, void *arg)
{
	struct sm_one *o = arg;

	if (o->n++ == 0) {
		memcpy(o->addr, addr, len);
		o->addr[len] = '\0';
	}
	return 0;
}

/* ---- the SMTP dialogue ---------------------------------------------- */

struct sm_run {
	struct sm_opts *o;
	struct sm_smtp smtp;
	struct sm_target target;
	char host[256];
	char sender[SM_ADDR_MAX + 1];   /* "" for the null sender */
	char from_addr[SM_ADDR_MAX + 1];/* for a From: we add */
	struct sm_rcpts rcpts;
	struct sm_head head;
	bool in_eof;                    /* standard input is used up */
	struct sm_enc enc;
	char out[SM_IO_CHUNK + 64];
	size_t outlen;
};

/* The exit code for a reply that is not the one wanted. */
static int
sm_reply_exit(const struct smtp_reply *r)
{
	return r->code >= 500 ? EX_UNAVAILABLE : EX_TEMPFAIL;
}

static int
sm_fail_reply(const char *what, const struct smtp_reply *r)
{
	char text[512];

	sm_err("%s: %s", what, sm_reply_text(r, text, sizeof text));
	return sm_reply_exit(r);
}

static int
sm_fail_conn(struct sm_run *run, const char *what)
{
	sm_err("%s: relay25 at %s: %s; try again later", what,
	    run->target.text, run->smtp.why);
	return EX_TEMPFAIL;
}

/* Send a command and read its reply into *r. 0, or EX_TEMPFAIL. */
static int
sm_exchange(struct sm_run *run, const char *line, struct smtp_reply *r)
{
	if (sm_smtp_cmd(&run->smtp, line) < 0 ||
	    sm_smtp_reply(&run->smtp, r) < 0)
		return sm_fail_conn(run, line);
	return 0;
}

static int
sm_flush(struct sm_run *run)
{
	if (run->outlen && sm_smtp_write(&run->smtp, run->out,
	    run->outlen) < 0)
		return sm_fail_conn(run, "message");
	run->outlen = 0;
	return 0;
}

/* Encode data through the DATA encoder and send it. */
static int
sm_put(struct sm_run *run, const char *data, size_t len)
{
	while (len && !run->enc.ended) {
		size_t used, n;

		if (sizeof run->out - run->outlen < SM_ENC_RESERVE + 1024) {
			int rc = sm_flush(run);
			if (rc)
				return rc;
		}
		sm_enc_feed(&run->enc, data, len, &used, run->out +
		    run->outlen, sizeof run->out - run->outlen, &n);
		run->outlen += n;
		data += used;
		len -= used;
	}
	return 0;
}

static int
sm_put_cb(const char *data, size_t len, void *arg)
{
	return sm_put(arg, data, len);
}

/* "From: Full Name <sender>" for a message that has no From:. The name
 * loses control characters (no header injection) and is quoted unless it
 * is plain words. */
static void
sm_from_line(const struct sm_run *run, char *line, size_t len)
{
	char name[256], q[520];
	const char *fn = run->o->fullname ? run->o->fullname : "";
	size_t k = 0, j = 0;
	bool plain = true;

	for (; *fn && k < sizeof name - 1; fn++) {
		unsigned char c = (unsigned char)*fn;

		if (c < 32 || c == 127 || (c == ' ' && k == 0))
			continue;
		name[k++] = (char)c;
		if (c < 128 && !((c | 32) >= 'a' && (c | 32) <= 'z') &&
		    !(c >= '0' && c <= '9') && c != ' ' &&
		    !strchr("!#$%&'*+-/=?^_`{|}~", c))
			plain = false;
	}
	while (k && name[k - 1] == ' ')
		k--;
	name[k] = '\0';
	for (size_t i = 0; i < k; i++) {
		if (name[i] == '"' || name[i] == '\\')
			q[j++] = '\\';
		q[j++] = name[i];
	}
	q[j] = '\0';
	if (k == 0)
		snprintf(line, len, "From: %s\n", run->from_addr);
	else if (plain)
		snprintf(line, len, "From: %s <%s>\n", q,
		    run->from_addr);
	else
		snprintf(line, len, "From: \"%s\" <%s>\n", q,
		    run->from_addr);
}

/* The message: header section (Bcc out, From in), then the body as it
 * arrives on standard input, each wait bounded. */
static int
sm_send_message(struct sm_run *run)
{
	struct sm_head *h = &run->head;
	static char in[SM_IO_CHUNK];
	char from[SM_ADDR_MAX + 1200];
	int rc;

	sm_enc_init(&run->enc, run->o->dot_ends);
	sm_from_line(run, from, sizeof from);
	rc = sm_head_emit(h, from, sm_put_cb, run);
	while (!rc && !run->in_eof && !h->dot_end && !run->enc.ended) {
		int w = sm_wait(STDIN_FILENO, POLLIN, run->smtp.step,
		    run->smtp.deadline);
		ssize_t n;

		if (w == 0) {
			sm_err("timed out reading the message from standard "
			    "input; nothing was sent");
			return EX_IOERR;
		}
		n = w < 0 ? -1 : read(STDIN_FILENO, in, sizeof in);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			sm_err("reading standard input: %s; nothing was sent",
			    strerror(errno));
			return EX_IOERR;
		}
		if (n == 0)
			run->in_eof = true;
		else
			rc = sm_put(run, in, (size_t)n);
	}
	if (rc)
		return rc;
	run->outlen += sm_enc_finish(&run->enc, run->out + run->outlen);
	memcpy(run->out + run->outlen, ".\r\n", 3);
	run->outlen += 3;
	if (run->o->verbose)
		fprintf(stderr, ">>> (message: %llu bytes)\n>>> .\n",
		    (unsigned long long)run->enc.out_bytes);
	return sm_flush(run);
}

/* Does any envelope address need SMTPUTF8? */
static bool
sm_needs_utf8(const struct sm_run *run)
{
	for (const char *p = run->sender; *p; p++)
		if ((unsigned char)*p >= 128)
			return true;
	for (size_t i = 0; i < run->rcpts.n; i++)
		for (const char *p = run->rcpts.v[i]; *p; p++)
			if ((unsigned char)*p >= 128)
				return true;
	return false;
}

static int
sm_submit(struct sm_run *run)
{
	struct smtp_reply r;
	struct smtp_caps caps;
	char line[SM_ADDR_MAX + 128];
	int rc, worst = 0;

	memset(&caps, 0, sizeof caps);
	if (run->o->verbose)
		fprintf(stderr, PROG ": connecting to relay25 at %s (%s)\n",
		    run->target.text, run->target.source);
	if (sm_smtp_connect(&run->smtp, run->target.host,
	    run->target.port) < 0) {
		sm_err("cannot connect to relay25 at %s (%s): %s; try again "
		    "later", run->target.text, run->target.source,
		    run->smtp.why);
		return EX_TEMPFAIL;
	}
	if (sm_smtp_reply(&run->smtp, &r) < 0)
		return sm_fail_conn(run, "greeting");
	if (r.code != 220)
		return sm_fail_reply("greeting", &r);
	snprintf(line, sizeof line, "EHLO %s", run->host);
	if ((rc = sm_exchange(run, line, &r)))
		return rc;
	if (r.code == 250) {
		smtp_caps_parse(&r, &caps);
	} else {
		snprintf(line, sizeof line, "HELO %s", run->host);
		if ((rc = sm_exchange(run, line, &r)))
			return rc;
		if (r.code != 250)
			return sm_fail_reply(line, &r);
	}
	snprintf(line, sizeof line, "MAIL FROM:<%s>%s%s%s", run->sender,
	    run->o->body && caps.eightbitmime ? " BODY=" : "",
	    run->o->body && caps.eightbitmime ? run->o->body : "",
	    caps.smtputf8 && sm_needs_utf8(run) ? " SMTPUTF8" : "");
	if ((rc = sm_exchange(run, line, &r)))
		return rc;
	if (r.code != 250)
		return sm_fail_reply(line, &r);
	/* Every recipient or none: a rejected one stops the message, so a
	 * caller that tries again never sends a second copy to the others. */
	for (size_t i = 0; i < run->rcpts.n; i++) {
		snprintf(line, sizeof line, "RCPT TO:<%s>", run->rcpts.v[i]);
		if ((rc = sm_exchange(run, line, &r)))
			return rc;
		if (r.code != 250 && r.code != 251) {
			rc = sm_fail_reply(line, &r);
			if (rc == EX_UNAVAILABLE || !worst)
				worst = rc;
		}
	}
	if (worst) {
		sm_err("message not sent: %s", worst == EX_UNAVAILABLE ?
		    "a recipient was rejected" :
		    "a recipient was deferred; try again later");
		if (sm_smtp_cmd(&run->smtp, "QUIT") == 0)
			(void)sm_smtp_reply(&run->smtp, &r);
		return worst;
	}
	if ((rc = sm_exchange(run, "DATA", &r)))
		return rc;
	if (r.code != 354)
		return sm_fail_reply("DATA", &r);
	if ((rc = sm_send_message(run)))
		return rc;
	if (sm_smtp_reply(&run->smtp, &r) < 0)
		return sm_fail_conn(run, "end of data");
	if (r.code != 250)
		return sm_fail_reply("message", &r);
	/* Accepted: QUIT is a courtesy, its failure changes nothing. */
	if (sm_smtp_cmd(&run->smtp, "QUIT") == 0) {
		run->smtp.step = run->smtp.step < 5 ? run->smtp.step : 5;
		(void)sm_smtp_reply(&run->smtp, &r);
	}
	return 0;
}

/* ---- -bs: SMTP on standard input and output ------------------------- */

static int
sm_write_stdout(const char *buf, size_t len, double step)
{
	while (len) {
		size_t k = len > 4096 ? 4096 : len;
		ssize_t n;

		if (sm_wait(STDOUT_FILENO, POLLOUT, step, 0) <= 0)
			return -1;
		n = write(STDOUT_FILENO, buf, k);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Proxy bytes both ways until relay25 closes; each wait is bounded by
 * SM_SESSION_STEPS steps of idleness. */
static int
sm_smtp_mode(struct sm_run *run)
{
	char buf[16384];
	double idle = run->smtp.step * SM_SESSION_STEPS;
	bool in_eof = false;

	run->smtp.deadline = 0;
	if (sm_smtp_connect(&run->smtp, run->target.host,
	    run->target.port) < 0) {
		char msg[1024];

		snprintf(msg, sizeof msg, "421 4.4.1 %s cannot reach relay25 "
		    "at %s, try again later\r\n", run->host,
		    run->target.text);
		sm_write_stdout(msg, strlen(msg), run->smtp.step);
		sm_err("cannot connect to relay25 at %s (%s): %s",
		    run->target.text, run->target.source, run->smtp.why);
		return EX_TEMPFAIL;
	}
	for (;;) {
		struct pollfd p[2] = {
			{ .fd = run->smtp.fd, .events = POLLIN },
			{ .fd = in_eof ? -1 : STDIN_FILENO, .events = POLLIN },
		};
		int r = poll(p, 2, (int)(idle * 1000));
		ssize_t n;

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			sm_err(r == 0 ? "-bs: idle too long" : "-bs: poll: %s",
			    strerror(errno));
			return EX_TEMPFAIL;
		}
		if (p[0].revents) {
			n = recv(run->smtp.fd, buf, sizeof buf, 0);
			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (n <= 0)
				return 0;       /* relay25 ended the session */
			if (sm_write_stdout(buf, (size_t)n, run->smtp.step) < 0)
				return EX_IOERR;
		}
		if (p[1].revents) {
			n = read(STDIN_FILENO, buf, sizeof buf);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				in_eof = true;
				shutdown(run->smtp.fd, SHUT_WR);
				continue;
			}
			if (sm_smtp_write(&run->smtp, buf, (size_t)n) < 0) {
				sm_err("-bs: %s", run->smtp.why);
				return EX_TEMPFAIL;
			}
		}
	}
}

/* ---- main ----------------------------------------------------------- */

/* Read standard input up to the end of the header section. */
static int
sm_read_head(struct sm_run *run)
{
	static char in[SM_IO_CHUNK];
	enum sm_res res = SM_AGAIN;

	while (res == SM_AGAIN) {
		ssize_t n = read(STDIN_FILENO, in, sizeof in);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			sm_err("reading standard input: %s", strerror(errno));
			return EX_IOERR;
		}
		if (n == 0) {
			run->in_eof = true;
			res = sm_head_finish(&run->head);
		} else {
			res = sm_head_feed(&run->head, in, (size_t)n);
		}
	}
	if (res == SM_ERROR) {
		sm_err("the header section is larger than %d KiB (or out of "
		    "memory)", SM_HEAD_MAX / 1024);
		return EX_DATAERR;
	}
	return 0;
}

static int
sm_envelope(struct sm_run *run)
{
	struct sm_opts *o = run->o;
	char def[SM_ADDR_MAX + 1];

	snprintf(def, sizeof def, "%s@%s", sm_login(), run->host);
	snprintf(run->from_addr, sizeof run->from_addr, "%s", def);
	if (!o->from) {
		snprintf(run->sender, sizeof run->sender, "%s", def);
		return 0;
	}
	struct sm_one one = { .n = 0 };
	int bad = sm_addr_list(o->from, strlen(o->from), sm_one_add, &one);
	if (bad || one.n > 1) {
		sm_err("-f: not a single address");
		return EX_USAGE;
	}
	if (one.n == 0) {       /* "" or "<>": the null sender */
		run->sender[0] = '\0';
		return 0;
	}
	if (!sm_qualified(one.addr, strlen(one.addr))) {
		if (snprintf(run->sender, sizeof run->sender, "%s@%s",
		    one.addr, run->host) >= (int)sizeof run->sender) {
			sm_err("-f: address too long");
			return EX_USAGE;
		}
	} else {
		snprintf(run->sender, sizeof run->sender, "%s", one.addr);
	}
	snprintf(run->from_addr, sizeof run->from_addr, "%s", run->sender);
	return 0;
}

static int
sm_recipients(struct sm_run *run)
{
	struct sm_opts *o = run->o;
	const char *field;

	run->rcpts.domain = run->host;
	for (int i = 0; i < o->nargs; i++) {
		int bad = sm_addr_list(o->args[i], strlen(o->args[i]),
		    sm_rcpt_add, &run->rcpts);
		if (run->rcpts.oom)
			return EX_SOFTWARE;
		if (bad || run->rcpts.too_long) {
			sm_err("recipient argument %d: malformed address",
			    i + 1);
			return EX_USAGE;
		}
	}
	if (o->from_headers) {
		int bad = sm_head_recipients(&run->head, sm_rcpt_add,
		    &run->rcpts, &field);
		if (run->rcpts.oom)
			return EX_SOFTWARE;
		if (bad > 0 || run->rcpts.too_long) {
			sm_err("-t: malformed address in the %s: header; "
			    "nothing was sent", field ? field : "recipient");
			return EX_DATAERR;
		}
	}
	if (run->rcpts.too_many) {
		sm_err("more than %d recipients", SM_MAX_RCPT);
		return EX_DATAERR;
	}
	if (run->rcpts.n == 0) {
		sm_err("no recipients%s", o->from_headers ?
		    " in To:, Cc: or Bcc:" : "");
		return EX_DATAERR;
	}
	return 0;
}

static double
sm_step_timeout(void)
{
	const char *v = getenv("RELAY25_SUBMIT_TIMEOUT");
	char *end;
	double d;

	if (!v || !*v)
		return SM_STEP_DEFAULT;
	d = strtod(v, &end);
	if (*end || !(d > 0) || d > 86400) {
		sm_err("RELAY25_SUBMIT_TIMEOUT: not a number of seconds; "
		    "using %g", SM_STEP_DEFAULT);
		return SM_STEP_DEFAULT;
	}
	return d;
}

int
main(int argc, char **argv)
{
	static struct sm_run run;
	struct sm_opts o;
	char why[512];
	int rc;

	signal(SIGPIPE, SIG_IGN);
	if ((rc = sm_parse_args(argc, argv, &o)))
		return rc;
	run.o = &o;
	run.smtp.fd = -1;
	run.smtp.verbose = o.verbose;
	run.smtp.step = sm_step_timeout();
	sm_hostname(run.host, sizeof run.host);
	if (sm_conf_target(o.config, &run.target, why, sizeof why) < 0) {
		sm_err("%s", why);
		return EX_CONFIG;
	}
	if (o.mode == MODE_SMTP) {
		rc = sm_smtp_mode(&run);
		sm_smtp_close(&run.smtp);
		return rc;
	}
	if (o.nargs == 0 && !o.from_headers) {
		sm_err("no recipients: name them, or use -t");
		sm_usage();
		return EX_USAGE;
	}
	if ((rc = sm_envelope(&run)))
		return rc;
	sm_head_init(&run.head, o.dot_ends, SM_HEAD_MAX);
	if (!(rc = sm_read_head(&run)) && !(rc = sm_recipients(&run))) {
		run.smtp.deadline = sm_now() + run.smtp.step * SM_SESSION_STEPS;
		rc = sm_submit(&run);
	}
	sm_smtp_close(&run.smtp);
	sm_head_free(&run.head);
	sm_rcpts_free(&run.rcpts);
	return rc;
}
