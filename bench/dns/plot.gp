# The DNS benchmark's chart, written by bench/dns/run:
#   gnuplot -e "datafile='plot.tsv'; outfile='dns-qps.png'; targets='CoreDNS kubedisco ceiling'; setup='...'" plot.gp
# datafile (summarize.awk): a header row, then one row per query class: the
# class, then three panels' columns (qps; p99 ms at full load; p99 ms at the
# class's fixed rate), each one column per target, named in the header as in
# `targets` (CoreDNS, kubedisco, the baseline kubedisco when given, the
# ceiling); "-" where a class did not measure a target (the baseline and the
# ceiling run with the headless class only).
set terminal pngcairo size 1650,560 font "sans,11" noenhanced
set output outfile
set datafile separator "\t"
set datafile missing "-"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key top left horizontal autotitle columnheader
set yrange [0:*]
set offsets 0, 0, graph 0.25, 0
set xtics nomirror scale 0 font ",10"

ntargets = words(targets)
color(name) = name eq "CoreDNS" ? 0x4C72B0 : name eq "kubedisco" ? 0xDD8452 : name eq "baseline" ? 0xC44E52 : 0x8C8C8C
# Column of target j (1..ntargets) in panel p (1..3).
col(p, j) = 1 + (p - 1) * ntargets + j
# Bar j of cluster $0: clustered histograms of n columns and gap 1 put it at
# $0 + (j - 1 - (n - 1) / 2) / (n + 1).
x(j) = column(0) + (j - 1 - (ntargets - 1) / 2.0) / (ntargets + 1.0)

set multiplot layout 1,3 title sprintf("DNS benchmark per query class: dnsperf against each server (medians); %s", setup)

set title "queries per second, no rate limit (higher is better)"
set ylabel "qps"
set format y "%.0f"
plot for [j=1:ntargets] datafile using col(1, j):xtic(1) lc rgb color(word(targets, j)), \
     for [j=1:ntargets] datafile using (x(j)):col(1, j):(sprintf("%.0f", column(col(1, j)))) \
         with labels rotate by 90 left offset 0,0.4 font ",8" notitle

unset key
set title "p99 latency at full load (lower is better)"
set ylabel "ms"
set format y "%.2f"
plot for [j=1:ntargets] datafile using col(2, j):xtic(1) lc rgb color(word(targets, j)), \
     for [j=1:ntargets] datafile using (x(j)):col(2, j):(sprintf("%.2f", column(col(2, j)))) \
         with labels rotate by 90 left offset 0,0.4 font ",8" notitle

set title "p99 latency at each class's fixed rate (lower is better)"
set format y "%.3f"
plot for [j=1:ntargets] datafile using col(3, j):xtic(1) lc rgb color(word(targets, j)), \
     for [j=1:ntargets] datafile using (x(j)):col(3, j):(sprintf("%.3f", column(col(3, j)))) \
         with labels rotate by 90 left offset 0,0.4 font ",8" notitle

unset multiplot
