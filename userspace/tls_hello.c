// SPDX-License-Identifier: Apache-2.0
/*
 * tls_hello: a strict, bounded ClientHello parser. See tls_hello.h.
 *
 * Two passes. frame() walks the record layer and decides NEED_MORE /
 * MALFORMED / complete without looking inside the ClientHello body, so a
 * partial hello is never half-parsed. Then the body is read through a
 * struct rd, a length-bounded view over the handshake message that steps
 * over record headers by itself: a ClientHello fragmented over many records
 * is parsed in place, with no reassembly buffer to size or allocate.
 */
#include "tls_hello.h"

#include <arpa/inet.h>
#include <string.h>

enum {
	REC_HEADER        = 5,   /* type, version(2), length(2) */
	REC_HANDSHAKE     = 22,
	HS_HEADER         = 4,   /* type, length(3) */
	HS_CLIENT_HELLO   = 1,
	EXT_SERVER_NAME   = 0,
	EXT_ALPN          = 16,
	EXT_PRE_SHARED_KEY = 41,
	EXT_ECH           = 0xfe0d,   /* encrypted_client_hello, draft-ietf-tls-esni-13 on */
	EXT_ESNI          = 0xffce,   /* encrypted_server_name, its early drafts */
	SNI_HOST_NAME     = 0,
};

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static size_t min_size(size_t a, size_t b)
{
	return a < b ? a : b;
}

/*
 * The record layer. On TLS_HELLO_OK, *msg_len is the handshake message's
 * length (header included) and *consumed the bytes of the records holding
 * it. The message starts at buf + REC_HEADER.
 *
 * NEED_MORE is returned only where the record being read ends at or below
 * TLS_HELLO_MAX, and buf ends before it, so len < TLS_HELLO_MAX then.
 * Every header field is checked as soon as its bytes are present, so junk
 * (an HTTP request, an SSLv2 hello) is refused from its first byte instead
 * of waiting for bytes that will never make it valid.
 */
static int frame(const uint8_t *buf, size_t len, size_t *msg_len, size_t *consumed,
		 uint16_t *record_version)
{
	size_t pos = 0;       /* start of the current record */
	size_t have = 0;      /* handshake bytes in complete records before pos */
	size_t need = 0;      /* HS_HEADER + body length, 0 until the header is known */
	uint8_t hs[HS_HEADER] = { 0 };
	uint16_t version = 0;

	for (unsigned nrec = 0;; nrec++) {
		size_t avail = len - pos;

		if (nrec == TLS_HELLO_MAX_RECORDS && avail)
			return TLS_HELLO_MALFORMED;
		/* A record needs its header and at least one byte of payload. */
		if (pos + REC_HEADER + 1 > TLS_HELLO_MAX)
			return TLS_HELLO_MALFORMED;
		if (avail >= 1 && buf[pos] != REC_HANDSHAKE)
			return TLS_HELLO_MALFORMED;   /* also every SSLv2 hello (high bit set) */
		if (avail >= 2 && buf[pos + 1] != 3)
			return TLS_HELLO_MALFORMED;
		/* Clients send every record of a ClientHello with one version;
		 * a change midway has no legitimate use. */
		if (avail >= 3 && pos > 0 && get16(buf + pos + 1) != version)
			return TLS_HELLO_MALFORMED;
		if (avail < REC_HEADER)
			return TLS_HELLO_NEED_MORE;
		if (pos == 0)
			version = get16(buf + 1);

		size_t rlen = get16(buf + pos + 3);
		/* Zero-length handshake fragments are forbidden (RFC 8446 §5.1). */
		if (rlen == 0 || rlen > TLS_RECORD_MAX)
			return TLS_HELLO_MALFORMED;
		if (pos + REC_HEADER + rlen > TLS_HELLO_MAX)
			return TLS_HELLO_MALFORMED;

		size_t got = min_size(rlen, avail - REC_HEADER);
		const uint8_t *frag = buf + pos + REC_HEADER;

		/* The handshake header may itself be split over records. */
		for (size_t i = 0; have + i < HS_HEADER && i < got; i++)
			hs[have + i] = frag[i];
		size_t hs_have = min_size(have + got, HS_HEADER);
		if (hs_have >= 1 && hs[0] != HS_CLIENT_HELLO)
			return TLS_HELLO_MALFORMED;
		if (hs_have == HS_HEADER && need == 0) {
			need = HS_HEADER + ((size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3]);
			if (need + REC_HEADER > TLS_HELLO_MAX)
				return TLS_HELLO_MALFORMED;
		}
		/*
		 * The client sends nothing after its ClientHello until the server
		 * answers, so a record holding more than the rest of the hello
		 * carries a second message we would relay unread: refuse it.
		 */
		if (need != 0 && have + rlen > need)
			return TLS_HELLO_MALFORMED;
		if (got < rlen)
			return TLS_HELLO_NEED_MORE;

		have += rlen;
		pos += REC_HEADER + rlen;
		if (need != 0 && have == need) {
			*msg_len = need;
			*consumed = pos;
			*record_version = version;
			return TLS_HELLO_OK;
		}
	}
}

