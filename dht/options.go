package dht

import (
	"fmt"
	"log/slog"
	"time"

	ds "github.com/ipfs/go-datastore"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/peer"
)

// DefaultQueryTimeout bounds each network operation when WithQueryTimeout is
// not given. Lookups on a healthy mesh of a few hundred nodes take tens of
// milliseconds; ten seconds leaves room for slow peers without letting a dead
// one hold a caller for the libp2p read timeout and its retry.
const DefaultQueryTimeout = 10 * time.Second

// DefaultSettle is how long GetValue waits, after the first valid value, for
// its quorum or the lookup's end (WithSettle). Answers from live peers
// arrive within milliseconds of each other on a healthy mesh; the window
// only ends reads whose quorum cannot be reached.
const DefaultSettle = 500 * time.Millisecond

// Option configures New. Options are applied after the defaults, in order;
// the result is then validated as a whole.
type Option func(*config) error

type config struct {
	validators   map[string]record.Validator // namespace → validator
	bootstrap    []peer.AddrInfo
	logger       *slog.Logger
	queryTimeout time.Duration
	quorum       int
	settle       time.Duration
	datastore    ds.Batching // nil: kad-dht's in-memory store; set by tests only
}

func defaults(c *config) error {
	c.validators = make(map[string]record.Validator)
	c.logger = slog.Default()
	c.queryTimeout = DefaultQueryTimeout
	c.settle = DefaultSettle
	return nil
}

func (c *config) validate() error {
	if c.logger == nil {
		return fmt.Errorf("%w: logger is nil", ErrBadOption)
	}
	if c.quorum < 0 {
		return fmt.Errorf("%w: quorum %d must not be negative", ErrBadOption, c.quorum)
	}
	if c.settle <= 0 {
		return fmt.Errorf("%w: settle window %v must be positive", ErrBadOption, c.settle)
	}
	if c.queryTimeout <= 0 {
		return fmt.Errorf("%w: query timeout %v must be positive", ErrBadOption, c.queryTimeout)
	}
	for i, ai := range c.bootstrap {
		if err := ai.ID.Validate(); err != nil {
			return fmt.Errorf("%w: bootstrap peer %d has no valid peer ID (%v): give addresses as /ip4/…/tcp/…/p2p/<peer id>", ErrBadOption, i, err)
		}
		if len(ai.Addrs) == 0 {
			return fmt.Errorf("%w: bootstrap peer %s has no addresses", ErrBadOption, ai.ID)
		}
	}
	return nil
}

// WithValidator registers v for records whose keys are
// "/igor/<namespace>/<name>" (see Key). namespace must be non-empty and made of
// [a-z0-9-]; registering one twice is an error. The DHT accepts, stores and
// believes only records of registered namespaces, and only those v.Validate
// accepts — for local puts and for records received from peers alike.
// v.Select must be deterministic: every node has to pick the same record.
func WithValidator(namespace string, v record.Validator) Option {
	return func(c *config) error {
		if err := checkNamespace(namespace); err != nil {
			return fmt.Errorf("%w: %w", ErrBadOption, err)
		}
		if v == nil {
			return fmt.Errorf("%w: validator for namespace %q is nil", ErrBadOption, namespace)
		}
		if _, dup := c.validators[namespace]; dup {
			return fmt.Errorf("%w: namespace %q registered twice", ErrBadOption, namespace)
		}
		c.validators[namespace] = v
		return nil
	}
}

// WithBootstrapPeers sets the peers Bootstrap dials. Each needs a peer ID and
// at least one address. The DHT also redials them on its own whenever its
// routing table becomes empty. There are no default (public IPFS) peers.
func WithBootstrapPeers(addrs ...peer.AddrInfo) Option {
	return func(c *config) error {
		c.bootstrap = append(c.bootstrap, addrs...)
		return nil
	}
}

// WithLogger sets the logger for this package's own messages (unreachable
// bootstrap peers, validator panics). Default: slog.Default(). kad-dht and
// libp2p log through go-log, configured separately (GOLOG_LOG_LEVEL).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		c.logger = l
		return nil
	}
}

// WithQueryTimeout bounds every PutValue, GetValue, Provide and FindProviders
// call, and each bootstrap dial, in addition to the caller's context.
// Default DefaultQueryTimeout.
func WithQueryTimeout(d time.Duration) Option {
	return func(c *config) error {
		c.queryTimeout = d
		return nil
	}
}

// WithQuorum makes GetValue return the best record among the first n peers
// that answered (plus this node's own), instead of waiting for the whole
// lookup (n = 0, the default). A full lookup waits for every peer it
// contacts, so one dead peer whose dial hangs (a QUIC handshake to a killed
// process gets no reset) stalls every read for the dial timeout; a quorum
// of 3 is what kad-dht recommends for records that change.
func WithQuorum(n int) Option {
	return func(c *config) error {
		c.quorum = n
		return nil
	}
}

// WithSettle bounds how long GetValue waits for its quorum (or, with quorum
// 0, the lookup's end) once it holds a valid value: then it returns the best
// value found so far. kad-dht's quorum counts answers, this node's own
// record included, and stops only after more than n; in a mesh with n or
// fewer live peers besides this one it cannot be reached, and without the
// window every read would wait for the dead peers' dials to time out.
// Default DefaultSettle.
func WithSettle(d time.Duration) Option {
	return func(c *config) error {
		c.settle = d
		return nil
	}
}
