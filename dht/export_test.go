package dht

import ds "github.com/ipfs/go-datastore"

// WithDatastore makes kad-dht keep records in store, so tests can inspect
// exactly what a node stored.
func WithDatastore(store ds.Batching) Option {
	return func(c *config) error {
		c.datastore = store
		return nil
	}
}
