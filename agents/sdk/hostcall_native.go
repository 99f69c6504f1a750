//go:build !wasip1

package sdk

import "sync"

var (
	backendMu sync.RWMutex
	backend   Backend // guarded by backendMu
)

// SetBackend installs b to answer hostcalls in native builds (nil removes
// it). The backend is process-wide, so tests that install different
// backends must not run in parallel. It exists only outside GOOS=wasip1.
func SetBackend(b Backend) {
	backendMu.Lock()
	backend = b
	backendMu.Unlock()
}

func currentBackend(call string) Backend {
	backendMu.RLock()
	b := backend
	backendMu.RUnlock()
	if b == nil {
		panic("sdk: " + call + " called in a native build with no backend installed; in tests install one first: " +
			"mock.New(seed).Install() (package github.com/igor-mesh/igor-node/agents/sdk/mock)")
	}
	return b
}

func clockNow() int64          { return currentBackend("ClockNow").ClockNow() }
func randBytes(b []byte) int32 { return currentBackend("RandBytes").RandBytes(b) }
func logEmit(msg string)       { currentBackend("Log").LogEmit(msg) }
func argsGet() string          { return currentBackend("Args").Args() }

func walletBalance() int64      { return currentBackend("WalletBalance").WalletBalance() }
func walletReceiptCount() int32 { return currentBackend("WalletReceiptCount").WalletReceiptCount() }
func walletReceipt(index int32, buf []byte) int32 {
	return currentBackend("WalletReceipt").WalletReceipt(index, buf)
}
func nodePrice() int64 { return currentBackend("NodePrice").NodePrice() }
func httpRequest(method, url string, headers, body, resp []byte) int32 {
	return currentBackend("HTTPRequest").HTTPRequest(method, url, headers, body, resp)
}
func walletPay(amount int64, recipient, memo string, receipt []byte) int32 {
	return currentBackend("WalletPay").WalletPay(amount, recipient, memo, receipt)
}
