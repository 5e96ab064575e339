# shellcheck shell=bash
# ---- PostgreSQL (issue 4) -----------------------------------------------------
# Sourced by bench/run.sh after its tables (uses its helpers: pick_port,
# wait_listen, stop_pid, stop_enforcer, median, oneline, TMP, ROUNDS,
# BENCH_SECONDS). pgbench -S (select-only) at 1 and 8 clients in simple,
# extended and prepared modes against one PostgreSQL 15: direct, through
# pgbouncer (session pool), through haproxy (mode tcp), and through agentgate's
# postgres module with an RBAC + masking policy (statements, tables, a masked
# column and content detectors on every value). Rounds alternate the paths;
# the table shows medians and ratios to direct. Then the cost of a statement
# text the verdict cache has never seen (µs), from a script whose every
# statement is new. PG_BENCH=0 skips it.

PG_BENCH=${PG_BENCH:-1}
PGB_SCALE=${PGB_SCALE:-10}
PGBIN=/usr/lib/postgresql/15/bin
PG_PID='' PGB_PID='' PHAP_PID=''
declare -A PVAL APAIR ACPU PROUND TOG
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

# CPU ticks (user + system) the enforcer and all its threads used so far
ag_ticks() { [[ -n ${AG_PID:-} ]] && awk '{ print $14 + $15 }' "/proc/$AG_PID/stat" 2>/dev/null; }
# CPU ticks every CPU spent busy so far (all processes: pgbench, the
# server, the enforcer, the kernel)
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
PNOTES=()

pg_bench_stop() {
	stop_pid "$PHAP_PID"; PHAP_PID=
	stop_pid "$PGB_PID"; PGB_PID=
	[[ -n $PG_PID ]] && { kill -INT "$PG_PID" 2>/dev/null; stop_pid "$PG_PID" 20; PG_PID=; }
}

as_pg() { setpriv --reuid=postgres --regid=postgres --clear-groups "$@"; }

