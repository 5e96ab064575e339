// SPDX-License-Identifier: Apache-2.0
/*
 * pg_funcs: the built-in functions an agent may call without a policy
 * `functions:` entry. An allowlist, never a deny list (notes §3.3): anything
 * not named here, and every user-defined function, needs a rule.
 *
 * What belongs here: pure functions of their arguments (string, math,
 * date/time, JSON construction and access, array helpers, aggregates and
 * window functions). What never does: anything that reads files, runs SQL
 * held in a string (query_to_xml and friends, dblink), touches large
 * objects, sequences, advisory locks, notifications, settings
 * (set_config), replication, other backends, XIDs, or names objects in a
 * literal (to_regclass, pg_relation_size, has_*_privilege). Those are
 * either side effects or a way to read what the table rules forbid.
 *
 * Also listed: a few read-only session facts drivers ask for (version,
 * current_database, current_schema, pg_typeof). And the names PostgreSQL's
 * grammar turns SQL syntax into
 * (EXTRACT -> pg_catalog.extract, AT TIME ZONE -> timezone, TRIM -> btrim,
 * POSITION -> position, SUBSTRING -> substring, OVERLAY -> overlay,
 * COLLATION FOR -> pg_collation_for, IS NORMALIZED -> is_normalized,
 * OVERLAPS -> overlaps, LIKE ... ESCAPE -> like_escape, SIMILAR TO ->
 * similar_to_escape), so ordinary SQL keeps working; and the TABLESAMPLE
 * methods bernoulli and system (their handlers take an internal argument,
 * so they cannot be called directly).
 *
 * The list must stay sorted (strcmp order): it is searched with bsearch and
 * the unit test checks the order.
 */
#include "pg_classify.h"

#include <stdlib.h>
#include <string.h>

static const char *const safe_funcs[] = {
	"abs", "acos", "acosd", "acosh", "age", "array_agg", "array_append",
	"array_cat", "array_dims", "array_fill", "array_length", "array_lower",
	"array_ndims", "array_position", "array_positions", "array_prepend",
	"array_remove", "array_replace", "array_to_json", "array_to_string",
	"array_upper", "ascii", "asin", "asind", "asinh", "atan", "atan2",
	"atan2d", "atand", "atanh", "avg", "bernoulli", "bit_and", "bit_count", "bit_length",
	"bit_or", "bit_xor", "bool_and", "bool_or", "btrim", "cardinality",
	"cbrt", "ceil", "ceiling", "char_length", "character_length", "chr",
	"clock_timestamp", "coalesce", "concat", "concat_ws", "corr", "cos",
	"cosd", "cosh", "cot", "cotd", "count", "covar_pop", "covar_samp",
	"cume_dist", "current_database", "current_date", "current_schema",
	"date_bin", "date_part", "date_trunc",
	"degrees", "dense_rank", "div", "every", "exp", "extract", "factorial",
	"first_value", "floor", "format", "gcd", "gen_random_uuid",
	"generate_series", "generate_subscripts", "greatest", "initcap",
	"is_normalized", "isfinite", "json_agg", "json_array_elements",
	"json_array_elements_text", "json_array_length", "json_build_array",
	"json_build_object", "json_each", "json_each_text",
	"json_extract_path", "json_extract_path_text", "json_object",
	"json_object_agg", "json_object_keys", "json_strip_nulls",
	"json_typeof", "jsonb_agg", "jsonb_array_elements",
	"jsonb_array_elements_text", "jsonb_array_length", "jsonb_build_array",
	"jsonb_build_object", "jsonb_each", "jsonb_each_text",
	"jsonb_extract_path", "jsonb_extract_path_text", "jsonb_insert",
	"jsonb_object", "jsonb_object_agg", "jsonb_object_keys",
	"jsonb_path_exists", "jsonb_path_match", "jsonb_path_query",
	"jsonb_path_query_array", "jsonb_path_query_first", "jsonb_pretty",
	"jsonb_set", "jsonb_strip_nulls", "jsonb_typeof", "justify_days",
	"justify_hours", "justify_interval", "lag", "last_value", "lcm",
	"lead", "least", "left", "length", "like_escape", "ln", "log", "log10",
	"lower", "lpad", "ltrim", "make_date", "make_interval", "make_time",
	"make_timestamp", "make_timestamptz", "max", "md5", "min",
	"min_scale", "mod", "mode", "normalize", "now", "nth_value", "ntile",
	"nullif", "num_nonnulls", "num_nulls", "octet_length", "overlaps",
	"overlay", "percent_rank", "percentile_cont", "percentile_disc",
	"pg_collation_for", "pg_typeof", "pi", "position", "power", "quote_ident",
	"quote_literal", "quote_nullable", "radians", "random", "rank",
	"regexp_count", "regexp_instr", "regexp_like", "regexp_match",
	"regexp_matches", "regexp_replace", "regexp_split_to_array",
	"regexp_split_to_table", "regr_avgx", "regr_avgy", "regr_count",
	"regr_intercept", "regr_r2", "regr_slope", "regr_sxx", "regr_sxy",
	"regr_syy", "repeat", "replace", "reverse", "right", "round",
	"row_number", "rpad", "rtrim", "scale", "sign", "similar_to_escape",
	"sin", "sind", "sinh", "split_part", "sqrt", "starts_with",
	"statement_timestamp", "stddev", "stddev_pop", "stddev_samp",
	"string_agg", "string_to_array", "string_to_table", "strpos", "substr",
	"substring", "sum", "system", "tan", "tand", "tanh", "timeofday", "timezone",
	"to_char", "to_date", "to_hex", "to_json", "to_jsonb", "to_number",
	"to_timestamp", "transaction_timestamp", "translate", "trim_array",
	"trim_scale", "trunc", "unistr", "unnest", "upper", "var_pop",
	"var_samp", "variance", "version", "width_bucket",
};

