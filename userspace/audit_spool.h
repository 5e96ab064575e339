/* SPDX-License-Identifier: Apache-2.0 */
/*
 * audit_spool: the on-disk queue every audit event enters before any sink
 * sees it.
 *
 * Layout of the spool directory (mode 0700, files 0600):
 *   seg-<first seq, 20 digits>.log   the active segment: JSON lines as built
 *   seg-<first seq>.z                a sealed segment: the same lines, zlib
 *   cursor-<sink id>                 a sink's last acknowledged sequence
 *   dead-letter.jsonl                events a sink refused permanently
 *
 * Line i of a segment carries sequence first + i: metadata.sequence is
 * assigned by the caller (audit.c) just before spool_append() and is never
 * reused, so after a restart spool_open() reports the last sequence on disk
 * and numbering continues from it. Appends are buffered and written by the
 * spool thread at least every SPOOL_FLUSH_MS (or when the buffer fills);
 * fdatasync is grouped (every SPOOL_SYNC_MS or SPOOL_SYNC_EVENTS), and
 * skipped while every reader has acknowledged all that was written by the
 * previous sync point (the sinks hold it; see spool_thread). Lines a
 * SIGKILL catches in the buffer were never seen by a sink; their sequence
 * numbers are handed out again by the next run (no gap, no duplicate on any
 * sink).
 *
 * A closed segment every reader has acknowledged is deleted instead of
 * sealed (only the newest closed one stays, raw, until a newer one closes);
 * one a reader still needs is sealed once the reader has been behind it
 * for SPOOL_SEAL_GRACE_MS (an outage, not a burst the sink is catching up
 * on: compressing what is read a moment later is CPU for nothing), or at
 * once while the spool is over a quarter full (room matters then).
 * The spool is bounded by max_bytes (sealed segments count compressed).
 * When an append does not fit, sealed segments every reader has acknowledged
 * are deleted; if it still does not fit, spool_append() returns -ENOSPC and
 * the caller applies on_full. Readers (one per sink, each on its own thread)
 * read batches from their position onward and report acknowledgements with
 * spool_reader_ack(); nothing is deleted before the slowest reader has
 * acknowledged it.
 *
 * Thread safety: every function may be called from any thread; spool_append
 * never blocks on a reader.
 */
#ifndef AGENTGATE_AUDIT_SPOOL_H
#define AGENTGATE_AUDIT_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SPOOL_DEFAULT_MAX_BYTES (256ull << 20)
#define SPOOL_SEG_MAX (4u << 20)     /* raw bytes per segment (smaller when max_bytes is small) */
#define SPOOL_FLUSH_MS 10
#define SPOOL_SYNC_MS 100
#define SPOOL_SYNC_EVENTS 4096
#define SPOOL_SEAL_GRACE_MS 10000  /* a closed segment a sink still needs is sealed after this */
#define SPOOL_MAX_READERS 16

struct spool;
struct spool_reader;

/* A batch handed to a reader: n lines (without '\n') with consecutive
 * sequences from first. Points into the reader's memory: valid until the
 * reader's next spool_read(). */
struct spool_batch {
	uint64_t first;
	size_t n;
	const char **line;
	size_t *len;
};

/* Opens (creating) the spool in dir, recovering after a crash: a torn last
 * line is cut, half-sealed segments are finished. *last_seq receives the
 * last sequence on disk (0: empty). 0 or -errno;
 * *out owned by the caller (spool_close). */
int spool_open(struct spool **out, const char *dir, uint64_t max_bytes, uint64_t *last_seq);
/* Starts the spool thread (writes, syncs, seals, deletes acknowledged
 * segments). Call after the readers are registered: nothing is deleted
 * before. */
int spool_start(struct spool *s);
/* fn(arg) runs on the spool thread at every tick (at least every
 * SPOOL_FLUSH_MS), before the buffer is written, without the spool's lock:
 * audit.c hands its queued events to spool_append() there. Set before
 * spool_start(). */
void spool_set_tick(struct spool *s, void (*fn)(void *), void *arg);
/* Another seal grace than SPOOL_SEAL_GRACE_MS (tests). */
void spool_set_seal_grace(struct spool *s, uint64_t ms);
/* Writes what is buffered, syncs, stops the thread, frees. NULL-safe. */
void spool_close(struct spool *s);

/* Appends one line (len bytes, no '\n') whose metadata.sequence is seq,
 * which must be the last sequence + 1. 0, or -ENOSPC when it does not fit
 * (nothing appended), or -errno from a failed write. */
int spool_append(struct spool *s, uint64_t seq, const char *line, size_t len);
/* true if len more bytes would fit now (after deleting what every reader
 * acknowledged). */
