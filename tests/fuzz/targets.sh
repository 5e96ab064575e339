# shellcheck shell=bash
# What each fuzz target links: sourced by run.sh and replay.sh.
# A target is tests/fuzz/fuzz_<name>.c with its corpus in corpus/<name>/;
# by default it tests userspace/<name>.c and needs no library. Add a line
# below when a target differs.

fuzz_srcs() {
	case $1 in
	jwt) echo userspace/ident_jwt.c ;;
	http_req) echo userspace/http_msg.c ;;
	mask_json) echo userspace/mask.c userspace/mask_json.c ;;
	pg_classify) echo userspace/pg_classify.c userspace/pg_classify_json.c userspace/pg_funcs.c ;;
	*) echo "userspace/$1.c" ;;
	esac
}

fuzz_libs() {
	case $1 in
	dns_msg) echo -lresolv ;;
	jwt) echo -ljansson -lssl -lcrypto ;;
	mask_json) echo -lpcre2-8 -lpthread ;;
	pg_classify) echo -lpg_query -lpthread ;;
	pg_wire) echo -lssl -lcrypto ;;
	http_scrub) echo -lcrypto ;;
	*) ;;
	esac
}

# libFuzzer -max_len: enough to reach the parser's own size limit.
fuzz_max_len() {
	case $1 in
	tls_hello) echo $((65536 + 64)) ;;    # TLS_HELLO_MAX and a bit
	dns_msg) echo 8192 ;;                 # past DNS_QUERY_MAX
	jwt) echo 17000 ;;                    # past the 16 KiB token limit
	http_req) echo 17000 ;;               # past HTTP_HEAD_MAX
	http_path) echo 17000 ;;              # a target as long as a head
	k8s) echo 21000 ;;                    # past K8S_PATH_MAX + K8S_QUERY_MAX
	mask_json) echo 65536 ;;              # deep nesting and long digit/base64 runs
	pg_classify) echo 16384 ;;            # past the 8 KiB pre-scan threshold
	pg_wire) echo 12000 ;;                # past PG_STARTUP_MAX
	http_scrub) echo 8192 ;;              # a secret of up to 64 bytes and a few reads of answer
	*) echo 4096 ;;
	esac
}

# Every target present: fuzz_<name>.c files, in name order.
fuzz_all_targets() {
	local f
	for f in tests/fuzz/fuzz_*.c; do
		[ -e "$f" ] || continue
		f=${f#tests/fuzz/fuzz_}
		echo "${f%.c}"
	done
}
