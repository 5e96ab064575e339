/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <bpf/libbpf.h>
#include <openssl/crypto.h>

#include "admin.h"
#include "audit.h"
#include "balance.h"
#include "conn.h"
#include "dns.h"
#include "enforcer.h"
#include "local_ca.h"
#include "loop.h"
#include "proto.h"
#include "sockdiag.h"
#include "util.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

/*
 * A pair entry is taken at accept(), or removed when its socket closes
 * abortively; older than E->pair_max_age_ns, it is left over and refused
 * (and swept). A graceful close leaves it for the accept while a FIN_WAIT2
 * time-wait socket holds the port, for the host's tcp_fin_timeout (the BPF
 * setsockopt hook refuses a TCP_LINGER2): honoured for longer, an
 * entry whose port went free could be taken by a process outside the agent
 * cgroups that binds it (case 12d). So the bound is AG_PAIR_MAX_AGE_S, or
 * less than tcp_fin_timeout where a host lowered it (tuning guides say 15
 * or 30 s), never under PAIR_MIN_AGE_MS (the kernel keeps FIN_WAIT2 at
 * least 3.5 retransmission timeouts: 0.7 s on loopback). Read again every
 * second: the sysctl can change while we run.
 */
#define PAIR_MIN_AGE_MS 500
#define PAIR_AGE_MARGIN_MS 200

/* How long a FIN_WAIT2 time-wait socket holds the port, in s: past 60 s
 * the kernel keeps the socket itself for fin - 60 s and then a time-wait
 * socket for as long again (tcp_close(), tcp_keepalive_timer()). */
static long fin_wait2_hold_s(long fin)
{
	return fin > 60 ? 2 * (fin - 60) : fin;
}

static uint64_t pair_max_age_ms_for(long fin_timeout_s)
{
	long hold = fin_wait2_hold_s(fin_timeout_s < 0 ? 0 : fin_timeout_s > 100000 ? 100000 : fin_timeout_s);
	long ms = hold >= AG_PAIR_MAX_AGE_S + 1 ? AG_PAIR_MAX_AGE_S * 1000L : hold * 1000L - PAIR_AGE_MARGIN_MS;

	return ms < PAIR_MIN_AGE_MS ? PAIR_MIN_AGE_MS : (uint64_t)ms;
}

static void pair_max_age_refresh(void)
{
	static long last = -1;
	char *v = read_file("/proc/sys/net/ipv4/tcp_fin_timeout", 64, NULL);
	char *end = NULL;
	long fin = 0;   /* unreadable: the shortest bound, fail closed */
	bool readable = v != NULL;

	if (v) {
		errno = 0;
		fin = strtol(v, &end, 10);
		if (errno || end == v)
			fin = 0;
		free(v);
	}
	uint64_t ms = pair_max_age_ms_for(fin);

	if (fin != last && ms < AG_PAIR_MAX_AGE_S * 1000ull)
		log_warn("net.ipv4.tcp_fin_timeout is %ld s%s: a connection the enforcer has not accepted "
			 "within %" PRIu64 " ms is refused", fin, readable ? "" : " (unreadable)", ms);
	last = fin;
	atomic_store(&E->pair_max_age_ns, ms * 1000000ull);
}

static uint64_t pair_max_age_ns(void)
{
	return atomic_load(&E->pair_max_age_ns);
}

struct enforcer *E;

extern const char ag_default_policy[], ag_default_policy_end[];

static const char *const counter_names[AG_CNT__MAX] = {
	[AG_CNT_RB_DROP] = "ringbuf_dropped",
	[AG_CNT_PAIR_FAIL] = "pair_map_update_failed",
	[AG_CNT_SK_STORAGE_FAIL] = "sk_storage_failed",
	[AG_CNT_NO_STAMP] = "no_identity_stamp",
	[AG_CNT_NO_AGENT] = "no_agent_slot",
	[AG_CNT_REDIRECT] = "redirected",
	[AG_CNT_DNS_REDIRECT] = "dns_redirected",
	[AG_CNT_DENY_CONNECT] = "denied_connect",
	[AG_CNT_DENY_SOCK] = "denied_socket",
	[AG_CNT_DENY_BIND] = "denied_bind",
	[AG_CNT_CFG_MISSING] = "config_missing",
	[AG_CNT_SKB_EGRESS_DROP] = "backstop_egress_dropped",
	[AG_CNT_SKB_INGRESS_DROP] = "backstop_ingress_dropped",
	[AG_CNT_GUARD_DROP] = "guard_dropped",
	[AG_CNT_DENY_SOCKOPT] = "denied_sockopt",
	[AG_CNT_PAIR_QUOTA] = "denied_pair_quota",
	[AG_CNT_DENY_UNIX] = "denied_unix",
};

static bool claims_may_grant(const struct policy *p, int t);
static uint64_t nreloads;   /* policies swapped in by agentgate reload */

static const char *reason_str(uint32_t r)
{
	switch (r) {
	case AG_R_NO_STAMP: return "socket has no agent identity stamp";
	case AG_R_NOT_ALLOWED: return "destination not allowed for this agent";
	case AG_R_METADATA: return "cloud metadata address not named by any target";
	case AG_R_UDP_NOT_DNS: return "UDP other than DNS (port 53) is refused";
	case AG_R_FAMILY: return "address family refused";
	case AG_R_PROTOCOL: return "socket type or protocol refused (only TCP and UDP)";
	case AG_R_MAP_FAIL: return "kernel map operation failed";
	case AG_R_RESERVED_PORT: return "port reserved for the enforcer";
	case AG_R_NO_AGENT: return "cgroup has no agent configured";
	case AG_R_NETNS: return "network namespace not served by the enforcer";
	case AG_R_NO_CONFIG: return "enforcer has not configured the kernel side";
	case AG_R_BOUND_DEVICE: return "socket bound to a network device (SO_BINDTODEVICE): the enforcer is "
				       "reached only over loopback";
	case AG_R_UNATTACHED: return "cgroup under the agents' cgroup without its programs (made again and not "
				      "attached yet, or named by no agent): no inet sockets";
	case AG_R_PAIR_QUOTA: return "the agent has its share of connects waiting for the enforcer to accept them";
	case AG_R_UNIX_PATH: return "AF_UNIX address not in the agent's unix_sockets";
	case AG_R_UNIX_USERNS: return "AF_UNIX path from a user namespace of the agent's own (it could mount over "
				      "the path): only abstract names are allowed there";
	default: return "unknown";
	}
}

/* ---- policy → cgroups and kernel maps ------------------------------------ */

static int resolve_cgroup(const struct policy_agent *a, char *abs, size_t abslen, char *rel, size_t rellen)
{
	const char *root = E->cgroup2;
	size_t rl = strlen(root);
	char given[PATH_MAX];

	if (a->cgroup)
		snprintf(given, sizeof(given), "%s", a->cgroup);
	else
		snprintf(given, sizeof(given), AG_CGROUP_PARENT "/%s", a->name);
	/* Absolute paths may name the mount ("/sys/fs/cgroup/unified/x") or
	 * the hierarchy ("/x"); relative ones are relative to the mount. */
	if (strncmp(given, root, rl) == 0 && (given[rl] == '/' || given[rl] == 0))
		snprintf(rel, rellen, "%s", given[rl] ? given + rl : "/");
	else
		snprintf(rel, rellen, "%s%s", given[0] == '/' ? "" : "/", given);
	if (strcmp(rel, "/") == 0)
		return -EINVAL;   /* never the root cgroup: the enforcer lives there */
	/* Plain names only: the checks below compare paths as strings, and
	 * "agentgate/x/../b" named another agent's cgroup past the overlap
	 * check (found by review). */
	for (const char *p = rel; *p; ) {
		const char *s = p + 1, *e = strchrnul(s, '/');
		size_t n = (size_t)(e - s);

		if (!n || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
			return -EINVAL;
		p = e;
	}
	snprintf(abs, abslen, "%s%s", root, rel);
	return 0;
}

static bool path_within(const char *inner, const char *outer)
{
	size_t n = strlen(outer);

	return strncmp(inner, outer, n) == 0 && (inner[n] == '/' || inner[n] == 0);
}

int enforcer_agent_of_cgroup(const char *rel)
{
	for (size_t i = 0; E && i < E->policy->nagents; i++) {
		if (path_within(rel, E->agents[i].cgroup_rel))
			return i;
		for (int x = 0; x < E->agents[i].nextra; x++)
			if (path_within(rel, E->agents[i].extra_rel[x]))
				return i;
	}
	return -1;
}

/* Whether agent a's kernel allow set holds target t (an IP or CIDR target;
 * host-name targets go in as the agent's DNS answers arrive). */
static bool allow_wanted(const struct policy *p, size_t a, size_t t)
{
	/* Targets a claims binding could grant go in for agents with an OIDC
	 * identity: the enforcer decides with the principal. Metadata entries
	 * are needed in observe mode too: the kernel refuses metadata
	 * addresses unless a target names them. */
	return p->targets[t].addr.kind != ADDR_HOST &&
	       (enforcer_may_target(p, (int)a, (int)t) ||
		(p->targets[t].names_metadata && p->mode == POLICY_OBSERVE));
}

/* An agents[].unix_sockets entry as the kernel map's key bytes: "@name"
 * is an abstract socket (a 0, then the name). */
static size_t unix_key_bytes(const char *entry, char out[AG_UNIX_PATH_MAX])
{
	size_t len = strlen(entry);

	if (len > AG_UNIX_PATH_MAX)   /* the loader refuses it */
		return 0;
	memcpy(out, entry, len);
	if (entry[0] == '@')
		out[0] = 0;
	return len;
}

/* Entries of the running kernel map that policy ctx no longer names go. */
static bool unix_keep(void *ctx, const struct ag_unix_key *k)
{
	const struct policy *p = ctx;
	int ai = k->slot < AG_MAX_AGENTS ? E->agent_of_slot[k->slot] : -1;
	char b[AG_UNIX_PATH_MAX];

	if (ai < 0 || (size_t)ai >= p->nagents)
		return false;
	for (size_t i = 0; i < p->agents[ai].unix_sockets.n; i++) {
		size_t len = unix_key_bytes(p->agents[ai].unix_sockets.v[i], b);

		if (len && len == k->len && memcmp(b, k->path, len) == 0)
			return true;
	}
	return false;
}

/* Adds (or overwrites) the IP and CIDR entries policy p wants, and its
 * agents' unix_sockets. */
static int allow_add(const struct policy *p)
{
	int err = 0;

	for (size_t a = 0; !err && a < p->nagents; a++) {
		const struct policy_strv *u = &p->agents[a].unix_sockets;
		char b[AG_UNIX_PATH_MAX];

		for (size_t i = 0; !err && i < u->n; i++) {
			size_t len = unix_key_bytes(u->v[i], b);

			err = len ? loader_unix_add(E->loader, E->slot_of[a], b, len) : -EINVAL;
		}
	}

	for (size_t a = 0; !err && a < p->nagents; a++) {
		for (size_t t = 0; !err && t < p->ntargets; t++) {
			const struct policy_target *tg = &p->targets[t];

			if (allow_wanted(p, a, t))
				err = loader_allow(E->loader, E->slot_of[a], tg->addr.addr, tg->addr.prefixlen,
						   tg->addr.port, t, tg->names_metadata ? AG_ALLOW_METADATA : 0,
						   true);
		}
	}
	return err;
}

/* Each slot's kernel config: active (and observe when p says so) for a slot
 * an agent holds, cleared for the others. At start and on reload. */
static int set_mode_flags(const struct policy *p)
{
	for (uint32_t slot = 1; slot < AG_MAX_AGENTS; slot++) {
		struct ag_agent_cfg cfg = { 0 };
		int err;

		if (E->agent_of_slot[slot] >= 0)
			cfg.flags = AG_AF_ACTIVE | (p->mode == POLICY_OBSERVE ? AG_AF_OBSERVE : 0);
		if ((err = loader_set_agent(E->loader, slot, &cfg)))
			return err;
	}
	return 0;
}

static int program_allow_set(void)
{
	int err = loader_allow_clear(E->loader);

	if (!err)
		err = allow_add(E->policy);
	if (!err && (err = loader_unix_prune(E->loader, unix_keep, (void *)E->policy)) > 0)
		err = 0;   /* a previous run's entries */
	return err;
}

/* After a reload: an entry stays when policy ctx still wants it. Entries
 * learned from DNS answers (host-name targets) stay while the agent may
 * still use that target. */
static bool allow_keep(void *ctx, const struct ag_allow_key *k, const struct ag_allow_val *v)
{
	const struct policy *p = ctx;
	int a = enforcer_agent_idx(k->slot);
	const struct policy_target *tg;

	if (a < 0 || v->target_id >= p->ntargets)
		return false;
	tg = &p->targets[v->target_id];
	if (tg->addr.kind == ADDR_HOST && enforcer_may_target(p, a, (int)v->target_id))
		return true;
	/* any target p wants with this address: two targets may share one
	 * (the entry holds the last written) */
	for (size_t t = 0; t < p->ntargets; t++) {
		tg = &p->targets[t];
		if (allow_wanted(p, (size_t)a, t) && k->port == tg->addr.port &&
		    k->prefixlen == AG_ALLOW_FIXED_BITS + (unsigned)tg->addr.prefixlen &&
		    memcmp(k->addr, tg->addr.addr, 16) == 0)
			return true;
	}
	return false;
}

struct orphan_ctx { int n; };

static void orphan_cb(void *ctx, const char *agent, uint64_t cgid, int nlinks, int ndead)
{
	struct orphan_ctx *oc = ctx;

	if (policy_agent_index(E->policy, agent) < 0) {
		/* Slot 0: every new socket of that cgroup is refused at socket(). */
		int err = loader_set_cgroup_slot(E->loader, cgid, 0);

		log_warn("agent '%s' (cgroup %llu) is attached but not in the policy: %s", agent,
			 (unsigned long long)cgid, err ? "could not disable it" :
			 "its new sockets are refused until 'agentgate detach --agent NAME'");
		oc->n++;
	}
}

/*
 * Links an agent of the policy still has pinned on a cgroup that is no
 * longer its own: its policy cgroup changed, or an attachment was not
 * restored (review, stop 36). They would go on stamping that cgroup's
 * sockets with the agent's identity, unseen in status, also inside another
 * agent's cgroup, which is the nesting program_kernel() refuses. Collected
 * first, detached after the walk.
 */
#define STALE_MAX 64
struct stale_ctx {
	int n;
	struct { char agent[256]; uint64_t cgid; } v[STALE_MAX];   /* names: 63 bytes at most */
};

/* The filesystem path of an agent's extra (attached) cgroup x. */
static const char *extra_abs(const struct agent_rt *rt, int x, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s", E->cgroup2, rt->extra_rel[x]);
	return buf;
}

static void stale_cb(void *ctx, const char *agent, uint64_t cgid, int nlinks, int ndead)
{
	struct stale_ctx *sc = ctx;
	int a = policy_agent_index(E->policy, agent);
	struct agent_rt *rt;

	(void)nlinks;
	(void)ndead;
	if (a < 0 || sc->n >= STALE_MAX)
		return;   /* not in the policy: orphan_cb() */
	rt = &E->agents[a];
	if (cgid == rt->cgid)
		return;
	for (int x = 0; x < rt->nextra; x++) {
		char abs[PATH_MAX * 2];
		struct stat st;

		if (cgid == rt->extra_cgid[x])
			return;
		/* an attachment kept without its id (its attach failed at
		 * start): the links the last run left on it stay */
		if (!rt->extra_cgid[x] && stat(extra_abs(rt, x, abs, sizeof(abs)), &st) == 0 && (uint64_t)st.st_ino == cgid)
			return;
	}
	snprintf(sc->v[sc->n].agent, sizeof(sc->v[sc->n].agent), "%s", agent);
	sc->v[sc->n++].cgid = cgid;
}

static void detach_stale(void)
{
	static struct stale_ctx sc;

	sc.n = 0;
	loader_list_pins(stale_cb, &sc);
	for (int i = 0; i < sc.n; i++) {
		int err = loader_detach_cgroup(sc.v[i].agent, sc.v[i].cgid);

		log_warn("agent '%s': programs left on cgroup %llu, which is no longer its own: %s",
			 sc.v[i].agent, (unsigned long long)sc.v[i].cgid,
			 err ? strerror(-err) : "detached");
	}
}

static int write_agents_file(void)
{
	char path[PATH_MAX + 32], tmp[PATH_MAX + 40];
	json_t *arr = json_array();
	int err = 0;

	for (size_t i = 0; i < E->policy->nagents; i++)
		json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:I}",
			"name", E->policy->agents[i].name, "cgroup", E->agents[i].cgroup_rel,
			"path", E->agents[i].cgroup_path, "cgroup_id", (json_int_t)E->agents[i].cgid));
	snprintf(path, sizeof(path), "%s/agents.json", E->state_dir);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if (json_dump_file(arr, tmp, JSON_INDENT(2)) || rename(tmp, path))
		err = -EIO;
	json_decref(arr);
	return err;
}

/*
 * Stable slots: an agent keeps the slot it had (slots.json); a new agent
 * takes a slot never used before, or, when none is left, one whose agent is
 * gone and has no pinned links.
 *
 * A socket carries its slot for as long as it lives, across restarts, and
 * the kernel's pins are the host's, not a state directory's: the table is
 * also kept in LOADER_HOST_SLOTS (/run: it lasts as long as the pins and the
 * sockets, until a reboot), and read from there first. From the state
 * directory alone, a start with another --state-dir, or after slots.json
 * was lost, numbered the agents afresh, and a socket an agent had made
 * before was taken for another agent (review, stop 36).
 */