/*
 * A bounded view of part of the handshake message, in the style of
 * BoringSSL's CBS. `left` bounds every read; when the current fragment runs
 * out, the next record header (already validated by frame()) is skipped.
 * Views are values: a sub-view is a copy with a smaller `left`, so a
 * container can never be read past, and the parent simply skips it.
 */
struct rd {
	const uint8_t *p;     /* next byte */
	size_t frag;          /* bytes left in the current record's fragment */
	size_t left;          /* bytes left in this view */
};

/* Only called with r->left > 0: frame() proved another record follows. */
static void rd_fill(struct rd *r)
{
	if (r->frag == 0) {
		r->frag = get16(r->p + 3);
		r->p += REC_HEADER;
	}
}

static bool rd_copy(struct rd *r, void *dst, size_t n)
{
	uint8_t *d = dst;

	if (r->left < n)
		return false;
	while (n > 0) {
		rd_fill(r);
		size_t k = min_size(n, r->frag);
		if (d) {
			memcpy(d, r->p, k);
			d += k;
		}
		r->p += k;
		r->frag -= k;
		r->left -= k;
		n -= k;
	}
	return true;
}

static bool rd_skip(struct rd *r, size_t n)
{
	return rd_copy(r, NULL, n);
}

static bool rd_u8(struct rd *r, uint8_t *v)
{
	return rd_copy(r, v, 1);
}

static bool rd_u16(struct rd *r, uint16_t *v)
{
	uint8_t b[2];

	if (!rd_copy(r, b, 2))
		return false;
	*v = get16(b);
	return true;
}

/* Carve the next n bytes of r into *sub and move r past them. */
static bool rd_sub(struct rd *r, size_t n, struct rd *sub)
{
	if (r->left < n)
		return false;
	*sub = *r;
	sub->left = n;
	return rd_skip(r, n);
}

/* A vector with a 1- or 2-byte length prefix (RFC 8446 §3.4). */
static bool rd_vec8(struct rd *r, struct rd *sub)
{
	uint8_t n;

	return rd_u8(r, &n) && rd_sub(r, n, sub);
}

