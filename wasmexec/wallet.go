package wasmexec

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/tetratelabs/wazero/api"
)

// MaxMemoBytes is the longest wallet_pay memo (the recipient's limit is
// agents.MaxRecipientBytes).
const MaxMemoBytes = 512

// A payment receipt (the reference's layout, all integers little-endian):
//
//	amount u64 | time i64 (ns) | recipient_len u32 | recipient |
//	memo_len u32 | memo | agent public key (32) | signature (64)
//
// The signature, by the agent's key, covers every byte before it. time is
// the tick time, so the same payment in the same tick (a payment re-issued
// after its holder died) gives the same receipt, byte for byte.
const receiptFixedBytes = 8 + 8 + 4 + 4 + 32 + 64

type receipt struct {
	amount, time    int64
	recipient, memo []byte
}

// parseReceipt checks b is a well-formed receipt (it does not verify the
// signature: the agent's key is not the host's to know here).
func parseReceipt(b []byte) (receipt, bool) {
	var r receipt
	if len(b) < receiptFixedBytes {
		return r, false
	}
	r.amount = int64(binary.LittleEndian.Uint64(b))
	r.time = int64(binary.LittleEndian.Uint64(b[8:]))
	rl := int(binary.LittleEndian.Uint32(b[16:]))
	if r.amount <= 0 || rl == 0 || rl > agents.MaxRecipientBytes || 20+rl+4 > len(b) {
		return r, false
	}
	r.recipient = b[20 : 20+rl]
	ml := int(binary.LittleEndian.Uint32(b[20+rl:]))
	if ml > MaxMemoBytes || len(b) != receiptFixedBytes+rl+ml {
		return r, false
	}
	r.memo = b[24+rl : 24+rl+ml]
	return r, true
}

func receiptLen(recipient, memo []byte) int { return receiptFixedBytes + len(recipient) + len(memo) }

// buildReceipt makes and signs the receipt of a payment in this tick.
func (i *Instance) buildReceipt(amount int64, recipient, memo []byte) []byte {
	b := make([]byte, 0, receiptLen(recipient, memo))
	b = binary.LittleEndian.AppendUint64(b, uint64(amount))
	b = binary.LittleEndian.AppendUint64(b, uint64(i.tickTime))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(recipient)))
	b = append(b, recipient...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(memo)))
	b = append(b, memo...)
	b = append(b, i.agentPub[:]...)
	sig := make([]byte, 64)
	if i.sign != nil {
		sig = i.sign(b)
		if len(sig) != 64 {
			i.fail(fmt.Errorf("%w: wallet_pay: InstanceConfig.Sign returned %d bytes, want a 64-byte Ed25519 signature", ErrTrap, len(sig)))
		}
	}
	return append(b, sig...)
}

func (i *Instance) balance() int64 {
	if i.wallet == nil {
		return 0
	}
	return i.wallet.Balance()
}

func (i *Instance) receipts() [][]byte {
	if i.wallet == nil {
		return nil
	}
	return i.wallet.Receipts()
}

// observe answers an observation hostcall returning one number: from the
// log when replaying, else from read (recorded inside a tick).
func (i *Instance) observe(k ObsKind, read func() int64) int64 {
	if i.replaying() {
		return i.replayNext(k).Value
	}
	v := read()
	if i.inTick {
		i.record(Observation{Kind: k, Value: v})
	}
	return v
}

func (i *Instance) hostWalletBalance(_ context.Context, _ api.Module, stack []uint64) {
	stack[0] = uint64(i.observe(WalletBalance, i.balance))
}

func (i *Instance) hostWalletReceiptCount(_ context.Context, _ api.Module, stack []uint64) {
	n := i.observe(WalletReceiptCount, func() int64 { return int64(min(len(i.receipts()), math.MaxInt32)) })
	stack[0] = api.EncodeI32(int32(n))
}

func (i *Instance) hostNodePrice(_ context.Context, _ api.Module, stack []uint64) {
	stack[0] = uint64(i.observe(NodePrice, func() int64 { return i.price }))
}

// hostWalletReceipt: wallet_receipt(index, buf, cap) -> the receipt's
// length, -1 (no such receipt) or -4 (cap too small, or the buffer outside
// memory; the receipt's length goes in the buffer's first 4 bytes when it
// holds them: a size hint the reference does not give).
func (i *Instance) hostWalletReceipt(_ context.Context, mod api.Module, stack []uint64) {
	index, ptr, n := api.DecodeI32(stack[0]), uint32(stack[1]), uint32(stack[2])
	mem := mod.Memory()
	buf, memOK := readMem(mem, ptr, n)
	var code int64
	var data []byte
	if i.replaying() {
		e := i.replayNext(WalletReceipt)
		code, data = e.Value, e.Data
		switch {
		case code >= 0 && (!memOK || int64(n) < code):
			i.diverge(WalletReceipt, "a %d-byte receipt cannot be written to a %d-byte buffer", code, n)
		case code == -4 && memOK && n >= binary.LittleEndian.Uint32(data):
			i.diverge(WalletReceipt, "the log says the %d-byte buffer was too small for %d bytes", n, binary.LittleEndian.Uint32(data))
		}
	} else {
		rs := i.receipts()
		switch {
		case index < 0 || int(index) >= len(rs):
			code = -1
		case !memOK || len(rs[index]) > int(n):
			code, data = -4, hint(len(rs[index]))
		default:
			code, data = int64(len(rs[index])), slices.Clone(rs[index])
		}
		if i.inTick {
			i.record(Observation{Kind: WalletReceipt, Value: code, Data: data})
		}
	}
	switch {
	case code >= 0:
		copy(buf, data)
	case code == -4 && memOK:
		putHint(mem, ptr, n, binary.LittleEndian.Uint32(data))
	}
	stack[0] = api.EncodeI32(int32(code))
}

