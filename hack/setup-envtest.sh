#!/usr/bin/env bash
# Provides the control-plane binaries the tests and the local cluster run on, at pinned
# versions, cached outside the repository in the folder controller-runtime's envtest uses:
#
#   ${XDG_DATA_HOME:-~/.local/share}/kubebuilder-envtest/k8s/<k8s version>-linux-amd64/
#       kube-apiserver etcd kube-scheduler kube-controller-manager
#   ${XDG_DATA_HOME:-~/.local/share}/kubebuilder-envtest/kwok/<kwok version>-linux-amd64/
#       kwok kwokctl
#
# For each binary it reuses the cached copy, else tries the ordinary release download with
# a short timeout, else builds it from the Go module proxy (the route that works on a
# machine whose only network is the module proxy). It is safe to run twice and to run
# concurrently (a lock guards the cache).
#
# Usage:
#   hack/setup-envtest.sh [envtest|cluster|all]   (default: envtest)
#     envtest  kube-apiserver and etcd (what `make test` needs)
#     cluster  everything for a local kwok cluster as well
#   hack/setup-envtest.sh print-kwok-dir          print the kwok binaries folder
#
# Progress goes to stderr; the last line on stdout is the folder to use as
# KUBEBUILDER_ASSETS, so `export KUBEBUILDER_ASSETS="$(hack/setup-envtest.sh)"` works.
set -euo pipefail

# These binaries are test infrastructure: they build with the machine's own Go release, as
# they are known to, whatever toolchain the Makefile asks for the project's own code.
export GOTOOLCHAIN=local

K8S_VERSION="${K8S_VERSION:-1.37.2}"
K8S_STAGING_VERSION="${K8S_STAGING_VERSION:-0.37.2}"
ETCD_VERSION="${ETCD_VERSION:-3.6.6}"
KWOK_VERSION="${KWOK_VERSION:-0.8.0}"
DOWNLOAD_TIMEOUT="${DOWNLOAD_TIMEOUT:-20}"

OS=linux
ARCH="$(go env GOARCH 2>/dev/null || echo amd64)"
DATA_HOME="${XDG_DATA_HOME:-${HOME}/.local/share}"
ENVTEST_ROOT="${ENVTEST_ROOT:-${DATA_HOME}/kubebuilder-envtest}"
K8S_DIR="${ENVTEST_ROOT}/k8s/${K8S_VERSION}-${OS}-${ARCH}"
KWOK_DIR="${ENVTEST_ROOT}/kwok/${KWOK_VERSION}-${OS}-${ARCH}"
WORK_DIR="${ENVTEST_ROOT}/.build"

log() { printf '[setup-envtest] %s\n' "$*" >&2; }

# go_version is the language version of the local Go, for the throw-away build modules.
go_version() { go env GOVERSION | sed 's/^go//; s/^\([0-9]*\.[0-9]*\).*/\1.0/'; }

target="${1:-envtest}"
case "${target}" in
envtest) wanted=(kube-apiserver etcd) ;;
cluster | all) wanted=(kube-apiserver etcd kube-scheduler kube-controller-manager kwok kwokctl) ;;
print-kwok-dir)
	echo "${KWOK_DIR}"
	exit 0
	;;
*)
	log "unknown target ${target}: use envtest, cluster or print-kwok-dir"
	exit 2
	;;
esac

mkdir -p "${K8S_DIR}" "${KWOK_DIR}" "${WORK_DIR}"

# One build at a time per cache: a second caller waits, then finds the binaries cached.
exec 9>"${ENVTEST_ROOT}/.lock"
if ! flock -n 9; then
	log "another setup is running; waiting for it"
	flock 9
fi

dir_of() {
	case "$1" in
	kwok | kwokctl) echo "${KWOK_DIR}" ;;
	*) echo "${K8S_DIR}" ;;
	esac
}

# A binary counts as cached only if it runs and reports the pinned version, so a partial
# write or a binary built without version stamps is rebuilt rather than trusted.
cached() {
	local bin="$1" path out
	path="$(dir_of "${bin}")/${bin}"
	[[ -x "${path}" ]] || return 1
	out="$("${path}" --version 2>&1 || "${path}" version 2>&1 || true)"
	case "${bin}" in
	etcd) [[ "${out}" == *"${ETCD_VERSION}"* ]] ;;
	kwok | kwokctl) [[ "${out}" == *"${KWOK_VERSION}"* ]] ;;
	*) [[ "${out}" == *"v${K8S_VERSION}"* ]] ;;
	esac
}

