# Summarises bench/dns/run's per-run results (dns-results.tsv) into the
# Markdown tables of dns-summary.md (stdout) and the plot's data (file `plot`).
#
#   awk -F'\t' -v max_other=25 -v fifo=0 -v plot=plot.tsv \
#       -v classes="headless clusterip" -v fixed="headless=14000 clusterip=15000" \
#       -v queries="headless=2200 clusterip=1000" -f summarize.awk dns-results.tsv
#
# Columns: 1 class, 2 phase (max|fixed), 3 round, 4 target, 5 qps, 6 avg_ms,
# 7 p50_ms, 8 p99_ms, 9 p999_ms, 10 lost, 11 server_cpu_pct,
# 12 server_cpu_us_per_query, 13 dnsperf_cpu_pct, 14 other_cpu_pct, 15 load1.
#
# classes: the measured classes in the order to show them; fixed and queries:
# class=value pairs (the fixed rate; the query file's entries).
#
# A class's round is clean when every run of that class in it saw at most
# `max_other` % of one CPU used by the rest of the machine. Each figure is its
# own median over the class's clean rounds (over all rounds when none is
# clean, or with fifo=1, when the measured processes ran as SCHED_FIFO);
# ratios are of median qps.

NR == 1 { next }
{
	rounds[$1, $3] = 1
	if (!fifo && $14 + 0 > max_other + 0) dirty[$1, $3] = 1
	key = $1 SUBSEP $2 SUBSEP $4
	if (!(key in n)) { first[key, 1] = $1; first[key, 2] = $2; first[key, 3] = "median"; first[key, 4] = $4 }
	n[key]++
	row[key, n[key]] = $0
	round_of[key, n[key]] = $3
}

