// Package p2phost builds the libp2p host every igor-node component uses, so
// the node and the tests of dht and node/exchange run the same transports
// and the same limits.
//
// # Limits
//
// A mesh node talks to peers it does not trust. libp2p's resource manager
// bounds what any of them can hold (connections, streams, buffer memory),
// system-wide, per peer and per protocol; the connection manager trims idle
// connections back to a low watermark. DefaultOptions documents every
// default. They were sized from what a 25-node in-process mesh actually
// uses while six agents are published into it at once (peaks per node: 24
// inbound and 20 outbound connections, 6 inbound streams from one peer, 4
// block streams and 2 lease streams per peer, 1 custody stream per peer
// and direction, 2 kad streams per peer, 15 MiB of buffers), with at
// least 4× headroom; see docs/PROTOCOL.md "Limits".
package p2phost

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p"
	coreconnmgr "github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/libp2p/go-libp2p/x/rate"
	multiaddr "github.com/multiformats/go-multiaddr"
)

// ErrBadOptions: an Options value that cannot work (a negative or zero
// limit, a low watermark above the high one, a per-peer limit above the
// total). The message names the field.
var ErrBadOptions = errors.New("p2phost: bad options")

// Loopback listens on TCP and QUIC on 127.0.0.1 with OS-chosen ports.
var Loopback = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}

// The project's protocols. They are spelled out here rather than imported:
// dht and node/exchange import this package in their tests.
const (
	BlocksProtocol  = protocol.ID("/igor/blocks/1.0.0")
	LeaseProtocol   = protocol.ID("/igor/lease/1.0.0")
	CustodyProtocol = protocol.ID("/igor/custody/1.0.0")
	KadProtocol     = protocol.ID("/igor/kad/1.0.0")
	StatusProtocol  = protocol.ID("/igor/status/1.0.0")
	ControlProtocol = protocol.ID("/igor/control/1.0.0")
	AgentsProtocol  = protocol.ID("/igor/agents/1.0.0")
	LogsProtocol    = protocol.ID("/igor/logs/1.0.0")
	GossipProtocol  = protocol.ID("/igor/meshsub/1.2.0") // GossipSub: the host view
	// HostRecordProtocol: one host record sent straight to a peer that
	// joined the host topic.
	HostRecordProtocol = protocol.ID("/igor/hostrecord/1.0.0")
)

// ProtocolLimit bounds the streams of one protocol.
type ProtocolLimit struct {
	// Inbound is the most inbound streams of the protocol at once, from all
	// peers together.
	Inbound int
	// InboundPerPeer is the most inbound streams of the protocol at once
	// from one peer. Outbound streams to one peer may be twice as many.
	InboundPerPeer int
}

// Options are the resource limits of a host. Zero values are invalid: start
// from DefaultOptions and change what you need.
type Options struct {
	// Conns is the most connections at once (inbound and outbound); default
	// 256. ConnsInbound bounds inbound ones alone; default 128. A flood of
	// new connections beyond it is refused at once, before any handshake
	// work is kept.
	Conns, ConnsInbound int
	// ConnsPerPeer bounds connections to one peer; default 8 (libp2p dials
	// up to 8 addresses of a peer at once).
	ConnsPerPeer int
	// Transient bounds connections and streams not yet tied to a peer or a
	// protocol (handshakes, protocol negotiation); defaults 64 and 256.
	TransientConns, TransientStreams int
	// Streams and StreamsInbound are system-wide stream limits; defaults
	// 8192 and 4096.
	Streams, StreamsInbound int
	// PeerStreamsInbound bounds inbound streams from one peer across all
	// protocols; default 256.
	PeerStreamsInbound int
	// Memory is what libp2p may reserve for buffers (muxer windows) in
	// all, and PeerMemory for one peer; defaults 1 GiB and 128 MiB. Stream
	// windows only grow while a reservation succeeds, so a low PeerMemory
	// throttles a fast transfer instead of failing it.
	Memory, PeerMemory int64
	// Protocols sets per-protocol stream limits; protocols not listed get
	// libp2p's defaults (hundreds of streams). Default: DefaultProtocols.
	Protocols map[protocol.ID]ProtocolLimit
	// LowWater, HighWater and GracePeriod configure the connection manager:
	// above HighWater connections, the least valued ones (peers outside the
	// DHT routing table first) older than GracePeriod are closed down to
	// LowWater, checked every 10 s. Defaults 64, 128 and 20 s. HighWater
	// must not exceed Conns.
	LowWater, HighWater int
	GracePeriod         time.Duration
	// NoResourceManager runs without any resource limits (libp2p's
	// NullResourceManager). Benchmarks use it to measure what the limits
	// cost; never set it on a node facing other peers.
	NoResourceManager bool
	// Gater, if set, may refuse connections by peer (libp2p's
	// ConnectionGater); the mesh installs one for test partitions.
	Gater coreconnmgr.ConnectionGater
	// Announce, if set, are the addresses the host tells its peers (in
	// identify, and so in the DHT and host records) instead of the ones it
	// listens on: a node behind a NAT or a port mapping, or listening on
	// 0.0.0.0, names where others reach it.
	Announce []multiaddr.Multiaddr
}

