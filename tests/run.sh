#!/usr/bin/env bash
# Runs every test suite and prints one closing line: "N passed, M failed".
#   unit tests (ASan+UBSan binaries built by `make unit`)
#   fuzz corpus replay (tests/fuzz/replay.sh)
#   integration tests (pytest, root, real kernel hooks and servers)
set -u
cd "$(dirname "$0")/.."

pass=0
fail=0
count() {   # reads "... N passed, M failed" lines from stdin
	local line p f
	while IFS= read -r line; do
		echo "$line"
		if [[ $line =~ ([0-9]+)\ passed ]]; then p=${BASH_REMATCH[1]}; else p=0; fi
		if [[ $line =~ ([0-9]+)\ failed ]]; then f=${BASH_REMATCH[1]}; else f=0; fi
		if [[ $line =~ ([0-9]+)\ error ]]; then f=$((f + BASH_REMATCH[1])); fi
		if [[ $line =~ (unit|fuzz-replay|integration).*:\ [0-9]+\ passed ]]; then
			pass=$((pass + p)); fail=$((fail + f))
		fi
	done
}

if [[ $(id -u) -ne 0 ]]; then
	echo "tests need root (real cgroups and BPF programs): sudo make test" >&2
	exit 1
fi

echo "== unit tests (AddressSanitizer + UndefinedBehaviorSanitizer)"
for t in build/unit/test_*; do
	[[ -x $t ]] || continue
	out=$(ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 "$t" 2>&1)
	rc=$?
	name=${t##*/test_}
	if ! grep -q "^unit $name: " <<<"$out"; then
		echo "$out" | tail -20
		echo "unit $name: 0 passed, 1 failed (crashed, exit $rc)" | count
	else
		[[ $rc -ne 0 ]] && echo "$out" | grep -v "^unit " | tail -40
		grep "^unit $name: " <<<"$out" | count
	fi
done < /dev/null

if [[ -x tests/fuzz/replay.sh ]]; then
	echo "== fuzz corpus replay"
	tests/fuzz/replay.sh 2>&1 | count
fi

echo "== integration tests (real kernel hooks, real servers and clients)"
out=$(/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration 2>&1)
rc=$?
echo "$out" | tail -60
summary=$(grep -E "^=+ .*(passed|failed|error).* =+$|^[0-9]+ (passed|failed)" <<<"$out" | tail -1)
if [[ -z $summary ]]; then
	echo "integration: 0 passed, 1 failed (pytest exit $rc, no summary)" | count
else
	ip=$(grep -oE "[0-9]+ passed" <<<"$summary" | grep -oE "[0-9]+" || echo 0)
	if_=$(grep -oE "[0-9]+ failed" <<<"$summary" | grep -oE "[0-9]+" || echo 0)
	ie=$(grep -oE "[0-9]+ error" <<<"$summary" | grep -oE "[0-9]+" || echo 0)
	is=$(grep -oE "[0-9]+ skipped" <<<"$summary" | grep -oE "[0-9]+" || echo 0)
	[[ $rc -ne 0 && $if_ -eq 0 && $ie -eq 0 ]] && ie=1
	# Nothing in the mission may be skipped on these machines: a skip counts as a failure.
	echo "integration: ${ip:-0} passed, $(( ${if_:-0} + ${ie:-0} + ${is:-0} )) failed" | count
fi

echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
