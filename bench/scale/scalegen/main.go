// Command scalegen writes headless Services and their EndpointSlices through
// a real API server, churns them at a given rate, and measures how long a
// change takes to show up in kubedisco's watch stream and in DNS answers.
//
//	scalegen load -services N -endpoints M      create or update to N × M (100 endpoints per slice)
//	scalegen churn -services N -rate R -duration D
//	scalegen propagate -services N -changes C -kd-http ADDR -dns NAME=ADDR...
//	scalegen sizes -services N                  bytes of one watch event per object kind
//
// Services are svc-<i> in namespaces scale-<i % namespaces>; slice <s> of
// Service i is svc-<i>-<s>; endpoint j of Service i has the address
// 10.<n>>16>.<n>>8&255>.<n&255> with n = i*256 + j + 1. Addresses written by
// propagate and churn come from 10.200.0.0/13 and never collide with those.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const perSlice = 100

func usage() {
	fmt.Fprintln(os.Stderr, "usage: scalegen load|churn|propagate|sizes [flags] (-h for flags)")
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "load":
		err = load(os.Args[2:])
	case "churn":
		err = churn(os.Args[2:])
	case "propagate":
		err = propagate(os.Args[2:])
	case "sizes":
		err = sizes(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "scalegen:", err)
		os.Exit(1)
	}
}

func client() (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		return nil, err
	}
	cfg.QPS = 5000
	cfg.Burst = 10000
	return kubernetes.NewForConfig(cfg)
}

func nsOf(i, namespaces int) string { return fmt.Sprintf("scale-%d", i%namespaces) }

func endpointIP(i, j int) string {
	n := uint32(i*256 + j + 1)
	return fmt.Sprintf("10.%d.%d.%d", n>>16, n>>8&255, n&255)
}

// probeIP: addresses for propagate and churn, 10.200.0.0 upwards.
func probeIP(k int) string {
	n := uint32(200<<16 + k + 1)
	return fmt.Sprintf("10.%d.%d.%d", n>>16, n>>8&255, n&255)
}

var slicePorts = func() []discoveryv1.EndpointPort {
	name, port, proto := "http", int32(8080), corev1.ProtocolTCP
	return []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}}
}()

func service(i, namespaces int) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d", i), Namespace: nsOf(i, namespaces)},
		Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone,
			Ports:     []corev1.ServicePort{{Name: "http", Port: 8080, Protocol: corev1.ProtocolTCP}},
		},
	}
}

func slice(i, s, endpoints, namespaces int) *discoveryv1.EndpointSlice {
	ready := true
	var eps []discoveryv1.Endpoint
	for j := s * perSlice; j < endpoints && j < (s+1)*perSlice; j++ {
		eps = append(eps, discoveryv1.Endpoint{
			Addresses:  []string{endpointIP(i, j)},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		})
	}
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:      fmt.Sprintf("svc-%d-%d", i, s),
			Namespace: nsOf(i, namespaces),
			Labels: map[string]string{
				discoveryv1.LabelServiceName: fmt.Sprintf("svc-%d", i),
				discoveryv1.LabelManagedBy:   "scalegen",
			},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       slicePorts,
		Endpoints:   eps,
	}
}

// parallel runs f(0..n-1) on workers goroutines; the first error wins.
func parallel(n, workers int, f func(int) error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n))
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

