/* SPDX-License-Identifier: Apache-2.0 */
/*
 * postgres: the PostgreSQL protocol module. It stays in the path for the
 * whole session (conn stream mode) and speaks protocol 3.0 on both legs.
 *
 * Startup. The agent's first packet is read here: SSLRequest is answered
 * 'S' with TLS from the local CA when one is open (else 'N'), GSSENCRequest
 * 'N', CancelRequest is mapped (below), StartupMessage is locked down: the
 * database is the target's (an agent asking for another one is refused;
 * absent, or equal to its user name as libpq defaults, means the target's),
 * `options`, `replication`, `_pq_.*` and every setting outside a short
 * allowlist are refused, client_encoding is replaced by UTF8. The agent
 * authenticates by its cgroup identity: no password is asked. Upstream we
 * send the target's user, database, client_encoding=UTF8,
 * standard_conforming_strings=on, the target's search_path (default
 * public), statement_timeout and idle_in_transaction_session_timeout, with
 * TLS per target (disable | require: with a ca_file, the chain | verify-full:
 * CA file, host name; one SSL_CTX per target, built once per policy and
 * shared by sessions) and authenticate with the target's password
 * (SCRAM-SHA-256 with the server signature checked, md5, cleartext,
 * trust). Only after the upstream said
 * AuthenticationOk does the agent get its AuthenticationOk; ParameterStatus
 * is passed on, BackendKeyData is replaced by a key we issue, ReadyForQuery
 * passed on. ParameterStatus is also a tripwire: standard_conforming_strings
 * other than on or client_encoding other than UTF8 ends the session.
 *
 * Cancel keys. The agent only ever sees keys we issue (random pid and
 * secret). A table shared by the workers maps them to the upstream's key,
 * the agent, the target and the address dialled. A CancelRequest is
 * forwarded (over TLS when the target requires it) only when the key
 * matches (constant-time) and comes from the same agent for the same
 * target; otherwise it is dropped silently, as PostgreSQL does.
 *
 * Statements. Every Query and Parse is judged (pg_classify) before anything
 * of it reaches the server. A denied message is not dropped: in its place
 * the server gets a stand-in that fails at parse time (the text
 * "agentgate denied", a syntax error), so the server goes exactly where it
 * would have gone had the denied statement failed: an explicit transaction
 * becomes failed, an implicit one ends, the extended protocol skips to Sync.
 * The stand-in's ErrorResponse is rewritten into ours (42501, "agentgate:
 * denied: ..."); nothing the server said about it reaches the agent. The
 * cost is one round trip per denial, paid only by denials, and the
 * transaction state is the server's own, never an imitation. FunctionCall
 * ('F') is always denied the same way. A Bind, Describe or Execute naming a
 * statement or portal we did not allow gets the stand-in too (a named Parse
 * that fails changes nothing on the server). After a stand-in in the
 * extended protocol we drop the agent's messages up to Sync, as the server
 * would skip them: so Bind/Execute of a denied statement never reach it.
 *
 * The statement and portal tables mirror the server's. They change in
 * request order; when the server reports an error in the extended protocol
 * it skips everything up to Sync, so the changes of the failed and skipped
 * requests are undone, newest first (pgbouncer#1535 is what happens
 * otherwise). Portals die at the end of their transaction: each remembers
 * how many syncs were sent before it, and a ReadyForQuery 'I' for a later
 * sync drops it. Responses are matched to requests through a FIFO of
 * pending requests, which also carries what audit needs (one Datastore
 * Activity event per statement: verdict, rule, class, tables, rows,
 * duration; a Query holding several statements gives one event for each,
 * rows attributed by their CommandComplete).
 *
 * A message over PG_MSG_MAX ends the session with FATAL 54000 "agentgate:
 * message too large" (too_large() says how the agent gets to read it).
 *
 * Masking by column name uses the lineage in RowDescription (table OID,
 * attribute number). Names are resolved once per session: before the agent
 * gets its first ReadyForQuery, one catalog query on the session's own
 * upstream connection lists the attributes of every table a mask names,
 * and the functions and operators the pinned schema defines (the
 * classifier's pgc_catalog: names an unqualified call, operator or t.f can
 * reach); its answer is never shown to the agent. Detectors scan text values and
 * binary values of text-like types; side channels (ErrorResponse and
 * NoticeResponse fields, NotificationResponse payloads) are scanned too.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "audit.h"
#include "conn.h"
#include "enforcer.h"
#include "local_ca.h"
#include "mask.h"
#include "pg_classify.h"
#include "pg_wire.h"
#include "proto.h"
#include "upool.h"
#include "util.h"

#define PG_MSG_MAX      CONN_IN_LIMIT     /* largest message either side may send */
#define PG_PEND_MAX     8192              /* requests in flight per session */
#define PG_NAMES_MAX    4096              /* named prepared statements per session */
#define PG_PORTALS_MAX  256               /* named portals per session (each may hold a
					     * masking plan of a few KiB) */
#define PG_COLNAME_MAX  200               /* "schema.relation.column": 3 x 63 bytes + 2 dots */
#define PG_CANCEL_MAX   65536             /* live sessions with a cancel key, all workers */
#define PG_DENY_TEXT    "agentgate denied"   /* the stand-in: a syntax error at parse time */
#define PG_DENY_NAME    "agentgate_denied"   /* stand-in statement name for non-Parse denials */
/* after the allowed statements of a Query, in place of a denied one: fails
 * when it runs (no FROM, so no column of that name), not when the text is
 * parsed, so that those before it have run (query_prefix()) */
#define PG_DENY_TAIL    ";SELECT agentgate_denied_statement"
#define PG_OUR_PREFIX   "agentgate_"         /* statement names the agent may not Parse (ours) */
#define PG_OUR_STMT     "agentgate_refresh"  /* the statement of our catalog queries mid-session */
#define PG_OID_HIGH_Q   "SELECT max(oid)::text FROM pg_catalog.pg_class"   /* one row, one column */
/* Every relation but indexes and TOAST tables, outside PostgreSQL's own
 * schemas and other sessions' temporary ones (the session's own as
 * pg_temp): three columns, which tells its rows from the other queries'
 * (1, 2 and 5 columns). */
#define PG_RELS_Q \
	"SELECT CASE WHEN n.oid = pg_catalog.pg_my_temp_schema() THEN 'pg_temp' ELSE n.nspname END, " \
	"c.relname, c.relkind FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n " \
	"ON n.oid = c.relnamespace WHERE c.relkind NOT IN ('i', 'I', 't') AND " \
	"n.nspname NOT IN ('pg_catalog', 'information_schema') AND " \
	"(n.nspname !~ '^pg_(toast|temp_|toast_temp_)' OR n.oid = pg_catalog.pg_my_temp_schema())"
/* A read inside the agent's transaction: under which isolation (two
 * columns: the names query, never sent then, has two as well) */
#define PG_ISO_Q "SELECT 'i', pg_catalog.current_setting('transaction_isolation')"
#define PG_DB_RELS_MAX 65536   /* relations a masking session keeps the names of */
#define PG_APPNAME_MAX  63
#define PG_DISCARD_MAX  (256u << 20)      /* an oversized message up to this is read and dropped */
#define PG_DISCARD_MS   10000             /* ... for at most this long */
/* upstream connected -> session ready (start_clock); test knob AGENTGATE_PG_START_MS */
#define PG_START_MS     env_ms("AGENTGATE_PG_START_MS", 30000, &pg_start_ms)
/* an agent message over CONN_IN_MAX: whole this long after its first byte;
 * test knob AGENTGATE_PG_BIG_MSG_MS */
#define PG_BIG_MSG_MS   env_ms("AGENTGATE_PG_BIG_MSG_MS", 20000, &pg_big_msg_ms)
static _Atomic uint64_t pg_start_ms, pg_big_msg_ms;

/* ---- cancel keys ---------------------------------------------------------- */

struct cancel_ent {
	uint32_t pid, key;            /* ours, what the agent holds */
	uint32_t up_pid, up_key;      /* the server's */
	int agent_idx, target_idx;
	uint8_t addr[16];             /* the upstream as dialled */
	uint16_t port;
	bool used;
};

static pthread_mutex_t cancel_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cancel_ent *cancel_tab;   /* open addressing on pid, PG_CANCEL_MAX slots */
static unsigned cancel_n;

static unsigned cancel_slot(uint32_t pid)
{
	return (pid * 2654435761u) & (PG_CANCEL_MAX - 1);
}

static bool cancel_has_locked(uint32_t pid)
{
	for (unsigned s = cancel_slot(pid); cancel_tab[s].used; s = (s + 1) & (PG_CANCEL_MAX - 1))
		if (cancel_tab[s].pid == pid)
			return true;
	return false;
}

/* Issues a key for a session; 0 or -ENOSPC / -ENOMEM. */
static int cancel_add(const struct cancel_ent *in, uint32_t *pid, uint32_t *key)
{
	int err = -ENOSPC;

	pthread_mutex_lock(&cancel_lock);
	if (!cancel_tab)
		cancel_tab = calloc(PG_CANCEL_MAX, sizeof(*cancel_tab));
	if (!cancel_tab) {
		err = -ENOMEM;
	} else if (cancel_n < PG_CANCEL_MAX / 2) {
		uint32_t r[2];

		do {
			if (RAND_bytes((unsigned char *)r, sizeof(r)) != 1) {
				err = -EIO;
				goto out;
			}
			r[0] &= 0x7fffffff;   /* a positive pid, as a backend's is */
		} while (r[0] == 0 || cancel_has_locked(r[0]));   /* a pid names one session */
		unsigned s = cancel_slot(r[0]);
		while (cancel_tab[s].used)
			s = (s + 1) & (PG_CANCEL_MAX - 1);
		cancel_tab[s] = *in;
		cancel_tab[s].pid = r[0];
		cancel_tab[s].key = r[1];
		cancel_tab[s].used = true;
		cancel_n++;
		*pid = r[0];
		*key = r[1];
		err = 0;
	}
out:
	pthread_mutex_unlock(&cancel_lock);
	return err;
}

/* Linear probing without tombstones: re-insert the run after a removal. */
static void cancel_del(uint32_t pid)
{
	pthread_mutex_lock(&cancel_lock);
	for (unsigned s = cancel_tab ? cancel_slot(pid) : 0; cancel_tab && cancel_tab[s].used;
	     s = (s + 1) & (PG_CANCEL_MAX - 1)) {
		if (cancel_tab[s].pid != pid)
			continue;
		cancel_tab[s].used = false;
		cancel_n--;
		for (unsigned t = (s + 1) & (PG_CANCEL_MAX - 1); cancel_tab[t].used;
		     t = (t + 1) & (PG_CANCEL_MAX - 1)) {
			struct cancel_ent e = cancel_tab[t];
			unsigned u = cancel_slot(e.pid);

			cancel_tab[t].used = false;
			while (cancel_tab[u].used)
				u = (u + 1) & (PG_CANCEL_MAX - 1);
			cancel_tab[u] = e;
		}
		break;
	}
	pthread_mutex_unlock(&cancel_lock);
}

static bool cancel_find(uint32_t pid, uint32_t key, struct cancel_ent *out)
{
	bool found = false;

	pthread_mutex_lock(&cancel_lock);
	for (unsigned s = cancel_tab ? cancel_slot(pid) : 0; cancel_tab && cancel_tab[s].used;
	     s = (s + 1) & (PG_CANCEL_MAX - 1)) {
		if (cancel_tab[s].pid == pid) {
			found = CRYPTO_memcmp(&cancel_tab[s].key, &key, sizeof(key)) == 0;
			if (found)
				*out = cancel_tab[s];
			break;
		}
	}
	pthread_mutex_unlock(&cancel_lock);
	return found;
}

/* ---- session state ----------------------------------------------------------- */

enum pg_phase {
	PH_AGENT_STARTUP = 0,  /* waiting for the agent's first packet */
	PH_AGENT_AUTH,         /* delegation: waiting for the user's token as the password */
	PH_UP_CONNECT,         /* dialling the upstream */
	PH_UP_SSL,             /* SSLRequest sent, waiting for 'S'/'N' */
	PH_UP_TLS,             /* upstream TLS handshake */
	PH_UP_AUTH,            /* startup sent, authenticating */
	PH_UP_PARAMS,          /* authenticated: ParameterStatus, BackendKeyData until 'Z' */
	PH_UP_CATALOG,         /* our catalog query: masked columns, the schema's own names */
	PH_READY,              /* relaying the session */
	PH_UP_REFRESH,         /* idle, stale names: our names query again (start_refresh()) */
	PH_DISCARD,            /* ending: our error is out, the agent's oversized message is dropped */
	PH_POOL_RESET,         /* the agent left: DISCARD ALL sent, the session goes to the pool on 'I' */
	PH_DONE,
};

/*
 * A judged SQL text: what audit and the tables need. Refcounted; one
 * allocation holds it, its statements, its tables and its reason.
 */
struct pg_judged {
	int refs;
	bool allowed;          /* the policy allowed it (observe mode may still send a denied one) */
	enum pgc_verdict verdict;
	enum pgc_class cls;
	char tag[32];
	int nstmts;            /* statements in the text: entries in st */
	int denied_stmt;       /* the statement a denial is about; -1: the whole text */
	const struct policy_rule *rule;
	bool copy_in, copy_out, cached;
	bool changes_names;    /* can create or move functions or operators (names epochs) */
	bool names_stale;      /* judged as if names could have changed (ctx.names_stale) */
	/* not allowed, but its first ran statements (each allowed) were sent
	 * all the same, before a failing one of ours (query_prefix()); 0: none */
	int ran;
	uint64_t names_epoch;  /* the database's names epoch when it was judged */
	uint64_t lineage_id;   /* masking: the session's serial when judged (lineage_changed()) */
	char *tables;          /* "public.a,public.b", or NULL */
	char *why;             /* not allowed: the reason (observe mode sends it all the same) */
	int ntables;
	uint16_t toff[PGC_MAX_TABLES];   /* where table i starts in tables */
	struct pgc_stmt *st;   /* per statement: verdict, rule, tag, class, tables (bits) */
};

/* A portal the server holds. Refcounted. */
struct pg_portal {
	int refs;
	struct pg_judged *j;
	uint32_t epoch;        /* syncs sent before its Bind */
	int16_t nfmt;          /* result formats from Bind */
	uint8_t *fmt;          /* nfmt bytes, 0 or 1 */
	struct pg_plan *plan;  /* masking plan from its RowDescription, or NULL */
	bool described;        /* its RowDescription (or NoData) was read: plan is final */
	int ncols;             /* columns in that description (0: NoData) */
	uint32_t desc_epoch;   /* s->sql_epoch when a Describe of it was last sent; 0 never */
	uint32_t ans_epoch;    /* the sent epoch of the Describe whose answer set plan; 0 none */
};

/* The count a RowDescription or DataRow starts with; -1 if it has none. */
static int msg_count(const struct pg_msg *m)
{
	return m->len >= 2 ? (int16_t)((uint16_t)m->body[0] << 8 | m->body[1]) : -1;
}

/* Names -> refcounted values, for statements (pg_judged) and portals. */
struct pg_name {
	struct pg_name *next;
	void *val;
	char name[];
};
#define PG_MAP_BUCKETS 64
struct pg_map {
	struct pg_name *b[PG_MAP_BUCKETS];
	uint64_t used;   /* bit i: b[i] is not empty (map_clear() visits only those) */
	int n;
	bool portals;
};
_Static_assert(PG_MAP_BUCKETS == 64, "pg_map.used has a bit per bucket");

enum { UNDO_NONE = 0, UNDO_STMT, UNDO_PORTAL };

struct pg_pend {
	char kind;             /* 'Q' 'P' 'B' 'D' 'E' 'C' 'S' */
	char sub;              /* Describe/Close: 'S' or 'P' */
	bool standin;          /* our failing stand-in: rewrite its error */
	bool hidden;           /* ours alone: swallow every response */
	bool got_paramdesc;    /* Describe 'S': 't' seen */
	bool errored;
	uint8_t undo;          /* which map to restore on skip */
	char *undo_name;
	void *undo_prev;       /* value before this request (owned) */
	struct pg_judged *j;   /* Q / E: for audit */
	struct pg_portal *portal;   /* E / D('P'): where RowDescription and rows belong */
	char *deny;            /* stand-in: the agent's error message */
	char *deny_detail;
	uint64_t start_ns, rows;   /* of the current statement (a Query: p->stmt) */
	uint64_t end_ns;           /* when it ended, for an event built later; 0: now */
	uint32_t epoch;
	/* D('P'): s->sql_epoch when it was sent; E: the epoch the description
	 * of its rows must be of (the answer, not the sending, counts: a
	 * Describe the server skipped after an error was sent all the same) */
	uint32_t sql_epoch;
	int stmt;              /* Query: the statement whose answer comes next (audited once it ends) */
	/* Query: only j's first j->ran statements were sent, then
	 * PG_DENY_TAIL, whose error is the denial (deny, deny_detail) */
	bool denied_rest;
	bool audited;          /* Query: every event of it is out (a FunctionCall's, at once) */
	char sqlstate[6];      /* a server error, for audit */
};

/* Masking plan of one result (one RowDescription). */
struct pg_plan {
	int16_t ncols;
	uint8_t *jsonb_bin;    /* per column: jsonb in binary format, whose value starts with a
	                        * version byte (in the plan's own block) */
	uint8_t *how;          /* per column: MASK_NO, MASK_NAMED, MASK_SCAN (the same) */
	char *names;           /* masked column names for audit, or NULL */
	unsigned hits;
};
enum {
	COL_PASS = 0,
	COL_NAMED,          /* named by policy: the value becomes **** */
	COL_NAMED_JSON,     /* named, json/jsonb: "****" (a JSON string), with jsonb's version byte in binary */
	COL_NULL,           /* named, a type that cannot hold ****: NULL */
	COL_SCAN,           /* detectors over the bytes (text format, or text-like binary) */
	COL_SCAN_JSON,      /* the same, json/jsonb: masked whole, it becomes COL_NAMED_JSON's "****" */
	COL_SCAN_NULL,      /* detectors over a non-text type's text form: a hit makes it NULL */
};

#define PG_ADEFER_MAX 16

struct pg_sess {
	enum pg_phase phase;
	/* an agent message bigger than the usual buffer, incomplete: since when
	 * (monotonic ms; 0 none) and how big it says it is (big_clock()) */
	uint64_t big_since_ms;
	uint32_t big_size;
	bool agent_tls, ssl_asked, gss_asked, negotiate;
	char tls_note[320];    /* why TLS was not offered (the Open event's reason) */
	bool cancel_registered;
	bool is_cancel;                /* this connection forwards a CancelRequest */
	uint32_t our_pid, our_key, up_pid, up_key;
	char tx;                       /* last ReadyForQuery status */
	char user[64];                 /* the agent's startup user (audit only) */
	bool has_deleg;                /* a verified user token came in the password field */
	uint64_t deleg_gen;            /* the issuer's keys the user token was last checked with */
	char *deleg_revoked;           /* why the token no longer verifies (then for good), or NULL */
	struct ident_principal deleg;  /* the delegating user */
	char appname[PG_APPNAME_MAX + 1];
	char datestyle[64], timezone[64], extra_float[8], intervalstyle[32];
	const char *negotiate_opts[PG_STARTUP_PARAMS];
	int nnegotiate;
	char *negotiate_buf;
	struct pg_scram scram;
	char *password;                /* wiped and freed once authenticated */
	struct cancel_ent cancel;      /* PH_CANCEL: the mapped request */

	struct pg_out out;             /* scratch for messages we build */
	struct pgc_result res;         /* scratch for the classifier */
	struct pgc_result ures;        /* scratch: the delegating user's verdict */

	uint64_t serial;               /* this session, among every session of the run */
	/* the agent's rules for the target when the masks were compiled: an
	 * identity whose claims change binds other roles, and the masks (and
	 * the lineage read for them) are the session's (rules_unchanged()) */
	const struct policy_rule *arules[ENFORCER_MAX_RULES];
	size_t narules;
	struct pg_map stmts, portals;
	struct pg_pend *q;             /* ring of pending requests */
	uint32_t qhead, qlen, qcap;
	bool skip_to_sync;             /* the server skips until Sync: so do we */
	/* COPY FROM STDIN (copy_sync()): after a Query or Execute that may start
	 * one, the agent's next messages wait for the server's answer (copy_wait);
	 * once it is in COPY (CopyInResponse), only COPY data goes on, and the
	 * Sync and Flush the server would ignore are dropped (copy_in). */
	bool copy_wait, copy_in;
	uint32_t discard;              /* PH_DISCARD: bytes still to drop */
	uint32_t up_pass;              /* bytes of an oversized server message still to pass on */
	uint32_t syncs;                /* syncs (S, Q, F) sent so far */

	struct mask_rules *mask;
	bool mask_active;
	struct pg_plan *qplan;         /* simple Query: plan of the current result */
	int qncols;                    /* its column count */
	/* lineage: masked (table oid, attnum) pairs, from the catalog query */
	struct pg_lcol { uint32_t oid; int16_t att; bool named; char name[PG_COLNAME_MAX]; } *cols;
	int ncols, capcols;
	/* The lineage is read again (start_refresh()) when it may be stale:
	 * relations of its database changed through agentgate (rel epochs,
	 * below), or it is older than lineage_max_ms(). During that read,
	 * prev_cols holds the one read before, put back if the read fails. */
	bool lineage_on;               /* the session reads one (masked columns) */
	uint8_t cat_reads, cat_done;   /* after_params()'s reads; commands answered so far (up_catalog()) */
	uint64_t rel_epoch;            /* its database's relations epoch when it was read */
	uint64_t rel_epoch_pending;    /* rel_refresh_epoch, rel_epoch once the read is in */
	uint64_t rel_refresh_epoch;    /* the epoch its last read took (tried once each) */
	uint64_t lineage_ms;           /* monotonic: when it was last read, or tried */
	/* The highest relation OID before the lineage was read (PG_OID_HIGH_Q,
	 * run first): a result column of a relation above it comes from one
	 * made since, which the lineage cannot know (a view over a masked
	 * table made past agentgate, or while the session is in a
	 * transaction): masked whole (plan_for()), and the lineage read again
	 * at the next chance. */
	uint32_t oid_high, oid_high_pending;
	bool rel_changer;              /* ran DDL whose end may not be seen yet (rels_bump()) */
	bool lineage_refresh;          /* this refresh reads the lineage too */
	struct pg_lcol *prev_cols;
	int prev_ncols, prev_capcols;
	bool cat_shown;                /* a relation shows a masked table's rows: ask for it */
	bool cat_dependents_sent;      /* the second catalog query is out */
	bool *col_found;               /* per mask_column_list() entry: the catalog has it */
	/* The pinned schema's own names (pgc_catalog), read with the lineage
	 * before the first ReadyForQuery: kinds[i] is 'f' (a function), 'r'
	 * (one that one argument can call), 'o' (an operator) or 't' (a type)
	 * for names[i]; cat's lists point into cat_v, sorted copies. */
	char **names, *kinds;
	uint32_t nnames, capnames;
	const char **cat_v;
	struct pgc_catalog cat;
	bool cat_ready;
	bool names_stale;              /* the session may have changed them (pgc_ctx.names_stale) */
	bool names_changer;            /* it ran one that can change them, maybe not done yet (names_bump()) */
	uint64_t change_since_ms;      /* monotonic: when names_changer was set */
	uint32_t names_slot1;          /* names_slot() + 1; 0 until first asked */
	uint64_t names_epoch;          /* its database's names epoch when it read the catalog */
	uint64_t refresh_epoch;        /* the epoch its last names refresh took (tried once each) */
	uint64_t names_epoch_pending;  /* refresh_epoch, names_epoch once the refresh is read */
	bool refresh_failed;           /* the refresh query got an error: the old names stay */
	char lineage_error[160];       /* ... while it read the lineage too: the session ends */
	bool just_refreshed;           /* the next Query or Parse is judged without another read */
	bool fresh_for_stmt;           /* the Query or Parse being judged came after a read that
					* succeeded */
	bool tried_for_stmt;           /* ... and so it will not be read again for it */
	bool redo;                     /* judge(): read the lineage again first, then judge again */
	/* judge(): refused because the session cannot take the agent's rules
	 * now; STALE_ALWAYS: its identity binds other rules (end_stale()) */
	enum { STALE_NO = 0, STALE_IDLE, STALE_ALWAYS } stale_rules;
	bool fatal_answers;            /* fatal(): the error answers the agent's request being read */
	bool refresh_ok;               /* the last read got everything it asked for */
	bool judging_parse;            /* fe_parse() is judging: its own Parse set unsynced */
	bool unsynced_before;          /* unsynced before that Parse */
	char refresh_tx;               /* s->tx when the refresh was sent ('I', or 'T': unknown_rel()) */
	bool refresh_lineage_only;     /* it reads the lineage only (start_refresh()) */
	bool refresh_rc;               /* the read inside a transaction ran under READ COMMITTED */
	/* The relations of the database (but PostgreSQL's own schemas) when
	 * the lineage was read (PG_RELS_Q, "schema.name", sorted): a
	 * statement of a masking session that names another is judged only
	 * after the lineage is read again (unknown_rel()). rels_new: the
	 * ones a read in progress brings. */
	char **rels, **rels_new;
	uint32_t nrels, nrels_new, caprels_new;
	bool rels_ready;
	/* During a refresh: the names read before it, which cat still points
	 * into; freed when the new ones are in, put back if the query fails. */
	char **prev_names, *prev_kinds;
	uint32_t prev_nnames, prev_capnames;
	uint64_t gen;                  /* verdict cache generation (policy hash) */
	/* The members every 6005 event of this connection repeats, written
	 * once: [0, afrag_top) for the event's top level ("database"),
	 * [afrag_top, +afrag_um) for unmapped (target, module,
	 * connection_uid). NULL until the first event, or without memory. */
	char *afrag;
	uint32_t afrag_top, afrag_um;
	bool up_last;                  /* the server message in hand is the last one read so far */
	/* Upstream session reuse: the StartupMessage sent upstream (the pool
	 * key: equal bytes, equal session defaults) and the server's
	 * ParameterStatus messages, replayed to the next agent. */
	uint8_t *startup, *params;
	uint32_t startup_len, params_len;
	bool no_pool;                  /* too many parameters to replay */
	bool reused;                   /* the upstream session came from the pool */
	bool unsynced;                 /* extended-protocol messages since the last Sync */
	bool terminating;              /* Terminate went up with answers outstanding: they still go
					* to the agent; what it sends after is dropped */
	/* Bumped by every simple Query and every Execute sent: SQL can close,
	 * re-declare (DECLARE makes a portal of the same name), or end the
	 * transaction of a portal behind the protocol's back, so a portal's
	 * description is trusted only within the epoch it was asked in. */
	uint32_t sql_epoch;
	/* Events of ended Executes and simple Queries, built once their
	 * answers are out and the worker has handled what else was ready
	 * (conn_want_idle(): the idle op, audit_deferred_flush), in order,
	 * before any other event of the connection, its Close, and a change
	 * of policy. */
	struct pg_adefer {
		struct pg_judged *j;   /* a reference */
		int idx;               /* the statement of j */
		bool simple;           /* a simple Query's, else an Execute's */
		uint64_t start_ns, end_ns, rows;
		char sqlstate[6];
		bool has_plan;
		unsigned hits;
		char *names;           /* the plan's masked column names (owned) */
	} adefer[PG_ADEFER_MAX];
	unsigned nadefer;
};

static struct pg_sess *S(struct conn *c)
{
	return c->proto_state;
}

static const struct policy_target *target(struct conn *c)
{
	return &c->policy->targets[c->target_idx];
}

static const char *pinned_db(struct conn *c)
{
	const struct policy_upstream *u = &target(c)->upstream;

	return u->database ? u->database : u->user ? u->user : "postgres";
}

/*
 * Names epochs (review, stop 30). A session's snapshot of the pinned
 * schema's functions and operators (after_params()) went stale when
 * another session, of any agent, created or moved such a name in the same
 * database: its next statements took a new public.lower(integer) for the
 * safe built-in. Each database name (hashed into one of NAMES_SLOTS;
 * not the server's address, which two targets of one server may spell
 * differently: a database of the same name elsewhere, or a collision, only
 * makes more sessions careful, and a change open there holds them too: names_changers)
 * has an epoch, bumped when a statement that can change names is
 * allowed and again at every ReadyForQuery of the session that ran it until
 * all it sent is answered outside a transaction (the change may become
 * visible later than it was judged, at a COMMIT). A
 * session compares the epoch it took before its catalog query with the
 * current one at each judgement: older, and it judges with names_stale, as
 * the session that made the change does. Not covered: a statement judged
 * before the change and run after it (pipelined behind a slow one).
 *
 * A stale session reads the names again (start_refresh()) before the next
 * statement it judges while it is idle: outside a transaction with nothing
 * in flight, and no change open on the database (its own included). Its epoch is taken before
 * the query, as at the start, so a change made visible meanwhile leaves it
 * stale again; each epoch is tried once. Until then, and inside a
 * transaction, it judges with names_stale: unqualified built-ins are
 * denied, as before.
 */
#define NAMES_SLOTS 64
static _Atomic uint64_t names_epochs[NAMES_SLOTS];
/* Sessions whose change of names may not be done yet (names_changer), per
 * slot: while there is one, every session of the database judges with
 * names_stale and none reads the names again. A change can become visible
 * before the enforcer reads its end (a COMMIT run by an Execute with no
 * Sync yet, review of the refresh): a read in that window would take the
 * older names for current ones. */
static _Atomic int names_changers[NAMES_SLOTS];

/*
 * The same for relations, which masking knows by OID and attribute number
 * (the lineage): a view, child or partition of a masked table created, a
 * masked table dropped and made again, a masked column replaced. A session
 * that ran DDL (or an admin statement) bumps its database's relations epoch
 * at each ReadyForQuery outside a transaction until all it sent is
 * answered (the change is visible by then), and when it ends; a masking
 * session whose lineage is older reads it again, with the names, before
 * the next statement it judges while idle. Changes made past agentgate
 * (another client of the database) are caught by age: a lineage older than
 * lineage_max_ms() is read again the same way. Inside a transaction the
 * lineage read before stays until the transaction ends. Meanwhile a
 * relation made after the read (its OID above oid_high) is masked whole,
 * and makes the lineage due (plan_for()).
 */
static _Atomic uint64_t rel_epochs[NAMES_SLOTS];
static _Atomic uint64_t lineage_refreshed;   /* status: pg_lineage_refreshed */

/*
 * Changes made past agentgate, announced. By age alone a view replaced in
 * place by another client of the database (CREATE OR REPLACE VIEW keeps
 * its OID) showed a masked column in clear through its new definition for
 * up to lineage_max_ms() (60 s). Every session LISTENs on
 * PG_CATALOG_CHANNEL (after_params()); where the operator installed the
 * event trigger of the README (PostgreSQL targets), each transaction that
 * runs DDL, ours or another client's, NOTIFYs it with its transaction id
 * once it commits, and the first session to hear an id bumps both epochs of
 * its database: every session there reads its names and lineage again
 * before the next statement it judges while idle. Each listening session
 * hears the same notification; the id makes that one bump. An empty or
 * other payload always bumps. The notification never reaches the agent.
 * Without the trigger nothing changes (the age still applies). Agents
 * cannot UNLISTEN, DISCARD or NOTIFY (refused whatever the policy: the
 * statement kinds' table, pg_classify.c). Sessions of a hot standby cannot
 * LISTEN: the catalog query's error for it is let pass (up_catalog()).
 */