pg_bench_setup() {
	local d=$TMP/pg i
	[[ -x $PGBIN/postgres ]] || { echo "postgres bench: PostgreSQL 15 not installed"; return 1; }
	command -v pgbench >/dev/null || { echo "postgres bench: pgbench not installed"; return 1; }
	id postgres >/dev/null 2>&1 || { echo "postgres bench: no postgres user"; return 1; }
	mkdir -p "$d" && chown postgres: "$d" && chmod 755 "$TMP"
	pick_port; PG_PORT=$PORT
	pick_port; PGB_PORT=$PORT
	pick_port; PHAP_PORT=$PORT
	as_pg "$PGBIN/initdb" -D "$d/data" -E UTF8 --locale=C.UTF-8 -A trust -U postgres >"$d/initdb.log" 2>&1 ||
		{ echo "postgres bench: initdb failed: $(oneline <"$d/initdb.log")"; return 1; }
	cat >>"$d/data/postgresql.conf" <<-EOF
	port = $PG_PORT
	listen_addresses = '127.0.0.1'
	unix_socket_directories = '$d'
	max_connections = 100
	fsync = off
	synchronous_commit = off
	shared_buffers = 256MB
	password_encryption = 'scram-sha-256'
	EOF
	cat >"$d/data/pg_hba.conf" <<-EOF
	local all all trust
	host all bench 127.0.0.1/32 scram-sha-256
	EOF
	setpriv --reuid=postgres --regid=postgres --clear-groups "$PGBIN/postgres" -D "$d/data" \
		>"$d/pg.log" 2>&1 9>&- &
	PG_PID=$!
	for ((i = 0; i < 100; i++)); do
		psql -h "$d" -p "$PG_PORT" -U postgres -Atc 'SELECT 1' postgres >/dev/null 2>&1 && break
		sleep 0.1
	done
	((i < 100)) || { echo "postgres bench: server did not start: $(tail -n 3 "$d/pg.log" | oneline)"; return 1; }
	psql -h "$d" -p "$PG_PORT" -U postgres -q -c "CREATE ROLE bench LOGIN PASSWORD 'bench-pw'" \
		-c 'CREATE DATABASE bench OWNER bench' postgres >/dev/null
	echo "postgres bench: pgbench -i -s $PGB_SCALE" >&2
	pgbench -i -q -s "$PGB_SCALE" -h "$d" -p "$PG_PORT" -U bench bench >"$d/init.log" 2>&1 ||
		{ echo "postgres bench: pgbench -i failed: $(oneline <"$d/init.log")"; return 1; }
	# beside, not in, the postgres-owned directory: agentgate reads secrets
	# only through paths no one but root can change
	printf 'bench-pw\n' >"$TMP/pg-pw" && chmod 600 "$TMP/pg-pw"

	# pgbouncer, session pool (it refuses to run as root)
	if command -v pgbouncer >/dev/null; then
		printf '"bench" "bench-pw"\n' >"$d/userlist.txt"
		cat >"$d/pgbouncer.ini" <<-EOF
		[databases]
		bench = host=127.0.0.1 port=$PG_PORT dbname=bench
		[pgbouncer]
		listen_addr = 127.0.0.1
		listen_port = $PGB_PORT
		unix_socket_dir =
		auth_type = scram-sha-256
		auth_file = $d/userlist.txt
		pool_mode = session
		default_pool_size = 20
		; the server sessions kept as agentgate's pool keeps them (upool.h:
		; idle at most 30 s, none handed out past 5 min): a new server
		; process starts with a cold catalog and page tables, so unequal
		; keeping would be measured instead of the proxies
		server_idle_timeout = 30
		server_lifetime = 300
		max_client_conn = 200
		logfile = $d/pgbouncer.log
		EOF
		chown postgres: "$d/userlist.txt" "$d/pgbouncer.ini"
		# not through as_pg: $! must be pgbouncer's own pid; fd 9 (the host
		# lock) is not inherited
		setpriv --reuid=postgres --regid=postgres --clear-groups pgbouncer "$d/pgbouncer.ini" \
			>/dev/null 2>&1 9>&- &
		PGB_PID=$!
		wait_listen "$PGB_PORT" "$PGB_PID" || { PNOTES+=("pgbouncer did not start"); stop_pid "$PGB_PID"; PGB_PID=; }
	fi
	if command -v haproxy >/dev/null; then
		cat >"$d/haproxy.cfg" <<-EOF
		global
		    nbthread 1
		    maxconn 1000
		defaults
		    mode tcp
		    timeout connect 5s
		    timeout client 60s
		    timeout server 60s
		frontend pg
		    bind 127.0.0.1:$PHAP_PORT
		    default_backend pg
		backend pg
		    server pg 127.0.0.1:$PG_PORT
		EOF
		haproxy -f "$d/haproxy.cfg" -db >"$d/haproxy.log" 2>&1 9>&- &
		PHAP_PID=$!
		wait_listen "$PHAP_PORT" "$PHAP_PID" || { PNOTES+=("haproxy did not start"); stop_pid "$PHAP_PID"; PHAP_PID=; }
	fi

	# agentgate with an RBAC + masking policy; the same with the events of
	# allowed statements off, for what full auditing costs
	local audit_off
	for audit_off in '' off; do
		cat >"$TMP/pg-policy${audit_off:+-$audit_off}.yaml" <<-EOF
		version: 1
		agents: [{name: bench, limits: {connections: 1000, connect_rate: 1000000}}]
		targets:
		  - name: pg
		    protocol: postgres
		    address: 127.0.0.1:$PG_PORT
		    upstream: {user: bench, password_file: $TMP/pg-pw, database: bench}
		roles:
		  - name: reader
		    rules:
		      - target: pg
		        allow: {statements: [select], tables: [public.pgbench_accounts, public.pgbench_branches]}
		        mask: {columns: [public.pgbench_accounts.filler], detectors: [credit_card, email]}
		bindings: [{role: reader, agents: [bench]}]
		audit:
		  ${audit_off:+allowed_requests: false}
		  sinks: [{type: file, path: $AG_STATE/pg-audit.jsonl}]
		EOF
	done
	# agentgate as a plain relay of the same connections (a tcp target: the
	# kernel redirect, identity and the relay, no PostgreSQL parsing): what
	# the data path costs apart from the postgres module
	cat >"$TMP/pg-policy-relay.yaml" <<-EOF
	version: 1
	agents: [{name: bench, limits: {connections: 1000, connect_rate: 1000000}}]
	targets: [{name: pg, protocol: tcp, address: 127.0.0.1:$PG_PORT}]
	roles: [{name: relay, rules: [{target: pg, allow: {}}]}]
	bindings: [{role: relay, agents: [bench]}]
	audit:
	  sinks: [{type: file, path: $AG_STATE/pg-audit.jsonl}]
	EOF
	[[ -n $PGB_PID ]] && pg_warm pgbouncer
	pg_agentgate_start "$TMP/pg-policy.yaml"
	return 0
}