func load(args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	services := fs.Int("services", 1000, "Services")
	endpoints := fs.Int("endpoints", 10, "endpoints per Service (at most 255)")
	namespaces := fs.Int("namespaces", 10, "namespaces")
	workers := fs.Int("workers", 16, "parallel writers")
	_ = fs.Parse(args)
	if *endpoints < 1 || *endpoints > 255 || *services < 1 || *namespaces < 1 {
		return errors.New("load: need 1 <= endpoints <= 255, services >= 1, namespaces >= 1")
	}
	c, err := client()
	if err != nil {
		return err
	}
	ctx := context.Background()
	start := time.Now()
	for k := 0; k < *namespaces && k < *services; k++ {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("scale-%d", k)}}
		if _, err := c.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	slices := (*endpoints + perSlice - 1) / perSlice
	var created, updated atomic.Int64
	err = parallel(*services, *workers, func(i int) error {
		svc := service(i, *namespaces)
		if _, err := c.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		for s := 0; s < slices; s++ {
			want := slice(i, s, *endpoints, *namespaces)
			api := c.DiscoveryV1().EndpointSlices(want.Namespace)
			_, err := api.Create(ctx, want, metav1.CreateOptions{})
			if err == nil {
				created.Add(1)
				continue
			}
			if !apierrors.IsAlreadyExists(err) {
				return err
			}
			// Exists: replace its endpoints (a strategic merge patch on
			// EndpointSlice endpoints replaces the list).
			patch, _ := json.Marshal(map[string]any{"endpoints": want.Endpoints})
			if _, err := api.Patch(ctx, want.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
				return err
			}
			updated.Add(1)
		}
		return nil
	})
	if err != nil {
		return err
	}
	el := time.Since(start).Seconds()
	objs := float64(created.Load() + updated.Load())
	fmt.Printf("services=%d endpoints_per_service=%d slices_created=%d slices_updated=%d seconds=%.2f slices_per_second=%.0f\n",
		*services, *endpoints, created.Load(), updated.Load(), el, objs/el)
	return nil
}

// churn: JSON patches that flip endpoint 0 of slice 0 of Service k % N
// between ready and not ready, spread round-robin, at a fixed rate.
func churn(args []string) error {
	fs := flag.NewFlagSet("churn", flag.ExitOnError)
	services := fs.Int("services", 1000, "Services to spread updates over")
	namespaces := fs.Int("namespaces", 10, "namespaces")
	rate := fs.Float64("rate", 100, "slice updates per second")
	duration := fs.Duration("duration", 10*time.Second, "how long")
	workers := fs.Int("workers", 8, "parallel writers")
	_ = fs.Parse(args)
	c, err := client()
	if err != nil {
		return err
	}
	total := int(*rate * duration.Seconds())
	if total < 1 {
		return errors.New("churn: rate × duration < 1")
	}
	ctx := context.Background()
	interval := time.Duration(float64(time.Second) / *rate)
	start := time.Now()
	var lateMax time.Duration
	var mu sync.Mutex
	err = parallel(total, *workers, func(k int) error {
		due := start.Add(time.Duration(k) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		} else {
			mu.Lock()
			if -d > lateMax {
				lateMax = -d
			}
			mu.Unlock()
		}
		i := k % *services
		ready := (k / *services)%2 == 1
		patch := fmt.Sprintf(`[{"op":"replace","path":"/endpoints/0/conditions/ready","value":%v}]`, ready)
		_, err := c.DiscoveryV1().EndpointSlices(nsOf(i, *namespaces)).Patch(ctx, fmt.Sprintf("svc-%d-0", i),
			types.JSONPatchType, []byte(patch), metav1.PatchOptions{})
		return err
	})
	if err != nil {
		return err
	}
	el := time.Since(start).Seconds()
	fmt.Printf("updates=%d seconds=%.2f achieved_rate=%.1f max_late_ms=%.1f\n", total, el, float64(total)/el,
		float64(lateMax.Microseconds())/1000)
	return nil
}

// dnsHas asks ADDR for the A records of name and reports whether ip is
// among them.
func dnsHas(conn *net.UDPConn, name string, ip net.IP, id uint16, buf []byte) (bool, error) {
	q := make([]byte, 12, 512)
	binary.BigEndian.PutUint16(q[0:], id)
	binary.BigEndian.PutUint16(q[2:], 0x0100) // RD
	binary.BigEndian.PutUint16(q[4:], 1)
	for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		q = append(q, byte(len(l)))
		q = append(q, l...)
	}
	q = append(q, 0, 0, 1, 0, 1)
	if _, err := conn.Write(q); err != nil {
		return false, err
	}
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return false, err
		}
		if n < 12 || binary.BigEndian.Uint16(buf) != id {
			continue // a late answer to an earlier query
		}
		// The 4 address bytes after an A record's TYPE/CLASS/TTL/RDLENGTH=4.
		pat := append([]byte{0, 1, 0, 1}, 0, 0, 0, 0, 0, 4)
		resp := buf[:n]
		for off := 0; ; {
			x := bytes.Index(resp[off:], pat[:4])
			if x < 0 {
				return false, nil
			}
			p := off + x
			if p+14 <= len(resp) && resp[p+8] == 0 && resp[p+9] == 4 && bytes.Equal(resp[p+10:p+14], ip.To4()) {
				return true, nil
			}
			off = p + 1
		}
	}
}

