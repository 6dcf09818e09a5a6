/*
 * session.c - the client leg: an SMTP server state machine.
 *
 * Commands are taken one at a time from the input buffer, so replies go
 * out in order under any pipelining or segmentation. Local commands are
 * answered at once; MAIL, RCPT, DATA and RSET go to the relay, and the
 * session waits (input paused) until the relay hands back the upstream's
 * reply.
 *
 * With auth_users_file set, the session also serves AUTH PLAIN and AUTH
 * LOGIN (RFC 4954): the client's responses to 334 challenges arrive
 * through the same line framing and are taken in state AUTH. MAIL waits
 * for a successful AUTH; allowed_senders is checked on every MAIL.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <ev.h>

#include "relay25/auth.h"
#include "relay25/conn.h"
#include "relay25/envelope.h"
#include "relay25/inbound_auth.h"
#include "relay25/listener.h"
#include "relay25/log.h"
#include "relay25/metrics.h"
#include "relay25/policy.h"
#include "relay25/reap.h"
#include "relay25/relay.h"
#include "relay25/session.h"
#include "relay25/setup.h"
#include "relay25/smtp_parse.h"

#define SESSION_IN_MAX   (16 * 1024)
#define SESSION_OUT_MAX  (16 * 1024)
#define SESSION_OUT_LOW  (8 * 1024)     /* room needed to take a command */
#define SESSION_MAX_ERRORS 20
/* A decoded SASL response: the longest line's base64, decoded. */
#define SESSION_SASL_MAX (SMTP_LINE_MAX / 4 * 3)

enum session_state {
	S_CMD,      /* reading commands */
	S_AUTH,     /* reading the response to a 334 AUTH challenge */
	S_WAIT,     /* a command is with the relay; input paused */
	S_DATA,     /* streaming the body through the relay */
	S_CLOSING,  /* final reply queued; closing after flush */
	S_DEAD,
};

static const char *const session_state_names[] = {
	"CMD", "AUTH", "WAIT", "DATA", "CLOSING", "DEAD",
};

/* In S_AUTH: what the next line from the client is. */
enum session_sasl {
	SASL_PLAIN,         /* the PLAIN message */
	SASL_LOGIN_USER,    /* LOGIN: the user name */
	SASL_LOGIN_PASS,    /* LOGIN: the password */
};

struct session {
	struct server *srv;
	struct setup *setup;
	struct conn *conn;
	struct relay *relay;
	enum session_state state;
	struct smtp_line_state ls;
	struct sockaddr_storage peer;
	enum smtp_verb waiting;       /* command the relay is answering */
	bool greeted;                 /* HELO/EHLO seen */
	bool mail;                    /* MAIL accepted */
	unsigned rcpts_ok;
	unsigned rcpts_tried;
	unsigned errors;
	bool authed;                  /* AUTH succeeded (kept across RSET, EHLO) */
	enum session_sasl sasl;       /* in S_AUTH */
	char sasl_user[INBOUND_USER_MAX + 1]; /* AUTH LOGIN, between the steps */
	size_t sasl_user_len;
	char id[16];
	char addr[64];
};

struct session_cmd {
	enum smtp_verb verb;
	void (*proceed)(struct session *, const char *arg, size_t len);
};

static void session_close(struct session *, bool quit);
static void session_process(struct session *);

static const char *
session_state_name(enum session_state s)
{
	return session_state_names[s];
}

static void
session_enter_state(struct session *s, enum session_state st)
{
	if (s->state == st)
		return;
	log_debug("session=%s state %s -> %s", s->id,
	    session_state_name(s->state), session_state_name(st));
	s->state = st;
}

static void
session_reply(struct session *s, const char *text)
{
	char shown[200];

	if (log_enabled(CFG_LOG_DEBUG))
		log_debug("session=%s >>> %s", s->id, log_sanitize(shown,
		    sizeof(shown), text, strcspn(text, "\r\n")));
	if (conn_write(s->conn, text, strlen(text)) < 0) {
		log_warn("session=%s client=%s not reading its replies; closing",
		    s->id, s->addr);
		session_close(s, false);
	}
}

/* Count a client error; after too many, say 421 and close. Returns false
 * if the session is closing. */
