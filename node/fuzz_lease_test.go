package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// FuzzLeaseMessage: the length-prefixed JSON of the lease protocol
// (/igor/lease/1.0.0), read as both message kinds it carries — the custody
// offer a host receives and the reply the publisher receives. Rejects wrap
// ErrBadMessage; what is accepted writes back (writeMsg) to a frame that
// reads back and re-encodes to the same bytes, so a peer can never send something this node
// would itself encode differently. The one exception: a frame near the cap
// whose JSON escaping grows it past the cap is refused by writeMsg with
// ErrBadMessage (this node never writes such a frame).
func FuzzLeaseMessage(f *testing.F) {
	frame := func(v any) []byte {
		var b bytes.Buffer
		if err := writeMsg(&b, v); err != nil {
			f.Fatal(err)
		}
		return b.Bytes()
	}
	f.Add(frame(custodyOffer{Version: 2, DID: fuzzDID, Head: "bafyreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
		Seed: bytes.Repeat([]byte{7}, 32), TermMs: 30000, Members: []string{"12D3KooWA", "12D3KooWB"},
		Addrs: map[string][]string{"12D3KooWA": {"/ip4/127.0.0.1/tcp/4001"}}, From: []string{"/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWA"}}))
	f.Add(frame(leaseReply{OK: false, Holder: "12D3KooWA", Error: "node: lease refused: no capacity"}))
	f.Add(frame(leaseReply{OK: true}))
	f.Add([]byte{0, 0, 0, 9, '{', '"', 'o', 'k', '"', ':', '1', '}'}) // wrong type, short body
	f.Add([]byte{0, 1, 0, 1, '{'})                                    // oversize length
	f.Add([]byte{0, 0, 0})                                            // truncated length
	// A maximal frame the reader accepts but that re-encodes larger than the
	// cap: json.Marshal escapes '<' as \u003c (and invalid UTF-8 as U+FFFD).
	big := append([]byte(`{"did":"`), bytes.Repeat([]byte("<"), maxLeaseMsg-10)...)
	big = append(big, `"}`...)
	f.Add(append([]byte{0, 1, 0, 0}, big...))
	f.Fuzz(func(t *testing.T, data []byte) {
		check := func(v, back any) {
			t.Helper()
			err := readMsg(bytes.NewReader(data), v)
			if err != nil {
				if !errors.Is(err, ErrBadMessage) {
					t.Fatalf("error without ErrBadMessage: %v", err)
				}
				return
			}
			var e1, e2 bytes.Buffer
			if err := writeMsg(&e1, v); err != nil {
				// The only refusal allowed: escaping grew an accepted frame
				// past the cap (this node never writes such a frame).
				js, jerr := json.Marshal(v)
				if jerr != nil || len(js) <= maxLeaseMsg || !errors.Is(err, ErrBadMessage) {
					t.Fatalf("accepted %T does not re-encode: %v", v, err)
				}
				return
			}
			enc := bytes.Clone(e1.Bytes())
			if err := readMsg(&e1, back); err != nil {
				t.Fatalf("re-encoded %T does not decode: %v", v, err)
			}
			// Encoding is a fixpoint after one decode (empty and absent
			// optional fields are the same value).
			if err := writeMsg(&e2, back); err != nil || !bytes.Equal(enc, e2.Bytes()) {
				t.Fatalf("round trip changed the %T (%v):\n %s\n %s", v, err, enc, e2.Bytes())
			}
		}
		check(&custodyOffer{}, &custodyOffer{})
		check(&leaseReply{}, &leaseReply{})
	})
}
