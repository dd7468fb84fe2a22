#!/usr/bin/env bash
# Checks every module of the repository with govulncheck: the project's packages, and the
# tools pinned in hack/tools (what each module's `tool` directives name). It fails when code
# reaches a known vulnerability (in the standard library of the Go that runs it, or in a
# module), not when it merely imports a vulnerable package.
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
failed=()
check() { # folder, package patterns
	local dir="$1"
	shift
	echo "vulncheck: ${dir}: $*" >&2
	(cd "${dir}" && go run "golang.org/x/vuln/cmd/govulncheck@${govulncheck_version}" -db "${db}" "$@") || failed+=("${dir}")
}
check . ./...
while read -r mod; do
	check "$(dirname "${mod}")" tool
done < <(git ls-files 'hack/tools/*go.mod' 'hack/tools/**/go.mod' | sort -u)
if [ "${#failed[@]}" -gt 0 ]; then
	echo "vulncheck: known vulnerabilities reached in: ${failed[*]}" >&2
	exit 1
fi
