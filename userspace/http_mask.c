// SPDX-License-Identifier: Apache-2.0
/* http_mask: content decoding and masking of response bodies (see http_mask.h). */
#include "http_mask.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

static int inflate_with(const uint8_t *in, size_t len, size_t max, int wbits, uint8_t **out, size_t *outlen)
{
	z_stream zs;
	size_t cap = len * 4 + 1024, n = 0;
	uint8_t *buf;
	int rc;

	if (cap > max + 1)
		cap = max + 1;
	memset(&zs, 0, sizeof(zs));
	if (inflateInit2(&zs, wbits) != Z_OK)
		return -ENOMEM;
	buf = malloc(cap);
	if (!buf) {
		inflateEnd(&zs);
		return -ENOMEM;
	}
	zs.next_in = (Bytef *)in;
	zs.avail_in = (uInt)len;
	for (;;) {
		if (n == cap) {
			uint8_t *nb;

			if (cap > max) {
				rc = -E2BIG;
				break;
			}
			cap = cap * 2 > max + 1 ? max + 1 : cap * 2;
			nb = realloc(buf, cap);
			if (!nb) {
				rc = -ENOMEM;
				break;
			}
			buf = nb;
		}
		zs.next_out = buf + n;
		zs.avail_out = (uInt)(cap - n);
		rc = inflate(&zs, Z_NO_FLUSH);
		n = cap - zs.avail_out;
		if (rc == Z_STREAM_END) {
			/* gzip allows several members in a row (RFC 1952 2.2),
			 * read as one body; the bound is on them all */
			if (wbits == 15 + 32 && zs.avail_in >= 2 && zs.next_in[0] == 0x1f &&
			    zs.next_in[1] == 0x8b && len >= 2 && in[0] == 0x1f && in[1] == 0x8b) {
				if (inflateReset(&zs) != Z_OK) {
					rc = -EINVAL;
					break;
				}
				continue;
			}
			/* other bytes after the stream are not part of any reading */
			rc = zs.avail_in ? -EINVAL : 0;
			break;
		}
		if (rc == Z_OK && n == cap)
			continue;
		if (rc != Z_OK || !zs.avail_in) {
			rc = rc == Z_MEM_ERROR ? -ENOMEM : -EINVAL;   /* corrupt or truncated */
			break;
		}
	}
	inflateEnd(&zs);
	if (rc == 0 && n > max)
		rc = -E2BIG;
	if (rc) {
		free(buf);
		return rc;
	}
	*out = buf;
	*outlen = n;
	return 0;
}

int http_inflate(const uint8_t *in, size_t len, size_t max, uint8_t **out, size_t *outlen)
{
	int rc = inflate_with(in, len, max, 15 + 32, out, outlen);   /* gzip or zlib */

	if (rc == -EINVAL)   /* "deflate" as raw deflate, as some servers send it */
		rc = inflate_with(in, len, max, -15, out, outlen);
	return rc;
}

/* Valid UTF-8 without NUL (RFC 3629: no overlong forms, surrogates or
 * code points above U+10FFFF). */
static bool utf8_text(const uint8_t *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = s[i];
		size_t k;
		uint8_t lo = 0x80, hi = 0xbf;

		if (c && c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			k = 1;
		else if (c >= 0xe0 && c <= 0xef)
			k = 2, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
		else if (c >= 0xf0 && c <= 0xf4)
			k = 3, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
		else
			return false;   /* NUL, a continuation byte, C0, C1, F5+ */
		if (n - i <= k || s[i + 1] < lo || s[i + 1] > hi)
			return false;
		for (size_t j = 2; j <= k; j++)
			if ((s[i + j] & 0xc0) != 0x80)
				return false;
		i += k + 1;
	}
	return true;
}

static bool ident_byte(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
	       c == '$' || c >= 0x80;
}

/*
 * Could text that is not JSON still carry what the route's JSON paths would
 * have masked? JSON wrapped for a browser (JSONP "cb({...})", "while(1);{...}",
 * a comment or an RS before it, HTML after it) is still JSON to the agent,
 * and detectors alone do not find what a path names. The same data can also
 * come in another format the API offers (/v1/invoices/42.xml, ?format=csv:
 * "<email>ada@...", a CSV header "id,email"). So on a route with JSON paths
 * such text is refused when it has an object or array in it (any '{' or
 * '['), or the name a path ends with (its last named step) anywhere as a
 * word of its own, in any case: a tag, a CSV column, a YAML or form key.
 */
