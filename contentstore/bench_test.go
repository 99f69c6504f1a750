package contentstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
)

// sha256NsPerOp measures plain sha256.Sum256 over data on this machine, now:
// the baseline for the x_sha256 metric (how many "just hash it" costs one
// store operation is).
func sha256NsPerOp(data []byte) float64 {
	var sink [32]byte
	n := 0
	start := time.Now()
	for time.Since(start) < 50*time.Millisecond || n < 3 {
		sink = sha256.Sum256(data)
		n++
	}
	_ = sink
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}

// BenchmarkPutObject stores a fresh object per iteration (a counter is
// written into every chunk so nothing hits the "already stored" path), with
// and without fsync. Blocks are deleted between iterations, untimed, for
// objects of 64 KiB and up, so the disk does not fill.
func BenchmarkPutObject(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 10, 1 << 20, 16 << 20} {
		for _, fsync := range []bool{true, false} {
			name := fmt.Sprintf("size=%s/fsync=%v", sizeName(size), fsync)
			b.Run(name, func(b *testing.B) {
				var opts []Option
				if !fsync {
					opts = append(opts, WithoutFsync())
				}
				s := newStore(b, opts...)
				data := randBytes(b, size)
				base := sha256NsPerOp(data)
				b.SetBytes(int64(size))
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					for off := 0; off+8 <= len(data); off += ChunkSize {
						binary.LittleEndian.PutUint64(data[off:], uint64(i))
					}
					root, _, err := s.PutObject(bytes.NewReader(data))
					if err != nil {
						b.Fatal(err)
					}
					if size >= 64<<10 {
						b.StopTimer()
						cids, err := s.ObjectCIDs(root)
						if err != nil {
							b.Fatal(err)
						}
						for _, c := range cids {
							if err := s.Delete(c); err != nil {
								b.Fatal(err)
							}
						}
						b.StartTimer()
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/base, "x_sha256")
			})
		}
	}
}

// BenchmarkGet reads and verifies one 1 MiB block (from the page cache).
func BenchmarkGet(b *testing.B) {
	s := newStore(b, WithoutFsync())
	data := randBytes(b, MaxBlockSize)
	c, err := s.Put(cid.Raw, data)
	if err != nil {
		b.Fatal(err)
	}
	base := sha256NsPerOp(data)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Get(c); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/base, "x_sha256")
}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dKiB", n>>10)
}
