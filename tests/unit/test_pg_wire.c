// SPDX-License-Identifier: Apache-2.0
/* Unit tests for userspace/pg_wire.c: framing, startup packets, message
 * bodies, builders, md5 and SCRAM-SHA-256 (RFC 7677 vector). With
 * --write-corpus DIR the agent- and server-controlled inputs are kept as
 * seeds for tests/fuzz/fuzz_pg_wire.c (first byte: which parser). */
#include "unit.h"
#include "pg_wire.h"

/* Seeds for the fuzzer: mode byte + bytes (see fuzz_pg_wire.c). */
static void seed(const char *name, uint8_t mode, const void *buf, size_t len)
{
	uint8_t tmp[4096];

	if (len + 1 > sizeof(tmp))
		return;
	tmp[0] = mode;
	memcpy(tmp + 1, buf, len);
	unit_seed(name, tmp, len + 1);
}

static void test_frame(void)
{
	const uint8_t q[] = { 'Q', 0, 0, 0, 13, 'S', 'E', 'L', 'E', 'C', 'T', ' ', '1', 0, 'S' };
	const uint8_t huge[] = { 'Q', 0x7f, 0xff, 0xff, 0xf0 };
	const uint8_t tiny[] = { 'Q', 0, 0, 0, 3 };
	struct pg_msg m;
	const char *sql;
	uint32_t sl;

	CHECK(pg_frame(q, 4, 1 << 20, &m) == 0);
	CHECK(pg_frame(q, 13, 1 << 20, &m) == 0);
	CHECK(pg_frame(q, sizeof(q), 1 << 20, &m) == 14);
	CHECK(m.type == 'Q' && m.len == 9);
	CHECK(pg_parse_query(&m, &sql, &sl) == 0 && sl == 8 && strcmp(sql, "SELECT 1") == 0);
	CHECK(pg_frame(q, sizeof(q), 10, &m) == -EMSGSIZE);
	/* D19: a huge announced length is refused from the header alone */
	CHECK(pg_frame(huge, sizeof(huge), 1 << 20, &m) == -EMSGSIZE);
	CHECK(pg_frame_size(huge, sizeof(huge)) == 0x7ffffff1u);
	{	/* the largest length a header can hold: no wrap to 0 ("not known yet") */
		const uint8_t most[5] = { 'D', 0xff, 0xff, 0xff, 0xff };

		CHECK(pg_frame_size(most, sizeof(most)) == UINT32_MAX);
		CHECK(pg_frame(most, sizeof(most), 1 << 20, &m) == -EMSGSIZE);
	}
	CHECK(pg_frame(tiny, sizeof(tiny), 1 << 20, &m) == -EBADMSG);
	seed("fe-query", 1, q, sizeof(q) - 1);
	seed("fe-huge", 1, huge, sizeof(huge));
}

static void test_query_trailing_bytes(void)
{
	/* D11: "SELECT 1\0DELETE FROM orders\0" is malformed, not two statements */
	const uint8_t q[] = "Q\0\0\0\x1eSELECT 1\0DELETE FROM orders";
	struct pg_msg m;
	const char *sql;
	uint32_t sl;

	CHECK(pg_frame(q, sizeof(q), 1 << 20, &m) == 31);
	CHECK(pg_parse_query(&m, &sql, &sl) == -EBADMSG);
	seed("fe-query-trailing", 1, q, sizeof(q));
	m.len = 0;
	CHECK(pg_parse_query(&m, &sql, &sl) == -EBADMSG);
}

static size_t startup(uint8_t *b, const char *const *kv, int n)
{
	struct pg_out o;
	const char *names[16], *values[16];
	size_t len;

	for (int i = 0; i < n; i++) {
		names[i] = kv[2 * i];
		values[i] = kv[2 * i + 1];
	}
	pg_out_init(&o, 4096);
	pg_out_startup(&o, names, values, n);
	len = o.len;
	memcpy(b, o.buf, len);
	pg_out_free(&o);
	return len;
}