// DefaultProtocols are the default per-protocol limits:
//
//   - blocks 256 inbound / 8 per peer (node/exchange serves 4 per peer
//     itself and resets the rest with a clear code; libp2p's limit is the
//     backstop);
//   - lease 64 / 8 (one short offer per agent being placed);
//   - custody 512 / 4 (one long-lived stream per direction and peer, plus
//     room for a reopen while the old stream dies);
//   - kad 1024 / 32 (kad-dht reuses one stream per peer; concurrent
//     lookups may open a few more);
//   - status 128 / 8 (one short question per agent query);
//   - control 32 / 4 (an owner's record: rare, and held open while the
//     holder commits it);
//   - agents 64 / 4 (ps reads a node's groups a page at a time);
//   - logs 128 / 16 (a follower of an agent's log holds one stream open
//     to its holder while it runs there);
//   - gossip 512 / 4 (GossipSub keeps one long-lived stream per direction
//     and peer, as custody does);
//   - host record 128 / 2 (one short stream per peer when it joins).
func DefaultProtocols() map[protocol.ID]ProtocolLimit {
	return map[protocol.ID]ProtocolLimit{
		BlocksProtocol:     {Inbound: 256, InboundPerPeer: 8},
		LeaseProtocol:      {Inbound: 64, InboundPerPeer: 8},
		CustodyProtocol:    {Inbound: 512, InboundPerPeer: 4},
		KadProtocol:        {Inbound: 1024, InboundPerPeer: 32},
		StatusProtocol:     {Inbound: 128, InboundPerPeer: 8},
		ControlProtocol:    {Inbound: 32, InboundPerPeer: 4},
		AgentsProtocol:     {Inbound: 64, InboundPerPeer: 4},
		LogsProtocol:       {Inbound: 128, InboundPerPeer: 16},
		GossipProtocol:     {Inbound: 512, InboundPerPeer: 4},
		HostRecordProtocol: {Inbound: 128, InboundPerPeer: 2},
	}
}

// DefaultOptions returns the documented defaults (see the Options fields).
func DefaultOptions() Options {
	return Options{
		Conns: 256, ConnsInbound: 128, ConnsPerPeer: 8,
		TransientConns: 64, TransientStreams: 256,
		Streams: 8192, StreamsInbound: 4096, PeerStreamsInbound: 256,
		Memory: 1 << 30, PeerMemory: 128 << 20,
		Protocols: DefaultProtocols(),
		LowWater:  64, HighWater: 128, GracePeriod: 20 * time.Second,
	}
}

