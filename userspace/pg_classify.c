// SPDX-License-Identifier: Apache-2.0
/*
 * pg_classify: statement classes, relations, functions and masked-column
 * uses of one message's SQL, and the verdict against the principal's rules.
 *
 * The walk (a summary; details at each function):
 *   - libpg_query parses the text (JSON output, tokenized by
 *     pg_classify_json.c). Every element of stmts[] is one statement; each
 *     gets its own verdict and the message is denied if any is denied.
 *   - Statements are dispatched by node type (the kinds[] table). Node types
 *     the table does not know are denied. Nested statements (data-modifying
 *     CTEs, EXPLAIN's query, CREATE TABLE AS, DECLARE, COPY (query), rule
 *     actions, CREATE SCHEMA elements) are found wherever they sit and add
 *     their needs to the statement that holds them: EXPLAIN [ANALYZE] X is
 *     judged as X, whatever its options (the notes' advice: don't interpret
 *     "ANALYZE false").
 *   - The parse-tree shape trap (notes §0.8): typed fields such as
 *     DeleteStmt.relation or IntoClause.rel hold a bare RangeVar, not
 *     {"RangeVar": ...}. Every object carrying "relname" is a RangeVar (in
 *     PG 15's raw trees only RangeVar has that field), so relations are
 *     found in both shapes, and the generic walk visits every field of
 *     every node it does not handle specially.
 *   - Functions: every FuncCall, and CALL's bare one. Built-ins on the safe
 *     list (pg_funcs.c) are allowed; anything else needs a rule's
 *     functions: entry. set_config is always denied (it changes settings).
 *
 * Names: the wire module pins search_path to ctx->search_path and forbids
 * changing it, so an unqualified relation is ctx->search_path.name, with two
 * exceptions. pg_catalog is searched before the pinned schema implicitly,
 * so an unqualified name of one of PostgreSQL 15's catalog relations
 * (catalog_rels[]) is taken as pg_catalog.name; another name starting with
 * "pg_" is the pinned schema's, or a newer server's catalog relation, and
 * counts as both. pg_temp is searched before all of them, which only
 * matters if the agent may create temporary tables (a ddl grant), in which
 * case its own temp table shadows — data it created itself. Names written
 * with a schema are used as written (pg_temp included). Three-part names are
 * denied, and so are identifiers containing '.' (they would make
 * "schema.table" ambiguous). Unqualified functions and operators resolve
 * over the whole search_path by argument types (pg_catalog first only for
 * ties), so the built-in lists judge them by name only where the pinned
 * schema does not define the same name: the wire module reads the schema's
 * own functions and operators from the catalog (ctx->catalog). A name it
 * defines is a call of the database's function (the safe list no longer
 * vouches for it; a rule must name it), an operator symbol it defines is
 * denied unqualified (and CASE x WHEN / JOIN USING, which compare with "="
 * by name, when that is "="); symbols pg_catalog lacks are denied anyway
 * (catalog_ops[]). Attribute notation: `t.f` calls f(t) when t has no
 * column f, and `(e).f` calls f(e) for e of any type (colref(),
 * indirection()). A statement that can add such names (changes_names())
 * makes every later one take every name as the database's.
 *
 * Masked columns (DESIGN §3): a masked column may appear only as a plain
 * output column of the statement's result. Each SELECT keeps a scope of its
 * FROM items; a column reference is looked up in the scope chain
 * (conservatively: an unqualified name is masked if any table in any
 * enclosing scope masks it). Subqueries in FROM and CTEs are "derived"
 * tables that remember which of their output columns carry masked lineage,
 * so `SELECT x.cc FROM (SELECT cc FROM customers) x` is a plain output and
 * `... WHERE x.cc = '4'` is not. Column aliases in FROM (`customers AS
 * c(a, b, x)`) rename columns, so a table with masked columns aliased that
 * way has every column treated as masked. A bare name equal to a FROM item
 * whose table has masked columns is a whole-row reference (`SELECT c FROM
 * customers c`, `row_to_json(c)`): denied. ORDER BY / GROUP BY / DISTINCT
 * ON by output name or position of a masked output: denied. Set operations
 * (UNION...) and DISTINCT lose lineage or compare values: masked outputs
 * there are denied. RETURNING, INSERT ... SELECT, CREATE TABLE AS, views
 * and COPY are not result outputs.
 *
 * Decisions (each a row of kinds[] or a handler below):
 *   - Implicitly allowed, no rule needed: transaction control (BEGIN/START
 *     [READ ONLY], COMMIT, ROLLBACK, SAVEPOINT, RELEASE, ROLLBACK TO, SET
 *     TRANSACTION/SESSION CHARACTERISTICS, SET CONSTRAINTS), SET/RESET of
 *     the harmless settings in harmless_settings[], SHOW, CLOSE, and the
 *     empty text. Anything that would make a transaction read-write (BEGIN
 *     READ WRITE, SET TRANSACTION READ WRITE, SET SESSION CHARACTERISTICS
 *     ... READ WRITE) is denied unless some rule grants a non-read
 *     statement (pgc_rules_may_write). Two-phase commit is denied.
 *   - Always denied, whatever the rules: SET/RESET of any other setting
 *     (standard_conforming_strings, client_encoding/NAMES, search_path/
 *     SCHEMA, role, session_authorization, default_transaction_read_only,
 *     transaction_read_only, statement_timeout, custom "x.y" ...), RESET
 *     ALL, DISCARD (any), set_config(), INSERT/UPDATE/DELETE/MERGE on
 *     pg_catalog.pg_settings (its UPDATE rule calls set_config) and DDL
 *     over it (a view over it is updatable), ALTER
 *     SYSTEM, ALTER ROLE/DATABASE ... SET, COPY to/from a file or PROGRAM,
 *     DO, LISTEN/NOTIFY/UNLISTEN,
 *     SQL-level PREPARE/EXECUTE/DEALLOCATE (not tracked: use the protocol's
 *     Parse), FETCH/MOVE (cursors are not tracked), LOAD, DDL or admin
 *     statements touching a table with masked columns.
 *   - EXPLAIN [ANALYZE] X is judged as X (plain EXPLAIN too: the options
 *     are not interpreted), with no column an output: a plan shows widths.
 *     DECLARE ... CURSOR FOR X is judged as X.
 *   - INSERT/UPDATE/DELETE/MERGE add select when they read: a non-empty
 *     RETURNING, or a relation named other than as the target (walk_dml).
 *   - A cast to (or a column of) a relation's row type reads the relation
 *     (row_type_read); the settings and credentials catalogs (secret_rels)
 *     and the planner statistics (stats_rels) no rule grants.
 *   - COPY ... TO STDOUT / FROM STDIN needs a rule whose statements: names
 *     "copy" (a class never grants it), FROM STDIN insert (or write) as
 *     well, and is denied for any table with
 *     masked columns; COPY (query) TO STDOUT checks the query as a
 *     non-output.
 *   - CALL p(...) needs "call" (or "write") and p in the rule's functions:;
 *     so does CREATE [EVENT] TRIGGER ... EXECUTE FUNCTION f() for f, and
 *     DDL that binds a function to an operator, aggregate, cast,
 *     conversion or operator class (ddl_functions()).
 *   - CASCADE (TRUNCATE, DROP, ALTER TABLE ... DROP ...) reaches objects
 *     the text does not name: like DDL on unnamed objects, only a rule
 *     without tables: may allow it.
 *   - INSERT ... ON CONFLICT DO UPDATE adds update; MERGE adds update,
 *     delete and insert for its WHEN clauses that do so.
 *   - SELECT ... FOR UPDATE/SHARE adds a write-class need
 *     (select_for_update, ...); SELECT INTO adds select_into (ddl) and the
 *     new table.
 */
#include "pg_classify.h"

/* How a session whose names may be stale gets them back (proto_pg.c, names epochs). */
#define READ_AGAIN "read again at its next statement outside a transaction once no change is open, or by a new session"
#include "pg_classify_json.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#define MAX_STMTS       PGC_MAX_STMTS
#define MAX_NEEDS       12     /* (tag, class) pairs per statement */
#define MAX_FUNCS       32     /* distinct non-built-in functions per message */
#define MAX_ENTRIES     512    /* FROM items per message */
#define MAX_DERIVED     256    /* subqueries and CTEs per message */
#define MAX_CTES        128
#define MAX_MASKED      16     /* masked output names remembered per derived table */
#define MAX_WALK_DEPTH  600    /* recursion of the tree walk */
#define NAME_MAX_LEN    64     /* NAMEDATALEN: identifiers are at most 63 bytes */

struct need {
	const char *tag;
	enum pgc_class cls;
	bool tag_only;             /* only the tag grants it (copy) */
};

struct stmt_info {
	const char *tag;
	char tagbuf[32];
	enum pgc_class cls;
	bool has_cls;
	struct need needs[MAX_NEEDS];
	int nneeds;
	uint32_t tables;           /* bits into out->tables */
	uint8_t first_table;       /* 1 + the index of the first relation walked, 0: none */
	uint8_t into_table;        /* 1 + the index of SELECT INTO's new table, 0: none */
	uint32_t funcs;            /* bits into walker.funcs */
	bool implicit;             /* allowed without a rule (transaction control, ...) */
	bool opaque;               /* names objects the walk cannot see: no tables: rule fits */
};

struct entry;

struct derived {
	const char *masked[MAX_MASKED];
	int nmasked;
	/* FROM items whose columns pass through a '*' or 't.*' output (their
	 * masked columns keep their names) */
	const struct entry *src[MAX_MASKED];
	int nsrc;
	bool star_masked;          /* every column may carry masked lineage */
};

enum ent_kind { ENT_TABLE, ENT_DERIVED, ENT_OPAQUE };

struct entry {
	const char *refname;       /* alias, or the relation's name */
	bool any_name;             /* ENT_OPAQUE without a name we know: t.f matches it for any t */
	enum ent_kind kind;
	const char *schema, *rel;  /* ENT_TABLE */
	struct derived *d;         /* ENT_DERIVED */
	struct entry *next;
};

struct cte {
	const char *name;
	struct derived *d;
	struct cte *next;
	bool pending;              /* WITH RECURSIVE: listed, not walked yet */
};

struct scope {
	struct scope *parent;
	struct entry *ents;
	struct cte *ctes;
};

/* What a SELECT's own target list put out, for ORDER BY / GROUP BY checks. */
struct selout {
	const char *names[MAX_MASKED];
	int nnames;
	bool star_masked, overflow;
	bool star;                 /* a '*' or 't.*' item: positions after it are not items */
	uint64_t masked_pos;       /* bit k-1: output k is a masked column (k <= 64) */
	int nout;
};

struct func {
	char schema[NAME_MAX_LEN];     /* "" when unqualified */
	char name[NAME_MAX_LEN];
	/* How the statement reaches it when that is not a plain call, for
	 * the denial ("" for a call). An unqualified name the pinned schema
	 * also defines is not granted by a pg_catalog.name entry (db_shadow). */
	const char *how;
	bool db_shadow;
};

struct walker {
	struct pgj j;
	bool into_next;                /* the relation added next is SELECT INTO's */
	bool typeof_cast;              /* the FuncCall walked next is a cast's argument */
	const struct pgc_ctx *ctx;
	const char *schema;            /* the pinned search_path */
	struct pgc_result *out;
	struct stmt_info *st;
	struct stmt_info stmts[MAX_STMTS];
	int nst;
	struct func funcs[MAX_FUNCS];
	int nfuncs;
	struct entry ents[MAX_ENTRIES];
	int nents;
	struct derived ders[MAX_DERIVED];
	int nders;
	struct cte ctes[MAX_CTES];
	int nctes;
	int depth;
	int deny_at;                   /* the statement whose walk denied, else -1 */
	bool denied, nocache, may_write;
	bool names_unknown;            /* ctx->names_stale, or an earlier statement changed them */
	int in_from_func;              /* inside a function (or XMLTABLE) in FROM */
	bool explain;                  /* inside EXPLAIN: no column is an output */
	unsigned lineage_steps;        /* derived_has() calls so far (LINEAGE_STEPS_MAX) */
	unsigned rel_reads;            /* relations named outside a DML target, so far */
};

