// Package agents is the agent as data: keys and DIDs, the manifest, the
// genesis, checkpoint, head-record and host-record objects, their canonical
// DAG-CBOR encoding, signing and validation, lineage verification, and the
// DHT validators for head and host records.
//
// It is pure: no I/O, no goroutines, and no clock reads except through the
// validators' injected Now. Everything a node,
// a CLI or a third party needs to check an agent's history is here; the
// blocks come in through the small BlockGetter interface. The formats are
// specified in docs/CHECKPOINT-FORMAT.md.
//
// # Encoding
//
// Objects are DAG-CBOR maps with string keys in length-first order, minimal
// integers, definite lengths and CIDs as tag 42. Decoders are strict: an
// object must re-encode to exactly the bytes it was read from, so every
// object has exactly one encoding and therefore exactly one CID. Unknown
// fields, wrong types, duplicate keys, indefinite lengths, trailing bytes and
// non-canonical forms are all rejected with ErrMalformed.
//
// # Signing
//
// Each signature covers a domain string ("igor/genesis/v1", "igor/checkpoint/v1",
// "igor/head/v1", "igor/host/v1"), a zero byte, and the canonical encoding of the object with
// its signature fields left out. The agent key and the holder's node key sign
// the same checkpoint bytes.
package agents