static bool rd_vec16(struct rd *r, struct rd *sub)
{
	uint16_t n;

	return rd_u16(r, &n) && rd_sub(r, n, sub);
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/*
 * Check and lower-case a host_name in place (s[n] is NUL). Only LDH
 * characters and dots: no escapes, NULs or spaces that a server's
 * certificate selection or a log line could read differently.
 */
static bool host_name_ok(char *s, size_t n)
{
	size_t label = 0;
	bool numeric = true;   /* the current label is all digits */

	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (c == '.') {
			if (label == 0)
				return false;   /* leading dot or empty label */
			label = 0;
			numeric = true;
			continue;
		}
		if (c >= 'A' && c <= 'Z')
			s[i] = (char)(c - 'A' + 'a');
		else if (!(c >= 'a' && c <= 'z') && !is_digit(c) && c != '-')
			return false;
		if (!is_digit(c))
			numeric = false;
		if (++label > 63)
			return false;
	}
	if (label == 0)
		return false;           /* trailing dot */
	/*
	 * RFC 6066 §3: literal addresses are not permitted. A resolver or
	 * connect() may read "10.1", "167772161" or "0xa000001" as an IPv4
	 * address; no real host name has an all-numeric top label (RFC 3696
	 * §2), and inet_aton() catches the hex and octal forms.
	 */
	struct in_addr a;
	if (numeric || inet_aton(s, &a))
		return false;
	return true;
}

/*
 * server_name (RFC 6066 §3): exactly one entry, of type host_name. The RFC
 * allows one name per type and defines one type, yet servers differ on a
 * list of two (some refuse it, some take one of the names), so we refuse.
 */
static int parse_sni(struct rd *ext, struct tls_hello *out)
{
	struct rd list, name;
	uint8_t type;

	if (!rd_vec16(ext, &list) || ext->left != 0)
		return TLS_HELLO_MALFORMED;
	if (!rd_u8(&list, &type) || type != SNI_HOST_NAME)
		return TLS_HELLO_MALFORMED;
	if (!rd_vec16(&list, &name) || list.left != 0)
		return TLS_HELLO_MALFORMED;
	if (name.left < 1 || name.left >= sizeof(out->sni))
		return TLS_HELLO_MALFORMED;

	size_t n = name.left;
	if (!rd_copy(&name, out->sni, n))
		return TLS_HELLO_MALFORMED;
	out->sni[n] = '\0';
	if (!host_name_ok(out->sni, n))
		return TLS_HELLO_MALFORMED;
	out->has_sni = true;
	return TLS_HELLO_OK;
}

/* ALPN (RFC 7301 §3.1): a non-empty list of non-empty protocol names. */
static int parse_alpn(struct rd *ext, struct tls_hello *out)
{
	struct rd list;

	if (!rd_vec16(ext, &list) || ext->left != 0 || list.left == 0)
		return TLS_HELLO_MALFORMED;
	out->has_alpn = true;
	while (list.left > 0) {
		struct rd name;

		if (!rd_vec8(&list, &name) || name.left == 0)
			return TLS_HELLO_MALFORMED;
		/* Keep every name or refuse: a caller must see the whole list. */
		if (out->nalpn == TLS_HELLO_MAX_ALPN || name.left >= TLS_HELLO_ALPN_LEN)
			return TLS_HELLO_MALFORMED;

		char *dst = out->alpn[out->nalpn];
		size_t n = name.left;
		if (!rd_copy(&name, dst, n))
			return TLS_HELLO_MALFORMED;
		dst[n] = '\0';
		for (size_t i = 0; i < n; i++)
			if (dst[i] < 0x21 || dst[i] > 0x7e)
				return TLS_HELLO_MALFORMED;   /* also keeps NUL out of a C string */
		out->nalpn++;
	}
	return TLS_HELLO_OK;
}

/*
 * encrypted_client_hello under any code point a draft gave it: 0xfe0d from
 * draft 13 on, 0xfe08 + (n - 8) for drafts 8 to 12, 0xff02 (drafts 6, 7),
 * 0xff08 (the text between 7 and 8), and ESNI's 0xffce. Servers built on an
 * earlier draft (NSS shipped 0xfe08; Cloudflare and OpenSSL's ECH branch
 * served 0xfe09 and 0xfe0a) decrypt an inner hello, and its name, as
 * readily as today's (found by review: only 0xfe0d and 0xffce were seen).
 */
