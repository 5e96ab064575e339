/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pg_classify: the PostgreSQL statement classifier and verdict (pure library,
 * no I/O, no logging). The wire module (proto_pg) hands it the SQL text of one
 * Query or Parse message and the rules the principal holds for the target;
 * it answers allow / review / deny with the class, command tag and every
 * relation the message touches.
 *
 * The text is parsed with libpg_query (PG 15.1 grammar). Anything that does
 * not parse, does not validate as UTF-8, holds a NUL, or uses a statement the
 * classifier does not model is denied. The classifier assumes what the wire
 * module guarantees: client_encoding is UTF8, standard_conforming_strings is
 * on, and search_path is pinned to ctx->search_path (statements that could
 * change any of these are always denied here).
 *
 * Name resolution (documented in pg_classify.c, "Names"): an unqualified
 * relation resolves to ctx->search_path, except PostgreSQL 15's catalog
 * relations, which resolve to pg_catalog (it is searched first implicitly),
 * and other names starting with "pg_", which count as both; pg_temp is
 * reported as pg_temp; three-part names are denied.
 *
 * Threads: pgc_judge() may be called from any number of threads at once; the
 * verdict cache is per thread (no locks), freed when the thread exits.
 */
#ifndef AGENTGATE_PG_CLASSIFY_H
#define AGENTGATE_PG_CLASSIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"

enum pgc_verdict { PGC_DENY = 0, PGC_ALLOW, PGC_REVIEW };

/* A message's class is that of its most significant statement:
 * admin > ddl > write > read > utility > transaction. */
enum pgc_class { PGC_READ, PGC_WRITE, PGC_DDL, PGC_ADMIN, PGC_TRANSACTION, PGC_UTILITY };

#define PGC_MAX_TABLES 32
#define PGC_MAX_STMTS  64           /* statements per message; more are denied */
#define PGC_MAX_SQL    (1u << 20)   /* longer texts are denied */

/*
 * What the database itself defines in the pinned schema, read from its
 * catalog by the wire module when a session starts. An unqualified name
 * reaches these without the statement naming a schema: PostgreSQL resolves
 * functions and operators by argument types over the whole search_path, so
 * a public.lower(integer) wins `lower(id)` over pg_catalog's (pg_catalog
 * first only breaks ties), a public.+ (text, integer) runs for
 * `'a'::text + 1`, and `t.f` calls f(t) when t has no column f. Arrays are
 * sorted (strcmp order) and hold no duplicates; NULL arrays are empty.
 */
struct pgc_catalog {
	const char *const *funcs;        /* every function, procedure and aggregate */
	size_t nfuncs;
	const char *const *row_funcs;    /* those one argument can call: t.f may be f(t) */
	size_t nrow_funcs;
	const char *const *ops;          /* operator symbols not installed by an extension */
	size_t nops;
	const char *const *types;        /* types (but enums and extensions'): a cast to one may
					  * run the database's code (a domain's CHECK, also for an
					  * array, range or row of one; a cast function) */
	size_t ntypes;
	const char *const *opclasses;    /* operator classes (but extensions'): their support
					  * functions run on every row an index or constraint sees */
	size_t nopclasses;
	/* SHA-256 of all five (the wire module computes it): part of the
	 * verdict cache key, so sessions that see different catalogs never
	 * share a verdict. */
	uint8_t hash[32];
};

