package agents

import (
	"crypto/ed25519"
	"testing"
	"time"
)

// Each benchmark also measures, in the same run, the bare Ed25519 cost of
// the same work (two signatures or two verifications per checkpoint) and
// reports the ratio: how much the encoding and checks add on top.

func BenchmarkCheckpointEncodeSign(b *testing.B) {
	f := newFixture(b, 2)
	tmpl := f.cp(1)
	holder := f.holderFor(b, tmpl)
	msg, _ := tmpl.signingBytes()
	base := timePerOp(2000, func() {
		ed25519.Sign(f.agentKey, msg)
		ed25519.Sign(holder, msg)
	})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cp := *tmpl
		cp.Tick += uint64(i)
		if err := cp.Sign(f.agentKey, holder); err != nil {
			b.Fatal(err)
		}
		if _, _, err := cp.Encode(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	per := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(per/float64(base.Nanoseconds()), "x-bare-sign")
}

func BenchmarkDecodeVerifyCheckpoint(b *testing.B) {
	f := newFixture(b, 2)
	data := f.store[f.head()]
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		cp, err := DecodeCheckpoint(data)
		if err != nil {
			b.Fatal(err)
		}
		if err := cp.Verify(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyLineage(b *testing.B) {
	const n = 1000
	f := newFixture(b, n)
	cp := f.cp(n - 1)
	msg, _ := cp.signingBytes()
	agentPub, holderPub := pubOf(f.agentKey), pubOf(f.holderFor(b, cp))
	base := timePerOp(2000, func() {
		ed25519.Verify(agentPub, msg, cp.AgentSig)
		ed25519.Verify(holderPub, msg, cp.HolderSig)
	})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		lin, err := VerifyLineage(f.head(), f.store, VerifyOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if len(lin.Entries) != n {
			b.Fatalf("%d entries", len(lin.Entries))
		}
	}
	b.StopTimer()
	perCP := float64(b.Elapsed().Nanoseconds()) / float64(b.N) / n
	b.ReportMetric(perCP, "ns/checkpoint")
	b.ReportMetric(perCP/float64(base.Nanoseconds()), "x-bare-verify")
}

func timePerOp(n int, fn func()) time.Duration {
	start := time.Now()
	for i := 0; i < n; i++ {
		fn()
	}
	return time.Since(start) / time.Duration(n)
}
