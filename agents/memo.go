package agents

import "sync"

// memo is a bounded map for results worth remembering (a verified
// signature, a parsed DID): two generations of at most n entries each;
// when the newer fills up it becomes the older and the older is dropped,
// so a hot entry survives a turnover of up to n others. Safe for
// concurrent use. A nil *memo remembers nothing.
type memo[K comparable, V any] struct {
	mu       sync.Mutex
	n        int
	cur, old map[K]V
}

func newMemo[K comparable, V any](n int) *memo[K, V] {
	return &memo[K, V]{n: max(n, 1)}
}

func (m *memo[K, V]) get(k K) (V, bool) {
	var zero V
	if m == nil {
		return zero, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, ok := m.cur[k]; ok {
		return v, true
	}
	v, ok := m.old[k]
	if !ok {
		return zero, false
	}
	return v, true
}

func (m *memo[K, V]) put(k K, v V) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.cur) >= m.n {
		m.old, m.cur = m.cur, nil
	}
	if m.cur == nil {
		m.cur = make(map[K]V, m.n)
	}
	m.cur[k] = v
}
