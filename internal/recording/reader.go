package recording

import (
	"errors"
	"fmt"
	"io"
	"os"

	"filippo.io/age"
)

// Reader iterates over the records of a recording, checking both hash
// chains as it goes. It does not check the seal's signature (that needs the
// trusted key: use Verify).
type Reader struct {
	f        *os.File
	d        *decoder
	meta     Meta
	reported int
	pending  []Record
}

// Open opens a recording for reading. Encrypted recordings need an identity
// among the recipients they were written for.
func Open(path string, identities ...age.Identity) (*Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open recording: %w", err)
	}
	r := &Reader{f: f, d: newDecoder(f, nil, identities, false)}
	// Read up to the session-start record.
	for len(r.d.queue) == 0 && r.d.step() {
	}
	if err := r.fatal(); err != nil {
		r.Close()
		return nil, fmt.Errorf("open recording %s: %w", path, err)
	}
	if r.d.rep.Encrypted && len(identities) == 0 {
		r.Close()
		return nil, fmt.Errorf("open recording %s: encrypted, and no identity given", path)
	}
	if len(r.d.queue) == 0 || r.d.queue[0].Meta == nil {
		r.Close()
		return nil, fmt.Errorf("open recording %s: no session-start record", path)
	}
	r.meta = *r.d.queue[0].Meta
	return r, nil
}

// Meta is the session context from the session-start record.
func (r *Reader) Meta() Meta { return r.meta }

// fatal returns the first integrity problem not yet returned, ignoring the
// ones a crash leaves (a missing seal, a torn tail), which Report lists.
func (r *Reader) fatal() error {
	for ; r.reported < len(r.d.rep.Problems); r.reported++ {
		p := r.d.rep.Problems[r.reported]
		if p.Kind == ProblemMissingSeal || p.Kind == ProblemTruncated {
			continue
		}
		r.reported++
		return p
	}
	return nil
}

// Next returns the next record, starting with the session start. It returns
// io.EOF after the last record, or a Problem at the first integrity failure.
func (r *Reader) Next() (Record, error) {
	for len(r.d.queue) == 0 {
		if err := r.fatal(); err != nil {
			return Record{}, err
		}
		if !r.d.step() {
			if err := r.fatal(); err != nil {
				return Record{}, err
			}
			return Record{}, io.EOF
		}
	}
	if err := r.fatal(); err != nil {
		return Record{}, err
	}
	rec := r.d.queue[0]
	r.d.queue = r.d.queue[1:]
	return rec, nil
}

// Sealed reports, once Next has returned io.EOF, whether a seal matching
// the content closed the recording (its signature is not checked here: use
// Verify with the trusted key).
func (r *Reader) Sealed() bool { return r.d.rep.Sealed }

// Problems lists what the walk found so far, including a missing seal.
func (r *Reader) Problems() []Problem { return r.d.rep.Problems }

// Close closes the file.
func (r *Reader) Close() error {
	if r.d.zdec != nil && !r.d.done {
		r.d.zdec.Close()
	}
	r.d.done = true
	return r.f.Close()
}

// IsProblem reports whether err is a Problem of kind k.
func IsProblem(err error, k ProblemKind) bool {
	var p Problem
	return errors.As(err, &p) && p.Kind == k
}
