// Command scalegen writes Services (headless, or with -headless-every K only
// every K-th, the rest ClusterIP) and their EndpointSlices through
// a real API server, churns them at a given rate, and measures how long a
// change takes to show up in kubedisco's watch stream and in DNS answers.
//
//	scalegen load -services N -endpoints M      converge to exactly N × M (100 endpoints per slice)
//	    [-headless-every K]                     Service i headless iff i % K == 0 (default 1: all);
//	                                            a Service's kind cannot change: load a fresh cluster
//	scalegen check -services N -endpoints M     list everything back; fail unless it is N × M
//	scalegen churn -services N -rate R -duration D
//	scalegen propagate -services N -changes C -kd-http ADDR -dns NAME=ADDR...
//	scalegen sizes                              bytes of one watch event per object kind
//
// Services are svc-<i> in namespaces scale-<i % namespaces>; slice <s> of
// Service i is svc-<i>-<s>; endpoint j of Service i has the address
// 10.<n>>16>.<n>>8&255>.<n&255> with n = i*256 + j + 1. Addresses written by
// propagate come from 10.200.0.0/13 and never collide with those.
//
// The slices look like what the EndpointSlice controller writes for the Pods
// of a Deployment: the controller's labels (managed-by, service-name,
// headless for a headless Service, the Service's own), an owner reference to the Service,
// generateName, the last-change-trigger-time annotation, and per endpoint
// ready/serving/terminating set explicitly, nodeName (node-0..node-99), zone
// (zone-a/b/c by node) and a targetRef to a Pod named like
// svc-7-5d59d67564-x2k8q with a uid. The Services have no selector, so the
// control plane's own EndpointSlice controller leaves these slices alone.
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
	"io"
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
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	perSlice = 100
	nodes    = 100
	// What the EndpointSlice controller puts in endpointslice.kubernetes.io/managed-by.
	controllerName = "endpointslice-controller.k8s.io"
)

func usage() {
	fmt.Fprintln(os.Stderr, "usage: scalegen load|check|churn|propagate|sizes [flags] (-h for flags)")
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
	case "check":
		err = check(os.Args[2:])
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

func config() (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		return nil, err
	}
	cfg.QPS = 5000
	cfg.Burst = 10000
	return cfg, nil
}

func client() (*kubernetes.Clientset, error) {
	cfg, err := config()
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// parse parses a subcommand's flags and connects to the API server.
func parse(fs *flag.FlagSet, args []string) (*kubernetes.Clientset, error) {
	_ = fs.Parse(args)
	return client()
}

// pointFlags: the data point (N Services × M endpoints in K namespaces)
// that load writes and check expects.
func pointFlags(fs *flag.FlagSet) (services, endpoints, namespaces *int) {
	return fs.Int("services", 1000, "Services"), fs.Int("endpoints", 10, "endpoints per Service (at most 255)"),
		fs.Int("namespaces", 10, "namespaces")
}

// pages calls list with Limit and each Continue token it returns until the
// last page.
func pages(list func(opts metav1.ListOptions) (cont string, err error)) error {
	opts := metav1.ListOptions{Limit: 500}
	for {
		cont, err := list(opts)
		if err != nil || cont == "" {
			return err
		}
		opts.Continue = cont
	}
}

func nsOf(i, namespaces int) string { return fmt.Sprintf("scale-%d", i%namespaces) }

func endpointIP(i, j int) string {
	n := uint32(i*256 + j + 1)
	return fmt.Sprintf("10.%d.%d.%d", n>>16, n>>8&255, n&255)
}

// probeIP: addresses for propagate, 10.200.0.0 upwards.
func probeIP(k int) string {
	n := uint32(200<<16 + k + 1)
	return fmt.Sprintf("10.%d.%d.%d", n>>16, n>>8&255, n&255)
}

// mix is splitmix64's finaliser: deterministic, well-spread names and uids.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// safe encodes h in n characters of the alphabet Kubernetes uses for
// generated name suffixes and pod-template-hash values.
func safe(h uint64, n int) string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	b := make([]byte, n)
	for k := range b {
		b[k] = alphabet[h%uint64(len(alphabet))]
		h /= uint64(len(alphabet))
	}
	return string(b)
}

// pod is the identity of the Pod behind endpoint j of Service i; gen > 0
// names a replacement Pod (a new name, uid and node).
type pod struct{ name, uid, node, zone string }

