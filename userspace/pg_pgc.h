/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pg_pgc: the postgres module's seam to the SQL classifier (pg_classify.h,
 * another part of the tree). Until the classifier is in the tree this
 * declares the same interface with a stand-in that denies every statement,
 * so the wire layer builds and fails closed. Include only from pg_*.c and
 * proto_pg.c.
 */
#ifndef AGENTGATE_PG_PGC_H
#define AGENTGATE_PG_PGC_H

#include <stdio.h>
#include <string.h>
#include "policy.h"

#if __has_include("pg_classify.h")
#include "pg_classify.h"
#define HAVE_PG_CLASSIFY 1
#else
enum pgc_verdict { PGC_DENY = 0, PGC_ALLOW, PGC_REVIEW };
enum pgc_class { PGC_READ, PGC_WRITE, PGC_DDL, PGC_ADMIN, PGC_TRANSACTION, PGC_UTILITY };
#define PGC_MAX_TABLES 32
struct pgc_ctx {
	const char *search_path;
	bool in_transaction, tx_read_write_granted;
	bool (*column_masked)(void *arg, const char *schema, const char *table, const char *column);
	void *arg;
	uint64_t policy_gen;
	const char *settings;
};
struct pgc_result {
	enum pgc_verdict verdict;
	enum pgc_class cls;
	char tag[32];
	int nstmts;
	const struct policy_rule *rule;
	char reason[256];
	int ntables;
	char tables[PGC_MAX_TABLES][128];
	bool copy_in, copy_out, cached, ends_tx, begins_tx;
};
static inline int pgc_judge(const struct pgc_ctx *ctx, const char *sql, size_t len,
		     const struct policy_rule *const *rules, size_t nrules, struct pgc_result *out)
{
	memset(out, 0, sizeof(*out));
	out->verdict = PGC_DENY;
	out->cls = PGC_UTILITY;
	snprintf(out->reason, sizeof(out->reason), "the SQL classifier is not built in");
	return 0;
}
static inline const char *pgc_class_name(enum pgc_class c)
{
	static const char *const n[] = { "read", "write", "ddl", "admin", "transaction", "utility" };

	return (unsigned)c < 6 ? n[c] : "utility";
}
#endif


#endif
