package node

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/igor-mesh/igor-node/agents"
)

// agents.PeerID is computed without libp2p; it must agree with libp2p.
func TestPeerIDMatchesLibp2p(t *testing.T) {
	for i := 0; i < 20; i++ {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		k, err := LibP2PKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		id, err := peer.IDFromPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		if got := agents.PeerID(pub); got != id.String() {
			t.Fatalf("agents.PeerID = %s, libp2p = %s", got, id)
		}
		back, err := agents.PeerIDPublicKey(id.String())
		if err != nil || !back.Equal(pub) {
			t.Fatalf("PeerIDPublicKey(%s) = %x, %v", id, back, err)
		}
	}
}

func TestNewHostErrors(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := NewHost(priv, []string{"not-an-addr"}); !errors.Is(err, ErrListen) || !strings.Contains(err.Error(), "not a multiaddr") {
		t.Fatalf("bad multiaddr: %v", err)
	}
	h, err := NewHost(priv, []string{"/ip4/127.0.0.1/tcp/0"})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if h.ID().String() != agents.PeerID(priv.Public().(ed25519.PublicKey)) {
		t.Fatal("host identity is not the node key")
	}
	// The same TCP port again: port in use is a clear error.
	addr := h.Addrs()[0].String()
	_, priv2, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := NewHost(priv2, []string{addr}); !errors.Is(err, ErrListen) {
		t.Fatalf("port in use: %v", err)
	}
}
