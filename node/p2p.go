package node

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/multiformats/go-multiaddr"

	"github.com/igor-mesh/igor-node/internal/p2phost"
)

// ErrListen: the host could not listen on an address (bad multiaddr, port in use).
var ErrListen = errors.New("node: cannot listen")

// DefaultListen are the addresses a node listens on when none are given:
// TCP and QUIC on loopback with OS-chosen ports (the API is loopback-only by
// default too; pass --listen to join a real network).
var DefaultListen = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}

// LibP2PKey converts the node's Ed25519 key to libp2p's key type; the peer
// ID derived from it equals agents.PeerID of the public key.
func LibP2PKey(priv ed25519.PrivateKey) (crypto.PrivKey, error) {
	return crypto.UnmarshalEd25519PrivateKey(priv)
}

// NewHost starts a libp2p host with the node's identity, listening on TCP
// and QUIC. TCP port reuse is disabled: on loopback, SO_REUSEPORT with
// simultaneous dials flakes (see docs/DECISIONS.md); relay is off (the mesh
// is dialled directly). The host runs p2phost's default resource limits and
// connection manager (docs/PROTOCOL.md "Limits").
func NewHost(priv ed25519.PrivateKey, listen []string) (host.Host, error) {
	return newHost(priv, listen, p2phost.DefaultOptions())
}

func newHost(priv ed25519.PrivateKey, listen []string, opts p2phost.Options) (host.Host, error) {
	if len(listen) == 0 {
		listen = DefaultListen
	}
	for _, a := range listen {
		if _, err := multiaddr.NewMultiaddr(a); err != nil {
			return nil, fmt.Errorf("%w: %q is not a multiaddr (%v); example: /ip4/127.0.0.1/tcp/4001", ErrListen, a, err)
		}
	}
	k, err := LibP2PKey(priv)
	if err != nil {
		return nil, err
	}
	h, err := p2phost.NewWithOptions(k, listen, opts)
	if err != nil {
		msg := err.Error()
		if strings.Contains(msg, "address already in use") {
			return nil, fmt.Errorf("%w: %v (another process holds the port: pick another with --listen)", ErrListen, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrListen, err)
	}
	return h, nil
}

// listenFile keeps the addresses a daemon started without --listen bound,
// so that it binds them again at its next start (its peers' bootstrap
// addresses stay valid across restarts).
const listenFile = "listen"

// listen starts the libp2p host on listen, or, when none is given, on the
// addresses this home used last time (a port taken meanwhile: OS-chosen
// ports again, with a warning), and then remembers what it bound.
func (m *Mesh) listen(listen []string, opts p2phost.Options) (host.Host, error) {
	if len(listen) > 0 {
		return newHost(m.NodeKey, listen, opts)
	}
	path := m.Home.path(listenFile)
	var h host.Host
	if data, err := os.ReadFile(path); err == nil {
		if last := strings.Fields(string(data)); len(last) > 0 {
			if h, err = newHost(m.NodeKey, last, opts); err != nil {
				m.Logger.Warn("cannot listen on this home's addresses of last time; listening on new ports (peers that bootstrap from the old ones need the new addresses)",
					"addresses", last, "err", err)
				h = nil
			}
		}
	}
	if h == nil {
		var err error
		if h, err = newHost(m.NodeKey, DefaultListen, opts); err != nil {
			return nil, err
		}
	}
	var bound []string
	for _, a := range h.Network().ListenAddresses() {
		bound = append(bound, a.String())
	}
	if err := WriteFileAtomic(path, []byte(strings.Join(bound, "\n")+"\n"), 0o644); err != nil {
		m.Logger.Warn("remember the listen addresses", "path", path, "err", err)
	}
	return h, nil
}
