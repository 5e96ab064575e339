#!/usr/bin/env bash
# bench/run.sh — `make bench`: TCP throughput, round trips and connection rate
# through agentgate's tcp relay, side by side with a direct connection and
# haproxy (mode tcp), all measured in this one run. Run as root from the repo
# root after ./agentgate is built. See bench/README.md for how to read it.
#
#   BENCH_SECONDS=5  length of each measurement
#   ROUNDS=3         rounds per test and path; the table shows the median
#   AUDIT_EVENTS=200000  events per round of the audit pipeline section (last)
#   AUDIT_ROUNDS=6   paired on/off rounds for what auditing costs pgbench
#   AUDIT_TOGGLE_SECONDS=60   the one-run measure of it: audit reloaded on/off every 2 s
#   TCP_TESTS="bulk rr cps"  the TCP tests to run ("" skips the TCP table);
#   HTTP_BENCH=0, PG_BENCH=0 skip those sections
#
# Only PIDs this script starts are ever signalled; everything it creates lives
# in one temp dir that the EXIT trap removes.
set -uo pipefail	# no -e: a failed measurement is reported, not fatal

cd "$(dirname "$0")/.." || exit 1

BENCH_SECONDS=${BENCH_SECONDS:-5}
ROUNDS=${ROUNDS:-3}
BULK_STREAMS=1	# one stream: the relay's per-connection cost, not core count
RR_CONNS=1	# one connection: latency, not parallelism
RR_SIZE=64
CPS_CONNS=2	# one connect loop per core
NCPU=$(nproc)

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

