/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include "audit_sink.h"
static int nyi(struct audit_sink *s) { return -ENOTSUP; }
static int nsend(struct audit_sink *s, struct sink_batch *b) { return -ENOTSUP; }
const struct audit_sink_ops audit_sink_syslog_ops = { .type = "syslog", .init = nyi, .send = nsend };