# The median of column `col` of `key`'s runs in its class's chosen rounds
# (the mean of the two middle values for an even count).
function median(key, col,   i, j, m, t, v, f, class) {
	m = 0
	class = first[key, 1]
	for (i = 1; i <= n[key]; i++) {
		if (use_all[class] || !((class, round_of[key, i]) in dirty)) {
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
	for (c = 1; c <= 4; c++) out = out (c > 1 ? "\t" : "") first[key, c]
	for (c = 5; c <= 15; c++) out = out "\t" median(key, c)
	return out
}

function pairs(text, into,   i, m, kv, p) {
	m = split(text, p, " ")
	for (i = 1; i <= m; i++) { split(p[i], kv, "="); into[kv[1]] = kv[2] }
}

END {
	nclasses = split(classes, class_list, " ")
	pairs(fixed, fixed_of)
	pairs(queries, queries_of)
	ntargets = split("coredns kubedisco baseline ceiling", order, " ")
	name["coredns"] = "CoreDNS"
	name["kubedisco"] = "kubedisco"
	name["baseline"] = "kubedisco baseline (BENCH_DNS_BASELINE_BIN)"
	name["ceiling"] = "ceiling (fixed-answer responder)"
	split("CoreDNS kubedisco baseline ceiling", labels, " ")
	for (i = 1; i <= ntargets; i++) label[order[i]] = labels[i]
	describe["headless"] = "A, SRV and NXDOMAIN below headless Services"
	describe["clusterip"] = "A of Services with a cluster IP"
	describe["searchpath"] = "search-path expansions of outside names, A and AAAA: NXDOMAIN"
	describe["externalname"] = "A of ExternalName Services with an in-zone target: CNAME + addresses"

	for (k = 1; k <= nclasses; k++) {
		c = class_list[k]
		total[c] = 0; clean[c] = 0
		for (rc in rounds) {
			split(rc, parts, SUBSEP)
			if (parts[1] != c) continue
			total[c]++
			if (!((c, parts[2]) in dirty)) clean[c]++
		}
		use_all[c] = (clean[c] == 0)
		for (i = 1; i <= ntargets; i++) {
			t = order[i]
			if (!((c, "max", t) in n)) continue
			has[c, t] = 1
			full[c, t] = median_row(c SUBSEP "max" SUBSEP t)
			slow[c, t] = median_row(c SUBSEP "fixed" SUBSEP t)
			split(full[c, t], f, "\t")
			qps[c, t] = f[5]
			p99[c, t] = f[8]
			split(slow[c, t], f, "\t")
			p99_fixed[c, t] = f[8]
		}
		if (fifo) rounds_used[c] = sprintf("all %d (SCHED_FIFO)", total[c])
		else if (use_all[c]) rounds_used[c] = sprintf("none clean: all %d", total[c])
		else rounds_used[c] = sprintf("%d of %d", clean[c], total[c])
	}

	if (fifo)
		print "Servers and dnsperf ran as SCHED_FIFO: the rest of the machine ran only while they waited, so every round counts."
	else
		printf "Per class, medians over its clean rounds (clean: the rest of the machine used at most %d%% of a CPU in each of the class's runs in that round; all rounds when none is).\n", max_other
	print ""
	print "| class | queries | rounds used | CoreDNS qps | kubedisco qps | × CoreDNS | p99 ms, full speed: CoreDNS / kubedisco | fixed qps | p99 ms, fixed rate: CoreDNS / kubedisco |"
	print "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
	for (k = 1; k <= nclasses; k++) {
		c = class_list[k]
		printf "| %s | %s | %s | %.0f | %.0f | %.2f× | %.3f / %.3f | %s | %.3f / %.3f |\n",
			c, queries_of[c], rounds_used[c], qps[c, "coredns"], qps[c, "kubedisco"],
			qps[c, "kubedisco"] / qps[c, "coredns"], p99[c, "coredns"], p99[c, "kubedisco"],
			fixed_of[c], p99_fixed[c, "coredns"], p99_fixed[c, "kubedisco"]
	}
	for (k = 1; k <= nclasses; k++) {
		c = class_list[k]
		if (!((c, "baseline") in has)) continue
		printf "\n%s, kubedisco against the baseline binary in the same run: %.0f against %.0f qps (%.2f×); p99 at full speed %.3f against %.3f ms, at the fixed rate %.3f against %.3f ms.\n",
			c, qps[c, "kubedisco"], qps[c, "baseline"], qps[c, "kubedisco"] / qps[c, "baseline"],
			p99[c, "kubedisco"], p99[c, "baseline"], p99_fixed[c, "kubedisco"], p99_fixed[c, "baseline"]
	}

	for (k = 1; k <= nclasses; k++) {
		c = class_list[k]
		ceiling = ((c, "ceiling") in has)
		print ""
		printf "### %s: %s\n\n", c, describe[c]
		print "Full speed (no rate limit), medians:"
		print ""
		if (ceiling) {
			print "| target | qps | × CoreDNS | % of ceiling | avg ms | p50 ms | p99 ms | p99.9 ms | lost | server CPU | server CPU µs/query | dnsperf CPU | other CPU |"
			print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
		} else {
			print "| target | qps | × CoreDNS | avg ms | p50 ms | p99 ms | p99.9 ms | lost | server CPU | server CPU µs/query | dnsperf CPU | other CPU |"
			print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
		}
		for (i = 1; i <= ntargets; i++) {
			t = order[i]
			if (!((c, t) in has)) continue
			split(full[c, t], f, "\t")
			printf "| %s | %.0f | %.2f× | ", name[t], f[5], f[5] / qps[c, "coredns"]
			if (ceiling) printf "%.0f%% | ", 100 * f[5] / qps[c, "ceiling"]
			printf "%.3f | %.3f | %.3f | %.3f | %.0f | %.0f%% | %.2f | %.0f%% | %.0f%% |\n",
				f[6], f[7], f[8], f[9], f[10], f[11], f[12], f[13], f[14]
		}
		print ""
		printf "At a fixed %s qps (the same for all targets), medians:\n\n", fixed_of[c]
		print "| target | qps | avg ms | p50 ms | p99 ms | p99.9 ms | lost | server CPU | server CPU µs/query | dnsperf CPU | other CPU |"
		print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
		for (i = 1; i <= ntargets; i++) {
			t = order[i]
			if (!((c, t) in has)) continue
			split(slow[c, t], f, "\t")
			printf "| %s | %.0f | %.3f | %.3f | %.3f | %.3f | %.0f | %.0f%% | %.2f | %.0f%% | %.0f%% |\n",
				name[t], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12], f[13], f[14]
		}
	}

	# The plot's data: a header row, then one row per class: the class, then
	# per panel (qps, p99 at full speed, p99 at the fixed rate) one column per
	# target measured on any class, "-" where a class did not measure it.
	m = 0
	for (i = 1; i <= ntargets; i++) {
		for (k = 1; k <= nclasses; k++) if ((class_list[k], order[i]) in has) { shown[++m] = order[i]; break }
	}
	line = "class"
	for (panel = 1; panel <= 3; panel++) for (i = 1; i <= m; i++) line = line "\t" label[shown[i]]
	print line > plot
	for (k = 1; k <= nclasses; k++) {
		c = class_list[k]
		line = c
		for (i = 1; i <= m; i++) line = line "\t" (((c, shown[i]) in has) ? qps[c, shown[i]] : "-")
		for (i = 1; i <= m; i++) line = line "\t" (((c, shown[i]) in has) ? p99[c, shown[i]] : "-")
		for (i = 1; i <= m; i++) line = line "\t" (((c, shown[i]) in has) ? p99_fixed[c, shown[i]] : "-")
		print line > plot
	}
}
