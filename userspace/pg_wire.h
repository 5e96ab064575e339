/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pg_wire: the PostgreSQL frontend/backend protocol 3.0, as bytes. Framing
 * and bounded parsing of every message the postgres module reads (from the
 * agent and from the server), builders for what it writes, and the client
 * side of upstream authentication (SCRAM-SHA-256 per RFC 5802/7677 with the
 * server signature checked, md5). No I/O, no logging, no allocation except
 * in struct pg_out.
 *
 * Parsers are tri-state where bytes may still be arriving (pg_frame,
 * pg_startup_frame): > 0 a whole message of that many bytes, 0 need more,
 * < 0 malformed (-EBADMSG) or too large (-EMSGSIZE). Body parsers take one
 * whole message body and return 0 or -EBADMSG; they never read past it and
 * reject trailing bytes (a Query "SELECT 1\0DELETE ...\0" is malformed, as
 * PostgreSQL says too). Pointers they return point into the caller's buffer.
 */
#ifndef AGENTGATE_PG_WIRE_H
#define AGENTGATE_PG_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PG_PROTO_3_0      196608u    /* 3 << 16 */
#define PG_CODE_CANCEL    80877102u
#define PG_CODE_SSL       80877103u
#define PG_CODE_GSSENC    80877104u
#define PG_STARTUP_MAX    10000u     /* the server's MAX_STARTUP_PACKET_LENGTH */
#define PG_STARTUP_PARAMS 64
#define PG_FIELDS_MAX     1664       /* the server's MaxTupleAttributeNumber */
#define PG_SQLSTATE_DENIED "42501"   /* insufficient_privilege */

/* ---- framing ----------------------------------------------------------- */

struct pg_msg {
	char type;                 /* 0 for a startup-phase packet (no type byte) */
	const uint8_t *body;       /* after the length word */
	uint32_t len;              /* body length */
};

/*
 * One typed message (type byte, int32 length including itself, body) at the
 * start of buf. Returns its total size (> 0) with *m filled, 0 when more
 * bytes are needed, -EMSGSIZE when the length exceeds max (a body larger
 * than max - 5 bytes), -EBADMSG when the length is below 4. The length is
 * checked as soon as the 5 header bytes are there, so a huge announced length
 * is refused before anything is buffered.
 */
int pg_frame(const uint8_t *buf, size_t len, uint32_t max, struct pg_msg *m);
/* The announced total size of the message at buf (header complete), else 0. */
uint32_t pg_frame_size(const uint8_t *buf, size_t len);

enum pg_startup_kind { PG_SU_STARTUP = 1, PG_SU_SSL, PG_SU_GSSENC, PG_SU_CANCEL };

struct pg_startup {
	enum pg_startup_kind kind;
	uint32_t version;          /* PG_SU_STARTUP: the protocol version asked for */
	/* PG_SU_STARTUP: name/value pairs in order, NUL-terminated in the buffer */
	const char *name[PG_STARTUP_PARAMS], *value[PG_STARTUP_PARAMS];
	int nparams;
	/* PG_SU_CANCEL: backend pid and secret key (protocol 3.0: 4 bytes) */
	uint32_t pid, key;
};

/*
 * The first packet of a connection (no type byte): StartupMessage,
 * SSLRequest, GSSENCRequest or CancelRequest. Same return as pg_frame (size,
 * 0, -EBADMSG, -EMSGSIZE beyond PG_STARTUP_MAX). Only protocol major 3 is
 * accepted; parameters must be well formed (name NUL value NUL ... NUL),
 * unique, at most PG_STARTUP_PARAMS, names non-empty. The 'user' parameter is
 * not required here (the module decides).
 */
int pg_startup_frame(const uint8_t *buf, size_t len, struct pg_startup *s);
/* The value of startup parameter name (exact match), or NULL. */
const char *pg_startup_get(const struct pg_startup *s, const char *name);

/* ---- reading message bodies --------------------------------------------- */

struct pg_rd {
	const uint8_t *p;
	uint32_t len, off;
	bool bad;                  /* a read went past the end: the message is malformed */
};

static inline void pg_rd_init(struct pg_rd *r, const struct pg_msg *m)
{
	r->p = m->body;
	r->len = m->len;
	r->off = 0;
	r->bad = false;
}
uint8_t pg_rd_u8(struct pg_rd *r);
int16_t pg_rd_i16(struct pg_rd *r);
int32_t pg_rd_i32(struct pg_rd *r);
/* A NUL-terminated string inside the message, with its length; NULL (and
 * r->bad) when no NUL before the end. */
const char *pg_rd_str(struct pg_rd *r, uint32_t *len);
/* n raw bytes, or NULL (and r->bad). */
const uint8_t *pg_rd_bytes(struct pg_rd *r, uint32_t n);
/* True when everything was read and nothing went wrong. */
static inline bool pg_rd_done(const struct pg_rd *r)
{
	return !r->bad && r->off == r->len;
}

