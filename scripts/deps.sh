#!/bin/sh
# Installs the system packages Tollgate's dev mode and tests need, on Debian:
# PostgreSQL server binaries and ClickHouse. Prints nothing and returns at
# once when everything is present, so `make dev` and `make test` can run it
# every time.
#
# Installing Debian's postgresql package may create and start a system
# cluster on port 5432. That is harmless: Tollgate starts its own clusters,
# in its own directories, on free ports it picks, and never uses 5432.
set -eu

missing=""

# Debian keeps the server binaries off PATH, in /usr/lib/postgresql/<v>/bin.
have_postgres() {
	bindir=$(pg_config --bindir 2>/dev/null) && [ -x "$bindir/postgres" ] && [ -x "$bindir/initdb" ] && return 0
	for dir in /usr/lib/postgresql/*/bin; do
		[ -x "$dir/postgres" ] && [ -x "$dir/initdb" ] && return 0
	done
	return 1
}

# /usr/sbin is not on an ordinary user's PATH on Debian, so look there too.
have_command() {
	command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]
}

have_postgres || missing="$missing postgresql"
have_command clickhouse-server || missing="$missing clickhouse-server"
have_command clickhouse-client || missing="$missing clickhouse-client"

[ -z "$missing" ] && exit 0
missing=${missing# }

if [ "$(id -u)" -eq 0 ]; then
	sudo=""
elif command -v sudo >/dev/null 2>&1; then
	sudo="sudo"
else
	echo "deps.sh: missing packages: $missing" >&2
	echo "deps.sh: as root, run: apt-get update && apt-get install -y $missing" >&2
	exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
	echo "deps.sh: missing packages: $missing (Debian names); no apt-get here, install them by hand" >&2
	exit 1
fi

echo "deps.sh: installing $missing" >&2
# shellcheck disable=SC2086 # $missing is a list of package names
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
# shellcheck disable=SC2086
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