struct pgc_ctx {                     /* per session, from the wire module */
	const char *search_path;         /* pinned single schema, e.g. "public"; NULL = "public" */
	bool in_transaction;             /* BEGIN seen and not ended (informational) */
	/* Ignored: whether a transaction may be made read-write is computed from
	 * the rules (pgc_rules_may_write); kept so callers can record it. */
	bool tx_read_write_granted;
	/*
	 * Masked-column predicate (from the mask library); may be NULL (no masks).
	 * column == NULL asks "does this table have any masked column?" — needed
	 * for whole-row references, SELECT * in non-output positions and COPY.
	 * Names are as PostgreSQL resolves them (case-folded unless quoted).
	 */
	bool (*column_masked)(void *arg, const char *schema, const char *table, const char *column);
	void *arg;
	/* What arg is, for the verdict cache: a value no other arg ever had
	 * (a session's memory, freed, comes back as another session's at the
	 * same address). With arg set and arg_id 0, nothing is cached. */
	uint64_t arg_id;
	/*
	 * Verdict cache. policy_gen must change whenever the rules or the masks
	 * behind column_masked/arg may have changed (a policy reload, a different
	 * principal's mask set); 0 disables the cache for this call. settings is
	 * every other session setting that can change the verdict, as one string
	 * (may be NULL). Rule pointers, column_masked, arg and arg_id are part
	 * of the key too.
	 */
	uint64_t policy_gen;
	const char *settings;
	/* The pinned schema's functions and operators; NULL when not known
	 * (`policy explain`, which has no database): then only PostgreSQL's
	 * own names are judged. */
	const struct pgc_catalog *catalog;
	/* The session ran a statement that can change those names (a result's
	 * changes_names): catalog no longer says what they are, so every name
	 * is taken as one the database may define, until the next session. */
	bool names_stale;
	/*
	 * The agent's budget for uncached work (both may be NULL): may_parse is
	 * asked before a statement no cached verdict covers is parsed (false:
	 * denied with its why as the reason, nothing cached); spent is told the
	 * thread CPU time the parse took (a long text's pre-scan included).
	 */
	bool (*may_parse)(void *garg, char *why, size_t whylen);
	void (*spent)(void *garg, uint64_t cpu_ns);
	void *garg;
	/* Who the verdicts are cached for (the agent, 1-based; 0: no one in
	 * particular). The cache is the worker's, shared by every agent: one
	 * owner holds at most half of each set, so an agent sending new texts
	 * evicts its own entries first, not the other agents'. */
	uint32_t owner;
};

/*
 * One statement of a message, in the order of the text: what one audit
 * event per statement needs. verdict is the statement's own: allow (by
 * rule, or implicitly: rule NULL), review, or deny. Only a judged deny
 * (judged true) is the reason a message was denied; a statement after it
 * was not judged (verdict deny, judged false, tag and class from its node
 * type alone, no tables).
 */
struct pgc_stmt {
	enum pgc_verdict verdict;
	enum pgc_class cls;
	bool judged;
	char tag[32];
	const struct policy_rule *rule;
	uint32_t tables;                 /* bit i: the message's tables[i] */
	uint8_t first_table;             /* 1 + the index of the first relation the walk met
					  * (a CREATE's target: its RangeVar comes first), 0: none */
	uint8_t into_table;              /* 1 + the index of SELECT INTO's new table, 0: none */
};

struct pgc_result {
	enum pgc_verdict verdict;
	enum pgc_class cls;              /* of the most significant statement in the message */
	char tag[32];                    /* command tag of the first statement, lower case:
					  * "select", "insert", "create_table" */
	int nstmts;                      /* entries in stmts[] (0: empty text or parse error) */
	const struct policy_rule *rule;  /* deciding rule (allow or review); NULL on deny, and on
					  * allow when only implicitly allowed statements were seen
					  * (transaction control, harmless SET/SHOW, empty text) */
	char reason[256];                /* deny: why, e.g. "table public.secrets not allowed" */
	bool copy_in, copy_out;          /* COPY FROM STDIN / TO STDOUT (allowed only if a
					  * rule named copy) */
	bool cached;                     /* served from the verdict cache */
	bool ends_tx, begins_tx;         /* transaction control seen (for the wire module's tx tracking) */
	bool changes_names;              /* a statement that can create, rename or move functions or
					  * operators (CREATE FUNCTION, CREATE OPERATOR/AGGREGATE,
					  * RENAME, SET SCHEMA, CREATE/ALTER EXTENSION): later
					  * statements of the message, and the wire module's
					  * session from then on, judge with names_stale */
	int denied_stmt;                 /* deny: the statement reason is about (index into
					  * stmts[]), -1 when it is about the whole text */
	/* Everything from here on is large and valid only up to ntables and
	 * nstmts (a call clears the fields above, not these arrays). */
	int ntables;
	char tables[PGC_MAX_TABLES][128];/* schema.table, deduplicated; overflow -> deny */
	struct pgc_stmt stmts[PGC_MAX_STMTS];
};

