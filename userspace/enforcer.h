/* SPDX-License-Identifier: Apache-2.0 */
/*
 * enforcer: the state of `agentgate run` shared by the main thread (ring
 * buffer, DNS, admin socket, signals) and the worker threads (one epoll
 * loop each, SO_REUSEPORT listeners). Workers only read the policy and the
 * slot table; counters are atomics; the DNS learned table has its own lock.
 */
#ifndef AGENTGATE_ENFORCER_H
#define AGENTGATE_ENFORCER_H

#include <limits.h>
#include <sys/socket.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include "agentgate_abi.h"
#include "loader.h"
#include "ident.h"
#include "policy.h"
#include <jansson.h>

#define AG_TCP_PORT_DEFAULT 15001
#define AG_DNS_PORT_BASE_DEFAULT 15100
#define MAX_WORKERS 64

struct worker;
struct audit_w;
struct dns;

/* What the main thread's epoll reports: ptr to one of these. */
enum main_kind { MI_RINGBUF = 1, MI_SIGNAL, MI_ADMIN, MI_ADMIN_CONN, MI_DNS_LISTEN, MI_DNS_UPSTREAM,
		 MI_CGROUPS };
struct main_item {
	int kind;
	int fd;
	int slot;       /* DNS listeners: the agent slot */
	void *ptr;
};

struct conn;

struct agent_rt {
	char cgroup_path[PATH_MAX];   /* absolute filesystem path */
	char cgroup_rel[PATH_MAX];    /* path inside the cgroup2 hierarchy, "/agentgate/x" */
	uint64_t cgid;
	bool attached;
	bool cg_failing;              /* attaching a re-made cgroup failed (logged once) */
	/* cgroups of the agent that were deleted and made again: their pins
	 * go once the kernel released them (loader_prune_released) */
	uint64_t dead_cgid[16];
	int ndead;
	/* its cgroup-change reports (log and 6002): CG_REPORTS per
	 * CG_REPORT_WINDOW_MS, the rest counted and reported as one */
	uint64_t cg_window_ms;
	unsigned cg_reports, cg_unreported;
	atomic_uint active;           /* live connections */
	atomic_ullong accepted, refused, denied_kernel;
	/* limits.parse_cpu: when the agent's uncached statements have paid
	 * for their CPU time (a GCRA over CLOCK_MONOTONIC ns), and how many
	 * were refused for it */
	atomic_ullong parse_tat, parse_refused;
	/* limits.mask_cpu: the same over the time workers spend masking its
	 * answers (enforcer_mask_spent), how often its answers were held for
	 * it, and the time charged */
	atomic_ullong mask_tat, mask_paced, mask_ns;
	/* limits.connect_rate: a GCRA over new connections; refusals, and
	 * the refusal events of the current second (CONNECT_RATE_EVENTS
	 * written, the rest counted for the main thread's summary) */
	atomic_ullong connect_tat, connect_refused, connect_ev_sec;
	atomic_uint connect_ev_n, connect_unreported;
	/* identity: the source lives on the main thread; workers read the
	 * principal snapshot under plock */
	struct ident_agent *ident;
	pthread_mutex_t plock;
	struct ident_principal principal;
	char *token;                  /* copy of the verified token, under plock; wiped */
	/* extra cgroups attached with `agentgate attach` */
	char extra_rel[8][PATH_MAX];
	uint64_t extra_cgid[8];
	bool extra_failing[8];
	int nextra;
};

struct enforcer {
	struct policy *policy;
	struct loader *loader;
	struct balance *balance;        /* NULL: the kernel's hash spreads connections */
	char balance_why[160];
	bool pinned;               /* every worker on a CPU of its own (pin_workers) */
	bool guarded;                   /* ag_guard attached and the listeners in ag_listen */
	bool unattached_guarded;        /* ag_unattached on <cgroup2>/agentgate */
	char guard_why[160];
	bool listen_moved;              /* tcp_port was taken: the listeners are on free ports */
	char state_dir[PATH_MAX];
	char cgroup2[PATH_MAX];
	char policy_desc[PATH_MAX];
	char policy_arg[PATH_MAX];   /* run --policy as given; "" when absent */
	uint16_t tcp_port, dns_base;
	uint64_t netns_cookie;
	int nworkers;
	struct worker *workers;
	struct agent_rt agents[AG_MAX_AGENTS];   /* index = policy agent index */
	uint32_t slot_of[AG_MAX_AGENTS];         /* policy agent index -> kernel slot */
	int agent_of_slot[AG_MAX_AGENTS];        /* kernel slot -> policy agent index, or -1 */
	struct dns *dns;
	atomic_ullong no_pair, self_dial, reset_before_accept;
	_Atomic uint64_t pair_max_age_ns;   /* pair_max_age_ns() */
	uint64_t kcount_seen[AG_CNT__MAX];
	struct { double tokens; uint64_t last_ns, suppressed; } bucket[AG_MAX_AGENTS];
	double audit_rate, audit_burst;
	uint64_t parse_burst_ms;        /* parse_cpu's and mask_cpu's burst (AGENTGATE_PARSE_BURST_MS: a test knob) */
	uint64_t started_ms;
	volatile sig_atomic_t stop;
	atomic_bool draining;
};