#define PG_CATALOG_CHANNEL "agentgate_catalog"
#define PG_LISTEN_Q "LISTEN " PG_CATALOG_CHANNEL
static _Atomic uint64_t catalog_heard[NAMES_SLOTS];   /* last payload's hash, 0: none */
static _Atomic uint64_t catalog_notified;             /* status: pg_catalog_notified */

uint64_t pg_catalog_notified(void)
{
	return atomic_load(&catalog_notified);
}

uint64_t pg_lineage_refreshed(void)
{
	return atomic_load(&lineage_refreshed);
}

static _Atomic uint64_t lineage_unknown;   /* status: pg_lineage_unknown_masked */
uint64_t pg_lineage_unknown_masked(void)
{
	return atomic_load(&lineage_unknown);
}

#define PG_LINEAGE_MAX_MS (60 * 1000)

/* Test knob AGENTGATE_PG_LINEAGE_MS (1000-86400000), read once. */
static uint64_t lineage_max_ms(void)
{
	static _Atomic uint64_t v;

	return env_u64("AGENTGATE_PG_LINEAGE_MS", 1000, 86400000, PG_LINEAGE_MAX_MS, &v);
}

/* Hashed once per session: every judged statement asks for it, and the
 * pinned database cannot change under a session (a reload that changes it
 * does not move the session: policy_upstream_same()). */
static uint32_t names_slot(struct conn *c)
{
	struct pg_sess *s = S(c);

	if (!s->names_slot1) {
		uint32_t h = 2166136261u;   /* FNV-1a */

		for (const char *q = pinned_db(c); *q; q++)
			h = (h ^ (uint8_t)*q) * 16777619u;
		s->names_slot1 = h % NAMES_SLOTS + 1;
	}
	return s->names_slot1 - 1;
}

static _Atomic uint64_t *names_epoch_of(struct conn *c)
{
	return &names_epochs[names_slot(c)];
}

static void names_bump(struct conn *c)
{
	atomic_fetch_add(names_epoch_of(c), 1);
}

static _Atomic uint64_t *rel_epoch_of(struct conn *c)
{
	return &rel_epochs[names_slot(c)];
}

static void rels_bump(struct conn *c)
{
	atomic_fetch_add(rel_epoch_of(c), 1);
}

/* A NotificationResponse: true when it is PG_CATALOG_CHANNEL's (heard, not
 * for the agent). Body: the notifying backend's pid, channel, payload. */
static bool catalog_notice(struct conn *c, const struct pg_msg *m)
{
	const char *ch, *pl, *end = (const char *)m->body + m->len;
	uint64_t h = 1469598103934665603ull;   /* FNV-1a */

	if (m->len < 6)
		return false;
	ch = (const char *)m->body + 4;
	if (!memchr(ch, 0, (size_t)(end - ch)) || strcmp(ch, PG_CATALOG_CHANNEL) != 0)
		return false;
	pl = ch + sizeof(PG_CATALOG_CHANNEL);
	if (pl >= end || !memchr(pl, 0, (size_t)(end - pl)))
		return true;   /* malformed: not the agent's either, and nothing to go by */
	for (const char *q = pl; *q; q++)
		h = (h ^ (uint8_t)*q) * 1099511628211ull;
	h |= 1;
	if (!*pl || atomic_exchange(&catalog_heard[names_slot(c)], h) != h) {
		names_bump(c);
		rels_bump(c);
		atomic_fetch_add(&catalog_notified, 1);
	}
	return true;
}

/* Statements that can create, drop or change relations or columns. */
static bool stmts_change_rels(const struct pgc_stmt *st, int n)
{
	for (int i = 0; i < n; i++)
		if (st[i].cls == PGC_DDL || st[i].cls == PGC_ADMIN)
			return true;
	return false;
}

static bool names_changing(struct conn *c)
{
	return atomic_load(&names_changers[names_slot(c)]) > 0;
}

/*
 * A change may stay open (not seen done) for PG_CHANGE_OPEN_MS: meanwhile
 * every session of the database denies unqualified built-ins, so one left
 * open (a transaction forgotten, a COMMIT sent with no Sync) would hold
 * them all. Past it the changer's session is ended (pg_on_deadline()).
 * Test knob AGENTGATE_PG_CHANGE_OPEN_MS.
 */
#define PG_CHANGE_OPEN_MS (120 * 1000)
static const char CHANGE_WHY[] = "a change of names left open";

static uint64_t change_open_ms(void)
{
	const char *e = getenv("AGENTGATE_PG_CHANGE_OPEN_MS");
	uint64_t v;

	return e && parse_u64(e, 1, 3600000, &v) == 0 ? v : PG_CHANGE_OPEN_MS;
}

/* The change's clock, unless another deadline is armed (a big message's,
 * which re-arms this one when it stops: big_stop()). */
static void change_clock(struct conn *c)
{
	struct pg_sess *s = S(c);

	if (!s->names_changer || (c->deadline_ms && c->deadline_why != CHANGE_WHY))
		return;
	c->deadline_ms = s->change_since_ms + change_open_ms();
	c->deadline_why = CHANGE_WHY;
}

/* s begins (or goes on with) a change of names: every session of the database is stale. */
static void names_change(struct conn *c, struct pg_sess *s)
{
	s->names_stale = true;
	if (!s->names_changer) {
		s->names_changer = true;
		s->change_since_ms = now_ns_mono() / 1000000ull;
		atomic_fetch_add(&names_changers[names_slot(c)], 1);
		change_clock(c);
	}
	names_bump(c);
}

/* s's change is done (or s ends): the others may read the names again. */
static void names_change_done(struct conn *c, struct pg_sess *s)
{
	if (s->names_changer) {
		s->names_changer = false;
		atomic_fetch_sub(&names_changers[names_slot(c)], 1);
		if (c->deadline_why == CHANGE_WHY) {
			c->deadline_ms = 0;
			c->deadline_why = NULL;
		}
	}
}

static _Atomic uint64_t names_refreshed;   /* status: pg_names_refreshed */

uint64_t pg_names_refreshed(void)
{
	return atomic_load(&names_refreshed);
}

static const char *search_path(struct conn *c)
{
	const char *sp = target(c)->upstream.search_path;

	return sp && *sp ? sp : "public";
}

/* ---- sending ----------------------------------------------------------------- */

static int send_out(struct conn *c, int side)
{
	struct pg_out *o = &S(c)->out;
	int err;

	if (o->overflow)
		return -ENOBUFS;
	err = o->len ? conn_send(c, side, o->buf, o->len) : 0;
	pg_out_reset(o);
	pg_out_trim(o, 1u << 20);   /* one big message's */
	return err;
}

