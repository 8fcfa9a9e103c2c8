# Summarises bench/dns/run's per-run results (dns-results.tsv) into the
# Markdown tables of dns-summary.md (stdout) and the plot's data (file `plot`).
#
#   awk -F'\t' -v max_other=25 -v fixed=14000 -v fifo=0 -v plot=plot.tsv -f summarize.awk dns-results.tsv
#
# Columns: 1 phase (max|fixed), 2 round, 3 target, 4 qps, 5 avg_ms, 6 p50_ms,
# 7 p99_ms, 8 p999_ms, 9 lost, 10 server_cpu_pct, 11 server_cpu_us_per_query,
# 12 dnsperf_cpu_pct, 13 other_cpu_pct, 14 load1.
#
# A round is clean when every run in it saw at most `max_other` % of one CPU
# used by the rest of the machine. Each figure is its own median over the
# clean rounds (over all rounds when none is clean, or with fifo=1, when the
# measured processes ran as SCHED_FIFO); ratios are of median qps.

NR == 1 { next }
{
	rounds[$2] = 1
	if (!fifo && $13 + 0 > max_other + 0) dirty[$2] = 1
	key = $1 SUBSEP $3
	if (!(key in n)) { first[key, 1] = $1; first[key, 2] = "median"; first[key, 3] = $3 }
	n[key]++
	row[key, n[key]] = $0
	round_of[key, n[key]] = $2
}

# The median of column `col` of `key`'s runs in the chosen rounds (the mean
# of the two middle values for an even count).
function median(key, col,   i, j, m, t, v, f) {
	m = 0
	for (i = 1; i <= n[key]; i++) {
		if (use_all || !(round_of[key, i] in dirty)) {
			split(row[key, i], f, "\t")
			v[++m] = f[col] + 0
		}
	}
	for (i = 2; i <= m; i++)
		for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
	if (m % 2) return v[(m + 1) / 2]
	return (v[m / 2] + v[m / 2 + 1]) / 2
}

# A row like the input's, every column the median over the chosen rounds.
function median_row(key,   c, out) {
	out = ""
	for (c = 1; c <= 3; c++) out = out (c > 1 ? "\t" : "") first[key, c]
	for (c = 4; c <= 14; c++) out = out "\t" median(key, c)
	return out
}

END {
	total = 0
	clean = 0
	for (r in rounds) {
		total++
		if (!(r in dirty)) clean++
	}
	use_all = (clean == 0)
	split("coredns kubedisco ceiling", order, " ")
	name["coredns"] = "CoreDNS"
	name["kubedisco"] = "kubedisco"
	name["ceiling"] = "ceiling (fixed-answer responder)"
	label["coredns"] = "CoreDNS"
	label["kubedisco"] = "kubedisco"
	label["ceiling"] = "ceiling"
	for (i = 1; i <= 3; i++) {
		t = order[i]
		full[t] = median_row("max" SUBSEP t)
		slow[t] = median_row("fixed" SUBSEP t)
		split(full[t], f, "\t")
		qps[t] = f[4]
	}

	if (fifo)
		printf "Servers and dnsperf ran as SCHED_FIFO: the rest of the machine ran only while they waited, so every round counts. Medians over all %d round(s).\n\n", total
	else if (use_all)
		printf "No round was clean (the rest of the machine used more than %d%% of a CPU in some run of every round): medians over all %d round(s).\n\n", max_other, total
	else
		printf "Medians over the %d clean round(s) of %d (clean: the rest of the machine used at most %d%% of a CPU in every run of the round).\n\n", clean, total, max_other

	print "Full speed (no rate limit), medians:"
	print ""
	print "| target | qps | × CoreDNS | % of ceiling | avg ms | p50 ms | p99 ms | p99.9 ms | lost | server CPU | server CPU µs/query | dnsperf CPU | other CPU |"
	print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	for (i = 1; i <= 3; i++) {
		t = order[i]
		split(full[t], f, "\t")
		printf "| %s | %.0f | %.2f× | %.0f%% | %.3f | %.3f | %.3f | %.3f | %.0f | %.0f%% | %.2f | %.0f%% | %.0f%% |\n",
			name[t], f[4], f[4] / qps["coredns"], 100 * f[4] / qps["ceiling"],
			f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12], f[13]
	}
	print ""
	printf "At a fixed %d qps (the same for all three), medians:\n\n", fixed
	print "| target | qps | avg ms | p50 ms | p99 ms | p99.9 ms | lost | server CPU | server CPU µs/query | dnsperf CPU | other CPU |"
	print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	for (i = 1; i <= 3; i++) {
		t = order[i]
		split(slow[t], f, "\t")
		printf "| %s | %.0f | %.3f | %.3f | %.3f | %.3f | %.0f | %.0f%% | %.2f | %.0f%% | %.0f%% |\n",
			name[t], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12], f[13]
	}

	for (i = 1; i <= 3; i++) {
		t = order[i]
		split(full[t], f, "\t")
		split(slow[t], g, "\t")
		printf "%s\t%s\t%s\t%s\n", label[t], f[4], f[7], g[7] > plot
	}
}
