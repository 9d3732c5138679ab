package snowflake

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Errors of the JSON rewriter; test with errors.Is.
var (
	// ErrInvalidJSON: the input is not one well-formed JSON value.
	ErrInvalidJSON = errors.New("invalid JSON")
	// ErrNotObject: a value expected to be a JSON object is something else.
	ErrNotObject = errors.New("not a JSON object")
	// ErrNotArray: a value expected to be a JSON array is something else.
	ErrNotArray = errors.New("not a JSON array")
	// ErrNoMember: a member named by a path does not exist.
	ErrNoMember = errors.New("no such member")
	// ErrAmbiguousKey: an object holds two members whose names are equal
	// or equal but for case. Go's encoding/json matches names without regard
	// to case and last-wins, other parsers first-wins or case-sensitively, so
	// such an object could mean one thing to the gateway and another to
	// Snowflake or the driver: it is refused rather than guessed at.
	ErrAmbiguousKey = errors.New("duplicate or case-ambiguous member name")
)

// Object is a JSON object that keeps its members in order and every value it
// was not asked to change byte for byte: numbers keep their exact digits
// (sessionId and smkId exceed 2^53), strings their escapes, unknown members
// their place. Members are parsed one level at a time, on demand, so a large
// rowset is never unpacked just to rewrite a token beside it.
//
// An Object is not safe for concurrent use.
type Object struct {
	members []member
	index   map[string]int // folded name → position in members
}

type member struct {
	rawKey []byte // the key's string literal, quotes included, as received
	key    string // the decoded key
	val    value
}

// value is one JSON value: raw bytes, or a parsed Object or Array that may
// have been edited since.
type value struct {
	raw []byte
	obj *Object
	arr *Array
}

// Array is a JSON array whose elements are parsed on demand, like Object.
type Array struct {
	elems []value
}

// ParseObject parses data, which must be exactly one JSON object (surrounding
// white space allowed). The whole input is validated; only the top level is
// unpacked.
func ParseObject(data []byte) (*Object, error) {
	if !json.Valid(data) {
		return nil, fmt.Errorf("parse JSON body: %w", describeInvalid(data))
	}
	v := bytes.TrimSpace(data)
	if len(v) == 0 || v[0] != '{' {
		return nil, fmt.Errorf("parse JSON body: top level is %s: %w", kindOf(v), ErrNotObject)
	}
	return parseObject(v)
}

// describeInvalid returns the decoder's description of why data is invalid.
func describeInvalid(data []byte) error {
	var v json.RawMessage
	if err := json.Unmarshal(data, &v); err != nil {
		return fmt.Errorf("%v: %w", err, ErrInvalidJSON)
	}
	return ErrInvalidJSON
}

// NewObject returns an empty object.
func NewObject() *Object { return &Object{index: map[string]int{}} }

// fold maps a member name to the key under which case-ambiguous names
// collide (ToUpper then ToLower also folds the Kelvin sign and long s, as
// encoding/json does).
func fold(k string) string { return strings.ToLower(strings.ToUpper(k)) }

// parseObject unpacks one level of a valid JSON object.
func parseObject(b []byte) (*Object, error) {
	o := NewObject()
	i := skipWS(b, 1)
	if i < len(b) && b[i] == '}' {
		return o, nil
	}
	for i < len(b) {
		if b[i] != '"' {
			return nil, fmt.Errorf("object member at byte %d: %w", i, ErrInvalidJSON)
		}
		end, err := scanString(b, i)
		if err != nil {
			return nil, err
		}
		rawKey := b[i:end]
		key, err := decodeKey(rawKey)
		if err != nil {
			return nil, err
		}
		i = skipWS(b, end)
		if i >= len(b) || b[i] != ':' {
			return nil, fmt.Errorf("object member %q: %w", key, ErrInvalidJSON)
		}
		i = skipWS(b, i+1)
		vend, err := scanValue(b, i)
		if err != nil {
			return nil, err
		}
		f := fold(key)
		if _, dup := o.index[f]; dup {
			return nil, fmt.Errorf("member %q: %w", key, ErrAmbiguousKey)
		}
		o.index[f] = len(o.members)
		o.members = append(o.members, member{rawKey: rawKey, key: key, val: value{raw: b[i:vend]}})
		i = skipWS(b, vend)
		if i >= len(b) {
			break
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			return o, nil
		default:
			return nil, fmt.Errorf("after member %q: %w", key, ErrInvalidJSON)
		}
	}
	return nil, fmt.Errorf("unterminated object: %w", ErrInvalidJSON)
}

