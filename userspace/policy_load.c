/* SPDX-License-Identifier: Apache-2.0 */
/*
 * policy_load: policy file bytes -> positioned node tree -> struct policy.
 *
 * libyaml turns the file into a small tree whose nodes remember their 1-based
 * line:col. JSON is YAML-parsable, so one tree and one validator serve both
 * formats and every error points at the offending key or value. JSON is first
 * checked by jansson, because libyaml accepts things JSON forbids (comments,
 * single quotes, bare words) and a JSON author deserves a JSON error.
 *
 * The validator walks the tree in a fixed order (agents, targets, roles,
 * bindings) so later sections can check names against earlier ones, keeps
 * going after an error to report as many as it can, and sorts the errors by
 * position at the end. Only a policy with no error at all is returned.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <yaml.h>

#include <linux/types.h>
#include "agentgate_abi.h"
#include "k8s.h"
#include "mask.h"
#include "pg_classify.h"
#include "policy.h"
#include "http_path.h"
#include "util.h"

/* Bounds on what a policy may make us allocate. */
#define MAX_DEPTH    32              /* nesting of mappings and lists */
#define MAX_NODES    (1u << 18)      /* scalars, mappings and lists in one file */
#define MAX_STR      4096            /* any single string value */
#define MAX_LIST     4096            /* entries of any string list */
#define MAX_AGENTS   (AG_MAX_AGENTS - 1)   /* kernel slot 0 means "no agent" */
#define MAX_TARGETS  4096
#define MAX_ROLES    4096
#define MAX_RULES    4096            /* per role */
#define MAX_BINDINGS 16384
#define MAX_SINKS    16
#define MAX_NAME     63

#define DEFAULT_CONNECTIONS 256
#define DEFAULT_PARSE_CPU 25     /* percent of one CPU */
/* New connections a second: at this rate one agent holds at most 12,000 of
 * the enforcer's sockets in TIME_WAIT toward one upstream (60 s), under half
 * of the default ephemeral port range (28,232). */
#define DEFAULT_CONNECT_RATE 200
#define DEFAULT_REVIEW_S    300
#define MAX_REVIEW_S        (7u * 24 * 3600)

/* ======================================================================
 * Errors
 * ====================================================================== */

