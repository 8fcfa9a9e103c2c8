# The --relist phase of bench/scale/run, sourced by it (its helpers, data
# points and servers; it exits when done): memory during a forced re-list.
#
# Per data point both servers watch the same data, then each round:
# steady VmRSS of both, VmHWM reset (clear_refs 5), kube-apiserver stopped,
# etcd compacted, kube-apiserver started: both servers' watches resume from
# a compacted revision, get 410 Gone and list everything again. VmRSS of
# both is sampled every 50 ms from before the stop until the window after
# the API server is back has passed and each server has re-listed; the
# peak is VmHWM at the end (the kernel's own high-water mark, which also
# sees what falls between samples).

relist_tsv=$out/relist.tsv
relist_samples=$out/relist-samples.tsv
printf 'services\tendpoints_per_service\tendpoints\ttarget\tround\tsteady_mib\tpeak_mib\tpeak_over_steady\tsampled_max_mib\tafter_mib\tpeak_over_first_steady\tload\n' >"$relist_tsv"
printf 'services\tendpoints\tround\tms_after_api_server_back\tkubedisco_rss_kib\tcoredns_rss_kib\n' >"$relist_samples"

# metric_value URL SERIES: one series' value on a Prometheus text page (0
# when absent).
metric_value() {
	curl -fsS --max-time 5 "$1" 2>/dev/null | awk -v s="$2" '$1 == s { v = $2 } END { print v + 0 }'
}
kd_restarts='kubedisco_watch_restarts_total{resource="endpointslices"}'
# CoreDNS's informers list EndpointSlices; after a restart the API server's
# counters start from zero, and with the controller-manager stopped (below)
# CoreDNS is the only client that LISTs them (kubedisco streams its list:
# a WATCH with sendInitialEvents).
apiserver_lists() {
	"$kubectl" get --raw /metrics 2>/dev/null |
		awk '/^apiserver_request_total\{/ && /resource="endpointslices"/ && /verb="LIST"/ && /code="200"/ { n += $NF } END { print n + 0 }'
}
kubectl=$("$repo/scripts/testcluster" bin-dir)/kubectl
[[ -x $kubectl ]] || die "no kubectl in the test control plane's binaries"

