/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pg_explain: the postgres module's verdict for one SQL text, offline. It
 * uses the classifier and the mask rules exactly as proto_pg.c does, with
 * the rules the policy grants the agent by name.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_classify.h"
#include "pg_explain.h"
#include "pg_wire.h"

#define EXPLAIN_MAX_RULES 64

static size_t agent_rules(const struct policy *p, int ai, int ti, const struct policy_rule **out, size_t max)
{
	const char *name = p->agents[ai].name;
	size_t n = 0;

	for (size_t b = 0; b < p->nbindings; b++) {
		const struct policy_binding *bd = &p->bindings[b];
		const struct policy_role *role = &p->roles[bd->role_idx];
		bool bound = false;

		for (size_t a = 0; a < bd->agents.n; a++)
			bound |= strcmp(bd->agents.v[a], name) == 0;
		for (size_t r = 0; bound && r < role->nrules; r++) {
			bool dup = false;

			if (role->rules[r].target_idx != ti)
				continue;
			for (size_t k = 0; k < n && k < max; k++)
				dup |= out[k] == &role->rules[r];
			if (!dup && n++ < max)
				out[n - 1] = &role->rules[r];
		}
	}
	return n;
}

/* Masked columns as policy names them: true when any rule names it. */
struct masks {
	const struct policy_rule **rules;
	size_t n;
};

static bool column_masked(void *arg, const char *schema, const char *table, const char *column)
{
	const struct masks *m = arg;
	char prefix[300];
	size_t pl = (size_t)snprintf(prefix, sizeof(prefix), "%s.%s.", schema, table);

	for (size_t r = 0; r < m->n; r++) {
		const struct policy_strv *cols = &m->rules[r]->mask.columns;

		for (size_t i = 0; i < cols->n; i++) {
			if (strncmp(cols->v[i], prefix, pl) != 0)
				continue;
			if (!column || strcmp(cols->v[i] + pl, column) == 0)
				return true;
		}
	}
	return false;
}

int pg_explain(const struct policy *p, int ai, int ti, const char *sql, FILE *out)
{
	const struct policy_rule *rules[EXPLAIN_MAX_RULES];
	const struct policy_target *t = &p->targets[ti];
	struct pgc_result *r = calloc(1, sizeof(*r));
	struct masks m = { rules, 0 };
	struct pgc_ctx ctx = {
		.search_path = t->upstream.search_path && *t->upstream.search_path ? t->upstream.search_path : "public",
		.column_masked = column_masked,
		.arg = &m,
	};
	size_t nr = agent_rules(p, ai, ti, rules, EXPLAIN_MAX_RULES);
	int ret;

	if (!r)
		return -ENOMEM;
	if (nr > EXPLAIN_MAX_RULES) {
		fprintf(out, "verdict: deny (too many rules for target '%s')\n", t->name);
		free(r);
		return 1;
	}
	m.n = nr;
	if (!pg_utf8_valid(sql, strlen(sql))) {
		fprintf(out, "verdict: deny (query text is not valid UTF-8)\n");
		free(r);
		return 1;
	}
	if (pgc_judge(&ctx, sql, strlen(sql), rules, nr, r) != 0)
		r->verdict = PGC_DENY;
	switch (r->verdict) {
	case PGC_ALLOW:
		fprintf(out, "verdict: allow%s\n", r->rule ? "" : " (implicitly: transaction control or a harmless setting)");
		ret = 0;
		break;
	case PGC_REVIEW:
		fprintf(out, "verdict: review (needs approval; denied until approvals are available)\n");
		ret = 1;
		break;
	default:
		fprintf(out, "verdict: deny (agentgate: denied: %s)\n", r->reason[0] ? r->reason : "not allowed by any rule");
		ret = 1;
		break;
	}
	if (r->rule)
		fprintf(out, "rule: role '%s' rule %d (line %d)\n", r->rule->role, r->rule->index + 1, r->rule->line);
	fprintf(out, "class: %s\ntag: %s\nstatements: %d\n", pgc_class_name(r->cls), r->tag[0] ? r->tag : "-",
		r->nstmts);
	fprintf(out, "tables:");
	for (int i = 0; i < r->ntables && i < PGC_MAX_TABLES; i++)
		fprintf(out, "%s %s", i ? "," : "", r->tables[i]);
	fprintf(out, "%s\n", r->ntables ? "" : " -");
	fprintf(out, "masked columns:");
	int nm = 0;
	for (int i = 0; i < r->ntables && i < PGC_MAX_TABLES; i++) {
		size_t tl = strnlen(r->tables[i], sizeof(r->tables[i]));

		for (size_t k = 0; k < nr; k++)
			for (size_t c = 0; c < rules[k]->mask.columns.n; c++) {
				const char *col = rules[k]->mask.columns.v[c];

				if (strncmp(col, r->tables[i], tl) == 0 && col[tl] == '.')
					fprintf(out, "%s %s", nm++ ? "," : "", col);
			}
	}
	fprintf(out, "%s\n", nm ? "" : " -");
	if (r->copy_in || r->copy_out)
		fprintf(out, "copy: %s\n", r->copy_in ? "from client" : "to client");
	if (!ret)
		fprintf(out, "note: judged without the database: a function or operator schema '%s' defines "
			"under a name used here makes the enforcer deny it (it reads them at session start)\n",
			ctx.search_path);
	if (p->mode == POLICY_OBSERVE && ret)
		fprintf(out, "note: observe mode: recorded, not enforced\n");
	free(r);
	return ret;
}
