/*
 * reap.c - deferred release. A list of (fn, ptr) pairs is run by an
 * ev_prepare watcher, i.e. just before the loop blocks again, when no other
 * callback is on the stack. The watcher is unreferenced so an idle relay
 * can exit; while releases are pending it holds one reference so the loop
 * runs once more and releases them before ev_run() returns.
 *
 * State is per thread: one loop per thread.
 */
#include <ev.h>
#include <stdbool.h>
#include <stdlib.h>

#include "relay25/reap.h"

struct reap_node {
	struct reap_node *next;
	void (*fn)(void *);
	void *ptr;
};

static _Thread_local struct {
	struct ev_loop *loop;
	ev_prepare prepare;
	struct reap_node *head;
	struct reap_node **tail;
	bool held;              /* we hold a loop reference for pending nodes */
} reap;

static void reap_release_all(void);

static void
reap_prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	reap_release_all();
}

void
reap_init(struct ev_loop *loop)
{
	if (reap.loop == loop)
		return;
	reap.loop = loop;
	if (reap.tail == NULL)
		reap.tail = &reap.head;
	reap.held = false;
	ev_prepare_init(&reap.prepare, reap_prepare_cb);
	ev_prepare_start(loop, &reap.prepare);
	ev_unref(loop);
	if (reap.head != NULL) {
		ev_ref(loop);
		reap.held = true;
	}
}

void
reap_later(void (*fn)(void *), void *ptr)
{
	struct reap_node *n;

	if (reap.tail == NULL)
		reap.tail = &reap.head;
	if ((n = malloc(sizeof(*n))) == NULL) {
		/* Releasing now could free memory a caller still uses;
		 * leaking is the safe failure. */
		return;
	}
	n->next = NULL;
	n->fn = fn;
	n->ptr = ptr;
	*reap.tail = n;
	reap.tail = &n->next;
	if (reap.loop != NULL && !reap.held) {
		ev_ref(reap.loop);
		reap.held = true;
	}
}

/* Release fn may queue more releases; loop until the list stays empty. */
static void
reap_release_all(void)
{
	struct reap_node *n;

	while ((n = reap.head) != NULL) {
		reap.head = NULL;
		reap.tail = &reap.head;
		while (n != NULL) {
			struct reap_node *next = n->next;

			n->fn(n->ptr);
			free(n);
			n = next;
		}
	}
	if (reap.held) {
		reap.held = false;
		ev_unref(reap.loop);
	}
}

void
reap_run(void)
{
	reap_release_all();
}
