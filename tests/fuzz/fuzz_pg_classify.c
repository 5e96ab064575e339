// SPDX-License-Identifier: Apache-2.0
/*
 * libFuzzer target for userspace/pg_classify.c (with pg_classify_json.c
 * and pg_funcs.c): the input is one Query message's SQL text, judged
 * against the sql.txt reference policy (SELECT on public.customers and
 * public.orders, customers.email/cc masked) plus a review rule for UPDATE.
 *
 * Besides "never crash, never leak" it checks the promises of
 * pg_classify.h on every input (a verdict from the enum, a reason exactly
 * when denied, NUL-terminated strings, bounded tables), and the verdict
 * cache's safety argument: the same text judged with the cache off, then
 * twice with it on, must get the same verdict each time — the cache is
 * shared across inputs, so a scanner-key entry stored for one input and
 * served to a different one that it should not cover shows up here. The
 * one difference the safety argument allows: a text the parser refuses
 * for a constant's value (float(0)) served the verdict of a text that
 * differs only in that constant (the server refuses it the same way).
 *
 * Then the same text with a catalog of the database's own names, and with
 * names_stale: each may only deny more (see the end of the function).
 *
 * An input starting with 0xFF (never valid UTF-8, so never a judged text)
 * goes to the JSON token walker (pg_classify_json.c) instead: libpg_query
 * only ever hands it well-formed JSON, but a bug there must not become a
 * crash, so it is fuzzed on arbitrary bytes too.
 *
 * Seeds come from the unit test:
 *   test_pg_classify --write-corpus tests/fuzz/corpus/pg_classify
 * tests/fuzz/replay.c runs this on the corpus without libFuzzer.
 */
#include "pg_classify.h"
#include "pg_classify_json.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
size_t pgc_fast_key(const char *sql, size_t len, char *out, size_t cap);
size_t pgc_scan_key(const char *sql, char *out, size_t cap);

static char *sel[] = { "select" };
static char *upd[] = { "update" };
static char *tables[] = { "public.customers", "public.orders" };
static struct policy_rule rule = {
	.target = "db", .role = "agent_ro",
	.allow = { .present = true, .statements = { sel, 1 }, .tables = { tables, 2 } },
	.review = { .present = true, .statements = { upd, 1 }, .tables = { tables, 2 } },
};
static const struct policy_rule *rules[] = { &rule };

static bool masked(void *arg, const char *schema, const char *table, const char *column)
{
	(void)arg;
	if (strcmp(schema, "public") != 0 || strcmp(table, "customers") != 0)
		return false;
	return !column || strcmp(column, "email") == 0 || strcmp(column, "cc") == 0;
}

static void check(const struct pgc_result *r)
{
	if (r->verdict != PGC_DENY && r->verdict != PGC_ALLOW && r->verdict != PGC_REVIEW)
		abort();
	if (!memchr(r->reason, '\0', sizeof(r->reason)) || !memchr(r->tag, '\0', sizeof(r->tag)))
		abort();
	if ((r->verdict == PGC_DENY) != (r->reason[0] != '\0'))
		abort();
	if (r->verdict == PGC_DENY && r->rule)
		abort();
	if (r->ntables < 0 || r->ntables > PGC_MAX_TABLES || r->nstmts < 0)
		abort();
	for (int i = 0; i < r->ntables; i++)
		if (!memchr(r->tables[i], '\0', sizeof(r->tables[i])) || !strchr(r->tables[i], '.'))
			abort();
	if ((unsigned)r->cls > PGC_UTILITY)
		abort();
}

/* The 'F' key's promise (pg_classify.c, fast_key()): a text that shares
 * it shares the 'S' key. The other text: this one with its digits made 7
 * and the insides of its quotes made z (doubled quotes kept), by this
 * file's own reading of the quotes. */
