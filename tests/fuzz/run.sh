#!/usr/bin/env bash
# Fuzz each parser with libFuzzer (clang, ASan+UBSan) for FUZZ_SECONDS
# seconds each (default 60).
#   tests/fuzz/run.sh [TARGET...]     targets: tls_hello dns_msg (default: all)
# New inputs go to build/fuzz/corpus/<target>/, never into the committed
# corpus; crashes to build/fuzz/<target>-crash-*. A crash makes this exit
# non-zero: fix it, then copy the input into tests/fuzz/corpus/<target>/ so
# tests/fuzz/replay.sh keeps it fixed.
# The seed corpora are the unit tests' named cases, written once with
#   test_tls_hello --write-corpus tests/fuzz/corpus/tls_hello
#   test_dns_msg   --write-corpus tests/fuzz/corpus/dns_msg
# plus inputs fuzzing found worth keeping (found-*).
set -euo pipefail
cd "$(dirname "$0")/../.."

secs=${FUZZ_SECONDS:-60}
out=build/fuzz
CLANG=${CLANG:-clang}
CFLAGS=(-std=gnu11 -g -O1 -Wall -Wextra -Werror -Wno-unused-parameter -D_GNU_SOURCE
	-fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
	-fno-sanitize-recover=undefined -Iuserspace)

libs_for() {     # fuzz_<t>.c tests userspace/<t>.c; extra libraries per target
	case $1 in
	dns_msg) echo -lresolv ;;
	*) ;;
	esac
}

max_len_for() {  # big enough to reach each parser's own size limit
	case $1 in
	tls_hello) echo $((65536 + 64)) ;;    # TLS_HELLO_MAX and a bit
	dns_msg) echo 8192 ;;
	*) echo 4096 ;;
	esac
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(tls_hello dns_msg)
mkdir -p "$out"
rc=0
for t in "${targets[@]}"; do
	echo "fuzz $t: building"
	# shellcheck disable=SC2046
	"$CLANG" "${CFLAGS[@]}" "tests/fuzz/fuzz_$t.c" "userspace/$t.c" \
		-o "$out/fuzz_$t" $(libs_for "$t")
	mkdir -p "$out/corpus/$t"
	dict=()
	[ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
	echo "fuzz $t: running ${secs}s"
	if ! "$out/fuzz_$t" -max_total_time="$secs" -max_len="$(max_len_for "$t")" "${dict[@]}" \
		-timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$out/$t-" "$out/corpus/$t" "tests/fuzz/corpus/$t"; then
		echo "fuzz $t: FAILED, see $out/$t-*" >&2
		rc=1
	fi
done
exit $rc
