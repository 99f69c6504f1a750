// Package p2phost builds the libp2p host every igor-node component uses, so
// the node and the tests of dht and node/exchange run the same transports.
package p2phost

import (
	"crypto/rand"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
)

// Loopback listens on TCP and QUIC on 127.0.0.1 with OS-chosen ports.
var Loopback = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}

// New starts a host with identity priv (a fresh Ed25519 key when nil)
// listening on listen: TCP without SO_REUSEPORT (simultaneous dials on
// loopback flake with it, see docs/DECISIONS.md) plus QUIC; relay off, since
// mesh nodes are dialled directly.
func New(priv crypto.PrivKey, listen []string) (host.Host, error) {
	if priv == nil {
		var err error
		if priv, _, err = crypto.GenerateEd25519Key(rand.Reader); err != nil {
			return nil, err
		}
	}
	return libp2p.New(
		libp2p.Identity(priv),
		libp2p.ListenAddrStrings(listen...),
		libp2p.Transport(tcp.NewTCPTransport, tcp.DisableReuseport()),
		libp2p.Transport(quic.NewTransport),
		libp2p.DisableRelay(),
	)
}