[[ $BENCH_SECONDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS must be a positive integer, not '$BENCH_SECONDS'"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$ROUNDS'"
AUDIT_EVENTS=${AUDIT_EVENTS:-200000}
AUDIT_ROUNDS=${AUDIT_ROUNDS:-6}
AUDIT_TOGGLE_SECONDS=${AUDIT_TOGGLE_SECONDS:-60}
[[ $AUDIT_TOGGLE_SECONDS =~ ^[1-9][0-9]*$ ]] || die "AUDIT_TOGGLE_SECONDS must be a positive integer, not '$AUDIT_TOGGLE_SECONDS'"
[[ $AUDIT_ROUNDS =~ ^[1-9][0-9]*$ ]] || die "AUDIT_ROUNDS must be a positive integer, not '$AUDIT_ROUNDS'"
[[ $AUDIT_EVENTS =~ ^[1-9][0-9]*$ ]] || die "AUDIT_EVENTS must be a positive integer, not '$AUDIT_EVENTS'"
command -v ss >/dev/null || die "ss (iproute2) is needed to find free ports"

# One enforcer per host (BPF pins, ports): the whole run holds the host lock
# that integration runs hold, so neither clobbers the other's enforcer
# between sections. Held on one descriptor for the run: taking it again on
# another would wait for ourselves.
mkdir -p /run/agentgate
exec {HLOCK}>>/run/agentgate/tests.lock
flock -x "$HLOCK"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/agentgate-bench.XXXXXX") || die "mktemp failed"
TCPBENCH=$PWD/build/tcpbench
SRV_PID='' HAP_PID='' AG_PID='' SMOKE_PID=''
AG_STATE=$TMP/agentgate
AG_STARTED=
# The enforcer makes the agent's cgroup (<cgroup2 mount>/agentgate/bench) and
# leaves it when it stops: removed at the end when this run made it.
AG_CG=$(awk '{ for (i = 7; i < NF; i++) if ($i == "-") { if ($(i + 1) == "cgroup2") { print $5; exit } break } }' \
	/proc/self/mountinfo)
AG_CG=${AG_CG:+$AG_CG/agentgate/bench}
AG_CG_MADE=
[[ -n $AG_CG && ! -d $AG_CG ]] && AG_CG_MADE=1

# stop_pid PID [GRACE_SECONDS]: SIGTERM, wait, SIGKILL if it lingers, reap.
stop_pid() {
	local pid=$1 grace=${2:-5} i
	[[ -n $pid ]] || return 0
	kill -TERM "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
	for ((i = 0; i < grace * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$pid" 2>/dev/null && { log "PID $pid ignored SIGTERM; killing it"; kill -KILL "$pid" 2>/dev/null; }
	wait "$pid" 2>/dev/null
	return 0
}

# Stops the enforcer (if we started one) and removes its kernel pins.
stop_enforcer() {
	stop_pid "$AG_PID" 10
	AG_PID=
	if [[ -n $AG_STARTED ]]; then
		./agentgate detach --all --state-dir "$AG_STATE" >>"$TMP/agentgate.log" 2>&1 ||
			log "agentgate detach --all failed; see its pins under the bpffs"
		AG_STARTED=
	fi
}

# agentgate_restart POLICY LOG: stops the enforcer this run started, if any,
# and starts one on POLICY (output appended to LOG); waits up to 10 s for it
# to answer `status` and sets AG_STARTED. Fails if it does not.
agentgate_restart() {
	local i
	stop_enforcer
	# fd 9 (the host lock) is not inherited
	./agentgate run --policy "$1" --state-dir "$AG_STATE" >>"$2" 2>&1 9>&- &
	AG_PID=$!
	for ((i = 0; i < 100; i++)); do
		./agentgate status --state-dir "$AG_STATE" >/dev/null 2>&1 && { AG_STARTED=1; return 0; }
		kill -0 "$AG_PID" 2>/dev/null || break
		sleep 0.1
	done
	stop_pid "$AG_PID"; AG_PID=
	return 1
}

# shellcheck disable=SC2317  # reached through the trap
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop_pid "$SMOKE_PID"
	stop_pid "$HAP_PID"
	stop_enforcer
	# empty once the enforcer is gone (rmdir refuses a cgroup with processes)
	[[ -n $AG_CG_MADE && -d $AG_CG ]] && { rmdir "$AG_CG" 2>/dev/null || log "could not remove $AG_CG"; }
	stop_pid "$SRV_PID"
	rm -rf "$TMP"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# pick_port: sets PORT to a free TCP port in 20000-29999. That range sits
# below ip_local_port_range (32768-60999), so the clients' ephemeral ports
# can never collide with a listener.
PICKED=" "
pick_port() {
	local i p
	for ((i = 0; i < 200; i++)); do
		p=$((20000 + RANDOM % 10000))
		[[ $PICKED == *" $p "* ]] && continue
		if [[ -z $(ss -Htan "( sport = :$p or dport = :$p )" 2>/dev/null) ]]; then
			PICKED+="$p "
			PORT=$p
			return 0
		fi
	done
	die "no free port found in 20000-29999"
}

# wait_listen PORT PID: waits up to 5 s for a listener on PORT while PID lives.
wait_listen() {
	local i
	for ((i = 0; i < 50; i++)); do
		kill -0 "$2" 2>/dev/null || return 1
		[[ -n $(ss -Htln "( sport = :$1 )" 2>/dev/null) ]] && return 0
		sleep 0.1
	done
	return 1
}

# oneline: squeezes a log into one short line for a reason or a note.
oneline() {
	local s
	s=$(tr -s '\n\r\t' '   ' | cut -c1-160)
	echo "${s:-no output}"
}

# ---- build the load generator ----------------------------------------------

mkdir -p build
gcc -O2 -Wall -Wextra -Werror -std=gnu11 bench/tcpbench.c -o "$TCPBENCH" -lpthread ||
	die "building tcpbench failed"

# ---- the upstream server ----------------------------------------------------

pick_port; SRV_PORT=$PORT
"$TCPBENCH" server --listen "127.0.0.1:$SRV_PORT" >"$TMP/server.log" 2>&1 &
SRV_PID=$!
for ((i = 0; i < 50; i++)); do
	grep -q '^READY' "$TMP/server.log" 2>/dev/null && break
	kill -0 "$SRV_PID" 2>/dev/null || break
	sleep 0.1
done
grep -q '^READY' "$TMP/server.log" || die "tcpbench server did not start: $(oneline <"$TMP/server.log")"

# ---- agentgate --------------------------------------------------------------

# ag_setup: starts the enforcer and proves the redirect works; on failure sets
# AG_NA to the reason, stops whatever it started and returns 1.
AG_NA=
ag_fail() { AG_NA=$1; stop_enforcer; return 1; }

ag_setup() {
	local i rc owners smoke
	[[ $EUID -eq 0 ]] || { AG_NA="not root"; return 1; }
	[[ -x ./agentgate ]] || { AG_NA="./agentgate not built"; return 1; }
	mkdir -p "$AG_STATE"
	cat >"$TMP/policy.yaml" <<-EOF
	version: 1
	mode: enforce
	agents:
	  - name: bench
	    limits: {connections: 100000, connect_rate: 1000000}   # the bench measures connects a second
	targets:
	  - {name: srv, protocol: tcp, address: 127.0.0.1:$SRV_PORT}
	roles:
	  - name: r
	    rules: [{target: srv}]
	bindings:
	  - {role: r, agents: [bench]}
	audit:
	  sinks: [{type: file, path: $AG_STATE/audit.jsonl}]
	EOF
	./agentgate run --policy "$TMP/policy.yaml" --state-dir "$AG_STATE" >"$TMP/agentgate.log" 2>&1 &
	AG_PID=$!
	for ((i = 0; i < 100; i++)); do
		# Only an enforcer we saw become ready is ours to detach afterwards:
		# one that exited (another enforcer holds the host lock) is not.
		./agentgate status --state-dir "$AG_STATE" >/dev/null 2>&1 && { AG_STARTED=1; break; }
		if ! kill -0 "$AG_PID" 2>/dev/null; then
			wait "$AG_PID"; rc=$?; AG_PID=
			ag_fail "enforcer exited with status $rc: $(tail -n 3 "$TMP/agentgate.log" | oneline)"
			return 1
		fi
		sleep 0.1
	done
	((i < 100)) || { ag_fail "enforcer not ready after 10 s: $(tail -n 3 "$TMP/agentgate.log" | oneline)"; return 1; }

	# Smoke run: a short rr inside the agent's cgroup. Whoever owns the
	# established connections to the server port must be the enforcer; if
	# tcpbench owns one, the kernel did not redirect it and the column would
	# silently measure a direct connection.
	timeout -k 5 30 ./agentgate exec --state-dir "$AG_STATE" --agent bench -- \
		"$TCPBENCH" rr --connect "127.0.0.1:$SRV_PORT" --seconds 2 \
		>"$TMP/smoke.out" 2>"$TMP/smoke.err" &
	SMOKE_PID=$!
	sleep 1
	owners=$(ss -Htnp state established "( dport = :$SRV_PORT )" 2>/dev/null)
	wait "$SMOKE_PID"; rc=$?; SMOKE_PID=
	smoke=$(grep '^RESULT ' "$TMP/smoke.out")
	if ((rc != 0)) || [[ -z $smoke ]]; then
		ag_fail "smoke run in the agent cgroup failed (status $rc): $(oneline <"$TMP/smoke.err")"
		return 1
	fi
	[[ $(field "$smoke" failed) == 0 ]] || { ag_fail "smoke run had failures: $(oneline <"$TMP/smoke.err")"; return 1; }
	[[ $owners == *'"tcpbench"'* ]] && { ag_fail "connections bypass the enforcer (tcpbench itself is connected to 127.0.0.1:$SRV_PORT)"; return 1; }
	[[ -n $owners ]] || { ag_fail "no upstream connection to 127.0.0.1:$SRV_PORT seen during the smoke run"; return 1; }
	return 0
}

# ---- haproxy ----------------------------------------------------------------

HAP_NA=
hap_setup() {
	local maxconn
	command -v haproxy >/dev/null || { HAP_NA="haproxy not installed"; return 1; }
	pick_port; HAP_PORT=$PORT
	# Two fds per relayed connection; stay inside the hard fd limit.
	maxconn=$(( ($(ulimit -Hn) - 256) / 2 ))
	((maxconn > 100000)) && maxconn=100000
	# No log lines: nothing touches the disk while it relays.
	cat >"$TMP/haproxy.cfg" <<-EOF
	global
	    nbthread $NCPU
	    maxconn $maxconn
	defaults
	    mode tcp
	    maxconn $maxconn
	    timeout connect 5s
	    timeout client 60s
	    timeout server 60s
	frontend bench
	    bind 127.0.0.1:$HAP_PORT
	    default_backend srv
	backend srv
	    server srv 127.0.0.1:$SRV_PORT
	EOF
	haproxy -f "$TMP/haproxy.cfg" -db >"$TMP/haproxy.log" 2>&1 &
	HAP_PID=$!
	if ! wait_listen "$HAP_PORT" "$HAP_PID"; then
		HAP_NA="haproxy did not start: $(oneline <"$TMP/haproxy.log")"
		stop_pid "$HAP_PID"; HAP_PID=
		return 1
	fi
}

# ---- measuring --------------------------------------------------------------

# field "RESULT line" KEY: prints KEY's value.
field() {
	local kv
	for kv in $1; do
		[[ $kv == "$2="* ]] && { echo "${kv#*=}"; return 0; }
	done
	return 1
}

declare -A VAL FAILED
NOTES=()

# measure TEST PATH ROUND: one client run; stores its figures in VAL.
measure() {
	local test=$1 path=$2 round=$3 target out line rc failed
	local -a cmd
	case $path in
	haproxy) target=127.0.0.1:$HAP_PORT ;;
	*) target=127.0.0.1:$SRV_PORT ;;	# agentgate: the kernel redirects it
	esac
	case $test in
	bulk) cmd=("$TCPBENCH" bulk --streams "$BULK_STREAMS") ;;
	rr) cmd=("$TCPBENCH" rr --conns "$RR_CONNS" --size "$RR_SIZE") ;;
	cps) cmd=("$TCPBENCH" cps --conns "$CPS_CONNS") ;;
	esac
	cmd+=(--connect "$target" --seconds "$BENCH_SECONDS")
	if [[ $path == agentgate ]]; then
		if ! kill -0 "$AG_PID" 2>/dev/null; then
			wait "$AG_PID"; rc=$?; AG_PID=
			AG_NA="enforcer died during the run (status $rc): $(tail -n 3 "$TMP/agentgate.log" | oneline)"
			stop_enforcer
			return 1
		fi
		cmd=(./agentgate exec --state-dir "$AG_STATE" --agent bench -- "${cmd[@]}")
	fi
	out=$(timeout -k 5 $((BENCH_SECONDS + 90)) "${cmd[@]}" 2>"$TMP/client.err")
	rc=$?
	line=$(grep '^RESULT ' <<<"$out" | tail -n 1)
	if [[ -z $line ]]; then
		NOTES+=("$test via $path, round $round: no result (status $rc): $(oneline <"$TMP/client.err")")
		printf '  %-4s %-9s round %d/%d: failed (status %d)\n' "$test" "$path" "$round" "$ROUNDS" "$rc" >&2
		return 1
	fi
	printf '  %-4s %-9s round %d/%d: %s\n' "$test" "$path" "$round" "$ROUNDS" "${line#RESULT "$test" }" >&2
	failed=$(field "$line" failed) || failed=0
	FAILED[$test/$path]=$(( ${FAILED[$test/$path]:-0} + failed ))
	if ((failed > 0)); then
		NOTES+=("$test via $path, round $round: $failed failed: $(oneline <"$TMP/client.err")")
	fi
	case $test in
	bulk) VAL[bulk/$path]+=" $(field "$line" mib_s)" ;;
	rr)
		VAL[rr/$path]+=" $(field "$line" rtt_s)"
		VAL[p50/$path]+=" $(field "$line" p50_us)"
		VAL[p99/$path]+=" $(field "$line" p99_us)"
		;;
	cps) VAL[cps/$path]+=" $(field "$line" conn_s)" ;;
	esac
}