# sample_rss: "ms kubedisco_kib coredns_kib" every 50 ms until killed.
sample_rss() {
	while :; do
		printf '%s\t%s\t%s\n' "$(now_ms)" "$(rss_kib "$kd_pid" VmRSS)" "$(rss_kib "$cd_pid" VmRSS)"
		sleep 0.05
	done
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# relist_round ROUND: one forced re-list of both servers; two rows of
# relist.tsv and the samples.
relist_round() {
	local round=$1 l kd_steady cd_steady kd_before back deadline sampler t kd_peak cd_peak
	l=$(loadavg)
	kd_steady=$(rss_kib "$kd_pid" VmRSS)
	cd_steady=$(rss_kib "$cd_pid" VmRSS)
	# Later rounds start from what the earlier ones left: growth that
	# stays shows against the first round's steady RSS.
	if ((round == 1)); then kd_first=$kd_steady cd_first=$cd_steady; fi
	echo 5 >"/proc/$kd_pid/clear_refs"
	echo 5 >"/proc/$cd_pid/clear_refs"
	kd_before=$(metric_value "http://127.0.0.1:$kd_http/metrics" "$kd_restarts")
	sample_rss >"$work/samples" &
	sampler=$!
	pids+=("$sampler")
	"$repo/scripts/testcluster" stop kube-apiserver >/dev/null
	"$repo/scripts/testcluster" compact >&2
	"$repo/scripts/testcluster" start kube-apiserver >/dev/null
	back=$(now_ms)
	deadline=$((SECONDS + 300))
	# kubedisco: its EndpointSlice watch started over, and the re-lists
	# are swapped in (nothing stale).
	until (($(metric_value "http://127.0.0.1:$kd_http/metrics" "$kd_restarts") > kd_before)) &&
		curl -fsS --max-time 2 "$kd_ready_url" 2>/dev/null | grep -q '"stale":false'; do
		((SECONDS < deadline)) || die "kubedisco did not re-list within 300 s"
		sleep 0.1
	done
	log "  round $round: kubedisco re-listed $(($(now_ms) - back)) ms after the API server was back"
	until (($(apiserver_lists) > 0)); do
		((SECONDS < deadline)) || die "CoreDNS did not re-list within 300 s"
		sleep 0.1
	done
	log "  round $round: CoreDNS re-listed by $(($(now_ms) - back)) ms after the API server was back"
	t=$((back + ${relist_window%.*} * 1000 - $(now_ms)))
	((t <= 0)) || sleep "$(awk -v t="$t" 'BEGIN { print t / 1000 }')"
	kill "$sampler"
	wait "$sampler" 2>/dev/null || true
	alive "$kd_pid" || die "kubedisco died during the re-list"
	alive "$cd_pid" || die "CoreDNS died during the re-list"
	kd_peak=$(rss_kib "$kd_pid" VmHWM)
	cd_peak=$(rss_kib "$cd_pid" VmHWM)
	awk -v s="$svcs" -v e="$eps" -v r="$round" -v b="$back" -F'\t' \
		'NF == 3 && $2 != "" && $3 != "" { printf "%s\t%s\t%s\t%d\t%s\t%s\n", s, s * e, r, $1 - b, $2, $3 }' \
		"$work/samples" >>"$relist_samples"
	for t in kubedisco coredns; do
		local col steady first peak after
		if [[ $t == kubedisco ]]; then
			col=5 steady=$kd_steady first=$kd_first peak=$kd_peak after=$(rss_kib "$kd_pid" VmRSS)
		else
			col=6 steady=$cd_steady first=$cd_first peak=$cd_peak after=$(rss_kib "$cd_pid" VmRSS)
		fi
		awk -F'\t' -v s="$svcs" -v e="$eps" -v r="$round" -v c="$col" -v t="$t" -v st="$steady" \
			-v f="$first" -v pk="$peak" -v af="$after" -v l="$l" '
			$1 == s && $3 == r && $c > m { m = $c }
			END { printf "%s\t%s\t%s\t%s\t%s\t%.1f\t%.1f\t%.2f\t%.1f\t%.1f\t%.2f\t%s\n", s, e, s * e, t, r,
				st / 1024, pk / 1024, pk / st, m / 1024, af / 1024, pk / f, l }' "$relist_samples" >>"$relist_tsv"
		tail -1 "$relist_tsv" | awk -F'\t' '{ printf "  %-9s steady %s MiB, peak %s MiB (%sx; sampled max %s), after %s MiB; peak %sx the first steady\n", $4, $6, $7, $8, $9, $10, $11 }' >&2
	done
}

# The controller-manager also lists EndpointSlices after an API server
# restart; it has nothing to do here (the Services have no selector).
"$repo/scripts/testcluster" stop kube-controller-manager >/dev/null
for p in $points; do
	load_point "$p"
	start_kubedisco
	start_coredns
	wait_ready "$kd_ready_url" "$kd_pid" >/dev/null || { tail -20 "$work/kubedisco.log" >&2; die "kubedisco did not get ready"; }
	wait_ready "$cd_ready_url" "$cd_pid" >/dev/null || { tail -20 "$work/coredns.log" >&2; die "CoreDNS did not get ready"; }
	sleep "$settle"
	for ((round = 1; round <= rounds; round++)); do
		relist_round "$round"
		sleep "$settle"
	done
	stop_pid "$kd_pid"
	stop_pid "$cd_pid"
done

machine="$(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r)"
summary=$out/relist-summary.md
{
	echo "Memory during a forced re-list (API server stopped, etcd compacted, started: 410 Gone, full re-list);"
	echo "both servers watching, $rounds round(s) per point, one after the other on the same two processes;"
	echo "steady = VmRSS before, peak = VmHWM after clear_refs, after = VmRSS ${relist_window} s after the API server was back:"
	echo
	echo "| Services | endpoints | server | round | steady MiB | peak MiB | peak / steady | sampled max MiB | after MiB | peak / round 1 steady | load average |"
	echo "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"
	awk -F'\t' 'NR > 1 { printf "| %s | %s | %s | %s | %s | %s | **%s** | %s | %s | %s | %s |\n", $1, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 }' "$relist_tsv"
	echo
	echo "- machine: $machine"
	echo "- kubedisco $kubedisco_rev; $coredns_reported"
	echo "- the whole run took $((SECONDS - started))s; load average at the end: $(loadavg)"
} >"$summary"
if [[ $out == "$work"/* ]]; then log "summary (files not kept without --out):"; else log "summary: $summary"; fi
cat "$summary"
exit 0
