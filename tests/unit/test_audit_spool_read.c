/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for audit_spool.c's readers: lines appended to the active
 * segment after the reader started on it, lines longer than a segment, batch limits by count and by bytes (a batch never cuts a line,
 * consecutive lines lie one after the other with their '\n' between, as
 * the file sink writes them), seeking back over a segment already read,
 * and several segments.
 */
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <stdint.h>

#include "audit_spool.h"
#include "spool_start.h"
#include "unit.h"
#include "util.h"

static char dir[256];

static void fresh_dir(void)
{
	char cmd[300];

	snprintf(dir, sizeof(dir), "/tmp/agentgate-spoolrd-XXXXXX");
	if (!mkdtemp(dir))
		abort();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	(void)!system(cmd);   /* spool_open creates it (0700) */
}

static void rm_dir(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	(void)!system(cmd);
}

/* Line seq: its sequence, then a pad of pad_for(seq) bytes. */
static size_t pad_for(uint64_t seq)
{
	return seq % 97 == 0 ? 30000 : seq * 131 % 1500;   /* some longer than a segment */
}

static size_t line_for(uint64_t seq, char *buf, size_t n)
{
	size_t pad = pad_for(seq);
	int k = snprintf(buf, n, "{\"sequence\":%" PRIu64 ",\"pad\":\"", seq);

	if ((size_t)k + pad + 2 >= n)
		abort();
	memset(buf + k, 'a' + seq % 26, pad);
	memcpy(buf + k + pad, "\"}", 2);
	return k + pad + 2;
}

static char line_buf[40000];

static int append_range(struct spool *s, uint64_t from, uint64_t to)
{
	for (uint64_t q = from; q < to; q++) {
		size_t len = line_for(q, line_buf, sizeof(line_buf));
		int err = spool_append(s, q, line_buf, len);

		if (err)
			return err;
	}
	return 0;
}

/* Reads until nothing new, in batches of at most max_n lines / max_bytes;
 * checks each line, the batch limits, and that the lines of a batch lie
 * one after the other with a '\n' between. Returns the next sequence. */
static uint64_t read_check(struct spool_reader *r, uint64_t next, size_t max_n, size_t max_bytes,
			   int *bad)
{
	struct spool_batch b;
	char want[40000];
	int n;

	while ((n = spool_read(r, &b, max_n, max_bytes, 20)) > 0) {
		size_t bytes = 0;

		if ((size_t)n > max_n || b.first != next)
			(*bad)++;
		for (int i = 0; i < n; i++) {
			size_t len = line_for(next, want, sizeof(want));

			if (b.len[i] != len || memcmp(b.line[i], want, len)) {
				if (!*bad)
					fprintf(stderr, "  mismatch at %" PRIu64 "\n", next);
				(*bad)++;
			}
			if (i && (b.line[i] != b.line[i - 1] + b.len[i - 1] + 1 ||
				  b.line[i - 1][b.len[i - 1]] != '\n'))
				(*bad)++;
			bytes += b.len[i] + 1;
			next++;
		}
		if (n > 1 && bytes > max_bytes)   /* one line may exceed it, not two */
			(*bad)++;
	}
	return next;
}

/* The reader reads the active segment, then more lines go into it: they
 * are read from where it stopped, with every batch limit. */
static void test_growing_segment(void)
{
	struct spool *s;
	struct spool_reader *r;
	uint64_t last, next = 1;
	int bad = 0;

	fresh_dir();
	CHECK(spool_open(&s, dir, 0, &last) == 0);
	CHECK(spool_reader_open(s, "r", &r) == 0);
	CHECK(start(s) == 0);
	for (int round = 0; round < 8; round++) {
		CHECK(append_range(s, next, next + 50) == 0);
		CHECK(spool_flush(s, true) == 0);
		next = read_check(r, next, round % 2 ? 7 : 1000, round % 3 ? 4096 : 100000, &bad);
		CHECK(next == 1 + 50 * (uint64_t)(round + 1));
		CHECK(spool_reader_ack(r, next - 1) == 0);
	}
	CHECK(bad == 0);
	spool_close(s);
	rm_dir();
}

/* Small segments (max_bytes 256 KiB: 32 KiB each), some lines longer than
 * one: every line read once, in order, across segments, and again after a
 * seek back to the cursor. */