static void test_startup(void)
{
	const char *kv[] = { "user", "agent_ro", "database", "shop", "client_encoding", "UTF8" };
	const uint8_t ssl[] = { 0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f };
	const uint8_t gss[] = { 0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30 };
	const uint8_t cancel[] = { 0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 7, 0xde, 0xad, 0xbe, 0xef };
	const uint8_t v2[] = { 0, 0, 0, 9, 0, 2, 0, 0, 0 };
	uint8_t b[512];
	struct pg_startup s;
	size_t n = startup(b, kv, 3);

	CHECK(pg_startup_frame(b, n - 1, &s) == 0);
	CHECK(pg_startup_frame(b, n, &s) == (int)n);
	CHECK(s.kind == PG_SU_STARTUP && s.version == PG_PROTO_3_0 && s.nparams == 3);
	CHECK_STR(pg_startup_get(&s, "database"), "shop");
	CHECK(pg_startup_get(&s, "options") == NULL);
	seed("su-startup", 0, b, n);

	CHECK(pg_startup_frame(ssl, sizeof(ssl), &s) == 8 && s.kind == PG_SU_SSL);
	CHECK(pg_startup_frame(gss, sizeof(gss), &s) == 8 && s.kind == PG_SU_GSSENC);
	CHECK(pg_startup_frame(cancel, sizeof(cancel), &s) == 16 && s.kind == PG_SU_CANCEL);
	CHECK(s.pid == 7 && s.key == 0xdeadbeef);
	CHECK(pg_startup_frame(v2, sizeof(v2), &s) == -EBADMSG);
	seed("su-ssl", 0, ssl, sizeof(ssl));
	seed("su-gss", 0, gss, sizeof(gss));
	seed("su-cancel", 0, cancel, sizeof(cancel));

	/* duplicate parameter, missing final NUL, oversize */
	const char *dup[] = { "user", "a", "user", "b" };
	n = startup(b, dup, 2);
	CHECK(pg_startup_frame(b, n, &s) == -EBADMSG);
	seed("su-dup", 0, b, n);
	n = startup(b, kv, 1);
	b[n - 1] = 'x';
	CHECK(pg_startup_frame(b, n, &s) == -EBADMSG);
	const uint8_t big[] = { 0, 0, 0x27, 0x11, 0, 3, 0, 0 };
	CHECK(pg_startup_frame(big, sizeof(big), &s) == -EMSGSIZE);
	/* a value without its NUL */
	const uint8_t novalue[] = { 0, 0, 0, 14, 0, 3, 0, 0, 'u', 's', 'e', 'r', 0, 'x' };
	CHECK(pg_startup_frame(novalue, sizeof(novalue), &s) == -EBADMSG);
	seed("su-novalue", 0, novalue, sizeof(novalue));
	/* a cancel with a 3.2-style long key is not ours */
	const uint8_t longcancel[] = { 0, 0, 0, 20, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8 };
	CHECK(pg_startup_frame(longcancel, sizeof(longcancel), &s) == -EBADMSG);
}


/* o := Bind of portal "" and statement "" with no parameters and nf result
 * formats, each fmt. */
