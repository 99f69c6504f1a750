// Package dht is igor-node's Kademlia DHT: go-libp2p-kad-dht in server mode on
// the private protocol prefix /igor, storing signed records of namespaces the
// caller registers, and provider records for CIDs. It knows nothing about
// agents: the node hands it one record.Validator per namespace.
//
// # Usage
//
//	d, err := dht.New(h,
//		dht.WithValidator("agent", headValidator), // keys /igor/agent/<id>
//		dht.WithValidator("host", hostValidator),  // keys /igor/host/<peer id>
//		dht.WithBootstrapPeers(peers...),
//		dht.WithLogger(logger))
//	defer d.Close() // then close the host
//	n, err := d.Bootstrap(ctx)   // n peers answered; unreachable ones are logged
//	err = d.WaitReady(ctx, 1)    // before the first PutValue/Provide
//	err = d.PutValue(ctx, dht.Key("agent", id), signedHead)
//	v, err := d.GetValue(ctx, dht.Key("agent", id))
//
// # Keys and validators
//
// Record keys are "/igor/<namespace>/<name>" (Key builds them). kad-dht
// dispatches validators on the first key component, so this package registers
// one validator under "igor" with kad-dht and dispatches on the second
// component to the validators given with WithValidator. No other namespace is
// accepted, including kad-dht's default /pk and /ipns. Values are capped at
// MaxRecordSize and keys at MaxKeySize before an injected validator sees them,
// and an injected validator that panics rejects the record rather than
// crashing the node (values come from the network).
//
// # Host options
//
// The node builds the libp2p host; it should use, as this package's tests do:
//
//	libp2p.New(
//		libp2p.Identity(nodeKey), // persistent Ed25519 key
//		libp2p.ListenAddrStrings("/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"),
//		libp2p.Transport(tcp.NewTCPTransport, tcp.DisableReuseport()),
//		libp2p.Transport(quic.NewTransport), // p2p/transport/quic
//		libp2p.DisableRelay(),
//	)
//
// tcp.DisableReuseport: with SO_REUSEPORT, hosts that dial each other over
// TCP hit simultaneous-open failures on loopback (dial backoff, TLS errors).
// QUIC beside TCP gives a second path. Relay is off: nodes of a mesh dial each
// other directly.
//
// # Notes
//
//   - Server mode always: kad-dht's automatic mode keeps nodes without a public
//     address as clients, so a loopback or LAN mesh would have empty tables.
//   - PutValue and Provide are best effort beyond the local store: kad-dht
//     reports success even if every peer refused. Read back from another
//     node where it matters.
//   - With an empty routing table, PutValue and Provide store locally and
//     return ErrNoPeers; WaitReady(ctx, 1) first.
//   - Records and provider records expire after 48 h on the peers holding
//     them: republish well before.
//   - Close does not close the host. Calls after Close return ErrClosed;
//     calls in flight are cancelled and return ErrClosed.
package dht
