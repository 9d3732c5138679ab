package emulator

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"
)

// QueryLogEntry is one statement the emulator actually executed. A
// multi-statement request logs each child statement with its own QueryID
// and the parent's in ParentQueryID.
type QueryLogEntry struct {
	Time          time.Time `json:"time"`
	SessionID     int64     `json:"sessionId"`
	User          string    `json:"user"`
	RequestID     string    `json:"requestId"`
	QueryID       string    `json:"queryId"`
	ParentQueryID string    `json:"parentQueryId,omitempty"`
	SQL           string    `json:"sqlText"`
}

// queryLog keeps every executed statement and optionally appends it to a
// JSON-lines file.
type queryLog struct {
	mu      sync.Mutex
	entries []QueryLogEntry
	file    *os.File
	enc     *json.Encoder
}

func newQueryLog(path string) (*queryLog, error) {
	l := &queryLog{}
	if path != "" {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open query log: %w", err)
		}
		l.file, l.enc = f, json.NewEncoder(f)
	}
	return l, nil
}

func (l *queryLog) add(e QueryLogEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = append(l.entries, e)
	if l.enc != nil {
		_ = l.enc.Encode(e)
	}
}

func (l *queryLog) snapshot() []QueryLogEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]QueryLogEntry(nil), l.entries...)
}

func (l *queryLog) close() error {
	if l.file == nil {
		return nil
	}
	if err := l.file.Close(); err != nil {
		return fmt.Errorf("close query log: %w", err)
	}
	return nil
}

// QueryLog returns every statement executed so far, oldest first.
func (s *Server) QueryLog() []QueryLogEntry { return s.qlog.snapshot() }
