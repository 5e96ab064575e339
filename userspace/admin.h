/* SPDX-License-Identifier: Apache-2.0 */
/*
 * admin: the enforcer's unix socket (<state-dir>/admin.sock, mode 0600) and
 * the CLI's client for it. One request per connection: a JSON object line
 * {"cmd": "status" | "audit_tail" | "attach" | "detach", ...}; one JSON
 * answer line, except audit_tail with "follow", which then streams event
 * lines. Peers inside an agent cgroup or without CAP_SYS_ADMIN are refused.
 */
#ifndef AGENTGATE_ADMIN_H
#define AGENTGATE_ADMIN_H

#include <jansson.h>
#include <stdint.h>

struct admin;

int admin_open(struct admin **out, const char *state_dir, int epfd);
void admin_close(struct admin *a);   /* NULL-safe; removes the socket file */
void admin_on_event(struct admin *a, void *item, uint32_t events);

/* Client: connects to the enforcer of state_dir. Returns fd, or -errno
 * (-ENOENT/-ECONNREFUSED: no enforcer running). */
int admin_connect(const char *state_dir);
/* Sends req, reads one JSON line. NULL on error (errno set). */
json_t *admin_call(const char *state_dir, json_t *req);

#endif
