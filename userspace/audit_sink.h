/* SPDX-License-Identifier: Apache-2.0 */
/*
 * audit_sink: how the audit pipeline talks to one destination.
 *
 * Each configured sink runs on its own thread (audit.c): it reads batches
 * from the spool at its cursor, hands them to ops->send(), and advances the
 * cursor over the leading events the sink acknowledged or dead-lettered.
 * What is left is sent again after a backoff (100 ms doubling to 5 s, with
 * jitter), so a sink sees each event at least once; duplicates are limited
 * to one batch. Decisions never wait on a sink: the enforcer only appends to
 * the spool.
 *
 * One file per sink type implements the ops:
 *   audit_sink_file.c    file (JSON lines, rotation, reopen on SIGHUP, 0600)
 *   audit_sink_syslog.c  syslog (RFC 5424; RFC 6587 octet counting over tcp
 *                        or tls; relp via librelp)
 *   audit_sink_http.c    splunk_hec, elasticsearch, webhook (libcurl)
 */
#ifndef AGENTGATE_AUDIT_SINK_H
#define AGENTGATE_AUDIT_SINK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "policy.h"

/* Per-event outcome of a send. */
enum sink_status {
	SINK_ACK = 0,    /* the destination has it */
	SINK_RETRY,      /* not confirmed: send again */
	SINK_DEAD,       /* refused permanently (4xx): goes to the dead-letter file */
};

struct sink_batch {
	uint64_t first;        /* sequence of line[0]; the rest follow without gaps */
	size_t n;
	const char **line;     /* compact OCSF JSON, no trailing newline */
	const size_t *len;
	uint8_t *st;           /* send() fills one enum sink_status per line (preset SINK_RETRY) */
	/* More events wait right behind this batch (a backlog): a sink
	 * with ops->sync may leave what it wrote undurable and report it
	 * SINK_ACK; the thread acknowledges it to the spool only after a
	 * later send without more, or sync(), succeeded. */
	bool more;
	/* send() sets it when it made events durable on the way (the file
	 * sink syncs a file before renaming it away in a rotation): the last
	 * such sequence, whatever send() returns. The thread acknowledges up
	 * to it, so a failure after it does not write those events again.
	 * 0: none. */
	uint64_t durable;
	char why[256];         /* send() explains a failure or a SINK_DEAD here */
};

struct audit_sink {
	const struct audit_sink_ops *ops;
	const struct policy_sink *cfg;
	char id[48];           /* stable across restarts: names the cursor file */
	char desc[160];        /* for logs: type and destination, never a token */
	void *priv;
	atomic_bool reopen;    /* SIGHUP: ops->reopen() on the sink's thread */
};

struct audit_sink_ops {
	const char *type;
	/* Reads the configuration (token files...), no network. 0 or -errno
	 * (refuses to start the enforcer). */
	int (*init)(struct audit_sink *s);
	/* Delivers b. Returns 0 with b->st filled, or -errno when nothing was
	 * confirmed (all retried; the connection is rebuilt next time). */
	int (*send)(struct audit_sink *s, struct sink_batch *b);
	/* Optional: the last sequence the destination is known to hold already
	 * (file: read from the file's tail) and that event's metadata.uid, to
	 * skip re-sending after a crash; the caller checks the uid against the
	 * spool. Returns cursor when unknown. */
	uint64_t (*resume)(struct audit_sink *s, uint64_t cursor, char uid[40]);
	/* Optional: the lines the destination holds after sequence after, in
	 * order from after + 1, passed to fn (which stops the walk by
	 * returning non-zero); for a spool that lost its tail in a power cut
	 * (it skips its fdatasync while the sinks keep up, and a file sink
	 * syncs its own file), so that its sequence numbers are not used
	 * again for other events. Returns how many lines fn took, or -errno. */
	long (*adopt)(struct audit_sink *s, uint64_t after,
		      int (*fn)(void *arg, uint64_t seq, const char *line, size_t len), void *arg);
	/* Optional: makes durable what sends with b->more wrote (the file
	 * sink's fdatasync, one for several batches while it catches up on a
	 * backlog). 0 or -errno. */
	int (*sync)(struct audit_sink *s);
	/* Optional: reopen files / reconnect (SIGHUP). */
	void (*reopen)(struct audit_sink *s);
	void (*fini)(struct audit_sink *s);
	size_t batch_max;      /* events per send (0: default) */
	/* Sends start at most this often (0: as soon as events are there):
	 * for sinks whose every send costs the same whatever its size (the
	 * file sink's fdatasync), events wait up to this long to share one. */
	uint32_t min_interval_ms;
};

extern const struct audit_sink_ops audit_sink_file_ops;
extern const struct audit_sink_ops audit_sink_syslog_ops;
extern const struct audit_sink_ops audit_sink_hec_ops;
extern const struct audit_sink_ops audit_sink_es_ops;
extern const struct audit_sink_ops audit_sink_webhook_ops;

/* The ops for a sink type, or NULL when this build has none. */
const struct audit_sink_ops *audit_sink_ops_for(enum policy_sink_type t);
/* true once audit_close() asked the sink threads to stop: long waits in
 * send() (connects, HTTP) give up early. */
bool audit_sink_stopping(void);

#endif
