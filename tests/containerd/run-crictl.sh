#!/bin/bash
# A real containerd (Debian's 1.6) running a pod and a container through the
# berth shim, driven by crictl: runp, create, start, exec, logs, stop, rm.
#
# Everything lives under one temporary directory: containerd's root, state,
# socket and config, a docker-registry on a loopback port fed with busybox and
# berth-pause images built from this host's binaries, and the pod logs. Only
# processes this script started are stopped, by pid. Prints the shim's memory
# beside containerd-shim-runc-v2's for the same pod.
#
# usage: sudo tests/containerd/run-crictl.sh        (exit 0 = all steps passed)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
for tool in containerd crictl docker-registry skopeo runc python3; do
	if ! command -v "$tool" >/dev/null; then
		echo "SKIP: $tool is not installed" >&2
		exit 0
	fi
done
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root" >&2; exit 0; }

work=$(mktemp -d /tmp/berth-containerd.XXXXXX)
pids=()
cleanup() {
	set +e
	# Pods left by a failed step: shims outlive containerd by design, so
	# remove them while containerd still runs.
	[ -f "$work/crictl.yaml" ] && command crictl --config "$work/crictl.yaml" rmp -af >/dev/null 2>&1
	# Shims this run started carry the unique work directory in their flags.
	for pid in $(pgrep -f "containerd-shim-.*$work"); do pids+=("$pid"); done
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
	grep -o " $work[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null
	[ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
step() { echo "==> $*"; }

step "building the shim and the static pause"
(cd "$repo" && cargo build -q -p berth-shim --release -j1)
pause=$("$repo/shims/pause/build-static.sh" -q -j1 | tail -1)
mkdir -p "$work/bin"
cp "$repo/target/release/containerd-shim-berth-v2" "$work/bin/"
# A freshly written binary's page-cache pages stay dirty until written back,
# and smaps would report the shim's text as Private_Dirty.
sync

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
registry="127.0.0.1:$port"
step "docker-registry on $registry"
cat >"$work/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: $registry
log:
  level: error
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)

step "images from /bin/busybox and berth-pause"
applets=(sh cat echo sleep seq ls ps true tty id hostname)
links=()
for a in "${applets[@]}"; do links+=("bin/$a->busybox"); done
python3 "$here/oci-image.py" "$work/oci/busybox" latest '{"Env":["PATH=/bin"],"Cmd":["sh"]}' \
	"bin/busybox=/bin/busybox" "${links[@]}"
python3 "$here/oci-image.py" "$work/oci/pause" 1 '{"Entrypoint":["/pause"]}' "pause=$repo/$pause"
for _ in $(seq 50); do
	python3 -c "import urllib.request as u; u.urlopen(\"http://$registry/v2/\", timeout=1)" 2>/dev/null && break
	sleep 0.1
done
skopeo copy -q --dest-tls-verify=false "oci:$work/oci/busybox:latest" "docker://$registry/busybox:latest"
skopeo copy -q --dest-tls-verify=false "oci:$work/oci/pause:1" "docker://$registry/berth-pause:1"

step "containerd on $work/containerd.sock"
mkdir -p "$work/cni" "$work/logs"
cat >"$work/config.toml" <<TOML
version = 2
root = "$work/root"
state = "$work/state"
[grpc]
  address = "$work/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$registry/berth-pause:1"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "berth"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.berth]
      runtime_type = "io.containerd.berth.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$work/cni"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."$registry"]
    endpoint = ["http://$registry"]
TOML
start_containerd() {
	PATH="$work/bin:$PATH" containerd --config "$work/config.toml" >>"$work/containerd.log" 2>&1 &
	containerd_pid=$!
	pids+=("$containerd_pid")
}
start_containerd
cat >"$work/crictl.yaml" <<YML
runtime-endpoint: unix://$work/containerd.sock
image-endpoint: unix://$work/containerd.sock
timeout: 30
YML
crictl() { command crictl --config "$work/crictl.yaml" "$@"; }
for _ in $(seq 100); do crictl version >/dev/null 2>&1 && break; sleep 0.1; done
crictl version

crictl pull "$registry/busybox:latest"

# shim_memory PATTERN: Rss/Pss/private of the shim processes matching PATTERN.
shim_memory() {
	for pid in $(pgrep -f "$1 .*$work"); do
		awk -v pid="$pid" -v name="$1" '
			/^Rss:/ {rss=$2} /^Pss:/ {pss=$2} /^Private_Dirty:/ {pd=$2} /^Private_Clean:/ {pc=$2}
			END {printf "    %s pid %s: Rss %d KiB, Pss %d KiB, Private_Dirty %d KiB, Private_Clean %d KiB\n", name, pid, rss, pss, pd, pc}
		' "/proc/$pid/smaps_rollup"
	done
}

