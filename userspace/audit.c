/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "agentgate_abi.h"
#include "audit.h"
#include "audit_chain.h"
#include "audit_json.h"
#include "audit_sink.h"
#include "audit_spool.h"
#include "recording.h"
#include "util.h"

#define MAX_FOLLOWERS 16
#define MAX_SINKS 16   /* the policy validator allows 16 */
#define SINK_BATCH_BYTES (4u << 20)
#define SINK_BACKOFF_MIN_MS 100
#define SINK_BACKOFF_MAX_MS env_ms("AGENTGATE_SINK_BACKOFF_MS", 5000, &backoff_max_ms)   /* test knob */
static _Atomic uint64_t backoff_max_ms;
#define SINK_DRAIN_MS 2000       /* audit_close() waits this long for sinks to catch up */
#define LOSS_RESUME_ROOM (64 * 1024)
#define META_RETRY_MS 1000   /* a loss report or checkpoint that could not be recorded */
/* checkpoint-seq keeps the sequences of this many checkpoints: a write
 * buffer lost to a SIGKILL (4 MiB, some 3,000 events) can hold several */
#define CP_HIST 16

/*
 * Urgency. The spool thread and the sink threads run at SCHED_IDLE: on a
 * host with CPU to spare they use only time nothing else wants, so the
 * audit pipeline's bursts (a tick stamps and writes every event of the
 * last 10 ms) never delay a worker relaying an agent's traffic, or the
 * agent and the server it waits for. On a busy host an idle thread could
 * starve: a thread that falls behind is made urgent (SCHED_BATCH, its fair
 * share) and calms down again once it caught up. The spool thread is
 * behind when the pending queue holds more than SPOOL_URGENT_BYTES (the
 * committing worker makes it urgent); both are checked against time by
 * audit_urgency_tick(). Transitions take U.mu, so a thread is never left
 * idle while marked urgent.
 *
 * A woken worker does not preempt an urgent thread: it waits until that
 * thread's slice ends. So an urgent thread works in short pieces: its
 * slice is URGENT_SLICE_NS (util.c), the spool thread stamps STAMP_CHUNK
 * events per hold of A.lock (audit_tick()), reads and writes move
 * IO_CHUNK (util.h) at a time, and urgency means behind, not busy:
 * SINK_URGENT_EVENTS is far above what a sink holds between two sends at
 * full rate (the file sink sends every 50 ms: 3,500 events at 70,000 a
 * second). At 2,048 the file sink was urgent at almost every tick and its
 * batches set wrk's p99 through the http module (1.7 ms; 0.8-1.0 ms at
 * 65,536, measured on 2 CPUs). A sink that sends nothing for a tick is
 * made urgent whatever its backlog.
 */
#define SPOOL_URGENT_BYTES (512u << 10)   /* ~350 statement events */
#define SPOOL_CALM_BYTES (64u << 10)
#define SINK_URGENT_EVENTS 65536          /* ~1 s at 70,000 events/s */
#define SINK_CALM_EVENTS 256
#define URGENT_AGE_MS 100                 /* events pending this long: urgent, however few */
static struct {
	pthread_mutex_t mu;
	pid_t spool_tid;
	bool spool_urgent;
	_Atomic uint64_t made_urgent;   /* for status */
	_Atomic uint64_t worker_drains; /* a worker stamped a full pending queue itself (status) */
} U = { .mu = PTHREAD_MUTEX_INITIALIZER };

static void urgency(bool *flag, pid_t tid, bool urgent)
{
	if (__atomic_load_n(flag, __ATOMIC_RELAXED) == urgent)
		return;   /* the common case: no lock, no system call */
	pthread_mutex_lock(&U.mu);
	if (*flag != urgent) {
		__atomic_store_n(flag, urgent, __ATOMIC_RELAXED);
		ag_thread_urgent(tid, urgent);
		if (urgent)
			atomic_fetch_add(&U.made_urgent, 1);
	}
	pthread_mutex_unlock(&U.mu);
}

uint64_t audit_made_urgent(void)
{
	return atomic_load(&U.made_urgent);
}

uint64_t audit_worker_drains(void)
{
	return atomic_load(&U.worker_drains);
}

uint64_t audit_dead_lettered(bool discarded)
{
	return discarded ? spool_dead_letters_discarded() : spool_dead_lettered();
}

/* One sink's thread: reads the spool at its cursor, sends, acknowledges. */
struct sink_rt {
	struct audit_sink s;
	struct spool_reader *r;
	pthread_t thr;
	bool started;
	uint8_t *st;
	size_t st_cap;
	uint64_t backoff_ms;
	size_t batch_max;        /* events per send: the sink's, halved after a 413 */
	bool failing;            /* logged once per outage */
	_Atomic uint64_t acked;  /* for status and the drain at close */
	_Atomic pid_t tid;       /* its thread, for urgency() */
	uint64_t tick_acked;     /* acked at the last audit_urgency_tick() */
	bool urgent;             /* under U.mu */
	/* Written by sends with more, not yet synced (the sink thread's) */
	uint64_t held;           /* the last such sequence */
	uint64_t held_ms;        /* when the first of them was written */
	uint64_t held_n;         /* events; 0: nothing held */
	_Atomic uint64_t sends, syncs;   /* of a sink with ops->sync: sends, and syncs (theirs or sync()'s) */
};

static struct {
	pthread_mutex_t lock;
	uint64_t seq;
	char policy_hash[65];
	char policy_path[512];
	struct spool *spool;
	struct sink_rt sinks[MAX_SINKS];
	int nsinks;
	atomic_bool stopping;
	pthread_mutex_t stop_lock;   /* sinks sleep their backoff on stop_cond */
	pthread_cond_t stop_cond;
	/* on_full */
	bool fail_closed;
	atomic_bool full;            /* an event did not fit: accepting stays false until room returns */
	uint64_t resume_room;        /* free bytes that count as "room again" */
	uint64_t spool_half;         /* half the spool's max_bytes: sinks behind are urgent past it */
	uint64_t dropped, drop_first_ms, drop_last_ms, drop_after_seq;
	uint64_t dl_discard_reported;     /* spool_dead_letters_discarded() last reported */
	int drop_err;                     /* why the window's first event was lost (-errno) */
	uint64_t drop_saved;              /* the count spool/dropped holds (drop_save_locked) */
	uint64_t drop_saved_ms;           /* when it was last written (monotonic) */
	/* A loss report or a checkpoint being emitted: when it cannot be
	 * recorded, no agent's event was lost (it is not counted as dropped)
	 * and it is tried again after meta_retry_ms (monotonic), not at every
	 * event or main-loop wakeup. */
	bool meta;
	uint64_t meta_retry_ms;
	char *recent[AUDIT_RECENT];      /* slots keep their memory from event to event */
	size_t recent_cap[AUDIT_RECENT];
	int recent_head, recent_n;
	/* the emit path's reusable parts (under lock): the line being built,
	 * and metadata / unmapped.policy objects whose values change in place
	 * instead of being built for every event */
	struct audit_buf line;
	json_t *md, *md_uid, *md_seq, *md_prev;
	json_t *pol;
	struct audit_buf polfrag;   /* "policy":{...} for writer events */
	int followers[MAX_FOLLOWERS];
	int nfollowers;
	/* tamper evidence (see audit_chain.h) */
	char last_hash[AUDIT_HASH_HEX];   /* hash of the last line emitted */
	char state_dir[4096];
	char key_id[AUDIT_KEYID_HEX];
	EVP_PKEY *key;                    /* NULL: no checkpoints */
	uint64_t cp_pending;              /* events since the last checkpoint */
	bool spool_had_line;              /* the chain resumed from the spool's last line */
	uint64_t cp_hist[CP_HIST];        /* sequences of the last checkpoints, newest first */
	uint64_t cp_last_ms;
	uint64_t cp_every, cp_every_ms;
	char host[256];
	/* the chain head is saved (with fsync) off the emit path */
	pthread_t saver;
	bool saver_started, save_pending;
	char save_hash[AUDIT_HASH_HEX];
	bool save_running;                /* with it: a run is on (audit_chain_state_save) */
	char head_hash[AUDIT_HASH_HEX];   /* the state file's head: the last checkpoint's */
	bool prev_running;                /* the state said a run was on at start: it was killed */
	bool run_marked;                  /* this run saved the state as on (audit_open) */
} A = { .lock = PTHREAD_MUTEX_INITIALIZER, .stop_lock = PTHREAD_MUTEX_INITIALIZER,
	.stop_cond = PTHREAD_COND_INITIALIZER, .last_hash = AUDIT_ZERO_HASH,
	.cp_every = AUDIT_CHECKPOINT_EVERY, .cp_every_ms = AUDIT_CHECKPOINT_MS };

/* The pending queue: see "Deferred commits" below. */
static struct {
	pthread_mutex_t mu;
	struct audit_buf q, spare;   /* spare: only drainers touch it (under A.lock) */
	uint64_t since_ms;           /* when q last went from empty to not (monotonic), 0: empty */
	atomic_bool on;              /* the spool thread drains q */
} P = { .mu = PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP };   /* held for a copy: spin before sleeping */

static void drain_locked(void);
static void audit_tick(void *arg);
static int emit_locked(json_t *ev);
static int spool_line_locked(char *line, size_t len, uint64_t seq);
static void checkpoint_locked(bool stop);
static bool meta_due_locked(void);
static int meta_emit_locked(json_t *ev);
static void checkpoint_seq_save(void);
static void drop_load_locked(void);
static void save_chain_head(void);
static void *saver_thread(void *arg);
static void add_self(json_t *ev);

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
	audit_chain_state_load(dir, A.last_hash, &A.prev_running);
	memcpy(A.head_hash, A.last_hash, sizeof(A.head_hash));
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

const struct audit_sink_ops *audit_sink_ops_for(enum policy_sink_type t)
{
	switch (t) {
	case SINK_FILE:
	case SINK_STDOUT:
		return &audit_sink_file_ops;
	case SINK_SYSLOG:
		return &audit_sink_syslog_ops;
	case SINK_SPLUNK_HEC:
		return &audit_sink_hec_ops;
	case SINK_ELASTICSEARCH:
		return &audit_sink_es_ops;
	case SINK_WEBHOOK:
		return &audit_sink_webhook_ops;
	}
	return NULL;
}

bool audit_sink_stopping(void)
{
	return atomic_load(&A.stopping);
}

/* A stable name for the cursor file: the type and a hash of where it
 * delivers, so reordering sinks in the policy keeps each one's cursor. */
static void sink_id(const struct policy_sink *ps, const char *type, char out[48])
{
	char key[8192], h[AUDIT_HASH_HEX];

	snprintf(key, sizeof(key), "%s|%s|%s|%s|%s|%s", type, ps->path ? ps->path : "",
		 ps->address ? ps->address : "", ps->transport ? ps->transport : "",
		 ps->url ? ps->url : "", ps->index ? ps->index : "");
	audit_chain_hash(key, strlen(key), h);
	snprintf(out, 48, "%s-%.16s", ps->type == SINK_STDOUT ? "stdout" : type, h);
}

static void sink_sleep(uint64_t ms)
{
	pthread_mutex_lock(&A.stop_lock);
	if (!atomic_load(&A.stopping))
		cond_wait_ms(&A.stop_cond, &A.stop_lock, ms);
	pthread_mutex_unlock(&A.stop_lock);
}

/* 100 ms doubling to 5 s, each wait drawn from [b/2, b] so that sinks
 * that failed together do not retry together. */
static uint64_t next_backoff(struct sink_rt *k)
{
	uint32_t rnd;

	k->backoff_ms = k->backoff_ms ? k->backoff_ms * 2 : SINK_BACKOFF_MIN_MS;
	if (k->backoff_ms > SINK_BACKOFF_MAX_MS)
		k->backoff_ms = SINK_BACKOFF_MAX_MS;
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd))
		rnd = (uint32_t)now_ns_mono();
	return k->backoff_ms / 2 + rnd % (k->backoff_ms / 2 + 1);
}

/* Skips what the destination already holds (a file written just before a
 * crash), provided the event there is the one the spool has at that
 * sequence. */
static void sink_resume(struct sink_rt *k)
{
	char uid[40] = "", needle[64];
	uint64_t c = spool_reader_cursor(k->r), seq;
	struct spool_batch b;

	if (!k->s.ops->resume || (seq = k->s.ops->resume(&k->s, c, uid)) <= c)
		return;
	spool_reader_seek(k->r, seq - 1);
	snprintf(needle, sizeof(needle), "\"uid\":\"%s\"", uid);
	if (spool_read(k->r, &b, 1, 64 * 1024, 0) == 1 && b.first == seq &&
	    memmem(b.line[0], b.len[0], needle, strlen(needle))) {
		spool_reader_ack(k->r, seq);
		atomic_store(&k->acked, seq);
		spool_reader_seek(k->r, seq);
		return;
	}
	spool_reader_seek(k->r, c);   /* not ours: deliver from the cursor */
}