static json_t *load_slots(const char *path)
{
	json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, NULL);

	if (j && !json_is_object(j)) {
		json_decref(j);
		j = NULL;
	}
	return j;
}

static int save_slots(const char *path, json_t *out)
{
	char tmp[PATH_MAX + 32];

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if (json_dump_file(out, tmp, JSON_INDENT(2) | JSON_SORT_KEYS) || rename(tmp, path))
		return -EIO;
	return 0;
}

static int assign_slots(void)
{
	const struct policy *p = E->policy;
	char path[PATH_MAX + 16];
	json_t *known, *out = json_object();
	bool used[AG_MAX_AGENTS] = { [0] = true };
	const char *name;
	json_t *v;
	int err = 0;

	snprintf(path, sizeof(path), "%s/slots.json", E->state_dir);
	if (!(known = load_slots(LOADER_HOST_SLOTS)) && !(known = load_slots(path)))
		known = json_object();
	for (int s = 0; s < AG_MAX_AGENTS; s++)
		E->agent_of_slot[s] = -1;
	json_object_foreach(known, name, v) {
		json_int_t s = json_integer_value(v);

		if (s > 0 && s < AG_MAX_AGENTS)
			used[s] = true;
	}
	for (size_t i = 0; i < p->nagents; i++) {
		json_int_t s = json_integer_value(json_object_get(known, p->agents[i].name));

		if (s > 0 && s < AG_MAX_AGENTS && E->agent_of_slot[s] < 0) {
			E->slot_of[i] = s;
			E->agent_of_slot[s] = i;
		} else {
			E->slot_of[i] = 0;
		}
	}
	for (size_t i = 0; i < p->nagents; i++) {
		if (E->slot_of[i])
			continue;
		for (int s = 1; s < AG_MAX_AGENTS && !E->slot_of[i]; s++)
			if (!used[s] && E->agent_of_slot[s] < 0)
				E->slot_of[i] = s;
		/* All used once: reuse the slot of an agent that is gone, in the
		 * order of slots.json, but only when no pinned link names it. */
		json_object_foreach(known, name, v) {
			json_int_t s = json_integer_value(v);
			char dir[PATH_MAX + 300], root[PATH_MAX];

			if (E->slot_of[i] || s <= 0 || s >= AG_MAX_AGENTS || E->agent_of_slot[s] >= 0 ||
			    loader_pin_root(root, sizeof(root)))
				continue;
			snprintf(dir, sizeof(dir), "%s/links/%s", root, name);
			if (access(dir, F_OK) != 0)
				E->slot_of[i] = s;
		}
		if (!E->slot_of[i]) {
			log_err("no free agent slot for '%s'", p->agents[i].name);
			err = -ENOSPC;
			break;
		}
		E->agent_of_slot[E->slot_of[i]] = i;
	}
	/* Keep every name ever seen, so its slot is not handed out while its
	 * cgroup may still hold sockets stamped with it. */
	json_object_foreach(known, name, v)
		if (policy_agent_index(p, name) < 0)
			json_object_set(out, name, v);
	for (size_t i = 0; i < p->nagents; i++)
		json_object_set_new(out, p->agents[i].name, json_integer(E->slot_of[i]));
	if (!err && save_slots(LOADER_HOST_SLOTS, out)) {
		log_err("could not save %s", LOADER_HOST_SLOTS);
		err = -EIO;
	}
	if (!err)
		err = save_slots(path, out);
	json_decref(known);
	json_decref(out);
	return err;
}

/* Attachments made with `agentgate attach` survive restarts. */
static void save_attachments(void)
{
	char path[PATH_MAX + 32], tmp[PATH_MAX + 40];
	json_t *arr = json_array();

	for (size_t i = 0; i < E->policy->nagents; i++)
		for (int x = 0; x < E->agents[i].nextra; x++)
			json_array_append_new(arr, json_pack("{s:s, s:s}", "agent", E->policy->agents[i].name,
							     "cgroup", E->agents[i].extra_rel[x]));
	snprintf(path, sizeof(path), "%s/attachments.json", E->state_dir);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if (json_dump_file(arr, tmp, JSON_INDENT(2)) || rename(tmp, path))
		log_warn("could not save %s", path);
	json_decref(arr);
}

static int attach_extra(const char *agent, const char *cgroup, char *err, size_t errlen, bool pending_ok);

static void restore_attachments(void)
{
	char path[PATH_MAX + 32], err[512];
	json_t *arr, *it;
	size_t i;

	snprintf(path, sizeof(path), "%s/attachments.json", E->state_dir);
	arr = json_load_file(path, JSON_REJECT_DUPLICATES, NULL);
	json_array_foreach(arr, i, it) {
		const char *agent = json_string_value(json_object_get(it, "agent"));
		const char *cg = json_string_value(json_object_get(it, "cgroup"));

		if (agent && cg && attach_extra(agent, cg, err, sizeof(err), true))
			log_warn("attachment of '%s' to '%s' not restored: %s", agent, cg, err);
	}
	json_decref(arr);
}

/*
 * Keeps the enforcer's ports out of the ephemeral range, so no socket (an
 * agent's autobind while the enforcer is down, say) can hold one and stop it
 * from starting. Appends to net.ipv4.ip_local_reserved_ports; never removes.
 */
static void reserve_ports(void)
{
	const char *path = "/proc/sys/net/ipv4/ip_local_reserved_ports";
	char want[64], *cur = read_file(path, 65536, NULL);
	int fd;

	snprintf(want, sizeof(want), "%u,%u-%u", E->tcp_port, E->dns_base, E->dns_base + AG_MAX_AGENTS - 1);
	if (!cur)
		return;
	cur[strcspn(cur, "\n")] = 0;
	if (!strstr(cur, want)) {
		char *val = NULL;

		if (asprintf(&val, "%s%s%s", cur, cur[0] ? "," : "", want) > 0 &&
		    (fd = open(path, O_WRONLY | O_CLOEXEC)) >= 0) {
			if (write_all(fd, val, strlen(val)))
				log_warn("could not reserve ports %s: %s", want, strerror(errno));
			close(fd);
		}
		free(val);
	}
	free(cur);
}

/* The ag_pairs entries one agent may hold (agentgate.bpf.c over_quota()):
 * with n agents each holding at most AG_PAIR_MAX / (n + 1), together they
 * leave a share free, so none is ever refused for want of room. An agent
 * has more than its share only with that many connects the enforcer has
 * not accepted yet. Agents cannot be added by a reload. */
static uint16_t pair_quota(const struct policy *p)
{
	return (uint16_t)(AG_PAIR_MAX / (p->nagents + 1));
}

/* The policy cgroups' parent, when some agent's cgroup lies under it: a
 * cgroup there without programs of its own (made again and not attached
 * yet) makes no inet socket (agentgate.bpf.c ag_unattached). Not on a
 * parent the enforcer did not make for agents (an attached unit's
 * system.slice): it would take every other service's network. Logged, not
 * fatal: without it the window of threat model 13c is what it was. */
static void guard_unattached(const struct policy *p)
{
	char parent[PATH_MAX];
	bool under = false;
	int err;

	E->unattached_guarded = false;
	for (size_t i = 0; i < p->nagents; i++)
		under |= strncmp(E->agents[i].cgroup_rel, "/" AG_CGROUP_PARENT "/", sizeof(AG_CGROUP_PARENT) + 1) == 0;
	if (!under)
		return;
	snprintf(parent, sizeof(parent), "%s/" AG_CGROUP_PARENT, E->cgroup2);
	if ((err = loader_guard_unattached(E->loader, parent)))
		log_warn("cgroup %s: cannot attach the program that keeps a cgroup made again under it "
			 "from making sockets until it is attached: %s", parent, strerror(-err));
	else
		E->unattached_guarded = true;
}

static int program_kernel(void)
{
	const struct policy *p = E->policy;
	struct ag_global g = {
		.abi_version = AG_ABI_VERSION,
		.flags = AG_GF_READY | (E->guarded ? AG_GF_GUARD : 0),   /* guard_ports() ran before */
		.tcp_port = E->tcp_port,
		.dns_port_base = E->dns_base,
		.dns_port_count = AG_MAX_AGENTS,
		.pair_quota = pair_quota(p),
		.netns_cookie = E->netns_cookie,
	};
	struct orphan_ctx oc = { 0 };
	int err;

	if (p->nagents >= AG_MAX_AGENTS) {
		log_err("policy: at most %d agents", AG_MAX_AGENTS - 1);
		return -E2BIG;
	}
	reserve_ports();
	err = loader_set_global(E->loader, &g);
	if (err)
		return err;
	if ((err = set_mode_flags(p)))
		return err;
	err = program_allow_set();
	if (err) {
		log_err("kernel allow set: %s", strerror(-err));
		return err;
	}
	if (!loader_features(E->loader)->connect_unix)
		for (size_t i = 0; i < p->nagents; i++)
			if (p->agents[i].unix_sockets.n) {
				log_warn("this kernel has no cgroup/connect_unix (Linux 6.7): AF_UNIX is not "
					 "checked, and unix_sockets (agent '%s') is not enforced", p->agents[i].name);
				break;
			}
	for (size_t i = 0; i < p->nagents; i++)
		for (size_t j = i + 1; j < p->nagents; j++)
			if (path_within(E->agents[i].cgroup_rel, E->agents[j].cgroup_rel) ||
			    path_within(E->agents[j].cgroup_rel, E->agents[i].cgroup_rel)) {
				log_err("agents '%s' (%s) and '%s' (%s): one cgroup lies inside the other; "
					"nested agents would take each other's identity", p->agents[i].name,
					E->agents[i].cgroup_rel, p->agents[j].name, E->agents[j].cgroup_rel);
				return -EINVAL;
			}
	for (size_t i = 0; i < p->nagents; i++) {
		struct agent_rt *rt = &E->agents[i];

		if (resolve_cgroup(&p->agents[i], rt->cgroup_path, sizeof(rt->cgroup_path),
				   rt->cgroup_rel, sizeof(rt->cgroup_rel))) {
			log_err("agent '%s': cgroup must not be the cgroup2 root", p->agents[i].name);
			return -EINVAL;
		}
		err = mkdir_p(rt->cgroup_path, 0755);
		if (err) {
			log_err("agent '%s': create cgroup '%s': %s", p->agents[i].name, rt->cgroup_path,
				strerror(-err));
			return err;
		}
		err = loader_attach(E->loader, p->agents[i].name, rt->cgroup_path, E->slot_of[i], &rt->cgid);
		if (err) {
			log_err("agent '%s': attach to '%s': %s", p->agents[i].name, rt->cgroup_path,
				strerror(-err));
			return err;
		}
		rt->attached = true;
		if (loader_prune_dead(p->agents[i].name) > 0)
			log_info("agent '%s': removed pinned links of a deleted cgroup", p->agents[i].name);
		log_info("agent '%s': cgroup %s attached (%d programs)", p->agents[i].name,
			 rt->cgroup_path, loader_nprogs());
	}
	loader_list_pins(orphan_cb, &oc);
	restore_attachments();
	detach_stale();
	guard_unattached(p);   /* after detach_stale: no links of an old run left on the parent */
	return write_agents_file();
}

/* ---- per-connection decision --------------------------------------------- */

static bool is_own_listener(const uint8_t a[16], uint16_t port)
{
	static const uint8_t zero[16];
	/* loopback, or the unspecified address (connecting to 0.0.0.0 or ::
	 * reaches the local host) */
	bool loop = addr_is_loopback(a) || (addr_is_v4mapped(a) ? memcmp(a + 12, zero, 4) == 0
								 : memcmp(a, zero, 16) == 0);

	return loop && (port == E->tcp_port ||
			(port >= E->dns_base && port < E->dns_base + AG_MAX_AGENTS));
}

uint64_t ag_decision_timeout_ms(void)
{
	static _Atomic uint64_t cache;

	return env_ms("AGENTGATE_DECISION_MS", 10000, &cache);   /* test knob */
}

struct audit_w *enforcer_conn_event(struct conn *c, int activity_id, const char *activity_name)
{
	struct audit_w *w = audit_begin(4001, activity_id, activity_name);
	const struct policy *p = c->policy;
	struct audit_agent a = { 0 };
	struct ident_principal pr;
	char src[64], dst[64];

	if (c->agent_idx >= 0) {
		a.name = p->agents[c->agent_idx].name;
		a.cgroup = E->agents[c->agent_idx].cgroup_rel;
		enforcer_audit_principal(c->agent_idx, &a, &pr);
	}
	a.pid = c->pair.tgid;
	a.tid = c->pair.pid;
	a.uid = c->pair.uid;
	a.comm = c->pair.comm;
	a.cgroup_id = c->pair.cgroup_id;
	if (p) {
		a.policy_hash = p->hash;
		a.policy_path = p->path;
	}
	audit_w_agent(w, &a);
	addr_str(c->client_addr, src, sizeof(src));
	addr_str(c->pair.orig_addr, dst, sizeof(dst));
	aobj_open(&w->top, "src_endpoint");
	aobj_str(&w->top, "ip", src);
	aobj_int(&w->top, "port", c->client_port);
	aobj_close(&w->top);
	aobj_open(&w->top, "dst_endpoint");
	aobj_str(&w->top, "ip", dst);
	aobj_int(&w->top, "port", c->pair.orig_port);
	aobj_close(&w->top);
	char cookie[24];
	snprintf(cookie, sizeof(cookie), "%llu", (unsigned long long)c->pair.sock_cookie);
	aobj_open(&w->top, "connection_info");
	aobj_str(&w->top, "protocol_name", "tcp");
	aobj_int(&w->top, "protocol_num", 6);
	aobj_int(&w->top, "direction_id", 2);
	aobj_str(&w->top, "direction", "Outbound");
	aobj_str(&w->top, "uid", cookie);
	aobj_close(&w->top);
	if (c->target_idx >= 0)
		aobj_str(&w->um, "target", p->targets[c->target_idx].name);
	if (c->ops)
		aobj_str(&w->um, "module", c->ops->name);
	if (c->fallback_proto)
		aobj_str(&w->um, "module_note",
			 "protocol module not available yet: relayed as tcp without inspection");
	if (c->upstream_desc[0])
		aobj_str(&w->um, "upstream", c->upstream_desc);
	return w;
}

/* A held token stops counting at its exp, whenever the main loop gets to
 * expiring it (once a second; later when busy or stopped). */
static bool past_exp(int64_t exp)
{
	return exp > 0 && (int64_t)(now_ms_realtime() / 1000) >= exp;
}

void enforcer_principal(int idx, struct ident_principal *out)
{
	struct agent_rt *rt = &E->agents[idx];

	pthread_mutex_lock(&rt->plock);
	*out = rt->principal;
	pthread_mutex_unlock(&rt->plock);
	/* a connection or a binding by claims never rides on a token past its exp */
	if (out->verified && past_exp(out->exp)) {
		out->verified = false;
		snprintf(out->reason, sizeof(out->reason), "token expired (exp passed)");
	}
}

/* Only what an event names of the principal (source, iss, sub, verified)
 * is copied into *pr, by length: the whole principal is some 7 KiB, and
 * this runs for every statement and request, under a lock the workers
 * share. */
bool enforcer_identity_ok(const struct policy *p, int idx, char *why, size_t whylen)
{
	struct agent_rt *rt = &E->agents[idx];
	bool ok;

	if (p->agents[idx].identity.source == IDENT_LOCAL)
		return true;
	/* verified and exp only, not the 7 KiB principal: this runs per request */
	pthread_mutex_lock(&rt->plock);
	ok = rt->principal.verified && !past_exp(rt->principal.exp);
	if (!ok && why)
		snprintf(why, whylen, "identity not verified: %s",
			 rt->principal.verified ? "token expired (exp passed)" : rt->principal.reason);
	pthread_mutex_unlock(&rt->plock);
	return ok;
}

#define PARSE_BURST_MS 2000

static uint32_t parse_pct(const struct policy *p, int idx)
{
	return p->agents[idx].parse_cpu ? p->agents[idx].parse_cpu : 25;   /* 0: a policy not loaded */
}

/* The wall time an agent's debt stands for: cpu_ns at parse_cpu percent. */
static uint64_t parse_wall_ns(const struct policy *p, int idx, uint64_t cpu_ns)
{
	uint32_t pct = parse_pct(p, idx);

	if (cpu_ns > UINT64_MAX / 100)
		return UINT64_MAX / 2;
	return cpu_ns * 100 / pct;
}

static uint64_t parse_burst_ns(const struct policy *p, int idx)
{
	return parse_wall_ns(p, idx, (E->parse_burst_ms ? E->parse_burst_ms : PARSE_BURST_MS) * 1000000ull);
}

bool enforcer_parse_may(const struct policy *p, int idx, char *why, size_t whylen)
{
	struct agent_rt *rt = &E->agents[idx];
	uint64_t now = now_ns_mono(), tat = atomic_load(&rt->parse_tat);
	uint64_t burst = parse_burst_ns(p, idx);

	if (tat <= now || tat - now <= burst)
		return true;
	if (!why)
		return false;   /* only asked: nothing refused */
	atomic_fetch_add(&rt->parse_refused, 1);
	snprintf(why, whylen, "statements not seen before have used this agent's parsing budget "
		 "(limits.parse_cpu: %u%% of a CPU); retry in %llu ms, or repeat statements that "
		 "differ only in their values", parse_pct(p, idx),
		 (unsigned long long)((tat - now - burst) / 1000000ull + 1));
	return false;
}