static void perr(struct policy_errors *errs, const char *file, int line, int col,
		 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Messages quote user text; keep control bytes out so an error line cannot
 * rewrite a terminal or forge a second log line, and the bidirectional
 * controls (U+200E/F, U+202A-202E, U+2066-2069), which reorder what a
 * terminal or a CI log shows (review, stop 28): each becomes "???". */
static void scrub(char *s)
{
	for (unsigned char *u = (unsigned char *)s; *u; u++) {
		if (*u < 0x20 || *u == 0x7f)
			*u = '?';
		else if (u[0] == 0xe2 && u[1] && u[2] &&
			 ((u[1] == 0x80 && (u[2] == 0x8e || u[2] == 0x8f || (u[2] >= 0xaa && u[2] <= 0xae))) ||
			  (u[1] == 0x81 && u[2] >= 0xa6 && u[2] <= 0xa9)))
			u[0] = u[1] = u[2] = '?';
	}
}

static void perr(struct policy_errors *errs, const char *file, int line, int col,
		 const char *fmt, ...)
{
	struct policy_error *e;
	va_list ap;

	errs->total++;
	if (errs->n >= POLICY_MAX_ERRORS)
		return;
	e = &errs->e[errs->n++];
	snprintf(e->file, sizeof(e->file), "%s", file);
	scrub(e->file);
	e->line = line;
	e->col = col;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	scrub(e->msg);
}

static bool err_after(const struct policy_error *a, const struct policy_error *b)
{
	return a->line > b->line || (a->line == b->line && a->col > b->col);
}

/* Stable, so errors at one position keep the order they were found in. */
static void sort_errors(struct policy_errors *errs)
{
	for (int i = 1; i < errs->n; i++) {
		struct policy_error tmp = errs->e[i];
		int j = i;

		while (j > 0 && err_after(&errs->e[j - 1], &tmp)) {
			errs->e[j] = errs->e[j - 1];
			j--;
		}
		errs->e[j] = tmp;
	}
}

/* ======================================================================
 * The positioned tree
 * ====================================================================== */

enum ykind { Y_SCALAR, Y_MAP, Y_SEQ };

struct ynode {
	enum ykind kind;
	bool plain;             /* scalar written without quotes: may be null, number, bool */
	int line, col;          /* 1-based */
	char *val;              /* scalar, NUL-terminated (may hold NULs: see len) */
	size_t len;
	struct ynode **kid;     /* map: key, value, key, value...; seq: items */
	size_t n, cap;
};

struct yreader {
	yaml_parser_t parser;
	const char *buf;
	size_t len;
	const char *file;
	struct policy_errors *errs;
	size_t nodes;
};

static void ynode_free(struct ynode *n)
{
	if (!n)
		return;
	for (size_t i = 0; i < n->n; i++)
		ynode_free(n->kid[i]);
	free(n->kid);
	free(n->val);
	free(n);
}

/* libyaml reports reader errors (bad UTF-8) as a byte offset, not a mark. */
static void offset_pos(const char *buf, size_t len, size_t off, int *line, int *col)
{
	*line = 1;
	*col = 1;
	for (size_t i = 0; i < off && i < len; i++) {
		if (buf[i] == '\n') {
			(*line)++;
			*col = 1;
		} else if (((unsigned char)buf[i] & 0xc0) != 0x80) {
			(*col)++;
		}
	}
}

static void yerr_mark(struct yreader *r, yaml_mark_t m, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void yerr_mark(struct yreader *r, yaml_mark_t m, const char *fmt, ...)
{
	char msg[sizeof(((struct policy_error *)0)->msg)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	perr(r->errs, r->file, (int)m.line + 1, (int)m.column + 1, "%s", msg);
}

static void report_parser_error(struct yreader *r)
{
	const yaml_parser_t *ps = &r->parser;
	const char *problem = ps->problem ? ps->problem : "cannot parse";
	int line, col;

	if (ps->error == YAML_MEMORY_ERROR) {
		perr(r->errs, r->file, 0, 0, "out of memory");
	} else if (ps->error == YAML_READER_ERROR) {
		offset_pos(r->buf, r->len, ps->problem_offset, &line, &col);
		perr(r->errs, r->file, line, col, "%s", problem);
	} else if (ps->context) {
		yerr_mark(r, ps->problem_mark, "%s (%s at %d:%d)", problem, ps->context,
			  (int)ps->context_mark.line + 1, (int)ps->context_mark.column + 1);
	} else {
		yerr_mark(r, ps->problem_mark, "%s", problem);
	}
}

static bool next_event(struct yreader *r, yaml_event_t *ev)
{
	if (yaml_parser_parse(&r->parser, ev))
		return true;
	report_parser_error(r);
	return false;
}

static struct ynode *node_new(struct yreader *r, enum ykind kind, yaml_mark_t m)
{
	struct ynode *n;

	if (++r->nodes > MAX_NODES) {
		yerr_mark(r, m, "policy has more than %u values", MAX_NODES);
		return NULL;
	}
	n = calloc(1, sizeof(*n));
	if (!n) {
		yerr_mark(r, m, "out of memory");
		return NULL;
	}
	n->kind = kind;
	n->line = (int)m.line + 1;
	n->col = (int)m.column + 1;
	return n;
}

static bool node_push(struct yreader *r, struct ynode *parent, struct ynode *kid)
{
	if (parent->n == parent->cap) {
		size_t cap = parent->cap ? parent->cap * 2 : 8;
		struct ynode **k = realloc(parent->kid, cap * sizeof(*k));

		if (!k) {
			perr(r->errs, r->file, kid->line, kid->col, "out of memory");
			return false;
		}
		parent->kid = k;
		parent->cap = cap;
	}
	parent->kid[parent->n++] = kid;
	return true;
}

/* Anchors, aliases and tags make a policy say one thing and look like
 * another; a security policy should read exactly as it is enforced. These are
 * reported but do not stop the tree, so every one of them is listed. */
static void check_props(struct yreader *r, const yaml_event_t *ev,
			const yaml_char_t *anchor, const yaml_char_t *tag)
{
	if (anchor)
		yerr_mark(r, ev->start_mark,
			  "anchors are not allowed (&%.64s): write the value out",
			  (const char *)anchor);
	if (tag)
		yerr_mark(r, ev->start_mark, "tags are not allowed (%.64s)", (const char *)tag);
}

struct keyref {
	const struct ynode *k;
	size_t i;
};

static int keyref_cmp(const void *pa, const void *pb)
{
	const struct keyref *a = pa, *b = pb;
	size_t l = a->k->len < b->k->len ? a->k->len : b->k->len;
	int c = memcmp(a->k->val, b->k->val, l);

	if (c)
		return c;
	if (a->k->len != b->k->len)
		return a->k->len < b->k->len ? -1 : 1;
	return a->i < b->i ? -1 : a->i > b->i;
}

static bool same_key(const struct ynode *a, const struct ynode *b)
{
	return a->len == b->len && memcmp(a->val, b->val, a->len) == 0;
}

static bool ctl_in(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return true;
	return false;
}

/* Keys must be strings and unique. Sorting keeps a hostile 100k-key mapping
 * from costing n^2 comparisons. */
static bool check_map_keys(struct yreader *r, const struct ynode *m)
{
	size_t npairs = m->n / 2, nrefs = 0, first = 0;
	struct keyref *refs;

	if (npairs == 0)
		return true;
	refs = calloc(npairs, sizeof(*refs));
	if (!refs) {
		perr(r->errs, r->file, m->line, m->col, "out of memory");
		return false;
	}
	for (size_t i = 0; i < npairs; i++) {
		const struct ynode *k = m->kid[2 * i];

		if (k->kind != Y_SCALAR) {
			perr(r->errs, r->file, k->line, k->col, "mapping keys must be strings");
			continue;
		}
		/* keys are looked up as C strings: "mode\0" would pass as a
		 * second key here and be read as "mode" (and other YAML
		 * readers would see two keys) */
		if (memchr(k->val, '\0', k->len) || k->len != strlen(k->val) ||
		    ctl_in(k->val, k->len)) {
			perr(r->errs, r->file, k->line, k->col, "mapping keys must not contain control characters");
			continue;
		}
		refs[nrefs].k = k;
		refs[nrefs].i = i;
		nrefs++;
	}
	qsort(refs, nrefs, sizeof(*refs), keyref_cmp);
	for (size_t j = 1; j < nrefs; j++) {
		if (!same_key(refs[j].k, refs[first].k)) {
			first = j;
			continue;
		}
		perr(r->errs, r->file, refs[j].k->line, refs[j].k->col,
		     "duplicate key '%.64s' (first at %d:%d)", refs[j].k->val,
		     refs[first].k->line, refs[first].k->col);
	}
	free(refs);
	return true;
}

static struct ynode *read_node(struct yreader *r, const yaml_event_t *ev, int depth);

static bool read_children(struct yreader *r, struct ynode *n, yaml_event_type_t end, int depth)
{
	for (;;) {
		yaml_event_t ev;
		struct ynode *kid;

		if (!next_event(r, &ev))
			return false;
		if (ev.type == end) {
			yaml_event_delete(&ev);
			return true;
		}
		kid = read_node(r, &ev, depth + 1);
		yaml_event_delete(&ev);
		if (!kid)
			return false;
		if (!node_push(r, n, kid)) {
			ynode_free(kid);
			return false;
		}
	}
}

static struct ynode *read_scalar(struct yreader *r, const yaml_event_t *ev)
{
	struct ynode *n = node_new(r, Y_SCALAR, ev->start_mark);

	if (!n)
		return NULL;
	n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
	n->len = ev->data.scalar.length;
	n->val = malloc(n->len + 1);
	if (!n->val) {
		yerr_mark(r, ev->start_mark, "out of memory");
		free(n);
		return NULL;
	}
	memcpy(n->val, ev->data.scalar.value, n->len);
	n->val[n->len] = '\0';
	return n;
}

/* Builds the node for the event 'ev' (owned by the caller), reading the
 * events of its children. NULL means stop: the error is already reported. */
static struct ynode *read_node(struct yreader *r, const yaml_event_t *ev, int depth)
{
	struct ynode *n;

	if (depth > MAX_DEPTH) {
		yerr_mark(r, ev->start_mark, "nested deeper than %d levels", MAX_DEPTH);
		return NULL;
	}
	switch (ev->type) {
	case YAML_SCALAR_EVENT:
		check_props(r, ev, ev->data.scalar.anchor, ev->data.scalar.tag);
		return read_scalar(r, ev);
	case YAML_ALIAS_EVENT:
		yerr_mark(r, ev->start_mark,
			  "aliases are not allowed (*%.64s): write the value out",
			  (const char *)ev->data.alias.anchor);
		n = node_new(r, Y_SCALAR, ev->start_mark);
		if (n && !(n->val = calloc(1, 1))) {
			free(n);
			n = NULL;
		}
		return n;
	case YAML_SEQUENCE_START_EVENT:
		check_props(r, ev, ev->data.sequence_start.anchor, ev->data.sequence_start.tag);
		n = node_new(r, Y_SEQ, ev->start_mark);
		if (n && !read_children(r, n, YAML_SEQUENCE_END_EVENT, depth)) {
			ynode_free(n);
			n = NULL;
		}
		return n;
	case YAML_MAPPING_START_EVENT:
		check_props(r, ev, ev->data.mapping_start.anchor, ev->data.mapping_start.tag);
		n = node_new(r, Y_MAP, ev->start_mark);
		if (n && (!read_children(r, n, YAML_MAPPING_END_EVENT, depth) ||
			  !check_map_keys(r, n))) {
			ynode_free(n);
			n = NULL;
		}
		return n;
	default:
		yerr_mark(r, ev->start_mark, "unexpected YAML structure");
		return NULL;
	}
}

/* Expects exactly one document; a second one is refused rather than ignored. */
static struct ynode *read_document(struct yreader *r)
{
	yaml_event_t ev;
	struct ynode *root;
	bool more;

	if (!next_event(r, &ev))           /* stream start */
		return NULL;
	yaml_event_delete(&ev);
	if (!next_event(r, &ev))
		return NULL;
	if (ev.type == YAML_STREAM_END_EVENT) {
		yaml_event_delete(&ev);
		perr(r->errs, r->file, 1, 1, "policy is empty");
		return NULL;
	}
	yaml_event_delete(&ev);            /* document start */
	if (!next_event(r, &ev))
		return NULL;
	root = read_node(r, &ev, 0);
	yaml_event_delete(&ev);
	if (!root)
		return NULL;
	if (!next_event(r, &ev))           /* document end */
		goto fail;
	yaml_event_delete(&ev);
	if (!next_event(r, &ev))
		goto fail;
	more = ev.type != YAML_STREAM_END_EVENT;
	if (more)
		yerr_mark(r, ev.start_mark, "a policy file holds a single YAML document");
	yaml_event_delete(&ev);
	if (more)
		goto fail;
	return root;
fail:
	ynode_free(root);
	return NULL;
}

static struct ynode *parse_tree(const char *file, const char *buf, size_t len,
				struct policy_errors *errs)
{
	struct yreader r = { .buf = buf, .len = len, .file = file, .errs = errs };
	struct ynode *root;

	if (!yaml_parser_initialize(&r.parser)) {
		perr(errs, file, 0, 0, "out of memory");
		return NULL;
	}
	/* UTF-8 only (JSON requires it), and it keeps reader-error offsets bytes. */
	yaml_parser_set_encoding(&r.parser, YAML_UTF8_ENCODING);
	yaml_parser_set_input_string(&r.parser, (const unsigned char *)buf, len);
	root = read_document(&r);
	yaml_parser_delete(&r.parser);
	if (root && errs->total > 0) {   /* anchors, tags, duplicate keys */
		ynode_free(root);
		root = NULL;
	}
	return root;
}

/* jansson gates JSON input. A duplicate key passes here on purpose: the tree
 * reports it at the key itself, with where the first one was. */
static bool json_gate(const char *file, const char *buf, size_t len, struct policy_errors *errs)
{
	json_error_t je;
	json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);

	if (j) {
		json_decref(j);
		return true;
	}
	if (json_error_code(&je) == json_error_duplicate_key)
		return true;
	perr(errs, file, je.line > 0 ? je.line : 0, je.column > 0 ? je.column : 0,
	     "invalid JSON: %s", je.text);
	return false;
}

static bool looks_like_json(const char *name, const char *buf, size_t len)
{
	size_t nl = strlen(name);

	if (nl >= 5 && strcasecmp(name + nl - 5, ".json") == 0)
		return true;
	for (size_t i = 0; i < len; i++) {
		if (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\r' || buf[i] == '\n')
			continue;
		return buf[i] == '{';
	}
	return false;
}

/* ======================================================================
 * Validation context, names and suggestions
 * ====================================================================== */

struct name_ref {
	const char *name;
	int idx;
	int line, col;
};

struct name_ix {                 /* sorted by name once complete */
	struct name_ref *v;
	size_t n, cap;
};

struct vctx {
	struct policy_errors *errs;
	const char *file;
	struct policy *p;
	struct name_ix agents, targets, roles;
};

static void verr(struct vctx *v, const struct ynode *at, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void verr(struct vctx *v, const struct ynode *at, const char *fmt, ...)
{
	char msg[sizeof(((struct policy_error *)0)->msg)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	perr(v->errs, v->file, at ? at->line : 0, at ? at->col : 0, "%s", msg);
}

static void *xcalloc(struct vctx *v, const struct ynode *at, size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);

	if (!p)
		verr(v, at, "out of memory");
	return p;
}

static char *xstrdup(struct vctx *v, const struct ynode *at, const char *s)
{
	char *d = strdup(s);

	if (!d)
		verr(v, at, "out of memory");
	return d;
}

/* Levenshtein distance of a and b, or SIZE_MAX once it must exceed 2 (all
 * suggestions want): a file of thousands of names and unknown references
 * made full distances cost minutes of CPU (review, stop 28). */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), prev[MAX_NAME + 2], cur[MAX_NAME + 2];

	if (la > MAX_NAME || lb > MAX_NAME || (la > lb ? la - lb : lb - la) > 2)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		prev[j] = j;
	for (size_t i = 1; i <= la; i++) {
		cur[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t best = prev[j - 1] + (a[i - 1] != b[j - 1]);

			if (prev[j] + 1 < best)
				best = prev[j] + 1;
			if (cur[j - 1] + 1 < best)
				best = cur[j - 1] + 1;
			cur[j] = best;
		}
		size_t low = SIZE_MAX;
		for (size_t j = 0; j <= lb; j++)
			low = cur[j] < low ? cur[j] : low;
		if (low > 2)
			return SIZE_MAX;   /* a row's minimum never decreases */
		memcpy(prev, cur, (lb + 1) * sizeof(prev[0]));
	}
	return prev[lb];
}

struct suggest {
	const char *word, *best;
	size_t dist;
};

static void suggest_try(struct suggest *s, const char *cand)
{
	size_t d = edit_distance(s->word, cand);

	/* Close enough to be a typo, not just another short word. */
	if (d <= 2 && d * 2 <= strlen(s->word) && (!s->best || d < s->dist)) {
		s->best = cand;
		s->dist = d;
	}
}

/* Formats " (did you mean 'x'?)" into buf, or "" when nothing is close. */
static const char *suggest_text(const struct suggest *s, char *buf, size_t len)
{
	if (!s->best)
		return "";
	snprintf(buf, len, " (did you mean '%s'?)", s->best);
	return buf;
}

static bool ix_reserve(struct vctx *v, struct name_ix *ix, const struct ynode *at, size_t n)
{
	ix->v = xcalloc(v, at, n, sizeof(*ix->v));
	ix->cap = ix->v ? n : 0;
	return ix->v != NULL;
}

static void ix_add(struct name_ix *ix, const char *name, const struct ynode *at, int idx)
{
	if (!name || ix->n >= ix->cap)
		return;
	ix->v[ix->n++] = (struct name_ref){ name, idx, at->line, at->col };
}

static int ref_cmp(const void *pa, const void *pb)
{
	const struct name_ref *a = pa, *b = pb;
	int c = strcmp(a->name, b->name);

	return c ? c : (a->idx > b->idx) - (a->idx < b->idx);
}

/* Sorts the index and reports each later use of a name already taken. */
static void ix_finish(struct vctx *v, struct name_ix *ix, const char *noun)
{
	size_t first = 0;

	qsort(ix->v, ix->n, sizeof(*ix->v), ref_cmp);
	for (size_t j = 1; j < ix->n; j++) {
		if (strcmp(ix->v[j].name, ix->v[first].name) != 0) {
			first = j;
			continue;
		}
		perr(v->errs, v->file, ix->v[j].line, ix->v[j].col,
		     "duplicate %s name '%.64s' (first defined at line %d)",
		     noun, ix->v[j].name, ix->v[first].line);
	}
}

static int ix_find(const struct name_ix *ix, const char *name)
{
	size_t lo = 0, hi = ix->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(name, ix->v[mid].name);

		if (c == 0)
			return ix->v[mid].idx;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -1;
}

/* Looks 'name' up; reports "unknown <noun> 'x' (did you mean 'y'?)" at 'at'. */
static int ix_resolve(struct vctx *v, const struct name_ix *ix, const char *name,
		      const struct ynode *at, const char *noun)
{
	struct suggest s = { .word = name };
	char hint[96];
	int idx = ix_find(ix, name);

	if (idx >= 0)
		return idx;
	for (size_t i = 0; v->errs->n < POLICY_MAX_ERRORS && i < ix->n; i++)
		suggest_try(&s, ix->v[i].name);   /* only for an error that is shown */
	verr(v, at, "unknown %s '%.64s'%s", noun, name, suggest_text(&s, hint, sizeof(hint)));
	return -1;
}

static void ix_free(struct name_ix *ix)
{
	free(ix->v);
	memset(ix, 0, sizeof(*ix));
}

/* ======================================================================
 * Mappings and scalars
 * ====================================================================== */

static const struct ynode *map_key(const struct ynode *m, const char *key)
{
	if (!m || m->kind != Y_MAP)
		return NULL;
	for (size_t i = 0; i + 1 < m->n; i += 2)
		if (m->kid[i]->kind == Y_SCALAR && strcmp(m->kid[i]->val, key) == 0)
			return m->kid[i];
	return NULL;
}

static const struct ynode *map_get(const struct ynode *m, const char *key)
{
	if (!m || m->kind != Y_MAP)
		return NULL;
	for (size_t i = 0; i + 1 < m->n; i += 2)
		if (m->kid[i]->kind == Y_SCALAR && strcmp(m->kid[i]->val, key) == 0)
			return m->kid[i + 1];
	return NULL;
}

static bool in_list(const char *const *list, const char *s)
{
	for (; *list; list++)
		if (strcmp(*list, s) == 0)
			return true;
	return false;
}

/* An inline secret would end up in backups, diffs and `policy explain`
 * output; point its author at the file-based key instead. */
static const char *const secret_keys[][2] = {
	{ "client_secret", "client_secret_file" },
	{ "private_key", "private_key_file" },
	{ "password", "password_file" },
	{ "bearer_token", "bearer_token_file" },
	{ "token", "token_file" },
	{ "basic_auth", "basic_auth_file" },
	{ "value", "value_file" },
};

static void unknown_key(struct vctx *v, const struct ynode *k, const char *const *known)
{
	struct suggest s = { .word = k->val };
	char hint[96];

	for (size_t i = 0; i < sizeof(secret_keys) / sizeof(secret_keys[0]); i++) {
		if (strcmp(k->val, secret_keys[i][0]) == 0 && in_list(known, secret_keys[i][1])) {
			verr(v, k, "'%s': secrets must come from a file (use '%s')",
			     secret_keys[i][0], secret_keys[i][1]);
			return;
		}
	}
	for (const char *const *c = known; *c; c++)
		suggest_try(&s, *c);
	verr(v, k, "unknown key '%.64s'%s", k->val, suggest_text(&s, hint, sizeof(hint)));
}

static void check_keys(struct vctx *v, const struct ynode *m, const char *const *known)
{
	for (size_t i = 0; i + 1 < m->n; i += 2) {
		const struct ynode *k = m->kid[i];

		if (k->kind == Y_SCALAR && !in_list(known, k->val))
			unknown_key(v, k, known);
	}
}

static const struct ynode *need(struct vctx *v, const struct ynode *m, const char *key)
{
	const struct ynode *n = map_get(m, key);

	if (!n)
		verr(v, m, "missing required key '%s'", key);
	return n;
}

static bool is_null(const struct ynode *n)
{
	static const char *const nulls[] = { "", "~", "null", "Null", "NULL", NULL };

	return n->kind == Y_SCALAR && n->plain && in_list(nulls, n->val);
}

static const char *describe(const struct ynode *n, char *buf, size_t len)
{
	if (n->kind == Y_MAP)
		return "a mapping";
	if (n->kind == Y_SEQ)
		return "a list";
	if (is_null(n))
		return "null";
	snprintf(buf, len, "'%.40s'", n->val);
	return buf;
}

static bool want_kind(struct vctx *v, const struct ynode *n, enum ykind kind, const char *what)
{
	char got[64];

	if (n->kind == kind)
		return true;
	verr(v, n, "%s must be %s, got %s", what, kind == Y_MAP ? "a mapping" : "a list",
	     describe(n, got, sizeof(got)));
	return false;
}

static bool want_map(struct vctx *v, const struct ynode *n, const char *what)
{
	return want_kind(v, n, Y_MAP, what);
}

/* A list of at most 'max' entries. */
static bool want_list(struct vctx *v, const struct ynode *n, const char *what, size_t max)
{
	if (!want_kind(v, n, Y_SEQ, what))
		return false;
	if (n->n > max) {
		verr(v, n, "%s has %zu entries, at most %zu are supported", what, n->n, max);
		return false;
	}
	return true;
}

/* A non-empty, printable, bounded string. Plain numbers count as strings. */
static const char *want_str(struct vctx *v, const struct ynode *n, const char *what)
{
	char got[64];

	if (n->kind != Y_SCALAR || is_null(n)) {
		verr(v, n, "%s must be a string, got %s", what, describe(n, got, sizeof(got)));
		return NULL;
	}
	if (n->len == 0) {
		verr(v, n, "%s must not be empty", what);
		return NULL;
	}
	if (n->len > MAX_STR) {
		verr(v, n, "%s is longer than %d bytes", what, MAX_STR);
		return NULL;
	}
	for (size_t i = 0; i < n->len; i++) {
		if ((unsigned char)n->val[i] < 0x20 || n->val[i] == 0x7f) {
			verr(v, n, "%s contains a control character", what);
			return NULL;
		}
	}
	return n->val;
}

static char *dup_str(struct vctx *v, const struct ynode *n, const char *what)
{
	const char *s = want_str(v, n, what);

	return s ? xstrdup(v, n, s) : NULL;
}

static char *opt_str(struct vctx *v, const struct ynode *m, const char *key)
{
	const struct ynode *n = map_get(m, key);

	return n ? dup_str(v, n, key) : NULL;
}

/* A file the enforcer reads a secret from, with root's rights: named by an
 * absolute path that no one but root can re-point (util.h, path_trusted).
 * A file not there yet is not an error here: it is read when needed. */
static void secret_check(struct vctx *v, const struct ynode *n, const char *key, const char *path)
{
	char why[300];
	int err;

	if (!path)
		return;
	if (path[0] != '/')
		verr(v, n, "%s must be an absolute path (the enforcer reads it with root's rights, "
		     "whatever its working directory); the value given is not shown, in case it is the "
		     "secret itself", key);
	else if ((err = path_trusted(path, why, sizeof(why))) == -EPERM || err == -ELOOP)
		verr(v, n, "%s: %s", key, why);
}

static char *secret_str(struct vctx *v, const struct ynode *m, const char *key)
{
	const struct ynode *n = map_get(m, key);
	char *path = n ? dup_str(v, n, key) : NULL;

	secret_check(v, n, key, path);
	return path;
}

/* A file the enforcer trusts what it says (a CA bundle, a certificate):
 * not a secret, but whoever may write it may impersonate the upstream and
 * receive the credentials sent there, so the same checks as a secret's. */
static char *trusted_str(struct vctx *v, const struct ynode *m, const char *key)
{
	const struct ynode *n = map_get(m, key);
	char *path = secret_str(v, m, key), why[300];
	int fd;

	/* these are loaded by OpenSSL or libcurl, not through secret_open():
	 * the file's own owner and mode are checked here, when it exists
	 * (its directories by secret_str: only root can put one there later) */
	if (!path || path[0] != '/' || path_trusted(path, why, sizeof(why)))
		return path;   /* refused by secret_str already, or not there yet */
	if ((fd = secret_open(path, why, sizeof(why))) >= 0)
		close(fd);
	else if (fd == -EPERM || fd == -EINVAL)
		verr(v, n, "%s: %s", key, why);
	return path;
}

static bool is_int_text(const char *s)
{
	if (*s == '-')
		s++;
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

static bool want_int(struct vctx *v, const struct ynode *n, const char *what,
		     long long min, long long max, long long *out)
{
	char got[64];
	long long val;

	if (n->kind != Y_SCALAR || !n->plain || !is_int_text(n->val)) {
		verr(v, n, "%s must be an integer, got %s", what, describe(n, got, sizeof(got)));
		return false;
	}
	errno = 0;
	val = strtoll(n->val, NULL, 10);
	if (errno == ERANGE || val < min || val > max) {
		verr(v, n, "%s must be in %lld..%lld, got %.32s", what, min, max, n->val);
		return false;
	}
	*out = val;
	return true;
}

static bool want_bool(struct vctx *v, const struct ynode *n, const char *what, bool *out)
{
	char got[64];

	if (n->kind == Y_SCALAR && n->plain && strcmp(n->val, "true") == 0) {
		*out = true;
		return true;
	}
	if (n->kind == Y_SCALAR && n->plain && strcmp(n->val, "false") == 0) {
		*out = false;
		return true;
	}
	verr(v, n, "%s must be true or false, got %s", what, describe(n, got, sizeof(got)));
	return false;
}

/* Index of the value in the NULL-terminated 'names', or -1 (reported). */
static int want_enum(struct vctx *v, const struct ynode *n, const char *what,
		     const char *const *names)
{
	const char *s = want_str(v, n, what);
	char list[160] = "";
	size_t used = 0;

	if (!s)
		return -1;
	for (int i = 0; names[i]; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	for (int i = 0; names[i] && used < sizeof(list); i++)
		used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s",
					 i ? "|" : "", names[i]);
	verr(v, n, "%s must be one of %s, got '%.64s'", what, list, s);
	return -1;
}

/* "30s", "500ms", "5m", "1h", or a sequence such as "1m30s". */
static bool parse_duration_ms(const char *s, uint64_t *out)
{
	static const struct { const char *unit; uint64_t ms; } units[] = {
		{ "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
	};
	uint64_t total = 0;

	if (!*s)
		return false;
	while (*s) {
		uint64_t num = 0;
		size_t digits = 0, u;

		for (; *s >= '0' && *s <= '9'; s++, digits++) {
			if (digits >= 10)
				return false;
			num = num * 10 + (uint64_t)(*s - '0');
		}
		if (digits == 0)
			return false;
		for (u = 0; u < sizeof(units) / sizeof(units[0]); u++)
			if (strncmp(s, units[u].unit, strlen(units[u].unit)) == 0)
				break;
		if (u == sizeof(units) / sizeof(units[0]))
			return false;
		s += strlen(units[u].unit);
		total += num * units[u].ms;
		if (total > UINT32_MAX)
			return false;
	}
	*out = total;
	return true;
}

static bool want_duration(struct vctx *v, const struct ynode *n, const char *what, uint32_t *ms)
{
	const char *s = want_str(v, n, what);
	uint64_t val;

	if (!s)
		return false;
	if (!parse_duration_ms(s, &val)) {
		verr(v, n, "bad duration '%.64s' for %s (use e.g. 500ms, 30s, 5m, 1h)", s, what);
		return false;
	}
	*ms = (uint32_t)val;
	return true;
}

/* A byte count: an integer, or a number with a unit (10MB, 512MiB, 1GiB). */
static bool parse_size(const char *s, uint64_t *out)
{
	static const struct { const char *unit; uint64_t mul; } units[] = {
		{ "", 1 }, { "B", 1 },
		{ "kB", 1000ULL }, { "KB", 1000ULL }, { "MB", 1000ULL * 1000 },
		{ "GB", 1000ULL * 1000 * 1000 }, { "TB", 1000ULL * 1000 * 1000 * 1000 },
		{ "KiB", 1ULL << 10 }, { "MiB", 1ULL << 20 }, { "GiB", 1ULL << 30 },
		{ "TiB", 1ULL << 40 },
	};
	uint64_t num = 0;
	size_t digits = 0;

	for (; *s >= '0' && *s <= '9'; s++, digits++) {
		if (digits >= 15)
			return false;
		num = num * 10 + (uint64_t)(*s - '0');
	}
	if (digits == 0 || num == 0)
		return false;
	for (size_t u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
		if (strcmp(s, units[u].unit) != 0)
			continue;
		if (num > UINT64_MAX / units[u].mul)
			return false;
		*out = num * units[u].mul;
		return true;
	}
	return false;
}

typedef void (*item_check_fn)(struct vctx *v, const struct ynode *item, const char *s);

/* A list of strings; a lone scalar is taken as a one-element list, because
 * "statements: select" reads naturally and means nothing else. */
static void want_strv(struct vctx *v, const struct ynode *n, const char *what,
		      struct policy_strv *out, item_check_fn check)
{
	char got[64];
	size_t count;

	if (n->kind == Y_MAP || is_null(n)) {
		verr(v, n, "%s must be a list of strings, got %s", what,
		     describe(n, got, sizeof(got)));
		return;
	}
	count = n->kind == Y_SEQ ? n->n : 1;
	if (count > MAX_LIST) {
		verr(v, n, "%s has %zu entries, at most %d are supported", what, count, MAX_LIST);
		return;
	}
	out->v = xcalloc(v, n, count, sizeof(*out->v));
	if (!out->v)
		return;
	for (size_t i = 0; i < count; i++) {
		const struct ynode *item = n->kind == Y_SEQ ? n->kid[i] : n;
		const char *s = want_str(v, item, what);

		if (!s)
			continue;
		if (check)
			check(v, item, s);
		if ((out->v[out->n] = xstrdup(v, item, s)))
			out->n++;
	}
}

/* Names end up in cgroup paths, audit events and denial messages. */
static char *dup_name(struct vctx *v, const struct ynode *n, const char *what)
{
	const char *s = want_str(v, n, what);
	bool all_dots = true;

	if (!s)
		return NULL;
	for (size_t i = 0; i < n->len; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-') ||
		    n->len > MAX_NAME) {
			verr(v, n, "invalid %s '%.64s': use 1-%d letters, digits, '_', '.' or '-'",
			     what, s, MAX_NAME);
			return NULL;
		}
		all_dots &= c == '.';
	}
	if (all_dots) {   /* "." and ".." would walk the default cgroup path */
		verr(v, n, "invalid %s '%s'", what, s);
		return NULL;
	}
	return xstrdup(v, n, s);
}

static bool valid_url(const char *s)
{
	const char *h;

	if (strncmp(s, "https://", 8) == 0)
		h = s + 8;
	else if (strncmp(s, "http://", 7) == 0)
		h = s + 7;
	else
		return false;
	if (*h == '\0' || *h == '/' || *h == '?' || *h == '#')
		return false;
	return strchr(s, ' ') == NULL;
}

static char *dup_url(struct vctx *v, const struct ynode *n, const char *what)
{
	const char *s = want_str(v, n, what);

	if (!s)
		return NULL;
	if (!valid_url(s)) {
		verr(v, n, "%s must be an http:// or https:// URL, got '%.64s'", what, s);
		return NULL;
	}
	return xstrdup(v, n, s);
}

/* 'why' receives policy_parse_addr's reason. */
static bool want_addr(struct vctx *v, const struct ynode *n, const char *what,
		      struct policy_addr *out)
{
	const char *s = want_str(v, n, what);
	char why[160];

	if (!s)
		return false;
	if (policy_parse_addr(s, out, why, sizeof(why)) < 0) {
		verr(v, n, "bad %s '%.64s': %s", what, s, why);
		return false;
	}
	return true;
}

/* Keys that only make sense for some protocols. */
#define P(x) (1u << (x))
#define P_HTTPISH (P(PROTO_HTTP) | P(PROTO_KUBERNETES))
#define P_DATA (P(PROTO_POSTGRES) | P_HTTPISH)

struct key_scope {
	const char *key;
	unsigned protos;
};

static void check_scope(struct vctx *v, const struct ynode *m, const struct key_scope *scope,
			const struct policy_target *t)
{
	if (!t || (unsigned)t->proto >= PROTO__COUNT)
		return;
	for (; scope->key; scope++) {
		const struct ynode *k = map_key(m, scope->key);

		if (k && !(scope->protos & P(t->proto)))
			verr(v, k, "'%s' does not apply to %s target '%.64s'", scope->key,
			     policy_proto_name(t->proto), t->name ? t->name : "?");
	}
}

/* ======================================================================
 * Sections
 * ====================================================================== */

static void check_dns_pattern(struct vctx *v, const struct ynode *item, const char *s)
{
	const char *name = strncmp(s, "*.", 2) == 0 ? s + 2 : s;
	struct policy_addr a;
	char buf[300];
	int ok = 0;

	/* One definition of a valid host name: the one addresses use. */
	if (strlen(name) < sizeof(buf) - 3) {
		snprintf(buf, sizeof(buf), "%s:1", name);
		ok = policy_parse_addr(buf, &a, NULL, 0) == 0 && a.kind == ADDR_HOST;
		free(a.host);
	}
	if (!ok)
		verr(v, item, "dns allow entry '%.64s' is not a host name or '*.suffix'", s);
}

static void normalize_names(struct policy_strv *sv)
{
	for (size_t i = 0; i < sv->n; i++) {
		char *s = sv->v[i];
		size_t len = strlen(s);

		if (len > 1 && s[len - 1] == '.')
			s[len - 1] = '\0';
		for (; *s; s++)
			if (*s >= 'A' && *s <= 'Z')
				*s = (char)(*s - 'A' + 'a');
	}
}

static void load_dns(struct vctx *v, const struct ynode *m, struct policy *p)
{
	static const char *const keys[] = { "upstream", "allow", NULL };
	const struct ynode *n;

	if (!want_map(v, m, "dns"))
		return;
	check_keys(v, m, keys);
	p->has_dns = true;
	if ((n = need(v, m, "upstream")) && want_addr(v, n, "dns upstream", &p->dns_upstream) &&
	    p->dns_upstream.kind != ADDR_IP)
		verr(v, n, "dns upstream must be an IP address and port, e.g. 127.0.0.53:53");
	if ((n = map_get(m, "allow"))) {
		want_strv(v, n, "allow", &p->dns_allow, check_dns_pattern);
		normalize_names(&p->dns_allow);
	}
}

static void check_cgroup(struct vctx *v, const struct ynode *n, const char *s)
{
	const char *c = s[0] == '/' ? s + 1 : s;

	if (!*c) {
		verr(v, n, "cgroup '/' is the root: it would hold every process");
		return;
	}
	for (;;) {
		const char *end = strchr(c, '/');
		size_t len = end ? (size_t)(end - c) : strlen(c);

		if (len == 0) {
			verr(v, n, "cgroup '%.64s' has an empty path component", s);
			return;
		}
		if ((len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.')) {
			verr(v, n, "cgroup '%.64s' must not contain '.' or '..' components", s);
			return;
		}
		if (!end)
			return;
		c = end + 1;
	}
}

static void load_identity(struct vctx *v, const struct ynode *m, struct policy_identity *id);

/*
 * agents[].unix_sockets: "/a/path" or "@name" (an abstract socket). The
 * kernel hook compares the address as the agent spells it, before any
 * lookup (bpf/agentgate.bpf.c unix_check()), so an entry is one spelling:
 * '.', '..' or empty components are refused here rather than stand for a
 * file they do not name.
 */
static void check_unix_socket(struct vctx *v, const struct ynode *item, const char *s)
{
	size_t len = strlen(s);

	if (s[0] == '@') {
		if (len < 2 || len > AG_UNIX_PATH_MAX)
			verr(v, item, "unix_sockets: abstract name '%s' must have 1 to %d bytes after '@'",
			     s, AG_UNIX_PATH_MAX - 1);
		return;
	}
	if (s[0] != '/') {
		verr(v, item, "unix_sockets: '%s' must be an absolute path or '@' and an abstract socket's name "
		     "(a relative path would name another socket in each working directory)", s);
		return;
	}
	if (len > AG_UNIX_PATH_MAX) {
		verr(v, item, "unix_sockets: '%s' is longer than a socket address holds (%d bytes)", s,
		     AG_UNIX_PATH_MAX);
		return;
	}
	for (const char *c = s; *c; ) {
		const char *end = strchr(c + 1, '/');
		size_t clen = end ? (size_t)(end - c - 1) : strlen(c + 1);

		if (clen == 0 || (clen == 1 && c[1] == '.') || (clen == 2 && c[1] == '.' && c[2] == '.')) {
			verr(v, item, "unix_sockets: '%s' has an empty, '.' or '..' component: write the path "
			     "the agent dials, without them (it is matched as spelled)", s);
			return;
		}
		if (!end)
			break;
		c = end;
	}
}

static void load_agent(struct vctx *v, const struct ynode *m, struct policy_agent *a, int idx)
{
	static const char *const keys[] = {
		"name", "cgroup", "identity", "accept_user_tokens", "limits", "unix_sockets", NULL };
	static const char *const limit_keys[] = { "connections", "connect_rate", "parse_cpu", "mask_cpu", NULL };
	const struct ynode *n, *l;
	long long conns, pct;

	a->line = m->line;
	a->max_connections = DEFAULT_CONNECTIONS;
	a->parse_cpu = DEFAULT_PARSE_CPU;
	a->connect_rate = DEFAULT_CONNECT_RATE;
	if (!want_map(v, m, "an agent"))
		return;
	check_keys(v, m, keys);
	if ((n = need(v, m, "name")) && (a->name = dup_name(v, n, "agent name")))
		ix_add(&v->agents, a->name, n, idx);
	if ((n = map_get(m, "cgroup")) && (a->cgroup = dup_str(v, n, "cgroup")))
		check_cgroup(v, n, a->cgroup);
	if ((n = map_get(m, "identity")))
		load_identity(v, n, &a->identity);
	if ((n = map_get(m, "accept_user_tokens"))) {
		want_bool(v, n, "accept_user_tokens", &a->accept_user_tokens);
		/* It hands the agent users' tokens, which a token file the
		 * agent can write could then hold as the agent's own: the file
		 * must be pinned to the agent's subject (ident.c verify_token()) */
		if (a->accept_user_tokens && a->identity.source == IDENT_TOKEN_FILE && !a->identity.client_id)
			verr(v, n, "accept_user_tokens with identity source 'token_file' needs identity.client_id: "
			     "the sub the agent's own token must name, or a user's token "
			     "written into the file would make the agent that user");
	}
	if ((n = map_get(m, "unix_sockets")))
		want_strv(v, n, "unix_sockets", &a->unix_sockets, check_unix_socket);
	if ((l = map_get(m, "limits")) && want_map(v, l, "limits")) {
		check_keys(v, l, limit_keys);
		if ((n = map_get(l, "connections")) &&
		    want_int(v, n, "connections", 1, 1000000, &conns))
			a->max_connections = (uint32_t)conns;
		if ((n = map_get(l, "connect_rate")) &&
		    want_int(v, n, "connect_rate", 1, 1000000, &conns))
			a->connect_rate = (uint32_t)conns;
		if ((n = map_get(l, "parse_cpu")) && want_int(v, n, "parse_cpu", 1, 100, &pct))
			a->parse_cpu = (uint32_t)pct;
		if ((n = map_get(l, "mask_cpu")) && want_int(v, n, "mask_cpu", 1, 25600, &pct))
			a->mask_cpu = (uint32_t)pct;
	}
}

static void need_for(struct vctx *v, const struct ynode *m, const char *key, const char *source)
{
	if (!map_get(m, key))
		verr(v, m, "missing required key '%s' (identity source '%s')", key, source);
}

static void not_for(struct vctx *v, const struct ynode *m, const char *key, const char *source)
{
	const struct ynode *k = map_key(m, key);

	if (k)
		verr(v, k, "'%s' does not apply to identity source '%s'", key, source);
}

static void check_identity(struct vctx *v, const struct ynode *m, enum policy_ident_source src)
{
	static const char *const local_extra[] = {
		"issuer", "client_id", "client_secret_file", "private_key_file",
		"audience", "token_file", "groups_claim", NULL };
	const struct ynode *secret, *pk;

	switch (src) {
	case IDENT_LOCAL:
		for (const char *const *k = local_extra; *k; k++)
			not_for(v, m, *k, "local");
		break;
	case IDENT_CLIENT_CREDENTIALS:
		need_for(v, m, "issuer", "client_credentials");
		need_for(v, m, "client_id", "client_credentials");
		need_for(v, m, "audience", "client_credentials");
		secret = map_key(m, "client_secret_file");
		pk = map_key(m, "private_key_file");
		if (!secret && !pk)
			verr(v, m, "identity source 'client_credentials' needs "
			     "'client_secret_file' or 'private_key_file'");
		if (secret && pk)
			verr(v, pk, "use 'client_secret_file' or 'private_key_file', not both");
		not_for(v, m, "token_file", "client_credentials");
		break;
	case IDENT_TOKEN_FILE:
		need_for(v, m, "token_file", "token_file");
		need_for(v, m, "issuer", "token_file");
		need_for(v, m, "audience", "token_file");
		not_for(v, m, "client_secret_file", "token_file");
		not_for(v, m, "private_key_file", "token_file");
		break;
	}
}

static void load_identity(struct vctx *v, const struct ynode *m, struct policy_identity *id)
{
	static const char *const keys[] = {
		"source", "issuer", "client_id", "client_secret_file", "private_key_file",
		"audience", "token_file", "groups_claim", NULL };
	static const char *const sources[] = {
		[IDENT_LOCAL] = "local", [IDENT_CLIENT_CREDENTIALS] = "client_credentials",
		[IDENT_TOKEN_FILE] = "token_file", NULL };
	const struct ynode *n;
	int src;

	if (!want_map(v, m, "identity"))
		return;
	check_keys(v, m, keys);
	if ((n = map_get(m, "source"))) {
		if ((src = want_enum(v, n, "identity source", sources)) < 0)
			return;
		id->source = (enum policy_ident_source)src;
	}
	if ((n = map_get(m, "issuer")))
		id->issuer = dup_url(v, n, "issuer");
	id->client_id = opt_str(v, m, "client_id");
	id->client_secret_file = secret_str(v, m, "client_secret_file");
	id->private_key_file = secret_str(v, m, "private_key_file");
	id->audience = opt_str(v, m, "audience");
	id->token_file = opt_str(v, m, "token_file");
	id->groups_claim = opt_str(v, m, "groups_claim");
	/* a claim that names the token, its client or its subject is no list
	 * of groups: with groups_claim: client_id, a binding on client_id was
	 * matched as a group, for users too (review, stop 28) */
	static const char *const reserved[] = { "sub", "client_id", "azp", "iss", "aud", "exp", "nbf",
						"iat", "jti", "act", "may_act", "cnf", NULL };
	for (int i = 0; id->groups_claim && reserved[i]; i++)
		if (strcmp(id->groups_claim, reserved[i]) == 0)
			verr(v, map_get(m, "groups_claim"), "groups_claim '%s' names a claim that is not a list of "
			     "groups (it identifies the token, its subject or its client)", reserved[i]);
	check_identity(v, m, id->source);
}

/* "/x" and "x" name the same cgroup (both are taken below the cgroup2 mount
 * unless they spell out the mount itself), so compare without the slash. */
static void effective_cgroup(const struct policy_agent *a, char *buf, size_t len)
{
	if (a->cgroup)
		snprintf(buf, len, "%s", a->cgroup + (a->cgroup[0] == '/'));
	else
		snprintf(buf, len, "agentgate/%s", a->name ? a->name : "");
}

/* Two agents in one cgroup would make a socket's identity a coin toss. */
static void check_cgroups_unique(struct vctx *v, const struct ynode *list, struct policy *p)
{
	char a[MAX_STR + 16], b[MAX_STR + 16];

	for (size_t j = 1; j < p->nagents; j++) {
		if (!p->agents[j].name)
			continue;
		effective_cgroup(&p->agents[j], b, sizeof(b));
		for (size_t i = 0; i < j; i++) {
			const struct ynode *at;

			/* the same name is reported as a duplicate already */
			if (!p->agents[i].name || strcmp(p->agents[i].name, p->agents[j].name) == 0)
				continue;
			effective_cgroup(&p->agents[i], a, sizeof(a));
			if (strcmp(a, b) != 0)
				continue;
			at = map_get(list->kid[j], "cgroup");
			verr(v, at ? at : map_get(list->kid[j], "name"),
			     "agents '%.64s' and '%.64s' share cgroup '%.64s'",
			     p->agents[i].name, p->agents[j].name, b);
			break;
		}
	}
}

static void load_agents(struct vctx *v, const struct ynode *n, struct policy *p)
{
	if (!want_list(v, n, "agents", MAX_AGENTS))
		return;
	if (n->n == 0) {
		verr(v, n, "agents must list at least one agent");
		return;
	}
	if (!(p->agents = xcalloc(v, n, n->n, sizeof(*p->agents))) ||
	    !ix_reserve(v, &v->agents, n, n->n))
		return;
	p->nagents = n->n;
	size_t nunix = 0;

	for (size_t i = 0; i < n->n; i++) {
		load_agent(v, n->kid[i], &p->agents[i], (int)i);
		nunix += p->agents[i].unix_sockets.n;
	}
	if (nunix > AG_UNIX_MAX)
		verr(v, n, "agents name %zu unix_sockets in all; the kernel's list holds %d", nunix, AG_UNIX_MAX);
	ix_finish(v, &v->agents, "agent");
	check_cgroups_unique(v, n, p);
}

/* ---- targets ---------------------------------------------------------- */

static void check_header_name(struct vctx *v, const struct ynode *n, const char *s)
{
	static const char tchar[] = "!#$%&'*+-.^_`|~";

	for (const char *c = s; *c; c++) {
		if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		    (*c >= '0' && *c <= '9') || strchr(tchar, *c))
			continue;
		verr(v, n, "header name '%.64s' is not a valid HTTP field name", s);
		return;
	}
}

static void load_header(struct vctx *v, const struct ynode *m, struct policy_upstream *u)
{
	static const char *const keys[] = { "name", "value_file", NULL };
	const struct ynode *n;

	if (!want_map(v, m, "header"))
		return;
	check_keys(v, m, keys);
	if ((n = need(v, m, "name")) && (u->header_name = dup_str(v, n, "header name")))
		check_header_name(v, n, u->header_name);
	if ((n = need(v, m, "value_file"))) {
		u->header_value_file = dup_str(v, n, "value_file");
		secret_check(v, n, "value_file", u->header_value_file);
	}
}

static void load_bearer(struct vctx *v, const struct ynode *n, struct policy_upstream *u)
{
	const char *s = want_str(v, n, "bearer");

	if (!s)
		return;
	if (strcmp(s, "agent_token") != 0) {
		/* what is there is likely a token written in the wrong key:
		 * never echoed (error output lands in CI logs) */
		verr(v, n, "bearer must be 'agent_token' (a fixed token comes from "
		     "'bearer_token_file'); the value given is not shown");
		return;
	}
	u->bearer_agent_token = true;
}

/* Upstream settings that contradict each other are refused rather than
 * resolved by some precedence the author never saw. */
static void check_upstream(struct vctx *v, const struct ynode *m)
{
	/* header too: http_upstream.c sends one credential, and would drop it */
	static const char *const auth[] = { "bearer_token_file", "basic_auth_file", "bearer", "header" };
	const struct ynode *first = NULL, *k;

	for (size_t i = 0; i < sizeof(auth) / sizeof(auth[0]); i++) {
		if (!(k = map_key(m, auth[i])))
			continue;
		if (first)
			verr(v, k, "'%s' conflicts with '%s': use one way to authenticate",
			     k->val, first->val);
		else
			first = k;
	}
	if (map_key(m, "cert_file") && !map_key(m, "key_file"))
		verr(v, map_key(m, "cert_file"), "'cert_file' needs 'key_file'");
	if (map_key(m, "key_file") && !map_key(m, "cert_file"))
		verr(v, map_key(m, "key_file"), "'key_file' needs 'cert_file'");
}

/* The pinned search_path is one schema, written as PostgreSQL would fold
 * it: the classifier resolves unqualified names in exactly that schema,
 * and a list ("app, public") or an upper-case name would make it look in
 * one the server does not use. */
static bool pinned_schema_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 63 || !((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!(s[i] >= 'a' && s[i] <= 'z') && !(s[i] >= '0' && s[i] <= '9') && s[i] != '_' && s[i] != '$')
			return false;
	return true;
}

static void load_upstream(struct vctx *v, const struct ynode *m, struct policy_target *t)
{
	static const char *const keys[] = {
		"address", "tls", "ca_file", "cert_file", "key_file", "server_name", "user",
		"password_file", "database", "search_path", "statement_timeout",
		"idle_in_transaction_session_timeout", "bearer_token_file", "basic_auth_file",
		"header", "bearer", "forwarded_for", "response_timeout", NULL };
	static const struct key_scope scope[] = {
		{ "user", P(PROTO_POSTGRES) }, { "password_file", P(PROTO_POSTGRES) },
		{ "database", P(PROTO_POSTGRES) }, { "search_path", P(PROTO_POSTGRES) },
		{ "statement_timeout", P(PROTO_POSTGRES) },
		{ "idle_in_transaction_session_timeout", P(PROTO_POSTGRES) },
		{ "bearer_token_file", P_HTTPISH }, { "basic_auth_file", P_HTTPISH },
		{ "header", P_HTTPISH }, { "bearer", P_HTTPISH }, { "forwarded_for", P_HTTPISH },
		{ "response_timeout", P_HTTPISH }, { NULL, 0 } };
	static const char *const tls_modes[] = { "disable", "require", "verify-full", NULL };
	struct policy_upstream *u = &t->upstream;
	const struct ynode *n;

	if (!want_map(v, m, "upstream"))
		return;
	check_keys(v, m, keys);
	check_scope(v, m, scope, t);
	check_upstream(v, m);
	if ((n = map_get(m, "address")) && want_addr(v, n, "upstream address", &u->address)) {
		u->has_address = true;
		if (u->address.kind == ADDR_CIDR)
			verr(v, n, "upstream address must be one host, not a network");
	}
	if ((n = map_get(m, "tls")) && want_enum(v, n, "tls", tls_modes) >= 0)
		u->tls = xstrdup(v, n, n->val);
	u->ca_file = trusted_str(v, m, "ca_file");
	u->cert_file = trusted_str(v, m, "cert_file");
	u->key_file = secret_str(v, m, "key_file");
	u->server_name = opt_str(v, m, "server_name");
	u->user = opt_str(v, m, "user");
	u->password_file = secret_str(v, m, "password_file");
	u->database = opt_str(v, m, "database");
	u->search_path = opt_str(v, m, "search_path");
	if (u->search_path && !pinned_schema_ok(u->search_path))
		verr(v, map_get(m, "search_path"), "search_path '%.64s' must be one schema name in lower "
		     "case (letters, digits, _ and $, at most 63 bytes): the enforcer resolves unqualified "
		     "names in that one schema, as PostgreSQL would", u->search_path);
	if ((n = map_get(m, "statement_timeout")))
		want_duration(v, n, "statement_timeout", &u->statement_timeout_ms);
	if ((n = map_get(m, "idle_in_transaction_session_timeout")))
		want_duration(v, n, "idle_in_transaction_session_timeout",
			      &u->idle_in_transaction_timeout_ms);
	u->bearer_token_file = secret_str(v, m, "bearer_token_file");
	u->basic_auth_file = secret_str(v, m, "basic_auth_file");
	if ((n = map_get(m, "header")))
		load_header(v, n, u);
	if ((n = map_get(m, "bearer")))
		load_bearer(v, n, u);
	if ((n = map_get(m, "forwarded_for")))
		want_bool(v, n, "forwarded_for", &u->forwarded_for);
	if ((n = map_get(m, "response_timeout")) &&
	    want_duration(v, n, "response_timeout", &u->response_timeout_ms) &&
	    (u->response_timeout_ms < 1000 || u->response_timeout_ms > POLICY_HTTP_RESPONSE_TIMEOUT_MAX_MS))
		verr(v, n, "response_timeout must be between 1s and 24h (the upstream's time to begin "
		     "its answer; a watch's long silent body is not counted)");
}

static void load_target(struct vctx *v, const struct ynode *m, struct policy_target *t, int idx)
{
	static const char *const keys[] = { "name", "protocol", "address", "upstream", "user_tokens", NULL };
	static const char *const utok[] = { "password", NULL };
	static const char *const protos[] = {
		[PROTO_TCP] = "tcp", [PROTO_TLS] = "tls", [PROTO_POSTGRES] = "postgres",
		[PROTO_HTTP] = "http", [PROTO_KUBERNETES] = "kubernetes", NULL };
	const struct ynode *n;
	int proto;

	t->line = m->line;
	t->proto = PROTO__COUNT;     /* "unknown" until read: skips protocol checks */
	if (!want_map(v, m, "a target"))
		return;
	check_keys(v, m, keys);
	if ((n = need(v, m, "name")) && (t->name = dup_name(v, n, "target name")))
		ix_add(&v->targets, t->name, n, idx);
	if ((n = need(v, m, "protocol")) && (proto = want_enum(v, n, "protocol", protos)) >= 0)
		t->proto = (enum policy_proto)proto;
	if ((n = need(v, m, "address")) && want_addr(v, n, "address", &t->addr))
		t->names_metadata = t->addr.kind == ADDR_IP &&
				    policy_is_metadata_addr(t->addr.addr);
	if ((n = map_get(m, "upstream")))
		load_upstream(v, n, t);
	/* Delegation to a postgres target: the agent's client sends the user's
	 * token as its password. */
	if ((n = map_get(m, "user_tokens"))) {
		if (t->proto != PROTO_POSTGRES && t->proto != PROTO__COUNT)
			verr(v, n, "user_tokens applies to postgres targets (http and kubernetes read "
			     "Authorization: Bearer)");
		else if (want_enum(v, n, "user_tokens", utok) == 0)
			t->user_token_password = true;
	}
}

struct addr_ref {
	const struct policy_addr *a;
	size_t idx;
};

static int addr_ref_cmp(const void *pa, const void *pb)
{
	const struct addr_ref *x = pa, *y = pb;
	const struct policy_addr *a = x->a, *b = y->a;
	int c;

	/* a CIDR of one address (10.0.0.5/32) is that address */
	enum policy_addr_kind ka = a->kind == ADDR_CIDR && a->prefixlen == 128 ? ADDR_IP : a->kind;
	enum policy_addr_kind kb = b->kind == ADDR_CIDR && b->prefixlen == 128 ? ADDR_IP : b->kind;

	if (ka != kb)
		return ka < kb ? -1 : 1;
	if (a->port != b->port)
		return a->port < b->port ? -1 : 1;
	if (a->kind == ADDR_HOST)
		c = strcmp(a->host, b->host);
	else if ((c = memcmp(a->addr, b->addr, 16)) == 0)
		c = (a->prefixlen > b->prefixlen) - (a->prefixlen < b->prefixlen);
	if (c)
		return c;
	return (x->idx > y->idx) - (x->idx < y->idx);
}

/* Two targets on one address would make the second unreachable. */
static void check_addresses_unique(struct vctx *v, const struct ynode *list, struct policy *p)
{
	struct addr_ref *refs = xcalloc(v, list, p->ntargets, sizeof(*refs));
	size_t n = 0, first = 0;

	if (!refs)
		return;
	for (size_t i = 0; i < p->ntargets; i++)
		if (p->targets[i].addr.port)     /* parsed */
			refs[n++] = (struct addr_ref){ &p->targets[i].addr, i };
	qsort(refs, n, sizeof(*refs), addr_ref_cmp);
	for (size_t j = 1; j < n; j++) {
		struct addr_ref a = refs[first], b = refs[j];
		struct addr_ref bare_a = { a.a, 0 }, bare_b = { b.a, 0 };

		if (addr_ref_cmp(&bare_a, &bare_b) != 0) {
			first = j;
			continue;
		}
		verr(v, map_get(list->kid[b.idx], "address"),
		     "target '%.64s' has the same address as target '%.64s' (line %d)",
		     p->targets[b.idx].name ? p->targets[b.idx].name : "?",
		     p->targets[a.idx].name ? p->targets[a.idx].name : "?",
		     p->targets[a.idx].line);
	}
	free(refs);
}

static void load_targets(struct vctx *v, const struct ynode *n, struct policy *p)
{
	if (!want_list(v, n, "targets", MAX_TARGETS))
		return;
	if (!(p->targets = xcalloc(v, n, n->n, sizeof(*p->targets))) ||
	    !ix_reserve(v, &v->targets, n, n->n))
		return;
	p->ntargets = n->n;
	for (size_t i = 0; i < n->n; i++)
		load_target(v, n->kid[i], &p->targets[i], (int)i);
	ix_finish(v, &v->targets, "target");
	check_addresses_unique(v, n, p);
}

/* ---- roles ------------------------------------------------------------ */

static void check_http_rule(struct vctx *v, const struct ynode *item, const char *s)
{
	const char *why;

	/* The http module's own check: a pattern no canonical path can equal
	 * ("GET /v1/../x", "GET /inv*") would silently never match. */
	if (http_rule_check(s, &why) < 0)
		verr(v, item, "http rule '%.64s': %s (write \"METHOD /path\", '*' one segment, '**' any depth)",
		     s, why);
}

static void check_json_path(struct vctx *v, const struct ynode *item, const char *s)
{
	char why[160];

	if (mask_json_path_check(s, why, sizeof(why)))
		verr(v, item, "json mask '%.64s': %s", s, why);
}

static void check_detector(struct vctx *v, const struct ynode *item, const char *s)
{
	char why[192];

	if (mask_detector_check(s, why, sizeof(why)))
		verr(v, item, "detector '%.64s': %s", s, why);
}

/* columns: "schema.table.column", each part as the catalog stores it.
 * Anything else would match no column and mask nothing, silently; whether
 * the column exists is checked at each session's start (proto_pg.c). */
static void check_mask_column(struct vctx *v, const struct ynode *item, const char *s)
{
	const char *d1 = strchr(s, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;

	if (!d2 || d1 == s || d2 == d1 + 1 || !d2[1] || strchr(d2 + 1, '.'))
		verr(v, item, "mask column '%.64s' must be schema.table.column (for example "
		     "public.customers.email)", s);
	else if (strlen(s) > 3 * 63 + 2)
		verr(v, item, "mask column '%.64s...' is longer than three PostgreSQL names", s);
}

/* statements: only what the SQL classifier can produce and enforce. */
static void check_pg_statement(struct vctx *v, const struct ynode *item, const char *s)
{
	if (!pgc_statement_name_known(s))
		verr(v, item, "unknown statement '%.64s' (a command tag such as select, insert, "
		     "create_table, or a class: read, write, ddl, admin)", s);
}

/* One part of a table or function name as the classifier reports it:
 * not empty, no dot, star, quote or white space (a quoted identifier's
 * own case is kept, so upper case may be meant). */
static bool pg_name_part_ok(const char *p, size_t n)
{
	if (!n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (p[i] == '.' || p[i] == '*' || p[i] == '"' || isspace((unsigned char)p[i]))
			return false;
	return true;
}

/* tables: "*", "table" (in the pinned schema), "schema.table" or
 * "schema.*", exactly what the matcher reads. Anything else matched no
 * table: harmless under allow, but under review it let the statement
 * through as allowed (review, stop 28). */
static void check_pg_table(struct vctx *v, const struct ynode *item, const char *s)
{
	const char *dot = strchr(s, '.');

	if (strcmp(s, "*") == 0 || (!dot && pg_name_part_ok(s, strlen(s))) ||
	    (dot && pg_name_part_ok(s, (size_t)(dot - s)) &&
	     (strcmp(dot + 1, "*") == 0 || pg_name_part_ok(dot + 1, strlen(dot + 1)))))
		return;
	verr(v, item, "table '%.64s' matches no table: write \"*\", \"table\", \"schema.table\" or "
	     "\"schema.*\" (no spaces, quotes or other stars)", s);
}

/* functions: "name" or "schema.name". */
static void check_pg_function(struct vctx *v, const struct ynode *item, const char *s)
{
	const char *dot = strchr(s, '.');

	if ((!dot && pg_name_part_ok(s, strlen(s))) ||
	    (dot && pg_name_part_ok(s, (size_t)(dot - s)) && pg_name_part_ok(dot + 1, strlen(dot + 1))))
		return;
	verr(v, item, "function '%.64s' matches no function: write \"name\" or \"schema.name\" "
	     "(no spaces, quotes or stars)", s);
}

static void load_action(struct vctx *v, const struct ynode *m, struct policy_action *a,
			bool review, const struct policy_target *t)
{
	static const char *const allow_keys[] = {
		"statements", "tables", "functions", "http", "verbs", "resources",
		"namespaces", NULL };
	static const char *const review_keys[] = {
		"statements", "tables", "functions", "http", "verbs", "resources",
		"namespaces", "timeout", NULL };
	static const struct key_scope scope[] = {
		{ "statements", P(PROTO_POSTGRES) }, { "tables", P(PROTO_POSTGRES) },
		{ "functions", P(PROTO_POSTGRES) }, { "http", P(PROTO_HTTP) },
		{ "verbs", P(PROTO_KUBERNETES) }, { "resources", P(PROTO_KUBERNETES) },
		{ "namespaces", P(PROTO_KUBERNETES) }, { NULL, 0 } };
	const struct ynode *n;
	uint32_t ms;

	if (!want_map(v, m, review ? "review" : "allow"))
		return;
	a->present = true;
	check_keys(v, m, review ? review_keys : allow_keys);
	check_scope(v, m, scope, t);
	/* An empty list is refused wherever one could be read two ways:
	 * as "nothing" under allow, and as a review that never holds anything. */
	if ((n = map_get(m, "statements"))) {
		want_strv(v, n, "statements", &a->statements, check_pg_statement);
		if (n->kind == Y_SEQ && n->n == 0)
			verr(v, n, "statements is empty: list the statements or classes (read, write, ...)");
	}
	if ((n = map_get(m, "tables"))) {
		want_strv(v, n, "tables", &a->tables, check_pg_table);
		/* no tables key grants every table; an empty list must not */
		if (n->kind == Y_SEQ && n->n == 0)
			verr(v, n, "tables is empty: list the tables, or leave the key out (or write \"*\") "
			     "to allow every table");
	}
	if ((n = map_get(m, "functions"))) {
		want_strv(v, n, "functions", &a->functions, check_pg_function);
		if (n->kind == Y_SEQ && n->n == 0)
			verr(v, n, "functions is empty: list the functions, or leave the key out");
	}
	if ((n = map_get(m, "http"))) {
		want_strv(v, n, "http", &a->http, check_http_rule);
		if (n->kind == Y_SEQ && n->n == 0)
			verr(v, n, "http is empty: list the methods and paths (\"GET /v1/*\")");
	}
	/*
	 * On a postgres target statements are what an action grants; tables and
	 * functions only narrow them. Without statements an action permits no
	 * statement: an allow so written grants nothing, and a review holds
	 * nothing, so what it was meant to hold ran on the allow alone
	 * (review: {tables: [payments]} beside allow: {statements: [write]}
	 * let every DELETE FROM payments through).
	 */
	if (t && t->proto == PROTO_POSTGRES && !map_get(m, "statements") &&
	    (review || map_get(m, "tables") || map_get(m, "functions")))
		verr(v, m, "%s names no statements: on a postgres target tables and functions narrow "
		     "the statements it %s; list them (statements: [write], or [delete] ...)",
		     review ? "review" : "allow", review ? "holds" : "allows");
	/* likewise a review on an http target holds only the requests it names */
	if (review && t && t->proto == PROTO_HTTP && !map_get(m, "http"))
		verr(v, m, "review names no requests: list them (http: [\"DELETE /v1/*\"])");
	if ((n = map_get(m, "verbs")))
		want_strv(v, n, "verbs", &a->verbs, NULL);
	if ((n = map_get(m, "resources")))
		want_strv(v, n, "resources", &a->resources, NULL);
	if ((n = map_get(m, "namespaces")))
		want_strv(v, n, "namespaces", &a->namespaces, NULL);
	if (t && t->proto == PROTO_KUBERNETES) {
		char why[200];

		/* A verb or resource no request can carry would match nothing, silently. */
		if (k8s_action_check(a, why, sizeof(why)))
			verr(v, m, "%s", why);
	}
	if (review && (n = map_get(m, "timeout")) && want_duration(v, n, "timeout", &ms)) {
		if (ms % 1000 != 0 || ms == 0 || ms / 1000 > MAX_REVIEW_S)
			verr(v, n, "review timeout must be whole seconds between 1s and 7d");
		else
			a->timeout_s = ms / 1000;
	}
}

static void load_mask(struct vctx *v, const struct ynode *m, struct policy_mask *mk,
		      const struct policy_target *t)
{
	static const char *const keys[] = { "columns", "detectors", "json", NULL };
	static const struct key_scope scope[] = {
		{ "columns", P(PROTO_POSTGRES) }, { "json", P_HTTPISH },
		{ "detectors", P_DATA }, { NULL, 0 } };
	const struct ynode *n;

	if (!want_map(v, m, "mask"))
		return;
	mk->present = true;
	check_keys(v, m, keys);
	check_scope(v, m, scope, t);
	if ((n = map_get(m, "columns")))
		want_strv(v, n, "columns", &mk->columns, check_mask_column);
	if ((n = map_get(m, "detectors")))
		want_strv(v, n, "detectors", &mk->detectors, check_detector);
	if ((n = map_get(m, "json")))
		want_strv(v, n, "json", &mk->json, check_json_path);
}

static void load_rule(struct vctx *v, const struct ynode *m, struct policy_role *role, size_t j)
{
	static const char *const keys[] = { "target", "allow", "review", "mask", NULL };
	struct policy_rule *rule = &role->rules[j];
	const struct policy_target *t = NULL;
	const struct ynode *n;

	rule->line = m->line;
	rule->index = (int)j;
	rule->role = role->name;
	if (role->name && asprintf(&rule->label, "role '%s' rule %d (line %d)", role->name, rule->index + 1,
				   rule->line) < 0) {
		rule->label = NULL;
		verr(v, m, "out of memory");
	}
	rule->target_idx = -1;
	rule->review.timeout_s = DEFAULT_REVIEW_S;
	if (!want_map(v, m, "a rule"))
		return;
	check_keys(v, m, keys);
	if ((n = need(v, m, "target")) && (rule->target = dup_str(v, n, "target"))) {
		rule->target_idx = ix_resolve(v, &v->targets, rule->target, n, "target");
		for (size_t k = 0; rule->target_idx >= 0 && k < j; k++)
			if (role->rules[k].target_idx == rule->target_idx)
				verr(v, n, "role already has a rule for target '%.64s' (line %d)",
				     rule->target, role->rules[k].line);
	}
	if (rule->target_idx >= 0)
		t = &v->p->targets[rule->target_idx];
	if ((n = map_get(m, "allow")))
		load_action(v, n, &rule->allow, false, t);
	if ((n = map_get(m, "review")))
		load_action(v, n, &rule->review, true, t);
	if ((n = map_get(m, "mask")))
		load_mask(v, n, &rule->mask, t);
}

static void load_role(struct vctx *v, const struct ynode *m, struct policy_role *r, int idx)
{
	static const char *const keys[] = { "name", "rules", NULL };
	const struct ynode *n;

	r->line = m->line;
	if (!want_map(v, m, "a role"))
		return;
	check_keys(v, m, keys);
	if ((n = need(v, m, "name")) && (r->name = dup_name(v, n, "role name")))
		ix_add(&v->roles, r->name, n, idx);
	if (!(n = map_get(m, "rules")) || !want_list(v, n, "rules", MAX_RULES))
		return;
	if (!(r->rules = xcalloc(v, n, n->n, sizeof(*r->rules))))
		return;
	r->nrules = n->n;
	for (size_t j = 0; j < n->n; j++)
		load_rule(v, n->kid[j], r, j);
}

static void load_roles(struct vctx *v, const struct ynode *n, struct policy *p)
{
	if (!want_list(v, n, "roles", MAX_ROLES))
		return;
	if (!(p->roles = xcalloc(v, n, n->n, sizeof(*p->roles))) ||
	    !ix_reserve(v, &v->roles, n, n->n))
		return;
	p->nroles = n->n;
	for (size_t i = 0; i < n->n; i++)
		load_role(v, n->kid[i], &p->roles[i], (int)i);
	ix_finish(v, &v->roles, "role");
}

/* ---- bindings --------------------------------------------------------- */

static void check_agent_known(struct vctx *v, const struct ynode *item, const char *s)
{
	ix_resolve(v, &v->agents, s, item, "agent");
}

static void load_claims(struct vctx *v, const struct ynode *m, struct policy_binding *b)
{
	size_t count = m->n / 2;

	if (!want_map(v, m, "claims"))
		return;
	if (count == 0) {
		verr(v, m, "claims must name at least one claim");
		return;
	}
	if (count > MAX_LIST) {
		verr(v, m, "claims has more than %d entries", MAX_LIST);
		return;
	}
	if (!(b->claim_names = xcalloc(v, m, count, sizeof(*b->claim_names))) ||
	    !(b->claim_values = xcalloc(v, m, count, sizeof(*b->claim_values))))
		return;
	b->nclaims = count;
	for (size_t i = 0; i < count; i++) {
		const struct ynode *k = m->kid[2 * i], *val = m->kid[2 * i + 1];

		b->claim_names[i] = dup_str(v, k, "claim name");
		want_strv(v, val, "claim values", &b->claim_values[i], NULL);
	}
}

static void load_binding(struct vctx *v, const struct ynode *m, struct policy_binding *b)
{
	static const char *const keys[] = { "role", "agents", "claims", NULL };
	const struct ynode *n, *agents, *claims;

	b->line = m->line;
	b->role_idx = -1;
	if (!want_map(v, m, "a binding"))
		return;
	check_keys(v, m, keys);
	if ((n = need(v, m, "role")) && (b->role = dup_str(v, n, "role")))
		b->role_idx = ix_resolve(v, &v->roles, b->role, n, "role");
	if ((agents = map_get(m, "agents")))
		want_strv(v, agents, "agents", &b->agents, check_agent_known);
	if ((claims = map_get(m, "claims")))
		load_claims(v, claims, b);
	if (!agents && !claims)
		verr(v, m, "a binding needs 'agents' or 'claims'");
	else if (agents && claims)
		/* read as "these agents, when they have these claims", it grants
		 * each side alone: the agents always, and every identity with
		 * the claims (review, stop 28) */
		verr(v, claims, "a binding takes 'agents' or 'claims', not both: each would grant the role "
		     "on its own (the agents always, any identity with the claims too); write two bindings");
	else if (agents && !claims && agents->kind == Y_SEQ && agents->n == 0)
		verr(v, agents, "a binding needs at least one agent or a 'claims' entry");
}

static void load_bindings(struct vctx *v, const struct ynode *n, struct policy *p)
{
	if (!want_list(v, n, "bindings", MAX_BINDINGS))
		return;
	if (!(p->bindings = xcalloc(v, n, n->n, sizeof(*p->bindings))))
		return;
	p->nbindings = n->n;
	for (size_t i = 0; i < n->n; i++)
		load_binding(v, n->kid[i], &p->bindings[i]);
}

/* ---- audit and approvals ---------------------------------------------- */

struct sink_shape {
	const char *need[3];
	const char *may[4];
};

static const struct sink_shape sink_shapes[] = {
	[SINK_FILE] = { { "path" }, { "rotate_bytes", "rotate_age", "keep" } },
	[SINK_STDOUT] = { { NULL }, { NULL } },
	[SINK_SYSLOG] = { { "address" }, { "transport", "ca_file" } },
	[SINK_SPLUNK_HEC] = { { "url", "token_file" }, { "index", "ack", "ack_timeout", "ca_file" } },
	[SINK_ELASTICSEARCH] = { { "url" }, { "index", "token_file", "ca_file" } },
	[SINK_WEBHOOK] = { { "url" }, { "token_file", "ca_file" } },
};

static bool in_arr(const char *const *arr, size_t n, const char *s)
{
	for (size_t i = 0; i < n && arr[i]; i++)
		if (strcmp(arr[i], s) == 0)
			return true;
	return false;
}

/* Keys that are valid for some sink but not this one; unknown keys are
 * reported by check_keys already. */
static void check_sink_shape(struct vctx *v, const struct ynode *m, enum policy_sink_type type,
			     const char *tname, const char *const *keys)
{
	const struct sink_shape *sh = &sink_shapes[type];

	for (size_t i = 0; i + 1 < m->n; i += 2) {
		const struct ynode *k = m->kid[i];

		if (k->kind != Y_SCALAR || strcmp(k->val, "type") == 0 || !in_list(keys, k->val) ||
		    in_arr(sh->need, 3, k->val) || in_arr(sh->may, 4, k->val))
			continue;
		verr(v, k, "'%.64s' does not apply to %s sinks", k->val, tname);
	}
	for (size_t i = 0; i < 3 && sh->need[i]; i++)
		if (!map_get(m, sh->need[i]))
			verr(v, m, "a %s sink needs '%s'", tname, sh->need[i]);
}

static void load_sink(struct vctx *v, const struct ynode *m, struct policy_sink *s)
{
	static const char *const keys[] = {
		"type", "path", "address", "transport", "url", "token_file", "index", "ca_file", "ack",
		"ack_timeout", "rotate_bytes", "rotate_age", "keep", NULL };
	static const char *const types[] = {
		[SINK_FILE] = "file", [SINK_STDOUT] = "stdout", [SINK_SYSLOG] = "syslog",
		[SINK_SPLUNK_HEC] = "splunk_hec", [SINK_ELASTICSEARCH] = "elasticsearch",
		[SINK_WEBHOOK] = "webhook", NULL };
	static const char *const transports[] = { "tcp", "tls", "relp", NULL };
	struct policy_addr addr;
	const struct ynode *n;
	int type;

	s->line = m->line;
	if (!want_map(v, m, "a sink"))
		return;
	check_keys(v, m, keys);
	if (!(n = need(v, m, "type")) || (type = want_enum(v, n, "sink type", types)) < 0)
		return;
	s->type = (enum policy_sink_type)type;
	check_sink_shape(v, m, s->type, types[type], keys);
	s->path = opt_str(v, m, "path");
	if ((n = map_get(m, "address")) && want_addr(v, n, "sink address", &addr)) {
		if (addr.kind == ADDR_CIDR)
			verr(v, n, "sink address must be one host, not a network");
		else
			s->address = xstrdup(v, n, n->val);
		free(addr.host);
	}
	if ((n = map_get(m, "transport")) && want_enum(v, n, "transport", transports) >= 0)
		s->transport = xstrdup(v, n, n->val);
	else if (s->type == SINK_SYSLOG && !n)
		s->transport = xstrdup(v, m, "tcp");
	if ((n = map_get(m, "url")))
		s->url = dup_url(v, n, "url");
	s->token_file = secret_str(v, m, "token_file");
	s->index = opt_str(v, m, "index");
	s->ca_file = trusted_str(v, m, "ca_file");
	if ((n = map_get(m, "ack")))
		want_bool(v, n, "ack", &s->ack);
	if ((n = map_get(m, "ack_timeout")) && want_duration(v, n, "ack_timeout", &s->ack_timeout_ms)) {
		if (!s->ack)
			verr(v, n, "ack_timeout needs 'ack: true'");
		else if (s->ack_timeout_ms < 1000 || s->ack_timeout_ms > 3600000)
			verr(v, n, "ack_timeout must be between 1s and 1h");
	}
	const char *txt;
	if ((n = map_get(m, "rotate_bytes")) && (txt = want_str(v, n, "rotate_bytes")) &&
	    !parse_size(txt, &s->rotate_bytes))
		verr(v, n, "bad size '%.64s' for rotate_bytes (use e.g. 100MiB)", txt);
	if ((n = map_get(m, "rotate_age")))
		want_duration(v, n, "rotate_age", &s->rotate_age_ms);
	s->keep = 5;
	long long keep;
	if ((n = map_get(m, "keep")) && want_int(v, n, "keep", 1, 1000, &keep))
		s->keep = (uint32_t)keep;
}

static void load_recording(struct vctx *v, const struct ynode *m, struct policy_audit *a)
{
	static const char *const keys[] = { "dir", "max_bytes", "max_age", NULL };
	const struct ynode *n;
	const char *s;

	if (!want_map(v, m, "recording"))
		return;
	check_keys(v, m, keys);
	if (!need(v, m, "dir"))
		return;
	a->recording_dir = opt_str(v, m, "dir");
	if ((n = map_get(m, "max_bytes")) && (s = want_str(v, n, "max_bytes")) &&
	    !parse_size(s, &a->recording_max_bytes))
		verr(v, n, "bad size '%.64s' for max_bytes (use e.g. 1GiB)", s);
	if ((n = map_get(m, "max_age")))
		want_duration(v, n, "recording max_age", &a->recording_max_age_ms);
}

static void load_spool(struct vctx *v, const struct ynode *m, struct policy_audit *a)
{
	static const char *const keys[] = { "dir", "max_bytes", "on_full", NULL };
	static const char *const on_full[] = { "drop_newest", "fail_closed", NULL };
	const struct ynode *n;
	const char *s;

	if (!want_map(v, m, "spool"))
		return;
	check_keys(v, m, keys);
	a->spool_dir = opt_str(v, m, "dir");
	if ((n = map_get(m, "max_bytes")) && (s = want_str(v, n, "max_bytes")) &&
	    !parse_size(s, &a->spool_max_bytes))
		verr(v, n, "bad size '%.64s' for max_bytes (use e.g. 1GiB, 512MiB, 10MB, "
		     "or bytes)", s);
	if ((n = map_get(m, "on_full")) && want_enum(v, n, "on_full", on_full) >= 0)
		a->on_full = xstrdup(v, n, n->val);
}

static void load_audit(struct vctx *v, const struct ynode *m, struct policy_audit *a)
{
	static const char *const keys[] = { "spool", "sinks", "recording", "allowed_requests", NULL };
	const struct ynode *n;

	if (!want_map(v, m, "audit"))
		return;
	check_keys(v, m, keys);
	if ((n = map_get(m, "allowed_requests")))
		want_bool(v, n, "allowed_requests", &a->allowed_requests);
	if ((n = map_get(m, "spool")))
		load_spool(v, n, a);
	if ((n = map_get(m, "recording")))
		load_recording(v, n, a);
	if (!(n = map_get(m, "sinks")) || !want_list(v, n, "sinks", MAX_SINKS))
		return;
	if (!(a->sinks = xcalloc(v, n, n->n, sizeof(*a->sinks))))
		return;
	a->nsinks = n->n;
	for (size_t i = 0; i < n->n; i++)
		load_sink(v, n->kid[i], &a->sinks[i]);
}

static void load_approvals(struct vctx *v, const struct ynode *m, struct policy *p)
{
	static const char *const keys[] = { "notify", NULL };
	static const char *const notify_keys[] = { "webhook", NULL };
	const struct ynode *notify, *n;

	if (!want_map(v, m, "approvals"))
		return;
	check_keys(v, m, keys);
	if (!(notify = map_get(m, "notify")) || !want_map(v, notify, "notify"))
		return;
	check_keys(v, notify, notify_keys);
	if ((n = map_get(notify, "webhook")))
		p->approvals_webhook = dup_url(v, n, "webhook");
}

/* ---- the whole policy ------------------------------------------------- */

static void load_version(struct vctx *v, const struct ynode *root, struct policy *p)
{
	const struct ynode *n = need(v, root, "version");
	long long ver;

	if (!n || !want_int(v, n, "version", INT_MIN, INT_MAX, &ver))
		return;
	if (ver != 1) {
		verr(v, n, "unsupported version %lld (this agentgate reads version 1)", ver);
		return;
	}
	p->version = 1;
}

static void load_root(struct vctx *v, const struct ynode *root, struct policy *p)
{
	static const char *const keys[] = {
		"version", "mode", "dns", "agents", "targets", "roles", "bindings", "audit",
		"approvals", NULL };
	static const char *const modes[] = {
		[POLICY_ENFORCE] = "enforce", [POLICY_OBSERVE] = "observe", NULL };
	const struct ynode *n;
	int mode;

	if (!want_map(v, root, "the policy"))
		return;
	check_keys(v, root, keys);
	load_version(v, root, p);
	if ((n = map_get(root, "mode")) && (mode = want_enum(v, n, "mode", modes)) >= 0)
		p->mode = (enum policy_mode)mode;
	if ((n = map_get(root, "dns")))
		load_dns(v, n, p);
	if ((n = need(v, root, "agents")))
		load_agents(v, n, p);
	/* Targets before roles, roles before bindings: each refers to the last. */
	if ((n = map_get(root, "targets")))
		load_targets(v, n, p);
	if ((n = map_get(root, "roles")))
		load_roles(v, n, p);
	if ((n = map_get(root, "bindings")))
		load_bindings(v, n, p);
	p->audit.allowed_requests = true;   /* every statement and request, by default */
	if ((n = map_get(root, "audit")))
		load_audit(v, n, &p->audit);
	if ((n = map_get(root, "approvals")))
		load_approvals(v, n, p);
	/* Audit must never hold up enforcement: dropping is the default. */
	if (!p->audit.on_full)
		p->audit.on_full = xstrdup(v, root, "drop_newest");
}

/* may_target/target_rule: what each agent may reach through bindings that
 * name it. Claim bindings depend on a token seen at run time, not here. */
static void compile(struct vctx *v, struct policy *p)
{
	size_t nt = p->ntargets;

	for (size_t i = 0; i < p->nagents; i++) {
		struct policy_agent *a = &p->agents[i];

		a->may_target = xcalloc(v, NULL, nt, sizeof(*a->may_target));
		a->target_rule = xcalloc(v, NULL, nt, sizeof(*a->target_rule));
		if (!a->may_target || !a->target_rule)
			return;
	}
	for (size_t b = 0; b < p->nbindings; b++) {
		const struct policy_binding *bd = &p->bindings[b];
		const struct policy_role *role;

		if (bd->role_idx < 0)
			continue;
		role = &p->roles[bd->role_idx];
		for (size_t k = 0; k < bd->agents.n; k++) {
			int ai = ix_find(&v->agents, bd->agents.v[k]);
			struct policy_agent *a;

			if (ai < 0)
				continue;
			a = &p->agents[ai];
			for (size_t r = 0; r < role->nrules; r++) {
				int t = role->rules[r].target_idx;

				if (t < 0 || a->may_target[t])
					continue;
				a->may_target[t] = true;
				a->target_rule[t] = &role->rules[r];
			}
		}
	}
}

/* Each agent holds at most POLICY_MAX_RULES_PER_TARGET rules for a target:
 * past that the modules deny every request, and `policy explain` (which
 * judges by the bindings by name) would say allow. The roles bound to an
 * agent by name are counted here; how many a token's claims bring is known
 * only at run time, where more than the bound is a denial with its reason
 * ("too many rules for this target"). Counting every claims binding for
 * every verified agent would refuse large organisations' policies that no
 * single principal comes near. */
static void check_rule_counts(struct vctx *v, struct policy *p)
{
	size_t nt = p->ntargets, nr = p->nroles, na = p->nagents, npairs = 0;
	size_t *stamp = calloc(nr ? nr : 1, sizeof(size_t));
	unsigned *cnt = calloc(nt ? nt : 1, sizeof(unsigned));
	size_t *first = calloc(na + 1, sizeof(size_t)), *fill = calloc(na + 1, sizeof(size_t));
	int *roles;

	for (size_t b = 0; b < p->nbindings; b++)
		npairs += p->bindings[b].agents.n;
	roles = calloc(npairs ? npairs : 1, sizeof(int));
	if (!stamp || !cnt || !first || !fill || !roles) {
		verr(v, NULL, "out of memory");
		goto out;
	}
	/* the roles bound to each agent by name, grouped by agent */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t b = 0; b < p->nbindings; b++)
			for (size_t k = 0; k < p->bindings[b].agents.n; k++) {
				int ai = ix_find(&v->agents, p->bindings[b].agents.v[k]);

				if (ai < 0 || p->bindings[b].role_idx < 0)
					continue;
				if (pass == 0)
					first[ai + 1]++;
				else
					roles[first[ai] + fill[ai]++] = p->bindings[b].role_idx;
			}
		for (size_t i = 0; pass == 0 && i < na; i++)
			first[i + 1] += first[i];
	}
	for (size_t i = 0; i < na; i++) {
		memset(cnt, 0, (nt ? nt : 1) * sizeof(*cnt));
		for (size_t k = first[i]; k < first[i + 1]; k++) {
			int r = roles[k];

			if (stamp[r] == i + 1)
				continue;   /* bound twice: one set of rules */
			stamp[r] = i + 1;
			for (size_t q = 0; q < p->roles[r].nrules; q++)
				if (p->roles[r].rules[q].target_idx >= 0)
					cnt[p->roles[r].rules[q].target_idx]++;
		}
		for (size_t t = 0; t < nt; t++)
			if (cnt[t] > POLICY_MAX_RULES_PER_TARGET)
				verr(v, NULL, "agent '%.64s' (line %d) has %u rules for target '%.64s' (roles bound "
				     "to it by name); at most %d are supported: merge roles", p->agents[i].name,
				     p->agents[i].line, cnt[t], p->targets[t].name, POLICY_MAX_RULES_PER_TARGET);
	}
out:
	free(stamp);
	free(cnt);
	free(first);
	free(fill);
	free(roles);
}

static void validate(struct policy_errors *errs, const char *file, const struct ynode *root,
		     struct policy *p)
{
	struct vctx v = { .errs = errs, .file = file, .p = p };

	load_root(&v, root, p);
	if (errs->total == 0)
		compile(&v, p);
	if (errs->total == 0)
		check_rule_counts(&v, p);
	ix_free(&v.agents);
	ix_free(&v.targets);
	ix_free(&v.roles);
}

/* ======================================================================
 * Freeing
 * ====================================================================== */

static void strv_free(struct policy_strv *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
}

static void upstream_free(struct policy_upstream *u)
{
	free(u->address.host);
	free(u->tls);
	free(u->ca_file);
	free(u->cert_file);
	free(u->key_file);
	free(u->server_name);
	free(u->user);
	free(u->password_file);
	free(u->database);
	free(u->search_path);
	free(u->bearer_token_file);
	free(u->basic_auth_file);
	free(u->header_name);
	free(u->header_value_file);
}

static void identity_free(struct policy_identity *id)
{
	free(id->issuer);
	free(id->client_id);
	free(id->client_secret_file);
	free(id->private_key_file);
	free(id->audience);
	free(id->token_file);
	free(id->groups_claim);
}

static void action_free(struct policy_action *a)
{
	strv_free(&a->statements);
	strv_free(&a->tables);
	strv_free(&a->functions);
	strv_free(&a->http);
	strv_free(&a->verbs);
	strv_free(&a->resources);
	strv_free(&a->namespaces);
}

static void role_free(struct policy_role *r)
{
	for (size_t j = 0; j < r->nrules; j++) {
		struct policy_rule *rule = &r->rules[j];

		free(rule->target);
		free(rule->label);
		action_free(&rule->allow);
		action_free(&rule->review);
		strv_free(&rule->mask.columns);
		strv_free(&rule->mask.detectors);
		strv_free(&rule->mask.json);
	}
	free(r->rules);
	free(r->name);
}

static void binding_free(struct policy_binding *b)
{
	free(b->role);
	strv_free(&b->agents);
	for (size_t i = 0; i < b->nclaims; i++) {
		if (b->claim_names)
			free(b->claim_names[i]);
		if (b->claim_values)
			strv_free(&b->claim_values[i]);
	}
	free(b->claim_names);
	free(b->claim_values);
}

static void audit_free(struct policy_audit *a)
{
	for (size_t i = 0; i < a->nsinks; i++) {
		struct policy_sink *s = &a->sinks[i];

		free(s->path);
		free(s->address);
		free(s->transport);
		free(s->url);
		free(s->token_file);
		free(s->index);
		free(s->ca_file);
	}
	free(a->sinks);
	free(a->recording_dir);
	free(a->spool_dir);
	free(a->on_full);
}

void policy_free(struct policy *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->nagents; i++) {
		struct policy_agent *a = &p->agents[i];

		free(a->name);
		free(a->cgroup);
		strv_free(&a->unix_sockets);
		identity_free(&a->identity);
		free(a->may_target);
		free(a->target_rule);
	}
	free(p->agents);
	for (size_t i = 0; i < p->ntargets; i++) {
		free(p->targets[i].name);
		free(p->targets[i].addr.host);
		upstream_free(&p->targets[i].upstream);
	}
	free(p->targets);
	for (size_t i = 0; i < p->nroles; i++)
		role_free(&p->roles[i]);
	free(p->roles);
	for (size_t i = 0; i < p->nbindings; i++)
		binding_free(&p->bindings[i]);
	free(p->bindings);
	audit_free(&p->audit);
	free(p->dns_upstream.host);
	strv_free(&p->dns_allow);
	free(p->approvals_webhook);
	free(p->path);
	free(p);
}

/* ======================================================================
 * Entry points
 * ====================================================================== */

static bool sha256_hex(const char *buf, size_t len, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	out[0] = '\0';
	if (!EVP_Digest(len ? buf : "", len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
		return false;
	for (unsigned int i = 0; i < mdlen; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 0xf];
	}
	out[64] = '\0';
	return true;
}

struct policy *policy_load_buffer(const char *name, const char *buf, size_t len,
				  struct policy_errors *errs)
{
	struct policy_errors scratch;
	struct ynode *root;
	struct policy *p;

	if (!errs)
		errs = &scratch;
	memset(errs, 0, sizeof(*errs));
	if (!name)
		name = "<buffer>";
	if (!buf) {
		buf = "";
		len = 0;
	}
	if (len > POLICY_MAX_FILE) {
		perr(errs, name, 0, 0, "policy is %zu bytes, more than the limit of %u",
		     len, POLICY_MAX_FILE);
		return NULL;
	}
	if (looks_like_json(name, buf, len) && !json_gate(name, buf, len, errs))
		return NULL;
	if (!(root = parse_tree(name, buf, len, errs))) {
		sort_errors(errs);
		return NULL;
	}
	p = calloc(1, sizeof(*p));
	if (!p || !(p->path = strdup(name)) || !sha256_hex(buf, len, p->hash))
		perr(errs, name, 0, 0, "out of memory");
	else
		validate(errs, name, root, p);
	ynode_free(root);
	if (errs->total > 0) {
		sort_errors(errs);
		policy_free(p);
		return NULL;
	}
	return p;
}

/* Reads at most POLICY_MAX_FILE + 1 bytes, so an oversized or endless file
 * (a FIFO, /dev/zero) is refused without being swallowed. */
static char *read_bounded(const char *path, size_t *len, struct policy_errors *errs)
{
	size_t cap = 64 * 1024, used = 0;
	char *buf = NULL, ebuf[128];
	struct stat st;
	int fd, err;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		err = errno;
		perr(errs, path, 0, 0, "cannot open: %s", strerror_r(err, ebuf, sizeof(ebuf)));
		return NULL;
	}
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
	    (uint64_t)st.st_size <= POLICY_MAX_FILE)
		cap = (size_t)st.st_size + 1;
	for (;;) {
		ssize_t r;

		if (!buf || used == cap) {
			char *nb;

			if (buf)
				cap = cap * 2 > POLICY_MAX_FILE + 1 ? POLICY_MAX_FILE + 1 : cap * 2;
			if (!(nb = realloc(buf, cap))) {
				perr(errs, path, 0, 0, "out of memory");
				goto fail;
			}
			buf = nb;
		}
		r = read(fd, buf + used, cap - used);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err = errno;
			perr(errs, path, 0, 0, "cannot read: %s",
			     strerror_r(err, ebuf, sizeof(ebuf)));
			goto fail;
		}
		if (r == 0)
			break;
		used += (size_t)r;
		if (used > POLICY_MAX_FILE) {
			perr(errs, path, 0, 0, "policy file is larger than %u bytes",
			     POLICY_MAX_FILE);
			goto fail;
		}
	}
	close(fd);
	*len = used;
	return buf;
fail:
	free(buf);
	close(fd);
	return NULL;
}

struct policy *policy_load_file(const char *path, struct policy_errors *errs)
{
	struct policy_errors scratch;
	struct policy *p;
	size_t len = 0;
	char *buf;

	if (!errs)
		errs = &scratch;
	memset(errs, 0, sizeof(*errs));
	if (!path) {
		perr(errs, "<none>", 0, 0, "no policy file given");
		return NULL;
	}
	if (!(buf = read_bounded(path, &len, errs)))
		return NULL;
	p = policy_load_buffer(path, buf, len, errs);
	free(buf);
	return p;
}