median() {	# median "v1 v2 ...": fails when there is no value
	[[ -n ${1// /} ]] || return 1
	# shellcheck disable=SC2086  # split the list into lines on purpose
	printf '%s\n' $1 | sort -g | awk '{ a[NR] = $1 }
		END { if (NR == 0) exit 1; if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# ---- run --------------------------------------------------------------------

ag_setup || true
hap_setup || true

PATHS=(direct)
[[ -z $HAP_NA ]] && PATHS+=(haproxy)
[[ -z $AG_NA ]] && PATHS+=(agentgate)

echo "agentgate bench: $NCPU cores, kernel $(uname -r), ${BENCH_SECONDS}s x $ROUNDS rounds per test and path (median shown)"
echo "  bulk: $BULK_STREAMS stream(s) of 128 KiB writes; rr: $RR_SIZE B ping-pong on $RR_CONNS conn(s); cps: $CPS_CONNS connect loops"
echo "  haproxy: $(haproxy -v 2>/dev/null | head -n 1 | cut -d' ' -f1-3)${HAP_NA:+ — n/a, see below}"
rev=$(git rev-parse --short HEAD 2>/dev/null) && { git diff --quiet HEAD 2>/dev/null || rev+=+dirty; }
echo "  agentgate: ${rev:-unknown revision}${AG_NA:+ — n/a, see below}"
# The scheduler's autogroups change the PostgreSQL figures (bench/README.md):
# say which way this run had them. Read only; the bench never changes it.
autogroup=$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null)
case $autogroup in
1) echo "  scheduler: autogroup on (kernel.sched_autogroup_enabled=1: every PostgreSQL backend is a group of its own)" ;;
0) echo "  scheduler: autogroup off (kernel.sched_autogroup_enabled=0)" ;;
*) echo "  scheduler: no autogroup (kernel.sched_autogroup_enabled absent)" ;;
esac

# Interleaved: every round runs each path once, back to back, and the
# starting path rotates, so drift (thermal, noisy neighbours, page cache)
# hits all paths alike instead of whichever ran last.
for test in ${TCP_TESTS-bulk rr cps}; do
	for ((r = 1; r <= ROUNDS; r++)); do
		n=${#PATHS[@]}
		for ((k = 0; k < n; k++)); do
			path=${PATHS[$(( (r - 1 + k) % n ))]}
			[[ $path == agentgate && -n $AG_NA ]] && continue
			measure "$test" "$path" "$r" || true
		done
	done
done

# ---- report -----------------------------------------------------------------

# cell ROW PATH: sets MED to the median (or empty) and prints the table cell.
cell() {
	local unit=$3
	MED=$(median "${VAL[$1/$2]:-}") || MED=
	if [[ -n $MED ]]; then
		case $1 in
		p50 | p99) printf '%-14s' "$(printf '%.1f %s' "$MED" "$unit")" ;;
		*) printf '%-14s' "$(printf '%.0f %s' "$MED" "$unit")" ;;
		esac
	else
		printf '%-14s' "n/a"
	fi
}

