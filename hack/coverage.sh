#!/usr/bin/env bash
# Prints statement coverage per package from a Go cover profile, merging the blocks that
# several test binaries report for the same code (with -coverpkg every binary reports every
# covered package): a block counts as covered if any binary ran it.
set -euo pipefail
profile="${1:-cover.out}"
module="$(go list -m)"
awk -v module="${module}/" '
	NR == 1 && /^mode:/ { next }
	/^mode:/ { next }
	{
		split($1, loc, ":"); file = loc[1]
		key = $1; stmts[key] = $2
		if ($3 > 0) covered[key] = 1
		files[key] = file
	}
	END {
		for (k in stmts) {
			f = files[k]; sub(module, "", f); n = split(f, parts, "/")
			pkg = parts[1]; for (i = 2; i < n; i++) pkg = pkg "/" parts[i]
			total[pkg] += stmts[k]; all += stmts[k]
			if (k in covered) { hit[pkg] += stmts[k]; allhit += stmts[k] }
		}
		for (p in total) printf "%-48s %6.1f%%  (%d/%d statements)\n", p, 100 * hit[p] / total[p], hit[p], total[p] | "sort"
		close("sort")
		if (all > 0) printf "%-48s %6.1f%%  (%d/%d statements)\n", "total", 100 * allhit / all, allhit, all
	}
' "${profile}"
