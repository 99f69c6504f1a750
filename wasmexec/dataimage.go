package wasmexec

import (
	"cmp"
	"os"
	"slices"
)

// Data images: why and how.
//
// Go's linker emits a module with ~30,000 small active data segments that
// make up 1–1.5 MB of initial memory (read-only data, the pclntab, ...).
// Left to wazero, every instance (a) keeps a slice header per segment
// (~0.5–0.7 MB) and (b) copies every segment into its own linear memory, so
// every page of that image is private and resident in every instance,
// although a Go program writes to only a small part of it.
//
// extractDataImage moves the segments out of the module into one flat
// memory image. The module is compiled without a data section, and each
// instance's linear memory starts as a copy-on-write private mapping of the
// image (memImage, linearMemory.Allocate): pages the guest only reads stay
// shared between all instances of the module; a page the guest writes
// becomes its own. Where no mapping is possible the image is copied in.
//
// Equivalence: only modules whose data segments are all active, for memory
// 0, with i32.const offsets, pairwise disjoint (so the order of application
// does not matter), within the initial memory declared by the module's
// memory section, and with no DataCount section (so no memory.init or
// data.drop refers to segment indices) are rewritten. Active segments are
// applied at instantiation before any guest code runs, onto zeroed memory;
// the image is exactly the memory they produce. The data section comes
// after the code section, so no code offset moves. Anything else —
// malformed input included — returns the module unchanged and leaves the
// verdict to wazero's validator.
//
// maxImageBytes bounds the image (the 64 MiB memory cap): a module whose
// initial memory is larger cannot run here anyway.
const maxImageBytes = 64 << 20

// extractDataImage returns wasm without its data section and the initial
// memory image [0, len(image)) the section described, or (wasm, nil) when
// the module is left as is.
func extractDataImage(wasm []byte) (stripped, image []byte) {
	if len(wasm) < 8 {
		return wasm, nil
	}
	p := 8
	dataID, dataStart, dataEnd := -1, -1, -1
	var memMin uint64
	haveMem := false
	for p < len(wasm) {
		id := wasm[p]
		size, n := uleb32(wasm[p+1:])
		if n == 0 {
			return wasm, nil
		}
		body := p + 1 + n
		end := body + int(size)
		if end > len(wasm) || end < body {
			return wasm, nil
		}
		switch id {
		case 5: // Memory
			sec := wasm[body:end]
			count, n := uleb32(sec)
			if n == 0 || count != 1 || n >= len(sec) || sec[n] > 1 { // flags 0/1: i32, unshared
				return wasm, nil
			}
			min, m := uleb32(sec[n+1:])
			if m == 0 {
				return wasm, nil
			}
			memMin, haveMem = uint64(min)<<16, true
		case 11: // Data
			if dataStart >= 0 {
				return wasm, nil
			}
			dataID, dataStart, dataEnd = p, body, end
		case 12: // DataCount
			return wasm, nil
		}
		p = end
	}
	if dataStart < 0 || !haveMem || memMin > maxImageBytes {
		return wasm, nil
	}
	sec := wasm[dataStart:dataEnd]
	count, n := uleb32(sec)
	if n == 0 {
		return wasm, nil
	}
	q := n
	type seg struct {
		start, end uint64
		data       []byte
	}
	segs := make([]seg, 0, min(count, uint32(len(sec))))
	var hi uint64
	for k := uint32(0); k < count; k++ {
		// flag 0 (active, memory 0), i32.const offset, end, bytes.
		if q+2 > len(sec) || sec[q] != 0 || sec[q+1] != 0x41 {
			return wasm, nil
		}
		q += 2
		off, n := sleb32(sec[q:])
		if n == 0 || q+n >= len(sec) || sec[q+n] != 0x0b {
			return wasm, nil
		}
		q += n + 1
		size, n := uleb32(sec[q:])
		if n == 0 || uint64(q+n)+uint64(size) > uint64(len(sec)) {
			return wasm, nil
		}
		q += n
		s := seg{uint64(uint32(off)), uint64(uint32(off)) + uint64(size), sec[q : q+int(size)]}
		if s.end > memMin {
			return wasm, nil // out of bounds: let wazero report it
		}
		segs = append(segs, s)
		hi = max(hi, s.end)
		q += int(size)
	}
	if q != len(sec) {
		return wasm, nil
	}
	slices.SortStableFunc(segs, func(a, b seg) int { return cmp.Compare(a.start, b.start) })
	for k := 1; k < len(segs); k++ {
		if segs[k].start < segs[k-1].end {
			return wasm, nil // overlapping: the order of application matters
		}
	}
	image = make([]byte, hi)
	for _, s := range segs {
		copy(image[s.start:], s.data)
	}
	stripped = make([]byte, 0, len(wasm)-(dataEnd-dataID))
	stripped = append(stripped, wasm[:dataID]...)
	stripped = append(stripped, wasm[dataEnd:]...)
	return stripped, image
}

// memImage is a module's initial memory image, shared by its instances.
type memImage struct {
	// data is the image; nil once file holds it.
	data []byte
	// size is len(image) rounded up to the OS page size (the file's size).
	size uint64
	// file holds the image for copy-on-write mappings (nil: copy data).
	file *os.File
}

// newMemImage stores image in an unlinked file (in /dev/shm when there is
// one, so it lives in memory), or keeps it in memory when that fails.
func newMemImage(image []byte) *memImage {
	ps := uint64(os.Getpagesize())
	mi := &memImage{data: image, size: (uint64(len(image)) + ps - 1) &^ (ps - 1)}
	if !canMapImage {
		return mi
	}
	for _, dir := range []string{"/dev/shm", ""} {
		f, err := os.CreateTemp(dir, "igor-wasm-image-*")
		if err != nil {
			continue
		}
		_ = os.Remove(f.Name()) // the open descriptor keeps it; nothing to clean up
		if _, err := f.Write(image); err == nil && f.Truncate(int64(mi.size)) == nil {
			mi.file, mi.data = f, nil
			return mi
		}
		_ = f.Close()
	}
	return mi
}

// read returns the image bytes (from the file if it holds them).
func (mi *memImage) read() []byte {
	if mi.file == nil {
		return mi.data
	}
	b := make([]byte, mi.size)
	if _, err := mi.file.ReadAt(b, 0); err != nil {
		return nil
	}
	return b
}

func (mi *memImage) close() error {
	if mi == nil || mi.file == nil {
		return nil
	}
	return mi.file.Close()
}

// uleb32 decodes an unsigned LEB128 u32; n == 0 means malformed.
func uleb32(b []byte) (v uint32, n int) {
	var shift uint
	for n < len(b) && n < 5 {
		c := b[n]
		n++
		v |= uint32(c&0x7f) << shift
		if c&0x80 == 0 {
			if n == 5 && c > 0x0f {
				return 0, 0
			}
			return v, n
		}
		shift += 7
	}
	return 0, 0
}

// sleb32 decodes a signed LEB128 i32; n == 0 means malformed.
func sleb32(b []byte) (v int32, n int) {
	var r int64
	var shift uint
	for n < len(b) && n < 5 {
		c := b[n]
		n++
		r |= int64(c&0x7f) << shift
		shift += 7
		if c&0x80 == 0 {
			if c&0x40 != 0 {
				r |= -1 << shift
			}
			if r < -1<<31 || r > 1<<31-1 {
				return 0, 0
			}
			return int32(r), n
		}
	}
	return 0, 0
}
