/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "agentgate_abi.h"
#include "audit.h"
#include "audit_chain.h"
#include "util.h"

#define MAX_FOLLOWERS 16
#define MAX_SINKS 16   /* the policy validator allows 16 */

#define SINK_BUF (64 * 1024)
#define SINK_FLUSH_AT (48 * 1024)

/* Lines are batched per sink and written when SINK_FLUSH_AT bytes wait, when
 * the main loop calls audit_flush() (at least every 250 ms), and at close:
 * one write(2) per batch instead of one per event. */
struct sink {
	enum policy_sink_type type;
	int fd;
	char path[4096];
	char *buf;
	size_t len;
};

static struct {
	pthread_mutex_t lock;
	uint64_t seq;
	char policy_hash[65];
	char policy_path[512];
	struct sink sinks[MAX_SINKS];
	int nsinks;
	char *recent[AUDIT_RECENT];
	int recent_head, recent_n;
	int followers[MAX_FOLLOWERS];
	int nfollowers;
	/* tamper evidence (see audit_chain.h) */
	char last_hash[AUDIT_HASH_HEX];   /* hash of the last line emitted */
	char state_dir[4096];
	char key_id[AUDIT_KEYID_HEX];
	EVP_PKEY *key;                    /* NULL: no checkpoints */
	uint64_t cp_pending;              /* events since the last checkpoint */
	uint64_t cp_last_ms;
	uint64_t cp_every, cp_every_ms;
} A = { .lock = PTHREAD_MUTEX_INITIALIZER, .last_hash = AUDIT_ZERO_HASH,
	.cp_every = AUDIT_CHECKPOINT_EVERY, .cp_every_ms = AUDIT_CHECKPOINT_MS };

static void emit_locked(json_t *ev);
static void checkpoint_locked(void);

int audit_set_state_dir(const char *dir)
{
	EVP_PKEY *k = NULL;
	int err = audit_key_open(dir, &k);

	if (err)
		return err;
	pthread_mutex_lock(&A.lock);
	EVP_PKEY_free(A.key);
	A.key = k;
	audit_key_id(k, A.key_id);
	snprintf(A.state_dir, sizeof(A.state_dir), "%s", dir);
	audit_chain_state_load(dir, A.last_hash);
	A.cp_last_ms = now_ms_realtime();
	pthread_mutex_unlock(&A.lock);
	return 0;
}

void audit_set_checkpoint(uint64_t every_events, uint64_t every_ms)
{
	pthread_mutex_lock(&A.lock);
	A.cp_every = every_events ? every_events : AUDIT_CHECKPOINT_EVERY;
	A.cp_every_ms = every_ms ? every_ms : AUDIT_CHECKPOINT_MS;
	pthread_mutex_unlock(&A.lock);
}

const char *audit_key_fingerprint(void)
{
	return A.key_id;
}

