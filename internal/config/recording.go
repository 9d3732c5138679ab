package config

import (
	"fmt"
	"path/filepath"

	"filippo.io/age"
)

// Recording configures the session recordings.
type Recording struct {
	// Dir holds local recordings. Required.
	Dir string `yaml:"dir"`
	// EncryptTo lists age recipients (age1…) the recordings are encrypted to.
	EncryptTo []string `yaml:"encrypt_to"`
	// Results is how much of each result is recorded: full (default), none
	// or first_rows.
	Results string `yaml:"results"`
	// FirstRows is the row count kept with results: first_rows; default 100.
	FirstRows int `yaml:"first_rows"`
	// ExchangeLog is the JSON-lines file of redacted exchanges the gateway
	// writes; default <dir>/exchanges.jsonl.
	ExchangeLog string `yaml:"exchange_log"`
}

// Values of Recording.Results.
const (
	ResultsFull      = "full"
	ResultsNone      = "none"
	ResultsFirstRows = "first_rows"
)

func (v *validator) recording(r *Recording) {
	v.requiredPath("recording.dir", r.Dir)
	for i, rcpt := range r.EncryptTo {
		if _, err := age.ParseX25519Recipient(rcpt); err != nil {
			v.bad(fmt.Sprintf("recording.encrypt_to[%d]", i), "not an age recipient (age1…)")
		}
	}
	if r.Results == "" {
		r.Results = ResultsFull
	}
	v.enum("recording.results", r.Results, ResultsFull, ResultsNone, ResultsFirstRows)
	switch {
	case r.FirstRows < 0:
		v.bad("recording.first_rows", "must not be negative")
	case r.FirstRows > 0 && r.Results != ResultsFirstRows:
		v.bad("recording.first_rows", "only used with results: first_rows")
	case r.FirstRows == 0 && r.Results == ResultsFirstRows:
		r.FirstRows = 100
	}
	switch {
	case r.ExchangeLog == "" && r.Dir != "":
		r.ExchangeLog = filepath.Join(r.Dir, "exchanges.jsonl")
	case r.ExchangeLog != "" && !filepath.IsAbs(r.ExchangeLog):
		v.bad("recording.exchange_log", "%q is not an absolute path", r.ExchangeLog)
	}
}
