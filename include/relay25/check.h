/*
 * check.h - `relay25 --check`: connect to every upstream in order (DNS,
 * TCP, TLS with certificate details, EHLO, AUTH), print each step in
 * plain words with a hint for the usual failures, never a secret.
 */
#ifndef RELAY25_CHECK_H
#define RELAY25_CHECK_H

#include <stdio.h>

struct setup;

/* Runs its own event loop (the default loop; call before any other use).
 * Returns 0 when every upstream passed, 1 otherwise. */
int check_run(struct setup *, FILE *out);

#endif