// payArgs are wallet_pay's arguments, read and checked.
type payArgs struct {
	amount          int64
	recipient, memo []byte
	out             []byte // the receipt buffer (a view of guest memory)
	code            int64  // the host's verdict before any effect: 0 or -2..-6
	hint            []byte // the size hint, for -5
}

// readPayArgs checks wallet_pay's arguments in the reference's order:
// -2 recipient empty or over 256 bytes, memo over 512; -6 amount <= 0 or a
// range outside memory; -4 amount over max_payment_microcents; -3
// recipient not allowed; -5 receipt buffer too small (size hint).
func (i *Instance) readPayArgs(mem api.Memory, stack []uint64) payArgs {
	a := payArgs{amount: int64(stack[0])}
	rp, rl, mp, ml, op, oc := uint32(stack[1]), uint32(stack[2]), uint32(stack[3]), uint32(stack[4]), uint32(stack[5]), uint32(stack[6])
	if rl == 0 || rl > agents.MaxRecipientBytes || ml > MaxMemoBytes {
		a.code = -2
		return a
	}
	r, okR := readMem(mem, rp, rl)
	m, okM := readMem(mem, mp, ml)
	out, okO := readMem(mem, op, oc)
	if a.amount <= 0 || !okR || !okM || !okO {
		a.code = -6
		return a
	}
	a.recipient, a.memo, a.out = bytes.Clone(r), bytes.Clone(m), out
	pol := i.payPolicy
	switch {
	case pol.MaxPaymentMicrocents > 0 && a.amount > pol.MaxPaymentMicrocents:
		a.code = -4
	case len(pol.AllowedRecipients) > 0 && !slices.Contains(pol.AllowedRecipients, string(a.recipient)):
		a.code = -3
	case 4+receiptLen(a.recipient, a.memo) > int(oc):
		a.code, a.hint = -5, hint(receiptLen(a.recipient, a.memo))
	}
	return a
}

// hostWalletPay: wallet_pay(amount, recipient, memo, receipt buffer) ->
// 4 + receipt length written as [len u32][receipt], or an error code (-1
// budget below amount, and readPayArgs's). Nothing is deducted unless the
// receipt is written.
func (i *Instance) hostWalletPay(ctx context.Context, mod api.Module, stack []uint64) {
	mem := mod.Memory()
	a := i.readPayArgs(mem, stack)
	digest := payDigest(a.amount, a.recipient, a.memo)
	var code int64
	var data []byte
	if i.replaying() {
		if a.code != 0 {
			e := i.replayNext(Pay)
			if e.Value != a.code || !bytes.Equal(e.Data, a.hint) {
				i.diverge(Pay, "the host refuses these arguments with %d, the log has %d", a.code, e.Value)
			}
			code, data = e.Value, e.Data
		} else if e, _, live := i.replayEffect(Pay, digest); !live {
			code, data = e.Value, e.Data
			switch r, _ := parseReceipt(data); {
			case code > 0 && (r.amount != a.amount || !bytes.Equal(r.recipient, a.recipient) || !bytes.Equal(r.memo, a.memo)):
				i.diverge(Pay, "the logged receipt is for another payment (%d µc to %q)", r.amount, clip(r.recipient))
			case code <= 0 && code != -1:
				i.diverge(Pay, "the host accepts these arguments, the log has %d", code)
			}
		} else {
			code, data = i.pay(a) // a partial log ended at the intent
			i.record(Observation{Kind: Pay, Value: code, Data: data})
		}
	} else {
		i.requireTick(Pay)
		switch {
		case a.code != 0:
			code, data = a.code, a.hint
		case i.balance() < a.amount:
			code = -1 // known before the effect: nothing to journal
		default:
			i.journal(ctx, Pay, digest, receiptLen(a.recipient, a.memo))
			code, data = i.pay(a)
		}
		i.record(Observation{Kind: Pay, Value: code, Data: data})
	}
	switch {
	case code > 0:
		binary.LittleEndian.PutUint32(a.out, uint32(len(data)))
		copy(a.out[4:], data)
	case code == -5:
		putHint(mem, uint32(stack[5]), uint32(stack[6]), binary.LittleEndian.Uint32(data))
	}
	stack[0] = api.EncodeI32(int32(code))
}

// pay performs a payment whose arguments passed the checks: debit, then
// keep the receipt.
func (i *Instance) pay(a payArgs) (int64, []byte) {
	rc := i.buildReceipt(a.amount, a.recipient, a.memo)
	if i.wallet == nil || !i.wallet.Debit(a.amount) {
		return -1, nil
	}
	i.wallet.AddReceipt(slices.Clone(rc))
	return int64(4 + len(rc)), rc
}
