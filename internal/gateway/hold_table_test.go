package gateway

import (
	"fmt"
	"testing"
	"time"
)

// TestHoldTableForgets: a held query is forgotten holdDoneRetention after
// its run got its final reply, or holdRetention after its approval would
// have expired, and not before; sweeps are spaced, not one per add.
func TestHoldTableForgets(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name   string
		expiry time.Time // the approval's expiry
		doneAt time.Time // zero: still waiting
		kept   bool
	}{
		{"waiting, approval open", now.Add(30 * time.Minute), time.Time{}, true},
		{"waiting, approval expired recently", now.Add(-time.Minute), time.Time{}, true},
		{"approval expired past the retention", now.Add(-holdRetention - time.Minute), time.Time{}, false},
		{"ran just now", now.Add(30 * time.Minute), now, true},
		{"ran within the retention", now.Add(30 * time.Minute), now.Add(-holdDoneRetention + time.Minute), true},
		{"ran past the retention", now.Add(30 * time.Minute), now.Add(-holdDoneRetention - time.Minute), false},
	}
	tab := newHoldTable()
	for i, tc := range tests {
		hd := &held{qid: fmt.Sprint("q", i), session: "s", requestID: fmt.Sprint("r", i), expires: tc.expiry}
		if !tc.doneAt.IsZero() {
			hd.doneAt.Store(tc.doneAt.UnixNano())
		}
		tab.add(hd)
	}
	// The adds above swept once, before any was stored; the next sweep is
	// due holdSweepEvery later.
	tab.lastSweep = now.Add(-holdSweepEvery)
	tab.add(&held{qid: "trigger", session: "s", requestID: "trigger", expires: now.Add(time.Hour)})
	for i, tc := range tests {
		qid, req := fmt.Sprint("q", i), fmt.Sprint("r", i)
		if got := tab.byQueryID(qid) != nil; got != tc.kept {
			t.Errorf("%s: kept by query id = %v, want %v", tc.name, got, tc.kept)
		}
		if got := tab.byRequest("s", req) != nil; got != tc.kept {
			t.Errorf("%s: kept by request = %v, want %v", tc.name, got, tc.kept)
		}
	}
	// Within holdSweepEvery of the last sweep, an add does not walk the
	// table: an entry past its retention stays until the next sweep.
	old := &held{qid: "old", session: "s", requestID: "old", expires: now.Add(-2 * holdRetention)}
	tab.byQID[old.qid], tab.byReq["s\x00old"] = old, old
	tab.add(&held{qid: "next", session: "s", requestID: "next", expires: now.Add(time.Hour)})
	if tab.byQueryID("old") == nil {
		t.Error("an add within holdSweepEvery of the last sweep swept the table")
	}
}