int audit_open(const struct policy *p)
{
	int err = 0;

	audit_set_policy(p);
	for (size_t i = 0; i < p->audit.nsinks && A.nsinks < MAX_SINKS; i++) {
		const struct policy_sink *ps = &p->audit.sinks[i];
		struct sink *s = &A.sinks[A.nsinks];

		s->buf = malloc(SINK_BUF);
		s->len = 0;
		if (!s->buf)
			return -ENOMEM;
		if (ps->type == SINK_STDOUT) {
			s->type = SINK_STDOUT;
			s->fd = STDOUT_FILENO;
			A.nsinks++;
		} else if (ps->type == SINK_FILE) {
			char dir[4096];

			snprintf(dir, sizeof(dir), "%s", ps->path);
			err = mkdir_p(dirname(dir), 0700);
			if (err)
				return err;
			s->fd = open(ps->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
			if (s->fd < 0)
				return -errno;
			s->type = SINK_FILE;
			snprintf(s->path, sizeof(s->path), "%s", ps->path);
			A.nsinks++;
		}
	}
	return 0;
}

static void flush_locked(void)
{
	for (int i = 0; i < A.nsinks; i++) {
		struct sink *s = &A.sinks[i];

		if (s->len && write_all(s->fd, s->buf, s->len))
			ag_log(LOG_LVL_ERR, "audit: write to %s failed: %s",
			       s->type == SINK_FILE ? s->path : "stdout", strerror(errno));
		s->len = 0;
	}
}

void audit_flush(void)
{
	pthread_mutex_lock(&A.lock);
	if (A.key && A.cp_pending && now_ms_realtime() - A.cp_last_ms >= A.cp_every_ms)
		checkpoint_locked();
	flush_locked();
	pthread_mutex_unlock(&A.lock);
}

void audit_close(void)
{
	pthread_mutex_lock(&A.lock);
	if (A.key && A.cp_pending)
		checkpoint_locked();   /* a clean stop leaves no unsigned tail */
	EVP_PKEY_free(A.key);
	A.key = NULL;
	flush_locked();
	for (int i = 0; i < A.nsinks; i++) {
		free(A.sinks[i].buf);
		A.sinks[i].buf = NULL;
		if (A.sinks[i].type == SINK_FILE) {
			fsync(A.sinks[i].fd);
			close(A.sinks[i].fd);
		}
	}
	A.nsinks = 0;
	for (int i = 0; i < A.nfollowers; i++)
		close(A.followers[i]);
	A.nfollowers = 0;
	for (int i = 0; i < AUDIT_RECENT; i++) {
		free(A.recent[i]);
		A.recent[i] = NULL;
	}
	A.recent_n = 0;
	pthread_mutex_unlock(&A.lock);
}

void audit_set_policy(const struct policy *p)
{
	pthread_mutex_lock(&A.lock);
	snprintf(A.policy_hash, sizeof(A.policy_hash), "%s", p->hash);
	snprintf(A.policy_path, sizeof(A.policy_path), "%s", p->path ? p->path : "");
	pthread_mutex_unlock(&A.lock);
}

static const char *class_name(int class_uid, int *category, const char **category_name)
{
	switch (class_uid) {
	case 4001: *category = 4; *category_name = "Network Activity"; return "Network Activity";
	case 4002: *category = 4; *category_name = "Network Activity"; return "HTTP Activity";
	case 4003: *category = 4; *category_name = "Network Activity"; return "DNS Activity";
	case 3002: *category = 3; *category_name = "Identity & Access Management"; return "Authentication";
	case 3004: *category = 3; *category_name = "Identity & Access Management"; return "Entity Management";
	case 6002: *category = 6; *category_name = "Application Activity"; return "Application Lifecycle";
	case 6003: *category = 6; *category_name = "Application Activity"; return "API Activity";
	case 6005: *category = 6; *category_name = "Application Activity"; return "Datastore Activity";
	case 1008: *category = 1; *category_name = "System Activity"; return "Event Log Activity";
	default:   *category = 0; *category_name = "Uncategorized"; return "Unknown";
	}
}

json_t *audit_event(int class_uid, int activity_id, const char *activity_name)
{
	int category;
	const char *category_name, *cname = class_name(class_uid, &category, &category_name);
	char type_name[128];

	snprintf(type_name, sizeof(type_name), "%s: %s", cname, activity_name);
	return json_pack("{s:i, s:s, s:i, s:s, s:i, s:s, s:I, s:s, s:i, s:s}",
			 "class_uid", class_uid, "class_name", cname,
			 "category_uid", category, "category_name", category_name,
			 "activity_id", activity_id, "activity_name", activity_name,
			 "type_uid", (json_int_t)class_uid * 100 + activity_id, "type_name", type_name,
			 "severity_id", 1, "severity", "Informational");
}

/* Random bytes for UUIDs, fetched 4 KiB at a time per thread: one
 * getrandom(2) per 256 events instead of one per event. */
static void random_bytes(uint8_t *out, size_t n)
{
	static __thread uint8_t pool[4096];
	static __thread size_t left;

	if (left < n) {
		if (getrandom(pool, sizeof(pool), 0) != (ssize_t)sizeof(pool))
			memset(pool, 0, sizeof(pool));   /* uniqueness still comes from the sequence */
		left = sizeof(pool);
	}
	memcpy(out, pool + sizeof(pool) - left, n);
	left -= n;
}

/* RFC 9562 UUIDv7: 48-bit Unix ms timestamp, version 7, variant 10, random rest. */
static void uuid7(char out[37])
{
	uint8_t b[16];
	uint64_t ms = now_ms_realtime();

	random_bytes(b, sizeof(b));
	for (int i = 0; i < 6; i++)
		b[i] = ms >> (40 - 8 * i);
	b[6] = 0x70 | (b[6] & 0x0f);
	b[8] = 0x80 | (b[8] & 0x3f);
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
		 b[13], b[14], b[15]);
}

