#!/usr/bin/env bash
# Make sure the programs the test suite runs are installed.
#
# Each argument is COMMAND=DEBIAN_PACKAGE, where COMMAND is a program on PATH or a
# path pattern (Debian keeps PostgreSQL's programs off PATH). Missing packages are installed with
# apt-get when running as root; otherwise one line names what to install and
# the script exits non-zero, so `make test` stops before any test runs.
set -euo pipefail

missing=()
for pair in "$@"; do
    command="${pair%%=*}"
    package="${pair#*=}"
    if [[ $command == */* ]]; then
        compgen -G "$command" >/dev/null || missing+=("$package")
    else
        command -v "$command" >/dev/null 2>&1 || missing+=("$package")
    fi
done
((${#missing[@]})) || exit 0

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "missing system packages: ${missing[*]} (install them, e.g. sudo apt-get install ${missing[*]})" >&2
    exit 1
fi
echo "installing system packages: ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
