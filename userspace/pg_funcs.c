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

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static int cmp_name(const void *key, const void *elem)
{
	return strcmp(key, *(const char *const *)elem);
}

static bool in_list(const char *name, const char *const *v, size_t n)
{
	return bsearch(name, v, n, sizeof(*v), cmp_name) != NULL;
}

static bool list_sorted(const char *const *v, size_t n)
{
	for (size_t i = 1; i < n; i++)
		if (strcmp(v[i - 1], v[i]) >= 0)
			return false;
	return true;
}

bool pgc_builtin_function_safe(const char *name)
{
	return in_list(name, safe_funcs, NELEM(safe_funcs));
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
	return in_list(name, row_funcs, NELEM(row_funcs));
}

/*
 * The pg_catalog functions (PostgreSQL 15) that one argument can call and
 * that are not immutable: volatile or stable, so they may act (lo_unlink,
 * pg_terminate_backend, nextval) or read what table rules guard
 * (pg_read_file, current_setting, pg_relation_size). Attribute notation
 * over a FROM item that is a function, `SELECT g.pg_sleep FROM
 * generate_series(1, 9) g`, calls f(g) with g a scalar, so there t.f is a
 * call when f is one of these (an immutable built-in only computes). From
 * the catalog of PostgreSQL 15:
 *   SELECT DISTINCT proname FROM pg_proc WHERE pronamespace =
 *     'pg_catalog'::regnamespace AND pronargs >= 1 AND pronargs -
 *     pronargdefaults <= 1 AND provolatile <> 'i'
 * Sorted (strcmp order: bsearch; the unit test checks it).
 */
