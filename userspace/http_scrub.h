/* SPDX-License-Identifier: Apache-2.0 */
/*
 * http_scrub — keeps an injected credential from coming back to the agent.
 *
 * The http module puts the target's credential (a bearer token, basic
 * auth, a named header) on each forwarded request; the agent never holds
 * it. An upstream that reflects the request — echo and debug endpoints,
 * TRACE, error pages, a redirect carrying the token in its query — would
 * hand it to the agent in the answer. So every answer on such a connection
 * is searched for the secrets the connection injected, and each occurrence
 * is overwritten with '*' bytes of the same length (a body's framing does
 * not change, so a streamed body stays streamed).
 *
 * An occurrence is found as written, percent-encoded (%2F, %2f; twice,
 * %252F; a space also as '+', form-encoded), JSON-escaped (\/, \\, \",
 * \t, \u002f) and HTML-escaped (&amp; &lt; &gt; &quot; &apos; &#39;
 * &#x27;, a character reference of at most SCRUB_ENC_MAX bytes) in any
 * mix. A value's leading and trailing blanks are not part of the secret
 * (an upstream drops them from a field). Not found: a secret transformed
 * in another way (base64 of it, hex, a hash, its case changed, split by
 * other bytes, cut short but at a text's ends (scrub_cut()) or as written
 * with fewer than SCRUB_HIDDEN of its bytes left out), or whose
 * leading letters, digits and -._ are themselves encoded (no encoder
 * escapes those). Secrets shorter than SCRUB_MIN_LEN are not searched for:
 * they would star common words.
 *
 * Written by hand: no library searches for a needle under URL and JSON
 * escaping; this is a memmem() of the secret's leading plain bytes and a
 * byte-by-byte decoding comparison from each hit.
 */
#ifndef AGENTGATE_HTTP_SCRUB_H
#define AGENTGATE_HTTP_SCRUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCRUB_MAX 4           /* secrets per connection (the newest kept) */
#define SCRUB_MIN_LEN 8
#define SCRUB_SECRET_MAX 8192 /* longer secrets are not searched for (HTTP_CRED_MAX) */
#define SCRUB_ENC_MAX 6       /* \u002f, &quot;: the longest encoding of one byte */
#define SCRUB_PREFIX 4        /* a memmem() needle shorter than this scans byte by byte */
#define SCRUB_HIDDEN 12       /* a secret cut short is starred when fewer of its bytes stay unseen */

struct scrub_secret {
	uint8_t *s;
	size_t len;
	size_t plain;             /* leading bytes no encoder escapes: the memmem() needle */
};

struct scrub {
	struct scrub_secret sec[SCRUB_MAX];
	unsigned n;
};

/* Adds a secret (copied; an equal one is not added twice; the oldest goes
 * when SCRUB_MAX are held). 0, or -ENOMEM. Too short or too long: ignored. */
int scrub_add(struct scrub *z, const uint8_t *s, size_t len);

/* Overwrites with '*' every occurrence that lies whole in p[0..n); returns
 * how many. */
unsigned scrub_buf(const struct scrub *z, uint8_t *p, size_t n);

/* The most a stream may have to keep back: an occurrence's longest
 * encoding, less one byte. 0 when nothing is searched for. */
size_t scrub_hold(const struct scrub *z);

/* How many bytes at the end of p[0..n) (scrubbed already) a stream keeps
 * back: from the first place where the text, cut short by its end, could
 * be how an occurrence begins (at most scrub_hold()); usually 0, so a
 * streamed answer (events, tokens) is not delayed. */
size_t scrub_keep(const struct scrub *z, const uint8_t *p, size_t n);

/* p[0..n) is a whole text that may have been cut (a body: its end; a
 * range of a reflection): overwrites with '*' an end that is how an
 * occurrence begins and a start that is how one ends (or all of p, when it
 * lies inside one), each of SCRUB_PREFIX bytes or more, so that a cut the
 * agent chose shows it no more than SCRUB_PREFIX - 1 of the secret's
 * bytes. Call after scrub_buf(); returns how many were starred. */
unsigned scrub_cut(const struct scrub *z, uint8_t *p, size_t n);

/* scrub_cut() for the start only: p[0..n) begins a text whose end is not
 * here yet (a streamed body's first scrub_hold() bytes or more). */
unsigned scrub_cut_start(const struct scrub *z, uint8_t *p, size_t n);

/* Whether more bytes could still make the start of p[0..n) how an
 * occurrence ends (all of it lies inside one so far, or it is shorter than
 * SCRUB_PREFIX): a stream holds its start back until this is false. */
bool scrub_start_open(const struct scrub *z, const uint8_t *p, size_t n);

/* Wipes and frees every secret. */
void scrub_clear(struct scrub *z);

#endif