/* Query 'Q': exactly one NUL, at the end. sql is NUL-terminated. */
int pg_parse_query(const struct pg_msg *m, const char **sql, uint32_t *sqllen);

struct pg_parse {                 /* Parse 'P' */
	const char *name, *query;
	uint32_t name_len, query_len;
	int16_t nparams;
	const uint8_t *param_types;  /* nparams big-endian type OIDs (0: the server infers) */
};
int pg_parse_parse(const struct pg_msg *m, struct pg_parse *p);

struct pg_bind {                  /* Bind 'B' */
	const char *portal, *stmt;
	int16_t nparam_formats, nparams, nresult_formats;
	const uint8_t *result_formats; /* nresult_formats big-endian int16, each 0 or 1 */
};
int pg_parse_bind(const struct pg_msg *m, struct pg_bind *b);
/* Result format of column i of a portal bound with b (0 text, 1 binary). */
int pg_bind_result_format(const struct pg_bind *b, int i);

/* Describe 'D' / Close 'C': kind 'S' (statement) or 'P' (portal) and a name. */
int pg_parse_target(const struct pg_msg *m, char *kind, const char **name);
/* Execute 'E' */
int pg_parse_execute(const struct pg_msg *m, const char **portal, int32_t *max_rows);

/* RowDescription 'T' */
struct pg_field {
	const char *name;
	uint32_t table_oid;
	int16_t attnum;
	uint32_t type_oid;
	int16_t typlen;
	int32_t typmod;
	int16_t format;
};
/* Fills at most max fields; *n is the count in the message. -EBADMSG when malformed or n > max. */
int pg_parse_rowdesc(const struct pg_msg *m, struct pg_field *f, int max, int *n);

/* DataRow 'D': iterate columns. */
struct pg_datarow {
	struct pg_rd rd;
	int16_t ncols;
	int16_t col;               /* next column index */
};
int pg_datarow_begin(const struct pg_msg *m, struct pg_datarow *d);
/* Next column: 1 with val and vlen (vlen -1 for NULL, val NULL), 0 at the end
 * (all columns read and no trailing bytes), -EBADMSG. */
int pg_datarow_next(struct pg_datarow *d, const uint8_t **val, int32_t *vlen);

/* ErrorResponse 'E' / NoticeResponse 'N': iterate (code, value) fields.
 * Returns 1 with a field, 0 at the terminating NUL (nothing after it), -EBADMSG. */
int pg_fields_next(struct pg_rd *r, char *code, const char **val, uint32_t *vlen);
/* The value of field code in an E/N message, or NULL. */
const char *pg_fields_get(const struct pg_msg *m, char code);

/* ParameterStatus 'S' */
int pg_parse_param_status(const struct pg_msg *m, const char **name, const char **value);
/* BackendKeyData 'K' (protocol 3.0: 4-byte key) */
int pg_parse_key(const struct pg_msg *m, uint32_t *pid, uint32_t *key);
/* ReadyForQuery 'Z': status I, T or E */
int pg_parse_ready(const struct pg_msg *m, char *status);
/* Authentication 'R': the code, and what follows it (salt, SASL data). */
int pg_parse_auth(const struct pg_msg *m, int32_t *code, const uint8_t **data, uint32_t *dlen);
/* CommandComplete 'C': the tag string. */
int pg_parse_command_complete(const struct pg_msg *m, const char **tag);
/* NotificationResponse 'A' */
int pg_parse_notification(const struct pg_msg *m, uint32_t *pid, const char **channel,
			  const char **payload);

/* True when s[0..len) is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF)
 * with no NUL byte. */
bool pg_utf8_valid(const char *s, size_t len);

/* ---- building messages -------------------------------------------------- */

/*
 * An output buffer that grows up to max bytes (realloc, doubling), so a
 * connection reuses one buffer for every rewritten message. Once a write
 * would exceed max, overflow is set and further writes are dropped: check
 * it before sending. pg_out_free() accepts a zeroed struct.
 */
struct pg_out {
	uint8_t *buf;
	size_t len, cap, max;
	size_t msg_start;          /* offset of the open message's type byte */
	bool overflow;
};
void pg_out_init(struct pg_out *o, size_t max);
void pg_out_free(struct pg_out *o);
static inline void pg_out_reset(struct pg_out *o)
{
	o->len = 0;
	o->overflow = false;
}
/* Empty and bigger than keep bytes: freed. */
void pg_out_trim(struct pg_out *o, size_t keep);
void pg_out_bytes(struct pg_out *o, const void *p, size_t n);
void pg_out_u8(struct pg_out *o, uint8_t v);
void pg_out_i16(struct pg_out *o, int16_t v);
void pg_out_i32(struct pg_out *o, int32_t v);
void pg_out_str(struct pg_out *o, const char *s);   /* with its NUL */
/* Opens a message of type (0: a startup packet, no type byte); pg_out_end
 * patches its length. Messages do not nest. */