static void bind_formats(struct pg_out *o, int nf, int16_t fmt)
{
	pg_out_reset(o);
	pg_out_begin(o, 'B');
	pg_out_str(o, "");
	pg_out_str(o, "");
	pg_out_i16(o, 0);
	pg_out_i16(o, 0);
	pg_out_i16(o, (int16_t)nf);
	for (int i = 0; i < nf; i++)
		pg_out_i16(o, fmt);
	pg_out_end(o);
}
static void test_parse_bind(void)
{
	struct pg_out o;
	struct pg_msg m;
	struct pg_parse p;
	struct pg_bind bd;
	char kind;
	const char *name;
	int32_t maxrows;

	pg_out_init(&o, 4096);
	pg_out_parse(&o, "s1", "SELECT cc FROM customers WHERE id = $1");
	CHECK(pg_frame(o.buf, o.len, 1 << 20, &m) == (int)o.len);
	CHECK(pg_parse_parse(&m, &p) == 0);
	CHECK_STR(p.name, "s1");
	CHECK(p.nparams == 0 && p.query_len == strlen(p.query));
	seed("fe-parse", 1, o.buf, o.len);

	/* Bind portal "" stmt "s1", 1 text param "1", result formats [1] */
	pg_out_reset(&o);
	pg_out_begin(&o, 'B');
	pg_out_str(&o, "");
	pg_out_str(&o, "s1");
	pg_out_i16(&o, 0);
	pg_out_i16(&o, 1);
	pg_out_i32(&o, 1);
	pg_out_u8(&o, '1');
	pg_out_i16(&o, 1);
	pg_out_i16(&o, 1);
	pg_out_end(&o);
	pg_out_target(&o, 'D', 'P', "");
	pg_out_begin(&o, 'E');
	pg_out_str(&o, "");
	pg_out_i32(&o, 0);
	pg_out_end(&o);
	pg_out_simple(&o, 'S');
	seed("fe-bind-describe-exec-sync", 1, o.buf, o.len);
	int n = pg_frame(o.buf, o.len, 1 << 20, &m);
	CHECK(n > 0 && m.type == 'B');
	CHECK(pg_parse_bind(&m, &bd) == 0);
	CHECK_STR(bd.stmt, "s1");
	CHECK(bd.nparams == 1 && bd.nresult_formats == 1);
	CHECK(pg_bind_result_format(&bd, 0) == 1 && pg_bind_result_format(&bd, 5) == 1);
	int n2 = pg_frame(o.buf + n, o.len - n, 1 << 20, &m);
	CHECK(n2 > 0 && m.type == 'D' && pg_parse_target(&m, &kind, &name) == 0 && kind == 'P');
	int n3 = pg_frame(o.buf + n + n2, o.len - n - n2, 1 << 20, &m);
	CHECK(n3 > 0 && m.type == 'E' && pg_parse_execute(&m, &name, &maxrows) == 0 && maxrows == 0);

	/* a parameter length running past the end */
	pg_out_reset(&o);
	pg_out_begin(&o, 'B');
	pg_out_str(&o, "");
	pg_out_str(&o, "");
	pg_out_i16(&o, 0);
	pg_out_i16(&o, 1);
	pg_out_i32(&o, 100);
	pg_out_i16(&o, 0);
	pg_out_end(&o);
	CHECK(pg_frame(o.buf, o.len, 1 << 20, &m) > 0 && pg_parse_bind(&m, &bd) == -EBADMSG);
	seed("fe-bind-overrun", 1, o.buf, o.len);
	/* a result format of 2 */
	bind_formats(&o, 1, 2);
	CHECK(pg_frame(o.buf, o.len, 1 << 20, &m) > 0 && pg_parse_bind(&m, &bd) == -EBADMSG);
	/* as many result formats as a row can have columns, and one more */
	for (int nf = PG_FIELDS_MAX; nf <= PG_FIELDS_MAX + 1; nf++) {
		bind_formats(&o, nf, 1);
		CHECK(pg_frame(o.buf, o.len, 1 << 20, &m) > 0 &&
		      pg_parse_bind(&m, &bd) == (nf <= PG_FIELDS_MAX ? 0 : -EBADMSG));
	}
	/* Describe of kind 'X' */
	pg_out_reset(&o);
	pg_out_target(&o, 'D', 'X', "");
	CHECK(pg_frame(o.buf, o.len, 1 << 20, &m) > 0 && pg_parse_target(&m, &kind, &name) == -EBADMSG);
	pg_out_free(&o);
}