type target struct {
	name string
	addr string
}

func propagate(args []string) error {
	fs := flag.NewFlagSet("propagate", flag.ExitOnError)
	services := fs.Int("services", 50, "Services to spread the changes over (svc-0..N-1)")
	namespaces := fs.Int("namespaces", 10, "namespaces")
	changes := fs.Int("changes", 500, "changes")
	kdHTTP := fs.String("kd-http", "", "kubedisco HTTP address (host:port) for the watch stream")
	var dnsTargets []target
	fs.Func("dns", "NAME=HOST:PORT of a DNS server to poll (repeatable)", func(s string) error {
		n, a, ok := strings.Cut(s, "=")
		if !ok {
			return errors.New("want NAME=HOST:PORT")
		}
		dnsTargets = append(dnsTargets, target{n, a})
		return nil
	})
	timeout := fs.Duration("timeout", 10*time.Second, "give up on one change after this")
	pause := fs.Duration("pause", 20*time.Millisecond, "between changes")
	out := fs.String("out", "", "per-change TSV file")
	_ = fs.Parse(args)
	c, err := client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Watch streams: one per Service; each line is a full state. Remember
	// when each probe address first appears.
	var seenMu sync.Mutex
	seen := map[string]time.Time{}
	if *kdHTTP != "" {
		for i := 0; i < *services; i++ {
			url := fmt.Sprintf("http://%s/v1/watch/%s/svc-%d?format=ndjson", *kdHTTP, nsOf(i, *namespaces), i)
			req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			if resp.StatusCode != 200 {
				return fmt.Errorf("watch %s: %s", url, resp.Status)
			}
			go func() {
				defer resp.Body.Close()
				r := bufio.NewReaderSize(resp.Body, 1<<20)
				for {
					line, err := r.ReadBytes('\n')
					now := time.Now()
					if err != nil {
						return
					}
					// Probe addresses are "10.200.x.y" / "10.201.x.y".
					for off := 0; ; {
						x := bytes.Index(line[off:], []byte(`"10.20`))
						if x < 0 {
							break
						}
						p := off + x + 1
						e := bytes.IndexByte(line[p:], '"')
						if e < 0 {
							break
						}
						ip := string(line[p : p+e])
						seenMu.Lock()
						if _, ok := seen[ip]; !ok {
							seen[ip] = now
						}
						seenMu.Unlock()
						off = p + e
					}
				}
			}()
		}
	}
	conns := make([]*net.UDPConn, len(dnsTargets))
	for t, d := range dnsTargets {
		ua, err := net.ResolveUDPAddr("udp", d.addr)
		if err != nil {
			return err
		}
		if conns[t], err = net.DialUDP("udp", nil, ua); err != nil {
			return err
		}
	}
	f := os.Stdout
	if *out != "" {
		if f, err = os.Create(*out); err != nil {
			return err
		}
		defer f.Close()
	}
	names := []string{}
	if *kdHTTP != "" {
		names = append(names, "watch")
	}
	for _, d := range dnsTargets {
		names = append(names, d.name)
	}
	fmt.Fprintf(f, "change\tservice\tip\tack_ms\t%s\n", strings.Join(names, "_ms\t")+"_ms")
	lat := make([][]float64, len(names))
	failed := 0
	base := rand.New(rand.NewSource(time.Now().UnixNano())).Intn(1 << 18)
	for k := 0; k < *changes; k++ {
		i := k % *services
		ip := probeIP(base + k)
		patch := fmt.Sprintf(`[{"op":"replace","path":"/endpoints/0/addresses/0","value":%q}]`, ip)
		name := fmt.Sprintf("svc-%d.%s.svc.cluster.local.", i, nsOf(i, *namespaces))
		t0 := time.Now()
		if _, err := c.DiscoveryV1().EndpointSlices(nsOf(i, *namespaces)).Patch(ctx, fmt.Sprintf("svc-%d-0", i),
			types.JSONPatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			return err
		}
		ack := time.Now()
		res := make([]float64, len(names))
		got := make([]bool, len(names))
		var wg sync.WaitGroup
		col := 0
		if *kdHTTP != "" {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Since(ack) < *timeout {
					seenMu.Lock()
					t, ok := seen[ip]
					seenMu.Unlock()
					if ok {
						// May be negative: the event can arrive before the
						// write's response does.
						res[0] = float64(t.Sub(ack).Microseconds()) / 1000
						got[0] = true
						return
					}
					time.Sleep(100 * time.Microsecond)
				}
			}()
			col = 1
		}
		for t := range dnsTargets {
			wg.Add(1)
			go func(t int) {
				defer wg.Done()
				buf := make([]byte, 65536)
				id := uint16(k * 7)
				want := net.ParseIP(ip)
				for time.Since(ack) < *timeout {
					id++
					ok, err := dnsHas(conns[t], name, want, id, buf)
					if err == nil && ok {
						res[col+t] = float64(time.Since(ack).Microseconds()) / 1000
						got[col+t] = true
						return
					}
					// A bounded, tight poll: ~0.2 ms between queries.
					time.Sleep(200 * time.Microsecond)
				}
			}(t)
		}
		wg.Wait()
		line := fmt.Sprintf("%d\tsvc-%d\t%s\t%.3f", k, i, ip, float64(ack.Sub(t0).Microseconds())/1000)
		for n, v := range res {
			if !got[n] {
				line += "\tNaN"
				failed++
				continue
			}
			line += fmt.Sprintf("\t%.3f", v)
			lat[n] = append(lat[n], v)
		}
		fmt.Fprintln(f, line)
		time.Sleep(*pause)
	}
	for n, name := range names {
		v := lat[n]
		sort.Float64s(v)
		p := func(q float64) float64 {
			if len(v) == 0 {
				return -1
			}
			x := int(q*float64(len(v))+0.999999) - 1
			if x < 0 {
				x = 0
			}
			return v[x]
		}
		fmt.Printf("%s\tn=%d\tp50_ms=%.2f\tp90_ms=%.2f\tp99_ms=%.2f\tmax_ms=%.2f\n", name, len(v), p(0.5), p(0.9), p(0.99), p(1))
	}
	if failed > 0 {
		return fmt.Errorf("%d observations timed out", failed)
	}
	return nil
}

