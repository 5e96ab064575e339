/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pg_wire: PostgreSQL protocol 3.0 framing, parsing, building and upstream
 * authentication. Written by hand because no library parses the protocol
 * from the server's side of a proxy with the bounds we need (libpq is a
 * client and owns its socket). Crypto is OpenSSL's (PBKDF2, HMAC, SHA-256,
 * MD5, RAND, base64).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "pg_wire.h"

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ---- framing ------------------------------------------------------------ */

uint32_t pg_frame_size(const uint8_t *buf, size_t len)
{
	uint32_t l;

	if (len < 5)
		return 0;
	l = be32(buf + 1);
	return l == UINT32_MAX ? UINT32_MAX : l + 1;   /* not 0: "not known yet" */
}

int pg_frame(const uint8_t *buf, size_t len, uint32_t max, struct pg_msg *m)
{
	uint32_t n;

	if (len < 5)
		return 0;
	n = be32(buf + 1);
	if (n < 4)
		return -EBADMSG;
	if (n > 0x7ffffff0u || n + 1 > max)
		return -EMSGSIZE;
	if (len < (size_t)n + 1)
		return 0;
	m->type = (char)buf[0];
	m->body = buf + 5;
	m->len = n - 4;
	return (int)(n + 1);
}

static bool param_dup(const struct pg_startup *s, const char *name)
{
	for (int i = 0; i < s->nparams; i++)
		if (strcmp(s->name[i], name) == 0)
			return true;
	return false;
}

int pg_startup_frame(const uint8_t *buf, size_t len, struct pg_startup *s)
{
	uint32_t n, code, off;

	if (len < 4)
		return 0;
	n = be32(buf);
	if (n < 8)
		return -EBADMSG;
	if (n > PG_STARTUP_MAX)
		return -EMSGSIZE;
	if (len < n)
		return 0;
	memset(s, 0, sizeof(*s));
	code = be32(buf + 4);
	switch (code) {
	case PG_CODE_SSL:
	case PG_CODE_GSSENC:
		if (n != 8)
			return -EBADMSG;
		s->kind = code == PG_CODE_SSL ? PG_SU_SSL : PG_SU_GSSENC;
		return (int)n;
	case PG_CODE_CANCEL:
		/* 3.0 keys are 4 bytes; 3.2 (PG 18) allows up to 256 but we
		 * never issue a 3.2 key, so anything else is not ours. */
		if (n != 16)
			return -EBADMSG;
		s->kind = PG_SU_CANCEL;
		s->pid = be32(buf + 8);
		s->key = be32(buf + 12);
		return (int)n;
	}
	if (code >> 16 != 3)
		return -EBADMSG;
	s->kind = PG_SU_STARTUP;
	s->version = code;
	/* name\0value\0 ... \0, the final NUL being the last byte */
	off = 8;
	for (;;) {
		const uint8_t *nul;
		const char *name, *value;

		if (off >= n)
			return -EBADMSG;
		if (buf[off] == '\0') {
			if (off + 1 != n)
				return -EBADMSG;
			break;
		}
		name = (const char *)buf + off;
		nul = memchr(buf + off, 0, n - off);
		if (!nul)
			return -EBADMSG;
		off = (uint32_t)(nul - buf) + 1;
		if (off >= n)
			return -EBADMSG;
		value = (const char *)buf + off;
		nul = memchr(buf + off, 0, n - off);
		if (!nul)
			return -EBADMSG;
		off = (uint32_t)(nul - buf) + 1;
		if (s->nparams >= PG_STARTUP_PARAMS || param_dup(s, name))
			return -EBADMSG;
		s->name[s->nparams] = name;
		s->value[s->nparams] = value;
		s->nparams++;
	}
	return (int)n;
}

const char *pg_startup_get(const struct pg_startup *s, const char *name)
{
	for (int i = 0; i < s->nparams; i++)
		if (strcmp(s->name[i], name) == 0)
			return s->value[i];
	return NULL;
}

/* ---- reading ------------------------------------------------------------ */

static bool rd_need(struct pg_rd *r, uint32_t n)
{
	if (r->bad || r->len - r->off < n) {
		r->bad = true;
		return false;
	}
	return true;
}

uint8_t pg_rd_u8(struct pg_rd *r)
{
	if (!rd_need(r, 1))
		return 0;
	return r->p[r->off++];
}