static const char *const call_funcs[] = {
	"aclexplode", "aclitemin", "aclitemout", "age", "amvalidate", "anyarray_out", "anyarray_recv",
	"anyarray_send", "anycompatiblearray_out", "anycompatiblearray_recv",
	"anycompatiblearray_send", "anycompatiblemultirange_out", "anycompatiblerange_out",
	"anyenum_out", "anymultirange_out", "anyrange_out", "array_out", "array_send",
	"array_to_json", "array_typanalyze", "bernoulli", "binary_upgrade_set_next_array_pg_type_oid",
	"binary_upgrade_set_next_heap_pg_class_oid", "binary_upgrade_set_next_heap_relfilenode",
	"binary_upgrade_set_next_index_pg_class_oid", "binary_upgrade_set_next_index_relfilenode",
	"binary_upgrade_set_next_multirange_array_pg_type_oid",
	"binary_upgrade_set_next_multirange_pg_type_oid", "binary_upgrade_set_next_pg_authid_oid",
	"binary_upgrade_set_next_pg_enum_oid", "binary_upgrade_set_next_pg_tablespace_oid",
	"binary_upgrade_set_next_pg_type_oid", "binary_upgrade_set_next_toast_pg_class_oid",
	"binary_upgrade_set_next_toast_relfilenode", "binary_upgrade_set_record_init_privs",
	"bpcharsend", "brin_bloom_summary_recv", "brin_bloom_summary_send",
	"brin_minmax_multi_summary_recv", "brin_minmax_multi_summary_send",
	"brin_summarize_new_values", "brinhandler", "bthandler", "cash_in", "cash_out", "concat",
	"cstring_recv", "cstring_send", "current_schemas", "current_setting", "currval", "date",
	"date_in", "date_out", "dsnowball_init", "enum_first", "enum_last", "enum_out", "enum_range",
	"enum_send", "fmgr_c_validator", "fmgr_internal_validator", "fmgr_sql_validator", "format",
	"gin_clean_pending_list", "ginhandler", "gisthandler", "hashhandler", "heap_tableam_handler",
	"interval_out", "json_agg", "json_build_array", "json_build_object", "json_to_record",
	"json_to_recordset", "jsonb_agg", "jsonb_agg_finalfn", "jsonb_build_array",
	"jsonb_build_object", "jsonb_object_agg_finalfn", "jsonb_to_record", "jsonb_to_recordset",
	"lo_close", "lo_creat", "lo_create", "lo_get", "lo_import", "lo_tell", "lo_tell64",
	"lo_unlink", "money", "multirange_out", "multirange_send", "multirange_typanalyze",
	"mxid_age", "namerecv", "namesend", "nextval", "numeric", "obj_description", "oidvectortypes",
	"pg_advisory_lock", "pg_advisory_lock_shared", "pg_advisory_unlock",
	"pg_advisory_unlock_shared", "pg_advisory_xact_lock", "pg_advisory_xact_lock_shared",
	"pg_backup_start", "pg_backup_stop", "pg_blocking_pids", "pg_cancel_backend",
	"pg_char_to_encoding", "pg_collation_actual_version", "pg_collation_for",
	"pg_collation_is_visible", "pg_column_compression", "pg_column_size",
	"pg_conversion_is_visible", "pg_create_physical_replication_slot", "pg_create_restore_point",
	"pg_current_logfile", "pg_database_collation_actual_version", "pg_database_size",
	"pg_dependencies_recv", "pg_dependencies_send", "pg_drop_replication_slot",
	"pg_encoding_to_char", "pg_extension_update_paths", "pg_function_is_visible",
	"pg_get_constraintdef", "pg_get_function_arguments", "pg_get_function_identity_arguments",
	"pg_get_function_result", "pg_get_function_sqlbody", "pg_get_functiondef", "pg_get_indexdef",
	"pg_get_multixact_members", "pg_get_partition_constraintdef", "pg_get_partkeydef",
	"pg_get_publication_tables", "pg_get_replica_identity_index", "pg_get_ruledef",
	"pg_get_statisticsobjdef", "pg_get_statisticsobjdef_columns",
	"pg_get_statisticsobjdef_expressions", "pg_get_triggerdef", "pg_get_userbyid",
	"pg_get_viewdef", "pg_import_system_collations", "pg_indexes_size", "pg_is_other_temp_schema",
	"pg_log_backend_memory_contexts", "pg_ls_dir", "pg_ls_replslotdir", "pg_ls_tmpdir",
	"pg_mcv_list_items", "pg_mcv_list_recv", "pg_mcv_list_send", "pg_ndistinct_recv",
	"pg_ndistinct_send", "pg_node_tree_recv", "pg_node_tree_send", "pg_opclass_is_visible",
	"pg_operator_is_visible", "pg_opfamily_is_visible", "pg_options_to_table",
	"pg_partition_ancestors", "pg_partition_tree", "pg_promote", "pg_read_binary_file",
	"pg_read_file", "pg_relation_filenode", "pg_relation_filepath", "pg_relation_is_publishable",
	"pg_relation_size", "pg_replication_origin_create", "pg_replication_origin_drop",
	"pg_replication_origin_oid", "pg_replication_origin_session_progress",
	"pg_replication_origin_session_setup", "pg_safe_snapshot_blocking_pids",
	"pg_sequence_last_value", "pg_sequence_parameters", "pg_settings_get_flags", "pg_sleep",
	"pg_sleep_for", "pg_sleep_until", "pg_stat_file", "pg_stat_get_activity",
	"pg_stat_get_analyze_count", "pg_stat_get_autoanalyze_count", "pg_stat_get_autovacuum_count",
	"pg_stat_get_backend_activity", "pg_stat_get_backend_activity_start",
	"pg_stat_get_backend_client_addr", "pg_stat_get_backend_client_port",
	"pg_stat_get_backend_dbid", "pg_stat_get_backend_pid", "pg_stat_get_backend_start",
	"pg_stat_get_backend_userid", "pg_stat_get_backend_wait_event",
	"pg_stat_get_backend_wait_event_type", "pg_stat_get_backend_xact_start",
	"pg_stat_get_blocks_fetched", "pg_stat_get_blocks_hit", "pg_stat_get_db_active_time",
	"pg_stat_get_db_blk_read_time", "pg_stat_get_db_blk_write_time",
	"pg_stat_get_db_blocks_fetched", "pg_stat_get_db_blocks_hit",
	"pg_stat_get_db_checksum_failures", "pg_stat_get_db_checksum_last_failure",
	"pg_stat_get_db_conflict_all", "pg_stat_get_db_conflict_bufferpin",
	"pg_stat_get_db_conflict_lock", "pg_stat_get_db_conflict_snapshot",
	"pg_stat_get_db_conflict_startup_deadlock", "pg_stat_get_db_conflict_tablespace",
	"pg_stat_get_db_deadlocks", "pg_stat_get_db_idle_in_transaction_time",
	"pg_stat_get_db_numbackends", "pg_stat_get_db_session_time", "pg_stat_get_db_sessions",
	"pg_stat_get_db_sessions_abandoned", "pg_stat_get_db_sessions_fatal",
	"pg_stat_get_db_sessions_killed", "pg_stat_get_db_stat_reset_time",
	"pg_stat_get_db_temp_bytes", "pg_stat_get_db_temp_files", "pg_stat_get_db_tuples_deleted",
	"pg_stat_get_db_tuples_fetched", "pg_stat_get_db_tuples_inserted",
	"pg_stat_get_db_tuples_returned", "pg_stat_get_db_tuples_updated",
	"pg_stat_get_db_xact_commit", "pg_stat_get_db_xact_rollback", "pg_stat_get_dead_tuples",
	"pg_stat_get_function_calls", "pg_stat_get_function_self_time",
	"pg_stat_get_function_total_time", "pg_stat_get_ins_since_vacuum",
	"pg_stat_get_last_analyze_time", "pg_stat_get_last_autoanalyze_time",
	"pg_stat_get_last_autovacuum_time", "pg_stat_get_last_vacuum_time", "pg_stat_get_live_tuples",
	"pg_stat_get_mod_since_analyze", "pg_stat_get_numscans", "pg_stat_get_progress_info",
	"pg_stat_get_replication_slot", "pg_stat_get_subscription", "pg_stat_get_subscription_stats",
	"pg_stat_get_tuples_deleted", "pg_stat_get_tuples_fetched", "pg_stat_get_tuples_hot_updated",
	"pg_stat_get_tuples_inserted", "pg_stat_get_tuples_returned", "pg_stat_get_tuples_updated",
	"pg_stat_get_vacuum_count", "pg_stat_get_xact_blocks_fetched", "pg_stat_get_xact_blocks_hit",
	"pg_stat_get_xact_function_calls", "pg_stat_get_xact_function_self_time",
	"pg_stat_get_xact_function_total_time", "pg_stat_get_xact_numscans",
	"pg_stat_get_xact_tuples_deleted", "pg_stat_get_xact_tuples_fetched",
	"pg_stat_get_xact_tuples_hot_updated", "pg_stat_get_xact_tuples_inserted",
	"pg_stat_get_xact_tuples_returned", "pg_stat_get_xact_tuples_updated",
	"pg_stat_reset_replication_slot", "pg_stat_reset_shared",
	"pg_stat_reset_single_function_counters", "pg_stat_reset_single_table_counters",
	"pg_stat_reset_slru", "pg_stat_reset_subscription_stats", "pg_statistics_obj_is_visible",
	"pg_table_is_visible", "pg_table_size", "pg_tablespace_databases", "pg_tablespace_location",
	"pg_tablespace_size", "pg_terminate_backend", "pg_total_relation_size",
	"pg_try_advisory_lock", "pg_try_advisory_lock_shared", "pg_try_advisory_xact_lock",
	"pg_try_advisory_xact_lock_shared", "pg_ts_config_is_visible", "pg_ts_dict_is_visible",
	"pg_ts_parser_is_visible", "pg_ts_template_is_visible", "pg_type_is_visible", "pg_typeof",
	"pg_xact_commit_timestamp", "pg_xact_commit_timestamp_origin", "pg_xact_status",
	"phraseto_tsquery", "plainto_tsquery", "plpgsql_inline_handler", "plpgsql_validator",
	"quote_literal", "quote_nullable", "range_out", "range_send", "range_typanalyze",
	"record_out", "record_send", "regclass", "regclassin", "regclassout", "regcollationin",
	"regcollationout", "regconfigin", "regconfigout", "regdictionaryin", "regdictionaryout",
	"regnamespacein", "regnamespaceout", "regoperatorin", "regoperatorout", "regoperin",
	"regoperout", "regprocedurein", "regprocedureout", "regprocin", "regprocout", "regrolein",
	"regroleout", "regtypein", "regtypeout", "row_security_active", "row_to_json", "setseed",
	"spghandler", "system", "textrecv", "textsend", "time", "timestamp", "timestamp_out",
	"timestamptz", "timestamptz_out", "timetz", "to_json", "to_jsonb", "to_regclass",
	"to_regcollation", "to_regnamespace", "to_regoper", "to_regoperator", "to_regproc",
	"to_regprocedure", "to_regrole", "to_regtype", "to_tsquery", "to_tsvector", "ts_debug",
	"ts_stat", "ts_token_type", "ts_typanalyze", "txid_status", "varcharsend",
	"websearch_to_tsquery", "xml", "xml_in", "xml_is_well_formed", "xml_recv", "xml_send",
};

bool pgc_builtin_acts(const char *name)
{
	return in_list(name, call_funcs, NELEM(call_funcs));
}

/* For the unit test: the list's order is what bsearch relies on. */
bool pgc_builtin_list_sorted(void);
bool pgc_builtin_list_sorted(void)
{
	return list_sorted(safe_funcs, NELEM(safe_funcs)) && list_sorted(row_funcs, NELEM(row_funcs)) &&
	       list_sorted(call_funcs, NELEM(call_funcs));
}