// sizes: bytes of one watch event (JSON, as kube-runtime and CoreDNS's
// client-go receive them without protobuf) for a Service and for slice 0 of
// Service 0, read back from the API server.
func sizes(args []string) error {
	fs := flag.NewFlagSet("sizes", flag.ExitOnError)
	namespaces := fs.Int("namespaces", 10, "namespaces")
	_ = fs.Parse(args)
	c, err := client()
	if err != nil {
		return err
	}
	ctx := context.Background()
	raw, err := c.DiscoveryV1().RESTClient().Get().Namespace(nsOf(0, *namespaces)).Resource("endpointslices").
		Name("svc-0-0").DoRaw(ctx)
	if err != nil {
		return err
	}
	sraw, err := c.CoreV1().RESTClient().Get().Namespace(nsOf(0, *namespaces)).Resource("services").
		Name("svc-0").DoRaw(ctx)
	if err != nil {
		return err
	}
	compact := func(b []byte) int {
		var buf bytes.Buffer
		_ = json.Compact(&buf, b)
		return buf.Len() + len(`{"type":"MODIFIED","object":}`) + 1
	}
	var es discoveryv1.EndpointSlice
	_ = json.Unmarshal(raw, &es)
	fmt.Printf("endpointslice_event_bytes=%d endpoints=%d service_event_bytes=%d\n", compact(raw), len(es.Endpoints), compact(sraw))
	return nil
}