void enforcer_parse_spent(const struct policy *p, int idx, uint64_t cpu_ns)
{
	struct agent_rt *rt = &E->agents[idx];
	uint64_t now = now_ns_mono(), add = parse_wall_ns(p, idx, cpu_ns);
	unsigned long long tat = atomic_load(&rt->parse_tat), next;

	do {
		next = (tat > now ? tat : now) + add;
	} while (!atomic_compare_exchange_weak(&rt->parse_tat, &tat, next));
}

/* limits.mask_cpu: percent of one CPU; unset, three quarters of the
 * workers' (on 2 workers 150%: one agent masking a stream of 64 KiB answers
 * through `make bench` used a little over one worker, and must not be
 * slowed when it is alone; it may still not take every worker) */
static uint64_t mask_pct(const struct policy *p, int idx)
{
	if (p->agents[idx].mask_cpu)
		return p->agents[idx].mask_cpu;
	return E->nworkers > 0 ? 75ull * (uint64_t)E->nworkers : 100;
}

static uint64_t mask_wall_ns(const struct policy *p, int idx, uint64_t ns)
{
	if (ns > UINT64_MAX / 100)
		return UINT64_MAX / 2;
	return ns * 100 / mask_pct(p, idx);
}

static uint64_t mask_burst_ns(const struct policy *p, int idx)
{
	return mask_wall_ns(p, idx, (E->parse_burst_ms ? E->parse_burst_ms : PARSE_BURST_MS) * 1000000ull);
}

uint64_t enforcer_mask_spent(const struct policy *p, int idx, uint64_t ns)
{
	if (!E || idx < 0)
		return 0;
	struct agent_rt *rt = &E->agents[idx];
	uint64_t now = now_ns_mono(), add = mask_wall_ns(p, idx, ns), burst = mask_burst_ns(p, idx);
	unsigned long long tat = atomic_load(&rt->mask_tat), next;

	atomic_fetch_add(&rt->mask_ns, ns);
	do {
		next = (tat > now ? tat : now) + add;
	} while (!atomic_compare_exchange_weak(&rt->mask_tat, &tat, next));
	if (next <= now || next - now <= burst)
		return 0;
	atomic_fetch_add(&rt->mask_paced, 1);
	return (next - now - burst) / 1000000ull + 1;
}

uint64_t enforcer_mask_wait(const struct policy *p, int idx)
{
	if (!E || idx < 0)
		return 0;
	uint64_t tat = atomic_load(&E->agents[idx].mask_tat), now, burst;

	/* asked before every read of a masked connection's upstream: the
	 * common answer (no debt) costs a clock read, not the divisions */
	if (!tat || tat <= (now = now_ns_mono()))
		return 0;
	burst = mask_burst_ns(p, idx);
	return tat - now <= burst ? 0 : (tat - now - burst) / 1000000ull + 1;
}

void enforcer_audit_principal(int idx, struct audit_agent *a, struct ident_principal *pr)
{
	struct agent_rt *rt = &E->agents[idx];

	pthread_mutex_lock(&rt->plock);
	pr->source = rt->principal.source;
	pr->verified = rt->principal.verified;
	str_copy(pr->iss, sizeof(pr->iss), rt->principal.iss);
	str_copy(pr->sub, sizeof(pr->sub), rt->principal.sub);
	pthread_mutex_unlock(&rt->plock);
	if (strcmp(pr->source, "local") != 0) {
		a->iss = pr->iss;
		a->sub = pr->sub;
		a->verified = pr->verified;
	}
}

/*
 * Bindings by claims: a binding matches when, for every claim it names, one
 * of its values equals the principal's (AND across claims, OR within one).
 * Claims available: the agent's groups claim (identity.groups_claim, default
 * "groups"), "sub", and "client_id"/"azp". A binding naming any other claim
 * never matches. Only a verified principal matches anything.
 */
static bool claim_has(const struct policy_identity *id, const struct ident_principal *pr,
		      const char *claim, const char *value, bool user)
{
	const char *gc = id->groups_claim ? id->groups_claim : "groups";

	/* the named claims first: a groups_claim of the same name (refused
	 * at load) never takes a user past the guard below */
	if (strcmp(claim, "sub") == 0 || strcmp(claim, "client_id") == 0 || strcmp(claim, "azp") == 0)
		gc = "";
	if (strcmp(claim, gc) == 0) {
		for (size_t g = 0; g < pr->ngroups; g++)
			if (strcmp(pr->groups[g], value) == 0)
				return true;
		return false;
	}
	if (strcmp(claim, "sub") == 0)
		return strcmp(pr->sub, value) == 0;
	/* A user's token names the client it was issued to, and a token
	 * exchanged for the agent (RFC 8693) names the agent itself: matched
	 * for a user, a binding meant for the agent would give every user the
	 * agent's roles, and the intersection would narrow nothing. */
	if (!user && (strcmp(claim, "client_id") == 0 || strcmp(claim, "azp") == 0))
		return strcmp(pr->client_id, value) == 0;
	return false;
}

static bool binding_matches(const struct policy_binding *b, const struct policy_identity *id,
			    const struct ident_principal *pr, bool user)
{
	if (!pr->verified || !b->nclaims)
		return false;
	for (size_t k = 0; k < b->nclaims; k++) {
		bool any = false;

		for (size_t v = 0; v < b->claim_values[k].n && !any; v++)
			any = claim_has(id, pr, b->claim_names[k], b->claim_values[k].v[v], user);
		if (!any)
			return false;
	}
	return true;
}

/* The rule allowing agent idx to use target t: a binding by name first, then
 * a binding by claims that the agent's current principal satisfies. */
static const struct policy_rule *rule_for(const struct policy *p, int idx, int t)
{
	const struct policy_agent *ag = &p->agents[idx];
	struct ident_principal pr;

	if (ag->may_target[t])
		return ag->target_rule[t];
	enforcer_principal(idx, &pr);
	for (size_t b = 0; b < p->nbindings; b++) {
		const struct policy_role *role = &p->roles[p->bindings[b].role_idx];

		if (!binding_matches(&p->bindings[b], &ag->identity, &pr, false))
			continue;
		for (size_t r = 0; r < role->nrules; r++)
			if (role->rules[r].target_idx == t)
				return &role->rules[r];
	}
	return NULL;
}

static bool strv_has(const struct policy_strv *v, const char *s)
{
	for (size_t i = 0; i < v->n; i++)
		if (strcmp(v->v[i], s) == 0)
			return true;
	return false;
}

static size_t add_role_rules(const struct policy_role *role, int t, const struct policy_rule **out,
			     size_t n, size_t max)
{
	for (size_t r = 0; r < role->nrules; r++) {
		bool dup = false;

		if (role->rules[r].target_idx != t)
			continue;
		for (size_t k = 0; k < n && !dup; k++)
			dup = out[k] == &role->rules[r];
		if (!dup) {
			if (n == max)
				return max + 1;
			out[n++] = &role->rules[r];
		}
	}
	return n;
}

size_t enforcer_rules_for(const struct policy *p, int idx, int t, const struct policy_rule **out, size_t max)
{
	const struct policy_agent *ag = &p->agents[idx];
	struct ident_principal pr;
	bool have_pr = false;
	size_t n = 0;

	for (size_t b = 0; b < p->nbindings && n <= max; b++) {
		const struct policy_binding *bd = &p->bindings[b];
		bool match = strv_has(&bd->agents, ag->name);

		/* the principal (a 7 KiB copy under a lock the workers share)
		 * only for a binding by claims: binding_matches() is false
		 * without claims */
		if (!match && bd->nclaims) {
			if (!have_pr)
				enforcer_principal(idx, &pr);
			have_pr = true;
			match = binding_matches(bd, &ag->identity, &pr, false);
		}
		if (match)
			n = add_role_rules(&p->roles[bd->role_idx], t, out, n, max);
	}
	return n;
}

size_t enforcer_user_rules_for(const struct policy *p, int idx, const struct ident_principal *user, int t,
			       const struct policy_rule **out, size_t max)
{
	size_t n = 0;

	for (size_t b = 0; b < p->nbindings && n <= max; b++)
		if (binding_matches(&p->bindings[b], &p->agents[idx].identity, user, true))
			n = add_role_rules(&p->roles[p->bindings[b].role_idx], t, out, n, max);
	return n;
}

int enforcer_user_verify(int idx, const char *tok, size_t len, struct ident_principal *user,
			 char *why, size_t whylen)
{
	struct ident_principal agent;

	memset(user, 0, sizeof(*user));
	/* a worker: accept_user_tokens and the name are the same in every
	 * policy a reload lets in */
	const struct policy *p = __atomic_load_n(&E->policy, __ATOMIC_ACQUIRE);

	if (!p->agents[idx].accept_user_tokens) {
		snprintf(why, whylen, "agent '%s' does not accept user tokens (accept_user_tokens)",
			 p->agents[idx].name);
		return -EPERM;
	}
	enforcer_principal(idx, &agent);
	return ident_user_verify(E->agents[idx].ident, tok, len, agent.verified ? agent.iss : NULL,
				 agent.verified ? agent.sub : NULL, user, why, whylen);
}

int enforcer_user_recheck(int idx, const struct ident_principal *user, uint64_t *gen, char *why,
			  size_t whylen)
{
	return ident_user_recheck(E->agents[idx].ident, user, gen, why, whylen);
}

bool enforcer_may_target(const struct policy *p, int idx, int t)
{
	return p->agents[idx].may_target[t] ||
	       (p->agents[idx].identity.source != IDENT_LOCAL && claims_may_grant(p, t));
}

/* True when some binding by claims could grant target t (to any principal). */
static bool claims_may_grant(const struct policy *p, int t)
{
	for (size_t b = 0; b < p->nbindings; b++) {
		const struct policy_role *role = &p->roles[p->bindings[b].role_idx];

		for (size_t r = 0; p->bindings[b].nclaims && r < role->nrules; r++)
			if (role->rules[r].target_idx == t)
				return true;
	}
	return false;
}

const char *enforcer_rule_name(struct conn *c)
{
	if (!c->rule)
		return NULL;
	if (c->rule->label)
		return c->rule->label;
	if (!c->rule_desc[0])
		policy_rule_label(c->rule, c->rule_desc, sizeof(c->rule_desc));
	return c->rule_desc;
}

void enforcer_count_refused(struct conn *c)
{
	if (c->agent_idx >= 0)
		atomic_fetch_add(&E->agents[c->agent_idx].refused, 1);
}

bool enforcer_should_refuse(struct conn *c, const char *reason)
{
	if (c->policy->mode == POLICY_OBSERVE) {
		c->would_deny = true;
		snprintf(c->deny_reason, sizeof(c->deny_reason), "%s", reason);
		return false;
	}
	return true;
}

bool enforcer_revoked(const struct conn *c, const struct policy *live, char *why, size_t len)
{
	if (c->policy == live || c->agent_idx < 0 || c->closing || live->mode == POLICY_OBSERVE)
		return false;
	if (c->policy->mode == POLICY_OBSERVE) {
		/* it ran unenforced (its denials only recorded): it cannot go on
		 * under enforce */
		snprintf(why, len, "policy reloaded: enforce mode; connections opened in observe mode are closed");
		return true;
	}
	if (c->target_idx < 0) {
		snprintf(why, len, "policy reloaded: the destination is in no target (enforce mode)");
		return true;
	}
	if (rule_for(live, c->agent_idx, c->target_idx))
		return false;
	snprintf(why, len, "policy reloaded: agent '%s' may no longer use target '%s'",
		 live->agents[c->agent_idx].name, live->targets[c->target_idx].name);
	return true;
}

bool enforcer_adopt_live(struct conn *c, const struct policy *live, bool new_upstream)
{
	const struct policy_rule *r;

	if (c->policy == live || c->agent_idx < 0 || c->target_idx < 0 || c->closing)
		return false;
	/* delegation switched on or off for the target: a session that began
	 * without a user token must not go on under rules written for one */
	if (c->policy->targets[c->target_idx].user_token_password != live->targets[c->target_idx].user_token_password)
		return false;
	/* opened unenforced (observe): the sweep closes it under enforce */
	if (c->policy->mode == POLICY_OBSERVE && live->mode == POLICY_ENFORCE)
		return false;
	if (!new_upstream && !policy_upstream_same(&c->policy->targets[c->target_idx].upstream,
						   &live->targets[c->target_idx].upstream))
		return false;
	if (!(r = rule_for(live, c->agent_idx, c->target_idx)))
		return false;   /* revoked: the sweep closes it */
	c->policy = live;
	c->rule = r;
	c->rule_desc[0] = 0;
	return true;
}

void enforcer_conn_closed(struct conn *c, const char *why)
{
	struct audit_w *w;

	if (c->closing || c->agent_idx < 0)
		return;
	conn_idle_now(c);   /* the module's events put off come before the Close */
	if (!why && c->why[0])
		why = c->why;   /* a module's reason, set before it finished the connection */
	if (!c->opened) {
		/* Never decided (a tls connection without a ClientHello in time):
		 * the record is a refusal, not the close of an open connection. */
		w = enforcer_conn_event(c, 5, "Refuse");
		audit_w_verdict(w, false, false, NULL, why ? why : "closed before a decision");
		audit_commit(w);
		return;
	}
	w = enforcer_conn_event(c, 2, "Close");
	aobj_open(&w->top, "traffic");
	aobj_int(&w->top, "bytes_out", (long long)c->bytes[DIR_UP]);
	aobj_int(&w->top, "bytes_in", (long long)c->bytes[DIR_DOWN]);
	aobj_close(&w->top);
	aobj_int(&w->top, "duration", (long long)(now_ns_mono() / 1000000ull - c->start_ms));
	audit_w_verdict(w, true, c->would_deny, enforcer_rule_name(c), why);
	audit_commit(w);
}

static void refuse(struct conn *c, const char *reason)
{
	struct audit_w *w = enforcer_conn_event(c, 5, "Refuse");

	enforcer_count_refused(c);
	audit_w_verdict(w, false, false, enforcer_rule_name(c), reason);
	audit_commit(w);
	conn_refuse(c);
}

/*
 * limits.connect_rate: new connections an agent may make a second, on
 * average, with bursts of CONNECT_BURST_S seconds' worth (a GCRA: the time
 * at which the agent has paid for its connections so far). Each connection
 * relayed leaves one of the enforcer's sockets in TIME_WAIT toward its
 * upstream for 60 s when the enforcer closes first; without a rate, one
 * agent's connect/close churn could hold every port toward an upstream
 * the other agents share (threat model 14c). Checked first once the agent
 * is known, so every connection of the agent counts, refused or denied
 * ones too (each costs an audit event). The state survives a reload: a
 * new rate applies to the debt the old one left (at most 2 s of it).
 */
#define CONNECT_BURST_S 2
#define CONNECT_RATE_EVENTS 10   /* refusal events per agent a second; the rest summed */

static bool connect_rate_may(struct agent_rt *rt, uint32_t rate)
{
	uint64_t now = now_ns_mono(), step = 1000000000ull / (rate ? rate : 1);
	uint64_t burst = CONNECT_BURST_S * 1000000000ull;
	unsigned long long tat = atomic_load(&rt->connect_tat), next;

	do {
		next = (tat > now ? tat : now) + step;
		if (next - now > burst + step)
			return false;
	} while (!atomic_compare_exchange_weak(&rt->connect_tat, &tat, next));
	return true;
}

/* One of at most limit a second: *sec is the second counted in, *n the
 * count so far (whoever sees a new second first starts it again). */
static bool per_second_may(atomic_ullong *sec, atomic_uint *n, unsigned limit)
{
	unsigned long long now = now_ns_mono() / 1000000000ull, was = atomic_load(sec);

	if (was != now && atomic_compare_exchange_strong(sec, &was, now))
		atomic_store(n, 0);
	return atomic_fetch_add(n, 1) < limit;
}

/* Whether this refusal for the rate gets its own event: the first
 * CONNECT_RATE_EVENTS of each second do; an agent refused at thousands a
 * second must not fill the trail, only the counters and one summary. */
static bool connect_event_may(struct agent_rt *rt)
{
	if (per_second_may(&rt->connect_ev_sec, &rt->connect_ev_n, CONNECT_RATE_EVENTS))
		return true;
	atomic_fetch_add(&rt->connect_unreported, 1);
	return false;
}

