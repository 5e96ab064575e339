/* SPDX-License-Identifier: Apache-2.0 */
/*
 * http_mask: a response body on a masked route, made safe to show: the
 * content coding (gzip, deflate) undone with zlib (bounded: a small body
 * that inflates past MASK_JSON_MAX is refused, not followed), then masked
 * by mask.h: as JSON when it parses as JSON (whatever its Content-Type
 * says: a JSON body labelled text/plain is still read as JSON by a client),
 * else by the detectors. A body that is not JSON on a route whose mask
 * names JSON paths and no detectors is refused: nothing could say which
 * part of it is $.customer.email. Refused too, detectors or not: a body
 * lenient JSON readers take although it is not strict JSON (duplicate
 * names, a BOM, \u0000, NaN: mask_json_lenient()), whose paths and escaped
 * values text scanning would miss; and a body that is not UTF-8 text
 * (binary, UTF-16, a content coding left on by two Content-Encoding
 * fields), which the detectors cannot read; and text whose string escapes
 * or HTML character references, undone as a JSON, JavaScript or HTML reader
 * would (JSONP: "ada\u0040...", a page: "ada&#64;..."), spell what the
 * detectors mask; and text declaring XML entities ("<!ENTITY"), whose
 * expansion spells what its pieces do not. The result is sent identity-coded.
 */
#ifndef AGENTGATE_HTTP_MASK_H
#define AGENTGATE_HTTP_MASK_H

#include <stddef.h>
#include <stdint.h>
#include "mask.h"

/*
 * coding: the Content-Encoding value (NULL or "" or "identity": none;
 * "gzip", "x-gzip", "deflate"; anything else is refused). On 0, *out is
 * malloc'd (caller frees) with *outlen bytes, rep filled. On -errno, *why
 * is a static reason (-EINVAL refused content, -E2BIG too large, -ENOMEM).
 */
int http_mask_body(const struct mask_rules *m, const uint8_t *body, size_t len, const char *coding,
		   size_t codinglen, char **out, size_t *outlen, struct mask_report *rep, const char **why);

/*
 * A response field value that is itself JSON (an object or an array, as a
 * lenient reader takes it: Dropbox's Dropbox-API-Result holds a file's
 * metadata, an X-Pagination field a page's cursor and links): the route's
 * JSON paths do not reach into it, and detectors reading its text miss what
 * its escapes spell ("ada\u0040example.com"). True when the value must go
 * masked whole: on a route whose mask names JSON paths, any such value (as
 * a string value holding JSON is in a body); with detectors only, one whose
 * decoded names, strings or numbers they match, or that only lenient
 * readers take (or that is too large or deep to tell). False for any other
 * value: it is scanned as text.
 */
bool http_mask_json_field(const struct mask_rules *m, const uint8_t *v, size_t n);

/*
 * Whether a Content-Type value ct (n bytes) names a charset the masker
 * reads as the agent's client will: none, or one in which every byte below
 * 0x80 is that ASCII character (UTF-8, US-ASCII, ISO-8859-*, Windows-125*).
 * false for any other: in UTF-7 the bytes "ada+AEA-example.com" are
 * ada@example.com to a client that honours the label (Python requests'
 * .json() and .text do), text no detector sees as an address; in Shift_JIS
 * or GBK an ASCII byte can be half of another character.
 */
bool http_mask_charset_ok(const char *ct, size_t n);

/* Inflate gzip or zlib-wrapped (or raw) deflate into a malloc'd buffer of
 * at most max bytes. 0, -EINVAL (corrupt), -E2BIG (over max), -ENOMEM. */
int http_inflate(const uint8_t *in, size_t len, size_t max, uint8_t **out, size_t *outlen);

#endif