// Validate reports the first unusable field. Errors wrap ErrBadOptions.
func (o Options) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrBadOptions}, args...)...)
	}
	if o.NoResourceManager {
		if o.LowWater < 1 || o.HighWater < o.LowWater || o.GracePeriod <= 0 {
			return bad("connection manager low %d, high %d, grace %v: want 1 ≤ low ≤ high and a positive grace period", o.LowWater, o.HighWater, o.GracePeriod)
		}
		return nil
	}
	pos := []struct {
		name string
		v    int64
	}{{"Conns", int64(o.Conns)}, {"ConnsInbound", int64(o.ConnsInbound)}, {"ConnsPerPeer", int64(o.ConnsPerPeer)},
		{"TransientConns", int64(o.TransientConns)}, {"TransientStreams", int64(o.TransientStreams)},
		{"Streams", int64(o.Streams)}, {"StreamsInbound", int64(o.StreamsInbound)}, {"PeerStreamsInbound", int64(o.PeerStreamsInbound)},
		{"Memory", o.Memory}, {"PeerMemory", o.PeerMemory}, {"LowWater", int64(o.LowWater)}, {"HighWater", int64(o.HighWater)}}
	for _, f := range pos {
		if f.v <= 0 {
			return bad("%s is %d; it must be positive (start from DefaultOptions)", f.name, f.v)
		}
	}
	switch {
	case o.ConnsInbound > o.Conns:
		return bad("ConnsInbound %d exceeds Conns %d", o.ConnsInbound, o.Conns)
	case o.ConnsPerPeer > o.Conns:
		return bad("ConnsPerPeer %d exceeds Conns %d", o.ConnsPerPeer, o.Conns)
	case o.StreamsInbound > o.Streams:
		return bad("StreamsInbound %d exceeds Streams %d", o.StreamsInbound, o.Streams)
	case o.PeerStreamsInbound > o.StreamsInbound:
		return bad("PeerStreamsInbound %d exceeds StreamsInbound %d", o.PeerStreamsInbound, o.StreamsInbound)
	case o.PeerMemory > o.Memory:
		return bad("PeerMemory %d exceeds Memory %d", o.PeerMemory, o.Memory)
	case o.LowWater > o.HighWater:
		return bad("connection manager LowWater %d exceeds HighWater %d", o.LowWater, o.HighWater)
	case o.HighWater > o.Conns:
		return bad("connection manager HighWater %d exceeds Conns %d: it would never trim before the resource manager refuses", o.HighWater, o.Conns)
	case o.GracePeriod <= 0:
		return bad("GracePeriod %v must be positive", o.GracePeriod)
	}
	for p, l := range o.Protocols {
		if l.Inbound < 1 || l.InboundPerPeer < 1 || l.InboundPerPeer > l.Inbound {
			return bad("protocol %s: %d inbound streams, %d per peer; want 1 ≤ per peer ≤ inbound", p, l.Inbound, l.InboundPerPeer)
		}
	}
	return nil
}

// limits turns o into libp2p's concrete limits: explicit values for what
// Options names, libp2p's scaled defaults for the rest (per-connection and
// per-stream memory, services).
func (o Options) limits() rcmgr.ConcreteLimitConfig {
	lv := func(n int) rcmgr.LimitVal { return rcmgr.LimitVal(n) }
	cfg := rcmgr.PartialLimitConfig{
		System: rcmgr.ResourceLimits{
			Conns: lv(o.Conns), ConnsInbound: lv(o.ConnsInbound), ConnsOutbound: lv(o.Conns),
			Streams: lv(o.Streams), StreamsInbound: lv(o.StreamsInbound), StreamsOutbound: lv(o.Streams),
			FD: lv(o.Conns), Memory: rcmgr.LimitVal64(o.Memory),
		},
		Transient: rcmgr.ResourceLimits{
			Conns: lv(o.TransientConns), ConnsInbound: lv(o.TransientConns), ConnsOutbound: lv(o.TransientConns),
			Streams: lv(o.TransientStreams), StreamsInbound: lv(o.TransientStreams), StreamsOutbound: lv(o.TransientStreams),
			FD: lv(o.TransientConns), Memory: rcmgr.LimitVal64(min(o.Memory, 64<<20)),
		},
		PeerDefault: rcmgr.ResourceLimits{
			Conns: lv(o.ConnsPerPeer), ConnsInbound: lv(o.ConnsPerPeer), ConnsOutbound: lv(o.ConnsPerPeer),
			Streams: lv(2 * o.PeerStreamsInbound), StreamsInbound: lv(o.PeerStreamsInbound), StreamsOutbound: lv(o.PeerStreamsInbound),
			FD: lv(o.ConnsPerPeer), Memory: rcmgr.LimitVal64(o.PeerMemory),
		},
		Protocol:     map[protocol.ID]rcmgr.ResourceLimits{},
		ProtocolPeer: map[protocol.ID]rcmgr.ResourceLimits{},
	}
	for p, l := range o.Protocols {
		cfg.Protocol[p] = rcmgr.ResourceLimits{
			StreamsInbound: lv(l.Inbound), StreamsOutbound: lv(2 * l.Inbound), Streams: lv(3 * l.Inbound),
		}
		cfg.ProtocolPeer[p] = rcmgr.ResourceLimits{
			StreamsInbound: lv(l.InboundPerPeer), StreamsOutbound: lv(2 * l.InboundPerPeer), Streams: lv(3 * l.InboundPerPeer),
		}
	}
	return cfg.Build(rcmgr.DefaultLimits.AutoScale())
}