static bool json_like(const struct mask_rules *m, const uint8_t *p, size_t n)
{
	size_t np;
	const struct mask_path *paths = mask_rules_paths(m, &np);

	if (np && (memchr(p, '{', n) || memchr(p, '[', n)))
		return true;
	for (size_t k = 0; k < np; k++) {
		const struct mask_step *st = NULL;

		for (unsigned i = 0; i < paths[k].nsteps; i++)
			if (paths[k].step[i].kind == MSTEP_NAME)
				st = &paths[k].step[i];
		if (!st || !st->namelen || st->namelen > n)
			continue;
		for (size_t at = 0; at + st->namelen <= n; at++) {
			size_t e = at + st->namelen;

			if ((p[at] | 0x20) != ((uint8_t)st->name[0] | 0x20) ||
			    strncasecmp((const char *)p + at, st->name, st->namelen) != 0)
				continue;
			if ((at > 0 && ident_byte(p[at - 1])) || (e < n && ident_byte(p[e])))
				continue;   /* part of a longer word */
			return true;
		}
	}
	return false;
}

bool http_mask_json_field(const struct mask_rules *m, const uint8_t *v, size_t n)
{
	struct mask_report rep;
	size_t i = 0, outlen;
	char *out;
	int rc;

	while (i < n && (v[i] == ' ' || v[i] == '\t'))
		i++;
	if (i == n || (v[i] != '{' && v[i] != '[') || mask_json_lenient((const char *)v, n) == -EINVAL)
		return false;
	if (mask_has_json(m))
		return true;
	if (!mask_has_detectors(m))
		return false;
	if ((rc = mask_json(m, (const char *)v, n, &out, &outlen, &rep)))
		return true;   /* lenient readers only, too deep, no memory: not read, so whole */
	free(out);
	return rep.hits > 0;
}

bool http_mask_charset_ok(const char *ct, size_t n)
{
	size_t i = 0;

	/* the parameters after the media type: ;name=value or ;name="value" */
	while (i < n && ct[i] != ';')
		i++;
	while (i < n) {
		size_t ns, ne, vs, ve;

		i++;   /* ';' */
		while (i < n && (ct[i] == ' ' || ct[i] == '\t'))
			i++;
		ns = i;
		while (i < n && ct[i] != '=' && ct[i] != ';' && ct[i] != ' ' && ct[i] != '\t')
			i++;
		ne = i;
		while (i < n && (ct[i] == ' ' || ct[i] == '\t'))
			i++;
		if (i == n || ct[i] != '=') {
			while (i < n && ct[i] != ';')
				i++;
			continue;
		}
		i++;
		while (i < n && (ct[i] == ' ' || ct[i] == '\t'))
			i++;
		if (i < n && ct[i] == '"') {
			vs = ++i;
			while (i < n && ct[i] != '"')
				i += ct[i] == '\\' && i + 1 < n ? 2 : 1;
			ve = i < n ? i : n;
		} else {
			vs = i;
			while (i < n && ct[i] != ';' && ct[i] != ' ' && ct[i] != '\t')
				i++;
			ve = i;
		}
		if (ne - ns == 7 && strncasecmp(ct + ns, "charset", 7) == 0 &&
		    (memchr(ct + vs, '\\', ve - vs) || !mask_charset_ok(ct + vs, ve - vs)))
			return false;   /* (an escape in the name: no charset is spelled so) */
		while (i < n && ct[i] != ';')
			i++;
	}
	return true;
}

static bool coding_is(const char *c, size_t n, const char *name)
{
	return n == strlen(name) && strncasecmp(c, name, n) == 0;
}

