package gateway

// ForgetHeld drops every held query from memory, as a restart of the
// gateway does; the approval store keeps them.
func (sp *StatementPolicy) ForgetHeld() {
	sp.init()
	sp.holds.mu.Lock()
	defer sp.holds.mu.Unlock()
	clear(sp.holds.byQID)
	clear(sp.holds.byReq)
}

// HeldCount is the number of held queries in memory.
func (sp *StatementPolicy) HeldCount() int {
	sp.init()
	sp.holds.mu.Lock()
	defer sp.holds.mu.Unlock()
	return len(sp.holds.byQID)
}