/*
 * A connection without a pair entry whose client socket no longer exists:
 * its agent aborted it before we accepted it, the close hook took the entry
 * back, and the reset never reached the queued connection. A flood of
 * aborts overflows the kernel's per-CPU backlog of loopback packets
 * (net.core.netdev_max_backlog, 1,000) and drops resets, or defers them to
 * ksoftirqd past the accept; a socket closed in TCP_REPAIR mode sends none.
 * Such a connection was refused and audited as one that came around the
 * hooks (CI, stop 52: no_pair_entry 1 in the pair-map flood test; one run
 * of test_datapath.py here adds some 2,000 drops to /proc/net/softnet_stat's
 * second column). A connection made around the hooks from this host has
 * its client socket alive while it waits to be accepted, and is refused and
 * audited as before; one whose client is gone is never served either way.
 *
 * The kernel is asked for both ends of the connection (NETLINK_SOCK_DIAG):
 * ours must be found, or the lookup cannot be trusted (no diag support:
 * every answer "none"). The client's end is looked up bound to no device
 * and to each interface in turn: a socket bound to one (SO_BINDTODEVICE,
 * open to any user) is found only so, and a lookup without one let a live
 * dialer bound to "lo" pass for gone, unaudited (review, stop 53). A
 * listener found for the client's end is no client socket. Only a client
 * address on loopback is believed gone: with route_localnet another host's
 * connection could reach the listener, and its socket is not ours to see.
 * At most CLIENT_CHECKS_PER_S a second (each can cost a lookup per
 * interface); past that the connection is refused and audited as before.
 */
#define CLIENT_CHECKS_PER_S 100

static bool client_gone(int family, const struct ag_pair_key *k)
{
	static atomic_ullong sec;
	static atomic_uint n;
	int ours, theirs;

	if (!addr_is_loopback(k->client_addr) || !per_second_may(&sec, &n, CLIENT_CHECKS_PER_S))
		return false;
	ours = tcp_socket_state(family, k->listen_addr, k->listen_port, k->client_addr, k->client_port, 0);
	if (ours <= 0 || ours == TCP_LISTEN)
		return false;
	theirs = tcp_socket_state_any_dev(family, k->client_addr, k->client_port, k->listen_addr,
					  k->listen_port);
	return theirs == 0 || theirs == TCP_LISTEN;
}

void enforcer_accept(struct worker *w, int fd, int family, const struct sockaddr_storage *peer)
{
	const struct policy *p = __atomic_load_n(&E->policy, __ATOMIC_ACQUIRE);   /* a reload swaps it */
	struct ag_pair_key key = { .netns_cookie = E->netns_cookie };
	struct conn *c = calloc(1, sizeof(*c));
	const char *deny = NULL;
	int err;

	if (!c) {
		close(fd);
		return;
	}
	c->agent.fd = fd;
	c->agent.c = c;
	c->agent.is_agent = true;
	c->up.fd = -1;
	c->up.c = c;
	c->agent_idx = c->target_idx = -1;
	c->policy = p;
	c->start_ms = now_ns_mono() / 1000000ull;
	worker_link(w, c);
	addr_from_sockaddr(peer, key.client_addr, &key.client_port);
	/* The listeners are bound to exactly these addresses: no getsockname(). */
	addr_loopback(family, key.listen_addr);
	key.listen_port = E->tcp_port;
	memcpy(c->client_addr, key.client_addr, 16);
	c->client_port = key.client_port;

	/* A connection its agent reset before we accepted it (the enforcer
	 * stopped or behind, its backlog full) has no entry: the agent's close
	 * hook took it back. Its address and port are free again, and a new
	 * connect from them inserts an entry with the same key; taking that
	 * entry here would refuse the new connection when we accept it (CI,
	 * stop 41). The reset reaches the child before the agent's close()
	 * returns (loopback), so before the port can be used again. Only the
	 * state is read: the first byte of struct tcp_info. */
	{
		uint8_t state = 0;
		socklen_t len = sizeof(state);

		if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &state, &len) == 0 && len == sizeof(state) &&
		    state == TCP_CLOSE) {
			atomic_fetch_add(&E->reset_before_accept, 1);
			conn_close(c, false);
			return;
		}
	}
	/* Only connections that came through the hooks have a pair entry. */
	if (loader_pair_take(E->loader, &key, &c->pair)) {
		if (client_gone(family, &key)) {
			atomic_fetch_add(&E->reset_before_accept, 1);
			conn_close(c, false);
			return;
		}
		atomic_fetch_add(&E->no_pair, 1);
		struct audit_w *w = enforcer_conn_event(c, 5, "Refuse");

		audit_w_verdict(w, false, false, NULL,
				"connection did not come through the agent hooks (no pair entry)");
		audit_commit(w);
		conn_close(c, true);
		return;
	}
	/* An entry older than the sweep's bound is one whose socket never
	 * reached us (its own close removes it): whoever dials with its
	 * address and port now is not that agent */
	{
		uint64_t now = now_ns_boot();

		if (now > c->pair.ts_ns && now - c->pair.ts_ns > pair_max_age_ns()) {
			atomic_fetch_add(&E->no_pair, 1);
			struct audit_w *aw = enforcer_conn_event(c, 5, "Refuse");

			audit_w_verdict(aw, false, false, NULL, "connection did not come through the agent hooks "
					"(no pair entry: the one for its address is stale)");
			audit_commit(aw);
			conn_close(c, true);
			return;
		}
	}
	if (enforcer_agent_idx(c->pair.slot) < 0) {
		refuse(c, "socket belongs to no agent of the running policy");
		return;
	}
	c->agent_idx = enforcer_agent_idx(c->pair.slot);
	struct agent_rt *rt = &E->agents[c->agent_idx];
	const struct policy_agent *ag = &p->agents[c->agent_idx];
	/* this connection's place in the count: a second read could see
	 * other workers' accepts too and refuse both at the limit */
	uint64_t active = (uint64_t)atomic_fetch_add(&rt->active, 1) + 1;   /* released in conn_free */
	atomic_fetch_add(&rt->accepted, 1);
	/* First: past its rate an agent's connections cost one event each
	 * for at most CONNECT_RATE_EVENTS a second; the refusals below
	 * (limits.connections, identity) then come at most at its rate. */
	if (!connect_rate_may(rt, ag->connect_rate)) {
		char why[128];

		atomic_fetch_add(&rt->connect_refused, 1);
		if (!connect_event_may(rt)) {   /* counted, reported by the main thread */
			enforcer_count_refused(c);
			conn_refuse(c);
			return;
		}
		snprintf(why, sizeof(why), "agent connect rate reached (limits.connect_rate: %u a second)",
			 ag->connect_rate);
		refuse(c, why);
		return;
	}

	if (!audit_accepting()) {   /* on_full: fail_closed */
		refuse(c, "audit cannot be recorded (spool full, on_full: fail_closed)");
		return;
	}
	if (is_own_listener(c->pair.orig_addr, c->pair.orig_port)) {
		atomic_fetch_add(&E->self_dial, 1);
		refuse(c, "destination is the enforcer's own listener");
		return;
	}
	if (ag->identity.source != IDENT_LOCAL) {
		struct ident_principal pr;

		enforcer_principal(c->agent_idx, &pr);
		if (!pr.verified) {
			/* Fail closed: no verified identity, no access. The
			 * reason is the source's, never a token or secret. */
			snprintf(c->why, sizeof(c->why), "identity not verified: %s", pr.reason);
			if (enforcer_should_refuse(c, c->why)) {
				refuse(c, c->why);
				return;
			}
		}
	}
	if (active > ag->max_connections) {
		refuse(c, "agent connection limit reached (limits.connections)");
		return;
	}
	c->target_idx = policy_match_target(p, c->pair.orig_addr, c->pair.orig_port, dns_resolved,
					    (void *)(uintptr_t)c->pair.slot);
	const struct policy_target *t = c->target_idx >= 0 ? &p->targets[c->target_idx] : NULL;

	if (policy_is_metadata_addr(c->pair.orig_addr) && !(t && t->names_metadata)) {
		refuse(c, "cloud metadata address not named by any target");
		return;
	}
	if (!t)
		deny = "no target matches the destination";
	else if (!(c->rule = rule_for(c->policy, c->agent_idx, c->target_idx)))
		deny = "no role bound to the agent (by name or by its identity's claims) has a rule for this target";
	if (deny && enforcer_should_refuse(c, deny)) {
		refuse(c, deny);
		return;
	}
	c->ops = t ? proto_for(t->proto, &c->fallback_proto) : &proto_tcp_ops;
	if (c->ops->on_agent_data)   /* the module decides on the agent's first bytes */
		c->deadline_ms = now_ns_mono() / 1000000ull + AG_DECISION_TIMEOUT_MS;
	err = c->ops->start(c);
	/* Modules that decide later (tls) record the Open themselves, with what they saw. */
	if (!c->closing && (err || !c->ops->on_agent_data)) {
		struct audit_w *w = enforcer_conn_event(c, 1, "Open");

		c->opened = true;
		audit_w_verdict(w, !err, c->would_deny, enforcer_rule_name(c),
				err ? strerror(-err) : c->would_deny ? c->deny_reason : NULL);
		audit_commit(w);
	}
	if (err && !c->closing) {
		conn_close(c, true);
		return;
	}
	if (!c->closing)
		worker_watch(w, &c->agent, EPOLLIN | EPOLLOUT | EPOLLRDHUP);
}

/* ---- ring buffer, counters, status --------------------------------------- */

bool enforcer_audit_admit(uint32_t slot)
{
	uint64_t now = now_ns_mono();

	if (slot >= AG_MAX_AGENTS)
		slot = 0;
	typeof(E->bucket[0]) *b = &E->bucket[slot];
	if (!b->last_ns)
		b->tokens = E->audit_burst;
	else
		b->tokens += (double)(now - b->last_ns) * E->audit_rate / 1e9;
	if (b->tokens > E->audit_burst)
		b->tokens = E->audit_burst;
	b->last_ns = now;
	if (b->tokens >= 1) {
		b->tokens -= 1;
		return true;
	}
	b->suppressed++;
	return false;
}

/* Main thread, once a second: refusals for limits.connect_rate past
 * CONNECT_RATE_EVENTS a second, as one event per agent. */
static void report_connect_rate(void)
{
	for (size_t i = 0; i < E->policy->nagents; i++) {
		unsigned n = atomic_exchange(&E->agents[i].connect_unreported, 0);
		json_t *ev;

		if (!n || !(ev = audit_event(1008, 99, "Other")))
			continue;
		json_object_set_new(ev, "message", json_string(
			"connections refused for the agent's connect rate (limits.connect_rate), "
			"not recorded one by one"));
		json_object_set_new(ev, "unmapped", json_pack("{s:{s:s}, s:{s:s, s:I, s:i}}",
			"agent", "name", E->policy->agents[i].name, "summary", "counter", "connect_rate_refused",
			"count", (json_int_t)n, "connect_rate", (int)E->policy->agents[i].connect_rate));
		audit_emit(ev);
	}
}

/* One loss event per agent per second for what the rate limit suppressed. */
static void report_suppressed(void)
{
	for (int s = 0; s < AG_MAX_AGENTS; s++) {
		int ai = enforcer_agent_idx(s);
		json_t *ev;

		if (!E->bucket[s].suppressed)
			continue;
		ev = audit_event(1008, 99, "Other");
		if (ev) {
			json_object_set_new(ev, "message", json_string(
				"audit events of this agent suppressed by the rate limit (enforcement unaffected)"));
			json_object_set_new(ev, "unmapped", json_pack("{s:{s:s, s:I, s:i, s:i}}", "loss",
				"counter", "agent_rate_limited", "count", (json_int_t)E->bucket[s].suppressed,
				"rate_per_s", (int)E->audit_rate, "burst", (int)E->audit_burst));
			if (ai >= 0)
				json_object_set_new(json_object_get(ev, "unmapped"), "agent",
						    json_pack("{s:s}", "name", E->policy->agents[ai].name));
			audit_emit(ev);
		}
		E->bucket[s].suppressed = 0;
	}
}

/* An AF_UNIX address for audit events and logs: "@" and an abstract name,
 * or the path; bytes outside printable ASCII (and '\\') as \xNN, so any
 * name an agent picks is one line of valid UTF-8. */
static void unix_addr_str(const char *path, uint32_t len, char *out, size_t outlen)
{
	size_t o = 0;
	uint32_t i = 0;

	if (len > AG_UNIX_PATH_MAX)
		len = AG_UNIX_PATH_MAX;
	if (len && path[0] == 0) {
		out[o++] = '@';
		i = 1;
	}
	for (; i < len && o + 5 < outlen; i++) {
		unsigned char c = (unsigned char)path[i];

		if (c >= 0x20 && c < 0x7f && c != '\\')
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
	}
	out[o] = 0;
}

static int on_kernel_event(void *ctx, void *data, size_t size)
{
	const struct ag_event *e = data;
	const struct ag_unix_event *u = NULL;
	struct audit_agent a = { 0 };
	char dst[64];
	json_t *ev;

	if (size < sizeof(*e))
		return 0;
	if (e->kind == AG_EV_REDIRECT || e->kind == AG_EV_DNS_REDIRECT)
		return 0;   /* the enforcer audits the connection itself, with more context */
	if (e->kind == AG_EV_UNIX) {
		if (size < sizeof(*u))
			return 0;
		u = data;
	}
	bool observed = u && u->observed;
	int ai = enforcer_agent_idx(e->slot);
	if (ai >= 0 && !observed)
		atomic_fetch_add(&E->agents[ai].denied_kernel, 1);
	if (!enforcer_audit_admit(e->slot))
		return 0;
	struct ident_principal pr;
	if (ai >= 0) {
		a.name = E->policy->agents[ai].name;
		a.cgroup = E->agents[ai].cgroup_rel;
		enforcer_audit_principal(ai, &a, &pr);
	}
	a.pid = e->tgid;
	a.tid = e->pid;
	a.uid = e->uid;
	a.comm = e->comm;
	a.cgroup_id = e->cgroup_id;
	ev = observed ? audit_event(4001, 1, "Open") : audit_event(4001, 5, "Refuse");
	if (!ev)
		return 0;
	audit_add_agent(ev, &a);
	if (u) {
		char path[AG_UNIX_PATH_MAX * 4 + 8];

		unix_addr_str(u->path, u->len, path, sizeof(path));
		json_object_set_new(ev, "connection_info", json_pack("{s:s, s:i, s:i, s:s}",
			"protocol_name", "unix", "protocol_num", 0, "direction_id", 2, "direction", "Outbound"));
		json_object_set_new(json_object_get(ev, "unmapped"), "unix", json_pack("{s:s, s:b, s:s, s:s}",
			"address", path, "abstract", u->len && u->path[0] == 0,
			"operation", u->op == AG_UNIX_SENDMSG ? "sendmsg" : "connect",
			"socket_type", u->type == 1 ? "stream" : u->type == 2 ? "dgram" : u->type == 5 ? "seqpacket" : "other"));
		json_object_set_new(json_object_get(ev, "unmapped"), "enforced_by", json_string("kernel"));
		json_object_set_new(json_object_get(ev, "unmapped"), "hook", json_string(
			u->op == AG_UNIX_SENDMSG ? "sendmsg_unix" : "connect_unix"));
		audit_add_verdict(ev, observed, observed, NULL, reason_str(e->reason));
		audit_emit(ev);
		return 0;
	}
	if (e->kind == AG_EV_DENY) {
		addr_str(e->addr, dst, sizeof(dst));
		json_object_set_new(ev, "dst_endpoint", json_pack("{s:s, s:i}", "ip", dst, "port", e->port));
	}
	json_object_set_new(ev, "connection_info", json_pack("{s:s, s:i, s:i, s:s}",
		"protocol_name", e->proto == IPPROTO_UDP ? "udp" : e->proto == IPPROTO_TCP ? "tcp" : "other",
		"protocol_num", e->proto, "direction_id", 2, "direction", "Outbound"));
	json_object_set_new(json_object_get(ev, "unmapped"), "enforced_by", json_string("kernel"));
	json_object_set_new(json_object_get(ev, "unmapped"), "hook", json_string(
		e->kind == AG_EV_SOCK_DENY ? "sock_create" : e->kind == AG_EV_BIND_DENY ? "bind" : "connect"));
	audit_add_verdict(ev, false, false, NULL, reason_str(e->reason));
	audit_emit(ev);
	return 0;
}

/* Kernel-side failures become Event Log Activity (1008) events. */
static void check_counters(void)
{
	static const int lossy[] = { AG_CNT_RB_DROP, AG_CNT_PAIR_FAIL, AG_CNT_SK_STORAGE_FAIL };
	uint64_t now[AG_CNT__MAX];

	if (loader_counters(E->loader, now))
		return;
	for (size_t i = 0; i < sizeof(lossy) / sizeof(lossy[0]); i++) {
		int k = lossy[i];
		uint64_t delta = now[k] - E->kcount_seen[k];
		json_t *ev;

		if (now[k] <= E->kcount_seen[k])
			continue;
		ev = audit_event(1008, 99, "Other");
		if (ev) {
			static const char *const why[AG_CNT__MAX] = {
				[AG_CNT_RB_DROP] = "kernel events lost: ring buffer full (enforcement unaffected)",
				[AG_CNT_PAIR_FAIL] = "pair map full or failing: the affected connections reached "
						     "the enforcer without attribution and were refused",
				[AG_CNT_SK_STORAGE_FAIL] = "socket storage could not be created: the affected "
							   "sockets were refused",
			};
			/* The events lost sit just before the next sequence number. */
			json_object_set_new(ev, "message", json_string(why[k]));
			json_object_set_new(ev, "unmapped", json_pack("{s:{s:s, s:I, s:I, s:I}}", "loss",
				"counter", counter_names[k], "count", (json_int_t)delta, "total", (json_int_t)now[k],
				"after_sequence", (json_int_t)audit_sequence()));
			audit_emit(ev);
		}
		E->kcount_seen[k] = now[k];
	}
}

