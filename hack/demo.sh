#!/usr/bin/env bash
# Runs the Hive operator on a local simulated cluster and shows a hive answering tasks, and
# requests through the hive gateway.
#
#   hack/demo.sh up     (make demo)       create the cluster, run the operator and agents,
#                                         apply the samples, show the results
#   hack/demo.sh down   (make demo-down)  stop everything and delete the cluster
#
# The cluster is kwokctl's binary runtime: a real etcd, API server, scheduler and controller
# manager, with kwok simulating nodes and pod lifecycles. No container runs on it, so the
# agents of the sample hive run here as local processes (hack/run-agents starts the real
# hive-agent binary for each Running agent pod). The nodes' pod CIDRs are loopback ones, so
# that those agents serve requests on their pods' IPs, where the gateway (a local process
# too) sends them.
# Everything lives in .cluster/.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${ROOT}/.cluster"
NAME="${DEMO_CLUSTER_NAME:-hive-demo}"
NAMESPACE=default
export KWOK_WORKDIR="${STATE}/kwok"
KUBECONFIG_FILE="${STATE}/kubeconfig"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

stop_pid() {
	local file="$1"
	if [[ -f "${file}" ]]; then
		kill "$(cat "${file}")" 2>/dev/null || true
		rm -f "${file}"
	fi
}

down() {
	stop_pid "${STATE}/agents.pid"
	stop_pid "${STATE}/gateway.pid"
	stop_pid "${STATE}/manager.pid"
	local kwok_dir
	kwok_dir="$("${ROOT}/hack/setup-envtest.sh" print-kwok-dir)"
	if [[ -x "${kwok_dir}/kwokctl" ]]; then
		"${kwok_dir}/kwokctl" delete cluster --name "${NAME}" >/dev/null 2>&1 || true
	fi
	rm -rf "${STATE}"
	say "demo removed"
}

up() {
	if [[ -f "${STATE}/manager.pid" ]]; then
		say "a demo is already running; 'make demo-down' removes it first"
		exit 1
	fi
	say "providing the control-plane binaries (built from Go modules on the first run: about 20 minutes; cached after)"
	local k8s_dir kwok_dir
	k8s_dir="$("${ROOT}/hack/setup-envtest.sh" cluster)"
	kwok_dir="$("${ROOT}/hack/setup-envtest.sh" print-kwok-dir)"
	mkdir -p "${STATE}" "${ROOT}/bin"

	say "building the operator, the reference agent, the gateway, the plugin and the local agent runner"
	(cd "${ROOT}" && go build -o bin/manager ./cmd/manager && go build -o bin/hive-agent ./cmd/hive-agent &&
		go build -o bin/hive-gateway ./cmd/hive-gateway && go build -o bin/kubectl-hive ./cmd/kubectl-hive &&
		go build -o bin/run-agents ./hack/run-agents)

	say "starting the simulated cluster ${NAME}"
	"${kwok_dir}/kwokctl" create cluster --name "${NAME}" --runtime binary \
		--etcd-binary "${k8s_dir}/etcd" \
		--kube-apiserver-binary "${k8s_dir}/kube-apiserver" \
		--kube-controller-manager-binary "${k8s_dir}/kube-controller-manager" \
		--kube-scheduler-binary "${k8s_dir}/kube-scheduler" \
		--kwok-controller-binary "${kwok_dir}/kwok" >"${STATE}/kwokctl.log" 2>&1
	"${kwok_dir}/kwokctl" get kubeconfig --name "${NAME}" >"${KUBECONFIG_FILE}"
	export KUBECONFIG="${KUBECONFIG_FILE}"
	# Pods get addresses of the nodes' pod CIDRs, here loopback ones (127.1.0.0/24, 127.1.1.0/24,
	# ...), on which their agents, local processes, serve requests.
	"${kwok_dir}/kwokctl" scale node --name "${NAME}" --replicas 3 --param '.podCIDRs=["127.1.0.0/24"]' >>"${STATE}/kwokctl.log" 2>&1
	until kubectl get --raw /readyz >/dev/null 2>&1; do sleep 0.5; done

	say "installing the CRDs and the agents' admission policy"
	kubectl apply --server-side -f "${ROOT}/config/crd/bases" >/dev/null
	# kubectl wait fails at once on a CRD whose status the API server has not written yet.
	local tries=0
	until kubectl wait --for condition=established --timeout=60s crd/hives.swarm.aihub.dev crd/tasks.swarm.aihub.dev >/dev/null 2>&1; do
		if ((++tries >= 60)); then
			kubectl wait --for condition=established --timeout=1s crd/hives.swarm.aihub.dev crd/tasks.swarm.aihub.dev
			exit 1
		fi
		sleep 0.5
	done
	kubectl apply --server-side -f "${ROOT}/config/admission/policy.yaml" >/dev/null

	say "running the gateway (logs: .cluster/gateway.log)"
	# The operator finds the gateway in its Service's EndpointSlice, which may not hold a
	# loopback address: the gateway's load is served on an address of this machine's.
	local host_ip gateway_flags=()
	host_ip="$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$' | grep -v '^127\.' | head -1 || true)"
	"${ROOT}/bin/hive-gateway" --listen=127.0.0.1:18000 --health-probe-bind-address=127.0.0.1:18083 \
		--metrics-bind-address="${host_ip:-127.0.0.1}:18082" --namespaces="${NAMESPACE}" >"${STATE}/gateway.log" 2>&1 &
	echo $! >"${STATE}/gateway.pid"
	if [[ -n "${host_ip}" ]]; then
		kubectl apply --server-side -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: hive-gateway, namespace: ${NAMESPACE}}
