package wasmexec

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/tetratelabs/wazero/api"
)

// Effect is an effectful call (http_request, wallet_pay) about to happen in
// a live tick, handed to InstanceConfig.BeforeEffect.
type Effect struct {
	Kind ObsKind // HTTP or Pay
	// Call is the index of the effect among the tick's journaled effects:
	// the number of Intent entries before this one.
	Call int
	// Digest is the SHA-256 of the request's canonical encoding
	// (effectDigest; docs/ABI.md, "Effects").
	Digest [32]byte
	// Key is the idempotency key, derived by the host from the agent, the
	// tick, Call and Digest. The intent entry carries it, so BeforeEffect
	// journals it with the intent and returns it ("" means the same).
	Key string
	// Log is the tick's log so far, the intent entry (Digest, then Key)
	// last. Its entries must not be modified.
	Log TickLog
}

// effectDigest is Effect.Digest: SHA-256 over a domain tag, the fixed
// fields and the variable ones, each variable field prefixed by its length
// (u32 LE) so no two requests share an encoding (docs/ABI.md, "Effects").
func effectDigest(tag string, fixed []byte, fields ...[]byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(tag))
	h.Write(fixed)
	var n [4]byte
	for _, f := range fields {
		binary.LittleEndian.PutUint32(n[:], uint32(len(f)))
		h.Write(n[:])
		h.Write(f)
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// httpDigest: exactly the bytes the guest passed, so a replayed request is
// recognised byte for byte.
func httpDigest(method, url, headers, body []byte) [32]byte {
	return effectDigest("igor-http-v1\x00", nil, method, url, headers, body)
}

func payDigest(amount int64, recipient, memo []byte) [32]byte {
	return effectDigest("igor-pay-v1\x00", binary.LittleEndian.AppendUint64(nil, uint64(amount)), recipient, memo)
}

// effectKey derives the idempotency key of call number call in this tick:
// unique to the agent (its key and DID), the tick (its time) and the call,
// and bound to the request, so a re-issued effect carries the same key.
func (i *Instance) effectKey(call int, digest [32]byte) string {
	h := sha256.New()
	h.Write([]byte("igor-idempotency-v1"))
	h.Write(i.agentPub[:])
	h.Write([]byte(i.did))
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], uint64(i.tickTime))
	binary.LittleEndian.PutUint64(b[8:], uint64(call))
	h.Write(b[:])
	h.Write(digest[:])
	return "igor-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// setEffects takes the effect settings of cfg and the manifest's policies.
func (i *Instance) setEffects(cfg InstanceConfig) error {
	i.wallet, i.price, i.sign, i.httpRT, i.beforeEffect = cfg.Wallet, cfg.Price, cfg.Sign, cfg.HTTP, cfg.BeforeEffect
	if cfg.AgentPub != nil {
		if len(cfg.AgentPub) != len(i.agentPub) {
			return fmt.Errorf("wasmexec: InstanceConfig.AgentPub is %d bytes, want an Ed25519 public key (32)", len(cfg.AgentPub))
		}
		copy(i.agentPub[:], cfg.AgentPub)
	}
	if cfg.Manifest.Grants(agents.CapHTTP) {
		o, err := cfg.Manifest.HTTPOptions()
		if err != nil {
			return fmt.Errorf("wasmexec: %w", err)
		}
		i.httpPolicy = newHTTPPolicy(o)
	}
	if cfg.Manifest.Grants(agents.CapX402) {
		o, err := cfg.Manifest.X402Options()
		if err != nil {
			return fmt.Errorf("wasmexec: %w", err)
		}
		i.payPolicy = o
	}
	return nil
}

// requireTick fails a live effectful call made outside agent_tick: only a
// tick is recorded and journaled, and agent_init runs again on every load
// and replay, so an effect there would repeat.
func (i *Instance) requireTick(k ObsKind) {
	if !i.inTick {
		i.fail(fmt.Errorf("%w: %s called outside agent_tick: effects happen only in ticks, which are recorded", ErrTrap, k))
	}
}