func podOf(i, j int, gen uint64) pod {
	key := uint64(i)<<32 | uint64(j)<<8 ^ gen<<44
	h1, h2 := mix(key), mix(key^0x5bd1e995)
	n := (i + j + int(gen)) % nodes
	return pod{
		// <deployment>-<pod-template-hash>-<suffix>, the hash fixed per Service.
		name: fmt.Sprintf("svc-%d-%s-%s", i, safe(mix(uint64(i)^0x6b8b4567), 10), safe(h1, 5)),
		uid: fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", uint32(h1>>32), uint16(h1>>16), uint16(h1)&0xfff,
			uint16(h2>>48)&0x3fff|0x8000, h2&0xffffffffffff),
		node: fmt.Sprintf("node-%d", n),
		zone: "zone-" + string(rune('a'+n%3)),
	}
}

// endpoint j of Service i as the EndpointSlice controller writes it for a
// Deployment's Pod.
func endpoint(i, j, namespaces int, gen uint64, ip string, ready bool) discoveryv1.Endpoint {
	p := podOf(i, j, gen)
	serving, terminating := ready, false
	return discoveryv1.Endpoint{
		Addresses:  []string{ip},
		Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
		NodeName:   &p.node,
		Zone:       &p.zone,
		TargetRef: &corev1.ObjectReference{
			Kind: "Pod", Namespace: nsOf(i, namespaces), Name: p.name, UID: types.UID(p.uid),
		},
	}
}

var slicePorts = func() []discoveryv1.EndpointPort {
	name, port, proto := "http", int32(8080), corev1.ProtocolTCP
	return []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}}
}()

// service i: headless, or with an allocated cluster IP.
func service(i, namespaces int, headless bool) *corev1.Service {
	name := fmt.Sprintf("svc-%d", i)
	clusterIP := ""
	if headless {
		clusterIP = corev1.ClusterIPNone
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: nsOf(i, namespaces), Labels: map[string]string{"app": name}},
		Spec: corev1.ServiceSpec{
			ClusterIP: clusterIP,
			Ports:     []corev1.ServicePort{{Name: "http", Port: 8080, Protocol: corev1.ProtocolTCP}},
		},
	}
}

func sliceName(i, s int) string { return fmt.Sprintf("svc-%d-%d", i, s) }

// sliceEndpoints: the endpoints of slice s of Service i at M endpoints.
func sliceEndpoints(i, s, endpoints, namespaces int) []discoveryv1.Endpoint {
	var eps []discoveryv1.Endpoint
	for j := s * perSlice; j < endpoints && j < (s+1)*perSlice; j++ {
		eps = append(eps, endpoint(i, j, namespaces, 0, endpointIP(i, j), true))
	}
	return eps
}

func slice(i, s, endpoints, namespaces int, svcUID types.UID, trigger string, headless bool) *discoveryv1.EndpointSlice {
	svc := fmt.Sprintf("svc-%d", i)
	yes := true
	labels := map[string]string{
		"app":                        svc,
		discoveryv1.LabelServiceName: svc,
		discoveryv1.LabelManagedBy:   controllerName,
	}
	// As the controller labels them: kube-proxy and kubedisco select on it.
	if headless {
		labels[corev1.IsHeadlessService] = ""
	}
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:         sliceName(i, s),
			GenerateName: svc + "-",
			Namespace:    nsOf(i, namespaces),
			Labels:       labels,
			Annotations:  map[string]string{corev1.EndpointsLastChangeTriggerTime: trigger},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Service", Name: svc, UID: svcUID, Controller: &yes, BlockOwnerDeletion: &yes,
			}},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       slicePorts,
		Endpoints:   sliceEndpoints(i, s, endpoints, namespaces),
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

