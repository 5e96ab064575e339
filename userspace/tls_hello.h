/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tls_hello: parse the TLS ClientHello an agent sends first, without
 * terminating TLS, so a passthrough connection can be allowed by SNI.
 *
 * Why by hand: OpenSSL has no API that parses a ClientHello without taking
 * over the connection, and passthrough relays the agent's bytes untouched.
 *
 * The parser is strict on purpose. The bytes are the agent's, and the server
 * behind us parses them again: anything two parsers could read differently
 * (a second server_name, a duplicated extension, a record that carries more
 * than the ClientHello, a name that is really an IP address) is refused
 * rather than guessed at. A verdict on the result is the caller's business;
 * a ClientHello without SNI is well formed (has_sni = false).
 *
 * Library code: no logging, no allocation, no global state; reentrant.
 */
#ifndef AGENTGATE_TLS_HELLO_H
#define AGENTGATE_TLS_HELLO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The most bytes (record headers included) a ClientHello may occupy on the
 * wire. A caller that has buffered TLS_HELLO_MAX bytes always gets OK or
 * MALFORMED, never NEED_MORE, so its per-connection buffer is bounded.
 * 64 KiB is what Go's crypto/tls and Envoy's TLS inspector allow; real
 * ClientHellos, post-quantum key shares and resumption tickets included,
 * are a few KiB.
 */
#define TLS_HELLO_MAX        (64u * 1024)
#define TLS_RECORD_MAX       16384u  /* plaintext record payload, RFC 8446 §5.1 */
/* Records one ClientHello may span. Clients send one, or two past 16 KiB;
 * splitting it over many tiny records is legal but only done to slip an
 * SNI past inspection, and each read re-frames every record so far: a
 * hello in 10,804 one-byte records, a record per read, cost 305 ms of a
 * worker (review, stop 29). More is MALFORMED. */
#define TLS_HELLO_MAX_RECORDS 64
#define TLS_HELLO_MAX_ALPN   8       /* protocols kept; more is MALFORMED */
#define TLS_HELLO_ALPN_LEN   32      /* protocol name buffer, NUL included */

enum tls_hello_status {
	TLS_HELLO_OK        = 0,
	TLS_HELLO_NEED_MORE = 1,   /* a valid prefix; only returned while len < TLS_HELLO_MAX */
	TLS_HELLO_MALFORMED = -1,  /* not a ClientHello we accept; more bytes will not help */
};

struct tls_hello {
	char sni[256];             /* host_name, lower case, NUL-terminated; "" if !has_sni */
	bool has_sni;
	uint16_t record_version;   /* of the first record (0x0301 or 0x0303 in practice) */
	uint16_t client_version;   /* ClientHello.legacy_version */
	bool has_ech;              /* encrypted_client_hello (or draft ESNI) is present:
	                            * sni is then only the outer, public name, and the
	                            * server may be any host behind that name */
	bool has_alpn;             /* the ALPN extension is present */
	char alpn[TLS_HELLO_MAX_ALPN][TLS_HELLO_ALPN_LEN]; /* in the client's order */
	int nalpn;
	size_t consumed;           /* bytes of the whole ClientHello incl. all records it spans */
};

/*
 * Parse the ClientHello at the start of buf[0..len).
 *
 * Returns TLS_HELLO_OK and fills *out when buf holds a complete, well-formed
 * ClientHello; out->consumed is the length of the records it occupies (bytes
 * after that, e.g. a ChangeCipherSpec record or early data, are not looked
 * at). Returns TLS_HELLO_NEED_MORE when buf is a proper prefix of something
 * that could still be accepted; returns TLS_HELLO_MALFORMED otherwise.
 *
 * Accepted: handshake records (type 22) of 1..2^14 bytes, all with the same
 * version 3.x, carrying exactly one handshake message, a ClientHello (type 1),
 * possibly fragmented over several records, and nothing else: a record that
 * holds bytes beyond the ClientHello is MALFORMED. Every length field must
 * fit its container exactly. Each extension type may appear once, and
 * pre_shared_key must be last (RFC 8446 §4.2, §4.2.11).
 *
 * server_name, when present: one entry, name_type host_name, 1..255 bytes of
 * [A-Za-z0-9.-], labels 1..63 bytes, no trailing dot, not an IPv4 literal in
 * any inet_aton() form nor with an all-numeric last label (RFC 6066 §3
 * forbids literal addresses); stored lower-cased.
 * ALPN, when present: 1..8 protocol names of 1..31 printable ASCII bytes;
 * anything the struct cannot hold exactly is MALFORMED rather than dropped,
 * so a caller that checks ALPN never sees half of the list.
 * encrypted_client_hello (0xfe0d, draft-ietf-tls-esni; also its earlier
 * drafts' code points 0xfe08-0xfe0c, 0xff02, 0xff08) and the older ESNI
 * draft extension (0xffce) are reported in has_ech, not refused: whether an
 * outer name is enough to allow a connection is policy, not parsing.
 * SSLv2-compatible hellos are MALFORMED.
 *
 * *out is always cleared first; on anything but OK its contents mean nothing.
 */
int tls_hello_parse(const uint8_t *buf, size_t len, struct tls_hello *out);

#endif