static void test_across_segments_and_seek(void)
{
	struct spool *s;
	struct spool_reader *r;
	uint64_t last, next;
	int bad = 0;

	fresh_dir();
	CHECK(spool_open(&s, dir, 256 << 10, &last) == 0);
	CHECK(spool_reader_open(s, "r", &r) == 0);
	CHECK(start(s) == 0);
	CHECK(append_range(s, 1, 120) == 0);
	CHECK(spool_flush(s, true) == 0);
	next = read_check(r, 1, 10, 8192, &bad);
	CHECK(next == 120);
	CHECK(bad == 0);
	CHECK(spool_reader_ack(r, 60) == 0);
	spool_reader_seek(r, 60);   /* a failed send: from the cursor again */
	next = read_check(r, 61, 1000, 1 << 20, &bad);
	CHECK(next == 120);
	CHECK(bad == 0);
	CHECK(spool_reader_ack(r, 119) == 0);
	/* more after everything was read: the reader moves on */
	CHECK(append_range(s, 120, 200) == 0);
	CHECK(spool_flush(s, true) == 0);
	next = read_check(r, 120, 3, 2000, &bad);
	CHECK(next == 200);
	CHECK(bad == 0);
	spool_close(s);
	rm_dir();
}

/* A closed segment a power cut left shorter than its successor's name says
 * (lines 1-2 of 1-4, and a torn third): spool_read() came back at once
 * without data, so the sink thread spun on it (review, stop 27: five
 * million reads a second); then it waited as at the spool's end, for
 * lines that never come: the sink delivered nothing after line 2 again,
 * and nothing said so (review). The reader goes on at line 5, and the
 * two lines missing are counted, once, for a loss event. */