static bool
session_error(struct session *s, const char *text)
{
	session_reply(s, text);
	if (s->state == S_DEAD)
		return false;
	if (++s->errors >= SESSION_MAX_ERRORS) {
		log_warn("session=%s client=%s too many errors; closing", s->id,
		    s->addr);
		session_reply(s, "421 4.7.0 Too many errors, closing connection\r\n");
		session_close(s, false);
		return false;
	}
	return true;
}

/* Is the session taking command lines (commands or AUTH responses)? */
static bool
session_reading(const struct session *s)
{
	return s->state == S_CMD || s->state == S_AUTH;
}

static void
session_tx_reset(struct session *s)
{
	s->mail = false;
	s->rcpts_ok = 0;
	s->rcpts_tried = 0;
}

/* ---- commands --------------------------------------------------------- */

static void
cmd_ehlo_helo(struct session *s, const char *arg, size_t len, bool ehlo)
{
	const struct cfg *cfg = s->setup->cfg;
	char buf[512];
	int n;

	if (len == 0 || memchr(arg, ' ', len) != NULL) {
		session_error(s, "501 5.5.4 Syntax: EHLO hostname\r\n");
		return;
	}
	if (s->mail) {
		/* RFC 5321 4.1.4: EHLO resets the transaction. */
		session_tx_reset(s);
		relay_abandon(s->relay);
	}
	s->greeted = true;
	if (!ehlo) {
		n = snprintf(buf, sizeof(buf), "250 %s\r\n", cfg->hostname);
		if (n > 0 && (size_t)n < sizeof(buf))
			session_reply(s, buf);
		return;
	}
	n = snprintf(buf, sizeof(buf),
	    "250-%s\r\n250-PIPELINING\r\n250-SIZE %llu\r\n250-8BITMIME\r\n"
	    "%s%s%s250 ENHANCEDSTATUSCODES\r\n", cfg->hostname,
	    (unsigned long long)cfg->max_message_size,
	    setup_all_offer_smtputf8(s->setup) ? "250-SMTPUTF8\r\n" : "",
	    setup_all_offer_dsn(s->setup) ? "250-DSN\r\n" : "",
	    cfg->auth_users ? "250-AUTH PLAIN LOGIN\r\n" : "");
	if (n > 0 && (size_t)n < sizeof(buf))
		session_reply(s, buf);
}

static void
cmd_ehlo(struct session *s, const char *arg, size_t len)
{
	cmd_ehlo_helo(s, arg, len, true);
}

static void
cmd_helo(struct session *s, const char *arg, size_t len)
{
	cmd_ehlo_helo(s, arg, len, false);
}

static struct envelope_offer
session_offer(const struct session *s)
{
	struct envelope_offer o = {
		.smtputf8 = setup_all_offer_smtputf8(s->setup),
		.dsn = setup_all_offer_dsn(s->setup),
	};
	return o;
}

