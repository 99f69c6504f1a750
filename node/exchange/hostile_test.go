package exchange

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
)

// A tampering peer answers every request with the right length but one
// flipped bit. Its blocks are rejected before they are stored, it is logged
// with its peer ID and the CID, and the block comes from an honest provider.
func TestTamperingPeer(t *testing.T) {
	honest := newNode(t)
	data := randBytes(t, 200<<10)
	good, err := honest.st.Put(cid.Raw, data)
	if err != nil {
		t.Fatal(err)
	}
	only := rawCID(t, []byte("only the liar claims this one")) // nobody has it
	liar := newHost(t)
	serveHostile(liar, func(_ network.Stream, bw *bufio.Writer, req []cid.Cid) bool {
		for range req {
			lie := bytes.Clone(data)
			lie[len(lie)/2] ^= 1
			if writeBlock(bw, lie) != nil {
				return false
			}
		}
		return true
	})
	var logs syncBuffer
	st := newStore(t)
	ex, err := New(newHost(t), st, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ex.Close() })

	// Liar first, then the honest node: the fetch still succeeds.
	stats, err := ex.FetchDAG(t.Context(), good, FetchOptions{From: []peer.AddrInfo{info(liar), honest.info()}})
	if err != nil {
		t.Fatalf("FetchDAG with an honest provider: %v", err)
	}
	if len(stats.BadPeers) != 1 || stats.BadPeers[0] != liar.ID() || stats.Peers[honest.h.ID()] != 1 || stats.Peers[liar.ID()] != 0 {
		t.Errorf("stats %+v: want the liar as the only bad peer and the block from the honest one", stats)
	}
	if got, err := st.Get(good); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored block: %v", err)
	}
	if l := logs.String(); !strings.Contains(l, liar.ID().String()) || !strings.Contains(l, good.String()) || !strings.Contains(l, "level=WARN") {
		t.Errorf("log does not name the liar and the CID at Warn:\n%s", l)
	}

	// Only the liar: the fetch fails naming the CID and the peer, and
	// nothing is stored under the CID.
	_, err = ex.Fetch(t.Context(), only, info(liar))
	if !errors.Is(err, ErrBadPeer) || !errors.Is(err, ErrNotFound) {
		t.Fatalf("Fetch from the liar alone: %v; want ErrBadPeer and ErrNotFound", err)
	}
	if msg := err.Error(); !strings.Contains(msg, only.String()) || !strings.Contains(msg, liar.ID().String()) {
		t.Errorf("error does not name the CID and the peer: %v", err)
	}
	if has, _ := st.Has(only); has {
		t.Error("a block was stored under the CID the liar answered for")
	}
}

// A stalling peer accepts the stream and never answers: the fetch gives up
// on it at Timeouts.Idle and moves on. After everything is closed, no
// goroutine is left behind.
func TestStallingPeer(t *testing.T) {
	// libp2p starts some process-wide goroutines with the first host; start
	// them before the baseline.
	warm := newHost(t)
	warm.Close()
	baseline := stableGoroutines()

	const idle = 300 * time.Millisecond
	honest := newNode(t)
	data := randBytes(t, 100<<10)
	good, err := honest.st.Put(cid.Raw, data)
	if err != nil {
		t.Fatal(err)
	}
	stall := newHost(t)
	serveHostile(stall, func(s network.Stream, _ *bufio.Writer, _ []cid.Cid) bool {
		io.Copy(io.Discard, s) // never answer; ends when the client resets
		return false
	})
	client := newNode(t, WithTimeouts(Timeouts{Idle: idle}))

	start := time.Now()
	stats, err := client.ex.FetchDAG(t.Context(), good, FetchOptions{From: []peer.AddrInfo{info(stall), honest.info()}})
	took := time.Since(start)
	if err != nil {
		t.Fatalf("FetchDAG: %v", err)
	}
	if took < idle || took > 10*time.Second {
		t.Errorf("fetch took %v; want the %v stall timeout, then the honest peer", took, idle)
	}
	if len(stats.BadPeers) != 0 || stats.Peers[honest.h.ID()] != 1 {
		t.Errorf("stats %+v: a staller is not a liar; the block must come from the honest peer", stats)
	}

	missing := rawCID(t, []byte("stalled"))
	start = time.Now()
	_, err = client.ex.Fetch(t.Context(), missing, info(stall))
	took = time.Since(start)
	if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrBadPeer) || !strings.Contains(err.Error(), "Timeouts.Idle") ||
		!strings.Contains(err.Error(), stall.ID().String()) || !strings.Contains(err.Error(), missing.String()) {
		t.Fatalf("Fetch from a staller: %v; want ErrNotFound naming the timeout, the peer and the CID", err)
	}
	if took < idle || took > 10*time.Second {
		t.Errorf("stalled Fetch took %v, want about %v", took, idle)
	}

	client.ex.Close()
	honest.ex.Close()
	for _, h := range []interface{ Close() error }{client.h, honest.h, stall} {
		h.Close()
	}
	settleGoroutines(t, baseline)
}