int http_mask_body(const struct mask_rules *m, const uint8_t *body, size_t len, const char *coding,
		   size_t codinglen, char **out, size_t *outlen, struct mask_report *rep, const char **why)
{
	uint8_t *plain = NULL;
	const uint8_t *p = body;
	size_t plen = len, cap;
	int rc;

	memset(rep, 0, sizeof(*rep));
	*out = NULL;
	if (coding && codinglen && !coding_is(coding, codinglen, "identity")) {
		if (!coding_is(coding, codinglen, "gzip") && !coding_is(coding, codinglen, "x-gzip") &&
		    !coding_is(coding, codinglen, "deflate")) {
			*why = "the response's content coding cannot be decoded for masking";
			return -EINVAL;
		}
		rc = http_inflate(body, len, MASK_JSON_MAX, &plain, &plen);
		if (rc) {
			*why = rc == -E2BIG ? "the decoded response body is larger than the masking bound (8 MiB) and cannot be masked"
					    : "the response's compressed body is corrupt";
			return rc;
		}
		p = plain;
	}
	if (plen > MASK_JSON_MAX) {
		free(plain);
		*why = "the response body is larger than the masking bound (8 MiB) and cannot be masked";
		return -E2BIG;
	}
	if (plen == 0) {
		/* no body (a 201 with a Location, a redirect): nothing to mask */
		free(plain);
		if (!(*out = malloc(1)))
			return -ENOMEM;
		*outlen = 0;
		if (rep)
			memset(rep, 0, sizeof(*rep));
		return 0;
	}
	rc = mask_json(m, (const char *)p, plen, out, outlen, rep);
	if (rc == 0 || rc == -E2BIG || rc == -ENOMEM) {
		free(plain);
		if (rc)
			*why = rc == -E2BIG ? "the response is too large or too deep to mask" : "out of memory";
		return rc;
	}
	/* Not JSON. */
	if (!mask_has_detectors(m)) {
		free(plain);
		*why = "the response is not JSON and the route's mask names only JSON paths";
		return -EINVAL;
	}
	/* JSON to the agent's client all the same (a duplicate name, a BOM...):
	 * scanned as text, its JSON paths and \u-escaped values would pass. */
	if ((rc = mask_json_lenient((const char *)p, plen)) != -EINVAL) {
		free(plain);
		*why = rc == -ENOMEM ? "out of memory"
			: "the response is JSON to lenient readers but not strict JSON (duplicate names, "
			  "a BOM, \\u0000, NaN...) and cannot be masked";
		return rc == -ENOMEM ? rc : -EINVAL;
	}
	if (json_like(m, p, plen)) {
		free(plain);
		*why = "the response is not JSON but may be read as JSON or carry what the route's JSON paths "
		       "mask (an object or array, or a name they mask: JSONP, XML, CSV...) and cannot be masked";
		return -EINVAL;
	}
	/* The detectors read UTF-8 text: a body that is not (binary, another
	 * charset, a content coding left on: two Content-Encoding fields) would
	 * pass them unread, not unmatched. */
	if (!utf8_text(p, plen)) {
		free(plain);
		*why = "the response is not UTF-8 text (binary, another charset, or still content-coded) "
		       "and cannot be masked";
		return -EINVAL;
	}
	if (!mask_declared_charsets_ok((const char *)p, plen)) {
		free(plain);
		*why = "the response names a charset in its text that the masker does not read (an XML "
		       "declaration's encoding, an HTML meta charset, CSS @charset: UTF-8, US-ASCII, ISO-8859-*, "
		       "Windows-125* are read) and cannot be masked";
		return -EINVAL;
	}
	if (mask_declares_entities((const char *)p, plen)) {
		free(plain);
		*why = "the response declares XML entities (<!ENTITY in a DOCTYPE), whose expansion the "
		       "detectors do not see, and cannot be masked";
		return -EINVAL;
	}
	cap = mask_value_bound(plen);
	*out = malloc(cap + 1);
	if (!*out) {
		free(plain);
		*why = "out of memory";
		return -ENOMEM;
	}
	*outlen = mask_value(m, (const char *)p, plen, *out, cap, &rep->hits);
	free(plain);
	if (*outlen == (size_t)-1) {
		free(*out);
		*out = NULL;
		*why = "masking failed";
		return -EINVAL;
	}
	(*out)[*outlen] = '\0';
	/* Not JSON, but read by a JavaScript or lenient JSON reader all the
	 * same (JSONP, a comma too many): what its string escapes spell
	 * ("jos\u00e9@ex\u00e4mple.com", as PHP and Python write non-ASCII)
	 * the detectors did not see as written (found by review); nor what
	 * HTML character references spell to a browser or an HTML-to-text
	 * reader ("ada&#64;example.com", how pages hide an address from
	 * harvesters). */
	if ((rc = mask_escapes_hide(m, *out, *outlen))) {
		free(*out);
		*out = NULL;
		*why = rc < 0 ? "out of memory"
			: "the response is not JSON but its string escapes or character references spell what "
			  "the detectors mask (\\u0040 or &#64; for an at sign: JSONP, a script, HTML...) and "
			  "cannot be masked";
		return rc < 0 ? rc : -EINVAL;
	}
	if (rep->hits)
		mask_report_add(rep, m, "(body)", 6);
	return 0;
}
