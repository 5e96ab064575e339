/* SPDX-License-Identifier: Apache-2.0 */
/*
 * audit_json: serialises an audit event (a jansson tree) into a reusable
 * buffer, byte for byte as json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER)
 * would. Every audit line is hashed into the chain exactly as written, so the
 * bytes must not change; this exists because json_dumps costs more than the
 * rest of the emit path together (a strbuffer grown byte run by byte run, a
 * hashtable for loop detection, a final strdup).
 */
#ifndef AGENTGATE_AUDIT_JSON_H
#define AGENTGATE_AUDIT_JSON_H

#include <jansson.h>
#include <stddef.h>

/* A growable output buffer, reused from event to event. */
struct audit_buf {
	char *p;
	size_t len, cap;
};

/* Appends v (an object or an array) to b, NUL-terminated (the NUL is not
 * counted in b->len). 0, or -1 exactly when json_dumps refuses v (not an
 * object or array, invalid UTF-8 in a string value, a loop) or memory ran
 * out; b->len is then back where it was. Trees the fast path does not
 * handle (invalid UTF-8, nesting deeper than events go) are handed to
 * json_dumps itself. */
int audit_json_dump(const json_t *v, struct audit_buf *b);
/* How many trees went to json_dumps (tests: the fast path is taken). */
unsigned long audit_json_fallbacks(void);
/* Reserves room for n more bytes. 0 or -1. */
int audit_buf_reserve(struct audit_buf *b, size_t n);
void audit_buf_free(struct audit_buf *b);

#endif