// New starts a host with the default Options; see NewWithOptions.
func New(priv crypto.PrivKey, listen []string) (host.Host, error) {
	return NewWithOptions(priv, listen, DefaultOptions())
}

// newResourceManager is libp2p's resource manager with our limits and our
// connection rate limit.
func newResourceManager(o Options) (network.ResourceManager, error) {
	return rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(o.limits()), rcmgr.WithConnRateLimiters(connRateLimiter()))
}

// connRateLimiter bounds new connections per remote address, inbound and
// outbound alike (libp2p counts both). libp2p's default allows one every
// 5 s per IPv4 address after a burst of 16, and exempts loopback — so the
// local testnets never met it, while on a real network a node that redials
// a peer cut off for 30 s (custody senders reopen a silent peer about once
// a second, over TCP and QUIC, and the peer dials back) spent the burst
// and was refused by its own limiter and by the peer's for up to 30 s after
// the cut healed (the network-namespace fault suite, DECISIONS D57). Two a
// second with a burst of 32 covers that redial rate with room, and still
// bounds a flood from one address; /48s of IPv6 get proportionally more, as
// in libp2p's defaults.
func connRateLimiter() *rate.Limiter {
	return &rate.Limiter{
		NetworkPrefixLimits: []rate.PrefixLimit{
			{Prefix: netip.MustParsePrefix("127.0.0.0/8"), Limit: rate.Limit{}},
			{Prefix: netip.MustParsePrefix("::1/128"), Limit: rate.Limit{}},
		},
		SubnetRateLimiter: rate.SubnetLimiter{
			IPv4SubnetLimits: []rate.SubnetLimit{{PrefixLength: 32, Limit: rate.Limit{RPS: 2, Burst: 32}}},
			IPv6SubnetLimits: []rate.SubnetLimit{
				{PrefixLength: 56, Limit: rate.Limit{RPS: 2, Burst: 32}},
				{PrefixLength: 48, Limit: rate.Limit{RPS: 5, Burst: 160}},
			},
			GracePeriod: time.Minute,
		},
	}
}

// NewWithOptions starts a host with identity priv (a fresh Ed25519 key when
// nil) listening on listen, with the resource limits and connection manager
// of o: TCP without SO_REUSEPORT (simultaneous dials on loopback flake with
// it, see docs/DECISIONS.md) plus QUIC; relay off, since mesh nodes are
// dialled directly.
//
// Errors: ErrBadOptions (o invalid), or libp2p's (a listen address that
// cannot be bound).
func NewWithOptions(priv crypto.PrivKey, listen []string, o Options) (host.Host, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if priv == nil {
		var err error
		if priv, _, err = crypto.GenerateEd25519Key(rand.Reader); err != nil {
			return nil, err
		}
	}
	cm, err := connmgr.NewConnManager(o.LowWater, o.HighWater, connmgr.WithGracePeriod(o.GracePeriod))
	if err != nil {
		return nil, fmt.Errorf("%w: connection manager: %v", ErrBadOptions, err)
	}
	var rm network.ResourceManager = &network.NullResourceManager{}
	if !o.NoResourceManager {
		if rm, err = newResourceManager(o); err != nil {
			cm.Close()
			return nil, fmt.Errorf("%w: resource manager: %v", ErrBadOptions, err)
		}
	}
	libOpts := []libp2p.Option{
		libp2p.Identity(priv),
		libp2p.ListenAddrStrings(listen...),
		libp2p.Transport(tcp.NewTCPTransport, tcp.DisableReuseport()),
		libp2p.Transport(quic.NewTransport),
		libp2p.DisableRelay(),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
	}
	if o.Gater != nil {
		libOpts = append(libOpts, libp2p.ConnectionGater(o.Gater))
	}
	if len(o.Announce) > 0 {
		announce := slices.Clone(o.Announce)
		libOpts = append(libOpts, libp2p.AddrsFactory(func([]multiaddr.Multiaddr) []multiaddr.Multiaddr { return announce }))
	}
	h, err := libp2p.New(libOpts...)
	if err != nil {
		// libp2p closes what it was given only once the host exists.
		cm.Close()
		rm.Close()
		return nil, err
	}
	return h, nil
}
