/* SPDX-License-Identifier: Apache-2.0 */
/* Subcommands implemented outside main.c. Each returns the process exit code. */
#ifndef AGENTGATE_CLI_H
#define AGENTGATE_CLI_H

int cmd_exec(int argc, char **argv, const char *state_dir);

#endif