/* The secret files p names for targets and sinks that group or others may
 * access (policy_secrets.c), stat'ed now: [{target | sink and type, field,
 * path, mode}] for status and the start and reload events. Reported, never
 * refused (DESIGN §3); the path and mode, never the content. */
static void exposed_add(void *arg, const struct policy_secret *s)
{
	unsigned mode = policy_secret_exposed(s->path);
	char m[8];
	json_t *o;

	if (!mode)
		return;
	snprintf(m, sizeof(m), "%04o", mode);
	o = s->target ? json_pack("{s:s}", "target", s->target)
		      : json_pack("{s:I, s:s}", "sink", (json_int_t)s->sink, "type", s->sink_type);
	if (!o)
		return;
	json_object_set_new(o, "field", json_string(s->field));
	json_object_set_new(o, "path", json_string(s->path));
	json_object_set_new(o, "mode", json_string(m));
	json_array_append_new(arg, o);
}

static json_t *secret_files_exposed(const struct policy *p)
{
	json_t *a = json_array();

	if (a)
		policy_secret_files(p, exposed_add, a);
	return a;
}

/* {secret_files_exposed: [...]} when p has any, else NULL: for an event. */
static json_t *exposed_unmapped(const struct policy *p)
{
	json_t *a = secret_files_exposed(p);

	if (!json_array_size(a)) {
		json_decref(a);
		return NULL;
	}
	return json_pack("{s:o}", "secret_files_exposed", a);
}

static json_t *known_limits(void)
{
	const struct loader_features *f = loader_features(E->loader);
	json_t *l = json_array();

	if (f->connect_unix)
		json_array_append_new(l, json_string(
			"AF_UNIX connects and datagrams reach only the addresses an agent's unix_sockets names, "
			"compared as the agent spells them before the kernel looks the path up: a listed socket "
			"in a directory the agent may write can be replaced by a symlink to another; no hook sees "
			"bind, so an agent may bind a free abstract name that host clients dial"));
	else
		json_array_append_new(l, json_string(
			"AF_UNIX is not checked on this kernel (cgroup/connect_unix needs Linux 6.7): unix_sockets "
			"is not enforced; restrict AF_UNIX by the agent's uid and mount isolation"));
	json_array_append_new(l, json_string(
		"sockets of families other than AF_INET, AF_INET6 and AF_UNIX (AF_NETLINK, AF_PACKET, AF_VSOCK, "
		"AF_RDS, ...) are not seen by the cgroup socket hooks, and this build has no BPF LSM program: "
		"'agentgate exec' lets agents create only AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK sockets (no "
		"io_uring) and drops CAP_NET_RAW and CAP_NET_ADMIN; for attached cgroups restrict the families "
		"(systemd RestrictAddressFamilies=)"));
	json_array_append_new(l, json_string(
		"sockets created outside the agent cgroup and passed in (SCM_RIGHTS, pidfd_getfd), or created before "
		"a process moved into it, belong to their original cgroup and are not enforced: start agents with "
		"'agentgate exec', which closes inherited descriptors, makes cgroupfs read-only and drops every "
		"capability"));
	json_array_append_new(l, json_string(
		"agents cannot accept inbound connections: the backstop drops every packet not to or from the "
		"enforcer, including connections opened before attach (they stall rather than leak)"));
	json_array_append_new(l, json_string(
		"an agent with CAP_SYS_ADMIN, CAP_BPF or CAP_NET_ADMIN in the initial user namespace, or running as "
		"uid 0 outside 'agentgate exec', can detach the programs or leave its cgroup; under 'exec' a uid-0 "
		"agent still owns root-owned files outside the hidden directories: run agents with --user"));
	json_array_append_new(l, json_string(
		"after 'agentgate reload', a postgres session holding prepared statements or an open transaction, "
		"or whose masks the reload changed, cannot move to the new policy: when the reload changed the "
		"agent's rules it ends (FATAL 57P01) at its next statement outside a transaction, and inside one "
		"only ends it (sessions whose target the new policy no longer grants are closed)"));
	json_array_append_new(l, json_string(
		"agents in their own network namespace are refused (listeners in agent namespaces not yet served)"));
	json_array_append_new(l, json_string(
		"DNS over TCP, DoT and DoH are ordinary TCP connections: allowed only to a target"));
	if (!f->set_retval)
		json_array_append_new(l, json_string("bpf_set_retval unavailable: denied connects fail with EPERM"));
	json_array_append_new(l, json_string(
		"review rules deny with 'needs approval': there is no approval mechanism yet"));
	return l;
}

void *enforcer_status_json(void)
{
	const struct policy *p = E->policy;
	const struct loader_features *f = loader_features(E->loader);
	json_t *agents = json_array(), *targets = json_array(), *counters = json_object();
	uint64_t k[AG_CNT__MAX] = { 0 };
	char pins[PATH_MAX];

	for (size_t i = 0; i < p->nagents; i++) {
		struct agent_rt *rt = &E->agents[i];
		int nprogs = 0;

		loader_prog_count(rt->cgroup_path, &nprogs);
		struct ident_principal pr;
		enforcer_principal(i, &pr);
		json_t *principal = json_pack("{s:s, s:s, s:s}", "source", pr.source, "iss", pr.iss,
					      "sub", pr.sub);
		json_object_set_new(principal, "exp", pr.exp ? json_integer(pr.exp) : json_null());
		json_object_set_new(principal, "verified", json_boolean(pr.verified));
		if (pr.client_id[0])
			json_object_set_new(principal, "client_id", json_string(pr.client_id));
		if (pr.ngroups) {
			json_t *g = json_array();
			for (size_t k = 0; k < pr.ngroups; k++)
				json_array_append_new(g, json_string(pr.groups[k]));
			json_object_set_new(principal, "groups", g);
		}
		if (pr.reason[0] && strcmp(pr.source, "local") != 0)
			json_object_set_new(principal, "reason", json_string(pr.reason));
		if (pr.warning[0])
			json_object_set_new(principal, "warning", json_string(pr.warning));
		if (pr.secret_file_exposed)
			json_object_set_new(principal, "secret_file_exposed", json_true());
		json_t *extra = json_array(), *unattached = json_array(), *ao;
		for (int x = 0; x < rt->nextra; x++) {
			json_array_append_new(extra, json_string(rt->extra_rel[x]));
			/* not made yet, or made again and not attached: its
			 * processes are not enforced */
			if (!rt->extra_cgid[x] || rt->extra_failing[x])
				json_array_append_new(unattached, json_string(rt->extra_rel[x]));
		}
		ao = json_pack(
			"{s:s, s:s, s:s, s:I, s:i, s:b, s:i, s:o, s:o,"
			" s:i, s:i, s:i, s:i, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
			"name", p->agents[i].name, "cgroup", rt->cgroup_rel, "cgroup_path", rt->cgroup_path,
			"cgroup_id", (json_int_t)rt->cgid, "slot", (int)E->slot_of[i], "attached", rt->attached,
			"programs", nprogs, "extra_cgroups", extra, "principal", principal,
			"connections", (int)atomic_load(&rt->active),
			"max_connections", (int)p->agents[i].max_connections,
			"connect_rate", (int)p->agents[i].connect_rate,
			"parse_cpu", (int)p->agents[i].parse_cpu,
			"mask_cpu", (int)mask_pct(p, i),
			"parse_refused", (json_int_t)atomic_load(&rt->parse_refused),
			"connect_rate_refused", (json_int_t)atomic_load(&rt->connect_refused),
			"mask_ms", (json_int_t)(atomic_load(&rt->mask_ns) / 1000000ull),
			"mask_paced", (json_int_t)atomic_load(&rt->mask_paced),
			"accepted", (json_int_t)atomic_load(&rt->accepted),
			"refused", (json_int_t)atomic_load(&rt->refused),
			"denied_in_kernel", (json_int_t)atomic_load(&rt->denied_kernel));
		json_object_set_new(ao, "connects_pending",
				    json_integer((json_int_t)loader_pending(E->loader, E->slot_of[i])));
		json_object_set_new(ao, "extra_cgroups_unattached", unattached);
		json_object_set_new(ao, "cgroup_attach_failing", json_boolean(rt->cg_failing));
		json_array_append_new(agents, ao);
	}
	for (size_t t = 0; t < p->ntargets; t++) {
		const struct policy_target *tg = &p->targets[t];
		char addr[300];
		bool fb;
		const struct proto_ops *ops = proto_for(tg->proto, &fb);

		if (tg->addr.kind == ADDR_HOST) {
			snprintf(addr, sizeof(addr), "%s:%u", tg->addr.host, tg->addr.port);
		} else {
			char a[64];

			addr_str(tg->addr.addr, a, sizeof(a));
			snprintf(addr, sizeof(addr), "%s%s%s/%u:%u", addr_is_v4mapped(tg->addr.addr) ? "" : "[", a,
				 addr_is_v4mapped(tg->addr.addr) ? "" : "]",
				 addr_is_v4mapped(tg->addr.addr) ? tg->addr.prefixlen - 96 : tg->addr.prefixlen,
				 tg->addr.port);
		}
		json_array_append_new(targets, json_pack("{s:s, s:s, s:s, s:s}", "name", tg->name,
			"protocol", policy_proto_name(tg->proto), "address", addr,
			"module", fb ? "tcp (protocol module not available yet)" : ops->name));
	}
	loader_counters(E->loader, k);
	for (int i = 0; i < AG_CNT__MAX; i++)
		if (counter_names[i])
			json_object_set_new(counters, counter_names[i], json_integer(k[i]));
	json_object_set_new(counters, "no_pair_entry", json_integer(atomic_load(&E->no_pair)));
	json_object_set_new(counters, "reset_before_accept", json_integer(atomic_load(&E->reset_before_accept)));
	json_object_set_new(counters, "pair_max_age_ms", json_integer((json_int_t)(pair_max_age_ns() / 1000000)));
	json_object_set_new(counters, "dialed_enforcer", json_integer(atomic_load(&E->self_dial)));
	json_object_set_new(counters, "audit_sequence", json_integer(audit_sequence()));
	json_object_set_new(counters, "audit_made_urgent", json_integer((json_int_t)audit_made_urgent()));
	json_object_set_new(counters, "audit_worker_drains", json_integer((json_int_t)audit_worker_drains()));
	size_t bufs = 0;

	for (int i = 0; i < E->nworkers; i++)
		bufs += __atomic_load_n(&E->workers[i].buf_bytes, __ATOMIC_RELAXED);
	json_object_set_new(counters, "stream_buffer_bytes", json_integer((json_int_t)bufs));
	json_object_set_new(counters, "http_masked_held_bytes", json_integer((json_int_t)http_masked_held()));
	json_object_set_new(counters, "pg_names_refreshed", json_integer((json_int_t)pg_names_refreshed()));
	json_object_set_new(counters, "pg_lineage_refreshed", json_integer((json_int_t)pg_lineage_refreshed()));
	json_object_set_new(counters, "pg_lineage_unknown_masked",
			    json_integer((json_int_t)pg_lineage_unknown_masked()));
	json_object_set_new(counters, "pg_catalog_notified", json_integer((json_int_t)pg_catalog_notified()));
	json_object_set_new(counters, "audit_dead_lettered", json_integer((json_int_t)audit_dead_lettered(false)));
	json_object_set_new(counters, "audit_dead_letters_discarded",
			    json_integer((json_int_t)audit_dead_lettered(true)));
	loader_pin_root(pins, sizeof(pins));

	json_t *st = json_pack("{s:s, s:i, s:I, s:{s:s, s:s, s:s, s:I}, s:s, s:s, s:s, s:{s:i, s:i, s:i},"
			 " s:o, s:o, s:o, s:o, s:{s:b, s:b, s:b}, s:o, s:o, s:o}",
		"version", AG_VERSION, "pid", (int)getpid(),
		"uptime_s", (json_int_t)((now_ms_realtime() - E->started_ms) / 1000),
		"policy", "path", E->policy_desc, "hash", p->hash,
		"mode", p->mode == POLICY_OBSERVE ? "observe" : "enforce", "reloads", (json_int_t)nreloads,
		"state_dir", E->state_dir, "cgroup2", E->cgroup2, "pin_root", pins,
		"listeners", "tcp_port", E->tcp_port, "dns_port_base", E->dns_base,
		"workers", E->nworkers,
		"agents", agents, "targets", targets, "counters", counters, "dns",
		E->dns ? dns_status(E->dns) : json_null(),
		"kernel_features", "set_retval", f->set_retval, "connect_unix", f->connect_unix,
		"lsm", f->lsm,
		"known_limits", known_limits(),
		"local_ca", local_ca_cert_path()[0] ? json_string(local_ca_cert_path()) : json_null(),
		"audit", json_pack("{s:b, s:s?}", "allowed_requests", p->audit.allowed_requests,
				   "recording_dir", p->audit.recording_dir));
	json_object_set_new(st, "pair_quota", json_integer(pair_quota(p)));
	json_object_set_new(st, "unattached_guard", json_boolean(E->unattached_guarded));
	json_object_set_new(st, "secret_files_exposed", secret_files_exposed(p));
	json_t *per = json_array();

	for (int i = 0; i < E->nworkers; i++)
		json_array_append_new(per, json_integer(E->workers[i].nconns));
	uint64_t caught = 0;

	for (int i = 0; i < E->nworkers; i++)
		caught += atomic_load_explicit(&E->workers[i].busy_caught, memory_order_relaxed);
	json_object_set_new(st, "busy_poll", json_pack("{s:i, s:I}", "us", E->nworkers ? (int)E->workers[0].busy_poll_us : 0,
		"caught", (json_int_t)caught));
	json_object_set_new(st, "balance", json_pack("{s:s, s:s?, s:o, s:b}",
		"method", E->balance ? "least_connections" : "kernel_hash",
		"reason", E->balance ? NULL : E->balance_why, "worker_connections", per,
		"workers_pinned", E->pinned));
	json_object_set_new(st, "port_guard", json_pack("{s:b, s:s?}", "on", E->guarded,
		"reason", E->guarded ? NULL : E->guard_why));
	json_object_set_new(st, "ca_leaves_minted", json_integer((json_int_t)local_ca_minted()));
	json_object_set_new(st, "core_dumps", json_boolean(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0));
	return st;
}

static void cg_watch_parent(const char *abs);

/* A cgroup of the agent that another took the place of: its pins go once
 * the kernel released it (check_cgroups). */
static void cg_dead(struct agent_rt *rt, uint64_t id)
{
	if (!id)
		return;
	if (rt->ndead == (int)(sizeof(rt->dead_cgid) / sizeof(rt->dead_cgid[0]))) {
		/* the oldest is left to the next start */
		memmove(rt->dead_cgid, rt->dead_cgid + 1, (size_t)(rt->ndead - 1) * sizeof(rt->dead_cgid[0]));
		rt->ndead--;
	}
	rt->dead_cgid[rt->ndead++] = id;
}

/* pending_ok: a cgroup that does not exist (a unit stopped while the
 * enforcer starts) is kept, and attached when it is made (check_cgroups);
 * dropped, the unit ran unenforced from its next start on (review, stop
 * 40). */
static int attach_extra(const char *agent, const char *cgroup, char *err, size_t errlen, bool pending_ok)
{
	int idx = policy_agent_index(E->policy, agent);
	struct agent_rt *rt;
	struct policy_agent tmp = { 0 };
	char abs[PATH_MAX], rel[PATH_MAX];
	uint64_t cgid;
	struct stat st;
	bool missing = false;
	int ret, serr;

	if (idx < 0) {
		snprintf(err, errlen, "no agent '%s' in the running policy", agent);
		return -ENOENT;
	}
	rt = &E->agents[idx];
	tmp.cgroup = (char *)cgroup;
	if (resolve_cgroup(&tmp, abs, sizeof(abs), rel, sizeof(rel))) {
		snprintf(err, errlen, "'%s' is not a plain cgroup path (no '.', '..' or empty part, not the root)",
			 cgroup);
		return -EINVAL;
	}
	serr = stat(abs, &st) ? errno : S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
	if (serr == ENOENT && pending_ok) {
		missing = true;
	} else if (serr) {
		snprintf(err, errlen, "'%s' is not a cgroup under %s", cgroup, E->cgroup2);
		return -ENOENT;
	}
	{
		char own[PATH_MAX];
		struct stat root;

		/* Never the root cgroup, the enforcer's own cgroup or an ancestor of
		 * it (its upstream connections would loop), nor a cgroup inside or
		 * around another agent's (nested agents take each other's identity). */
		if (!missing && stat(E->cgroup2, &root) == 0 && root.st_ino == st.st_ino) {
			snprintf(err, errlen, "'%s' is the cgroup2 root", cgroup);
			return -EINVAL;
		}
		if (proc_cgroup2_path(getpid(), own, sizeof(own)) == 0 && path_within(own, rel)) {
			snprintf(err, errlen, "'%s' contains the enforcer itself", cgroup);
			return -EINVAL;
		}
		for (size_t i = 0; i < E->policy->nagents; i++) {
			const char *o = E->agents[i].cgroup_rel;

			if ((int)i != idx && (path_within(rel, o) || path_within(o, rel))) {
				snprintf(err, errlen, "'%s' overlaps agent '%s' (%s)", cgroup,
					 E->policy->agents[i].name, o);
				return -EINVAL;
			}
			for (int x = 0; x < E->agents[i].nextra; x++) {
				const char *xo = E->agents[i].extra_rel[x];

				if (strcmp(xo, rel) != 0 && (path_within(rel, xo) || path_within(xo, rel))) {
					snprintf(err, errlen, "'%s' overlaps cgroup %s of agent '%s'", cgroup, xo,
						 E->policy->agents[i].name);
					return -EINVAL;
				}
				if ((int)i != idx && strcmp(xo, rel) == 0) {
					snprintf(err, errlen, "'%s' is already attached for agent '%s'", cgroup,
						 E->policy->agents[i].name);
					return -EINVAL;
				}
			}
		}
	}
	int have = -1;
	bool failed = false;

	for (int x = 0; x < rt->nextra && have < 0; x++)
		if (strcmp(rt->extra_rel[x], rel) == 0)
			have = x;   /* the same path again: its entry, not a second one */
	if (have < 0 && rt->nextra >= 8) {
		snprintf(err, errlen, "agent '%s' already has 8 extra cgroups", agent);
		return -E2BIG;
	}
	if (missing) {
		cgid = 0;   /* check_cgroups() attaches it when it is made */
		log_warn("attachment of '%s' to '%s': the cgroup does not exist now; its programs are attached "
			 "when it is made", agent, rel);
	} else if ((ret = loader_attach(E->loader, agent, abs, E->slot_of[idx], &cgid))) {
		snprintf(err, errlen, "attach to '%s': %s", abs, strerror(-ret));
		if (!pending_ok)
			return ret;
		/* At start: kept, and tried again every second. Dropped, the
		 * previous run's links on the cgroup were detached as stale
		 * and the unit ran unenforced (review, stop 40). */
		log_err("attachment of '%s' to '%s': %s; tried again every second", agent, rel, err);
		cgid = 0;
		failed = true;
	}
	cg_watch_parent(abs);
	if (have >= 0) {
		if (cgid && rt->extra_cgid[have] != cgid)
			cg_dead(rt, rt->extra_cgid[have]);
		if (cgid)
			rt->extra_cgid[have] = cgid;
		rt->extra_failing[have] = failed;
		return 0;
	}
	snprintf(rt->extra_rel[rt->nextra], PATH_MAX, "%s", rel);
	rt->extra_failing[rt->nextra] = failed;
	rt->extra_cgid[rt->nextra++] = cgid;
	save_attachments();
	return 0;
}

