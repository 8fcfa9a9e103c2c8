# Resident memory after sync against endpoints, kubedisco and CoreDNS: the
# median over the rounds, bars from min to max, one line per server and
# Service count (memory-median.tsv, written by bench/scale/run).
# gnuplot -e "datafile='memory-median.tsv'; outfile='memory.png'; services='1000 10000'" memory.gp
set terminal pngcairo size 900,560 noenhanced
set output outfile
set datafile separator "\t"
set title "Resident memory after sync (VmRSS; median, bars min-max over rounds)"
set xlabel "endpoints"
set ylabel "MiB"
set logscale x
set key bottom right
set grid
set yrange [0:*]
set offsets graph 0.05, graph 0.05, graph 0.1, 0
# One series per server and Service count; rows of other series are NaN.
kd(s) = strcol(4) eq "kubedisco" && $1 == s ? $3 : NaN
cd(s) = strcol(4) eq "coredns" && $1 == s ? $3 : NaN
plot for [k = 1:words(services)] datafile using (kd(word(services, k) + 0)):9:10:11 skip 1 \
         with yerrorlines lc rgb "#1f77b4" dt k pt 7 ps 1.3 lw 2 title sprintf("kubedisco, %s Services", word(services, k)), \
     for [k = 1:words(services)] datafile using (cd(word(services, k) + 0)):9:10:11 skip 1 \
         with yerrorlines lc rgb "#d62728" dt k pt 5 ps 1.3 lw 2 title sprintf("CoreDNS, %s Services", word(services, k))
