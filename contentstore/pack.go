package contentstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/ipfs/go-cid"
)

// The pack keeps small blocks, and small records of the store's owner
// (Meta), in one embedded log-structured database (Pebble) under
// <dir>/pack instead of one file each: a write is an append to its
// write-ahead log, and concurrent durable writes share one fsync of that
// log. A node committing checkpoints of hundreds of agents otherwise pays
// a file creation, a rename and a filesystem flush per block (DECISIONS
// D52). Large blocks (module chunks, large states) stay files: they are
// few, and a log-structured store would copy them again at each compaction.
//
// Keys: 'b' + CID bytes → 8-byte big-endian write time (Unix ns, for the
// GC grace) + the block; 'm' + key → a Meta record; 'p' + CID bytes → ""
// (a pin: one synced append that also makes the blocks written before it
// durable, instead of a file, a directory flush and a flush of the log).
const (
	packDirName = "pack"
	packBlock   = 'b'
	packMeta    = 'm'
	packPin     = 'p'
	// DefaultPackMax is the largest block WithPack(0) keeps in the pack:
	// checkpoint objects and small states (the custody push limit).
	DefaultPackMax = 64 << 10
	// MaxMetaSize bounds one Meta record.
	MaxMetaSize = 64 << 10
	// packStamp is the write-time prefix of a packed block.
	packStamp = 8
	// packMemTable is the pack's largest memtable. Pebble starts a store's
	// memtable at 256 KiB and doubles it as writes come, so a quiet node
	// stays small. Block keys are CIDs — random — so every flushed table
	// overlaps the whole level below it and each compaction rewrites that
	// level: fewer, larger flushes (32 MiB, not Pebble's 4 MiB) roughly halve
	// the bytes compacted, cut the CPU per block written by ~30 % (~1 % of
	// a node's CPU at 3,000 agents) and avoid Pebble's write stalls on a
	// full level 0 (BenchmarkPackChurn; DECISIONS D76). At most two
	// memtables exist.
	packMemTable = 32 << 20
)

// WithPack keeps blocks of at most maxSize bytes (0: DefaultPackMax) in the
// store's pack instead of one file each, and enables Meta. A store whose
// pack directory exists always reads it, with or without this option.
func WithPack(maxSize int) Option {
	return func(c *config) error {
		if maxSize < 0 || maxSize > MaxBlockSize {
			return fmt.Errorf("contentstore: pack block limit %d must be within 0..%d (0: the default, %d)", maxSize, MaxBlockSize, DefaultPackMax)
		}
		if maxSize == 0 {
			maxSize = DefaultPackMax
		}
		c.packMax = maxSize
		return nil
	}
}

// WithDeferredPackSync writes packed blocks without waiting for a flush of
// the pack's log: each becomes durable, in order, with the next durable
// write to the pack — a Meta record (PutMeta, DeleteMeta), a Pin (which
// flushes first: a pin file must never name a block a crash can lose), or
// Sync. The log is
// sequential, so a durable record is never without the blocks written
// before it. This suits a caller that commits by a Meta record naming the
// blocks it wrote (the node: a head, a custody lease state), and saves a
// flush per block; a block put with nothing durable after it may be lost
// in a crash (it was never named by a commit). Blocks above the pack limit
// are files and stay durable on return. Requires WithPack.
func WithDeferredPackSync() Option {
	return func(c *config) error { c.deferPack = true; return nil }
}

type pack struct {
	db *pebble.DB
}

// openPack opens (create: creating) the pack in dir with memtables of at
// most memTable bytes, logging to lg; it returns nil, nil when the pack
// does not exist and create is false.
func openPack(dir string, create, readOnly bool, memTable uint64, lg *slog.Logger) (*pack, error) {
	path := filepath.Join(dir, packDirName)
	if !create {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
	}
	opts := &pebble.Options{
		Logger:        packLogger{lg},
		ReadOnly:      readOnly,
		MemTableSize:  memTable,
		EventListener: packEvents(lg),
	}
	db, err := pebble.Open(path, opts)
	if readOnly && errors.Is(err, pebble.ErrDBDoesNotExist) {
		// Its creation was cut short (a crash in the first Open): nothing
		// was ever stored in it, and the next Open creates it.
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("contentstore: opening the pack %q: %w (it also holds the node's custody lease states and agent heads: do not delete it; stop the node, keep a copy of the directory and run 'igor-node fsck')", path, err)
	}
	return &pack{db: db}, nil
}

func (p *pack) close() error {
	if p == nil {
		return nil
	}
	return p.db.Close()
}

func writeOpts(sync bool) *pebble.WriteOptions {
	if sync {
		return pebble.Sync
	}
	return pebble.NoSync
}

func blockKey(c cid.Cid) []byte { return append([]byte{packBlock}, c.Bytes()...) }

func metaKey(k string) []byte { return append([]byte{packMeta}, k...) }

func pinKey(c cid.Cid) []byte { return append([]byte{packPin}, c.Bytes()...) }

