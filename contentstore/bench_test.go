package contentstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/internal/atomicfile"
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

// BenchmarkCommitShape prices one custody commit at one node as the node
// writes it: two small blocks (a ~1 KiB state, a ~600-byte checkpoint)
// and a ~100-byte lease-state record, durable before the commit returns,
// with W commits of different agents at once. Shapes: "files" (a file per
// block and per record, group flushes by syncfs where the platform has it:
// the node before D52), "pack" (blocks and the record in the pack, each
// durable), "pack-deferred" (blocks deferred, the record's flush covers
// them: the node now). Reported per commit: CPU time of the whole process
// (user+system, so kernel flush work in this process counts) and x_files,
// the ratio to the files shape measured in the same run.
func BenchmarkCommitShape(b *testing.B) {
	for _, writers := range []int{1, 8} {
		base := 0.0
		for _, shape := range []string{"files", "pack", "pack-deferred"} {
			b.Run(fmt.Sprintf("writers=%d/shape=%s", writers, shape), func(b *testing.B) {
				var opts []Option
				switch shape {
				case "pack":
					opts = append(opts, WithPack(0))
				case "pack-deferred":
					opts = append(opts, WithPack(0), WithDeferredPackSync())
				}
				s := newStore(b, opts...)
				dir := b.TempDir()
				state, cp, rec := randBytes(b, 1024), randBytes(b, 600), randBytes(b, 100)
				var next atomic.Int64
				commit := func(i int64) error {
					st := append(binary.LittleEndian.AppendUint64(nil, uint64(i)), state...)
					c := append(binary.LittleEndian.AppendUint64(nil, uint64(i)), cp...)
					if _, err := s.Put(cid.Raw, st); err != nil {
						return err
					}
					if _, err := s.Put(cid.Raw, c); err != nil {
						return err
					}
					key := fmt.Sprintf("rec%d", i%512)
					if shape == "files" {
						return atomicfile.WriteSynced(filepath.Join(dir, key), rec, 0o600, s.Syncer().For(dir))
					}
					return s.PutMeta(key, rec)
				}
				cpu0 := processCPU()
				b.ResetTimer()
				var wg sync.WaitGroup
				errs := make(chan error, writers)
				for range writers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							i := next.Add(1)
							if i > int64(b.N) {
								return
							}
							if err := commit(i); err != nil {
								errs <- err
								return
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
				perCommit := float64((processCPU() - cpu0).Microseconds()) / float64(b.N)
				b.ReportMetric(perCommit, "cpu_us/commit")
				if shape == "files" {
					base = perCommit
				} else if base > 0 {
					b.ReportMetric(perCommit/base, "x_files")
				}
			})
		}
	}
}

// processCPU is this process's user+system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPackChurn writes b.N packed blocks the size of a checkpoint and
// its small state (300–1,000 bytes, part random: about the 1.45× snappy
// ratio of a real node's pack), under random CIDs as a node's are, every
// 20th durable, as deferred blocks are flushed by their commit. It then
// waits for the pack's compactions to finish, so their CPU counts:
// cpu_us/put is the whole process's user+system time per block, and x_4MiB
// the ratio to Pebble's default 4 MiB memtable measured in the same run
// (DECISIONS D76). Run with a fixed count (make bench: 300000x): the cost
// of a compaction grows with what is stored.
func BenchmarkPackChurn(b *testing.B) {
	base := 0.0
	for _, mem := range []uint64{4 << 20, packMemTable} {
		b.Run(fmt.Sprintf("memtable=%dMiB", mem>>20), func(b *testing.B) {
			s := newStore(b, WithPack(0), WithDeferredPackSync(), func(c *config) error { c.packMemTable = mem; return nil })
			vals := make([][]byte, 701)
			for i := range vals {
				v := make([]byte, 300+i)
				copy(v, randBytes(b, len(v)*3/4))
				vals[i] = v
			}
			cpu0 := processCPU()
			b.ResetTimer()
			for i := range b.N {
				// A distinct block per put: the counter in its first bytes.
				v := vals[i%len(vals)]
				binary.LittleEndian.PutUint64(v, uint64(i))
				if _, err := s.Put(cid.Raw, v); err != nil {
					b.Fatal(err)
				}
				if i%20 == 19 {
					if err := s.Sync(); err != nil {
						b.Fatal(err)
					}
				}
			}
			for quiet := 0; quiet < 4; {
				time.Sleep(250 * time.Millisecond)
				if s.pack.db.Metrics().Compact.NumInProgress == 0 {
					quiet++
				} else {
					quiet = 0
				}
			}
			b.StopTimer()
			perPut := float64((processCPU() - cpu0).Nanoseconds()) / 1e3 / float64(b.N)
			b.ReportMetric(perPut, "cpu_us/put")
			var written uint64
			for _, l := range s.pack.db.Metrics().Levels {
				written += l.TableBytesFlushed + l.TableBytesCompacted
			}
			b.ReportMetric(float64(written)/float64(b.N), "table_B/put")
			if mem == 4<<20 {
				base = perPut
			} else if base > 0 {
				b.ReportMetric(perPut/base, "x_4MiB")
			}
		})
	}
}
