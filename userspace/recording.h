/* SPDX-License-Identifier: Apache-2.0 */
/*
 * recording: what each proxied session carried, for `agentgate replay`.
 *
 * Enabled by audit.recording {dir, max_bytes, max_age} in the policy
 * (audit_open() calls rec_configure()). Each session is two files in dir:
 *   <UTC start>-<connection uid>.rec   one zlib stream of the bytes, in order
 *                                      (flushed with Z_SYNC_FLUSH after every
 *                                      write: a crash keeps what was written)
 *   <UTC start>-<connection uid>.idx   "# {json metadata}" then one line per
 *                                      write: "<unix µs> <u|d> <offset> <len>"
 * A write is what one direction carried while the worker handled one event
 * of the connection (up to 8 KiB; rec_sync()), so a pipeline of small
 * messages is one write. A session stops being recorded at an eighth of
 * max_bytes, and every open session stops while the open ones together
 * hold max_bytes (a "# truncated" line says so).
 * (u: agent -> upstream, d: upstream -> agent; offset into the inflated
 * stream). The connection uid is the socket cookie that the session's
 * Network Activity events carry as connection_info.uid. Files are 0600 in a
 * 0700 directory. Retention: the oldest sessions are deleted while the
 * directory holds more than max_bytes or sessions older than max_age (checked
 * at most every few seconds, when sessions open).
 *
 * Masking: the TCP relay (conn.c) records raw bytes through rec_relay(). A
 * protocol module that masks must never let raw bytes be recorded: in its
 * ops->start it calls rec_open(c) and rec_claim(c->rec), after which
 * rec_relay() records nothing for that connection and the module calls
 * rec_write() itself with the masked (or parsed) form of what it forwards.
 *
 * Thread safety: a struct rec belongs to the connection's worker thread.
 */
#ifndef AGENTGATE_RECORDING_H
#define AGENTGATE_RECORDING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REC_DEFAULT_MAX_BYTES (1ull << 30)
#define REC_DEFAULT_MAX_AGE_MS (7u * 24 * 3600 * 1000)

struct conn;
struct rec;

/* Turns recording on into dir (created 0700), or off when dir is NULL. 0 or
 * -errno. */
int rec_configure(const char *dir, uint64_t max_bytes, uint32_t max_age_ms);
bool rec_enabled(void);

/* Starts recording connection c (its agent, target and endpoints go into
 * the index header). NULL when recording is off or the files cannot be
 * created (logged once per failure streak): the connection is unaffected. */
struct rec *rec_open(struct conn *c);
/* Records len bytes that went in direction dir (0: agent -> upstream, 1:
 * upstream -> agent). NULL-safe. */
void rec_write(struct rec *r, int dir, const void *buf, size_t len);
/* Writes what rec_write() gathered. The connection's worker calls it once
 * it has handled an event of the connection. NULL-safe. */
void rec_sync(struct rec *r);
/* The module records (masked) data itself from now on. NULL-safe. */
void rec_claim(struct rec *r);
/* The relay's hook: opens the recording on first use (*rp), then records
 * unless a module claimed it. */
void rec_relay(struct rec **rp, struct conn *c, int dir, const void *buf, size_t len);
/* Flushes and closes. NULL-safe. */
void rec_close(struct rec *r);
/* The workers' tick: a retention sweep when none ran for half max_age, or
 * REC_IDLE_SWEEP_MS if that is shorter. */
#define REC_IDLE_SWEEP_MS 60000
void rec_tick(void);

#endif