static void test_backend(void)
{
	struct pg_out o;
	struct pg_msg m;
	struct pg_field f[4];
	struct pg_datarow d;
	const uint8_t *v;
	int32_t vl;
	int nf, off = 0, k;
	char st;
	const char *a, *b;

	pg_out_init(&o, 4096);
	pg_out_begin(&o, 'T');
	pg_out_i16(&o, 2);
	pg_out_str(&o, "id");
	pg_out_i32(&o, 16384);
	pg_out_i16(&o, 1);
	pg_out_i32(&o, 23);
	pg_out_i16(&o, 4);
	pg_out_i32(&o, -1);
	pg_out_i16(&o, 0);
	pg_out_str(&o, "x");
	pg_out_i32(&o, 16384);
	pg_out_i16(&o, 3);
	pg_out_i32(&o, 25);
	pg_out_i16(&o, -1);
	pg_out_i32(&o, -1);
	pg_out_i16(&o, 1);
	pg_out_end(&o);
	pg_out_begin(&o, 'D');
	pg_out_i16(&o, 2);
	pg_out_i32(&o, 1);
	pg_out_u8(&o, '1');
	pg_out_i32(&o, -1);
	pg_out_end(&o);
	pg_out_ready(&o, 'T');
	pg_out_param_status(&o, "client_encoding", "UTF8");
	pg_out_key(&o, 42, 0x01020304);
	seed("be-rowdesc-row-ready", 2, o.buf, o.len);

	k = pg_frame(o.buf, o.len, 1 << 20, &m);
	CHECK(k > 0 && m.type == 'T');
	CHECK(pg_parse_rowdesc(&m, f, 4, &nf) == 0 && nf == 2);
	CHECK_STR(f[1].name, "x");
	CHECK(f[1].table_oid == 16384 && f[1].attnum == 3 && f[1].type_oid == 25 && f[1].format == 1);
	CHECK(pg_parse_rowdesc(&m, f, 1, &nf) == -EBADMSG);
	off += k;
	k = pg_frame(o.buf + off, o.len - off, 1 << 20, &m);
	CHECK(k > 0 && m.type == 'D' && pg_datarow_begin(&m, &d) == 0 && d.ncols == 2);
	CHECK(pg_datarow_next(&d, &v, &vl) == 1 && vl == 1 && v[0] == '1');
	CHECK(pg_datarow_next(&d, &v, &vl) == 1 && vl == -1 && v == NULL);
	CHECK(pg_datarow_next(&d, &v, &vl) == 0);
	off += k;
	k = pg_frame(o.buf + off, o.len - off, 1 << 20, &m);
	CHECK(k > 0 && pg_parse_ready(&m, &st) == 0 && st == 'T');
	off += k;
	k = pg_frame(o.buf + off, o.len - off, 1 << 20, &m);
	CHECK(k > 0 && pg_parse_param_status(&m, &a, &b) == 0 && strcmp(b, "UTF8") == 0);
	off += k;
	uint32_t pid, key;
	k = pg_frame(o.buf + off, o.len - off, 1 << 20, &m);
	CHECK(k > 0 && pg_parse_key(&m, &pid, &key) == 0 && pid == 42 && key == 0x01020304);

	/* a DataRow whose column length runs past the end */
	pg_out_reset(&o);
	pg_out_begin(&o, 'D');
	pg_out_i16(&o, 1);
	pg_out_i32(&o, 50);
	pg_out_u8(&o, 'x');
	pg_out_end(&o);
	CHECK(pg_frame(o.buf, o.len, 1 << 20, &m) > 0 && pg_datarow_begin(&m, &d) == 0);
	CHECK(pg_datarow_next(&d, &v, &vl) == -EBADMSG);
	seed("be-datarow-overrun", 2, o.buf, o.len);
	/* trailing byte after the last column */
	pg_out_reset(&o);
	pg_out_begin(&o, 'D');
	pg_out_i16(&o, 0);
	pg_out_u8(&o, 'x');
	pg_out_end(&o);
	CHECK(pg_frame(o.buf, o.len, 1 << 20, &m) > 0 && pg_datarow_begin(&m, &d) == 0);
	CHECK(pg_datarow_next(&d, &v, &vl) == -EBADMSG);
	pg_out_free(&o);
}

static void test_error_builder(void)
{
	struct pg_out o;
	struct pg_msg m;
	char big[3000];

	pg_out_init(&o, 8192);
	pg_out_denied(&o, "role 'r' rule 1 (line 9): statement class write is not allowed", NULL);
	CHECK(pg_frame(o.buf, o.len, 1 << 20, &m) == (int)o.len && m.type == 'E');
	CHECK_STR(pg_fields_get(&m, 'C'), "42501");
	CHECK_STR(pg_fields_get(&m, 'S'), "ERROR");
	CHECK(strncmp(pg_fields_get(&m, 'M'), "agentgate: denied: role 'r'", 27) == 0);
	CHECK(pg_fields_get(&m, 'D') == NULL);
	seed("be-error", 2, o.buf, o.len);
	/* long messages are cut on a UTF-8 boundary */
	for (size_t i = 0; i + 2 < sizeof(big); i += 2) {
		big[i] = (char)0xc3;
		big[i + 1] = (char)0xa9;
	}
	big[sizeof(big) - 2] = 'x';
	big[sizeof(big) - 1] = '\0';
	pg_out_reset(&o);
	pg_out_error(&o, 'N', "NOTICE", "00000", big, NULL, NULL);
	CHECK(pg_frame(o.buf, o.len, 1 << 20, &m) == (int)o.len && m.type == 'N');
	const char *msg = pg_fields_get(&m, 'M');
	CHECK(msg && strlen(msg) <= 1000 && pg_utf8_valid(msg, strlen(msg)));
	/* overflow is sticky and reported */
	pg_out_free(&o);
	pg_out_init(&o, 16);
	pg_out_query(&o, "SELECT 1234567890123456789");
	CHECK(o.overflow);
	pg_out_free(&o);
}

