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

/* Append src[0..n) to a JSON string body (escaping). Returns the new
 * length, or stops short at cap. */
static size_t
json_put(char *out, size_t o, size_t cap, const char *src, size_t n)
{
	for (size_t i = 0; i < n && o + 7 < cap; i++) {
		unsigned char ch = (unsigned char)src[i];
		if (ch == '"' || ch == '\\') {
			out[o++] = '\\';
			out[o++] = (char)ch;
		} else if (ch < 0x20 || ch == 0x7f)
			o += (size_t)snprintf(out + o, cap - o, "\\u%04x", ch);
		else
			out[o++] = (char)ch;
	}
	return o;
}

/* A "key=" token: lower-case letters, digits and '_' before '='. */
static size_t
kv_key_len(const char *p)
{
	size_t n = 0;

	while ((p[n] >= 'a' && p[n] <= 'z') || p[n] == '_' ||
	    (n > 0 && p[n] >= '0' && p[n] <= '9'))
		n++;
	return n > 0 && p[n] == '=' ? n : 0;
}

/*
 * One JSON object per record: {"ts":..,"level":..,"key":"value",...,
 * "msg":".."}. Leading key=value tokens (values may be "quoted", with \"
 * inside) become fields; the rest of the line, if any, is "msg". Callers
 * already sanitised what came from the network.
 */
static void
write_json(FILE *f, const char *ts, enum cfg_log_level level, const char *msg)
{
	char out[10240];
	size_t o = 0, cap = sizeof(out) - 4;
	const char *p = msg;

	o += (size_t)snprintf(out, sizeof(out), "{\"ts\":\"%s\",\"level\":\"%s\"",
	    ts, level_names[level]);
	for (;;) {
		size_t k;

		while (*p == ' ')
			p++;
		if (*p == '\0' || (k = kv_key_len(p)) == 0)
			break;
		out[o++] = ',';
		out[o++] = '"';
		o = json_put(out, o, cap, p, k);
		memcpy(out + o, "\":\"", 3);
		o += 3;
		p += k + 1;
		if (*p == '"') {           /* quoted value, \" and \\ inside */
			const char *v = ++p;
			while (*p != '\0' && *p != '"') {
				if (*p == '\\' && p[1] != '\0')
					p++;
				p++;
			}
			/* keep the value as written, unescaping \" and \\ */
			for (const char *q = v; q < p && o + 8 < cap; q++) {
				if (*q == '\\' && q + 1 < p &&
				    (q[1] == '"' || q[1] == '\\'))
					q++;
				o = json_put(out, o, cap, q, 1);
			}
			if (*p == '"')
				p++;
		} else {
			size_t n = strcspn(p, " ");
			o = json_put(out, o, cap, p, n);
			p += n;
		}
		out[o++] = '"';
		if (o + 16 >= cap)
			break;
	}
	if (*p != '\0') {
		memcpy(out + o, ",\"msg\":\"", 8);
		o += 8;
		o = json_put(out, o, cap, p, strlen(p));
		out[o++] = '"';
	}
	out[o++] = '}';
	out[o++] = '\n';
	fwrite(out, 1, o, f);
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