int16_t pg_rd_i16(struct pg_rd *r)
{
	uint16_t v;

	if (!rd_need(r, 2))
		return 0;
	v = (uint16_t)(r->p[r->off] << 8 | r->p[r->off + 1]);
	r->off += 2;
	return (int16_t)v;
}

int32_t pg_rd_i32(struct pg_rd *r)
{
	uint32_t v;

	if (!rd_need(r, 4))
		return 0;
	v = be32(r->p + r->off);
	r->off += 4;
	return (int32_t)v;
}

const char *pg_rd_str(struct pg_rd *r, uint32_t *len)
{
	const uint8_t *nul;
	const char *s;

	if (r->bad || r->off >= r->len) {
		r->bad = true;
		return NULL;
	}
	nul = memchr(r->p + r->off, 0, r->len - r->off);
	if (!nul) {
		r->bad = true;
		return NULL;
	}
	s = (const char *)r->p + r->off;
	if (len)
		*len = (uint32_t)(nul - (r->p + r->off));
	r->off = (uint32_t)(nul - r->p) + 1;
	return s;
}

const uint8_t *pg_rd_bytes(struct pg_rd *r, uint32_t n)
{
	const uint8_t *p;

	if (!rd_need(r, n))
		return NULL;
	p = r->p + r->off;
	r->off += n;
	return p;
}

int pg_parse_query(const struct pg_msg *m, const char **sql, uint32_t *sqllen)
{
	struct pg_rd r;

	pg_rd_init(&r, m);
	*sql = pg_rd_str(&r, sqllen);
	return pg_rd_done(&r) ? 0 : -EBADMSG;
}

int pg_parse_parse(const struct pg_msg *m, struct pg_parse *p)
{
	struct pg_rd r;

	pg_rd_init(&r, m);
	p->name = pg_rd_str(&r, &p->name_len);
	p->query = pg_rd_str(&r, &p->query_len);
	p->nparams = pg_rd_i16(&r);
	if (p->nparams < 0)
		return -EBADMSG;
	p->param_types = pg_rd_bytes(&r, (uint32_t)p->nparams * 4);
	return pg_rd_done(&r) ? 0 : -EBADMSG;
}

static bool formats_ok(const uint8_t *f, int16_t n)
{
	for (int i = 0; i < n; i++) {
		if (f[2 * i] != 0 || f[2 * i + 1] > 1)
			return false;
	}
	return true;
}

int pg_parse_bind(const struct pg_msg *m, struct pg_bind *b)
{
	struct pg_rd r;
	const uint8_t *f;

	pg_rd_init(&r, m);
	b->portal = pg_rd_str(&r, NULL);
	b->stmt = pg_rd_str(&r, NULL);
	b->nparam_formats = pg_rd_i16(&r);
	if (b->nparam_formats < 0)
		return -EBADMSG;
	f = pg_rd_bytes(&r, (uint32_t)b->nparam_formats * 2);
	if (!f || !formats_ok(f, b->nparam_formats))
		return -EBADMSG;
	b->nparams = pg_rd_i16(&r);
	if (b->nparams < 0 || (b->nparam_formats > 1 && b->nparam_formats != b->nparams))
		return -EBADMSG;
	for (int i = 0; i < b->nparams && !r.bad; i++) {
		int32_t l = pg_rd_i32(&r);

		if (l < -1)
			return -EBADMSG;
		if (l > 0)
			pg_rd_bytes(&r, (uint32_t)l);
	}
	b->nresult_formats = pg_rd_i16(&r);
	/* one per result column at most, and no row has more columns: the
	 * enforcer keeps a portal's formats, an agent's bytes to hold */
	if (b->nresult_formats < 0 || b->nresult_formats > PG_FIELDS_MAX)
		return -EBADMSG;
	b->result_formats = pg_rd_bytes(&r, (uint32_t)b->nresult_formats * 2);
	if (!b->result_formats || !formats_ok(b->result_formats, b->nresult_formats))
		return -EBADMSG;
	return pg_rd_done(&r) ? 0 : -EBADMSG;
}

int pg_bind_result_format(const struct pg_bind *b, int i)
{
	if (b->nresult_formats == 0)
		return 0;
	if (b->nresult_formats == 1)
		return b->result_formats[1];
	if (i < 0 || i >= b->nresult_formats)
		return 0;
	return b->result_formats[2 * i + 1];
}