static void test_utf8(void)
{
	CHECK(pg_utf8_valid("SELECT 'é€𝄞'", strlen("SELECT 'é€𝄞'")));
	CHECK(!pg_utf8_valid("\x95\x5c", 2));                  /* SJIS bytes (D07) */
	CHECK(!pg_utf8_valid("\xc0\xaf", 2));                  /* overlong */
	CHECK(!pg_utf8_valid("\xed\xa0\x80", 3));              /* surrogate */
	CHECK(!pg_utf8_valid("\xf4\x90\x80\x80", 4));          /* > U+10FFFF */
	CHECK(!pg_utf8_valid("a\0b", 3));
	CHECK(!pg_utf8_valid("\xe2\x82", 2));                  /* truncated */
	/* the eight-bytes-at-once path: a NUL, a stray byte or a good
	 * sequence at every offset of a word, in a longer ASCII text */
	for (size_t at = 0; at < 24; at++) {
		char t[32];

		memset(t, 'a', sizeof(t));
		t[at] = '\0';
		CHECK(!pg_utf8_valid(t, sizeof(t)));
		t[at] = '\x80';
		CHECK(!pg_utf8_valid(t, sizeof(t)));
		t[at] = '\x7f';
		CHECK(pg_utf8_valid(t, sizeof(t)));
		memcpy(t + at, "\xc3\xa9", 2);
		CHECK(pg_utf8_valid(t, sizeof(t)));
		CHECK(!pg_utf8_valid(t, at + 1));               /* cut inside it */
		t[at + 1] = 'b';
		CHECK(!pg_utf8_valid(t, sizeof(t)));
	}
}

static void test_md5(void)
{
	/* md5(md5("secret" "app") || salt), computed independently with Python hashlib */
	const uint8_t salt[4] = { 1, 2, 3, 4 };
	char out[36];

	CHECK(pg_md5_password("app", "secret", salt, out) == 0);
	CHECK_STR(out, "md5911f527656472583a006e7727877b33e");
}

