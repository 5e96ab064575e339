/* SPDX-License-Identifier: Apache-2.0 */
/* `policy explain` for a request line to an http target (http_explain.c). */
#ifndef AGENTGATE_HTTP_EXPLAIN_H
#define AGENTGATE_HTTP_EXPLAIN_H

#include <stdio.h>
#include "policy.h"

/*
 * Prints the verdict for request ("METHOD /path", "UPGRADE /path") by
 * agent ai to target ti: the canonical path, the rule that allows or
 * reviews it, or why it is denied. Returns 0, or 2 for a request that is
 * not a request line (usage).
 */
int http_explain(const struct policy *p, int ai, int ti, const char *request, FILE *out);

#endif
