package wasmexec

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/igor-mesh/igor-node/agents"
)

// ObsKind is the kind of one observation in a tick log.
type ObsKind uint8

// Observation kinds. The numbers are part of the encoding: never renumber.
const (
	// TickTime is the instant the tick started (Value: Unix ns). It is the
	// first entry of every tick log and what WASI clocks return in the tick.
	TickTime ObsKind = 1
	// Clock is one igor.clock_now result (Value: Unix ns).
	Clock ObsKind = 2
	// Rand is one igor.rand_bytes call: Value is the result code (0 ok,
	// -1 host randomness failed, -2 length over 65536, -4 bad memory) and
	// Data the bytes written (only when Value is 0).
	Rand ObsKind = 3
	// Log is one igor.log_emit call: Value is the message length the guest
	// passed (-4 if it was outside memory) and Data the message, truncated
	// to 4096 bytes.
	Log ObsKind = 4
	// WalletBalance is one igor.wallet_balance result (Value: µc).
	WalletBalance ObsKind = 5
	// WalletReceiptCount is one igor.wallet_receipt_count result (Value).
	WalletReceiptCount ObsKind = 6
	// WalletReceipt is one igor.wallet_receipt call: Value is the result
	// (the receipt's length, -1 bad index, -4 buffer too small or outside
	// memory); Data the receipt when written, the 4-byte size hint (the
	// receipt's length, u32 LE) for -4, nothing for -1.
	WalletReceipt ObsKind = 7
	// NodePrice is one igor.node_price result (Value: µc per second).
	NodePrice ObsKind = 8
	// HTTP is one igor.http_request call: Value is the HTTP status (100-999)
	// or the error code (-1..-5); Data the response body written, the
	// 4-byte size hint for -5, nothing for the other errors.
	HTTP ObsKind = 9
	// Pay is one igor.wallet_pay call: Value is the result (bytes written,
	// 4 + the receipt's length, or the error code -1..-6); Data the receipt
	// on success, the 4-byte size hint for -5, nothing otherwise.
	Pay ObsKind = 10
	// Intent precedes the result of an effect (HTTP or Pay) the runner
	// journaled first (InstanceConfig.BeforeEffect): Value is the effect's
	// kind (9 or 10), Data its 32-byte digest (Effect.Digest) followed by
	// the idempotency key. A log may end with an intent: its holder stopped
	// between journaling the effect and recording its result.
	Intent ObsKind = 11
)

func (k ObsKind) String() string {
	switch k {
	case TickTime:
		return "tick_time"
	case Clock:
		return "clock_now"
	case Rand:
		return "rand_bytes"
	case Log:
		return "log_emit"
	case WalletBalance:
		return "wallet_balance"
	case WalletReceiptCount:
		return "wallet_receipt_count"
	case WalletReceipt:
		return "wallet_receipt"
	case NodePrice:
		return "node_price"
	case HTTP:
		return "http_request"
	case Pay:
		return "wallet_pay"
	case Intent:
		return "intent"
	}
	return fmt.Sprintf("ObsKind(%d)", uint8(k))
}

// Limits on hostcalls and tick logs. A tick that exceeds them traps, so
// a guest cannot make the host hold an unbounded log.
const (
	MaxRandBytes        = 65536   // per rand_bytes call
	MaxLogMessage       = 4096    // log_emit truncates to this
	MaxTickLogEntries   = 16384   // observations per tick, tick_time included
	MaxTickLogDataBytes = 4 << 20 // sum of Data over one tick
	// MaxIdempotencyKey bounds the key BeforeEffect returns (printable
	// ASCII, no spaces: it is sent as an HTTP header value).
	MaxIdempotencyKey = 256
)

// Observation is one recorded fact a tick observed.
type Observation struct {
	Kind  ObsKind
	Value int64
	Data  []byte
}

// TickLog is the ordered list of a tick's observations, TickTime first.
type TickLog struct {
	Entries []Observation
}

// tickLogVersion is the first byte of an encoded tick log.
const tickLogVersion = 1

// Encode returns the compact binary form of l:
//
//	version byte (1), uvarint entry count, then per entry:
//	kind byte, zigzag varint Value, uvarint len(Data), Data.
//
// Decode(l.Encode()) returns l for every valid log; the encoding of a log is
// unique, so equal logs have equal bytes.
func (l TickLog) Encode() []byte {
	n := 1 + binary.MaxVarintLen64
	for _, e := range l.Entries {
		n += 1 + 2*binary.MaxVarintLen64 + len(e.Data)
	}
	b := make([]byte, 0, n)
	b = append(b, tickLogVersion)
	b = binary.AppendUvarint(b, uint64(len(l.Entries)))
	for _, e := range l.Entries {
		b = append(b, byte(e.Kind))
		b = binary.AppendVarint(b, e.Value)
		b = binary.AppendUvarint(b, uint64(len(e.Data)))
		b = append(b, e.Data...)
	}
	return b
}