static void deny(struct walker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void deny(struct walker *w, const char *fmt, ...)
{
	va_list ap;

	if (w->denied)
		return;
	w->denied = true;
	va_start(ap, fmt);
	vsnprintf(w->out->reason, sizeof(w->out->reason), fmt, ap);
	va_end(ap);
}

/* ---- small helpers over the token tree ---- */

static const char *get_str(struct walker *w, int obj, const char *key)
{
	int v = pgj_get(&w->j, obj, key);

	return v >= 0 ? pgj_str(&w->j, v) : NULL;
}

static bool get_bool(struct walker *w, int obj, const char *key)
{
	return pgj_is(&w->j, pgj_get(&w->j, obj, key), "true");
}

/* The body of a wrapped node of type 'type' at i, or -1. */
static int node_of(struct walker *w, int i, const char *type)
{
	int body, k = pgj_unwrap(&w->j, i, &body);

	return k >= 0 && pgj_is(&w->j, k, type) ? body : -1;
}

/* {"String":{"sval":"x"}} -> "x"; NULL for anything else. */
static const char *string_node(struct walker *w, int i)
{
	int b = node_of(w, i, "String");

	return b >= 0 ? get_str(w, b, "sval") : NULL;
}

static bool enter(struct walker *w)
{
	if (++w->depth > MAX_WALK_DEPTH) {
		deny(w, "statement nested too deeply");
		return false;
	}
	return !w->denied;
}

static void leave(struct walker *w)
{
	w->depth--;
}

static int class_rank(enum pgc_class c)
{
	switch (c) {
	case PGC_TRANSACTION: return 0;
	case PGC_UTILITY: return 1;
	case PGC_READ: return 2;
	case PGC_WRITE: return 3;
	case PGC_DDL: return 4;
	case PGC_ADMIN: return 5;
	}
	return 5;
}

static void set_class(struct stmt_info *st, enum pgc_class c)
{
	if (!st->has_cls || class_rank(c) > class_rank(st->cls))
		st->cls = c;
	st->has_cls = true;
}

static void add_need(struct walker *w, const char *tag, enum pgc_class cls, bool tag_only)
{
	struct stmt_info *st = w->st;

	if (!st->tag)
		st->tag = tag;
	set_class(st, cls);
	for (int i = 0; i < st->nneeds; i++)
		if (strcmp(st->needs[i].tag, tag) == 0 && st->needs[i].cls == cls)
			return;
	if (st->nneeds == MAX_NEEDS) {
		deny(w, "statement too complex (more than %d kinds of action)", MAX_NEEDS);
		return;
	}
	st->needs[st->nneeds++] = (struct need){ tag, cls, tag_only };
}

/* ---- relations ---- */

/*
 * pg_catalog's planner statistics: most_common_vals, histogram_bounds and
 * the like are values sampled from every column the database user may
 * read, masked ones and those of tables no rule allows included, so no
 * rule grants them (pg_catalog.* would otherwise).
 */
static const char *const stats_rels[] = {
	"pg_statistic", "pg_statistic_ext_data", "pg_stats", "pg_stats_ext", "pg_stats_ext_exprs",
};

/*
 * pg_catalog relations that show settings or secrets SHOW and
 * current_setting() are refused for: per-role and per-database settings
 * (pg_db_role_setting; rolconfig/useconfig of pg_roles, pg_authid, pg_user,
 * pg_shadow, which also hold password hashes), every server setting
 * (pg_settings, pg_file_settings), the server's authentication files
 * (pg_hba_file_rules, pg_ident_file_mappings), and the options (passwords)
 * of user mappings and subscriptions' connection strings (review, stop 64:
 * pg_catalog.* granted them). No rule grants them; ::regrole and aclitem,
 * which read pg_authid, go with them.
 */
static const char *const secret_rels[] = {
	"pg_authid", "pg_db_role_setting", "pg_file_settings", "pg_hba_file_rules",
	"pg_ident_file_mappings", "pg_roles", "pg_settings", "pg_shadow", "pg_subscription",
	"pg_user", "pg_user_mapping", "pg_user_mappings",
};

static bool in_sorted(const char *const *v, size_t n, const char *name);

static void record_table(struct walker *w, const char *schema, const char *rel);

/* Records schema.rel as read or written by the statement, or denies it. */
static void add_table(struct walker *w, const char *schema, const char *rel)
{
	record_table(w, schema, rel);
	/* recorded first, so the denial's audit names it */
	if (strcmp(schema, "pg_catalog") == 0 &&
	    in_sorted(secret_rels, sizeof(secret_rels) / sizeof(secret_rels[0]), rel))
		deny(w, "pg_catalog.%s shows server, role or database settings (or credentials) "
		     "that SHOW is refused for", rel);
}

static void record_table(struct walker *w, const char *schema, const char *rel)
{
	struct pgc_result *o = w->out;
	char name[sizeof(o->tables[0])];
	int n = snprintf(name, sizeof(name), "%s.%s", schema, rel);

	if (strcmp(schema, "pg_catalog") == 0)
		for (size_t i = 0; i < sizeof(stats_rels) / sizeof(stats_rels[0]); i++)
			if (strcmp(rel, stats_rels[i]) == 0) {
				deny(w, "pg_catalog.%s holds values sampled from every column, masked ones "
				     "and tables no rule allows included", rel);
				return;
			}
	/* A TOAST table holds the out-of-line values (over about 2 KB) of its
	 * table, masked columns included, as raw chunks no column lineage
	 * follows: under tables: ["*"] or pg_toast.* a superuser upstream
	 * would return them (review, stop 46). No rule grants them. */
	if (strcmp(schema, "pg_toast") == 0 || strncmp(schema, "pg_toast_temp_", 14) == 0) {
		deny(w, "%s.%s holds raw out-of-line values of another table, masked ones included",
		     schema, rel);
		return;
	}
	/* Other sessions' statement texts, literals and all: every agent of a
	 * target logs in as the same database user, and sees the others'
	 * (and the applications' sharing it) WHERE email = '...' (review, stop
	 * 25). pg_stat_statements keeps utility statements' texts verbatim;
	 * it is an extension, in whatever schema it was created. */
	if ((strcmp(schema, "pg_catalog") == 0 && strcmp(rel, "pg_stat_activity") == 0) ||
	    strcmp(rel, "pg_stat_statements") == 0) {
		deny(w, "%s.%s holds other sessions' statement texts, their values included", schema, rel);
		return;
	}

	if (n < 0 || (size_t)n >= sizeof(name)) {
		deny(w, "relation name too long");
		return;
	}
	/* audit events list a message's tables joined by commas: a quoted name
	 * holding one ("customers,x") would read as two (review, stop 26);
	 * names holding a dot are refused where they are read */
	if (strchr(schema, ',') || strchr(rel, ',')) {
		deny(w, "a schema or relation name holding a comma is not allowed");
		return;
	}
	for (int i = 0; i < o->ntables; i++) {
		if (strcmp(o->tables[i], name) == 0) {
			w->st->tables |= 1u << i;
			if (!w->st->first_table)
				w->st->first_table = (uint8_t)(i + 1);
			if (w->into_next)
				w->st->into_table = (uint8_t)(i + 1);
			return;
		}
	}
	if (o->ntables == PGC_MAX_TABLES) {
		deny(w, "more than %d relations in one message", PGC_MAX_TABLES);
		return;
	}
	memcpy(o->tables[o->ntables], name, (size_t)n + 1);
	w->st->tables |= 1u << o->ntables;
	if (!w->st->first_table)
		w->st->first_table = (uint8_t)(o->ntables + 1);
	if (w->into_next)
		w->st->into_table = (uint8_t)(o->ntables + 1);
	o->ntables++;
}

/*
 * The relations (tables and views) of PostgreSQL 15's pg_catalog, sorted
 * (strcmp order: bsearch; the unit test checks it). An unqualified name
 * resolves to pg_catalog only if the catalog has it: pg_catalog is searched
 * first, and the pinned schema after it, so `FROM pg_private` reads
 * public.pg_private (a user's table, or an extension's view such as
 * pg_stat_statements, which lands in public) when pg_catalog has none.
 */
static const char *const catalog_rels[] = {
	"pg_aggregate", "pg_am", "pg_amop", "pg_amproc", "pg_attrdef", "pg_attribute",
	"pg_auth_members", "pg_authid", "pg_available_extension_versions", "pg_available_extensions",
	"pg_backend_memory_contexts", "pg_cast", "pg_class", "pg_collation", "pg_config",
	"pg_constraint", "pg_conversion", "pg_cursors", "pg_database", "pg_db_role_setting",
	"pg_default_acl", "pg_depend", "pg_description", "pg_enum", "pg_event_trigger",
	"pg_extension", "pg_file_settings", "pg_foreign_data_wrapper", "pg_foreign_server",
	"pg_foreign_table", "pg_group", "pg_hba_file_rules", "pg_ident_file_mappings", "pg_index",
	"pg_indexes", "pg_inherits", "pg_init_privs", "pg_language", "pg_largeobject",
	"pg_largeobject_metadata", "pg_locks", "pg_matviews", "pg_namespace", "pg_opclass",
	"pg_operator", "pg_opfamily", "pg_parameter_acl", "pg_partitioned_table", "pg_policies",
	"pg_policy", "pg_prepared_statements", "pg_prepared_xacts", "pg_proc", "pg_publication",
	"pg_publication_namespace", "pg_publication_rel", "pg_publication_tables", "pg_range",
	"pg_replication_origin", "pg_replication_origin_status", "pg_replication_slots", "pg_rewrite",
	"pg_roles", "pg_rules", "pg_seclabel", "pg_seclabels", "pg_sequence", "pg_sequences",
	"pg_settings", "pg_shadow", "pg_shdepend", "pg_shdescription", "pg_shmem_allocations",
	"pg_shseclabel", "pg_stat_activity", "pg_stat_all_indexes", "pg_stat_all_tables",
	"pg_stat_archiver", "pg_stat_bgwriter", "pg_stat_database", "pg_stat_database_conflicts",
	"pg_stat_gssapi", "pg_stat_progress_analyze", "pg_stat_progress_basebackup",
	"pg_stat_progress_cluster", "pg_stat_progress_copy", "pg_stat_progress_create_index",
	"pg_stat_progress_vacuum", "pg_stat_recovery_prefetch", "pg_stat_replication",
	"pg_stat_replication_slots", "pg_stat_slru", "pg_stat_ssl", "pg_stat_subscription",
	"pg_stat_subscription_stats", "pg_stat_sys_indexes", "pg_stat_sys_tables",
	"pg_stat_user_functions", "pg_stat_user_indexes", "pg_stat_user_tables", "pg_stat_wal",
	"pg_stat_wal_receiver", "pg_stat_xact_all_tables", "pg_stat_xact_sys_tables",
	"pg_stat_xact_user_functions", "pg_stat_xact_user_tables", "pg_statio_all_indexes",
	"pg_statio_all_sequences", "pg_statio_all_tables", "pg_statio_sys_indexes",
	"pg_statio_sys_sequences", "pg_statio_sys_tables", "pg_statio_user_indexes",
	"pg_statio_user_sequences", "pg_statio_user_tables", "pg_statistic", "pg_statistic_ext",
	"pg_statistic_ext_data", "pg_stats", "pg_stats_ext", "pg_stats_ext_exprs", "pg_subscription",
	"pg_subscription_rel", "pg_tables", "pg_tablespace", "pg_timezone_abbrevs",
	"pg_timezone_names", "pg_transform", "pg_trigger", "pg_ts_config", "pg_ts_config_map",
	"pg_ts_dict", "pg_ts_parser", "pg_ts_template", "pg_type", "pg_user", "pg_user_mapping",
	"pg_user_mappings", "pg_views",
};

static int cmp_str(const void *key, const void *elem)
{
	return strcmp(key, *(const char *const *)elem);
}

/* Sorted lists of names: catalog_rels[], catalog_ops[], a pgc_catalog's. */
static bool in_sorted(const char *const *v, size_t n, const char *name)
{
	return n && bsearch(name, v, n, sizeof(*v), cmp_str) != NULL;
}

static bool list_sorted(const char *const *v, size_t n)
{
	for (size_t i = 1; i < n; i++)
		if (strcmp(v[i - 1], v[i]) >= 0)
			return false;
	return true;
}

static bool catalog_relation(const char *name)
{
	return in_sorted(catalog_rels, sizeof(catalog_rels) / sizeof(catalog_rels[0]), name);
}

/* For the unit test: the list's order is what bsearch relies on. */
bool pgc_catalog_list_sorted(void);
bool pgc_catalog_list_sorted(void)
{
	return list_sorted(catalog_rels, sizeof(catalog_rels) / sizeof(catalog_rels[0])) &&
	       list_sorted(secret_rels, sizeof(secret_rels) / sizeof(secret_rels[0]));
}

/*
 * The schema of an unqualified relation name (see "Names"): pg_catalog
 * for PostgreSQL 15's catalog relations, else the pinned schema. A pg_*
 * name this list does not know may be a newer server's catalog relation
 * (found there first) or the pinned schema's: pg_catalog.name is recorded
 * as well, so a rule must allow both.
 */
static const char *unqualified_schema(struct walker *w, const char *rel)
{
	if (strncmp(rel, "pg_", 3) != 0)
		return w->schema;
	if (catalog_relation(rel))
		return "pg_catalog";
	if (!strchr(rel, '.'))
		add_table(w, "pg_catalog", rel);
	return w->schema;
}

static struct cte *find_cte(struct scope *sc, const char *name)
{
	for (; sc; sc = sc->parent)
		for (struct cte *c = sc->ctes; c; c = c->next)
			if (strcmp(c->name, name) == 0)
				return c;
	return NULL;
}

/*
 * A RangeVar body (wrapped or bare). Resolves it under the pinned path (see
 * "Names" above), records the table, and returns the CTE it names instead
 * when it is an unqualified name of a CTE in scope (CTE names shadow
 * tables). schema and rel are set for tables. Returns false when denied.
 */
static bool relation(struct walker *w, int rv, struct scope *sc, bool may_be_cte,
		     const char **schema, const char **rel, struct cte **cte)
{
	const char *s = get_str(w, rv, "schemaname"), *r = get_str(w, rv, "relname");

	*cte = NULL;
	if (pgj_get(&w->j, rv, "catalogname") >= 0) {
		deny(w, "cross-database reference not allowed");
		return false;
	}
	if (!r || !*r) {
		deny(w, "relation without a name");
		return false;
	}
	if (!s && may_be_cte && (*cte = find_cte(sc, r))) {
		/* In WITH RECURSIVE every CTE sees every other, the later ones
		 * too: a name that reads a CTE whose lineage is not known yet
		 * would be taken for the table it shadows. */
		if ((*cte)->pending) {
			deny(w, "WITH RECURSIVE: %s is used before its definition", r);
			return false;
		}
		return true;
	}
	if (!s) {
		const char *p = get_str(w, rv, "relpersistence");

		if (p && strcmp(p, "t") == 0)
			s = "pg_temp";
		else
			s = unqualified_schema(w, r);
	}
	if (strchr(s, '.') || strchr(r, '.')) {
		deny(w, "identifiers containing '.' are not supported");
		return false;
	}
	add_table(w, s, r);
	w->rel_reads++;
	*schema = s;
	*rel = r;
	return !w->denied;
}

static bool masked(struct walker *w, const char *schema, const char *rel, const char *col)
{
	if (!w->ctx->column_masked)
		return false;
	return w->ctx->column_masked(w->ctx->arg, schema, rel, col);
}

static struct derived *new_derived(struct walker *w)
{
	struct derived *d;

	if (w->nders == MAX_DERIVED) {
		deny(w, "too many subqueries");
		return NULL;
	}
	d = &w->ders[w->nders++];
	memset(d, 0, sizeof(*d));
	return d;
}

static struct entry *add_entry(struct walker *w, struct scope *sc, const char *refname,
			       enum ent_kind kind)
{
	struct entry *e;

	if (w->nents == MAX_ENTRIES) {
		deny(w, "too many FROM items");
		return NULL;
	}
	e = &w->ents[w->nents++];
	memset(e, 0, sizeof(*e));
	e->refname = refname;
	e->kind = kind;
	e->next = sc->ents;
	sc->ents = e;
	return e;
}

static bool entry_masked_at(struct walker *w, const struct entry *e, const char *col, int depth);

/*
 * Lineage is a graph, not a tree: every reference to a CTE shares its
 * derived table, so a short text (CTEs that each select from sixteen copies
 * of the one before) makes the number of paths 16^levels, and an unbounded
 * walk ran for minutes on one worker. Past this many steps the statement is
 * refused; a real query's lineage takes a few dozen.
 */
#define LINEAGE_STEPS_MAX 20000

/* Does derived table d expose col (NULL: any column) with masked lineage? */
static bool derived_has(struct walker *w, const struct derived *d, const char *col, int depth)
{
	if (w->denied)
		return true;   /* the verdict is made; no more work for it */
	if (++w->lineage_steps > LINEAGE_STEPS_MAX) {
		deny(w, "statement too complex (lineage of masked columns past %d steps)",
		     LINEAGE_STEPS_MAX);
		return true;
	}
	if (d->star_masked || depth > 32)
		return true;
	if (!col && d->nmasked)
		return true;
	for (int i = 0; col && i < d->nmasked; i++)
		if (strcmp(d->masked[i], col) == 0)
			return true;
	for (int i = 0; i < d->nsrc; i++)
		if (entry_masked_at(w, d->src[i], col, depth + 1))
			return true;
	return false;
}

static void derived_add(struct derived *d, const char *col)
{
	if (d->nmasked == MAX_MASKED)
		d->star_masked = true;  /* too many to remember: treat all as masked */
	else
		d->masked[d->nmasked++] = col;
}

static void derived_add_src(struct derived *d, const struct entry *e)
{
	for (int i = 0; i < d->nsrc; i++)
		if (d->src[i] == e)
			return;
	if (d->nsrc == MAX_MASKED)
		d->star_masked = true;
	else
		d->src[d->nsrc++] = e;
}

static bool entry_masked_at(struct walker *w, const struct entry *e, const char *col, int depth)
{
	switch (e->kind) {
	case ENT_TABLE:
		return masked(w, e->schema, e->rel, col);
	case ENT_DERIVED:
		return derived_has(w, e->d, col, depth);
	case ENT_OPAQUE:
		return false;
	}
	return true;
}

/* Does entry e expose col with masked lineage? col == NULL: any column. */
static bool entry_masked(struct walker *w, const struct entry *e, const char *col)
{
	return entry_masked_at(w, e, col, 0);
}

/* ---- forward declarations of the mutually recursive walk ---- */

static void expr(struct walker *w, int i, struct scope *sc);
static void oid_type_read(struct walker *w, const char *type);
static void walk_select(struct walker *w, int body, struct scope *parent, bool output,
			bool stmtpos, struct derived *dout);
static void walk_query(struct walker *w, int node, struct scope *sc, bool output, bool stmtpos,
		       struct derived *dout);
static void statement(struct walker *w, int key, int body, struct scope *sc, bool top);
static void note_function_how(struct walker *w, const char *schema, const char *name,
			      const char *how, bool db_shadow);
static bool db_function(const struct walker *w, const char *name);
static bool db_row_function(const struct walker *w, const char *name);

/* ---- columns ---- */

/*
 * A ColumnRef body. output: it is a plain output column of a result (then a
 * masked column is fine and is recorded in so/dout). Elsewhere a masked
 * column, a whole-row reference to a table with masked columns, or a star
 * over one, is denied.
 */
static void colref(struct walker *w, int body, struct scope *sc, bool output,
		   struct selout *so, struct derived *dout, const char *outname)
{
	int fields = pgj_get(&w->j, body, "fields");
	const char *part[4] = { NULL };
	int n = 0;
	bool star = false;

	for (int f = pgj_first(&w->j, fields); f >= 0; f = pgj_after(&w->j, fields, f)) {
		if (node_of(w, f, "A_Star") >= 0) {
			star = true;
			if (pgj_after(&w->j, fields, f) >= 0) {
				deny(w, "malformed column reference");
				return;
			}
			break;
		}
		if (n == 4 || !(part[n] = string_node(w, f))) {
			deny(w, "malformed column reference");
			return;
		}
		n++;
	}
	if (star) {
		/* t.* or *: the qualifying entry, or every entry of this scope;
		 * a derived table records them as sources, by column name */
		bool m = false, found = false;

		for (struct entry *e = sc->ents; e; e = e->next) {
			if (n && strcmp(e->refname ? e->refname : "", part[n - 1]) != 0)
				continue;
			found = true;
			if (entry_masked(w, e, NULL)) {
				m = true;
				if (output && dout)
					derived_add_src(dout, e);
			}
		}
		if (n && !found)        /* t.* naming something not in this scope */
			for (struct scope *s = sc->parent; s; s = s->parent)
				for (struct entry *e = s->ents; e; e = e->next)
					if (e->refname && strcmp(e->refname, part[n - 1]) == 0 &&
					    entry_masked(w, e, NULL)) {
						m = true;
						if (output && dout)
							derived_add_src(dout, e);
					}
		if (!m)
			return;
		if (!output) {
			if (w->explain)
				deny(w, "EXPLAIN of masked columns (%s*): a plan shows a column's statistics "
				     "(its average width)", n ? "qualified " : "");
			else
				deny(w, "masked columns used outside a plain output column (%s*)",
				     n ? "qualified " : "");
			return;
		}
		if (so)
			so->star_masked = true;
		return;
	}
	if (n == 0) {
		deny(w, "malformed column reference");
		return;
	}
	const char *col = part[n - 1];
	bool m = false, found = false;

	if (n == 1) {
		/* PostgreSQL takes a column first, a whole-row reference to a
		 * FROM item second; either way a masked table is involved. */
		for (struct scope *s = sc; s && !w->denied; s = s->parent) {
			for (struct entry *e = s->ents; e; e = e->next) {
				if (e->refname && strcmp(e->refname, col) == 0 &&
				    entry_masked(w, e, NULL)) {
					deny(w, "whole-row reference to %s, which has masked columns",
					     col);
					return;
				}
				m |= entry_masked(w, e, col);
			}
		}
	} else {
		const char *q = part[n - 2], *qs = n >= 3 ? part[n - 3] : NULL;
		bool row_masked = false, opaque = false;

		for (struct scope *s = sc; s; s = s->parent) {
			for (struct entry *e = s->ents; e; e = e->next) {
				bool match = (e->refname && strcmp(e->refname, q) == 0) || (e->any_name && !qs);

				if (match && qs)
					match = e->kind == ENT_TABLE && strcmp(e->schema, qs) == 0;
				if (!match)
					continue;
				found = true;
				m |= entry_masked(w, e, col);
				row_masked |= entry_masked(w, e, NULL);
				opaque |= e->kind == ENT_OPAQUE;
			}
			/* Every level, not just the nearest that matches: the
			 * scope model is coarser than PostgreSQL's (a non-LATERAL
			 * subquery in FROM and a JOIN's ON do not see sibling
			 * FROM items, (a JOIN b) AS j hides a and b), so a name
			 * matched here may be an outer one there. Taking all of
			 * them can only deny more. */
		}
		if (!found) {   /* unresolvable here: be conservative */
			opaque = true;
			for (struct scope *s = sc; s; s = s->parent)
				for (struct entry *e = s->ents; e; e = e->next) {
					m |= entry_masked(w, e, col);
					row_masked |= entry_masked(w, e, NULL);
				}
		}
		/*
		 * Attribute notation: when t has no column col, t.col is the
		 * call col(t) of a function taking t's whole row (PostgreSQL
		 * tries the column first). Without the table's columns the two
		 * cannot be told apart, so a name that can take a row is judged
		 * as that call: over a table with masked columns it would read
		 * them all (c.row_to_json), and a function no safe list or rule
		 * names must not run (o.touch). A real column of that name is
		 * refused the same way, with the reason. Over a function in
		 * FROM (or a name not in scope) t may be a scalar, so any
		 * one-argument function that is not immutable may be called
		 * (g.pg_sleep).
		 */
		bool takes_row = pgc_builtin_takes_row(col) || db_row_function(w, col);
		bool call = takes_row || (opaque && pgc_builtin_acts(col));

		if (takes_row && row_masked) {
			deny(w, "%s.%s may be the call %s(%s) of the whole row of a table with masked "
			     "columns (attribute notation)", q, col, col, q);
			return;
		}
		if (call && (db_function(w, col) || !pgc_builtin_function_safe(col)))
			note_function_how(w, NULL, col, " (attribute notation: t.f may call f(t))",
					  db_function(w, col));
		else if (call && strcmp(col, "pg_typeof") == 0)
			oid_type_read(w, "regtype");    /* see funccall() */
	}
	if (!m || w->denied)
		return;
	if (!output) {
		if (w->explain)
			deny(w, "EXPLAIN of masked column %s: a plan shows a column's statistics (its "
			     "average width)", col);
		else
			deny(w, "masked column %s used outside a plain output column", col);
		return;
	}
	if (so) {
		if (so->nnames < MAX_MASKED)
			so->names[so->nnames++] = outname ? outname : col;
		else
			so->overflow = true;
	}
	if (dout)
		derived_add(dout, outname ? outname : col);
}

/* ---- functions and operators ---- */

static void note_function_how(struct walker *w, const char *schema, const char *name,
			      const char *how, bool db_shadow)
{
	int i;

	w->nocache = true;      /* a rule-granted function may take object names */
	for (i = 0; i < w->nfuncs; i++)
		if (strcmp(w->funcs[i].schema, schema ? schema : "") == 0 &&
		    strcmp(w->funcs[i].name, name) == 0)
			break;
	if (i == w->nfuncs) {
		if (i == MAX_FUNCS) {
			deny(w, "more than %d functions in one message", MAX_FUNCS);
			return;
		}
		snprintf(w->funcs[i].schema, NAME_MAX_LEN, "%s", schema ? schema : "");
		snprintf(w->funcs[i].name, NAME_MAX_LEN, "%s", name);
		w->funcs[i].how = "";
		w->nfuncs++;
	}
	if (how && !*w->funcs[i].how)
		w->funcs[i].how = how;
	w->funcs[i].db_shadow |= db_shadow;
	w->st->funcs |= 1u << i;
}

static void note_function(struct walker *w, const char *schema, const char *name)
{
	note_function_how(w, schema, name, NULL, false);
}

/* The database's own names in the pinned schema (pgc_catalog). */
static bool db_function(const struct walker *w, const char *name)
{
	const struct pgc_catalog *c = w->ctx->catalog;

	return w->names_unknown || (c && in_sorted(c->funcs, c->nfuncs, name));
}

static bool db_row_function(const struct walker *w, const char *name)
{
	const struct pgc_catalog *c = w->ctx->catalog;

	return w->names_unknown || (c && in_sorted(c->row_funcs, c->nrow_funcs, name));
}

static bool db_operator(const struct walker *w, const char *op)
{
	const struct pgc_catalog *c = w->ctx->catalog;

	return w->names_unknown || (c && in_sorted(c->ops, c->nops, op));
}

/* A statement that can add a name db_function(), db_operator() or
 * opclass_name() would answer for: a function, procedure, aggregate,
 * operator or operator class created, renamed
 * or moved into a schema, a schema renamed (another could become the pinned
 * one), or an extension's. A table renamed or moved does not count. */
static bool changes_names(struct walker *w, int key, int body)
{
	static const char *const kinds[] = {
		"OBJECT_FUNCTION", "OBJECT_PROCEDURE", "OBJECT_ROUTINE", "OBJECT_AGGREGATE",
		"OBJECT_OPERATOR", "OBJECT_SCHEMA", "OBJECT_EXTENSION", "OBJECT_TYPE", "OBJECT_DOMAIN",
		"OBJECT_OPCLASS", "OBJECT_OPFAMILY", NULL,
	};
	const char *kind;

	if (pgj_is(&w->j, key, "CreateFunctionStmt") || pgj_is(&w->j, key, "DefineStmt") ||
	    pgj_is(&w->j, key, "CreateExtensionStmt") || pgj_is(&w->j, key, "AlterExtensionStmt") ||
	    pgj_is(&w->j, key, "AlterExtensionContentsStmt") || pgj_is(&w->j, key, "CreateDomainStmt") ||
	    pgj_is(&w->j, key, "AlterDomainStmt") || pgj_is(&w->j, key, "CreateCastStmt") ||
	    pgj_is(&w->j, key, "CompositeTypeStmt") || pgj_is(&w->j, key, "CreateEnumStmt") ||
	    pgj_is(&w->j, key, "CreateRangeStmt") || pgj_is(&w->j, key, "CreateOpClassStmt") ||
	    pgj_is(&w->j, key, "CreateOpFamilyStmt") || pgj_is(&w->j, key, "AlterOpFamilyStmt"))
		return true;
	if (pgj_is(&w->j, key, "RenameStmt"))
		kind = get_str(w, body, "renameType");
	else if (pgj_is(&w->j, key, "AlterObjectSchemaStmt"))
		kind = get_str(w, body, "objectType");
	else
		return false;
	if (!kind)
		return true;            /* an unexpected shape: assume the worst */
	for (int i = 0; kinds[i]; i++)
		if (strcmp(kind, kinds[i]) == 0)
			return true;
	return false;
}

/* A function name list ([schema,] name). */
static void function_name(struct walker *w, int names, bool call)
{
	const char *part[3] = { NULL };
	int n = 0;

	for (int f = pgj_first(&w->j, names); f >= 0; f = pgj_after(&w->j, names, f)) {
		if (n == 3 || !(part[n] = string_node(w, f))) {
			deny(w, "malformed function name");
			return;
		}
		n++;
	}
	if (n == 0 || n == 3) {
		deny(w, n ? "cross-database function reference not allowed" : "malformed function name");
		return;
	}
	const char *schema = n == 2 ? part[0] : NULL, *name = part[n - 1];
	bool catalog = !schema || strcmp(schema, "pg_catalog") == 0;

	if (strlen(name) >= NAME_MAX_LEN || (schema && strlen(schema) >= NAME_MAX_LEN)) {
		deny(w, "function name too long");
		return;
	}
	if (catalog && strcmp(name, "set_config") == 0) {
		deny(w, "function set_config not allowed: session settings cannot be changed");
		return;
	}
	if (!schema && db_function(w, name)) {
		/* PostgreSQL picks the best match by argument types over the
		 * whole search_path: the database's own name(...) may win */
		note_function_how(w, NULL, name, NULL, true);
		return;
	}
	if (!call && catalog && pgc_builtin_function_safe(name))
		return;
	note_function(w, schema, name);
}

/* pg_typeof or pg_catalog.pg_typeof */
static bool typeof_call(struct walker *w, int body)
{
	int names = pgj_get(&w->j, body, "funcname"), f = pgj_first(&w->j, names), n = 0;
	const char *part[2] = { NULL };

	for (; f >= 0; f = pgj_after(&w->j, names, f))
		if (n++ < 2)
			part[n - 1] = string_node(w, f);
	return (n == 1 && part[0] && strcmp(part[0], "pg_typeof") == 0) ||
	       (n == 2 && part[0] && part[1] && strcmp(part[0], "pg_catalog") == 0 &&
		strcmp(part[1], "pg_typeof") == 0);
}

/*
 * pg_typeof() returns a regtype, a type's OID that prints as its name, and
 * a value of it gives its type to others: coalesce('16414', pg_typeof(1)),
 * pg_typeof(1) UNION SELECT $1, CASE, ARRAY[], GREATEST make the other
 * value a regtype too, so an OID comes back as the name of the type
 * (of a table's row type: the table's name), and a name as an error or
 * not (review, stop 65: no cast in the text for type_name() to see).
 * Cast straight to another type (pg_typeof(x)::text, what drivers and
 * people write) its value meets no other; anywhere else it is what a
 * ::regtype cast is, a read of pg_type for the table rules to judge.
 */
static void funccall(struct walker *w, int body, struct scope *sc, bool call)
{
	bool cast = w->typeof_cast;

	w->typeof_cast = false;
	function_name(w, pgj_get(&w->j, body, "funcname"), call);
	if (!cast && !w->denied && typeof_call(w, body))
		oid_type_read(w, "regtype");
	for (int v = pgj_first(&w->j, body); v >= 0 && !w->denied; v = pgj_after(&w->j, body, v))
		if (!pgj_is(&w->j, v - 1, "funcname"))
			expr(w, v, sc);
}

/*
 * The operator symbols of PostgreSQL 15's pg_catalog, sorted (strcmp
 * order: bsearch; the unit test checks it), and the names the grammar
 * gives BETWEEN. Any other symbol can only be a user-defined operator:
 * a call of its function.
 */
static const char *const catalog_ops[] = {
	"!!", "!~", "!~*", "!~~", "!~~*", "#", "##", "#-", "#>", "#>>", "%", "&", "&&",
	"&<", "&<|", "&>", "*", "*<", "*<=", "*<>", "*=", "*>", "*>=", "+", "-", "->",
	"->>", "-|-", "/", "<", "<->", "<<", "<<=", "<<|", "<=", "<>", "<@", "<^", "=",
	">", ">=", ">>", ">>=", ">^", "?", "?#", "?&", "?-", "?-|", "?|", "?||", "@",
	"@-@", "@>", "@?", "@@", "@@@", "^", "^@", "|", "|&>", "|/", "|>>", "||", "||/",
	"~", "~*", "~<=~", "~<~", "~=", "~>=~", "~>~", "~~", "~~*",
};

static bool catalog_operator(const char *op)
{
	return in_sorted(catalog_ops, sizeof(catalog_ops) / sizeof(catalog_ops[0]), op) ||
	       strcmp(op, "BETWEEN") == 0 || strcmp(op, "NOT BETWEEN") == 0 ||
	       strcmp(op, "BETWEEN SYMMETRIC") == 0 || strcmp(op, "NOT BETWEEN SYMMETRIC") == 0;
}

/* For the unit test: the list's order is what bsearch relies on. */
bool pgc_operator_list_sorted(void);
bool pgc_operator_list_sorted(void)
{
	return list_sorted(catalog_ops, sizeof(catalog_ops) / sizeof(catalog_ops[0]));
}

/* Operators resolve like functions; only pg_catalog may be named explicitly,
 * and unqualified only a symbol pg_catalog has that the pinned schema does
 * not define too (see "Names"). */
static void operator_name(struct walker *w, int names)
{
	int f = pgj_first(&w->j, names), n = 0;
	const char *first = NULL, *last = NULL;

	for (; f >= 0; f = pgj_after(&w->j, names, f)) {
		last = string_node(w, f);
		if (n++ == 0)
			first = last;
	}
	if (n > 1 && (!first || strcmp(first, "pg_catalog") != 0))
		deny(w, "operator in schema %s not allowed", first ? first : "?");
	else if (n && (!last || !catalog_operator(last)))
		deny(w, "operator %s not allowed: PostgreSQL has no such operator, so it is "
		     "user-defined", last ? last : "?");
	else if (n == 1 && db_operator(w, last))
		deny(w, "operator %s not allowed; write OPERATOR(pg_catalog.%s): %s", last, last,
		     w->names_unknown ? "any may be the database's own now (a change of operators ran on it; "
		     READ_AGAIN ")" : "the pinned schema defines its own, which PostgreSQL may pick");
	else if (n == 1 && strstr(last, "BETWEEN")) {
		/* BETWEEN is >= and <=, NOT BETWEEN < and >, looked up by name */
		bool not = strncmp(last, "NOT ", 4) == 0;
		const char *a = not ? "<" : ">=", *b = not ? ">" : "<=";

		if (db_operator(w, a) || db_operator(w, b))
			deny(w, "%s not allowed: it compares with %s and %s, and the pinned schema defines "
			     "its own, which PostgreSQL may pick", last, a, b);
	}
}

/*
 * An operator class named in an index, an EXCLUDE constraint or a
 * partition key (IndexElem, PartitionElem): its support functions run on
 * every row written, as the agent's statement never says. Looked up by
 * name and access method over the search_path, pg_catalog first; so only
 * pg_catalog may be named, and unqualified only a name the pinned schema
 * does not define (for any access method: its own would win where
 * pg_catalog has none for that method). Extensions' are not counted (see
 * names_query()), as their operators are not.
 */
static void opclass_name(struct walker *w, int names)
{
	const struct pgc_catalog *c = w->ctx->catalog;
	const char *first = NULL, *last = NULL;
	int n = 0;

	for (int f = pgj_first(&w->j, names); f >= 0; f = pgj_after(&w->j, names, f)) {
		last = string_node(w, f);
		if (n++ == 0)
			first = last;
	}
	if (!n)
		return;                 /* the type's default class */
	if (!last || n > 2) {
		deny(w, "malformed operator class name");
	} else if (n == 2 && (!first || strcmp(first, "pg_catalog") != 0)) {
		deny(w, "operator class %s.%s not allowed: only pg_catalog's may be named (its support "
		     "functions run on every row written)", first ? first : "?", last);
	} else if (n == 1 && (w->names_unknown || (c && in_sorted(c->opclasses, c->nopclasses, last)))) {
		deny(w, "operator class %s not allowed: %s", last, w->names_unknown ?
		     "this session, or another on the database, ran a statement that can create operator classes (" READ_AGAIN ")" :
		     "the pinned schema defines its own, which PostgreSQL may pick; write "
		     "pg_catalog.NAME");
	}
}

/* EXCLUDE USING m (elem WITH op, ...): op runs on every row written, like
 * any operator in an expression. Each item is a List [IndexElem, names]. */
static void exclusion_ops(struct walker *w, int excl)
{
	const struct pgj *j = &w->j;

	for (int e = pgj_first(j, excl); e >= 0 && !w->denied; e = pgj_after(j, excl, e)) {
		int items = pgj_get(j, node_of(w, e, "List"), "items");
		int first = pgj_first(j, items);
		int ops = first >= 0 ? pgj_after(j, items, first) : -1;
		int names = ops >= 0 ? pgj_get(j, node_of(w, ops, "List"), "items") : -1;

		if (names < 0 || pgj_first(j, names) < 0) {
			deny(w, "malformed EXCLUDE constraint");
			return;
		}
		operator_name(w, names);
	}
}

/* SQL that compares with "=" looked up by name over the search_path, with
 * no operator in the text: CASE x WHEN v, JOIN ... USING, NATURAL JOIN. */
static void implicit_equals(struct walker *w, const char *what)
{
	if (db_operator(w, "="))
		deny(w, "%s not allowed: it compares with =, and %s", what,
		     w->names_unknown ? "this session, or another on the database, ran a statement that can create operators ("
		     READ_AGAIN ")" : "the pinned schema defines its own =, which PostgreSQL "
		     "may pick");
}

/*
 * (e).f: a field of e when e is a row that has one; otherwise the call f(e)
 * (attribute notation), for e of any type and any function of one argument:
 * `('/etc/passwd'::text).pg_read_file` reads a file, `(1).pg_terminate_backend`
 * ends a backend. A field cannot be told from a call without the catalog,
 * so every such name is judged as a call: a safe built-in passes, anything
 * else (a field name too) needs a rule's functions entry. e itself is
 * judged as an expression (a masked column there is refused as usual).
 */
static void indirection(struct walker *w, int body, struct scope *sc)
{
	int ind = pgj_get(&w->j, body, "indirection");

	expr(w, pgj_get(&w->j, body, "arg"), sc);
	for (int f = pgj_first(&w->j, ind); f >= 0 && !w->denied; f = pgj_after(&w->j, ind, f)) {
		const char *name;

		if (node_of(w, f, "String") < 0) {
			expr(w, f, sc);         /* [i], [a:b], .* */
			continue;
		}
		if (!(name = string_node(w, f)) || strlen(name) >= NAME_MAX_LEN) {
			deny(w, "malformed field selection");
			return;
		}
		if (db_function(w, name) || !pgc_builtin_function_safe(name))
			note_function_how(w, NULL, name, " (attribute notation: (x).f may call f(x))",
					  db_function(w, name));
		else if (strcmp(name, "pg_typeof") == 0)
			oid_type_read(w, "regtype");    /* see funccall() */
	}
}

/*
 * Object identifier types, and aclitem: their input looks a name up in a
 * catalog and their output prints one, so a value of one is a read of
 * that catalog. g::oid::regclass over generate_series lists every
 * relation (those of schemas the database user may not use too:
 * regclassout checks no privilege), ::regrole every role, and
 * 'x=r/y'::aclitem tells whether a role exists (review, stop 59: all were
 * allowed under a rule granting two tables, where SELECT FROM pg_class is
 * not). A cast to one, or a column of one, reads its catalog table: the
 * table rules decide, as they do for to_regclass() (refused, pg_funcs.c).
 */
static const struct { const char *type, *rel; } oid_types[] = {
	{ "aclitem", "pg_authid" }, { "regclass", "pg_class" }, { "regcollation", "pg_collation" },
	{ "regconfig", "pg_ts_config" }, { "regdictionary", "pg_ts_dict" },
	{ "regnamespace", "pg_namespace" }, { "regoper", "pg_operator" },
	{ "regoperator", "pg_operator" }, { "regproc", "pg_proc" }, { "regprocedure", "pg_proc" },
	{ "regrole", "pg_authid" }, { "regtype", "pg_type" },
};

/* A relation a type reads: not the statement's first relation (a CREATE's
 * target) nor a SELECT INTO's. */
static void type_read(struct walker *w, const char *schema, const char *rel)
{
	uint8_t first = w->st->first_table;
	bool into = w->into_next;

	w->into_next = false;
	add_table(w, schema, rel);
	w->into_next = into;
	w->st->first_table = first;
}

/* The catalog an object identifier type's values name, or NULL. */
static const char *oid_type_rel(const char *type)
{
	for (size_t i = 0; i < sizeof(oid_types) / sizeof(oid_types[0]); i++)
		if (strcmp(type, oid_types[i].type) == 0)
			return oid_types[i].rel;
	return NULL;
}

static void oid_type_read(struct walker *w, const char *type)
{
	const char *rel = oid_type_rel(type);

	if (rel)
		type_read(w, "pg_catalog", rel);
}

/*
 * PostgreSQL 15's pg_catalog types that are no relation's row type (base,
 * pseudo, range and multirange types; the reg* types and aclitem are
 * oid_types[]), sorted (strcmp order; the unit test checks it).
 */
static const char *const builtin_types[] = {
	"any", "anyarray", "anycompatible", "anycompatiblearray", "anycompatiblemultirange",
	"anycompatiblenonarray", "anycompatiblerange", "anyelement", "anyenum", "anymultirange",
	"anynonarray", "anyrange", "bit", "bool", "box", "bpchar", "bytea", "char", "cid", "cidr",
	"circle", "cstring", "date", "datemultirange", "daterange", "event_trigger", "fdw_handler",
	"float4", "float8", "gtsvector", "index_am_handler", "inet", "int2", "int2vector", "int4",
	"int4multirange", "int4range", "int8", "int8multirange", "int8range", "internal", "interval",
	"json", "jsonb", "jsonpath", "language_handler", "line", "lseg", "macaddr", "macaddr8",
	"money", "name", "numeric", "nummultirange", "numrange", "oid", "oidvector", "path",
	"pg_brin_bloom_summary", "pg_brin_minmax_multi_summary", "pg_ddl_command", "pg_dependencies",
	"pg_lsn", "pg_mcv_list", "pg_ndistinct", "pg_node_tree", "pg_snapshot", "point", "polygon",
	"record", "refcursor", "table_am_handler", "text", "tid", "time", "timestamp", "timestamptz",
	"timetz", "trigger", "tsm_handler", "tsmultirange", "tsquery", "tsrange", "tstzmultirange",
	"tstzrange", "tsvector", "txid_snapshot", "unknown", "uuid", "varbit", "varchar", "void",
	"xid", "xid8", "xml",
};

/* For the unit test, as pgc_catalog_list_sorted(). */
bool pgc_type_list_sorted(void);
bool pgc_type_list_sorted(void)
{
	return list_sorted(builtin_types, sizeof(builtin_types) / sizeof(builtin_types[0]));
}

static bool builtin_type(const char *name)
{
	return in_sorted(builtin_types, sizeof(builtin_types) / sizeof(builtin_types[0]), name);
}

/*
 * A relation's row type (review, stop 64). Every table and view has one, named
 * as the relation, and a value of it is made field by field through the
 * fields' input and output functions: ('(s,s,o,' || g || ',1,1,1,1,t,1,1)')
 * ::pg_sequences turned each OID g into a relation's name through its
 * regclass field, ::pg_range's regproc fields named functions, and
 * ::pg_namespace's aclitem roles; (NULL::secrets).* shows an unlisted
 * table's columns. The classifier has no catalog of types to tell a row
 * type from an enum or a domain, so the rule fails closed where it cannot
 * know (schema is NULL when the name is unqualified, base is the name
 * without an array type's leading '_'):
 *   - in pg_catalog (written so, or unqualified: pg_catalog is searched
 *     first), a type named like one of its relations is that relation's row
 *     type: a read of it, and, as its fields may be of any object
 *     identifier type, of the catalogs oid_types[] read (pg_authid aside:
 *     aclitem's input takes role names, not OIDs, and no catalog has a
 *     regrole field). A pg_* name that is neither a relation nor a type of
 *     PostgreSQL 15 may be a newer server's catalog: read as one too;
 *   - in the pinned schema, a name that is not PostgreSQL's own type is a
 *     read of the relation of that name, with the session's catalog or
 *     without. The catalog lists the schema's types but enums and
 *     extensions' (type_name() denies those it lists, row types of the
 *     tables it saw included), so a name it lacks may still be a table
 *     made since it was read; and the catalog only ever takes permissions
 *     away (the fuzzer checks it). The price: a cast to an enum or an
 *     extension's type (`'x'::mood`, `'[1,2]'::vector`) needs its name in
 *     a rule's tables: (public.mood, or public.*), as a table would.
 */
static void row_type_read(struct walker *w, const char *schema, const char *name)
{
	const char *base = name[0] == '_' && name[1] ? name + 1 : name;
	bool catalog = !schema || strcmp(schema, "pg_catalog") == 0;

	if (oid_type_rel(base) || builtin_type(base) || builtin_type(name))
		return;
	if (catalog && (catalog_relation(base) || strncmp(base, "pg_", 3) == 0)) {
		type_read(w, "pg_catalog", base);
		for (size_t i = 0; i < sizeof(oid_types) / sizeof(oid_types[0]); i++)
			if (strcmp(oid_types[i].rel, "pg_authid") != 0)
				type_read(w, "pg_catalog", oid_types[i].rel);
		if (catalog_relation(base) || schema)
			return;
	}
	if (schema && strcmp(schema, "pg_catalog") == 0)
		return;
	if (!strchr(base, '.'))
		type_read(w, w->schema, base);
}

/*
 * A type named in a cast or a column definition. A cast to a domain runs
 * its CHECK constraints, and a cast between a type and another may run a
 * cast function: code the database defines, which no rule names. Types
 * the pinned schema defines that way come with the catalog (a session
 * that may have changed them knows none); a type in another schema than
 * pg_catalog cannot be judged, so it is refused.
 */
static void type_name(struct walker *w, int tn)
{
	int names = pgj_get(&w->j, tn, "names"), n = 0;
	const char *part[4] = { NULL };
	const struct pgc_catalog *c = w->ctx->catalog;

	for (int f = pgj_first(&w->j, names); f >= 0; f = pgj_after(&w->j, names, f))
		if (n < 4)
			part[n++] = string_node(w, f);
	if (!n || !part[n - 1]) {
		deny(w, "malformed type name");
		return;
	}
	const char *last = part[n - 1], *schema = n >= 2 ? part[n - 2] : NULL;
	/* an array type's own name is its element type's with '_' in front:
	 * _regclass is regclass[], and reads pg_class as it does (review:
	 * array[g::oid]::_regclass listed every relation, ::_regrole every
	 * role, where regclass[] was denied) */
	const char *elem = last[0] == '_' && last[1] ? last + 1 : last;

	/* regclass, regproc, regtype...: a literal that names an object */
	if (strncmp(elem, "reg", 3) == 0)
		w->nocache = true;
	if (n == 1 || (n == 2 && strcmp(schema, "pg_catalog") == 0))
		oid_type_read(w, elem);
	if (n > 2 || (schema && strcmp(schema, "pg_catalog") != 0 && strcmp(schema, w->schema) != 0)) {
		deny(w, "type %s.%s not allowed: a cast to (or a column of) a type outside pg_catalog and the "
		     "pinned schema may run the database's functions", schema ? schema : "?", last);
		return;
	}
	row_type_read(w, schema, last);
	if (schema && strcmp(schema, "pg_catalog") == 0)
		return;
	if (w->names_unknown || (c && in_sorted(c->types, c->ntypes, last)))
		deny(w, "type %s not allowed: %s", last, w->names_unknown ?
		     "this session, or another on the database, ran a statement that can create types (" READ_AGAIN ")" :
		     "the pinned schema defines it, and a cast to it (or a column of it) may run the "
		     "database's functions (a domain's CHECK, a cast function)");
}

static void typecast(struct walker *w, int body, struct scope *sc)
{
	int arg = pgj_get(&w->j, body, "arg");

	type_name(w, pgj_get(&w->j, body, "typeName"));
	w->typeof_cast = node_of(w, arg, "FuncCall") >= 0;
	expr(w, arg, sc);
	w->typeof_cast = false;
}

/* ---- expressions: the generic walk ---- */

static void node(struct walker *w, int key, int body, struct scope *sc)
{
	const struct pgj *j = &w->j;
	const char *type = j->s + j->t[key].start;
	uint32_t tlen = j->t[key].len;

	if (pgj_is(j, key, "ColumnRef")) {
		colref(w, body, sc, false, NULL, NULL, NULL);
	} else if (pgj_is(j, key, "FuncCall")) {
		funccall(w, body, sc, false);
	} else if (pgj_is(j, key, "A_Const") || pgj_is(j, key, "ParamRef") ||
		   pgj_is(j, key, "String") || pgj_is(j, key, "Integer") ||
		   pgj_is(j, key, "Float") || pgj_is(j, key, "Boolean") ||
		   pgj_is(j, key, "BitString") || pgj_is(j, key, "A_Star") ||
		   pgj_is(j, key, "SQLValueFunction")) {
		return;
	} else if (pgj_is(j, key, "TypeCast")) {
		typecast(w, body, sc);
	} else if (pgj_is(j, key, "A_Indirection")) {
		indirection(w, body, sc);
	} else if (pgj_is(j, key, "ColumnDef") || pgj_is(j, key, "RangeTableFuncCol") ||
		   pgj_is(j, key, "XmlSerialize")) {
		/* a column definition list's, XMLTABLE's column, XMLSERIALIZE's
		 * target: values are made of that type (typed fields carry no
		 * "TypeName" wrapper in the tree). So are a table's columns
		 * (CREATE TABLE, ALTER TABLE ADD COLUMN, ALTER COLUMN TYPE): a
		 * domain's CHECK runs on every value written to them and on every
		 * row a type change rewrites (review, stop 26: only casts were
		 * judged) */
		type_name(w, pgj_get(j, body, "typeName"));
		expr(w, body, sc);
	} else if (pgj_is(j, key, "IndexElem") || pgj_is(j, key, "PartitionElem")) {
		opclass_name(w, pgj_get(j, body, "opclass"));
		expr(w, body, sc);
	} else if (pgj_is(j, key, "Constraint")) {
		exclusion_ops(w, pgj_get(j, body, "exclusions"));
		expr(w, body, sc);
	} else if (pgj_is(j, key, "SortBy")) {
		/* ORDER BY inside an aggregate, a window, WITHIN GROUP */
		operator_name(w, pgj_get(j, body, "useOp"));
		expr(w, pgj_get(j, body, "node"), sc);
	} else if (pgj_is(j, key, "CaseExpr")) {
		if (pgj_get(j, body, "arg") >= 0)
			implicit_equals(w, "CASE x WHEN");
		expr(w, body, sc);
	} else if (pgj_is(j, key, "A_Expr")) {
		operator_name(w, pgj_get(j, body, "name"));
		expr(w, pgj_get(j, body, "lexpr"), sc);
		expr(w, pgj_get(j, body, "rexpr"), sc);
	} else if (pgj_is(j, key, "SubLink")) {
		const char *kind = get_str(w, body, "subLinkType");

		expr(w, pgj_get(j, body, "testexpr"), sc);
		operator_name(w, pgj_get(j, body, "operName"));
		/* x IN (SELECT ...) has no operator in the tree: it is = */
		if (kind && strcmp(kind, "ANY_SUBLINK") == 0 && pgj_first(j, pgj_get(j, body, "operName")) < 0)
			implicit_equals(w, "IN (subquery)");
		walk_query(w, pgj_get(j, body, "subselect"), sc, false, false, NULL);
	} else if (pgj_is(j, key, "SelectStmt")) {
		walk_select(w, body, sc, false, false, NULL);
	} else if (pgj_is(j, key, "RangeVar")) {
		const char *s, *r;
		struct cte *c;

		relation(w, body, sc, true, &s, &r, &c);
	} else if (pgj_is(j, key, "LockingClause")) {
		return;         /* lockedRels name FROM items, already seen */
	} else if (tlen > 4 && memcmp(type + tlen - 4, "Stmt", 4) == 0) {
		statement(w, key, body, sc, false);
	} else {
		expr(w, body, sc);
	}
}

static void expr(struct walker *w, int i, struct scope *sc)
{
	const struct pgj *j = &w->j;
	int key, body;

	if (i < 0 || !enter(w)) {
		if (i >= 0)
			leave(w);
		return;
	}
	if (j->t[i].type == PGJ_OBJ) {
		if ((key = pgj_unwrap(j, i, &body)) >= 0) {
			node(w, key, body, sc);
		} else if (pgj_get(j, i, "relname") >= 0) {
			const char *s, *r;
			struct cte *c;

			relation(w, i, sc, true, &s, &r, &c);
		} else {
			const char *b = get_str(w, i, "behavior");

			/* CASCADE (TRUNCATE, ALTER TABLE ... DROP): objects the
			 * text does not name go too */
			if (b && strcmp(b, "DROP_CASCADE") == 0)
				w->st->opaque = true;
			for (int v = pgj_first(j, i); v >= 0 && !w->denied; v = pgj_after(j, i, v))
				expr(w, v, sc);
		}
	} else if (j->t[i].type == PGJ_ARR) {
		for (int v = pgj_first(j, i); v >= 0 && !w->denied; v = pgj_after(j, i, v))
			expr(w, v, sc);
	}
	leave(w);
}

/* ---- FROM ---- */

static const char *alias_name(struct walker *w, int obj, bool *has_cols)
{
	int a = pgj_get(&w->j, obj, "alias");

	*has_cols = pgj_get(&w->j, a, "colnames") >= 0;
	return a >= 0 ? get_str(w, a, "aliasname") : NULL;
}

static void from_item(struct walker *w, int item, struct scope *sc)
{
	const struct pgj *j = &w->j;
	int body, key = pgj_unwrap(j, item, &body);
	bool cols;

	if (key < 0 || !enter(w)) {
		if (key >= 0)
			leave(w);
		else
			expr(w, item, sc);
		return;
	}
	if (pgj_is(j, key, "RangeVar")) {
		const char *s = NULL, *r = NULL, *al = alias_name(w, body, &cols);
		struct cte *c;
		struct entry *e;

		if (relation(w, body, sc, true, &s, &r, &c)) {
			if (c) {
				if ((e = add_entry(w, sc, al ? al : get_str(w, body, "relname"),
						   ENT_DERIVED))) {
					e->d = c->d;
					if (cols && derived_has(w, c->d, NULL, 0) &&
					    (e->d = new_derived(w)))
						e->d->star_masked = true;
				}
			} else if (cols && masked(w, s, r, NULL)) {
				/* renamed columns: every column may be a masked one */
				if ((e = add_entry(w, sc, al, ENT_DERIVED)) && (e->d = new_derived(w)))
					e->d->star_masked = true;
			} else if ((e = add_entry(w, sc, al ? al : r, ENT_TABLE))) {
				e->schema = s;
				e->rel = r;
			}
		}
	} else if (pgj_is(j, key, "RangeSubselect")) {
		struct derived *d = new_derived(w);
		const char *al = alias_name(w, body, &cols);
		struct entry *e;

		if (d) {
			/* inside EXPLAIN nothing is an output (H_EXPLAIN) */
			walk_query(w, pgj_get(j, body, "subquery"), sc, !w->explain, false, d);
			if (cols && derived_has(w, d, NULL, 0))
				d->star_masked = true;
			if ((e = add_entry(w, sc, al, ENT_DERIVED)))
				e->d = d;
		}
	} else if (pgj_is(j, key, "JoinExpr")) {
		struct entry *before = sc->ents;
		const char *al = alias_name(w, body, &cols);
		int using = pgj_get(j, body, "usingClause");

		from_item(w, pgj_get(j, body, "larg"), sc);
		from_item(w, pgj_get(j, body, "rarg"), sc);
		bool any = false;

		for (struct entry *e = sc->ents; e != before && e; e = e->next)
			any |= entry_masked(w, e, NULL);
		if (get_bool(w, body, "isNatural") && any)
			deny(w, "NATURAL JOIN over a table with masked columns");
		if (get_bool(w, body, "isNatural") || pgj_first(j, using) >= 0)
			implicit_equals(w, "JOIN USING or NATURAL JOIN");
		for (int u = pgj_first(j, using); u >= 0 && !w->denied; u = pgj_after(j, using, u)) {
			const char *col = string_node(w, u);

			for (struct entry *e = sc->ents; e != before && e && col; e = e->next)
				if (entry_masked(w, e, col))
					deny(w, "masked column %s used in JOIN USING", col);
		}
		expr(w, pgj_get(j, body, "quals"), sc);
		if (al) {
			/* (a JOIN b) AS j: j's columns are a's and b's */
			struct entry *last = sc->ents;
			struct entry *e = add_entry(w, sc, al, ENT_DERIVED);

			if (e && (e->d = new_derived(w))) {
				for (struct entry *c = last; c && c != before; c = c->next)
					if (entry_masked(w, c, NULL))
						derived_add_src(e->d, c);
				/* AS j(a, b, ...) renames them: every column may
				 * be a masked one under its new name */
				if (cols && any)
					e->d->star_masked = true;
			}
		}
	} else if (pgj_is(j, key, "RangeTableSample")) {
		from_item(w, pgj_get(j, body, "relation"), sc);
		function_name(w, pgj_get(j, body, "method"), false);
		expr(w, pgj_get(j, body, "args"), sc);
		expr(w, pgj_get(j, body, "repeatable"), sc);
	} else {
		/* RangeFunction, RangeTableFunc (XMLTABLE): functions and
		 * expressions; their columns carry no lineage. Without an
		 * alias PostgreSQL names the item after its function (t.f
		 * then reaches it: attribute notation), so it gets an entry
		 * under each function's name. */
		const char *al = alias_name(w, body, &cols);

		w->in_from_func++;
		expr(w, body, sc);
		w->in_from_func--;
		add_entry(w, sc, al, ENT_OPAQUE);
		if (!al && pgj_is(j, key, "RangeFunction")) {
			int fl = pgj_get(j, body, "functions");

			for (int f = pgj_first(j, fl); f >= 0; f = pgj_after(j, fl, f)) {
				/* [{"List": {"items": [FuncCall, coldefs]}}] */
				int lb = node_of(w, f, "List"), items = lb >= 0 ? pgj_get(j, lb, "items") : -1;
				int pair = items >= 0 ? pgj_first(j, items) : -1;
				int fc = pair >= 0 ? node_of(w, pair, "FuncCall") : -1;
				int names = fc >= 0 ? pgj_get(j, fc, "funcname") : -1;
				const char *last = NULL;

				for (int n = pgj_first(j, names); n >= 0; n = pgj_after(j, names, n))
					last = string_node(w, n);
				if (last) {
					add_entry(w, sc, last, ENT_OPAQUE);
				} else {
					/* CAST(...), COALESCE(...), CURRENT_DATE...: named
					 * by PostgreSQL in ways not modelled here */
					struct entry *e = add_entry(w, sc, NULL, ENT_OPAQUE);

					if (e)
						e->any_name = true;
				}
			}
		}
	}
	leave(w);
}

/* ---- WITH ---- */

static void walk_with(struct walker *w, int wc, struct scope *sc)
{
	const struct pgj *j = &w->j;
	int ctes = pgj_get(j, wc, "ctes"), first = w->nctes;
	bool recursive = get_bool(w, wc, "recursive");

	/* WITH RECURSIVE: every name is in scope from the start, pending
	 * until its own query is walked (relation() denies a pending one;
	 * a CTE's own name stops pending as its query starts: the recursive
	 * reference). */
	for (int c = pgj_first(j, ctes); recursive && c >= 0; c = pgj_after(j, ctes, c)) {
		int body = node_of(w, c, "CommonTableExpr");
		const char *name = body >= 0 ? get_str(w, body, "ctename") : NULL;
		struct cte *ct;

		if (!name) {
			deny(w, "malformed WITH clause");
			return;
		}
		if (w->nctes == MAX_CTES) {
			deny(w, "too many CTEs");
			return;
		}
		ct = &w->ctes[w->nctes++];
		*ct = (struct cte){ .name = name, .pending = true, .next = sc->ctes };
		sc->ctes = ct;
	}
	for (int c = pgj_first(j, ctes), k = first; c >= 0 && !w->denied; c = pgj_after(j, ctes, c), k++) {
		int body = node_of(w, c, "CommonTableExpr");
		const char *name = body >= 0 ? get_str(w, body, "ctename") : NULL;
		struct derived *d = new_derived(w);
		struct cte *ct;

		if (!name || !d) {
			deny(w, "malformed WITH clause");
			return;
		}
		if (recursive) {
			ct = &w->ctes[k];        /* listed above, in this order */
		} else {
			if (w->nctes == MAX_CTES) {
				deny(w, "too many CTEs");
				return;
			}
			ct = &w->ctes[w->nctes++];
			ct->name = name;
		}
		ct->d = d;
		ct->pending = false;
		/* inside EXPLAIN nothing is an output: EXPLAIN WITH t AS
		 * MATERIALIZED (SELECT cc ...) showed cc's width (review, stop 64) */
		walk_query(w, pgj_get(j, body, "ctequery"), sc, !w->explain, false, d);
		if (pgj_get(j, body, "aliascolnames") >= 0 && derived_has(w, d, NULL, 0))
			d->star_masked = true;
		/* CYCLE ... SET m TO v DEFAULT d: v and d are typed literals
		 * (`dom 'a'`), casts like any other (found by review: a domain's
		 * CHECK ran a function no rule names); SEARCH names columns */
		expr(w, pgj_get(j, body, "cycle_clause"), sc);
		expr(w, pgj_get(j, body, "search_clause"), sc);
		if (!recursive) {
			ct->next = sc->ctes;
			sc->ctes = ct;
		}
	}
}

/* ---- SELECT ---- */

/* ORDER BY / GROUP BY / DISTINCT ON item: a bare name or a position may
 * mean an output column, whose lineage the scope lookup cannot see. */
static void sort_item(struct walker *w, int item, struct scope *sc, const struct selout *so)
{
	int b;
	const char *name;

	if ((b = node_of(w, item, "SortBy")) >= 0) {
		operator_name(w, pgj_get(&w->j, b, "useOp"));
		sort_item(w, pgj_get(&w->j, b, "node"), sc, so);
		return;
	}
	if ((b = node_of(w, item, "GroupingSet")) >= 0) {
		int content = pgj_get(&w->j, b, "content");

		for (int c = pgj_first(&w->j, content); c >= 0; c = pgj_after(&w->j, content, c))
			sort_item(w, c, sc, so);
		return;
	}
	/* GROUP BY (x, 1) and ROLLUP ((x, 1)): PostgreSQL flattens the row
	 * and matches output names and positions inside it */
	if ((b = node_of(w, item, "RowExpr")) >= 0) {
		int args = pgj_get(&w->j, b, "args");

		for (int c = pgj_first(&w->j, args); c >= 0; c = pgj_after(&w->j, args, c))
			sort_item(w, c, sc, so);
		return;
	}
	bool any = so->nnames || so->star_masked || so->overflow;

	if ((b = node_of(w, item, "A_Const")) >= 0 || node_of(w, item, "ParamRef") >= 0) {
		/* a constant here is a position: its value decides the verdict */
		int iv = b >= 0 ? pgj_get(&w->j, b, "ival") : -1;
		long pos = 0;

		w->nocache = true;
		if (!any)
			return;
		if (iv >= 0)
			pgj_int(&w->j, pgj_get(&w->j, iv, "ival"), &pos);
		if (so->star_masked || so->overflow || so->star || pos < 1 || pos > 64 || so->nout > 64 ||
		    (so->masked_pos & (1ull << (pos - 1))))
			deny(w, "ORDER BY/GROUP BY position of a masked output column");
		return;
	}
	if ((b = node_of(w, item, "ColumnRef")) >= 0) {
		int fields = pgj_get(&w->j, b, "fields"), f = pgj_first(&w->j, fields);

		if (f >= 0 && pgj_after(&w->j, fields, f) < 0 && (name = string_node(w, f))) {
			if (so->overflow)
				deny(w, "ORDER BY/GROUP BY name where the output has masked columns");
			for (int i = 0; i < so->nnames; i++)
				if (strcmp(so->names[i], name) == 0)
					deny(w, "masked column %s used in ORDER BY/GROUP BY", name);
		}
	}
	expr(w, item, sc);
}

static void lock_need(struct walker *w, int lc)
{
	int b = node_of(w, lc, "LockingClause");
	const char *s = b >= 0 ? get_str(w, b, "strength") : NULL;

	if (s && strcmp(s, "LCS_FORKEYSHARE") == 0)
		add_need(w, "select_for_key_share", PGC_WRITE, false);
	else if (s && strcmp(s, "LCS_FORSHARE") == 0)
		add_need(w, "select_for_share", PGC_WRITE, false);
	else if (s && strcmp(s, "LCS_FORNOKEYUPDATE") == 0)
		add_need(w, "select_for_no_key_update", PGC_WRITE, false);
	else
		add_need(w, "select_for_update", PGC_WRITE, false);
}

/*
 * A SelectStmt body. output: its target list is the result's output (the
 * statement itself, a DECLARE, a subquery in FROM or a CTE — whose
 * consumer decides again). stmtpos: it is the statement (adds "select").
 * dout: where a derived table records its masked outputs.
 */
static void walk_select(struct walker *w, int body, struct scope *parent, bool output,
			bool stmtpos, struct derived *dout)
{
	const struct pgj *j = &w->j;
	struct scope sc = { .parent = parent };
	struct selout so = { .nnames = 0 };
	int i, into, locks;
	const char *op;

	if (body < 0)
		return;
	if (j->t[body].type != PGJ_OBJ) {
		deny(w, "malformed SELECT");
		return;
	}
	if (!enter(w)) {
		leave(w);
		return;
	}
	into = pgj_get(j, body, "intoClause");
	if (into >= 0) {
		output = false;         /* rows go into a table */
		add_need(w, "select_into", PGC_DDL, false);
	} else if (stmtpos) {
		add_need(w, "select", PGC_READ, false);
	}
	if ((i = pgj_get(j, body, "withClause")) >= 0)
		walk_with(w, i, &sc);
	if (into >= 0) {
		/* the new table: never a CTE name, whatever is in scope */
		const char *ts, *tr;
		struct cte *c;
		int rel = pgj_get(j, into, "rel");

		if (rel < 0) {
			deny(w, "malformed SELECT INTO");
		} else {
			w->into_next = true;
			relation(w, rel, &sc, false, &ts, &tr, &c);
			w->into_next = false;
		}
	}
	locks = pgj_get(j, body, "lockingClause");
	for (int l = pgj_first(j, locks); l >= 0; l = pgj_after(j, locks, l))
		lock_need(w, l);
	op = get_str(w, body, "op");
	if (op && strcmp(op, "SETOP_NONE") != 0) {
		/* UNION/INTERSECT/EXCEPT compare rows and lose lineage */
		/* larg/rarg are typed SelectStmt fields: bare bodies */
		walk_select(w, pgj_get(j, body, "larg"), &sc, false, false, NULL);
		walk_select(w, pgj_get(j, body, "rarg"), &sc, false, false, NULL);
	}
	i = pgj_get(j, body, "fromClause");
	for (int f = pgj_first(j, i); f >= 0 && !w->denied; f = pgj_after(j, i, f))
		from_item(w, f, &sc);
	expr(w, pgj_get(j, body, "valuesLists"), &sc);
	i = pgj_get(j, body, "targetList");
	for (int t = pgj_first(j, i); t >= 0 && !w->denied; t = pgj_after(j, i, t)) {
		int rt = node_of(w, t, "ResTarget"), val = pgj_get(j, rt, "val"), cr;

		if (rt < 0) {
			deny(w, "malformed target list");
			break;
		}
		int before = so.nnames;

		so.nout++;
		if ((cr = node_of(w, val, "ColumnRef")) >= 0) {
			int fl = pgj_get(j, cr, "fields");

			for (int f = pgj_first(j, fl); f >= 0; f = pgj_after(j, fl, f))
				if (node_of(w, f, "A_Star") >= 0)
					so.star = true;
		}
		if (output && cr >= 0)
			colref(w, cr, &sc, true, &so, dout, get_str(w, rt, "name"));
		else
			expr(w, val, &sc);
		if ((so.nnames != before || so.overflow) && so.nout <= 64)
			so.masked_pos |= 1ull << (so.nout - 1);
	}
	expr(w, pgj_get(j, body, "whereClause"), &sc);
	expr(w, pgj_get(j, body, "havingClause"), &sc);
	i = pgj_get(j, body, "groupClause");
	for (int g = pgj_first(j, i); g >= 0 && !w->denied; g = pgj_after(j, i, g))
		sort_item(w, g, &sc, &so);
	i = pgj_get(j, body, "sortClause");
	for (int s = pgj_first(j, i); s >= 0 && !w->denied; s = pgj_after(j, i, s))
		sort_item(w, s, &sc, &so);
	i = pgj_get(j, body, "distinctClause");
	if (i >= 0 && (so.nnames || so.star_masked || so.overflow))
		deny(w, "DISTINCT over masked columns");
	for (int d = pgj_first(j, i); d >= 0 && !w->denied; d = pgj_after(j, i, d))
		if (j->t[d].n)          /* plain DISTINCT is [{}] */
			sort_item(w, d, &sc, &so);
	expr(w, pgj_get(j, body, "windowClause"), &sc);
	expr(w, pgj_get(j, body, "limitCount"), &sc);
	expr(w, pgj_get(j, body, "limitOffset"), &sc);
	leave(w);
}

/* A node in a query position: SELECT (with output/stmtpos) or a nested
 * statement (data-modifying CTE, EXECUTE in CREATE TABLE AS...). */
static void walk_query(struct walker *w, int nd, struct scope *sc, bool output, bool stmtpos,
		       struct derived *dout)
{
	int body, key = pgj_unwrap(&w->j, nd, &body);

	if (nd < 0)
		return;
	if (key < 0) {
		deny(w, "malformed query");
		return;
	}
	if (pgj_is(&w->j, key, "SelectStmt"))
		walk_select(w, body, sc, output, stmtpos, dout);
	else
		statement(w, key, body, sc, false);
}

/* ---- INSERT / UPDATE / DELETE / MERGE ---- */

static struct entry *dml_target(struct walker *w, int body, struct scope *sc)
{
	const char *s, *r;
	struct cte *c;
	bool cols;
	const char *al;
	int rv = pgj_get(&w->j, body, "relation");
	struct entry *e;

	if (rv < 0 || !relation(w, rv, sc, false, &s, &r, &c))
		return NULL;
	w->rel_reads--;         /* written, not read (walk_dml) */
	/* pg_settings' UPDATE rule calls set_config(): a write to it would
	 * change pinned settings (standard_conforming_strings, search_path,
	 * client_encoding...), whatever the rules grant */
	if (strcmp(s, "pg_catalog") == 0 && strcmp(r, "pg_settings") == 0) {
		deny(w, "pg_catalog.pg_settings cannot be written: session settings cannot be changed");
		return NULL;
	}
	al = alias_name(w, rv, &cols);
	if ((e = add_entry(w, sc, al ? al : r, ENT_TABLE))) {
		e->schema = s;
		e->rel = r;
	}
	return e;
}

/* MERGE's WHEN clauses update, delete or insert rows: each needs its own
 * statement as well as merge (as ON CONFLICT DO UPDATE needs update). A
 * clause of a kind we do not know is taken for all three. */
static void merge_needs(struct walker *w, int clauses)
{
	for (int c = pgj_first(&w->j, clauses); c >= 0; c = pgj_after(&w->j, clauses, c)) {
		int b = node_of(w, c, "MergeWhenClause");
		const char *t = b >= 0 ? get_str(w, b, "commandType") : NULL;

		bool upd = t && strcmp(t, "CMD_UPDATE") == 0, del = t && strcmp(t, "CMD_DELETE") == 0;
		bool ins = t && strcmp(t, "CMD_INSERT") == 0, known = upd || del || ins;

		if (t && strcmp(t, "CMD_NOTHING") == 0)
			continue;
		if (upd || !known)
			add_need(w, "update", PGC_WRITE, false);
		if (del || !known)
			add_need(w, "delete", PGC_WRITE, false);
		if (ins || !known)
			add_need(w, "insert", PGC_WRITE, false);
	}
}

/*
 * INSERT ... ON CONFLICT on a table with masked columns. The conflict target
 * is a lookup by equality: ON CONFLICT (email) DO NOTHING answers INSERT 0 0
 * when the value is there, DO UPDATE ... RETURNING id gives that row's id
 * (review, stop 25). Its column names are plain strings, not column
 * references the walk checks. A masked column named there is denied; so are
 * ON CONSTRAINT and a conflict target left out (every unique index then
 * arbitrates, those over masked columns too).
 */
static void conflict_target(struct walker *w, int clause, const struct entry *e)
{
	const struct pgj *j = &w->j;
	int oc = node_of(w, clause, "OnConflictClause"), inf, ic, list, ie;
	const char *name;

	if (!e || !e->schema || !e->rel || !masked(w, e->schema, e->rel, NULL))
		return;
	if (oc < 0)
		oc = clause;
	inf = pgj_get(j, oc, "infer");
	ic = inf >= 0 ? node_of(w, inf, "InferClause") : -1;
	if (ic < 0)
		ic = inf;
	if (ic < 0 || (get_str(w, ic, "conname") && *get_str(w, ic, "conname"))) {
		deny(w, "ON CONFLICT on %s.%s, which has masked columns, must name its conflict columns "
		     "(a unique index over a masked column would compare its values)", e->schema, e->rel);
		return;
	}
	list = pgj_get(j, ic, "indexElems");
	if (pgj_first(j, list) < 0) {
		deny(w, "ON CONFLICT on %s.%s, which has masked columns, must name its conflict columns",
		     e->schema, e->rel);
		return;
	}
	for (int el = pgj_first(j, list); el >= 0 && !w->denied; el = pgj_after(j, list, el)) {
		ie = node_of(w, el, "IndexElem");
		name = ie >= 0 ? get_str(w, ie, "name") : NULL;
		if (!name) {
			deny(w, "ON CONFLICT on %s.%s, which has masked columns, must name plain columns",
			     e->schema, e->rel);
			return;
		}
		if (masked(w, e->schema, e->rel, name)) {
			deny(w, "ON CONFLICT (%s) compares the masked column %s.%s.%s", name, e->schema,
			     e->rel, name);
			return;
		}
	}
}

/*
 * INSERT, UPDATE, DELETE, MERGE. Write-only rules do not read (review, stop 64):
 * PostgreSQL itself asks SELECT privilege for RETURNING and for the
 * relations a statement reads, so a non-empty RETURNING, and any relation
 * named other than as the target (INSERT ... SELECT's source, UPDATE ...
 * FROM, DELETE ... USING, MERGE's source, a sub-select anywhere, a CTE's,
 * the target itself read again), add the select need: one rule must grant
 * select as well as the write, over all the statement's tables. The
 * target's own columns in WHERE and SET expressions do not (PostgreSQL asks
 * SELECT on them too): an update-only rule could not say WHERE id = 1
 * otherwise. The row count then tells which rows match; masked columns
 * are denied there as anywhere but in a plain output.
 */
static void walk_dml(struct walker *w, int key, int body, struct scope *parent)
{
	const struct pgj *j = &w->j;
	struct scope sc = { .parent = parent };
	struct entry *e;
	unsigned reads = w->rel_reads;
	int i;

	if (!enter(w)) {
		leave(w);
		return;
	}
	add_need(w, pgj_is(j, key, "InsertStmt") ? "insert" : pgj_is(j, key, "UpdateStmt") ?
		 "update" : pgj_is(j, key, "DeleteStmt") ? "delete" : "merge", PGC_WRITE, false);
	if ((i = pgj_get(j, body, "withClause")) >= 0)
		walk_with(w, i, &sc);
	if (pgj_is(j, key, "InsertStmt")) {
		/* the source query does not see the target */
		walk_query(w, pgj_get(j, body, "selectStmt"), &sc, false, false, NULL);
		if ((e = dml_target(w, body, &sc)) && w->nents < MAX_ENTRIES) {
			struct entry *ex = add_entry(w, &sc, "excluded", ENT_TABLE);

			if (ex) {
				ex->schema = e->schema;
				ex->rel = e->rel;
			}
		}
		/* the column list's subscripts (INSERT INTO t (a[expr])) are
		 * expressions PostgreSQL evaluates */
		expr(w, pgj_get(j, body, "cols"), &sc);
		/* ON CONFLICT DO UPDATE updates the existing row: it needs
		 * update as well (anything but DO NOTHING is taken for it) */
		if ((i = pgj_get(j, body, "onConflictClause")) >= 0) {
			int oc = node_of(w, i, "OnConflictClause");
			const char *act = get_str(w, oc >= 0 ? oc : i, "action");

			if (!act || strcmp(act, "ONCONFLICT_NOTHING") != 0)
				add_need(w, "update", PGC_WRITE, false);
			conflict_target(w, i, e);
		}
		expr(w, pgj_get(j, body, "onConflictClause"), &sc);
	} else if (pgj_is(j, key, "UpdateStmt")) {
		dml_target(w, body, &sc);
		i = pgj_get(j, body, "fromClause");
		for (int f = pgj_first(j, i); f >= 0 && !w->denied; f = pgj_after(j, i, f))
			from_item(w, f, &sc);
		expr(w, pgj_get(j, body, "targetList"), &sc);
		expr(w, pgj_get(j, body, "whereClause"), &sc);
	} else if (pgj_is(j, key, "DeleteStmt")) {
		dml_target(w, body, &sc);
		i = pgj_get(j, body, "usingClause");
		for (int f = pgj_first(j, i); f >= 0 && !w->denied; f = pgj_after(j, i, f))
			from_item(w, f, &sc);
		expr(w, pgj_get(j, body, "whereClause"), &sc);
	} else {        /* MergeStmt */
		merge_needs(w, pgj_get(j, body, "mergeWhenClauses"));
		dml_target(w, body, &sc);
		from_item(w, pgj_get(j, body, "sourceRelation"), &sc);
		expr(w, pgj_get(j, body, "joinCondition"), &sc);
		expr(w, pgj_get(j, body, "mergeWhenClauses"), &sc);
	}
	/* RETURNING is not a result with lineage: masked columns denied */
	i = pgj_get(j, body, "returningList");
	expr(w, i, &sc);
	if (pgj_first(j, i) >= 0 || w->rel_reads != reads)
		add_need(w, "select", PGC_READ, false);
	leave(w);
}

/* ---- utility statements ---- */

/* Settings an agent may change: none of them changes how SQL parses, who
 * runs it, where names resolve, or whether the transaction may write. */
static const char *const harmless_settings[] = {
	"application_name", "bytea_output", "client_min_messages", "datestyle",
	"default_transaction_isolation", "extra_float_digits", "intervalstyle",
	"lc_monetary", "lc_numeric", "lc_time", "timezone", "transaction_isolation",
	NULL,
};

/* A DefElem list of transaction modes: does it ask for READ WRITE? */
static bool asks_read_write(struct walker *w, int opts)
{
	for (int o = pgj_first(&w->j, opts); o >= 0; o = pgj_after(&w->j, opts, o)) {
		int de = node_of(w, o, "DefElem");
		const char *name = de >= 0 ? get_str(w, de, "defname") : NULL;
		int c, iv;
		long v = 0;

		if (!name || strcmp(name, "transaction_read_only") != 0)
			continue;
		c = node_of(w, pgj_get(&w->j, de, "arg"), "A_Const");
		iv = pgj_get(&w->j, c, "ival");
		/* {"ival":{}} is 0: READ WRITE; {"ival":{"ival":1}}: READ ONLY */
		if (iv < 0)
			return true;    /* not the shape we know: assume the worst */
		pgj_int(&w->j, pgj_get(&w->j, iv, "ival"), &v);
		if (v == 0)
			return true;
	}
	return false;
}

static void txn(struct walker *w, int body)
{
	static const struct { const char *kind, *tag; bool begins, ends; } k[] = {
		{ "TRANS_STMT_BEGIN", "begin", true, false },
		{ "TRANS_STMT_START", "start_transaction", true, false },
		{ "TRANS_STMT_COMMIT", "commit", false, true },
		{ "TRANS_STMT_ROLLBACK", "rollback", false, true },
		{ "TRANS_STMT_SAVEPOINT", "savepoint", false, false },
		{ "TRANS_STMT_RELEASE", "release", false, false },
		{ "TRANS_STMT_ROLLBACK_TO", "rollback", false, false },
	};
	const char *kind = get_str(w, body, "kind");

	for (size_t i = 0; kind && i < sizeof(k) / sizeof(k[0]); i++) {
		if (strcmp(kind, k[i].kind) != 0)
			continue;
		w->st->tag = k[i].tag;
		set_class(w->st, PGC_TRANSACTION);
		w->st->implicit = true;
		w->out->begins_tx |= k[i].begins || (k[i].ends && get_bool(w, body, "chain"));
		w->out->ends_tx |= k[i].ends;
		if (k[i].begins && asks_read_write(w, pgj_get(&w->j, body, "options")) &&
		    !w->may_write)
			deny(w, "read-write transaction not allowed: the role may only read");
		return;
	}
	deny(w, "two-phase commit statements not allowed");
}

static void set_stmt(struct walker *w, int body)
{
	const char *kind = get_str(w, body, "kind"), *name = get_str(w, body, "name");

	w->st->tag = "set";
	set_class(w->st, PGC_UTILITY);
	if (!kind || strcmp(kind, "VAR_RESET_ALL") == 0) {
		deny(w, "RESET ALL not allowed: it would undo pinned settings");
		return;
	}
	if (strcmp(kind, "VAR_SET_MULTI") == 0) {
		if (name && (strcmp(name, "TRANSACTION") == 0 ||
			     strcmp(name, "SESSION CHARACTERISTICS") == 0)) {
			w->st->tag = "set_transaction";
			set_class(w->st, PGC_TRANSACTION);
			w->st->implicit = true;
			if (asks_read_write(w, pgj_get(&w->j, body, "args")) && !w->may_write)
				deny(w, "read-write transaction not allowed: the role may only read");
			return;
		}
		deny(w, "SET %s not allowed", name ? name : "?");
		return;
	}
	if (strcmp(kind, "VAR_RESET") == 0)
		w->st->tag = "reset";
	for (int i = 0; name && harmless_settings[i]; i++) {
		if (strcmp(name, harmless_settings[i]) == 0) {
			w->st->implicit = true;
			return;
		}
	}
	deny(w, "setting %s cannot be changed", name ? name : "?");
}

static void copy_stmt(struct walker *w, int body, struct scope *parent)
{
	struct scope sc = { .parent = parent };
	bool from = get_bool(w, body, "is_from");
	int rv = pgj_get(&w->j, body, "relation");

	if (get_bool(w, body, "is_program")) {
		deny(w, "COPY to or from a program not allowed");
		return;
	}
	if (pgj_get(&w->j, body, "filename") >= 0) {
		deny(w, "COPY to or from a server file not allowed");
		return;
	}
	add_need(w, "copy", from ? PGC_WRITE : PGC_READ, true);
	/* COPY FROM inserts rows (PostgreSQL checks INSERT on the table): it
	 * needs insert (or write) too, so statements: [read, copy] exports
	 * and does not import (review, stop 46). */
	if (from) {
		add_need(w, "insert", PGC_WRITE, false);
		w->out->copy_in = true;
	} else {
		w->out->copy_out = true;
	}
	if (rv >= 0) {
		const char *s, *r;
		struct cte *c;
		struct entry *e;

		if (!relation(w, rv, &sc, false, &s, &r, &c))
			return;
		if (masked(w, s, r, NULL)) {
			deny(w, "COPY of %s.%s not allowed: it has masked columns", s, r);
			return;
		}
		if ((e = add_entry(w, &sc, r, ENT_TABLE))) {
			e->schema = s;
			e->rel = r;
		}
	}
	/* COPY (query) TO STDOUT bypasses the row masking: no masked column
	 * may reach it, so the query is not an output position */
	walk_query(w, pgj_get(&w->j, body, "query"), &sc, false, false, NULL);
	expr(w, pgj_get(&w->j, body, "whereClause"), &sc);
}

static void drop_stmt(struct walker *w, int body, struct stmt_info *st)
{
	static const struct { const char *type, *tag; bool rel; } k[] = {
		{ "OBJECT_TABLE", "drop_table", true },
		{ "OBJECT_VIEW", "drop_view", true },
		{ "OBJECT_MATVIEW", "drop_materialized_view", true },
		{ "OBJECT_INDEX", "drop_index", true },
		{ "OBJECT_SEQUENCE", "drop_sequence", true },
		{ "OBJECT_FOREIGN_TABLE", "drop_foreign_table", true },
		{ "OBJECT_FUNCTION", "drop_function", false },
		{ "OBJECT_PROCEDURE", "drop_procedure", false },
		{ "OBJECT_SCHEMA", "drop_schema", false },
		{ "OBJECT_TYPE", "drop_type", false },
	};
	const char *type = get_str(w, body, "removeType"), *b = get_str(w, body, "behavior");
	int objs = pgj_get(&w->j, body, "objects");
	size_t i;

	if (b && strcmp(b, "DROP_CASCADE") == 0)
		st->opaque = true;      /* dependent objects go too, unnamed */

	for (i = 0; type && i < sizeof(k) / sizeof(k[0]); i++)
		if (strcmp(type, k[i].type) == 0)
			break;
	add_need(w, type && i < sizeof(k) / sizeof(k[0]) ? k[i].tag : "drop", PGC_DDL, false);
	if (!type || i == sizeof(k) / sizeof(k[0]) || !k[i].rel) {
		st->opaque = true;
		return;
	}
	for (int o = pgj_first(&w->j, objs); o >= 0 && !w->denied; o = pgj_after(&w->j, objs, o)) {
		int list = node_of(w, o, "List"), items = pgj_get(&w->j, list, "items");
		const char *part[3] = { NULL };
		int n = 0;

		for (int f = pgj_first(&w->j, items); f >= 0; f = pgj_after(&w->j, items, f)) {
			if (n == 3 || !(part[n] = string_node(w, f))) {
				deny(w, "malformed DROP");
				return;
			}
			n++;
		}
		if (n == 0 || n == 3) {
			deny(w, n ? "cross-database reference not allowed" : "malformed DROP");
			return;
		}
		const char *s = n == 2 ? part[0] : unqualified_schema(w, part[n - 1]);

		if (strchr(s, '.') || strchr(part[n - 1], '.')) {
			deny(w, "identifiers containing '.' are not supported");
			return;
		}
		add_table(w, s, part[n - 1]);
	}
}

/* ---- the statement table ---- */

enum handling {
	H_DENY, H_SELECT, H_DML, H_COPY, H_EXPLAIN, H_CTAS, H_DECLARE, H_TXN, H_SET,
	H_IMPLICIT, H_CALL, H_DROP, H_KNOWN, H_GENERIC,
};

struct kind {
	const char *node;
	const char *tag;
	enum pgc_class cls;
	enum handling h;
	const char *why;           /* H_DENY */
};

/*
 * Every statement node of PG 15's grammar. H_KNOWN: DDL/admin whose objects
 * are relations the walk sees (a rule with tables: can grant it); H_GENERIC:
 * objects the walk cannot name, so only a rule without tables: fits.
 */
static const struct kind kinds[] = {
	{ "SelectStmt", "select", PGC_READ, H_SELECT, NULL },
	{ "InsertStmt", "insert", PGC_WRITE, H_DML, NULL },
	{ "UpdateStmt", "update", PGC_WRITE, H_DML, NULL },
	{ "DeleteStmt", "delete", PGC_WRITE, H_DML, NULL },
	{ "MergeStmt", "merge", PGC_WRITE, H_DML, NULL },
	{ "CopyStmt", "copy", PGC_READ, H_COPY, NULL },
	{ "ExplainStmt", "explain", PGC_READ, H_EXPLAIN, NULL },
	{ "CreateTableAsStmt", "create_table_as", PGC_DDL, H_CTAS, NULL },
	{ "DeclareCursorStmt", "declare_cursor", PGC_READ, H_DECLARE, NULL },
	{ "TransactionStmt", "begin", PGC_TRANSACTION, H_TXN, NULL },
	{ "VariableSetStmt", "set", PGC_UTILITY, H_SET, NULL },
	{ "VariableShowStmt", "show", PGC_UTILITY, H_IMPLICIT, NULL },
	{ "ConstraintsSetStmt", "set_constraints", PGC_TRANSACTION, H_IMPLICIT, NULL },
	{ "ClosePortalStmt", "close_cursor", PGC_UTILITY, H_IMPLICIT, NULL },
	{ "CallStmt", "call", PGC_WRITE, H_CALL, NULL },
	{ "DropStmt", "drop", PGC_DDL, H_DROP, NULL },
	{ "DoStmt", "do", PGC_ADMIN, H_DENY, "DO blocks are opaque code" },
	{ "ListenStmt", "listen", PGC_UTILITY, H_DENY, "LISTEN/NOTIFY are a side channel" },
	{ "NotifyStmt", "notify", PGC_UTILITY, H_DENY, "LISTEN/NOTIFY are a side channel" },
	{ "UnlistenStmt", "unlisten", PGC_UTILITY, H_DENY, "LISTEN/NOTIFY are a side channel" },
	{ "PrepareStmt", "prepare", PGC_UTILITY, H_DENY,
	  "SQL-level PREPARE/EXECUTE/DEALLOCATE are not tracked (use the protocol's Parse)" },
	{ "ExecuteStmt", "execute", PGC_UTILITY, H_DENY,
	  "SQL-level PREPARE/EXECUTE/DEALLOCATE are not tracked (use the protocol's Parse)" },
	{ "DeallocateStmt", "deallocate", PGC_UTILITY, H_DENY,
	  "SQL-level PREPARE/EXECUTE/DEALLOCATE are not tracked (use the protocol's Parse)" },
	{ "FetchStmt", "fetch", PGC_READ, H_DENY, "cursors are not tracked: FETCH/MOVE not allowed" },
	{ "DiscardStmt", "discard", PGC_UTILITY, H_DENY, "DISCARD would undo pinned settings" },
	{ "LoadStmt", "load", PGC_ADMIN, H_DENY, "LOAD loads server code" },
	{ "AlterSystemStmt", "alter_system", PGC_ADMIN, H_DENY, "settings cannot be changed" },
	{ "AlterRoleSetStmt", "alter_role", PGC_ADMIN, H_DENY, "settings cannot be changed" },
	{ "AlterDatabaseSetStmt", "alter_database", PGC_ADMIN, H_DENY, "settings cannot be changed" },
	{ "PLAssignStmt", "plassign", PGC_ADMIN, H_DENY, "PL/pgSQL only" },
	{ "ReturnStmt", "return", PGC_ADMIN, H_DENY, "PL/pgSQL only" },
	{ "CreateStmt", "create_table", PGC_DDL, H_KNOWN, NULL },
	{ "ViewStmt", "create_view", PGC_DDL, H_KNOWN, NULL },
	{ "IndexStmt", "create_index", PGC_DDL, H_KNOWN, NULL },
	{ "AlterTableStmt", "alter_table", PGC_DDL, H_KNOWN, NULL },
	{ "CreateTrigStmt", "create_trigger", PGC_DDL, H_KNOWN, NULL },
	{ "RuleStmt", "create_rule", PGC_DDL, H_KNOWN, NULL },
	{ "CreatePolicyStmt", "create_policy", PGC_DDL, H_KNOWN, NULL },
	{ "AlterPolicyStmt", "alter_policy", PGC_DDL, H_KNOWN, NULL },
	{ "CreateSeqStmt", "create_sequence", PGC_DDL, H_KNOWN, NULL },
	{ "AlterSeqStmt", "alter_sequence", PGC_DDL, H_KNOWN, NULL },
	{ "RefreshMatViewStmt", "refresh_materialized_view", PGC_DDL, H_KNOWN, NULL },
	{ "RenameStmt", "rename", PGC_DDL, H_KNOWN, NULL },
	{ "AlterObjectSchemaStmt", "alter_object_schema", PGC_DDL, H_KNOWN, NULL },
	{ "TruncateStmt", "truncate_table", PGC_WRITE, H_KNOWN, NULL },
	{ "LockStmt", "lock_table", PGC_WRITE, H_KNOWN, NULL },
	{ "VacuumStmt", "vacuum", PGC_ADMIN, H_KNOWN, NULL },
	{ "ClusterStmt", "cluster", PGC_ADMIN, H_KNOWN, NULL },
	{ "ReindexStmt", "reindex", PGC_ADMIN, H_KNOWN, NULL },
	/* a foreign table's rows come from what its OPTIONS strings name (a
	 * remote table, a server file, a program: file_fdw) */
	{ "CreateForeignTableStmt", "create_foreign_table", PGC_DDL, H_GENERIC, NULL },
	{ "CreateFunctionStmt", "create_function", PGC_DDL, H_GENERIC, NULL },
	{ "AlterFunctionStmt", "alter_function", PGC_DDL, H_GENERIC, NULL },
	{ "AlterDomainStmt", "alter_domain", PGC_DDL, H_GENERIC, NULL },
	{ "DefineStmt", "define", PGC_DDL, H_GENERIC, NULL },
	{ "CommentStmt", "comment", PGC_DDL, H_GENERIC, NULL },
	{ "CreateDomainStmt", "create_domain", PGC_DDL, H_GENERIC, NULL },
	{ "CreateConversionStmt", "create_conversion", PGC_DDL, H_GENERIC, NULL },
	{ "CreateCastStmt", "create_cast", PGC_DDL, H_GENERIC, NULL },
	{ "CreateOpClassStmt", "create_operator_class", PGC_DDL, H_GENERIC, NULL },
	{ "CreateOpFamilyStmt", "create_operator_family", PGC_DDL, H_GENERIC, NULL },
	{ "AlterOpFamilyStmt", "alter_operator_family", PGC_DDL, H_GENERIC, NULL },
	{ "AlterObjectDependsStmt", "alter_object_depends", PGC_DDL, H_GENERIC, NULL },
	{ "AlterOwnerStmt", "alter_owner", PGC_DDL, H_GENERIC, NULL },
	{ "AlterOperatorStmt", "alter_operator", PGC_DDL, H_GENERIC, NULL },
	{ "AlterTypeStmt", "alter_type", PGC_DDL, H_GENERIC, NULL },
	{ "CompositeTypeStmt", "create_type", PGC_DDL, H_GENERIC, NULL },
	{ "CreateEnumStmt", "create_type", PGC_DDL, H_GENERIC, NULL },
	{ "CreateRangeStmt", "create_type", PGC_DDL, H_GENERIC, NULL },
	{ "AlterEnumStmt", "alter_type", PGC_DDL, H_GENERIC, NULL },
	{ "AlterTSDictionaryStmt", "alter_text_search_dictionary", PGC_DDL, H_GENERIC, NULL },
	{ "AlterTSConfigurationStmt", "alter_text_search_configuration", PGC_DDL, H_GENERIC, NULL },
	{ "CreateStatsStmt", "create_statistics", PGC_DDL, H_GENERIC, NULL },
	{ "AlterStatsStmt", "alter_statistics", PGC_DDL, H_GENERIC, NULL },
	{ "AlterCollationStmt", "alter_collation", PGC_DDL, H_GENERIC, NULL },
	{ "CreateSchemaStmt", "create_schema", PGC_DDL, H_GENERIC, NULL },
	{ "CheckPointStmt", "checkpoint", PGC_ADMIN, H_GENERIC, NULL },
	{ "GrantStmt", "grant", PGC_ADMIN, H_GENERIC, NULL },
	{ "GrantRoleStmt", "grant_role", PGC_ADMIN, H_GENERIC, NULL },
	{ "AlterDefaultPrivilegesStmt", "alter_default_privileges", PGC_ADMIN, H_GENERIC, NULL },
	{ "CreateRoleStmt", "create_role", PGC_ADMIN, H_GENERIC, NULL },
	{ "AlterRoleStmt", "alter_role", PGC_ADMIN, H_GENERIC, NULL },
	{ "DropRoleStmt", "drop_role", PGC_ADMIN, H_GENERIC, NULL },
	{ "ReassignOwnedStmt", "reassign_owned", PGC_ADMIN, H_GENERIC, NULL },
	{ "DropOwnedStmt", "drop_owned", PGC_ADMIN, H_GENERIC, NULL },
	{ "CreatedbStmt", "create_database", PGC_ADMIN, H_GENERIC, NULL },
	{ "DropdbStmt", "drop_database", PGC_ADMIN, H_GENERIC, NULL },
	{ "AlterDatabaseStmt", "alter_database", PGC_ADMIN, H_GENERIC, NULL },
	{ "AlterDatabaseRefreshCollStmt", "alter_database", PGC_ADMIN, H_GENERIC, NULL },
	{ "CreateTableSpaceStmt", "create_tablespace", PGC_ADMIN, H_GENERIC, NULL },
	{ "DropTableSpaceStmt", "drop_tablespace", PGC_ADMIN, H_GENERIC, NULL },
	{ "AlterTableSpaceOptionsStmt", "alter_tablespace", PGC_ADMIN, H_GENERIC, NULL },
	{ "AlterTableMoveAllStmt", "alter_table", PGC_ADMIN, H_GENERIC, NULL },
	{ "CreateExtensionStmt", "create_extension", PGC_ADMIN, H_GENERIC, NULL },
	{ "AlterExtensionStmt", "alter_extension", PGC_ADMIN, H_GENERIC, NULL },
	{ "AlterExtensionContentsStmt", "alter_extension", PGC_ADMIN, H_GENERIC, NULL },
	{ "CreateFdwStmt", "create_foreign_data_wrapper", PGC_ADMIN, H_GENERIC, NULL },
	{ "AlterFdwStmt", "alter_foreign_data_wrapper", PGC_ADMIN, H_GENERIC, NULL },
	{ "CreateForeignServerStmt", "create_server", PGC_ADMIN, H_GENERIC, NULL },
	{ "AlterForeignServerStmt", "alter_server", PGC_ADMIN, H_GENERIC, NULL },
	{ "CreateUserMappingStmt", "create_user_mapping", PGC_ADMIN, H_GENERIC, NULL },
	{ "AlterUserMappingStmt", "alter_user_mapping", PGC_ADMIN, H_GENERIC, NULL },
	{ "DropUserMappingStmt", "drop_user_mapping", PGC_ADMIN, H_GENERIC, NULL },
	{ "ImportForeignSchemaStmt", "import_foreign_schema", PGC_ADMIN, H_GENERIC, NULL },
	{ "CreateEventTrigStmt", "create_event_trigger", PGC_ADMIN, H_GENERIC, NULL },
	{ "AlterEventTrigStmt", "alter_event_trigger", PGC_ADMIN, H_GENERIC, NULL },
	{ "CreatePLangStmt", "create_language", PGC_ADMIN, H_GENERIC, NULL },
	{ "CreateAmStmt", "create_access_method", PGC_ADMIN, H_GENERIC, NULL },
	{ "CreateTransformStmt", "create_transform", PGC_ADMIN, H_GENERIC, NULL },
	{ "CreatePublicationStmt", "create_publication", PGC_ADMIN, H_GENERIC, NULL },
	{ "AlterPublicationStmt", "alter_publication", PGC_ADMIN, H_GENERIC, NULL },
	{ "CreateSubscriptionStmt", "create_subscription", PGC_ADMIN, H_GENERIC, NULL },
	{ "AlterSubscriptionStmt", "alter_subscription", PGC_ADMIN, H_GENERIC, NULL },
	{ "DropSubscriptionStmt", "drop_subscription", PGC_ADMIN, H_GENERIC, NULL },
	{ "SecLabelStmt", "security_label", PGC_ADMIN, H_GENERIC, NULL },
};

/*
 * DDL may not touch a table with masked columns: renaming a masked column,
 * a trigger or rule on the table, an index or view over it would each
 * undo the name-based column checks above (or copy values out). Nor
 * pg_catalog.pg_settings: a view over it is a writable pg_settings.
 */
static void ddl_masked_check(struct walker *w, uint32_t bits)
{
	for (int i = 0; i < w->out->ntables && !w->denied; i++) {
		char s[sizeof(w->out->tables[0])], *dot;

		if (!(bits & (1u << i)))
			continue;
		memcpy(s, w->out->tables[i], sizeof(s));
		if (!(dot = strchr(s, '.')))
			continue;
		*dot = '\0';
		if (masked(w, s, dot + 1, NULL))
			deny(w, "DDL on %s not allowed: it has masked columns", w->out->tables[i]);
		/* a view over pg_settings is updatable, and so reaches its
		 * set_config rule under another name (see dml_target) */
		if (strcmp(w->out->tables[i], "pg_catalog.pg_settings") == 0)
			deny(w, "DDL over pg_catalog.pg_settings not allowed: "
			     "session settings cannot be changed");
	}
}

/*
 * DDL that binds a function by name, to run it later under another guise:
 * an operator (which the walk allows unqualified), an aggregate's state
 * and final functions, a range type's subtype_diff/canonical, a cast, a
 * conversion, an operator class's support functions. Each such function is judged as if called (the safe list, else
 * a rule's functions: entry). Superuser-only bindings (languages, access methods, transforms,
 * foreign-data wrappers, base types' I/O) are left to the server.
 */
static void ddl_functions(struct walker *w, int key, int body)
{
	static const char *const keys[] = {
		"function", "procedure", "restrict", "join", "sfunc", "finalfunc", "combinefunc",
		"serialfunc", "deserialfunc", "msfunc", "minvfunc", "mfinalfunc", "subtype_diff",
		"canonical", NULL,
	};
	const struct pgj *j = &w->j;
	int defs = -1;

	if (pgj_is(j, key, "DefineStmt"))
		defs = pgj_get(j, body, "definition");
	else if (pgj_is(j, key, "AlterOperatorStmt"))
		defs = pgj_get(j, body, "options");
	else if (pgj_is(j, key, "CreateRangeStmt"))
		defs = pgj_get(j, body, "params");
	else if (pgj_is(j, key, "CreateCastStmt"))
		function_name(w, pgj_get(j, pgj_get(j, body, "func"), "objname"), false);
	else if (pgj_is(j, key, "CreateConversionStmt"))
		function_name(w, pgj_get(j, body, "func_name"), false);
	else if (pgj_is(j, key, "CreateOpClassStmt") || pgj_is(j, key, "AlterOpFamilyStmt")) {
		int items = pgj_get(j, body, "items");

		for (int i = pgj_first(j, items); i >= 0 && !w->denied; i = pgj_after(j, items, i)) {
			int it = node_of(w, i, "CreateOpClassItem");
			long type = 0;

			pgj_int(j, pgj_get(j, it, "itemtype"), &type);
			if (type == 2)          /* OPCLASS_ITEM_FUNCTION */
				function_name(w, pgj_get(j, pgj_get(j, it, "name"), "objname"), false);
		}
	}
	for (int d = pgj_first(j, defs); d >= 0 && !w->denied; d = pgj_after(j, defs, d)) {
		int de = node_of(w, d, "DefElem"), tn;
		const char *name = de >= 0 ? get_str(w, de, "defname") : NULL;

		for (int k = 0; name && keys[k]; k++) {
			if (strcmp(name, keys[k]) != 0)
				continue;
			/* the function's name is parsed as a type name */
			tn = node_of(w, pgj_get(j, de, "arg"), "TypeName");
			if (tn < 0)
				deny(w, "malformed function reference in %s", name);
			else
				function_name(w, pgj_get(j, tn, "names"), false);
		}
	}
}

/* ALTER [FOREIGN] TABLE ... OPTIONS (...): changes where a foreign
 * table's rows come from. */
static bool alters_fdw_options(struct walker *w, int key, int body)
{
	int cmds = pgj_get(&w->j, body, "cmds");

	if (!pgj_is(&w->j, key, "AlterTableStmt"))
		return false;
	for (int c = pgj_first(&w->j, cmds); c >= 0; c = pgj_after(&w->j, cmds, c)) {
		int b = node_of(w, c, "AlterTableCmd");
		const char *t = b >= 0 ? get_str(w, b, "subtype") : NULL;

		/* AT_GenericOptions, AT_AlterColumnGenericOptions */
		if (!t || strstr(t, "GenericOptions"))
			return true;
	}
	return false;
}

static const struct kind *find_kind(struct walker *w, int key)
{
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (pgj_is(&w->j, key, kinds[i].node))
			return &kinds[i];
	return NULL;
}
/*
 * SHOW without a rule (review, stop 26): SHOW ALL, data_directory, hba_file
 * or primary_conninfo (which may hold a replication password) tell what
 * pg_settings and current_setting(), both denied, would. SHOW answers only
 * the session settings drivers and people read; others are denied.
 */
static bool show_ok(const char *name)
{
	static const char *const ok[] = {
		"application_name", "bytea_output", "client_encoding", "client_min_messages",
		"datestyle", "default_transaction_isolation", "default_transaction_read_only",
		"extra_float_digits", "idle_in_transaction_session_timeout", "integer_datetimes",
		"intervalstyle", "is_superuser", "lc_collate", "lc_ctype", "lc_messages", "lc_monetary",
		"lc_numeric", "lc_time", "lock_timeout", "max_identifier_length", "search_path",
		"server_encoding", "server_version", "server_version_num", "standard_conforming_strings",
		"statement_timeout", "timezone", "transaction_isolation", "transaction_read_only",
		"work_mem",
	};

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		if (strcmp(name, ok[i]) == 0)
			return true;
	return false;
}

/*
 * One statement node. top: it is an element of stmts[] (its tag becomes
 * the statement's tag; SELECT is an output). Nested statements add their
 * needs to the enclosing statement. Everything except SELECT and plain DML
 * is a utility statement and never cached (its literals are its meaning).
 */
static void statement(struct walker *w, int key, int body, struct scope *sc, bool top)
{
	const struct kind *k = find_kind(w, key);
	struct stmt_info *st = w->st;
	const char *tag;

	if (!k) {
		deny(w, "unsupported statement %.*s", (int)w->j.t[key].len,
		     w->j.s + w->j.t[key].start);
		return;
	}
	if (!enter(w)) {
		leave(w);
		return;
	}
	if (k->h != H_SELECT && k->h != H_DML)
		w->nocache = true;
	if (top)
		set_class(st, k->cls);
	switch (k->h) {
	case H_DENY:
		deny(w, "%s", k->why);
		break;
	case H_SELECT:
		walk_select(w, body, sc, !w->explain, true, NULL);
		break;
	case H_DML:
		walk_dml(w, key, body, sc);
		break;
	case H_COPY:
		copy_stmt(w, body, sc);
		break;
	case H_EXPLAIN: {
		/* EXPLAIN [ANALYZE] X is judged as X whatever its options, with
		 * no plain output column: a plan's width is the planner's
		 * average width of what it returns, pg_stats.avg_width of a
		 * masked column returned alone (review, stop 59). That holds
		 * for every node of the plan, so w->explain makes DECLARE's
		 * query, CTEs and subqueries in FROM non-outputs too (review,
		 * stop 64) */
		bool was = w->explain;

		if (top)
			st->tag = k->tag;
		w->explain = true;
		walk_query(w, pgj_get(&w->j, body, "query"), sc, false, true, NULL);
		w->explain = was;
		break;
	}
	case H_DECLARE:
		if (top)
			st->tag = k->tag;
		/* EXPLAIN DECLARE c CURSOR FOR X plans X (review, stop 64) */
		walk_query(w, pgj_get(&w->j, body, "query"), sc, !w->explain, true, NULL);
		break;
	case H_CTAS: {
		const char *ot = get_str(w, body, "objtype");

		tag = ot && strcmp(ot, "OBJECT_MATVIEW") == 0 ? "create_materialized_view" :
		      k->tag;
		add_need(w, tag, PGC_DDL, false);
		expr(w, pgj_get(&w->j, body, "into"), sc);
		walk_query(w, pgj_get(&w->j, body, "query"), sc, false, false, NULL);
		break;
	}
	case H_TXN:
		if (!top)
			deny(w, "transaction control inside another statement");
		else
			txn(w, body);
		break;
	case H_SET:
		if (!top)
			deny(w, "SET inside another statement");
		else
			set_stmt(w, body);
		break;
	case H_IMPLICIT:
		if (!top) {
			deny(w, "%s inside another statement", k->tag);
			break;
		}
		st->tag = k->tag;
		set_class(st, k->cls);
		st->implicit = true;
		/* SHOW app.secret is current_setting('app.secret'): a custom
		 * setting (ALTER ROLE/DATABASE ... SET app.x) may hold a secret,
		 * and current_setting() is not a safe function either */
		if (pgj_is(&w->j, key, "VariableShowStmt")) {
			const char *name = get_str(w, body, "name");

			if (!name || strchr(name, '.'))
				deny(w, "SHOW of a custom setting (%s) is not allowed", name ? name : "?");
			else if (!show_ok(name))
				deny(w, "SHOW %s is not allowed: only the session settings clients read may be "
				     "shown (server paths, connection strings and SHOW ALL are not)", name);
		}
		break;
	case H_CALL:
		add_need(w, k->tag, k->cls, false);
		funccall(w, pgj_get(&w->j, body, "funccall"), sc, true);
		break;
	case H_DROP: {
		uint32_t before = st->tables;

		drop_stmt(w, body, st);
		ddl_masked_check(w, st->tables & ~before);
		break;
	}
	case H_KNOWN:
	case H_GENERIC: {
		struct scope fresh = { .parent = NULL };
		uint32_t before = st->tables;

		tag = k->tag;
		if (pgj_is(&w->j, key, "CreateStmt") && pgj_get(&w->j, body, "ofTypename") >= 0)
			type_name(w, pgj_get(&w->j, body, "ofTypename"));   /* CREATE TABLE t OF type */
		if (pgj_is(&w->j, key, "CreateFunctionStmt") && get_bool(w, body, "is_procedure"))
			tag = "create_procedure";
		else if (pgj_is(&w->j, key, "VacuumStmt") && !get_bool(w, body, "is_vacuumcmd"))
			tag = "analyze";
		else if (pgj_is(&w->j, key, "GrantStmt") && !get_bool(w, body, "is_grant"))
			tag = "revoke";
		add_need(w, tag, k->cls, false);
		/* a trigger's function runs on every later write: like CALL's,
		 * it needs a rule's functions: entry */
		if (pgj_is(&w->j, key, "CreateTrigStmt") || pgj_is(&w->j, key, "CreateEventTrigStmt"))
			function_name(w, pgj_get(&w->j, body, "funcname"), true);
		ddl_functions(w, key, body);
		expr(w, body, &fresh);
		/* a known statement whose relation was not seen (CLUSTER, REINDEX
		 * DATABASE, RENAME of a non-relation...) is opaque too; so is
		 * ALTER [FOREIGN] TABLE ... OPTIONS (a foreign table's source) */
		if (k->h == H_GENERIC || st->tables == before || alters_fdw_options(w, key, body))
			st->opaque = true;
		if (k->cls == PGC_DDL || k->cls == PGC_ADMIN)
			ddl_masked_check(w, st->tables & ~before);
		break;
	}
	}
	if (top && !st->tag)
		st->tag = k->tag;
	leave(w);
}

/* ---- rules ---- */

static bool strv_has(const struct policy_strv *v, const char *s)
{
	for (size_t i = 0; i < v->n; i++)
		if (v->v[i] && strcmp(v->v[i], s) == 0)
			return true;
	return false;
}

const char *pgc_class_name(enum pgc_class c)
{
	switch (c) {
	case PGC_READ: return "read";
	case PGC_WRITE: return "write";
	case PGC_DDL: return "ddl";
	case PGC_ADMIN: return "admin";
	case PGC_TRANSACTION: return "transaction";
	case PGC_UTILITY: return "utility";
	}
	return "?";
}

static bool need_granted(const struct policy_strv *v, const struct need *n)
{
	return strv_has(v, n->tag) || (!n->tag_only && strv_has(v, pgc_class_name(n->cls)));
}

/* "schema.table" against tables: entries "schema.table", "table" (the
 * pinned schema), "schema.*" and "*". */
static bool table_granted(const struct policy_strv *v, const char *name, const char *pinned)
{
	const char *dot = strchr(name, '.');
	size_t slen = dot ? (size_t)(dot - name) : 0;

	for (size_t i = 0; i < v->n; i++) {
		const char *e = v->v[i];

		if (!e)
			continue;
		if (strcmp(e, "*") == 0 || strcmp(e, name) == 0)
			return true;
		if (!strchr(e, '.') && dot && strcmp(e, dot + 1) == 0 &&
		    strlen(pinned) == slen && memcmp(pinned, name, slen) == 0)
			return true;
		if (dot && strlen(e) == slen + 2 && memcmp(e, name, slen + 1) == 0 &&
		    e[slen + 1] == '*')
			return true;
	}
	return false;
}

/* A function call against functions: entries "name" or "schema.name". An
 * unqualified call resolves through pg_catalog, then the pinned schema, so
 * it matches "name", "pinned.name" and "pg_catalog.name". */
static bool function_granted(const struct policy_strv *v, const struct func *f,
			     const char *pinned)
{
	char q[2 * NAME_MAX_LEN + 2];

	if (*f->schema) {
		snprintf(q, sizeof(q), "%s.%s", f->schema, f->name);
		if (strv_has(v, q))
			return true;
		return strcmp(f->schema, pinned) == 0 && strv_has(v, f->name);
	}
	if (strv_has(v, f->name))
		return true;
	snprintf(q, sizeof(q), "%s.%s", pinned, f->name);
	if (strv_has(v, q))
		return true;
	if (f->db_shadow)       /* pg_catalog's may not be the one that runs */
		return false;
	snprintf(q, sizeof(q), "pg_catalog.%s", f->name);
	return strv_has(v, q);
}

static bool action_permits(const struct walker *w, const struct policy_action *a,
			   const struct stmt_info *st)
{
	if (!a->present)
		return false;
	for (int i = 0; i < st->nneeds; i++)
		if (!need_granted(&a->statements, &st->needs[i]))
			return false;
	if (a->tables.n && st->opaque)
		return false;
	for (int i = 0; i < w->out->ntables; i++)
		if ((st->tables & (1u << i)) && a->tables.n &&
		    !table_granted(&a->tables, w->out->tables[i], w->schema))
			return false;
	for (int i = 0; i < w->nfuncs; i++)
		if ((st->funcs & (1u << i)) && !function_granted(&a->functions, &w->funcs[i], w->schema))
			return false;
	return true;
}

/* Why no rule permits st: the first thing no rule grants at all. */
static void explain_denial(struct walker *w, const struct policy_rule *const *rules, size_t nrules,
			   const struct stmt_info *st)
{
	const struct policy_action *a;

#define ANY_ACTION(cond) ({ bool any_ = false; \
	for (size_t r_ = 0; r_ < nrules && !any_; r_++) \
		for (int k_ = 0; rules[r_] && k_ < 2 && !any_; k_++) { \
			a = k_ ? &rules[r_]->review : &rules[r_]->allow; \
			any_ = a->present && (cond); \
		} \
	any_; })

	for (int i = 0; i < st->nneeds; i++) {
		if (!ANY_ACTION(need_granted(&a->statements, &st->needs[i]))) {
			if (st->needs[i].tag_only)
				deny(w, "statement %s not allowed (needs a rule naming %s)",
				     st->needs[i].tag, st->needs[i].tag);
			else
				deny(w, "statement %s not allowed", st->needs[i].tag);
			return;
		}
	}
	for (int i = 0; i < w->out->ntables; i++) {
		if ((st->tables & (1u << i)) &&
		    !ANY_ACTION(!a->tables.n || table_granted(&a->tables, w->out->tables[i], w->schema))) {
			deny(w, "table %s not allowed", w->out->tables[i]);
			return;
		}
	}
	for (int i = 0; i < w->nfuncs; i++) {
		if ((st->funcs & (1u << i)) &&
		    !ANY_ACTION(function_granted(&a->functions, &w->funcs[i], w->schema))) {
			const struct func *f = &w->funcs[i];

			if (f->db_shadow && w->names_unknown)
				deny(w, "function %s not allowed%s: any may be the database's own now (a change of "
				     "functions ran on it); " READ_AGAIN, f->name, f->how);
			else if (f->db_shadow)
				deny(w, "function %s not allowed%s: the pinned schema defines one too, which "
				     "PostgreSQL may pick (pg_catalog.%s names the built-in)", f->name, f->how,
				     f->name);
			else
				deny(w, "function %s%s%s not allowed%s", f->schema, *f->schema ? "." : "",
				     f->name, f->how);
			return;
		}
	}
	if (st->opaque && ANY_ACTION(a->tables.n != 0)) {
		deny(w, "statement %s names objects the classifier cannot see; "
		     "only a rule without tables: can allow it", st->tag ? st->tag : "?");
		return;
	}
	deny(w, "statement %s not allowed by any single rule", st->tag ? st->tag : "?");
