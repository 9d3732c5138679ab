package testenv

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"
)

// HTTPClient is an HTTP client whose connections are made inside the
// namespace (a daemon's admin listener there, say), with no proxy, and
// timeout for each request. Keep-alives are off: every request dials anew,
// so it reaches whatever listens at that moment (a daemon replaced in
// between too).
func (n *Netns) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:             nil,
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				var c net.Conn
				err := n.Do(func() error {
					var err error
					c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
					return err
				})
				if err != nil {
					return nil, fmt.Errorf("dial %s %s in netns: %w", network, addr, err)
				}
				return c, nil
			},
		},
	}
}
