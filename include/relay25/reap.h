/*
 * reap.h - deferred release. Objects that may be freed while one of their
 * callbacks is on the stack hand their memory to reap_later(); it is
 * released just before the loop blocks again, when no callback is running.
 */
#ifndef RELAY25_REAP_H
#define RELAY25_REAP_H

struct ev_loop;

void reap_init(struct ev_loop *);
void reap_later(void (*fn)(void *), void *ptr);
/* Run every pending release now (at exit, and in tests). */
void reap_run(void);

#endif