/* A FATAL error to the agent, then close once it is written. */
static int fatal(struct conn *c, const char *sqlstate, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fatal(struct conn *c, const char *sqlstate, const char *fmt, ...)
{
	struct pg_sess *s = S(c);
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pg_out_reset(&s->out);
	pg_out_error(&s->out, 'E', "FATAL", sqlstate, msg, NULL, NULL);
	/* With a request in flight, libpq takes the error for its answer only
	 * once a ReadyForQuery completes it: at EOF before that it reports a
	 * lost connection and drops our error. The session ends all the same. */
	if ((s->phase == PH_READY && (s->qlen || s->fatal_answers)) || s->phase == PH_UP_REFRESH)
		pg_out_ready(&s->out, 'I');
	send_out(c, SIDE_AGENT);
	if (!c->why[0])
		snprintf(c->why, sizeof(c->why), "%s", msg);
	s->phase = PH_DONE;
	/* FIN (and TLS close_notify) after the error, so the client reads it
	 * as the end of the session rather than as a broken connection */
	conn_shutdown(c, SIDE_AGENT);
	conn_finish(c);
	return 0;
}

/* ---- audit ----------------------------------------------------------------------- */

static void audit_agent_fill(struct conn *c, struct audit_agent *a, struct ident_principal *pr)
{
	memset(a, 0, sizeof(*a));
	if (c->agent_idx >= 0) {
		a->name = c->policy->agents[c->agent_idx].name;
		a->cgroup = E->agents[c->agent_idx].cgroup_rel;
		enforcer_audit_principal(c->agent_idx, a, pr);
	}
	a->pid = c->pair.tgid;
	a->tid = c->pair.pid;
	a->uid = c->pair.uid;
	a->comm = c->pair.comm;
	a->cgroup_id = c->pair.cgroup_id;
	a->policy_hash = c->policy->hash;
	a->policy_path = c->policy->path;
}

/* A refusal: counted now; the enforcer records it (reason: c->why) when the
 * connection closes, after the agent got our error. */
static void audit_refuse(struct conn *c, const char *why)
{
	enforcer_count_refused(c);
	if (why != c->why)
		snprintf(c->why, sizeof(c->why), "%s", why);
}

static void audit_conn(struct conn *c, bool allowed, const char *reason)
{
	struct audit_w *w = enforcer_conn_event(c, allowed ? 1 : 5, allowed ? "Open" : "Refuse");

	if (!allowed)
		enforcer_count_refused(c);
	else
		c->opened = true;
	aobj_open(&w->um, "postgres");
	aobj_str(&w->um, "database", pinned_db(c));
	aobj_str(&w->um, "user", S(c)->user);
	aobj_bool(&w->um, "agent_tls", S(c)->agent_tls);
	if (allowed && S(c)->reused)
		aobj_bool(&w->um, "upstream_reused", true);
	aobj_close(&w->um);
	audit_w_verdict(w, allowed, c->would_deny, enforcer_rule_name(c), reason);
	audit_commit(w);
}

/*
 * One Datastore Activity (6005) event for a statement. j may be NULL (a
 * message denied before it could be judged). reason is the denial's, or
 * NULL. Never carries the SQL text: literals in it may be values an agent
 * must not see in audit either. index: the statement's place in its
 * message (1-based; 0 when the event is about the whole message).
 * decision: the policy's own answer for it ("allow", "review", "deny"),
 * NULL when it was not judged; a review is enforced as a denial until
 * approvals exist, so only this tells the two apart.
 */
/* The members of a 6005 event that are the connection's: the pinned
 * database at the top level, and in unmapped the target, the module and
 * the connection's id. */
static void conn_top_members(struct conn *c, struct audit_obj *o)
{
	aobj_open(o, "database");
	aobj_str(o, "name", pinned_db(c));
	aobj_str(o, "type", "Relational");
	aobj_int(o, "type_id", 1);
	aobj_close(o);
}

static void conn_um_members(struct conn *c, struct audit_obj *o)
{
	char cookie[24];

	snprintf(cookie, sizeof(cookie), "%llu", (unsigned long long)c->pair.sock_cookie);
	aobj_str(o, "target", target(c)->name);
	aobj_str(o, "module", "postgres");
	aobj_str(o, "connection_uid", cookie);
}

/* Writes them once per connection (into S(c)->afrag); on no memory they
 * are written per event, as before. */
static void audit_frags(struct conn *c)
{
	struct pg_sess *s = S(c);
	struct audit_obj top = { 0 }, um = { 0 };

	conn_top_members(c, &top);
	conn_um_members(c, &um);
	if (!top.bad && !um.bad && top.b.len + um.b.len < UINT32_MAX &&
	    (s->afrag = malloc(top.b.len + um.b.len + 1))) {
		memcpy(s->afrag, top.b.p, top.b.len);
		memcpy(s->afrag + top.b.len, um.b.p, um.b.len);
		s->afrag_top = (uint32_t)top.b.len;
		s->afrag_um = (uint32_t)um.b.len;
	}
	aobj_free(&top);
	aobj_free(&um);
}

static void audit_stmt(struct conn *c, const struct pg_judged *j, const char *proto, bool allowed,
		       bool would_deny, const char *reason, const struct pg_pend *p, const struct pg_plan *plan,
		       int index, const char *decision)
{
	struct pg_sess *s = S(c);
	struct audit_w *w;
	struct audit_agent a;
	struct ident_principal pr;
	char rbuf[160];
	const char *rule = j && j->rule ? policy_rule_label(j->rule, rbuf, sizeof(rbuf)) : NULL;

	if (allowed && !c->policy->audit.allowed_requests)
		return;
	w = audit_begin(6005, 4, "Query");
	audit_agent_fill(c, &a, &pr);
	audit_w_agent(w, &a);
	if (!s->afrag)
		audit_frags(c);
	if (s->afrag) {
		aobj_members(&w->top, s->afrag, s->afrag_top);
	} else {
		conn_top_members(c, &w->top);
	}
	if (p && p->start_ns)
		aobj_int(&w->top, "duration",
			 (long long)(((p->end_ns ? p->end_ns : now_ns_mono()) - p->start_ns) / 1000000));
	if (s->afrag)
		aobj_members(&w->um, s->afrag + s->afrag_top, s->afrag_um);
	else
		conn_um_members(c, &w->um);
	aobj_open(&w->um, "statement");
	aobj_str(&w->um, "protocol", proto);
	aobj_str(&w->um, "class", j ? pgc_class_name(j->cls) : "unknown");
	if (j) {
		aobj_str(&w->um, "tag", j->tag);
		aobj_int(&w->um, "statements", j->nstmts);
		aobj_bool(&w->um, "cached", j->cached);
		aobj_str(&w->um, "tables", j->tables);
	}
	if (p) {
		aobj_int(&w->um, "rows", (long long)p->rows);
		if (p->sqlstate[0])
			aobj_str(&w->um, "server_error", p->sqlstate);
	}
	if (plan && plan->names)
		aobj_str(&w->um, "masked_columns", plan->names);
	if (plan && plan->hits)
		aobj_int(&w->um, "masked_values", plan->hits);
	if (index > 0)
		aobj_int(&w->um, "index", index);
	if (decision)
		aobj_str(&w->um, "decision", decision);
	aobj_close(&w->um);
	if (s->has_deleg) {
		aobj_open(&w->um, "user");
		aobj_str(&w->um, "iss", s->deleg.iss);
		aobj_str(&w->um, "sub", s->deleg.sub);
		aobj_close(&w->um);
	}
	audit_w_verdict(w, allowed, would_deny, rule, reason);
	audit_commit(w);
}

/* The reason for a review verdict: it names the rule, and says it is a review. */
static void review_reason(const struct policy_rule *r, char *buf, size_t len)
{
	if (r)
		snprintf(buf, len, "review: needs approval (role '%s' rule %d, line %d), and approvals are not "
			 "available yet", r->role, r->index + 1, r->line);
	else
		snprintf(buf, len, "review: needs approval, and approvals are not available yet");
}

static const char *verdict_name(enum pgc_verdict v)
{
	return v == PGC_ALLOW ? "allow" : v == PGC_REVIEW ? "review" : "deny";
}

/*
 * Why statement i of a message that was not allowed is not: its own
 * reason when it is the one the denial is about (or needs approval), else
 * that of the statement that decided for the whole message.
 */
static const char *stmt_reason(const struct pg_judged *j, int i, char *buf, size_t len)
{
	const struct pgc_stmt *st = &j->st[i];

	if (j->allowed)
		return NULL;
	if (i == j->denied_stmt || (j->denied_stmt < 0 && j->verdict == PGC_DENY))
		return j->why;
	if (st->judged && st->verdict == PGC_REVIEW) {
		review_reason(st->rule, buf, len);
		return buf;
	}
	if (j->verdict == PGC_REVIEW)
		snprintf(buf, len, "another statement of this message needs approval (review)");
	else
		snprintf(buf, len, "statement %d of this message was denied: %s", j->denied_stmt + 1,
			 j->why ? j->why : "?");
	return buf;
}

/*
 * The 6005 event of statement i of j, or of the whole message when j has
 * no statements (an empty text, a parse error, j NULL). sent: the message
 * went to the server (allowed, or observe mode); otherwise it was stood in
 * for and nothing of it ran. reason overrides the statement's own (a
 * statement the server skipped). The view handed to audit_stmt is the
 * statement's: its tag, class, rule and tables; the statement count stays
 * the message's.
 */
static void audit_stmt_at_now(struct conn *c, const struct pg_judged *j, int i, const char *proto, bool sent,
			      const char *reason, const char *why, const struct pg_pend *p,
			      const struct pg_plan *plan)
{
	struct pg_judged v;
	const struct pgc_stmt *st;
	char rbuf[320], tabs[PGC_MAX_TABLES * 130];
	size_t n = 0;

	if (sent && !c->policy->audit.allowed_requests)
		return;   /* what audit_stmt would drop: skip building the view */
	if (!j || j->nstmts == 0 || i < 0 || i >= j->nstmts) {
		if (!reason)
			reason = j && !j->allowed ? j->why : why;
		audit_stmt(c, j, proto, sent, sent && (!j || !j->allowed), reason, p, plan, 0,
			   j ? verdict_name(j->verdict) : NULL);
		return;
	}
	st = &j->st[i];
	v = *j;
	v.cls = st->cls;
	v.rule = st->rule;
	memcpy(v.tag, st->tag, sizeof(v.tag));
	if (j->nstmts > 1) {
		/* this statement's tables only, in the message's order */
		v.tables = NULL;
		for (int t = 0; t < j->ntables; t++) {
			const char *name = j->tables + j->toff[t];
			size_t l = t + 1 < j->ntables ? (size_t)(j->toff[t + 1] - j->toff[t] - 1) : strlen(name);

			if (!(st->tables & (1u << t)) || n + l + 2 > sizeof(tabs))
				continue;
			if (n)
				tabs[n++] = ',';
			memcpy(tabs + n, name, l);
			n += l;
			v.tables = tabs;
		}
		tabs[n] = '\0';
	}
	/* a statement sent before a denied one (query_prefix()): allowed */
	bool ran = i < j->ran;

	if (!reason && !ran)
		reason = stmt_reason(j, i, rbuf, sizeof(rbuf));
	audit_stmt(c, &v, proto, sent, sent && !j->allowed && !ran, reason, p, plan, i + 1,
		   st->judged ? verdict_name(st->verdict) : NULL);
}

static void judged_put(struct pg_judged *j);
static struct pg_judged *judged_get(struct pg_judged *j);
static void adopt_policy(struct conn *c);

/* The deferred events, in order (the array is emptied first: building one
 * never defers another). */
static void audit_deferred_flush(struct conn *c)
{
	struct pg_sess *s = S(c);
	unsigned n = s->nadefer;

	s->nadefer = 0;
	for (unsigned i = 0; i < n; i++) {
		struct pg_adefer *d = &s->adefer[i];
		struct pg_pend p = { .kind = 'E', .start_ns = d->start_ns, .end_ns = d->end_ns, .rows = d->rows };
		struct pg_plan plan = { .names = d->names, .hits = d->hits };

		memcpy(p.sqlstate, d->sqlstate, sizeof(p.sqlstate));
		audit_stmt_at_now(c, d->j, d->idx, d->simple ? "simple" : "extended", true, NULL, NULL, &p,
				  d->has_plan ? &plan : NULL);
		free(d->names);
		judged_put(d->j);
	}
}

/* Every other statement event: after the deferred ones. */
static void audit_stmt_at(struct conn *c, const struct pg_judged *j, int i, const char *proto, bool sent,
			  const char *reason, const char *why, const struct pg_pend *p, const struct pg_plan *plan)
{
	if (S(c)->nadefer)
		audit_deferred_flush(c);
	audit_stmt_at_now(c, j, i, proto, sent, reason, why, p, plan);
}

/*
 * A statement that ran to its end: an Execute (CommandComplete,
 * EmptyQueryResponse, PortalSuspended), or the last statement of a simple
 * Query. Its event is built once the answers read with it are on their way
 * to the agent (at ReadyForQuery, or when the batch is done) and the worker
 * has handled what else was ready, with the duration it had when it ended.
 * What it needs is copied: the request and the plan may be gone by then.
 * Without memory for the copy it is built now.
 */
static void audit_ended(struct conn *c, const struct pg_pend *p, int idx, bool simple,
			const struct pg_plan *plan)
{
	struct pg_sess *s = S(c);
	struct pg_adefer *d;

	if (!c->policy->audit.allowed_requests)
		return;   /* what audit_stmt_at would drop */
	if (s->nadefer == PG_ADEFER_MAX)
		audit_deferred_flush(c);
	d = &s->adefer[s->nadefer];
	d->names = plan && plan->names ? strdup(plan->names) : NULL;
	if (plan && plan->names && !d->names) {
		audit_stmt_at(c, p->j, idx, simple ? "simple" : "extended", true, NULL, NULL, p, plan);
		return;
	}
	d->j = judged_get(p->j);
	d->idx = idx;
	d->simple = simple;
	d->start_ns = p->start_ns;
	d->end_ns = now_ns_mono();
	d->rows = p->rows;
	memcpy(d->sqlstate, p->sqlstate, sizeof(d->sqlstate));
	d->has_plan = plan != NULL;
	d->hits = plan ? plan->hits : 0;
	s->nadefer++;
}

static void audit_execute(struct conn *c, const struct pg_pend *p)
{
	audit_ended(c, p, 0, false, p->portal ? p->portal->plan : NULL);
}

/* The events of statements from..nstmts-1 of j (the message's one when it has none). */
static void audit_stmts_from(struct conn *c, const struct pg_judged *j, int from, const char *proto, bool sent,
			     const char *reason, const char *why, const struct pg_pend *p)
{
	if (!j || j->nstmts == 0) {
		if (from == 0)
			audit_stmt_at(c, j, -1, proto, sent, reason, why, p, NULL);
		return;
	}
	for (int i = from; i < j->nstmts; i++)
		audit_stmt_at(c, j, i, proto, sent, reason, why, p, NULL);
}

/* ---- refcounted objects, name maps ----------------------------------------------- */

static void judged_put(struct pg_judged *j)
{
	if (j && --j->refs == 0)
		free(j);
}

static struct pg_judged *judged_get(struct pg_judged *j)
{
	if (j)
		j->refs++;
	return j;
}

static void plan_free(struct pg_plan *p)
{
	if (p) {
		free(p->names);   /* how and binary share p's block */
		free(p);
	}
}

static void portal_put(struct pg_portal *p)
{
	if (p && --p->refs == 0) {
		judged_put(p->j);
		free(p->fmt);
		plan_free(p->plan);
		free(p);
	}
}

static struct pg_portal *portal_get(struct pg_portal *p)
{
	if (p)
		p->refs++;
	return p;
}

static void val_put(struct pg_map *m, void *v)
{
	if (m->portals)
		portal_put(v);
	else
		judged_put(v);
}

/*
 * The agent names its statements and portals: with a fixed hash it could
 * put all 4096 in one bucket (each lookup then 16 times slower; review,
 * stop 29). FNV-1a from a secret start the process draws once, and a
 * finaliser so the bucket depends on every bit (FNV's low bits depend only
 * on the low bits of each byte, whatever the start).
 */
static uint64_t name_seed;
static pthread_once_t name_seed_once = PTHREAD_ONCE_INIT;

static void name_seed_init(void)
{
	if (RAND_bytes((unsigned char *)&name_seed, sizeof(name_seed)) != 1)
		name_seed = now_ns_mono() ^ (uint64_t)getpid() << 32;   /* still unknown to the agent */
}

static unsigned name_hash(const char *s)
{
	uint64_t h;

	pthread_once(&name_seed_once, name_seed_init);
	h = name_seed ^ 0xcbf29ce484222325ull;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return (unsigned)(h % PG_MAP_BUCKETS);
}

static void *map_get(struct pg_map *m, const char *name)
{
	for (struct pg_name *e = m->b[name_hash(name)]; e; e = e->next)
		if (strcmp(e->name, name) == 0)
			return e->val;
	return NULL;
}

/* Sets name to val (NULL removes), taking val's reference; returns the
 * previous value with its reference (the caller owns it), or NULL. When
 * no entry can be added, sets *full and changes nothing (val stays the
 * caller's). */
static void *map_set(struct pg_map *m, const char *name, void *val, bool *full)
{
	unsigned h = name_hash(name);
	struct pg_name **pp = &m->b[h], *e;
	void *prev;
	size_t n;

	if (full)
		*full = false;
	for (; (e = *pp); pp = &e->next) {
		if (strcmp(e->name, name) != 0)
			continue;
		prev = e->val;
		if (val) {
			e->val = val;
		} else {
			*pp = e->next;
			free(e);
			m->n--;
			if (!m->b[h])
				m->used &= ~(1ull << h);
		}
		return prev;
	}
	if (!val)
		return NULL;
	n = strlen(name);
	if (m->n >= (m->portals ? PG_PORTALS_MAX : PG_NAMES_MAX) || !(e = malloc(sizeof(*e) + n + 1))) {
		if (full)
			*full = true;
		return NULL;
	}
	memcpy(e->name, name, n + 1);
	e->val = val;
	e->next = m->b[h];
	m->b[h] = e;
	m->used |= 1ull << h;
	m->n++;
	return NULL;
}

/* Removes every entry but those keep() keeps: run at each ReadyForQuery
 * for the portals, so it visits only the buckets in use, not all 64. */
static void map_clear(struct pg_map *m, bool (*keep)(void *val, void *arg), void *arg)
{
	uint64_t left = m->used;   /* the buckets in use not yet cleared, lowest first */

	while (left) {
		unsigned i = (unsigned)__builtin_ctzll(left);
		struct pg_name **pp = &m->b[i], *e;

		left &= left - 1;   /* bucket i: cleared below */
		while ((e = *pp)) {
			if (keep && keep(e->val, arg)) {
				pp = &e->next;
				continue;
			}
			*pp = e->next;
			val_put(m, e->val);
			free(e);
			m->n--;
		}
		if (!m->b[i])
			m->used &= ~(1ull << i);
	}
}

/* ---- pending requests ---------------------------------------------------------------- */

static struct pg_pend *pend_at(struct pg_sess *s, uint32_t i)
{
	return &s->q[(s->qhead + i) & (s->qcap - 1)];
}

static struct pg_pend *pend_push(struct pg_sess *s, char kind)
{
	struct pg_pend *p;

	if (s->qlen == s->qcap) {
		uint32_t ncap = s->qcap ? s->qcap * 2 : 64;
		struct pg_pend *nq;

		if (ncap > PG_PEND_MAX || !(nq = calloc(ncap, sizeof(*nq))))
			return NULL;
		for (uint32_t i = 0; i < s->qlen; i++)
			nq[i] = *pend_at(s, i);
		free(s->q);
		s->q = nq;
		s->qcap = ncap;
		s->qhead = 0;
	}
	p = pend_at(s, s->qlen++);
	memset(p, 0, sizeof(*p));
	p->kind = kind;
	p->epoch = s->syncs;
	p->start_ns = now_ns_mono();
	return p;
}

static void pend_release(struct pg_sess *s, struct pg_pend *p)
{
	if (p->undo_prev)
		val_put(p->undo == UNDO_PORTAL ? &s->portals : &s->stmts, p->undo_prev);
	free(p->undo_name);
	judged_put(p->j);
	portal_put(p->portal);
	free(p->deny);
	free(p->deny_detail);
	memset(p, 0, sizeof(*p));
}

static void pend_pop(struct pg_sess *s)
{
	pend_release(s, pend_at(s, 0));
	s->qhead = (s->qhead + 1) & (s->qcap - 1);
	s->qlen--;
}

/* An Execute's portal was described by an answer read for the SQL epoch the
 * Execute was sent in: its plan is that of the rows coming. */
static bool described_now(const struct pg_pend *p)
{
	return p->portal && p->portal->described && p->portal->ans_epoch == p->sql_epoch;
}

/* Restores what request p changed in a table: the server never ran it. */
static void pend_undo(struct pg_sess *s, struct pg_pend *p, bool restore_prev)
{
	struct pg_map *m;
	void *cur;

	if (p->kind == 'D' && p->portal)
		p->portal->desc_epoch = 0;   /* skipped: not described after all */
	if (p->undo == UNDO_NONE || !p->undo_name)
		return;
	m = p->undo == UNDO_PORTAL ? &s->portals : &s->stmts;
	cur = map_set(m, p->undo_name, restore_prev ? p->undo_prev : NULL, NULL);
	if (restore_prev)
		p->undo_prev = NULL;   /* back in the map */
	if (cur)
		val_put(m, cur);
}

static void bump_epoch(struct pg_sess *s)
{
	if (++s->sql_epoch == 0)
		s->sql_epoch = 1;   /* 0 means "never described" */
}

/* ---- judging ------------------------------------------------------------------------- */

static bool column_masked(void *arg, const char *schema, const char *table, const char *column)
{
	struct pg_sess *s = arg;

	if (column && mask_column_named(s->mask, schema, table, column))
		return true;
	/* a column that shows one of ours under its own relation (a view's,
	 * a child's: the catalog query), or with no column: any masked column
	 * in this relation? */
	for (int i = 0; i < s->ncols; i++)
		if (s->cols[i].named && strncmp(s->cols[i].name, schema, strlen(schema)) == 0) {
			const char *p = s->cols[i].name + strlen(schema);

			if (*p == '.' && strncmp(p + 1, table, strlen(table)) == 0 &&
			    p[1 + strlen(table)] == '.' &&
			    (!column || strcmp(p + 2 + strlen(table), column) == 0))
				return true;
		}
	return false;
}

/*
 * A pg_judged for a verdict r (NULL: denied before the classifier, why
 * says why), in one allocation: the struct, r's statements, the tables
 * joined by commas, the reason when not allowed. NULL on ENOMEM.
 */
static struct pg_judged *judged_new(const struct pgc_result *r, const char *why)
{
	int nst = r ? r->nstmts : 0, nt = r ? r->ntables : 0;
	size_t tlen = 0, wlen, off = 0;
	struct pg_judged *j;
	bool allowed = r && r->verdict == PGC_ALLOW;
	char *p;

	for (int i = 0; i < nt; i++)
		tlen += strnlen(r->tables[i], sizeof(r->tables[i])) + 1;
	wlen = allowed ? 0 : strlen(why) + 1;
	j = calloc(1, sizeof(*j) + (size_t)nst * sizeof(j->st[0]) + tlen + wlen);
	if (!j)
		return NULL;
	j->refs = 1;
	j->st = (struct pgc_stmt *)(j + 1);
	p = (char *)(j->st + nst);
	j->allowed = allowed;
	j->denied_stmt = -1;
	j->cls = PGC_UTILITY;
	if (r) {
		j->verdict = r->verdict;
		j->cls = r->cls;
		memcpy(j->tag, r->tag, sizeof(j->tag));   /* same size, NUL-terminated */
		j->tag[sizeof(j->tag) - 1] = '\0';
		j->nstmts = nst;
		j->denied_stmt = r->denied_stmt < nst ? r->denied_stmt : -1;
		j->rule = r->rule;
		j->copy_in = r->copy_in;
		j->copy_out = r->copy_out;
		j->cached = r->cached;
		j->changes_names = r->changes_names;
		memcpy(j->st, r->stmts, (size_t)nst * sizeof(j->st[0]));
	}
	if (nt) {
		j->tables = p;
		j->ntables = nt;
		for (int i = 0; i < nt; i++) {
			size_t n = strnlen(r->tables[i], sizeof(r->tables[i]));

			j->toff[i] = (uint16_t)off;
			memcpy(p + off, r->tables[i], n);
			off += n;
			p[off++] = ',';
		}
		p[off - 1] = '\0';
		p += off;
	}
	if (wlen) {
		j->why = p;
		memcpy(p, why, wlen);
	}
	return j;
}

/*
 * Judges one SQL text. Returns a new pg_judged (ref 1), with the policy's
 * verdict in ->allowed and the reason for a denial in why (and j->why);
 * NULL on ENOMEM (deny). The SQL must be valid UTF-8 (checked here: a text
 * that is not is denied without being parsed).
 */
/*
 * The session's masks were compiled, and their lineage read from the
 * catalog, for the agent's rules when it started (or delegated, or moved
 * to a reloaded policy). Bindings by claims follow the agent's identity,
 * which the enforcer refreshes meanwhile: new claims can bind a role that
 * masks a column the session would return in clear. Such a session gets
 * no further statement (nor Execute of one judged before): it ends
 * (end_stale()); the agent reconnects, and the new session has the new
 * rules and their masks.
 * rules: the agent's rules now, nr of them (at most ENFORCER_MAX_RULES).
 */
/*
 * The delegating user's token would still pass: not expired, and the
 * issuer still publishes the key that verified it. Its keys are checked
 * again whenever they change (ident_user_recheck; refreshed at their TTL
 * while sessions hold user tokens), at each statement, Bind and Execute,
 * and every 0.2 s besides (pg_trim: an idle session, or one in COPY FROM
 * STDIN), so an issuer that withdraws a key, rotated away from or
 * compromised, takes away every session's acting for the users whose
 * tokens it signed, as the agent's own token loses its identity (ident.c,
 * held_recheck). DELEG_REVOKED ends the session (its open transaction is
 * rolled back with it); past exp, statements are refused
 * (DELEG_EXPIRED). An issuer that cannot be reached keeps its last keys:
 * an outage ends nothing. The token itself was never kept.
 */
enum { DELEG_OK, DELEG_EXPIRED, DELEG_REVOKED };

static int deleg_state(struct conn *c, char *why, size_t whylen)
{
	struct pg_sess *s = S(c);
	char r[256];
	int err;

	if (!s->has_deleg)
		return DELEG_OK;
	if (!s->deleg_revoked &&
	    (err = enforcer_user_recheck(c->agent_idx, &s->deleg, &s->deleg_gen, r, sizeof(r))) &&
	    !(s->deleg_revoked = strdup(err == -EKEYREVOKED ? r : "it cannot be checked again"))) {
		snprintf(why, whylen, "the delegating user's token no longer verifies; reconnect with a fresh one");
		return DELEG_REVOKED;   /* no memory to keep the reason: ended all the same */
	}
	if (s->deleg_revoked) {
		snprintf(why, whylen, "the delegating user's token no longer verifies: %s; reconnect with a fresh one",
			 s->deleg_revoked);
		return DELEG_REVOKED;
	}
	if (s->deleg.exp > 0 && (int64_t)(now_ms_realtime() / 1000) >= s->deleg.exp) {
		snprintf(why, whylen, "the delegating user's token has expired; reconnect with a fresh one");
		return DELEG_EXPIRED;
	}
	return DELEG_OK;
}

static bool rules_unchanged(struct conn *c, const struct policy_rule *const *rules, size_t nr, char *why,
			    size_t whylen)
{
	struct pg_sess *s = S(c);

	if (nr == s->narules && memcmp(rules, s->arules, nr * sizeof(*rules)) == 0)
		return true;
	if (why)
		snprintf(why, whylen, "the agent's identity now binds other rules than when this "
			 "session started; reconnect");
	return false;
}

/* Notes the agent's rules the session's masks are for (rules_unchanged()). */
static void note_rules(struct conn *c)
{
	struct pg_sess *s = S(c);
	size_t nr = enforcer_rules_for(c->policy, c->agent_idx, c->target_idx, s->arules, ENFORCER_MAX_RULES);

	s->narules = nr > ENFORCER_MAX_RULES ? ENFORCER_MAX_RULES : nr;
}

static bool rule_lists_same(const struct policy_rule *const *a, size_t na, const struct policy_rule *const *b,
			    size_t nb)
{
	if (na != nb || na > ENFORCER_MAX_RULES)
		return false;
	for (size_t i = 0; i < na; i++)
		if (!policy_rule_same(a[i], b[i]))
			return false;
	return true;
}

/*
 * A session that could not move to a reloaded policy (adopt_policy(): it
 * holds prepared statements, portals or an open transaction, or its masks
 * would change) is judged under the policy it started with only while
 * that policy gives the agent (and the delegating user) the same rules as
 * the running one. Otherwise it ends (end_stale()), or inside a
 * transaction may only end that: PREPARE once, or BEGIN and never COMMIT,
 * kept the old, looser rules and masks for the life of the session
 * (review, stop 28).
 */
static bool pinned_rules_same(struct conn *c, char *why, size_t whylen)
{
	struct pg_sess *s = S(c);
	const struct policy *live = __atomic_load_n(&E->policy, __ATOMIC_ACQUIRE), *old = c->policy;
	const struct policy_rule *a[ENFORCER_MAX_RULES], *b[ENFORCER_MAX_RULES];
	bool same;

	if (live == old)
		return true;
	same = old->mode == live->mode &&
	       rule_lists_same(a, enforcer_rules_for(old, c->agent_idx, c->target_idx, a, ENFORCER_MAX_RULES),
			       b, enforcer_rules_for(live, c->agent_idx, c->target_idx, b, ENFORCER_MAX_RULES));
	if (same && s->has_deleg)
		same = rule_lists_same(a, enforcer_user_rules_for(old, c->agent_idx, &s->deleg, c->target_idx, a,
								  ENFORCER_MAX_RULES),
				       b, enforcer_user_rules_for(live, c->agent_idx, &s->deleg, c->target_idx, b,
								  ENFORCER_MAX_RULES));
	if (!same)
		/* under 200 bytes: the callers' buffers */
		snprintf(why, whylen, "the policy was reloaded with other rules for this agent and this "
			 "session cannot take them (prepared statements, portals, a transaction, requests "
			 "in flight or other masks); reconnect");
	return same;
}

static bool refresh_may(struct conn *c);
static const char *unknown_rel(const struct pg_sess *s, const struct pgc_result *r);

/* fe_query(), fe_parse(): the message waits for a read of the lineage, then
 * is judged again (judge(): s->redo). */
#define PG_REDO 1

static struct pg_judged *judge(struct conn *c, const char *sql, uint32_t len, char *why, size_t whylen)
{
	struct pg_sess *s = S(c);
	const struct policy_rule *rules[ENFORCER_MAX_RULES];
	struct pgc_result *r = &s->res;
	struct pgc_ctx ctx = {
		.search_path = search_path(c),
		.in_transaction = s->tx != 'I',
		.policy_gen = s->gen,
		.may_parse = conn_parse_may,
		.spent = conn_parse_spent,
		.garg = c,
		.owner = c->agent_idx >= 0 ? (uint32_t)c->agent_idx + 1 : 0,
	};
	struct pg_judged *j;
	size_t nr;

	if (s->mask_active) {
		ctx.column_masked = column_masked;
		ctx.arg = s;
		ctx.arg_id = s->serial;   /* s's address may have been another session's */
	}
	if (s->cat_ready)
		ctx.catalog = &s->cat;
	/* a change in progress anywhere on the database (the key of the
	 * verdict cache holds names_stale). Read before the epoch: a change
	 * ends with the epoch moved, then the count down, so a count of 0
	 * read first is never paired with the epoch from before that end */
	bool changing = names_changing(c);
	uint64_t epoch = atomic_load(names_epoch_of(c));

	s->stale_rules = STALE_NO;

	if (!s->names_stale && s->cat_ready && epoch != s->names_epoch)
		s->names_stale = true;   /* another session changed the database's names */
	ctx.names_stale = s->names_stale || changing;
	if (!pg_utf8_valid(sql, len)) {
		snprintf(why, whylen, "query text is not valid UTF-8");
		goto early;
	}
	if (!enforcer_identity_ok(c->policy, c->agent_idx, why, whylen))
		goto early;
	/* the user's token was verified once, at the session's start: the
	 * session acts for the user only while that token would still pass */
	switch (deleg_state(c, why, whylen)) {
	case DELEG_OK:
		break;
	case DELEG_REVOKED:
		s->stale_rules = STALE_ALWAYS;   /* the session ends (end_stale()) */
		goto early;
	default:
		goto early;
	}
	nr = enforcer_rules_for(c->policy, c->agent_idx, c->target_idx, rules, ENFORCER_MAX_RULES);
	if (nr > ENFORCER_MAX_RULES) {
		snprintf(why, whylen, "too many rules for this target");
		goto early;
	}
	if (!rules_unchanged(c, rules, nr, why, whylen)) {
		s->stale_rules = STALE_ALWAYS;
		goto early;
	}
	/* a reload published since process_agent() looked: a session
	 * holding nothing moves now, not only at its next read */
	if (c->policy != __atomic_load_n(&E->policy, __ATOMIC_ACQUIRE)) {
		adopt_policy(c);
		ctx.policy_gen = s->gen;
		nr = enforcer_rules_for(c->policy, c->agent_idx, c->target_idx, rules, ENFORCER_MAX_RULES);
		if (nr > ENFORCER_MAX_RULES || !rules_unchanged(c, rules, nr, why, whylen)) {
			s->stale_rules = nr <= ENFORCER_MAX_RULES ? STALE_ALWAYS : STALE_NO;
			goto early;
		}
	}
	char pin_why[200];
	bool pinned = !pinned_rules_same(c, pin_why, sizeof(pin_why));
	if (pgc_judge(&ctx, sql, len, rules, nr, r) != 0)
		r->verdict = PGC_DENY;
	/* a pinned session may still end its transaction (then, holding no
	 * prepared statement, it moves to the running policy) */
	/* what the old rules deny is refused for the same reason: the
	 * running ones may allow it (review) */
	if (pinned && (r->nstmts == 0 || r->cls != PGC_TRANSACTION)) {
		r->verdict = PGC_DENY;
		r->denied_stmt = -1;
		snprintf(r->reason, sizeof(r->reason), "%s", pin_why);
		s->stale_rules = STALE_IDLE;
	}
	if (s->has_deleg && r->verdict != PGC_DENY) {
		/* Delegation: the user's roles must allow it too (DESIGN §3). */
		struct pgc_result *ur = &s->ures;
		size_t nu = enforcer_user_rules_for(c->policy, c->agent_idx, &s->deleg, c->target_idx, rules,
						    ENFORCER_MAX_RULES);

		if (nu > ENFORCER_MAX_RULES || pgc_judge(&ctx, sql, len, rules, nu, ur) != 0) {
			ur->verdict = PGC_DENY;
			ur->nstmts = 0;
			ur->denied_stmt = -1;
			snprintf(ur->reason, sizeof(ur->reason), "the user's rules could not be applied");
		} else if (ur->verdict == PGC_DENY && !ur->reason[0]) {
			snprintf(ur->reason, sizeof(ur->reason), "not allowed by any rule of the delegating user");
		}
		pgc_combine(r, ur);
	}
	/* A relation the lineage read does not know (unknown_rel()): read
	 * again first, once per statement, when nothing is in flight, inside
	 * the agent's transaction too (the read runs in it, and sees the
	 * relations its statements would). One still unknown after the read:
	 * at idle or inside a READ COMMITTED transaction (the read saw the
	 * catalog as it is now), one that does not exist (the server says
	 * so), an index, a temporary table named without pg_temp, or one made
	 * in the moment since; inside a REPEATABLE READ or SERIALIZABLE
	 * transaction, maybe one its snapshot hides from the read while the
	 * server resolves names afresh: denied. A failed transaction cannot
	 * read it, and still runs a ROLLBACK (TO SAVEPOINT) and what follows
	 * it in the message: denied too (review). So is one whose read failed
	 * (too many names). */
	const char *unk;

	if (r->verdict != PGC_DENY && (unk = unknown_rel(s, r))) {
		if (!s->tried_for_stmt && refresh_may(c)) {
			s->redo = true;
			snprintf(why, whylen, "the lineage is read again first");
			goto early;
		}
		if (!s->fresh_for_stmt) {
			r->verdict = PGC_DENY;
			r->denied_stmt = -1;
			s->lineage_ms = 0;   /* due: read at the next chance */
			snprintf(r->reason, sizeof(r->reason), "relation %.128s is newer than the masked "
				 "columns' lineage this session read, which could not be read again for it "
				 "(requests in flight, a transaction failed, or a change open); send the "
				 "statement again once the session is idle", unk);
		} else if (s->tx != 'I' && !s->refresh_rc) {
			r->verdict = PGC_DENY;
			r->denied_stmt = -1;
			snprintf(r->reason, sizeof(r->reason), "relation %.128s is not in the masked "
				 "columns' lineage read in this transaction (made after its snapshot); run "
				 "the statement again in a new transaction", unk);
		}
	}
	/* from the moment it may reach the server, a statement that can add
	 * functions or operators leaves the names read at the start behind */
	if (r->changes_names && (r->verdict == PGC_ALLOW || c->policy->mode == POLICY_OBSERVE)) {
		names_change(c, s);   /* every other session of the database too */
	}
	if ((r->verdict == PGC_ALLOW || c->policy->mode == POLICY_OBSERVE) &&
	    stmts_change_rels(r->stmts, r->nstmts))
		s->rel_changer = true;   /* the lineage of every masking session, once it is done */
	switch (r->verdict) {
	case PGC_ALLOW:
		why[0] = '\0';
		break;
	case PGC_REVIEW:
		review_reason(r->rule, why, whylen);
		break;
	default:
		snprintf(why, whylen, "%s", r->reason[0] ? r->reason : "not allowed by any rule");
		break;
	}
	j = judged_new(r, why);
	if (!j)
		snprintf(why, whylen, "out of memory");
	else {
		j->names_stale = ctx.names_stale;
		j->names_epoch = epoch;
		j->lineage_id = s->serial;
	}
	return j;
early:
	j = judged_new(NULL, why);
	if (!j)
		snprintf(why, whylen, "out of memory");
	return j;
}

/* ---- masking ------------------------------------------------------------------------- */

/* Text-like types whose binary form is the text itself (jsonb: a version byte first). */
static bool textlike_type(uint32_t oid)
{
	switch (oid) {
	case 25: case 1043: case 1042: case 19: case 114: case 142: case 705: case 3802:
		return true;
	}
	return false;
}

static const char *lineage_name(struct pg_sess *s, uint32_t oid, int16_t att, bool *named)
{
	for (int i = 0; i < s->ncols; i++)
		if (s->cols[i].oid == oid && s->cols[i].att == att) {
			*named = s->cols[i].named;
			return s->cols[i].name;
		}
	*named = false;
	return NULL;
}

/* A plan for a RowDescription; NULL when nothing in it needs masking. */
/*
 * The masking plan of a result from its RowDescription m: *out is NULL
 * when nothing in it is masked. Errors (a RowDescription we cannot read,
 * no memory) are returned, never a NULL plan: the rows would pass
 * unmasked.
 */
static int plan_for(struct pg_sess *s, const struct pg_msg *m, const struct pg_portal *portal,
		    struct pg_plan **out)
{
	static __thread struct pg_field f[PG_FIELDS_MAX];
	struct pg_plan *p;
	char names[512] = "";
	size_t nl = 0;
	int n;
	bool any = false;

	*out = NULL;
	if (!s->mask_active)
		return 0;
	if (pg_parse_rowdesc(m, f, PG_FIELDS_MAX, &n) != 0)
		return -EBADMSG;
	/* one block: the plan, then how[n] and jsonb_bin[n] (a plan per
	 * statement: one allocation instead of three) */
	p = calloc(1, sizeof(*p) + 2 * (size_t)(n ? n : 1));
	if (!p)
		return -ENOMEM;
	p->how = (uint8_t *)(p + 1);
	p->jsonb_bin = p->how + (n ? n : 1);
	p->ncols = (int16_t)n;
	for (int i = 0; i < n; i++) {
		bool named = false;
		const char *nm = f[i].table_oid ? lineage_name(s, f[i].table_oid, f[i].attnum, &named) : NULL;
		int fmt = f[i].format;   /* Describe 'P' and simple Query: the real formats */

		/* json in binary is its text; jsonb's starts with a version byte */
		p->jsonb_bin[i] = fmt == 1 && f[i].type_oid == 3802;
		bool json = f[i].type_oid == 114 || f[i].type_oid == 3802;

		char fresh[40];

		if (!named && s->lineage_on && f[i].table_oid > s->oid_high) {
			/* a relation made since the lineage was read (oid_high):
			 * it may show a masked table's rows, so it is masked
			 * whole, and the lineage read again at the next chance */
			snprintf(fresh, sizeof(fresh), "new:%u.%d", f[i].table_oid, f[i].attnum);
			nm = fresh;
			named = true;
			s->lineage_ms = 0;
			atomic_fetch_add(&lineage_unknown, 1);
		}
		if (named) {
			p->how[i] = json ? COL_NAMED_JSON : textlike_type(f[i].type_oid) ? COL_NAMED : COL_NULL;
			nl += snprintf(names + nl, sizeof(names) - nl, "%s%s", nl ? "," : "", nm);
			if (nl >= sizeof(names))
				nl = sizeof(names) - 1;
			any = true;
		} else if (mask_has_detectors(s->mask) && textlike_type(f[i].type_oid)) {
			p->how[i] = json ? COL_SCAN_JSON : COL_SCAN;
			any = true;
		} else if (mask_has_detectors(s->mask) && fmt == 0) {
			p->how[i] = COL_SCAN_NULL;
			any = true;
		}
		/* binary non-text values of unnamed columns: opaque to detectors */
	}
	if (!any) {
		plan_free(p);
		return 0;
	}
	if (nl && !(p->names = strdup(names))) {
		plan_free(p);
		return -ENOMEM;
	}
	*out = p;
	return 0;
}

/* A value masked whole: ****, as a JSON string for json and jsonb (with
 * jsonb's version byte in binary: jsonb_bin). */
static void put_token(struct pg_sess *s, bool json, bool jsonb_bin)
{
	pg_out_i32(&s->out, MASK_TOKEN_LEN + (json ? 2 : 0) + (jsonb_bin ? 1 : 0));
	if (jsonb_bin)
		pg_out_u8(&s->out, 1);
	if (json)
		pg_out_u8(&s->out, '"');
	pg_out_bytes(&s->out, MASK_TOKEN, MASK_TOKEN_LEN);
	if (json)
		pg_out_u8(&s->out, '"');
}

/* Rewrites one DataRow by plan into s->out. 0, or -EBADMSG. */
static int mask_row(struct pg_sess *s, const struct pg_msg *m, struct pg_plan *plan)
{
	struct pg_datarow d;
	const uint8_t *v;
	int32_t vl;
	int rc, e = 0, i = 0;
	static __thread char *tmp;
	static __thread size_t tmpcap;

	if (pg_datarow_begin(m, &d) != 0 || d.ncols != plan->ncols)
		return -EBADMSG;
	pg_out_begin(&s->out, 'D');
	pg_out_i16(&s->out, d.ncols);
	while ((rc = pg_datarow_next(&d, &v, &vl)) == 1) {
		uint8_t how = plan->how[i++];

		if (vl < 0 || how == COL_PASS) {
			pg_out_i32(&s->out, vl);
			if (vl > 0)
				pg_out_bytes(&s->out, v, (size_t)vl);
			continue;
		}
		if (how == COL_NAMED || how == COL_NAMED_JSON) {
			put_token(s, how == COL_NAMED_JSON, plan->jsonb_bin[i - 1]);
			plan->hits++;
			continue;
		}
		if (how == COL_NULL || (how == COL_SCAN_NULL && (mask_value_matches(s->mask, (const char *)v,
										    (size_t)vl) ||
								 (e = mask_escapes_hide(s->mask, (const char *)v,
											(size_t)vl))))) {
			if (e < 0)
				return -ENOMEM;
			pg_out_i32(&s->out, -1);
			plan->hits++;
			continue;
		}
		if (how == COL_SCAN_NULL) {
			pg_out_i32(&s->out, vl);
			pg_out_bytes(&s->out, v, (size_t)vl);
			continue;
		}
		size_t need = mask_value_bound((size_t)vl), n;
		if (need > tmpcap) {
			char *t = realloc(tmp, need);

			if (!t)
				return -ENOMEM;
			tmp = t;
			tmpcap = need;
		}
		n = mask_value(s->mask, (const char *)v, (size_t)vl, tmp, tmpcap, &plan->hits);
		/* escapes of its own (a json value Python wrote,
		 * "jos\u00e9@ex\u00e4mple.com"; a page's "&#64;") that spell
		 * what the detectors mask: its reader undoes them, so whole
		 * (found by review, stop 65) */
		if (n != (size_t)-1 && (e = mask_escapes_hide(s->mask, tmp, n))) {
			if (e < 0)
				n = (size_t)-1;
			else
				put_token(s, how == COL_SCAN_JSON, plan->jsonb_bin[i - 1]);
			plan->hits += e > 0;
		} else if (n != (size_t)-1) {
			pg_out_i32(&s->out, (int32_t)n);
			pg_out_bytes(&s->out, tmp, n);
		}
		if (tmpcap > (4u << 20)) {   /* a value over 1 MiB: its scratch (4x) does not stay with the thread */
			free(tmp);
			tmp = NULL;
			tmpcap = 0;
		}
		if (n == (size_t)-1)
			return -ENOMEM;
	}
	if (rc != 0)
		return -EBADMSG;
	pg_out_end(&s->out);
	return s->out.overflow ? -ENOBUFS : 0;
}

/* ErrorResponse / NoticeResponse with every field value content-masked. */
/* Whether the server's error and notice fields must be rewritten: values
 * scanned by detectors, or a DETAIL withheld (fields_withhold). */
static bool fields_masked(const struct pg_sess *s)
{
	return s->mask_active && (mask_has_detectors(s->mask) || s->ncols > 0);
}

/*
 * A session that masks columns never sees the server's DETAIL field: it
 * quotes rows whole ("Failing row contains (...)" of a NOT NULL or CHECK
 * violation by an UPDATE that names no masked column), keys, and values,
 * and no statement check can tell in advance which error will come.
 */
#define PG_DETAIL_WITHHELD "agentgate: detail withheld (this session masks columns)"

static int mask_fields(struct pg_sess *s, const struct pg_msg *m)
{
	struct pg_rd r;
	const char *v;
	uint32_t vl;
	char code;
	int rc, e;
	char buf[4096 * MASK_TOKEN_LEN + MASK_TOKEN_LEN];

	pg_rd_init(&r, m);
	pg_out_begin(&s->out, m->type);
	while ((rc = pg_fields_next(&r, &code, &v, &vl)) == 1) {
		size_t n;
		char *out = buf, *heap = NULL;

		/* A huge field is cut, after masking: cut first, a value that
		 * straddled the cut kept its first digits, which no detector
		 * saw whole (review, stop 34). What is scanned is bounded too. */
		if (vl > 65536)
			vl = 65536;
		if (code == 'D' && s->ncols > 0) {
			v = PG_DETAIL_WITHHELD;
			vl = sizeof(PG_DETAIL_WITHHELD) - 1;
		}
		if (mask_has_detectors(s->mask)) {
			size_t cap = mask_value_bound(vl);

			if (cap > sizeof(buf) && !(out = heap = malloc(cap)))
				return -ENOMEM;
			n = mask_value(s->mask, v, vl, out, cap > sizeof(buf) ? cap : sizeof(buf), NULL);
			/* a value quoted with escapes of its own (mask_row()) */
			if (n != (size_t)-1 && (e = mask_escapes_hide(s->mask, out, n)) != 0) {
				n = e < 0 ? (size_t)-1 : MASK_TOKEN_LEN;
				memcpy(out, MASK_TOKEN, MASK_TOKEN_LEN);
			}
		} else {
			out = (char *)v;   /* only read */
			n = vl;
		}
		if (n == (size_t)-1) {
			free(heap);
			return -ENOMEM;
		}
		if (n > 4096) {   /* at a character's start: the text stays UTF-8 */
			n = 4096;
			while (n > 0 && ((uint8_t)out[n] & 0xc0) == 0x80)
				n--;
		}
		pg_out_u8(&s->out, (uint8_t)code);
		pg_out_bytes(&s->out, out, n);
		pg_out_u8(&s->out, 0);
		free(heap);
	}
	if (rc != 0)
		return -EBADMSG;
	pg_out_u8(&s->out, 0);
	pg_out_end(&s->out);
	return 0;
}

static int mask_notification(struct pg_sess *s, const struct pg_msg *m)
{
	uint32_t pid;
	const char *ch, *pl;
	size_t n, len;
	char *buf;
	int e;

	if (pg_parse_notification(m, &pid, &ch, &pl) != 0)
		return -EBADMSG;
	len = strlen(pl);
	buf = malloc(mask_value_bound(len));
	if (!buf)
		return -ENOMEM;
	n = mask_value(s->mask, pl, len, buf, mask_value_bound(len), NULL);
	if (n == (size_t)-1 || (e = mask_escapes_hide(s->mask, buf, n)) != 0) {
		if (n == (size_t)-1 || e < 0) {
			free(buf);
			return -ENOMEM;
		}
		n = MASK_TOKEN_LEN;   /* escapes of its own (mask_row()) */
		memcpy(buf, MASK_TOKEN, MASK_TOKEN_LEN);
	}
	pg_out_begin(&s->out, 'A');
	pg_out_i32(&s->out, (int32_t)pid);
	pg_out_str(&s->out, ch);
	pg_out_bytes(&s->out, buf, n);
	pg_out_u8(&s->out, 0);
	pg_out_end(&s->out);
	free(buf);
	return 0;
}

/* ---- the agent's startup ---------------------------------------------------------------- */

static bool printable(const char *v, size_t max)
{
	size_t n = strlen(v);

	if (n > max)
		return false;
	for (; *v; v++)
		if ((uint8_t)*v < 0x20 || (uint8_t)*v > 0x7e)
			return false;
	return true;
}

/*
 * Startup parameters: NULL when acceptable (kept in s), else the reason the
 * connection is refused.
 */
static const char *check_startup(struct conn *c, const struct pg_startup *su, char *why, size_t whylen)
{
	struct pg_sess *s = S(c);
	const char *user = pg_startup_get(su, "user"), *db = pg_startup_get(su, "database");

	if (su->version != PG_PROTO_3_0)
		s->negotiate = true;   /* a newer minor: we answer NegotiateProtocolVersion 3.0 */
	if (!user || !*user)
		return "the startup packet names no user";
	snprintf(s->user, sizeof(s->user), "%s", user);
	if (db && *db && strcmp(db, pinned_db(c)) != 0 && strcmp(db, user) != 0) {
		snprintf(why, whylen, "database \"%s\" is not this target's database", db);
		return why;
	}
	for (int i = 0; i < su->nparams; i++) {
		const char *n = su->name[i], *v = su->value[i];

		if (!strcmp(n, "user") || !strcmp(n, "database"))
			continue;
		if (!strncmp(n, "_pq_.", 5)) {
			/* protocol extensions: unsupported, reported in 'v' */
			s->negotiate_opts[s->nnegotiate++] = n;
			s->negotiate = true;
			continue;
		}
		if (!strcmp(n, "client_encoding")) {
			/* replaced by UTF8 whatever it says: the server reports UTF8
			 * back in ParameterStatus and the client follows (SJIS would
			 * open a parser differential, notes D2) */
			continue;
		}
		if (!strcmp(n, "application_name")) {
			if (printable(v, PG_APPNAME_MAX))
				snprintf(s->appname, sizeof(s->appname), "%s", v);
			continue;
		}
		if (!strcasecmp(n, "DateStyle") && printable(v, sizeof(s->datestyle) - 1)) {
			snprintf(s->datestyle, sizeof(s->datestyle), "%s", v);
			continue;
		}
		if (!strcasecmp(n, "TimeZone") && printable(v, sizeof(s->timezone) - 1)) {
			snprintf(s->timezone, sizeof(s->timezone), "%s", v);
			continue;
		}
		if (!strcmp(n, "extra_float_digits") && printable(v, sizeof(s->extra_float) - 1)) {
			snprintf(s->extra_float, sizeof(s->extra_float), "%s", v);
			continue;
		}
		if (!strcasecmp(n, "IntervalStyle") && printable(v, sizeof(s->intervalstyle) - 1)) {
			snprintf(s->intervalstyle, sizeof(s->intervalstyle), "%s", v);
			continue;
		}
		if (!strcmp(n, "standard_conforming_strings") && !strcmp(v, "on"))
			continue;
		/* options (-c anything), replication (walsender grammar), search_path,
		 * role, session_authorization, default_transaction_read_only, and
		 * every other setting: refused */
		snprintf(why, whylen, "startup parameter \"%.64s\" is not allowed", n);
		return why;
	}
	return NULL;
}

static int start_upstream(struct conn *c);
static int process_agent(struct conn *c);

static int refuse_startup(struct conn *c, const char *why)
{
	if (!enforcer_should_refuse(c, why)) {
		/* observe mode: recorded, and the session goes on without the
		 * refused parameter (it is never sent upstream) */
		return 1;
	}
	audit_refuse(c, why);
	return fatal(c, "42501", "agentgate: denied: %s", why);
}

static int agent_cancel(struct conn *c, const struct pg_startup *su)
{
	struct pg_sess *s = S(c);
	struct cancel_ent e;

	s->phase = PH_DONE;
	if (!cancel_find(su->pid, su->key, &e) || e.agent_idx != c->agent_idx || e.target_idx != c->target_idx) {
		/* PostgreSQL answers nothing to a cancel with an unknown key */
		snprintf(c->why, sizeof(c->why), "cancel request with a key this agent was not issued");
		audit_refuse(c, c->why);
		conn_finish(c);
		return 0;
	}
	s->cancel = e;
	s->is_cancel = true;
	s->phase = PH_UP_CONNECT;
	/* the session's own upstream, whatever address this connection dialled */
	memcpy(c->pair.orig_addr, e.addr, 16);
	c->pair.orig_port = e.port;
	audit_conn(c, true, "cancel request forwarded");
	return conn_connect_upstream(c);
}

static int agent_startup(struct conn *c)
{
	struct pg_sess *s = S(c);
	struct pg_startup su;
	const uint8_t *in;
	uint32_t len;
	char why[200];
	const char *bad;
	int n;

	for (;;) {
		in = conn_in(c, SIDE_AGENT, &len);
		if (!len && conn_in_eof(c, SIDE_AGENT) && s->tls_note[0]) {
			/* TLS was not offered, and the client (sslmode=require)
			 * went: the refusal is ours, and this is why */
			audit_refuse(c, s->tls_note);
			conn_finish(c);
			s->phase = PH_DONE;
			return 0;
		}
		if (!len)
			return conn_in_eof(c, SIDE_AGENT) ? -ECONNRESET : 0;
		if (in[0] == 0x16) {
			/* PG 17 direct TLS (sslnegotiation=direct): not offered */
			audit_refuse(c, "direct TLS negotiation is not supported");
			conn_finish(c);
			s->phase = PH_DONE;
			return 0;
		}
		n = pg_startup_frame(in, len, &su);
		if (n == 0)
			return conn_in_eof(c, SIDE_AGENT) ? -ECONNRESET : 0;
		if (n < 0) {
			audit_refuse(c, "malformed startup packet");
			return fatal(c, "08P01", "agentgate: malformed startup packet");
		}
		switch (su.kind) {
		case PG_SU_SSL: {
			struct local_ca_asker who;
			SSL *ssl = NULL;
			char name[256], why[300];   /* a target's host: up to 255 */

			if (s->ssl_asked || s->agent_tls)
				return fatal(c, "08P01", "agentgate: a second SSLRequest");
			s->ssl_asked = true;
			conn_in_consume(c, SIDE_AGENT, (uint32_t)n);
			if (len > (uint32_t)n) {
				/* bytes after SSLRequest before our answer: CVE-2021-23214 */
				audit_refuse(c, "bytes sent after SSLRequest before the TLS handshake");
				conn_finish(c);
				s->phase = PH_DONE;
				return 0;
			}
			if (target(c)->addr.kind == ADDR_HOST)
				snprintf(name, sizeof(name), "%s", target(c)->addr.host);
			else
				addr_str(c->pair.orig_addr, name, sizeof(name));
			/* any name: a client may dial the server by an alias, and
			 * names are not checked here. Without a local CA, or past
			 * the agent's budget for minting a CIDR target's address:
			 * 'N' (the loopback leg may be plain; sslmode=require
			 * clients stop there), and the Open event says why (or
			 * the Refuse event of a client that gives up). */
			conn_ca_asker(c, &who);
			ssl = local_ca_server_ssl(target(c), true, name, &who, why, sizeof(why));
			if (!ssl && local_ca_cert_path()[0])
				snprintf(s->tls_note, sizeof(s->tls_note), "TLS not offered: %s", why);
			if (conn_send(c, SIDE_AGENT, ssl ? "S" : "N", 1)) {
				SSL_free(ssl);
				return -ENOBUFS;
			}
			if (ssl) {
				int err = conn_tls(c, SIDE_AGENT, ssl, true);

				if (err)
					return err;
				s->agent_tls = true;
				return 0;   /* the startup packet comes over TLS */
			}
			continue;
		}
		case PG_SU_GSSENC:
			if (s->gss_asked)
				return fatal(c, "08P01", "agentgate: a second GSSENCRequest");
			s->gss_asked = true;
			conn_in_consume(c, SIDE_AGENT, (uint32_t)n);
			if (conn_send(c, SIDE_AGENT, "N", 1))
				return -ENOBUFS;
			continue;
		case PG_SU_CANCEL:
			conn_in_consume(c, SIDE_AGENT, (uint32_t)n);
			return agent_cancel(c, &su);
		case PG_SU_STARTUP:
			break;
		}
		bad = check_startup(c, &su, why, sizeof(why));
		if (bad && refuse_startup(c, bad) == 0)
			return 0;
		/* keep what we need from the packet before it is consumed */
		if (s->nnegotiate) {
			size_t tot = 0, off = 0;

			for (int i = 0; i < s->nnegotiate; i++)
				tot += strlen(s->negotiate_opts[i]) + 1;
			s->negotiate_buf = malloc(tot);
			if (!s->negotiate_buf)
				return -ENOMEM;
			for (int i = 0; i < s->nnegotiate; i++) {
				size_t l = strlen(s->negotiate_opts[i]) + 1;

				memcpy(s->negotiate_buf + off, s->negotiate_opts[i], l);
				s->negotiate_opts[i] = s->negotiate_buf + off;
				off += l;
			}
		}
		conn_in_consume(c, SIDE_AGENT, (uint32_t)n);
		if (target(c)->user_token_password && c->policy->agents[c->agent_idx].accept_user_tokens) {
			/* Delegation: the user's token comes as the password
			 * (AuthenticationCleartextPassword; the agent leg is
			 * loopback or TLS). Upstream waits until it verified. */
			pg_out_begin(&s->out, 'R');
			pg_out_i32(&s->out, 3);
			pg_out_end(&s->out);
			s->phase = PH_AGENT_AUTH;
			return send_out(c, SIDE_AGENT);
		}
		return start_upstream(c);
	}
}

static int compile_masks(struct conn *c);

/* The verdict cache must not outlive a policy change: its generation is
 * made of the policy's hash. Never 0. */
static uint64_t policy_gen(const struct policy *p)
{
	uint64_t g = 0;

	for (int i = 0; i < 16; i++) {   /* the hash's first 16 hex digits */
		char h = p->hash[i];
		int v = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : 0;

		g = g << 4 | (uint64_t)v;
	}
	return g | 1;
}

/* The rules whose masks apply to this session under policy p: the agent's
 * for the target and, with delegation, the user's (masks are the union). At most
 * 2 * ENFORCER_MAX_RULES. A list over the bound is cut, which is safe only
 * because judge() then denies every statement (too many rules) and nothing
 * is returned to mask. */
static size_t mask_rules_of(struct conn *c, const struct policy *p, const struct policy_rule **rules)
{
	struct pg_sess *s = S(c);
	size_t nr = enforcer_rules_for(p, c->agent_idx, c->target_idx, rules, ENFORCER_MAX_RULES);

	if (nr > ENFORCER_MAX_RULES)
		nr = ENFORCER_MAX_RULES;
	if (s->has_deleg) {
		size_t nu = enforcer_user_rules_for(p, c->agent_idx, &s->deleg, c->target_idx, rules + nr,
						    ENFORCER_MAX_RULES);

		nr += nu > ENFORCER_MAX_RULES ? ENFORCER_MAX_RULES : nu;
	}
	return nr;
}

/* The PasswordMessage holding a delegating user's token. */
static int agent_auth(struct conn *c)
{
	struct pg_sess *s = S(c);
	const uint8_t *in;
	uint32_t len, mlen;
	char why[256];

	in = conn_in(c, SIDE_AGENT, &len);
	if (len < 5)
		return conn_in_eof(c, SIDE_AGENT) ? -ECONNRESET : 0;
	mlen = (uint32_t)in[1] << 24 | (uint32_t)in[2] << 16 | (uint32_t)in[3] << 8 | in[4];
	if (in[0] != 'p' || mlen < 5 || mlen > 4 + JWT_MAX_TOKEN + 1) {
		audit_refuse(c, "delegation: the password message is not a user token");
		return fatal(c, "28000", "agentgate: denied: this target takes a user token as the password");
	}
	if (len < mlen + 1)
		return conn_in_eof(c, SIDE_AGENT) ? -ECONNRESET : 0;
	uint8_t *tok = (uint8_t *)in + 5;
	size_t toklen = mlen - 4;

	if (tok[toklen - 1] != 0) {
		audit_refuse(c, "delegation: malformed password message");
		return fatal(c, "08P01", "agentgate: malformed password message");
	}
	int err = enforcer_user_verify(c->agent_idx, (const char *)tok, toklen - 1, &s->deleg, why,
				       sizeof(why));

	OPENSSL_cleanse(tok, toklen);   /* the token is not kept */
	conn_in_consume(c, SIDE_AGENT, mlen + 1);
	if (err < 0) {
		char r[300];

		snprintf(r, sizeof(r), "delegation: user token refused: %s", why);
		audit_refuse(c, r);
		return fatal(c, "28000", "agentgate: denied: user token refused: %s", why);
	}
	s->has_deleg = true;
	if (compile_masks(c))
		return fatal(c, "53200", "agentgate: cannot compile the masks for this session");
	return start_upstream(c);
}

/* ---- upstream: TLS, startup, authentication --------------------------------------------- */

static const char *tls_mode(struct conn *c)
{
	const char *m = target(c)->upstream.tls;

	return m ? m : "disable";
}

/* Is the server's chain checked (verify-full, or require with a ca_file)? */
static bool tls_checks_chain(struct conn *c)
{
	return policy_tls_check(&target(c)->upstream) >= POLICY_TLS_CHAIN;
}

/*
 * The TLS context of a target: the CA file (or the system store) and the
 * client certificate, loaded once. Verification itself is checked by us
 * once the handshake is done (up_tls_verified), not by failing the
 * handshake inside conn.c: that way the agent gets an error that says why.
 * Nothing is sent to the server before the check passes. Per-connection
 * settings (the name to verify, SNI) go on each SSL, never here.
 */
static SSL_CTX *upstream_ctx_new(const struct policy_upstream *u, bool verify, char *why, size_t whylen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx) {
		snprintf(why, whylen, "TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);   /* as a FIN (http_upstream.c) */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	if (verify) {
		if (u->ca_file ? SSL_CTX_load_verify_locations(ctx, u->ca_file, NULL) != 1
			       : SSL_CTX_set_default_verify_paths(ctx) != 1) {
			snprintf(why, whylen, "cannot load CA file '%s'", u->ca_file ? u->ca_file : "(system)");
			goto fail;
		}
	}
	SSL_CTX_set_default_passwd_cb(ctx, ag_no_passphrase);   /* encrypted: refused, never prompted */
	if (u->cert_file && u->key_file) {
		/* the key is read by OpenSSL, by path: that path must be one
		 * only root can change (a trusted path stays trusted) */
		char kwhy[300];
		int fd = secret_open(u->key_file, kwhy, sizeof(kwhy));

		if (fd < 0) {
			snprintf(why, whylen, "client key refused: %s", kwhy);
			goto fail;
		}
		close(fd);
	}
	if (u->cert_file && (SSL_CTX_use_certificate_chain_file(ctx, u->cert_file) != 1 ||
			     SSL_CTX_use_PrivateKey_file(ctx, u->key_file, SSL_FILETYPE_PEM) != 1)) {
		snprintf(why, whylen, "cannot load client certificate '%s'", u->cert_file);
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/*
 * Upstream TLS contexts, one per target of the running policy, shared by
 * every session and worker: built by the first session that needs one (a
 * CA bundle costs milliseconds to load, and per connection it was most of
 * the cost of a TLS session), dropped when the policy changes (keyed by
 * the policy and its hash). SSL_new() on a shared context is thread-safe
 * and the context is refcounted, so a session's SSL keeps its context
 * alive after we drop ours. A context that fails to build is not kept: the
 * next session tries again (and says why).
 */
static pthread_mutex_t upctx_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	const struct policy *policy;
	char hash[sizeof(((struct policy *)0)->hash)];
	size_t n;
	SSL_CTX **ctx;
	uint64_t *stamp;     /* files_stamp() of each context's files when built */
	uint64_t *checked;   /* when that was last compared (monotonic ms) */
} upctx;

static uint64_t tls_stamp(const struct policy_upstream *u)
{
	const char *files[] = { u->ca_file, u->cert_file, u->key_file };

	return files_stamp(files, 3);
}

/* The target's context with a reference for the caller, or NULL and why. */
static SSL_CTX *upstream_ctx(struct conn *c, bool verify, char *why, size_t whylen)
{
	const struct policy *pol = c->policy;
	SSL_CTX *ctx = NULL;

	pthread_mutex_lock(&upctx_lock);
	if (upctx.policy != pol || strcmp(upctx.hash, pol->hash) != 0) {
		size_t n = pol->ntargets ? pol->ntargets : 1;

		for (size_t i = 0; i < upctx.n; i++)
			SSL_CTX_free(upctx.ctx[i]);
		free(upctx.ctx);
		free(upctx.stamp);
		free(upctx.checked);
		upctx.ctx = calloc(n, sizeof(*upctx.ctx));
		upctx.stamp = calloc(n, sizeof(*upctx.stamp));
		upctx.checked = calloc(n, sizeof(*upctx.checked));
		if (!upctx.ctx || !upctx.stamp || !upctx.checked) {
			free(upctx.ctx);
			free(upctx.stamp);
			free(upctx.checked);
			upctx.ctx = NULL;
			upctx.stamp = upctx.checked = NULL;
		}
		upctx.n = upctx.ctx ? pol->ntargets : 0;
		upctx.policy = upctx.ctx ? pol : NULL;
		snprintf(upctx.hash, sizeof(upctx.hash), "%s", upctx.ctx ? pol->hash : "");
	}
	if (c->target_idx < 0 || (size_t)c->target_idx >= upctx.n) {
		snprintf(why, whylen, "TLS context: out of memory");
	} else {
		SSL_CTX **slot = &upctx.ctx[c->target_idx];
		const struct policy_target *t = target(c);
		uint64_t now = now_ns_mono() / 1000000ull, stamp;

		if (!*slot) {
			upctx.stamp[c->target_idx] = tls_stamp(&t->upstream);   /* before: a change while loading is seen */
			upctx.checked[c->target_idx] = now;
			*slot = upstream_ctx_new(&t->upstream, verify, why, whylen);
		} else if (now - upctx.checked[c->target_idx] >= 1000) {
			/* Its files changed (a CA bundle or client certificate
			 * rotated on disk): built again, compared at most once a
			 * second, as http_upstream.c does. A rotation that cannot
			 * be loaded (a half-written file) keeps the context in
			 * use, says so once, and is tried when they change again. */
			upctx.checked[c->target_idx] = now;
			if ((stamp = tls_stamp(&t->upstream)) != upctx.stamp[c->target_idx]) {
				char why2[300];
				SSL_CTX *fresh = upstream_ctx_new(&t->upstream, verify, why2, sizeof(why2));

				upctx.stamp[c->target_idx] = stamp;
				if (fresh) {
					SSL_CTX_free(*slot);   /* sessions' SSLs keep their own reference */
					*slot = fresh;
					ag_log(LOG_LVL_INFO, "postgres: target '%s': its TLS files changed; loaded again",
					       t->name);
				} else {
					ag_log(LOG_LVL_WARN, "postgres: target '%s': its TLS files changed and cannot be "
					       "loaded (%s); the previous ones stay in use", t->name, why2);
				}
			}
		}
		ctx = *slot;
		if (ctx && SSL_CTX_up_ref(ctx) != 1) {
			snprintf(why, whylen, "TLS context");
			ctx = NULL;
		}
	}
	pthread_mutex_unlock(&upctx_lock);
	return ctx;
}

static SSL *upstream_ssl(struct conn *c, char *why, size_t whylen)
{
	const struct policy_target *t = target(c);
	const struct policy_upstream *u = &t->upstream;
	/* the name is checked under verify-full only; require with a ca_file
	 * checks the chain (up_tls_verified), as libpq's verify-ca does */
	bool verify = policy_tls_check(u) == POLICY_TLS_FULL;
	SSL_CTX *ctx = upstream_ctx(c, tls_checks_chain(c), why, whylen);
	SSL *ssl = NULL;
	char host[256];
	uint8_t bin[16];

	if (!ctx)
		return NULL;
	ssl = SSL_new(ctx);
	SSL_CTX_free(ctx);   /* ours; ssl holds its own reference */
	if (!ssl) {
		snprintf(why, whylen, "TLS session");
		return NULL;
	}
	/* the name to verify: server_name, else the target's host (also when
	 * upstream.address dials an IP for it: the certificate names the
	 * host, as README says and the http module does), else the IP dialled */
	if (u->server_name)
		snprintf(host, sizeof(host), "%s", u->server_name);
	else if (u->has_address && u->address.kind == ADDR_HOST)
		snprintf(host, sizeof(host), "%s", u->address.host);
	else if (t->addr.kind == ADDR_HOST)
		snprintf(host, sizeof(host), "%s", t->addr.host);
	else
		addr_str(u->has_address ? u->address.addr : c->pair.orig_addr, host, sizeof(host));
	if (inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1) {
		if (verify && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1)
			goto bad_name;
	} else {
		SSL_set_tlsext_host_name(ssl, host);
		/* RFC 9525: the name from a DNS SAN only (never the subject's
		 * CN, which OpenSSL falls back to when there is none) and a
		 * wildcard only as a whole left label (not f*.example.com) */
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS | X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
		if (verify && SSL_set1_host(ssl, host) != 1)
			goto bad_name;
	}
	return ssl;
bad_name:
	snprintf(why, whylen, "cannot check the server name '%s'", host);
	SSL_free(ssl);
	return NULL;
}

static int send_startup(struct conn *c)
{
	struct pg_sess *s = S(c);

	if (s->is_cancel) {
		struct cancel_ent now;

		/* The key was looked up when the request came; the session may
		 * have ended since (its server session kept for the agent's next
		 * connection, whose query this would cancel): still issued? */
		if (!cancel_find(s->cancel.pid, s->cancel.key, &now) || now.up_pid != s->cancel.up_pid ||
		    now.up_key != s->cancel.up_key) {
			audit_conn(c, false, "cancel request dropped: the session ended before it could be sent");
			s->phase = PH_DONE;
			conn_finish(c);
			return 0;
		}
		pg_out_cancel(&s->out, s->cancel.up_pid, s->cancel.up_key);
		send_out(c, SIDE_UP);
		conn_shutdown(c, SIDE_UP);
		s->phase = PH_DONE;
		conn_finish(c);
		return 0;
	}
	s->phase = PH_UP_AUTH;
	return conn_send(c, SIDE_UP, s->startup, s->startup_len);
}

static int build_startup(struct conn *c)
{
	struct pg_sess *s = S(c);
	const struct policy_upstream *u = &target(c)->upstream;
	const char *names[16], *values[16];
	char st[24], idle[24];
	int n = 0;

#define P(k, v) do { names[n] = (k); values[n] = (v); n++; } while (0)
	P("user", u->user);
	P("database", pinned_db(c));
	P("client_encoding", "UTF8");
	P("standard_conforming_strings", "on");
	P("search_path", search_path(c));
	if (u->statement_timeout_ms) {
		snprintf(st, sizeof(st), "%u", u->statement_timeout_ms);
		P("statement_timeout", st);
	}
	if (u->idle_in_transaction_timeout_ms) {
		snprintf(idle, sizeof(idle), "%u", u->idle_in_transaction_timeout_ms);
		P("idle_in_transaction_session_timeout", idle);
	}
	if (s->appname[0])
		P("application_name", s->appname);
	if (s->datestyle[0])
		P("DateStyle", s->datestyle);
	if (s->timezone[0])
		P("TimeZone", s->timezone);
	if (s->extra_float[0])
		P("extra_float_digits", s->extra_float);
	if (s->intervalstyle[0])
		P("IntervalStyle", s->intervalstyle);
#undef P
	pg_out_startup(&s->out, names, values, n);
	free(s->startup);
	s->startup = NULL;
	if (s->out.overflow || !(s->startup = malloc(s->out.len))) {
		pg_out_reset(&s->out);
		return -ENOMEM;
	}
	memcpy(s->startup, s->out.buf, s->out.len);
	s->startup_len = (uint32_t)s->out.len;
	pg_out_reset(&s->out);
	return 0;
}

/* The target's password (secret_read: from a path only root can change).
 * On failure c->why says why, without the file's content. */
static int read_password(struct conn *c)
{
	struct pg_sess *s = S(c);
	const char *f = target(c)->upstream.password_file;
	size_t len = 0;
	char why[300];

	if (!f)
		return 0;
	s->password = secret_read(f, 4096, &len, NULL, why, sizeof(why));
	if (!s->password) {
		int err = errno ? errno : EIO;

		snprintf(c->why, sizeof(c->why), "cannot read the target's password_file: %s", why);
		return -err;
	}
	return 0;
}

static void wipe_password(struct pg_sess *s)
{
	if (s->password) {
		OPENSSL_cleanse(s->password, strlen(s->password));
		free(s->password);
		s->password = NULL;
	}
	pg_scram_clear(&s->scram);
}

/* ---- upstream session reuse ---------------------------------------------------------- */

/*
 * A session the agent ends with Terminate while idle ('I', nothing in
 * flight) is reset with DISCARD ALL (temporary tables, prepared
 * statements, cursors, LISTEN, advisory locks, every SET: back to the
 * startup packet's values) and kept in the upstream pool (upool.h) for the
 * same agent's next connection to the same target asking for the same
 * StartupMessage. Delegated sessions (a user's token) are never kept. The
 * next agent sees what a new session would show: AuthenticationOk, the
 * server's ParameterStatus, a new key of ours, and the masked-column
 * catalog is read again before its first ReadyForQuery.
 */
#define PG_PARAMS_MAX 8192
#define PG_POOL_RESET_MS 5000   /* for DISCARD ALL's answer */

/* What a kept session carries besides its socket. */
struct pg_kept {
	uint8_t *params;        /* the server's ParameterStatus messages, in order */
	uint32_t params_len;
	uint32_t up_pid, up_key;
};

static void kept_free(void *p)
{
	struct pg_kept *k = p;

	free(k->params);
	free(k);
}

static const uint8_t pg_terminate[5] = { 'X', 0, 0, 0, 4 };
static const struct upool_ops pg_pool_ops = {
	.goodbye = pg_terminate, .goodbye_len = sizeof(pg_terminate), .data_free = kept_free,
};

/* The pool key: agent, target and policy, the address dialled and the
 * StartupMessage (equal bytes: equal session settings). In buf, which
 * must outlive the key. */
static bool pool_key(struct conn *c, struct upool_key *k, uint8_t *buf, size_t cap)
{
	struct pg_sess *s = S(c);
	const char *desc = conn_upstream_desc(c);
	size_t dl = strlen(desc) + 1;

	if (!s->startup || dl + s->startup_len > cap)
		return false;
	memcpy(buf, desc, dl);
	memcpy(buf + dl, s->startup, s->startup_len);
	*k = (struct upool_key){ .policy = c->policy, .agent_idx = c->agent_idx, .target_idx = c->target_idx,
				 .bytes = buf, .len = (uint32_t)(dl + s->startup_len) };
	return true;
}

/* Records a ParameterStatus message (whole, type byte first) as the
 * latest value of its parameter: the one recorded before goes. */
static int params_set(struct pg_sess *s, const uint8_t *msg, uint32_t len)
{
	const char *name = (const char *)msg + 5;
	size_t nl = strnlen(name, len - 5);
	uint32_t off = 0;
	uint8_t *p;

	while (off + 5 < s->params_len) {
		uint32_t ml = 1 + ((uint32_t)s->params[off + 1] << 24 | (uint32_t)s->params[off + 2] << 16 |
				   (uint32_t)s->params[off + 3] << 8 | s->params[off + 4]);

		if (ml > s->params_len - off)
			break;   /* cannot happen: only whole messages go in */
		if (ml > 5 + nl && !memcmp(s->params + off + 5, name, nl) && s->params[off + 5 + nl] == 0) {
			memmove(s->params + off, s->params + off + ml, s->params_len - off - ml);
			s->params_len -= ml;
			break;
		}
		off += ml;
	}
	if (s->params_len + len > PG_PARAMS_MAX) {
		s->no_pool = true;
		return 0;
	}
	if (!(p = realloc(s->params, s->params_len + len)))
		return -ENOMEM;
	memcpy(p + s->params_len, msg, len);
	s->params = p;
	s->params_len += len;
	return 0;
}

static bool poolable(struct conn *c)
{
	struct pg_sess *s = S(c);

	return s->startup && !s->no_pool && !s->has_deleg && !s->is_cancel && s->tx == 'I' && !s->qlen &&
	       !s->skip_to_sync && !s->unsynced && !s->up_pass && !s->copy_wait && !s->copy_in &&
	       !conn_in_eof(c, SIDE_UP);
}

/* The reset session goes to the pool. */
static int pool_put(struct conn *c)
{
	struct pg_sess *s = S(c);
	struct upool_leg leg = { .fd = -1 };
	struct upool_key k;
	struct pg_kept *kd;
	uint8_t kb[2048];

	if (!pool_key(c, &k, kb, sizeof(kb)) || !(kd = calloc(1, sizeof(*kd))))
		return -ENOMEM;
	if (conn_take_upstream(c, &leg.fd, &leg.ssl, &leg.born_ms)) {
		free(kd);
		return -EBUSY;
	}
	*kd = (struct pg_kept){ .params = s->params, .params_len = s->params_len, .up_pid = s->up_pid,
				.up_key = s->up_key };
	s->params = NULL;
	s->params_len = 0;
	snprintf(leg.desc, sizeof(leg.desc), "%s", c->upstream_desc);
	leg.data = kd;
	upool_put(&k, c->agent_idx >= 0 ? c->policy->agents[c->agent_idx].max_connections : 1, &pg_pool_ops, &leg);
	return 0;
}

static int register_cancel(struct conn *c, uint32_t up_pid, uint32_t up_key);
static int after_params(struct conn *c);

/* A kept session for this connection, adopted and greeted as a new one:
 * 1 when adopted, 0 when none, -errno. */
static int pool_take(struct conn *c)
{
	struct pg_sess *s = S(c);
	struct upool_leg leg;
	struct upool_key k;
	struct pg_kept *kd;
	uint8_t kb[2048];
	int err;

	if (s->has_deleg || s->no_pool || !pool_key(c, &k, kb, sizeof(kb)))
		return 0;
	/* A kept TLS session made under a context since built again (its CA
	 * or client certificate rotated on disk) is not reused: the server
	 * was verified against what is no longer trusted. */
	SSL_CTX *ctx = NULL;

	if (strcmp(tls_mode(c), "disable") != 0) {
		char why[300];

		if (!(ctx = upstream_ctx(c, tls_checks_chain(c), why, sizeof(why))))
			return 0;   /* dialling says why */
	}
	while (upool_take(&k, &leg)) {
		if ((ctx && (!leg.ssl || SSL_get_SSL_CTX(leg.ssl) != ctx)) ||
		    conn_adopt_upstream(c, leg.fd, leg.ssl, leg.desc, leg.born_ms)) {
			upool_release(&pg_pool_ops, &leg);
			continue;
		}
		SSL_CTX_free(ctx);
		ctx = NULL;
		kd = leg.data;
		free(s->params);
		s->params = kd->params;
		s->params_len = kd->params_len;
		kd->params = NULL;
		s->reused = true;
		log_debug("postgres: agent '%s' reuses an idle session of target '%s'",
			  c->policy->agents[c->agent_idx].name, target(c)->name);
		/* what a new session shows: AuthenticationOk, ParameterStatus,
		 * our key, then ReadyForQuery once the catalog is read */
		s->phase = PH_UP_PARAMS;
		if (s->negotiate)
			pg_out_negotiate(&s->out, s->negotiate_opts, s->nnegotiate);
		pg_out_auth_ok(&s->out);
		pg_out_bytes(&s->out, s->params, s->params_len);
		err = send_out(c, SIDE_AGENT);
		if (!err && (kd->up_pid || kd->up_key))   /* a server that sent no key: none */
			err = register_cancel(c, kd->up_pid, kd->up_key);
		kept_free(kd);
		if (err)
			return err;
		return (err = after_params(c)) ? err : 1;
	}
	SSL_CTX_free(ctx);
	return 0;
}

/* The StartupMessage for upstream, built once per session into s->startup. */
static int build_startup(struct conn *c);

static int start_upstream(struct conn *c)
{
	struct pg_sess *s = S(c);
	const struct policy_upstream *u = &target(c)->upstream;
	int err;

	if (!u->user) {
		audit_refuse(c, "the target names no upstream user");
		return fatal(c, "28000", "agentgate: target \"%s\" has no upstream user", target(c)->name);
	}
	if ((err = build_startup(c)))
		return err;
	if ((err = pool_take(c))) {
		if (err < 0)
			return err;
		/* what the agent pipelined after its startup goes on now */
		return s->phase == PH_READY ? process_agent(c) : 0;
	}
	err = read_password(c);
	if (err) {
		ag_log(LOG_LVL_WARN, "postgres: target '%s': %s", target(c)->name, c->why);
		audit_refuse(c, c->why);
		return fatal(c, "28000", "agentgate: cannot read the password file of target \"%s\"",
			     target(c)->name);
	}
	s->phase = PH_UP_CONNECT;
	return conn_connect_upstream(c);
}

static void pg_upstream_fail(struct conn *c, int err)
{
	struct pg_sess *s = S(c);

	if (!s || s->phase == PH_DONE)
		return;
	if (s->is_cancel) {
		s->phase = PH_DONE;
		conn_finish(c);
		return;
	}
	audit_refuse(c, "upstream unreachable");
	fatal(c, "08006", "agentgate: upstream %s of target \"%s\" is unreachable: %s", c->upstream_desc,
	      target(c)->name, strerror(-err));
}

/* From the upstream's connect to the agent's first ReadyForQuery (TLS,
 * authentication, our catalog query), the server is on a clock: one that
 * never answers would otherwise hold the connection, the agent's
 * limits.connections slot and a backend after the agent gave up. */
static void start_clock(struct conn *c)
{
	c->deadline_ms = now_ns_mono() / 1000000ull + PG_START_MS;
	c->deadline_why = "the server did not complete the session's start in time";
}

static int up_connected(struct conn *c)
{
	struct pg_sess *s = S(c);

	start_clock(c);

	if (strcmp(tls_mode(c), "disable") == 0)
		return send_startup(c);
	pg_out_ssl_request(&s->out);
	s->phase = PH_UP_SSL;
	return send_out(c, SIDE_UP);
}

static int up_ssl_answer(struct conn *c)
{
	struct pg_sess *s = S(c);
	const uint8_t *in;
	uint32_t len;
	char why[256];
	SSL *ssl;

	in = conn_in(c, SIDE_UP, &len);
	if (!len)
		return conn_in_eof(c, SIDE_UP) ? fatal(c, "08006", "agentgate: upstream closed during TLS negotiation") : 0;
	if (in[0] != 'S') {
		/* 'N' (or an error): TLS is required, so nothing else is sent */
		conn_in_consume(c, SIDE_UP, len);
		if (s->is_cancel) {
			s->phase = PH_DONE;
			conn_finish(c);
			return 0;
		}
		audit_refuse(c, "upstream refused TLS, which the target requires");
		return fatal(c, "08001", "agentgate: upstream of target \"%s\" does not accept TLS (tls: %s)",
			     target(c)->name, tls_mode(c));
	}
	if (len > 1) {
		/* bytes after 'S' before the handshake: CVE-2021-23222 */
		conn_in_consume(c, SIDE_UP, len);
		audit_refuse(c, "upstream sent bytes after 'S' before the TLS handshake");
		return fatal(c, "08P01", "agentgate: upstream sent unencrypted data after agreeing to TLS");
	}
	conn_in_consume(c, SIDE_UP, 1);
	ssl = upstream_ssl(c, why, sizeof(why));
	if (!ssl) {
		audit_refuse(c, why);
		return fatal(c, "08001", "agentgate: upstream TLS for target \"%s\": %s", target(c)->name, why);
	}
	s->phase = PH_UP_TLS;
	return conn_tls(c, SIDE_UP, ssl, false);
}

/* PasswordMessage (a string: nul), SASLInitialResponse (mech given) or
 * SASLResponse (neither: the data is the rest of the message). */
/* A PasswordMessage or SASL message, built here rather than in the
 * session's output buffer (which grows by realloc and is reused): the one
 * copy of the secret outside the caller's is conn.c's, wiped once sent. */
static int send_password_msg(struct conn *c, const void *data, size_t len, const char *mech, bool nul)
{
	uint8_t m[4096 + 64];
	size_t ml = mech ? strlen(mech) + 1 : 0, n = 5;
	int err;

	if (len > 4096 || ml > 32)
		return -ENOBUFS;   /* a password file holds at most 4096 bytes */
	m[0] = 'p';
	if (mech) {
		memcpy(m + n, mech, ml);
		n += ml;
		m[n++] = (uint8_t)(len >> 24);
		m[n++] = (uint8_t)(len >> 16);
		m[n++] = (uint8_t)(len >> 8);
		m[n++] = (uint8_t)len;
	}
	memcpy(m + n, data, len);
	n += len;
	if (nul)
		m[n++] = 0;
	m[1] = (uint8_t)((n - 1) >> 24);
	m[2] = (uint8_t)((n - 1) >> 16);
	m[3] = (uint8_t)((n - 1) >> 8);
	m[4] = (uint8_t)(n - 1);
	err = conn_send_secret(c, SIDE_UP, m, n);
	OPENSSL_cleanse(m, n);
	return err;
}

static int auth_fail(struct conn *c, const char *what)
{
	wipe_password(S(c));
	audit_refuse(c, what);
	return fatal(c, "28000", "agentgate: upstream authentication for target \"%s\" failed: %s",
		     target(c)->name, what);
}

static int up_auth(struct conn *c, const struct pg_msg *m)
{
	struct pg_sess *s = S(c);
	const uint8_t *d;
	uint32_t dl;
	int32_t code;
	char buf[600];
	size_t bl;
	int err;

	if (pg_parse_auth(m, &code, &d, &dl))
		return auth_fail(c, "malformed authentication request");
	switch (code) {
	case 0:
		wipe_password(s);
		if (s->scram.state != 0 && s->scram.state != 3)
			return auth_fail(c, "the server skipped the SCRAM server signature");
		s->phase = PH_UP_PARAMS;
		if (s->negotiate) {
			pg_out_negotiate(&s->out, s->negotiate_opts, s->nnegotiate);
		}
		pg_out_auth_ok(&s->out);
		return send_out(c, SIDE_AGENT);
	case 3: {
		/* The password itself, to a server not verified: under tls
		 * disable or require, whoever answers the dial (an impostor, a
		 * relay in the path) asks and gets it (review, stop 28). Only
		 * to a server whose certificate and name were checked: require
		 * with a ca_file checks the chain alone, so any server the CA
		 * certified could ask for it; not enough. */
		const char *mode = target(c)->upstream.tls;

		if (!s->password)
			return auth_fail(c, "the server asks for a password and the target has no password_file");
		if (!mode || strcmp(mode, "verify-full") != 0)
			return auth_fail(c, "the server asks for the password in clear, which is sent only to a "
					 "server verified by tls: verify-full");
		return send_password_msg(c, s->password, strlen(s->password), NULL, true);
	}
	case 5: {
		char md5[36];

		if (dl != 4)
			return auth_fail(c, "malformed md5 request");
		if (!s->password)
			return auth_fail(c, "the server asks for a password and the target has no password_file");
		if (pg_md5_password(target(c)->upstream.user, s->password, d, md5))
			return auth_fail(c, "md5");
		err = send_password_msg(c, md5, 35, NULL, true);
		OPENSSL_cleanse(md5, sizeof(md5));
		return err;
	}
	case 10: {
		bool scram = false;

		/* a list of mechanism names, each NUL-terminated, then a NUL */
		for (uint32_t i = 0; i < dl && d[i];) {
			const uint8_t *nul = memchr(d + i, 0, dl - i);

			if (!nul)
				break;
			if (strcmp((const char *)d + i, "SCRAM-SHA-256") == 0)
				scram = true;
			i = (uint32_t)(nul - d) + 1;
		}
		if (!scram)
			return auth_fail(c, "the server offers no SCRAM-SHA-256");
		if (!s->password)
			return auth_fail(c, "the server asks for a password and the target has no password_file");
		if (pg_scram_first(&s->scram, buf, sizeof(buf), &bl))
			return auth_fail(c, "SCRAM");
		return send_password_msg(c, buf, bl, "SCRAM-SHA-256", false);
	}
	case 11:
		err = pg_scram_final(&s->scram, s->password, d, dl, buf, sizeof(buf), &bl);
		if (err == -EINVAL)
			return auth_fail(c, "the password must be printable ASCII");
		if (err)
			return auth_fail(c, err == -ERANGE ? "SCRAM iteration count out of bounds"
							   : "bad SCRAM server-first-message");
		err = send_password_msg(c, buf, bl, NULL, false);
		OPENSSL_cleanse(buf, sizeof(buf));
		return err;
	case 12:
		if (pg_scram_verify(&s->scram, d, dl))
			return auth_fail(c, "the server's SCRAM signature is wrong (not the real server?)");
		return 0;
	default:
		snprintf(buf, sizeof(buf), "unsupported authentication method %d", code);
		return auth_fail(c, buf);
	}
}

/* Ends the session if the server reports a setting that would let SQL parse
 * differently from how we judged it (notes D1, D2). */
static bool param_ok(const char *name, const char *value)
{
	if (!strcmp(name, "standard_conforming_strings"))
		return !strcmp(value, "on");
	if (!strcmp(name, "client_encoding"))
		return !strcmp(value, "UTF8");
	return true;
}

/* ---- masked-column catalog lookup ------------------------------------------------------- */

/* Appends s as a SQL string literal (standard_conforming_strings is on). */
static void lit(char *buf, size_t cap, size_t *n, const char *s)
{
	*n += snprintf(buf + *n, *n < cap ? cap - *n : 0, "'");
	for (; *s && *n + 3 < cap; s++) {
		if (*s == '\'')
			buf[(*n)++] = '\'';
		buf[(*n)++] = *s;
	}
	*n += snprintf(buf + *n, *n < cap ? cap - *n : 0, "'");
}

/*
 * The catalog queries. The first, at every session's start: every column
 * of every table a mask column names, as (oid, attnum, its
 * "schema.table.column" twice, 1 when some relation shows the table's rows
 * under its own OID, else 0). The second, only then (it takes a few ms to
 * plan, and most databases have no such relation): every column of those
 * relations, which is what RowDescription reports for them, as (oid,
 * attnum, its own name, the name of the column of ours it shows, 0):
 * inheritance children and partitions (their column of the same name),
 * inheritance parents and partitioned tables above (theirs: a SELECT of
 * the parent returns the child's rows; review, stop 39; from there their
 * other children's columns of that name too, which show no masked value
 * and are masked all the same), and
 * views and materialized views, recursively: every column of a view that
 * reads a column of ours anywhere (select list, WHERE, joins), paired with
 * each such column, since pg_depend does not say which output column comes
 * from which; a whole-row use (attnum 0) pairs it with all of ours. A
 * whole-row Var records no dependency of its own, and once the view names
 * any column of the table, PostgreSQL keeps only that column's (review,
 * stop 34: SELECT c.id, c::text FROM customers c showed every value): so a
 * view whose stored rule holds a whole-row Var (":varattno 0" in its node
 * tree, on any table) pairs every column with all of ours too. Both
 * ordered by oid and attnum. False when no table is named.
 */
#define CAT_SHOWN_BY \
	"EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhparent = c.oid OR i.inhrelid = c.oid) OR " \
	"EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.refclassid = " \
	"'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = c.oid AND d.classid = " \
	"'pg_catalog.pg_rewrite'::pg_catalog.regclass)"
#define CAT_NAME "n.nspname || '.' || c.relname || '.' || a.attname"
#define CAT_FROM \
	" FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid " \
	"JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace " \
	"WHERE a.attnum > 0 AND NOT a.attisdropped AND (n.nspname, c.relname) IN ("
#define CAT_DEPENDENTS \
	", rel(oid, att, bname) AS (SELECT oid, att, bname FROM base UNION " \
	"SELECT e.coid, e.catt, r.bname FROM rel r CROSS JOIN LATERAL (" \
	"SELECT i.inhrelid AS coid, ca.attnum AS catt FROM pg_catalog.pg_inherits i " \
	"JOIN pg_catalog.pg_attribute pa ON pa.attrelid = r.oid AND pa.attnum = r.att " \
	"JOIN pg_catalog.pg_attribute ca ON ca.attrelid = i.inhrelid AND ca.attname = pa.attname " \
	"WHERE i.inhparent = r.oid UNION ALL " \
	"SELECT i.inhparent, pa.attnum FROM pg_catalog.pg_inherits i " \
	"JOIN pg_catalog.pg_attribute ca ON ca.attrelid = r.oid AND ca.attnum = r.att " \
	"JOIN pg_catalog.pg_attribute pa ON pa.attrelid = i.inhparent AND pa.attname = ca.attname " \
	"WHERE i.inhrelid = r.oid UNION ALL " \
	"SELECT w.ev_class, va.attnum FROM pg_catalog.pg_depend d " \
	"JOIN pg_catalog.pg_rewrite w ON w.oid = d.objid " \
	"JOIN pg_catalog.pg_attribute va ON va.attrelid = w.ev_class AND va.attnum > 0 " \
	"AND NOT va.attisdropped " \
	"WHERE d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = r.oid " \
	"AND (d.refobjsubid IN (0, r.att) OR w.ev_action::pg_catalog.text LIKE '% :varattno 0 %') " \
	"AND d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass " \
	"AND w.ev_class <> r.oid) e) " \
	"SELECT r.oid, r.att, n.nspname || '.' || c.relname || '.' || a.attname, r.bname, 0 FROM rel r " \
	"JOIN pg_catalog.pg_class c ON c.oid = r.oid " \
	"JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace " \
	"JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid AND a.attnum = r.att " \
	"WHERE r.oid NOT IN (SELECT oid FROM base) ORDER BY 1, 2"

/* Room for catalog_query()'s text: its fixed parts and every mask entry
 * quoted (each quote doubled at worst). A long mask list made the text
 * overflow a fixed buffer, and the session then ran without the lineage:
 * every masked column in clear (review, stop 34). */
static size_t catalog_cap(struct conn *c)
{
	const struct policy_rule *rules[2 * ENFORCER_MAX_RULES];
	size_t nr = mask_rules_of(c, c->policy, rules), cap = 4096 + sizeof(CAT_DEPENDENTS);

	for (size_t r = 0; r < nr; r++)
		for (size_t i = 0; i < rules[r]->mask.columns.n; i++)
			cap += 2 * strlen(rules[r]->mask.columns.v[i]) + 16;
	return cap;
}

static bool catalog_query(struct conn *c, char *sql, size_t cap, bool dependents)
{
	const struct policy_rule *rules[2 * ENFORCER_MAX_RULES];
	size_t nr = mask_rules_of(c, c->policy, rules), n;
	int ntab = 0;

	n = (size_t)snprintf(sql, cap, "%s", dependents ?
			     "WITH RECURSIVE base(oid, att, bname) AS (SELECT c.oid, a.attnum, " CAT_NAME CAT_FROM :
			     "SELECT c.oid, a.attnum, " CAT_NAME ", " CAT_NAME ", (" CAT_SHOWN_BY ")::int" CAT_FROM);
	for (size_t r = 0; r < nr; r++) {
		const struct policy_strv *cols = &rules[r]->mask.columns;

		for (size_t i = 0; i < cols->n; i++) {
			char schema[128], table[128];
			const char *d1 = strchr(cols->v[i], '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;

			if (!d2 || d1 - cols->v[i] >= (long)sizeof(schema) || d2 - d1 - 1 >= (long)sizeof(table))
				continue;
			memcpy(schema, cols->v[i], (size_t)(d1 - cols->v[i]));
			schema[d1 - cols->v[i]] = '\0';
			memcpy(table, d1 + 1, (size_t)(d2 - d1 - 1));
			table[d2 - d1 - 1] = '\0';
			n += (size_t)snprintf(sql + n, n < cap ? cap - n : 0, "%s(", ntab ? "," : "");
			lit(sql, cap, &n, schema);
			n += (size_t)snprintf(sql + n, n < cap ? cap - n : 0, ",");
			lit(sql, cap, &n, table);
			n += (size_t)snprintf(sql + n, n < cap ? cap - n : 0, ")");
			ntab++;
		}
	}
	if (dependents)
		n += (size_t)snprintf(sql + n, n < cap ? cap - n : 0, "%s", "))" CAT_DEPENDENTS);
	else
		n += (size_t)snprintf(sql + n, n < cap ? cap - n : 0, "%s", ") ORDER BY 1, 2");
	return ntab > 0 && n < cap;
}

/* Is "schema.table.column" one the policy masks by name? */
static bool base_named(struct pg_sess *s, const uint8_t *v, int32_t vl)
{
	char nm[PG_COLNAME_MAX], *d1, *d2;

	memcpy(nm, v, (size_t)vl);
	nm[vl] = '\0';
	if (!(d1 = strchr(nm, '.')) || !(d2 = strchr(d1 + 1, '.')))
		return false;
	*d1 = *d2 = '\0';
	return mask_column_named(s->mask, nm, d1 + 1, d2 + 1);
}

static int catalog_row(struct pg_sess *s, const struct pg_msg *m)
{
	struct pg_datarow d;
	const uint8_t *v[5];
	int32_t vl[5];
	char oid[16], att[8];
	uint32_t o;
	int16_t a;

	if (pg_datarow_begin(m, &d) || d.ncols != 5)
		return -EBADMSG;
	for (int i = 0; i < 5; i++)
		if (pg_datarow_next(&d, &v[i], &vl[i]) != 1 || vl[i] <= 0 || vl[i] >= PG_COLNAME_MAX)
			return -EBADMSG;
	if (vl[4] != 1 || (v[4][0] != '0' && v[4][0] != '1'))
		return -EBADMSG;
	if (v[4][0] == '1')
		s->cat_shown = true;
	if (!s->cat_dependents_sent) {   /* a masked table's own column: which entries name it */
		size_t ne;
		const char *const *e = mask_column_list(s->mask, &ne);

		for (size_t i = 0; i < ne && s->col_found; i++)
			if (strlen(e[i]) == (size_t)vl[2] && memcmp(e[i], v[2], (size_t)vl[2]) == 0)
				s->col_found[i] = true;
	}
	memcpy(oid, v[0], (size_t)(vl[0] < 15 ? vl[0] : 15));
	oid[vl[0] < 15 ? vl[0] : 15] = '\0';
	memcpy(att, v[1], (size_t)(vl[1] < 7 ? vl[1] : 7));
	att[vl[1] < 7 ? vl[1] : 7] = '\0';
	o = (uint32_t)strtoul(oid, NULL, 10);
	a = (int16_t)strtol(att, NULL, 10);
	/* rows come ordered: another column of ours this one shows */
	if (s->ncols && s->cols[s->ncols - 1].oid == o && s->cols[s->ncols - 1].att == a) {
		s->cols[s->ncols - 1].named |= base_named(s, v[3], vl[3]);
		return 0;
	}
	if (s->ncols == s->capcols) {
		int nc = s->capcols ? s->capcols * 2 : 16;
		void *p = nc <= 65536 ? realloc(s->cols, (size_t)nc * sizeof(*s->cols)) : NULL;

		if (!p)
			return -ENOMEM;
		s->cols = p;
		s->capcols = nc;
	}
	s->cols[s->ncols].oid = o;
	s->cols[s->ncols].att = a;
	memcpy(s->cols[s->ncols].name, v[2], (size_t)vl[2]);
	s->cols[s->ncols].name[vl[2]] = '\0';
	/* named when the policy names the column of ours it shows */
	s->cols[s->ncols].named = base_named(s, v[3], vl[3]);
	s->ncols++;
	return 0;
}

/*
 * The pinned schema's functions and operators (pgc_catalog says why they
 * matter). Every function, procedure and aggregate there, marked 'r' when
 * one argument can call it (t.f may be f(t)); every operator, except those
 * an extension installed (PostGIS puts its = and && in public: they are
 * C functions a superuser installed, and every comparison would otherwise
 * need a rule). Functions of extensions are kept: an extension's function
 * reached by a name that looks like a column or a built-in is still one
 * no rule named. And every type but enums and extensions' ('t'): a cast to
 * a domain runs its CHECK, to an array, range or row type of one runs it
 * for each element, and a type may have cast functions; telling those
 * apart from harmless ones would take a walk of the type graph, and
 * casts to the database's own types are rare in what agents send.
 */
static bool names_query(struct conn *c, char *sql, size_t cap)
{
	const char *sp = search_path(c);
	size_t n;

	n = (size_t)snprintf(sql, cap,
		"SELECT CASE WHEN p.pronargs >= 1 AND p.pronargs - p.pronargdefaults <= 1 "
		"THEN 'r' ELSE 'f' END, p.proname FROM pg_catalog.pg_proc p "
		"JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = ");
	lit(sql, cap, &n, sp);
	n += (size_t)snprintf(sql + n, n < cap ? cap - n : 0,
		" UNION ALL SELECT 'o', o.oprname FROM pg_catalog.pg_operator o "
		"JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace WHERE n.nspname = ");
	lit(sql, cap, &n, sp);
	n += (size_t)snprintf(sql + n, n < cap ? cap - n : 0,
		" AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = "
		"'pg_catalog.pg_operator'::pg_catalog.regclass AND d.objid = o.oid AND d.deptype = 'e')"
		" UNION ALL SELECT 't', t.typname FROM pg_catalog.pg_type t "
		"JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = ");
	lit(sql, cap, &n, sp);
	n += (size_t)snprintf(sql + n, n < cap ? cap - n : 0,
		" AND t.typtype <> 'e' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = "
		"'pg_catalog.pg_type'::pg_catalog.regclass AND d.objid = t.oid AND d.deptype = 'e')"
		" UNION ALL SELECT 'c', c.opcname FROM pg_catalog.pg_opclass c "
		"JOIN pg_catalog.pg_namespace n ON n.oid = c.opcnamespace WHERE n.nspname = ");
	lit(sql, cap, &n, sp);
	n += (size_t)snprintf(sql + n, n < cap ? cap - n : 0,
		" AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = "
		"'pg_catalog.pg_opclass'::pg_catalog.regclass AND d.objid = c.oid AND d.deptype = 'e')");
	return n < cap;
}

#define PG_DB_NAMES_MAX 65536   /* functions, operators and types in the pinned schema */

/* One (kind, name) row of names_query(). */
static int names_row(struct pg_sess *s, const struct pg_msg *m)
{
	struct pg_datarow d;
	const uint8_t *v[2];
	int32_t vl[2];

	if (pg_datarow_begin(m, &d) || d.ncols != 2)
		return -EBADMSG;
	for (int i = 0; i < 2; i++)
		if (pg_datarow_next(&d, &v[i], &vl[i]) != 1 || vl[i] <= 0 || vl[i] >= 64)
			return -EBADMSG;
	if (vl[0] != 1 || !memchr("froct", v[0][0], 5) ||
	    memchr(v[1], '\0', (size_t)vl[1]))
		return -EBADMSG;
	if (s->nnames == s->capnames) {
		uint32_t nc = s->capnames ? s->capnames * 2 : 64;
		char **nn;
		char *nk;

		if (nc > PG_DB_NAMES_MAX)
			return -E2BIG;
		if (!(nn = realloc(s->names, nc * sizeof(*nn))))
			return -ENOMEM;
		s->names = nn;
		if (!(nk = realloc(s->kinds, nc)))
			return -ENOMEM;
		s->kinds = nk;
		s->capnames = nc;
	}
	if (!(s->names[s->nnames] = strndup((const char *)v[1], (size_t)vl[1])))
		return -ENOMEM;
	s->kinds[s->nnames++] = (char)v[0][0];
	return 0;
}

static int cmp_cstr(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* One (schema, name, kind) row of PG_RELS_Q, as "schema.name", into rels_new. */
static int rels_row(struct pg_sess *s, const struct pg_msg *m)
{
	struct pg_datarow d;
	const uint8_t *v[3];
	int32_t vl[3];
	char *nm;

	if (pg_datarow_begin(m, &d) || d.ncols != 3)
		return -EBADMSG;
	for (int i = 0; i < 3; i++)
		if (pg_datarow_next(&d, &v[i], &vl[i]) != 1 || vl[i] <= 0 || vl[i] >= 64 ||
		    memchr(v[i], '\0', (size_t)vl[i]))
			return -EBADMSG;
	if (s->nrels_new == s->caprels_new) {
		uint32_t nc = s->caprels_new ? s->caprels_new * 2 : 256;
		char **nr;

		if (nc > PG_DB_RELS_MAX)
			return -E2BIG;
		if (!(nr = realloc(s->rels_new, nc * sizeof(*nr))))
			return -ENOMEM;
		s->rels_new = nr;
		s->caprels_new = nc;
	}
	if (!(nm = malloc((size_t)vl[0] + 1 + (size_t)vl[1] + 1)))
		return -ENOMEM;
	memcpy(nm, v[0], (size_t)vl[0]);
	nm[vl[0]] = '.';
	memcpy(nm + vl[0] + 1, v[1], (size_t)vl[1]);
	nm[vl[0] + 1 + vl[1]] = '\0';
	s->rels_new[s->nrels_new++] = nm;
	return 0;
}

/* n strings and their array: the names (names_row()), the relations (rels_row()) */
static void strv_free(char **v, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* The relations just read become the session's: sorted, for unknown_rel(). */
static void rels_commit(struct pg_sess *s)
{
	strv_free(s->rels, s->nrels);
	s->rels = s->rels_new;
	s->nrels = s->nrels_new;
	if (s->nrels)
		qsort(s->rels, s->nrels, sizeof(*s->rels), cmp_cstr);
	s->rels_new = NULL;
	s->nrels_new = s->caprels_new = 0;
	s->rels_ready = true;
}

static void rels_drop_new(struct pg_sess *s)
{
	strv_free(s->rels_new, s->nrels_new);
	s->rels_new = NULL;
	s->nrels_new = s->caprels_new = 0;
}

static bool makes_relation(const char *tag)
{
	/* not create_index, _trigger, _rule, _policy, _statistics: their
	 * first relation is one they work on (review) */
	static const char *const tags[] = { "create_table", "create_table_as", "create_view",
					    "create_materialized_view", "create_foreign_table",
					    "create_sequence" };

	for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++)
		if (strcmp(tag, tags[i]) == 0)
			return true;
	return false;
}

static bool rel_known(const struct pg_sess *s, const char *name)
{
	return s->nrels && bsearch(&name, s->rels, s->nrels, sizeof(*s->rels), cmp_cstr);
}

/* A statement whose relations are names only: a DROP (IF EXISTS of one
 * that is not there, an index: PG_RELS_Q leaves indexes out), a REINDEX. */
static bool names_only(const char *tag)
{
	return strncmp(tag, "drop_", 5) == 0 || strncmp(tag, "reindex", 7) == 0;
}

/*
 * A relation the message names that was not in the database when the
 * lineage was read (rels), NULL when there is none. Masking knows the
 * relations that show a masked table's rows (views, children, partitions,
 * parents) only from that read, so one made since, past agentgate (a
 * DBA's psql), is unknown to it: a plain column of it is masked whole
 * (oid_high), but an expression, a WHERE or an ORDER BY over it carries no
 * relation the server could name, and came in clear (known limit, stop
 * 38). The relation a CREATE makes (its statement's first table,
 * makes_relation()) or a SELECT INTO fills does not count when no other
 * statement of the message names it (one before it would read a relation
 * of that name made past agentgate, one after it what CREATE ... IF NOT
 * EXISTS left there); nor do the names of a DROP or REINDEX
 * (names_only()), nor PostgreSQL's own schemas, which PG_RELS_Q leaves
 * out.
 */
static const char *unknown_rel(const struct pg_sess *s, const struct pgc_result *r)
{
	uint32_t created = 0, checked = 0, named_by[PGC_MAX_TABLES] = { 0 };

	if (!s->lineage_on || !s->rels_ready)
		return NULL;
	for (int k = 0; k < r->nstmts && k < PGC_MAX_STMTS; k++) {
		if (!names_only(r->stmts[k].tag))
			checked |= r->stmts[k].tables;
		for (int i = 0; i < r->ntables && i < PGC_MAX_TABLES; i++)
			if (r->stmts[k].tables >> i & 1)
				named_by[i]++;
	}
	for (int k = 0; k < r->nstmts && k < PGC_MAX_STMTS; k++) {
		int f = r->stmts[k].first_table - 1, t = r->stmts[k].into_table - 1;

		if (makes_relation(r->stmts[k].tag) && f >= 0 && f < r->ntables && named_by[f] == 1)
			created |= 1u << f;
		if (t >= 0 && t < r->ntables && named_by[t] == 1)
			created |= 1u << t;
	}
	for (int i = 0; i < r->ntables && i < PGC_MAX_TABLES; i++) {
		const char *t = r->tables[i];

		if ((created >> i & 1) || !(checked >> i & 1) || strncmp(t, "pg_catalog.", 11) == 0 ||
		    strncmp(t, "information_schema.", 19) == 0)
			continue;
		/* An unqualified name of one of the session's temporary tables
		 * is judged as the pinned schema's (PostgreSQL looks in the
		 * temporary schema first), and is not among those read: each
		 * statement over it reads the lineage again. Taking pg_temp.name
		 * for it was not safe: the temporary table may be gone when the
		 * statement runs (ROLLBACK, DROP, a procedure), and the name the
		 * database's relation (review, stop 39). */
		if (!rel_known(s, t))
			return t;
	}
	return NULL;
}

/* Sorted, duplicates dropped; returns the new count. */
static size_t sort_unique(const char **v, size_t n)
{
	size_t o = 0;

	qsort(v, n, sizeof(*v), cmp_cstr);
	for (size_t i = 0; i < n; i++)
		if (!o || strcmp(v[o - 1], v[i]) != 0)
			v[o++] = v[i];
	return o;
}

/* The rows read: five sorted lists (functions, row functions, operators,
 * types, operator classes) and their SHA-256. */
static int names_ready(struct pg_sess *s)
{
	enum { FUNCS, ROWS, OPS, TYPES, OPCLASSES, NLISTS };
	const char **v = calloc((size_t)s->nnames * NLISTS + 1, sizeof(*v)), **list[NLISTS];
	size_t n[NLISTS] = { 0 };
	EVP_MD_CTX *md;
	unsigned int hl = 0;
	bool ok;

	if (!v)
		return -ENOMEM;
	for (int l = 0; l < NLISTS; l++)
		list[l] = v + (size_t)l * s->nnames;
	for (uint32_t i = 0; i < s->nnames; i++) {
		int l = s->kinds[i] == 'o' ? OPS : s->kinds[i] == 't' ? TYPES :
			s->kinds[i] == 'c' ? OPCLASSES : FUNCS;

		list[l][n[l]++] = s->names[i];
		if (s->kinds[i] == 'r')
			list[ROWS][n[ROWS]++] = s->names[i];
	}
	for (int l = 0; l < NLISTS; l++)
		n[l] = sort_unique(list[l], n[l]);
	s->cat = (struct pgc_catalog){
		.funcs = list[FUNCS], .nfuncs = n[FUNCS], .row_funcs = list[ROWS], .nrow_funcs = n[ROWS],
		.ops = list[OPS], .nops = n[OPS], .types = list[TYPES], .ntypes = n[TYPES],
		.opclasses = list[OPCLASSES], .nopclasses = n[OPCLASSES],
	};
	free(s->cat_v);
	s->cat_v = v;
	if (!(md = EVP_MD_CTX_new()))
		return -ENOMEM;
	ok = EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
	for (int l = 0; l < NLISTS && ok; l++) {
		char tag = (char)('0' + l);

		ok = EVP_DigestUpdate(md, &tag, 1) == 1;
		for (size_t i = 0; i < n[l] && ok; i++)
			ok = EVP_DigestUpdate(md, list[l][i], strlen(list[l][i]) + 1) == 1;
	}
	ok = ok && EVP_DigestFinal_ex(md, s->cat.hash, &hl) == 1 && hl == sizeof(s->cat.hash);
	EVP_MD_CTX_free(md);
	if (!ok)
		return -EIO;
	s->cat_ready = true;
	return 0;
}

static int session_ready(struct conn *c, char status)
{
	struct pg_sess *s = S(c);
	const char *reason = c->would_deny ? c->deny_reason : NULL;
	char both[sizeof(c->deny_reason) + sizeof(s->tls_note) + 2];

	s->phase = PH_READY;
	s->tx = status;
	c->deadline_ms = 0;
	c->deadline_why = NULL;
	/* recorded from here (recording.h): the statements as forwarded and
	 * the answers as masked; never the startup and its credentials */
	c->rec_side[SIDE_AGENT] = c->rec_side[SIDE_UP] = true;
	pg_out_ready(&s->out, status);
	if (send_out(c, SIDE_AGENT))
		return -ENOBUFS;
	if (s->tls_note[0]) {   /* the session goes on in plain text: the event says why */
		snprintf(both, sizeof(both), "%s%s%s", reason ? reason : "", reason ? "; " : "", s->tls_note);
		reason = both;
	}
	audit_conn(c, true, reason);
	return 0;
}

/* A ParameterStatus from the server, in any phase: a setting that would let
 * SQL parse differently from how we judged it ends the session (param_ok());
 * any other is kept as the latest value of its name (replayed on reuse).
 * 1: pass it on; 0: the session was ended; -errno. */
static int param_seen(struct conn *c, const struct pg_msg *m)
{
	const char *n, *v;

	if (pg_parse_param_status(m, &n, &v))
		return -EBADMSG;
	if (!param_ok(n, v))
		return fatal(c, "08P01", "agentgate: the server reports %s = %s, which is not allowed", n, v);
	if (params_set(S(c), m->body - 5, m->len + 5))
		return -ENOMEM;
	return 1;
}

static int up_params(struct conn *c, const struct pg_msg *m)
{
	char st;
	int err;

	switch (m->type) {
	case 'S':
		if ((err = param_seen(c, m)) <= 0)
			return err;
		return conn_send(c, SIDE_AGENT, m->body - 5, m->len + 5);
	case 'K': {
		uint32_t pid, key;

		if (pg_parse_key(m, &pid, &key))
			return -EBADMSG;
		return register_cancel(c, pid, key);
	}
	case 'N':
		return conn_send(c, SIDE_AGENT, m->body - 5, m->len + 5);
	case 'E':
		return fatal(c, pg_fields_get(m, 'C') ? pg_fields_get(m, 'C') : "08006",
			     "agentgate: upstream error at session start: %s",
			     pg_fields_get(m, 'M') ? pg_fields_get(m, 'M') : "(no message)");
	case 'Z':
		if (pg_parse_ready(m, &st))   /* the catalog query's own ReadyForQuery is the agent's */
			return -EBADMSG;
		return after_params(c);
	default:
		return fatal(c, "08P01", "agentgate: unexpected message '%c' from the server at session start",
			     m->type);
	}
}

/* The server's BackendKeyData: the agent gets a key of ours for it. */
static int register_cancel(struct conn *c, uint32_t up_pid, uint32_t up_key)
{
	struct pg_sess *s = S(c);
	struct cancel_ent e = { .agent_idx = c->agent_idx, .target_idx = c->target_idx,
				.port = c->pair.orig_port, .up_pid = up_pid, .up_key = up_key };

	memcpy(e.addr, c->pair.orig_addr, 16);
	if (s->cancel_registered)
		return 0;
	s->up_pid = up_pid;
	s->up_key = up_key;
	if (cancel_add(&e, &s->our_pid, &s->our_key) == 0) {
		s->cancel_registered = true;
		pg_out_key(&s->out, s->our_pid, s->our_key);
		return send_out(c, SIDE_AGENT);
	}
	return 0;   /* no key: the agent cannot cancel, as with a server that sends none */
}

/* The session's parameters are in: the catalog (the lineage of masked
 * columns, the pinned schema's own names), then ready. */
static int after_params(struct conn *c)
{
	struct pg_sess *s = S(c);
	size_t n = 0, cap = catalog_cap(c) + 4096 + sizeof(PG_RELS_Q) + sizeof(PG_LISTEN_Q) + 1;   /* and names_query()'s */
	size_t head;
	char *sql = malloc(cap);

	if (!sql)
		return -ENOMEM;
	/* before the catalog is read: a change after this makes it stale */
	s->names_epoch = atomic_load(names_epoch_of(c));
	s->rel_epoch = atomic_load(rel_epoch_of(c));
	s->lineage_ms = now_ns_mono() / 1000000ull;
	s->lineage_on = false;
	s->oid_high = s->oid_high_pending = UINT32_MAX;

	/* the lineage query first, leaving room for names_query() (about 1 KiB
	 * and the schema's name three times) */
	s->cat_shown = s->cat_dependents_sent = false;
	if (!c->deadline_ms)
		start_clock(c);   /* a pooled session's catalog query */
	free(s->col_found);
	s->col_found = NULL;
	/* the highest OID first: a relation made after it is above it; then
	 * the relations, before the lineage: one made between the two reads
	 * is unknown (unknown_rel()), not known without its lineage */
	rels_drop_new(s);
	s->rels_ready = false;
	memcpy(sql, PG_OID_HIGH_Q ";", sizeof(PG_OID_HIGH_Q ";"));
	head = sizeof(PG_OID_HIGH_Q ";") - 1;
	if (s->mask_active) {
		memcpy(sql + head, PG_RELS_Q ";", sizeof(PG_RELS_Q ";"));
		head += sizeof(PG_RELS_Q ";") - 1;
	}
	if (s->mask_active && catalog_query(c, sql + head, cap - 4096 - head - 1, false)) {
		size_t ne;

		mask_column_list(s->mask, &ne);
		if (!(s->col_found = calloc(ne ? ne : 1, sizeof(*s->col_found)))) {
			free(sql);
			return -ENOMEM;
		}
		n = strlen(sql);
		sql[n++] = ';';
		s->lineage_on = true;
	} else if (s->mask_active && (mask_column_list(s->mask, &n), n)) {
		/* columns to mask and no lineage query: never run without it */
		free(sql);
		return fatal(c, "XX000", "agentgate: cannot build the catalog query for the masked columns");
	}
	if (!names_query(c, sql + n, cap - n - sizeof(PG_LISTEN_Q) - 1)) {
		free(sql);
		return fatal(c, "XX000", "agentgate: the pinned schema's name is too long");
	}
	/* last: its error (a hot standby) comes once every read is answered */
	/* PG_OID_HIGH_Q, PG_RELS_Q, the lineage and the names; without a
	 * lineage, names_query() wrote over the head: the names alone
	 * (review, stop 41: counted 2 or 3, and a standby's sessions without
	 * column masks failed) */
	s->cat_reads = s->lineage_on ? 4 : 1;
	s->cat_done = 0;
	strcat(sql, ";" PG_LISTEN_Q);
	pg_out_query(&s->out, sql);
	free(sql);
	s->phase = PH_UP_CATALOG;
	return send_out(c, SIDE_UP);
}

/* A column mask that names no column of this database masks nothing: a
 * typo, a table or schema written in another case than the catalog's, a
 * column since renamed. The session is refused rather than run with a
 * mask its author believes in and that does nothing. */
static const char *mask_not_found(struct pg_sess *s)
{
	size_t ne;
	const char *const *e = mask_column_list(s->mask, &ne);

	for (size_t i = 0; i < ne; i++)
		if (!s->col_found[i])
			return e[i];
	return NULL;
}

/*
 * Our queries once the agent may hold prepared statements (a refresh, and
 * the second catalog query): not in the session's recording. Sent by the
 * extended protocol under a statement name of ours (PG_OUR_PREFIX names
 * are refused to the agent: fe_parse()), one Parse, Bind and Execute per
 * statement, then one Sync: a simple Query would drop the agent's unnamed
 * prepared statement, and its next Bind of it would fail (review, stop
 * 37). The portal is ours too (PG_OUR_PREFIX portal names are refused to
 * the agent: fe_bind()), as a read inside the agent's transaction
 * (unknown_rel()) must leave its unnamed portal alone. The leading Closes
 * take away a statement or portal left by a query that failed before its
 * own Close (Close of one that does not exist is no error).
 */
static int send_ours(struct conn *c, const char *const *sqls, int n)
{
	struct pg_sess *s = S(c);
	bool rec = c->rec_side[SIDE_UP];
	int err;

	for (int i = 0; i < n; i++) {
		pg_out_target(&s->out, 'C', 'S', PG_OUR_STMT);
		pg_out_target(&s->out, 'C', 'P', PG_OUR_STMT);
		pg_out_parse(&s->out, PG_OUR_STMT, sqls[i]);
		pg_out_begin(&s->out, 'B');
		pg_out_str(&s->out, PG_OUR_STMT);   /* a portal of ours: the agent's unnamed one may live */
		pg_out_str(&s->out, PG_OUR_STMT);
		pg_out_i16(&s->out, 0);             /* no parameter formats */
		pg_out_i16(&s->out, 0);             /* no parameters */
		pg_out_i16(&s->out, 0);             /* results in text */
		pg_out_end(&s->out);
		pg_out_begin(&s->out, 'E');
		pg_out_str(&s->out, PG_OUR_STMT);
		pg_out_i32(&s->out, 0);             /* every row */
		pg_out_end(&s->out);
	}
	pg_out_target(&s->out, 'C', 'P', PG_OUR_STMT);
	pg_out_target(&s->out, 'C', 'S', PG_OUR_STMT);
	pg_out_simple(&s->out, 'S');
	c->rec_side[SIDE_UP] = false;
	err = send_out(c, SIDE_UP);
	c->rec_side[SIDE_UP] = rec;
	return err;
}

/* The second catalog query: views, children or partitions show a masked
 * table's rows, so their columns are read too (catalog_row()). */
static int send_dependents(struct conn *c)
{
	struct pg_sess *s = S(c);
	size_t cap = catalog_cap(c);
	char *sql = malloc(cap);
	int err;

	s->cat_dependents_sent = true;
	if (!sql)
		return -ENOMEM;
	if (!catalog_query(c, sql, cap, true)) {
		free(sql);
		return fatal(c, "XX000", "agentgate: cannot build the catalog query for the masked columns");
	}
	err = send_ours(c, (const char *[]){ sql }, 1);
	free(sql);
	return err;
}

/* PG_OID_HIGH_Q's row into s->oid_high_pending. */
static int oid_high_row(struct pg_sess *s, const struct pg_msg *m)
{
	struct pg_datarow d;
	const uint8_t *v;
	int32_t vl;
	char buf[16], *end;
	unsigned long o;

	if (pg_datarow_begin(m, &d) || d.ncols != 1 || pg_datarow_next(&d, &v, &vl) != 1 ||
	    vl <= 0 || vl >= (int32_t)sizeof(buf))
		return -EBADMSG;
	memcpy(buf, v, (size_t)vl);
	buf[vl] = '\0';
	errno = 0;
	o = strtoul(buf, &end, 10);
	if (errno || *end || o > UINT32_MAX)
		return -EBADMSG;
	s->oid_high_pending = (uint32_t)o;
	return 0;
}

static int up_catalog(struct conn *c, const struct pg_msg *m)
{
	struct pg_sess *s = S(c);
	const char *nf;
	char st;
	int err;

	switch (m->type) {
	case 'C':
		if (s->phase == PH_UP_CATALOG)
			s->cat_done++;
		return 0;
	case 'A':   /* ours, or left by the session's previous agent (pooled): not this one's */
		catalog_notice(c, m);
		return 0;
	case 'T': case 'N':
	case '1': case '2': case '3':   /* send_ours(): ParseComplete, BindComplete, CloseComplete */
		return 0;
	case 'S':   /* a setting reported meanwhile (a reload): checked, passed on, kept */
		if ((err = param_seen(c, m)) <= 0)
			return err;
		return conn_send(c, SIDE_AGENT, m->body - 5, m->len + 5);
	case 'D': {
		struct pg_datarow d;

		if (pg_datarow_begin(m, &d))
			return -EBADMSG;
		if (d.ncols == 1) {
			if (oid_high_row(s, m))
				return fatal(c, "XX000", "agentgate: cannot read the catalog for masking");
			s->oid_high = s->oid_high_pending;
			return 0;
		}
		if (d.ncols == 2) {
			if ((err = names_row(s, m)))
				return fatal(c, "XX000", "agentgate: cannot read the pinned schema's functions "
					     "and operators%s", err == -E2BIG ? ": too many" : "");
			return 0;
		}
		if (d.ncols == 3) {
			if ((err = rels_row(s, m)) == -ENOMEM)
				return err;
			if (err)
				return fatal(c, "XX000", "agentgate: cannot read the database's relations for "
					     "masking%s", err == -E2BIG ? ": more than 65536" : "");
			return 0;
		}
		return catalog_row(s, m) ? fatal(c, "XX000", "agentgate: cannot read the catalog for masking") : 0;
	}
	case 'E': {
		const char *sev = pg_fields_get(m, 'V') ? pg_fields_get(m, 'V') : pg_fields_get(m, 'S');

		/* every read answered: the error is the LISTEN's (a hot standby
		 * refuses it); the session goes on without hearing changes. A
		 * FATAL (the server ending the session) is not let pass. */
		if (s->phase == PH_UP_CATALOG && s->cat_done == s->cat_reads && sev && strcmp(sev, "ERROR") == 0) {
			s->cat_done++;
			return 0;
		}
		return fatal(c, "XX000", "agentgate: the catalog query failed: %s",
			     pg_fields_get(m, 'M') ? pg_fields_get(m, 'M') : "");
	}
	case 'Z':
		if (pg_parse_ready(m, &st))
			return -EBADMSG;
		if (s->col_found && !s->cat_dependents_sent && (nf = mask_not_found(s)))
			return fatal(c, "42501", "agentgate: denied: the policy masks column %.200s, which this "
				     "database does not have (names are matched as the catalog stores them: "
				     "unquoted names in lower case); fix the policy's mask", nf);
		if (s->cat_shown && !s->cat_dependents_sent)
			return send_dependents(c);   /* before the agent's first query */
		if (names_ready(s))
			return fatal(c, "XX000", "agentgate: cannot read the pinned schema's functions and operators");
		if (s->lineage_on)
			rels_commit(s);
		else
			rels_drop_new(s);
		return session_ready(c, st);
	}
	return fatal(c, "08P01", "agentgate: unexpected message '%c' during the catalog query", m->type);
}

static int be_message(struct conn *c, const struct pg_msg *m);


/* The session's lineage may be stale: relations of its database changed
 * through agentgate since it was read (each epoch tried once), or it is
 * older than lineage_max_ms(). */
static bool lineage_due(struct conn *c, struct pg_sess *s)
{
	uint64_t e = atomic_load(rel_epoch_of(c));

	if (!s->lineage_on)
		return false;
	if (e != s->rel_epoch && e != s->rel_refresh_epoch)
		return true;
	return now_ns_mono() / 1000000ull - s->lineage_ms >= lineage_max_ms();
}

/* Whether the session can read its names (and lineage) again now: nothing
 * in flight. The read is paid from the agent's parse budget
 * (process_upstream): past it the session stays careful, and tries again
 * next statement (not counted as a refusal: nothing was refused). Inside a
 * transaction ('T') only for unknown_rel(), as is a read while a change of
 * names is open: those read the lineage only (start_refresh()). */
static bool refresh_may(struct conn *c)
{
	struct pg_sess *s = S(c);

	/* a Parse being judged set unsynced itself (fe_message()) */
	bool unsynced = s->judging_parse ? s->unsynced_before : s->unsynced;

	return s->cat_ready && (s->tx == 'I' || s->tx == 'T') && !s->qlen && !unsynced &&
	       !s->skip_to_sync && !s->copy_in && !s->copy_wait && !s->up_pass && !s->out.len &&
	       conn_parse_may(c, NULL, 0);
}

/* Whether the session reads its names (and lineage) again before judging
 * the next statement (names and relations epochs, above): they are stale
 * and it is idle. */
static bool refresh_due(struct conn *c)
{
	struct pg_sess *s = S(c);
	bool changing = names_changing(c);   /* first: as in judge() */
	uint64_t now = atomic_load(names_epoch_of(c));

	return !changing && !s->names_changer && s->tx == 'I' &&
	       ((now != s->names_epoch && now != s->refresh_epoch) || lineage_due(c, s)) &&
	       refresh_may(c);
}

/* The names query again, with the lineage query when the session masks
 * columns, on the session's own connection; the agent's input waits.
 * Costs what reconnecting would, once per epoch (and lineage_max_ms()). */
static int start_refresh(struct conn *c)
{
	struct pg_sess *s = S(c);
	size_t n = 0, cap = (s->lineage_on ? catalog_cap(c) : 0) + 4096;
	char *sql = malloc(cap);
	/* Inside the agent's transaction (unknown_rel()) only the lineage is
	 * read, and nothing counts as read for the epochs or the lineage's
	 * age: under REPEATABLE READ the read sees the transaction's
	 * snapshot, while PostgreSQL resolves the names of functions and
	 * relations afresh (review). The lineage read so is due again once
	 * the session is idle. So too while a change of names is open (this
	 * session's or another's): the names would be read half changed. */
	bool in_tx = s->tx != 'I' || names_changing(c) || s->names_changer;
	int err;

	if (!sql)
		return -ENOMEM;
	s->refresh_tx = s->tx;
	s->refresh_lineage_only = in_tx;
	s->refresh_rc = false;
	rels_drop_new(s);
	s->lineage_refresh = false;
	if (!in_tx)
		s->refresh_epoch = s->names_epoch_pending = atomic_load(names_epoch_of(c));
	if (s->lineage_on) {
		if (!in_tx) {
			s->rel_refresh_epoch = s->rel_epoch_pending = atomic_load(rel_epoch_of(c));
			s->lineage_ms = now_ns_mono() / 1000000ull;   /* tried: not again before its time */
		}
		if (catalog_query(c, sql, cap - 4096, false)) {
			n = strlen(sql) + 1;   /* the names query after its NUL */
			s->lineage_refresh = true;
			s->prev_cols = s->cols;
			s->prev_ncols = s->ncols;
			s->prev_capcols = s->capcols;
			s->cols = NULL;
			s->ncols = s->capcols = 0;
			s->cat_shown = s->cat_dependents_sent = false;
		}
	}
	if (in_tx ? !s->lineage_refresh : !names_query(c, sql + n, cap - n)) {
		/* cannot be (it was written at the start): judged stale */
		free(sql);
		if (s->lineage_refresh) {
			s->cols = s->prev_cols;
			s->ncols = s->prev_ncols;
			s->capcols = s->prev_capcols;
			s->prev_cols = NULL;
			s->lineage_refresh = false;
		}
		s->just_refreshed = true;
		s->refresh_ok = false;
		return process_agent(c);
	}
	s->phase = PH_UP_REFRESH;
	if (in_tx) {
		err = send_ours(c, (const char *[]){ PG_ISO_Q, PG_OID_HIGH_Q, PG_RELS_Q, sql }, 4);
		free(sql);
		return err;
	}
	s->prev_names = s->names;
	s->prev_kinds = s->kinds;
	s->prev_nnames = s->nnames;
	s->prev_capnames = s->capnames;
	s->names = NULL;
	s->kinds = NULL;
	s->nnames = s->capnames = 0;
	err = n ? send_ours(c, (const char *[]){ PG_OID_HIGH_Q, PG_RELS_Q, sql, sql + n }, 4) :
		  send_ours(c, (const char *[]){ sql }, 1);
	free(sql);
	return err;
}

/* Numbers sessions for the verdict cache (pgc_ctx.arg_id), and again a
 * session whose lineage changed (lineage_changed()). */
static uint64_t sess_serial;

static int lcol_cmp(const void *a, const void *b)
{
	const struct pg_lcol *x = a, *y = b;

	if (x->oid != y->oid)
		return x->oid < y->oid ? -1 : 1;
	if (x->att != y->att)
		return x->att < y->att ? -1 : 1;
	if (x->named != y->named)
		return x->named ? 1 : -1;
	return strcmp(x->name, y->name);
}

/*
 * Whether the lineage just read (cols) differs from the one before
 * (prev_cols). The session then takes a new serial: the verdict cache's
 * key holds it (ctx.arg_id), so verdicts judged with the older lineage
 * are not served again, and prepared statements judged with it are
 * refused at Bind (fe_bind(): lineage_id). A read that finds the same
 * lineage (most reads by age) keeps both.
 */
static bool lineage_changed(struct pg_sess *s)
{
	if (s->ncols != s->prev_ncols)
		return true;
	if (!s->ncols)
		return false;
	qsort(s->cols, (size_t)s->ncols, sizeof(*s->cols), lcol_cmp);
	qsort(s->prev_cols, (size_t)s->prev_ncols, sizeof(*s->prev_cols), lcol_cmp);
	for (int i = 0; i < s->ncols; i++)
		if (lcol_cmp(&s->cols[i], &s->prev_cols[i]))
			return true;
	return false;
}

/* The refresh is over: the new names and lineage kept, or (failed) the
 * ones read before put back. */
static void refresh_end(struct pg_sess *s, bool failed)
{
	bool in_tx = s->refresh_lineage_only;   /* start_refresh() */
	/* a read of the names alone (the lineage query could not be built)
	 * does not count for unknown_rel() */
	bool ok = !failed && (s->lineage_refresh || !s->lineage_on);

	if (failed) {
		if (!in_tx) {
			strv_free(s->names, s->nnames);
			free(s->kinds);
			s->names = s->prev_names;
			s->kinds = s->prev_kinds;
			s->nnames = s->prev_nnames;
			s->capnames = s->prev_capnames;
		}
		if (s->lineage_refresh) {
			free(s->cols);
			s->cols = s->prev_cols;
			s->ncols = s->prev_ncols;
			s->capcols = s->prev_capcols;
		}
		rels_drop_new(s);
	} else {
		if (!in_tx) {
			strv_free(s->prev_names, s->prev_nnames);
			free(s->prev_kinds);
			s->names_epoch = s->names_epoch_pending;
			s->names_stale = false;
			atomic_fetch_add(&names_refreshed, 1);
		}
		if (s->lineage_refresh) {
			if (lineage_changed(s))
				s->serial = __atomic_add_fetch(&sess_serial, 1, __ATOMIC_RELAXED);
			free(s->prev_cols);
			if (in_tx)
				s->lineage_ms = 0;   /* read again once idle */
			else
				s->rel_epoch = s->rel_epoch_pending;
			s->oid_high = s->oid_high_pending;
			rels_commit(s);
			atomic_fetch_add(&lineage_refreshed, 1);
		}
		rels_drop_new(s);
	}
	s->prev_cols = NULL;
	s->prev_ncols = s->prev_capcols = 0;
	s->lineage_refresh = false;
	s->prev_names = NULL;
	s->prev_kinds = NULL;
	s->prev_nnames = s->prev_capnames = 0;
	s->refresh_ok = ok;
	s->refresh_failed = false;
	s->just_refreshed = true;
}

/* The answer to start_refresh()'s queries. A server error (the agent's own
 * CancelRequest, say) keeps the names and lineage read before, and the
 * session stale. */
static int up_refresh(struct conn *c, const struct pg_msg *m)
{
	struct pg_sess *s = S(c);
	struct pg_datarow d;
	char st;
	int err;

	switch (m->type) {
	case 'T': case 'C':
	case '1': case '2': case '3':   /* send_ours() */
		return 0;
	case 'S': case 'N': case 'A':   /* the session's own, as at any time */
		return be_message(c, m);
	case 'D':
		if (s->refresh_failed)
			return 0;
		if (pg_datarow_begin(m, &d))
			return -EBADMSG;
		if (d.ncols == 1 && s->lineage_refresh) {   /* PG_OID_HIGH_Q's */
			if (oid_high_row(s, m))
				return fatal(c, "XX000", "agentgate: cannot read the catalog for masking");
			return 0;
		}
		if (d.ncols == 3 && s->lineage_refresh) {   /* PG_RELS_Q's */
			if ((err = rels_row(s, m)) == -ENOMEM)
				return err;
			if (err == -E2BIG && !s->lineage_error[0])
				snprintf(s->lineage_error, sizeof(s->lineage_error),
					 "the database has more than 65536 relations");
			else if (err)
				return fatal(c, "XX000", "agentgate: cannot read the database's relations for masking");
			s->refresh_failed = s->refresh_failed || err;
			return 0;
		}
		if (d.ncols != 2) {   /* the lineage's */
			if (!s->lineage_refresh)
				return fatal(c, "08P01", "agentgate: unexpected row during the names query");
			if ((err = catalog_row(s, m)) == -ENOMEM)
				return err;
			if (err)
				return fatal(c, "XX000", "agentgate: cannot read the catalog for masking");
			return 0;
		}
		if (s->refresh_lineage_only) {   /* PG_ISO_Q's */
			const uint8_t *v[2];
			int32_t vl[2];

			if (pg_datarow_begin(m, &d) || d.ncols != 2 || pg_datarow_next(&d, &v[0], &vl[0]) != 1 ||
			    pg_datarow_next(&d, &v[1], &vl[1]) != 1 || vl[0] != 1 || v[0][0] != 'i')
				return fatal(c, "08P01", "agentgate: unexpected row during the lineage query");
			s->refresh_rc = vl[1] == 14 && memcmp(v[1], "read committed", 14) == 0;
			return 0;
		}
		if ((err = names_row(s, m)) == -ENOMEM)
			return err;
		if (err == -E2BIG)
			s->refresh_failed = true;   /* too many now: the older names stay */
		else if (err)
			return fatal(c, "XX000", "agentgate: cannot read the pinned schema's functions and operators");
		return 0;
	case 'E': {
		const char *sev = pg_fields_get(m, 'V') ? pg_fields_get(m, 'V') : pg_fields_get(m, 'S');

		if (sev && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0))
			return fatal(c, pg_fields_get(m, 'C') ? pg_fields_get(m, 'C') : "08006",
				     "agentgate: the server ended the session: %s",
				     pg_fields_get(m, 'M') ? pg_fields_get(m, 'M') : "(no message)");
		s->refresh_failed = true;
		/* The lineage could not be read again: judging on with the old
		 * one would let an agent keep it for good (cancelling each read
		 * with its own CancelRequest, or a short statement_timeout), a
		 * relation made since unknown to masking (review, stop 38). The
		 * session ends once the server is ready (fail closed). */
		if (s->lineage_refresh && !s->lineage_error[0])
			snprintf(s->lineage_error, sizeof(s->lineage_error), "%s",
				 pg_fields_get(m, 'M') ? pg_fields_get(m, 'M') : "(no message)");
		return 0;
	}
	case 'Z':
		if (pg_parse_ready(m, &st))
			return -EBADMSG;
		if (s->lineage_error[0])
			return fatal(c, "57P01", "agentgate: the masked columns' lineage could not be read "
				     "again (%.150s); reconnect", s->lineage_error);
		if (st != s->refresh_tx)
			return fatal(c, "08P01", "agentgate: the server's transaction state changed during the "
				     "names query");
		if (!s->refresh_failed && s->lineage_refresh && s->cat_shown && !s->cat_dependents_sent)
			return send_dependents(c);   /* as at the start (up_catalog()) */
		if (!s->refresh_failed && !s->refresh_lineage_only && (err = names_ready(s)))
			return fatal(c, "XX000", "agentgate: cannot read the pinned schema's functions and operators");
		refresh_end(s, s->refresh_failed);
		s->tx = st;
		s->phase = PH_READY;
		return 0;
	}
	return fatal(c, "08P01", "agentgate: unexpected message '%c' during the names query", m->type);
}

/* ---- the session: agent -> server ------------------------------------------------------ */

/* Sends a stand-in for a denied message and queues what the agent will be told. */
static int standin(struct conn *c, bool simple, const char *stmt_name, const char *why,
		   struct pg_judged *j, const char *proto)
{
	struct pg_sess *s = S(c);
	struct pg_pend *p = pend_push(s, simple ? 'Q' : 'P');

	if (!p) {
		judged_put(j);
		return fatal(c, "54000", "agentgate: too many requests in flight");
	}
	p->standin = true;
	p->j = j;
	p->deny = strdup(why);
	if (!p->deny)
		return -ENOMEM;
	if (simple) {
		pg_out_query(&s->out, PG_DENY_TEXT);
		s->syncs++;
	} else {
		pg_out_parse(&s->out, stmt_name, PG_DENY_TEXT);
		s->skip_to_sync = true;
	}
	if (j && j->verdict == PGC_REVIEW)
		p->deny_detail = strdup("the policy's verdict is review: a person must approve this statement");
	/* one event per statement: none of them runs */
	audit_stmts_from(c, j, 0, proto, false, NULL, why, NULL);
	return send_out(c, SIDE_UP);
}

/*
 * A session that cannot take the agent's rules now (a reload changed them
 * while it held prepared statements, portals or requests in flight, or
 * other masks; or the agent's identity binds other roles) was refused
 * every statement until it reconnected, asking for that in the error. A
 * driver's pool reconnects on a lost connection, not on an error: an
 * asyncpg or pgx pool (they keep named prepared statements) failed every
 * query until restarted. Outside a transaction such a session now ends
 * with FATAL 57P01 (admin_shutdown, what pg_terminate_backend() sends,
 * which pools take for "reconnect"), and its reconnect gets the running
 * policy. Inside one it may still end the transaction (judge()), and its
 * other statements are refused; the first refused after that ends it. One
 * whose identity binds other rules ends inside a transaction too: it was
 * refused the COMMIT as well, for good (review).
 * j: the refused statement's verdict (its event), or NULL; put here.
 */
static bool stale_ends(struct conn *c, int stale)
{
	/* the session's own policy may enforce while the running one only
	 * observes (a reload to observe mode): refused as before, not ended
	 * (review) */
	if (__atomic_load_n(&E->policy, __ATOMIC_ACQUIRE)->mode == POLICY_OBSERVE)
		return false;
	return stale == STALE_ALWAYS || (stale == STALE_IDLE && S(c)->tx == 'I');
}

static int end_stale(struct conn *c, struct pg_judged *j, const char *why, const char *proto)
{
	audit_stmts_from(c, j, 0, proto, false, NULL, why, NULL);
	judged_put(j);
	S(c)->fatal_answers = true;   /* psycopg2 showed "server closed the connection unexpectedly" */
	return fatal(c, "57P01", "agentgate: %s", why);
}

/*
 * PostgreSQL keeps only the first NAMEDATALEN - 1 (63) bytes of a prepared
 * statement's or portal's name: its tables compare that much. Two names
 * that differ after byte 63 are one object to the server and two to our
 * tables, and a Close or Bind of one would change the other behind our
 * back (a portal we described as harmless then runs masked columns). Such
 * names are refused, which also bounds what a session's names can make us
 * allocate. Drivers use short names (S_1, _pg3_0, ...).
 */
#define PG_NAME_MAX 63

static int long_name(struct conn *c, const char *what)
{
	char why[200];

	snprintf(why, sizeof(why), "%s name is longer than %d bytes (PostgreSQL reads only the "
		 "first %d)", what, PG_NAME_MAX, PG_NAME_MAX);
	return standin(c, false, PG_DENY_NAME, why, NULL, "extended");
}

/* Forwards msg bytes to the server. */
static int fwd(struct conn *c, const struct pg_msg *m)
{
	return conn_send(c, SIDE_UP, m->body - 5, m->len + 5);
}

/* A Query goes upstream (p its pending entry): it drops the unnamed statement
 * (exec_simple_query; p undoes that if it never runs) and portal. */
static void query_sent(struct pg_sess *s, struct pg_pend *p)
{
	void *prev = map_set(&s->stmts, "", NULL, NULL);

	if (prev) {
		p->undo = UNDO_STMT;
		p->undo_name = strdup("");
		p->undo_prev = prev;
	}
	prev = map_set(&s->portals, "", NULL, NULL);
	if (prev)
		portal_put(prev);
	s->syncs++;
	bump_epoch(s);
}

/*
 * PostgreSQL runs the statements of a Query message one at a time, each
 * parsed and run after the one before it, and stops at the first that
 * fails: those before it have run. In the message's implicit transaction
 * they are rolled back with it; but a BEGIN among them opens a block that
 * the failure leaves aborted (the server answers 'E' and refuses all but
 * ROLLBACK), a COMMIT among them commits what came before it, a SAVEPOINT
 * is there to roll back to. A stand-in for the whole text (standin())
 * left the server outside any transaction after "BEGIN; INSERT ...;
 * <denied>", where PostgreSQL would have had an aborted block: the
 * agent's next statements ran and committed one by one instead of failing
 * until its ROLLBACK (review). So the statements before a denied one are
 * sent as they are, followed by PG_DENY_TAIL in place of the rest: the
 * server is left as PostgreSQL leaves it when the denied statement fails.
 *
 * The index of the first statement of j not allowed (denied, or needing
 * approval), when those before it may be sent that way (each allowed by a
 * rule of its own; no COPY FROM
 * STDIN; no relation the lineage does not know, which judge() reads again
 * for before an allowed message); 0: the whole text stands in. s->res
 * still holds the result j was made from.
 */
static int denied_from(struct pg_sess *s, const struct pg_judged *j)
{
	struct pgc_result *r = &s->res;
	const char *unk;
	int k = 0, n;

	/* a denial names its statement; a review verdict, judged whole,
	 * has each statement's own (one needing approval stops there too) */
	bool review = j->verdict == PGC_REVIEW && j->denied_stmt < 0;

	if (j->nstmts < 2 || (j->denied_stmt <= 0 && !review) || j->copy_in || r->nstmts != j->nstmts)
		return 0;
	while (k < j->nstmts && j->st[k].judged && j->st[k].verdict == PGC_ALLOW)
		k++;
	if (k == 0 || k == j->nstmts || (!review && k > j->denied_stmt))
		return 0;
	n = r->nstmts;
	r->nstmts = k;
	unk = unknown_rel(s, r);
	r->nstmts = n;
	return unk ? 0 : k;
}

/*
 * Sends the first k statements of the agent's Query text (sql, len bytes),
 * allowed, then PG_DENY_TAIL (denied_from()); why: the denial, as
 * standin() gives it. Takes j (its events: the statements sent as they
 * end, then the others as not allowed, at ReadyForQuery: query_end()).
 * 1 when the text could not be split (j is the caller's still, to stand
 * in for all of it), else 0 or an error.
 */
static int query_prefix(struct conn *c, const char *sql, uint32_t len, struct pg_judged *j, int k,
			const char *why)
{
	struct pg_sess *s = S(c);
	struct pg_pend *p;
	size_t plen;
	uint64_t t0;
	int rc;

	if (!conn_parse_may(c, NULL, 0))
		return 1;
	t0 = thread_cpu_ns();
	rc = pgc_stmts_prefix(sql, len, k, j->nstmts, &plen);
	conn_parse_spent(c, thread_cpu_ns() - t0);
	if (rc)
		return 1;
	p = pend_push(s, 'Q');
	if (!p) {
		judged_put(j);
		return fatal(c, "54000", "agentgate: too many requests in flight");
	}
	j->ran = k;
	p->j = j;
	p->denied_rest = true;
	p->deny = strdup(why);
	if (!p->deny)
		return -ENOMEM;
	if (j->verdict == PGC_REVIEW)
		p->deny_detail = strdup("the policy's verdict is review: a person must approve this statement");
	/* what judge() does for an allowed text: the statements sent may
	 * change names or relations */
	if (j->changes_names)
		names_change(c, s);
	if (stmts_change_rels(j->st, k))
		s->rel_changer = true;
	query_sent(s, p);
	s->copy_wait = false;
	pg_out_begin(&s->out, 'Q');
	pg_out_bytes(&s->out, sql, plen);
	pg_out_bytes(&s->out, PG_DENY_TAIL, sizeof(PG_DENY_TAIL) - 1);
	pg_out_u8(&s->out, 0);
	pg_out_end(&s->out);
	return send_out(c, SIDE_UP);
}

static int fe_query(struct conn *c, const struct pg_msg *m)
{
	struct pg_sess *s = S(c);
	const char *sql;
	uint32_t len;
	char why[300];
	struct pg_judged *j;
	struct pg_pend *p;

	if (pg_parse_query(m, &sql, &len))
		return fatal(c, "08P01", "agentgate: malformed Query message");
	j = judge(c, sql, len, why, sizeof(why));
	if (s->redo) {
		s->redo = false;
		judged_put(j);
		return PG_REDO;
	}
	if (j && !j->allowed && stale_ends(c, s->stale_rules) && enforcer_should_refuse(c, why))
		return end_stale(c, j, why, "simple");
	if (!j || (!j->allowed && enforcer_should_refuse(c, why))) {
		int k = j ? denied_from(s, j) : 0, err;

		if (k > 0 && (err = query_prefix(c, sql, len, j, k, why)) != 1)
			return err;
		return standin(c, true, NULL, why, j, "simple");
	}
	if (j->copy_in && j->nstmts > 1) {
		/* the server reads the agent's next messages as the data of
		 * each COPY in turn, as long as the Query runs: followed one
		 * COPY at a time (copy_sync()) */
		snprintf(why, sizeof(why), "COPY ... FROM STDIN must be the only statement of its Query message");
		return standin(c, true, NULL, why, j, "simple");
	}
	/* a simple Query drops the unnamed statement (exec_simple_query) */
	p = pend_push(s, 'Q');
	if (!p) {
		judged_put(j);
		return fatal(c, "54000", "agentgate: too many requests in flight");
	}
	p->j = j;   /* observe mode: j->why says what would have been denied */
	query_sent(s, p);
	s->copy_wait = j->copy_in;
	return fwd(c, m);
}

static int fe_parse(struct conn *c, const struct pg_msg *m)
{
	struct pg_sess *s = S(c);
	struct pg_parse pp;
	char why[300];
	struct pg_judged *j;
	struct pg_pend *p;
	void *prev;
	bool full;

	if (pg_parse_parse(m, &pp))
		return fatal(c, "08P01", "agentgate: malformed Parse message");
	if (strlen(pp.name) > PG_NAME_MAX)
		return long_name(c, "prepared statement");
	if (strncmp(pp.name, PG_OUR_PREFIX, strlen(PG_OUR_PREFIX)) == 0)
		return standin(c, false, PG_DENY_NAME, "prepared statement names starting with "
			       PG_OUR_PREFIX " are agentgate's own", NULL, "extended");
	/* A parameter declared with a type the database defined (a domain: its
	 * CHECK runs on the value) runs its code with no cast in the text, and
	 * one of an object identifier or catalog row type reads the catalog
	 * (Parse("SELECT $1", [regclass]), review, stop 64): pgc_param_type_refused()
	 * says which. */
	for (int i = 0; pp.param_types && i < pp.nparams; i++) {
		const uint8_t *t = pp.param_types + 4 * i;
		uint32_t oid = (uint32_t)t[0] << 24 | (uint32_t)t[1] << 16 | (uint32_t)t[2] << 8 | t[3];
		const char *refused = pgc_param_type_refused(oid);

		if (refused) {
			snprintf(why, sizeof(why), "parameter $%d is declared with type OID %u, %s",
				 i + 1, oid, refused);
			if (enforcer_should_refuse(c, why)) {
				if (!pp.name[0] && (prev = map_set(&s->stmts, "", NULL, NULL)))
					judged_put(prev);
				return standin(c, false, pp.name, why, NULL, "extended");
			}
		}
	}
	/* A name in use is the server's to refuse (42P05): in a pipeline an
	 * earlier failure may have made the server skip the Parse that we saw
	 * creating it. The table follows the server's answer (server_skipped). */
	s->judging_parse = true;
	j = judge(c, pp.query, pp.query_len, why, sizeof(why));
	s->judging_parse = false;
	if (s->redo) {
		s->redo = false;
		judged_put(j);
		return PG_REDO;
	}
	if (j && !j->allowed && stale_ends(c, s->stale_rules) && enforcer_should_refuse(c, why))
		return end_stale(c, j, why, "extended");
	if (!j || (!j->allowed && enforcer_should_refuse(c, why))) {
		/* the agent's own name: a failing Parse("") drops the unnamed
		 * statement on the server, and so does ours; a failing named
		 * Parse leaves an existing statement of that name alone */
		if (!pp.name[0] && (prev = map_set(&s->stmts, "", NULL, NULL)))
			judged_put(prev);
		return standin(c, false, pp.name, why, j, "extended");
	}
	prev = map_set(&s->stmts, pp.name, j, &full);
	if (full) {
		judged_put(j);
		return standin(c, false, PG_DENY_NAME, "too many prepared statements in this session", NULL,
			       "extended");
	}
	p = pend_push(s, 'P');
	if (!p) {
		judged_put(map_set(&s->stmts, pp.name, prev, NULL));
		return fatal(c, "54000", "agentgate: too many requests in flight");
	}
	p->undo = UNDO_STMT;
	p->undo_name = strdup(pp.name);
	p->undo_prev = prev;
	p->j = judged_get(j);
	return fwd(c, m);
}

static int fe_bind(struct conn *c, const struct pg_msg *m)
{
	struct pg_sess *s = S(c);
	struct pg_bind b;
	struct pg_judged *j;
	struct pg_portal *po;
	struct pg_pend *p;
	char why[300];
	void *prev;
	bool full;
	int d;

	if (pg_parse_bind(m, &b))
		return fatal(c, "08P01", "agentgate: malformed Bind message");
	if (strlen(b.stmt) > PG_NAME_MAX || strlen(b.portal) > PG_NAME_MAX)
		return long_name(c, strlen(b.portal) > PG_NAME_MAX ? "portal" : "prepared statement");
	if (strncmp(b.portal, PG_OUR_PREFIX, strlen(PG_OUR_PREFIX)) == 0)
		return standin(c, false, PG_DENY_NAME, "portal names starting with " PG_OUR_PREFIX
			       " are agentgate's own", NULL, "extended");
	j = map_get(&s->stmts, b.stmt);
	if (!j) {
		snprintf(why, sizeof(why), "prepared statement \"%.64s\" was not allowed (or does not exist)", b.stmt);
		return standin(c, false, PG_DENY_NAME, why, NULL, "extended");
	}
	/* the delegating user's token, before the server converts the
	 * parameters (a domain's CHECK runs then) and plans the statement */
	if ((d = deleg_state(c, why, sizeof(why))) != DELEG_OK && enforcer_should_refuse(c, why))
		return d == DELEG_REVOKED && stale_ends(c, STALE_ALWAYS) ? end_stale(c, NULL, why, "extended")
									: standin(c, false, PG_DENY_NAME, why, NULL, "extended");
	/* Judged with the names of then: PostgreSQL analyses a prepared
	 * statement again when its plan is invalidated (DDL, ANALYZE), and
	 * picks up a function or operator created since, an overload that
	 * fits better than the builtin judged (review, stop 34). One judged
	 * with fresh names runs only while they are the same. */
	if (j->allowed && !j->changes_names && !j->names_stale &&
	    atomic_load(names_epoch_of(c)) != j->names_epoch) {
		snprintf(why, sizeof(why), "functions or operators of the database changed since prepared statement "
			 "\"%.64s\" was judged; prepare it again", b.stmt);
		return standin(c, false, PG_DENY_NAME, why, NULL, "extended");
	}
	/* Judged with the lineage of then: one read since found other masked
	 * relations or columns (lineage_changed()), so what it judged
	 * harmless may read a masked column now (a view made past agentgate
	 * and used in an expression before the read; review, stop 38). */
	if (j->allowed && s->mask_active && j->lineage_id != s->serial) {
		snprintf(why, sizeof(why), "the masked columns' lineage changed since prepared statement "
			 "\"%.64s\" was judged; prepare it again", b.stmt);
		return standin(c, false, PG_DENY_NAME, why, NULL, "extended");
	}
	/* a prepared statement that can change names runs from here on, as
	 * often as it is bound: every Bind is a change judged now (review) */
	if (j->changes_names && (j->allowed || c->policy->mode == POLICY_OBSERVE)) {
		names_change(c, s);
	}
	if ((j->allowed || c->policy->mode == POLICY_OBSERVE) && stmts_change_rels(j->st, j->nstmts))
		s->rel_changer = true;
	po = calloc(1, sizeof(*po));
	if (!po)
		return -ENOMEM;
	po->refs = 1;
	po->j = judged_get(j);
	po->epoch = s->syncs;
	po->nfmt = b.nresult_formats;
	if (b.nresult_formats) {
		po->fmt = malloc((size_t)b.nresult_formats);
		if (!po->fmt) {
			portal_put(po);
			return -ENOMEM;
		}
		for (int i = 0; i < b.nresult_formats; i++)
			po->fmt[i] = b.result_formats[2 * i + 1];
	}
	prev = map_set(&s->portals, b.portal, po, &full);
	if (full) {
		portal_put(po);
		return standin(c, false, PG_DENY_NAME, "too many portals in this session", NULL, "extended");
	}
	p = pend_push(s, 'B');
	if (!p) {
		portal_put(map_set(&s->portals, b.portal, prev, NULL));
		return fatal(c, "54000", "agentgate: too many requests in flight");
	}
	p->undo = UNDO_PORTAL;
	p->undo_name = strdup(b.portal);
	p->undo_prev = prev;
	return fwd(c, m);
}

static int fe_describe(struct conn *c, const struct pg_msg *m)
{
	struct pg_sess *s = S(c);
	struct pg_pend *p;
	const char *name;
	char kind, why[200];
	void *v;

	if (pg_parse_target(m, &kind, &name))
		return fatal(c, "08P01", "agentgate: malformed Describe message");
	if (strlen(name) > PG_NAME_MAX)
		return long_name(c, kind == 'S' ? "prepared statement" : "portal");
	v = map_get(kind == 'S' ? &s->stmts : &s->portals, name);
	if (!v) {
		snprintf(why, sizeof(why), "%s \"%.64s\" was not allowed (or does not exist)",
			 kind == 'S' ? "prepared statement" : "portal", name);
		return standin(c, false, PG_DENY_NAME, why, NULL, "extended");
	}
	p = pend_push(s, 'D');
	if (!p)
		return fatal(c, "54000", "agentgate: too many requests in flight");
	p->sub = kind;
	if (kind == 'P') {
		p->portal = portal_get(v);
		p->portal->desc_epoch = s->sql_epoch;
		p->sql_epoch = s->sql_epoch;
	}
	return fwd(c, m);
}

static int fe_execute(struct conn *c, const struct pg_msg *m)
{
	struct pg_sess *s = S(c);
	struct pg_portal *po;
	struct pg_pend *p;
	const char *name;
	int32_t maxrows;
	char why[300];
	int d;

	if (pg_parse_execute(m, &name, &maxrows))
		return fatal(c, "08P01", "agentgate: malformed Execute message");
	if (strlen(name) > PG_NAME_MAX)
		return long_name(c, "portal");
	po = map_get(&s->portals, name);
	if (!po) {
		snprintf(why, sizeof(why), "portal \"%.64s\" was not allowed (or does not exist)", name);
		return standin(c, false, PG_DENY_NAME, why, NULL, "extended");
	}
	/* A portal was judged when its statement was parsed; the agent's
	 * identity may have been lost since (a prepared statement can run for
	 * the life of the session) */
	if (!enforcer_identity_ok(c->policy, c->agent_idx, why, sizeof(why)) && enforcer_should_refuse(c, why))
		return standin(c, false, PG_DENY_NAME, why, NULL, "extended");
	/* the delegating user's token too: a statement judged before it
	 * expired (or lost its key) is not run after (review, stop 34) */
	if ((d = deleg_state(c, why, sizeof(why))) != DELEG_OK && enforcer_should_refuse(c, why))
		return d == DELEG_REVOKED && stale_ends(c, STALE_ALWAYS) ? end_stale(c, NULL, why, "extended")
									: standin(c, false, PG_DENY_NAME, why, NULL, "extended");
	{
		const struct policy_rule *rules[ENFORCER_MAX_RULES];
		size_t nr = enforcer_rules_for(c->policy, c->agent_idx, c->target_idx, rules, ENFORCER_MAX_RULES);

		if (nr <= ENFORCER_MAX_RULES && !rules_unchanged(c, rules, nr, why, sizeof(why)) &&
		    enforcer_should_refuse(c, why))
			return stale_ends(c, STALE_ALWAYS) ? end_stale(c, NULL, why, "extended")
							    : standin(c, false, PG_DENY_NAME, why, NULL, "extended");
		/* a pinned session may still end its transaction (judge() lets
		 * it), also as JDBC and Npgsql do: Parse, Bind, Execute */
		bool tx_only = po->j && po->j->nstmts > 0 && po->j->cls == PGC_TRANSACTION;
		if (!tx_only && !pinned_rules_same(c, why, sizeof(why)) && enforcer_should_refuse(c, why))
			return stale_ends(c, STALE_IDLE) ? end_stale(c, NULL, why, "extended")
							    : standin(c, false, PG_DENY_NAME, why, NULL, "extended");
	}
	/* Masking reads each row by its description, which the server sends
	 * only when asked: a client that executes without a Describe would
	 * otherwise get its rows unread, unmasked. We ask, and keep the
	 * answer to ourselves; again whenever SQL ran since the last Describe
	 * (the portal of that name may now be another one: sql_epoch). */
	if (s->mask_active && po->desc_epoch != s->sql_epoch) {
		int err;

		p = pend_push(s, 'D');
		if (!p)
			return fatal(c, "54000", "agentgate: too many requests in flight");
		p->sub = 'P';
		p->hidden = true;
		p->portal = portal_get(po);
		po->desc_epoch = s->sql_epoch;
		p->sql_epoch = s->sql_epoch;
		pg_out_target(&s->out, 'D', 'P', name);
		if ((err = send_out(c, SIDE_UP)))
			return err;
	}
	p = pend_push(s, 'E');
	if (!p)
		return fatal(c, "54000", "agentgate: too many requests in flight");
	p->portal = portal_get(po);
	p->j = judged_get(po->j);
	p->sql_epoch = s->sql_epoch;
	bump_epoch(s);
	s->copy_wait = po->j && po->j->copy_in;
	return fwd(c, m);
}

static int fe_close(struct conn *c, const struct pg_msg *m)
{
	struct pg_sess *s = S(c);
	struct pg_pend *p;
	const char *name;
	char kind;

	if (pg_parse_target(m, &kind, &name))
		return fatal(c, "08P01", "agentgate: malformed Close message");
	if (strlen(name) > PG_NAME_MAX)
		return long_name(c, kind == 'S' ? "prepared statement" : "portal");
	p = pend_push(s, 'C');
	if (!p)
		return fatal(c, "54000", "agentgate: too many requests in flight");
	p->sub = kind;
	p->undo = kind == 'S' ? UNDO_STMT : UNDO_PORTAL;
	p->undo_name = strdup(name);
	p->undo_prev = map_set(kind == 'S' ? &s->stmts : &s->portals, name, NULL, NULL);
	return fwd(c, m);
}

static int fe_sync(struct conn *c, const struct pg_msg *m)
{
	struct pg_sess *s = S(c);
	struct pg_pend *p;

	/* PostgreSQL refuses a Sync or Flush with a body (pq_getmsgend); a
	 * Flush's error would make it skip to the next Sync with no request
	 * of ours to charge it to (review, stop 27: the queue then shifted
	 * and a masked column's rows went out under another portal's plan) */
	if (m->len)
		return fatal(c, "08P01", "agentgate: malformed Sync message");
	p = pend_push(s, 'S');
	if (!p)
		return fatal(c, "54000", "agentgate: too many requests in flight");
	s->skip_to_sync = false;
	s->syncs++;
	return fwd(c, m);
}

/*
 * COPY FROM STDIN, followed as the server does it (CopyGetData): once it
 * has answered CopyInResponse, it reads the agent's messages as the COPY's
 * data up to CopyDone or CopyFail, ignores Sync and Flush (libpq sends a
 * Sync right after the Execute), and fails the COPY on anything else. Our
 * model of the session has no request for what the COPY swallows, so:
 * the agent's messages after a Query or Execute that may start one wait
 * until the server answers it (copy_wait: CopyInResponse or an error);
 * in COPY, data goes on, Sync and Flush are dropped (the server never sees
 * them: if it fails the COPY, it skips to the next Sync we did send, as
 * our model does), and any other message ends the session. An error from
 * the server ends the COPY on its side: what follows is ordinary again.
 */
static int fe_message(struct conn *c, const struct pg_msg *m);

static int fe_copy_data(struct conn *c, const struct pg_msg *m)
{
	struct pg_sess *s = S(c);

	switch (m->type) {
	case 'd':
		return fwd(c, m);
	case 'c': case 'f':
		if (m->type == 'c' && m->len)
			return fatal(c, "08P01", "agentgate: malformed CopyDone message");
		s->copy_in = false;
		return fwd(c, m);
	case 'S': case 'H':
		return 0;
	case 'X':
		s->copy_in = false;
		return fe_message(c, m);
	default:
		return fatal(c, "08P01", "agentgate: message '%c' during COPY FROM STDIN: only CopyData, "
			     "CopyDone or CopyFail may follow", m->type);
	}
}

/* The server's answer to a request that may start COPY FROM STDIN. */
static void copy_sync(struct pg_sess *s, char type)
{
	if (type == 'G' && s->copy_wait)
		s->copy_in = true;
	else if (type == 'E')
		s->copy_in = false;
	s->copy_wait = false;
}

/* One frontend message in PH_READY. */
static int fe_message(struct conn *c, const struct pg_msg *m)
{
	struct pg_sess *s = S(c);

	/* The server skips everything but Sync after an extended-protocol
	 * error: what it would skip never reaches it (a Bind or Execute of a
	 * denied statement, in particular). */
	if (s->copy_in)
		return fe_copy_data(c, m);
	if (s->skip_to_sync && m->type != 'S' && m->type != 'X')
		return 0;
	bool unsynced = s->unsynced;

	if (strchr("PBDECH", m->type))
		s->unsynced = true;   /* an implicit transaction may be open until Sync */
	else if (m->type == 'S')
		s->unsynced = false;
	switch (m->type) {
	case 'Q':
		return fe_query(c, m);
	case 'P': {
		int err;

		s->unsynced_before = unsynced;   /* refresh_may(): this Parse may be the first */
		err = fe_parse(c, m);
		if (err == PG_REDO)
			s->unsynced = unsynced;   /* not taken: sent again after the read */
		return err;
	}
	case 'B':
		return fe_bind(c, m);
	case 'D':
		return fe_describe(c, m);
	case 'E':
		return fe_execute(c, m);
	case 'C':
		return fe_close(c, m);
	case 'S':
		return fe_sync(c, m);
	case 'H':
		if (m->len)
			return fatal(c, "08P01", "agentgate: malformed Flush message");
		return fwd(c, m);
	case 'F': {
		/* FunctionCall runs any function by OID with no SQL to judge (notes D4) */
		const char *why = "FunctionCall (fastpath) messages are not allowed";
		struct pg_pend *p;

		if (enforcer_should_refuse(c, why))
			return standin(c, true, NULL, why, NULL, "fastpath");
		audit_stmt_at(c, NULL, -1, "fastpath", true, NULL, why, NULL, NULL);
		if (!(p = pend_push(s, 'Q')))
			return fatal(c, "54000", "agentgate: too many requests in flight");
		p->audited = true;
		s->syncs++;
		return fwd(c, m);
	}
	case 'd': case 'c': case 'f':
		/* COPY data outside a COPY: the server ignores it (after an
		 * error in one, the rest of its data comes here) */
		if (m->type == 'c' && m->len)
			return fatal(c, "08P01", "agentgate: malformed CopyDone message");
		return fwd(c, m);
	case 'X':
		/* the agent said goodbye: its key cancels nothing from now on
		 * (the server session may serve the agent's next connection) */
		if (s->cancel_registered) {
			cancel_del(s->our_pid);
			s->cancel_registered = false;
		}
		if (poolable(c)) {
			pg_out_query(&s->out, "DISCARD ALL");
			s->phase = PH_POOL_RESET;
			/* a server that does not answer: the connection ends at the deadline */
			c->deadline_ms = now_ns_mono() / 1000000ull + PG_POOL_RESET_MS;
			c->deadline_why = "the server did not answer DISCARD ALL in time";
			return send_out(c, SIDE_UP);
		}
		fwd(c, m);
		conn_shutdown(c, SIDE_UP);
		/* Queries pipelined before it are answered first, as the
		 * server does: their answers (and events) still come. */
		if (s->qlen)
			s->terminating = true;
		else
			s->phase = PH_DONE;
		return 0;
	default:
		return fatal(c, "08P01", "agentgate: unexpected message type '%c'", m->type);
	}
}

static int frame_or_grow(struct conn *c, int side, const uint8_t *in, uint32_t len, struct pg_msg *m)
{
	int n = pg_frame(in, len, PG_MSG_MAX, m);

	if (n == 0 && len >= 5) {
		uint32_t want = pg_frame_size(in, len);

		if (want > CONN_IN_MAX) {
			int err = conn_in_reserve(c, side, want);

			if (err)
				return err;
		}
	}
	return n;
}

/* PH_DISCARD: drops what the agent sends; closes at its EOF or once the
 * oversized message has been read. */
static int discard_agent(struct conn *c)
{
	struct pg_sess *s = S(c);
	uint32_t len;

	conn_in(c, SIDE_AGENT, &len);
	conn_in_consume(c, SIDE_AGENT, len);
	s->discard -= len < s->discard ? len : s->discard;
	if (!s->discard || conn_in_eof(c, SIDE_AGENT)) {
		s->phase = PH_DONE;
		conn_finish(c);
	}
	return 0;
}

/*
 * A message over PG_MSG_MAX ends the session, and the agent must hear why.
 * Closing at once does not do that: the client is still writing the
 * message; a socket closed with unread bytes sends a reset that can drop
 * our ErrorResponse; and libpq, while its write is blocked, reads what we
 * send, and takes a TLS close_notify (or a FIN) it reads then for a broken
 * connection before it parses the error. So the error goes out, the rest
 * of the message is read and dropped (nothing of it is buffered), and the
 * connection closes once the message is all in: the client's write
 * completes and it reads our error (and a ReadyForQuery), then EOF. A message announced over
 * PG_DISCARD_MAX is not waited for (FIN at once: the error is all there
 * is to read), and a client that stops sending is reset after
 * PG_DISCARD_MS. The server gets Terminate.
 */
static int too_large(struct conn *c, uint32_t size)
{
	struct pg_sess *s = S(c);

	pg_out_reset(&s->out);
	pg_out_error(&s->out, 'E', "FATAL", "54000", "agentgate: message too large", NULL, NULL);
	/* ReadyForQuery after it, though the session ends: libpq returns an
	 * error as the query's result only once the query is complete; at EOF
	 * without it, it reports a broken connection and drops the error */
	pg_out_ready(&s->out, 'I');
	send_out(c, SIDE_AGENT);
	pg_out_simple(&s->out, 'X');
	send_out(c, SIDE_UP);
	conn_shutdown(c, SIDE_UP);
	snprintf(c->why, sizeof(c->why), "message of %u bytes from the agent: over the limit of %u", size,
		 PG_MSG_MAX);
	s->phase = PH_DISCARD;
	s->discard = size;
	if (size > PG_DISCARD_MAX)
		conn_shutdown(c, SIDE_AGENT);
	else {
		c->deadline_ms = now_ns_mono() / 1000000ull + PG_DISCARD_MS;
		c->deadline_why = "the agent did not finish sending an oversized message in time";
	}
	return discard_agent(c);
}

/* The same masks, rule for rule (those with a mask), in the same order. */
static bool masks_same(const struct policy_rule *const *a, size_t na, const struct policy_rule *const *b,
		       size_t nb)
{
	size_t i = 0, j = 0;

	for (;; i++, j++) {
		while (i < na && !a[i]->mask.present)
			i++;
		while (j < nb && !b[j]->mask.present)
			j++;
		if (i == na || j == nb)
			return i == na && j == nb;
		if (!policy_mask_same(&a[i]->mask, &b[j]->mask))
			return false;
	}
}

/*
 * After agentgate reload: an idle session in which nothing judged under its
 * policy is still in use (no transaction, prepared statement, portal,
 * unsynced batch or request in flight) moves to the running policy before
 * its next statement, when the masks it would have are the same (its
 * masked-column lineage was read from the catalog for those) and
 * enforcer_adopt_live() agrees (same upstream settings, target still
 * granted, not observe -> enforce). psql and psycopg2 sessions are such
 * sessions between statements; one holding prepared statements stays on
 * its policy, and is refused statements when that policy's rules for the
 * agent are not the running one's (pinned_rules_same()).
 */
static void adopt_policy(struct conn *c)
{
	struct pg_sess *s = S(c);
	const struct policy *live = __atomic_load_n(&E->policy, __ATOMIC_ACQUIRE), *old = c->policy;
	const struct policy_rule *ra[2 * ENFORCER_MAX_RULES], *rb[2 * ENFORCER_MAX_RULES];
	size_t na, nb;

	/* the unnamed statement is left behind by every extended-protocol
	 * query (psycopg 3, asyncpg, pgx, JDBC): it is dropped on adoption,
	 * so it cannot be bound again under the new policy (the client
	 * parses it again, as it normally does) */
	bool unnamed_only = s->stmts.n == 1 && map_get(&s->stmts, "");

	if (live == old || s->tx != 'I' || s->qlen || (s->stmts.n && !unnamed_only) || s->portals.n ||
	    s->unsynced || s->skip_to_sync)
		return;
	/* masks compiled for other rules than the identity's now: the session
	 * stays where it is, and rules_unchanged() refuses its statements */
	na = enforcer_rules_for(old, c->agent_idx, c->target_idx, ra, ENFORCER_MAX_RULES);
	if (na > ENFORCER_MAX_RULES || !rules_unchanged(c, ra, na, NULL, 0))
		return;
	na = mask_rules_of(c, old, ra);
	nb = mask_rules_of(c, live, rb);
	if (s->nadefer)
		audit_deferred_flush(c);   /* events of statements run under the old policy name it */
	if (!masks_same(ra, na, rb, nb) || !enforcer_adopt_live(c, live, false))
		return;
	if (unnamed_only)
		judged_put(map_set(&s->stmts, "", NULL, NULL));
	s->gen = policy_gen(c->policy);   /* the verdict cache follows the policy */
	note_rules(c);   /* its pointers: the same masks, under the running policy */
}

/*
 * A message the agent announces bigger than the usual input buffer
 * (CONN_IN_MAX) grows that buffer up to its size (PG_MSG_MAX). One that
 * never comes whole would hold the memory as long as the agent keeps the
 * connection: it must be whole PG_BIG_MSG_MS after its first byte was read
 * (counted from then, so trickling it does not extend that; an agent is a
 * local process, which sends 16 MiB in milliseconds), or the session ends
 * with FATAL 08P01 (pg_on_deadline()). The clock restarts for each new
 * message, and while conn.c reads nothing (an output over CONN_OUT_HIGH:
 * the wait is not the agent's). size: the partial message's size, 0 when
 * none waits to be completed; completed: a message was completed in this
 * read (a partial one now is another). Only while the session is ready:
 * the startup has its own clock (start_clock()). The deadline is ours while
 * deadline_why is BIG_WHY (other setters set their own).
 */
static const char BIG_WHY[] = "the agent did not complete a large message in time";

static void big_stop(struct conn *c)
{
	struct pg_sess *s = S(c);

	if (!s->big_since_ms)
		return;
	if (c->deadline_why == BIG_WHY) {
		c->deadline_ms = 0;
		c->deadline_why = NULL;
	}
	s->big_since_ms = 0;
	change_clock(c);
}

static void big_clock(struct conn *c, uint32_t size, bool completed)
{
	struct pg_sess *s = S(c);

	if (completed || size <= CONN_IN_MAX)
		big_stop(c);
	if (size > CONN_IN_MAX && !s->big_since_ms) {
		s->big_since_ms = now_ns_mono() / 1000000ull;
		s->big_size = size;
		c->deadline_ms = s->big_since_ms + PG_BIG_MSG_MS;
		c->deadline_why = BIG_WHY;
	}
}

static int process_agent(struct conn *c)
{
	struct pg_sess *s = S(c);
	const uint8_t *in;
	uint32_t len, used = 0;
	struct pg_msg m;
	int n, err = 0;
	bool partial = false, refresh = false;

	if (s->terminating) {   /* after Terminate: nothing more is the session's */
		conn_in(c, SIDE_AGENT, &len);
		conn_in_consume(c, SIDE_AGENT, len);
		return 0;
	}
	if (c->policy != __atomic_load_n(&E->policy, __ATOMIC_RELAXED))
		adopt_policy(c);
	in = conn_in(c, SIDE_AGENT, &len);
	while (s->phase == PH_READY && used < len) {
		if (s->qlen + 2 > PG_PEND_MAX || s->copy_wait) {
			c->in_waits[SIDE_AGENT] = true;
			break;   /* resumed when the server's answers drain the queue */
		}
		n = frame_or_grow(c, SIDE_AGENT, in + used, len - used, &m);
		if (n == -EMSGSIZE) {
			if (used)
				conn_in_consume(c, SIDE_AGENT, used);
			return too_large(c, pg_frame_size(in + used, len - used));
		}
		if (n < 0) {
			err = n == -EBADMSG ? fatal(c, "08P01", "agentgate: malformed message") : n;
			break;
		}
		if (n == 0) {
			partial = true;
			break;
		}
		if (m.type == 'Q' || m.type == 'P') {
			/* at most one read per statement: changes made while
			 * it ran would otherwise hold this one back for good */
			if (!s->just_refreshed && refresh_due(c)) {
				refresh = true;   /* judged once the names are read again */
				c->in_waits[SIDE_AGENT] = true;   /* a full buffer is not an oversized message */
				break;
			}
			s->tried_for_stmt = s->just_refreshed;
			s->fresh_for_stmt = s->just_refreshed && s->refresh_ok;
			s->just_refreshed = false;
		}
		err = fe_message(c, &m);
		s->fresh_for_stmt = s->tried_for_stmt = false;
		if (err == PG_REDO) {   /* judge(): a relation the lineage does not know */
			err = 0;
			refresh = true;
			c->in_waits[SIDE_AGENT] = true;
			break;
		}
		used += (uint32_t)n;
		if (err)
			break;
	}
	if (used && s->phase != PH_DONE)
		conn_in_consume(c, SIDE_AGENT, used);
	big_clock(c, !err && partial && s->phase == PH_READY ? pg_frame_size(in + used, len - used) : 0,
		  used > 0);
	if (!err && s->phase == PH_READY && !s->big_since_ms)
		conn_in_release(c, SIDE_AGENT);   /* no big message waits: its buffer goes */
	/* The agent finished sending: once all it sent went on, the server
	 * may finish too. A message it cut short never will come whole, and
	 * the server, never sent any of it, would wait for the next one for
	 * good, holding the connection (and the agent's limits.connections
	 * slot, and a backend): it is dropped, and the server told the same. */
	if (!err && s->phase == PH_READY && conn_in_eof(c, SIDE_AGENT) && (used == len || partial))
		conn_shutdown(c, SIDE_UP);
	if (!err && refresh && s->phase == PH_READY)
		err = start_refresh(c);
	return err;
}

/* ---- the session: server -> agent ----------------------------------------------------- */

/* Pops the errored request p and everything the server skips after it up
 * to the next Sync, undoing their table changes newest first. */
static void server_skipped(struct pg_sess *s)
{
	struct pg_pend *p;
	uint32_t k = 1;

	while (k < s->qlen && pend_at(s, k)->kind != 'S')
		k++;
	for (uint32_t i = k; i-- > 1;)
		pend_undo(s, pend_at(s, i), true);
	/* The failed request itself: a failed Parse or Bind creates nothing. A
	 * named statement or portal that existed stays (42P05/42P03); an unnamed
	 * one is gone (the server drops it before parsing or binding; for a
	 * Bind that failed early it may survive, and then we refuse to use it:
	 * the safe side). */
	p = pend_at(s, 0);
	if (p->kind == 'P' || p->kind == 'B')
		pend_undo(s, p, p->undo_name && p->undo_name[0]);
	else
		pend_undo(s, p, true);
	for (uint32_t i = 0; i < k; i++)
		pend_pop(s);
	if (s->qlen == 0)
		s->skip_to_sync = true;   /* no Sync sent yet: later messages would be skipped too */
}

static bool portal_live(void *val, void *arg)
{
	return ((struct pg_portal *)val)->epoch > *(uint32_t *)arg;
}

/*
 * A simple Query's current statement (p->stmt) ended: CommandComplete, or
 * an ErrorResponse (error). The server answers the statements of a Query
 * in order, each ending with its CommandComplete, so rows and the masking
 * plan so far are this statement's. Its event goes out now, except the
 * last statement's after a CommandComplete: that waits for ReadyForQuery,
 * since an error at the implicit COMMIT that follows is still its own.
 */
static void query_stmt_end(struct conn *c, struct pg_pend *p, bool error)
{
	struct pg_sess *s = S(c);

	if (p->audited || !p->j || p->j->nstmts == 0)
		return;
	/* the last one's event waits for ReadyForQuery, unless our failing
	 * statement follows it (query_prefix(): it ends the statements sent,
	 * whose events are out, and the others' are query_end()'s) */
	if (!error && !p->denied_rest && p->stmt >= p->j->nstmts - 1)
		return;
	if (p->stmt < (p->denied_rest ? p->j->ran : p->j->nstmts))
		audit_stmt_at(c, p->j, p->stmt, "simple", true, NULL, NULL, p, s->qplan);
	p->stmt++;
	p->rows = 0;
	p->sqlstate[0] = '\0';
	p->start_ns = now_ns_mono();
	plan_free(s->qplan);
	s->qplan = NULL;
}

/* ReadyForQuery ends a simple Query: the events not out yet (the last
 * statement's; those the server skipped after an error). */
static void query_end(struct conn *c, struct pg_pend *p)
{
	struct pg_sess *s = S(c);
	const struct pg_judged *j = p->j;

	p->audited = true;
	if (!j || j->nstmts == 0) {
		audit_stmt_at(c, j, -1, "simple", true, NULL, NULL, p, s->qplan);
		return;
	}
	if (p->denied_rest) {
		/* the statements sent (query_prefix()) that did not run (one of
		 * them failed), then those that were not sent: not allowed */
		for (; p->stmt < j->ran; p->stmt++)
			audit_stmt_at(c, j, p->stmt, "simple", true,
				      "not run: an earlier statement of this message failed", NULL, NULL, NULL);
		for (int i = j->ran; i < j->nstmts; i++)
			audit_stmt_at(c, j, i, "simple", false, NULL, NULL, NULL, NULL);
		return;
	}
	/* the last statement, run: the usual one-statement query; its event
	 * can wait (audit_ended()), none of "not run" follows it */
	if (!p->errored && p->stmt == j->nstmts - 1) {
		audit_ended(c, p, p->stmt++, true, s->qplan);
		return;
	}
	if (!p->errored && p->stmt < j->nstmts)
		audit_stmt_at(c, j, p->stmt++, "simple", true, NULL, NULL, p, s->qplan);
	audit_stmts_from(c, j, p->stmt, "simple", true,
			 p->errored ? "not run: an earlier statement of this message failed"
				    : "not run: the server answered fewer statements than the message holds",
			 NULL, NULL);
}

static int be_error(struct conn *c, const struct pg_msg *m, struct pg_pend *p)
{
	struct pg_sess *s = S(c);
	const char *code = pg_fields_get(m, 'C');
	int err;

	if (!p) {
		/* Only a FATAL (an idle timeout, a shutdown) comes unasked: an
		 * ERROR for no request means our model of the session and the
		 * server's have parted, and what the server skips next is not
		 * what we would (review, stop 27) */
		const char *sev = pg_fields_get(m, 'V');

		if (!sev || (strcmp(sev, "FATAL") != 0 && strcmp(sev, "PANIC") != 0))
			return fatal(c, "08P01", "agentgate: the server reported an error for no request");
	}
	if (p && code)
		snprintf(p->sqlstate, sizeof(p->sqlstate), "%.5s", code);
	/* a stand-in's error, or that of PG_DENY_TAIL after the statements of
	 * a Query that ran (query_prefix()): the denial */
	if (p && (p->standin || (p->denied_rest && p->stmt >= p->j->ran))) {
		pg_out_denied(&s->out, p->deny ? p->deny : "not allowed", p->deny_detail);
		err = send_out(c, SIDE_AGENT);
	} else {
		if (fields_masked(s)) {
			err = mask_fields(s, m);
			if (!err)
				err = send_out(c, SIDE_AGENT);
		} else
			err = conn_send(c, SIDE_AGENT, m->body - 5, m->len + 5);
	}
	if (!p)
		return err;
	p->errored = true;
	if (p->kind == 'Q' && !p->standin)
		query_stmt_end(c, p, true);
	if (p->kind == 'Q' || p->kind == 'S')
		return err;    /* a Query (or a failing commit at Sync) still ends with 'Z' */
	if (p->kind == 'E')
		audit_stmt_at(c, p->j, 0, "extended", true, NULL, NULL, p, p->portal ? p->portal->plan : NULL);
	server_skipped(s);
	return err;
}

static int be_ready(struct conn *c, const struct pg_msg *m)
{
	struct pg_sess *s = S(c);
	struct pg_pend *p;
	char st;
	int err = 0;
	bool sent = false;

	if (pg_parse_ready(m, &st))
		return -EBADMSG;
	/* What it changed may have become visible just now (outside a
	 * transaction: its own end, or a COMMIT); once everything it sent is
	 * answered that way, nothing more can (review: a bump at every
	 * ReadyForQuery made each new session stale right after it began).
	 * Before the agent has the ReadyForQuery: its next statement on
	 * another session must find the change done. */
	if ((s->names_changer || s->rel_changer) && st == 'I') {
		uint32_t i = 0;

		while (i < s->qlen && pend_at(s, i)->kind != 'S' && pend_at(s, i)->kind != 'Q')
			i++;
		if (s->names_changer) {
			names_bump(c);
			if (i + 1 >= s->qlen)   /* nothing sent after what this answers */
				names_change_done(c, s);
		}
		if (s->rel_changer) {
			rels_bump(c);
			if (i + 1 >= s->qlen)
				s->rel_changer = false;
		}
	}
	/* The last message read: the agent's answer is complete, so it goes
	 * out now, before the statement's audit event is built, which then
	 * costs the agent no time. What is queued goes with it, in one
	 * sendmsg, as it would have right after this. */
	if (s->up_last) {
		err = conn_send_now(c, SIDE_AGENT, m->body - 5, m->len + 5);
		sent = true;
	}
	/* the request it answers: a Sync or a Query (anything before it was
	 * skipped by the server) */
	while (s->qlen && (p = pend_at(s, 0))->kind != 'S' && p->kind != 'Q') {
		pend_undo(s, p, true);
		pend_pop(s);
	}
	if (s->qlen) {
		p = pend_at(s, 0);
		if (p->kind == 'Q' && !p->standin && !p->audited)
			query_end(c, p);
		if (st == 'I') {
			uint32_t epoch = p->epoch;

			map_clear(&s->portals, portal_live, &epoch);
		}
		pend_pop(s);
	}
	plan_free(s->qplan);
	s->qplan = NULL;
	s->tx = st;
	if (!sent)
		return conn_send(c, SIDE_AGENT, m->body - 5, m->len + 5);
	if (s->nadefer)
		conn_want_idle(c);
	return err;
}

/* Whether a server message of type t can answer pending request p: a
 * mismatch means our model and the server disagree, and the session ends
 * rather than attribute rows to the wrong statement. */
static bool answers(const struct pg_pend *p, char t)
{
	switch (t) {
	case '1':
		return p->kind == 'P';
	case '2':
		return p->kind == 'B';
	case '3':
		return p->kind == 'C';
	case 't':
		return p->kind == 'D' && p->sub == 'S' && !p->got_paramdesc;
	case 'n':
		return p->kind == 'D' && (p->sub == 'P' || p->got_paramdesc);
	case 'T':
		return p->kind == 'Q' || (p->kind == 'D' && (p->sub == 'P' || p->got_paramdesc));
	case 's':
		return p->kind == 'E';
	case 'I': case 'C': case 'D': case 'G': case 'H': case 'd': case 'c':
		return p->kind == 'E' || p->kind == 'Q';
	case 'V':
		return p->kind == 'Q';   /* FunctionCallResponse, observe mode only */
	}
	return false;
}

static int be_message(struct conn *c, const struct pg_msg *m)
{
	struct pg_sess *s = S(c);
	struct pg_pend *p = s->qlen ? pend_at(s, 0) : NULL;
	const char *n;
	int err = 0;

	switch (m->type) {
	case 'E':
		copy_sync(s, 'E');
		return be_error(c, m, p);
	case 'Z':
		copy_sync(s, 'Z');
		return be_ready(c, m);
	case 'S':
		if ((err = param_seen(c, m)) <= 0)
			return err;
		err = 0;
		break;
	case 'N':
		if (fields_masked(s)) {
			err = mask_fields(s, m);
			return err ? err : send_out(c, SIDE_AGENT);
		}
		break;
	case 'A':
		if (catalog_notice(c, m))
			return 0;
		if (s->mask_active && mask_has_detectors(s->mask)) {
			err = mask_notification(s, m);
			return err ? err : send_out(c, SIDE_AGENT);
		}
		break;
	case 'W':
		return fatal(c, "08P01", "agentgate: replication (CopyBoth) is not allowed");
	case '1': case '2': case '3': case 'n': case 't': case 'T': case 'I': case 's':
	case 'C': case 'D': case 'G': case 'H': case 'd': case 'c': case 'V':
		if (!p || !answers(p, m->type))
			return fatal(c, "08P01", "agentgate: server message '%c' answers no pending request",
				     m->type);
		if (p->standin)
			return 0;   /* nothing but the error is ever shown for a stand-in */
		switch (m->type) {
		case 'G':
			/* the server now reads the agent's messages as COPY data:
			 * only where we hold them back for it (copy_sync()) */
			if (!s->copy_wait)
				return fatal(c, "08P01", "agentgate: the server started a COPY FROM STDIN "
					     "that was not expected");
			copy_sync(s, 'G');
			break;
		case '1': case '2': case '3':
			if (p->kind == 'P' || p->kind == 'B' || p->kind == 'C')
				pend_pop(s);
			break;
		case 'H':
			/* COPY TO STDOUT: text rows are scanned by the detectors
			 * (below); binary COPY cannot be, so it is not let out */
			if (s->mask_active && mask_has_detectors(s->mask) && m->len >= 1 && m->body[0] != 0)
				return fatal(c, "42501", "agentgate: denied: binary COPY output cannot be masked");
			break;
		case 'd':
			if (s->mask_active && mask_has_detectors(s->mask)) {
				size_t cap = mask_value_bound(m->len), n;
				char *buf = malloc(cap);

				if (!buf)
					return -ENOMEM;
				n = mask_value(s->mask, (const char *)m->body, m->len, buf, cap, NULL);
				/* a row holding escapes that spell what the detectors
				 * mask (CSV keeps a json value's "\u0040", the text
				 * format writes "\\u0040": mask_escapes_hide() undoes
				 * both): not masked in place, so not let out (mask_row()) */
				if (n == (size_t)-1 || (err = mask_escapes_hide(s->mask, buf, n)) != 0) {
					free(buf);
					if (n == (size_t)-1 || err < 0)
						return -ENOMEM;
					return fatal(c, "42501", "agentgate: denied: a COPY row holds escapes that "
						     "spell what the detectors mask, and cannot be masked");
				}
				pg_out_begin(&s->out, 'd');
				pg_out_bytes(&s->out, buf, n);
				pg_out_end(&s->out);
				free(buf);
				return send_out(c, SIDE_AGENT);
			}
			break;
		case 't':
			p->got_paramdesc = true;
			break;
		case 'T': {
			struct pg_plan *plan = NULL;
			bool hidden = p->hidden;

			if (p->kind == 'Q' || (p->kind == 'D' && p->portal))
				err = plan_for(s, m, p->portal, &plan);
			if (err)
				return fatal(c, "XX000", "agentgate: cannot read the result's description (%s): "
					     "result refused", strerror(-err));
			if (p->kind == 'Q') {
				plan_free(s->qplan);
				s->qplan = plan;
				s->qncols = msg_count(m);
			} else if (p->kind == 'D' && p->portal) {
				plan_free(p->portal->plan);
				p->portal->plan = plan;
				p->portal->described = true;
				p->portal->ncols = msg_count(m);
				p->portal->ans_epoch = p->sql_epoch;
			}
			if (p->kind == 'D')
				pend_pop(s);
			if (hidden)
				return 0;   /* our own Describe: the agent did not ask */
			break;
		}
		case 'n': {
			bool hidden = p->hidden;

			if (p->kind == 'D' && p->portal) {
				p->portal->described = true;
				p->portal->ncols = 0;
				p->portal->ans_epoch = p->sql_epoch;
			}
			if (p->kind == 'D')
				pend_pop(s);
			if (hidden)
				return 0;
			break;
		}
		case 'D': {
			struct pg_plan *plan = p->kind == 'Q' ? s->qplan : p->portal ? p->portal->plan : NULL;

			/* Masking needs the row's description; an Execute always has
			 * one (fe_execute asks for it). Should a row come without,
			 * or with one answered before SQL ran that may have made
			 * the portal another (the Describe sent since was skipped
			 * by the server), it is refused, not passed. */
			if (s->mask_active && p->kind == 'E' && !described_now(p))
				return fatal(c, "XX000", "agentgate: a row arrived without its description: "
					     "result refused");
			/* a row that is not the shape of its description is another
			 * result than the one the plan (or its absence) was made for */
			if (s->mask_active && !plan &&
			    msg_count(m) != (p->kind == 'E' ? p->portal->ncols : s->qncols))
				return fatal(c, "XX000", "agentgate: a row does not match its description: "
					     "result refused");
			p->rows++;
			if (plan) {
				err = mask_row(s, m, plan);
				if (err)
					return fatal(c, "XX000", "agentgate: cannot mask a row (%s): result ended",
						     strerror(-err));
				return send_out(c, SIDE_AGENT);
			}
			break;
		}
		case 'C': case 'I': case 's':
			if (m->type == 'C' && pg_parse_command_complete(m, &n) == 0 &&
			    (!strncmp(n, "DEALLOCATE", 10) || !strncmp(n, "DISCARD", 7))) {
				/* the server dropped prepared statements; we forget them
				 * all (a Bind to one we forgot is refused: safe side) */
				map_clear(&s->stmts, NULL, NULL);
			}
			if (p->kind == 'E') {
				audit_execute(c, p);
				pend_pop(s);
			} else if (p->kind == 'Q' && m->type == 'C') {
				query_stmt_end(c, p, false);
			}
			break;
		}
		break;
	default:
		return fatal(c, "08P01", "agentgate: unexpected server message '%c'", m->type);
	}
	return conn_send(c, SIDE_AGENT, m->body - 5, m->len + 5);
}

/*
 * A server message over PG_MSG_MAX (a value can be up to 1 GB) cannot be
 * held whole. A DataRow that nothing in its result masks, or CopyData when
 * no detector scans it, needs no look inside: it is passed on as it comes
 * (s->up_pass counts what is left of it), a buffer at a time, under the
 * usual backpressure. Anything else that large is refused: a row to mask
 * must be whole (fail closed). True when the message at hdr (5 header
 * bytes there) may be passed on.
 */
static bool up_passable(struct pg_sess *s, const uint8_t *hdr)
{
	struct pg_pend *p = s->qlen ? pend_at(s, 0) : NULL;

	if (s->phase != PH_READY || !p || p->standin || !answers(p, (char)hdr[0]) ||
	    pg_frame_size(hdr, 5) > (1u << 30) + 5)   /* the server's own limit: 1 GB */
		return false;
	if (hdr[0] == 'D') {
		if (s->mask_active && p->kind == 'E' && !described_now(p))
			return false;
		return !(p->kind == 'Q' ? s->qplan : p->portal ? p->portal->plan : NULL);
	}
	if (hdr[0] == 'd')
		return !(s->mask_active && mask_has_detectors(s->mask));
	return false;
}

/* Passes on up to the rest of an oversized message (s->up_pass bytes). */
static int up_pass_on(struct conn *c, const uint8_t *in, uint32_t len, uint32_t *used)
{
	struct pg_sess *s = S(c);
	uint32_t k = len < s->up_pass ? len : s->up_pass;

	s->up_pass -= k;
	*used += k;
	return k ? conn_send(c, SIDE_AGENT, in, k) : 0;
}

static int process_upstream(struct conn *c)
{
	struct pg_sess *s = S(c);
	const uint8_t *in;
	uint32_t len, used = 0;
	struct pg_msg m;
	int n, err = 0;

	/* reading the names again is paid from the agent's parse budget
	 * (refresh_due()): one clock read per batch of the answer */
	uint64_t refresh_t0 = s->phase == PH_UP_REFRESH ? thread_cpu_ns() : 0;

	in = conn_in(c, SIDE_UP, &len);
	if (s->up_pass && s->phase == PH_READY)
		err = up_pass_on(c, in, len, &used);
	while (!err && !s->up_pass && used < len && s->phase != PH_DONE) {
		if (s->phase == PH_UP_SSL)
			break;
		n = frame_or_grow(c, SIDE_UP, in + used, len - used, &m);
		if (n == -EMSGSIZE && up_passable(s, in + used)) {
			uint32_t size = pg_frame_size(in + used, len - used);

			if (in[used] == 'D')
				pend_at(s, 0)->rows++;
			s->up_pass = size;
			err = up_pass_on(c, in + used, len - used, &used);
			break;
		}
		if (n == -EMSGSIZE) {
			err = fatal(c, "54000", "agentgate: the server sent a message of %u bytes, over the limit of %u "
				    "for one that must be inspected whole", pg_frame_size(in + used, len - used),
				    PG_MSG_MAX);
			break;
		}
		if (n < 0) {
			err = n == -EBADMSG ? fatal(c, "08P01", "agentgate: malformed message from the server") : n;
			break;
		}
		if (n == 0)
			break;
		used += (uint32_t)n;
		s->up_last = used == len;
		switch (s->phase) {
		case PH_UP_AUTH:
			if (m.type == 'R')
				err = up_auth(c, &m);
			else if (m.type == 'E')
				err = auth_fail(c, pg_fields_get(&m, 'M') ? pg_fields_get(&m, 'M') : "server error");
			else if (m.type == 'v' || m.type == 'N')
				err = 0;
			else
				err = fatal(c, "08P01", "agentgate: unexpected message '%c' during authentication",
					    m.type);
			break;
		case PH_UP_PARAMS:
			err = up_params(c, &m);
			break;
		case PH_UP_CATALOG:
			err = up_catalog(c, &m);
			break;
		case PH_UP_REFRESH:
			err = up_refresh(c, &m);
			break;
		case PH_READY:
			err = be_message(c, &m);
			break;
		default:
			err = fatal(c, "08P01", "agentgate: unexpected data from the server");
			break;
		}
		if (err)
			break;
	}
	if (used && s->phase != PH_DONE)
		conn_in_consume(c, SIDE_UP, used);
	if (!err && s->phase != PH_DONE) {
		/* no big message waits: a big one's buffer goes */
		in = conn_in(c, SIDE_UP, &len);
		if (len < 5 || pg_frame_size(in, len) <= CONN_IN_MAX)
			conn_in_release(c, SIDE_UP);
	}
	if (s->nadefer) {   /* a batch without its ReadyForQuery: its answers go out first */
		conn_flush(c, SIDE_AGENT);
		conn_want_idle(c);
	}
	if (refresh_t0)
		conn_parse_spent(c, thread_cpu_ns() - refresh_t0);
	return err;
}

/* ---- proto_ops ------------------------------------------------------------------------- */

/* The session's masks: the union over the agent's rules for the target and,
 * with delegation, the user's (DESIGN §3: masks are the union). */
static int compile_masks(struct conn *c)
{
	struct pg_sess *s = S(c);
	const struct policy_rule *rules[2 * ENFORCER_MAX_RULES];
	const struct policy_mask *masks[2 * ENFORCER_MAX_RULES];
	size_t nr = mask_rules_of(c, c->policy, rules);
	char merr[200];

	for (size_t i = 0; i < nr; i++)
		masks[i] = &rules[i]->mask;
	mask_free(s->mask);
	s->mask = mask_compile(masks, nr, merr, sizeof(merr));
	if (!s->mask)
		return -ENOMEM;
	s->mask_active = !mask_is_empty(s->mask);
	c->costly = s->mask_active;   /* masking time is charged to the agent (conn.h) */
	note_rules(c);
	return 0;
}

static int pg_start(struct conn *c)
{
	struct pg_sess *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	c->proto_state = s;
	s->tx = 'I';
	s->serial = __atomic_add_fetch(&sess_serial, 1, __ATOMIC_RELAXED);
	s->sql_epoch = 1;
	s->portals.portals = true;
	pg_out_init(&s->out, PG_MSG_MAX + 1024);
	s->gen = policy_gen(c->policy);
	if (compile_masks(c))
		return -ENOMEM;   /* fail closed: no session without its masks */
	return conn_stream(c);
}

static int pg_on_agent_data(struct conn *c)
{
	struct pg_sess *s = S(c);

	switch (s->phase) {
	case PH_AGENT_STARTUP:
		return agent_startup(c);
	case PH_AGENT_AUTH:
		return agent_auth(c);
	case PH_READY:
		return process_agent(c);
	case PH_UP_REFRESH:
		c->in_waits[SIDE_AGENT] = true;   /* read once the names are in */
		return 0;
	case PH_DISCARD:
		return discard_agent(c);
	case PH_DONE:
		return 0;
	default:
		/* authenticating upstream: the agent waits (anything it pipelined
		 * stays buffered until the session is ready) */
		return 0;
	}
}

/* verify-full: the chain (CA file) and the name; require with a ca_file:
 * the chain. Checked after the handshake. */
static bool up_tls_verified(struct conn *c, char *why, size_t whylen)
{
	SSL *ssl = c->side[SIDE_UP].ssl;
	X509 *peer;
	long v;

	if (!tls_checks_chain(c))
		return true;
	peer = SSL_get1_peer_certificate(ssl);
	if (!peer) {
		snprintf(why, whylen, "the server presented no certificate");
		return false;
	}
	X509_free(peer);
	v = SSL_get_verify_result(ssl);
	if (v != X509_V_OK) {
		snprintf(why, whylen, "certificate verify failed: %s", X509_verify_cert_error_string(v));
		return false;
	}
	return true;
}

/* The answer to DISCARD ALL after the agent's Terminate: CommandComplete,
 * perhaps ParameterStatus (settings back to their startup values), then
 * ReadyForQuery 'I' -> the pool. Anything else: the session ends as the
 * agent asked. The agent's side closes either way. */
static int pool_reset_answer(struct conn *c)
{
	struct pg_sess *s = S(c);
	const uint8_t *in;
	uint32_t len, used = 0;
	struct pg_msg m;
	const char *nm, *v;
	char st;
	int n = 0;

	in = conn_in(c, SIDE_UP, &len);
	while (used < len && (n = pg_frame(in + used, len - used, PG_MSG_MAX, &m)) > 0) {
		used += (uint32_t)n;
		switch (m.type) {
		case 'C': case 'N': case 'A':   /* 'A': ours, heard before DISCARD ALL took the LISTEN away */
			continue;
		case 'S':
			if (pg_parse_param_status(&m, &nm, &v) || !param_ok(nm, v) ||
			    params_set(s, m.body - 5, m.len + 5) || s->no_pool)
				goto end;
			continue;
		case 'Z':
			if (pg_parse_ready(&m, &st) || st != 'I' || used != len)
				goto end;
			conn_in_consume(c, SIDE_UP, used);
			c->deadline_ms = 0;
			if (pool_put(c))
				goto end;
			s->phase = PH_DONE;
			conn_finish(c);
			return 0;
		default:
			goto end;
		}
	}
	if (n < 0)
		goto end;
	conn_in_consume(c, SIDE_UP, used);
	if (!conn_in_eof(c, SIDE_UP))
		return 0;
end:
	conn_in(c, SIDE_UP, &len);
	conn_in_consume(c, SIDE_UP, len);
	pg_out_simple(&s->out, 'X');
	send_out(c, SIDE_UP);
	conn_shutdown(c, SIDE_UP);
	s->phase = PH_DONE;
	conn_finish(c);
	return 0;
}

static int pg_on_upstream_data(struct conn *c)
{
	struct pg_sess *s = S(c);
	char why[256];
	int err;

	switch (s->phase) {
	case PH_UP_CONNECT:
		/* a cancel goes through the same TLS rules as a session */
		return up_connected(c);
	case PH_UP_SSL:
		return up_ssl_answer(c);
	case PH_UP_TLS:
		if (!conn_tls_ready(c, SIDE_UP))
			return 0;
		if (!up_tls_verified(c, why, sizeof(why))) {
			/* a wrong ca_file or a server impersonated: the operator's to see */
			ag_log(LOG_LVL_WARN, "postgres: target '%s': upstream TLS (tls: %s%s): %s", target(c)->name,
			       tls_mode(c), policy_tls_check(&target(c)->upstream) == POLICY_TLS_CHAIN ?
			       ", chain checked against ca_file" : "", why);
			audit_refuse(c, why);
			return fatal(c, "08001", "agentgate: upstream TLS for target \"%s\": %s", target(c)->name, why);
		}
		return send_startup(c);
	case PH_POOL_RESET:
		return pool_reset_answer(c);
	case PH_DISCARD:
	case PH_DONE: {
		uint32_t len;

		/* the server's last words after Terminate: not the agent's */
		conn_in(c, SIDE_UP, &len);
		if (s->phase == PH_DISCARD)
			conn_in_consume(c, SIDE_UP, len);
		return 0;
	}
	default:
		break;
	}
	err = process_upstream(c);
	if (!err && s->phase == PH_READY)
		err = process_agent(c);   /* input held back while the queue was full or before ready */
	if (!err && s->phase != PH_DONE && conn_in_eof(c, SIDE_UP)) {
		if (!s->terminating)
			snprintf(c->why, sizeof(c->why), "the server closed the connection");
		conn_finish(c);
		s->phase = PH_DONE;
	}
	return err;
}

static void pg_release(struct conn *c)
{
	struct pg_sess *s = c->proto_state;

	if (!s)
		return;
	if (s->names_changer) {
		names_bump(c);   /* ended before its change was seen done: it may be now */
		names_change_done(c, s);
	}
	if (s->rel_changer)
		rels_bump(c);
	if (s->cancel_registered)
		cancel_del(s->our_pid);
	audit_deferred_flush(c);   /* nothing deferred outlives a batch; to be sure */
	while (s->qlen)
		pend_pop(s);
	free(s->q);
	map_clear(&s->stmts, NULL, NULL);
	map_clear(&s->portals, NULL, NULL);
	plan_free(s->qplan);
	wipe_password(s);
	pg_out_free(&s->out);
	free(s->negotiate_buf);
	free(s->deleg_revoked);
	free(s->startup);
	free(s->params);
	free(s->cols);
	free(s->prev_cols);   /* ended during a refresh */
	free(s->col_found);
	strv_free(s->names, s->nnames);
	free(s->kinds);
	strv_free(s->prev_names, s->prev_nnames);   /* ended during a refresh */
	free(s->prev_kinds);
	strv_free(s->rels, s->nrels);
	strv_free(s->rels_new, s->nrels_new);   /* ended during a read */
	free(s->cat_v);
	free(s->afrag);
	mask_free(s->mask);
	free(s);
	c->proto_state = NULL;
}

/* Between events, every 0.2 s: the message builder does not keep what a
 * burst grew it to, and a delegated session whose user's key the issuer
 * withdrew ends (deleg_state()). */
static void pg_trim(struct conn *c)
{
	struct pg_sess *s = S(c);
	char why[300];

	pg_out_trim(&s->out, 4096);
	/* a session holding a user token whose key the issuer withdrew ends
	 * now, not at the agent's next message: an idle one, one in COPY FROM
	 * STDIN (whose rows pass no statement check) */
	if (s->has_deleg && s->phase == PH_READY && deleg_state(c, why, sizeof(why)) == DELEG_REVOKED &&
	    stale_ends(c, STALE_ALWAYS) && enforcer_should_refuse(c, why))
		fatal(c, "57P01", "agentgate: %s", why);   /* the Close event says why */
}

/* conn.c's deadline passed: a large message never completed (big_clock())
 * ends the session with an error the agent can read; any other deadline
 * (the startup's, the pool's) closes the connection. */
static bool pg_on_deadline(struct conn *c)
{
	struct pg_sess *s = S(c);

	if (s && c->deadline_why == CHANGE_WHY) {
		c->deadline_ms = 0;
		c->deadline_why = NULL;
		if (s->names_changer && s->phase != PH_DONE) {
			/* as pg_release() would, before the agent reads why: the
			 * others need not wait for the connection to go */
			names_bump(c);
			names_change_done(c, s);
			fatal(c, "57P05", "agentgate: this session's change of functions, operators or types "
			      "was not seen done within %llu s (while one is open, every session of the "
			      "database denies unqualified built-ins); the session is closed",
			      (unsigned long long)(change_open_ms() / 1000));
		}
		return true;
	}

	if (s && c->hold_ms && (s->phase == PH_POOL_RESET || (s->phase >= PH_UP_CONNECT && s->phase <= PH_UP_CATALOG) ||
				(s->phase == PH_READY && c->deadline_why != BIG_WHY))) {
		/* The startup's, the catalog query's or the pool's clock waits
		 * for the server, whose answer conn.c is not reading while the
		 * agent's masking is paced (conn.h hold_ms): the delay is the
		 * agent's; the clock starts again (a big message's clock and
		 * PH_DISCARD's are the agent's own) */
		c->deadline_ms = now_ns_mono() / 1000000ull +
				 (s->phase == PH_POOL_RESET ? PG_POOL_RESET_MS : PG_START_MS);
		return true;
	}
	if (!s || !s->big_since_ms || s->phase != PH_READY || c->deadline_why != BIG_WHY)
		return false;
	if (conn_out_pending(c, SIDE_UP) > CONN_OUT_HIGH) {
		/* conn.c is not reading because the server is slow to take what
		 * was forwarded: the agent gets the time again (a backlog towards
		 * the agent is its own doing and does not count) */
		s->big_since_ms = now_ns_mono() / 1000000ull;
		c->deadline_ms = s->big_since_ms + PG_BIG_MSG_MS;
		c->deadline_why = BIG_WHY;
		return true;
	}
	fatal(c, "08P01", "agentgate: a message of %u bytes was not complete %u s after its first byte",
	      s->big_size, (unsigned)(PG_BIG_MSG_MS / 1000));
	s->big_since_ms = 0;
	return true;
}

const struct proto_ops proto_pg_ops = {
	.name = "postgres",
	.enforces_rules = true,
	.start = pg_start,
	.on_agent_data = pg_on_agent_data,
	.on_upstream_data = pg_on_upstream_data,
	.release = pg_release,
	.on_upstream_fail = pg_upstream_fail,
	.on_deadline = pg_on_deadline,
	.trim = pg_trim,
	.idle = audit_deferred_flush,
};