ratio() {	# ratio A B: A/B to two decimals, or "-"
	if [[ -n $1 && -n $2 ]]; then
		awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'
	else
		printf -- "-"
	fi
}

echo
printf '%-8s %-14s%-14s%-14s%-17s%-17s%s\n' test direct haproxy agentgate \
	haproxy/direct agentgate/direct agentgate/haproxy
for row in bulk rr p50 p99 cps; do
	case $row in
	bulk) name=bulk unit=MiB/s ;;
	rr) name=rr unit=rt/s ;;
	p50) name="rr p50" unit=us ;;
	p99) name="rr p99" unit=us ;;
	cps) name=cps unit=conn/s ;;
	esac
	printf '%-8s ' "$name"
	cell "$row" direct "$unit"; d=$MED
	cell "$row" haproxy "$unit"; h=$MED
	cell "$row" agentgate "$unit"; a=$MED
	printf '%-17s%-17s%s\n' "$(ratio "$h" "$d")" "$(ratio "$a" "$d")" "$(ratio "$a" "$h")"
done
printf '%-8s %-14s%-14s%-14s\n' "cps fail" "${FAILED[cps/direct]:-n/a}" \
	"${FAILED[cps/haproxy]:-n/a}" "${FAILED[cps/agentgate]:-n/a}"