static int cmp_name(const void *key, const void *elem)
{
	return strcmp(key, *(const char *const *)elem);
}

bool pgc_builtin_function_safe(const char *name)
{
	return bsearch(name, safe_funcs, sizeof(safe_funcs) / sizeof(safe_funcs[0]),
		       sizeof(safe_funcs[0]), cmp_name) != NULL;
}

/*
 * The pg_catalog functions (PostgreSQL 15) a whole row can be passed to as
 * their one argument: its type is record, "any", anyelement, anynonarray,
 * anycompatible or anycompatiblenonarray (or variadic "any"), other
 * arguments defaulted; aggregates and window functions included. They
 * matter because of attribute notation: `t.f` where t has no column f is
 * the call f(t), so `SELECT c.row_to_json FROM customers c` reads every
 * column of the row, masked ones too. From the catalog of PostgreSQL 15:
 *   SELECT DISTINCT proname FROM pg_proc WHERE pronamespace =
 *     'pg_catalog'::regnamespace AND pronargs >= 1 AND pronargs -
 *     pronargdefaults <= 1 AND (proargtypes[0] IN (those types) OR
 *     (pronargs = 1 AND provariadic IN ("any", anyelement, ...)))
 * Sorted (strcmp order: bsearch; the unit test checks it).
 */
static const char *const row_funcs[] = {
	"any_out", "anycompatible_out", "anycompatiblenonarray_out", "anyelement_out",
	"anynonarray_out", "array_agg", "concat", "count", "cume_dist", "dense_rank",
	"first_value", "hash_record", "json_agg", "json_build_array", "json_build_object",
	"jsonb_agg", "jsonb_build_array", "jsonb_build_object", "lag", "last_value", "lead",
	"mode", "num_nonnulls", "num_nulls", "percent_rank", "pg_collation_for",
	"pg_column_compression", "pg_column_size", "pg_typeof", "quote_literal",
	"quote_nullable", "rank", "record_out", "record_send", "row_to_json", "to_json",
	"to_jsonb",
};

bool pgc_builtin_takes_row(const char *name)
{
	return bsearch(name, row_funcs, sizeof(row_funcs) / sizeof(row_funcs[0]),
		       sizeof(row_funcs[0]), cmp_name) != NULL;
}

/* For the unit test: the list's order is what bsearch relies on. */
bool pgc_builtin_list_sorted(void);
bool pgc_builtin_list_sorted(void)
{
	for (size_t i = 1; i < sizeof(safe_funcs) / sizeof(safe_funcs[0]); i++)
		if (strcmp(safe_funcs[i - 1], safe_funcs[i]) >= 0)
			return false;
	for (size_t i = 1; i < sizeof(row_funcs) / sizeof(row_funcs[0]); i++)
		if (strcmp(row_funcs[i - 1], row_funcs[i]) >= 0)
			return false;
	return true;
}