download() {
	local url="$1" dest="$2"
	command -v curl >/dev/null || return 1
	curl -fsSL --connect-timeout 5 --max-time "${DOWNLOAD_TIMEOUT}" -o "${dest}.part" "${url}" 2>/dev/null || {
		rm -f "${dest}.part"
		return 1
	}
	chmod +x "${dest}.part"
	mv "${dest}.part" "${dest}"
}

# try_download fetches a release binary; it fails quietly where there is no internet.
try_download() {
	local bin="$1" dest
	dest="$(dir_of "${bin}")/${bin}"
	case "${bin}" in
	kube-apiserver | kube-scheduler | kube-controller-manager)
		download "https://dl.k8s.io/release/v${K8S_VERSION}/bin/${OS}/${ARCH}/${bin}" "${dest}"
		;;
	etcd)
		local tgz="${WORK_DIR}/etcd.tar.gz"
		download "https://github.com/etcd-io/etcd/releases/download/v${ETCD_VERSION}/etcd-v${ETCD_VERSION}-${OS}-${ARCH}.tar.gz" "${tgz}" || return 1
		tar -xzf "${tgz}" -C "${WORK_DIR}" "etcd-v${ETCD_VERSION}-${OS}-${ARCH}/etcd" || return 1
		mv "${WORK_DIR}/etcd-v${ETCD_VERSION}-${OS}-${ARCH}/etcd" "${dest}"
		rm -rf "${tgz}" "${WORK_DIR}/etcd-v${ETCD_VERSION}-${OS}-${ARCH}"
		;;
	kwok | kwokctl)
		download "https://github.com/kubernetes-sigs/kwok/releases/download/v${KWOK_VERSION}/${bin}-${OS}-${ARCH}" "${dest}"
		;;
	esac
}

# k8s_module prepares a throw-away module that requires k8s.io/kubernetes and replaces each
# of its staging modules (which its own go.mod points at ./staging, refused by `go install`)
# with the published module of the same path.
k8s_module() {
	local mod="${WORK_DIR}/k8s-${K8S_VERSION}"
	if [[ -f "${mod}/.ready" ]]; then
		echo "${mod}"
		return
	fi
	log "preparing a build module for k8s.io/kubernetes v${K8S_VERSION}"
	rm -rf "${mod}"
	mkdir -p "${mod}"
	local gomod
	gomod="$(cd "${mod}" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
	{
		echo "module hive-operator.local/k8s-build"
		echo
		echo "go $(go_version)"
		echo
		echo "require k8s.io/kubernetes v${K8S_VERSION}"
		echo
		grep -E '=> \./staging/' "${gomod}" | awk -v v="v${K8S_STAGING_VERSION}" '{print "replace " $1 " => " $1 " " v}'
	} >"${mod}/go.mod"
	cat >"${mod}/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
EOF
	(cd "${mod}" && go mod tidy >&2)
	touch "${mod}/.ready"
	echo "${mod}"
}

# expected says how long a build usually takes on a machine of 2 cores with a cold cache.
expected() {
	case "$1" in
	kube-apiserver) echo "7 to 15 minutes" ;;
	kube-scheduler | kube-controller-manager) echo "2 to 6 minutes" ;;
	etcd | kwok) echo "1 to 2 minutes" ;;
	*) echo "under a minute" ;;
	esac
}

# run_with_progress runs a command in the background and says every 30 s what it is doing
# and for how long, so a long first build shows that it moves.
run_with_progress() {
	local what="$1" start pid
	shift
	start=$(date +%s)
	"$@" &
	pid=$!
	while kill -0 "${pid}" 2>/dev/null; do
		for _ in $(seq 30); do
			kill -0 "${pid}" 2>/dev/null || break
			sleep 1
		done
		if kill -0 "${pid}" 2>/dev/null; then
			log "  still building ${what}: $(($(date +%s) - start)) s so far${PROGRESS_LEFT:+; ${PROGRESS_LEFT}}"
		fi
	done
	wait "${pid}"
}