// parseArray unpacks one level of a valid JSON array.
func parseArray(b []byte) (*Array, error) {
	a := &Array{}
	i := skipWS(b, 1)
	if i < len(b) && b[i] == ']' {
		return a, nil
	}
	for i < len(b) {
		vend, err := scanValue(b, i)
		if err != nil {
			return nil, err
		}
		a.elems = append(a.elems, value{raw: b[i:vend]})
		i = skipWS(b, vend)
		if i >= len(b) {
			break
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case ']':
			return a, nil
		default:
			return nil, fmt.Errorf("array element %d: %w", len(a.elems)-1, ErrInvalidJSON)
		}
	}
	return nil, fmt.Errorf("unterminated array: %w", ErrInvalidJSON)
}

func decodeKey(raw []byte) (string, error) {
	plain := true
	for _, c := range raw[1 : len(raw)-1] {
		if c == '\\' || c >= utf8.RuneSelf {
			plain = false
			break
		}
	}
	if plain {
		return string(raw[1 : len(raw)-1]), nil
	}
	var k string
	if err := json.Unmarshal(raw, &k); err != nil {
		return "", fmt.Errorf("member name: %v: %w", err, ErrInvalidJSON)
	}
	return k, nil
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// scanString returns the index just past the string literal starting at b[i].
func scanString(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unterminated string: %w", ErrInvalidJSON)
}

// scanValue returns the index just past the (already validated) JSON value
// starting at b[i].
func scanValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, fmt.Errorf("missing value: %w", ErrInvalidJSON)
	}
	switch b[i] {
	case '"':
		return scanString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, err := scanString(b, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, fmt.Errorf("unterminated %c: %w", b[i], ErrInvalidJSON)
	default:
		j := i
		for j < len(b) {
			switch b[j] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				if j == i {
					return 0, fmt.Errorf("missing value: %w", ErrInvalidJSON)
				}
				return j, nil
			}
			j++
		}
		return j, nil
	}
}

