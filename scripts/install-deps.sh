#!/usr/bin/env bash
# Installs every Debian package agentgate needs to build, run, test and benchmark.
# Idempotent: quiet and quick when everything is already present.
set -euo pipefail

PKGS=(
  # build
  make gcc clang llvm pkg-config bpftool libbpf-dev libelf-dev zlib1g-dev
  libyaml-dev libjansson-dev libssl-dev libcurl4-openssl-dev libpcre2-dev libcap-dev
  libclang-rt-14-dev libpg-query-dev libprotobuf-c-dev librelp-dev
  # run
  iproute2 util-linux
  # test: a small ext4 on a loop device whose fdatasync fails (mount has losetup), chattr
  mount e2fsprogs
  # test: real servers and clients
  curl dnsmasq-base python3 python3-pytest python3-psycopg2 python3-jsonschema socat openssl liburing-dev
  strace   # holds a syscall to open a race window (test_exec_joins_the_cgroup_it_checked)
  postgresql-15 postgresql-client-15 nginx rsyslog rsyslog-relp rsyslog-openssl
  # bench peers
  haproxy pgbouncer wrk
  # the test OpenID provider (npm package oidc-provider, pinned in tests/oidc)
  nodejs
)

here=$(cd "$(dirname "$0")/.." && pwd)
missing=()
for p in "${PKGS[@]}"; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$st" == "install ok installed" ]] || missing+=("$p")
done
# Debian's nodejs comes without npm (NodeSource's includes it).
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [[ ${#missing[@]} -eq 0 ]]; then
  # npm packages for the tests, from the lock file (quiet, idempotent)
  [[ $(id -u) -ne 0 ]] || "$here/tests/oidc/setup.sh"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing packages: ${missing[*]} (run as root: sudo $0)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Packages such as haproxy start a service from their postinst; we only want the
# binaries (tests start their own instances on loopback), so forbid service starts
# for the duration of the install unless the machine already has a policy.
own_policy=0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  own_policy=1
fi
trap '[[ $own_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d' EXIT
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
"$here/tests/oidc/setup.sh"
