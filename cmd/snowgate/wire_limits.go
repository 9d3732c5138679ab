package main

import (
	"context"

	"github.com/snowgate/snowgate/internal/gateway"
)

// wireLimits gives the gateway the configured resource limits (limits:).
func (d *daemon) wireLimits(context.Context) error {
	l := d.cfg.Limits
	d.gw.Limits = gateway.Limits{
		MaxRequests:      l.MaxRequests,
		MaxQueries:       l.MaxQueries,
		MaxBufferedBytes: l.MaxBufferedBytes.Bytes,
		PerWorkload: gateway.WorkloadLimits{
			MaxRequests:      l.PerWorkload.MaxRequests,
			MaxQueries:       l.PerWorkload.MaxQueries,
			MaxBufferedBytes: l.PerWorkload.MaxBufferedBytes.Bytes,
		},
	}
	return nil
}