func kindOf(raw []byte) string {
	if len(raw) == 0 {
		return "empty"
	}
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

// Len is the number of members.
func (o *Object) Len() int { return len(o.members) }

// Keys returns the member names in order.
func (o *Object) Keys() []string {
	keys := make([]string, len(o.members))
	for i, m := range o.members {
		keys[i] = m.key
	}
	return keys
}

// find returns the position of the member named exactly key, or -1.
func (o *Object) find(key string) int {
	i, ok := o.index[fold(key)]
	if !ok || o.members[i].key != key {
		return -1
	}
	return i
}

// Has reports whether a member is named exactly key.
func (o *Object) Has(key string) bool { return o.find(key) >= 0 }

// Raw returns the current JSON text of member key.
func (o *Object) Raw(key string) (json.RawMessage, bool) {
	i := o.find(key)
	if i < 0 {
		return nil, false
	}
	return o.members[i].val.appendJSON(nil), true
}

// IsNull reports whether member key is absent or JSON null. It looks at
// the member as it is, without rendering it (a parsed array or object is
// never null).
func (o *Object) IsNull(key string) bool {
	i := o.find(key)
	if i < 0 {
		return true
	}
	v := &o.members[i].val
	return v.obj == nil && v.arr == nil && string(v.raw) == "null"
}

// Decode unmarshals member key into v, with numbers as json.Number when v
// holds interfaces. It reports false when the member is absent.
func (o *Object) Decode(key string, v any) (bool, error) {
	raw, ok := o.Raw(key)
	if !ok {
		return false, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return true, fmt.Errorf("member %q: %w", key, err)
	}
	return true, nil
}

// String returns member key as a string. An absent or null member gives ""
// and false; a member of another type is an error.
func (o *Object) String(key string) (string, bool, error) {
	if o.IsNull(key) {
		return "", false, nil
	}
	var s string
	if _, err := o.Decode(key, &s); err != nil {
		return "", false, err
	}
	return s, true, nil
}

// Number returns member key as a json.Number with its exact digits. An absent
// or null member gives "" and false; a member of another type is an error.
func (o *Object) Number(key string) (json.Number, bool, error) {
	if o.IsNull(key) {
		return "", false, nil
	}
	raw, _ := o.Raw(key)
	if kindOf(raw) != "a number" {
		return "", false, fmt.Errorf("member %q is %s, not a number", key, kindOf(raw))
	}
	return json.Number(raw), true, nil
}

// Object returns member key as an Object. Edits to it are edits to o.
func (o *Object) Object(key string) (*Object, error) {
	i := o.find(key)
	if i < 0 {
		return nil, fmt.Errorf("member %q: %w", key, ErrNoMember)
	}
	obj, err := o.members[i].val.object()
	if err != nil {
		return nil, fmt.Errorf("member %q: %w", key, err)
	}
	return obj, nil
}

// Array returns member key as an Array. Edits to it are edits to o.
func (o *Object) Array(key string) (*Array, error) {
	i := o.find(key)
	if i < 0 {
		return nil, fmt.Errorf("member %q: %w", key, ErrNoMember)
	}
	arr, err := o.members[i].val.array()
	if err != nil {
		return nil, fmt.Errorf("member %q: %w", key, err)
	}
	return arr, nil
}

// Set sets member key to v, in place when it exists, else at the end. v is a
// *Object, a *Array, a json.RawMessage (validated), or anything
// encoding/json marshals (json.Number keeps its digits).
func (o *Object) Set(key string, v any) error {
	val, err := toValue(v)
	if err != nil {
		return fmt.Errorf("set member %q: %w", key, err)
	}
	if i := o.find(key); i >= 0 {
		o.members[i].val = val
		return nil
	}
	f := fold(key)
	if _, clash := o.index[f]; clash {
		return fmt.Errorf("set member %q: %w", key, ErrAmbiguousKey)
	}
	rawKey, err := marshalNoEscape(key)
	if err != nil {
		return fmt.Errorf("set member %q: %w", key, err)
	}
	o.index[f] = len(o.members)
	o.members = append(o.members, member{rawKey: rawKey, key: key, val: val})
	return nil
}

// Delete removes member key and reports whether it was there.
func (o *Object) Delete(key string) bool {
	i := o.find(key)
	if i < 0 {
		return false
	}
	o.members = append(o.members[:i], o.members[i+1:]...)
	delete(o.index, fold(key))
	for j := i; j < len(o.members); j++ {
		o.index[fold(o.members[j].key)] = j
	}
	return true
}

// Lookup follows path through nested objects and returns the JSON text of
// the last member.
func (o *Object) Lookup(path ...string) (json.RawMessage, bool) {
	if len(path) == 0 {
		return o.AppendJSON(nil), true
	}
	parent, err := o.Path(path[:len(path)-1]...)
	if err != nil {
		return nil, false
	}
	return parent.Raw(path[len(path)-1])
}

// Path follows path through nested objects and returns the last one.
func (o *Object) Path(path ...string) (*Object, error) {
	cur := o
	for n, k := range path {
		next, err := cur.Object(k)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", strings.Join(path[:n+1], "."), errors.Unwrap(err))
		}
		cur = next
	}
	return cur, nil
}

// SetPath sets the member named by path to v; the objects leading to it
// must exist.
func (o *Object) SetPath(v any, path ...string) error {
	if len(path) == 0 {
		return errors.New("set: empty path")
	}
	parent, err := o.Path(path[:len(path)-1]...)
	if err != nil {
		return fmt.Errorf("set %s: %w", strings.Join(path, "."), err)
	}
	return parent.Set(path[len(path)-1], v)
}

// MarshalJSON implements json.Marshaler.
func (o *Object) MarshalJSON() ([]byte, error) { return o.AppendJSON(nil), nil }