# pg_agentgate_start POLICY: (re)starts the enforcer on POLICY; sets AG_STARTED.
# Then pg_warm: what is measured next finds the server sessions a running
# enforcer keeps.
pg_agentgate_start() {
	agentgate_restart "$1" "$TMP/agentgate-pg.log" && { pg_warm agentgate; return 0; }
	PNOTES+=("agentgate did not start on $1: $(tail -n 3 "$TMP/agentgate-pg.log" | oneline)")
	return 1
}

# pg_warm PATH: a 2 s pgbench -S at 8 clients, not measured. A pooling
# proxy (pgbouncer, agentgate) keeps the server sessions it made; the first
# run after its start would otherwise pay for up to 8 new server processes
# (a cold catalog, and the page-table entries of every shared buffer they
# touch: on this VM's paravirtualised MMU up to a quarter of a 5 s run at 8
# clients), which direct and haproxy pay in every run. Both are warmed at
# the start and again before the 8-client rows (the 1-client rows use one
# session, and the others are let go after 30 s idle); agentgate also after
# each start, as the paired rounds below restart it.
pg_warm() {
	PG_WARMUP=1 BENCH_SECONDS=2 pg_measure "$1" simple 8 >/dev/null || true
	sleep 0.5   # what it spooled reaches the sink before a measurement reads the CPU counters
}

# pair_ratios A B N: the paired rounds' APAIR[A/N/r] / APAIR[B/N/r], as a list
pair_ratios() {
	local r out=
	for ((r = 1; r <= AUDIT_ROUNDS; r++)); do
		[[ -n ${APAIR[$1/$3/$r]:-} && -n ${APAIR[$2/$3/$r]:-} ]] &&
			out+=" $(awk -v a="${APAIR[$1/$3/$r]}" -v b="${APAIR[$2/$3/$r]}" 'BEGIN { printf "%.4f", a / b }')"
	done
	echo "$out"
}

# ratio_stats "R1 R2 ...": "COUNT MEDIAN MIN MAX" of the list
ratio_stats() {
	awk -v rs="$1" 'BEGIN {
		k = split(rs, v, " "); for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
		printf "%d %.4f %.4f %.4f\n", k, k % 2 ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2, v[1], v[k] }'
}

# pg_measure PATH MODE CLIENTS [SCRIPT]: one pgbench run; prints tps or fails.
pg_measure() {
	local path=$1 mode=$2 n=$3 script=${4:-} port out tps
	local -a cmd
	case $path in
	direct | agentgate) port=$PG_PORT ;;
	pgbouncer) port=$PGB_PORT ;;
	haproxy) port=$PHAP_PORT ;;
	esac
	# "connect": simple mode with a new connection per transaction (-C),
	# the way most agents use a database
	if [[ $mode == connect ]]; then
		cmd=(pgbench -n -M simple -C -c "$n" -j "$n" -T "$BENCH_SECONDS" -h 127.0.0.1 -p "$port" -U bench)
	else
		cmd=(pgbench -n -M "$mode" -c "$n" -j "$n" -T "$BENCH_SECONDS" -h 127.0.0.1 -p "$port" -U bench)
	fi
	if [[ -n $script ]]; then cmd+=(-f "$script"); else cmd+=(-S); fi
	cmd+=(bench)
	# --state-dir before the command: exec leaves argv unterminated after removing it (main.c)
	[[ $path == agentgate ]] && cmd=(./agentgate --state-dir "$AG_STATE" exec --agent bench -- "${cmd[@]}")
	# plain TCP on every path (agentgate would otherwise offer its local CA's
	# TLS to libpq's sslmode=prefer, which the other paths cannot)
	out=$(PGPASSWORD=bench-pw PGSSLMODE=disable timeout -k 5 $((BENCH_SECONDS + 60)) "${cmd[@]}" 2>&1)
	tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | tail -n 1)
	if [[ -z $tps ]] || ! grep -q 'number of failed transactions: 0' <<<"$out"; then
		# called in $(...): notes go through a file
		echo "${PG_WARMUP:+warm-up (not measured), }$path $mode c=$n${script:+ ($script)}: $(tail -n 3 <<<"$out" | oneline)" >>"$TMP/pg-notes"
		return 1
	fi
	echo "$tps"
}

