package custody

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting"
)

// TestRetryInsideTick: Manager.Control's retry of a record refused for a
// head inside a tick — it waits that out (and the busy phase of the
// restart that follows it), returns any other answer at once, and gives
// up with the last answer when its context ends.
func TestRetryInsideTick(t *testing.T) {
	inside := fmt.Errorf("%w: cp7 at tick 3", hosting.ErrInsideTick)
	busy := busyPhase{did: "did:key:z6Mk", phase: "control"}
	refused := fmt.Errorf("%w: already stopped", agents.ErrControl)
	ok := errors.New("") // stands for success: answered as ("cp9", nil)
	cases := []struct {
		name    string
		answers []error
		want    error // nil: success
		tries   int
	}{
		{"applied at once", []error{ok}, nil, 1},
		{"inside, then applied", []error{inside, inside, ok}, nil, 3},
		{"inside, restarting, then applied", []error{inside, busy, busy, ok}, nil, 4},
		{"inside, then refused", []error{inside, refused}, agents.ErrControl, 2},
		{"busy before any inside is not retried", []error{busy, ok}, ErrBusy, 1},
		{"other errors are not retried", []error{refused, ok}, agents.ErrControl, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := 0
			id, err := retryInsideTick(context.Background(), time.Millisecond, func() (string, error) {
				a := c.answers[n]
				n++
				if a == ok {
					return "cp9", nil
				}
				return "", a
			})
			if n != c.tries {
				t.Errorf("%d tries, want %d", n, c.tries)
			}
			switch {
			case c.want == nil && (err != nil || id != "cp9"):
				t.Errorf("got %q %v, want cp9", id, err)
			case c.want != nil && !errors.Is(err, c.want):
				t.Errorf("got %v, want %v", err, c.want)
			}
		})
	}
	t.Run("context ends", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		n := 0
		start := time.Now()
		_, err := retryInsideTick(ctx, 5*time.Millisecond, func() (string, error) { n++; return "", inside })
		if !errors.Is(err, hosting.ErrInsideTick) || n < 2 || time.Since(start) > 2*time.Second {
			t.Errorf("after %d tries in %v: %v", n, time.Since(start), err)
		}
	})
}