extern struct enforcer *E;

/* Runs the enforcer until SIGTERM/SIGINT. Returns the process exit code. */
int enforcer_run(const char *policy_path, const char *state_dir);

/* Worker side: a freshly accepted agent connection on the listener of
 * 'family' (AF_INET: 127.0.0.1, AF_INET6: ::1) from 'peer'. Takes ownership of fd. */
void enforcer_accept(struct worker *w, int fd, int family, const struct sockaddr_storage *peer);
/* A Network Activity (4001) event about connection c, with agent, endpoints,
 * target and module written; the caller adds the verdict and commits it
 * (audit_commit). */
struct audit_w *enforcer_conn_event(struct conn *c, int activity_id, const char *activity_name);
/* The rule that decided, for audit ("role 'r' rule 2 (line 14)"), or NULL. */
const char *enforcer_rule_name(struct conn *c);
/* Counts a refusal made by a protocol module. */
void enforcer_count_refused(struct conn *c);
/* A module must decide (e.g. see a ClientHello) within this: 10 s, or
 * AGENTGATE_DECISION_MS (a test knob, read once). */
uint64_t ag_decision_timeout_ms(void);
#define AG_DECISION_TIMEOUT_MS ag_decision_timeout_ms()

/* In observe mode a denial is recorded and the connection goes on: returns
 * true when the caller must refuse (enforce mode). */
bool enforcer_should_refuse(struct conn *c, const char *reason);
/* After a reload (live is the new policy, c->policy an older one): true, with
 * the reason in why, when the new policy would not accept c's connection at
 * all (its agent lost the target, or a destination in no target once the mode
 * is enforce). Such connections are closed by their worker within a tick;
 * the rest keep the policy they started with. */
bool enforcer_revoked(const struct conn *c, const struct policy *live, char *why, size_t len);
/* Between two requests of a protocol without session state tied to the
 * policy (http, kubernetes): after a reload, moves c to live (the running
 * policy, as the caller loaded it once)
 * when its target's upstream settings are the same in both (the upstream
 * connection stays valid), or new_upstream (the caller dials its upstream
 * again under the new ones), and the new policy still grants the target.
 * Not for a connection opened in observe mode when the new policy enforces
 * (the sweep closes it). Worker thread of c. True when c moved. */
bool enforcer_adopt_live(struct conn *c, const struct policy *live, bool new_upstream);
/* Audit of a connection's end. */
void enforcer_conn_closed(struct conn *c, const char *why);

/* agentgate reload (main thread): re-reads the policy; the answer for the
 * admin socket ({"ok": ..., "message" | "error", "errors": [...]}). pid and
 * uid are the asking peer's, for the audit event. See enforcer.c. */
json_t *enforcer_reload(pid_t pid, uid_t uid);

/* Fills status JSON (jansson json_t *) — declared void * to keep jansson out. */
void *enforcer_status_json(void);

/* Kernel slot <-> policy agent index. Slots are stable per agent name across
 * restarts (<state-dir>/slots.json), so a socket stamped before a restart, or
 * a cgroup of an agent removed from the policy, never takes another agent's
 * identity. enforcer_agent_idx returns -1 for a slot no agent holds. */
static inline int enforcer_agent_idx(uint32_t slot)
{
	return slot > 0 && slot < AG_MAX_AGENTS ? E->agent_of_slot[slot] : -1;
}

/*
 * Per-agent token bucket for audit events an agent can cause without holding
 * a connection (kernel denials, DNS queries): AUDIT_RATE per second, bursts
 * of AUDIT_BURST. Suppressed events are counted and reported once a second as
 * an Event Log Activity (1008) event. Main thread only.
 */
#define AUDIT_RATE  5000
#define AUDIT_BURST 20000
bool enforcer_audit_admit(uint32_t slot);

/*
 * upstream: {bearer: agent_token}: a copy of agent idx's verified token into
 * out (NUL-terminated). Returns its length, -ENOENT when the agent holds no
 * verified token, -ENOSPC when out is too small. Thread-safe. The caller
 * wipes out (OPENSSL_cleanse) after use and never logs it.
 */
int enforcer_agent_token(int idx, char *out, size_t outlen);

