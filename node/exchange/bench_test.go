package exchange

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/igor-mesh/igor-node/contentstore"
)

const rawProto = "/igor/bench/raw/1.0.0"

// BenchmarkFetchDAG64MiB fetches a 64 MiB object (64 chunks + root) between
// two hosts on loopback into a fresh store each iteration (WithoutFsync),
// and in the same iteration copies 64 MiB over a plain libp2p stream between
// the same hosts on the same connection. ratio_to_raw = raw time / fetch time.
func BenchmarkFetchDAG64MiB(b *testing.B) {
	for _, tr := range []struct{ name, proto string }{{"tcp", "tcp"}, {"quic", "quic-v1"}} {
		b.Run(tr.name, func(b *testing.B) { benchFetch(b, tr.proto) })
	}
}

func benchFetch(b *testing.B, transport string) {
	const size = 64 << 20
	quiet := slog.New(slog.DiscardHandler)
	srcStore := newStore(b)
	payload := randBytes(b, size)
	root, err := srcStore.PutObjectBytes(payload)
	if err != nil {
		b.Fatal(err)
	}
	serverHost := newHost(b)
	server, err := New(serverHost, srcStore, WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { server.Close() })
	serverHost.SetStreamHandler(rawProto, func(s network.Stream) {
		defer s.Close()
		for off := 0; off < size; off += 1 << 20 {
			if _, err := s.Write(payload[off : off+1<<20]); err != nil {
				s.Reset()
				return
			}
		}
	})
	// Connect over the one transport under test only.
	to := peer.AddrInfo{ID: serverHost.ID()}
	for _, a := range serverHost.Addrs() {
		if _, err := a.ValueForProtocol(ma.ProtocolWithName(transport).Code); err == nil {
			to.Addrs = append(to.Addrs, a)
		}
	}
	client := newHost(b)
	if err := client.Connect(b.Context(), to); err != nil {
		b.Fatal(err)
	}
	from := []peer.AddrInfo{to}
	buf := make([]byte, 1<<20)

	var fetchTime, rawTime time.Duration
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		st, err := contentstore.Open(b.TempDir(), contentstore.WithoutFsync())
		if err != nil {
			b.Fatal(err)
		}
		ex, err := New(client, st, WithLogger(quiet), WithMaxInFlight(benchInFlight))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t0 := time.Now()
		stats, err := ex.FetchDAG(b.Context(), root, FetchOptions{From: from})
		fetchTime += time.Since(t0)
		b.StopTimer()
		if err != nil || stats.Fetched != 65 {
			b.Fatalf("FetchDAG: %+v, %v", stats, err)
		}
		ex.Close()
		st.Close()

		t0 = time.Now()
		s, err := client.NewStream(b.Context(), serverHost.ID(), rawProto)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			k, err := s.Read(buf)
			n += k
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		rawTime += time.Since(t0)
		s.Close()
		if n != size {
			b.Fatalf("raw stream: %d bytes", n)
		}
		if conns := client.Network().ConnsToPeer(serverHost.ID()); len(conns) != 1 {
			b.Fatalf("%d connections; the comparison needs one", len(conns))
		}
		b.StartTimer()
	}
	b.StopTimer()
	mb := float64(size) * float64(b.N) / 1e6
	b.ReportMetric(mb/rawTime.Seconds(), "raw_MB/s")
	b.ReportMetric(rawTime.Seconds()/fetchTime.Seconds(), "ratio_to_raw")
}
var benchInFlight = 64
