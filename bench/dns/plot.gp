# The DNS benchmark's chart, written by bench/dns/run:
#   gnuplot -e "datafile='plot.tsv'; outfile='dns-qps.png'; setup='...'" plot.gp
# datafile (summarize.awk): one row per query class: class, then qps,
# p99 ms at full load and p99 ms at the class's fixed rate, each for CoreDNS,
# kubedisco and the ceiling ("-": not measured; the ceiling runs with the
# headless class only).
set terminal pngcairo size 1650,560 font "sans,11" noenhanced
set output outfile
set datafile separator "\t"
set datafile missing "-"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key top left horizontal
set yrange [0:*]
set offsets 0, 0, graph 0.25, 0
set xtics nomirror scale 0 font ",10"

# Bar j (0, 1, 2) of cluster $0: clustered histograms of 3 columns and gap 1
# put it at $0 + (j - 1) / 4.
x(j) = column(0) + (j - 1) / 4.0

set multiplot layout 1,3 title sprintf("DNS benchmark per query class: dnsperf against each server (medians); %s", setup)

set title "queries per second, no rate limit (higher is better)"
set ylabel "qps"
set format y "%.0f"
plot datafile using 2:xtic(1) title "CoreDNS" lc rgb "#4C72B0", \
     '' using 3 title "kubedisco" lc rgb "#DD8452", \
     '' using 4 title "ceiling" lc rgb "#8C8C8C", \
     '' using (x(0)):2:(sprintf("%.0f", $2)) with labels rotate by 90 left offset 0,0.4 font ",8" notitle, \
     '' using (x(1)):3:(sprintf("%.0f", $3)) with labels rotate by 90 left offset 0,0.4 font ",8" notitle, \
     '' using (x(2)):4:(sprintf("%.0f", $4)) with labels rotate by 90 left offset 0,0.4 font ",8" notitle

unset key
set title "p99 latency at full load (lower is better)"
set ylabel "ms"
set format y "%.2f"
plot datafile using 5:xtic(1) title "CoreDNS" lc rgb "#4C72B0", \
     '' using 6 title "kubedisco" lc rgb "#DD8452", \
     '' using 7 title "ceiling" lc rgb "#8C8C8C", \
     '' using (x(0)):5:(sprintf("%.2f", $5)) with labels rotate by 90 left offset 0,0.4 font ",8" notitle, \
     '' using (x(1)):6:(sprintf("%.2f", $6)) with labels rotate by 90 left offset 0,0.4 font ",8" notitle, \
     '' using (x(2)):7:(sprintf("%.2f", $7)) with labels rotate by 90 left offset 0,0.4 font ",8" notitle

set title "p99 latency at each class's fixed rate (lower is better)"
set format y "%.3f"
plot datafile using 8:xtic(1) title "CoreDNS" lc rgb "#4C72B0", \
     '' using 9 title "kubedisco" lc rgb "#DD8452", \
     '' using 10 title "ceiling" lc rgb "#8C8C8C", \
     '' using (x(0)):8:(sprintf("%.3f", $8)) with labels rotate by 90 left offset 0,0.4 font ",8" notitle, \
     '' using (x(1)):9:(sprintf("%.3f", $9)) with labels rotate by 90 left offset 0,0.4 font ",8" notitle, \
     '' using (x(2)):10:(sprintf("%.3f", $10)) with labels rotate by 90 left offset 0,0.4 font ",8" notitle

unset multiplot
