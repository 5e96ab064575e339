/* SPDX-License-Identifier: Apache-2.0 */
/* tcp: a plain L4 relay. The decision was made at accept(); nothing is inspected. */
#include "conn.h"
#include "proto.h"

static int tcp_start(struct conn *c)
{
	int err = conn_connect_upstream(c);

	if (!err)
		conn_relay(c);
	return err;
}

const struct proto_ops proto_tcp_ops = {
	.name = "tcp",
	.start = tcp_start,
};

const struct proto_ops *proto_for(enum policy_proto p, bool *fallback)
{
	*fallback = false;
	switch (p) {
	case PROTO_TLS:
		return &proto_tls_ops;
	case PROTO_TCP:
		return &proto_tcp_ops;
	case PROTO_HTTP:
		return &proto_http_ops;
	case PROTO_KUBERNETES:
		return &proto_kubernetes_ops;
	case PROTO_POSTGRES:
		return &proto_pg_ops;
	default:
		*fallback = true;
		return &proto_tcp_ops;
	}
}
