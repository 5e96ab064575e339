/* SPDX-License-Identifier: Apache-2.0 */
/*
 * addr_str(): IPv4 is formatted by hand (inet_ntop's sprintf was 1% of the
 * workers' time on small HTTP answers). Audit events and messages carry
 * this text: it must be inet_ntop's, byte for byte, and a short buffer must
 * never get a partial or unterminated address.
 *
 * str_copy(), the per-request stand-in for snprintf(dst, cap, "%s", src):
 * the same bytes as snprintf for every length against every capacity, and
 * nothing written past dst[cap - 1].
 */
#include <arpa/inet.h>

#include "unit.h"
#include "util.h"

static void v4(uint8_t a[16], unsigned x)
{
	memset(a, 0, 10);
	a[10] = a[11] = 0xff;
	a[12] = (uint8_t)(x >> 24);
	a[13] = (uint8_t)(x >> 16);
	a[14] = (uint8_t)(x >> 8);
	a[15] = (uint8_t)x;
}

/* every octet value in every position, and random addresses */
static void test_same_as_inet_ntop(void)
{
	static const unsigned edge[] = { 0, 1, 9, 10, 11, 99, 100, 101, 199, 200, 249, 250, 255 };
	uint8_t a[16];
	char got[64], want[64];
	int bad = 0;

	for (unsigned pos = 0; pos < 4; pos++)
		for (unsigned v = 0; v < 256; v++)
			for (unsigned e = 0; e < sizeof(edge) / sizeof(edge[0]); e++) {
				unsigned x = 0;

				for (unsigned k = 0; k < 4; k++)
					x |= (k == pos ? v : edge[(e + k) % 13]) << (24 - 8 * k);
				v4(a, x);
				addr_str(a, got, sizeof(got));
				inet_ntop(AF_INET, a + 12, want, sizeof(want));
				bad += strcmp(got, want) != 0;
			}
	srand(7);
	for (int i = 0; i < 100000; i++) {
		v4(a, (unsigned)rand() ^ ((unsigned)rand() << 16));
		addr_str(a, got, sizeof(got));
		inet_ntop(AF_INET, a + 12, want, sizeof(want));
		bad += strcmp(got, want) != 0;
	}
	CHECK(bad == 0);
	v4(a, 0xffffffffu);
	addr_str(a, got, sizeof(got));
	CHECK_STR(got, "255.255.255.255");
	v4(a, 0x7f000001u);
	addr_str(a, got, sizeof(got));
	CHECK_STR(got, "127.0.0.1");
	/* IPv6 still goes through inet_ntop, and a v4-mapped one prints as v4 */
	memset(a, 0, 16);
	a[15] = 1;
	addr_str(a, got, sizeof(got));
	CHECK_STR(got, "::1");
	inet_pton(AF_INET6, "2001:db8::ff:10.0.0.1", a);
	addr_str(a, got, sizeof(got));
	inet_ntop(AF_INET6, a, want, sizeof(want));
	CHECK_STR(got, want);
}

/* A buffer too short for the text gets an empty string, never a cut one. */
static void test_short_buffer(void)
{
	uint8_t a[16];
	char b[16];

	v4(a, 0xffffffffu);                 /* 15 characters and the NUL */
	memset(b, 'x', sizeof(b));
	addr_str(a, b, 16);
	CHECK_STR(b, "255.255.255.255");
	memset(b, 'x', sizeof(b));
	addr_str(a, b, 15);
	CHECK(b[0] == 0 && b[1] == 'x');
	v4(a, 0x01020304u);                 /* "1.2.3.4": 8 with the NUL */
	memset(b, 'x', sizeof(b));
	addr_str(a, b, 8);
	CHECK_STR(b, "1.2.3.4");
	memset(b, 'x', sizeof(b));
	addr_str(a, b, 7);
	CHECK(b[0] == 0);
	memset(a, 0, 16);                   /* IPv6 in a short buffer: empty too */
	a[0] = 0x20;
	a[1] = 0x01;
	a[15] = 1;
	memset(b, 'x', sizeof(b));
	addr_str(a, b, 4);
	CHECK(b[0] == 0);
}

static void test_str_copy_as_snprintf(void)
{
	char src[40], got[48], want[48];
	int bad = 0;

	for (size_t len = 0; len < sizeof(src); len++) {
		for (size_t i = 0; i < len; i++)
			src[i] = (char)('a' + (len + i) % 26);
		src[len] = 0;
		for (size_t cap = 1; cap <= 42; cap++) {
			memset(got, 'x', sizeof(got));
			memset(want, 'x', sizeof(want));
			snprintf(want, cap, "%s", src);
			bad += str_copy(got, cap, src) != got;
			bad += memcmp(got, want, sizeof(got)) != 0;   /* canary past cap included */
		}
	}
	CHECK(bad == 0);
	memset(got, 'x', sizeof(got));
	str_copy(got, 4, "/v1/items");
	CHECK_STR(got, "/v1");
	CHECK(got[4] == 'x');
}

int main(void)
{
	RUN(test_same_as_inet_ntop);
	RUN(test_short_buffer);
	RUN(test_str_copy_as_snprintf);
	UNIT_DONE("addr_str");
}
