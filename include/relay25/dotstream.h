/*
 * dotstream.h - DATA framing between the client and the upstream.
 *
 * The decoder reads the client's raw DATA bytes and writes the wire form
 * for the upstream. End of data is decided on the raw bytes, before any
 * normalisation: it is only CR LF "." CR LF (the CR LF that ended the DATA
 * command counts, so ".\r\n" as the first line is an empty message).
 * Then, on the way out: bare CR and bare LF become CR LF, NUL bytes are
 * removed, and a line that consists of a single "." (possible only when its
 * terminators were not real CR LF, or a NUL was removed) is written as
 * "..", so the upstream never sees an end of data the decoder did not see.
 * Other lines pass as they are (a client's dot-stuffing stays stuffed).
 * The final ".\r\n" is not written: the caller sends it only when it
 * decides to commit the message.
 */
#ifndef RELAY25_DOTSTREAM_H
#define RELAY25_DOTSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum dot_res { DOT_AGAIN = 0, DOT_END = 1 };

struct dot_decoder {
	int state;               /* internal */
	bool raw_clean;          /* internal */
	bool reject_bare;        /* set by dot_init(): count, do not fix */
	uint64_t in_bytes;       /* raw bytes consumed, end marker included */
	uint64_t out_bytes;      /* bytes written for the upstream */
	uint64_t bare_eols;      /* bare CR/LF seen */
	uint64_t nuls;           /* NUL bytes removed */
};

/* reject_bare: bare CR/LF are still normalised in the output, but counted
 * so the caller can refuse the message at the end (bare_lf = reject). */
void dot_init(struct dot_decoder *, bool reject_bare);

/* Decode in[0..inlen) into out[0..outcap). Stops when the end of data is
 * found (DOT_END: *consumed includes the final CRLF.CRLF bytes, nothing of
 * what follows), when the input is used up, or when out has fewer than
 * DOT_OUT_RESERVE bytes free (DOT_AGAIN; call again with more room).
 * outcap must be at least DOT_OUT_RESERVE. */
#define DOT_OUT_RESERVE 8
enum dot_res dot_decode(struct dot_decoder *, const char *in, size_t inlen,
    size_t *consumed, char *out, size_t outcap, size_t *outlen);

#endif
