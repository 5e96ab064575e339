// SPDX-License-Identifier: Apache-2.0
/*
 * libFuzzer target for userspace/http_msg.c: request heads, then the body
 * that follows through the chunked decoder, and the same bytes as a
 * response head. Besides "no crash", it checks the promises of http_msg.h:
 *  - NEED_MORE only below HTTP_HEAD_MAX;
 *  - MALFORMED is final: a prefix of an acceptable input is never MALFORMED;
 *  - OK depends only on the first head_len bytes, and one byte fewer is
 *    NEED_MORE;
 *  - every offset is inside the head, names are tokens, values have no
 *    control bytes, the method is upper-case letters;
 *  - the chunked decoder never hands out bytes it was not given.
 * tests/fuzz/replay.c runs this on the corpus without libFuzzer.
 */
#include "http_msg.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void must(bool cond)
{
	if (!cond)
		abort();
}

static void check_head(const uint8_t *data, const struct http_head *h)
{
	must(h->head_len >= 4 && memcmp(data + h->head_len - 4, "\r\n\r\n", 4) == 0);
	must(h->method_len > 0 && h->method_len <= HTTP_METHOD_MAX);
	for (uint32_t i = 0; i < h->method_len; i++)
		must(data[h->method + i] >= 'A' && data[h->method + i] <= 'Z');
	must(h->target + h->target_len < h->head_len);
	for (uint32_t i = 0; i < h->target_len; i++)
		must(data[h->target + i] > 0x20 && data[h->target + i] < 0x7f);
	must(h->nf <= HTTP_MAX_HEADERS);
	for (unsigned i = 0; i < h->nf; i++) {
		const struct http_field *f = &h->f[i];

		must(f->name + f->name_len <= h->head_len && f->value + f->value_len <= h->head_len);
		must(http_token_ok(data + f->name, f->name_len));
		must(http_value_ok(data + f->value, f->value_len));
	}
	must(h->host < (int)h->nf && (h->version == 10 || h->host >= 0));
	must(h->version == 10 || h->version == 11);
}

static void feed_chunked(const uint8_t *data, size_t size)
{
	struct http_chunked ch;
	size_t off = 0;

	http_chunked_init(&ch);
	while (off < size && !ch.done) {
		size_t used, doff, dlen;

		if (http_chunked_feed(&ch, data + off, size - off, &used, &doff, &dlen) < 0) {
			must(ch.error != NULL);
			return;
		}
		must(used <= size - off);
		must(!dlen || doff + dlen <= used);
		if (!used)
			break;
		off += used;
	}
	must(off == size || ch.done);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_head h, again;
	int st = http_req_parse(data, size, &h);

	must(st == HTTP_OK || st == HTTP_NEED_MORE || st == HTTP_MALFORMED);
	if (st == HTTP_NEED_MORE)
		must(size < HTTP_HEAD_MAX);
	if (st == HTTP_MALFORMED)
		must(h.error != NULL);
	if (st != HTTP_MALFORMED && size > 0)
		must(http_req_parse(data, size - 1, &again) != HTTP_MALFORMED);
	if (st == HTTP_OK) {
		check_head(data, &h);
		must(http_req_parse(data, h.head_len, &again) == HTTP_OK);
		must(again.head_len == h.head_len && again.nf == h.nf && again.body == h.body &&
		     again.content_length == h.content_length);
		must(http_req_parse(data, h.head_len - 1, &again) == HTTP_NEED_MORE);
		if (h.body == HTTP_BODY_CHUNKED)
			feed_chunked(data + h.head_len, size - h.head_len);
	} else {
		feed_chunked(data, size);
	}
	st = http_resp_parse(data, size, false, &h);
	must(st == HTTP_OK || st == HTTP_NEED_MORE || st == HTTP_MALFORMED);
	if (st == HTTP_OK)
		must(h.status >= 100 && h.status <= 999 && h.head_len <= size);
	return 0;
}
