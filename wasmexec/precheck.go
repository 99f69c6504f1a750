package wasmexec

import (
	"encoding/binary"
	"fmt"
)

// checkVectorCounts walks the module's sections (after the 8-byte header)
// and refuses a section whose declared size runs past the module, or a
// vector section whose declared entry count exceeds its size in bytes (every
// entry takes at least one byte). wazero sizes some slices from these counts
// before reading the entries, so a 14-byte module declaring 2^32 exports
// made it allocate gigabytes and run for seconds (found by FuzzCompile,
// testdata/fuzz/FuzzCompile/226bf08939c5ce7b). Errors wrap ErrBadModule.
func checkVectorCounts(key string, wasm []byte) error {
	b := wasm[8:]
	for len(b) > 0 {
		id := b[0]
		size, n := binary.Uvarint(b[1:])
		if n <= 0 || size > uint64(len(b)-1-n) {
			return fmt.Errorf("%w: %s: section %d: size runs past the end of the module", ErrBadModule, key, id)
		}
		body := b[1+n : 1+n+int(size)]
		b = b[1+n+int(size):]
		switch id {
		case 1, 2, 3, 4, 5, 6, 7, 9, 10, 11: // type … export, elem, code, data: vectors
			count, k := binary.Uvarint(body)
			if k <= 0 || count > uint64(len(body)-k) {
				return fmt.Errorf("%w: %s: section %d declares %d entries in %d bytes", ErrBadModule, key, id, count, len(body))
			}
		}
	}
	return nil
}
