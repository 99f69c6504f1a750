// Package exchange is igor-node's block exchange: it serves the blocks of a
// local block store to peers and fetches blocks and whole DAGs from them,
// over the libp2p protocol /igor/blocks/1.0.0 (docs/PROTOCOL-BLOCKS.md).
//
// # Integrity
//
// A received block is re-hashed against the CID it was asked for before
// anything else is done with it, and stored only through Blockstore.PutBlock
// (which re-hashes again). A peer whose bytes do not match, that announces a
// block larger than MaxBlockSize or that breaks the wire format is a bad
// peer: it is logged with its peer ID and the CID, dropped for the rest of
// the fetch, and the block is requested from another provider.
//
// # Usage
//
//  1. New(host, store, WithProviders(dht)) registers the stream handler: the
//     node serves its store from then on.
//  2. Fetch one block, or FetchDAG a root and everything it links to, from
//     the peers given (FetchOptions.From) and then from the providers.
//  3. Close before closing the host and the store.
//
// # Limits
//
// Requests carry at most MaxRequestCIDs CIDs in MaxRequestSize bytes, blocks
// are at most MaxBlockSize, every wait on a stream is bounded by
// Timeouts.Idle, and a server serves at most WithStreamLimits streams per
// peer and in total (excess streams are reset at once). A fetch keeps at
// most WithMaxInFlight blocks requested and not yet stored.
package exchange
