#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Installs the test OpenID provider's pinned dependencies (package-lock.json)
# into tests/oidc/node_modules when they are missing. Idempotent and quiet.
set -eu
cd "$(dirname "$0")"
if [ -d node_modules/oidc-provider ]; then
	exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "tests/oidc: npm is not installed (apt-get install npm)" >&2; exit 1; }
npm ci --no-audit --no-fund --loglevel=error >/dev/null
