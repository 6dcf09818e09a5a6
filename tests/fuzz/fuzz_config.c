/*
 * fuzz_config.c - libFuzzer target: the configuration loader (INI file
 * through inih, our line reader, unquoting, every value parser, validation)
 * on arbitrary file contents, with an environment that holds no RELAY25_
 * variable. Checks: no crash, no leak (ASan/LSan), and a successful load
 * has at least one upstream and counts within their bounds; cfg_print()
 * of a loaded configuration works.
 *
 * cfg_load() takes a path, so each input is written to one memfd made
 * once per process and passed as /proc/self/fd/N.
 *
 * Inputs that could make cfg_load() touch the system are refused:
 * password_command runs `sh -c`, and password_file reads any file, so an
 * input naming password_command at all, or password_file with any value
 * but exactly /dev/null, is skipped (case-insensitively, on raw bytes, so
 * no spelling the parser accepts gets through).
 */
#include <assert.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "relay25/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int memfd = -1;
static char path[64];
static FILE *sink;

/* The file lives in a memfd (no directory to clean up, whatever way
 * libFuzzer exits); cfg_load() opens it by its /proc/self/fd path. */
static void setup(void)
{
	memfd = memfd_create("relay25-fuzz-config", MFD_CLOEXEC);
	if (memfd < 0) {
		perror("fuzz_config: memfd_create");
		abort();
	}
	snprintf(path, sizeof path, "/proc/self/fd/%d", memfd);
	sink = fopen("/dev/null", "we");
	if (!sink)
		abort();
}

static int lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/* Offset of the first case-insensitive occurrence of needle at or after
 * from, or -1. */
static long find_ci(const uint8_t *s, size_t n, size_t from, const char *needle)
{
	size_t m = strlen(needle);

	for (size_t i = from; i + m <= n; i++) {
		size_t j = 0;
		while (j < m && lower(s[i + j]) == needle[j])
			j++;
		if (j == m)
			return (long)i;
	}
	return -1;
}

/* Could this input run a command or read a file other than /dev/null? */
static int dangerous(const uint8_t *s, size_t n)
{
	static const char pf[] = "password_file";
	long at;

	if (find_ci(s, n, 0, "password_command") >= 0)
		return 1;
	for (size_t from = 0; (at = find_ci(s, n, from, pf)) >= 0;
	    from = (size_t)at + 1) {
		size_t i = (size_t)at + sizeof pf - 1;
		while (i < n && (s[i] == ' ' || s[i] == '\t'))
			i++;
		if (i >= n || (s[i] != '=' && s[i] != ':'))
			return 1;
		i++;
		while (i < n && (s[i] == ' ' || s[i] == '\t'))
			i++;
		if (n - i < 9 || memcmp(s + i, "/dev/null", 9) != 0)
			return 1;
		i += 9;
		while (i < n && (s[i] == ' ' || s[i] == '\t'))
			i++;
		if (i < n && s[i] == '\r')
			i++;
		if (i < n && s[i] != '\n')
			return 1;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char *const envp[] = { "PATH=/usr/bin:/bin", "HOME=/nonexistent",
	    "FUZZ_PASSWORD=fuzz-secret", NULL };
	struct cfg *cfg;

	if (size > 256 * 1024 || dangerous(data, size))
		return -1;      /* not added to the corpus */
	if (memfd < 0)
		setup();
	if (ftruncate(memfd, 0) < 0) {
		perror("fuzz_config: ftruncate");
		abort();
	}
	for (size_t off = 0; off < size;) {
		ssize_t w = pwrite(memfd, data + off, size - off, (off_t)off);
		if (w <= 0) {
			perror("fuzz_config: pwrite");
			abort();
		}
		off += (size_t)w;
	}

	cfg = cfg_load(path, envp, sink, sink);
	if (cfg) {
		assert(cfg->nupstream >= 1 && cfg->nupstream <= CFG_MAX_UPSTREAMS);
		assert(cfg->nlisten <= CFG_MAX_LISTEN);
		assert(cfg->nallow <= CFG_MAX_ALLOW);
		assert(cfg->path && strcmp(cfg->path, path) == 0);
		for (size_t i = 0; i < cfg->nupstream; i++) {
			const struct cfg_upstream *u = &cfg->upstream[i];
			assert(u->name && u->host && *u->host);
			assert(u->password_command == NULL);
			assert(u->tls_min_version == 12 || u->tls_min_version == 13);
		}
		cfg_print(cfg, sink);
		cfg_free(cfg);
	}
	return 0;
}