bool spool_has_room(struct spool *s, size_t len);
/* Bytes on disk plus buffered. */
uint64_t spool_bytes(struct spool *s);
/* Writes the buffer now and wakes readers (tests, close). sync: fdatasync too. */
int spool_flush(struct spool *s, bool sync);

/* Registers a reader named id (letters, digits, '-', '_'): its cursor is
 * loaded from cursor-<id>, or starts before the oldest retained event.
 * 0 or -errno. */
int spool_reader_open(struct spool *s, const char *id, struct spool_reader **out);
/* The reader's sink keeps a durable copy of what it acknowledged that the
 * next start can take back (the file sink). The spool's periodic
 * fdatasync is skipped only while every reader is such a one, and has
 * acknowledged all that was written by the previous sync point. */
void spool_reader_keeps_copy(struct spool_reader *r);
/* Last acknowledged sequence of this reader. */
/* Events appended (written or still buffered) that the reader has not
 * read yet. The reader's thread only. */
uint64_t spool_reader_backlog(struct spool_reader *r);
/* Bytes the reader has read from unsealed segment files so far (not
 * counting inflated sealed ones): what a read window costs. */
uint64_t spool_reader_bytes_read(const struct spool_reader *r);
uint64_t spool_reader_cursor(struct spool_reader *r);
/* Moves the read position to after seq (>= cursor): the next batch starts
 * at seq + 1. Used to skip what a sink already holds, or to re-read after a
 * failure (seq = cursor). */
void spool_reader_seek(struct spool_reader *r, uint64_t seq);
/* Up to max_n lines / max_bytes (at least one line) from the read position.
 * Waits up to wait_ms for data. Returns the number of lines (0: nothing
 * new), or -errno. */
int spool_read(struct spool_reader *r, struct spool_batch *b, size_t max_n, size_t max_bytes,
	       int wait_ms);
/* Sequences a reader found missing from a closed segment (its file ends
 * before the next segment begins: a power cut took its unsynced tail, or
 * the file was damaged). Readers go on after them; each such segment is
 * counted once per run. Returns how many were counted since the last call
 * (0: none), with the lowest and highest in *first and *last, and forgets
 * them; spool_put_lost() gives them back (a report that could not be
 * recorded). */
uint64_t spool_take_lost(struct spool *s, uint64_t *first, uint64_t *last);
void spool_put_lost(struct spool *s, uint64_t n, uint64_t first, uint64_t last);
/* Everything up to and including seq is acknowledged: persisted in the
 * cursor file (written, not synced: a SIGKILL keeps it, a power loss may
 * resend a batch). 0 or -errno. */
int spool_reader_ack(struct spool_reader *r, uint64_t seq);
/*
 * Appends the n lines to dead-letter.jsonl (0600), each with the reason,
 * and makes them durable (fdatasync, and the directory's fsync when the
 * file is new or was rotated) before it returns. 0 or -errno; *done says
 * how many of the lines, from the first, are on disk either way (a
 * rotation syncs the file it renames away). What is not is cut back out of
 * the file: the caller keeps those events, and dead-letters them again.
 * The file holds at most an eighth of max_bytes (at least 64 KiB, or one
 * longer line): past that it is renamed dead-letter.jsonl.1 (replacing the
 * one before, whose loss is logged and counted) and a new one begun, so
 * dead letters take at most a quarter of max_bytes besides the spool.
 */
int spool_dead_letter(struct spool *s, const char *sink, const char *why, const char *const *line,
		      const size_t *len, size_t n, size_t *done);
/* Events dead-lettered since the process started, and dead letters the
 * rotation discarded since (those written by earlier runs included), for
 * status. */
uint64_t spool_dead_lettered(void);
uint64_t spool_dead_letters_discarded(void);
/* Wakes readers blocked in spool_read (close, reopen). */
void spool_wake(struct spool *s);
/* Wakes readers and keeps them from waiting again (the sinks stop). */
void spool_readers_quit(struct spool *s);
/* The last line in the spool (malloc'ed, no '\n'; caller frees), for the
 * hash chain to continue from it after a restart. 0, -ENOENT when empty, or
 * -errno. */
int spool_last_line(struct spool *s, char **out, size_t *len);
/* fdatasync calls the spool thread made on the active segment (tests). */
uint64_t spool_sync_count(struct spool *s);
/* fdatasync calls the spool thread made on closed segments, for the lines
 * a segment roll left unsynced in them (tests). */
uint64_t spool_closed_sync_count(struct spool *s);
/* The spool directory. */
const char *spool_dir(const struct spool *s);

#endif
