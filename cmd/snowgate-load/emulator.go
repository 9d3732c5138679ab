package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/snowgate/snowgate/internal/emulator"
)

// emulatorAdmin talks to the emulator's /__emulator/ endpoints: fault
// knobs, forced session expiry and the query log. It is reached directly,
// never through the gateway.
type emulatorAdmin struct {
	base   string
	client *http.Client
}

// newEmulatorAdmin returns a client of the admin endpoints at base
// (https://host:port), trusting caFile ("" for the system roots).
func newEmulatorAdmin(base, caFile string) (*emulatorAdmin, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("emulator CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("emulator CA %s: no PEM certificate", caFile)
		}
		tc.RootCAs = pool
	}
	return &emulatorAdmin{base: base, client: &http.Client{
		Timeout:   5 * time.Minute,
		Transport: &http.Transport{Proxy: nil, TLSClientConfig: tc},
	}}, nil
}

// adminFaults is the body of POST /__emulator/faults.
type adminFaults struct {
	Clear          bool             `json:"clear,omitempty"`
	Faults         []emulator.Fault `json:"faults,omitempty"`
	ExpireSessions bool             `json:"expireSessions,omitempty"`
}

func (a *emulatorAdmin) post(ctx context.Context, body adminFaults) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.base+"/__emulator/faults", bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("emulator faults: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("emulator faults: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("emulator faults: %s: %s", resp.Status, msg)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return nil
}

// setFaults replaces the installed faults with fs.
func (a *emulatorAdmin) setFaults(ctx context.Context, fs []emulator.Fault) error {
	return a.post(ctx, adminFaults{Clear: true, Faults: fs})
}

// expireSessions expires every session token: each session's next request
// renews through its driver.
func (a *emulatorAdmin) expireSessions(ctx context.Context) error {
	return a.post(ctx, adminFaults{ExpireSessions: true})
}

// queryLog returns every statement the emulator executed.
func (a *emulatorAdmin) queryLog(ctx context.Context) ([]emulator.QueryLogEntry, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/__emulator/querylog", nil)
	if err != nil {
		return nil, fmt.Errorf("emulator query log: %w", err)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("emulator query log: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("emulator query log: %s", resp.Status)
	}
	var log []emulator.QueryLogEntry
	if err := json.NewDecoder(resp.Body).Decode(&log); err != nil {
		return nil, fmt.Errorf("emulator query log: %w", err)
	}
	return log, nil
}

// duplicates returns the statements executed more than once for one
// logical request: entries sharing session and requestId (multi-statement
// children, which share their parent's requestId, excepted).
func duplicates(log []emulator.QueryLogEntry) []emulator.QueryLogEntry {
	type key struct {
		session int64
		request string
	}
	seen := map[key]bool{}
	var dup []emulator.QueryLogEntry
	for _, e := range log {
		if e.RequestID == "" || e.ParentQueryID != "" {
			continue
		}
		k := key{e.SessionID, e.RequestID}
		if seen[k] {
			dup = append(dup, e)
		}
		seen[k] = true
	}
	return dup
}