// Bytes returns the JSON text of o.
func (o *Object) Bytes() []byte { return o.AppendJSON(nil) }

// AppendJSON appends the JSON text of o to dst: members in order, untouched
// values byte for byte, no insignificant white space at the levels that were
// unpacked.
func (o *Object) AppendJSON(dst []byte) []byte {
	dst = append(dst, '{')
	for i, m := range o.members {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, m.rawKey...)
		dst = append(dst, ':')
		dst = m.val.appendJSON(dst)
	}
	return append(dst, '}')
}

// Len is the number of elements.
func (a *Array) Len() int { return len(a.elems) }

// Raw returns the current JSON text of element i.
func (a *Array) Raw(i int) json.RawMessage { return a.elems[i].appendJSON(nil) }

// Object returns element i as an Object. Edits to it are edits to a.
func (a *Array) Object(i int) (*Object, error) {
	if i < 0 || i >= len(a.elems) {
		return nil, fmt.Errorf("element %d of %d: %w", i, len(a.elems), ErrNoMember)
	}
	obj, err := a.elems[i].object()
	if err != nil {
		return nil, fmt.Errorf("element %d: %w", i, err)
	}
	return obj, nil
}

// Set replaces element i with v (see Object.Set for what v may be).
func (a *Array) Set(i int, v any) error {
	if i < 0 || i >= len(a.elems) {
		return fmt.Errorf("set element %d of %d: %w", i, len(a.elems), ErrNoMember)
	}
	val, err := toValue(v)
	if err != nil {
		return fmt.Errorf("set element %d: %w", i, err)
	}
	a.elems[i] = val
	return nil
}

// MarshalJSON implements json.Marshaler.
func (a *Array) MarshalJSON() ([]byte, error) { return a.AppendJSON(nil), nil }

// AppendJSON appends the JSON text of a to dst.
func (a *Array) AppendJSON(dst []byte) []byte {
	dst = append(dst, '[')
	for i, e := range a.elems {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = e.appendJSON(dst)
	}
	return append(dst, ']')
}

func (v *value) appendJSON(dst []byte) []byte {
	switch {
	case v.obj != nil:
		return v.obj.AppendJSON(dst)
	case v.arr != nil:
		return v.arr.AppendJSON(dst)
	default:
		return append(dst, v.raw...)
	}
}

func (v *value) object() (*Object, error) {
	if v.obj != nil {
		return v.obj, nil
	}
	if v.arr != nil || len(v.raw) == 0 || v.raw[0] != '{' {
		return nil, fmt.Errorf("is %s: %w", kindOf(v.appendJSON(nil)), ErrNotObject)
	}
	obj, err := parseObject(v.raw)
	if err != nil {
		return nil, err
	}
	v.obj, v.raw = obj, nil
	return obj, nil
}

func (v *value) array() (*Array, error) {
	if v.arr != nil {
		return v.arr, nil
	}
	if v.obj != nil || len(v.raw) == 0 || v.raw[0] != '[' {
		return nil, fmt.Errorf("is %s: %w", kindOf(v.appendJSON(nil)), ErrNotArray)
	}
	arr, err := parseArray(v.raw)
	if err != nil {
		return nil, err
	}
	v.arr, v.raw = arr, nil
	return arr, nil
}

func toValue(v any) (value, error) {
	switch t := v.(type) {
	case *Object:
		if t == nil {
			return value{raw: []byte("null")}, nil
		}
		return value{obj: t}, nil
	case *Array:
		if t == nil {
			return value{raw: []byte("null")}, nil
		}
		return value{arr: t}, nil
	case json.RawMessage:
		raw := bytes.TrimSpace(t)
		if !json.Valid(raw) {
			return value{}, describeInvalid(raw)
		}
		return value{raw: bytes.Clone(raw)}, nil
	}
	raw, err := marshalNoEscape(v)
	if err != nil {
		return value{}, err
	}
	return value{raw: raw}, nil
}

// marshalNoEscape marshals v without HTML escaping, so "<" stays "<".
func marshalNoEscape(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
