/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "admin.h"
#include "audit.h"
#include "enforcer.h"
#include "util.h"

#define ADMIN_REQ_MAX 8192
#define ADMIN_CONNS 16
#define ADMIN_IDLE_MS 2000   /* a connection still silent this long gives its slot up when one is needed */
#define CAP_SYS_ADMIN_BIT 21

struct admin_conn {
	struct main_item item;   /* first: epoll data points here */
	bool used;
	uint64_t since_ms;       /* accepted at (monotonic) */
	char buf[ADMIN_REQ_MAX];
	size_t len;
};

struct admin {
	struct main_item item;
	int epfd;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct admin_conn conns[ADMIN_CONNS];
};

static int sock_path(const char *state_dir, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if ((size_t)snprintf(sa->sun_path, sizeof(sa->sun_path), "%s/admin.sock", state_dir) >=
	    sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	return 0;
}

int admin_open(struct admin **out, const char *state_dir, int epfd)
{
	struct admin *a = calloc(1, sizeof(*a));
	struct sockaddr_un sa;
	int fd, err;

	if (!a)
		return -ENOMEM;
	err = sock_path(state_dir, &sa);
	if (err) {
		free(a);
		return err;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		free(a);
		return -errno;
	}
	unlink(sa.sun_path);   /* a stale socket of a dead enforcer; we hold the lock */
	mode_t old = umask(0177);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 64)) {
		err = -errno;
		umask(old);
		close(fd);
		free(a);
		return err;
	}
	umask(old);
	snprintf(a->path, sizeof(a->path), "%s", sa.sun_path);
	a->epfd = epfd;
	a->item = (struct main_item){ .kind = MI_ADMIN, .fd = fd, .ptr = a };
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &a->item };
	epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
	*out = a;
	return 0;
}

static void conn_done(struct admin *a, struct admin_conn *c, bool close_fd)
{
	epoll_ctl(a->epfd, EPOLL_CTL_DEL, c->item.fd, NULL);
	if (close_fd)
		close(c->item.fd);
	c->used = false;
}

void admin_close(struct admin *a)
{
	if (!a)
		return;
	for (int i = 0; i < ADMIN_CONNS; i++)
		if (a->conns[i].used)
			conn_done(a, &a->conns[i], true);
	epoll_ctl(a->epfd, EPOLL_CTL_DEL, a->item.fd, NULL);
	close(a->item.fd);
	unlink(a->path);
	free(a);
}

/* Effective capabilities of pid include CAP_SYS_ADMIN. */
static bool has_sys_admin(int pid)
{
	char path[64], line[256];
	bool ok = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long caps;

		if (sscanf(line, "CapEff: %llx", &caps) == 1) {
			ok = caps & (1ull << CAP_SYS_ADMIN_BIT);
			break;
		}
	}
	fclose(f);
	return ok;
}

static const char *peer_refusal(int fd)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);
	char cg[4096];

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len))
		return "cannot identify peer";
	if (proc_cgroup2_path(cr.pid, cg, sizeof(cg)))
		return "cannot read the peer's cgroup (out of descriptors, or the peer exited)";
	if (enforcer_agent_of_cgroup(cg) >= 0)
		return "peer runs inside an agent cgroup";
	/* CapEff is relative to the peer's own user namespace: root of a child
	 * namespace has all of them there and none here. */
	char mine[64], theirs[64], p1[64];
	ssize_t a, b;
	snprintf(p1, sizeof(p1), "/proc/%d/ns/user", cr.pid);
	a = readlink("/proc/self/ns/user", mine, sizeof(mine) - 1);
	b = readlink(p1, theirs, sizeof(theirs) - 1);
	if (a <= 0 || b != a || memcmp(mine, theirs, a) != 0)
		return "peer is not in the enforcer's user namespace";
	if (!has_sys_admin(cr.pid))
		return "peer lacks CAP_SYS_ADMIN";
	return NULL;
}

static void reply(int fd, json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT);

	if (s) {
		size_t n = strlen(s);
		/* Blocking write of a bounded answer to a local peer. */
		int fl = fcntl(fd, F_GETFL);

		fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
		write_all(fd, s, n);
		write_all(fd, "\n", 1);
		fcntl(fd, F_SETFL, fl);
		free(s);
	}
	json_decref(j);
}

static json_t *err_json(const char *msg)
{
	return json_pack("{s:b, s:s}", "ok", 0, "error", msg);
}

