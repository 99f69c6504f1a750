//go:build wasip1

package sdk

import (
	"strconv"
	"unsafe"
)

// The igor host imports (docs/ABI.md). Each is called from exactly one
// small function below, so the linker keeps an import only when the agent
// reaches its wrapper; an agent that never calls RandBytes does not import
// igor.rand_bytes and needs no "rand" capability.
//
// Pointers passed to the host point into Go-owned memory that stays live for
// the duration of the call (the argument itself keeps it reachable, and the
// single-threaded wasm runtime cannot collect during a host call).

//go:wasmimport igor clock_now
func igorClockNow() int64

//go:wasmimport igor rand_bytes
func igorRandBytes(ptr unsafe.Pointer, n uint32) int32

//go:wasmimport igor log_emit
func igorLogEmit(ptr unsafe.Pointer, n uint32)

//go:wasmimport igor args_get
func igorArgsGet(ptr unsafe.Pointer, n uint32) int32

//go:wasmimport igor wallet_balance
func igorWalletBalance() int64

//go:wasmimport igor wallet_receipt_count
func igorWalletReceiptCount() int32

//go:wasmimport igor wallet_receipt
func igorWalletReceipt(index int32, ptr unsafe.Pointer, n uint32) int32

//go:wasmimport igor node_price
func igorNodePrice() int64

//go:wasmimport igor http_request
func igorHTTPRequest(methodPtr unsafe.Pointer, methodLen uint32, urlPtr unsafe.Pointer, urlLen uint32,
	hdrPtr unsafe.Pointer, hdrLen uint32, bodyPtr unsafe.Pointer, bodyLen uint32, respPtr unsafe.Pointer, respCap uint32) int32

//go:wasmimport igor wallet_pay
func igorWalletPay(amount int64, recipPtr unsafe.Pointer, recipLen uint32, memoPtr unsafe.Pointer, memoLen uint32,
	rcptPtr unsafe.Pointer, rcptCap uint32) int32

func clockNow() int64 { return igorClockNow() }

func randBytes(b []byte) int32 {
	return igorRandBytes(unsafe.Pointer(unsafe.SliceData(b)), uint32(len(b)))
}

func logEmit(msg string) {
	igorLogEmit(unsafe.Pointer(unsafe.StringData(msg)), uint32(len(msg)))
}

// argsCache holds the args after the first read: they are fixed by the
// signed manifest for the life of the instance.
var argsCache *string

func argsGet() string {
	if argsCache != nil {
		return *argsCache
	}
	n := igorArgsGet(nil, 0) // size query: returns the full length
	buf := []byte{}
	for n > int32(len(buf)) {
		buf = make([]byte, n)
		n = igorArgsGet(unsafe.Pointer(unsafe.SliceData(buf)), uint32(len(buf)))
	}
	if n < 0 {
		panic("sdk: igor.args_get failed with code " + strconv.Itoa(int(n)))
	}
	s := string(buf[:n])
	argsCache = &s
	return s
}

func walletBalance() int64      { return igorWalletBalance() }
func walletReceiptCount() int32 { return igorWalletReceiptCount() }

func walletReceipt(index int32, buf []byte) int32 {
	return igorWalletReceipt(index, unsafe.Pointer(unsafe.SliceData(buf)), uint32(len(buf)))
}

func nodePrice() int64 { return igorNodePrice() }

func httpRequest(method, url string, headers, body, resp []byte) int32 {
	return igorHTTPRequest(unsafe.Pointer(unsafe.StringData(method)), uint32(len(method)),
		unsafe.Pointer(unsafe.StringData(url)), uint32(len(url)),
		unsafe.Pointer(unsafe.SliceData(headers)), uint32(len(headers)),
		unsafe.Pointer(unsafe.SliceData(body)), uint32(len(body)),
		unsafe.Pointer(unsafe.SliceData(resp)), uint32(len(resp)))
}

func walletPay(amount int64, recipient, memo string, receipt []byte) int32 {
	return igorWalletPay(amount, unsafe.Pointer(unsafe.StringData(recipient)), uint32(len(recipient)),
		unsafe.Pointer(unsafe.StringData(memo)), uint32(len(memo)),
		unsafe.Pointer(unsafe.SliceData(receipt)), uint32(len(receipt)))
}