void pg_out_begin(struct pg_out *o, char type);
void pg_out_end(struct pg_out *o);

/*
 * ErrorResponse (or NoticeResponse when type is 'N'): S and V = severity,
 * C = sqlstate, M = message, D = detail and H = hint when not NULL. Strings
 * are cut at 1000 bytes on a UTF-8 boundary.
 */
void pg_out_error(struct pg_out *o, char type, const char *severity, const char *sqlstate,
		  const char *msg, const char *detail, const char *hint);
/* The agent's view of a denial: ERROR 42501 "agentgate: denied: <why>". */
void pg_out_denied(struct pg_out *o, const char *why, const char *detail);
void pg_out_ready(struct pg_out *o, char status);
void pg_out_auth_ok(struct pg_out *o);
void pg_out_key(struct pg_out *o, uint32_t pid, uint32_t key);
void pg_out_param_status(struct pg_out *o, const char *name, const char *value);
/* Query 'Q' */
void pg_out_query(struct pg_out *o, const char *sql);
/* Parse 'P' with no parameter types */
void pg_out_parse(struct pg_out *o, const char *name, const char *sql);
/* Describe 'D' / Close 'C' of kind 'S' or 'P' */
void pg_out_target(struct pg_out *o, char type, char kind, const char *name);
void pg_out_simple(struct pg_out *o, char type);   /* Sync, Flush, Terminate, CopyDone... */
/* StartupMessage 3.0 with NULL-terminated name/value arrays */
void pg_out_startup(struct pg_out *o, const char *const *names, const char *const *values, int n);
void pg_out_ssl_request(struct pg_out *o);
void pg_out_cancel(struct pg_out *o, uint32_t pid, uint32_t key);
/* NegotiateProtocolVersion 'v': newest minor we speak (0), unrecognised options. */
void pg_out_negotiate(struct pg_out *o, const char *const *opts, int n);

/* ---- upstream authentication --------------------------------------------- */

/* "md5" + md5hex(md5hex(password || user) || salt), NUL-terminated (36 bytes). */
int pg_md5_password(const char *user, const char *password, const uint8_t salt[4], char out[36]);

/*
 * SCRAM-SHA-256 client, no channel binding (gs2 header "n,,"). The password
 * must be printable ASCII (SASLprep is then the identity; a non-ASCII
 * password is refused rather than prepared wrongly). Secrets are wiped by
 * pg_scram_clear(). Flow:
 *   pg_scram_first()  -> client-first-message for SASLInitialResponse
 *   pg_scram_final()  <- server-first-message (AuthenticationSASLContinue)
 *                     -> client-final-message for SASLResponse
 *   pg_scram_verify() <- server-final-message (AuthenticationSASLFinal):
 *                        0 only if the server proved it knows the password.
 * Each returns 0 or -errno (-EBADMSG malformed server message, -EPROTO nonce
 * or signature mismatch, -EINVAL bad password, -ERANGE iteration count out of
 * [PG_SCRAM_MIN_ITER, PG_SCRAM_MAX_ITER]).
 */
#define PG_SCRAM_MIN_ITER 1024       /* below RFC 7677's 4096 minus slack: a weak server is refused */
#define PG_SCRAM_MAX_ITER 1000000    /* bounds the time a hostile server can make us spend */
struct pg_scram {
	char client_nonce[32];     /* base64 of 18 random bytes */
	char client_first_bare[64];
	char auth_message[1024];
	uint8_t server_signature[32];
	int state;                 /* 0 new, 1 first sent, 2 final sent, 3 verified */
};
int pg_scram_first(struct pg_scram *s, char *out, size_t outcap, size_t *outlen);
/* The same with a given SCRAM user name ("" for PostgreSQL) and client nonce
 * (printable ASCII without ','): for tests against RFC vectors. */
int pg_scram_first_nonce(struct pg_scram *s, const char *user, const char *nonce, char *out,
			 size_t outcap, size_t *outlen);
int pg_scram_final(struct pg_scram *s, const char *password, const uint8_t *server_first, size_t len,
		   char *out, size_t outcap, size_t *outlen);
int pg_scram_verify(struct pg_scram *s, const uint8_t *server_final, size_t len);
void pg_scram_clear(struct pg_scram *s);
/* pg_scram_final() keeps the keys PBKDF2 derived for a few (password, salt,
 * iterations) and derives them once: how often that was saved, for tests. */
unsigned long pg_scram_cache_hits(void);

#endif