static size_t sink_batch_default(const struct sink_rt *k)
{
	return k->s.ops->batch_max ? k->s.ops->batch_max : 512;
}

/*
 * A sink that is behind (more than a quarter batch waits after the one it
 * sends) writes up to SINK_HOLD_EVENTS, for at most SINK_HOLD_MS, before
 * it makes them durable with one sync (the file sink: one fdatasync for
 * eight batches of 512); until then they are not acknowledged. Each
 * fdatasync waits on the disk with nothing for the sink to do: catching
 * up on 100,000 events with one per batch of 4,096, the core was idle a
 * third of the time. So the file sink's batches can be small enough for
 * its read window (~700 KB) to stay in a core's L2 cache, where 4,096
 * events (6 MB) went through memory and evicted what the threads building
 * events needed.
 */
#define SINK_HOLD_EVENTS 4096
#define SINK_HOLD_MS 100

void audit_sink_counts(int i, uint64_t *sends, uint64_t *syncs, uint64_t *acked)
{
	bool ok = i >= 0 && i < A.nsinks;

	*sends = ok ? atomic_load(&A.sinks[i].sends) : 0;
	*syncs = ok ? atomic_load(&A.sinks[i].syncs) : 0;
	*acked = ok ? atomic_load(&A.sinks[i].acked) : 0;
}

/* Syncs what the sink holds and acknowledges it. false: the sync failed;
 * the reader is back at the cursor, to write it again. */
static bool sink_sync_held(struct sink_rt *k)
{
	int err;

	if (!k->held_n)
		return true;
	k->held_n = 0;
	atomic_fetch_add(&k->syncs, 1);
	if ((err = k->s.ops->sync(&k->s))) {
		ag_log(LOG_LVL_WARN, "audit: sink %s: %s; retrying from sequence %llu (events stay "
		       "in the spool)", k->s.desc, strerror(-err),
		       (unsigned long long)spool_reader_cursor(k->r) + 1);
		k->failing = true;
		spool_reader_seek(k->r, spool_reader_cursor(k->r));
		return false;
	}
	spool_reader_ack(k->r, k->held);
	atomic_store(&k->acked, k->held);
	return true;
}

/* A send with more went through whole: held, not acknowledged. */
static bool sink_hold(struct sink_rt *k, const struct sink_batch *sb, int err)
{
	if (!sb->more || err)
		return false;
	for (size_t i = 0; i < sb->n; i++)
		if (sb->st[i] != SINK_ACK)
			return false;
	if (!k->held_n)
		k->held_ms = now_ns_mono() / 1000000;
	k->held_n += sb->n;
	k->held = sb->first + sb->n - 1;
	return true;
}

/* The leading events of sb the destination took or refused for good: the
 * refused ones go to the dead-letter file, durably, before the cursor
 * passes them. Returns how many lead (those not dead-lettered are kept). */
static size_t sink_dead_letter(struct sink_rt *k, struct sink_batch *sb)
{
	const char **line = NULL;
	size_t *len = NULL, lead = 0, ndead = 0, done = 0;

	while (lead < sb->n && sb->st[lead] != SINK_RETRY)
		ndead += sb->st[lead++] == SINK_DEAD;
	if (!ndead)
		return lead;
	if ((line = malloc(ndead * sizeof(*line))) && (len = malloc(ndead * sizeof(*len)))) {
		ndead = 0;
		for (size_t i = 0; i < lead; i++)
			if (sb->st[i] == SINK_DEAD) {
				line[ndead] = sb->line[i];
				len[ndead++] = sb->len[i];
			}
		int err = spool_dead_letter(A.spool, k->s.id, sb->why, line, len, ndead, &done);

		if (err)
			ag_log(LOG_LVL_ERR, "audit: sink %s: writing the dead-letter file: %s; the events "
			       "stay in the spool", k->s.desc, strerror(-err));
	}
	free(line);
	free(len);
	/* up to the first dead letter that is not on disk */
	for (size_t i = 0; i < lead; i++)
		if (sb->st[i] == SINK_DEAD && !done--)
			return i;
	return lead;
}

static void sink_settle(struct sink_rt *k, struct sink_batch *sb, int err)
{
	size_t i = err ? 0 : sink_dead_letter(k, sb);

	if (i) {
		spool_reader_ack(k->r, sb->first + i - 1);
		atomic_store(&k->acked, sb->first + i - 1);
	}
	if (i == sb->n) {
		bool all_dead = true;

		for (size_t j = 0; j < sb->n && all_dead; j++)
			all_dead = sb->st[j] == SINK_DEAD;
		/* a batch refused whole is most likely the collector's doing (a
		 * mapping, a proxy's rule): the next one waits, as after an
		 * error, so a backlog is not dead-lettered at the collector's
		 * speed */
		if (all_dead) {
			sink_sleep(next_backoff(k));
			return;
		}
		if (k->failing)
			ag_log(LOG_LVL_INFO, "audit: sink %s delivering again", k->s.desc);
		k->failing = false;
		k->backoff_ms = 0;
		if (k->batch_max < sink_batch_default(k))
			k->batch_max *= 2;   /* capped by sink_thread */
		return;
	}
	if (err == -E2BIG && sb->n > 1) {
		/* 413: half the events per request until one fits (one event
		 * that does not is dead-lettered by the sink) */
		k->batch_max = sb->n / 2;
		err = -EAGAIN;
	}
	if (!k->failing)
		ag_log(LOG_LVL_WARN, "audit: sink %s: %s; retrying from sequence %llu (events stay "
		       "in the spool)", k->s.desc, sb->why[0] ? sb->why : strerror(-err),
		       (unsigned long long)(sb->first + i));
	k->failing = true;
	spool_reader_seek(k->r, sb->first + i - 1);
	sink_sleep(next_backoff(k));
}

static void *sink_thread(void *arg)
{
	struct sink_rt *k = arg;
	size_t max;

	uint64_t last_send = 0, backlog;
	bool behind = false;   /* the last batch was full: more is waiting */
	char name[16];

	snprintf(name, sizeof(name), "ag-sink-%s", k->s.ops->type);
	ag_thread_setup(name, AG_SCHED_IDLE);   /* made urgent by the spool thread when behind */
	atomic_store(&k->tid, gettid());
	sink_resume(k);
	while (!atomic_load(&A.stopping)) {
		struct spool_batch b;
		int n, err;

		if (atomic_exchange(&k->s.reopen, false) && k->s.ops->reopen) {
			sink_sync_held(k);   /* a reopened file is another one */
			k->s.ops->reopen(&k->s);
		}
		if (k->s.ops->min_interval_ms && !behind) {
			uint64_t since = now_ns_mono() / 1000000 - last_send;

			if (since < k->s.ops->min_interval_ms)
				sink_sleep(k->s.ops->min_interval_ms - since);   /* not when stopping */
		}
		if (!k->batch_max || k->batch_max > sink_batch_default(k))
			k->batch_max = sink_batch_default(k);
		max = k->batch_max;
		n = spool_read(k->r, &b, max, SINK_BATCH_BYTES, 200);
		if (n <= 0) {
			if (!sink_sync_held(k))   /* nothing follows what is held */
				continue;
			if (n < 0) {
				ag_log(LOG_LVL_ERR, "audit: sink %s: reading the spool: %s", k->s.desc,
				       strerror(-n));
				sink_sleep(next_backoff(k));
			}
			continue;
		}
		if ((size_t)n > k->st_cap) {
			uint8_t *st = realloc(k->st, n);

			if (!st) {
				spool_reader_seek(k->r, b.first - 1);
				sink_sleep(next_backoff(k));
				continue;
			}
			k->st = st;
			k->st_cap = n;
		}
		struct sink_batch sb = { .first = b.first, .n = n, .line = b.line, .len = b.len,
					 .st = k->st };
		memset(sb.st, SINK_RETRY, n);
		last_send = now_ns_mono() / 1000000;
		/* a backlog of more than a quarter batch is sent right away */
		backlog = spool_reader_backlog(k->r);
		behind = backlog > max / 4;
		sb.more = k->s.ops->sync && behind && k->held_n + sb.n < SINK_HOLD_EVENTS &&
			  (!k->held_n || last_send - k->held_ms < SINK_HOLD_MS);
		err = k->s.ops->send(&k->s, &sb);
		atomic_fetch_add(&k->sends, 1);
		if (!sb.more && k->s.ops->sync)
			atomic_fetch_add(&k->syncs, 1);   /* the send synced (what was held too) */
		if (sb.durable > spool_reader_cursor(k->r)) {
			/* on disk already (a file sink's rotation), whatever
			 * came of the rest: not written again */
			spool_reader_ack(k->r, sb.durable);
			atomic_store(&k->acked, sb.durable);
			if (k->held_n && k->held <= sb.durable)
				k->held_n = 0;
		}
		if (sink_hold(k, &sb, err))
			continue;
		if (k->held_n && err) {
			/* the sink took back what it held with the rest (the
			 * file sink cuts its file to its last good sync): from
			 * the cursor again */
			uint64_t c = spool_reader_cursor(k->r);

			k->held_n = 0;
			if (!k->failing)
				ag_log(LOG_LVL_WARN, "audit: sink %s: %s; retrying from sequence %llu "
				       "(events stay in the spool)", k->s.desc,
				       sb.why[0] ? sb.why : strerror(-err), (unsigned long long)c + 1);
			k->failing = true;
			spool_reader_seek(k->r, c);
			sink_sleep(next_backoff(k));
			continue;
		}
		/* what was held first: a synced send covers it (the same file,
		 * or one synced before it was rotated), anything else syncs it */
		if (k->held_n && sb.more && !sink_sync_held(k)) {
			sink_sleep(next_backoff(k));
			continue;
		}
		k->held_n = 0;
		sink_settle(k, &sb, err);
		if (backlog < SINK_CALM_EVENTS)
			urgency(&k->urgent, 0, false);
	}
	sink_sync_held(k);
	return NULL;
}

static void audit_chain_resume(void);
static bool stop_checkpoint(const char *line, size_t len);

/* The spool ends with a stop checkpoint and the state says no run began
 * after it: the run before ended cleanly and the spool holds all it wrote.
 * A run that began after it may have lines in a file sink and not in the
 * spool, which is not synced while file sinks keep up (a power cut). */
static bool spool_ends_clean(const char *line, size_t len)
{
	return stop_checkpoint(line, len) && !A.prev_running;
}

/*
 * A power cut can leave the spool shorter than a file sink: the spool skips
 * its fdatasync while every sink keeps up (audit_spool.c), and the file
 * sink syncs its own file. Resumed from the spool's last line, the chain
 * would give the sequence numbers the sink already holds to other events
 * (review, stop 26: "sequence 21 follows 27", duplicates in the SIEM). So
 * what a file sink holds after the spool's last line is taken back into
 * the spool first, line for line as written, when it continues the spool:
 * the next sequence, and (when the spool has a last line) chained to it.
 */
struct adopt_st {
	bool check_prev;
	uint64_t last_cp;
	long n;
};

static int adopt_line(void *arg, uint64_t seq, const char *line, size_t len)
{
	struct adopt_st *st = arg;

	if (seq != A.seq + 1)
		return 1;
	/* Every line an event as the enforcer writes it: a JSON object whose
	 * metadata names this sequence and chains to the line before (the
	 * spool's last, then each one taken): anything else is not ours. */
	json_t *ev = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
	json_t *md = json_object_get(ev, "metadata");
	json_t *js = json_object_get(md, "sequence");
	const char *ph = json_string_value(json_object_get(md, "prev_hash"));
	bool ours = json_is_object(ev) && json_is_integer(js) && (uint64_t)json_integer_value(js) == seq &&
		    ph && (!st->check_prev || strcmp(ph, A.last_hash) == 0);

	json_decref(ev);
	if (!ours)
		return 1;
	if (spool_append(A.spool, seq, line, len))
		return 1;
	A.seq = seq;
	audit_chain_hash(line, len, A.last_hash);
	if (memmem(line, len, "\"checkpoint\":{", 14))
		st->last_cp = seq;
	st->n++;
	return 0;
}

static int count_line(void *arg, uint64_t seq, const char *line, size_t len)
{
	(void)seq, (void)line, (void)len;
	++*(long *)arg;
	return 1;   /* one is enough */
}