// journal runs the effect's journaling step in a live tick, once its
// arguments passed the host's checks: it makes sure the log has room for
// the intent, the result and dataRoom result bytes, then (with a
// BeforeEffect) records the intent and has the runner journal it. It
// returns the idempotency key ("" without BeforeEffect).
func (i *Instance) journal(ctx context.Context, k ObsKind, digest [32]byte, dataRoom int) string {
	if len(i.tickLog)+2 > MaxTickLogEntries || i.tickLogData+len(digest)+MaxIdempotencyKey+dataRoom > MaxTickLogDataBytes {
		i.fail(fmt.Errorf("%w: %s: tick log full (limits: %d entries, %d data bytes per tick)", ErrTrap, k, MaxTickLogEntries, MaxTickLogDataBytes))
	}
	if i.beforeEffect == nil {
		return ""
	}
	call := 0
	for _, e := range i.tickLog {
		if e.Kind == Intent {
			call++
		}
	}
	key := i.effectKey(call, digest)
	i.record(Observation{Kind: Intent, Value: int64(k), Data: append(digest[:], key...)})
	t0 := time.Now()
	i.journalSince.Store(t0.UnixNano())
	got, err := i.beforeEffect(ctx, Effect{Kind: k, Call: call, Digest: digest, Key: key, Log: TickLog{Entries: slices.Clip(i.tickLog)}})
	i.journalWait.Add(int64(time.Since(t0)))
	i.journalSince.Store(0)
	if err == nil && got != "" && got != key {
		err = fmt.Errorf("BeforeEffect returned key %q, but the journaled intent carries %q", got, key)
	}
	if err != nil {
		last := i.tickLog[len(i.tickLog)-1]
		i.tickLog = i.tickLog[:len(i.tickLog)-1]
		i.tickLogData -= len(last.Data)
		i.fail(fmt.Errorf("%w: %s was not performed: journaling it failed: %w", ErrTrap, k, err))
	}
	return key
}

// replayEffect answers an effectful call from the log once the call's
// arguments passed the host's checks: it meets the intent (if one was
// journaled; its digest must be the request's) and returns the recorded
// result. If a partial log ends at the intent (the holder stopped between
// journaling and recording the effect), the tick goes live and live is
// true: the caller performs the effect with the journaled key.
func (i *Instance) replayEffect(k ObsKind, digest [32]byte) (res Observation, key string, live bool) {
	r := i.replay
	if r.pos < len(r.log.Entries) && r.log.Entries[r.pos].Kind == Intent {
		call := r.pos
		e := i.replayNext(Intent)
		if ObsKind(e.Value) != k {
			i.fail(fmt.Errorf("%w: call %d: the guest called %s but the journaled intent is for %s", ErrDivergence, call, k, ObsKind(e.Value)))
		}
		if !bytes.Equal(e.Data[:32], digest[:]) {
			i.fail(fmt.Errorf("%w: call %d: the guest's %s request differs from the journaled one (digest %x, journaled %x)", ErrDivergence, call, k, digest[:8], e.Data[:8]))
		}
		key = string(e.Data[32:])
		if r.partial && r.pos >= len(r.log.Entries) {
			i.goLive()
			return Observation{}, key, true
		}
	}
	return i.replayNext(k), key, false
}

// diverge fails a replayed call whose recorded result could not have come
// from the call the guest makes now.
func (i *Instance) diverge(k ObsKind, format string, a ...any) {
	i.fail(fmt.Errorf("%w: call %d: %s: %s", ErrDivergence, i.replay.pos-1, k, fmt.Sprintf(format, a...)))
}

// putHint writes the u32 size hint n at ptr when the buffer holds 4 bytes.
func putHint(mem api.Memory, ptr, capacity, n uint32) {
	if capacity >= 4 {
		mem.WriteUint32Le(ptr, n)
	}
}

// readMem is Memory.Read, except that an empty range is always readable
// (the reference ignores the pointer of an empty argument).
func readMem(mem api.Memory, ptr, n uint32) ([]byte, bool) {
	if n == 0 {
		return nil, true
	}
	return mem.Read(ptr, n)
}

func hint(n int) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(n)) }