#undef ANY_ACTION
}

/* One statement's own verdict and deciding rule (NULL: implicitly allowed, or denied). */
static enum pgc_verdict stmt_verdict(const struct walker *w, const struct policy_rule *const *rules,
				     size_t nrules, const struct stmt_info *st, const struct policy_rule **rule)
{
	*rule = NULL;
	if (st->implicit && st->nneeds == 0)
		return PGC_ALLOW;
	/* review wins over allow, whichever rule allows (as for http and
	 * kubernetes): "allow write, review delete" holds deletes */
	for (size_t i = 0; i < nrules; i++)
		if (rules[i] && action_permits(w, &rules[i]->review, st)) {
			*rule = rules[i];
			return PGC_REVIEW;
		}
	for (size_t i = 0; i < nrules; i++)
		if (rules[i] && action_permits(w, &rules[i]->allow, st)) {
			*rule = rules[i];
			return PGC_ALLOW;
		}
	return PGC_DENY;
}

/* The message's verdict from its statements' (w->nst of them, all walked). */
static void decide(struct walker *w, const struct policy_rule *const *rules, size_t nrules)
{
	const struct policy_rule *allow_rule = NULL, *review_rule = NULL;

	for (int s = 0; s < w->nst && !w->denied; s++) {
		struct pgc_stmt *o = &w->out->stmts[s];

		o->verdict = stmt_verdict(w, rules, nrules, &w->stmts[s], &o->rule);
		o->judged = true;
		switch (o->verdict) {
		case PGC_ALLOW:
			if (!allow_rule)
				allow_rule = o->rule;
			break;
		case PGC_REVIEW:
			if (!review_rule)
				review_rule = o->rule;
			break;
		case PGC_DENY:
			explain_denial(w, rules, nrules, &w->stmts[s]);
			w->out->denied_stmt = s;
			break;
		}
	}
	if (w->denied)
		return;
	w->out->verdict = review_rule ? PGC_REVIEW : PGC_ALLOW;
	w->out->rule = review_rule ? review_rule : allow_rule;
}