int pg_parse_target(const struct pg_msg *m, char *kind, const char **name)
{
	struct pg_rd r;

	pg_rd_init(&r, m);
	*kind = (char)pg_rd_u8(&r);
	*name = pg_rd_str(&r, NULL);
	if (*kind != 'S' && *kind != 'P')
		return -EBADMSG;
	return pg_rd_done(&r) ? 0 : -EBADMSG;
}

int pg_parse_execute(const struct pg_msg *m, const char **portal, int32_t *max_rows)
{
	struct pg_rd r;

	pg_rd_init(&r, m);
	*portal = pg_rd_str(&r, NULL);
	*max_rows = pg_rd_i32(&r);
	return pg_rd_done(&r) ? 0 : -EBADMSG;
}

int pg_parse_rowdesc(const struct pg_msg *m, struct pg_field *f, int max, int *n)
{
	struct pg_rd r;
	int16_t cnt;

	pg_rd_init(&r, m);
	cnt = pg_rd_i16(&r);
	if (cnt < 0 || cnt > max || cnt > PG_FIELDS_MAX)
		return -EBADMSG;
	for (int i = 0; i < cnt; i++) {
		f[i].name = pg_rd_str(&r, NULL);
		f[i].table_oid = (uint32_t)pg_rd_i32(&r);
		f[i].attnum = pg_rd_i16(&r);
		f[i].type_oid = (uint32_t)pg_rd_i32(&r);
		f[i].typlen = pg_rd_i16(&r);
		f[i].typmod = pg_rd_i32(&r);
		f[i].format = pg_rd_i16(&r);
		if (r.bad || (f[i].format != 0 && f[i].format != 1))
			return -EBADMSG;
	}
	*n = cnt;
	return pg_rd_done(&r) ? 0 : -EBADMSG;
}

int pg_datarow_begin(const struct pg_msg *m, struct pg_datarow *d)
{
	pg_rd_init(&d->rd, m);
	d->ncols = pg_rd_i16(&d->rd);
	d->col = 0;
	if (d->rd.bad || d->ncols < 0 || d->ncols > PG_FIELDS_MAX)
		return -EBADMSG;
	return 0;
}

int pg_datarow_next(struct pg_datarow *d, const uint8_t **val, int32_t *vlen)
{
	int32_t l;

	if (d->col >= d->ncols)
		return pg_rd_done(&d->rd) ? 0 : -EBADMSG;
	l = pg_rd_i32(&d->rd);
	if (d->rd.bad || l < -1)
		return -EBADMSG;
	*vlen = l;
	*val = NULL;
	if (l >= 0) {
		*val = pg_rd_bytes(&d->rd, (uint32_t)l);
		if (!*val)
			return -EBADMSG;
	}
	d->col++;
	return 1;
}

int pg_fields_next(struct pg_rd *r, char *code, const char **val, uint32_t *vlen)
{
	uint8_t c = pg_rd_u8(r);

	if (r->bad)
		return -EBADMSG;
	if (c == 0)
		return r->off == r->len ? 0 : -EBADMSG;
	*code = (char)c;
	*val = pg_rd_str(r, vlen);
	return *val ? 1 : -EBADMSG;
}

const char *pg_fields_get(const struct pg_msg *m, char code)
{
	struct pg_rd r;
	const char *v;
	uint32_t vl;
	char c;

	pg_rd_init(&r, m);
	while (pg_fields_next(&r, &c, &v, &vl) == 1)
		if (c == code)
			return v;
	return NULL;
}

int pg_parse_param_status(const struct pg_msg *m, const char **name, const char **value)
{
	struct pg_rd r;

	pg_rd_init(&r, m);
	*name = pg_rd_str(&r, NULL);
	*value = pg_rd_str(&r, NULL);
	return pg_rd_done(&r) ? 0 : -EBADMSG;
}

int pg_parse_key(const struct pg_msg *m, uint32_t *pid, uint32_t *key)
{
	struct pg_rd r;

	pg_rd_init(&r, m);
	*pid = (uint32_t)pg_rd_i32(&r);
	*key = (uint32_t)pg_rd_i32(&r);
	return pg_rd_done(&r) ? 0 : -EBADMSG;
}

int pg_parse_ready(const struct pg_msg *m, char *status)
{
	struct pg_rd r;

	pg_rd_init(&r, m);
	*status = (char)pg_rd_u8(&r);
	if (*status != 'I' && *status != 'T' && *status != 'E')
		return -EBADMSG;
	return pg_rd_done(&r) ? 0 : -EBADMSG;
}

