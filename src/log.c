/*
 * log.c - log records to stderr (text) or syslog(3).
 */
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "relay25/log.h"

static enum cfg_log_level cur_level = CFG_LOG_INFO;
static enum cfg_log_format cur_format = CFG_LOG_TEXT;
static enum cfg_log_target cur_target = CFG_LOG_STDERR;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void
log_init(enum cfg_log_level level, enum cfg_log_format format,
    enum cfg_log_target target)
{
	if (cur_target == CFG_LOG_SYSLOG && target != CFG_LOG_SYSLOG)
		closelog();
	cur_level = level;
	cur_format = format;
	if (target == CFG_LOG_SYSLOG && cur_target != CFG_LOG_SYSLOG)
		openlog("relay25", LOG_PID | LOG_NDELAY, LOG_MAIL);
	cur_target = target;
}

void
log_set_level(enum cfg_log_level level)
{
	cur_level = level;
}

enum cfg_log_level
log_level(void)
{
	return cur_level;
}

int
log_enabled(enum cfg_log_level level)
{
	return level <= cur_level;
}

static int
syslog_priority(enum cfg_log_level level)
{
	switch (level) {
	case CFG_LOG_ERROR: return LOG_ERR;
	case CFG_LOG_WARN: return LOG_WARNING;
	case CFG_LOG_INFO: return LOG_INFO;
	default: return LOG_DEBUG;
	}
}

/* JSON: {"ts":"...","level":"info","msg":"<the key=value text>"}. The
 * text is already printable ASCII with '"' and '\\' escaped by callers
 * that log untrusted input; escape once more here for JSON safety. */
static void
write_json(FILE *f, const char *ts, enum cfg_log_level level, const char *msg)
{
	char esc[8192];
	size_t o = 0;

	for (const char *p = msg; *p != '\0' && o + 7 < sizeof(esc); p++) {
		unsigned char ch = (unsigned char)*p;
		if (ch == '"' || ch == '\\') {
			esc[o++] = '\\';
			esc[o++] = (char)ch;
		} else if (ch < 0x20) {
			o += (size_t)snprintf(esc + o, sizeof(esc) - o,
			    "\\u%04x", ch);
		} else
			esc[o++] = (char)ch;
	}
	esc[o] = '\0';
	fprintf(f, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"%s\"}\n", ts,
	    level_names[level], esc);
}

void
log_vmsg(enum cfg_log_level level, const char *fmt, va_list ap)
{
	char msg[4096], ts[96];
	struct timespec now;
	struct tm tm;

	if (!log_enabled(level))
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (cur_target == CFG_LOG_SYSLOG) {
		syslog(syslog_priority(level), "%s", msg);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000);
	if (cur_format == CFG_LOG_JSON)
		write_json(stderr, ts, level, msg);
	else
		fprintf(stderr, "%s %s %s\n", ts, level_names[level], msg);
}

void
log_msg(enum cfg_log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}

char *
log_sanitize(char *dst, size_t dstlen, const char *src, size_t srclen)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (dstlen == 0)
		return dst;
	for (size_t i = 0; i < srclen; i++) {
		unsigned char ch = (unsigned char)src[i];
		if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
			if (o + 1 >= dstlen)
				break;
			dst[o++] = (char)ch;
		} else if (ch == '"' || ch == '\\') {
			if (o + 2 >= dstlen)
				break;
			dst[o++] = '\\';
			dst[o++] = (char)ch;
		} else {
			if (o + 4 >= dstlen)
				break;
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[ch >> 4];
			dst[o++] = hex[ch & 15];
		}
	}
	dst[o] = '\0';
	return dst;
}
