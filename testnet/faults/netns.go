package main

// The network of the fault suite: one Linux bridge (igorf-br, 10.77.0.254)
// and one network namespace per daemon (igorf-1 … igorf-N, 10.77.0.i on
// an interface eth0 whose peer igorf-hi is a port of the bridge). Every
// name starts with "igorf-", so --cleanup removes exactly what a run made.
//
// The faults (no iptables, no netem on this kernel):
//   - isolate: the bridge port of the node is disabled (bridge link state
//     0): its frames and the frames to it vanish, both ways, while every
//     link stays up — nobody is told anything.
//   - flap: the host side of the node's veth goes down and up (carrier
//     loss inside the namespace; the kernel flushes its neighbours).
//   - one-way loss: a permanent neighbour entry for a peer's address with
//     a MAC nobody owns, inside one namespace: that namespace's packets to
//     the peer are flooded by the bridge and dropped by every NIC, while
//     the peer's packets still arrive.
//
// The harness reaches each daemon's API on 127.0.0.1 *inside* its
// namespace (a socket opened from a thread switched into it with setns),
// so API calls keep working while the node is cut off.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	prefix   = "igorf-"
	bridge   = prefix + "br"
	bridgeIP = "10.77.0.254"
	// bogusMAC is owned by no interface: frames sent to it are flooded by
	// the bridge and dropped by every receiver.
	bogusMAC = "02:00:00:00:00:99"
)

func nsName(i int) string   { return prefix + strconv.Itoa(i) }
func hostVeth(i int) string { return prefix + "h" + strconv.Itoa(i) }
func nodeIP(i int) string   { return "10.77.0." + strconv.Itoa(i) }

// ip runs one ip(8) (or bridge(8)) command and returns its error with
// the command's output.
func ip(args ...string) error { return runTool("ip", args...) }

func runTool(tool string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, tool, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", tool, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// preflight refuses to run without root or without working namespaces
// (errPreflight: exit 2), and when leftovers of an earlier run exist.
func preflight() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: the fault suite needs root (it creates network namespaces, veth pairs and a bridge); run it as root", errPreflight)
	}
	probe := prefix + "probe-" + strconv.Itoa(os.Getpid())
	if err := ip("netns", "add", probe); err != nil {
		return fmt.Errorf("%w: 'ip netns' does not work here: %v", errPreflight, err)
	}
	if err := ip("netns", "del", probe); err != nil {
		return fmt.Errorf("%w: 'ip netns del' does not work here: %v", errPreflight, err)
	}
	if _, err := exec.LookPath("bridge"); err != nil {
		return fmt.Errorf("%w: the bridge(8) command of iproute2 is missing", errPreflight)
	}
	if left := leftovers(); len(left) > 0 {
		return fmt.Errorf("leftovers of an earlier run exist (%s): remove them with --cleanup (or testnet/faults.sh --cleanup)", strings.Join(left, ", "))
	}
	return nil
}

// leftovers lists namespaces and links of ours that exist.
func leftovers() []string {
	var out []string
	for _, ns := range ourNamespaces() {
		out = append(out, "netns "+ns)
	}
	if _, err := net.InterfaceByName(bridge); err == nil {
		out = append(out, "link "+bridge)
	}
	return out
}

