/* SPDX-License-Identifier: Apache-2.0 */
/* agentgate token: verify tokens the way the enforcer does (cli_token.c). */
#ifndef AGENTGATE_CLI_TOKEN_H
#define AGENTGATE_CLI_TOKEN_H

/*
 * agentgate token verify --agent NAME [--policy FILE] TOKEN|-
 *
 * argv[0] is the subcommand ("verify"). The token is checked against the
 * agent's identity in the policy (default /etc/agentgate/policy.yaml):
 * issuer discovery and JWKS through ident_jwks, claims through ident_jwt,
 * with the last good JWKS kept in <state_dir>/jwks/. Prints the verified
 * claims as JSON on stdout and returns 0; prints "agentgate: token:
 * refused: <reason>" on stderr and returns 1; returns 2 on a usage error.
 * The token itself is never printed.
 */
int cmd_token(int argc, char **argv, const char *state_dir);

#endif
