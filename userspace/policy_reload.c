/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What `agentgate reload` may change in a running enforcer, and what needs a
 * restart.
 *
 * A reload swaps the compiled policy whole. Connections accepted before keep
 * the snapshot they started with (http ones move to the new one between
 * requests when their target's upstream settings are the same:
 * policy_upstream_same()); new ones get the new one. The running
 * enforcer also holds state built from parts of the policy that a swap does
 * not rebuild: the agents' kernel slots, cgroups and identity sources, the
 * targets' indexes (kernel allow entries, DNS-learned addresses and pooled
 * upstream sessions refer to targets by index), the DNS listeners, and the
 * audit spool and sinks. Those parts must be the same in the new file, field
 * by field; otherwise the reload is refused and says which part differs.
 * Roles, bindings, rules, masks, the mode and the targets' upstream settings
 * may change.
 */
#include <stdio.h>
#include <string.h>

#include "policy.h"

static bool str_eq(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

static bool strv_eq(const struct policy_strv *a, const struct policy_strv *b)
{
	if (a->n != b->n)
		return false;
	for (size_t i = 0; i < a->n; i++)
		if (!str_eq(a->v[i], b->v[i]))
			return false;
	return true;
}

static bool addr_eq(const struct policy_addr *a, const struct policy_addr *b)
{
	return a->kind == b->kind && memcmp(a->addr, b->addr, 16) == 0 && a->prefixlen == b->prefixlen &&
	       a->is_v4 == b->is_v4 && str_eq(a->host, b->host) && a->port == b->port;
}

static bool identity_eq(const struct policy_identity *a, const struct policy_identity *b)
{
	return a->source == b->source && str_eq(a->issuer, b->issuer) && str_eq(a->client_id, b->client_id) &&
	       str_eq(a->client_secret_file, b->client_secret_file) &&
	       str_eq(a->private_key_file, b->private_key_file) && str_eq(a->audience, b->audience) &&
	       str_eq(a->token_file, b->token_file) && str_eq(a->groups_claim, b->groups_claim);
}

static bool sink_eq(const struct policy_sink *a, const struct policy_sink *b)
{
	return a->type == b->type && str_eq(a->path, b->path) && str_eq(a->address, b->address) &&
	       str_eq(a->transport, b->transport) && str_eq(a->url, b->url) &&
	       str_eq(a->token_file, b->token_file) && str_eq(a->index, b->index) &&
	       str_eq(a->ca_file, b->ca_file) && a->ack == b->ack && a->ack_timeout_ms == b->ack_timeout_ms && a->rotate_bytes == b->rotate_bytes &&
	       a->rotate_age_ms == b->rotate_age_ms && a->keep == b->keep;
}

/* What of the audit section needs a restart: the spool, the sinks and the
 * recordings are opened once. allowed_requests is not among them: each
 * session reads it from the policy it runs under, so a reload turns the
 * events of allowed statements and requests on or off as sessions take the
 * new policy (the reload's own event says so). */
static bool audit_eq(const struct policy_audit *a, const struct policy_audit *b)
{
	if (!str_eq(a->spool_dir, b->spool_dir) || a->spool_max_bytes != b->spool_max_bytes ||
	    !str_eq(a->on_full, b->on_full) || a->nsinks != b->nsinks ||
	    !str_eq(a->recording_dir, b->recording_dir) || a->recording_max_bytes != b->recording_max_bytes ||
	    a->recording_max_age_ms != b->recording_max_age_ms)
		return false;
	for (size_t i = 0; i < a->nsinks; i++)
		if (!sink_eq(&a->sinks[i], &b->sinks[i]))
			return false;
	return true;
}

bool policy_mask_same(const struct policy_mask *a, const struct policy_mask *b)
{
	return a->present == b->present && strv_eq(&a->columns, &b->columns) &&
	       strv_eq(&a->detectors, &b->detectors) && strv_eq(&a->json, &b->json);
}

static bool action_same(const struct policy_action *a, const struct policy_action *b)
{
	return a->present == b->present && strv_eq(&a->statements, &b->statements) &&
	       strv_eq(&a->tables, &b->tables) && strv_eq(&a->functions, &b->functions) &&
	       strv_eq(&a->http, &b->http) && strv_eq(&a->verbs, &b->verbs) &&
	       strv_eq(&a->resources, &b->resources) && strv_eq(&a->namespaces, &b->namespaces) &&
	       a->timeout_s == b->timeout_s;
}

bool policy_rule_same(const struct policy_rule *a, const struct policy_rule *b)
{
	return str_eq(a->target, b->target) && str_eq(a->role, b->role) && action_same(&a->allow, &b->allow) &&
	       action_same(&a->review, &b->review) && policy_mask_same(&a->mask, &b->mask);
}

bool policy_upstream_same(const struct policy_upstream *a, const struct policy_upstream *b)
{
	return a->has_address == b->has_address && (!a->has_address || addr_eq(&a->address, &b->address)) &&
	       str_eq(a->tls, b->tls) && str_eq(a->ca_file, b->ca_file) && str_eq(a->cert_file, b->cert_file) &&
	       str_eq(a->key_file, b->key_file) && str_eq(a->server_name, b->server_name) &&
	       str_eq(a->user, b->user) && str_eq(a->password_file, b->password_file) &&
	       str_eq(a->database, b->database) && str_eq(a->search_path, b->search_path) &&
	       a->statement_timeout_ms == b->statement_timeout_ms &&
	       a->idle_in_transaction_timeout_ms == b->idle_in_transaction_timeout_ms &&
	       str_eq(a->bearer_token_file, b->bearer_token_file) && str_eq(a->basic_auth_file, b->basic_auth_file) &&
	       str_eq(a->header_name, b->header_name) && str_eq(a->header_value_file, b->header_value_file) &&
	       a->bearer_agent_token == b->bearer_agent_token && a->forwarded_for == b->forwarded_for;
}

int policy_reload_refusal(const struct policy *old, const struct policy *nw, char *why, size_t len)
{
	static const char restart[] = "; restart the enforcer to apply it";

	if (old->nagents != nw->nagents) {
		snprintf(why, len, "agents added or removed (%zu before, %zu now)%s", old->nagents, nw->nagents,
			 restart);
		return -1;
	}
	for (size_t i = 0; i < old->nagents; i++) {
		const struct policy_agent *a = &old->agents[i], *b = &nw->agents[i];
		const char *what = NULL;

		if (!str_eq(a->name, b->name))
			what = "name or position";
		else if (!str_eq(a->cgroup, b->cgroup))
			what = "cgroup";
		else if (!identity_eq(&a->identity, &b->identity))
			what = "identity";
		else if (a->accept_user_tokens != b->accept_user_tokens)
			what = "accept_user_tokens";
		else if (a->max_connections != b->max_connections)
			what = "limits";
		if (what) {
			snprintf(why, len, "agent '%s' (line %d): its %s changed%s", a->name, b->line, what,
				 restart);
			return -1;
		}
	}
	if (old->ntargets != nw->ntargets) {
		snprintf(why, len, "targets added or removed (%zu before, %zu now)%s", old->ntargets,
			 nw->ntargets, restart);
		return -1;
	}
	for (size_t i = 0; i < old->ntargets; i++) {
		const struct policy_target *a = &old->targets[i], *b = &nw->targets[i];
		const char *what = NULL;

		if (!str_eq(a->name, b->name))
			what = "name or position";
		else if (a->proto != b->proto)
			what = "protocol";
		else if (!addr_eq(&a->addr, &b->addr) || a->names_metadata != b->names_metadata)
			what = "address";
		if (what) {
			snprintf(why, len, "target '%s' (line %d): its %s changed%s", a->name, b->line, what,
				 restart);
			return -1;
		}
	}
	if (old->has_dns != nw->has_dns || (old->has_dns && !addr_eq(&old->dns_upstream, &nw->dns_upstream)) ||
	    !strv_eq(&old->dns_allow, &nw->dns_allow)) {
		snprintf(why, len, "the dns section changed%s", restart);
		return -1;
	}
	if (!audit_eq(&old->audit, &nw->audit)) {
		snprintf(why, len, "the audit section changed%s", restart);
		return -1;
	}
	if (!str_eq(old->approvals_webhook, nw->approvals_webhook)) {
		snprintf(why, len, "the approvals section changed%s", restart);
		return -1;
	}
	return 0;
}