static bool is_write_entry(const char *s)
{
	static const char *const readonly[] = { "read", "select", "explain", "declare_cursor",
						"show", NULL };

	for (int i = 0; readonly[i]; i++)
		if (strcmp(s, readonly[i]) == 0)
			return false;
	return true;
}

bool pgc_rules_may_write(const struct policy_rule *const *rules, size_t nrules)
{
	for (size_t r = 0; r < nrules; r++) {
		for (int k = 0; rules[r] && k < 2; k++) {
			const struct policy_action *a = k ? &rules[r]->review : &rules[r]->allow;

			for (size_t i = 0; a->present && i < a->statements.n; i++)
				if (a->statements.v[i] && is_write_entry(a->statements.v[i]))
					return true;
		}
	}
	return false;
}

/*
 * Parse's parameter types (review, stop 64). A parameter's value goes through its
 * type's input function with no cast in the text for the classifier to see:
 * Parse("SELECT $1", [regclass]) with Bind("16402") returns a relation's
 * name, the catalog read a ::regclass cast is denied for. A denylist, not
 * an allowlist of plain scalars: clients declare what they like (JDBC,
 * Npgsql and pgx send inet, money, xml, point, ranges... from their own
 * type maps), and every type PostgreSQL itself defines below 10000 is
 * harmless as a value except these:
 *   - the reg* types and their arrays (they name catalog objects by OID:
 *     oid_types[]), aclitem and _aclitem (role names);
 *   - the row types of the four bootstrap catalogs (pg_type, pg_attribute,
 *     pg_proc, pg_class) and their arrays, and those of pg_database,
 *     pg_authid, pg_auth_members, pg_shseclabel, pg_subscription, whose
 *     fields include reg* and aclitem ones;
 *   - every OID from 10000 up: initdb assigns those to the other catalogs'
 *     and views' row types (pg_sequences', pg_range's, with regclass and
 *     regproc fields) and to the arrays of the five above, and from 16384
 *     up they are the database's own (a domain's CHECK runs on the value).
 * Parameter types left unspecified (0) are inferred from the text, which
 * the classifier judges.
 */
