/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include "audit_sink.h"
static int nyi(struct audit_sink *s) { return -ENOTSUP; }
static int nsend(struct audit_sink *s, struct sink_batch *b) { return -ENOTSUP; }
const struct audit_sink_ops audit_sink_hec_ops = { .type = "splunk_hec", .init = nyi, .send = nsend };
const struct audit_sink_ops audit_sink_es_ops = { .type = "elasticsearch", .init = nyi, .send = nsend };
const struct audit_sink_ops audit_sink_webhook_ops = { .type = "webhook", .init = nyi, .send = nsend };
