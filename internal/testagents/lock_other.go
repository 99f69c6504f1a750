//go:build !unix

package testagents

import "context"

// lockFile is a no-op without flock: builders in one process still
// serialise on mu, and concurrent processes at worst build twice (each
// rename is atomic).
func lockFile(ctx context.Context, path string) (unlock func(), err error) { return func() {}, nil }