func ourNamespaces() []string {
	ents, err := os.ReadDir("/var/run/netns")
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// setupNet creates the bridge and n namespaces.
func setupNet(n int) error {
	steps := [][]string{
		{"link", "add", bridge, "type", "bridge"},
		{"addr", "add", bridgeIP + "/24", "dev", bridge},
		{"link", "set", bridge, "up"},
	}
	for i := 1; i <= n; i++ {
		ns, h, c := nsName(i), hostVeth(i), prefix+"c"+strconv.Itoa(i)
		steps = append(steps,
			[]string{"netns", "add", ns},
			[]string{"link", "add", h, "type", "veth", "peer", "name", c},
			[]string{"link", "set", c, "netns", ns},
			[]string{"link", "set", h, "master", bridge},
			[]string{"link", "set", h, "up"},
			[]string{"-n", ns, "link", "set", c, "name", "eth0"},
			[]string{"-n", ns, "addr", "add", nodeIP(i) + "/24", "dev", "eth0"},
			[]string{"-n", ns, "link", "set", "eth0", "up"},
			[]string{"-n", ns, "link", "set", "lo", "up"},
		)
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	return nil
}

// cleanupNet kills every process left in our namespaces (by pid, from
// 'ip netns pids'), then deletes the namespaces (their veths go with
// them) and the bridge. It reports what it removed.
func cleanupNet(logf func(string, ...any)) error {
	var errs []error
	for _, ns := range ourNamespaces() {
		out, _ := exec.Command("ip", "netns", "pids", ns).Output()
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGCONT)
				if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
					logf("cleanup: killed pid %d in %s", pid, ns)
				}
			}
		}
	}
	for _, ns := range ourNamespaces() {
		if err := ip("netns", "del", ns); err != nil {
			errs = append(errs, err)
		} else {
			logf("cleanup: deleted netns %s", ns)
		}
	}
	if _, err := net.InterfaceByName(bridge); err == nil {
		if err := ip("link", "del", bridge); err != nil {
			errs = append(errs, err)
		} else {
			logf("cleanup: deleted bridge %s", bridge)
		}
	}
	return errors.Join(errs...)
}

// Faults and their heals.

func setIsolated(i int, on bool) error {
	state := "3" // forwarding
	if on {
		state = "0" // disabled
	}
	return runTool("bridge", "link", "set", "dev", hostVeth(i), "state", state)
}

func setLinkDown(i int, down bool) error {
	s := "up"
	if down {
		s = "down"
	}
	return ip("link", "set", hostVeth(i), s)
}

// setLoss makes namespace from drop its packets to the addresses of to
// (on), or forgets those entries so ARP resolves them again (off).
func setLoss(from int, to []int, on bool) error {
	var errs []error
	for _, t := range to {
		if on {
			errs = append(errs, ip("-n", nsName(from), "neigh", "replace", nodeIP(t), "lladdr", bogusMAC, "nud", "permanent", "dev", "eth0"))
		} else {
			errs = append(errs, ip("-n", nsName(from), "neigh", "del", nodeIP(t), "dev", "eth0"))
		}
	}
	return errors.Join(errs...)
}

// nsDialer dials from inside a network namespace: the socket is created
// on an OS thread switched into the namespace, and a socket stays in the
// namespace it was created in.
type nsDialer struct {
	ns   *os.File // /var/run/netns/NAME
	root *os.File // this process's own namespace
}

func newNSDialer(name string, root *os.File) (*nsDialer, error) {
	f, err := os.Open("/var/run/netns/" + name)
	if err != nil {
		return nil, err
	}
	return &nsDialer{ns: f, root: root}, nil
}

func (d *nsDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(int(d.ns.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- res{nil, fmt.Errorf("setns: %w", err)}
			return
		}
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if unix.Setns(int(d.root.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else the thread stays locked and ends with this goroutine
		ch <- res{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

func (d *nsDialer) Close() { d.ns.Close() }

// nsClient is an HTTP client whose connections are made inside the
// namespace.
func nsClient(d *nsDialer) *http.Client {
	tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 8, IdleConnTimeout: 30 * time.Second}
	return &http.Client{Transport: tr}
}

// nsCommand runs a command inside namespace i.
func nsCommand(ctx context.Context, i int, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", nsName(i), name}, args...)...)
}

// bytesContainsLine reports whether data has a line holding all of subs.
func bytesContainsLine(data []byte, subs ...string) bool {
	for line := range bytes.Lines(data) {
		ok := true
		for _, s := range subs {
			if !bytes.Contains(line, []byte(s)) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}
