package exchange

import (
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
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
//
// The raw copy touches no disk, while the fetch must write 64 MiB of block
// files (and hash everything three times: server read, arrival, PutBlock).
// So each iteration also times the receiver's floor: PutBlock of the same 65
// blocks from memory into a fresh store, with the fetch's storer parallelism.
// ratio_to_store_floor = floor time / fetch time (1.0: the network costs
// nothing on top of storing).
//
// The "mem" variants fetch into an in-memory block store (which re-hashes on
// PutBlock like the disk store) to show the protocol's own cost apart from
// the file system's.
func BenchmarkFetchDAG64MiB(b *testing.B) {
	for _, tr := range []struct{ name, proto string }{{"tcp", "tcp"}, {"quic", "quic-v1"}} {
		b.Run(tr.name, func(b *testing.B) { benchFetch(b, tr.proto, false) })
		b.Run(tr.name+"-mem", func(b *testing.B) { benchFetch(b, tr.proto, true) })
	}
}

// memStore is an in-memory Blockstore that verifies like contentstore.
type memStore struct {
	mu sync.Mutex
	m  map[cid.Cid][]byte
}

func (s *memStore) Has(c cid.Cid) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[c]
	return ok, nil
}

func (s *memStore) Get(c cid.Cid) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, ok := s.m[c]; ok {
		return d, nil
	}
	return nil, contentstore.ErrNotFound
}

func (s *memStore) PutBlock(c cid.Cid, data []byte) error {
	if err := verify(c, data); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[c] = data
	return nil
}

func benchFetch(b *testing.B, transport string, inMemory bool) {
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
	cids, err := srcStore.ObjectCIDs(root)
	if err != nil {
		b.Fatal(err)
	}
	blocks := make([][]byte, len(cids))
	for i, c := range cids {
		if blocks[i], err = srcStore.Get(c); err != nil {
			b.Fatal(err)
		}
	}

	var fetchTime, rawTime, floorTime time.Duration
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		var bs Blockstore = &memStore{m: make(map[cid.Cid][]byte)}
		if !inMemory {
			st, err := contentstore.Open(b.TempDir(), contentstore.WithoutFsync())
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			bs = st
		}
		ex, err := New(client, bs, WithLogger(quiet))
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

		st, err := contentstore.Open(b.TempDir(), contentstore.WithoutFsync())
		if err != nil {
			b.Fatal(err)
		}
		t0 = time.Now()
		var wg sync.WaitGroup
		for k := range storers {
			wg.Go(func() {
				for j := k; j < len(cids); j += storers {
					if err := st.PutBlock(cids[j], blocks[j]); err != nil {
						b.Error(err)
					}
				}
			})
		}
		wg.Wait()
		floorTime += time.Since(t0)
		st.Close()
		b.StartTimer()
	}
	b.StopTimer()
	mb := float64(size) * float64(b.N) / 1e6
	b.ReportMetric(mb/rawTime.Seconds(), "raw_MB/s")
	b.ReportMetric(rawTime.Seconds()/fetchTime.Seconds(), "ratio_to_raw")
	b.ReportMetric(mb/floorTime.Seconds(), "store_floor_MB/s")
	b.ReportMetric(floorTime.Seconds()/fetchTime.Seconds(), "ratio_to_store_floor")
}