const char *pgc_param_type_refused(uint32_t oid)
{
	static const uint32_t catalog_reads[] = {
		24, 71, 75, 81, 83, 210, 270, 272, 273, 1008, 1033, 1034, 1248, 2202, 2203,
		2204, 2205, 2206, 2207, 2208, 2209, 2210, 2211, 2842, 2843, 3734, 3735, 3769,
		3770, 4066, 4089, 4090, 4096, 4097, 4191, 4192, 6101,
	};

	if (oid >= 16384)
		return "which the database defined: only PostgreSQL's own types are allowed";
	if (oid >= 10000)
		return "a catalog's or view's row type, whose value reads the catalog";
	for (size_t i = 0; i < sizeof(catalog_reads) / sizeof(catalog_reads[0]); i++)
		if (oid == catalog_reads[i])
			return "an object identifier, aclitem or catalog row type, whose value reads the catalog";
	return NULL;
}

bool pgc_statement_name_known(const char *s)
{
	static const char *const extra[] = {
		"read", "write", "ddl", "admin", "select_into", "select_for_update",
		"select_for_no_key_update", "select_for_share", "select_for_key_share",
		"create_materialized_view", "create_procedure", "analyze", "revoke",
		"drop_table", "drop_view", "drop_materialized_view", "drop_index",
		"drop_sequence", "drop_foreign_table", "drop_function", "drop_procedure",
		"drop_schema", "drop_type", NULL,
	};

	for (int i = 0; extra[i]; i++)
		if (strcmp(s, extra[i]) == 0)
			return true;
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (kinds[i].h != H_DENY && kinds[i].h != H_TXN && kinds[i].h != H_SET &&
		    kinds[i].h != H_IMPLICIT && strcmp(s, kinds[i].tag) == 0)
			return true;
	return false;
}