echo
echo "Throughput rows (bulk, rr, cps): a ratio below 1 means the first path is slower."
echo "Latency rows (rr p50/p99): a ratio above 1 means the first path is slower."
echo "cps fail: failed connections summed over all rounds (should be 0)."
[[ -n $HAP_NA ]] && echo "haproxy: n/a ($HAP_NA)"
[[ -n $AG_NA ]] && echo "agentgate: n/a ($AG_NA)"
if [[ -z $AG_NA && -f $AG_STATE/audit.jsonl ]]; then
	echo "agentgate audit: $(wc -l <"$AG_STATE/audit.jsonl") records written during the run"
fi

# Sanity: a relay adds work, so it should not beat the direct path by much.
for row in bulk rr cps; do
	d=$(median "${VAL[$row/direct]:-}") || continue
	for path in haproxy agentgate; do
		v=$(median "${VAL[$row/$path]:-}") || continue
		if awk -v v="$v" -v d="$d" 'BEGIN { exit !(v > d * 1.10) }'; then
			NOTES+=("$row via $path beats direct by more than 10%: noisy machine or a measurement problem")
		fi
	done
done
for note in "${NOTES[@]}"; do
	echo "note: $note"
done

# ---- HTTP (issue 5) ----------------------------------------------------------
# wrk against nginx: direct, through nginx as a reverse proxy, through haproxy
# in mode http, and through agentgate's http module (path rules and JSON
# masking), small and 64 KiB responses, side by side.
# HTTP_BENCH=0 skips it. Runs after the TCP table, with its own enforcer.

HTTP_CONNS=${HTTP_CONNS:-16}
declare -A HVAL
HNOTES=()
NG_PID='' NGP_PID='' HHAP_PID=''

http_stop() {
	stop_pid "$HHAP_PID"; HHAP_PID=
	stop_pid "$NGP_PID"; NGP_PID=
	stop_pid "$NG_PID"; NG_PID=
}

# http_nginx NAME PORT EXTRA: an nginx with its own prefix in $TMP/NAME.
http_nginx() {
	local d=$TMP/$1
	mkdir -p "$d/www" "$d/tmp"
	cat >"$d/nginx.conf" <<-EOF
	daemon off;
	user root root;
	worker_processes 1;
	pid $d/nginx.pid;
	error_log $d/error.log;
	events { worker_connections 4096; }
	http {
	    access_log off;
	    client_body_temp_path $d/tmp; proxy_temp_path $d/tmp;
	    fastcgi_temp_path $d/tmp; uwsgi_temp_path $d/tmp; scgi_temp_path $d/tmp;
	    keepalive_requests 1000000;
	    default_type application/json;
	    $3
	}
	EOF
	nginx -c "$d/nginx.conf" -p "$d" >"$d/out.log" 2>&1 &
}

