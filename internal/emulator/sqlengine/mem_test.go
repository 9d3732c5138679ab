package sqlengine

import "runtime"

type runtimeMem struct{ heap uint64 }

func (m *runtimeMem) read() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.heap = ms.HeapInuse
}
