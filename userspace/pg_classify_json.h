/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pg_classify_json: tokens over libpg_query's JSON output, for pg_classify.c
 * only (see pg_classify_json.c for why not jansson). One token per JSON
 * value or key; containers record their member count and the index just
 * past their subtree, so walking a field list is index arithmetic.
 * struct pgj owns its token array and string arena; pgj_free() releases
 * both and accepts a zeroed struct.
 */
#ifndef AGENTGATE_PG_CLASSIFY_JSON_H
#define AGENTGATE_PG_CLASSIFY_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define PGJ_MAX_DEPTH  1024          /* deeper trees are refused (-E2BIG) */
#define PGJ_MAX_TOKENS (1u << 21)    /* 48 MiB of tokens at most; denser texts are refused */

enum { PGJ_OBJ = 1, PGJ_ARR, PGJ_STR, PGJ_PRIM };

struct pgj_tok {
	uint8_t type;
	uint32_t start, len;   /* STR: the bytes between the quotes; PRIM: the literal */
	uint32_t n;            /* containers: members (an object counts keys and values) */
	uint32_t next;         /* index of the first token after this subtree */
	uint32_t dec;          /* STR: 1 + arena offset of the decoded text, 0 = not yet */
};

struct pgj {
	const char *s;
	struct pgj_tok *t;
	uint32_t ntok, cap;
	char *arena;
	size_t arena_cap, arena_used;
};

/* Tokenizes s (not necessarily NUL-terminated). 0, -EINVAL (malformed),
 * -E2BIG (too deep or too many tokens) or -ENOMEM. Reuses j's array. */
int pgj_tokenize(struct pgj *j, const char *s, size_t len);
void pgj_free(struct pgj *j);

/* The value token of key in object obj, or -1 (also when obj is not an
 * object). Inline so strlen() of a literal key folds to a constant. */
static inline int pgj_get(const struct pgj *j, int obj, const char *key)
{
	size_t klen = strlen(key);
	uint32_t i;

	if (obj < 0 || j->t[obj].type != PGJ_OBJ)
		return -1;
	i = (uint32_t)obj + 1;
	for (uint32_t m = 0; m + 1 < j->t[obj].n; m += 2) {
		const struct pgj_tok *k = &j->t[i];
		uint32_t v = k->next;

		if (k->len == klen && memcmp(j->s + k->start, key, klen) == 0)
			return (int)v;
		i = j->t[v].next;
	}
	return -1;
}

/* A node in a generic Node* field is {"TypeName": {...}}: returns the key
 * token (the type name) and sets *body, or -1 when i is not such a wrapper. */
int pgj_unwrap(const struct pgj *j, int i, int *body);

/* True when token tok's raw bytes equal lit (keys, type names, enum values). */
static inline bool pgj_is(const struct pgj *j, int tok, const char *lit)
{
	size_t n = strlen(lit);

	return tok >= 0 && j->t[tok].len == n && memcmp(j->s + j->t[tok].start, lit, n) == 0;
}

/* The decoded, NUL-terminated text of a string token (owned by j), or NULL. */
const char *pgj_str(struct pgj *j, int tok);

/* A primitive token as an integer. */
bool pgj_int(const struct pgj *j, int tok, long *out);

/* Iteration over an array's elements or an object's values:
 *   for (int e = pgj_first(j, arr); e >= 0; e = pgj_after(j, arr, e)) */
static inline int pgj_first(const struct pgj *j, int c)
{
	if (c < 0 || (j->t[c].type != PGJ_OBJ && j->t[c].type != PGJ_ARR) || j->t[c].n == 0)
		return -1;
	return j->t[c].type == PGJ_OBJ ? c + 2 : c + 1;
}

static inline int pgj_after(const struct pgj *j, int c, int e)
{
	uint32_t nx = j->t[e].next;

	if (j->t[c].type == PGJ_OBJ)
		nx = nx < j->t[c].next ? nx + 1 : nx;   /* skip the next key */
	return nx < j->t[c].next ? (int)nx : -1;
}

#endif