static void
cmd_mail(struct session *s, const char *arg, size_t len)
{
	struct smtp_path path;
	struct envelope_offer offer = session_offer(s);
	const struct smtp_param *size;
	const char *bad;
	char sender[SMTP_PATH_MAX + 1];

	if (s->mail) {
		session_error(s, "503 5.5.1 Error: nested MAIL command\r\n");
		return;
	}
	if (s->setup->cfg->auth_users && !s->authed) {
		session_error(s, "530 5.7.0 Authentication required\r\n");
		return;
	}
	if (smtp_path_parse(arg, len, "FROM:", true, &path) != SMTP_OK) {
		session_error(s, "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
		return;
	}
	if ((bad = envelope_check(&path, true, &offer)) != NULL) {
		session_error(s, bad);
		return;
	}
	if (!policy_sender_allowed(s->setup->cfg, path.addr, path.addr_len)) {
		log_warn("session=%s client=%s status=refused from=<%s> "
		    "reason=\"sender not in allowed_senders\"", s->id, s->addr,
		    log_sanitize(sender, sizeof(sender), path.addr,
		    path.addr_len));
		session_error(s, "550 5.7.1 Sender not allowed\r\n");
		return;
	}
	size = smtp_path_param(&path, "SIZE");
	if (size != NULL) {
		unsigned long long v = strtoull(size->val, NULL, 10);
		if (v > s->setup->cfg->max_message_size) {
			session_reply(s, "552 5.3.4 Message size exceeds fixed limit\r\n");
			return;
		}
	}
	log_sanitize(sender, sizeof(sender), path.addr, path.addr_len);
	session_enter_state(s, S_WAIT);
	s->waiting = SMTP_CMD_MAIL;
	if (s->relay == NULL && (s->relay = relay_new(server_loop(s->srv),
	    s->setup, server_spool(s->srv), s, s->conn, s->id,
	    s->addr)) == NULL) {
		session_reply(s, "451 4.3.0 Out of memory, try again later\r\n");
		session_enter_state(s, S_CMD);
		return;
	}
	relay_mail(s->relay, arg, len, sender);
}

static void
cmd_rcpt(struct session *s, const char *arg, size_t len)
{
	struct smtp_path path;
	struct envelope_offer offer = session_offer(s);
	const char *bad;

	if (!s->mail) {
		session_error(s, "503 5.5.1 Error: need MAIL command\r\n");
		return;
	}
	if (smtp_path_parse(arg, len, "TO:", false, &path) != SMTP_OK) {
		session_error(s, "501 5.5.4 Syntax: RCPT TO:<address>\r\n");
		return;
	}
	if ((bad = envelope_check(&path, false, &offer)) != NULL) {
		session_error(s, bad);
		return;
	}
	if (s->rcpts_ok >= s->setup->cfg->max_recipients) {
		session_reply(s, "452 4.5.3 Error: too many recipients\r\n");
		return;
	}
	s->rcpts_tried++;
	session_enter_state(s, S_WAIT);
	s->waiting = SMTP_CMD_RCPT;
	relay_rcpt(s->relay, arg, len);
}

static void
cmd_data(struct session *s, const char *arg, size_t len)
{
	(void)arg;
	if (len != 0) {
		session_error(s, "501 5.5.4 Syntax: DATA\r\n");
		return;
	}
	if (!s->mail) {
		session_error(s, "503 5.5.1 Error: need MAIL command\r\n");
		return;
	}
	if (s->rcpts_ok == 0) {
		session_error(s, "554 5.5.1 Error: no valid recipients\r\n");
		return;
	}
	session_enter_state(s, S_WAIT);
	s->waiting = SMTP_CMD_DATA;
	relay_data(s->relay);
}

static void
cmd_rset(struct session *s, const char *arg, size_t len)
{
	(void)arg;
	if (len != 0) {
		session_error(s, "501 5.5.4 Syntax: RSET\r\n");
		return;
	}
	session_tx_reset(s);
	if (s->relay == NULL) {         /* nothing upstream to reset */
		session_reply(s, "250 2.0.0 Ok\r\n");
		return;
	}
	session_enter_state(s, S_WAIT);
	s->waiting = SMTP_CMD_RSET;
	relay_rset(s->relay);
}

static void
cmd_noop(struct session *s, const char *arg, size_t len)
{
	(void)arg;
	(void)len;
	session_reply(s, "250 2.0.0 Ok\r\n");
}

static void
cmd_quit(struct session *s, const char *arg, size_t len)
{
	(void)arg;
	(void)len;
	session_reply(s, "221 2.0.0 Bye\r\n");
	if (s->state != S_DEAD)
		session_close(s, true);
}

static void
cmd_vrfy(struct session *s, const char *arg, size_t len)
{
	(void)arg;
	(void)len;
	session_reply(s, "252 2.5.0 Cannot VRFY user, but will accept message "
	    "and attempt delivery\r\n");
}

static void
cmd_help(struct session *s, const char *arg, size_t len)
{
	(void)arg;
	(void)len;
	session_reply(s, s->setup->cfg->auth_users ?
	    "214 2.0.0 Commands: HELO EHLO AUTH MAIL RCPT DATA RSET NOOP QUIT "
	    "VRFY HELP\r\n" :
	    "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT "
	    "VRFY HELP\r\n");
}

static void
cmd_not_offered(struct session *s, const char *arg, size_t len)
{
	(void)arg;
	(void)len;
	session_error(s, "502 5.5.1 Error: command not implemented\r\n");
}

/* ---- AUTH (RFC 4954; PLAIN RFC 4616, LOGIN) --------------------------- */

/* The exchange is over, one way or the other: back to commands, and the
 * LOGIN user name forgotten. */
static void
session_sasl_end(struct session *s)
{
	explicit_bzero(s->sasl_user, sizeof(s->sasl_user));
	s->sasl_user_len = 0;
	session_enter_state(s, S_CMD);
}

/* Send a 334 challenge and wait for the response line. */
static void
session_sasl_ask(struct session *s, enum session_sasl step, const char *text)
{
	s->sasl = step;
	session_enter_state(s, S_AUTH);
	session_reply(s, text);
}

/* Decode a base64 response ("=": an empty initial response). On bad
 * base64 ends the exchange with 501 5.5.2 and returns (size_t)-1. */
static size_t
session_sasl_decode(struct session *s, const char *in, size_t len,
    char *out, size_t outlen)
{
	size_t n;

	if (len == 1 && in[0] == '=')
		len = 0;
	n = auth_b64_decode(in, len, out, outlen);
	if (n == (size_t)-1) {
		session_sasl_end(s);
		session_error(s, "501 5.5.2 Error: invalid base64 data\r\n");
	}
	return n;
}

/* Check the credentials (unless refused already: why), end the exchange,
 * say 235 or 535 (an error). */
static void
session_sasl_check(struct session *s, const char *user, size_t ulen,
    const char *pass, size_t plen, const char *why)
{
	char shown[128];
	bool ok = why == NULL && inbound_verify(s->setup->cfg->auth_users,
	    user, ulen, pass, plen);

	log_sanitize(shown, sizeof(shown), user, ulen);
	session_sasl_end(s);
	if (ok) {
		s->authed = true;
		log_info("session=%s client=%s authenticated user=\"%s\"",
		    s->id, s->addr, shown);
		session_reply(s, "235 2.7.0 Authentication successful\r\n");
		return;
	}
	log_info("session=%s client=%s authentication failed user=\"%s\" "
	    "reason=\"%s\"", s->id, s->addr, shown,
	    why ? why : "credentials invalid");
	session_error(s, "535 5.7.8 Authentication credentials invalid\r\n");
}

static void
session_sasl_plain(struct session *s, const char *b64, size_t len)
{
	char dec[SESSION_SASL_MAX + 1];
	struct inbound_plain p;
	size_t n = session_sasl_decode(s, b64, len, dec, sizeof(dec));

	if (n == (size_t)-1)
		return;
	if (!inbound_plain_split(dec, n, &p)) {
		session_sasl_end(s);
		session_error(s, "501 5.5.2 Error: malformed PLAIN response\r\n");
	} else if (p.authzid_len != 0 && (p.authzid_len != p.user_len ||
	    memcmp(p.authzid, p.user, p.user_len) != 0)) {
		/* no proxy authorisation: acting as another user fails */
		session_sasl_check(s, p.user, p.user_len, NULL, 0,
		    "authorization identity differs from the user");
	} else {
		session_sasl_check(s, p.user, p.user_len, p.pass, p.pass_len,
		    NULL);
	}
	explicit_bzero(dec, sizeof(dec));
}

/* LOGIN: the user name (initial response or first step); ask for the
 * password. */
static void
session_sasl_login_user(struct session *s, const char *b64, size_t len)
{
	char dec[SESSION_SASL_MAX + 1];
	size_t n = session_sasl_decode(s, b64, len, dec, sizeof(dec));

	if (n == (size_t)-1)
		return;
	/* An over-long name is kept cut, one byte over INBOUND_USER_MAX: it
	 * never verifies, and the client learns that only after giving a
	 * password, like any other. */
	s->sasl_user_len = n < sizeof(s->sasl_user) ? n :
	    sizeof(s->sasl_user);
	memcpy(s->sasl_user, dec, s->sasl_user_len);
	explicit_bzero(dec, sizeof(dec));
	session_sasl_ask(s, SASL_LOGIN_PASS, "334 UGFzc3dvcmQ6\r\n");
}

static void
session_sasl_login_pass(struct session *s, const char *b64, size_t len)
{
	char dec[SESSION_SASL_MAX + 1];
	size_t n = session_sasl_decode(s, b64, len, dec, sizeof(dec));

	if (n == (size_t)-1)
		return;
	session_sasl_check(s, s->sasl_user, s->sasl_user_len, dec, n, NULL);
	explicit_bzero(dec, sizeof(dec));
}

/* A line in S_AUTH: the response to the last 334. Never logged. */
static void
session_sasl_line(struct session *s, const struct smtp_line *line)
{
	log_debug("session=%s <<< ********", s->id);
	if (line->too_long) {
		session_sasl_end(s);
		session_error(s, "500 5.5.6 Error: authentication exchange line "
		    "too long\r\n");
		return;
	}
	if (line->bare_eol && s->setup->cfg->bare_lf == CFG_BARE_LF_REJECT) {
		session_sasl_end(s);
		session_error(s, "500 5.5.2 Error: bare CR or LF in command\r\n");
		return;
	}
	if (line->len == 1 && line->ptr[0] == '*') {
		session_sasl_end(s);
		session_error(s, "501 5.0.0 Authentication cancelled\r\n");
		return;
	}
	switch (s->sasl) {
	case SASL_PLAIN:
		session_sasl_plain(s, line->ptr, line->len);
		break;
	case SASL_LOGIN_USER:
		session_sasl_login_user(s, line->ptr, line->len);
		break;
	case SASL_LOGIN_PASS:
		session_sasl_login_pass(s, line->ptr, line->len);
		break;
	}
}

static void
cmd_auth(struct session *s, const char *arg, size_t len)
{
	const char *sp, *resp = NULL;
	size_t mlen, rlen = 0;

	if (!s->setup->cfg->auth_users) {
		session_error(s, "502 5.5.1 Error: command not implemented\r\n");
		return;
	}
	if (!s->greeted) {
		session_error(s, "503 5.5.1 Error: send EHLO first\r\n");
		return;
	}
	if (s->authed) {
		session_error(s, "503 5.5.1 Error: already authenticated\r\n");
		return;
	}
	if (s->mail) {
		session_error(s, "503 5.5.1 Error: AUTH not permitted during a "
		    "mail transaction\r\n");
		return;
	}
	sp = memchr(arg, ' ', len);
	mlen = sp ? (size_t)(sp - arg) : len;
	if (sp) {
		resp = sp + 1;
		rlen = len - mlen - 1;
	}
	if (mlen == 0 || (sp && (rlen == 0 || memchr(resp, ' ', rlen)))) {
		session_error(s, "501 5.5.4 Syntax: AUTH mechanism "
		    "[initial-response]\r\n");
		return;
	}
	if (mlen == 5 && strncasecmp(arg, "PLAIN", 5) == 0) {
		if (resp)
			session_sasl_plain(s, resp, rlen);
		else
			session_sasl_ask(s, SASL_PLAIN, "334 \r\n");
	} else if (mlen == 5 && strncasecmp(arg, "LOGIN", 5) == 0) {
		if (resp)
			session_sasl_login_user(s, resp, rlen);
		else
			session_sasl_ask(s, SASL_LOGIN_USER,
			    "334 VXNlcm5hbWU6\r\n");
	} else {
		session_error(s, "504 5.5.4 Error: unrecognized authentication "
		    "type\r\n");
	}
}

static const struct session_cmd session_cmds[] = {
	{ SMTP_CMD_EHLO, cmd_ehlo },
	{ SMTP_CMD_HELO, cmd_helo },
	{ SMTP_CMD_MAIL, cmd_mail },
	{ SMTP_CMD_RCPT, cmd_rcpt },
	{ SMTP_CMD_DATA, cmd_data },
	{ SMTP_CMD_RSET, cmd_rset },
	{ SMTP_CMD_NOOP, cmd_noop },
	{ SMTP_CMD_QUIT, cmd_quit },
	{ SMTP_CMD_VRFY, cmd_vrfy },
	{ SMTP_CMD_HELP, cmd_help },
	{ SMTP_CMD_EXPN, cmd_not_offered },
	{ SMTP_CMD_AUTH, cmd_auth },
	{ SMTP_CMD_STARTTLS, cmd_not_offered },
	{ SMTP_CMD_BDAT, cmd_not_offered },
};

static void
session_command(struct session *s, const struct smtp_line *line)
{
	struct smtp_cmd cmd;
	enum smtp_res res;
	char shown[200];

	if (s->state == S_AUTH) {
		session_sasl_line(s, line);
		return;
	}
	if (line->too_long) {
		session_error(s, "500 5.5.2 Error: line too long\r\n");
		return;
	}
	if (line->has_nul) {
		session_error(s, "500 5.5.2 Error: NUL character in command\r\n");
		return;
	}
	if (line->bare_eol && s->setup->cfg->bare_lf == CFG_BARE_LF_REJECT) {
		session_error(s, "500 5.5.2 Error: bare CR or LF in command\r\n");
		return;
	}
	res = smtp_cmd_parse(line->ptr, line->len, &cmd);
	if (res == SMTP_OK && cmd.verb == SMTP_CMD_AUTH)
		log_debug("session=%s <<< AUTH ********", s->id);
	else if (log_enabled(CFG_LOG_DEBUG))
		log_debug("session=%s <<< %s", s->id, log_sanitize(shown,
		    sizeof(shown), line->ptr, line->len));
	if (res != SMTP_OK || cmd.verb == SMTP_CMD_UNKNOWN) {
		session_error(s, "500 5.5.1 Error: command not recognized\r\n");
		return;
	}
	for (size_t i = 0; i < sizeof(session_cmds) / sizeof(session_cmds[0]);
	    i++) {
		if (session_cmds[i].verb == cmd.verb) {
			session_cmds[i].proceed(s, cmd.arg, cmd.arg_len);
			return;
		}
	}
	session_error(s, "500 5.5.1 Error: command not recognized\r\n");
}

/* Take commands from the input buffer while the session may. */
static void
session_process(struct session *s)
{
	bool took = false;      /* a whole command was taken */

	while (session_reading(s) || s->state == S_DATA) {
		struct smtp_line line;
		size_t len, used = 0;
		const char *in;
		enum smtp_res res;

		if (s->state == S_DATA) {
			conn_set_timeout(s->conn, s->setup->cfg->data_timeout);
			if (relay_body(s->relay) && s->state == S_DATA)
				session_enter_state(s, S_WAIT);
			if (s->state == S_WAIT)
				conn_pause(s->conn);
			return;
		}
		if (conn_out_room(s->conn) < SESSION_OUT_LOW) {
			conn_pause(s->conn);      /* resumed on drain */
			return;
		}
		in = conn_in(s->conn, &len);
		if (len == 0)
			break;
		res = smtp_line_next(&s->ls, in, len, &line, &used);
		if (res != SMTP_OK) {
			conn_consume(s->conn, used);
			break;
		}
		session_command(s, &line);
		if (s->state == S_DEAD || s->state == S_CLOSING)
			return;
		took = true;
		conn_consume(s->conn, used);
		if (s->state == S_WAIT) {
			conn_pause(s->conn);
			conn_set_timeout(s->conn, 0);
			return;
		}
	}
	/* The timer runs from the last reply to the end of the next command
	 * line: bytes dripping in without completing a line do not re-arm
	 * it, so a slow-drip client cannot hold its slot. */
	if (session_reading(s) && took)
		conn_set_timeout(s->conn, s->setup->cfg->command_timeout);
}

void
session_relay_reply(struct session *s, const char *wire, size_t len)
{
	enum smtp_verb v = s->waiting;
	int code = len >= 3 ? (wire[0] - '0') * 100 + (wire[1] - '0') * 10 +
	    (wire[2] - '0') : 0;

	if (s->state == S_DEAD)
		return;
	s->waiting = SMTP_CMD_UNKNOWN;
	switch (v) {
	case SMTP_CMD_MAIL:
		s->mail = code >= 200 && code < 300;
		break;
	case SMTP_CMD_RCPT:
		if (code >= 200 && code < 300)
			s->rcpts_ok++;
		break;
	case SMTP_CMD_DATA:
		if (code == 354) {
			char shown[120];
			log_debug("session=%s >>> %s", s->id, log_sanitize(shown,
			    sizeof(shown), wire, strcspn(wire, "\r\n")));
			if (conn_write(s->conn, wire, len) < 0) {
				session_close(s, false);
				return;
			}
			session_enter_state(s, S_DATA);
			conn_resume(s->conn);
			return;
		}
		break;
	case SMTP_CMD_UNKNOWN:
		/* the end of data: the transaction is over either way */
		session_tx_reset(s);
		break;
	default:
		break;
	}
	{
		char shown[200];
		if (log_enabled(CFG_LOG_DEBUG))
			log_debug("session=%s >>> %s", s->id, log_sanitize(
			    shown, sizeof(shown), wire, strcspn(wire, "\r\n")));
	}
	if (conn_write(s->conn, wire, len) < 0) {
		session_close(s, false);
		return;
	}
	session_enter_state(s, S_CMD);
	conn_resume(s->conn);
	conn_set_timeout(s->conn, s->setup->cfg->command_timeout);
}

static void
session_release(void *p)
{
	free(p);
}

/* The one close path. quit: the client said QUIT (flush, polite upstream
 * QUIT); otherwise drop everything, no final dot upstream. */
static void
session_close(struct session *s, bool quit)
{
	if (s->state == S_DEAD || s->state == S_CLOSING)
		return;
	relay_free(s->relay, quit);
	s->relay = NULL;
	session_enter_state(s, S_CLOSING);
	conn_close_after_flush(s->conn);
	s->conn = NULL;
	server_session_gone(s->srv, s, (const struct sockaddr *)&s->peer);
	setup_unref(s->setup);
	s->setup = NULL;
	s->state = S_DEAD;
	reap_later(session_release, s);
}

void
session_shutdown(struct session *s)
{
	if (s->state == S_DEAD)
		return;
	session_reply(s, "421 4.3.2 Service shutting down, closing connection\r\n");
	session_close(s, false);
}

static void
session_conn_cb(struct conn *c, enum conn_event e, void *arg)
{
	struct session *s = arg;

	(void)c;
	if (s->state == S_DEAD)
		return;
	switch (e) {
	case CONN_READ:
		session_process(s);
		return;
	case CONN_DRAIN:
		if (session_reading(s))
			conn_resume(s->conn);
		return;
	case CONN_EOF:
		if (session_reading(s))
			session_process(s);   /* e.g. "QUIT" then close */
		if (s->state == S_DEAD)
			return;
		log_debug("session=%s client=%s closed the connection (state %s)",
		    s->id, s->addr, session_state_name(s->state));
		session_close(s, false);
		return;
	case CONN_ERROR:
		log_debug("session=%s client=%s error: %s", s->id, s->addr,
		    conn_error(c));
		session_close(s, false);
		return;
	case CONN_TIMEOUT:
		log_info("session=%s client=%s timeout in state %s", s->id,
		    s->addr, session_state_name(s->state));
		session_reply(s, "421 4.4.2 Timeout exceeded, closing connection\r\n");
		session_close(s, false);
		return;
	case CONN_CONNECTED:
	case CONN_TLS_READY:
		return;
	}
}

static unsigned long long session_counter;

struct session *
session_new(struct server *srv, struct setup *setup, int fd)
{
	struct session *s = calloc(1, sizeof(*s));
	socklen_t sl = sizeof(s->peer);
	char greeting[320], probe;
	ssize_t early;

	if (s == NULL) {
		struct sockaddr_storage ss;
		socklen_t l = sizeof(ss);
		if (getpeername(fd, (struct sockaddr *)&ss, &l) == 0)
			server_session_gone(srv, NULL, (struct sockaddr *)&ss);
		close(fd);
		return NULL;
	}
	s->srv = srv;
	s->setup = setup_ref(setup);
	s->state = S_CMD;
	s->waiting = SMTP_CMD_UNKNOWN;
	smtp_line_init(&s->ls, SMTP_LINE_MAX);
	if (session_counter == 0)   /* ids differ across restarts */
		session_counter = ((unsigned long long)time(NULL) << 20) ^
		    ((unsigned long long)getpid() << 4);
	snprintf(s->id, sizeof(s->id), "%012llx",
	    (++session_counter * 0x9e3779b97f4a7c15ULL) >> 16 & 0xffffffffffffULL);
	getpeername(fd, (struct sockaddr *)&s->peer, &sl);

	/* Bytes before the greeting: a client that does not wait for the
	 * server (spam-bot behaviour, or an attack on pipelining). */
	early = recv(fd, &probe, 1, MSG_PEEK | MSG_DONTWAIT);

	s->conn = conn_new(server_loop(srv), fd, SESSION_IN_MAX,
	    SESSION_OUT_MAX, session_conn_cb, s);
	if (s->conn == NULL) {
		close(fd);
		server_session_gone(srv, NULL, (struct sockaddr *)&s->peer);
		setup_unref(s->setup);
		free(s);
		return NULL;
	}
	snprintf(s->addr, sizeof(s->addr), "%s", conn_peer(s->conn));
	server_session_add(srv, s);
	log_debug("session=%s client=%s connected", s->id, s->addr);
	if (early > 0) {
		metrics_session_refused(METRICS_REFUSED_EARLY_TALKER);
		log_warn("session=%s client=%s talked before the greeting; "
		    "closing", s->id, s->addr);
		session_reply(s, "554 5.5.0 Error: talked before the greeting\r\n");
		session_close(s, false);
		return NULL;
	}
	metrics_session_accepted();
	snprintf(greeting, sizeof(greeting), "220 %s ESMTP relay25\r\n",
	    setup->cfg->hostname);
	session_reply(s, greeting);
	conn_set_timeout(s->conn, setup->cfg->command_timeout);
	return s;
}
