#!/usr/bin/env bash
# Replay every fuzz corpus through its target without libFuzzer: gcc,
# ASan+UBSan, one binary per target (replay.c + fuzz_<t>.c + userspace/<t>.c).
# Prints "fuzz-replay <t>: N passed, M failed" per corpus; exits non-zero if
# anything failed or crashed. Run by `make test` via tests/run.sh.
set -uo pipefail
cd "$(dirname "$0")/../.."

out=build/fuzz-replay
CC=${CC:-gcc}
CFLAGS=(-std=gnu11 -g -O1 -Wall -Wextra -Werror -Wno-unused-parameter -D_GNU_SOURCE
	-fno-omit-frame-pointer -fsanitize=address,undefined
	-fno-sanitize-recover=undefined -Iuserspace)

libs_for() {
	case $1 in
	dns_msg) echo -lresolv ;;
	*) ;;
	esac
}

mkdir -p "$out"
rc=0
for corpus in tests/fuzz/corpus/*/; do
	t=$(basename "$corpus")
	# shellcheck disable=SC2046
	if ! "$CC" "${CFLAGS[@]}" tests/fuzz/replay.c "tests/fuzz/fuzz_$t.c" "userspace/$t.c" \
		-o "$out/replay_$t" $(libs_for "$t"); then
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
