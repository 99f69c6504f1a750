package agents

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha512"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/oasisprotocol/curve25519-voi/curve"
	"github.com/oasisprotocol/curve25519-voi/curve/scalar"
)

// sigCase builds signatures by hand, so that the edge cases of Ed25519
// verification — keys and R of small or mixed order, non-canonical
// encodings, S not reduced — can be made and both verifiers asked.
type sigCase struct {
	rng *rand.ChaCha8
}

func (c *sigCase) scalar() *scalar.Scalar {
	var b [64]byte
	c.rng.Read(b[:])
	s, err := scalar.New().SetBytesModOrderWide(b[:])
	if err != nil {
		panic(err)
	}
	return s
}

func pointBytes(p *curve.EdwardsPoint) []byte {
	var c curve.CompressedEdwardsY
	c.SetEdwardsPoint(p)
	return c[:]
}

func decodePoint(b []byte) *curve.EdwardsPoint {
	c, err := curve.NewCompressedEdwardsYFromBytes(b)
	if err != nil {
		panic(err)
	}
	p, err := curve.NewEdwardsPoint().SetCompressedY(c)
	if err != nil {
		panic(err)
	}
	return p
}

func challenge(r, a, msg []byte) *scalar.Scalar {
	h := sha512.New()
	h.Write(r)
	h.Write(a)
	h.Write(msg)
	k, err := scalar.New().SetBytesModOrderWide(h.Sum(nil))
	if err != nil {
		panic(err)
	}
	return k
}

func scalarBytes(s *scalar.Scalar) []byte {
	b := make([]byte, 32)
	if err := s.ToBytes(b); err != nil {
		panic(err)
	}
	return b
}

// sign signs msg as the key with bytes aBytes and secret scalar a, with R
// given as bytes rBytes of the point [r]B (+ what the caller added): S =
// r + k·a, k = H(R || A || msg).
func sign(aBytes []byte, a *scalar.Scalar, rBytes []byte, r *scalar.Scalar, msg []byte) []byte {
	k := challenge(rBytes, aBytes, msg)
	s := scalar.New().Mul(k, a)
	s.Add(s, r)
	return append(append([]byte{}, rBytes...), scalarBytes(s)...)
}

// TestVerifySigMatchesStdlib: verifySig (curve25519-voi) answers as
// crypto/ed25519 does for valid signatures, for tampered ones, and for each
// edge case where Ed25519 verifiers are known to differ.
func TestVerifySigMatchesStdlib(t *testing.T) {
	c := &sigCase{rng: rand.NewChaCha8([32]byte{1})}
	msg := []byte("a checkpoint's signing bytes")
	identity := pointBytes(curve.NewEdwardsPoint().Identity())
	order4 := make([]byte, 32) // y = 0: the point (sqrt(-1), 0), of order 4
	// y = p + 1 (p = 2^255 - 19): a non-canonical encoding of y = 1, the identity.
	nonCanonicalIdentity := make([]byte, 32)
	for i := range nonCanonicalIdentity {
		nonCanonicalIdentity[i] = 0xff
	}
	nonCanonicalIdentity[0], nonCanonicalIdentity[31] = 0xee, 0x7f
	// L, the group order, to make S non-canonical (S + L).
	order := [32]byte{0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 31: 0x10}
	addL := func(sig []byte) []byte {
		out := append([]byte{}, sig...)
		carry := 0
		for i := range 32 {
			v := int(out[32+i]) + int(order[i]) + carry
			out[32+i], carry = byte(v), v>>8
		}
		return out
	}
	type kase struct {
		name     string
		pub, sig []byte
	}
	var cases []kase
	accepted, refused := 0, 0
	for i := range 64 {
		a, r := c.scalar(), c.scalar()
		A := curve.NewEdwardsPoint().MulBasepoint(curve.ED25519_BASEPOINT_TABLE, a)
		R := curve.NewEdwardsPoint().MulBasepoint(curve.ED25519_BASEPOINT_TABLE, r)
		aB, rB := pointBytes(A), pointBytes(R)
		valid := sign(aB, a, rB, r, msg)
		cases = append(cases, kase{"valid", aB, valid}, kase{"S + L", aB, addL(valid)})
		// Mixed order: A' = A + T (T of order 4). Cofactorless verifiers
		// (the standard library) accept only when 4 divides k.
		mixed := curve.NewEdwardsPoint().Add(A, decodePoint(order4))
		mB := pointBytes(mixed)
		cases = append(cases, kase{"mixed-order A", mB, sign(mB, a, rB, r, msg)})
		// Small-order R: the identity, S = k·a.
		k := challenge(identity, aB, msg)
		cases = append(cases, kase{"identity R", aB, append(append([]byte{}, identity...), scalarBytes(scalar.New().Mul(k, a))...)})
		kn := challenge(nonCanonicalIdentity, aB, msg)
		cases = append(cases, kase{"non-canonical R", aB, append(append([]byte{}, nonCanonicalIdentity...), scalarBytes(scalar.New().Mul(kn, a))...)})
		// Small-order and non-canonical keys: [S]B - [k]A = [r]B when A has
		// small order and 4 divides k (or A is the identity).
		zero := scalar.New()
		for _, sa := range []struct {
			name string
			b    []byte
		}{{"identity A", identity}, {"order-4 A", order4}, {"non-canonical A", nonCanonicalIdentity}} {
			cases = append(cases, kase{sa.name, sa.b, sign(sa.b, zero, rB, r, msg)})
		}
		// Tampering: a random bit of the key or the signature.
		pub, sig := append([]byte{}, aB...), append([]byte{}, valid...)
		if i%2 == 0 {
			pub[c.rng.Uint64()%32] ^= 1 << (c.rng.Uint64() % 8)
		} else {
			sig[c.rng.Uint64()%64] ^= 1 << (c.rng.Uint64() % 8)
		}
		cases = append(cases, kase{"tampered", pub, sig}, kase{"short signature", aB, valid[:63]})
	}
	byName := map[string][2]int{}
	for _, k := range cases {
		want := ed25519.Verify(k.pub, msg, k.sig)
		if got := verifySig(k.pub, msg, k.sig); got != want {
			t.Errorf("%s: verifySig %v, crypto/ed25519 %v (key %x, sig %x)", k.name, got, want, k.pub, k.sig)
		}
		n := byName[k.name]
		if want {
			accepted++
			n[0]++
		} else {
			refused++
			n[1]++
		}
		byName[k.name] = n
	}
	t.Logf("accepted/refused by case: %v", byName)
	// The cases must exercise both answers where verifiers differ: a
	// cofactorless verifier accepts a mixed-order key's signature only
	// for some k, and refuses S + L and a non-canonical R.
	if n := byName["mixed-order A"]; n[0] == 0 || n[1] == 0 {
		t.Fatalf("mixed-order keys: %d accepted, %d refused; the case must show both", n[0], n[1])
	}
	if byName["valid"][0] != 64 || byName["S + L"][1] != 64 || byName["non-canonical R"][1] != 64 {
		t.Fatalf("cases are not what they claim: %v", byName)
	}
	if verifySig(make([]byte, 31), msg, make([]byte, 64)) {
		t.Fatal("a 31-byte key verified")
	}
}

