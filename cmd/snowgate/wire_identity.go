package main

import "context"

// wireIdentity adds the identity stage to the daemon. Not wired yet: the stage is
// being built.
func (d *daemon) wireIdentity(_ context.Context) error {
	return nil
}