void pgc_combine(struct pgc_result *agent, const struct pgc_result *user)
{
	if (agent->verdict == PGC_DENY)
		return;
	/* the same text: the same statements, unless the user's judging
	 * stopped early (then the rest were not judged for the user) */
	for (int i = 0; i < agent->nstmts; i++) {
		struct pgc_stmt *a = &agent->stmts[i];
		const struct pgc_stmt *u = i < user->nstmts ? &user->stmts[i] : NULL;

		if (!u || u->verdict == PGC_DENY) {
			a->verdict = PGC_DENY;
			a->rule = NULL;
			a->judged = u && u->judged;
		} else if (u->verdict == PGC_REVIEW && a->verdict == PGC_ALLOW) {
			a->verdict = PGC_REVIEW;
			a->rule = u->rule;
		}
	}
	if (user->verdict == PGC_DENY) {
		agent->verdict = PGC_DENY;
		agent->rule = NULL;
		agent->denied_stmt = user->denied_stmt;
		snprintf(agent->reason, sizeof(agent->reason), "user: %.240s", user->reason);
		return;
	}
	if (user->verdict == PGC_REVIEW && agent->verdict == PGC_ALLOW) {
		agent->verdict = PGC_REVIEW;
		agent->rule = user->rule;
	}
	agent->cached = agent->cached && user->cached;
}