// BenchmarkVerifySig: a checkpoint signature's verification by
// verifySig against crypto/ed25519.Verify, the same keys, in the same
// run. Metrics: stdlib-us, voi-us, x-stdlib (voi ÷ stdlib).
func BenchmarkVerifySig(b *testing.B) {
	msg := make([]byte, 600)
	type ks struct{ pub, sig []byte }
	var keys []ks
	for i := range 64 {
		pub, priv, _ := ed25519.GenerateKey(nil)
		msg[0] = byte(i)
		keys = append(keys, ks{pub, ed25519.Sign(priv, msg)})
	}
	var std, voi time.Duration
	for i := 0; b.Loop(); i++ {
		k := keys[i%64]
		msg[0] = byte(i % 64)
		t0 := time.Now()
		ok1 := ed25519.Verify(k.pub, msg, k.sig)
		t1 := time.Now()
		ok2 := verifySig(k.pub, msg, k.sig)
		voi += time.Since(t1)
		std += t1.Sub(t0)
		if !ok1 || !ok2 {
			b.Fatal("a valid signature refused")
		}
	}
	b.ReportMetric(float64(std.Nanoseconds())/1e3/float64(b.N), "stdlib-us")
	b.ReportMetric(float64(voi.Nanoseconds())/1e3/float64(b.N), "voi-us")
	b.ReportMetric(float64(voi)/float64(std), "x-stdlib")
}

// TestSignMsgMatchesStdlib: signMsg's signatures are crypto/ed25519's,
// byte for byte (Ed25519 signing is deterministic), for keys and messages
// of many sizes.
func TestSignMsgMatchesStdlib(t *testing.T) {
	rng := rand.NewChaCha8([32]byte{2})
	for i := range 200 {
		var seed [ed25519.SeedSize]byte
		rng.Read(seed[:])
		priv := ed25519.NewKeyFromSeed(seed[:])
		msg := make([]byte, i*13)
		rng.Read(msg)
		want := ed25519.Sign(priv, msg)
		got := signMsg(priv, msg)
		if !bytes.Equal(got, want) {
			t.Fatalf("message of %d bytes: signMsg %x, crypto/ed25519 %x", len(msg), got, want)
		}
		if !verifySig(priv.Public().(ed25519.PublicKey), msg, got) {
			t.Fatalf("message of %d bytes: its signature does not verify", len(msg))
		}
	}
}

// BenchmarkSignMsg: signMsg against crypto/ed25519.Sign, the same key, in
// the same run. Metrics: stdlib-us, voi-us, x-stdlib.
func BenchmarkSignMsg(b *testing.B) {
	_, priv, _ := ed25519.GenerateKey(nil)
	msg := make([]byte, 600)
	var std, voi time.Duration
	for b.Loop() {
		t0 := time.Now()
		ed25519.Sign(priv, msg)
		t1 := time.Now()
		signMsg(priv, msg)
		voi += time.Since(t1)
		std += t1.Sub(t0)
	}
	b.ReportMetric(float64(std.Nanoseconds())/1e3/float64(b.N), "stdlib-us")
	b.ReportMetric(float64(voi.Nanoseconds())/1e3/float64(b.N), "voi-us")
	b.ReportMetric(float64(voi)/float64(std), "x-stdlib")
}
