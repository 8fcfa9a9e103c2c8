# Shell helpers the benchmark scripts share (sourced, not run). The caller
# defines log and die, sets cache_root for build_coredns, and repo, work,
# pids and cluster_up for bench_cleanup.

# On exit: stop every process in pids (resumed first, should the run have
# stopped one), stop the run's private control plane when cluster_up is 1,
# and remove work when the run succeeded (kept, and named, when it failed).
bench_cleanup() {
	local status=$? pid
	trap - EXIT INT TERM
	for pid in "${pids[@]}"; do kill -CONT "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	if [[ $cluster_up == 1 ]]; then
		"$repo/scripts/testcluster" down >/dev/null 2>&1 || log "warning: testcluster down failed (state in $KUBEDISCO_TESTCLUSTER_DIR)"
	fi
	if [[ $status == 0 ]]; then rm -rf "$work"; else log "failed; logs and state kept in $work"; fi
	exit "$status"
}

# bench_traps: bench_cleanup at exit, also after Ctrl-C or a TERM.
bench_traps() {
	trap bench_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

# Ports of every socket on the machine (hex), from /proc/net.
used_ports() {
	cat /proc/net/tcp /proc/net/udp /proc/net/tcp6 /proc/net/udp6 2>/dev/null |
		awk 'NR > 0 && $2 ~ /:/ { split($2, a, ":"); print a[2] }'
}

# Server ports come from below the kernel's ephemeral range: a client
# (dig, dnsperf) binds a random ephemeral port, and one that happened to
# equal a server's port would, being connected to that very address, receive
# its own query back (dig: "query response not set") and report it as an
# empty answer. Seen as 1 wrong answer in 2 200 in about a third of the DNS
# cross-checks while the servers' ports could be ephemeral ones.
ephemeral_low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
((ephemeral_low > 12000)) || ephemeral_low=32768
server_port() { echo $((10000 + RANDOM % (ephemeral_low - 10000))); }

# free_port VAR: sets VAR to a free port (TCP and UDP) on 127.0.0.1, one not
# handed out before in this run (no subshell, so that the list persists).
taken_ports=" "
free_port() {
	local port hex used
	used=$(used_ports)
	while :; do
		port=$(server_port)
		hex=$(printf '%04X' "$port")
		grep -qx "$hex" <<<"$used" && continue
		[[ $taken_ports == *" $port "* ]] && continue
		taken_ports+="$port "
		printf -v "$1" '%s' "$port"
		return
	done
}

# wait_http URL SECONDS: until URL answers 200.
wait_http() {
	local url=$1 deadline=$((SECONDS + $2))
	until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

# build_coredns VERSION: sets coredns to CoreDNS VERSION's binary, built from
# its Go module once per version and cached under $cache_root/coredns; built
# aside and renamed into place (under a lock, so that concurrent runs build
# it once).
build_coredns() {
	local version=$1 dir tmp_gobin
	dir=$cache_root/coredns/$version
	coredns=$dir/coredns
	[[ -x $coredns ]] && return
	mkdir -p "$cache_root/coredns"
	if command -v flock >/dev/null; then
		exec 8>"$cache_root/coredns/.build.lock"
		flock 8
	fi
	if [[ ! -x $coredns ]]; then
		log "building CoreDNS $version (go install; once per version)"
		tmp_gobin=$(mktemp -d "$cache_root/coredns/.build-XXXXXX")
		if ! GOBIN=$tmp_gobin go install -trimpath "github.com/coredns/coredns@$version" >&2; then
			rm -rf "$tmp_gobin"
			die "building CoreDNS $version failed"
		fi
		chmod 755 "$tmp_gobin"
		rm -rf "$dir"
		mv "$tmp_gobin" "$dir"
	fi
	{ exec 8>&-; } 2>/dev/null || true
}