/* ---- input checks ---- */

/* Strict UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF):
 * the server decodes the text as UTF8, and the parser must see the same
 * characters (notes D2). */
static bool utf8_valid(const unsigned char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned char c = s[i];
		size_t n;
		uint32_t cp;
		uint64_t w;

		if (len - i >= 8 && (memcpy(&w, s + i, 8), !(w & 0x8080808080808080ULL))) {
			i += 8;         /* eight ASCII bytes */
			continue;
		}
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF) {
			n = 1;
			cp = c & 0x1F;
		} else if (c >= 0xE0 && c <= 0xEF) {
			n = 2;
			cp = c & 0x0F;
		} else if (c >= 0xF0 && c <= 0xF4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (len - i <= n)
			return false;
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3F);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
		    (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		i += n + 1;
	}
	return true;
}

/* Clears what every call fills; tables[] and stmts[] (most of the struct)
 * are left alone: they are read only up to ntables and nstmts. */
static void result_clear(struct pgc_result *out)
{
	memset(out, 0, offsetof(struct pgc_result, ntables) + sizeof(out->ntables));
	out->denied_stmt = -1;
}

/* ---- the verdict cache ---- */

/*
 * Safety argument. An entry is keyed by: the policy generation the caller
 * gives (bumped on every policy swap, so rule pointers and masks are those
 * of one live snapshot), the rule pointers themselves (which rules: agent
 * or delegating user), the mask predicate and its argument, the pinned
 * schema, the caller's settings string, and the text in one of two forms,
 * each in a namespace of its own (the key's first byte):
 *   'X' the exact text. A hit is the same input judged under the same
 *       key, so the same verdict.
 *   'S' the token stream PostgreSQL's own lexer produces (scan_key()
 *       below), with the value of every constant left out: a hit stands
 *       for every text that differs only in constants.
 *
 * Why texts sharing an 'S' key get the same verdict. The raw parser is a
 * function of the token stream of its lexer: token codes, plus the values
 * of identifiers, operators, parameters and constants (whitespace and
 * comments never reach the grammar). scan_key() runs that very lexer
 * (libpg_query's copy of scan.l, the code raw_parser() runs, with the
 * same settings: standard_conforming_strings on, as the wire module
 * guarantees; one difference from the server's own copy: between two
 * string constants a comment does not make them one, as the server does,
 * so such a text fails to parse here and is denied) and records every
 * token but comments: its code, and for
 * identifiers (as the lexer hands them on: case-folded, quotes and
 * doubled quotes resolved, truncated), operators, Unicode identifiers,
 * keywords (their canonical spelling) and parameters ($n) the value too.
 * Only constants (ICONST, FCONST, SCONST, USCONST, BCONST, XCONST) keep
 * just their code, so their kind and position are in the key. Dollar
 * quotes, E'' strings, nested comments and the like are the lexer's
 * business, not ours: a text whose lexing differs gets a different
 * key. The one place where the parser lets a constant's value change a
 * name is UESCAPE (U&"d!0061ta" UESCAPE '!' is the identifier data):
 * a text with a UESCAPE token gets no 'S' key at all. So two texts
 * sharing a key give the grammar the same tokens, and their trees
 * differ only where a constant's value lands: A_Const values, typmods,
 * and float(p)'s choice of float4/float8. The walk above never looks at
 * a constant's value or kind, except in the places that set w->nocache,
 * and only verdicts with nocache false are stored:
 *   - ORDER BY / GROUP BY / DISTINCT ON items that are a constant or a
 *     parameter (a position);
 *   - casts to reg* types ('t'::regclass names an object);
 *   - any function outside the built-in list (nextval('s'),
 *     set_config('x', ...): their literals name objects or settings);
 *   - every statement other than SELECT/INSERT/UPDATE/DELETE/MERGE
 *     (utility statements: SET's value, COPY's file name, BEGIN's modes,
 *     EXPLAIN's options are all literals that carry meaning).
 *
 * A text that shares the key but would not parse. A few grammar checks
 * look at a constant's value (float(0), an invalid U&'' escape), so text
 * B may share the key of an allowed text A and still be a syntax error.
 * B is then sent on with A's verdict, and the server, whose grammar is
 * the same, rejects it: a simple Query's whole text is parsed before
 * any of it runs, and a Parse with a syntax error creates no statement.
 * Nothing runs that the verdict did not cover. The other way round, a
 * text that failed to parse is cached under its exact key only (its
 * denial may have come from a value), and a text the lexer refuses gets
 * no 'S' key and is judged in full.
 *
 * Texts that fail checks (length, NUL, UTF-8) never reach the cache, and
 * denied texts are cached like allowed ones (same argument).
 *
 * Per thread: each worker thread has its own table, so no locks; memory is
 * bounded (CACHE_SETS x CACHE_WAYS entries of at most CACHE_MAX_TEXT bytes
 * of key text each) and freed when the thread exits. Set-associative with
 * LRU within a set: colliding keys only evict each other, so a flood of
 * crafted texts costs misses, never time.
 */
#define CACHE_SETS      256
#define CACHE_WAYS      4
#define CACHE_MAX_TEXT  4096

struct cached {
	enum pgc_verdict verdict;
	enum pgc_class cls;
	char tag[32];
	int nstmts, denied_stmt;
	const struct policy_rule *rule;
	char reason[256];
	bool copy_in, copy_out, ends_tx, begins_tx;
	struct pgc_stmt *stmts;        /* nstmts, in the same allocation, after tables */
	int ntables;
	char tables[][128];
};

struct centry {
	uint64_t h;
	uint64_t stamp;
	uint32_t owner;                /* pgc_ctx.owner of the text that put it */
	size_t klen;
	char *key;
	struct cached *res;
};

struct tstate {
	struct centry c[CACHE_SETS][CACHE_WAYS];
	uint64_t clock;
	char *sql;
	size_t sqlcap;
	char *kbuf;
	size_t kcap;
	struct walker *w;
	char skey[CACHE_MAX_TEXT];     /* scan_key()'s output */
	char fkey[CACHE_MAX_TEXT];     /* fast_key()'s output */
};

static __thread struct tstate *tls;
static __thread uint64_t scans;   /* scan_key() runs, for test_pg_classify */
static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

static void tstate_free(void *p)
{
	struct tstate *t = p;

	if (!t)
		return;
	for (int s = 0; s < CACHE_SETS; s++)
		for (int k = 0; k < CACHE_WAYS; k++) {
			free(t->c[s][k].key);
			free(t->c[s][k].res);
		}
	if (t->w)
		pgj_free(&t->w->j);
	free(t->w);
	free(t->sql);
	free(t->kbuf);
	free(t);
}

static void tls_key_make(void)
{
	pthread_key_create(&tls_key, tstate_free);
}

static struct tstate *tstate_get(void)
{
	if (tls)
		return tls;
	pthread_once(&tls_once, tls_key_make);
	tls = calloc(1, sizeof(*tls));
	if (tls)
		pthread_setspecific(tls_key, tls);
	return tls;
}

void pgc_cache_flush(void)
{
	if (!tls)
		return;
	pthread_setspecific(tls_key, NULL);
	tstate_free(tls);
	tls = NULL;
}

/*
 * The table's hash: eight bytes a step (keys are ~100 bytes; FNV-1a's byte
 * steps were most of a lookup). Not keyed: a crafted collision can only
 * make keys share a set and evict each other (misses, see above); the full
 * key is compared on every hit.
 */
static uint64_t key_hash(const char *p, size_t n)
{
	const uint64_t m = 0x9E3779B97F4A7C15ULL;
	uint64_t h = 0xcbf29ce484222325ULL ^ n, w;

	for (; n >= 8; p += 8, n -= 8) {
		memcpy(&w, p, 8);
		h = (h ^ w) * m;
		h ^= h >> 29;
	}
	if (n) {
		w = 0;
		memcpy(&w, p, n);
		h = (h ^ w) * m;
		h ^= h >> 29;
	}
	h *= m;
	return h ^ (h >> 32);
}

/* Builds the key in t->kbuf; returns its length, 0 when not cacheable. */
static size_t key_build(struct tstate *t, char kind, const struct pgc_ctx *ctx,
			const struct policy_rule *const *rules, size_t nrules,
			const char *text, size_t tlen)
{
	const char *sp = ctx->search_path ? ctx->search_path : "public";
	const char *set = ctx->settings ? ctx->settings : "";
	size_t splen = strlen(sp) + 1, setlen = strlen(set) + 1;
	static const uint8_t none[32];
	const uint8_t *cat = ctx->catalog ? ctx->catalog->hash : none;
	size_t need = 1 + sizeof(ctx->policy_gen) + sizeof(none) + 1 + sizeof(nrules) + nrules * sizeof(void *) +
		      sizeof(ctx->column_masked) + sizeof(ctx->arg) + sizeof(ctx->arg_id) + splen + setlen + tlen;
	char *p;

	if (!ctx->policy_gen || tlen > CACHE_MAX_TEXT || nrules > 64 || (ctx->arg && !ctx->arg_id))
		return 0;
	if (need > t->kcap) {
		char *nb = realloc(t->kbuf, need);

		if (!nb)
			return 0;
		t->kbuf = nb;
		t->kcap = need;
	}
	p = t->kbuf;
	*p++ = kind;
	memcpy(p, &ctx->policy_gen, sizeof(ctx->policy_gen));
	p += sizeof(ctx->policy_gen);
	memcpy(p, cat, sizeof(none));      /* the database's own names change verdicts */
	p += sizeof(none);
	*p++ = ctx->names_stale;
	memcpy(p, &nrules, sizeof(nrules));
	p += sizeof(nrules);
	for (size_t i = 0; i < nrules; i++) {
		memcpy(p, &rules[i], sizeof(void *));
		p += sizeof(void *);
	}
	memcpy(p, &ctx->column_masked, sizeof(ctx->column_masked));
	p += sizeof(ctx->column_masked);
	memcpy(p, &ctx->arg, sizeof(ctx->arg));
	p += sizeof(ctx->arg);
	memcpy(p, &ctx->arg_id, sizeof(ctx->arg_id));
	p += sizeof(ctx->arg_id);
	memcpy(p, sp, splen);
	p += splen;
	memcpy(p, set, setlen);
	p += setlen;
	memcpy(p, text, tlen);
	return need;
}

/*
 * PostgreSQL's core lexer, as libpg_query builds it (the scan.l that
 * raw_parser() runs), called directly: pg_query_scan() wraps the same calls
 * but packs every token into protobuf, which cost three times the lexing.
 * libpg_query installs only pg_query.h, so the few entry points are
 * declared here from PostgreSQL 15's parser/scanner.h and pg_query's
 * internals. They are exported by libpg_query.so.1504 (libpg_query
 * 15-4.x, PostgreSQL 15): its SONAME changes with the version, and
 * test_pg_classify checks the tokens against pg_query_scan()'s. The lexer's state (core_yy_extra_type, ~100 bytes)
 * is only ever handed back to it, so a buffer larger than it does.
 * Errors are PostgreSQL ereport(ERROR)s: a siglongjmp to
 * PG_exception_stack (thread-local in libpg_query), which must be set, or
 * the error would become FATAL and end the process.
 */
typedef void *core_yyscan_t;
typedef union {
	int ival;
	char *str;
	const char *keyword;
} core_YYSTYPE;
struct ScanKeywordList;
struct ErrorContextCallback;
extern const struct ScanKeywordList ScanKeywords;
extern const uint16_t ScanKeywordTokens[];
extern __thread sigjmp_buf *PG_exception_stack;
extern __thread struct ErrorContextCallback *error_context_stack;
core_yyscan_t scanner_init(const char *str, void *yyext, const struct ScanKeywordList *kw,
			   const uint16_t *kw_tokens);
void scanner_finish(core_yyscan_t yyscanner);
int core_yylex(core_YYSTYPE *lvalp, int *llocp, core_yyscan_t yyscanner);
void *pg_query_enter_memory_context(void);
void pg_query_exit_memory_context(void *ctx);
void FlushErrorState(void);

#define SCAN_EXTRA_SIZE 1024

static bool skey_put(struct tstate *t, size_t *n, const void *p, size_t len)
{
	if (len > sizeof(t->skey) - *n)
		return false;
	memcpy(t->skey + *n, p, len);
	*n += len;
	return true;
}

/* One token into the key: its code, then its value unless it is a
 * constant (see the safety argument). Returns false when the text gets no
 * key (UESCAPE, or a key longer than the cache takes). */
static bool skey_token(struct tstate *t, size_t *n, int tok, const core_YYSTYPE *v)
{
	uint16_t code = (uint16_t)tok;
	const char *str = NULL;

	switch (tok) {
	case PG_QUERY__TOKEN__SQL_COMMENT:
	case PG_QUERY__TOKEN__C_COMMENT:
		return true;            /* the grammar never sees them */
	case PG_QUERY__TOKEN__UESCAPE:
		return false;           /* a constant that changes names */
	case PG_QUERY__TOKEN__ICONST:
	case PG_QUERY__TOKEN__FCONST:
	case PG_QUERY__TOKEN__SCONST:
	case PG_QUERY__TOKEN__USCONST:
	case PG_QUERY__TOKEN__BCONST:
	case PG_QUERY__TOKEN__XCONST:
		return skey_put(t, n, &code, sizeof(code));
	case PG_QUERY__TOKEN__PARAM:
		return skey_put(t, n, &code, sizeof(code)) &&
		       skey_put(t, n, &v->ival, sizeof(v->ival));
	case PG_QUERY__TOKEN__IDENT:
	case PG_QUERY__TOKEN__UIDENT:
	case PG_QUERY__TOKEN__Op:
		str = v->str;
		break;
	case PG_QUERY__TOKEN__TYPECAST:
	case PG_QUERY__TOKEN__DOT_DOT:
	case PG_QUERY__TOKEN__COLON_EQUALS:
	case PG_QUERY__TOKEN__EQUALS_GREATER:
	case PG_QUERY__TOKEN__LESS_EQUALS:
	case PG_QUERY__TOKEN__GREATER_EQUALS:
	case PG_QUERY__TOKEN__NOT_EQUALS:
		break;                  /* fixed spellings ("!=" is "<>" to the grammar) */
	default:
		if (tok > 0 && tok < 256)
			break;          /* a single character: its code */
		if (tok < PG_QUERY__TOKEN__ABORT_P || tok > PG_QUERY__TOKEN__ZONE)
			return false;   /* nothing the lexer returns: no key */
		str = v->keyword;       /* a keyword: its canonical spelling */
		if (!str)
			return false;
		break;
	}
	if (!skey_put(t, n, &code, sizeof(code)))
		return false;
	if (str) {
		size_t len = strlen(str);
		uint16_t l16 = (uint16_t)len;

		if (len > UINT16_MAX)
			return false;
		return skey_put(t, n, &l16, sizeof(l16)) && skey_put(t, n, str, len);
	}
	return true;
}

/*
 * The 'S' key text of t->sql (NUL-terminated) into t->skey: the lexer's
 * tokens as the safety argument above describes. Returns its length, or 0
 * when the text gets no such key (the lexer refused it, UESCAPE, too long).
 */
static size_t scan_key(struct tstate *t)
{
	_Alignas(16) unsigned char extra[SCAN_EXTRA_SIZE];
	sigjmp_buf jb, *volatile saved_jb = PG_exception_stack;
	struct ErrorContextCallback *volatile saved_ecs = error_context_stack;
	void *mcx = pg_query_enter_memory_context();
	volatile size_t n = 0;
	volatile bool ok = true;

	scans++;

	if (sigsetjmp(jb, 0) == 0) {
		core_yyscan_t sc;
		size_t k = 0;

		PG_exception_stack = &jb;
		sc = scanner_init(t->sql, extra, &ScanKeywords, ScanKeywordTokens);
		for (;;) {
			core_YYSTYPE v;
			int loc, tok = core_yylex(&v, &loc, sc);

			if (tok == 0)
				break;
			if (!skey_token(t, &k, tok, &v)) {
				ok = false;
				break;
			}
		}
		n = k;
		scanner_finish(sc);
	} else {
		ok = false;             /* a lexer error: judged in full */
		FlushErrorState();
	}
	PG_exception_stack = saved_jb;
	error_context_stack = saved_ecs;
	pg_query_exit_memory_context(mcx);
	return ok ? n : 0;
}

/*
 * The 'F' key: the text itself with each constant of the two plainest
 * kinds replaced by a marker, NUL and a letter (a text never holds a NUL:
 * judge_miss() refuses it first), found by a scan of our own that only
 * takes texts whose lexing it can tell with no doubt, and gives up on
 * anything else (0: no 'F' key; the 'S' key is then tried as before).
 * Why: PostgreSQL's lexer costs some 1.4 us for pgbench's one-line SELECT,
 * most of the worker's time for a statement whose verdict is cached; this
 * scan costs a tenth of that.
 *
 * Why a hit is safe. Outside string constants the scan takes only ASCII
 * letters, digits, '_', space, tab, CR, LF and , ; ( ) . = < > * + - : [ ]
 * and refuses "--" (a comment); so no comment, no quoted identifier, no
 * parameter, no '$' or '&' (dollar quotes, U&''), no backslash. Then:
 *   - a word ([A-Za-z0-9_]+) that starts with a letter or '_' is kept as
 *     it is (an identifier or keyword);
 *   - a word of 1 to 9 digits with no '.' on either side is an integer
 *     constant (ICONST: it fits an int32, so never FCONST) and becomes the
 *     marker 'i'; any other word that starts with a digit (1e5, ten
 *     digits; 0x1F and 1_000, trailing junk to PostgreSQL 15's lexer and
 *     other tokens to later ones) and a digit word next to a '.' give up;
 *   - a quote not right after a word character starts a standard string
 *     (not E'', B'', X'', N''); it runs to the next quote not doubled, as
 *     in PostgreSQL's lexer with standard_conforming_strings on (which the
 *     wire module keeps on, as scan_key() assumes) and becomes 's'; an
 *     unterminated string gives up.
 * Two texts with the same 'F' key are therefore the same bytes but for the
 * insides of constants that end at the same places, and both lex to the
 * same tokens with only those constants' values differing (their kind is
 * the same). Their 'S' keys are thus equal, so a verdict stored under an
 * 'F' key holds wherever its 'S' key's would: one is stored only where an
 * 'S' key would be (judge_miss()).
 */
static bool fkey_word(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_';
}

static size_t fast_key(struct tstate *t, const char *sql, size_t len)
{
	const unsigned char *s = (const unsigned char *)sql;
	char *out = t->fkey;
	size_t n = 0, i = 0;

	while (i < len) {
		unsigned char ch = s[i];
		size_t j = i;

		if (fkey_word(ch)) {
			while (j < len && fkey_word(s[j]))
				j++;
			if (ch >= '0' && ch <= '9') {
				for (size_t k = i; k < j; k++)
					if (s[k] < '0' || s[k] > '9')
						return 0;
				if (j - i > 9 || (i && s[i - 1] == '.') || (j < len && s[j] == '.'))
					return 0;
				if (n + 2 > sizeof(t->fkey))
					return 0;
				out[n++] = '\0';
				out[n++] = 'i';
			} else {
				if (n + (j - i) > sizeof(t->fkey))
					return 0;
				memcpy(out + n, s + i, j - i);
				n += j - i;
			}
			i = j;
			continue;
		}
		if (ch == '\'') {
			if (i && fkey_word(s[i - 1]))
				return 0;
			for (j = i + 1;; j++) {
				if (j >= len)
					return 0;               /* unterminated */
				if (s[j] == '\'') {
					if (j + 1 < len && s[j + 1] == '\'') {
						j++;            /* '' inside */
						continue;
					}
					break;
				}
			}
			if (n + 2 > sizeof(t->fkey))
				return 0;
			out[n++] = '\0';
			out[n++] = 's';
			i = j + 1;
			continue;
		}
		switch (ch) {
		case '-':
			if (i + 1 < len && s[i + 1] == '-')
				return 0;
			break;
		case ' ': case '\t': case '\r': case '\n':
		case ',': case ';': case '(': case ')': case '.': case '=':
		case '<': case '>': case '*': case '+': case ':': case '[': case ']':
			break;
		default:
			return 0;
		}
		if (n + 1 > sizeof(t->fkey))
			return 0;
		out[n++] = (char)ch;
		i++;
	}
	return n;
}

/* For test_pg_classify: the 'F' key text of sql (len bytes) into out (cap
 * bytes); returns its length, 0 when the text gets none. And how many
 * times this thread ran the lexer for an 'S' key (scan_key()). */
size_t pgc_fast_key(const char *sql, size_t len, char *out, size_t cap);
size_t pgc_fast_key(const char *sql, size_t len, char *out, size_t cap)
{
	struct tstate *t = tstate_get();
	size_t n;

	if (!t || len > CACHE_MAX_TEXT)
		return 0;
	n = fast_key(t, sql, len);
	if (n > cap)
		return 0;
	memcpy(out, t->fkey, n);
	return n;
}

uint64_t pgc_scans(void);
uint64_t pgc_scans(void)
{
	return scans;
}

/* For test_pg_classify: the 'S' key text of sql (NUL-terminated) into out
 * (cap bytes); returns its length, 0 when the text gets none. */
size_t pgc_scan_key(const char *sql, char *out, size_t cap);
size_t pgc_scan_key(const char *sql, char *out, size_t cap)
{
	struct tstate *t = tstate_get();
	size_t len = strlen(sql), n;

	if (!t || len > CACHE_MAX_TEXT)
		return 0;
	if (len + 1 > t->sqlcap) {
		char *nb = realloc(t->sql, len + 1);

		if (!nb)
			return 0;
		t->sql = nb;
		t->sqlcap = len + 1;
	}
	memcpy(t->sql, sql, len + 1);
	n = scan_key(t);
	if (n > cap)
		return 0;
	memcpy(out, t->skey, n);
	return n;
}