// DecodeTickLog parses an encoded tick log and checks it is well formed:
// known kinds, exactly one TickTime and it first, Data only where a kind has
// data and within the per-call and per-tick limits, canonical varints, no
// trailing bytes. Errors wrap ErrBadTickLog.
func DecodeTickLog(b []byte) (TickLog, error) {
	bad := func(format string, a ...any) (TickLog, error) {
		return TickLog{}, fmt.Errorf("%w: "+format, append([]any{ErrBadTickLog}, a...)...)
	}
	if len(b) == 0 {
		return bad("empty input")
	}
	if b[0] != tickLogVersion {
		return bad("version %d, want %d", b[0], tickLogVersion)
	}
	p := 1
	uvarint := func() (uint64, bool) {
		v, n := binary.Uvarint(b[p:])
		if n <= 0 || n != len(binary.AppendUvarint(nil, v)) {
			return 0, false
		}
		p += n
		return v, true
	}
	count, ok := uvarint()
	if !ok {
		return bad("bad entry count at byte %d", p)
	}
	if count == 0 {
		return bad("no entries (a tick log starts with tick_time)")
	}
	if count > MaxTickLogEntries {
		return bad("%d entries, the limit is %d", count, MaxTickLogEntries)
	}
	// Each entry takes at least 3 bytes: do not trust count for allocation.
	if count > uint64(len(b)-p)/3 {
		return bad("%d entries cannot fit in %d bytes", count, len(b)-p)
	}
	l := TickLog{Entries: make([]Observation, 0, count)}
	total := 0
	for i := uint64(0); i < count; i++ {
		if p >= len(b) {
			return bad("entry %d: truncated", i)
		}
		kind := ObsKind(b[p])
		p++
		v, n := binary.Varint(b[p:])
		if n <= 0 || n != len(binary.AppendVarint(nil, v)) {
			return bad("entry %d: bad value varint", i)
		}
		p += n
		dlen, ok := uvarint()
		if !ok {
			return bad("entry %d: bad data length", i)
		}
		if dlen > uint64(len(b)-p) {
			return bad("entry %d: data length %d exceeds the %d bytes left", i, dlen, len(b)-p)
		}
		e := Observation{Kind: kind, Value: v}
		if dlen > 0 {
			e.Data = append([]byte(nil), b[p:p+int(dlen)]...)
			p += int(dlen)
		}
		if err := checkObservation(int(i), e); err != nil {
			return bad("%v", err)
		}
		total += len(e.Data)
		if total > MaxTickLogDataBytes {
			return bad("more than %d data bytes", MaxTickLogDataBytes)
		}
		l.Entries = append(l.Entries, e)
	}
	if p != len(b) {
		return bad("%d trailing bytes", len(b)-p)
	}
	if err := checkSequence(l.Entries); err != nil {
		return bad("%v", err)
	}
	return l, nil
}

