#!/usr/bin/env bash
# Fuzz each parser with libFuzzer (clang, ASan+UBSan) for FUZZ_SECONDS
# seconds each (default 60).
#   tests/fuzz/run.sh [TARGET...]     default: every tests/fuzz/fuzz_<TARGET>.c
# New inputs go to build/fuzz/corpus/<target>/, never into the committed
# corpus; crashes to build/fuzz/<target>-crash-*. A crash makes this exit
# non-zero: fix it, then copy the input into tests/fuzz/corpus/<target>/ so
# tests/fuzz/replay.sh keeps it fixed. What each target links: targets.sh.
# Seed corpora are the unit tests' named cases, written once with e.g.
#   test_tls_hello --write-corpus tests/fuzz/corpus/tls_hello
# plus inputs fuzzing found that add coverage (found-*), kept with
#   build/fuzz/fuzz_<t> -merge=1 tests/fuzz/corpus/<t> build/fuzz/corpus/<t>
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/fuzz/targets.sh

secs=${FUZZ_SECONDS:-60}
out=build/fuzz
CLANG=${CLANG:-clang}
CFLAGS=(-std=gnu11 -g -O1 -Wall -Wextra -Werror -Wno-unused-parameter -D_GNU_SOURCE
	-fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
	-fno-sanitize-recover=undefined -Iuserspace)

targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(fuzz_all_targets)
mkdir -p "$out"
rc=0
for t in "${targets[@]}"; do
	echo "fuzz $t: building"
	# shellcheck disable=SC2046
	"$CLANG" "${CFLAGS[@]}" "tests/fuzz/fuzz_$t.c" $(fuzz_srcs "$t") \
		-o "$out/fuzz_$t" $(fuzz_libs "$t")
	mkdir -p "$out/corpus/$t" "tests/fuzz/corpus/$t"
	dict=()
	[ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
	echo "fuzz $t: running ${secs}s"
	if ! "$out/fuzz_$t" -max_total_time="$secs" -max_len="$(fuzz_max_len "$t")" "${dict[@]}" \
		-timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$out/$t-" "$out/corpus/$t" "tests/fuzz/corpus/$t"; then
		echo "fuzz $t: FAILED, see $out/$t-*" >&2
		rc=1
	fi
done
exit $rc
