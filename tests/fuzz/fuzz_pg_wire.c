// SPDX-License-Identifier: Apache-2.0
/*
 * libFuzzer target for userspace/pg_wire.c. The first input byte picks the
 * parser, the rest is what an agent or a server could send:
 *   0  a startup-phase packet (StartupMessage, SSLRequest, CancelRequest...)
 *   1  a stream of frontend messages, each parsed by its type
 *   2  a stream of backend messages, each parsed by its type
 *   3  a SCRAM server-first-message (after a fixed client-first)
 *   4  a SCRAM server-final-message (after the RFC 7677 exchange)
 * Besides "no crash" it checks pg_wire.h's promises: a framed size never
 * exceeds the input or the limit, a prefix of a whole message is "need
 * more", startup parameters are NUL-terminated inside the packet.
 * tests/fuzz/replay.c runs this on the corpus without libFuzzer.
 */
#include "pg_wire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAXMSG (1u << 20)

static void must(bool cond)
{
	if (!cond)
		abort();
}

static void startup(const uint8_t *d, size_t n)
{
	struct pg_startup s;
	int r = pg_startup_frame(d, n, &s);

	must(r == 0 || r == -EBADMSG || r == -EMSGSIZE || (r > 0 && (size_t)r <= n));
	if (r > 0) {
		must(r <= (int)PG_STARTUP_MAX);
		must(s.nparams <= PG_STARTUP_PARAMS);
		for (int i = 0; i < s.nparams; i++) {
			must((const uint8_t *)s.name[i] >= d && (const uint8_t *)s.value[i] < d + r);
			must(memchr(s.value[i], 0, (size_t)(d + r - (const uint8_t *)s.value[i])) != NULL);
			must(s.name[i][0] != '\0');
		}
		must(pg_startup_frame(d, (size_t)r - 1, &s) == 0);
	}
}

static void frontend(const struct pg_msg *m)
{
	const char *a;
	uint32_t l;
	struct pg_parse p;
	struct pg_bind b;
	char k;
	int32_t mr;

	switch (m->type) {
	case 'Q':
		if (pg_parse_query(m, &a, &l) == 0) {
			must(l + 1 == m->len && strlen(a) == l);
			(void)pg_utf8_valid(a, l);
		}
		break;
	case 'P':
		if (pg_parse_parse(m, &p) == 0)
			must(strlen(p.query) == p.query_len && p.nparams >= 0);
		break;
	case 'B':
		if (pg_parse_bind(m, &b) == 0) {
			for (int i = 0; i < b.nresult_formats + 2; i++) {
				int f = pg_bind_result_format(&b, i);
				must(f == 0 || f == 1);
			}
		}
		break;
	case 'D':
	case 'C':
		if (pg_parse_target(m, &k, &a) == 0)
			must(k == 'S' || k == 'P');
		break;
	case 'E':
		(void)pg_parse_execute(m, &a, &mr);
		break;
	}
}

static void backend(const struct pg_msg *m)
{
	static struct pg_field f[PG_FIELDS_MAX];
	struct pg_datarow d;
	struct pg_rd r;
	const uint8_t *v;
	const char *a, *b;
	int32_t vl, code;
	uint32_t u1, u2, l;
	int n, rc;
	char c;

	switch (m->type) {
	case 'T':
		if (pg_parse_rowdesc(m, f, PG_FIELDS_MAX, &n) == 0)
			must(n >= 0 && n <= PG_FIELDS_MAX);
		break;
	case 'D':
		if (pg_datarow_begin(m, &d) == 0) {
			while ((rc = pg_datarow_next(&d, &v, &vl)) == 1)
				must(vl == -1 ? v == NULL : (v >= m->body && v + vl <= m->body + m->len));
			must(rc == 0 || rc == -EBADMSG);
		}
		break;
	case 'E':
	case 'N':
		pg_rd_init(&r, m);
		while ((rc = pg_fields_next(&r, &c, &a, &l)) == 1)
			must(strlen(a) == l && c != 0);
		(void)pg_fields_get(m, 'M');
		break;
	case 'S':
		(void)pg_parse_param_status(m, &a, &b);
		break;
	case 'K':
		(void)pg_parse_key(m, &u1, &u2);
		break;
	case 'Z':
		if (pg_parse_ready(m, &c) == 0)
			must(c == 'I' || c == 'T' || c == 'E');
		break;
	case 'R':
		if (pg_parse_auth(m, &code, &v, &l) == 0)
			must(l + 4 == m->len);
		break;
	case 'C':
		(void)pg_parse_command_complete(m, &a);
		break;
	case 'A':
		(void)pg_parse_notification(m, &u1, &a, &b);
		break;
	}
}

static void stream(const uint8_t *d, size_t n, bool fe)
{
	struct pg_msg m;
	int r;

	while (n > 0) {
		r = pg_frame(d, n, MAXMSG, &m);
		must(r == 0 || r == -EBADMSG || r == -EMSGSIZE || (r >= 5 && (size_t)r <= n));
		if (r <= 0)
			return;
		must(m.body == d + 5 && m.len + 5 == (uint32_t)r);
		must(pg_frame(d, (size_t)r - 1, MAXMSG, &m) == 0 || r - 1 < 5);
		pg_frame(d, (size_t)r, MAXMSG, &m);
		if (fe)
			frontend(&m);
		else
			backend(&m);
		d += r;
		n -= (size_t)r;
	}
}

static void scram(const uint8_t *d, size_t n, bool final)
{
	static const char *sf = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
	struct pg_scram s;
	char out[512];
	size_t ol;

	must(pg_scram_first_nonce(&s, "user", "rOprNGfwEbeRWgbNEkqO", out, sizeof(out), &ol) == 0);
	if (!final) {
		/* bounded iteration count keeps a run short: skip big ones */
		if (memmem(d, n, "i=", 2) && n > 0) {
			const char *i = memmem(d, n, "i=", 2);
			if ((size_t)((const uint8_t *)i - d) + 7 < n && i[2] != '0' && memchr("123456789", i[2], 9) &&
			    memchr("0123456789", i[6], 10))
				return;   /* >= 10000 iterations: slow, not interesting */
		}
		if (pg_scram_final(&s, "pencil", d, n, out, sizeof(out), &ol) == 0)
			must(ol < sizeof(out) && strncmp(out, "c=biws,r=rOprNGfwEbeRWgbNEkqO", 29) == 0);
	} else {
		must(pg_scram_final(&s, "pencil", (const uint8_t *)sf, strlen(sf), out, sizeof(out), &ol) == 0);
		(void)pg_scram_verify(&s, d, n);
	}
	pg_scram_clear(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0]) {
	case 0:
		startup(data + 1, size - 1);
		break;
	case 1:
		stream(data + 1, size - 1, true);
		break;
	case 2:
		stream(data + 1, size - 1, false);
		break;
	case 3:
		scram(data + 1, size - 1, false);
		break;
	case 4:
		scram(data + 1, size - 1, true);
		break;
	}
	return 0;
}