int enforcer_attach_extra(const char *agent, const char *cgroup, char *err, size_t errlen)
{
	return attach_extra(agent, cgroup, err, errlen, false);
}

/* ---- run ------------------------------------------------------------------ */

static void log_policy_warning(void *desc, const char *msg)
{
	ag_log(LOG_LVL_WARN, "policy %s: %s", (const char *)desc, msg);
}

/* Loads the policy: path, else /etc/agentgate/policy.yaml when present, else
 * the embedded default. Errors ("file:line:col: what") go to stderr, or into
 * msgs when it is not NULL (a reload). */
static struct policy *load_policy(const char *path, char *desc, size_t desclen, json_t *msgs)
{
	struct policy_errors errs = { 0 };
	struct policy *p;

	if (!path && access("/etc/agentgate/policy.yaml", F_OK) == 0)
		path = "/etc/agentgate/policy.yaml";
	if (path) {
		p = policy_load_file(path, &errs);
		snprintf(desc, desclen, "%s", path);
	} else {
		p = policy_load_buffer("<embedded default>", ag_default_policy,
				       ag_default_policy_end - ag_default_policy, &errs);
		snprintf(desc, desclen, "<embedded default>");
	}
	for (int i = 0; !p && i < errs.n; i++) {
		char line[600];

		policy_error_format(&errs.e[i], line, sizeof(line));
		if (msgs)
			json_array_append_new(msgs, json_string(line));
		else
			fprintf(stderr, "%s\n", line);
	}
	if (!p && errs.total > errs.n) {
		char more[64];

		snprintf(more, sizeof(more), "(%d more errors)", errs.total - errs.n);
		if (msgs)
			json_array_append_new(msgs, json_string(more));
		else
			fprintf(stderr, "%s\n", more);
	}
	if (p)
		policy_warnings(p, log_policy_warning, desc);
	return p;
}

static bool action_has_content(const struct policy_action *a)
{
	return a->present && (a->statements.n || a->tables.n || a->functions.n || a->http.n ||
			      a->verbs.n || a->resources.n || a->namespaces.n);
}

/*
 * What this build cannot enforce is refused at start, never silently ignored:
 * a rule that narrows a postgres/http/kubernetes target (statements, http,
 * masks, review) would otherwise be relayed as plain TCP, which grants more
 * than it says. A bare rule ({target: db}) is connection-level and allowed.
 */
/* An error about a policy: logged, or (msgs not NULL: a reload) collected
 * for the caller's answer. */
static void say(json_t *msgs, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(json_t *msgs, const char *fmt, ...)
{
	char buf[600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (msgs)
		json_array_append_new(msgs, json_string(buf));
	else
		log_err("%s", buf);
}

static int check_supported(const struct policy *p, json_t *msgs)
{
	int bad = 0;

	for (size_t i = 0; i < p->nagents; i++) {
		/* Delegation needs an issuer to verify user tokens with. */
		if (p->agents[i].accept_user_tokens && p->agents[i].identity.source == IDENT_LOCAL) {
			say(msgs, "agent '%s' (line %d): accept_user_tokens needs an OIDC identity (client_credentials "
				"or token_file): user tokens are verified with the agent's issuer and audience",
				p->agents[i].name, p->agents[i].line);
			bad++;
		}
	}
	for (size_t i = 0; i < p->ntargets; i++) {
		const struct policy_target *t = &p->targets[i];

		if (t->upstream.has_address && t->upstream.address.kind != ADDR_IP) {
			say(msgs, "target '%s' (line %d): upstream.address must be an IP address in this build",
				t->name, t->line);
			bad++;
		}
	}
	for (size_t r = 0; r < p->nroles; r++) {
		for (size_t k = 0; k < p->roles[r].nrules; k++) {
			const struct policy_rule *ru = &p->roles[r].rules[k];

			bool fb;
			const struct proto_ops *ops = proto_for(p->targets[ru->target_idx].proto, &fb);

			if (ops->enforces_rules && !fb)
				continue;
			if (action_has_content(&ru->allow) || ru->review.present || ru->mask.present) {
				say(msgs, "role '%s' rule %zu (line %d): allow/review/mask rules for target '%s' need its "
					"%s module, which is not in this build (a bare '{target: %s}' rule allows "
					"the connection)", p->roles[r].name, k + 1, ru->line, ru->target,
					policy_proto_name(p->targets[ru->target_idx].proto), ru->target);
				bad++;
			}
		}
	}
	if (p->approvals_webhook) {
		say(msgs, "approvals are not implemented in this build");
		bad++;
	}
	return bad ? -ENOTSUP : 0;
}

/* Takes the lock file at path (flock); the holder's pid is written in it. */
static int take_lock(const char *path)
{
	char pidbuf[32];
	int fd;

	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB)) {
		ssize_t n = pread(fd, pidbuf, sizeof(pidbuf) - 1, 0);

		pidbuf[n > 0 ? n : 0] = 0;
		pidbuf[strcspn(pidbuf, "\n")] = 0;
		log_err("another enforcer (pid %s) holds %s", pidbuf[0] ? pidbuf : "?", path);
		close(fd);
		return -EBUSY;
	}
	snprintf(pidbuf, sizeof(pidbuf), "%d\n", getpid());
	if (ftruncate(fd, 0) == 0)
		(void)!pwrite(fd, pidbuf, strlen(pidbuf), 0);
	return fd;
}

/* Application Lifecycle (6002); unmapped (may be NULL) is taken. */
static void lifecycle_event(int activity, const char *name, const char *msg, json_t *unmapped)
{
	json_t *ev = audit_event(6002, activity, name);

	if (!ev) {
		json_decref(unmapped);
		return;
	}
	json_object_set_new(ev, "app", json_pack("{s:s, s:s}", "name", "agentgate", "version", AG_VERSION));
	json_object_set_new(ev, "message", json_string(msg));
	if (unmapped)
		json_object_set_new(ev, "unmapped", unmapped);
	audit_emit(ev);
}

/* Authentication (3002): an agent's principal changed (obtained, refreshed
 * to a new subject, lost, or recovered). */
static void audit_principal(int idx)
{
	struct ident_principal pr;
	struct audit_agent a = { .name = E->policy->agents[idx].name, .cgroup = E->agents[idx].cgroup_rel,
				 .cgroup_id = E->agents[idx].cgid };
	json_t *ev;

	enforcer_principal(idx, &pr);   /* all of it: exp, reason, warning below */
	if (strcmp(pr.source, "local") != 0) {
		a.iss = pr.iss;
		a.sub = pr.sub;
		a.verified = pr.verified;
	}
	ev = audit_event(3002, pr.verified ? 1 : 99, pr.verified ? "Logon" : "Other");
	if (!ev)
		return;
	audit_add_agent(ev, &a);
	json_object_set_new(ev, "auth_protocol", json_string(pr.source));
	json_object_set_new(ev, "is_mfa", json_false());
	json_object_set_new(ev, "service", json_pack("{s:s}", "name", pr.iss));
	if (pr.exp)
		json_object_set_new(json_object_get(ev, "unmapped"), "exp", json_integer(pr.exp));
	audit_add_verdict(ev, pr.verified, false, NULL, pr.verified ? (pr.warning[0] ? pr.warning : NULL)
								    : pr.reason);
	audit_emit(ev);
}

/* The local CA, when some target's module terminates agents' TLS (http,
 * postgres). Without it those modules refuse TLS from agents; the enforcer
 * still runs. */
static void open_local_ca(void)
{
	char why[256];

	for (size_t t = 0; t < E->policy->ntargets; t++) {
		enum policy_proto p = E->policy->targets[t].proto;

		if (p != PROTO_HTTP && p != PROTO_POSTGRES && p != PROTO_KUBERNETES)
			continue;
		if (local_ca_open(E->state_dir, why, sizeof(why)))
			log_err("local CA: %s (agents' TLS to inspected targets will be refused)", why);
		else
			log_info("local CA: %s%s (add it to agents' trust stores for TLS to inspected targets)",
				 local_ca_created() ? "created a new CA, " : "", local_ca_cert_path());
		return;
	}
}

static void sync_token(struct agent_rt *rt);

/* Creates each agent's identity source and takes a first principal. */
static int open_identities(void)
{
	for (size_t i = 0; i < E->policy->nagents; i++) {
		struct agent_rt *rt = &E->agents[i];
		char why[256];

		pthread_mutex_init(&rt->plock, NULL);
		rt->ident = ident_agent_new(E->policy->agents[i].name, &E->policy->agents[i].identity,
					    E->state_dir, why, sizeof(why));
		if (!rt->ident) {
			log_err("agent '%s': identity: %s", E->policy->agents[i].name, why);
			return -EINVAL;
		}
		ident_agent_tick(rt->ident, now_ns_mono() / 1000000ull);
		ident_agent_principal(rt->ident, &rt->principal);
		sync_token(rt);
		if (E->policy->agents[i].identity.source != IDENT_LOCAL) {
			log_info("agent '%s': identity %s", E->policy->agents[i].name,
				 rt->principal.verified ? "verified" : rt->principal.reason);
			audit_principal(i);
		}
	}
	return 0;
}

/* Workers read the agent's token through rt->token (enforcer_agent_token);
 * the ident_agent's own copy is the main thread's. */
static void sync_token(struct agent_rt *rt)
{
	const char *tok = ident_agent_token(rt->ident);
	char *copy = NULL, *old;

	if (tok ? rt->token && strcmp(tok, rt->token) == 0 : !rt->token)
		return;
	if (tok && !(copy = strdup(tok)))
		return;
	pthread_mutex_lock(&rt->plock);
	old = rt->token;
	rt->token = copy;
	pthread_mutex_unlock(&rt->plock);
	if (old) {
		OPENSSL_cleanse(old, strlen(old));
		free(old);
	}
}

int enforcer_agent_token(int idx, char *out, size_t outlen)
{
	struct agent_rt *rt = &E->agents[idx];
	int ret;

	pthread_mutex_lock(&rt->plock);
	if (!rt->token || !rt->principal.verified) {
		ret = -ENOENT;
	} else {
		size_t n = strlen(rt->token);

		ret = n < outlen && n <= INT_MAX ? (int)n : -ENOSPC;
		if (ret >= 0)
			memcpy(out, rt->token, n + 1);
	}
	pthread_mutex_unlock(&rt->plock);
	return ret;
}

static void tick_identities(void)
{
	for (size_t i = 0; i < E->policy->nagents; i++) {
		struct agent_rt *rt = &E->agents[i];
		struct ident_principal pr;

		if (!rt->ident)
			continue;
		int changed = ident_agent_tick(rt->ident, now_ns_mono() / 1000000ull);

		sync_token(rt);
		if (changed != 1)
			continue;
		ident_agent_principal(rt->ident, &pr);
		pthread_mutex_lock(&rt->plock);
		rt->principal = pr;
		pthread_mutex_unlock(&rt->plock);
		audit_principal(i);
	}
}

/*
 * Agent cgroups deleted and made again while the enforcer runs. A cgroup
 * made again is a new cgroup, without programs: systemd does exactly that to
 * a unit's cgroup at every restart of the unit, so a unit given to an agent
 * with `agentgate attach` ran unenforced from its first restart on, and so
 * did a policy cgroup some tool deleted and made again (known limit 13c until
 * stop 40). The main thread watches the directory that holds each agent
 * cgroup (inotify: a name made, removed or renamed in it) and checks every
 * cgroup once a second besides, since a parent deleted and made again loses
 * its watch. A policy cgroup that is gone is made again, as at start; a
 * cgroup whose id changed gets the agent's programs and slot, as at start.
 * Between a mkdir and the attach (a wakeup of the main thread and the
 * attach, milliseconds) a process moved in could still connect directly:
 * sockets it made meanwhile carry no stamp, so their later connects are
 * refused, and the backstop drops the packets of what connected meanwhile.
 */
static int cg_ifd = -1;

static void cg_watch_parent(const char *abs)
{
	char dir[PATH_MAX];
	char *slash;

	if (cg_ifd < 0)
		return;
	snprintf(dir, sizeof(dir), "%s", abs);
	if (!(slash = strrchr(dir, '/')) || slash == dir)
		return;
	*slash = '\0';
	/* the same directory gives the same watch: no bookkeeping. A parent
	 * that is gone is left to the check once a second. */
	if (inotify_add_watch(cg_ifd, dir, IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM | IN_ONLYDIR) < 0 &&
	    errno != ENOENT) {
		static bool logged;

		if (!logged)
			log_warn("inotify on %s: %s: agent cgroups there made again are found within a second "
				 "instead of at once (fs.inotify.max_user_watches?)", dir, strerror(errno));
		logged = true;
	}
}

/*
 * A cgroup deleted and made again in a loop (only root, or the owner of a
 * delegated subtree, can) is attached again every time, but reported, in
 * the log and as a 6002 event, at most CG_REPORTS times per agent in
 * CG_REPORT_WINDOW_MS: the rest are counted, and reported as one event
 * when the window ends (cg_reports_tick()), so the trail and the log keep
 * their size. A systemd unit restarting stays far below it.
 */
#define CG_REPORTS 10
#define CG_REPORT_WINDOW_MS 10000

static bool cg_report_may(struct agent_rt *rt)
{
	uint64_t now = now_ns_mono() / 1000000ull;

	if (!rt->cg_window_ms || now - rt->cg_window_ms >= CG_REPORT_WINDOW_MS) {
		if (rt->cg_unreported) {   /* cg_reports_tick() reports those first */
			rt->cg_unreported++;
			return false;
		}
		rt->cg_window_ms = now;
		rt->cg_reports = 0;
	}
	if (rt->cg_reports < CG_REPORTS) {
		rt->cg_reports++;
		return true;
	}
	rt->cg_unreported++;
	return false;
}

/* err: log_err rather than log_warn. */
static void cg_event(struct agent_rt *rt, bool err, const char *msg, const char *agent, const char *rel, uint64_t id,
		     uint64_t was)
{
	if (!cg_report_may(rt))
		return;
	ag_log(err ? LOG_LVL_ERR : LOG_LVL_WARN, "%s", msg);
	lifecycle_event(99, "Other", msg, json_pack("{s:{s:s, s:s, s:I, s:I}}", "agent", "name", agent,
		"cgroup", rel, "cgroup_id", (json_int_t)id, "previous_cgroup_id", (json_int_t)was));
}

/* Once a second: the changes a window left unreported, as one event. */
static void cg_reports_tick(void)
{
	uint64_t now = now_ns_mono() / 1000000ull;

	for (size_t i = 0; i < E->policy->nagents; i++) {
		struct agent_rt *rt = &E->agents[i];
		const char *name = E->policy->agents[i].name;
		char msg[512];

		if (!rt->cg_unreported || now - rt->cg_window_ms < CG_REPORT_WINDOW_MS)
			continue;
		snprintf(msg, sizeof(msg), "agent '%s': %u more changes of its cgroups in %u s were not reported "
			 "one by one (more than %u); each was attached again", name, rt->cg_unreported,
			 CG_REPORT_WINDOW_MS / 1000, CG_REPORTS);
		log_warn("%s", msg);
		lifecycle_event(99, "Other", msg, json_pack("{s:{s:s}, s:I}", "agent", "name", name,
							   "unreported", (json_int_t)rt->cg_unreported));
		rt->cg_unreported = 0;
		rt->cg_window_ms = now;
		rt->cg_reports = 0;
	}
}