static bool ech_type(uint16_t type)
{
	return (type >= 0xfe08 && type <= EXT_ECH) || type == 0xff02 || type == 0xff08 ||
	       type == EXT_ESNI;
}

static int parse_extensions(struct rd *exts, struct tls_hello *out)
{
	/* One bit per extension type: 8 KiB, and O(1) per extension, where a
	 * list compared pairwise would let ~16k extensions cost 10^8 steps. */
	uint8_t seen[65536 / 8];

	memset(seen, 0, sizeof(seen));
	while (exts->left > 0) {
		uint16_t type;
		struct rd body;
		int st = TLS_HELLO_OK;

		if (!rd_u16(exts, &type) || !rd_vec16(exts, &body))
			return TLS_HELLO_MALFORMED;
		if (seen[type >> 3] & (1u << (type & 7)))
			return TLS_HELLO_MALFORMED;   /* RFC 8446 §4.2: at most one of each */
		seen[type >> 3] |= (uint8_t)(1u << (type & 7));

		switch (type) {
		case EXT_SERVER_NAME:
			st = parse_sni(&body, out);
			break;
		case EXT_ALPN:
			st = parse_alpn(&body, out);
			break;
		case EXT_PRE_SHARED_KEY:
			/* RFC 8446 §4.2.11: MUST be last; servers abort otherwise. */
			if (exts->left != 0)
				st = TLS_HELLO_MALFORMED;
			break;
		default:
			/* The real name is encrypted; say so, the caller decides. */
			if (ech_type(type))
				out->has_ech = true;
			break;   /* framing checked; contents are the server's business */
		}
		if (st != TLS_HELLO_OK)
			return st;
	}
	return TLS_HELLO_OK;
}

/* ClientHello body, RFC 8446 §4.1.2 (RFC 5246 §7.4.1.2 for older clients). */
static int parse_client_hello(struct rd *r, struct tls_hello *out)
{
	struct rd session_id, suites, compression, exts;

	if (!rd_u16(r, &out->client_version) || (out->client_version >> 8) != 3)
		return TLS_HELLO_MALFORMED;
	if (!rd_skip(r, 32))                                    /* random */
		return TLS_HELLO_MALFORMED;
	if (!rd_vec8(r, &session_id) || session_id.left > 32)
		return TLS_HELLO_MALFORMED;
	if (!rd_vec16(r, &suites) || suites.left < 2 || suites.left % 2 != 0)
		return TLS_HELLO_MALFORMED;
	if (!rd_vec8(r, &compression) || compression.left < 1)
		return TLS_HELLO_MALFORMED;
	/* Extensions are optional, detected by bytes following (RFC 5246
	 * §7.4.1.2); when present the block must be exactly the rest. */
	if (r->left == 0)
		return TLS_HELLO_OK;
	if (!rd_vec16(r, &exts) || r->left != 0)
		return TLS_HELLO_MALFORMED;
	return parse_extensions(&exts, out);
}

int tls_hello_parse(const uint8_t *buf, size_t len, struct tls_hello *out)
{
	size_t msg_len = 0, consumed = 0;
	uint16_t record_version = 0;
	int st;

	memset(out, 0, sizeof(*out));
	st = frame(buf, len, &msg_len, &consumed, &record_version);
	if (st != TLS_HELLO_OK)
		return st;

	struct rd r = {
		.p = buf + REC_HEADER,
		.frag = get16(buf + 3),
		.left = msg_len,
	};
	if (!rd_skip(&r, HS_HEADER))   /* checked by frame() */
		return TLS_HELLO_MALFORMED;
	st = parse_client_hello(&r, out);
	if (st != TLS_HELLO_OK) {
		memset(out, 0, sizeof(*out));   /* no half-parsed name for a careless caller */
		return st;
	}
	out->record_version = record_version;
	out->consumed = consumed;
	return TLS_HELLO_OK;
}
