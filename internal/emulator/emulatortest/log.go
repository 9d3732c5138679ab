package emulatortest

import (
	"context"
	"log/slog"
	"os"
	"testing"
)

// testLogger logs the emulator through the test when SNOWGATE_EMULATOR_LOG
// is set, and discards it otherwise (the drivers' retries are noisy).
func testLogger(tb testing.TB) *slog.Logger {
	if os.Getenv("SNOWGATE_EMULATOR_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(&tbHandler{tb: tb, h: slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})})
}

// tbHandler stops logging once the test is over.
type tbHandler struct {
	tb testing.TB
	h  slog.Handler
}

func (t *tbHandler) Enabled(ctx context.Context, l slog.Level) bool { return t.h.Enabled(ctx, l) }
func (t *tbHandler) Handle(ctx context.Context, r slog.Record) error {
	return t.h.Handle(ctx, r)
}
func (t *tbHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return &tbHandler{tb: t.tb, h: t.h.WithAttrs(a)}
}
func (t *tbHandler) WithGroup(n string) slog.Handler {
	return &tbHandler{tb: t.tb, h: t.h.WithGroup(n)}
}
