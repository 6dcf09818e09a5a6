/*
 * listener.c - listening sockets, accept, access control, connection
 * limits (total and per source address), and the registry of live
 * sessions used at shutdown.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <ev.h>

#include "relay25/listener.h"
#include "relay25/log.h"
#include "relay25/metrics.h"
#include "relay25/sockact.h"
#include "relay25/session.h"
#include "relay25/setup.h"

#define ACCEPT_BURST 64
#define IP_BUCKETS 1024

struct listen_sock {
	ev_io io;
	struct server *srv;
	int fd;
	char text[64];
};

struct ip_count {
	struct ip_count *next;
	uint8_t key[17];           /* family byte + address */
	unsigned count;
};

struct server {
	struct ev_loop *loop;
	struct setup *setup;
	struct listen_sock ls[CFG_MAX_LISTEN];
	size_t nls;
	bool accepting;
	struct session **sessions;
	size_t nsessions, cap;
	struct ip_count *ips[IP_BUCKETS];
	struct spool *spool;          /* not owned */
};

#define container_of(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

/* ---- per source address counts ------------------------------------ */

static size_t
ip_key(const struct sockaddr *sa, uint8_t key[17])
{
	memset(key, 0, 17);
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)sa;
		key[0] = 4;
		memcpy(key + 1, &in->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)sa;
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
			key[0] = 4;
			memcpy(key + 1, &in6->sin6_addr.s6_addr[12], 4);
		} else {
			key[0] = 6;
			memcpy(key + 1, &in6->sin6_addr, 16);
		}
	}
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < 17; i++)
		h = (h ^ key[i]) * 16777619u;
	return h % IP_BUCKETS;
}

static struct ip_count *
ip_find(struct server *srv, const struct sockaddr *sa, bool create)
{
	uint8_t key[17];
	size_t b = ip_key(sa, key);
	struct ip_count *e;

	for (e = srv->ips[b]; e != NULL; e = e->next)
		if (memcmp(e->key, key, sizeof(key)) == 0)
			return e;
	if (!create || (e = calloc(1, sizeof(*e))) == NULL)
		return NULL;
	memcpy(e->key, key, sizeof(key));
	e->next = srv->ips[b];
	srv->ips[b] = e;
	return e;
}

static void
ip_release(struct server *srv, const struct sockaddr *sa)
{
	uint8_t key[17];
	size_t b = ip_key(sa, key);

	for (struct ip_count **pp = &srv->ips[b]; *pp != NULL;
	    pp = &(*pp)->next) {
		struct ip_count *e = *pp;
		if (memcmp(e->key, key, sizeof(key)) != 0)
			continue;
		if (--e->count == 0) {
			*pp = e->next;
			free(e);
		}
		return;
	}
}

/* ---- accept ----------------------------------------------------------- */

/* Refuse with a one-line reply; best effort, the socket is non-blocking. */
static void
refuse(int fd, const char *reply)
{
	ssize_t n = send(fd, reply, strlen(reply), MSG_NOSIGNAL | MSG_DONTWAIT);
	(void)n;
	close(fd);
}

static void
server_accept_one(struct server *srv, int fd, const struct sockaddr *sa)
{
	const struct cfg *cfg = srv->setup->cfg;
	struct ip_count *ipc;
	char addr[64] = "?";

	if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) {
		struct sockaddr_storage tmp;
		memcpy(&tmp, sa, sa->sa_family == AF_INET ?
		    sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
		getnameinfo((const struct sockaddr *)&tmp, sizeof(tmp), addr,
		    sizeof(addr), NULL, 0, NI_NUMERICHOST);
	}
	if (!cfg_allowed(cfg, sa)) {
		metrics_session_refused(METRICS_REFUSED_NOT_ALLOWED);
		log_warn("client=%s refused: not in allow list", addr);
		refuse(fd, "554 5.7.1 Access denied\r\n");
		return;
	}
	if (srv->nsessions >= cfg->max_clients) {
		metrics_session_refused(METRICS_REFUSED_MAX_CLIENTS);
		log_warn("client=%s refused: max_clients (%u) reached", addr,
		    cfg->max_clients);
		refuse(fd, "421 4.7.0 Too many connections, try again later\r\n");
		return;
	}
	ipc = ip_find(srv, sa, true);
	if (ipc == NULL) {
		refuse(fd, "421 4.3.0 Out of memory, try again later\r\n");
		return;
	}
	if (ipc->count >= cfg->max_clients_per_ip) {
		metrics_session_refused(METRICS_REFUSED_MAX_CLIENTS_PER_IP);
		log_warn("client=%s refused: max_clients_per_ip (%u) reached",
		    addr, cfg->max_clients_per_ip);
		refuse(fd, "421 4.7.0 Too many connections from your address, "
		    "try again later\r\n");
		return;
	}
	ipc->count++;
	/* On failure session_new has closed fd and released the count. */
	session_new(srv, srv->setup, fd);
}

static void
server_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listen_sock *l = container_of(w, struct listen_sock, io);
	struct server *srv = l->srv;

	(void)loop;
	(void)revents;
	for (int i = 0; i < ACCEPT_BURST && srv->accepting; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK ||
			    errno == EINTR || errno == ECONNABORTED)
				return;
			log_error("accept on %s: %s", l->text, strerror(errno));
			return;
		}
		server_accept_one(srv, fd, (struct sockaddr *)&ss);
	}
}