/* One cgroup of agent i, attached as *cgid (0: not yet made): attached again when the cgroup
 * at abs is another one now. make: the policy cgroup, made again if gone.
 * true: attached again. */
static bool cg_check_one(size_t i, const char *abs, const char *rel, uint64_t *cgid, bool make, bool *failing,
			 bool tick)
{
	const char *name = E->policy->agents[i].name;
	uint64_t now = 0, was = *cgid;
	struct stat st;
	int err;

	cg_watch_parent(abs);
	if (*failing && !tick)
		return false;   /* failing: tried again once a second, not at every event */
	if (stat(abs, &st)) {
		if (errno != ENOENT || !make)
			return false;   /* an attached cgroup that is gone: until it is back */
		if ((err = mkdir_p(abs, 0755))) {
			if (!*failing)
				log_err("agent '%s': cgroup %s is gone and could not be made again: %s", name, abs,
					strerror(-err));
			*failing = true;
			return false;
		}
		if (stat(abs, &st))
			return false;
	}
	if (!S_ISDIR(st.st_mode))
		return false;
	if ((uint64_t)st.st_ino == was) {
		*failing = false;
		return false;
	}
	err = loader_attach(E->loader, name, abs, E->slot_of[i], &now);
	if (err) {
		if (!*failing) {
			char msg[PATH_MAX + 256];

			snprintf(msg, sizeof(msg), "agent '%s': cgroup %s is new (id %llu) but its programs could "
				 "not be attached: %s; tried again every second", name, rel,
				 (unsigned long long)st.st_ino, strerror(-err));
			cg_event(&E->agents[i], true, msg, name, rel, (uint64_t)st.st_ino, was);
		}
		*failing = true;
		return false;
	}
	*failing = false;
	*cgid = now;
	cg_dead(&E->agents[i], was);
	char msg[PATH_MAX + 256];

	if (was)
		snprintf(msg, sizeof(msg), "agent '%s': cgroup %s was deleted and made again (id %llu, was %llu): "
			 "programs attached", name, rel, (unsigned long long)now, (unsigned long long)was);
	else
		snprintf(msg, sizeof(msg), "agent '%s': cgroup %s was made (id %llu): programs attached", name, rel,
			 (unsigned long long)now);
	cg_event(&E->agents[i], false, msg, name, rel, now, was);
	return true;
}

static bool cg_current(const struct agent_rt *rt, uint64_t id)
{
	if (id == rt->cgid)
		return true;
	for (int x = 0; x < rt->nextra; x++)
		if (id == rt->extra_cgid[x])
			return true;
	return false;
}

/* tick: the once-a-second check (cgroups whose attach failed are tried
 * again then, not at every inotify event). */
static void check_cgroups(bool tick)
{
	bool agents_changed = false;

	/* every cgroup first: pruning below reads pins, which takes time */
	for (size_t i = 0; i < E->policy->nagents; i++) {
		struct agent_rt *rt = &E->agents[i];

		if (!rt->attached)
			continue;
		if (cg_check_one(i, rt->cgroup_path, rt->cgroup_rel, &rt->cgid, true, &rt->cg_failing, tick))
			agents_changed = true;
		for (int x = 0; x < rt->nextra; x++) {
			char abs[PATH_MAX * 2];

			cg_check_one(i, extra_abs(rt, x, abs, sizeof(abs)), rt->extra_rel[x], &rt->extra_cgid[x], false, &rt->extra_failing[x], tick);
		}
	}
	if (agents_changed && write_agents_file())
		log_warn("could not save %s/agents.json: `exec` refuses the agent until it is", E->state_dir);
	/* The pins of a cgroup made again go once the kernel has released
	 * the old one, which is not at once after the rmdir (and not while a
	 * socket made in it lives): tried at every check until then. Never
	 * the links of a live cgroup, nor of one the agent uses now. */
	for (size_t i = 0; tick && i < E->policy->nagents; i++) {
		struct agent_rt *rt = &E->agents[i];

		for (int k = 0; k < rt->ndead;) {
			int r = cg_current(rt, rt->dead_cgid[k]) ? 1 :
				loader_prune_released(E->loader, E->policy->agents[i].name, rt->dead_cgid[k]);

			if (r == 0) {
				k++;
				continue;
			}
			if (r < 0)
				log_warn("agent '%s': pins of deleted cgroup %llu: %s (removed at the next start)",
					 E->policy->agents[i].name, (unsigned long long)rt->dead_cgid[k], strerror(-r));
			rt->dead_cgid[k] = rt->dead_cgid[--rt->ndead];
		}
	}
}

/* The watch fired: drain it, then check. */
static void on_cgroup_event(int fd)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));

	while (read(fd, buf, sizeof(buf)) > 0)
		;
	check_cgroups(false);
}

static int main_loop(int epfd, int sfd, struct ring_buffer *rb, struct admin *adm)
{
	struct epoll_event evs[64];
	uint64_t last_sec = 0, last_sweep = 0;

	while (!E->stop) {
		int n = epoll_wait(epfd, evs, 64, 250);

		for (int i = 0; i < n; i++) {
			struct main_item *it = evs[i].data.ptr;

			switch (it->kind) {
			case MI_RINGBUF:
				ring_buffer__consume(rb);
				break;
			case MI_SIGNAL: {
				struct signalfd_siginfo si;

				while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
					if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
						E->stop = 1;
					else if (si.ssi_signo == SIGHUP)
						audit_reopen();
				}
				break;
			}
			case MI_ADMIN:
			case MI_ADMIN_CONN:
				admin_on_event(adm, it, evs[i].events);
				break;
			case MI_DNS_LISTEN:
			case MI_DNS_UPSTREAM:
				dns_on_event(E->dns, it, evs[i].events);
				break;
			case MI_CGROUPS:
				on_cgroup_event(it->fd);
				break;
			}
		}
		ring_buffer__consume(rb);   /* events submitted without wakeup */
		audit_flush();
		uint64_t now = now_ns_mono() / 1000000000ull;
		if (now != last_sec) {
			last_sec = now;
			check_counters();
			report_suppressed();
			report_connect_rate();
			pair_max_age_refresh();
			check_cgroups(true);   /* first: identities may wait on the network */
			cg_reports_tick();
			tick_identities();
			dns_tick(E->dns);
		}
		if (now - last_sweep >= 10) {
			last_sweep = now;
			/* Entries for connects the enforcer never accepted. */
			loader_pair_sweep(E->loader, pair_max_age_ns(), NULL);
		}
	}
	return 0;
}

/*
 * agentgate reload. The new file is loaded and checked exactly as at start;
 * any error, or a change a running enforcer cannot take (policy_reload.c),
 * leaves the running policy in place and is answered with the reasons.
 * Otherwise the compiled policy is swapped whole: connections accepted from
 * then on use the new one; connections already open keep the snapshot they
 * started with (their rules, masks, prepared statements and cached verdicts
 * stay consistent) until they close. The kernel allow set takes the new
 * entries before the swap and loses the old ones after it, so no connect
 * that both policies allow is refused in between.
 *
 * Replaced policies are kept until the enforcer stops: connections and
 * pooled upstream sessions (keyed by the policy's address) still refer to
 * them. Only a peer with CAP_SYS_ADMIN outside every agent cgroup can ask
 * (admin.c), so the count of reloads is the operator's to bound.
 */
static struct policy **retired;
static size_t nretired;

/* tried: the hash of a file that loaded but was refused, or ""; allowed:
 * the new audit.allowed_requests when the reload changed it, else -1;
 * now: the policy in force after a reload that succeeded, whose exposed
 * secret files are listed (NULL after a failed one) */
static void reload_event(bool ok, const char *hash, const char *prev_hash, const char *tried,
			 const char *msg, pid_t pid, uid_t uid, int allowed, const struct policy *now)
{
	json_t *ev = audit_event(3004, 3, "Update");
	char uidbuf[16];
	json_t *data = json_pack("{s:s}", "previous_hash", prev_hash);
	json_t *exposed = now ? exposed_unmapped(now) : NULL;

	if (!ev) {
		json_decref(data);
		json_decref(exposed);
		return;
	}
	if (exposed)
		json_object_update(data, exposed);
	json_decref(exposed);
	if (tried[0])
		json_object_set_new(data, "refused_hash", json_string(tried));
	if (allowed >= 0)
		json_object_set_new(data, "audit_allowed_requests", json_boolean(allowed));
	snprintf(uidbuf, sizeof(uidbuf), "%u", (unsigned)uid);
	json_object_set_new(ev, "entity", json_pack("{s:s, s:s, s:s, s:o}", "type", "policy",
						     "name", E->policy_desc, "uid", hash, "data", data));
	json_object_set_new(ev, "status_id", json_integer(ok ? 1 : 2));
	json_object_set_new(ev, "status", json_string(ok ? "Success" : "Failure"));
	json_object_set_new(ev, "message", json_string(msg));
	json_object_set_new(ev, "actor", json_pack("{s:s, s:{s:i, s:{s:s}}}", "app_name", "agentgate reload",
						   "process", "pid", (int)pid, "user", "uid", uidbuf));
	audit_emit(ev);
}

json_t *enforcer_reload(pid_t pid, uid_t uid)
{
	json_t *msgs = json_array();
	struct policy *old = E->policy, *nw, **r;
	char desc[PATH_MAX], why[600], msg[2 * PATH_MAX + 200], tried[65] = "";
	unsigned live = 0;
	int err;

	nw = load_policy(E->policy_arg[0] ? E->policy_arg : NULL, desc, sizeof(desc), msgs);
	if (nw)
		snprintf(tried, sizeof(tried), "%s", nw->hash);
	if (nw && check_supported(nw, msgs)) {
		policy_free(nw);
		nw = NULL;
	}
	if (nw && strcmp(desc, E->policy_desc) != 0) {
		/* no --policy: /etc/agentgate/policy.yaml appeared or went */
		snprintf(why, sizeof(why), "the policy now comes from %s, not %s; restart the enforcer to "
			 "change where it comes from", desc, E->policy_desc);
		json_array_append_new(msgs, json_string(why));
		policy_free(nw);
		nw = NULL;
	}
	if (nw && policy_reload_refusal(old, nw, why, sizeof(why))) {
		json_array_append_new(msgs, json_string(why));
		policy_free(nw);
		nw = NULL;
	}
	if (!nw) {
		snprintf(msg, sizeof(msg), "policy not reloaded: %s%s; the running policy (%.12s) stays",
			 json_array_size(msgs) ? json_string_value(json_array_get(msgs, 0)) : "cannot be read",
			 json_array_size(msgs) > 1 ? " (and more)" : "", old->hash);
		log_warn("%s", msg);
		reload_event(false, old->hash, old->hash, tried, msg, pid, uid, -1, NULL);
		snprintf(msg, sizeof(msg), "policy not reloaded; the running policy (%.12s) stays", old->hash);
		return json_pack("{s:b, s:s, s:o}", "ok", 0, "error", msg, "errors", msgs);
	}
	json_decref(msgs);
	if (strcmp(nw->hash, old->hash) == 0) {
		policy_free(nw);
		snprintf(msg, sizeof(msg), "policy unchanged: %s (%.12s)", E->policy_desc, old->hash);
		reload_event(true, old->hash, old->hash, "", msg, pid, uid, -1, old);
		return json_pack("{s:b, s:s, s:s, s:b}", "ok", 1, "message", msg, "hash", old->hash,
				 "changed", 0);
	}
	r = realloc(retired, (nretired + 1) * sizeof(*r));
	if (!r) {
		policy_free(nw);
		snprintf(msg, sizeof(msg), "policy not reloaded: out of memory; the running policy (%.12s) stays",
			 old->hash);
		log_err("%s", msg);
		reload_event(false, old->hash, old->hash, tried, msg, pid, uid, -1, NULL);
		return json_pack("{s:b, s:s}", "ok", 0, "error", msg);
	}
	retired = r;
	if ((err = allow_add(nw)) || (err = set_mode_flags(nw))) {
		loader_allow_prune(E->loader, allow_keep, old);
		if (loader_unix_prune(E->loader, unix_keep, old) < 0)
			log_err("reload failed: the unix_sockets entries the new policy added could not all be "
				"removed: they stay allowed until the next start");
		set_mode_flags(old);
		policy_free(nw);
		snprintf(msg, sizeof(msg), "policy not reloaded: kernel maps: %s; the running policy (%.12s) stays",
			 strerror(-err), old->hash);
		log_err("%s", msg);
		reload_event(false, old->hash, old->hash, tried, msg, pid, uid, -1, NULL);
		return json_pack("{s:b, s:s}", "ok", 0, "error", msg);
	}
	/* Workers read E->policy once per accepted connection. */
	__atomic_store_n(&E->policy, nw, __ATOMIC_RELEASE);
	retired[nretired++] = old;
	nreloads++;
	dns_set_policy(E->dns, nw);
	if ((err = loader_allow_prune(E->loader, allow_keep, nw)) < 0)
		log_err("reload: removing the kernel allow entries the new policy drops: %s "
			"(they stay; the enforcer still judges every connection)", strerror(-err));
	if ((err = loader_unix_prune(E->loader, unix_keep, nw)) < 0)
		log_err("reload: removing the unix_sockets entries the new policy drops: %s "
			"(they stay until the next start: those AF_UNIX addresses remain allowed)", strerror(-err));
	audit_set_policy(nw);
	for (size_t i = 0; i < nw->nagents; i++)
		live += atomic_load(&E->agents[i].active);
	snprintf(msg, sizeof(msg), "policy reloaded: %s (%.12s, was %.12s, %s mode); ", E->policy_desc,
		 nw->hash, old->hash, nw->mode == POLICY_OBSERVE ? "observe" : "enforce");
	if (!live)
		snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg), "no connection was open");
	else
		snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg), "%u connection%s open: http requests and "
			 "idle database sessions take the new policy from their next request, database sessions "
			 "in a transaction or holding prepared statements keep the previous one until then, tcp "
			 "relays keep it, and connections to a target it no longer grants are closed", live,
			 live == 1 ? "" : "s");
	if (old->audit.allowed_requests != nw->audit.allowed_requests)
		snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg), "; audit.allowed_requests: %s -> %s (%s, "
			 "by each session as it takes the new policy)", old->audit.allowed_requests ? "true" : "false",
			 nw->audit.allowed_requests ? "true" : "false",
			 nw->audit.allowed_requests ? "allowed statements and requests are recorded again"
						    : "allowed statements and requests are no longer recorded; denials, "
						      "connections and identity still are");
	if (old->audit.allowed_requests && !nw->audit.allowed_requests)
		log_warn("%s", msg);
	else
		log_info("%s", msg);
	reload_event(true, nw->hash, old->hash, "", msg, pid, uid,
		     old->audit.allowed_requests != nw->audit.allowed_requests ? nw->audit.allowed_requests : -1, nw);
	return json_pack("{s:b, s:s, s:s, s:s, s:b, s:i}", "ok", 1, "message", msg, "hash", nw->hash,
			 "previous_hash", old->hash, "changed", 1, "connections_kept", (int)live);
}

static uint16_t sock_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len))
		return 0;
	return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
					      : ((struct sockaddr_in *)&ss)->sin_port);
}

/* Only this enforcer's sockets get what is sent to its ports (ag_guard in
 * agentgate.bpf.c), and only it may bind them (ag_bind_guard4/6), also once
 * it is gone. When the guards cannot be attached or pinned (a bpffs that
 * refuses the pins, a map update failing), the ports are only reserved and a
 * local user could bind them while no enforcer runs: said in the log and in
 * status (port_guard), unless some port is already another process's, when
 * the enforcer stops rather than relay through unguarded moved ports. */
static int guard_ports(void)
{
	int rc = 0;

	for (int f = 0; f < 2 && !rc; f++)   /* one listener of the reuseport group: the kernel picks */
		rc = loader_listen_set(E->loader, f ? AG_LISTEN_TCP6 : AG_LISTEN_TCP4, E->workers[0].listen[f].fd);
	for (int i = 0; !rc && i < dns_listener_count(E->dns); i++) {
		int slot, fd;
		bool v6;

		fd = dns_listener(E->dns, i, &slot, &v6);
		rc = loader_listen_set(E->loader, AG_LISTEN_DNS + 2 * slot + v6, fd);
	}
	if (!rc)
		rc = loader_guard(E->loader, E->cgroup2);
	if (rc && (E->listen_moved || dns_listeners_skipped(E->dns))) {
		log_err("the kernel guard could not be set up (%s), and some of the agents' ports are "
			 "another process's: stopping", strerror(-rc));
		return -1;
	}
	if (rc) {
		snprintf(E->guard_why, sizeof(E->guard_why), "%s", strerror(-rc));
		log_warn("the enforcer's ports are not guarded (%s): while no enforcer runs, a local "
			 "user could bind them and receive the agents' connections", E->guard_why);
		return 0;
	}
	E->guarded = true;
	return 0;
}

/*
 * The bind guard knows its owner by PID and start time (bpf: bind_guard()),
 * and takes the start time at the owner's first bind it sees. The
 * listeners were bound before the guard was on (a first start), so one
 * bind now, on a guarded port: a UDP socket on the TCP port, which the
 * guard checks for either protocol; whether the bind itself succeeds does
 * not matter (the hook runs first), and the socket is closed at once.
 * Without it a process that got this PID after a crash could bind.
 */
