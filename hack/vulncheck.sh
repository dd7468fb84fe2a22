#!/usr/bin/env bash
# Checks the module with govulncheck: it fails when the code reaches a known vulnerability
# (in the standard library of the Go that runs it, or in a module), not merely imports one.
#
# The database is the Go vulnerability database at a pinned version of the module that
# publishes it (golang.org/x/vulndb), indexed once into the layout govulncheck reads and
# cached outside the repository, so the check runs without internet and gives the same
# answer on every machine until the pin moves. VULN_DB=https://vuln.go.dev checks against
# the live database instead.
set -euo pipefail
cd "$(dirname "$0")/.."
vulndb_version="${VULNDB_VERSION:?set by the Makefile}"
govulncheck_version="${GOVULNCHECK_VERSION:?set by the Makefile}"
db="${VULN_DB:-}"
if [ -z "${db}" ]; then
	cache="${XDG_CACHE_HOME:-${HOME}/.cache}/hive-operator/vulndb-${vulndb_version}"
	if [ ! -f "${cache}/index/db.json" ]; then
		echo "vulncheck: indexing the Go vulnerability database ${vulndb_version} into ${cache}" >&2
		go mod download "golang.org/x/vulndb@${vulndb_version}"
		src="$(go env GOMODCACHE)/golang.org/x/vulndb@${vulndb_version}/data/osv"
		mkdir -p "$(dirname "${cache}")"
		tmp="$(mktemp -d "${cache}.XXXXXX")"
		trap 'rm -rf "${tmp}"' EXIT
		go run "golang.org/x/vulndb/cmd/indexdb@${vulndb_version}" -vulns "${src}" -out "${tmp}/db"
		rm -rf "${cache}"
		mv "${tmp}/db" "${cache}"
	fi
	db="file://${cache}"
fi
echo "vulncheck: $(go version | cut -d' ' -f3), database ${db}" >&2
go run "golang.org/x/vuln/cmd/govulncheck@${govulncheck_version}" -db "${db}" ./...
