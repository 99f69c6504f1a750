// Command igor-demo-server is the local counterpart of the example agents
// that act (agents/examples/pricewatcher, x402buyer and poster): a price
// feed, an x402 paywall that verifies payment receipts, and a counter that
// honours Idempotency-Key. It logs one line per request to stderr, prints
// "listening http://ADDR" on stdout once it accepts connections, and shuts
// down cleanly on SIGINT or SIGTERM.
//
// Usage: see usageText (igor-demo-server --help).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const usageText = `usage: igor-demo-server [--addr 127.0.0.1:8402] [--name paywall] [--price 1000]

Serves, on --addr (port 0 picks a free one; the address is printed):
  GET  /price          {"price": P}, P = 100 + (37n mod 41)/4 for the n-th request
  GET  /paid/ITEM      402 {"recipient": NAME, "amount": PRICE, "memo": "NAME:ITEM"}
                       unless X-Payment is the base64 of a payment receipt whose
                       Ed25519 signature verifies with the agent key it carries,
                       for recipient NAME, memo "NAME:ITEM" and at least PRICE µc;
                       then 200 with the item's content. A receipt is one sale;
                       presented again, it gets the content again, no new sale.
  GET  /sales          {"recipient", "price", "sales": {ITEM: n}, "total",
                       "revenue", "replays", "rejected"}
  POST /count          {"applied": true, "n": N}: applied once per Idempotency-Key
                       (a repeated key gets the first response again, nothing
                       applied); requests without the header are applied each time
  GET  /count/stats    {"applied", "duplicates_seen", "keys", "without_key"}
  GET  /count/keys     {"keys": [{"key": K, "bodies": [...]}]}, first-seen order

  --addr ADDR    listen address (default 127.0.0.1:8402)
  --name NAME    the paywall's recipient name (default paywall)
  --price N      the price of an item in µc (default 1000)
`

// shutdownTimeout bounds how long in-flight requests may finish.
const shutdownTimeout = 5 * time.Second

type config struct {
	addr, name string
	price      int64
}

func parseArgs(args []string) (config, error) {
	fs := flag.NewFlagSet("igor-demo-server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var c config
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8402", "")
	fs.StringVar(&c.name, "name", "paywall", "")
	fs.Int64Var(&c.price, "price", 1000, "")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case c.name == "" || len(c.name) > 256:
		return c, errors.New("--name must be 1 to 256 bytes (a wallet_pay recipient)")
	case c.price <= 0:
		return c, fmt.Errorf("--price must be a positive number of µc, got %d", c.price)
	}
	return c, nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run serves until ctx is done, then shuts down: 0 clean, 1 failed, 2 bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseArgs(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usageText)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "igor-demo-server: %v\n(run with --help for usage)\n", err)
		return 2
	}
	logger := log.New(stderr, "demo-server: ", log.LstdFlags|log.Lmicroseconds)
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		fmt.Fprintf(stderr, "igor-demo-server: %v\n", err)
		return 1
	}
	srv := &http.Server{
		Handler:           newServer(cfg.name, cfg.price, logger).handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          logger,
	}
	fmt.Fprintf(stdout, "listening http://%s\n", ln.Addr())
	logger.Printf("serving on %s: recipient %q, price %d µc", ln.Addr(), cfg.name, cfg.price)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		logger.Printf("serve: %v", err)
		return 1
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Printf("shutdown: %v", err)
		return 1
	}
	<-done // http.ErrServerClosed
	logger.Printf("stopped")
	return 0
}
