/* SPDX-License-Identifier: Apache-2.0 */
/* pg_explain: `agentgate policy explain` for postgres targets. */
#ifndef AGENTGATE_PG_EXPLAIN_H
#define AGENTGATE_PG_EXPLAIN_H

#include <stdio.h>
#include "policy.h"

/*
 * Judges sql for agent ai on postgres target ti the way the postgres module
 * would (the rules of roles bound to the agent by name; bindings by claims
 * depend on a token and are not counted), printing the verdict, the
 * deciding rule, class, command tag, tables, and the masked columns of
 * those tables. Nothing is sent anywhere. Returns 0 (allowed), 1 (denied or
 * review), or -errno.
 */
int pg_explain(const struct policy *p, int ai, int ti, const char *sql, FILE *out);

#endif
