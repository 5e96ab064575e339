// SPDX-License-Identifier: Apache-2.0
/*
 * libFuzzer target for userspace/http_scrub.c. The first byte sets the
 * secret's length, the next bytes are the secret, the rest is an answer.
 * Checks the promises of http_scrub.h, not just "no crash":
 *  - only '*' bytes are written, and the length never changes;
 *  - the secret written as it is never remains (when it has no '*');
 *  - scrubbing the result again finds nothing (when it has no '*');
 *  - a stream that keeps back scrub_hold() bytes, cut anywhere, sends
 *    the same bytes as one pass over the whole answer.
 * tests/fuzz/replay.c runs this on the corpus without libFuzzer.
 */
#include "http_scrub.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void must(bool cond)
{
	if (!cond)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct scrub z = { 0 };
	size_t sl, n, hold;
	const uint8_t *sec, *text;
	uint8_t *whole, *carry, *sent;
	size_t clen = 0, slen = 0, cut;
	bool star_free;

	if (size < 1)
		return 0;
	sl = SCRUB_MIN_LEN + data[0] % 57;
	if (size < 1 + sl)
		return 0;
	sec = data + 1;
	text = data + 1 + sl;
	n = size - 1 - sl;
	must(scrub_add(&z, sec, sl) == 0);
	/* scrub_add() drops a value's leading and trailing blanks */
	for (; sl && (sec[0] == ' ' || sec[0] == '\t'); sec++)
		sl--;
	while (sl && (sec[sl - 1] == ' ' || sec[sl - 1] == '\t'))
		sl--;
	if (sl < SCRUB_MIN_LEN) {
		must(z.n == 0);
		return 0;
	}
	must(z.n == 1);
	star_free = !memchr(sec, '*', sl);
	hold = scrub_hold(&z);
	must(hold == sl * SCRUB_ENC_MAX - 1);

	whole = malloc(n + 1);
	carry = malloc(n + 1);
	sent = malloc(n + 1);
	must(whole && carry && sent);
	memcpy(whole, text, n);
	scrub_buf(&z, whole, n);
	for (size_t i = 0; i < n; i++)
		must(whole[i] == text[i] || whole[i] == '*');
	if (star_free) {
		must(!memmem(whole, n, sec, sl));
		must(scrub_buf(&z, whole, n) == 0);
	}

	/* the stream, cut where the data says */
	cut = n ? (size_t)data[0] * 7 % (n + 1) : 0;
	for (int k = 0; k < 2; k++) {
		const uint8_t *p = k ? text + cut : text;
		size_t pl = k ? n - cut : cut, out;

		memcpy(carry + clen, p, pl);
		clen += pl;
		scrub_buf(&z, carry, clen);
		out = clen - scrub_keep(&z, carry, clen);
		must(clen - out <= hold);
		memcpy(sent + slen, carry, out);
		slen += out;
		memmove(carry, carry + out, clen - out);
		clen -= out;
	}
	memcpy(sent + slen, carry, clen);
	slen += clen;
	must(slen == n);
	if (star_free)
		must(!memmem(sent, n, sec, sl));
	free(whole);
	free(carry);
	free(sent);
	scrub_clear(&z);
	return 0;
}
