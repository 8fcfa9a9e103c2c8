# Resident memory after sync against endpoints, kubedisco and CoreDNS.
# gnuplot -e "datafile='memory.tsv'; outfile='memory.png'" memory.gp
set terminal pngcairo size 900,560 noenhanced
set output outfile
set datafile separator "\t"
set title "Resident memory after sync (VmRSS)"
set xlabel "endpoints (labels: Services)"
set ylabel "MiB"
set logscale x
set key top left
set grid
set yrange [0:*]
set offsets graph 0.05, graph 0.05, graph 0.1, 0
plot datafile using (strcol(4) eq "kubedisco" ? $3 : NaN):6 skip 1 with points pt 7 ps 1.5 title "kubedisco", \
     datafile using (strcol(4) eq "coredns" ? $3 : NaN):6 skip 1 with points pt 5 ps 1.5 title "CoreDNS", \
     datafile using (strcol(4) eq "kubedisco" ? $3 : NaN):6:(sprintf("%s svc", strcol(1))) skip 1 with labels offset 4,0.8 notitle, \
     datafile using (strcol(4) eq "coredns" ? $3 : NaN):6:(sprintf("%s svc", strcol(1))) skip 1 with labels offset 4,0.8 notitle