static void test_short_closed_segment_does_not_spin(void)
{
	struct spool *s;
	struct spool_reader *r, *r2;
	struct spool_batch b;
	struct timespec t0, t1;
	char path[400];
	uint64_t last, first_lost = 0, last_lost = 0, seen[8] = { 0 };
	int calls = 0, got = 0;
	FILE *f;

	fresh_dir();
	CHECK(mkdir(dir, 0700) == 0);
	snprintf(path, sizeof(path), "%s/seg-00000000000000000001.log", dir);
	CHECK((f = fopen(path, "w")) != NULL);
	fputs("{\"s\":1}\n{\"s\":2}\n{\"s\"", f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/seg-00000000000000000005.log", dir);
	CHECK((f = fopen(path, "w")) != NULL);
	fputs("{\"s\":5}\n{\"s\":6}\n", f);
	fclose(f);
	CHECK(spool_open(&s, dir, 1 << 20, &last) == 0);
	CHECK(last == 6);
	snprintf(path, sizeof(path), "%s/cursor-r2", dir);
	CHECK((f = fopen(path, "w")) != NULL);
	fputs("00000000000000000003\n", f);
	fclose(f);
	CHECK(spool_reader_open(s, "r", &r) == 0);
	CHECK(spool_reader_open(s, "r2", &r2) == 0);
	CHECK(start(s) == 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		int n = spool_read(r, &b, 512, 4 << 20, 100);

		calls++;
		for (int i = 0; i < n; i++) {
			CHECK(b.first + i < 8);
			if (b.first + i < 8)
				seen[b.first + i]++;
		}
		if (n > 0) {
			got += n;
			spool_reader_ack(r, b.first + (uint64_t)n - 1);
		}
		clock_gettime(CLOCK_MONOTONIC, &t1);
	} while ((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 < 600);
	CHECK(got == 4);         /* the lines that are there, and no more */
	CHECK(seen[1] == 1 && seen[2] == 1 && seen[5] == 1 && seen[6] == 1);
	CHECK(calls < 30);       /* ~100 ms a call, not a spin */
	CHECK(spool_take_lost(s, &first_lost, &last_lost) == 2);
	CHECK(first_lost == 3 && last_lost == 4);
	/* a reader positioned inside the hole (its cursor at 3, saved after
	 * line 3 was delivered before the power cut) goes on at 5 too, and
	 * the segment is not counted a second time */
	CHECK(spool_reader_cursor(r2) == 3);
	int n2 = spool_read(r2, &b, 512, 4 << 20, 100);
	CHECK(n2 == 2 && b.first == 5);
	CHECK(spool_take_lost(s, &first_lost, &last_lost) == 0);
	spool_close(s);
	rm_dir();
}

/* A sealed segment that does not inflate (a damaged file): the sink
 * logged "Input/output error" and tried again for ever, delivering nothing
 * after it (review). Its lines are lost: counted, and the reader goes on
 * at the next segment. */
static void test_damaged_sealed_segment_is_skipped(void)
{
	struct spool *s;
	struct spool_reader *r;
	struct spool_batch b;
	char path[400];
	uint64_t last, first_lost = 0, last_lost = 0;
	int n = 0;
	FILE *f;

	fresh_dir();
	CHECK(mkdir(dir, 0700) == 0);
	snprintf(path, sizeof(path), "%s/seg-00000000000000000001.z", dir);
	CHECK((f = fopen(path, "w")) != NULL);
	fputs("\x78\x9c not zlib after its header", f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/seg-00000000000000000005.log", dir);
	CHECK((f = fopen(path, "w")) != NULL);
	fputs("{\"s\":5}\n{\"s\":6}\n", f);
	fclose(f);
	CHECK(spool_open(&s, dir, 1 << 20, &last) == 0);
	CHECK(spool_reader_open(s, "r", &r) == 0);
	CHECK(start(s) == 0);
	for (int i = 0; i < 5 && n <= 0; i++)
		n = spool_read(r, &b, 512, 4 << 20, 100);
	CHECK(n == 2 && b.first == 5);
	CHECK(spool_take_lost(s, &first_lost, &last_lost) == 4);
	CHECK(first_lost == 1 && last_lost == 4);
	spool_close(s);
	rm_dir();
}

/* A sink that takes 64 lines at a time from a backlog of megabytes reads
 * each byte about once, not everything behind the batch at every call
 * (the window follows the lines' length); when the lines grow fivefold
 * after that, the batches shrink and nothing is cut or skipped. */
static size_t uniform_len = 1000;

static size_t uniform_line(uint64_t seq, char *buf)
{
	int k = snprintf(buf, 64, "{\"sequence\":%" PRIu64 ",\"pad\":\"", seq);

	memset(buf + k, 'a' + seq % 26, uniform_len - k - 2);
	memcpy(buf + uniform_len - 2, "\"}", 2);
	return uniform_len;
}

static void test_window_follows_batch(void)
{
	static char line[8000], want[8000];
	struct spool *s;
	struct spool_reader *r;
	struct spool_batch b;
	uint64_t last, next = 1, total = 0;
	int n, bad = 0, batches = 0;

	fresh_dir();
	CHECK(spool_open(&s, dir, 64 << 20, &last) == 0);
	CHECK(spool_reader_open(s, "r", &r) == 0);
	CHECK(start(s) == 0);
	for (uint64_t q = 1; q <= 6000; q++) {
		uniform_len = q <= 4000 ? 1000 : 5000;
		size_t len = uniform_line(q, line);

		CHECK(spool_append(s, q, line, len) == 0);
		total += len + 1;
	}
	CHECK(spool_flush(s, true) == 0);
	while ((n = spool_read(r, &b, 64, 4 << 20, 20)) > 0) {
		batches++;
		if (b.first != next || n > 64)
			bad++;
		for (int i = 0; i < n; i++, next++) {
			uniform_len = next <= 4000 ? 1000 : 5000;
			size_t len = uniform_line(next, want);

			if (b.len[i] != len || memcmp(b.line[i], want, len))
				bad++;
		}
		CHECK(spool_reader_ack(r, next - 1) == 0);
	}
	CHECK(bad == 0);
	CHECK(next == 6001);
	/* 4000 / 64 batches of the short lines, then fewer lines a batch */
	CHECK(batches >= 63 + 2000 / 64);
	/* each byte about once (a window's slack is re-read): was ~14 times */
	if (spool_reader_bytes_read(r) >= total * 13 / 10)
		fprintf(stderr, "  read %" PRIu64 " bytes for %" PRIu64 "\n", spool_reader_bytes_read(r), total);
	CHECK(spool_reader_bytes_read(r) < total * 13 / 10);
	spool_close(s);
	rm_dir();
}

int main(void)
{
	RUN(test_short_closed_segment_does_not_spin);
	RUN(test_damaged_sealed_segment_is_skipped);
	RUN(test_growing_segment);
	RUN(test_across_segments_and_seek);
	RUN(test_window_follows_batch);
	UNIT_DONE("audit_spool_read");
}