// stableGoroutines polls runtime.NumGoroutine until it stops changing.
func stableGoroutines() int {
	n := runtime.NumGoroutine()
	for range 100 {
		time.Sleep(20 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m == n {
			return n
		}
		n = m
	}
	return n
}

// A peer announcing a block larger than MaxBlockSize is cut off at the
// length prefix with ErrTooLarge and marked bad.
func TestOversizeBlock(t *testing.T) {
	honest := newNode(t)
	good, err := honest.st.Put(cid.Raw, randBytes(t, 1000))
	if err != nil {
		t.Fatal(err)
	}
	big := newHost(t)
	serveHostile(big, func(s network.Stream, bw *bufio.Writer, _ []cid.Cid) bool {
		bw.WriteByte(statusBlock)
		bw.Write(binary.AppendUvarint(nil, MaxBlockSize+1))
		for range 8 { // and keep sending: the client must not read it
			if _, err := bw.Write(make([]byte, 64<<10)); err != nil {
				return false
			}
		}
		return true
	})
	client := newNode(t)

	stats, err := client.ex.FetchDAG(t.Context(), good, FetchOptions{From: []peer.AddrInfo{info(big)}})
	if !errors.Is(err, ErrTooLarge) || !errors.Is(err, ErrBadPeer) || !errors.Is(err, ErrNotFound) {
		t.Fatalf("FetchDAG from an oversize peer: %v; want ErrTooLarge, ErrBadPeer, ErrNotFound", err)
	}
	if len(stats.BadPeers) != 1 || stats.BadPeers[0] != big.ID() {
		t.Errorf("bad peers %v, want %s", stats.BadPeers, big.ID())
	}
	if has, _ := client.st.Has(good); has {
		t.Error("block stored")
	}
	// The next session asks the peer that just failed last: the honest
	// one delivers, the oversize one is not asked again.
	stats, err = client.ex.FetchDAG(t.Context(), good, FetchOptions{From: []peer.AddrInfo{info(big), honest.info()}})
	if err != nil || len(stats.BadPeers) != 0 || stats.Fetched != 1 || stats.Peers[honest.h.ID()] != 1 {
		t.Errorf("with an honest peer too: %+v, %v", stats, err)
	}
}

// A block that hashes to its CID but is not valid DAG-CBOR is the block's
// fault, not the peer's: the fetch fails naming the block.
func TestUndecodableBlock(t *testing.T) {
	junk := []byte{0xff, 0x00}
	c, err := cid.Prefix{Version: 1, Codec: cid.DagCBOR, MhType: mh.SHA2_256, MhLength: -1}.Sum(junk)
	if err != nil {
		t.Fatal(err)
	}
	srv := newHost(t)
	serveHostile(srv, func(_ network.Stream, bw *bufio.Writer, req []cid.Cid) bool {
		for range req {
			writeBlock(bw, junk)
		}
		return true
	})
	client := newNode(t)
	stats, err := client.ex.FetchDAG(t.Context(), c, FetchOptions{From: []peer.AddrInfo{info(srv)}})
	if err == nil || errors.Is(err, ErrBadPeer) || !strings.Contains(err.Error(), c.String()) || len(stats.BadPeers) != 0 {
		t.Fatalf("FetchDAG of an undecodable block: %v (bad peers %v)", err, stats.BadPeers)
	}
	if has, _ := client.st.Has(c); has {
		t.Error("undecodable block stored")
	}
}

// Garbage requests get the stream reset (code: protocol violation), and the
// server goes on serving everyone.
func TestServerRejectsGarbage(t *testing.T) {
	server := newNode(t)
	data := randBytes(t, 5000)
	good, err := server.st.Put(cid.Raw, data)
	if err != nil {
		t.Fatal(err)
	}
	attacker := newHost(t)
	rng := mrand.New(mrand.NewPCG(1, 2))
	random := make([]byte, 2048)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	body := func(version byte, n int) []byte {
		b := binary.AppendUvarint([]byte{version}, uint64(n))
		for range n {
			b = binary.AppendUvarint(b, uint64(len(good.Bytes())))
			b = append(b, good.Bytes()...)
		}
		return b
	}
	frame := func(b []byte) []byte { return append(binary.AppendUvarint(nil, uint64(len(b))), b...) }
	valid := mustRequest(t, good)
	cases := map[string][]byte{
		"random bytes":      random,
		"oversized request": append(binary.AppendUvarint(nil, MaxRequestSize+1), make([]byte, 100)...),
		"too many CIDs":     frame(body(wireVersion, MaxRequestCIDs+1)),
		"unknown version":   frame(body(2, 1)),
		"empty body":        {0},
		"zero CIDs":         frame(body(wireVersion, 0)),
		"overlong varint":   append([]byte{0x80 | byte(len(valid)-1), 0x00}, valid[1:]...),
		"trailing bytes":    frame(append(body(wireVersion, 1), 7)),
		"bad CID":           frame([]byte{wireVersion, 1, 3, 1, 2, 3}),
		"truncated body":    valid[:len(valid)-5],
	}
	for name, b := range cases {
		s := rawRequest(t, attacker, server.info(), b)
		s.CloseWrite()
		_, err := io.ReadAll(s)
		var se *network.StreamError
		if !errors.Is(err, network.ErrReset) || !errors.As(err, &se) || !se.Remote || se.ErrorCode != network.StreamProtocolViolation {
			t.Errorf("%s: read %v; want a remote reset with code protocol violation", name, err)
		}
	}
	// Still serving, the attacker included, on one stream for two rounds.
	s := rawRequest(t, attacker, server.info(), valid)
	br := bufio.NewReader(s)
	for round := range 2 {
		if round == 1 {
			s.Write(valid)
		}
		got, have, err := readResponse(br, MaxBlockSize)
		if err != nil || !have || !bytes.Equal(got, data) {
			t.Fatalf("round %d after garbage: have %v, %v", round, have, err)
		}
	}
	s.CloseWrite()
	if rest, err := io.ReadAll(s); err != nil || len(rest) != 0 {
		t.Errorf("after the client closes, the server closes cleanly: %d bytes, %v", len(rest), err)
	}
	client := newNode(t)
	if _, err := client.ex.Fetch(t.Context(), good, server.info()); err != nil {
		t.Fatalf("Fetch from the server after garbage: %v", err)
	}
}

// The server serves at most perPeer streams from one peer and total
// streams overall; excess streams are reset with "resource limit exceeded".
func TestStreamLimits(t *testing.T) {
	const perPeer, total = 4, 5
	server := newNode(t, WithStreamLimits(perPeer, total))
	data := randBytes(t, 1000)
	good, err := server.st.Put(cid.Raw, data)
	if err != nil {
		t.Fatal(err)
	}
	req := mustRequest(t, good)
	served := func(s network.Stream) error {
		got, have, err := readResponse(bufio.NewReader(s), MaxBlockSize)
		if err == nil && (!have || !bytes.Equal(got, data)) {
			err = errors.New("wrong answer")
		}
		return err
	}
	refused := func(name string, s network.Stream) {
		t.Helper()
		_, _, err := readResponse(bufio.NewReader(s), MaxBlockSize)
		var se *network.StreamError
		if !errors.As(err, &se) || !se.Remote || se.ErrorCode != network.StreamResourceLimitExceeded {
			t.Errorf("%s: %v; want a remote reset with code resource limit exceeded", name, err)
		}
	}
	a, b := newHost(t), newHost(t)
	var held []network.Stream
	for i := range perPeer {
		s := rawRequest(t, a, server.info(), req)
		if err := served(s); err != nil {
			t.Fatalf("stream %d of peer a: %v", i, err)
		}
		held = append(held, s) // stays open: the server keeps the slot
	}
	refused("peer a, one stream too many", rawRequest(t, a, server.info(), req))
	sb := rawRequest(t, b, server.info(), req)
	if err := served(sb); err != nil {
		t.Fatalf("peer b's first stream: %v", err)
	}
	refused("peer b, over the total", rawRequest(t, b, server.info(), req))

	// Closing a stream frees its slot.
	held[0].Close()
	waitFor(t, "a freed slot", func() bool {
		s := rawRequest(t, a, server.info(), req)
		defer s.Close()
		return served(s) == nil
	})
}

// Cancelling the context stops FetchDAG promptly, also while a peer stalls
// under a long idle timeout.
func TestFetchDAGCancel(t *testing.T) {
	stall := newHost(t)
	got := make(chan struct{}, 1)
	serveHostile(stall, func(s network.Stream, _ *bufio.Writer, _ []cid.Cid) bool {
		select {
		case got <- struct{}{}:
		default:
		}
		io.Copy(io.Discard, s)
		return false
	})
	client := newNode(t) // default Idle: 30 s
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := client.ex.FetchDAG(ctx, rawCID(t, []byte("never")), FetchOptions{From: []peer.AddrInfo{info(stall)}})
		errc <- err
	}()
	<-got
	start := time.Now()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("FetchDAG after cancel: %v, want context.Canceled", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("FetchDAG returned %v after cancel", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("FetchDAG did not return after cancel")
	}
}

// A server at its stream limit refuses with "resource limit exceeded"; the
// client treats that as busy and asks again with backoff instead of giving
// the peer up, and gives up with a clear error if it stays busy.
func TestBusyServerIsRetried(t *testing.T) {
	var logs syncBuffer
	server := newNode(t, WithStreamLimits(1, 1), WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	data := randBytes(t, 1000)
	good, err := server.st.Put(cid.Raw, data)
	if err != nil {
		t.Fatal(err)
	}
	other, err := server.st.Put(cid.Raw, randBytes(t, 1000))
	if err != nil {
		t.Fatal(err)
	}
	// Someone else holds the server's only stream.
	hog := newHost(t)
	hold := func() network.Stream {
		s := rawRequest(t, hog, server.info(), mustRequest(t, good))
		if _, have, err := readResponse(bufio.NewReader(s), MaxBlockSize); err != nil || !have {
			t.Fatalf("hog's stream: %v", err)
		}
		return s
	}
	held := hold()
	client := newNode(t)

	// Stays busy: the fetch gives up after its retries, saying why.
	_, err = client.ex.Fetch(t.Context(), other, server.info())
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("Fetch from a server that stays busy: %v", err)
	}

	// Becomes free while the client backs off: the fetch succeeds.
	refusals := strings.Count(logs.String(), "refusing block stream")
	errc := make(chan error, 1)
	go func() {
		_, err := client.ex.FetchDAG(t.Context(), good, FetchOptions{From: []peer.AddrInfo{server.info()}})
		errc <- err
	}()
	waitFor(t, "a refusal", func() bool { return strings.Count(logs.String(), "refusing block stream") > refusals })
	held.Close()
	if err := <-errc; err != nil {
		t.Fatalf("FetchDAG once the server is free: %v", err)
	}
}