static bool cache_get(struct tstate *t, size_t klen, struct pgc_result *out)
{
	uint64_t h = key_hash(t->kbuf, klen);
	struct centry *set = t->c[h % CACHE_SETS];

	for (int k = 0; k < CACHE_WAYS; k++) {
		struct centry *e = &set[k];
		const struct cached *c = e->res;

		if (!e->key || e->h != h || e->klen != klen || memcmp(e->key, t->kbuf, klen) != 0)
			continue;
		e->stamp = ++t->clock;
		result_clear(out);
		out->verdict = c->verdict;
		out->cls = c->cls;
		memcpy(out->tag, c->tag, sizeof(out->tag));
		out->nstmts = c->nstmts;
		out->denied_stmt = c->denied_stmt;
		memcpy(out->stmts, c->stmts, (size_t)c->nstmts * sizeof(out->stmts[0]));
		out->rule = c->rule;
		memcpy(out->reason, c->reason, sizeof(out->reason));
		out->copy_in = c->copy_in;
		out->copy_out = c->copy_out;
		out->ends_tx = c->ends_tx;
		out->begins_tx = c->begins_tx;
		out->ntables = c->ntables;
		memcpy(out->tables, c->tables, (size_t)c->ntables * sizeof(out->tables[0]));
		out->cached = true;
		return true;
	}
	return false;
}

static void cache_put(struct tstate *t, size_t klen, const struct pgc_result *r, uint32_t owner)
{
	uint64_t h = key_hash(t->kbuf, klen);
	struct centry *set = t->c[h % CACHE_SETS], *victim = &set[0], *own = NULL;
	size_t toff = sizeof(struct cached) + (size_t)r->ntables * sizeof(r->tables[0]);
	size_t rsize = toff + (size_t)r->nstmts * sizeof(r->stmts[0]);
	struct cached *c;
	int nown = 0;
	char *key;

	for (int k = 0; k < CACHE_WAYS; k++) {
		if (set[k].key && set[k].h == h && set[k].klen == klen &&
		    memcmp(set[k].key, t->kbuf, klen) == 0)
			return;         /* already there */
		if (!set[k].key || set[k].stamp < victim->stamp)
			victim = &set[k];
		if (!set[k].key)
			break;
		if (owner && set[k].owner == owner) {
			nown++;
			if (!own || set[k].stamp < own->stamp)
				own = &set[k];
		}
	}
	/* one agent's new texts (one that thrashes the cache on purpose) evict
	 * its own entries past half the set, not the others' (review, stop 29:
	 * an agent sending new statements took another's miss rate from 3.5 %
	 * to 98 %, and charged it the parses) */
	if (victim->key && nown >= CACHE_WAYS / 2)
		victim = own;
	key = malloc(klen);
	c = malloc(rsize);
	if (!key || !c) {
		free(key);
		free(c);
		return;
	}
	memcpy(key, t->kbuf, klen);
	c->verdict = r->verdict;
	c->cls = r->cls;
	memcpy(c->tag, r->tag, sizeof(c->tag));
	c->nstmts = r->nstmts;
	c->denied_stmt = r->denied_stmt;
	c->stmts = (struct pgc_stmt *)((char *)c + toff);
	memcpy(c->stmts, r->stmts, (size_t)r->nstmts * sizeof(r->stmts[0]));
	c->rule = r->rule;
	memcpy(c->reason, r->reason, sizeof(c->reason));
	c->copy_in = r->copy_in;
	c->copy_out = r->copy_out;
	c->ends_tx = r->ends_tx;
	c->begins_tx = r->begins_tx;
	c->ntables = r->ntables;
	memcpy(c->tables, r->tables, (size_t)r->ntables * sizeof(r->tables[0]));
	free(victim->key);
	free(victim->res);
	victim->key = key;
	victim->res = c;
	victim->klen = klen;
	victim->h = h;
	victim->stamp = ++t->clock;
	victim->owner = owner;
}

/* ---- judge ---- */

static void out_deny(struct pgc_result *out, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void out_deny(struct pgc_result *out, const char *fmt, ...)
{
	va_list ap;

	out->verdict = PGC_DENY;
	out->rule = NULL;
	va_start(ap, fmt);
	vsnprintf(out->reason, sizeof(out->reason), fmt, ap);
	va_end(ap);
}

/*
 * The walk stopped at a denial: the statements before the one it stopped
 * at get their own verdicts (their walk was complete), the one it stopped
 * at is the reason, and the rest are recorded unjudged, with the tag and
 * class of their node type, so that audit still has one event for each.
 * A denial with no statement to blame (too many statements, a malformed
 * tree) is about the whole text.
 */
static void walk_denied(struct walker *w, int stmts, const struct policy_rule *const *rules,
			size_t nrules)
{
	struct pgc_result *out = w->out;
	int i = 0;

	out->denied_stmt = w->deny_at;
	for (int s = 0; s < w->nst; s++) {
		struct pgc_stmt *o = &out->stmts[s];

		if (s < w->deny_at) {
			o->verdict = stmt_verdict(w, rules, nrules, &w->stmts[s], &o->rule);
			o->judged = true;
		} else if (s == w->deny_at) {
			o->judged = true;
		}
	}
	for (int s = pgj_first(&w->j, stmts); s >= 0 && out->nstmts < MAX_STMTS;
	     s = pgj_after(&w->j, stmts, s), i++) {
		int body, key;
		const struct kind *k;
		struct pgc_stmt *o;

		if (i < w->nst)
			continue;
		key = pgj_unwrap(&w->j, pgj_get(&w->j, s, "stmt"), &body);
		k = key >= 0 ? find_kind(w, key) : NULL;
		o = &out->stmts[out->nstmts++];
		memset(o, 0, sizeof(*o));
		o->verdict = PGC_DENY;
		o->cls = k ? k->cls : PGC_UTILITY;
		snprintf(o->tag, sizeof(o->tag), "%s", k ? k->tag : "?");
	}
}

/*
 * A parse error's reason without the statement's text: PostgreSQL's message
 * quotes the text where it stopped ("unterminated quoted string at or near
 * "'hunter2"), and the reason goes into audit events, which never hold a
 * literal (a password in ALTER ROLE, a token in a WHERE). The message is
 * kept up to " at or near" or its first quote; the position stays.
 */
static void parse_error_reason(char *why, size_t whylen, int pos, const char *msg)
{
	size_t n = 0;

	if (!msg)
		msg = "?";
	while (msg[n] && msg[n] != '"' && msg[n] != '\'' && strncmp(msg + n, " at or near", 11) != 0 &&
	       n < 120)
		n++;
	while (n && msg[n - 1] == ' ')
		n--;
	snprintf(why, whylen, "parse error at position %d: %.*s", pos, (int)n, msg);
}

/* Which keys a verdict may be stored under (see the safety argument). */
enum cache_as { CACHE_NONE, CACHE_EXACT, CACHE_ALL };

/* Parses and walks t->sql into out; returns how the verdict may be cached. */
static enum cache_as judge_parsed(struct tstate *t, const struct pgc_ctx *ctx,
			 const struct policy_rule *const *rules, size_t nrules,
			 struct pgc_result *out)
{
	struct walker *w = t->w;
	PgQueryParseResult pr;
	int stmts, rc;

	pr = pg_query_parse(t->sql);
	if (pr.error) {
		parse_error_reason(out->reason, sizeof(out->reason), pr.error->cursorpos, pr.error->message);
		out->verdict = PGC_DENY;
		out->rule = NULL;
		pg_query_free_parse_result(pr);
		return CACHE_EXACT;     /* a syntax error may depend on a constant's value */
	}
	w->nst = w->nfuncs = w->nents = w->nders = w->nctes = w->depth = 0;
	w->denied = w->nocache = false;
	w->lineage_steps = 0;
	w->names_unknown = ctx->names_stale;
	w->in_from_func = 0;
	w->deny_at = -1;
	out->denied_stmt = -1;
	w->ctx = ctx;
	w->schema = ctx->search_path && *ctx->search_path ? ctx->search_path : "public";
	w->out = out;
	w->may_write = pgc_rules_may_write(rules, nrules);
	rc = pgj_tokenize(&w->j, pr.parse_tree, strlen(pr.parse_tree));
	if (rc < 0) {
		out_deny(out, rc == -ENOMEM ? "out of memory" : "statement too complex");
		pg_query_free_parse_result(pr);
		return CACHE_NONE;
	}
	stmts = pgj_get(&w->j, 0, "stmts");
	for (int s = pgj_first(&w->j, stmts); s >= 0 && !w->denied; s = pgj_after(&w->j, stmts, s)) {
		int body, key = pgj_unwrap(&w->j, pgj_get(&w->j, s, "stmt"), &body);
		struct scope sc = { .parent = NULL };

		if (w->nst == MAX_STMTS) {
			deny(w, "more than %d statements in one message", MAX_STMTS);
			break;
		}
		w->st = &w->stmts[w->nst++];
		memset(w->st, 0, sizeof(*w->st));
		if (key < 0) {
			w->st->tag = "?";
			deny(w, "malformed parse tree");
			break;
		}
		statement(w, key, body, &sc, true);
		if (!w->st->tag)
			w->st->tag = "?";
		if (changes_names(w, key, body)) {
			w->names_unknown = out->changes_names = true;
			w->nocache = true;
		}
		if (w->denied)
			w->deny_at = w->nst - 1;
	}
	out->nstmts = w->nst;
	if (w->nst) {
		int best = 0;

		snprintf(out->tag, sizeof(out->tag), "%s", w->stmts[0].tag);
		for (int s = 1; s < w->nst; s++)
			if (class_rank(w->stmts[s].cls) > class_rank(w->stmts[best].cls))
				best = s;
		out->cls = w->stmts[best].cls;
	} else {
		out->cls = PGC_UTILITY;         /* empty query */
	}
	for (int s = 0; s < w->nst; s++) {
		struct pgc_stmt *o = &out->stmts[s];

		o->verdict = PGC_DENY;
		o->judged = false;
		o->rule = NULL;
		o->cls = w->stmts[s].cls;
		o->tables = w->stmts[s].tables;
		o->first_table = w->stmts[s].first_table;
		o->into_table = w->stmts[s].into_table;
		snprintf(o->tag, sizeof(o->tag), "%s", w->stmts[s].tag);
	}
	if (!w->denied)
		decide(w, rules, nrules);
	else
		walk_denied(w, stmts, rules, nrules);
	if (w->denied) {
		out->verdict = PGC_DENY;
		out->rule = NULL;
	}
	/* the walker's strings live in its arena: nothing in out points
	 * there. A huge statement's buffers are not kept for the next. */
	if (w->j.cap > (1u << 16))
		pgj_free(&w->j);
	pg_query_free_parse_result(pr);
	return w->nocache ? CACHE_NONE : CACHE_ALL;
}

/*
 * libpg_query's JSON writer recurses once per tree level without a depth
 * check: `SELECT 1+1+...+1` with 100000 terms (200 KB, a left-deep tree the
 * parser builds without complaint) overflows an 8 MiB stack and kills the
 * process. At about 130 bytes of stack per level, texts up to
 * SCAN_OVER bytes (at most ~4000 levels: a level costs at least two
 * bytes) are safe on any stack of 2 MiB or more. Longer texts are lexed
 * first (pg_query_scan: the same lexer, flat, no tree) and refused when
 * an upper bound on their depth is too high. The bound: a level of the
 * tree needs an operator or keyword token, or a parenthesis/bracket group;
 * tokens of a group that has closed are no ancestors of anything after
 * it, so the bound is the maximum, over the text, of the group depth plus
 * the operator/keyword tokens in the open groups so far. Constants,
 * identifiers, parameters, commas, dots and comments add no level. A long
 * VALUES list or IN list stays low (each row is its own group); a
 * 5000-term chain at one level, such as 5000 ANDed conditions, is refused.
 */
#define SCAN_OVER  8192
#define MAX_NEST   4000
_Static_assert(CACHE_MAX_TEXT < SCAN_OVER, "a text judge_miss() pre-scans has no cache key");

/* Protobuf wire format, just enough for pg_query_scan()'s flat ScanResult
 * (field 2: repeated ScanToken; ScanToken field 4: the token). By hand
 * because protobuf-c's unpack allocates one message per token, which was a
 * fifth of the cost of judging a 40 KB INSERT; bounds-checked all the same. */
static bool pb_varint(const uint8_t **p, const uint8_t *e, uint64_t *v)
{
	*v = 0;
	for (int shift = 0; shift < 64 && *p < e; shift += 7) {
		uint8_t b = *(*p)++;

		*v |= (uint64_t)(b & 0x7F) << shift;
		if (!(b & 0x80))
			return true;
	}
	return false;
}

static bool pb_skip(const uint8_t **p, const uint8_t *e, unsigned wt)
{
	uint64_t v;

	switch (wt) {
	case 0:
		return pb_varint(p, e, &v);
	case 1:
		if (e - *p < 8)
			return false;
		*p += 8;
		return true;
	case 2:
		if (!pb_varint(p, e, &v) || v > (uint64_t)(e - *p))
			return false;
		*p += v;
		return true;
	case 5:
		if (e - *p < 4)
			return false;
		*p += 4;
		return true;
	}
	return false;
}

static bool nesting_ok(const char *sql, char *why, size_t whylen)
{
	PgQueryScanResult sr = pg_query_scan(sql);
	const uint8_t *p, *e;
	int32_t stack[256];     /* operator tokens per open group (deeper: refused) */
	long total = 0, depth = 0, worst = 0;
	bool ok = true;

	if (sr.error) {
		parse_error_reason(why, whylen, sr.error->cursorpos, sr.error->message);
		pg_query_free_scan_result(sr);
		return false;
	}
	p = (const uint8_t *)sr.pbuf.data;
	e = p + sr.pbuf.len;
	stack[0] = 0;
	while (ok && p < e) {
		uint64_t tag, len, tok = 0;
		const uint8_t *te;

		if (!pb_varint(&p, e, &tag)) {
			ok = false;
			break;
		}
		if (tag != ((2 << 3) | 2)) {            /* not a token: skip */
			ok = pb_skip(&p, e, tag & 7);
			continue;
		}
		if (!pb_varint(&p, e, &len) || len > (uint64_t)(e - p)) {
			ok = false;
			break;
		}
		te = p + len;
		while (ok && p < te) {
			uint64_t ftag;

			if (!pb_varint(&p, te, &ftag))
				ok = false;
			else if (ftag == ((4 << 3) | 0))
				ok = pb_varint(&p, te, &tok);
			else
				ok = pb_skip(&p, te, ftag & 7);
		}
		if (!ok)
			break;
		switch (tok) {
		case PG_QUERY__TOKEN__ASCII_40:         /* ( */
		case PG_QUERY__TOKEN__ASCII_91:         /* [ */
			if (++depth >= (long)(sizeof(stack) / sizeof(stack[0]))) {
				ok = false;
				break;
			}
			stack[depth] = 0;
			break;
		case PG_QUERY__TOKEN__ASCII_41:         /* ) */
		case PG_QUERY__TOKEN__ASCII_93:         /* ] */
			if (depth > 0)
				total -= stack[depth--];
			break;
		case PG_QUERY__TOKEN__ASCII_59:         /* ; */
			if (depth == 0)
				total = stack[0] = 0;
			break;
		case PG_QUERY__TOKEN__ASCII_44:         /* , */
		case PG_QUERY__TOKEN__ASCII_46:         /* . */
		case PG_QUERY__TOKEN__IDENT:
		case PG_QUERY__TOKEN__UIDENT:
		case PG_QUERY__TOKEN__FCONST:
		case PG_QUERY__TOKEN__SCONST:
		case PG_QUERY__TOKEN__USCONST:
		case PG_QUERY__TOKEN__BCONST:
		case PG_QUERY__TOKEN__XCONST:
		case PG_QUERY__TOKEN__ICONST:
		case PG_QUERY__TOKEN__PARAM:
		case PG_QUERY__TOKEN__SQL_COMMENT:
		case PG_QUERY__TOKEN__C_COMMENT:
			break;
		default:                                /* operators and keywords */
			stack[depth]++;
			total++;
			break;
		}
		if (total + depth > worst)
			worst = total + depth;
		if (worst > MAX_NEST)
			ok = false;
	}
	if (!ok)
		snprintf(why, whylen, "statement nested too deeply");
	pg_query_free_scan_result(sr);
	return ok;
}

static bool may_have_constants(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] == '\'' || s[i] == '$' || (s[i] >= '0' && s[i] <= '9'))
			return true;
	return false;
}

/* The calling thread's CPU time: what an agent's uncached statements cost
 * it (mask.c times custom patterns the same way; both files stand alone
 * for their fuzz targets). */
static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts))
		return 0;
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* pgc_judge() past an exact cache miss: the checks, the scanner key, the
 * parse. xklen: the exact key's length (0: not cacheable). */
static int judge_miss(struct tstate *t, const struct pgc_ctx *ctx, const char *sql, size_t len,
		      const struct policy_rule *const *rules, size_t nrules, struct pgc_result *out,
		      size_t xklen)
{
	size_t sklen = 0, stlen = 0, fklen = 0, ftlen = 0;
	enum cache_as cache;
	/* a short text: the parse alone is timed (pgc_judge times a long one) */
	bool timed = ctx->spent && len <= SCAN_OVER;
	uint64_t t0;

	if (len && memchr(sql, '\0', len)) {
		out_deny(out, "statement text holds a NUL byte");
		return 0;
	}
	if (!utf8_valid((const unsigned char *)sql, len)) {
		out_deny(out, "statement text is not valid UTF-8");
		return 0;
	}
	if (len + 1 > t->sqlcap) {
		char *nb = realloc(t->sql, len + 1);

		if (!nb) {
			out_deny(out, "out of memory");
			return -ENOMEM;
		}
		t->sql = nb;
		t->sqlcap = len + 1;
	}
	if (len)
		memcpy(t->sql, sql, len);
	t->sql[len] = '\0';
	if (!t->w && !(t->w = calloc(1, sizeof(*t->w)))) {
		out_deny(out, "out of memory");
		return -ENOMEM;
	}
	/* A long text has no cache key (CACHE_MAX_TEXT < SCAN_OVER): it is
	 * always parsed, so the agent's budget is asked before the pre-scan,
	 * which costs about as much as the parse (a 1 MiB text: some 350 ms
	 * spent before an agent over its budget was refused). */
	if (len > SCAN_OVER && ctx->may_parse && !ctx->may_parse(ctx->garg, out->reason, sizeof(out->reason))) {
		out->verdict = PGC_DENY;
		out->rule = NULL;
		return 0;
	}
	if (len > SCAN_OVER && !nesting_ok(t->sql, out->reason, sizeof(out->reason))) {
		out->verdict = PGC_DENY;
		return 0;
	}

	/* the scanner key: one cached verdict for every constant (a text
	 * with no quote, '$' or digit has no constant: its exact key is all
	 * there is) */
	if (xklen && may_have_constants(sql, len)) {
		/* the 'F' key first (fast_key()), then the 'S' key; a verdict
		 * found by its 'S' key is stored under the 'F' key too */
		if ((ftlen = fast_key(t, t->sql, len)) &&
		    (fklen = key_build(t, 'F', ctx, rules, nrules, t->fkey, ftlen)) && cache_get(t, fklen, out))
			return 0;
		if ((stlen = scan_key(t)) && (sklen = key_build(t, 'S', ctx, rules, nrules, t->skey, stlen)) &&
		    cache_get(t, sklen, out)) {
			if (fklen && key_build(t, 'F', ctx, rules, nrules, t->fkey, ftlen) == fklen)
				cache_put(t, fklen, out, ctx->owner);
			return 0;
		}
	}
	if (len <= SCAN_OVER && ctx->may_parse && !ctx->may_parse(ctx->garg, out->reason, sizeof(out->reason))) {
		out->verdict = PGC_DENY;
		out->rule = NULL;
		return 0;
	}
	t0 = timed ? thread_cpu_ns() : 0;
	cache = judge_parsed(t, ctx, rules, nrules, out);
	if (timed)
		ctx->spent(ctx->garg, thread_cpu_ns() - t0);
	if (cache == CACHE_ALL && sklen &&
	    key_build(t, 'S', ctx, rules, nrules, t->skey, stlen) == sklen) {
		cache_put(t, sklen, out, ctx->owner);
		if (fklen && key_build(t, 'F', ctx, rules, nrules, t->fkey, ftlen) == fklen)
			cache_put(t, fklen, out, ctx->owner);
	}
	if (cache != CACHE_NONE && xklen && key_build(t, 'X', ctx, rules, nrules, sql, len) == xklen)
		cache_put(t, xklen, out, ctx->owner);
	return 0;
}

int pgc_judge(const struct pgc_ctx *ctx, const char *sql, size_t len,
	      const struct policy_rule *const *rules, size_t nrules, struct pgc_result *out)
{
	struct tstate *t;
	size_t xklen = 0;
	uint64_t t0;
	int rc;

	result_clear(out);
	out->verdict = PGC_DENY;
	out->cls = PGC_UTILITY;
	if (!ctx || (!sql && len)) {
		out_deny(out, "internal error: no context");
		return -EINVAL;
	}
	if (!sql)
		sql = "";
	if (len > PGC_MAX_SQL) {
		out_deny(out, "statement longer than %u bytes", PGC_MAX_SQL);
		return 0;
	}
	if (!(t = tstate_get())) {
		out_deny(out, "out of memory");
		return -ENOMEM;
	}
	/* an exact hit is these very bytes, stored only after they passed the
	 * checks of judge_miss(): they need not run again */
	if ((xklen = key_build(t, 'X', ctx, rules, nrules, sql, len)) && cache_get(t, xklen, out))
		return 0;
	/* The thread's CPU clock is a system call: a short text its scanner
	 * key finds costs microseconds and is not timed; a long one is timed
	 * whole, its pre-scan included, whichever way it ends. */
	if (!ctx->spent || len <= SCAN_OVER)
		return judge_miss(t, ctx, sql, len, rules, nrules, out, xklen);
	t0 = thread_cpu_ns();
	rc = judge_miss(t, ctx, sql, len, rules, nrules, out, xklen);
	ctx->spent(ctx->garg, thread_cpu_ns() - t0);
	return rc;
}

int pgc_stmts_prefix(const char *sql, size_t len, int n, int total, size_t *out)
{
	PgQuerySplitResult sr;
	char *text;
	int rc = -EINVAL;

	if (!sql || n <= 0 || n > total || len > PGC_MAX_SQL || (len && memchr(sql, '\0', len)))
		return -EINVAL;
	if (!(text = malloc(len + 1)))
		return -ENOMEM;
	memcpy(text, sql, len);
	text[len] = '\0';
	sr = pg_query_split_with_parser(text);
	if (!sr.error && sr.n_stmts == total) {
		const PgQuerySplitStmt *st = sr.stmts[n - 1];

		if (st->stmt_location >= 0 && st->stmt_len > 0 &&
		    (size_t)st->stmt_location + (size_t)st->stmt_len <= len) {
			*out = (size_t)st->stmt_location + (size_t)st->stmt_len;
			rc = 0;
		}
	}
	pg_query_free_split_result(sr);
	free(text);
	return rc;
}
