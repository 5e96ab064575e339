# agentgate — one plain GNU Makefile in the libbpf-bootstrap shape.
#   make            build ./agentgate (installs missing Debian packages first)
#   make run        build and run the enforcer on the embedded default policy
#   make test       unit tests (ASan+UBSan) and integration tests (root, real kernel hooks)
#   make bench      throughput / round trips / connections per second vs direct and haproxy
#   make vmlinux    regenerate vmlinux.h from the running kernel's BTF
#   V=1             show full commands

ifeq ($(V),1)
Q :=
msg :=
else
Q := @
msg = @printf '  %-8s %s\n' "$(1)" "$(2)";
endif

BUILD   := build
CC      ?= gcc
CLANG   ?= clang
BPFTOOL ?= bpftool
ARCH    := $(shell uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')

CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -Wno-format-truncation -D_GNU_SOURCE \
	   -fno-strict-aliasing -I$(BUILD) -Ibpf -Iuserspace
LDLIBS  := -lbpf -lelf -lz -lyaml -ljansson -lcurl -lssl -lcrypto -lresolv -lcap -lpthread \
	   -lpg_query -lpcre2-8 -lrelp
SANFLAGS:= -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -Wall -Werror -I. -Ibpf \
	$(shell $(CLANG) -v -E - </dev/null 2>&1 | sed -n '/<...> search starts here:/,/End of search list./{ s| \(/.*\)|-idirafter \1|p }')

USER_SRCS := $(sort $(wildcard userspace/*.c))
LIB_SRCS  := $(filter-out userspace/main.c,$(USER_SRCS))
USER_OBJS := $(patsubst userspace/%.c,$(BUILD)/%.o,$(USER_SRCS)) $(BUILD)/embedded.o
ASAN_OBJS := $(patsubst userspace/%.c,$(BUILD)/asan/%.o,$(LIB_SRCS)) $(BUILD)/embedded.o
UNIT_SRCS := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/unit/%,$(UNIT_SRCS))
BPF_SRCS  := $(wildcard bpf/*.bpf.c)
BPF_HDRS  := $(wildcard bpf/*.h)
SKELS     := $(patsubst bpf/%.bpf.c,$(BUILD)/%.skel.h,$(BPF_SRCS))

.PHONY: all deps run test unit integration bench vmlinux clean fuzz
.DELETE_ON_ERROR:
.SECONDARY:

all: deps agentgate

deps:
	$(Q)scripts/install-deps.sh

agentgate: $(USER_OBJS)
	$(call msg,LINK,$@)
	$(Q)$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD):
	$(Q)mkdir -p $(BUILD) $(BUILD)/asan $(BUILD)/unit

$(BUILD)/%.bpf.o: bpf/%.bpf.c $(BPF_HDRS) vmlinux.h | $(BUILD)
	$(call msg,BPF,$@)
	$(Q)$(CLANG) $(BPF_CFLAGS) -c $< -o $@.tmp.o
	$(Q)$(BPFTOOL) gen object $@ $@.tmp.o && rm -f $@.tmp.o

$(BUILD)/%.skel.h: $(BUILD)/%.bpf.o
	$(call msg,SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< name $*_bpf > $@

# Every userspace object may include the skeleton; keep the dependency simple.
$(BUILD)/%.o: userspace/%.c $(wildcard userspace/*.h) bpf/agentgate_abi.h $(SKELS) | $(BUILD)
	$(call msg,CC,$@)
	$(Q)$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/asan/%.o: userspace/%.c $(wildcard userspace/*.h) bpf/agentgate_abi.h $(SKELS) | $(BUILD)
	$(call msg,CC-ASAN,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $(SANFLAGS) -c $< -o $@

$(BUILD)/embedded.o: policies/default.yaml | $(BUILD)
	$(call msg,EMBED,$@)
	$(Q)printf '.section .rodata\n.global ag_default_policy\n.global ag_default_policy_end\nag_default_policy:\n.incbin "policies/default.yaml"\nag_default_policy_end:\n.byte 0\n.section .note.GNU-stack,"",@progbits\n' > $(BUILD)/embedded.S
	$(Q)$(CC) -c $(BUILD)/embedded.S -o $@

$(BUILD)/unit/%: tests/unit/%.c $(wildcard tests/unit/*.h) $(ASAN_OBJS) | $(BUILD)
	$(call msg,UNIT,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $(SANFLAGS) -Itests/unit $< $(ASAN_OBJS) -o $@ $(LDLIBS)

$(BUILD)/uring_connect: tests/integration/helpers/uring_connect.c | $(BUILD)
	$(call msg,CC,$@)
	$(Q)$(CC) -O2 -Wall -Wextra -Werror $< -o $@ -luring

vmlinux:
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > vmlinux.h

run: all
	./agentgate run

unit: deps $(UNIT_BINS)

$(BUILD)/tls_retry_client: tests/integration/helpers/tls_retry_client.c | $(BUILD)
	$(call msg,CC,$@)
	$(Q)$(CC) -O2 -Wall -Wextra -Werror $< -o $@ -lssl -lcrypto

test: all unit $(BUILD)/uring_connect $(BUILD)/tls_retry_client
	$(Q)tests/run.sh

bench: all
	$(Q)bench/run.sh

fuzz: all
	$(Q)tests/fuzz/run.sh

clean:
	rm -rf $(BUILD) agentgate
