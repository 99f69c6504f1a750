package wasmexec

import (
	"sync"
	"sync/atomic"

	"github.com/tetratelabs/wazero/experimental"
)

// linearMemory backs one instance's WASM linear memory (wazero's
// experimental.MemoryAllocator). It does two jobs:
//
//   - It enforces the manifest's max_memory_bytes per instance. wazero's own
//     limit (WithMemoryLimitPages) is per wazero.Runtime; enforcing the cap
//     here lets every instance share one runtime and one compiled module
//     whatever its cap. A grow past the cap fails (memory.grow returns -1),
//     which a Go guest reports as "fatal error: out of memory".
//   - On Linux it reserves the cap as address space (PROT_NONE,
//     MAP_NORESERVE) and commits pages as the guest grows, so memory never
//     moves or gets copied and untouched pages cost nothing. wazero's default
//     is a Go []byte that is reallocated and copied on growth, which roughly
//     doubles the resident size of a Go guest.
//
// Unmapping while guest code still runs would crash the whole process, so
// Free (called by wazero when the module closes, possibly from another
// goroutine) is deferred until the in-flight call, if any, has returned.
type linearMemory struct {
	limit uint64    // bytes; a grow beyond it fails
	image *memImage // initial contents (see dataimage.go), or nil

	size atomic.Uint64 // current length in bytes, readable at any time

	mu          sync.Mutex
	buf         []byte // the whole reservation (mmap) or the heap buffer
	mapped      bool   // buf comes from reserve() and must be release()d
	committed   uint64
	busy        int  // guest calls in flight
	freePending bool // Free arrived while busy
	freed       bool
	allocated   bool
	needImage   bool // the image must still be copied in

	// growRefused is set when a grow past the cap was refused. Reset and
	// read by Instance.call on the goroutine that runs the guest (grows
	// happen on that goroutine).
	growRefused bool
}

func newLinearMemory(limit uint64, image *memImage) *linearMemory {
	return &linearMemory{limit: limit, image: image}
}

var (
	_ experimental.MemoryAllocator = (*linearMemory)(nil)
	_ experimental.LinearMemory    = (*linearMemory)(nil)
)

// Allocate implements experimental.MemoryAllocator. A module has at most one
// memory (imported memories are rejected at compile), so it runs once.
func (m *linearMemory) Allocate(_, max uint64) experimental.LinearMemory {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.allocated {
		// Cannot happen for a module that passed Compile's checks; a fresh
		// heap memory keeps wazero working rather than aliasing.
		other := newLinearMemory(m.limit, nil)
		other.allocated = true
		return other
	}
	m.allocated = true
	if max < m.limit {
		m.limit = max
	}
	if buf, err := reserve(m.limit); err == nil {
		m.buf, m.mapped = buf, true
	}
	if m.image != nil {
		m.needImage = true
		if m.mapped && m.image.file != nil && mapImage(m.buf, m.image.file, m.image.size) == nil {
			m.committed, m.needImage = m.image.size, false
		}
	}
	return m
}

// Reallocate implements experimental.LinearMemory: it returns the memory
// grown to size bytes, or nil (grow fails) beyond the cap.
func (m *linearMemory) Reallocate(size uint64) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	if size > m.limit {
		m.growRefused = true
		return nil
	}
	if m.freed {
		return nil
	}
	if m.mapped {
		if size > m.committed {
			if err := commit(m.buf[m.committed:size]); err != nil {
				return nil
			}
			m.committed = size
		}
	} else if uint64(cap(m.buf)) < size {
		// Heap fallback (non-Linux, or mmap failed): grow geometrically.
		n := min(max(size, 2*uint64(cap(m.buf))), m.limit)
		nb := make([]byte, len(m.buf), n)
		copy(nb, m.buf)
		m.buf = nb
	}
	if m.needImage {
		img := m.image.read()
		if img == nil || uint64(len(img)) > size {
			return nil // cannot happen: the image lies within the initial memory
		}
		copy(m.buf[:size], img)
		m.needImage = false
	}
	m.size.Store(size)
	return m.buf[:size:size]
}

// Free implements experimental.LinearMemory.
func (m *linearMemory) Free() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.busy > 0 {
		m.freePending = true
		return
	}
	m.freeLocked()
}

func (m *linearMemory) freeLocked() {
	if m.freed {
		return
	}
	m.freed = true
	if m.mapped {
		_ = release(m.buf)
	}
	m.buf = nil
}

// enter marks a guest call in flight; exit ends it and performs a Free that
// arrived meanwhile.
func (m *linearMemory) enter() {
	m.mu.Lock()
	m.busy++
	m.mu.Unlock()
}

func (m *linearMemory) exit() {
	m.mu.Lock()
	m.busy--
	if m.busy == 0 && m.freePending {
		m.freeLocked()
	}
	m.mu.Unlock()
}
