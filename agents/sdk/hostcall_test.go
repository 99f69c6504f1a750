//go:build !wasip1

package sdk_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/igor-mesh/igor-node/agents/sdk"
	"github.com/igor-mesh/igor-node/agents/sdk/mock"
)

// recorder is a Backend that records the size of each rand_bytes call, to
// check how the wrapper splits requests.
type recorder struct {
	*mock.Mock
	randCalls []int
}

func (r *recorder) RandBytes(b []byte) int32 {
	r.randCalls = append(r.randCalls, len(b))
	return r.Mock.RandBytes(b)
}

func TestWrappersPanicWithoutBackend(t *testing.T) {
	sdk.SetBackend(nil)
	calls := map[string]func(){
		"ClockNow":           func() { sdk.ClockNow() },
		"RandBytes":          func() { _ = sdk.RandBytes(make([]byte, 1)) },
		"Log":                func() { sdk.Log("x") },
		"Args":               func() { sdk.Args() },
		"WalletBalance":      func() { sdk.WalletBalance() },
		"WalletReceiptCount": func() { sdk.WalletReceiptCount() },
		"WalletReceipt":      func() { sdk.WalletReceipt(0) },
		"NodePrice":          func() { sdk.NodePrice() },
		"HTTPRequest":        func() { sdk.HTTPGet("http://x/") },
		"WalletPay":          func() { sdk.WalletPay(1, "a", "") },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			defer func() {
				r := recover()
				msg, _ := r.(string)
				if !strings.Contains(msg, name) || !strings.Contains(msg, "mock.New") {
					t.Fatalf("panic %q does not name the call and the fix", r)
				}
			}()
			call()
			t.Fatal("no panic without a backend")
		})
	}
}

func TestRandBytesSplitsAtMaxChunk(t *testing.T) {
	r := &recorder{Mock: mock.New(1)}
	sdk.SetBackend(r)
	defer sdk.SetBackend(nil)

	if err := sdk.RandBytes(nil); err != nil || len(r.randCalls) != 0 {
		t.Fatalf("empty request: err %v, %d hostcalls; want none", err, len(r.randCalls))
	}
	buf := make([]byte, 2*sdk.MaxRandChunk+5)
	if err := sdk.RandBytes(buf); err != nil {
		t.Fatal(err)
	}
	want := []int{sdk.MaxRandChunk, sdk.MaxRandChunk, 5}
	if len(r.randCalls) != 3 || r.randCalls[0] != want[0] || r.randCalls[1] != want[1] || r.randCalls[2] != want[2] {
		t.Fatalf("hostcall sizes %v, want %v", r.randCalls, want)
	}
	zeros := 0
	for _, b := range buf[2*sdk.MaxRandChunk:] {
		if b == 0 {
			zeros++
		}
	}
	if zeros == 5 {
		t.Fatal("last chunk was not filled")
	}
}

func TestRandBytesReportsHostCode(t *testing.T) {
	m := mock.New(1).Install()
	defer sdk.SetBackend(nil)
	m.SetRandCode(-4)
	err := sdk.RandBytes(make([]byte, 8))
	if !errors.Is(err, sdk.ErrRand) || !strings.Contains(err.Error(), "-4") {
		t.Fatalf("err = %v, want ErrRand naming code -4", err)
	}
}

func TestLogfAndArgs(t *testing.T) {
	m := mock.New(1).SetArgs("a=1").Install()
	defer sdk.SetBackend(nil)
	sdk.Logf("tick=%d age=%ds", 3, 2)
	sdk.Log("")
	if got := m.Logs(); len(got) != 2 || got[0] != "tick=3 age=2s" || got[1] != "" {
		t.Fatalf("logs = %q", got)
	}
	if sdk.Args() != "a=1" {
		t.Fatalf("Args = %q", sdk.Args())
	}
}

func TestRunRejectsNilAndSecondAgent(t *testing.T) {
	mustPanic := func(what string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Fatalf("%s did not panic", what)
			}
		}()
		f()
	}
	mustPanic("Run(nil)", func() { sdk.Run(nil) })
	sdk.Run(&nopAgent{})
	mustPanic("second Run", func() { sdk.Run(&nopAgent{}) })
}

type nopAgent struct{}

func (*nopAgent) Init()            {}
func (*nopAgent) Tick() bool       { return false }
func (*nopAgent) Marshal() []byte  { return nil }
func (*nopAgent) Unmarshal([]byte) {}