/* ---- lifecycle -------------------------------------------------------- */

static int
listen_on(const struct cfg_addr *a)
{
	int fd, one = 1;

	fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (a->sa.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&a->sa, a->salen) < 0 ||
	    listen(fd, 511) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

struct server *
server_new(struct ev_loop *loop, struct setup *setup)
{
	struct server *srv = calloc(1, sizeof(*srv));
	const struct cfg *cfg = setup->cfg;

	if (srv == NULL)
		return NULL;
	srv->loop = loop;
	srv->setup = setup_ref(setup);
	/* systemd socket activation: the listeners are inherited. */
	int fds[CFG_MAX_LISTEN];
	int nfds = sockact_fds(fds, CFG_MAX_LISTEN);
	if (nfds < 0) {
		server_free(srv);
		return NULL;
	}
	for (int i = 0; i < nfds; i++) {
		struct listen_sock *l = &srv->ls[srv->nls++];
		l->fd = fds[i];
		l->srv = srv;
		sockact_describe(fds[i], l->text, sizeof(l->text));
		ev_io_init(&l->io, server_accept_cb, fds[i], EV_READ);
	}
	for (size_t i = 0; nfds == 0 && i < cfg->nlisten; i++) {
		struct listen_sock *l = &srv->ls[srv->nls];
		int fd = listen_on(&cfg->listen[i]);

		if (fd < 0) {
			log_error("cannot listen on %s: %s%s", cfg->listen[i].text,
			    strerror(errno), errno == EACCES ?
			    " (ports below 1024 need root or "
			    "CAP_NET_BIND_SERVICE)" : "");
			server_free(srv);
			return NULL;
		}
		l->fd = fd;
		l->srv = srv;
		/* The bound address, so port 0 shows the port chosen. */
		sockact_describe(fd, l->text, sizeof(l->text));
		ev_io_init(&l->io, server_accept_cb, fd, EV_READ);
		srv->nls++;
	}
	return srv;
}

void
server_start(struct server *srv)
{
	srv->accepting = true;
	for (size_t i = 0; i < srv->nls; i++) {
		ev_io_start(srv->loop, &srv->ls[i].io);
		log_info("listening on %s", srv->ls[i].text);
	}
}

void
server_stop_accepting(struct server *srv)
{
	srv->accepting = false;
	for (size_t i = 0; i < srv->nls; i++) {
		ev_io_stop(srv->loop, &srv->ls[i].io);
		if (srv->ls[i].fd >= 0)
			close(srv->ls[i].fd);
		srv->ls[i].fd = -1;
	}
	srv->nls = 0;
}

void
server_set_setup(struct server *srv, struct setup *setup)
{
	struct setup *old = srv->setup;

	srv->setup = setup_ref(setup);
	setup_unref(old);
}

struct setup *
server_setup(struct server *srv)
{
	return srv->setup;
}

void
server_set_spool(struct server *srv, struct spool *sp)
{
	srv->spool = sp;
}

struct spool *
server_spool(struct server *srv)
{
	return srv->spool;
}

struct ev_loop *
server_loop(struct server *srv)
{
	return srv->loop;
}

size_t
server_sessions(const struct server *srv)
{
	return srv->nsessions;
}

void
server_session_add(struct server *srv, struct session *s)
{
	metrics_session_active(1);
	if (srv->nsessions == srv->cap) {
		size_t ncap = srv->cap ? srv->cap * 2 : 64;
		struct session **n = realloc(srv->sessions,
		    ncap * sizeof(*n));
		if (n == NULL)
			return;   /* not tracked: only shutdown misses it */
		srv->sessions = n;
		srv->cap = ncap;
	}
	srv->sessions[srv->nsessions++] = s;
}

void
server_session_gone(struct server *srv, struct session *s,
    const struct sockaddr *peer)
{
	if (s != NULL)
		metrics_session_active(-1);
	for (size_t i = 0; i < srv->nsessions; i++) {
		if (srv->sessions[i] == s) {
			srv->sessions[i] = srv->sessions[--srv->nsessions];
			break;
		}
	}
	if (peer->sa_family == AF_INET || peer->sa_family == AF_INET6)
		ip_release(srv, peer);
}

void
server_shutdown_sessions(struct server *srv)
{
	while (srv->nsessions > 0)
		session_shutdown(srv->sessions[srv->nsessions - 1]);
}

void
server_free(struct server *srv)
{
	if (srv == NULL)
		return;
	for (size_t i = 0; i < srv->nls; i++) {
		ev_io_stop(srv->loop, &srv->ls[i].io);
		if (srv->ls[i].fd >= 0)
			close(srv->ls[i].fd);
	}
	for (size_t b = 0; b < IP_BUCKETS; b++) {
		while (srv->ips[b] != NULL) {
			struct ip_count *e = srv->ips[b];
			srv->ips[b] = e->next;
			free(e);
		}
	}
	free(srv->sessions);
	setup_unref(srv->setup);
	free(srv);
}