void audit_add_agent(json_t *ev, const struct audit_agent *a)
{
	/* comm is whatever the agent set with prctl(PR_SET_NAME): keep it
	 * printable ASCII, or invalid UTF-8 would make jansson drop the actor. */
	char comm[AG_COMM_LEN + 1] = "";
	for (int i = 0; a->comm && i < AG_COMM_LEN && a->comm[i]; i++) {
		unsigned char ch = a->comm[i];

		comm[i] = ch >= 0x20 && ch < 0x7f ? ch : '?';
		comm[i + 1] = 0;
	}
	json_t *proc = json_pack("{s:i, s:i, s:s, s:{s:s}}", "pid", (int)a->pid, "tid", (int)a->tid,
				 "name", comm, "user", "uid", "");
	char uid[16];

	snprintf(uid, sizeof(uid), "%u", a->uid);
	json_object_set_new(json_object_get(proc, "user"), "uid", json_string(uid));
	json_object_set_new(ev, "actor", json_pack("{s:s, s:o, s:{s:s, s:s, s:s}}",
		"app_name", a->name ? a->name : "",
		"process", proc,
		"user", "name", a->name ? a->name : "", "uid", a->name ? a->name : "",
		"type", "Service"));
	json_t *um = json_object_get(ev, "unmapped");
	if (!um) {
		um = json_object();
		json_object_set_new(ev, "unmapped", um);
	}
	/* Without a verified identity the principal is the agent name (source
	 * 'local'), marked unverified. */
	json_object_set_new(um, "agent", json_pack("{s:s, s:s, s:I, s:{s:s, s:s, s:b}}",
		"name", a->name ? a->name : "", "cgroup", a->cgroup ? a->cgroup : "",
		"cgroup_id", (json_int_t)a->cgroup_id,
		"principal", "iss", a->iss ? a->iss : "local",
		"sub", a->iss ? (a->sub ? a->sub : "") : a->name ? a->name : "", "verified", a->verified));
}

void audit_add_verdict(json_t *ev, bool allowed, bool would_deny, const char *rule,
		       const char *reason)
{
	json_t *um = json_object_get(ev, "unmapped");

	json_object_set_new(ev, "status_id", json_integer(allowed ? 1 : 2));
	json_object_set_new(ev, "status", json_string(allowed ? "Success" : "Failure"));
	json_object_set_new(ev, "action_id", json_integer(allowed ? 1 : 2));
	json_object_set_new(ev, "action", json_string(allowed ? "Allowed" : "Denied"));
	json_object_set_new(ev, "disposition_id", json_integer(allowed ? 1 : 2));
	json_object_set_new(ev, "disposition", json_string(allowed ? "Allowed" : "Blocked"));
	if (!um) {
		um = json_object();
		json_object_set_new(ev, "unmapped", um);
	}
	json_object_set_new(um, "verdict", json_string(allowed ? (would_deny ? "would_deny" : "allow")
							       : "deny"));
	if (rule)
		json_object_set_new(um, "rule", json_string(rule));
	if (reason)
		json_object_set_new(um, "reason", json_string(reason));
	if (reason && !allowed)
		json_object_set_new(ev, "status_detail", json_string(reason));
}

static void push_followers(const char *line, size_t len)
{
	for (int i = 0; i < A.nfollowers;) {
		ssize_t n = send(A.followers[i], line, len, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n == (ssize_t)len) {
			i++;
			continue;
		}
		close(A.followers[i]);
		A.followers[i] = A.followers[--A.nfollowers];
	}
}

/* Signs the chain head: the event just emitted is covered, and through
 * its prev_hash every event before it. Called with the lock held. */
static void checkpoint_locked(void)
{
	char sig[AUDIT_SIG_HEX], host[256] = "";
	json_t *ev;
	int err;

	if (audit_checkpoint_sign(A.key, A.seq, A.last_hash, A.cp_pending, sig)) {
		ag_log(LOG_LVL_ERR, "audit: signing checkpoint at sequence %llu failed",
		       (unsigned long long)A.seq);
		return;
	}
	gethostname(host, sizeof(host) - 1);
	ev = audit_event(1008, 99, "Other");
	if (!ev)
		return;
	json_object_set_new(ev, "message", json_string("audit checkpoint: chain head signed"));
	json_object_set_new(ev, "actor", json_pack("{s:s, s:{s:i, s:s}}", "app_name", "agentgate",
		"process", "pid", (int)getpid(), "name", "agentgate"));
	json_object_set_new(ev, "device", json_pack("{s:s, s:i, s:s}", "hostname", host,
		"type_id", 1, "type", "Server"));
	json_object_set_new(ev, "unmapped", json_pack("{s:{s:I, s:s, s:I, s:s, s:s, s:s}}",
		"checkpoint", "sequence", (json_int_t)A.seq, "hash", A.last_hash,
		"count", (json_int_t)A.cp_pending, "alg", "Ed25519", "key_id", A.key_id,
		"signature", sig));
	A.cp_pending = 0;
	A.cp_last_ms = now_ms_realtime();
	emit_locked(ev);
	json_decref(ev);
	/* The next run chains from this checkpoint line. */
	if ((err = audit_chain_state_save(A.state_dir, A.last_hash)))
		ag_log(LOG_LVL_ERR, "audit: saving chain head in '%s': %s", A.state_dir,
		       strerror(-err));
}