/*
 * Judges one Query/Parse message's SQL text (may hold several statements;
 * must be valid UTF-8 and NUL-free; len bytes, no terminator needed) against
 * the rules the principal holds for this target: an array of nrules rule
 * pointers (their allow/review actions' statements/tables/functions lists).
 * Fills *out completely. Returns 0, or -ENOMEM (out is then a deny; any
 * error is a deny). Never crashes on any input.
 *
 * Rule semantics: every statement of the message must be permitted by one
 * rule's allow action (statements: tag or class; tables: every relation;
 * functions: every function outside the built-in safe list) for ALLOW; if
 * some statement is only permitted by a review action, REVIEW; otherwise
 * DENY. Statements that need no rule (transaction control, SET/RESET of a
 * few harmless settings, SHOW, CLOSE, the empty text) are allowed unless
 * they would make a read-only role's transaction read-write.
 *   statements: tags ("select", "insert", "create_table", ...) or classes
 *               (read, write, ddl, admin); an absent list permits nothing.
 *               COPY needs the tag "copy" named (a class does not grant it).
 *   tables:     "schema.table", "table" (in the pinned schema), "schema.*",
 *               "*"; names as PostgreSQL stores them (lower case unless
 *               created quoted). An absent list means any table; a rule
 *               with a list never grants DDL/admin statements whose objects
 *               the classifier cannot name (e.g. DROP FUNCTION, GRANT).
 *   functions:  "name" or "schema.name"; an unqualified call matches "name",
 *               "<pinned>.name" and "pg_catalog.name".
 * The result's rule is the deciding rule; cached results hold rule
 * pointers, valid while the policy generation they were made under is.
 * Needs 2 MiB of stack (the default 8 MiB is plenty): see nesting_ok().
 */
int pgc_judge(const struct pgc_ctx *ctx, const char *sql, size_t len,
	      const struct policy_rule *const *rules, size_t nrules, struct pgc_result *out);

/* For delegation the caller judges twice (agent's rules, user's rules) and
 * combines into agent: allow only if both allow, review if either says
 * review (and neither denies), deny otherwise; the denial reason is kept.
 * Per statement (stmts[]) the same. */
void pgc_combine(struct pgc_result *agent, const struct pgc_result *user);

/*
 * The length of the start of sql (len bytes) that holds its first n
 * statements, as PostgreSQL's parser splits the text: up to the end of
 * statement n - 1, before the ';' after it. total is how many statements
 * the text must hold (those pgc_judge() found). For the wire module, which
 * sends the statements before a denied one as PostgreSQL would have run
 * them. Returns 0 and *out; -EINVAL when the text does not split into total
 * statements (or n is not in 1..total), -ENOMEM. Parses the text again: the
 * caller pays for it.
 */
int pgc_stmts_prefix(const char *sql, size_t len, int n, int total, size_t *out);

/* "read", "write", "ddl", "admin", "transaction", "utility". */
const char *pgc_class_name(enum pgc_class c);

/* True when some rule's allow or review action grants a write, ddl or admin
 * statement (so BEGIN READ WRITE / SET TRANSACTION READ WRITE is allowed). */
bool pgc_rules_may_write(const struct policy_rule *const *rules, size_t nrules);

/* Why a Parse message may not declare a parameter of type OID oid (its
 * value would read the catalog, or run code the database defined), as a
 * phrase for a denial; NULL when the type is allowed. */
const char *pgc_param_type_refused(uint32_t oid);

/* True when s is a statements: entry the classifier understands (a class
 * name or a command tag it can produce). For policy validation. */
bool pgc_statement_name_known(const char *s);

/* Drops the calling thread's verdict cache (tests; a worker before exit). */
void pgc_cache_flush(void);

/* Built-in safe function allowlist (pg_funcs.c): true when name (lower case,
 * unqualified or pg_catalog) is a pure builtin an agent may call. */
bool pgc_builtin_function_safe(const char *name);
/* True when name is a pg_catalog function a whole row can be passed to as
 * its only argument (row_to_json, count, concat...): `t.name` may call it. */
bool pgc_builtin_takes_row(const char *name);
/* True when name is a pg_catalog function one argument can call that is
 * not immutable (pg_sleep, lo_unlink...): `g.name` over a FROM item that
 * is a function may call it. */
bool pgc_builtin_acts(const char *name);

#endif /* AGENTGATE_PG_CLASSIFY_H */
