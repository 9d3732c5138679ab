package redirect_test

import (
	"testing"

	"github.com/snowgate/snowgate/internal/testenv"
)

// TestConcurrentConnectsKeepTheirOrigins runs several agents connecting in a
// loop at once, each to its own original destination, more of them than the
// machine has CPUs. connect4 hands each record to the socket's
// TCP_CONNECT_CB through a per-CPU slot chosen by the socket cookie, so here
// records of different sockets share slots all the time, and tasks get
// preempted or move to another CPU between the two hooks. The gateway
// answers every connection with the original destination it looked up: each
// agent must read its own, every time.
func TestConcurrentConnectsKeepTheirOrigins(t *testing.T) {
	testenv.RequireRoot(t)
	e := newBypassEnv(t)
	tests := []struct {
		network string
		addr    string // what the agent dials
		orig    string // what the gateway must see
	}{
		{"tcp4", "203.0.113.21:443", "203.0.113.21:443"},
		{"tcp4", "203.0.113.22:80", "203.0.113.22:80"},
		{"tcp4", "203.0.113.23:443", "203.0.113.23:443"},
		{"tcp6", "[::ffff:203.0.113.24]:443", "203.0.113.24:443"},
		{"tcp4", "203.0.113.25:80", "203.0.113.25:80"},
		{"tcp6", "[::ffff:203.0.113.26]:80", "203.0.113.26:80"},
	}
	clients := make([]*testenv.ClientProc, len(tests))
	for i, tc := range tests {
		clients[i] = testenv.StartClient(t, agentNobody(e), testenv.ClientAction{
			Op: testenv.OpConnectLoop, Network: tc.network, Addr: tc.addr,
			Count: 150, MinDurationMS: 2000, Expect: "orig=" + tc.orig + " ", TimeoutSec: 30,
		})
	}
	total := 0
	for i, c := range clients {
		r, err := c.Wait()
		if err != nil {
			t.Fatalf("%s %s: %v", tests[i].network, tests[i].addr, err)
		}
		if r.Failed != 0 || r.Done < 150 {
			t.Errorf("%s %s: %d of %d connects failed or saw another origin (first: %s; %v)",
				tests[i].network, tests[i].addr, r.Failed, r.Done, r.Err, r.Failures)
		}
		total += r.Done
	}
	t.Logf("%d connects from %d concurrent agents, each saw its own origin", total, len(clients))
}