static void emit_locked(json_t *ev)
{
	char uid[37];
	char *line;
	size_t len;

	uuid7(uid);
	json_object_set_new(ev, "time", json_integer(now_ms_realtime()));
	json_object_set_new(ev, "metadata", json_pack("{s:s, s:s, s:I, s:s, s:s, s:{s:s, s:s, s:s}}",
		"version", OCSF_VERSION, "uid", uid, "sequence", (json_int_t)++A.seq,
		"prev_hash", A.last_hash, "log_name", "agentgate",
		"product", "name", "agentgate", "vendor_name", "agentgate", "version", AG_VERSION));
	json_t *um = json_object_get(ev, "unmapped");
	if (!um) {
		um = json_object();
		json_object_set_new(ev, "unmapped", um);
	}
	json_object_set_new(um, "policy", json_pack("{s:s, s:s}", "hash", A.policy_hash,
						    "path", A.policy_path));
	line = json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER);
	len = line ? strlen(line) : 0;
	char *grown = line ? realloc(line, len + 2) : NULL;   /* room for '\n' */
	if (grown) {
		line = grown;
		/* The chain covers the exact bytes written, without the newline. */
		audit_chain_hash(line, len, A.last_hash);
		line[len] = '\n';
		line[len + 1] = 0;
		for (int i = 0; i < A.nsinks; i++) {
			struct sink *sk = &A.sinks[i];

			if (sk->len + len + 1 > SINK_BUF)
				flush_locked();
			if (len + 1 > SINK_BUF) {
				if (write_all(sk->fd, line, len + 1))
					ag_log(LOG_LVL_ERR, "audit: write to sink %d failed", i);
			} else {
				memcpy(sk->buf + sk->len, line, len + 1);
				sk->len += len + 1;
			}
			if (sk->len >= SINK_FLUSH_AT)
				flush_locked();
		}
		push_followers(line, len + 1);
		line[len] = 0;
		if (A.recent_n == AUDIT_RECENT) {   /* full: the newest replaces the oldest */
			free(A.recent[A.recent_head]);
			A.recent[A.recent_head] = line;
			A.recent_head = (A.recent_head + 1) % AUDIT_RECENT;
		} else {
			A.recent[(A.recent_head + A.recent_n++) % AUDIT_RECENT] = line;
		}
	} else {
		/* The sequence number is consumed: verify reports the gap as a
		 * deletion, which is what a reader of the trail should see. */
		free(line);
		ag_log(LOG_LVL_ERR, "audit: out of memory, event %llu not written",
		       (unsigned long long)A.seq);
	}
}

void audit_emit(json_t *ev)
{
	if (!ev)
		return;
	pthread_mutex_lock(&A.lock);
	emit_locked(ev);
	if (++A.cp_pending >= A.cp_every && A.key)
		checkpoint_locked();
	pthread_mutex_unlock(&A.lock);
	json_decref(ev);
}

json_t *audit_recent(int n)
{
	json_t *arr = json_array();

	pthread_mutex_lock(&A.lock);
	if (n > A.recent_n)
		n = A.recent_n;
	for (int i = A.recent_n - n; i < A.recent_n; i++)
		json_array_append_new(arr, json_string(A.recent[(A.recent_head + i) % AUDIT_RECENT]));
	pthread_mutex_unlock(&A.lock);
	return arr;
}

void audit_follow(int fd)
{
	pthread_mutex_lock(&A.lock);
	if (A.nfollowers < MAX_FOLLOWERS)
		A.followers[A.nfollowers++] = fd;
	else
		close(fd);
	pthread_mutex_unlock(&A.lock);
}

uint64_t audit_sequence(void)
{
	uint64_t s;

	pthread_mutex_lock(&A.lock);
	s = A.seq;
	pthread_mutex_unlock(&A.lock);
	return s;
}