static void test_scram_rfc7677(void)
{
	struct pg_scram s;
	char out[512];
	size_t n;
	const char *sf = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
	const char *fin = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
	const char *bad = "v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

	CHECK(pg_scram_first_nonce(&s, "user", "rOprNGfwEbeRWgbNEkqO", out, sizeof(out), &n) == 0);
	CHECK_STR(out, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
	CHECK(pg_scram_final(&s, "pencil", (const uint8_t *)sf, strlen(sf), out, sizeof(out), &n) == 0);
	CHECK_STR(out, "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
		       "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
	CHECK(pg_scram_verify(&s, (const uint8_t *)bad, strlen(bad)) == -EPROTO);
	CHECK(pg_scram_verify(&s, (const uint8_t *)fin, strlen(fin)) == 0);

	/* The second derivation for the same password, salt and count comes
	 * from the cache and gives the same proof and server signature; another
	 * password, salt or count derives its own keys. */
	unsigned long hits = pg_scram_cache_hits();
	CHECK(pg_scram_first_nonce(&s, "user", "rOprNGfwEbeRWgbNEkqO", out, sizeof(out), &n) == 0);
	CHECK(pg_scram_final(&s, "pencil", (const uint8_t *)sf, strlen(sf), out, sizeof(out), &n) == 0);
	CHECK(pg_scram_cache_hits() == hits + 1);
	CHECK_STR(out, "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
		       "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
	CHECK(pg_scram_verify(&s, (const uint8_t *)fin, strlen(fin)) == 0);
	CHECK(pg_scram_first_nonce(&s, "user", "rOprNGfwEbeRWgbNEkqO", out, sizeof(out), &n) == 0);
	CHECK(pg_scram_final(&s, "pencil2", (const uint8_t *)sf, strlen(sf), out, sizeof(out), &n) == 0);
	CHECK(pg_scram_cache_hits() == hits + 1);
	CHECK(strstr(out, "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=") == NULL);
	CHECK(pg_scram_verify(&s, (const uint8_t *)fin, strlen(fin)) == -EPROTO);
	const char *salt2 = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=X22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
	const char *iter2 = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4097";
	CHECK(pg_scram_first_nonce(&s, "user", "rOprNGfwEbeRWgbNEkqO", out, sizeof(out), &n) == 0);
	CHECK(pg_scram_final(&s, "pencil", (const uint8_t *)salt2, strlen(salt2), out, sizeof(out), &n) == 0);
	CHECK(pg_scram_verify(&s, (const uint8_t *)fin, strlen(fin)) == -EPROTO);
	CHECK(pg_scram_first_nonce(&s, "user", "rOprNGfwEbeRWgbNEkqO", out, sizeof(out), &n) == 0);
	CHECK(pg_scram_final(&s, "pencil", (const uint8_t *)iter2, strlen(iter2), out, sizeof(out), &n) == 0);
	CHECK(pg_scram_verify(&s, (const uint8_t *)fin, strlen(fin)) == -EPROTO);
	CHECK(pg_scram_cache_hits() == hits + 1);
	seed("scram-server-first", 3, sf, strlen(sf));
	seed("scram-server-final", 4, fin, strlen(fin));

	/* a server nonce that does not extend ours */
	const char *other = "r=XOprNGfwEbeRWgbNEkqO%hvYD,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
	CHECK(pg_scram_first_nonce(&s, "", "rOprNGfwEbeRWgbNEkqO", out, sizeof(out), &n) == 0);
	CHECK(pg_scram_final(&s, "pencil", (const uint8_t *)other, strlen(other), out, sizeof(out), &n) == -EPROTO);
	/* iteration counts out of bounds, missing salt, non-ASCII password */
	const char *lowi = "r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1";
	const char *hugei = "r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999";
	const char *nosalt = "r=rOprNGfwEbeRWgbNEkqOx,i=4096";
	CHECK(pg_scram_first_nonce(&s, "", "rOprNGfwEbeRWgbNEkqO", out, sizeof(out), &n) == 0);
	CHECK(pg_scram_final(&s, "pencil", (const uint8_t *)lowi, strlen(lowi), out, sizeof(out), &n) == -ERANGE);
	CHECK(pg_scram_final(&s, "pencil", (const uint8_t *)hugei, strlen(hugei), out, sizeof(out), &n) != 0);
	CHECK(pg_scram_final(&s, "pencil", (const uint8_t *)nosalt, strlen(nosalt), out, sizeof(out), &n) == -EBADMSG);
	CHECK(pg_scram_final(&s, "p\xc3\xa9ncil", (const uint8_t *)sf, strlen(sf), out, sizeof(out), &n) == -EINVAL);
	seed("scram-low-iter", 3, lowi, strlen(lowi));
	/* verify before final, and a server error */
	CHECK(pg_scram_verify(&s, (const uint8_t *)fin, strlen(fin)) == -EINVAL);
	pg_scram_clear(&s);
	/* a random nonce is 24 base64 characters */
	CHECK(pg_scram_first(&s, out, sizeof(out), &n) == 0);
	CHECK(n == strlen("n,,n=,r=") + 24 && strncmp(out, "n,,n=,r=", 8) == 0);
	pg_scram_clear(&s);
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0)
		unit_corpus_dir = argv[2];
	RUN(test_frame);
	RUN(test_query_trailing_bytes);
	RUN(test_startup);
	RUN(test_parse_bind);
	RUN(test_backend);
	RUN(test_error_builder);
	RUN(test_utf8);
	RUN(test_md5);
	RUN(test_scram_rfc7677);
	UNIT_DONE("pg_wire");
}