http_setup() {
	command -v wrk >/dev/null || { echo "http bench: wrk not installed"; return 1; }
	command -v nginx >/dev/null || { echo "http bench: nginx not installed"; return 1; }
	pick_port; NG_PORT=$PORT
	pick_port; NGP_PORT=$PORT
	pick_port; HHAP_PORT=$PORT
	http_nginx ng "$NG_PORT" "server { listen 127.0.0.1:$NG_PORT; root $TMP/ng/www; }"
	NG_PID=$!
	wait_listen "$NG_PORT" "$NG_PID" || { echo "http bench: nginx did not start: $(oneline <"$TMP/ng/error.log")"; return 1; }
	python3 - "$TMP/ng/www" <<-'EOF'
	import json, sys
	d = sys.argv[1]
	small = {"id": 42, "customer": {"name": "Ada", "email": "ada@example.com"}, "total": 1234}
	open(d + "/small", "w").write(json.dumps(small))
	items, big = [], ""
	while len(big) < 65536:
	    items.append({"id": len(items), "customer": {"name": "Ada", "email": "ada%d@example.com" % len(items)},
	                  "card": "4111111111111111", "total": len(items) * 7})
	    big = json.dumps({"items": items})
	open(d + "/big", "w").write(big)
	EOF
	http_nginx ngp "$NGP_PORT" "upstream up { server 127.0.0.1:$NG_PORT; keepalive 64; }
	    server { listen 127.0.0.1:$NGP_PORT; location / { proxy_pass http://up; proxy_http_version 1.1;
	             proxy_set_header Connection \"\"; } }"
	NGP_PID=$!
	wait_listen "$NGP_PORT" "$NGP_PID" || HNOTES+=("nginx proxy did not start: $(oneline <"$TMP/ngp/error.log")")
	if command -v haproxy >/dev/null; then
		cat >"$TMP/haproxy-http.cfg" <<-EOF
		global
		    nbthread $NCPU
		    maxconn $(( ($(ulimit -Hn) - 256) / 2 > 10000 ? 10000 : ($(ulimit -Hn) - 256) / 2 ))
		defaults
		    mode http
		    option http-keep-alive
		    http-reuse always
		    timeout connect 5s
		    timeout client 60s
		    timeout server 60s
		frontend bench
		    bind 127.0.0.1:$HHAP_PORT
		    default_backend srv
		backend srv
		    server srv 127.0.0.1:$NG_PORT
		EOF
		haproxy -f "$TMP/haproxy-http.cfg" -db >"$TMP/haproxy-http.log" 2>&1 &
		HHAP_PID=$!
		wait_listen "$HHAP_PORT" "$HHAP_PID" || HNOTES+=("haproxy (http) did not start: $(oneline <"$TMP/haproxy-http.log")")
	fi
	# agentgate: the TCP run's enforcer goes, one with an http target comes.
	stop_enforcer
	AG_NA=
	cat >"$TMP/policy-http.yaml" <<-EOF
	version: 1
	agents:
	  - name: bench
	    limits: {connections: 100000, connect_rate: 1000000}   # the bench measures connects a second
	targets:
	  - {name: api, protocol: http, address: 127.0.0.1:$NG_PORT}
	roles:
	  - name: r
	    rules:
	      - target: api
	        allow: {http: ["GET /small", "GET /big", "GET /v1/invoices/*"]}
	        mask: {json: ["\$.customer.email", "\$..card"], detectors: [credit_card]}
	bindings:
	  - {role: r, agents: [bench]}
	audit:
	  sinks: [{type: file, path: $AG_STATE/audit-http.jsonl}]
	EOF
	# the same without the events of allowed requests: what auditing costs
	sed 's/^audit:$/audit:\n  allowed_requests: false/' "$TMP/policy-http.yaml" >"$TMP/policy-http-off.yaml"
	# another enforcer on the host (someone's manual run) holds this: wait for it
	[[ -e /run/agentgate/enforcer.lock ]] && flock -w 300 /run/agentgate/enforcer.lock true
	http_agentgate_start "$TMP/policy-http.yaml" ||
		AG_NA="enforcer (http policy) did not start: $(tail -n 3 "$TMP/agentgate-http.log" | oneline)"
	# Proof the agentgate column goes through the module: a denied path is a 403 of ours.
	local proof= i
	for ((i = 0; i < 5; i++)); do
		[[ -n $AG_NA ]] && break
		proof=$(./agentgate exec --state-dir "$AG_STATE" --agent bench -- \
			curl -sS "http://127.0.0.1:$NG_PORT/denied" 2>&1)
		[[ $proof == *'"agentgate: denied"'* ]] && break
		sleep 1
	done
	if [[ -z $AG_NA && $proof != *'"agentgate: denied"'* ]]; then
		AG_NA="the http module did not answer a denied path: $(oneline <<<"$proof")"
	elif [[ -z $AG_NA ]] && ./agentgate exec --state-dir "$AG_STATE" --agent bench -- \
		curl -s "http://127.0.0.1:$NG_PORT/small" | grep -q 'ada@example.com'; then
		AG_NA="responses were not masked"
	fi
	return 0
}

# http_agentgate_start POLICY: (re)starts the enforcer on POLICY unless it
# runs on it already; fails if it does not start.
HTTP_AG_POLICY=
http_agentgate_start() {
	[[ -n $AG_STARTED && $HTTP_AG_POLICY == "$1" ]] && return 0
	HTTP_AG_POLICY=$1
	agentgate_restart "$1" "$TMP/agentgate-http.log"
}

# wrk_us "1.23ms": microseconds.
wrk_us() {
	awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
		if (u == "us") print n; else if (u == "ms") print n * 1000; else if (u == "s") print n * 1000000; else print n }'
}

# http_measure PATH DOC ROUND
http_measure() {
	local path=$1 doc=$2 port out rps p99 non2xx
	local -a cmd
	case $path in
	direct) port=$NG_PORT ;;
	agentgate | agentgate-noaudit)
		port=$NG_PORT
		local pol=$TMP/policy-http.yaml
		[[ $path == agentgate-noaudit ]] && pol=$TMP/policy-http-off.yaml
		http_agentgate_start "$pol" || { HNOTES+=("$doc via $path, round $3: the enforcer did not start"); return 1; }
		;;
	nginx) port=$NGP_PORT; [[ -n $NGP_PID ]] || return 1 ;;
	haproxy) port=$HHAP_PORT; [[ -n $HHAP_PID ]] || return 1 ;;
	esac
	cmd=(wrk -t1 -c"$HTTP_CONNS" -d"${BENCH_SECONDS}s" --latency "http://127.0.0.1:$port/$doc")
	[[ $path == agentgate* ]] && cmd=(./agentgate exec --state-dir "$AG_STATE" --agent bench -- "${cmd[@]}")
	out=$(timeout -k 5 $((BENCH_SECONDS + 60)) "${cmd[@]}" 2>&1)
	rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
	p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
	non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")
	if [[ -z $rps || -z $p99 ]]; then
		HNOTES+=("$doc via $path, round $3: no result: $(oneline <<<"$out")")
		return 1
	fi
	[[ -n $non2xx ]] && HNOTES+=("$doc via $path, round $3: $non2xx non-2xx responses")
	printf '  http %-5s %-9s round %d/%d: %s req/s, p99 %s\n' "$doc" "$path" "$3" "$ROUNDS" "$rps" "$p99" >&2
	HVAL[$doc-rps/$path]+=" $rps"
	HVAL[$doc-p99/$path]+=" $(wrk_us "$p99")"
}

