// SPDX-License-Identifier: Apache-2.0
/*
 * libFuzzer target for userspace/tls_hello.c. Besides "no crash", it checks
 * the promises tls_hello.h makes, so a fuzzer finds wrong answers too:
 *  - NEED_MORE only below TLS_HELLO_MAX (a caller's buffer is bounded);
 *  - MALFORMED is final: a prefix of an acceptable input is never MALFORMED;
 *  - OK depends only on the first `consumed` bytes, and one byte fewer
 *    than that is NEED_MORE;
 *  - an accepted name is lower-case LDH with dots, and strings are
 *    NUL-terminated within their arrays.
 * tests/fuzz/replay.c runs this on the corpus without libFuzzer.
 */
#include "tls_hello.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void must(bool cond)
{
	if (!cond)
		abort();
}

static void check_result(const struct tls_hello *h, size_t size)
{
	must(h->consumed > 0 && h->consumed <= size);
	must(memchr(h->sni, '\0', sizeof(h->sni)) != NULL);
	must(h->has_sni == (h->sni[0] != '\0'));
	for (const char *p = h->sni; *p; p++)
		must((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.');
	must(h->nalpn >= 0 && h->nalpn <= TLS_HELLO_MAX_ALPN);
	must(h->has_alpn || h->nalpn == 0);
	for (int i = 0; i < h->nalpn; i++)
		must(memchr(h->alpn[i], '\0', sizeof(h->alpn[i])) != NULL && h->alpn[i][0] != '\0');
	must((h->record_version >> 8) == 3 && (h->client_version >> 8) == 3);
}

static bool same_result(const struct tls_hello *a, const struct tls_hello *b)
{
	if (a->has_sni != b->has_sni || strcmp(a->sni, b->sni) != 0 ||
	    a->record_version != b->record_version || a->client_version != b->client_version ||
	    a->has_ech != b->has_ech || a->has_alpn != b->has_alpn || a->nalpn != b->nalpn || a->consumed != b->consumed)
		return false;
	for (int i = 0; i < a->nalpn; i++)
		if (strcmp(a->alpn[i], b->alpn[i]) != 0)
			return false;
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tls_hello h, again;
	int st = tls_hello_parse(data, size, &h);

	must(st == TLS_HELLO_OK || st == TLS_HELLO_NEED_MORE || st == TLS_HELLO_MALFORMED);
	if (st == TLS_HELLO_NEED_MORE)
		must(size < TLS_HELLO_MAX);
	if (st != TLS_HELLO_MALFORMED && size > 0)
		must(tls_hello_parse(data, size - 1, &again) != TLS_HELLO_MALFORMED);
	if (st == TLS_HELLO_OK) {
		check_result(&h, size);
		must(tls_hello_parse(data, h.consumed, &again) == TLS_HELLO_OK);
		must(same_result(&h, &again));
		must(tls_hello_parse(data, h.consumed - 1, &again) == TLS_HELLO_NEED_MORE);
	}
	return 0;
}
