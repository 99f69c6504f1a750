// Package contentstore is igor-node's CID-keyed block store on local disk.
//
// Every block is addressed by a CIDv1 with a sha2-256 multihash and is either
// raw bytes (codec 0x55) or DAG-CBOR (codec 0x71); every block is at most
// MaxBlockSize bytes. Byte payloads larger than ChunkSize (WASM modules,
// agent state) are split into raw chunks listed by a DAG-CBOR root node
// ("igor/chunked/v1"); see PutObject and docs/CONTENTSTORE.md.
//
// # Integrity
//
// Writes go to a temporary file in the block's directory, which is fsynced,
// renamed into place, and the directory fsynced, so a crash leaves either the
// whole block or nothing (stale *.tmp files are removed by Open). With
// WithPack, small blocks are appended to the pack's write-ahead log instead
// (pack.go): a crash leaves them whole or absent there too. Every read
// re-hashes the block against its CID: Get never returns bytes that do not
// match the CID it was asked for.
//
// # Usage
//
//  1. Open the store (one Store per directory; a second Open fails with ErrInUse).
//  2. Put blocks, or PutObject large payloads; PutBlock / ImportCAR for blocks
//     received from elsewhere (they are re-hashed).
//  3. Pin the roots you must keep BEFORE the GC grace period (WithGCGrace,
//     default 10 minutes) has passed since their blocks were written.
//  4. Run GC occasionally: it keeps every block reachable from a pin and every
//     block younger than the grace period, and deletes the rest.
//
// # Concurrency
//
// A Store is safe for use by many goroutines. Block files are immutable once
// renamed into place, so readers need no per-block lock. Store.mu (RWMutex)
// makes "block already exists → refresh its age" in Put atomic with respect
// to GC's "re-check age → delete": Put, Get, Has and friends hold it shared,
// GC deletions, Delete and Close hold it exclusively, one block at a time.
// Store.gcMu serialises GC runs with Pin (pins share it with each other),
// so a pin created during GC's mark phase cannot be missed by its sweep.
package contentstore
