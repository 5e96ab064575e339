/* SPDX-License-Identifier: Apache-2.0 */
#ifndef AGENTGATE_RECORDING_H
#define AGENTGATE_RECORDING_H
#include <stdint.h>
int rec_configure(const char *dir, uint64_t max_bytes, uint32_t max_age_ms);
#endif