http_bench() {
	local doc r k n path row d m
	[[ ${HTTP_BENCH:-1} == 0 ]] && return 0
	# the servers started here are stopped on any exit, then the usual cleanup
	trap 'hrc=$?; http_stop; (exit $hrc); cleanup' EXIT
	http_setup || { http_stop; return 1; }
	local -a hpaths=(direct nginx haproxy)
	[[ -z $AG_NA ]] && hpaths+=(agentgate agentgate-noaudit)
	for doc in small big; do
		for ((r = 1; r <= ROUNDS; r++)); do
			n=${#hpaths[@]}
			for ((k = 0; k < n; k++)); do
				path=${hpaths[$(( (r - 1 + k) % n ))]}
				http_measure "$path" "$doc" "$r" || true
			done
		done
	done
	echo
	echo "HTTP: wrk, 1 thread, $HTTP_CONNS keep-alive connections, GET of a small JSON document and of 64 KiB"
	echo "  (agentgate: path rules on every request, JSON masking of every response: \$.customer.email, \$..card, credit_card${AG_NA:+; n/a: $AG_NA})"
	printf '%-12s %-14s%-14s%-14s%-14s%-17s%s\n' test direct nginx haproxy agentgate agentgate/nginx agentgate/haproxy
	for row in small-rps small-p99 big-rps big-p99; do
		printf '%-12s ' "$row"
		declare -A M=()
		for path in direct nginx haproxy agentgate; do
			m=$(median "${HVAL[$row/$path]:-}") || m=
			M[$path]=$m
			if [[ -z $m ]]; then
				printf '%-14s' n/a
			elif [[ $row == *rps ]]; then
				printf '%-14s' "$(printf '%.0f req/s' "$m")"
			else
				printf '%-14s' "$(printf '%.0f us' "$m")"
			fi
		done
		printf '%-17s%s\n' "$(ratio "${M[agentgate]}" "${M[nginx]}")" "$(ratio "${M[agentgate]}" "${M[haproxy]}")"
	done
	echo "rps rows: a ratio above 1 means agentgate is faster; p99 rows: a ratio below 1 means agentgate is faster."
	# what auditing every allowed request costs: the same enforcer and policy
	# with audit.allowed_requests: false, in the same rounds
	local a o
	for doc in small big; do
		a=$(median "${HVAL[$doc-rps/agentgate]:-}") || a=
		o=$(median "${HVAL[$doc-rps/agentgate-noaudit]:-}") || o=
		[[ -n $a && -n $o ]] || continue
		printf 'agentgate without events of allowed requests, %s: %.0f req/s (audited %.0f, ratio %s), p99 %.0f us (audited %.0f us)\n' \
			"$doc" "$o" "$a" "$(ratio "$a" "$o")" "$(median "${HVAL[$doc-p99/agentgate-noaudit]}")" "$(median "${HVAL[$doc-p99/agentgate]}")"
	done
	for d in "${HNOTES[@]}"; do
		echo "note: $d"
	done
	http_stop
}

http_bench || true
. bench/pg.sh    # PostgreSQL: pgbench through agentgate, pgbouncer, haproxy
# ---- audit pipeline (issue 6): sustained events/s through the real audit
# code (build event -> spool -> sink thread -> destination, acknowledged),
# everything pinned to one core. AUDIT_EVENTS per round (default 200000);
# the goal is >= 200k events/s into the file sink. build/audit_bench starts
# (and stops) its own rsyslogd for the tcp row and removes its temp dir.
AUDIT_BENCH=$PWD/build/audit_bench
# The PostgreSQL rows leave gigabytes of statement events in $AG_STATE: the
# disk still writing them back took the audit rows' fdatasyncs (the file
# sink 158k events/s at 7f5de62 in a full run, 204k-243k alone right
# after). Removed, and the dirty pages written, before the audit rows.
rm -f "$AG_STATE/pg-audit.jsonl"
sync
audit_row() {	# audit_row MODE [DIR]: median acknowledged events/s over ROUNDS, or n/a
	local mode=$1 dir=${2:-$TMP} vals='' v r
	for ((r = 0; r < ROUNDS; r++)); do
		v=$(TMPDIR=$dir taskset -c 0 "$AUDIT_BENCH" "$mode" "$AUDIT_EVENTS" 2>>"$TMP/audit_bench.log" |
			awk '/acknowledged by/ { print $(NF-3) }')
		[[ -n $v ]] && vals+=" $v"
	done
	median "$vals" || echo n/a
}
echo
# shellcheck disable=SC2046  # the object list is split on purpose
if cc -O2 -g -D_GNU_SOURCE -Iuserspace -Ibuild -Ibpf bench/audit_bench.c \
	$(ls build/*.o | grep -v -e /main.o -e bpf.o) -o "$AUDIT_BENCH" -lbpf -lelf -lz -lyaml \
	-ljansson -lcurl -lssl -lcrypto -lresolv -lcap -lpthread -lpg_query -lpcre2-8 -lrelp \
	2>"$TMP/audit_bench.build.log"; then
	printf '%-30s %s\n' "audit sink (one core)" "events/s (median of $ROUNDS x $AUDIT_EVENTS)"
	printf '%-30s %s\n' "file" "$(audit_row file)"
	# the same with the spool and the file on tmpfs: what the disk's
	# filesystem (page cache writes, block reservation) costs
	if [[ -d /dev/shm && $(stat -f -c %T /dev/shm 2>/dev/null) == tmpfs ]]; then
		printf '%-30s %s\n' "file, spool on tmpfs" "$(audit_row file /dev/shm)"
	fi
	if [[ -x /usr/sbin/rsyslogd ]]; then
		printf '%-30s %s\n' "rsyslog over tcp" "$(audit_row rsyslog)"
	else
		printf '%-30s %s\n' "rsyslog over tcp" "n/a (no /usr/sbin/rsyslogd)"
	fi
	echo "audit goal: >= 200000 events/s into the file sink on one core"
else
	echo "audit bench: n/a (build/audit_bench did not build: $(head -c 300 "$TMP/audit_bench.build.log"))"
fi
exit 0
