package testenv

import (
	"strings"
	"sync"
	"testing"
)

// TestSyncBuffer writes from several goroutines while reading (run with
// -race): every write arrives whole.
func TestSyncBuffer(t *testing.T) {
	tests := []struct {
		name    string
		writers int
		lines   int
	}{
		{name: "none", writers: 0, lines: 0},
		{name: "one", writers: 1, lines: 100},
		{name: "stdout and stderr", writers: 2, lines: 500},
		{name: "many", writers: 8, lines: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b SyncBuffer
			var wg sync.WaitGroup
			for range tc.writers {
				wg.Go(func() {
					for range tc.lines {
						if _, err := b.Write([]byte("a whole line\n")); err != nil {
							t.Error(err)
							return
						}
						_ = b.String()
					}
				})
			}
			wg.Wait()
			got := b.String()
			if n := strings.Count(got, "a whole line\n"); n != tc.writers*tc.lines || len(got) != n*len("a whole line\n") {
				t.Fatalf("%d whole lines in %d bytes, want %d", n, len(got), tc.writers*tc.lines)
			}
		})
	}
}
