# The DNS benchmark's chart, written by bench/dns/run:
#   gnuplot -e "datafile='plot.tsv'; outfile='dns-qps.png'; fixedqps='N'; setup='...'" plot.gp
# datafile: one row per target: label, qps, p99 ms at full load, p99 ms at the
# fixed rate.
set terminal pngcairo size 1500,480 font "sans,11" noenhanced
set output outfile
set datafile separator "\t"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.7
set grid ytics
unset key
set yrange [0:*]
set offsets 0, 0, graph 0.1, 0
set xtics nomirror scale 0

set multiplot layout 1,3 title sprintf("DNS benchmark: dnsperf against each server (medians); %s", setup)

set title "queries per second, no rate limit (higher is better)"
set ylabel "qps"
set format y "%.0f"
plot datafile using 2:xtic(1) lc rgb "#4C72B0", \
     '' using 0:2:(sprintf("%.0f", $2)) with labels offset 0,0.8

set title "p99 latency at full load (lower is better)"
set ylabel "ms"
set format y "%.2f"
plot datafile using 3:xtic(1) lc rgb "#DD8452", \
     '' using 0:3:(sprintf("%.2f", $3)) with labels offset 0,0.8

set title sprintf("p99 latency at a fixed %s qps (lower is better)", fixedqps)
set format y "%.3f"
plot datafile using 4:xtic(1) lc rgb "#55A868", \
     '' using 0:4:(sprintf("%.3f", $4)) with labels offset 0,0.8

unset multiplot
