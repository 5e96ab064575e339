/* SPDX-License-Identifier: Apache-2.0 */
#ifndef AGENTGATE_CLI_AUDIT_H
#define AGENTGATE_CLI_AUDIT_H

/* `agentgate audit verify FILE [--pubkey FILE] [--strict]`: recomputes the
 * hash chain of a JSON-lines audit file and checks checkpoint signatures
 * (public key default <state_dir>/audit-signing.pub). argv starts after
 * "verify". Exit 0 intact (events after the last checkpoint are a warning,
 * an error with --strict), 1 on a break, 2 on usage or I/O errors. */
int cmd_audit_verify(int argc, char **argv, const char *state_dir);

/* `agentgate replay SESSION [--dir DIR] [--raw]` (cli_replay.c): prints a
 * session recorded by recording.c in order with timestamps. SESSION is a
 * .rec/.idx path, a session name in DIR (default <state_dir>/recordings), or
 * a connection uid (connection_info.uid of the session's audit events).
 * Exit 0, 1 when the session is not found or damaged, 2 on usage errors. */
int cmd_replay(int argc, char **argv, const char *state_dir);

#endif