spec:
  ports: [{name: metrics, port: 18082}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: hive-gateway-local
  namespace: ${NAMESPACE}
  labels: {kubernetes.io/service-name: hive-gateway}
addressType: IPv4
endpoints: [{addresses: ["${host_ip}"], conditions: {ready: true}}]
ports: [{name: metrics, port: 18082}]
EOF
		gateway_flags=(--gateway-service="${NAMESPACE}/hive-gateway")
	else
		say "no address other than loopback here: hives will not scale on their requests"
	fi

	say "running the operator (logs: .cluster/manager.log)"
	"${ROOT}/bin/manager" --leader-elect=false --metrics-secure=false --metrics-bind-address=127.0.0.1:18080 \
		--health-probe-bind-address=127.0.0.1:18081 "${gateway_flags[@]}" >"${STATE}/manager.log" 2>&1 &
	echo $! >"${STATE}/manager.pid"
	until curl -fs http://127.0.0.1:18081/readyz >/dev/null 2>&1; do
		if ! kill -0 "$(cat "${STATE}/manager.pid")" 2>/dev/null; then
			say "the operator stopped; see .cluster/manager.log"
			tail -5 "${STATE}/manager.log" >&2
			exit 1
		fi
		sleep 0.5
	done

	say "running the agents of Running agent pods as local processes (logs: .cluster/agent-*.log)"
	"${ROOT}/bin/run-agents" --agent-binary "${ROOT}/bin/hive-agent" --namespace "${NAMESPACE}" --log-dir "${STATE}" \
		>"${STATE}/agents.log" 2>&1 &
	echo $! >"${STATE}/agents.pid"

	say "applying the sample hive and tasks"
	kubectl apply -n "${NAMESPACE}" -f "${ROOT}/config/samples/swarm_v1alpha1_hive.yaml" -f "${ROOT}/config/samples/swarm_v1alpha1_tasks.yaml"
	for task in hello urgent follow-up; do
		kubectl wait -n "${NAMESPACE}" --for=jsonpath='{.status.phase}'=Succeeded --timeout=120s "task/${task}" >/dev/null
	done

	say "kubectl get hives,tasks"
	kubectl get -n "${NAMESPACE}" hives,tasks -o wide
	say "results"
	kubectl get -n "${NAMESPACE}" tasks -o custom-columns='TASK:.metadata.name,PHASE:.status.phase,RESULT:.status.result,MESSAGE:.status.conditions[?(@.type=="Scheduled")].message'
	say "a request through the gateway: kubectl hive request echo --input 'hello, gateway'"
	local answer=""
	for _ in $(seq 1 100); do
		if answer="$("${ROOT}/bin/kubectl-hive" request echo -n "${NAMESPACE}" --input 'hello, gateway' \
			--gateway-url http://127.0.0.1:18000 -v 2>"${STATE}/request.err")"; then
			break
		fi
		answer=""
		sleep 0.2
	done
	if [[ -z "${answer}" ]]; then
		say "the gateway did not answer; see .cluster/gateway.log"
		cat "${STATE}/request.err" >&2
		exit 1
	fi
	echo "${answer}"
	cat "${STATE}/request.err" >&2

	if [[ ${#gateway_flags[@]} -gt 0 ]]; then
		say "a request to a hive at zero agents: the gateway parks it, the operator starts an agent"
		kubectl apply -n "${NAMESPACE}" -f - >/dev/null <<EOF
apiVersion: swarm.aihub.dev/v1alpha1
kind: Hive
metadata: {name: cold}
spec:
  replicas: 0
  autoscaling: {minReplicas: 0, maxReplicas: 3, idleTimeout: 1m}
  serving: {concurrency: 8}
  template:
    spec:
      containers:
        - name: agent
          image: ghcr.io/aihub-dev/hive-agent:v0.1.0
          args: ["--mode=echo"]
EOF
		local start end
		start="$(date +%s%N)"
		"${ROOT}/bin/kubectl-hive" request cold -n "${NAMESPACE}" --input 'wake up' --gateway-url http://127.0.0.1:18000
		end="$(date +%s%N)"
		echo
		say "answered in $(((end - start) / 1000000)) ms from zero agents; kubectl get hive cold: $(kubectl get hive cold -n "${NAMESPACE}" -o jsonpath='{.status.readySummary}')"
	fi
	cat >&2 <<EOF

The demo is running. Keep using it with:

  export KUBECONFIG=${KUBECONFIG_FILE}
  kubectl get hives,tasks
  bin/kubectl-hive request echo --input hi --gateway-url http://127.0.0.1:18000
  curl -d hi http://127.0.0.1:18000/v1/namespaces/${NAMESPACE}/hives/echo/requests
  kubectl scale hive/echo --replicas=4
  kubectl create -f - <<<'{"apiVersion":"swarm.aihub.dev/v1alpha1","kind":"Task","metadata":{"generateName":"hi-"},"spec":{"hive":"echo","input":"hi"}}'

(count-words waits for the hive "summarizer", which the demo does not create: its
Scheduled condition says so.) Remove everything with: make demo-down
EOF
}

case "${1:-up}" in
up) up ;;
down) down ;;
*)
	echo "usage: $0 up|down" >&2
	exit 2
	;;
esac