static void adopt_sink_tails(bool spool_had_line)
{
	char *last = NULL;
	size_t llen;

	/* After a clean stop the spool holds every line the enforcer wrote
	 * (the stop checkpoint last, synced): a sink's lines after it are
	 * someone else's, appended to its file; taken back, the next
	 * checkpoint would sign them (review, stop 48). They are left where
	 * they are, unsigned, and `audit verify` shows them. */
	if (spool_had_line && spool_last_line(A.spool, &last, &llen) == 0) {
		bool clean = spool_ends_clean(last, llen);

		free(last);
		if (clean) {
			for (int i = 0; i < A.nsinks; i++) {
				struct sink_rt *k = &A.sinks[i];
				long n = 0;

				if (k->s.ops->adopt && k->s.ops->adopt(&k->s, A.seq, count_line, &n) >= 0 && n)
					ag_log(LOG_LVL_WARN, "audit: sink %s holds a line after the clean stop at "
					       "sequence %llu that this enforcer did not write: left unsigned "
					       "(`audit verify` reports it)", k->s.desc,
					       (unsigned long long)A.seq);
			}
			return;
		}
	}
	for (int i = 0; i < A.nsinks && A.seq; i++) {
		struct sink_rt *k = &A.sinks[i];
		struct adopt_st st = { .check_prev = spool_had_line };
		uint64_t from = A.seq;

		if (!k->s.ops->adopt || k->s.ops->adopt(&k->s, A.seq, adopt_line, &st) <= 0 || !st.n)
			continue;
		ag_log(LOG_LVL_WARN, "audit: the spool ended at sequence %llu but sink %s holds events up to "
		       "%llu (a power cut before the spool was synced): %ld events taken back from it, so "
		       "their sequence numbers are not used again", (unsigned long long)from, k->s.desc,
		       (unsigned long long)A.seq, st.n);
		spool_reader_ack(k->r, A.seq);
		spool_reader_seek(k->r, A.seq);
		atomic_store(&k->acked, A.seq);
		if (st.last_cp) {
			memmove(A.cp_hist + 1, A.cp_hist, sizeof(A.cp_hist) - sizeof(A.cp_hist[0]));
			A.cp_hist[0] = st.last_cp;
		}
		A.cp_pending = A.seq > A.cp_hist[0] ? A.seq - A.cp_hist[0] : 0;
	}
}

/*
 * A run that ends cleanly writes its stop checkpoint last. When the spool
 * ends with any other line, the run before was killed (SIGKILL, a crash, a
 * power cut): events its threads had built but not yet spooled (the last
 * moments of its workers' passes and the pending queue, one spool tick)
 * were lost with it. They had no sequence number yet, so the chain shows
 * no gap; this event says so, at the start of the next run. Their count is
 * unknown.
 */
static bool stop_checkpoint(const char *line, size_t len)
{
	json_t *ev = json_loadb(line, len, 0, NULL);
	json_t *cp = json_object_get(json_object_get(ev, "unmapped"), "checkpoint");
	bool stop = json_integer_value(json_object_get(ev, "class_uid")) == 1008 &&
		    json_is_true(json_object_get(cp, "stop"));

	json_decref(ev);
	return stop;
}

static void unclean_stop_event(void)
{
	char *line = NULL, msg[400];
	size_t len;
	json_t *ev;
	bool lost = false;

	if (spool_last_line(A.spool, &line, &len)) {
		/* No line: the spool is new, wiped or elsewhere. If the state
		 * says a run was on, that run was killed and what it wrote
		 * after the checkpoint this run chains from is not here: cut
		 * from a copy of the trail, it would leave no trace, as after a
		 * clean stop and a fresh spool (review, stop 48). */
		if (!A.prev_running)
			return;
		lost = true;
	} else {
		bool clean = spool_ends_clean(line, len);

		free(line);
		if (clean)
			return;
	}
	if (!(ev = audit_event(1008, 99, "Other")))
		return;
	if (lost)
		snprintf(msg, sizeof(msg), "the previous run ended without a clean stop (killed, crashed or a "
			 "power cut) and the spool holds nothing of it: the events it wrote after its last "
			 "checkpoint are not in this trail, their number is unknown");
	else
		snprintf(msg, sizeof(msg), "the previous run ended without a clean stop after sequence %llu "
			 "(killed, crashed or a power cut): events it had not yet spooled were lost, their "
			 "number is unknown", (unsigned long long)A.seq);
	json_object_set_new(ev, "message", json_string(msg));
	json_object_set_new(ev, "severity_id", json_integer(4));
	json_object_set_new(ev, "severity", json_string("High"));
	json_object_set_new(ev, "status_id", json_integer(2));
	json_object_set_new(ev, "status", json_string("Failure"));
	add_self(ev);
	json_object_set_new(ev, "unmapped", lost ? json_pack("{s:{s:b}}", "unclean_stop", "spool_lost", 1)
						 : json_pack("{s:{s:I}}", "unclean_stop", "after_sequence",
							     (json_int_t)A.seq));
	ag_log(LOG_LVL_WARN, "audit: %s", msg);
	pthread_mutex_lock(&A.lock);
	if (emit_locked(ev) == 0)
		A.cp_pending++;   /* a plain event for the checkpoint count */
	pthread_mutex_unlock(&A.lock);
	json_decref(ev);
}

int audit_open(const struct policy *p)
{
	char dir[4200];
	int err;

	audit_set_policy(p);
	gethostname(A.host, sizeof(A.host) - 1);
	if (p->audit.spool_dir)
		snprintf(dir, sizeof(dir), "%s", p->audit.spool_dir);
	else if (A.state_dir[0])
		snprintf(dir, sizeof(dir), "%s/spool", A.state_dir);
	else
		return -EINVAL;   /* nowhere to spool: audit_set_state_dir() first */
	A.fail_closed = p->audit.on_full && strcmp(p->audit.on_full, "fail_closed") == 0;
	uint64_t max = p->audit.spool_max_bytes ? p->audit.spool_max_bytes : SPOOL_DEFAULT_MAX_BYTES;
	A.resume_room = max / 8 < LOSS_RESUME_ROOM ? max / 8 : LOSS_RESUME_ROOM;
	A.spool_half = max / 2;
	atomic_store(&A.stopping, false);
	if ((err = spool_open(&A.spool, dir, p->audit.spool_max_bytes, &A.seq))) {
		ag_log(LOG_LVL_ERR, "audit: spool '%s': %s", dir, strerror(-err));
		return err;
	}
	audit_chain_resume();
	pthread_mutex_lock(&A.lock);
	drop_load_locked();
	A.dl_discard_reported = spool_dead_letters_discarded();   /* one counter per process */
	pthread_mutex_unlock(&A.lock);
	for (size_t i = 0; i < p->audit.nsinks && A.nsinks < MAX_SINKS; i++) {
		const struct policy_sink *ps = &p->audit.sinks[i];
		struct sink_rt *k = &A.sinks[A.nsinks];

		memset(k, 0, sizeof(*k));
		k->s.cfg = ps;
		if (!(k->s.ops = audit_sink_ops_for(ps->type)))
			return -ENOTSUP;
		sink_id(ps, k->s.ops->type, k->s.id);
		/* one cursor per destination: two sinks that differ only in
		 * their token would share one, and the slower lose its backlog */
		for (int j = 0; j < A.nsinks; j++)
			if (strcmp(A.sinks[j].s.id, k->s.id) == 0) {
				ag_log(LOG_LVL_ERR, "audit: sinks at lines %d and %d deliver to the same "
				       "destination and would share one cursor: give one another url, "
				       "index or path", A.sinks[j].s.cfg->line, ps->line);
				return -EEXIST;
			}
		snprintf(k->s.desc, sizeof(k->s.desc), "%s", k->s.ops->type);
		A.nsinks++;
		if ((err = k->s.ops->init(&k->s))) {
			ag_log(LOG_LVL_ERR, "audit: sink %s (line %d): %s", k->s.desc, ps->line,
			       strerror(-err));
			return err;
		}
		if ((err = spool_reader_open(A.spool, k->s.id, &k->r)))
			return err;
		/* stdout shares the file sink's code, not its copy: nothing
		 * syncs or takes back what went to the console or the journal
		 * (review) */
		if (k->s.ops->adopt && ps->type != SINK_STDOUT)
			spool_reader_keeps_copy(k->r);
		atomic_store(&k->acked, spool_reader_cursor(k->r));
	}
	adopt_sink_tails(A.spool_had_line);
	if (A.key)
		unclean_stop_event();
	A.prev_running = false;   /* said once */
	/* From here to the stop checkpoint the state says a run is on, so
	 * that a successor that finds no spool can say this one was killed. */
	if (A.key && A.state_dir[0]) {
		if ((err = audit_chain_state_save(A.state_dir, A.head_hash, true)))
			ag_log(LOG_LVL_ERR, "audit: saving chain head in '%s': %s", A.state_dir,
			       strerror(-err));
		else
			A.run_marked = true;
	}
	if (p->audit.recording_dir &&
	    (err = rec_configure(p->audit.recording_dir, p->audit.recording_max_bytes,
				 p->audit.recording_max_age_ms)))
		return err;
	spool_set_tick(A.spool, audit_tick, NULL);
	if ((err = spool_start(A.spool)))
		return err;
	atomic_store(&P.on, true);
	if ((err = pthread_create(&A.saver, NULL, saver_thread, NULL)))
		return -err;
	A.saver_started = true;
	for (int i = 0; i < A.nsinks; i++) {
		if ((err = pthread_create(&A.sinks[i].thr, NULL, sink_thread, &A.sinks[i])))
			return -err;
		A.sinks[i].started = true;
	}
	return 0;
}

/* The chain continues from the spool's last line, so a run after a crash
 * chains on without a break; the checkpoint count includes the events of
 * the previous run that no checkpoint signed. */
static void audit_chain_resume(void)
{
	char *line, path[4200], txt[CP_HIST * 21 + 1] = "", *p = txt, *end;
	size_t len;
	uint64_t cp_seq = 0;
	int k = 0;

	A.spool_had_line = false;
	if (spool_last_line(A.spool, &line, &len))
		return;   /* empty spool: the saved chain head (audit_set_state_dir) */
	A.spool_had_line = true;
	audit_chain_hash(line, len, A.last_hash);
	free(line);
	snprintf(path, sizeof(path), "%s/checkpoint-seq", spool_dir(A.spool));
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (read(fd, txt, sizeof(txt) - 1) < 0)
			txt[0] = 0;
		close(fd);
	}
	/* The newest checkpoint the spool still holds: one stamped after the
	 * spool's last line was lost with it (a SIGKILL before its write), and
	 * counting from it would make the next checkpoint's count short. */
	memset(A.cp_hist, 0, sizeof(A.cp_hist));
	while (k < CP_HIST) {
		uint64_t v = strtoull(p, &end, 10);

		if (end == p)
			break;
		p = end;
		if (v && v <= A.seq)
			A.cp_hist[k++] = v;
	}
	cp_seq = A.cp_hist[0];
	A.cp_pending = A.seq > cp_seq ? A.seq - cp_seq : 0;
}

static void checkpoint_seq_save(void)
{
	char path[4200], txt[CP_HIST * 21 + 1];
	int fd;

	if (!A.spool)
		return;
	snprintf(path, sizeof(path), "%s/checkpoint-seq", spool_dir(A.spool));
	/* Overwritten in place at a fixed width, never truncated: ext4 gives
	 * a truncated file's block back on every save (with the discard mount
	 * option, a synchronous discard that stalled the emitting thread at
	 * each checkpoint). */
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return;
	memmove(A.cp_hist + 1, A.cp_hist, sizeof(A.cp_hist) - sizeof(A.cp_hist[0]));
	A.cp_hist[0] = A.seq;
	for (int i = 0; i < CP_HIST; i++)
		snprintf(txt + 21 * i, sizeof(txt) - 21 * i, "%020llu\n", (unsigned long long)A.cp_hist[i]);
	(void)!pwrite(fd, txt, 21 * CP_HIST, 0);
	close(fd);
}

static void loss_event_locked(bool now);
static void spool_lost_event_locked(void);
static void dead_letter_loss_event_locked(void);
static void drop_forget_locked(void);

/*
 * What on_full dropped is reported once there is room again; until then
 * the count lives in spool/dropped too, so a stop (or a SIGKILL) while the
 * spool is full does not lose the report with it: the next run starts
 * with it. Four fixed-width numbers, overwritten in place.
 */
static void drop_path(char *out, size_t n)
{
	snprintf(out, n, "%s/dropped", spool_dir(A.spool));
}

static void drop_save_locked(bool force)
{
	char path[4200], txt[4 * 21 + 1];
	int fd;

	uint64_t now = now_ns_mono() / 1000000ull;

	if (!A.spool || A.drop_saved == A.dropped || (!force && now - A.drop_saved_ms < 1000))
		return;   /* at most once a second: emitters wait for A.lock */
	A.drop_saved_ms = now;
	drop_path(path, sizeof(path));
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return;
	snprintf(txt, sizeof(txt), "%020llu\n%020llu\n%020llu\n%020llu\n", (unsigned long long)A.dropped,
		 (unsigned long long)A.drop_first_ms, (unsigned long long)A.drop_last_ms,
		 (unsigned long long)A.drop_after_seq);
	if (pwrite(fd, txt, 84, 0) == 84)
		A.drop_saved = A.dropped;
	close(fd);
}

