package gateway

import (
	"context"
)

// Recorder keeps the durable record of every exchange, per session. Commit
// is called after the reply is known and before a byte of it is released to
// the client: when it returns nil the exchange is as durable as the
// recorder's sync policy promises; an error refuses the reply (the client
// gets a Snowflake-shaped error instead, so nothing runs unrecorded).
// Close seals what is open when the gateway stops.
type Recorder interface {
	Commit(ctx context.Context, x *Exchange) error
	Close() error
}

// commit hands x to the recorder, if there is one.
func (g *Gateway) commit(ctx context.Context, x *Exchange) error {
	if g.cfg.Recorder == nil {
		return nil
	}
	return g.cfg.Recorder.Commit(ctx, x)
}
