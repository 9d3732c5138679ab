package gateway

import "net/http"

// roundTrip sends one API request to the account's upstream. It is where
// the gateway's own retries of what is safe to retry belong.
func (h *handler) roundTrip(up *upstream, _ *Call, out *http.Request) (*http.Response, error) {
	return up.transport.RoundTrip(out)
}
