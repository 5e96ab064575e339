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
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

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
/* Grows b to room for n more bytes and a NUL (audit_buf_reserve's slow
 * path). 0 or -1. */
int audit_buf_grow(struct audit_buf *b, size_t n);
/* Reserves room for n more bytes and a NUL. 0 or -1. Inline, as
 * audit_buf_put() is: an event is closed by some fifteen appends. */
static inline int audit_buf_reserve(struct audit_buf *b, size_t n)
{
	return b->cap - b->len > n ? 0 : audit_buf_grow(b, n);
}
void audit_buf_free(struct audit_buf *b);
/* Appends n bytes as they are / as a JSON string (escaped as json_dumps
 * escapes; invalid UTF-8 written as U+FFFD) / a decimal integer. 0 or -1
 * (no memory). */
static inline int audit_buf_put(struct audit_buf *b, const char *s, size_t n)
{
	if (audit_buf_reserve(b, n))
		return -1;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	return 0;
}
int audit_buf_str(struct audit_buf *b, const char *s, size_t n);
int audit_buf_int(struct audit_buf *b, long long v);

/*
 * The members of one JSON object written one after another into a reused
 * buffer, for the events emitted per statement, request and connection:
 * building and freeing a jansson tree (some forty allocations) costs more
 * than the rest of the emit path. The buffer holds the members without the
 * object's own braces; aobj_open/aobj_close nest objects. Keys are constant
 * ASCII and written as given; a key must not repeat within an object (there
 * is no jansson object to replace it). String values are escaped as
 * json_dumps escapes them, except that invalid UTF-8 becomes U+FFFD instead
 * of failing: a name an agent chose must not cost the event. A NULL string
 * writes nothing. Out of memory sets bad, and the event is not recorded.
 */
#define AOBJ_MAX_DEPTH 8
struct audit_obj {
	struct audit_buf b;
	unsigned depth;
	uint32_t has;   /* bit d: the object open at depth d has a member */
	bool bad;
};
void aobj_reset(struct audit_obj *o);
void aobj_free(struct audit_obj *o);
void aobj_close(struct audit_obj *o);
/* Each takes the key's length from the macro below it: __builtin_strlen()
 * of a literal is a constant, so a member costs no strlen() call (a
 * statement's event writes some twenty); of any other string it is
 * strlen(). */
void aobj_open_k(struct audit_obj *o, const char *key, size_t kl);
#define aobj_open(o, key) aobj_open_k((o), (key), __builtin_strlen(key))
void aobj_str_k(struct audit_obj *o, const char *key, size_t kl, const char *v);
#define aobj_str(o, key, v) aobj_str_k((o), (key), __builtin_strlen(key), (v))
void aobj_strn_k(struct audit_obj *o, const char *key, size_t kl, const char *v, size_t len);
#define aobj_strn(o, key, v, len) aobj_strn_k((o), (key), __builtin_strlen(key), (v), (len))
void aobj_int_k(struct audit_obj *o, const char *key, size_t kl, long long v);
#define aobj_int(o, key, v) aobj_int_k((o), (key), __builtin_strlen(key), (v))
void aobj_bool_k(struct audit_obj *o, const char *key, size_t kl, bool v);
#define aobj_bool(o, key, v) aobj_bool_k((o), (key), __builtin_strlen(key), (v))
/* Members already written (the bytes an aobj wrote at depth 0, without
 * braces), appended at the current depth: for parts that repeat from event
 * to event. */
void aobj_members(struct audit_obj *o, const char *members, size_t len);
/* A value that is already JSON (len bytes). */
void aobj_raw_k(struct audit_obj *o, const char *key, size_t kl, const char *json, size_t len);
#define aobj_raw(o, key, json, len) aobj_raw_k((o), (key), __builtin_strlen(key), (json), (len))

#endif
