package contentstore

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/ipld/go-car/v2/storage"
)

// MaxCARHeaderSize bounds the header (root list) ImportCAR accepts.
const MaxCARHeaderSize = 1 << 20

// maxSectionOverhead is room for the CID in a CAR section besides the block.
const maxSectionOverhead = 128

// writerOnly hides io.WriterAt (an *os.File has it), so go-car streams
// sequentially instead of using WriteAt, which fails on pipes and stdout.
type writerOnly struct{ w io.Writer }

func (w writerOnly) Write(p []byte) (int, error) { return w.w.Write(p) }

// WriteCAR writes a CARv1 holding every block reachable from roots, each once,
// parents before children (depth-first preorder), and returns the number of
// blocks written. The whole DAG is checked to be present before the first
// byte is written; if a block disappears or is found corrupt while writing,
// the error is returned and the partial output must be discarded.
//
// Errors: ErrNotFound (a block is missing; names it), ErrCorrupt, ErrBadCID
// (no roots), ErrClosed, ctx.Err(), write errors.
func (s *Store) WriteCAR(ctx context.Context, w io.Writer, roots []cid.Cid) (int, error) {
	if len(roots) == 0 {
		return 0, fmt.Errorf("%w: a CAR needs at least one root", ErrBadCID)
	}
	order, err := s.Reachable(ctx, roots)
	if err != nil {
		return 0, fmt.Errorf("contentstore: exporting CAR: %w", err)
	}
	car, err := storage.NewWritable(writerOnly{w}, roots,
		carv2.WriteAsCarV1(true),
		// Identify blocks by whole CID: a raw and a dag-cbor block with the
		// same bytes share a multihash but are different blocks.
		carv2.UseWholeCIDs(true))
	if err != nil {
		return 0, fmt.Errorf("contentstore: writing CAR header: %w", err)
	}
	for i, c := range order {
		if err := ctx.Err(); err != nil {
			return i, err
		}
		data, err := s.Get(c)
		if err != nil {
			return i, fmt.Errorf("contentstore: exporting CAR: %w", err)
		}
		if err := car.Put(ctx, c.KeyString(), data); err != nil {
			return i, fmt.Errorf("contentstore: writing CAR block %s: %w", c, err)
		}
	}
	return len(order), nil
}

// countingReader counts consumed bytes so ImportCAR can tell a clean end of
// the CAR from one cut inside a section (go-car reports both as io.EOF when
// the cut falls right after a section's length prefix).
type countingReader struct {
	r *bufio.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}

// ImportCAR reads a CARv1 or CARv2 stream and stores every block with
// PutBlock (so each is re-hashed against its CID and limited to
// MaxBlockSize). It returns the roots named by the header and the number of
// blocks read. Blocks imported before an error stay (unpinned) until GC.
//
// Errors: ErrCorrupt (malformed or truncated CAR, e.g. "truncated CAR after
// 3 blocks", or a block that does not match its CID), ErrTooLarge (header >
// MaxCARHeaderSize or block > MaxBlockSize), ErrBadCID (a block this store
// cannot hold), ErrClosed, ctx.Err().
func (s *Store) ImportCAR(ctx context.Context, r io.Reader) (roots []cid.Cid, blocks int, err error) {
	if s.isClosed() {
		return nil, 0, ErrClosed
	}
	br := bufio.NewReaderSize(r, 64<<10)
	// Check the header length ourselves so an oversized header is reported
	// as ErrTooLarge rather than as a generic go-car error.
	if prefix, _ := br.Peek(binary.MaxVarintLen64); len(prefix) == 0 {
		return nil, 0, fmt.Errorf("%w: CAR is empty", ErrCorrupt)
	} else if hl, n := binary.Uvarint(prefix); n > 0 && hl > MaxCARHeaderSize {
		return nil, 0, fmt.Errorf("%w: CAR header of %d bytes exceeds %d", ErrTooLarge, hl, MaxCARHeaderSize)
	}
	cr := &countingReader{r: br}
	rd, err := carv2.NewBlockReader(cr,
		carv2.MaxAllowedHeaderSize(MaxCARHeaderSize),
		carv2.MaxAllowedSectionSize(MaxBlockSize+maxSectionOverhead),
		carv2.WithTrustedCAR(true)) // PutBlock re-hashes every block anyway
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, 0, fmt.Errorf("%w: truncated CAR header", ErrCorrupt)
		}
		return nil, 0, fmt.Errorf("%w: bad CAR header: %v", ErrCorrupt, err)
	}
	roots = rd.Roots
	if len(roots) == 0 {
		return nil, 0, fmt.Errorf("%w: CAR header lists no roots", ErrCorrupt)
	}
	for {
		if err := ctx.Err(); err != nil {
			return roots, blocks, err
		}
		start := cr.n
		c, data, length, err := rd.NextReader()
		if err == io.EOF && cr.n == start {
			return roots, blocks, nil
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return roots, blocks, fmt.Errorf("%w: truncated CAR after %d blocks", ErrCorrupt, blocks)
			}
			return roots, blocks, fmt.Errorf("%w: CAR section %d unreadable after %d blocks: %v", ErrCorrupt, blocks+1, blocks, err)
		}
		if length > MaxBlockSize {
			return roots, blocks, fmt.Errorf("%w: CAR block %d (%s) is %d bytes, more than MaxBlockSize (%d)", ErrTooLarge, blocks+1, c, length, MaxBlockSize)
		}
		buf := make([]byte, length)
		if _, err := io.ReadFull(data, buf); err != nil {
			return roots, blocks, fmt.Errorf("%w: truncated CAR after %d blocks (inside block %s)", ErrCorrupt, blocks, c)
		}
		if err := s.PutBlock(c, buf); err != nil {
			return roots, blocks, fmt.Errorf("contentstore: CAR block %d: %w", blocks+1, err)
		}
		blocks++
	}
}