// pin records c as a pinned root. Synced, it is durable on return together
// with every write before it (the log is sequential): the blocks of the
// DAG it pins that were written without a flush of their own.
func (p *pack) pin(c cid.Cid, sync bool) error {
	if err := p.db.Set(pinKey(c), nil, writeOpts(sync)); err != nil {
		return fmt.Errorf("contentstore: pinning %s: %w", c, err)
	}
	return nil
}

// unpin removes c's pin (absent: no error). Synced, because a caller may
// delete the DAG's blocks next, and a pin a crash brings back over deleted
// blocks would stop every GC.
func (p *pack) unpin(c cid.Cid, sync bool) error {
	if err := p.db.Delete(pinKey(c), writeOpts(sync)); err != nil {
		return fmt.Errorf("contentstore: unpinning %s: %w", c, err)
	}
	return nil
}

// pins lists the pinned roots in the pack; keys that are not a CID this
// store holds are returned in bad.
func (p *pack) pins() (out []cid.Cid, bad []string, err error) {
	return p.list(packPin)
}

// put stores (or re-stores, restarting its grace) a block.
func (p *pack) put(c cid.Cid, data []byte, sync bool) error {
	v := make([]byte, packStamp+len(data))
	binary.BigEndian.PutUint64(v, uint64(time.Now().UnixNano()))
	copy(v[packStamp:], data)
	if err := p.db.Set(blockKey(c), v, writeOpts(sync)); err != nil {
		return fmt.Errorf("contentstore: writing %s to the pack: %w", c, err)
	}
	return nil
}

// get returns a packed block's bytes (unverified) and write time, or
// fs.ErrNotExist.
func (p *pack) get(c cid.Cid) ([]byte, time.Time, error) {
	return p.getKey(blockKey(c), c.String())
}

func (p *pack) getKey(key []byte, name string) ([]byte, time.Time, error) {
	v, closer, err := p.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, time.Time{}, fs.ErrNotExist
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("contentstore: reading %s from the pack: %w", name, err)
	}
	defer closer.Close()
	if len(v) < packStamp {
		return nil, time.Time{}, fmt.Errorf("%w: block %s: pack entry of %d bytes has no write time", ErrCorrupt, name, len(v))
	}
	if len(v)-packStamp > MaxBlockSize {
		return nil, time.Time{}, fmt.Errorf("%w: block %s: pack entry is %d bytes, more than MaxBlockSize", ErrCorrupt, name, len(v)-packStamp)
	}
	at := time.Unix(0, int64(binary.BigEndian.Uint64(v)))
	return append([]byte(nil), v[packStamp:]...), at, nil
}

func (p *pack) has(c cid.Cid) (bool, error) {
	_, closer, err := p.db.Get(blockKey(c))
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("contentstore: reading %s from the pack: %w", c, err)
	}
	closer.Close()
	return true, nil
}

func (p *pack) delete(c cid.Cid) error {
	// Not synced: a deletion a crash undoes leaves a block GC finds again.
	if err := p.db.Delete(blockKey(c), pebble.NoSync); err != nil {
		return fmt.Errorf("contentstore: deleting %s from the pack: %w", c, err)
	}
	return nil
}

// cids lists the packed blocks. It collects them first, so the caller's
// callbacks run with no iterator open (they may write to the store).
// Keys that are not a CID this store holds are returned in bad.
func (p *pack) cids() (out []cid.Cid, bad []string, err error) {
	return p.list(packBlock)
}

// list collects the CIDs keyed under prefix (blocks or pins).
func (p *pack) list(prefix byte) (out []cid.Cid, bad []string, err error) {
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefix}, UpperBound: []byte{prefix + 1}})
	if err != nil {
		return nil, nil, fmt.Errorf("contentstore: listing the pack: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()[1:]
		c, err := cid.Cast(k)
		if err != nil || checkCID(c) != nil {
			bad = append(bad, fmt.Sprintf("pack key %x", it.Key()))
			continue
		}
		out = append(out, c)
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, nil, fmt.Errorf("contentstore: listing the pack: %w", err)
	}
	return out, bad, nil
}

// packLogger drops Pebble's informational messages (every open prints
// some) and passes its errors to the store's logger (WithLogger).
type packLogger struct{ lg *slog.Logger }

func (packLogger) Infof(string, ...any) {}
func (p packLogger) Errorf(format string, args ...any) {
	p.lg.Error("contentstore pack: " + fmt.Sprintf(format, args...))
}
func (p packLogger) Fatalf(format string, args ...any) {
	p.lg.Error("contentstore pack (fatal): " + fmt.Sprintf(format, args...))
	os.Exit(1)
}

// packEvents reports what makes the pack's writes wait — a write stall
// (memtables full, too many level-0 tables) or a slow disk operation —
// to lg: every durable write of the node waits then, its lease states
// too, and nothing else would say why.
func packEvents(lg *slog.Logger) *pebble.EventListener {
	var since atomic.Int64 // Unix ns of the stall's start; 0: none
	return &pebble.EventListener{
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			since.Store(time.Now().UnixNano())
			lg.Warn("contentstore pack: writes stalled", "reason", info.Reason)
		},
		WriteStallEnd: func() {
			if t := since.Swap(0); t != 0 {
				lg.Warn("contentstore pack: writes resumed", "stalled", time.Since(time.Unix(0, t)).Round(time.Millisecond))
			}
		},
		DiskSlow: func(info pebble.DiskSlowInfo) {
			lg.Warn("contentstore pack: slow disk operation", "detail", info.String())
		},
	}
}