static void claim_owner(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(E->tcp_port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	uint64_t start = 0;
	int fd;

	if (!E->guarded)
		return;
	if ((fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) >= 0) {
		if (bind(fd, (struct sockaddr *)&a, sizeof(a)) && errno == EPERM)
			log_warn("kernel guard: this enforcer may not bind its own port %u", E->tcp_port);
		close(fd);
	}
	if (loader_owner_start(E->loader, &start) || !start)
		log_warn("kernel guard: the enforcer's start time was not recorded: after a crash, a "
			 "process given its PID could bind the agents' ports");
}

/*
 * Each worker on a CPU of its own (the enforcer's affinity mask, in order),
 * and the balance program told which: among the workers with the fewest
 * connections, a new one goes to the worker of the CPU its client connects
 * from, so the client, the worker and mostly the server it dials wake each
 * other on one CPU instead of across CPUs (a reschedule interrupt, in a VM
 * an exit, per hop). Measured on 2 vCPUs, 4 alternating runs each: pgbench
 * -S -c 8 through the postgres module, audited, 22,500 tps median pinned
 * against 20,300 floating; wrk small answers 61,800 req/s and p99 0.81 ms
 * against 61,000 and 0.99 ms; one pgbench client unchanged. A pinned
 * worker still gets its fair share of a CPU another process keeps busy,
 * but cannot move to an idle one: AGENTGATE_PIN_WORKERS=0 lets them float.
 */
static void pin_workers(const cpu_set_t *cpus)
{
	int k = 0, pinned = 0;

	for (int cpu = 0; cpu < CPU_SETSIZE && k < E->nworkers; cpu++) {
		cpu_set_t one;

		if (!CPU_ISSET(cpu, cpus))
			continue;
		CPU_ZERO(&one);
		CPU_SET(cpu, &one);
		if (pthread_setaffinity_np(E->workers[k].thread, sizeof(one), &one) == 0) {
			balance_set_cpu(E->balance, cpu, k);
			pinned++;
		}
		k++;
	}
	E->pinned = pinned == E->nworkers;
	if (!E->pinned)
		log_warn("worker threads: %d of %d pinned to a CPU", pinned, E->nworkers);
}

/* Connections spread by count (balance.h); the kernel's hash if that fails. */
static void open_balance(void)
{
	int fd4[MAX_WORKERS], fd6[MAX_WORKERS], rc;

	if (E->nworkers < 2) {
		snprintf(E->balance_why, sizeof(E->balance_why), "one worker");
		return;
	}
	for (int i = 0; i < E->nworkers; i++) {
		fd4[i] = E->workers[i].listen[0].fd;
		fd6[i] = E->workers[i].listen[1].fd;
	}
	rc = balance_open(&E->balance, E->nworkers, fd4, fd6, E->balance_why, sizeof(E->balance_why));
	if (rc) {
		log_warn("connections go to worker threads by the kernel's hash, not by load: %s", E->balance_why);
		return;
	}
	for (int i = 0; i < E->nworkers; i++) {
		E->workers[i].bal_conns = balance_conns(E->balance, i);
		E->workers[i].bal_pending = balance_pending(E->balance, i);
	}
}

/* A tuning knob from the environment: 1 and *out set when NAME holds a
 * number from lo to hi, 0 when it is unset or empty, -EINVAL (logged)
 * for anything else: bad values are refused, not guessed at. */
static int env_knob(const char *name, long lo, long hi, const char *what, long *out)
{
	const char *v = getenv(name);
	char *end;
	long n;

	if (!v || !*v)
		return 0;
	errno = 0;
	n = strtol(v, &end, 10);
	if (*end || errno || n < lo || n > hi) {
		log_err("%s=%.16s: want %s from %ld to %ld", name, v, what, lo, hi);
		return -EINVAL;
	}
	*out = n;
	return 1;
}

int enforcer_run(const char *policy_path, const char *state_dir)
{
	static struct enforcer enf;
	struct main_item rb_item = { .kind = MI_RINGBUF }, sig_item = { .kind = MI_SIGNAL };
	struct main_item cg_item = { .kind = MI_CGROUPS };
	struct ring_buffer *rb = NULL;
	struct admin *adm = NULL;
	char own[PATH_MAX], err[256];
	sigset_t mask;
	int epfd = -1, sfd = -1, lockfd = -1, hostlock = -1, ret = 1, rc;
	char lockpath[PATH_MAX + 16];
	uint32_t rbsize = 0;
	socklen_t cl = sizeof(enf.netns_cookie);
	bool owner_set = false;

	E = &enf;
	E->started_ms = now_ms_realtime();
	E->tcp_port = AG_TCP_PORT_DEFAULT;
	E->dns_base = AG_DNS_PORT_BASE_DEFAULT;
	snprintf(E->state_dir, sizeof(E->state_dir), "%s", state_dir);

	/*
	 * Its memory holds what agents must never see and the host must not
	 * keep: upstream passwords and tokens while they are used, the audit
	 * signing key, the local CA's key, values before they were masked. A
	 * crash would write all of it into a core file (or hand it to the
	 * host's crash collector). Not dumpable also keeps unprivileged
	 * processes of its user from reading it. AGENTGATE_CORE_DUMPS=1, for
	 * debugging a crash on a test host, leaves dumps as the host has them.
	 */
	const char *cd_env = getenv("AGENTGATE_CORE_DUMPS");
	if (!cd_env || strcmp(cd_env, "1") != 0) {
		struct rlimit none = { 0, 0 };

		if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) || setrlimit(RLIMIT_CORE, &none))
			log_warn("cannot turn core dumps off: %s", strerror(errno));
	}

	/* Two descriptors per relayed connection: take the hard limit. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (policy_path)
		snprintf(E->policy_arg, sizeof(E->policy_arg), "%s", policy_path);
	E->policy = load_policy(policy_path, E->policy_desc, sizeof(E->policy_desc), NULL);
	if (!E->policy || check_supported(E->policy, NULL))
		return 1;
	char dwhy[600];

	/* it holds the admin socket and the audit signing key */
	if (private_dir(state_dir, dwhy, sizeof(dwhy))) {
		log_err("state directory: %s", dwhy);
		return 1;
	}
	snprintf(lockpath, sizeof(lockpath), "%s/run.lock", state_dir);
	lockfd = take_lock(lockpath);
	if (lockfd < 0)
		return 1;
	/* The pins and the listener ports are global: one enforcer per host,
	 * whatever its state directory. */
	mkdir_p("/run/agentgate", 0700);
	hostlock = take_lock("/run/agentgate/enforcer.lock");
	if (hostlock < 0) {
		close(lockfd);
		return 1;
	}
	if ((rc = find_mount("cgroup2", E->cgroup2, sizeof(E->cgroup2)))) {
		log_err("no cgroup2 mount in /proc/self/mountinfo: %s", strerror(-rc));
		goto out;
	}
	for (size_t i = 0; i < E->policy->nagents; i++)
		resolve_cgroup(&E->policy->agents[i], E->agents[i].cgroup_path, PATH_MAX,
			       E->agents[i].cgroup_rel, PATH_MAX);
	if (proc_cgroup2_path(getpid(), own, sizeof(own)) == 0 && enforcer_agent_of_cgroup(own) >= 0) {
		log_err("the enforcer runs inside agent cgroup '%s': its own connections would loop; "
			"start it from outside every agent cgroup", own);
		goto out;
	}
	const char *rbenv = getenv("AGENTGATE_RINGBUF_BYTES");   /* test knob: small ring buffers */
	if (rbenv) {
		uint64_t v;

		if (parse_u64(rbenv, 4096, 1u << 30, &v) == 0)
			rbsize = v;
	}
	/* Test knob: "RATE/BURST" for the per-agent audit rate limit. */
	E->audit_rate = AUDIT_RATE;
	E->audit_burst = AUDIT_BURST;
	const char *rl_env = getenv("AGENTGATE_AUDIT_RATE");
	if (rl_env) {
		unsigned rate, burst;

		if (sscanf(rl_env, "%u/%u", &rate, &burst) == 2 && rate > 0 && burst > 0) {
			E->audit_rate = rate;
			E->audit_burst = burst;
		}
	}
	/* Test knob: the burst of limits.parse_cpu and mask_cpu, ms of CPU (default 2 s). */
	const char *pb_env = getenv("AGENTGATE_PARSE_BURST_MS");
	if (pb_env) {
		uint64_t v;

		if (parse_u64(pb_env, 1, 600000, &v) == 0)
			E->parse_burst_ms = v;
	}
	if ((rc = loader_open(&E->loader, rbsize))) {
		log_err("loading BPF programs: %s", strerror(-rc));
		goto out;
	}
	/* Before the listeners exist, every pair entry is a previous run's: a
	 * connection its listeners reset when they closed (or it died) leaves
	 * its entry behind when the agent's socket was already past SYN_SENT
	 * and ESTABLISHED (FIN_WAIT2), and whoever binds that client port next
	 * would be taken for the agent. None can be this run's yet. */
	loader_pair_sweep(E->loader, 0, NULL);
	loader_pending_reset(E->loader);
	/* A previous run's bind guard stays on: this process must be the one it
	 * lets bind the enforcer's ports before the listeners are made. */
	if ((rc = loader_set_owner(E->loader, (uint32_t)getpid()))) {
		log_err("kernel guard: %s", strerror(-rc));
		goto out;
	}
	owner_set = true;

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);   /* inherited by workers */
	sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	epfd = epoll_create1(EPOLL_CLOEXEC);

	/*
	 * Default: one worker per CPU this process may run on (its affinity
	 * mask: a cpuset or taskset narrows it). Tried on 2 CPUs: one worker
	 * for both made pgbench -S at 8 clients faster (~12,400 vs ~10,500
	 * tps: fewer wakeups, more events per wakeup) but wrk through the
	 * http module slower (small JSON 21,700 vs 26,200 req/s, 64 KiB
	 * masked 4,700 vs 8,300): a CPU-bound worker then gets a third of the
	 * machine beside wrk and nginx. AGENTGATE_WORKERS overrides.
	 */
	cpu_set_t cpus;
	long ncpu = sched_getaffinity(0, sizeof(cpus), &cpus) == 0 ? CPU_COUNT(&cpus)
								     : sysconf(_SC_NPROCESSORS_ONLN);
	long n = 0;

	if ((rc = env_knob("AGENTGATE_WORKERS", 1, MAX_WORKERS, "a number of worker threads", &n)) < 0)
		goto out;
	if (rc)
		ncpu = n;
	E->nworkers = ncpu < 1 ? 1 : ncpu > MAX_WORKERS ? MAX_WORKERS : ncpu;
	/* Busy polling before a worker sleeps (loop.c wait_events()): off
	 * unless asked for, as it spends CPU for latency. */
	n = 0;
	if ((rc = env_knob("AGENTGATE_BUSY_POLL_US", 0, BUSY_POLL_MAX_US, "microseconds (0: off)", &n)) < 0)
		goto out;
	unsigned busy_us = (unsigned)n;
	/* Workers pinned one per CPU (pin_workers()) unless told not to, or
	 * when their number is not the CPUs'. */
	n = 1;
	if ((rc = env_knob("AGENTGATE_PIN_WORKERS", 0, 1, "0 (workers float) or 1 (one per CPU)", &n)) < 0)
		goto out;
	bool pin = n == 1 && E->nworkers == CPU_COUNT(&cpus) && E->nworkers > 1;

	rc = 0;
	E->workers = calloc(E->nworkers, sizeof(struct worker));
	uint16_t port4 = E->tcp_port, port6 = E->tcp_port;

	for (int i = 0; i < E->nworkers; i++) {
		rc = worker_init(&E->workers[i], i, port4, port6);
		/* Another process took the port while no enforcer ran (the guard
		 * gave it nothing): listen on free ports instead, where the guard
		 * sends the agents' connections (guard_ports() then must work). */
		if (rc == -EADDRINUSE && i == 0 && loader_has_guard(E->loader)) {
			log_warn("port %u is taken by another process; listening on free ports, to which the "
				 "kernel guard sends what agents send to %u", E->tcp_port, E->tcp_port);
			if (!(rc = worker_init(&E->workers[0], 0, 0, 0))) {
				port4 = sock_port(E->workers[0].listen[0].fd);
				port6 = sock_port(E->workers[0].listen[1].fd);
				E->listen_moved = true;
			}
		}
		if (rc) {
			log_err("listener on port %u: %s", E->tcp_port, strerror(-rc));
			goto out;
		}
	}
	open_balance();
	if (getsockopt(E->workers[0].listen[0].fd, SOL_SOCKET, SO_NETNS_COOKIE, &E->netns_cookie, &cl)) {
		log_err("SO_NETNS_COOKIE: %s", strerror(errno));
		goto out;
	}
	if ((rc = audit_set_state_dir(state_dir))) {
		log_err("audit signing key in '%s': %s", state_dir, strerror(-rc));
		goto out;
	}
	if ((rc = audit_open(E->policy))) {
		log_err("audit sinks: %s", strerror(-rc));
		goto out;
	}
	if (!E->policy->audit.allowed_requests)
		ag_log(LOG_LVL_WARN, "audit: allowed statements and HTTP requests are not recorded "
		       "(audit.allowed_requests: false); denials, connections and identity are");
	if (assign_slots())
		goto out;
	if ((rc = dns_open(&E->dns, E->policy, E->dns_base, epfd, err, sizeof(err)))) {
		log_err("%s", err);
		goto out;
	}
	if (guard_ports() || open_identities() || program_kernel())
		goto out;
	claim_owner();
	open_local_ca();
	rb = loader_ringbuf(E->loader, on_kernel_event, NULL);
	rb_item.fd = ring_buffer__epoll_fd(rb);
	sig_item.fd = sfd;
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &rb_item };
	epoll_ctl(epfd, EPOLL_CTL_ADD, ring_buffer__epoll_fd(rb), &ev);
	ev.data.ptr = &sig_item;
	epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &ev);
	if ((cg_ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) < 0) {
		log_warn("inotify: %s: agent cgroups made again are found within a second instead of at once",
			 strerror(errno));
	} else {
		cg_item.fd = cg_ifd;
		ev.data.ptr = &cg_item;
		epoll_ctl(epfd, EPOLL_CTL_ADD, cg_ifd, &ev);
		check_cgroups(true);   /* the first watches */
	}
	loader_counters(E->loader, E->kcount_seen);
	pair_max_age_refresh();
	loader_pair_sweep(E->loader, pair_max_age_ns(), NULL);

	for (int i = 0; i < E->nworkers; i++) {
		E->workers[i].busy_poll_us = busy_us;
		worker_start(&E->workers[i]);
	}
	if (pin)
		pin_workers(&cpus);
	/* Last: a status that answers means the enforcer is ready. */
	if ((rc = admin_open(&adm, state_dir, epfd))) {
		log_err("admin socket in '%s': %s", state_dir, strerror(-rc));
		E->stop = 1;
	} else {
		char msg[PATH_MAX + 128];

		snprintf(msg, sizeof(msg), "enforcer started (policy %s, %s mode, %zu agents)",
			 E->policy_desc, E->policy->mode == POLICY_OBSERVE ? "observe" : "enforce",
			 E->policy->nagents);
		lifecycle_event(3, "Start", msg, exposed_unmapped(E->policy));
		log_info("%s; ready", msg);
		ret = 0;
	}
	main_loop(epfd, sfd, rb, adm);

	/* Stop accepting, let live relays finish briefly; pins stay: agents'
	 * connects are refused until an enforcer runs again (fail closed). */
	admin_close(adm);
	adm = NULL;
	for (int i = 0; i < E->nworkers; i++)
		worker_stop_accepting(&E->workers[i]);
	for (int waited = 0; waited < 20; waited++) {
		int live = 0;

		for (int i = 0; i < E->nworkers; i++)
			live += E->workers[i].nconns;
		if (!live)
			break;
		usleep(100000);
	}
	for (int i = 0; i < E->nworkers; i++)
		worker_join(&E->workers[i]);
	ring_buffer__consume(rb);
	report_connect_rate();   /* the last second's, the workers joined */
	lifecycle_event(4, "Stop", "enforcer stopped; programs stay attached (connections refused until restart)",
			NULL);
	log_info("stopped; kernel programs stay pinned (fail closed)");
out:
	admin_close(adm);
	balance_close(E->balance);   /* the workers, which write its counters, are joined */
	E->balance = NULL;
	ring_buffer__free(rb);
	dns_close(E->dns);
	audit_close();
	local_ca_close();
	/* stopped: no process may bind the ports until the next start (a
	 * crash leaves the PID, which only this process's start time matches) */
	if (owner_set && E->loader)
		loader_set_owner(E->loader, 0);
	loader_close(E->loader);
	for (size_t i = 0; E->policy && i < E->policy->nagents; i++) {
		ident_agent_free(E->agents[i].ident);
		if (E->agents[i].token) {
			OPENSSL_cleanse(E->agents[i].token, strlen(E->agents[i].token));
			free(E->agents[i].token);
		}
	}
	if (epfd >= 0)
		close(epfd);
	if (sfd >= 0)
		close(sfd);
	if (cg_ifd >= 0)
		close(cg_ifd);
	cg_ifd = -1;
	if (lockfd >= 0)
		close(lockfd);
	if (hostlock >= 0)
		close(hostlock);
	return ret;
}
