# Propagation latency CDF: watch stream, kubedisco DNS, CoreDNS DNS.
# gnuplot -e "datafile='propagation.tsv'; outfile='propagation.png'" propagation.gp
set terminal pngcairo size 900,560 noenhanced
set output outfile
set datafile separator "\t"
set title "Propagation: EndpointSlice write acknowledged -> change visible"
set xlabel "ms after the API server acknowledged the write"
set ylabel "fraction of changes"
set key bottom right
set grid
set yrange [0:1]
stats datafile using 1 skip 1 nooutput
n = STATS_records
plot datafile using 5:(1.0/n) skip 1 smooth cnormal with lines lw 2 title "kubedisco watch stream", \
     datafile using 6:(1.0/n) skip 1 smooth cnormal with lines lw 2 title "kubedisco DNS", \
     datafile using 7:(1.0/n) skip 1 smooth cnormal with lines lw 2 title "CoreDNS DNS"
