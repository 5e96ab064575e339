#!/usr/bin/env bash
# Replay every fuzz corpus through its target without libFuzzer: gcc,
# ASan+UBSan, one binary per corpus/<t>/ (replay.c + fuzz_<t>.c + what
# targets.sh says it links). Prints "fuzz-replay <t>: N passed, M failed"
# per corpus; exits non-zero if anything failed to build, failed or crashed.
# Meant for `make test` (tests/run.sh).
set -uo pipefail
cd "$(dirname "$0")/../.."
. tests/fuzz/targets.sh

out=build/fuzz-replay
CC=${CC:-gcc}
CFLAGS=(-std=gnu11 -g -O1 -Wall -Wextra -Werror -Wno-unused-parameter -D_GNU_SOURCE
	-fno-omit-frame-pointer -fsanitize=address,undefined
	-fno-sanitize-recover=undefined -Iuserspace)

mkdir -p "$out"
rc=0
for corpus in tests/fuzz/corpus/*/; do
	t=$(basename "$corpus")
	# shellcheck disable=SC2046
	if ! "$CC" "${CFLAGS[@]}" tests/fuzz/replay.c "tests/fuzz/fuzz_$t.c" $(fuzz_srcs "$t") \
		-o "$out/replay_$t" $(fuzz_libs "$t"); then
		echo "fuzz-replay $t: 0 passed, 1 failed (build)"
		rc=1
		continue
	fi
	summary=$("$out/replay_$t" "$corpus") || rc=1
	if [ -n "$summary" ]; then
		echo "$summary"
	else    # a crash ends the binary before its summary line
		echo "fuzz-replay $t: 0 passed, 1 failed (crashed, see above)"
		rc=1
	fi
done
exit $rc
