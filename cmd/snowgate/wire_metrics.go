package main

import "context"

// wireMetrics adds the metrics stage to the daemon. Not wired yet: the stage is
// being built.
func (d *daemon) wireMetrics(_ context.Context) error {
	return nil
}
