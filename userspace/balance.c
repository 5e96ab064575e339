/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "agentgate_abi.h"
#include "balance.h"
#include "balance.skel.h"

struct balance {
	struct balance_bpf *skel;
};

int balance_open(struct balance **out, int n, const int *fd4, const int *fd6, char *err, size_t errlen)
{
	struct balance *b;
	int rc, prog, map;
	bool attached[2] = { false, false };

	*out = NULL;
	if (n < 1 || n > AG_BAL_MAX) {
		snprintf(err, errlen, "%d workers (the program chooses among at most %d)", n, AG_BAL_MAX);
		return -EINVAL;
	}
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->skel = balance_bpf__open();
	if (!b->skel) {
		rc = -errno;
		snprintf(err, errlen, "opening the program: %s", strerror(-rc));
		goto fail;
	}
	b->skel->rodata->nworkers = n;
	if ((rc = balance_bpf__load(b->skel))) {
		snprintf(err, errlen, "loading the program: %s", strerror(-rc));
		goto fail;
	}
	prog = bpf_program__fd(b->skel->progs.ag_pick_worker);
	map = bpf_map__fd(b->skel->maps.ag_bal_socks);
	for (int i = 0; i < n; i++) {
		for (int f = 0; f < 2; f++) {
			int fd = f ? fd6[i] : fd4[i];
			uint32_t key = i + (f ? AG_BAL_MAX : 0);
			uint64_t val = fd;

			if (fd < 0)
				continue;
			if (bpf_map_update_elem(map, &key, &val, BPF_ANY)) {
				rc = -errno;
				snprintf(err, errlen, "worker %d's listener into the socket map: %s", i, strerror(-rc));
				goto fail;
			}
			/* the program belongs to the whole group: attach once per family */
			if (!attached[f]) {
				if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &prog, sizeof(prog))) {
					rc = -errno;
					snprintf(err, errlen, "SO_ATTACH_REUSEPORT_EBPF: %s", strerror(-rc));
					goto fail;
				}
				attached[f] = true;
			}
		}
	}
	*out = b;
	return 0;
fail:
	/* a group with the program attached but a socket not in its map would
	 * fall back to the hash for that socket only; take it off entirely */
	for (int f = 0; f < 2; f++) {
		for (int i = 0; attached[f] && i < n; i++) {
			int fd = f ? fd6[i] : fd4[i], none = -1;

			if (fd >= 0) {
				setsockopt(fd, SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, &none, sizeof(none));
				break;
			}
		}
	}
	balance_close(b);
	return rc;
}

void balance_close(struct balance *b)
{
	if (!b)
		return;
	balance_bpf__destroy(b->skel);
	free(b);
}

uint32_t *balance_conns(struct balance *b, int i)
{
	return &b->skel->bss->conns[i];
}

uint32_t *balance_pending(struct balance *b, int i)
{
	return &b->skel->bss->pending[i];
}

void balance_set_cpu(struct balance *b, int cpu, int worker)
{
	if (b && cpu >= 0 && cpu < AG_BAL_CPUS)
		__atomic_store_n(&b->skel->bss->cpu_worker[cpu], (uint32_t)(worker + 1), __ATOMIC_RELAXED);
}