# pg_audit_toggle CLIENTS KIND: what full auditing costs, measured inside one
# pgbench -S simple run of AUDIT_TOGGLE_SECONDS through one enforcer, whose
# policy is reloaded every 2 s between full auditing and
# audit.allowed_requests: false (KIND onoff; the sessions take the new
# policy at their next statement), or between two audited policies that
# differ only by a comment (KIND aa: the same method where there is nothing
# to find, the noise it reads). No restart, no new server process, and the
# VM's drift cancels out of neighbouring windows. pgbench's per-second tps
# (--progress-timestamp) are sorted by the policy in force; a second that
# overlaps a reload is dropped. Each window of the first policy is compared
# with the mean of the windows either side of it. Sets TOG[KIND/CLIENTS] to
# "PAIRS MEDIAN MIN MAX" of those ratios, or fails. Not to be called in
# $(...): the enforcer it starts must be the bench's (AG_PID).
pg_audit_toggle() {
	local n=$1 kind=$2 live=$TMP/pg-policy-live.yaml a=$TMP/pg-policy.yaml b pid st=1 t0
	if [[ $kind == aa ]]; then
		b=$TMP/pg-policy-aa.yaml
		{ cat "$a"; echo "# the same policy under another hash"; } >"$b"
	else
		b=$TMP/pg-policy-off.yaml
	fi
	cp "$a" "$live"
	pg_agentgate_start "$live" || return 1
	: >"$TMP/toggle.marks"
	PGPASSWORD=bench-pw PGSSLMODE=disable timeout -k 5 $((AUDIT_TOGGLE_SECONDS + 60)) \
		./agentgate --state-dir "$AG_STATE" exec --agent bench -- \
		pgbench -n -M simple -S -c "$n" -j "$n" -T "$AUDIT_TOGGLE_SECONDS" -P 1 --progress-timestamp \
		-h 127.0.0.1 -p "$PG_PORT" -U bench bench >"$TMP/toggle.out" 2>&1 &
	pid=$!
	while sleep 2 && kill -0 "$pid" 2>/dev/null; do
		t0=$(date +%s.%N)
		if ((st)); then cp "$b" "$live"; st=0; else cp "$a" "$live"; st=1; fi
		./agentgate --state-dir "$AG_STATE" reload >>"$TMP/toggle.reloads" 2>&1 ||
			echo "audit toggle c=$n: a reload failed: $(tail -n 1 "$TMP/toggle.reloads" | oneline)" >>"$TMP/pg-notes"
		echo "$t0 $(date +%s.%N) $st" >>"$TMP/toggle.marks"
	done
	wait "$pid" || { echo "audit toggle c=$n $kind: $(tail -n 3 "$TMP/toggle.out" | oneline)" >>"$TMP/pg-notes"; return 1; }
	TOG[$kind/$n]=$(awk 'NR == FNR { m0[NR] = $1; m1[NR] = $2; ms[NR] = $3; nm = NR; next }
	/^progress:/ {
		t = $2 + 0; s = 1; bad = 0
		for (i = 1; i <= nm; i++) {
			if (m1[i] <= t - 1) s = ms[i]
			else if (m0[i] < t) bad = 1
		}
		if (!bad) { w += (w == 0 || s != ws[w]); ws[w] = s; sum[w] += $4; cnt[w]++ }
	}
	END {
		for (i = 2; i < w; i++)
			if (ws[i] == 1)
				r[++k] = (sum[i] / cnt[i]) / ((sum[i - 1] / cnt[i - 1] + sum[i + 1] / cnt[i + 1]) / 2)
		if (!k) exit 1
		for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (r[j] < r[i]) { x = r[i]; r[i] = r[j]; r[j] = x }
		printf "%d %.4f %.4f %.4f\n", k, k % 2 ? r[(k + 1) / 2] : (r[k / 2] + r[k / 2 + 1]) / 2, r[1], r[k] }' \
		"$TMP/toggle.marks" "$TMP/toggle.out")
}

pg_bench_run() {
	local paths=(direct) mode n r k path tps d v line policy
	[[ -n $PGB_PID ]] && paths+=(pgbouncer)
	[[ -n $PHAP_PID ]] && paths+=(haproxy)
	[[ -n $AG_STARTED ]] && paths+=(agentgate)
	for n in 1 8; do
		local modes=(simple extended prepared)
		(( n == 1 )) && modes+=(connect)
		if (( n == 8 )); then
			[[ -n $PGB_PID ]] && pg_warm pgbouncer
			[[ -n $AG_STARTED ]] && pg_warm agentgate
		fi
		for mode in "${modes[@]}"; do
			for ((r = 1; r <= ROUNDS; r++)); do
				for ((k = 0; k < ${#paths[@]}; k++)); do
					path=${paths[$(( (r - 1 + k) % ${#paths[@]} ))]}
					tps=$(pg_measure "$path" "$mode" "$n") || continue
					printf '  pgbench -S %-8s c=%d %-9s round %d/%d: %.0f tps\n' "$mode" "$n" "$path" "$r" "$ROUNDS" "$tps" >&2
					PVAL[$mode/$n/$path]+=" $tps"
					PROUND[$mode/$n/$path/$r]=$tps
				done
			done
		done
	done

	# A statement text never seen before costs one parse and a tree walk: every
	# statement of this script has a new column alias (a literal would be
	# normalised away by the verdict cache).
	printf '\\set r random(1, 2000000000)\nSELECT abalance AS a:r FROM pgbench_accounts WHERE aid = 1;\n' >"$TMP/uncached.sql"
	printf 'SELECT abalance AS a FROM pgbench_accounts WHERE aid = 1;\n' >"$TMP/cached.sql"
	if [[ -n $AG_STARTED ]]; then
		for ((r = 1; r <= ROUNDS; r++)); do
			for path in direct agentgate; do
				tps=$(pg_measure "$path" simple 1 "$TMP/uncached.sql") && PVAL[unc/$path]+=" $tps"
				tps=$(pg_measure "$path" simple 1 "$TMP/cached.sql") && PVAL[cac/$path]+=" $tps"
			done
		done
	fi

	# Busy polling (AGENTGATE_BUSY_POLL_US, off by default; loop.c
	# wait_events()): the same policy with workers that poll 200 us before
	# they sleep, paired with the default in each round, at 1 client (one
	# that waits for each answer), and the enforcer's CPU time per
	# transaction for each, as polling spends CPU for latency.
	if [[ -n $AG_STARTED ]]; then
		local bp c0 c1
		for ((r = 1; r <= ROUNDS; r++)); do
			for mode in simple prepared; do
				tps=$(pg_measure direct "$mode" 1) && PVAL[bp/$mode/direct]+=" $tps"
				for bp in 0 200; do
					AGENTGATE_BUSY_POLL_US=$bp pg_agentgate_start "$TMP/pg-policy.yaml" || continue
					c0=$(awk '{print $14 + $15}' "/proc/$AG_PID/stat")
					tps=$(pg_measure agentgate "$mode" 1) || continue
					c1=$(awk '{print $14 + $15}' "/proc/$AG_PID/stat")
					printf '  pgbench -S %-8s c=1 agentgate busy_poll=%d round %d/%d: %.0f tps\n' "$mode" "$bp" "$r" "$ROUNDS" "$tps" >&2
					PVAL[bp/$mode/$bp]+=" $tps"
					PVAL[bpcpu/$mode/$bp]+=" $(awk -v t="$tps" -v s="$BENCH_SECONDS" -v c=$((c1 - c0)) \
						-v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", c / hz * 1e6 / (t * s) }')"
				done
			done
		done
		pg_agentgate_start "$TMP/pg-policy.yaml"
	fi

	# What full auditing costs: the same enforcer and policy with the events
	# of allowed statements off (audit.allowed_requests: false), restarted
	# between the two, alternating, pgbench -S simple at 1 and 8 clients.
	# The cost is a few percent and one run moves by more than that, so it
	# is estimated from pairs: each round measures both, and the figure is
	# the median of the rounds' on/off ratios; drift over the run cancels
	# out of each pair instead of landing in one median. AUDIT_ROUNDS rounds
	# (default 6). The same rounds run agentgate as a plain relay too
	# ("relay", a tcp target), so each round also pairs the postgres module
	# with the bare data path; the order rotates over the three.
	local cfg order
	local -a orders=("on off relay" "off relay on" "relay on off")
	if [[ -n $AG_STARTED ]]; then
		for ((r = 1; r <= AUDIT_ROUNDS; r++)); do
			order=${orders[$(( (r - 1) % 3 ))]}
			for cfg in $order; do
				case $cfg in
				on) policy=$TMP/pg-policy.yaml ;;
				off) policy=$TMP/pg-policy-off.yaml ;;
				relay) policy=$TMP/pg-policy-relay.yaml ;;
				esac
				pg_agentgate_start "$policy" || continue
				for n in 1 8; do
					local a0 a1 b0 b1
					a0=$(ag_ticks) b0=$(busy_ticks)
					tps=$(pg_measure agentgate simple "$n") || tps=
					sleep 0.5   # what the round spooled reaches the sink
					a1=$(ag_ticks) b1=$(busy_ticks)
					# CPU per transaction (us): the enforcer's, and every
					# process's; "ENFORCER ALL"
					[[ -n $tps && -n $a0 && -n $a1 ]] &&
						ACPU[$cfg/$n/$r]=$(awk -v a="$((a1 - a0))" -v b="$((b1 - b0))" -v hz="$CLK_TCK" \
							-v t="$tps" -v s="$BENCH_SECONDS" 'BEGIN { x = t * s * hz / 1e6; printf "%.2f %.2f", a / x, b / x }')
					APAIR[$cfg/$n/$r]=$tps
					[[ -n $tps ]] && PVAL[audit$cfg/$n]+=" $tps" &&
						printf '  pgbench -S simple c=%d %-9s round %d/%d: %.0f tps\n' "$n" "$cfg" "$r" "$AUDIT_ROUNDS" "$tps" >&2
				done
			done
		done
		local kind
		for n in 1 8; do
			for kind in onoff aa; do
				pg_audit_toggle "$n" "$kind" || TOG[$kind/$n]=
				[[ -n ${TOG[$kind/$n]:-} ]] &&
					printf '  pgbench -S simple c=%d audit toggled by reload (%s): %s\n' "$n" "$kind" "${TOG[$kind/$n]}" >&2
			done
		done
	fi

	echo
	echo "postgres: pgbench -S, scale $PGB_SCALE, ${BENCH_SECONDS}s x $ROUNDS rounds (median tps; ratio to direct)"
	echo "  agentgate policy: allow select on 2 tables, mask 1 column, detectors credit_card+email on every value"
	echo "  connect/1: a new connection per transaction (pgbench -C), simple mode"
	echo "  pgbouncer and agentgate keep idle server sessions 30 s, none past 5 min, and are warmed (2 s, 8 clients,"
	echo "  not measured) at the start and before the 8-client rows, agentgate also after each restart;"
	echo "  direct and haproxy start new server processes in every run"
	printf '%-16s %-12s%-20s%-20s%-20s\n' "mode/clients" direct pgbouncer haproxy agentgate
	for n in 1 8; do
		local modes=(simple extended prepared)
		(( n == 1 )) && modes+=(connect)
		for mode in "${modes[@]}"; do
			d=$(median "${PVAL[$mode/$n/direct]:-}") || d=
			line=$(printf '%-16s %-12s' "$mode/$n" "${d:+$(printf '%.0f' "$d")}")
			for path in pgbouncer haproxy agentgate; do
				v=$(median "${PVAL[$mode/$n/$path]:-}") || v=
				if [[ -n $v && -n $d ]]; then
					line+=$(printf '%-20s' "$(printf '%.0f (%.2f)' "$v" "$(awk -v a="$v" -v b="$d" 'BEGIN{print a/b}')")")
				else
					line+=$(printf '%-20s' n/a)
				fi
			done
			echo "$line"
		done
	done
	# agentgate against pgbouncer round by round: each round measures the
	# paths one after another, so the pair shares the VM's state of the
	# moment (its speed drifts by more than the gap over a run); the median
	# of the rounds' ratios, above 1 where agentgate is ahead
	local pr pk pm plo phi pline=
	for n in 1 8; do
		for mode in simple extended prepared; do
			pr=
			for ((r = 1; r <= ROUNDS; r++)); do
				[[ -n ${PROUND[$mode/$n/agentgate/$r]:-} && -n ${PROUND[$mode/$n/pgbouncer/$r]:-} ]] &&
					pr+=" $(awk -v a="${PROUND[$mode/$n/agentgate/$r]}" -v b="${PROUND[$mode/$n/pgbouncer/$r]}" \
						'BEGIN { printf "%.4f", a / b }')"
			done
			[[ -n $pr ]] || continue
			read -r pk pm plo phi <<<"$(ratio_stats "$pr")"
			pline+=$(printf ' %s/%d %.2f (%.2f-%.2f);' "$mode" "$n" "$pm" "$plo" "$phi")
		done
	done
	[[ -n $pline ]] && echo "agentgate/pgbouncer paired by round (median, range; above 1: agentgate ahead):${pline%;}"
	local ua uc ud cd
	ua=$(median "${PVAL[unc/agentgate]:-}") || ua=
	uc=$(median "${PVAL[cac/agentgate]:-}") || uc=
	ud=$(median "${PVAL[unc/direct]:-}") || ud=
	cd=$(median "${PVAL[cac/direct]:-}") || cd=
	if [[ -n $ua && -n $uc && -n $ud && -n $cd ]]; then
		# per-statement time through agentgate minus the same without it,
		# new texts versus a cached one: what a new text costs the enforcer
		awk -v ua="$ua" -v uc="$uc" -v ud="$ud" -v cd="$cd" 'BEGIN {
			printf "uncached statement: %.1f us more than a cached one (agentgate %.0f vs %.0f tps; direct %.0f vs %.0f tps, 1 client)\n",
				(1e6 / ua - 1e6 / ud) - (1e6 / uc - 1e6 / cd), ua, uc, ud, cd }'
	fi
	local bd b0 b1 u0 u1
	for mode in simple prepared; do
		bd=$(median "${PVAL[bp/$mode/direct]:-}") || continue
		b0=$(median "${PVAL[bp/$mode/0]:-}") || continue
		b1=$(median "${PVAL[bp/$mode/200]:-}") || continue
		u0=$(median "${PVAL[bpcpu/$mode/0]:-}") || u0=0
		u1=$(median "${PVAL[bpcpu/$mode/200]:-}") || u1=0
		awk -v m="$mode" -v d="$bd" -v a="$b0" -v b="$b1" -v u0="$u0" -v u1="$u1" 'BEGIN {
			printf "busy polling, pgbench -S %s c=1: AGENTGATE_BUSY_POLL_US=200 %.0f tps (%.2f of direct), default %.0f (%.2f), direct %.0f; enforcer CPU %.1f vs %.1f us per transaction\n",
				m, b, b / d, a, a / d, d, u1, u0 }'
	done
	local ratios k m lo hi
	for n in 1 8; do
		ua=$(median "${PVAL[auditon/$n]:-}") || ua=
		uc=$(median "${PVAL[auditoff/$n]:-}") || uc=
		ratios=$(pair_ratios on off "$n")
		if [[ -n $ua && -n $uc && -n $ratios ]]; then
			read -r k m lo hi <<<"$(ratio_stats "$ratios")"
			awk -v a="$ua" -v b="$uc" -v n="$n" -v k="$k" -v m="$m" -v lo="$lo" -v hi="$hi" 'BEGIN {
				printf "audit cost, pgbench -S simple c=%d: median of %d paired rounds on/off %.3f, cost %.1f%% (rounds %.1f%% to %.1f%%; goal <= 3%%); medians %.0f tps audited, %.0f without\n",
					n, k, m, (1 - m) * 100, (1 - hi) * 100, (1 - lo) * 100, a, b }'
		fi
		# the same inside one run, the policy reloaded every 2 s (pg_audit_toggle)
		if [[ -n ${TOG[onoff/$n]:-} ]]; then
			read -r k m lo hi <<<"${TOG[onoff/$n]}"
			local ak am alo ahi
			read -r ak am alo ahi <<<"${TOG[aa/$n]:-0 0 0 0}"
			awk -v n="$n" -v k="$k" -v m="$m" -v lo="$lo" -v hi="$hi" -v ak="$ak" -v am="$am" -v alo="$alo" \
				-v ahi="$ahi" -v s="$AUDIT_TOGGLE_SECONDS" 'BEGIN {
				printf "audit cost, pgbench -S simple c=%d, one %d s run with audit.allowed_requests reloaded every 2 s: median of %d audited/unaudited window pairs %.3f, cost %.1f%% (pairs %.1f%% to %.1f%%)", n, s, k, m, (1 - m) * 100, (1 - hi) * 100, (1 - lo) * 100
				if (ak > 0) printf "; the same between two audited policies (nothing to find): %.3f over %d pairs (%.3f to %.3f)", am, ak, alo, ahi
				printf "\n" }'
		fi
		# The same from CPU time, which one run measures to well under a
		# percent where throughput moves by more than ten: the enforcer's
		# CPU per transaction audited and not, each round's difference
		# against all the CPU (every process) an audited transaction
		# costs. At saturation the throughput lost is that fraction.
		# Every process's CPU moves too (the server's, pgbench's, the
		# kernel's: on this VM the server's grew with the enforcer's), so
		# the same from all the CPU, audited against not, is printed beside.
		local ea eo al ao costs= dl=
		for ((r = 1; r <= AUDIT_ROUNDS; r++)); do
			[[ -n ${ACPU[on/$n/$r]:-} && -n ${ACPU[off/$n/$r]:-} ]] || continue
			read -r ea al <<<"${ACPU[on/$n/$r]}"
			read -r eo ao <<<"${ACPU[off/$n/$r]}"
			costs+=" $(awk -v a="$ea" -v o="$eo" -v al="$al" 'BEGIN { printf "%.4f", 1 - (a - o) / al }')"
			dl+=" $ea/$eo/$al/$ao"
		done
		if [[ -n $costs ]]; then
			read -r k m lo hi <<<"$(ratio_stats "$costs")"
			awk -v n="$n" -v k="$k" -v m="$m" -v lo="$lo" -v hi="$hi" -v d="$dl" 'BEGIN {
				split(d, v, " "); ne = 0; no = 0; na = 0
				for (i in v) { split(v[i], f, "/"); se[++ne] = f[1]; so[ne] = f[2]; sa[ne] = f[3]; sn[ne] = f[4] }
				# medians of the four columns
				for (c = 1; c <= 4; c++) { for (i = 1; i <= ne; i++) w[i] = c == 1 ? se[i] : c == 2 ? so[i] : c == 3 ? sa[i] : sn[i]
					for (i = 1; i <= ne; i++) for (j = i + 1; j <= ne; j++) if (w[j] < w[i]) { t = w[i]; w[i] = w[j]; w[j] = t }
					med[c] = ne % 2 ? w[(ne + 1) / 2] : (w[ne / 2] + w[ne / 2 + 1]) / 2 }
				printf "audit cost by CPU time, c=%d: enforcer %.1f us per transaction audited, %.1f without; every process %.1f us per audited transaction; cost %.1f%% (median of %d rounds, %.1f%% to %.1f%%; goal <= 3%%); every process %.1f us per transaction without, so all the CPU an audited transaction costs is %.1f%% more\n",
					n, med[1], med[2], med[3], (1 - m) * 100, k, (1 - hi) * 100, (1 - lo) * 100, med[4], (med[4] > 0 ? (med[3] / med[4] - 1) * 100 : 0) }'
		fi
		# the postgres module (audited, as in the table) against the plain relay
		ua=$(median "${PVAL[auditrelay/$n]:-}") || ua=
		uc=$(median "${PVAL[simple/$n/pgbouncer]:-}") || uc=
		ratios=$(pair_ratios on relay "$n")
		if [[ -n $ua && -n $ratios ]]; then
			read -r k m lo hi <<<"$(ratio_stats "$ratios")"
			awk -v a="$ua" -v p="${uc:-0}" -v n="$n" -v k="$k" -v m="$m" -v lo="$lo" -v hi="$hi" 'BEGIN {
				printf "postgres module vs plain relay, pgbench -S simple c=%d: median of %d paired rounds postgres/relay %.3f (rounds %.3f to %.3f); relay median %.0f tps", n, k, m, lo, hi, a
				if (p > 0) printf " (pgbouncer in the table: %.0f)", p
				printf "; the relay starts new server processes in each run, the module reuses kept ones\n" }'
		fi
	done
	[[ -f $AG_STATE/pg-audit.jsonl ]] &&
		echo "agentgate audit: $(grep -c '"class_uid":6005\|"class_uid": 6005' "$AG_STATE/pg-audit.jsonl") statement events written"
	[[ -f $TMP/pg-notes ]] && mapfile -t -O "${#PNOTES[@]}" PNOTES <"$TMP/pg-notes"
	for line in "${PNOTES[@]}"; do
		echo "note (postgres): $line"
	done
}

if [[ $PG_BENCH != 0 ]]; then
	# ours to stop on any exit, before run.sh's own cleanup
	trap 'pgrc=$?; pg_bench_stop; (exit $pgrc); cleanup' EXIT
	# one enforcer per host: wait for integration runs (conftest.py's lock),
	# unless the HTTP section of this run holds it already (a second flock
	# on another descriptor of the same file would wait for ourselves)
	[[ -n ${HLOCK:-} ]] || { mkdir -p /run/agentgate && exec 9>>/run/agentgate/tests.lock && flock 9; }
	if pg_bench_setup; then
		pg_bench_run
	fi
	stop_enforcer
	pg_bench_stop
fi
