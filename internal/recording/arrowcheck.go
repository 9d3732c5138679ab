package recording

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// errArrowSchema: the stream's schema message declares more entries than
// its bytes can hold.
var errArrowSchema = errors.New("arrow stream: malformed schema message")

// checkArrowSchema walks the flatbuffer of the stream's first message (the
// schema) before arrow-go reads it. arrow-go sizes slices from the vector
// lengths there (schema fields, field children, custom metadata) without
// checking them against the message, so a forged length of 2^31 made the
// process die of out-of-memory, which no recover catches (FuzzDecodeArrow).
// Each vector must fit in the message; nesting is bounded.
func checkArrowSchema(data []byte) error {
	b := data
	if len(b) >= 4 && binary.LittleEndian.Uint32(b) == 0xFFFFFFFF {
		b = b[4:]
	}
	if len(b) < 4 {
		return nil // arrow-go reports the short stream
	}
	n := int64(int32(binary.LittleEndian.Uint32(b)))
	b = b[4:]
	if n <= 0 || n > int64(len(b)) {
		return fmt.Errorf("%w: message of %d bytes in %d", errArrowSchema, n, len(b))
	}
	fb := flatbuf(b[:n])
	msg, ok := fb.root()
	if !ok {
		return errArrowSchema
	}
	if !fb.vectorOK(msg, 4, 0, 0) { // Message.custom_metadata
		return errArrowSchema
	}
	if t, ok := fb.fieldPos(msg, 1); !ok || t < 0 || fb[t] != 1 { // header_type Schema
		return nil // not a schema: arrow-go refuses it
	}
	schema, ok := fb.table(msg, 2)
	if !ok {
		return errArrowSchema
	}
	if !fb.vectorOK(schema, 2, 0, 0) || !fb.vectorOK(schema, 1, 1, 0) { // custom_metadata, fields
		return errArrowSchema
	}
	return nil
}

// flatbuf is a flatbuffer with bounds-checked reads.
type flatbuf []byte

func (fb flatbuf) u32(p int) (int, bool) {
	if p < 0 || p+4 > len(fb) {
		return 0, false
	}
	return int(binary.LittleEndian.Uint32(fb[p:])), true
}

// root returns the position of the root table.
func (fb flatbuf) root() (int, bool) {
	off, ok := fb.u32(0)
	return off, ok && off < len(fb)
}

// fieldPos returns the position of field i of the table at t, -1 when the
// field is absent.
func (fb flatbuf) fieldPos(t, i int) (int, bool) {
	so, ok := fb.u32(t)
	if !ok {
		return 0, false
	}
	vt := t - int(int32(uint32(so)))
	if vt < 0 || vt+4 > len(fb) {
		return 0, false
	}
	vtLen := int(binary.LittleEndian.Uint16(fb[vt:]))
	if vt+vtLen > len(fb) {
		return 0, false
	}
	slot := 4 + 2*i
	if slot+2 > vtLen {
		return -1, true
	}
	off := int(binary.LittleEndian.Uint16(fb[vt+slot:]))
	if off == 0 {
		return -1, true
	}
	if t+off >= len(fb) {
		return 0, false
	}
	return t + off, true
}

// table returns the position of the table that field i of t refers to.
func (fb flatbuf) table(t, i int) (int, bool) {
	p, ok := fb.fieldPos(t, i)
	if !ok || p < 0 {
		return 0, false
	}
	off, ok := fb.u32(p)
	return p + off, ok && p+off < len(fb)
}

// vectorOK checks that the vector in field i of table t (absent is fine)
// fits in the buffer; kind 1 checks its elements as Fields (children,
// custom metadata) down to a bounded depth.
func (fb flatbuf) vectorOK(t, i, kind, depth int) bool {
	p, ok := fb.fieldPos(t, i)
	if !ok {
		return false
	}
	if p < 0 {
		return true
	}
	off, ok := fb.u32(p)
	if !ok {
		return false
	}
	v := p + off
	n, ok := fb.u32(v)
	if !ok || int64(n) > int64(len(fb)-v-4)/4 {
		return false
	}
	if kind != 1 {
		return true
	}
	if depth > 64 {
		return false
	}
	for k := 0; k < n; k++ {
		e := v + 4 + 4*k
		eo, _ := fb.u32(e)
		f := e + eo
		if f >= len(fb) {
			return false
		}
		// Field.children (5) and Field.custom_metadata (6).
		if !fb.vectorOK(f, 5, 1, depth+1) || !fb.vectorOK(f, 6, 0, depth+1) {
			return false
		}
	}
	return true
}
