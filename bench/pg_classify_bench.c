// SPDX-License-Identifier: Apache-2.0
/*
 * pg_classify_bench: what judging one SQL text costs, uncached and cached.
 * Not part of bench/run.sh; build and run by hand:
 *
 *   gcc -O2 -g -std=gnu11 -D_GNU_SOURCE -Iuserspace bench/pg_classify_bench.c \
 *       userspace/pg_classify.c userspace/pg_classify_json.c userspace/pg_funcs.c \
 *       -o build/pg_classify_bench -lpg_query -lpthread && build/pg_classify_bench
 *
 * For each statement it prints the best of 5 runs of N calls, in µs per call:
 *   parse      pg_query_parse alone (the floor, for reference)
 *   uncached   pgc_judge with the cache off (policy_gen 0): parse + walk + verdict
 *   miss       a new text with the cache on (a new policy generation each
 *              call, so neither key is in the table): lex + parse + walk +
 *              two inserts
 *   exact      the same text again: an exact-text hit
 *   normalized the same statement with a different constant each call: a
 *              scanner-key hit (PostgreSQL's lexer, then the table)
 * Statements: the notes' 186-byte 3-way join (Q200), a point SELECT, an
 * INSERT, and a masked-column SELECT with a CTE. Nothing is asserted.
 *
 * Wall-clock figures move with the neighbours on a shared machine;
 * instruction counts do not: run it under valgrind --tool=callgrind and
 * divide pgc_judge's inclusive count by its calls (callgrind_annotate
 * --inclusive=yes --tree=caller).
 */
#include "pg_classify.h"

#include <pg_query.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RUNS 5

static char *sel[] = { "select", "insert" };
static char *tables[] = { "public.customers", "public.orders", "public.order_items" };
static struct policy_rule rule = {
	.target = "db", .role = "bench",
	.allow = { .present = true, .statements = { sel, 2 }, .tables = { tables, 3 } },
};
static const struct policy_rule *rules[] = { &rule };

static bool masked(void *arg, const char *schema, const char *table, const char *column)
{
	(void)arg;
	return strcmp(schema, "public") == 0 && strcmp(table, "customers") == 0 &&
	       (!column || strcmp(column, "cc") == 0);
}

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

enum mode { PARSE, UNCACHED, MISS, EXACT, NORMALIZED };

static unsigned long seq;

/* The text with "%lu" filled: the constant changes when vary is set. */
static int text(char *out, size_t len, const char *fmt, bool vary)
{
	return snprintf(out, len, fmt, vary ? ++seq : 1ul);
}

static double run(const char *fmt, enum mode m, int n)
{
	struct pgc_ctx ctx = { .search_path = "public", .column_masked = masked };
	struct pgc_result r;
	char q[1024];
	double best = 1e30;
	int len;

	for (int k = 0; k < RUNS; k++) {
		double t0;

		pgc_cache_flush();
		ctx.policy_gen = m == UNCACHED ? 0 : 1;
		len = text(q, sizeof(q), fmt, false);
		if (m == EXACT || m == NORMALIZED)
			pgc_judge(&ctx, q, (size_t)len, rules, 1, &r);   /* warm the entry */
		t0 = now_us();
		for (int i = 0; i < n; i++) {
			if (m == NORMALIZED)
				len = text(q, sizeof(q), fmt, true);
			if (m == MISS) {        /* no key of this text is in the table */
				ctx.policy_gen++;
				len = text(q, sizeof(q), fmt, true);
			}
			if (m == PARSE) {
				PgQueryParseResult pr = pg_query_parse(q);

				pg_query_free_parse_result(pr);
			} else {
				pgc_judge(&ctx, q, (size_t)len, rules, 1, &r);
				if ((m == EXACT || m == NORMALIZED) && !r.cached) {
					fprintf(stderr, "not served from the cache: %s\n", q);
					exit(1);
				}
			}
		}
		double us = (now_us() - t0) / n;

		if (us < best)
			best = us;
	}
	return best;
}

int main(void)
{
	static const struct { const char *name, *fmt; } stmts[] = {
		{ "join3 (Q200)",
		  "SELECT c.id AS xy, o.total, i.qty FROM customers c JOIN orders o ON o.customer_id = c.id "
		  "JOIN order_items i ON i.order_id = o.id WHERE c.id = %lu AND o.total > 10 "
		  "ORDER BY o.total DESC LIMIT 20" },
		{ "point select", "SELECT id AS xy, total FROM orders WHERE id = %lu" },
		{ "insert", "INSERT INTO orders (id, customer_id, total) VALUES (%lu, 2, 3.5)" },
		{ "cte + masked", "WITH c AS (SELECT id AS xy, cc FROM customers WHERE id > %lu) "
		  "SELECT xy, cc FROM c" },
	};
	struct pgc_result r;
	struct pgc_ctx ctx = { .search_path = "public", .column_masked = masked };

	for (size_t s = 0; s < sizeof(stmts) / sizeof(stmts[0]); s++) {
		char q[1024];
		int len = text(q, sizeof(q), stmts[s].fmt, false);

		pgc_judge(&ctx, q, (size_t)len, rules, 1, &r);
		if (r.verdict != PGC_ALLOW) {
			fprintf(stderr, "%s: not allowed (%s)\n", stmts[s].name, r.reason);
			return 1;
		}
	}
	printf("%-14s %5s %9s %9s %9s %9s %11s   (us per statement, best of %d)\n", "statement",
	       "bytes", "parse", "uncached", "miss", "exact", "normalized", RUNS);
	for (size_t s = 0; s < sizeof(stmts) / sizeof(stmts[0]); s++) {
		char q[1024];
		int len = text(q, sizeof(q), stmts[s].fmt, false);

		printf("%-14s %5d %9.2f %9.2f %9.2f %9.2f %11.2f\n", stmts[s].name, len,
		       run(stmts[s].fmt, PARSE, 5000), run(stmts[s].fmt, UNCACHED, 5000),
		       run(stmts[s].fmt, MISS, 600), run(stmts[s].fmt, EXACT, 200000),
		       run(stmts[s].fmt, NORMALIZED, 5000));
	}
	pgc_cache_flush();
	return 0;
}
