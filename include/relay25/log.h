/*
 * log.h - one-line log records, "key=value" style, to stderr or syslog.
 *
 * Nothing untrusted is logged raw: log_sanitize() turns client or server
 * text into printable ASCII. Secrets are never passed here; AUTH payloads
 * are logged as "********" by the callers.
 */
#ifndef RELAY25_LOG_H
#define RELAY25_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include "relay25/config.h"

void log_init(enum cfg_log_level, enum cfg_log_format, enum cfg_log_target);
void log_set_level(enum cfg_log_level);
enum cfg_log_level log_level(void);
int log_enabled(enum cfg_log_level);

void log_msg(enum cfg_log_level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void log_vmsg(enum cfg_log_level, const char *fmt, va_list)
    __attribute__((format(printf, 2, 0)));

#define log_error(...) log_msg(CFG_LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(CFG_LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(CFG_LOG_INFO, __VA_ARGS__)
#define log_debug(...) \
	do { if (log_enabled(CFG_LOG_DEBUG)) log_msg(CFG_LOG_DEBUG, __VA_ARGS__); } while (0)

/* Copy untrusted bytes as printable ASCII: '"' and '\\' escaped, others
 * outside 0x20..0x7e as \xHH; cut to fit (always NUL-terminated). Returns
 * dst. */
char *log_sanitize(char *dst, size_t dstlen, const char *src, size_t srclen);

#endif