// checkObservation checks entry i of a tick log against what a recording
// host can produce.
func checkObservation(i int, e Observation) error {
	if (i == 0) != (e.Kind == TickTime) {
		if i == 0 {
			return fmt.Errorf("entry 0 is %s, want tick_time", e.Kind)
		}
		return fmt.Errorf("entry %d: tick_time may only be the first entry", i)
	}
	switch e.Kind {
	case TickTime, Clock:
		if len(e.Data) != 0 {
			return fmt.Errorf("entry %d: %s carries %d data bytes", i, e.Kind, len(e.Data))
		}
	case Rand:
		switch e.Value {
		case 0:
			if len(e.Data) > MaxRandBytes {
				return fmt.Errorf("entry %d: rand_bytes with %d bytes, the limit is %d", i, len(e.Data), MaxRandBytes)
			}
		case -1, -2, -4:
			if len(e.Data) != 0 {
				return fmt.Errorf("entry %d: failed rand_bytes (%d) carries data", i, e.Value)
			}
		default:
			return fmt.Errorf("entry %d: rand_bytes result %d is not 0, -1, -2 or -4", i, e.Value)
		}
	case Log:
		switch {
		case e.Value == -4:
			if len(e.Data) != 0 {
				return fmt.Errorf("entry %d: failed log_emit carries data", i)
			}
		case e.Value < 0 || e.Value > 1<<32:
			return fmt.Errorf("entry %d: log_emit length %d out of range", i, e.Value)
		case int64(len(e.Data)) != min(e.Value, MaxLogMessage):
			return fmt.Errorf("entry %d: log_emit of %d bytes carries %d (want %d)", i, e.Value, len(e.Data), min(e.Value, MaxLogMessage))
		}
	case WalletBalance, NodePrice:
		if len(e.Data) != 0 {
			return fmt.Errorf("entry %d: %s carries %d data bytes", i, e.Kind, len(e.Data))
		}
	case WalletReceiptCount:
		if len(e.Data) != 0 || e.Value < 0 || e.Value > math.MaxInt32 {
			return fmt.Errorf("entry %d: wallet_receipt_count %d with %d data bytes", i, e.Value, len(e.Data))
		}
	case WalletReceipt:
		switch {
		case e.Value >= 0:
			if int64(len(e.Data)) != e.Value || e.Value > math.MaxInt32 {
				return fmt.Errorf("entry %d: wallet_receipt of %d bytes carries %d", i, e.Value, len(e.Data))
			}
		case e.Value == -1:
			if len(e.Data) != 0 {
				return fmt.Errorf("entry %d: wallet_receipt -1 carries data", i)
			}
		case e.Value == -4:
			if len(e.Data) != 4 {
				return fmt.Errorf("entry %d: wallet_receipt -4 carries %d bytes, want the 4-byte size hint", i, len(e.Data))
			}
		default:
			return fmt.Errorf("entry %d: wallet_receipt result %d is not a length, -1 or -4", i, e.Value)
		}
	case HTTP:
		switch {
		case e.Value >= 100 && e.Value <= 999:
			if len(e.Data) > agents.MaxHTTPResponseBytes {
				return fmt.Errorf("entry %d: http_request body of %d bytes, the limit is %d", i, len(e.Data), agents.MaxHTTPResponseBytes)
			}
		case e.Value == -5:
			if len(e.Data) != 4 {
				return fmt.Errorf("entry %d: http_request -5 carries %d bytes, want the 4-byte size hint", i, len(e.Data))
			}
		case e.Value >= -4 && e.Value <= -1:
			if len(e.Data) != 0 {
				return fmt.Errorf("entry %d: failed http_request (%d) carries data", i, e.Value)
			}
		default:
			return fmt.Errorf("entry %d: http_request result %d is neither a status (100-999) nor -1..-5", i, e.Value)
		}
	case Pay:
		switch {
		case e.Value > 0:
			if _, ok := parseReceipt(e.Data); !ok || e.Value != int64(4+len(e.Data)) {
				return fmt.Errorf("entry %d: wallet_pay result %d does not carry a well-formed receipt of %d bytes", i, e.Value, e.Value-4)
			}
		case e.Value == -5:
			if len(e.Data) != 4 {
				return fmt.Errorf("entry %d: wallet_pay -5 carries %d bytes, want the 4-byte size hint", i, len(e.Data))
			}
			if n := binary.LittleEndian.Uint32(e.Data); n < receiptFixedBytes || n > receiptFixedBytes+agents.MaxRecipientBytes+MaxMemoBytes {
				return fmt.Errorf("entry %d: wallet_pay -5 hints %d bytes, not a receipt's length", i, n)
			}
		case e.Value >= -6 && e.Value <= -1:
			if len(e.Data) != 0 {
				return fmt.Errorf("entry %d: failed wallet_pay (%d) carries data", i, e.Value)
			}
		default:
			return fmt.Errorf("entry %d: wallet_pay result %d is neither a length nor -1..-6", i, e.Value)
		}
	case Intent:
		if ObsKind(e.Value) != HTTP && ObsKind(e.Value) != Pay {
			return fmt.Errorf("entry %d: intent for kind %d, want %d (http_request) or %d (wallet_pay)", i, e.Value, HTTP, Pay)
		}
		if len(e.Data) < 32 || !validKey(e.Data[32:]) {
			return fmt.Errorf("entry %d: intent data is not a 32-byte digest and a key of up to %d printable bytes", i, MaxIdempotencyKey)
		}
	default:
		return fmt.Errorf("entry %d: unknown kind %d", i, uint8(e.Kind))
	}
	return nil
}

// checkSequence checks what single entries cannot show: an intent is
// followed by its effect's result (or ends the log), and results that a
// host returns before it journals (bad arguments, a refused host or
// recipient) never follow an intent.
func checkSequence(es []Observation) error {
	for k := 1; k < len(es); k++ {
		prev, e := es[k-1], es[k]
		if prev.Kind != Intent {
			continue
		}
		if e.Kind != ObsKind(prev.Value) {
			return fmt.Errorf("entry %d: intent for %s is followed by %s", k-1, ObsKind(prev.Value), e.Kind)
		}
		if preEffectOnly(e) {
			return fmt.Errorf("entry %d: %s result %d is decided before the effect, so no intent precedes it", k, e.Kind, e.Value)
		}
	}
	return nil
}

// preEffectOnly reports whether e is a result a host returns only before
// it journals an intent.
func preEffectOnly(e Observation) bool {
	switch e.Kind {
	case HTTP:
		return e.Value == -2
	case Pay:
		return e.Value <= -2
	}
	return false
}

// validKey reports whether k can be an idempotency key: at most
// MaxIdempotencyKey bytes of printable ASCII without spaces.
func validKey(k []byte) bool {
	if len(k) > MaxIdempotencyKey {
		return false
	}
	for _, c := range k {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

// PaidReceipts returns the receipts of the successful wallet_pay calls in
// l, in order (views into l's data), and the total they paid (µc).
func (l TickLog) PaidReceipts() (receipts [][]byte, total int64) {
	for _, e := range l.Entries {
		if e.Kind == Pay && e.Value > 0 {
			if r, ok := parseReceipt(e.Data); ok {
				receipts = append(receipts, e.Data)
				total = min(total, math.MaxInt64-r.amount) + r.amount // saturates: a log is input
			}
		}
	}
	return receipts, total
}