var (
	servicesGVR = schema.GroupVersionResource{Version: "v1", Resource: "services"}
	slicesGVR   = schema.GroupVersionResource{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"}
)

// existing lists the names (and uids) of one resource in the scale-*
// namespaces, metadata only, in pages: "ns/name" -> uid.
func existing(ctx context.Context, mc metadata.Interface, gvr schema.GroupVersionResource, namespaces int) (map[string]types.UID, error) {
	out := map[string]types.UID{}
	for k := 0; k < namespaces; k++ {
		ns := fmt.Sprintf("scale-%d", k)
		err := pages(func(opts metav1.ListOptions) (string, error) {
			list, err := mc.Resource(gvr).Namespace(ns).List(ctx, opts)
			if err != nil {
				return "", err
			}
			for _, o := range list.Items {
				out[ns+"/"+o.Name] = o.UID
			}
			return list.Continue, nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// load converges the scale-* namespaces to exactly N Services × M endpoints:
// missing Services and slices are created, existing slices get their
// endpoints replaced, slices and Services beyond N × M are deleted.
func load(args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	services, endpoints, namespaces := pointFlags(fs)
	workers := fs.Int("workers", 16, "parallel writers")
	headlessEvery := fs.Int("headless-every", 1, "Service i is headless iff i % K == 0, the rest ClusterIP")
	_ = fs.Parse(args)
	if *endpoints < 1 || *endpoints > 255 || *services < 1 || *namespaces < 1 || *headlessEvery < 1 {
		return errors.New("load: need 1 <= endpoints <= 255, services >= 1, namespaces >= 1, headless-every >= 1")
	}
	cfg, err := config()
	if err != nil {
		return err
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	mc, err := metadata.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx := context.Background()
	start := time.Now()
	trigger := start.UTC().Format(time.RFC3339Nano)
	for k := 0; k < *namespaces && k < *services; k++ {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("scale-%d", k)}}
		if _, err := c.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	haveSvcs, err := existing(ctx, mc, servicesGVR, *namespaces)
	if err != nil {
		return err
	}
	haveSlices, err := existing(ctx, mc, slicesGVR, *namespaces)
	if err != nil {
		return err
	}
	slices := (*endpoints + perSlice - 1) / perSlice
	var svcCreated, svcDeleted, created, updated, deleted atomic.Int64
	err = parallel(*services, *workers, func(i int) error {
		headless := i%*headlessEvery == 0
		svc := service(i, *namespaces, headless)
		uid, ok := haveSvcs[svc.Namespace+"/"+svc.Name]
		if !ok {
			got, err := c.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{})
			if err != nil {
				return err
			}
			uid = got.UID
			svcCreated.Add(1)
		}
		for s := 0; s < slices; s++ {
			want := slice(i, s, *endpoints, *namespaces, uid, trigger, headless)
			api := c.DiscoveryV1().EndpointSlices(want.Namespace)
			if _, ok := haveSlices[want.Namespace+"/"+want.Name]; !ok {
				if _, err := api.Create(ctx, want, metav1.CreateOptions{}); err != nil {
					return err
				}
				created.Add(1)
				continue
			}
			// Exists: replace its endpoints (a JSON merge patch replaces
			// lists whole), as the controller does when Pods come and go.
			patch, _ := json.Marshal(map[string]any{
				"metadata":  map[string]any{"annotations": want.Annotations},
				"endpoints": want.Endpoints,
			})
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
	// Everything else in the scale-* namespaces goes: slices first, then
	// Services (whose owner references would also let the garbage
	// collector remove their slices, later).
	wanted := func(key string, slice bool) bool {
		var i, s int
		ns, name, _ := strings.Cut(key, "/")
		if slice {
			if n, _ := fmt.Sscanf(name, "svc-%d-%d", &i, &s); n != 2 || sliceName(i, s) != name || s >= slices {
				return false
			}
		} else if n, _ := fmt.Sscanf(name, "svc-%d", &i); n != 1 || fmt.Sprintf("svc-%d", i) != name {
			return false
		}
		return i < *services && nsOf(i, *namespaces) == ns
	}
	remove := func(have map[string]types.UID, slice bool, count *atomic.Int64) error {
		var gone []string
		for key := range have {
			if !wanted(key, slice) {
				gone = append(gone, key)
			}
		}
		return parallel(len(gone), *workers, func(k int) error {
			ns, name, _ := strings.Cut(gone[k], "/")
			var err error
			if slice {
				err = c.DiscoveryV1().EndpointSlices(ns).Delete(ctx, name, metav1.DeleteOptions{})
			} else {
				err = c.CoreV1().Services(ns).Delete(ctx, name, metav1.DeleteOptions{})
			}
			if err != nil && !apierrors.IsNotFound(err) {
				return err
			}
			count.Add(1)
			return nil
		})
	}
	if err := remove(haveSlices, true, &deleted); err != nil {
		return err
	}
	if err := remove(haveSvcs, false, &svcDeleted); err != nil {
		return err
	}
	el := time.Since(start).Seconds()
	objs := float64(created.Load() + updated.Load() + deleted.Load())
	fmt.Printf("services=%d endpoints_per_service=%d services_created=%d services_deleted=%d slices_created=%d slices_updated=%d slices_deleted=%d seconds=%.2f slices_per_second=%.0f\n",
		*services, *endpoints, svcCreated.Load(), svcDeleted.Load(), created.Load(), updated.Load(), deleted.Load(), el, objs/el)
	return nil
}

// check lists every Service and EndpointSlice in the scale-* namespaces
// back from the API server and fails unless they are exactly what load
// -services N -endpoints M writes: Services svc-0..N-1, each with slices
// svc-<i>-0.. holding M endpoints (controller fields set) in all.
func check(args []string) error {
	fs := flag.NewFlagSet("check", flag.ExitOnError)
	services, endpoints, namespaces := pointFlags(fs)
	c, err := parse(fs, args)
	if err != nil {
		return err
	}
	ctx := context.Background()
	perSvc := map[string]int{} // "ns/svc-i" -> endpoints
	nSvc, nSlices, nEps := 0, 0, 0
	var problems []string
	countServices := func(ns string, list *corev1.ServiceList) {
		for _, s := range list.Items {
			var i int
			if n, _ := fmt.Sscanf(s.Name, "svc-%d", &i); n != 1 || i >= *services || nsOf(i, *namespaces) != ns {
				problems = append(problems, "unexpected Service "+ns+"/"+s.Name)
			}
			nSvc++
		}
	}
	countSlices := func(ns string, list *discoveryv1.EndpointSliceList) {
		for _, es := range list.Items {
			nSlices++
			nEps += len(es.Endpoints)
			perSvc[ns+"/"+es.Labels[discoveryv1.LabelServiceName]] += len(es.Endpoints)
			if es.Labels[discoveryv1.LabelManagedBy] != controllerName || len(es.OwnerReferences) != 1 {
				problems = append(problems, "slice without the controller's labels or owner "+ns+"/"+es.Name)
			}
			for _, e := range es.Endpoints {
				if e.NodeName == nil || e.Zone == nil || e.TargetRef == nil || e.Conditions.Ready == nil ||
					e.Conditions.Serving == nil || e.Conditions.Terminating == nil {
					problems = append(problems, "endpoint without controller fields in "+ns+"/"+es.Name)
					break
				}
			}
		}
	}
	for k := 0; k < *namespaces; k++ {
		ns := fmt.Sprintf("scale-%d", k)
		err := pages(func(opts metav1.ListOptions) (string, error) {
			list, err := c.CoreV1().Services(ns).List(ctx, opts)
			if err != nil {
				return "", err
			}
			countServices(ns, list)
			return list.Continue, nil
		})
		if err == nil {
			err = pages(func(opts metav1.ListOptions) (string, error) {
				list, err := c.DiscoveryV1().EndpointSlices(ns).List(ctx, opts)
				if err != nil {
					return "", err
				}
				countSlices(ns, list)
				return list.Continue, nil
			})
		}
		if err != nil {
			return err
		}
	}
	slices := (*endpoints + perSlice - 1) / perSlice
	for i := 0; i < *services; i++ {
		key := nsOf(i, *namespaces) + fmt.Sprintf("/svc-%d", i)
		if got := perSvc[key]; got != *endpoints {
			problems = append(problems, fmt.Sprintf("%s has %d endpoints, want %d", key, got, *endpoints))
		}
	}
	fmt.Printf("services=%d slices=%d endpoints=%d\n", nSvc, nSlices, nEps)
	if nSvc != *services || nSlices != *services*slices || nEps != *services**endpoints {
		problems = append(problems, fmt.Sprintf("want services=%d slices=%d endpoints=%d", *services, *services*slices, *services**endpoints))
	}
	if len(problems) > 0 {
		if len(problems) > 10 {
			problems = append(problems[:10], fmt.Sprintf("... %d more", len(problems)-10))
		}
		return errors.New("check: " + strings.Join(problems, "; "))
	}
	return nil
}

// churn: JSON patches that flip endpoint 0 of slice 0 of Service k % N
// between ready and not ready (ready and serving together, as the
// controller writes a Pod's readiness), spread round-robin, at a fixed
// rate. Every update changes what is served.
func churn(args []string) error {
	fs := flag.NewFlagSet("churn", flag.ExitOnError)
	services := fs.Int("services", 1000, "Services to spread updates over")
	namespaces := fs.Int("namespaces", 10, "namespaces")
	rate := fs.Float64("rate", 100, "slice updates per second")
	duration := fs.Duration("duration", 10*time.Second, "how long")
	workers := fs.Int("workers", 8, "parallel writers")
	c, err := parse(fs, args)
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
		patch := fmt.Sprintf(`[{"op":"replace","path":"/endpoints/0/conditions/ready","value":%v},`+
			`{"op":"replace","path":"/endpoints/0/conditions/serving","value":%v}]`, ready, ready)
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
	c, err := parse(fs, args)
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
		// A Pod replaced by a new one: endpoint 0 gets a new address,
		// Pod name, uid and node.
		ep, _ := json.Marshal(endpoint(i, 0, *namespaces, uint64(base+k+1), ip, true))
		patch := fmt.Sprintf(`[{"op":"replace","path":"/endpoints/0","value":%s}]`, ep)
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

// sizes: bytes of one MODIFIED watch event, JSON (as kube-runtime's
// watcher receives it: with managedFields and the envelope) and protobuf
// (as kubedisco's and CoreDNS's watchers do), of slice 0 of Service 0 and
// of Service 0. Measured on a
// real watch: its first frame is the object's synthetic ADDED event; the
// size reported is that frame's with the type MODIFIED.
func sizes(args []string) error {
	fs := flag.NewFlagSet("sizes", flag.ExitOnError)
	namespaces := fs.Int("namespaces", 10, "namespaces")
	c, err := parse(fs, args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	frame := func(rc rest.Interface, resource, name string) ([]byte, error) {
		body, err := rc.Get().Namespace(nsOf(0, *namespaces)).Resource(resource).
			Param("watch", "true").Param("fieldSelector", "metadata.name="+name).
			SetHeader("Accept", "application/json").Stream(ctx)
		if err != nil {
			return nil, err
		}
		defer body.Close()
		line, err := bufio.NewReaderSize(body, 1<<20).ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("watch %s/%s: %w", resource, name, err)
		}
		var ev struct {
			Type   string          `json:"type"`
			Object json.RawMessage `json:"object"`
		}
		if err := json.Unmarshal(line, &ev); err != nil || ev.Type != "ADDED" {
			return nil, fmt.Errorf("watch %s/%s: first frame is not an ADDED event: %.200s", resource, name, line)
		}
		return line, nil
	}
	modified := func(line []byte) int { return len(line) - len("ADDED") + len("MODIFIED") }
	// The same event in protobuf, as kubedisco (and CoreDNS) receive it:
	// a 4-byte length and a WatchEvent; the type is one byte longer as
	// MODIFIED, as in JSON.
	protobufFrame := func(rc rest.Interface, resource, name string) (int, error) {
		body, err := rc.Get().Namespace(nsOf(0, *namespaces)).Resource(resource).
			Param("watch", "true").Param("fieldSelector", "metadata.name="+name).
			SetHeader("Accept", "application/vnd.kubernetes.protobuf").Stream(ctx)
		if err != nil {
			return 0, err
		}
		defer body.Close()
		var length [4]byte
		if _, err := io.ReadFull(body, length[:]); err != nil {
			return 0, fmt.Errorf("protobuf watch %s/%s: %w", resource, name, err)
		}
		return 4 + int(binary.BigEndian.Uint32(length[:])) - len("ADDED") + len("MODIFIED"), nil
	}
	slProto, err := protobufFrame(c.DiscoveryV1().RESTClient(), "endpointslices", "svc-0-0")
	if err != nil {
		return err
	}
	svProto, err := protobufFrame(c.CoreV1().RESTClient(), "services", "svc-0")
	if err != nil {
		return err
	}
	sl, err := frame(c.DiscoveryV1().RESTClient(), "endpointslices", "svc-0-0")
	if err != nil {
		return err
	}
	sv, err := frame(c.CoreV1().RESTClient(), "services", "svc-0")
	if err != nil {
		return err
	}
	var ev struct {
		Object discoveryv1.EndpointSlice `json:"object"`
	}
	if err := json.Unmarshal(sl, &ev); err != nil {
		return err
	}
	fmt.Printf("endpointslice_event_bytes=%d endpoints=%d service_event_bytes=%d endpointslice_event_bytes_protobuf=%d service_event_bytes_protobuf=%d\n",
		modified(sl), len(ev.Object.Endpoints), modified(sv), slProto, svProto)
	return nil
}