build() {
	local bin="$1" dest start
	dest="$(dir_of "${bin}")/${bin}"
	start=$(date +%s)
	case "${bin}" in
	kube-apiserver | kube-scheduler | kube-controller-manager)
		local mod pkgver="k8s.io/component-base/version" ldflags
		mod="$(k8s_module)"
		ldflags="-s -w -X ${pkgver}.gitVersion=v${K8S_VERSION} -X ${pkgver}.gitMajor=${K8S_VERSION%%.*}"
		ldflags+=" -X ${pkgver}.gitMinor=$(echo "${K8S_VERSION}" | cut -d. -f2) -X ${pkgver}.gitTreeState=clean"
		ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=v${K8S_VERSION}"
		log "building ${bin} v${K8S_VERSION} from the Go module proxy (usually $(expected "${bin}") on a cold cache)"
		run_with_progress "${bin}" bash -c 'cd "$1" && CGO_ENABLED=0 go build -trimpath -ldflags "$2" -o "$3" "k8s.io/kubernetes/cmd/$4" >&2' \
			_ "${mod}" "${ldflags}" "${dest}.part" "${bin}"
		;;
	etcd)
		# etcd's go.mod has replace directives, which `go install pkg@version` refuses, so it
		# is built from a throw-away module that requires it.
		log "building etcd v${ETCD_VERSION} from the Go module proxy (usually $(expected etcd))"
		local mod="${WORK_DIR}/etcd-${ETCD_VERSION}"
		if [[ ! -f "${mod}/.ready" ]]; then
			rm -rf "${mod}"
			mkdir -p "${mod}"
			printf 'module hive-operator.local/etcd-build\n\ngo %s\n' "$(go_version)" >"${mod}/go.mod"
			printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >"${mod}/tools.go"
			(cd "${mod}" && go get "go.etcd.io/etcd/server/v3@v${ETCD_VERSION}" >&2 && go mod tidy >&2)
			touch "${mod}/.ready"
		fi
		run_with_progress etcd bash -c 'cd "$1" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$2" go.etcd.io/etcd/server/v3 >&2' \
			_ "${mod}" "${dest}.part"
		;;
	kwok | kwokctl)
		log "building ${bin} v${KWOK_VERSION} from the Go module proxy (usually $(expected "${bin}"))"
		local gobin="${WORK_DIR}/gobin-kwok"
		local pkgver="sigs.k8s.io/kwok/pkg/consts"
		run_with_progress "${bin}" env GOBIN="${gobin}" CGO_ENABLED=0 go install -trimpath \
			-ldflags "-s -w -X ${pkgver}.Version=v${KWOK_VERSION} -X ${pkgver}.KubeVersion=v${K8S_VERSION}" \
			"sigs.k8s.io/kwok/cmd/${bin}@v${KWOK_VERSION}" >&2
		mv "${gobin}/${bin}" "${dest}.part"
		;;
	esac
	mv "${dest}.part" "${dest}"
	log "built ${bin} in $(($(date +%s) - start)) s"
}

# Only what the target needs, and only what is not cached yet.
missing=()
for bin in "${wanted[@]}"; do
	cached "${bin}" || missing+=("${bin}")
done
if ((${#missing[@]} > 0)); then
	log "${#missing[@]} of ${#wanted[@]} binaries to provide: ${missing[*]} (a first build takes about 20 minutes for all of them; they are cached after)"
fi
for i in "${!missing[@]}"; do
	bin="${missing[$i]}"
	left=("${missing[@]:$((i + 1))}")
	PROGRESS_LEFT=""
	if ((${#left[@]} > 0)); then
		PROGRESS_LEFT="then ${left[*]}"
	fi
	log "[$((i + 1))/${#missing[@]}] ${bin}"
	if [[ "${HIVE_SKIP_DOWNLOAD:-}" != "1" ]] && try_download "${bin}" && cached "${bin}"; then
		log "downloaded ${bin}"
		continue
	fi
	build "${bin}"
	if ! cached "${bin}"; then
		log "${bin} was built but does not report the pinned version; see the output above"
		exit 1
	fi
done

log "control-plane binaries ready in ${K8S_DIR}"
echo "${K8S_DIR}"