static void fast_key_check(const char *sql, size_t size)
{
	static char fa[4096], fb[4096], sa[4096], sb[4096];
	size_t nfa, nfb, nsa, nsb;
	char *a, *b;
	bool in = false;

	if (size > 2048 || memchr(sql, '\0', size) || !(nfa = pgc_fast_key(sql, size, fa, sizeof(fa))))
		return;
	a = malloc(size + 1);
	b = malloc(size + 1);
	if (!a || !b)
		abort();
	memcpy(a, sql, size);
	a[size] = 0;
	for (size_t i = 0; i < size; i++) {
		if (a[i] == '\'' && in && a[i + 1] == '\'') {
			b[i] = b[i + 1] = '\'';
			i++;
		} else if (a[i] == '\'') {
			in = !in;
			b[i] = a[i];
		} else {
			b[i] = in ? 'z' : a[i] >= '0' && a[i] <= '9' ? '7' : a[i];
		}
	}
	b[size] = 0;
	nfb = pgc_fast_key(b, size, fb, sizeof(fb));
	if (nfb == nfa && memcmp(fa, fb, nfa) == 0) {
		nsa = pgc_scan_key(a, sa, sizeof(sa));
		nsb = pgc_scan_key(b, sb, sizeof(sb));
		if (nsa != nsb || memcmp(sa, sb, nsa) != 0)
			abort();
	}
	free(a);
	free(b);
}

static void json(const uint8_t *data, size_t size)
{
	struct pgj j = { 0 };
	char *s = malloc(size ? size : 1);

	if (!s)
		return;
	if (size)
		memcpy(s, data, size);
	if (pgj_tokenize(&j, s, size) == 0) {
		for (uint32_t i = 0; i < j.ntok; i++) {
			long v;
			int body;

			if (j.t[i].next > j.ntok || j.t[i].next <= i)
				abort();
			if (j.t[i].type == PGJ_STR)
				pgj_str(&j, (int)i);
			else if (j.t[i].type == PGJ_PRIM)
				pgj_int(&j, (int)i, &v);
			else {
				pgj_get(&j, (int)i, "stmts");
				pgj_unwrap(&j, (int)i, &body);
				for (int e = pgj_first(&j, (int)i); e >= 0; e = pgj_after(&j, (int)i, e))
					if ((uint32_t)e <= i || (uint32_t)e >= j.t[i].next)
						abort();
			}
		}
	}
	pgj_free(&j);
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pgc_ctx ctx = { .search_path = "public", .column_masked = masked };
	struct pgc_result a, b, c;
	char *sql;

	if (size && data[0] == 0xFF) {
		json(data + 1, size - 1);
		return 0;
	}
	sql = malloc(size ? size : 1);   /* exactly size bytes: ASan sees overreads */
	if (!sql)
		return 0;
	if (size)
		memcpy(sql, data, size);
	fast_key_check(sql, size);
	pgc_judge(&ctx, sql, size, rules, 1, &a);
	check(&a);
	ctx.policy_gen = 1;
	pgc_judge(&ctx, sql, size, rules, 1, &b);
	check(&b);
	pgc_judge(&ctx, sql, size, rules, 1, &c);
	check(&c);
	if ((b.cached || c.cached) && a.verdict == PGC_DENY && strncmp(a.reason, "parse error", 11) == 0) {
		free(sql);
		return 0;
	}
	if (a.verdict != b.verdict || a.verdict != c.verdict || a.nstmts != c.nstmts ||
	    a.ntables != c.ntables)
		abort();
	/* The database's own names (and a session that changed them) only
	 * ever take permissions away: never allow what was denied without. */
	{
		static const char *const f[] = { "count", "lower", "touch" };
		static const char *const rf[] = { "count", "touch" };
		static const char *const op[] = { "+", "<=", "=" };
		static const char *const ty[] = { "d" };
		static const char *const oc[] = { "int4_ops", "x_ops" };
		static const struct pgc_catalog cat = {
			.funcs = f, .nfuncs = 3, .row_funcs = rf, .nrow_funcs = 2, .ops = op, .nops = 3,
			.types = ty, .ntypes = 1, .opclasses = oc, .nopclasses = 2, .hash = { 7 },
		};
		struct pgc_result d;

		ctx.catalog = &cat;
		pgc_judge(&ctx, sql, size, rules, 1, &d);
		check(&d);
		if (a.verdict == PGC_DENY && d.verdict != PGC_DENY)
			abort();
		ctx.names_stale = true;
		pgc_judge(&ctx, sql, size, rules, 1, &c);
		check(&c);
		if (d.verdict == PGC_DENY && c.verdict != PGC_DENY)
			abort();
	}
	free(sql);
	return 0;
}