# run_pod RUNTIME: the whole crictl sequence on one runtime handler.
run_pod() {
	local runtime=$1 name="pod-$1"
	cat >"$work/$name.json" <<JSON
{"metadata": {"name": "$name", "namespace": "default", "uid": "uid-$name", "attempt": 0},
 "log_directory": "$work/logs/$name",
 "linux": {"security_context": {"namespace_options": {"network": 2}}}}
JSON
	cat >"$work/$name-app.json" <<JSON
{"metadata": {"name": "app"},
 "image": {"image": "$registry/busybox:latest"},
 "command": ["sh", "-c", "i=0; while true; do echo tick \$i; i=\$((i+1)); sleep 0.2; done"],
 "log_path": "app.log",
 "linux": {}}
JSON
	step "[$runtime] crictl runp"
	pod=$(crictl runp --runtime "$runtime" "$work/$name.json")
	step "[$runtime] crictl create + start"
	ctr=$(crictl create "$pod" "$work/$name-app.json" "$work/$name.json")
	crictl start "$ctr"
	sleep 1.5
	step "[$runtime] crictl exec"
	out=$(crictl exec "$ctr" sh -c 'echo exec-ok; hostname >/dev/null; exit 0')
	[ "$out" = exec-ok ] || { echo "exec printed: $out" >&2; return 1; }
	if crictl exec "$ctr" sh -c 'exit 7'; then echo "exec exit code lost" >&2; return 1; fi
	step "[$runtime] crictl logs"
	logs=$(crictl logs "$ctr")
	echo "$logs" | head -3
	grep -q "tick 2" <<<"$logs"
	crictl ps --pod "$pod"
	step "[$runtime] containerd restarts; the shim stays and is reconnected"
	kill "$containerd_pid"
	wait "$containerd_pid" || true
	start_containerd
	for _ in $(seq 100); do crictl version >/dev/null 2>&1 && break; sleep 0.1; done
	crictl ps --pod "$pod" | grep -q Running || { echo "container lost over the restart" >&2; return 1; }
	[ "$(crictl exec "$ctr" echo still-here)" = still-here ]
	step "[$runtime] crictl stats (from the shim's Stats call)"
	stats=$(crictl stats -o json --id "$ctr")
	grep -q '"workingSetBytes"' <<<"$stats" || { echo "no memory stats: $stats" >&2; return 1; }
	crictl stats --id "$ctr" | tail -1
	step "[$runtime] memory with one pod (pause + app)"
	shim_memory "containerd-shim-$runtime-v2"
	local shims
	shims=$(pgrep -f "containerd-shim-$runtime-v2 .*$work" | wc -l)
	if [ "$shims" != 1 ]; then
		echo "the pod runs $shims $runtime shims, not one:" >&2
		for pid in $(pgrep -f "containerd-shim-$runtime-v2 .*$work"); do
			bundle=$(readlink "/proc/$pid/cwd")
			echo "  $pid in $bundle: $(grep -o '"io.kubernetes.cri.sandbox-id":"[^"]*"' "$bundle/config.json")" >&2
		done
		return 1
	fi
	step "[$runtime] an OOM-killed container is reported OOMKilled"
	cat >"$work/$name-oom.json" <<JSON
{"metadata": {"name": "hog"},
 "image": {"image": "$registry/busybox:latest"},
 "command": ["sh", "-c", "sleep 0.5; tail /dev/zero"],
 "log_path": "hog.log",
 "linux": {"resources": {"memory_limit_in_bytes": 33554432}}}
JSON
	hog=$(crictl create "$pod" "$work/$name-oom.json" "$work/$name.json")
	crictl start "$hog"
	for _ in $(seq 100); do
		crictl inspect "$hog" | grep -q '"state": "CONTAINER_EXITED"' && break
		sleep 0.1
	done
	crictl inspect "$hog" | grep -E '"(exitCode|reason)"' | tr -s ' '
	crictl inspect "$hog" | grep -q '"reason": "OOMKilled"' || { echo "hog not OOMKilled" >&2; return 1; }
	crictl rm "$hog"
	step "[$runtime] crictl stop + rm"
	crictl stop "$ctr"
	crictl inspect "$ctr" | grep -E '"(state|exitCode|reason)"' | tr -s ' '
	crictl rm "$ctr"
	crictl stopp "$pod"
	crictl rmp "$pod"
	sleep 0.5
	if pgrep -f "containerd-shim-$runtime-v2 .*$work" >/dev/null; then
		echo "the $runtime shim outlived its pod" >&2
		return 1
	fi
}

run_pod berth
run_pod runc
step "PASS: containerd ran a pod and a container through containerd-shim-berth-v2"
