//go:build wasip1

// Command hostile is the fixture behind the hostile-agent test matrix
// (hosting/hostile_test.go, docs/CONTAINMENT.md). Its misbehaviour is chosen
// at build time:
//
//	go build -ldflags "-X main.mode=loop-tick" ...   (internal/testagents.Variant)
//
// Without a mode it is a well-behaved counter, so scripts/build-agents.sh
// builds it like any other example. It is written against the raw ABI (no
// SDK) so that it can return any pointer or length the host must survive.
//
// The state is an 8-byte little-endian tick counter. Misbehaviour in tick,
// checkpoint and resume starts once the counter passes armAt, so a run first
// commits a few good checkpoints the host can fall back to; init, resume and
// allocation misbehave at once (there is nothing to fall back to earlier).
//
// Modes: loop-init, loop-tick, loop-checkpoint, loop-resume, sleep-tick,
// recurse-tick, panic-init, panic-tick, panic-checkpoint, panic-resume,
// exit-tick, grow-resume, oob-checkpoint, oversize-checkpoint,
// negative-checkpoint, bad-alloc, log-flood, log-huge, log-init-flood,
// wasi-fs, wasi-sock. An unknown mode panics in agent_init.
package main

import (
	"encoding/binary"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// mode is set with -ldflags "-X main.mode=NAME"; "" is well behaved.
var mode string

// armAt: tick/checkpoint/resume misbehaviour starts once the counter
// exceeds it.
const armAt = 2

var (
	n       uint64 // ticks so far (the state)
	ckpt    [8]byte
	big     []byte   // oversize-checkpoint
	hog     [][]byte // grow-resume
	pending [][]byte // agent_alloc buffers, kept reachable until resume
	sink    uint64   // side effect of loops, so they are not optimised away
)

//go:wasmimport igor log_emit
func igorLogEmit(ptr unsafe.Pointer, n uint32)

//go:wasmimport igor args_get
func igorArgsGet(ptr unsafe.Pointer, n uint32) int32

// Socket calls Go's net package never makes on wasip1 (it has no sockets
// but sock_accept/sock_shutdown); imported directly so the module asks the
// host for them.
//
//go:wasmimport wasi_snapshot_preview1 sock_recv
func sockRecv(fd int32, riPtr unsafe.Pointer, riLen int32, flags int32, nread unsafe.Pointer, roflags unsafe.Pointer) int32

//go:wasmimport wasi_snapshot_preview1 sock_send
func sockSend(fd int32, siPtr unsafe.Pointer, siLen int32, flags int32, nsent unsafe.Pointer) int32

func logLine(s string) {
	if s == "" {
		igorLogEmit(nil, 0)
		return
	}
	igorLogEmit(unsafe.Pointer(unsafe.StringData(s)), uint32(len(s)))
}

func args() string {
	size := igorArgsGet(nil, 0)
	if size <= 0 {
		return ""
	}
	buf := make([]byte, size)
	igorArgsGet(unsafe.Pointer(unsafe.SliceData(buf)), uint32(size))
	return string(buf)
}

func spin() {
	for {
		sink++
	}
}

func recurse(d uint64) uint64 {
	var pad [256]byte // a large frame, so the stack grows fast
	pad[d%256] = byte(d)
	return recurse(d+1) + uint64(pad[(d+1)%256])
}

var modes = map[string]bool{"": true, "loop-init": true, "loop-tick": true, "loop-checkpoint": true,
	"loop-resume": true, "sleep-tick": true, "recurse-tick": true, "panic-init": true, "panic-tick": true,
	"panic-checkpoint": true, "panic-resume": true, "exit-tick": true, "grow-resume": true,
	"oob-checkpoint": true, "oversize-checkpoint": true, "negative-checkpoint": true, "bad-alloc": true,
	"log-flood": true, "log-huge": true, "log-init-flood": true, "wasi-fs": true, "wasi-sock": true}

//go:wasmexport agent_init
func agentInit() {
	if !modes[mode] {
		panic("hostile: unknown mode " + strconv.Quote(mode))
	}
	switch mode {
	case "loop-init":
		spin()
	case "panic-init":
		panic("hostile: deliberate panic in agent_init")
	case "log-init-flood":
		for i := 0; ; i++ {
			logLine("hostile: init flood line " + strconv.Itoa(i))
		}
	}
}

//go:wasmexport agent_tick
func agentTick() int32 {
	n++
	armed := n > armAt
	switch {
	case !armed:
	case mode == "loop-tick":
		logLine("hostile: loop-tick: spinning in tick " + strconv.FormatUint(n, 10))
		spin()
	case mode == "sleep-tick":
		time.Sleep(time.Hour)
	case mode == "recurse-tick":
		sink += recurse(0)
	case mode == "panic-tick":
		panic("hostile: deliberate panic in agent_tick " + strconv.FormatUint(n, 10))
	case mode == "exit-tick":
		os.Exit(3)
	case mode == "log-flood":
		// Far more lines than any sane agent: the host shows a few
		// (rate limit), records them, and traps the tick at the tick log's
		// entry limit.
		for i := 0; i < 20000; i++ {
			logLine("hostile: flood " + strconv.Itoa(i))
		}
	case mode == "log-huge":
		line := strings.Repeat("x", 1<<20)
		for range 3 {
			logLine(line)
		}
	case mode == "wasi-fs":
		if n == armAt+1 {
			wasiFS()
		}
	case mode == "wasi-sock":
		if n == armAt+1 {
			wasiSock()
		}
	}
	return 0
}

// wasiFS tries the filesystem through WASI and logs what it got; args holds
// a host directory the test watches.
func wasiFS() {
	dir := args()
	report := func(op string, err error) {
		logLine("hostile: fs: " + op + ": " + errText(err))
	}
	_, err := os.ReadFile("/etc/passwd")
	report("read /etc/passwd", err)
	_, err = os.ReadFile(dir + "/secret")
	report("read secret", err)
	err = os.WriteFile(dir+"/secret", []byte("pwned"), 0o644)
	report("overwrite secret", err)
	err = os.WriteFile(dir+"/pwned", []byte("pwned"), 0o644)
	report("create pwned", err)
	_, err = os.ReadDir("/")
	report("readdir /", err)
	_, err = os.ReadDir(".")
	report("readdir .", err)
	err = os.Remove(dir + "/secret")
	report("remove secret", err)
	_, err = os.Open("../../../../etc/passwd")
	report("open ../etc/passwd", err)
}

// wasiSock tries sockets: args holds a host TCP address the test listens
// on. Go's net package has no sockets on wasip1 (its net.Dial is an
// in-process fake), so this goes to the system calls and to the WASI
// socket functions directly: creating a socket, and receiving, sending and
// accepting on every descriptor an agent could guess.
func wasiSock() {
	addr := args()
	report := func(op string, err error) {
		logLine("hostile: sock: " + op + ": " + errText(err))
	}
	_, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	report("socket for "+addr, err)
	for _, fd := range []int32{0, 1, 2, 3, 4} {
		var buf [16]byte
		iov := [2]uint32{uint32(uintptr(unsafe.Pointer(&buf[0]))), uint32(len(buf))}
		var nread, roflags uint32
		rc := sockRecv(fd, unsafe.Pointer(&iov), 1, 0, unsafe.Pointer(&nread), unsafe.Pointer(&roflags))
		report("sock_recv fd "+strconv.Itoa(int(fd)), syscall.Errno(rc))
		var nsent uint32
		rc = sockSend(fd, unsafe.Pointer(&iov), 1, 0, unsafe.Pointer(&nsent))
		report("sock_send fd "+strconv.Itoa(int(fd)), syscall.Errno(rc))
		_, _, err := syscall.Accept(int(fd))
		report("sock_accept fd "+strconv.Itoa(int(fd)), err)
	}
}

func errText(err error) string {
	if err == nil || err == syscall.Errno(0) {
		return "ok"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) && errno != 0 {
		return "errno " + strconv.Itoa(int(errno)) + " (" + err.Error() + ")"
	}
	return err.Error()
}

//go:wasmexport agent_checkpoint
func agentCheckpoint() int32 {
	armed := n > armAt
	switch {
	case armed && mode == "loop-checkpoint":
		spin()
	case armed && mode == "panic-checkpoint":
		panic("hostile: deliberate panic in agent_checkpoint at tick " + strconv.FormatUint(n, 10))
	case armed && mode == "oversize-checkpoint":
		big = make([]byte, 64<<10) // a real buffer, above max_state_bytes
		return int32(len(big))
	case armed && mode == "negative-checkpoint":
		return -1
	case armed && mode == "oob-checkpoint":
		return 64
	}
	binary.LittleEndian.PutUint64(ckpt[:], n)
	return int32(len(ckpt))
}

//go:wasmexport agent_checkpoint_ptr
func agentCheckpointPtr() uint32 {
	switch {
	case n > armAt && mode == "oversize-checkpoint":
		return uint32(uintptr(unsafe.Pointer(&big[0])))
	case n > armAt && mode == "oob-checkpoint":
		return 0xffffffe0 // [ptr, ptr+64) crosses 4 GiB: outside any memory
	}
	return uint32(uintptr(unsafe.Pointer(&ckpt[0])))
}

//go:wasmexport agent_alloc
func agentAlloc(size uint32) uint32 {
	if mode == "bad-alloc" {
		return 0x7fff0000 // far beyond linear memory
	}
	b := make([]byte, size)
	pending = append(pending, b)
	return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
}

//go:wasmexport agent_resume
func agentResume(ptr unsafe.Pointer, size uint32) {
	defer func() { pending = nil }()
	var state uint64
	if size == 8 {
		state = binary.LittleEndian.Uint64(unsafe.Slice((*byte)(ptr), 8))
	} else if size != 0 {
		panic("hostile: resume state is " + strconv.Itoa(int(size)) + " bytes, want 8")
	}
	if size > 0 { // every resume carries state (Create commits checkpoint 0)
		switch mode {
		case "loop-resume":
			spin()
		case "panic-resume":
			panic("hostile: deliberate panic in agent_resume")
		case "grow-resume":
			for {
				b := make([]byte, 1<<20)
				for i := 0; i < len(b); i += 4096 {
					b[i] = 1
				}
				hog = append(hog, b)
			}
		}
	}
	n = state
}

func main() {}