static void drop_load_locked(void)
{
	char path[4200], txt[4 * 21 + 1] = "";
	unsigned long long v[4] = { 0 };
	int fd;

	drop_path(path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (read(fd, txt, sizeof(txt) - 1) < 0)
		txt[0] = 0;
	close(fd);
	if (sscanf(txt, "%llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3]) != 4 || !v[0])
		return;
	A.dropped = v[0];
	A.drop_first_ms = v[1];
	A.drop_last_ms = v[2];
	A.drop_after_seq = v[3];
	A.drop_saved = v[0];
	ag_log(LOG_LVL_WARN, "audit: the last run dropped %llu events (spool full) after sequence %llu; "
	       "reported once there is room", v[0], v[3]);
}

void audit_flush(void)
{
	pthread_mutex_lock(&A.lock);
	if (A.key && A.cp_pending && now_ms_realtime() - A.cp_last_ms >= A.cp_every_ms)
		checkpoint_locked(false);
	if (A.dropped && A.spool && spool_has_room(A.spool, A.resume_room))
		loss_event_locked(false);
	spool_lost_event_locked();
	dead_letter_loss_event_locked();
	if (A.dropped)
		drop_save_locked(false);
	else
		drop_forget_locked();
	pthread_mutex_unlock(&A.lock);
}

bool audit_accepting(void)
{
	return !A.fail_closed || !atomic_load(&A.full);
}

void audit_reopen(void)
{
	for (int i = 0; i < A.nsinks; i++)
		atomic_store(&A.sinks[i].s.reopen, true);
	if (A.spool)
		spool_wake(A.spool);
}

/* Waits (bounded) until every sink acknowledged everything spooled. */
static void drain_sinks(uint64_t last)
{
	uint64_t end = now_ns_mono() / 1000000ull + SINK_DRAIN_MS;

	while (now_ns_mono() / 1000000ull < end) {
		int behind = 0;

		for (int i = 0; i < A.nsinks; i++)
			behind += atomic_load(&A.sinks[i].acked) < last && !A.sinks[i].failing;
		if (!behind)
			return;
		usleep(5000);
	}
}

void audit_close(void)
{
	uint64_t last;

	atomic_store(&P.on, false);   /* from here on, commits stamp their events at once */
	pthread_mutex_lock(&A.lock);
	drain_locked();
	if (A.dropped && A.spool && spool_has_room(A.spool, A.resume_room))
		loss_event_locked(true);
	if (A.dropped)
		drop_save_locked(true);   /* no room: the next run reports them */
	spool_lost_event_locked();   /* what was found since the last audit_flush() */
	dead_letter_loss_event_locked();
	/* A clean stop ends with its stop checkpoint, which saves the state
	 * as no run on. Not recorded (signing failed, the spool full), or a
	 * start that failed before it marked the run (and before it reported
	 * a killed one): the state stays as it is, for the next start to
	 * report. With nothing spooled at all, there is nothing to lose. */
	if (A.key && A.seq)
		checkpoint_locked(true);
	else if (A.key && A.run_marked) {
		memcpy(A.save_hash, A.head_hash, sizeof(A.save_hash));
		A.save_running = false;
		A.save_pending = true;
	}
	A.run_marked = false;
	EVP_PKEY_free(A.key);
	A.key = NULL;
	last = A.seq;
	pthread_mutex_unlock(&A.lock);
	if (A.spool) {
		spool_flush(A.spool, true);
		/* the last deliveries do not wait for idle CPU time */
		for (int i = 0; i < A.nsinks; i++) {
			pid_t tid = atomic_load(&A.sinks[i].tid);

			if (tid)
				urgency(&A.sinks[i].urgent, tid, true);
		}
		drain_sinks(last);
	}
	pthread_mutex_lock(&A.stop_lock);
	atomic_store(&A.stopping, true);
	pthread_cond_broadcast(&A.stop_cond);
	pthread_mutex_unlock(&A.stop_lock);
	if (A.spool)
		spool_readers_quit(A.spool);
	for (int i = 0; i < A.nsinks; i++) {
		struct sink_rt *k = &A.sinks[i];

		if (k->started)
			pthread_join(k->thr, NULL);
		if (k->s.ops && k->s.ops->fini)
			k->s.ops->fini(&k->s);
		free(k->st);
		memset(k, 0, sizeof(*k));
	}
	A.nsinks = 0;
	if (A.saver_started)
		pthread_join(A.saver, NULL);
	A.saver_started = false;
	save_chain_head();
	spool_close(A.spool);   /* readers are freed with it */
	/* its thread is gone: an open after this one gets a new one */
	pthread_mutex_lock(&U.mu);
	__atomic_store_n(&U.spool_tid, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&U.spool_urgent, false, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&U.mu);
	A.spool = NULL;
	rec_configure(NULL, 0, 0);
	pthread_mutex_lock(&A.lock);
	for (int i = 0; i < A.nfollowers; i++)
		close(A.followers[i]);
	A.nfollowers = 0;
	for (int i = 0; i < AUDIT_RECENT; i++) {
		free(A.recent[i]);
		A.recent[i] = NULL;
		A.recent_cap[i] = 0;
	}
	audit_buf_free(&A.line);
	audit_buf_free(&A.polfrag);
	json_decref(A.md);
	A.md = NULL;
	json_decref(A.pol);
	A.pol = NULL;
	A.recent_n = 0;
	A.seq = 0;
	A.dropped = A.drop_saved = 0;
	atomic_store(&A.full, false);
	memcpy(A.last_hash, AUDIT_ZERO_HASH, sizeof(A.last_hash));
	A.cp_pending = 0;
	pthread_mutex_unlock(&A.lock);
}

void audit_set_policy(const struct policy *p)
{
	pthread_mutex_lock(&A.lock);
	drain_locked();   /* queued events carry the policy that decided them */
	snprintf(A.policy_hash, sizeof(A.policy_hash), "%s", p->hash);
	snprintf(A.policy_path, sizeof(A.policy_path), "%s", p->path ? p->path : "");
	json_decref(A.pol);   /* rebuilt by the next emit */
	A.pol = NULL;
	A.polfrag.len = 0;
	if (audit_buf_put(&A.polfrag, "\"policy\":{\"hash\":", 17) ||
	    audit_buf_str(&A.polfrag, A.policy_hash, strlen(A.policy_hash)) ||
	    audit_buf_put(&A.polfrag, ",\"path\":", 8) ||
	    audit_buf_str(&A.polfrag, A.policy_path, strlen(A.policy_path)) ||
	    audit_buf_put(&A.polfrag, "}", 1))
		A.polfrag.len = 0;   /* out of memory: writer events go without it */
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

/* The builders below run for every event: keys are constant ASCII and so
 * are most values, so they skip jansson's UTF-8 checks (json_pack checks
 * every key and string: a large share of building an event). A value from
 * elsewhere is checked, and as with json_pack, any failure (invalid UTF-8,
 * no memory) fails the whole object: *bad is set and the caller drops it. */
static void put(json_t *o, const char *key, json_t *v, bool *bad)
{
	if (json_object_set_new_nocheck(o, key, v))
		*bad = true;
}

static json_t *str_const(const char *s)
{
	return json_string_nocheck(s);
}

static json_t *str_checked(const char *s)
{
	return s ? json_string(s) : NULL;
}

/* o, or NULL (freed) when a put failed. */
static json_t *built(json_t *o, bool bad)
{
	if (bad) {
		json_decref(o);
		return NULL;
	}
	return o;
}

json_t *audit_event(int class_uid, int activity_id, const char *activity_name)
{
	int category;
	const char *category_name, *cname = class_name(class_uid, &category, &category_name);
	char type_name[128];
	json_t *ev = json_object();
	bool bad = false;

	snprintf(type_name, sizeof(type_name), "%s: %s", cname, activity_name);
	put(ev, "class_uid", json_integer(class_uid), &bad);
	put(ev, "class_name", str_const(cname), &bad);
	put(ev, "category_uid", json_integer(category), &bad);
	put(ev, "category_name", str_const(category_name), &bad);
	put(ev, "activity_id", json_integer(activity_id), &bad);
	put(ev, "activity_name", str_checked(activity_name), &bad);
	put(ev, "type_uid", json_integer((json_int_t)class_uid * 100 + activity_id), &bad);
	put(ev, "type_name", str_checked(type_name), &bad);
	put(ev, "severity_id", json_integer(1), &bad);
	put(ev, "severity", str_const("Informational"), &bad);
	return built(ev, bad);
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
	/* 8-4-4-4-12 lowercase hex (not snprintf: this runs for every event) */
	static const char hexd[] = "0123456789abcdef";
	char *o = out;
	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*o++ = '-';
		*o++ = hexd[b[i] >> 4];
		*o++ = hexd[b[i] & 15];
	}
	*o = 0;
}

void audit_add_agent(json_t *ev, const struct audit_agent *a)
{
	/* comm is whatever the agent set with prctl(PR_SET_NAME): keep it
	 * printable ASCII, or invalid UTF-8 would make jansson drop the actor. */
	char comm[AG_COMM_LEN + 1] = "", uid[16];
	const char *name = a->name ? a->name : "";
	json_t *actor = json_object(), *proc = json_object(), *user = json_object(),
	       *puser = json_object(), *agent = json_object(), *pr = json_object(), *um;
	bool bad = false, bad_agent = false;

	for (int i = 0; i < AG_COMM_LEN && a->comm && a->comm[i]; i++) {
		unsigned char ch = a->comm[i];

		comm[i] = ch >= 0x20 && ch < 0x7f ? ch : '?';
		comm[i + 1] = 0;
	}
	snprintf(uid, sizeof(uid), "%u", a->uid);
	put(puser, "uid", str_const(uid), &bad);
	put(proc, "pid", json_integer((int)a->pid), &bad);
	put(proc, "tid", json_integer((int)a->tid), &bad);
	put(proc, "name", str_const(comm), &bad);
	put(proc, "user", puser, &bad);
	put(user, "name", str_checked(name), &bad);
	put(user, "uid", str_checked(name), &bad);
	put(user, "type", str_const("Service"), &bad);
	put(actor, "app_name", str_checked(name), &bad);
	put(actor, "process", proc, &bad);
	put(actor, "user", user, &bad);
	if ((actor = built(actor, bad)))
		json_object_set_new_nocheck(ev, "actor", actor);
	if (!(um = json_object_get(ev, "unmapped"))) {
		um = json_object();
		json_object_set_new_nocheck(ev, "unmapped", um);
	}
	/* Without a verified identity the principal is the agent name (source
	 * 'local'), marked unverified. */
	put(pr, "iss", a->iss ? str_checked(a->iss) : str_const("local"), &bad_agent);
	put(pr, "sub", str_checked(a->iss ? (a->sub ? a->sub : "") : name), &bad_agent);
	put(pr, "verified", json_boolean(a->verified), &bad_agent);
	put(agent, "name", str_checked(name), &bad_agent);
	put(agent, "cgroup", str_checked(a->cgroup ? a->cgroup : ""), &bad_agent);
	put(agent, "cgroup_id", json_integer((json_int_t)a->cgroup_id), &bad_agent);
	put(agent, "principal", pr, &bad_agent);
	if ((agent = built(agent, bad_agent)))
		json_object_set_new_nocheck(um, "agent", agent);
}

void audit_add_verdict(json_t *ev, bool allowed, bool would_deny, const char *rule,
		       const char *reason)
{
	json_t *um = json_object_get(ev, "unmapped");
	bool bad = false;   /* as before json_pack: a field that fails is left out */

	put(ev, "status_id", json_integer(allowed ? 1 : 2), &bad);
	put(ev, "status", str_const(allowed ? "Success" : "Failure"), &bad);
	put(ev, "action_id", json_integer(allowed ? 1 : 2), &bad);
	put(ev, "action", str_const(allowed ? "Allowed" : "Denied"), &bad);
	put(ev, "disposition_id", json_integer(allowed ? 1 : 2), &bad);
	put(ev, "disposition", str_const(allowed ? "Allowed" : "Blocked"), &bad);
	if (!um) {
		um = json_object();
		put(ev, "unmapped", um, &bad);
	}
	put(um, "verdict", str_const(allowed ? (would_deny ? "would_deny" : "allow") : "deny"), &bad);
	if (rule)
		put(um, "rule", str_checked(rule), &bad);
	if (reason)
		put(um, "reason", str_checked(reason), &bad);
	if (reason && !allowed)
		put(ev, "status_detail", str_checked(reason), &bad);
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

static void add_self(json_t *ev)
{
	json_object_set_new(ev, "actor", json_pack("{s:s, s:{s:i, s:s}}", "app_name", "agentgate",
		"process", "pid", (int)getpid(), "name", "agentgate"));
	json_object_set_new(ev, "device", json_pack("{s:s, s:i, s:s}", "hostname", A.host,
		"type_id", 1, "type", "Server"));
}

/* Signs the chain head: the event just emitted is covered, and through
 * its prev_hash every event before it. stop: the run's last one, at a
 * clean stop (signed as such: `audit verify` warns about a file that ends
 * at any other). Called with the lock held. */
static void checkpoint_locked(bool stop)
{
	char sig[AUDIT_SIG_HEX];
	json_t *ev, *cp;
	int err;

	if (!stop && !meta_due_locked())
		return;
	if (audit_checkpoint_sign(A.key, A.seq, A.last_hash, A.cp_pending, stop, sig)) {
		ag_log(LOG_LVL_ERR, "audit: signing checkpoint at sequence %llu failed",
		       (unsigned long long)A.seq);
		return;
	}
	ev = audit_event(1008, 99, "Other");
	if (!ev)
		return;
	json_object_set_new(ev, "message", json_string("audit checkpoint: chain head signed"));
	add_self(ev);
	cp = json_pack("{s:I, s:s, s:I, s:s, s:s, s:s}", "sequence", (json_int_t)A.seq, "hash",
		       A.last_hash, "count", (json_int_t)A.cp_pending, "alg", "Ed25519", "key_id",
		       A.key_id, "signature", sig);
	if (cp && stop)
		json_object_set_new(cp, "stop", json_true());
	json_object_set_new(ev, "unmapped", json_pack("{s:o}", "checkpoint", cp));
	err = meta_emit_locked(ev);
	json_decref(ev);
	if (err)
		return;   /* not recorded: the next checkpoint covers these events */
	A.cp_pending = 0;
	A.cp_last_ms = now_ms_realtime();
	checkpoint_seq_save();
	/* The next run chains from this checkpoint line (when the spool is
	 * gone; otherwise from the spool's last line). Saved with an fsync by
	 * the saver thread within a second: an emitter never waits on the disk. */
	memcpy(A.save_hash, A.last_hash, sizeof(A.save_hash));
	memcpy(A.head_hash, A.last_hash, sizeof(A.head_hash));
	A.save_running = !stop;
	A.save_pending = true;
}

/* Takes the pending chain head (under A.lock) and saves it. */
static void save_chain_head(void)
{
	char hash[AUDIT_HASH_HEX];
	bool pending, running;
	int err;

	pthread_mutex_lock(&A.lock);
	pending = A.save_pending;
	running = A.save_running;
	memcpy(hash, A.save_hash, sizeof(hash));
	A.save_pending = false;
	pthread_mutex_unlock(&A.lock);
	if (pending && A.state_dir[0] && (err = audit_chain_state_save(A.state_dir, hash, running)))
		ag_log(LOG_LVL_ERR, "audit: saving chain head in '%s': %s", A.state_dir,
		       strerror(-err));
}

static void *saver_thread(void *arg)
{
	ag_thread_setup("ag-chainsave", AG_SCHED_BATCH);
	while (!atomic_load(&A.stopping)) {
		sink_sleep(1000);
		save_chain_head();
	}
	return NULL;
}

/* Event Log Activity for what on_full dropped, written once room returned:
 * the dropped events had no sequence number, they sit between
 * after_sequence and this event. */
/* A loss report or checkpoint may be tried now (not within a second of
 * one that could not be recorded). A.lock held. */
static bool meta_due_locked(void)
{
	return now_ns_mono() / 1000000 >= A.meta_retry_ms;
}

/* Emits a loss report or checkpoint: not counted as a lost event when it
 * cannot be recorded, and tried again a second later. A.lock held. */
static int meta_emit_locked(json_t *ev)
{
	int err;

	A.meta = true;
	err = emit_locked(ev);
	A.meta = false;
	if (err)
		A.meta_retry_ms = now_ns_mono() / 1000000 + META_RETRY_MS;
	return err;
}

/* The loss was reported: spool/dropped goes, once the report is in the
 * segment file (a SIGKILL between the two must not lose both). A flush
 * that fails leaves it for audit_flush() to try again; left for good, the
 * next run would report the same loss a second time. */
static void drop_forget_locked(void)
{
	char path[4200];

	if (!A.drop_saved || A.dropped || spool_flush(A.spool, false) != 0)
		return;
	drop_path(path, sizeof(path));
	unlink(path);
	A.drop_saved = 0;
}

static void loss_event_locked(bool now)
{
	json_t *ev;
	char msg[192];
	int err;

	if (!now && !meta_due_locked())
		return;
	if (!(ev = audit_event(1008, 99, "Drop")))
		return;
	snprintf(msg, sizeof(msg), "%llu audit events dropped: %s%s (on_full=%s)",
		 (unsigned long long)A.dropped, A.drop_err && A.drop_err != -ENOSPC ?
		 "the spool could not be written: " : "spool full",
		 A.drop_err && A.drop_err != -ENOSPC ? strerror(-A.drop_err) : "",
		 A.fail_closed ? "fail_closed" : "drop_newest");
	json_object_set_new(ev, "message", json_string(msg));
	json_object_set_new(ev, "severity_id", json_integer(4));
	json_object_set_new(ev, "severity", json_string("High"));
	json_object_set_new(ev, "status_id", json_integer(2));
	json_object_set_new(ev, "status", json_string("Failure"));
	json_object_set_new(ev, "count", json_integer(A.dropped));
	json_object_set_new(ev, "start_time", json_integer(A.drop_first_ms));
	json_object_set_new(ev, "end_time", json_integer(A.drop_last_ms));
	add_self(ev);
	json_object_set_new(ev, "unmapped", json_pack("{s:{s:s, s:I, s:I, s:s, s:I}}", "loss",
		"counter", "spool_full", "count", (json_int_t)A.dropped,
		"after_sequence", (json_int_t)A.drop_after_seq,
		"on_full", A.fail_closed ? "fail_closed" : "drop_newest",
		"spool_bytes", (json_int_t)spool_bytes(A.spool)));
	uint64_t n = A.dropped;
	A.dropped = 0;   /* emit_locked() must not report them first */
	err = meta_emit_locked(ev);
	if (err == 0) {
		A.cp_pending++;   /* a plain event for the checkpoint count */
		atomic_store(&A.full, false);
		drop_forget_locked();
	} else {
		/* still no room: the window goes on as it was (the report is
		 * not itself a lost event) */
		A.dropped = n;
	}
	json_decref(ev);
}

/* The fields a loss found by the enforcer carries (a 1008 Drop of the
 * spool's or the dead-letter file's): the lost lines' own times went with
 * them, so the window is when the loss was found. */
static void found_loss_fields(json_t *ev, const char *msg, uint64_t n, uint64_t now)
{
	json_object_set_new(ev, "message", json_string(msg));
	json_object_set_new(ev, "severity_id", json_integer(4));
	json_object_set_new(ev, "severity", json_string("High"));
	json_object_set_new(ev, "status_id", json_integer(2));
	json_object_set_new(ev, "status", json_string("Failure"));
	json_object_set_new(ev, "count", json_integer((json_int_t)n));
	json_object_set_new(ev, "start_time", json_integer((json_int_t)now));
	json_object_set_new(ev, "end_time", json_integer((json_int_t)now));
	add_self(ev);
}

/* Event Log Activity for sequences a sink's reader found missing from the
 * spool (spool_take_lost(): a closed segment whose file ends short). They
 * had numbers and may have reached some sinks; the others skip them, and
 * this says which and how many. A.lock held. */
static void spool_lost_event_locked(void)
{
	uint64_t first, last, n, now = now_ms_realtime();
	json_t *ev;
	char msg[256];

	if (!A.spool || !meta_due_locked() || !(n = spool_take_lost(A.spool, &first, &last)))
		return;
	if (!(ev = audit_event(1008, 99, "Drop"))) {
		spool_put_lost(A.spool, n, first, last);
		return;
	}
	snprintf(msg, sizeof(msg), "%llu audit events lost from the spool (sequences %llu..%llu): a "
		 "spool segment ends before them (a power cut before they were synced, or a damaged "
		 "file); sinks that had not received them go on after them",
		 (unsigned long long)n, (unsigned long long)first, (unsigned long long)last);
	found_loss_fields(ev, msg, n, now);
	json_object_set_new(ev, "unmapped", json_pack("{s:{s:s, s:I, s:I, s:I}}", "loss",
		"counter", "spool_lost", "count", (json_int_t)n, "first_sequence", (json_int_t)first,
		"last_sequence", (json_int_t)last));
	if (meta_emit_locked(ev) == 0)
		A.cp_pending++;   /* a plain event for the checkpoint count */
	else
		spool_put_lost(A.spool, n, first, last);   /* tried again a second later */
	json_decref(ev);
}

/* Event Log Activity for dead letters the dead-letter file's rotation
 * discarded (spool_dead_letter()): events a sink's destination refused,
 * whose only copy for that destination went with them. The log and
 * status counted them; the trail did not (review). A.lock held. */
static void dead_letter_loss_event_locked(void)
{
	uint64_t total = spool_dead_letters_discarded(), n = total - A.dl_discard_reported;
	uint64_t now = now_ms_realtime();
	json_t *ev;
	char msg[256];

	if (!A.spool || !n || !meta_due_locked() || !(ev = audit_event(1008, 99, "Drop")))
		return;
	snprintf(msg, sizeof(msg), "%llu dead letters discarded: the dead-letter file of events a "
		 "sink's destination refused reached its bound, and its older copy was replaced",
		 (unsigned long long)n);
	found_loss_fields(ev, msg, n, now);
	json_object_set_new(ev, "unmapped", json_pack("{s:{s:s, s:I}}", "loss",
		"counter", "dead_letters_discarded", "count", (json_int_t)n));
	if (meta_emit_locked(ev) == 0) {
		A.cp_pending++;   /* a plain event for the checkpoint count */
		A.dl_discard_reported = total;
	}
	json_decref(ev);
}

/* An event was not recorded (err: why). Every cause counts: a full spool,
 * a disk that refuses writes (ENOSPC, EDQUOT, EFBIG, EIO), no descriptor
 * for a new segment (EMFILE), no memory. */
static void drop_locked(int err)
{
	uint64_t now = now_ms_realtime();

	if (!A.dropped) {
		A.drop_first_ms = now;
		A.drop_after_seq = A.seq;
		A.drop_err = err;
		ag_log(LOG_LVL_WARN, "audit: %s after sequence %llu: %s",
		       err == -ENOSPC ? "spool full" : "cannot record events",
		       (unsigned long long)A.seq, A.fail_closed ?
		       "new agent connections are refused until audit can be recorded (on_full: "
		       "fail_closed)" : "dropping new events until there is room (on_full: drop_newest)");
	}
	A.dropped++;
	A.drop_last_ms = now;
	atomic_store(&A.full, true);
}

/* Fields OCSF requires for a class that the builder of this one event may
 * not have at hand, filled here so that every event conforms: Event Log
 * Activity needs actor and device (the enforcer itself), Authentication
 * needs user (the principal the agent context names). */
static void ocsf_required(json_t *ev)
{
	json_int_t cls = json_integer_value(json_object_get(ev, "class_uid"));

	if (cls == 1008 && !json_object_get(ev, "device")) {
		json_t *actor = json_incref(json_object_get(ev, "actor"));

		add_self(ev);
		if (actor)
			json_object_set_new(ev, "actor", actor);
	}
	if (cls == 3002 && !json_object_get(ev, "user")) {
		json_t *u = json_object_get(json_object_get(ev, "actor"), "user");

		if (u)
			json_object_set(ev, "user", u);
	}
}

/* metadata as every event carries it: built once, then uid, sequence and
 * prev_hash are changed in place (a fresh object costs some thirty
 * allocations per event). NULL when out of memory. */
static json_t *metadata_locked(const char *uid, uint64_t seq)
{
	if (!A.md) {
		A.md = json_pack("{s:s, s:s, s:I, s:s, s:s, s:{s:s, s:s, s:s}}", "version",
				 OCSF_VERSION, "uid", "", "sequence", (json_int_t)0, "prev_hash", "",
				 "log_name", "agentgate", "product", "name", "agentgate",
				 "vendor_name", "agentgate", "version", AG_VERSION);
		if (!A.md)
			return NULL;
		A.md_uid = json_object_get(A.md, "uid");
		A.md_seq = json_object_get(A.md, "sequence");
		A.md_prev = json_object_get(A.md, "prev_hash");
	}
	/* hex digits only: nothing to check */
	if (json_string_setn_nocheck(A.md_uid, uid, strlen(uid)) ||
	    json_integer_set(A.md_seq, (json_int_t)seq) ||
	    json_string_setn_nocheck(A.md_prev, A.last_hash, strlen(A.last_hash)))
		return NULL;
	return A.md;
}

/* The newest line into the ring for `audit tail`; a slot's memory is
 * reused. Out of memory: the ring misses this one. */
static void recent_push_locked(const char *line, size_t len)
{
	int full = A.recent_n == AUDIT_RECENT;
	int i = full ? A.recent_head : (A.recent_head + A.recent_n) % AUDIT_RECENT;

	if (A.recent_cap[i] < len + 1) {
		size_t cap = (len + 1 + 255) & ~(size_t)255;
		char *p = realloc(A.recent[i], cap);

		if (!p)
			return;
		A.recent[i] = p;
		A.recent_cap[i] = cap;
	}
	memcpy(A.recent[i], line, len);
	A.recent[i][len] = 0;
	if (full)   /* the newest replaced the oldest */
		A.recent_head = (A.recent_head + 1) % AUDIT_RECENT;
	else
		A.recent_n++;
}

/* Stamps, serialises and spools ev (the caller keeps its reference). The
 * sequence is the spool's: consumed only when the line is in the spool.
 * 0, or -errno when the event was not recorded (counted as dropped when
 * the spool is full). */
static int emit_locked(json_t *ev)
{
	char uid[37];
	uint64_t seq = A.seq + 1;
	json_t *md, *um;
	int bad;

	uuid7(uid);
	ocsf_required(ev);
	json_object_set_new(ev, "time", json_integer(now_ms_realtime()));
	md = metadata_locked(uid, seq);
	if (!(um = json_object_get(ev, "unmapped"))) {
		um = json_object();
		json_object_set_new(ev, "unmapped", um);
	}
	if (!A.pol)
		A.pol = json_pack("{s:s, s:s}", "hash", A.policy_hash, "path", A.policy_path);
	/* The shared objects are attached for the serialisation only, and
	 * detached before anyone else can see ev. */
	bad = !md || json_object_set(ev, "metadata", md);
	if (A.pol)
		json_object_set(um, "policy", A.pol);
	A.line.len = 0;
	/* The same bytes as json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER) (line
	 * separators escaped: audit_json.c),
	 * written into a reused buffer with room for the '\n' */
	bad = bad || audit_json_dump(ev, &A.line) || audit_buf_reserve(&A.line, 1);
	json_object_del(ev, "metadata");
	if (A.pol)
		json_object_del(um, "policy");
	if (bad) {
		ag_log(LOG_LVL_ERR, "audit: out of memory, an event was not recorded");
		if (!A.meta)
			drop_locked(-ENOMEM);
		return -ENOMEM;
	}
	return spool_line_locked(A.line.p, A.line.len, seq);
}

/* The serialised event (line[len] writable: room for a '\n') into the
 * spool as sequence seq, then into the chain, followers and the ring. */
static int spool_line_locked(char *line, size_t len, uint64_t seq)
{
	int err = 0;

	if (A.spool && (err = spool_append(A.spool, seq, line, len))) {
		if (err != -ENOSPC && !A.dropped)
			ag_log(LOG_LVL_ERR, "audit: spooling event %llu: %s", (unsigned long long)seq,
			       strerror(-err));
		if (!A.meta)
			drop_locked(err);
		return err;
	}
	A.seq = seq;
	/* The chain covers the exact bytes spooled, without the newline. */
	audit_chain_hash(line, len, A.last_hash);
	if (A.nfollowers) {
		line[len] = '\n';
		push_followers(line, len + 1);
		line[len] = 0;
	}
	recent_push_locked(line, len);
	return 0;
}

static void defer_flush_first(void);

void audit_emit(json_t *ev)
{
	if (!ev)
		return;
	defer_flush_first();   /* this thread's queued events come first */
	pthread_mutex_lock(&A.lock);
	drain_locked();
	if (A.dropped && A.spool && spool_has_room(A.spool, A.resume_room))
		loss_event_locked(false);
	if (emit_locked(ev) == 0 && ++A.cp_pending >= A.cp_every && A.key)
		checkpoint_locked(false);
	pthread_mutex_unlock(&A.lock);
	json_decref(ev);
}

/* ---- the writer (audit.h) ---------------------------------------------------- */

static struct audit_w dead_w = { .top.bad = true, .um.bad = true, .busy = true };
static __thread struct audit_w *thread_w;
static pthread_key_t w_key;
static pthread_once_t w_once = PTHREAD_ONCE_INIT;

/*
 * Parts that repeat from event to event, written once per thread: an
 * event's header members (class, category, activity, type, severity: the
 * same bytes for the same class and activity) and the agent's members
 * (actor and unmapped.agent: the same for every statement of a
 * connection). A hit costs a compare and a copy instead of some thirty
 * escaped members. Keyed by every input the bytes depend on, so a hit
 * writes exactly what writing the members would.
 */
#define HDR_SLOTS 8
#define AGENT_SLOTS 16
#define AGENT_KEY_MAX 1024
struct hdr_slot {
	int cls, act;
	char name[64];
	struct audit_buf b;
};
struct agent_slot {
	struct audit_buf key, top, um;
};
#define VERDICT_SLOTS 8
#define VERDICT_KEY_MAX 512
struct audit_w_cache {
	struct hdr_slot hdr[HDR_SLOTS];
	unsigned hdr_next;
	struct agent_slot ag[AGENT_SLOTS];
	unsigned ag_next, ag_hit;              /* ag_hit: the slot the last hit was in */
	struct agent_slot vd[VERDICT_SLOTS];   /* the same, for the verdict's members */
	unsigned vd_next, vd_hit;
	struct audit_buf key;
	struct audit_obj t1, t2;
};

static void w_cache_free(struct audit_w_cache *c)
{
	if (!c)
		return;
	for (int i = 0; i < HDR_SLOTS; i++)
		audit_buf_free(&c->hdr[i].b);
	for (int i = 0; i < AGENT_SLOTS; i++) {
		audit_buf_free(&c->ag[i].key);
		audit_buf_free(&c->ag[i].top);
		audit_buf_free(&c->ag[i].um);
	}
	for (int i = 0; i < VERDICT_SLOTS; i++) {
		audit_buf_free(&c->vd[i].key);
		audit_buf_free(&c->vd[i].top);
		audit_buf_free(&c->vd[i].um);
	}
	audit_buf_free(&c->key);
	aobj_free(&c->t1);
	aobj_free(&c->t2);
	free(c);
}

static void w_free(void *p)
{
	struct audit_w *w = p;

	aobj_free(&w->top);
	aobj_free(&w->um);
	w_cache_free(w->cache);
	free(w);
}

static void w_key_init(void)
{
	if (pthread_key_create(&w_key, w_free))
		abort();
}

/* The thread's writer; its buffers keep their memory from event to event.
 * One begun while the thread's writer is in use (an event built while
 * another is) gets a writer of its own, freed at commit. */
static struct audit_w *w_take(void)
{
	struct audit_w *w = thread_w;

	if (!w) {
		pthread_once(&w_once, w_key_init);
		if (!(w = calloc(1, sizeof(*w))))
			return NULL;
		thread_w = w;
		pthread_setspecific(w_key, w);   /* freed when the thread ends */
	}
	if (w->busy) {
		if (!(w = calloc(1, sizeof(*w))))
			return NULL;
		w->heap = true;
	}
	w->busy = true;
	return w;
}

static void w_release(struct audit_w *w)
{
	if (w == &dead_w)
		return;
	if (w->heap)
		w_free(w);
	else
		w->busy = false;
}

static void w_header(struct audit_obj *o, int class_uid, int activity_id,
		     const char *activity_name)
{
	int category;
	const char *category_name, *cname = class_name(class_uid, &category, &category_name);
	char type_name[128];
	size_t cl = strlen(cname), al = strlen(activity_name);

	if (al > sizeof(type_name) - cl - 3)
		al = sizeof(type_name) - cl - 3;
	memcpy(type_name, cname, cl);   /* "<class>: <activity>" */
	memcpy(type_name + cl, ": ", 2);
	memcpy(type_name + cl + 2, activity_name, al);
	type_name[cl + 2 + al] = 0;
	aobj_int(o, "class_uid", class_uid);
	aobj_str(o, "class_name", cname);
	aobj_int(o, "category_uid", category);
	aobj_str(o, "category_name", category_name);
	aobj_int(o, "activity_id", activity_id);
	aobj_str(o, "activity_name", activity_name);
	aobj_int(o, "type_uid", (long long)class_uid * 100 + activity_id);
	aobj_str(o, "type_name", type_name);
	aobj_int(o, "severity_id", 1);
	aobj_str(o, "severity", "Informational");
}

/* The thread's writer's cache, made on first use; NULL for a heap writer,
 * for dead_w (every thread out of memory shares it) or without memory (the
 * members are then written as they come). */
static struct audit_w_cache *w_cache(struct audit_w *w)
{
	if (w == &dead_w)
		return NULL;
	if (!w->cache && !w->heap)
		w->cache = calloc(1, sizeof(*w->cache));
	return w->heap ? NULL : w->cache;
}

struct audit_w *audit_begin(int class_uid, int activity_id, const char *activity_name)
{
	struct audit_w *w = w_take();
	struct audit_w_cache *c;

	if (!w)
		return &dead_w;   /* writes nothing; the commit logs the loss */
	aobj_reset(&w->top);
	aobj_reset(&w->um);
	w->own_policy = false;
	if (audit_buf_put(&w->top.b, "{", 1))
		w->top.bad = true;
	if ((c = w_cache(w)) && strlen(activity_name) < sizeof(c->hdr[0].name)) {
		struct hdr_slot *h;

		for (int i = 0; i < HDR_SLOTS; i++) {
			h = &c->hdr[i];
			if (h->b.len && h->cls == class_uid && h->act == activity_id &&
			    strcmp(h->name, activity_name) == 0) {
				aobj_members(&w->top, h->b.p, h->b.len);
				return w;
			}
		}
		h = &c->hdr[c->hdr_next++ % HDR_SLOTS];
		aobj_reset(&c->t1);
		w_header(&c->t1, class_uid, activity_id, activity_name);
		h->b.len = 0;
		if (!c->t1.bad && !audit_buf_put(&h->b, c->t1.b.p, c->t1.b.len)) {
			h->cls = class_uid;
			h->act = activity_id;
			strcpy(h->name, activity_name);
			aobj_members(&w->top, h->b.p, h->b.len);
			return w;
		}
		h->b.len = 0;
	}
	w_header(&w->top, class_uid, activity_id, activity_name);
	return w;
}

/* The same members as audit_add_agent(): actor into top, agent into um. */
static void w_agent_members(struct audit_obj *top, struct audit_obj *um,
			    const struct audit_agent *a)
{
	char comm[AG_COMM_LEN + 1] = "";
	const char *name = a->name ? a->name : "";

	for (int i = 0; i < AG_COMM_LEN && a->comm && a->comm[i]; i++) {
		unsigned char ch = a->comm[i];

		comm[i] = ch >= 0x20 && ch < 0x7f ? ch : '?';
		comm[i + 1] = 0;
	}
	aobj_open(top, "actor");
	aobj_str(top, "app_name", name);
	aobj_open(top, "process");
	aobj_int(top, "pid", (int)a->pid);
	aobj_int(top, "tid", (int)a->tid);
	aobj_str(top, "name", comm);
	aobj_open(top, "user");
	/* a string, as OCSF's user.uid is */
	char uid[16];

	uid[sizeof(uid) - 1] = 0;
	aobj_str(top, "uid", u64_dec(uid + sizeof(uid) - 1, a->uid));
	aobj_close(top);
	aobj_close(top);
	aobj_open(top, "user");
	aobj_str(top, "name", name);
	aobj_str(top, "uid", name);
	aobj_str(top, "type", "Service");
	aobj_close(top);
	aobj_close(top);

	aobj_open(um, "agent");
	aobj_str(um, "name", name);
	aobj_str(um, "cgroup", a->cgroup ? a->cgroup : "");
	aobj_int(um, "cgroup_id", (long long)a->cgroup_id);
	aobj_open(um, "principal");
	aobj_str(um, "iss", a->iss ? a->iss : "local");
	aobj_str(um, "sub", a->iss ? (a->sub ? a->sub : "") : name);
	aobj_bool(um, "verified", a->verified);
	aobj_close(um);
	aobj_close(um);
	if (a->policy_hash) {   /* the connection's policy (see struct audit_agent) */
		aobj_open(um, "policy");
		aobj_str(um, "hash", a->policy_hash);
		aobj_str(um, "path", a->policy_path ? a->policy_path : "");
		aobj_close(um);
	}
}

/* Looks key up in slots; on a miss fills the next slot with what fill
 * writes into the cache's scratch objects. The members go into w either
 * way. false: not cached (no memory); the caller writes them itself. */
static bool w_cached_members(struct audit_w *w, struct audit_w_cache *c, struct agent_slot *slots,
			     unsigned nslots, unsigned *next, const struct audit_buf *key,
			     void (*fill)(struct audit_obj *, struct audit_obj *, const void *),
			     const void *arg)
{
	struct agent_slot *g;

	for (unsigned i = 0; i < nslots; i++) {
		g = &slots[i];
		if (g->key.len == key->len && (g->top.len || g->um.len) &&
		    memcmp(g->key.p, key->p, key->len) == 0)
			goto hit;
	}
	g = &slots[(*next)++ % nslots];
	aobj_reset(&c->t1);
	aobj_reset(&c->t2);
	fill(&c->t1, &c->t2, arg);
	g->key.len = g->top.len = g->um.len = 0;
	if (c->t1.bad || c->t2.bad || audit_buf_put(&g->key, key->p, key->len) ||
	    audit_buf_put(&g->top, c->t1.b.p, c->t1.b.len) ||
	    audit_buf_put(&g->um, c->t2.b.p, c->t2.b.len)) {
		g->key.len = g->top.len = g->um.len = 0;
		return false;
	}
hit:
	aobj_members(&w->top, g->top.p, g->top.len);
	aobj_members(&w->um, g->um.p, g->um.len);
	return true;
}

/*
 * A cache key, written into a buffer (out) or compared with a stored one
 * (p..e), by the same code: the hit test (one per event) builds no key,
 * and the layout is written down once. Fixed-size fields as they are;
 * strings as a length tag (SIZE_MAX for NULL: NULL and "" differ) and
 * their bytes. differs: the comparison failed, or the key grew past max.
 */
struct key_io {
	struct audit_buf *out;   /* writing; NULL: comparing */
	const char *p, *e;
	size_t max;
	bool differs;
};

static inline __attribute__((always_inline)) void key_bytes(struct key_io *k, const void *s, size_t n)
{
	if (k->differs)
		return;
	if (k->out)
		k->differs = k->out->len + n > k->max || audit_buf_put(k->out, s, n);
	else if ((size_t)(k->e - k->p) < n || memcmp(k->p, s, n))
		k->differs = true;
	else
		k->p += n;
}

/* s's first n bytes (s NULL: none, tagged SIZE_MAX). */
static inline __attribute__((always_inline)) void key_strn(struct key_io *k, const char *s, size_t n)
{
	size_t tag = s ? n : SIZE_MAX;

	key_bytes(k, &tag, sizeof(tag));
	if (s && n)
		key_bytes(k, s, n);
}

/* A C string: compared without a strlen() (the stored tag says how many
 * bytes; s must end right there). */
static inline __attribute__((always_inline)) void key_str(struct key_io *k, const char *s)
{
	size_t tag;

	if (k->out || k->differs) {
		key_strn(k, s, s ? strlen(s) : 0);
		return;
	}
	if ((size_t)(k->e - k->p) < sizeof(tag)) {
		k->differs = true;
		return;
	}
	memcpy(&tag, k->p, sizeof(tag));
	k->p += sizeof(tag);
	if (!s || tag == SIZE_MAX)
		k->differs = s || tag != SIZE_MAX;
	else if ((size_t)(k->e - k->p) < tag || (tag && strncmp(s, k->p, tag)) || s[tag])
		k->differs = true;   /* strncmp stopped at s's end, if shorter: s[tag] is in s */
	else
		k->p += tag;
}

/* true: written whole, or equal to the stored key (to its end). */
static inline __attribute__((always_inline)) bool key_done(const struct key_io *k)
{
	return !k->differs && (k->out || k->p == k->e);
}

static struct key_io key_writer(struct audit_buf *out, size_t max)
{
	out->len = 0;
	return (struct key_io){ .out = out, .max = max };
}

static struct key_io key_reader(const struct audit_buf *stored)
{
	return (struct key_io){ .p = stored->p, .e = stored->p + stored->len };
}

/* The agent cache's key: every input of w_agent_members(). */
static inline __attribute__((always_inline)) bool agent_key(struct key_io *k, const struct audit_agent *a)
{
	size_t cl = 0;

	key_bytes(k, &a->pid, sizeof(a->pid));
	key_bytes(k, &a->tid, sizeof(a->tid));
	key_bytes(k, &a->uid, sizeof(a->uid));
	key_bytes(k, &a->cgroup_id, sizeof(a->cgroup_id));
	key_bytes(k, a->verified ? "v" : "u", 1);
	key_str(k, a->name);
	key_str(k, a->cgroup);
	key_str(k, a->iss);
	key_str(k, a->sub);
	key_str(k, a->policy_hash);
	key_str(k, a->policy_path);
	/* comm: at most AG_COMM_LEN bytes, not always NUL-terminated */
	while (a->comm && cl < AG_COMM_LEN && a->comm[cl])
		cl++;
	key_strn(k, a->comm, cl);
	return key_done(k);
}

static void agent_fill(struct audit_obj *top, struct audit_obj *um, const void *arg)
{
	w_agent_members(top, um, arg);
}

/* The slot of slots whose stored key the inputs (arg) match, looked for
 * from the last hit's on; NULL when none. */
static struct agent_slot *slot_find(struct agent_slot *slots, unsigned nslots, unsigned *hit,
				    bool (*match)(const struct audit_buf *, const void *), const void *arg)
{
	for (unsigned i = 0; i < nslots; i++) {
		unsigned j = (*hit + i) % nslots;
		struct agent_slot *g = &slots[j];

		if ((g->top.len || g->um.len) && match(&g->key, arg)) {
			*hit = j;
			return g;
		}
	}
	return NULL;
}

/* agent_key() reading: with the key_io made here, the compiler drops its
 * writing branches */
static bool agent_match(const struct audit_buf *stored, const void *arg)
{
	struct key_io k = key_reader(stored);

	return agent_key(&k, arg);
}

void audit_w_agent(struct audit_w *w, const struct audit_agent *a)
{
	struct audit_w_cache *c = w_cache(w);
	struct agent_slot *g;

	w->own_policy = a->policy_hash != NULL;

	if (c && (g = slot_find(c->ag, AGENT_SLOTS, &c->ag_hit, agent_match, a))) {
		aobj_members(&w->top, g->top.p, g->top.len);
		aobj_members(&w->um, g->um.p, g->um.len);
		return;
	}
	struct key_io k = c ? key_writer(&c->key, AGENT_KEY_MAX) : (struct key_io){ 0 };

	if (c && agent_key(&k, a) &&
	    w_cached_members(w, c, c->ag, AGENT_SLOTS, &c->ag_next, &c->key, agent_fill, a))
		return;
	w_agent_members(&w->top, &w->um, a);
}

/* The same members as audit_add_verdict(). */
static void w_verdict_members(struct audit_obj *top, struct audit_obj *um, bool allowed,
			      bool would_deny, const char *rule, const char *reason)
{
	aobj_int(top, "status_id", allowed ? 1 : 2);
	aobj_str(top, "status", allowed ? "Success" : "Failure");
	aobj_int(top, "action_id", allowed ? 1 : 2);
	aobj_str(top, "action", allowed ? "Allowed" : "Denied");
	aobj_int(top, "disposition_id", allowed ? 1 : 2);
	aobj_str(top, "disposition", allowed ? "Allowed" : "Blocked");
	if (reason && !allowed)
		aobj_str(top, "status_detail", reason);
	aobj_str(um, "verdict", allowed ? (would_deny ? "would_deny" : "allow") : "deny");
	aobj_str(um, "rule", rule);
	aobj_str(um, "reason", reason);
}

struct verdict_args {
	bool allowed, would_deny;
	const char *rule, *reason;
};

static void verdict_fill(struct audit_obj *top, struct audit_obj *um, const void *arg)
{
	const struct verdict_args *v = arg;

	w_verdict_members(top, um, v->allowed, v->would_deny, v->rule, v->reason);
}

/* The verdict cache's key: the two flags, the rule, the reason. */
static inline __attribute__((always_inline)) bool verdict_key(struct key_io *k, const void *arg)
{
	const struct verdict_args *v = arg;
	const char f[2] = { v->allowed, v->would_deny };

	key_bytes(k, f, 2);
	key_str(k, v->rule);
	key_str(k, v->reason);
	return key_done(k);
}

static bool verdict_match(const struct audit_buf *stored, const void *arg)
{
	struct key_io k = key_reader(stored);

	return verdict_key(&k, arg);
}

void audit_w_verdict(struct audit_w *w, bool allowed, bool would_deny, const char *rule,
		     const char *reason)
{
	struct audit_w_cache *c = w_cache(w);
	struct verdict_args v = { allowed, would_deny, rule, reason };
	struct agent_slot *g;

	if (c && (g = slot_find(c->vd, VERDICT_SLOTS, &c->vd_hit, verdict_match, &v))) {
		aobj_members(&w->top, g->top.p, g->top.len);
		aobj_members(&w->um, g->um.p, g->um.len);
		return;
	}
	struct key_io k = c ? key_writer(&c->key, VERDICT_KEY_MAX) : (struct key_io){ 0 };

	if (c && verdict_key(&k, &v) &&
	    w_cached_members(w, c, c->vd, VERDICT_SLOTS, &c->vd_next, &c->key, verdict_fill, &v))
		return;
	w_verdict_members(&w->top, &w->um, allowed, would_deny, rule, reason);
}

/* Closes an event written by a writer: b holds its own members (from the
 * '{'), um those of its unmapped object; adds unmapped.policy, time and
 * metadata to b, then spools it. */
static int emit_parts_locked(struct audit_buf *b, const char *um, size_t umlen, uint64_t time_ms,
			     bool own_policy)
{
	uint64_t seq = A.seq + 1;
	char uid[37];

	uuid7(uid);
	/* appended piece by piece: snprintf was a tenth of the emit path */
	static const char md1[] = "},\"time\":", md2[] = ",\"metadata\":{\"version\":\"" OCSF_VERSION
		"\",\"uid\":\"", md3[] = "\",\"sequence\":", md4[] = ",\"prev_hash\":\"",
		md5[] = "\",\"log_name\":\"agentgate\",\"product\":{\"name\":\"agentgate\","
		"\"vendor_name\":\"agentgate\",\"version\":\"" AG_VERSION "\"}}}";
	if (audit_buf_put(b, ",\"unmapped\":{", 13) ||
	    (umlen && audit_buf_put(b, um, umlen)) ||
	    (!own_policy && A.polfrag.len && ((umlen && audit_buf_put(b, ",", 1)) ||
			       audit_buf_put(b, A.polfrag.p, A.polfrag.len))) ||
	    audit_buf_put(b, md1, sizeof(md1) - 1) || audit_buf_int(b, (long long)time_ms) ||
	    audit_buf_put(b, md2, sizeof(md2) - 1) || audit_buf_put(b, uid, 36) ||
	    audit_buf_put(b, md3, sizeof(md3) - 1) || audit_buf_int(b, (long long)seq) ||
	    audit_buf_put(b, md4, sizeof(md4) - 1) || audit_buf_put(b, A.last_hash, AUDIT_HASH_HEX - 1) ||
	    audit_buf_put(b, md5, sizeof(md5) - 1) || audit_buf_reserve(b, 1)) {
		ag_log(LOG_LVL_ERR, "audit: out of memory, an event was not recorded");
		drop_locked(-ENOMEM);
		return -ENOMEM;
	}
	b->p[b->len] = 0;
	return spool_line_locked(b->p, b->len, seq);
}

static bool w_ok(const struct audit_w *w)
{
	if (w->top.bad || w->um.bad || w->top.depth || w->um.depth) {
		ag_log(LOG_LVL_ERR, "audit: out of memory, an event was not recorded");
		return false;
	}
	return true;
}

static void emitted_locked(int err)
{
	if (err == 0 && ++A.cp_pending >= A.cp_every && A.key)
		checkpoint_locked(false);
}

/*
 * Deferred commits (audit_defer_begin): a worker thread queues the events of
 * one pass over its ready sockets and hands them on after the pass, once its
 * answers are on their way: the agent does not wait for the emit path, and
 * one lock round serves the whole batch. The queue is bounded; past it the
 * batch is handed on at once. Each record: time (uint64, ms), toplen, umlen
 * (uint32), then the bytes.
 *
 * The pending queue (P): once the spool thread runs, writer events are not
 * stamped by the thread that built them. They wait in P, in commit order,
 * and the spool thread stamps them (sequence, uuid, prev_hash), hashes
 * them into the chain and spools them at its next tick, just before it
 * writes its buffer, which it did at that tick before anyway: an event
 * reaches the spool file no later than it did. A worker's cost per event is
 * building it and two copies; the SHA-256 of every line, the metadata, the
 * copy into the spool and the ring for `audit tail` run on the spool
 * thread. One queue for every thread, so sequence order is commit order;
 * audit_emit() (jansson events) drains it first, so a thread's events keep
 * their order. Bounded: past PENDING_MAX_BYTES the committing thread drains
 * it itself.
 */
#define DEFER_MAX_BYTES (256u << 10)
#define PENDING_MAX_BYTES (8u << 20)
#define REC_HDR 16
#define REC_OWN_POLICY 0x80000000u   /* in the unmapped length: the event names its policy */
static __thread struct {
	bool on;
	struct audit_buf q;
	unsigned n;
} D;

/* Stamps and spools the records in p[0..len), at most max of them (0: all).
 * Returns the bytes done. A.lock held. */
static size_t emit_records_locked(const char *p, size_t len, unsigned max)
{
	size_t off = 0;
	unsigned n = 0;

	if (!len)
		return 0;
	if (A.dropped && A.spool && spool_has_room(A.spool, A.resume_room))
		loss_event_locked(false);
	while (off + REC_HDR <= len && (!max || n++ < max)) {
		uint64_t t;
		uint32_t tl, ul;

		memcpy(&t, p + off, 8);
		memcpy(&tl, p + off + 8, 4);
		memcpy(&ul, p + off + 12, 4);
		off += REC_HDR;
		bool own = ul & REC_OWN_POLICY;
		ul &= ~REC_OWN_POLICY;
		A.line.len = 0;
		emitted_locked(audit_buf_put(&A.line, p + off, tl) ? -ENOMEM :
			       emit_parts_locked(&A.line, p + off + tl, ul, t, own));
		off += (size_t)tl + ul;
	}
	return off < len && len - off < REC_HDR ? len : off;   /* a torn tail: never written */
}

/*
 * The batch in flight (F): the queue the spool thread took from P and
 * stamps STAMP_CHUNK records at a time, letting go of A.lock between
 * chunks. A tick stamps some 700 events at 70,000 a second (1.2 ms); in
 * one piece, as an urgent thread no wakeup preempted (before its slice
 * was cut to URGENT_SLICE_NS), it held a CPU while the agent's traffic
 * waited behind it, and that wait set wrk's p99 (1.6 ms, against 0.4 ms
 * without the events). Whoever drains
 * (a worker past PENDING_MAX_BYTES, audit_emit) stamps the rest of F
 * before anything newer, so sequence order stays commit order. Under
 * A.lock; since_ms is also read by audit_urgency_tick() without it.
 */
#define STAMP_CHUNK 32   /* ~50 us */
static struct {
	struct audit_buf b;
	size_t off;
	_Atomic uint64_t since_ms;   /* P.since_ms when taken; 0: none */
} F;

/* Takes P's queue as F unless F still holds records. A.lock held. false:
 * nothing to stamp. */
static bool take_locked(void)
{
	if (F.off < F.b.len)
		return true;
	pthread_mutex_lock(&P.mu);
	if (!P.q.len) {
		pthread_mutex_unlock(&P.mu);
		return false;
	}
	F.b = P.q;
	F.off = 0;
	atomic_store(&F.since_ms, P.since_ms ? P.since_ms : now_ns_mono() / 1000000);
	P.q = P.spare;
	P.q.len = 0;
	P.since_ms = 0;
	P.spare = (struct audit_buf){ 0 };
	pthread_mutex_unlock(&P.mu);
	return true;
}

/* Stamps up to max records of F (0: all). A.lock held. true: F is done,
 * and its memory is P's spare again. */
static bool stamp_locked(unsigned max)
{
	struct audit_buf b;

	F.off += emit_records_locked(F.b.p + F.off, F.b.len - F.off, max);
	if (F.off < F.b.len)
		return false;
	b = F.b;
	F.b = (struct audit_buf){ 0 };
	F.off = 0;
	atomic_store(&F.since_ms, 0);
	b.len = 0;
	if (b.cap > 2 * PENDING_MAX_BYTES)   /* after a burst: give the memory back */
		audit_buf_free(&b);
	pthread_mutex_lock(&P.mu);
	if (!P.spare.p)
		P.spare = b;
	else
		audit_buf_free(&b);
	pthread_mutex_unlock(&P.mu);
	return true;
}

/* Everything in F, then in P, into the spool, in order. A.lock held. */
static void drain_locked(void)
{
	for (int i = 0; i < 2 && take_locked(); i++)
		stamp_locked(0);
}

static void drain(void)
{
	pthread_mutex_lock(&A.lock);
	drain_locked();
	pthread_mutex_unlock(&A.lock);
}

/* The spool thread's tick. */
static void audit_tick(void *arg)
{
	size_t n;

	(void)arg;
	if (!__atomic_load_n(&U.spool_tid, __ATOMIC_ACQUIRE))
		__atomic_store_n(&U.spool_tid, gettid(), __ATOMIC_RELEASE);
	/* One batch per tick: a drainer may finish F between two chunks,
	 * and taking P again then could go on forever (review: an
	 * audit_emit per chunk), with the spool's own work (writing,
	 * syncing, sealing) waiting behind it. A.lock is let go between
	 * chunks, for a drainer or audit_emit; the CPU is not. This thread's
	 * class already gives a woken worker the CPU: at SCHED_IDLE at once,
	 * urgent after at most URGENT_SLICE_NS (util.c). A sched_yield()
	 * per chunk, as there was, was a context switch every 32 events on
	 * a busy host: 14% of this thread's time at pgbench -S -c 8 on 2
	 * CPUs, and without it the thread's CPU per event fell from 3.95 to
	 * 3.5 us while wrk's p99 through the http module stayed (1.98 ms
	 * median of 5 without, 2.04 with). */
	for (bool first = true;; first = false) {
		bool more;

		pthread_mutex_lock(&A.lock);
		more = (first ? take_locked() : F.off < F.b.len) && !stamp_locked(STAMP_CHUNK);
		pthread_mutex_unlock(&A.lock);
		if (!more)
			break;
	}
	pthread_mutex_lock(&P.mu);
	n = P.q.len;
	pthread_mutex_unlock(&P.mu);
	if (n < SPOOL_CALM_BYTES)
		urgency(&U.spool_urgent, 0, false);
}

/*
 * From the workers' 200 ms tick. On a host whose CPUs are all busy an idle
 * thread may wait long for its turn, and even a few events would sit in
 * memory (the pending queue) or in the spool (a sink's backlog) for as
 * long: events pending for URGENT_AGE_MS make the spool thread urgent. A
 * sink is made urgent when it is SINK_URGENT_EVENTS behind, or when it
 * acknowledged nothing since the last tick while it had events to send.
 */
void audit_urgency_tick(void)
{
	static _Atomic uint64_t last_ms;
	/* last before the clock: a tick another worker stamps after the
	 * load is newer than last, so the exchange below fails, where a
	 * clock read first could be older than it (now - last wrapping, and
	 * the tick run twice) */
	uint64_t last = atomic_load(&last_ms), now = now_ns_mono() / 1000000, since, seq;
	pid_t tid = __atomic_load_n(&U.spool_tid, __ATOMIC_ACQUIRE);

	if (now - last < 200 || !atomic_compare_exchange_strong(&last_ms, &last, now))
		return;   /* one worker per tick */
	if (!(since = atomic_load(&F.since_ms))) {   /* F is older than P */
		pthread_mutex_lock(&P.mu);
		since = P.since_ms;
		pthread_mutex_unlock(&P.mu);
	}
	/* since may be newer than now (queued meanwhile): not pending long */
	if (tid && since && now > since && now - since >= URGENT_AGE_MS)
		urgency(&U.spool_urgent, tid, true);
	pthread_mutex_lock(&A.lock);
	seq = A.seq;
	pthread_mutex_unlock(&A.lock);
	/* a small spool (spool.max_bytes) fills before a sink is
	 * SINK_URGENT_EVENTS behind: half full is behind too (review) */
	bool filling = A.nsinks && A.spool && !spool_has_room(A.spool, A.spool_half);

	for (int i = 0; i < A.nsinks; i++) {
		struct sink_rt *k = &A.sinks[i];
		uint64_t acked = atomic_load(&k->acked);

		if ((tid = atomic_load(&k->tid)) && seq > acked &&
		    (acked == k->tick_acked || seq - acked > SINK_URGENT_EVENTS || filling))
			urgency(&k->urgent, tid, true);
		k->tick_acked = acked;
	}
}

void audit_defer_begin(void)
{
	D.on = true;
}

void audit_defer_flush(void)
{
	if (!D.n)
		return;
	if (atomic_load(&P.on)) {
		bool over = false;
		int bad;

		bool behind = false;

		pthread_mutex_lock(&P.mu);
		if (!P.q.len)
			P.since_ms = now_ns_mono() / 1000000;
		if (!(bad = audit_buf_put(&P.q, D.q.p, D.q.len))) {
			over = P.q.len >= PENDING_MAX_BYTES;
			behind = P.q.len >= SPOOL_URGENT_BYTES;
		}
		pthread_mutex_unlock(&P.mu);
		if (!bad) {
			pid_t tid = __atomic_load_n(&U.spool_tid, __ATOMIC_ACQUIRE);

			D.q.len = 0;
			D.n = 0;
			if (behind && tid)
				urgency(&U.spool_urgent, tid, true);
			if (over) {
				atomic_fetch_add(&U.worker_drains, 1);
				drain();
			}
			goto out;
		}
		/* no memory for the queue: stamped here, after what is queued */
	}
	pthread_mutex_lock(&A.lock);
	drain_locked();
	emit_records_locked(D.q.p, D.q.len, 0);
	pthread_mutex_unlock(&A.lock);
	D.q.len = 0;
	D.n = 0;
out:
	if (D.q.cap > 4 * DEFER_MAX_BYTES)   /* one huge event: give the memory back */
		audit_buf_free(&D.q);
}

static void defer_flush_first(void)
{
	if (D.n)
		audit_defer_flush();
}

void audit_defer_end(void)
{
	audit_defer_flush();
	audit_buf_free(&D.q);
	D.on = false;
}

static bool defer(struct audit_w *w)
{
	uint32_t tl = (uint32_t)w->top.b.len, ul = (uint32_t)w->um.b.len;
	uint32_t ulf = ul | (w->own_policy ? REC_OWN_POLICY : 0);
	uint64_t t = now_ms_realtime();   /* the event's time: when it was committed */

	if (w->top.b.len >= REC_OWN_POLICY || w->um.b.len >= REC_OWN_POLICY ||
	    audit_buf_reserve(&D.q, REC_HDR + (size_t)tl + ul))
		return false;   /* committed at once */
	memcpy(D.q.p + D.q.len, &t, 8);
	memcpy(D.q.p + D.q.len + 8, &tl, 4);
	memcpy(D.q.p + D.q.len + 12, &ulf, 4);
	memcpy(D.q.p + D.q.len + REC_HDR, w->top.b.p, tl);
	if (ul)
		memcpy(D.q.p + D.q.len + REC_HDR + tl, w->um.b.p, ul);
	D.q.len += REC_HDR + (size_t)tl + ul;
	D.n++;
	return true;
}

void audit_commit(struct audit_w *w)
{
	if (w == &dead_w) {
		ag_log(LOG_LVL_ERR, "audit: out of memory, an event was not recorded");
		return;
	}
	if (!w_ok(w)) {
		w_release(w);
		return;
	}
	if ((D.on || atomic_load(&P.on)) && defer(w)) {
		w_release(w);
		if (!D.on || D.q.len >= DEFER_MAX_BYTES)
			audit_defer_flush();
		return;
	}
	defer_flush_first();
	pthread_mutex_lock(&A.lock);
	drain_locked();
	if (A.dropped && A.spool && spool_has_room(A.spool, A.resume_room))
		loss_event_locked(false);
	emitted_locked(emit_parts_locked(&w->top.b, w->um.b.p, w->um.b.len, now_ms_realtime(), w->own_policy));
	pthread_mutex_unlock(&A.lock);
	w_release(w);
}

void audit_discard(struct audit_w *w)
{
	w_release(w);
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

uint64_t audit_spool_syncs(void)
{
	return A.spool ? spool_sync_count(A.spool) : 0;
}

uint64_t audit_sequence(void)
{
	uint64_t s;

	pthread_mutex_lock(&A.lock);
	s = A.seq;
	pthread_mutex_unlock(&A.lock);
	return s;
}