/* A copy of agent idx's current principal (thread-safe). */
void enforcer_principal(int idx, struct ident_principal *out);
struct audit_agent;
/* Fills the principal fields of an audit agent from agent idx; pr is caller
 * storage that must outlive the event being built, of which only source,
 * iss, sub and verified are set. */
void enforcer_audit_principal(int idx, struct audit_agent *a, struct ident_principal *pr);
/*
 * For an agent with an OIDC identity, false while its principal is not
 * verified (the token lost, refused or past its exp), with "identity not
 * verified: REASON" in why. A connection outlives the token it was opened
 * with, so protocol modules ask for every request and statement, not only
 * the accept. True for a local agent. Thread-safe.
 */
bool enforcer_identity_ok(const struct policy *p, int idx, char *why, size_t whylen);
/*
 * limits.parse_cpu: statements no cached verdict covers are parsed on a
 * worker thread, and one of 1 MiB can take half a second of it; an agent
 * may use parse_cpu percent of one CPU for them on average, with a burst
 * of PARSE_BURST_MS of CPU. enforcer_parse_may() is asked before such a
 * parse (false, with why: over budget, refused; why NULL: only asked, not
 * counted as refused), enforcer_parse_spent()
 * told the thread CPU time it took. Thread-safe, lock-free.
 */
bool enforcer_parse_may(const struct policy *p, int idx, char *why, size_t whylen);
void enforcer_parse_spent(const struct policy *p, int idx, uint64_t cpu_ns);
/*
 * Masking an answer (detectors over every text value, a gzip body inflated
 * and searched, custom patterns) costs worker time in proportion to what the
 * agent asks for: a query returning gigabytes of text, a body that inflates
 * a thousandfold. conn.c tells enforcer_mask_spent() the time a worker spent
 * on a connection's upstream data while its module masks (conn.costly); the
 * answer is how many ms that connection's upstream reads wait (0: go on),
 * so the agent's masking gets limits.mask_cpu percent of a CPU after a
 * burst as long as parse_cpu's. Nothing is refused: the agent's answers arrive slower, and a
 * worker goes on serving everyone else. Thread-safe, lock-free.
 */
uint64_t enforcer_mask_spent(const struct policy *p, int idx, uint64_t ns);
/* The wait enforcer_mask_spent() would give now, without charging: asked
 * before a costly connection reads its upstream, so that an agent past its
 * share is held on every connection, a new one included. */
uint64_t enforcer_mask_wait(const struct policy *p, int idx);
/* True when the agent may be granted target t: by name, or (agents with an
 * OIDC identity) by some binding on claims, decided per connection. */
bool enforcer_may_target(const struct policy *p, int idx, int t);

/*
 * Every rule agent idx holds for target t, in policy order: rules of roles
 * bound to it by name, then by claims its current principal satisfies
 * (deduplicated). Protocol modules judge a request against all of them:
 * allowed if some rule allows it. Returns the count; a value > max means
 * the list did not fit (the caller must deny). Thread-safe.
 */
#define ENFORCER_MAX_RULES POLICY_MAX_RULES_PER_TARGET
size_t enforcer_rules_for(const struct policy *p, int idx, int t, const struct policy_rule **out, size_t max);
/*
 * Delegation: the rules a verified user principal holds for target t, by
 * claims bindings only (users are never bound by agent name), reading claims
 * the way agent idx's identity does (its groups_claim). Same return as above.
 */
size_t enforcer_user_rules_for(const struct policy *p, int idx, const struct ident_principal *user, int t,
			       const struct policy_rule **out, size_t max);

/*
 * Delegation: verify a user token agent idx presented in-band (see
 * ident_user_verify: the agent's issuer and audience, cached keys only,
 * act.sub must be the agent's verified sub). -EPERM when the agent does not
 * accept user tokens. The caller intersects: a request is allowed only if
 * the agent's rules (enforcer_rules_for) and the user's
 * (enforcer_user_rules_for) both allow it. Thread-safe.
 */
int enforcer_user_verify(int idx, const char *tok, size_t len, struct ident_principal *user,
			 char *why, size_t whylen);
/* The user token of a session, checked again against agent idx's issuer's
 * current keys (ident_user_recheck). Thread-safe. */
int enforcer_user_recheck(int idx, const struct ident_principal *user, uint64_t *gen, char *why,
			  size_t whylen);

/* Index of the agent whose cgroup (path inside the hierarchy) contains rel, or -1. */
int enforcer_agent_of_cgroup(const char *rel);

/* Attach an agent to an extra cgroup at runtime (`agentgate attach`). 0 or -errno. */
int enforcer_attach_extra(const char *agent, const char *cgroup, char *err, size_t errlen);

#endif