/* Returns true when the fd was handed over (audit follower). */
static bool handle(struct admin_conn *c)
{
	json_error_t jerr;
	json_t *req = json_loadb(c->buf, c->len, JSON_REJECT_DUPLICATES, &jerr);
	const char *cmd = req ? json_string_value(json_object_get(req, "cmd")) : NULL;
	int fd = c->item.fd;

	if (!cmd) {
		reply(fd, err_json("malformed request"));
	} else if (strcmp(cmd, "status") == 0) {
		json_t *st = enforcer_status_json();

		json_object_set_new(st, "ok", json_true());
		reply(fd, st);
	} else if (strcmp(cmd, "audit_tail") == 0) {
		json_int_t n = json_integer_value(json_object_get(req, "n"));

		reply(fd, json_pack("{s:b, s:o}", "ok", 1, "events",
				    audit_recent(n > 0 && n <= AUDIT_RECENT ? (int)n : 20)));
		if (json_is_true(json_object_get(req, "follow"))) {
			fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
			audit_follow(fd);
			json_decref(req);
			return true;
		}
	} else if (strcmp(cmd, "reload") == 0) {
		struct ucred cr = { 0 };
		socklen_t cl = sizeof(cr);

		getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl);
		reply(fd, enforcer_reload(cr.pid, cr.uid));
	} else if (strcmp(cmd, "attach") == 0) {
		const char *agent = json_string_value(json_object_get(req, "agent"));
		const char *cg = json_string_value(json_object_get(req, "cgroup"));
		char msg[512];

		if (!agent || !cg)
			reply(fd, err_json("attach needs agent and cgroup"));
		else if (enforcer_attach_extra(agent, cg, msg, sizeof(msg)))
			reply(fd, err_json(msg));
		else
			reply(fd, json_pack("{s:b}", "ok", 1));
	} else {
		reply(fd, err_json("unknown command"));
	}
	json_decref(req);
	return false;
}

void admin_on_event(struct admin *a, void *item, uint32_t events)
{
	struct main_item *it = item;

	if (it->kind == MI_ADMIN) {
		for (;;) {
			int fd = accept4(a->item.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
			struct admin_conn *c = NULL;
			const char *why;

			if (fd < 0)
				return;
			why = peer_refusal(fd);
			if (why) {
				reply(fd, err_json(why));
				close(fd);
				continue;
			}
			uint64_t now = now_ns_mono() / 1000000ull;
			struct admin_conn *oldest = NULL;

			for (int i = 0; i < ADMIN_CONNS && !c; i++) {
				if (!a->conns[i].used)
					c = &a->conns[i];
				else if (!oldest || a->conns[i].since_ms < oldest->since_ms)
					oldest = &a->conns[i];
			}
			/* Every slot waits for a request line (a client sends its
			 * own at once): one that has waited a while gives its slot
			 * up, so clients that connect and say nothing cannot keep
			 * status, reload and stop out. */
			if (!c && oldest && now - oldest->since_ms >= ADMIN_IDLE_MS) {
				conn_done(a, oldest, true);
				c = oldest;
			}
			if (!c) {
				close(fd);
				continue;
			}
			c->used = true;
			c->since_ms = now;
			c->len = 0;
			c->item = (struct main_item){ .kind = MI_ADMIN_CONN, .fd = fd, .ptr = a };
			struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &c->item };
			epoll_ctl(a->epfd, EPOLL_CTL_ADD, fd, &ev);
		}
	}
	struct admin_conn *c = (struct admin_conn *)it;
	for (;;) {
		ssize_t n = read(c->item.fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);

		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			conn_done(a, c, true);
			return;
		}
		c->len += n;
		char *nl = memchr(c->buf, '\n', c->len);
		if (nl || c->len >= sizeof(c->buf) - 1) {
			bool handed;

			if (nl)
				c->len = nl - c->buf;
			handed = handle(c);
			conn_done(a, c, !handed);
			return;
		}
	}
}

int admin_connect(const char *state_dir)
{
	struct sockaddr_un sa;
	int fd, err = sock_path(state_dir, &sa);

	if (err)
		return err;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

json_t *admin_call(const char *state_dir, json_t *req)
{
	int fd = admin_connect(state_dir);
	char *s, buf[1 << 16];
	size_t len = 0;
	json_t *ans;

	if (fd < 0) {
		errno = -fd;
		return NULL;
	}
	s = json_dumps(req, JSON_COMPACT);
	/* A write error is not final: an enforcer that refuses this peer
	 * answers and closes before reading, and the answer says why. */
	if (s && write_all(fd, s, strlen(s)) == 0)
		write_all(fd, "\n", 1);
	free(s);
	char *big = NULL;
	size_t cap = 0;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n <= 0)
			break;
		if (len + n + 1 > cap) {
			cap = (len + n + 1) * 2;
			char *nb = realloc(big, cap);
			if (!nb)
				break;
			big = nb;
		}
		memcpy(big + len, buf, n);
		len += n;
		if (memchr(buf, '\n', n))
			break;
	}
	close(fd);
	ans = big ? json_loadb(big, len, 0, NULL) : NULL;
	free(big);
	if (!ans)
		errno = EPROTO;
	return ans;
}
