package node

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/internal/testagents"
)

// TestStatusPageInChromium loads the daemon's status page in headless
// Chromium (Debian's chromium; `make test` installs it and sets
// IGOR_UI_TEST=1) against a real 3-node mesh with 3 agents: the page shows
// this node, every agent with its status and a tick that advances between
// two loads, the hosts and the custody groups; a screenshot renders.
// IGOR_UI_SCREENSHOT=path also writes the screenshot there (docs/).
func TestStatusPageInChromium(t *testing.T) {
	if os.Getenv("IGOR_UI_TEST") == "" {
		t.Skip("set IGOR_UI_TEST=1 to run it (make test does, after installing chromium)")
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("IGOR_UI_TEST is set but chromium is not installed (apt-get install chromium, or make ui-deps): %v", err)
	}
	ms := startMeshes(t, 3, 2)
	waitHosts(t, ms, 3)
	wasm, man := testagents.Bytes(t, "heartbeat")
	ctx := context.Background()
	var dids []string
	for range 3 {
		res, err := ms[0].Publish(ctx, wasm, man, 1_000_000, nil)
		if err != nil {
			t.Fatal(err)
		}
		dids = append(dids, res.DID)
	}
	eventually(t, "every agent running", 60*time.Second, func() error {
		list, err := ms[0].ListAgents(ctx)
		if err != nil {
			return err
		}
		n := 0
		for _, a := range list.Agents {
			if a.Status == "running" && a.Tick > 0 {
				n++
			}
		}
		if n != len(dids) {
			return fmt.Errorf("%d of %d running", n, len(dids))
		}
		return nil
	})
	srv, err := ms[0].ServeAPI("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background())
	url := "http://" + srv.Addr() + "/"
	browse := func(args ...string) []byte {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(cctx, chromium, append([]string{"--headless", "--no-sandbox", "--disable-gpu",
			"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=3000"}, args...)...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("chromium %v: %v\n%s", args, err, errb.String())
		}
		return out.Bytes()
	}
	ticks := func(dom []byte) map[string]int {
		t.Helper()
		got := map[string]int{}
		row := regexp.MustCompile(`<tr data-did="([^"]+)">(.*?)</tr>`)
		tick := regexp.MustCompile(`<td class="num tick">(\d+)</td>`)
		status := regexp.MustCompile(`data-status="([a-z-]+)"`)
		for _, m := range row.FindAllSubmatch(dom, -1) {
			tm, sm := tick.FindSubmatch(m[2]), status.FindSubmatch(m[2])
			if tm == nil || sm == nil || string(sm[1]) != "running" {
				t.Fatalf("agent row without a running status and tick: %s", m[0])
			}
			got[string(m[1])], _ = strconv.Atoi(string(tm[1]))
		}
		return got
	}
	dom1 := browse("--dump-dom", url)
	for _, want := range []string{ms[0].PeerID(), `id="hosts"`, "Custody groups of this node"} {
		if !bytes.Contains(dom1, []byte(want)) {
			t.Fatalf("the page lacks %q:\n%s", want, dom1)
		}
	}
	if !bytes.Contains(dom1, []byte(ms[1].PeerID())) || bytes.Contains(dom1, []byte("errors: ")) {
		t.Fatalf("the page does not list the other hosts, or reports errors:\n%s", dom1)
	}
	if prices := regexp.MustCompile(`<td class="num price">\d+</td>`).FindAll(dom1, -1); len(prices) != 3 {
		t.Fatalf("the hosts table shows %d prices, want 3:\n%s", len(prices), dom1)
	}
	t1 := ticks(dom1)
	time.Sleep(2 * time.Second)
	t2 := ticks(browse("--dump-dom", url))
	for _, did := range dids {
		if _, ok := t1[did]; !ok || t2[did] <= t1[did] {
			t.Fatalf("agent %s: tick %d then %d (present: %v); want it listed and advancing\n%s", did, t1[did], t2[did], ok, dom1)
		}
	}
	shot := t.TempDir() + "/page.png"
	browse("--screenshot="+shot, "--window-size=1280,1000", url+"#"+dids[0])
	data, err := os.ReadFile(shot)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 1000 {
		t.Fatalf("screenshot is %v", b)
	}
	colors := map[[4]uint32]bool{}
	for y := 0; y < 1000; y += 7 {
		for x := 0; x < 1280; x += 7 {
			r, g, b, a := img.At(x, y).RGBA()
			colors[[4]uint32{r, g, b, a}] = true
		}
	}
	if len(colors) < 8 {
		t.Fatalf("the screenshot is nearly blank (%d colours)", len(colors))
	}
	if p := os.Getenv("IGOR_UI_SCREENSHOT"); p != "" {
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if strings.Contains(string(dom1), "INVALID") {
		t.Fatalf("the page shows an invalid lineage")
	}
}