int pg_parse_auth(const struct pg_msg *m, int32_t *code, const uint8_t **data, uint32_t *dlen)
{
	struct pg_rd r;

	pg_rd_init(&r, m);
	*code = pg_rd_i32(&r);
	if (r.bad)
		return -EBADMSG;
	*data = r.p + r.off;
	*dlen = r.len - r.off;
	return 0;
}

int pg_parse_command_complete(const struct pg_msg *m, const char **tag)
{
	struct pg_rd r;

	pg_rd_init(&r, m);
	*tag = pg_rd_str(&r, NULL);
	return pg_rd_done(&r) ? 0 : -EBADMSG;
}

int pg_parse_notification(const struct pg_msg *m, uint32_t *pid, const char **channel,
			  const char **payload)
{
	struct pg_rd r;

	pg_rd_init(&r, m);
	*pid = (uint32_t)pg_rd_i32(&r);
	*channel = pg_rd_str(&r, NULL);
	*payload = pg_rd_str(&r, NULL);
	return pg_rd_done(&r) ? 0 : -EBADMSG;
}

bool pg_utf8_valid(const char *str, size_t len)
{
	const uint8_t *s = (const uint8_t *)str;
	size_t i = 0;

	while (i < len) {
		uint8_t c = s[i];
		uint32_t cp;
		uint64_t w;
		int n;

		/* eight ASCII bytes, none NUL, at once (the usual has-a-zero-
		 * byte test, then no high bit); anything else byte by byte */
		if (len - i >= 8) {
			memcpy(&w, s + i, 8);
			if (!((w - 0x0101010101010101ULL) & ~w & 0x8080808080808080ULL) &&
			    !(w & 0x8080808080808080ULL)) {
				i += 8;
				continue;
			}
		}
		if (c == 0)
			return false;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (len - i <= (size_t)n)
			return false;
		for (int k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += (size_t)n + 1;
	}
	return true;
}

/* ---- building ------------------------------------------------------------ */

void pg_out_init(struct pg_out *o, size_t max)
{
	memset(o, 0, sizeof(*o));
	o->max = max;
}

void pg_out_free(struct pg_out *o)
{
	free(o->buf);
	memset(o, 0, sizeof(*o));
}

void pg_out_trim(struct pg_out *o, size_t keep)
{
	if (!o->len && o->cap > keep) {
		free(o->buf);
		o->buf = NULL;
		o->cap = 0;
	}
}

static bool out_room(struct pg_out *o, size_t n)
{
	size_t cap;
	uint8_t *nb;

	if (o->overflow)
		return false;
	if (n > SIZE_MAX - o->len || o->len + n > o->max) {
		o->overflow = true;
		return false;
	}
	if (o->len + n <= o->cap)
		return true;
	cap = o->cap ? o->cap : 256;
	while (cap < o->len + n)
		cap *= 2;
	if (cap > o->max)
		cap = o->max;
	nb = realloc(o->buf, cap);
	if (!nb) {
		o->overflow = true;
		return false;
	}
	o->buf = nb;
	o->cap = cap;
	return true;
}

void pg_out_bytes(struct pg_out *o, const void *p, size_t n)
{
	if (!n || !out_room(o, n))
		return;
	memcpy(o->buf + o->len, p, n);
	o->len += n;
}

void pg_out_u8(struct pg_out *o, uint8_t v)
{
	pg_out_bytes(o, &v, 1);
}

void pg_out_i16(struct pg_out *o, int16_t v)
{
	uint8_t b[2] = { (uint8_t)((uint16_t)v >> 8), (uint8_t)v };

	pg_out_bytes(o, b, 2);
}

void pg_out_i32(struct pg_out *o, int32_t v)
{
	uint32_t u = (uint32_t)v;
	uint8_t b[4] = { (uint8_t)(u >> 24), (uint8_t)(u >> 16), (uint8_t)(u >> 8), (uint8_t)u };

	pg_out_bytes(o, b, 4);
}

void pg_out_str(struct pg_out *o, const char *s)
{
	pg_out_bytes(o, s, strlen(s) + 1);
}

void pg_out_begin(struct pg_out *o, char type)
{
	o->msg_start = o->len;
	if (type)
		pg_out_u8(o, (uint8_t)type);
	else
		o->msg_start = o->len - 1;   /* virtual type byte before the length */
	pg_out_i32(o, 0);
}

void pg_out_end(struct pg_out *o)
{
	size_t at = o->msg_start + 1;
	uint32_t n;

	if (o->overflow || at + 4 > o->len)
		return;
	n = (uint32_t)(o->len - at);
	o->buf[at] = (uint8_t)(n >> 24);
	o->buf[at + 1] = (uint8_t)(n >> 16);
	o->buf[at + 2] = (uint8_t)(n >> 8);
	o->buf[at + 3] = (uint8_t)n;
}

/* A string field cut at max bytes without splitting a UTF-8 sequence. */
static void out_field(struct pg_out *o, char code, const char *s)
{
	size_t n = strlen(s);

	if (n > 1000) {
		n = 1000;
		while (n > 0 && ((uint8_t)s[n] & 0xc0) == 0x80)
			n--;
	}
	pg_out_u8(o, (uint8_t)code);
	pg_out_bytes(o, s, n);
	pg_out_u8(o, 0);
}

void pg_out_error(struct pg_out *o, char type, const char *severity, const char *sqlstate,
		  const char *msg, const char *detail, const char *hint)
{
	pg_out_begin(o, type);
	out_field(o, 'S', severity);
	out_field(o, 'V', severity);
	out_field(o, 'C', sqlstate);
	out_field(o, 'M', msg);
	if (detail)
		out_field(o, 'D', detail);
	if (hint)
		out_field(o, 'H', hint);
	pg_out_u8(o, 0);
	pg_out_end(o);
}

void pg_out_denied(struct pg_out *o, const char *why, const char *detail)
{
	char msg[600];

	snprintf(msg, sizeof(msg), "agentgate: denied: %s", why);
	pg_out_error(o, 'E', "ERROR", PG_SQLSTATE_DENIED, msg, detail, NULL);
}

void pg_out_ready(struct pg_out *o, char status)
{
	pg_out_begin(o, 'Z');
	pg_out_u8(o, (uint8_t)status);
	pg_out_end(o);
}

void pg_out_auth_ok(struct pg_out *o)
{
	pg_out_begin(o, 'R');
	pg_out_i32(o, 0);
	pg_out_end(o);
}

void pg_out_key(struct pg_out *o, uint32_t pid, uint32_t key)
{
	pg_out_begin(o, 'K');
	pg_out_i32(o, (int32_t)pid);
	pg_out_i32(o, (int32_t)key);
	pg_out_end(o);
}

void pg_out_param_status(struct pg_out *o, const char *name, const char *value)
{
	pg_out_begin(o, 'S');
	pg_out_str(o, name);
	pg_out_str(o, value);
	pg_out_end(o);
}

void pg_out_query(struct pg_out *o, const char *sql)
{
	pg_out_begin(o, 'Q');
	pg_out_str(o, sql);
	pg_out_end(o);
}

void pg_out_parse(struct pg_out *o, const char *name, const char *sql)
{
	pg_out_begin(o, 'P');
	pg_out_str(o, name);
	pg_out_str(o, sql);
	pg_out_i16(o, 0);
	pg_out_end(o);
}

void pg_out_target(struct pg_out *o, char type, char kind, const char *name)
{
	pg_out_begin(o, type);
	pg_out_u8(o, (uint8_t)kind);
	pg_out_str(o, name);
	pg_out_end(o);
}

void pg_out_simple(struct pg_out *o, char type)
{
	pg_out_begin(o, type);
	pg_out_end(o);
}

void pg_out_startup(struct pg_out *o, const char *const *names, const char *const *values, int n)
{
	pg_out_begin(o, 0);
	pg_out_i32(o, (int32_t)PG_PROTO_3_0);
	for (int i = 0; i < n; i++) {
		pg_out_str(o, names[i]);
		pg_out_str(o, values[i]);
	}
	pg_out_u8(o, 0);
	pg_out_end(o);
}

void pg_out_ssl_request(struct pg_out *o)
{
	pg_out_i32(o, 8);
	pg_out_i32(o, (int32_t)PG_CODE_SSL);
}

void pg_out_cancel(struct pg_out *o, uint32_t pid, uint32_t key)
{
	pg_out_i32(o, 16);
	pg_out_i32(o, (int32_t)PG_CODE_CANCEL);
	pg_out_i32(o, (int32_t)pid);
	pg_out_i32(o, (int32_t)key);
}

void pg_out_negotiate(struct pg_out *o, const char *const *opts, int n)
{
	pg_out_begin(o, 'v');
	pg_out_i32(o, (int32_t)PG_PROTO_3_0);
	pg_out_i32(o, n);
	for (int i = 0; i < n; i++)
		pg_out_str(o, opts[i]);
	pg_out_end(o);
}

/* ---- md5 ---------------------------------------------------------------- */

static void hex(const uint8_t *in, size_t n, char *out)
{
	static const char d[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = d[in[i] >> 4];
		out[2 * i + 1] = d[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static int md5_of(const void *a, size_t alen, const void *b, size_t blen, uint8_t out[16])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned int n = 0;
	int ok;

	if (!ctx)
		return -ENOMEM;
	ok = EVP_DigestInit_ex(ctx, EVP_md5(), NULL) && EVP_DigestUpdate(ctx, a, alen) &&
	     EVP_DigestUpdate(ctx, b, blen) && EVP_DigestFinal_ex(ctx, out, &n);
	EVP_MD_CTX_free(ctx);
	return ok && n == 16 ? 0 : -EIO;
}

int pg_md5_password(const char *user, const char *password, const uint8_t salt[4], char out[36])
{
	uint8_t d[16];
	char h[33];
	int err;

	err = md5_of(password, strlen(password), user, strlen(user), d);
	if (!err) {
		hex(d, 16, h);
		err = md5_of(h, 32, salt, 4, d);
	}
	if (!err) {
		memcpy(out, "md5", 3);
		hex(d, 16, out + 3);
	}
	OPENSSL_cleanse(d, sizeof(d));
	OPENSSL_cleanse(h, sizeof(h));
	return err;
}

/* ---- SCRAM-SHA-256 (RFC 5802, RFC 7677) ------------------------------------ */

static bool scram_printable(const char *s)
{
	for (; *s; s++)
		if (*s < 0x21 || *s > 0x7e || *s == ',')
			return false;
	return true;
}

int pg_scram_first_nonce(struct pg_scram *s, const char *user, const char *nonce, char *out,
			 size_t outcap, size_t *outlen)
{
	size_t nl = strlen(nonce);
	int n;

	memset(s, 0, sizeof(*s));
	if (nl >= sizeof(s->client_nonce) || !nl || !scram_printable(nonce) ||
	    (user[0] && !scram_printable(user)) || strchr(user, '='))
		return -EINVAL;
	memcpy(s->client_nonce, nonce, nl + 1);
	n = snprintf(s->client_first_bare, sizeof(s->client_first_bare), "n=%s,r=%s", user, s->client_nonce);
	if (n < 0 || (size_t)n >= sizeof(s->client_first_bare))
		return -EINVAL;
	n = snprintf(out, outcap, "n,,%s", s->client_first_bare);
	if (n < 0 || (size_t)n >= outcap)
		return -ENOSPC;
	*outlen = (size_t)n;
	s->state = 1;
	return 0;
}

int pg_scram_first(struct pg_scram *s, char *out, size_t outcap, size_t *outlen)
{
	uint8_t raw[18];
	char nonce[32];

	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -EIO;
	/* 18 bytes -> 24 base64 characters, no padding; base64 has no ','. */
	EVP_EncodeBlock((unsigned char *)nonce, raw, sizeof(raw));
	/* PostgreSQL ignores the SCRAM user name (the startup packet's user
	 * counts); libpq sends it empty too. */
	return pg_scram_first_nonce(s, "", nonce, out, outcap, outlen);
}

/* The value of attribute "k=" in a comma-separated SCRAM message (copied
 * NUL-terminated into v), at position idx (attributes come in a fixed order). */
static int scram_attr(const char *msg, size_t len, int idx, char k, char *v, size_t vcap)
{
	size_t i = 0;

	for (int a = 0; a <= idx; a++) {
		size_t start = i, end;

		while (i < len && msg[i] != ',')
			i++;
		end = i;
		if (a == idx) {
			if (end - start < 2 || msg[start] != k || msg[start + 1] != '=' ||
			    end - start - 2 >= vcap)
				return -EBADMSG;
			memcpy(v, msg + start + 2, end - start - 2);
			v[end - start - 2] = '\0';
			return 0;
		}
		if (i >= len)
			return -EBADMSG;
		i++;
	}
	return -EBADMSG;
}

static int hmac256(const uint8_t *key, size_t klen, const void *d, size_t dlen, uint8_t out[32])
{
	unsigned int n = 0;

	if (!HMAC(EVP_sha256(), key, (int)klen, d, dlen, out, &n) || n != 32)
		return -EIO;
	return 0;
}

static bool ascii_password(const char *p)
{
	for (; *p; p++)
		if ((uint8_t)*p < 0x20 || (uint8_t)*p > 0x7e)
			return false;
	return true;
}

/*
 * The keys PBKDF2 derives (ClientKey, ServerKey) for a password, salt and
 * iteration count. PostgreSQL keeps one salt per role, so every upstream
 * connection of a target asks for the same derivation: 4096 rounds of
 * HMAC-SHA-256 by default, about a millisecond of a worker's time per
 * connection, which pgbouncer also saves by caching. An entry is used only
 * when all three inputs are equal (the password through its SHA-256,
 * compared in constant time), so it holds exactly what would be computed
 * again. The keys are as secret as the password, which the enforcer holds
 * anyway; an evicted entry is wiped. A few entries: one per target role.
 */
#define SCRAM_CACHE 8
static struct scram_cached {
	bool used;
	unsigned long iters;
	int saltlen;
	uint8_t salt[192];
	uint8_t pwhash[32];
	uint8_t ckey[32], skey[32];
} scram_cache[SCRAM_CACHE];
static unsigned scram_cache_next;
static unsigned long scram_cache_hit_count;
static pthread_mutex_t scram_cache_lock = PTHREAD_MUTEX_INITIALIZER;

unsigned long pg_scram_cache_hits(void)
{
	unsigned long n;

	pthread_mutex_lock(&scram_cache_lock);
	n = scram_cache_hit_count;
	pthread_mutex_unlock(&scram_cache_lock);
	return n;
}

static bool scram_cache_get(const uint8_t pwhash[32], const uint8_t *salt, int saltlen,
			    unsigned long iters, uint8_t ckey[32], uint8_t skey[32])
{
	bool hit = false;

	pthread_mutex_lock(&scram_cache_lock);
	for (int i = 0; i < SCRAM_CACHE && !hit; i++) {
		struct scram_cached *e = &scram_cache[i];

		if (e->used && e->iters == iters && e->saltlen == saltlen &&
		    memcmp(e->salt, salt, (size_t)saltlen) == 0 && CRYPTO_memcmp(e->pwhash, pwhash, 32) == 0) {
			memcpy(ckey, e->ckey, 32);
			memcpy(skey, e->skey, 32);
			scram_cache_hit_count++;
			hit = true;
		}
	}
	pthread_mutex_unlock(&scram_cache_lock);
	return hit;
}

static void scram_cache_put(const uint8_t pwhash[32], const uint8_t *salt, int saltlen,
			    unsigned long iters, const uint8_t ckey[32], const uint8_t skey[32])
{
	pthread_mutex_lock(&scram_cache_lock);
	struct scram_cached *e = &scram_cache[scram_cache_next++ % SCRAM_CACHE];

	OPENSSL_cleanse(e, sizeof(*e));
	e->used = true;
	e->iters = iters;
	e->saltlen = saltlen;
	memcpy(e->salt, salt, (size_t)saltlen);
	memcpy(e->pwhash, pwhash, 32);
	memcpy(e->ckey, ckey, 32);
	memcpy(e->skey, skey, 32);
	pthread_mutex_unlock(&scram_cache_lock);
}

int pg_scram_final(struct pg_scram *s, const char *password, const uint8_t *server_first, size_t len,
		   char *out, size_t outcap, size_t *outlen)
{
	uint8_t pwhash[32];
	char sf[512], rnonce[256], salt64[256], iter[16], proof64[64];
	uint8_t salt[192], salted[32], ckey[32], skey[32], stored[32], csig[32], proof[32];
	char *end;
	unsigned long iters;
	int saltlen, n, err = -EIO;
	size_t cn = strlen(s->client_nonce);

	if (s->state != 1)
		return -EINVAL;
	if (!password || !ascii_password(password))
		return -EINVAL;
	if (len == 0 || len >= sizeof(sf) || memchr(server_first, 0, len))
		return -EBADMSG;
	memcpy(sf, server_first, len);
	sf[len] = '\0';
	if (scram_attr(sf, len, 0, 'r', rnonce, sizeof(rnonce)) ||
	    scram_attr(sf, len, 1, 's', salt64, sizeof(salt64)) ||
	    scram_attr(sf, len, 2, 'i', iter, sizeof(iter)))
		return -EBADMSG;
	/* The server's nonce must extend ours, and add something. */
	if (strlen(rnonce) <= cn || strncmp(rnonce, s->client_nonce, cn) != 0 || !scram_printable(rnonce))
		return -EPROTO;
	errno = 0;
	iters = strtoul(iter, &end, 10);
	if (errno || *end || end == iter || iter[0] == '-' || iter[0] == '+')
		return -EBADMSG;
	if (iters < PG_SCRAM_MIN_ITER || iters > PG_SCRAM_MAX_ITER)
		return -ERANGE;
	/* base64 salt: length a multiple of 4, decoded size adjusted for '=' padding */
	n = (int)strlen(salt64);
	if (n == 0 || n % 4 || (size_t)n / 4 * 3 > sizeof(salt))
		return -EBADMSG;
	saltlen = EVP_DecodeBlock(salt, (const unsigned char *)salt64, n);
	if (saltlen < 0)
		return -EBADMSG;
	if (salt64[n - 1] == '=')
		saltlen--;
	if (salt64[n - 2] == '=')
		saltlen--;
	if (saltlen <= 0)
		return -EBADMSG;

	if (!SHA256((const unsigned char *)password, strlen(password), pwhash))
		goto out;
	if (!scram_cache_get(pwhash, salt, saltlen, iters, ckey, skey)) {
		if (!PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, saltlen, (int)iters,
				       EVP_sha256(), sizeof(salted), salted))
			goto out;
		if (hmac256(salted, 32, "Client Key", 10, ckey) || hmac256(salted, 32, "Server Key", 10, skey))
			goto out;
		scram_cache_put(pwhash, salt, saltlen, iters, ckey, skey);
	}
	if (!SHA256(ckey, 32, stored))
		goto out;
	/* client-final-message-without-proof: "c=biws" is base64("n,,") */
	n = snprintf(s->auth_message, sizeof(s->auth_message), "%s,%s,c=biws,r=%s", s->client_first_bare,
		     sf, rnonce);
	if (n < 0 || (size_t)n >= sizeof(s->auth_message)) {
		err = -EBADMSG;
		goto out;
	}
	if (hmac256(stored, 32, s->auth_message, (size_t)n, csig) ||
	    hmac256(skey, 32, s->auth_message, (size_t)n, s->server_signature))
		goto out;
	for (int i = 0; i < 32; i++)
		proof[i] = ckey[i] ^ csig[i];
	EVP_EncodeBlock((unsigned char *)proof64, proof, 32);
	n = snprintf(out, outcap, "c=biws,r=%s,p=%s", rnonce, proof64);
	if (n < 0 || (size_t)n >= outcap) {
		err = -ENOSPC;
		goto out;
	}
	*outlen = (size_t)n;
	s->state = 2;
	err = 0;
out:
	OPENSSL_cleanse(pwhash, sizeof(pwhash));
	OPENSSL_cleanse(salted, sizeof(salted));
	OPENSSL_cleanse(ckey, sizeof(ckey));
	OPENSSL_cleanse(skey, sizeof(skey));
	OPENSSL_cleanse(stored, sizeof(stored));
	OPENSSL_cleanse(csig, sizeof(csig));
	OPENSSL_cleanse(proof, sizeof(proof));
	return err;
}

int pg_scram_verify(struct pg_scram *s, const uint8_t *server_final, size_t len)
{
	char v64[64];
	uint8_t v[48];
	int n;

	if (s->state != 2)
		return -EINVAL;
	/* "v=<base64 of 32 bytes>" (44 chars); "e=..." is a server-side error */
	if (len != 46 || server_final[0] != 'v' || server_final[1] != '=')
		return len >= 2 && server_final[0] == 'e' ? -EPROTO : -EBADMSG;
	memcpy(v64, server_final + 2, 44);
	v64[44] = '\0';
	n = EVP_DecodeBlock(v, (const unsigned char *)v64, 44);
	if (n != 33 || v64[43] != '=' || v64[42] == '=')
		return -EBADMSG;
	if (CRYPTO_memcmp(v, s->server_signature, 32) != 0)
		return -EPROTO;
	s->state = 3;
	return 0;
}

void pg_scram_clear(struct pg_scram *s)
{
	OPENSSL_cleanse(s, sizeof(*s));
}