// PutMeta stores a small record of the store's owner under key, durably
// when the store fsyncs, in the pack's log (so such records and the blocks
// written beside them share flushes: the node keeps its custody lease
// state here). Records are not blocks: GC, Check and CAR export ignore them.
//
// Errors: ErrNoPack (opened without WithPack), ErrTooLarge, ErrClosed.
func (s *Store) PutMeta(key string, value []byte) error {
	return s.putMeta(key, value, writeOpts(s.cfg.fsync))
}

func (s *Store) putMeta(key string, value []byte, opts *pebble.WriteOptions) error {
	if len(value) > MaxMetaSize || len(key) == 0 || len(key) > 1024 {
		return fmt.Errorf("%w: meta record %q: key of %d bytes (want 1..1024), value of %d (at most %d)", ErrTooLarge, key, len(key), len(value), MaxMetaSize)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.metaWritable(); err != nil {
		return err
	}
	if err := s.pack.db.Set(metaKey(key), value, opts); err != nil {
		return fmt.Errorf("contentstore: writing meta record %q: %w", key, err)
	}
	return nil
}

// PutMetaDeferred stores a record like PutMeta but does not wait for a
// flush: it becomes durable with the next durable write to the pack (a
// PutMeta, a Pin, Sync) — the log is sequential. For a record that such a
// write always follows (the node's heads of agents run under custody: the
// lease state that commits the checkpoint comes next), it saves a flush.
//
// Errors: as PutMeta.
func (s *Store) PutMetaDeferred(key string, value []byte) error {
	return s.putMeta(key, value, pebble.NoSync)
}

// GetMeta returns the record stored under key.
//
// Errors: ErrNotFound (no such record, or no pack; it also wraps
// fs.ErrNotExist, so callers need not import this package), ErrClosed.
func (s *Store) GetMeta(key string) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.pack == nil {
		return nil, fmt.Errorf("%w: meta record %q (the store has no pack): %w", ErrNotFound, key, fs.ErrNotExist)
	}
	v, closer, err := s.pack.db.Get(metaKey(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, fmt.Errorf("%w: meta record %q: %w", ErrNotFound, key, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("contentstore: reading meta record %q: %w", key, err)
	}
	defer closer.Close()
	return append([]byte(nil), v...), nil
}

// DeleteMeta removes the record under key (absent: no error), durably when
// the store fsyncs.
//
// Errors: ErrNoPack, ErrClosed.
func (s *Store) DeleteMeta(key string) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.metaWritable(); err != nil {
		return err
	}
	if err := s.pack.db.Delete(metaKey(key), writeOpts(s.cfg.fsync)); err != nil {
		return fmt.Errorf("contentstore: deleting meta record %q: %w", key, err)
	}
	return nil
}

// metaWritable: Meta records may be written now (s.mu held).
func (s *Store) metaWritable() error {
	if s.closed {
		return ErrClosed
	}
	if !s.HasPack() {
		return ErrNoPack
	}
	return nil
}

// HasPack reports whether Meta records can be written (WithPack).
func (s *Store) HasPack() bool { return s.pack != nil && s.cfg.packMax > 0 }

// MetaKeys lists the Meta records' keys that start with prefix, sorted.
//
// Errors: ErrClosed.
func (s *Store) MetaKeys(prefix string) ([]string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.pack == nil {
		return nil, nil
	}
	lo := metaKey(prefix)
	hi := []byte{packMeta + 1}
	if prefix != "" {
		// The first key after every key with this prefix: the prefix with
		// its last byte incremented (prefixes are text: never 0xff).
		hi = metaKey(prefix)
		hi[len(hi)-1]++
	}
	it, err := s.pack.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, fmt.Errorf("contentstore: listing meta records: %w", err)
	}
	var out []string
	for it.First(); it.Valid(); it.Next() {
		out = append(out, string(it.Key()[1:]))
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, fmt.Errorf("contentstore: listing meta records: %w", err)
	}
	return out, nil
}

// Sync makes every write so far durable: with WithDeferredPackSync, the
// packed blocks that no durable write has followed yet. A caller that names
// blocks in a file of its own (not a Meta record) calls it first; Pin does.
//
// Errors: ErrClosed.
func (s *Store) Sync() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return s.syncPack()
}

// syncPack flushes the pack's log if packed blocks may be waiting for it.
func (s *Store) syncPack() error {
	if s.pack == nil || !s.cfg.deferPack || !s.cfg.fsync {
		return nil
	}
	if err := s.pack.db.LogData(nil, pebble.Sync); err != nil {
		return fmt.Errorf("contentstore: flushing the pack: %w", err)
	}
	return nil
}
