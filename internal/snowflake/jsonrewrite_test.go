package snowflake

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// semantic decodes JSON with exact numbers, for comparing meaning.
func semantic(t testing.TB, b []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	return v
}

func TestParseObjectErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		err  error
	}{
		{"empty", ``, ErrInvalidJSON},
		{"truncated", `{"a":`, ErrInvalidJSON},
		{"trailing data", `{"a":1} {"b":2}`, ErrInvalidJSON},
		{"array", `[1,2]`, ErrNotObject},
		{"string", `"x"`, ErrNotObject},
		{"duplicate", `{"a":1,"a":2}`, ErrAmbiguousKey},
		{"case duplicate", `{"TOKEN":"x","token":"y"}`, ErrAmbiguousKey},
		{"kelvin duplicate", `{"k":1,"\u212a":2}`, ErrAmbiguousKey},
		{"escaped duplicate", `{"data":1,"d\u0061ta":2}`, ErrAmbiguousKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseObject([]byte(tt.in)); !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
		})
	}
}

func TestRewriteKeepsEverythingElse(t *testing.T) {
	in := `{"data":{"masterToken":"m","token":"s","validityInSeconds":3600,` +
		`"sessionId":1172562260498123456789,"smkId":9007199254740993,"ts":1.50e+3,` +
		`"unknownField":{"nested":[1,2,{"deep":"\u00e9\"<>"}]},"idToken":null},` +
		`"code":null,"message":null,"success":true,"extra":[ 1 , 2 ]}`
	o, err := ParseObject([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if err := o.SetPath("gw-session", "data", "token"); err != nil {
		t.Fatal(err)
	}
	if err := o.SetPath("gw-master", "data", "masterToken"); err != nil {
		t.Fatal(err)
	}
	out := o.Bytes()
	want := `{"data":{"masterToken":"gw-master","token":"gw-session","validityInSeconds":3600,` +
		`"sessionId":1172562260498123456789,"smkId":9007199254740993,"ts":1.50e+3,` +
		`"unknownField":{"nested":[1,2,{"deep":"\u00e9\"<>"}]},"idToken":null},` +
		`"code":null,"message":null,"success":true,"extra":[ 1 , 2 ]}`
	if string(out) != want {
		t.Fatalf("got\n%s\nwant\n%s", out, want)
	}
	if raw, ok := o.Lookup("data", "sessionId"); !ok || string(raw) != "1172562260498123456789" {
		t.Fatalf("sessionId = %s", raw)
	}
}

func TestObjectEdits(t *testing.T) {
	tests := []struct {
		name string
		in   string
		edit func(o *Object) error
		want string
	}{
		{"set existing keeps order", `{"a":1,"b":2,"c":3}`,
			func(o *Object) error { return o.Set("b", "x") }, `{"a":1,"b":"x","c":3}`},
		{"set new appends", `{"a":1}`,
			func(o *Object) error { return o.Set("z", json.Number("123456789012345678901234567890")) },
			`{"a":1,"z":123456789012345678901234567890}`},
		{"delete", `{"a":1,"b":2,"c":3}`,
			func(o *Object) error { o.Delete("b"); return o.Set("c", 4) }, `{"a":1,"c":4}`},
		{"no html escaping", `{}`,
			func(o *Object) error { return o.Set("sql", "SELECT 1 WHERE a<b && c>d") }, `{"sql":"SELECT 1 WHERE a<b && c>d"}`},
		{"set raw", `{"a":1}`,
			func(o *Object) error { return o.Set("a", json.RawMessage(` {"x":[true]} `)) }, `{"a":{"x":[true]}}`},
		{"edit inside array", `{"data":{"chunks":[{"url":"u0","rowCount":1},{"url":"u1"}]}}`,
			func(o *Object) error {
				d, err := o.Object("data")
				if err != nil {
					return err
				}
				a, err := d.Array("chunks")
				if err != nil {
					return err
				}
				c, err := a.Object(1)
				if err != nil {
					return err
				}
				return c.Set("url", "g1")
			}, `{"data":{"chunks":[{"url":"u0","rowCount":1},{"url":"g1"}]}}`},
		{"whitespace at unpacked levels only", "{ \"a\" : { \"b\" : 1 } ,\n\"c\":[ 1 ] }",
			func(o *Object) error { return nil }, `{"a":{ "b" : 1 },"c":[ 1 ]}`},
		{"escaped key kept", `{"\u0041":1}`,
			func(o *Object) error { return o.Set("A", 2) }, `{"\u0041":2}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := ParseObject([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.edit(o); err != nil {
				t.Fatal(err)
			}
			if got := string(o.Bytes()); got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestObjectAccessErrors(t *testing.T) {
	o, err := ParseObject([]byte(`{"s":"x","n":12,"z":null,"o":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Object("s"); !errors.Is(err, ErrNotObject) {
		t.Errorf("Object(s): %v", err)
	}
	if _, err := o.Array("o"); !errors.Is(err, ErrNotArray) {
		t.Errorf("Array(o): %v", err)
	}
	if _, err := o.Object("missing"); !errors.Is(err, ErrNoMember) {
		t.Errorf("Object(missing): %v", err)
	}
	if _, err := o.Path("o", "x", "y"); !errors.Is(err, ErrNoMember) {
		t.Errorf("Path: %v", err)
	}
	if _, _, err := o.String("n"); err == nil {
		t.Error("String(n) accepted a number")
	}
	if _, _, err := o.Number("s"); err == nil {
		t.Error("Number(s) accepted a string")
	}
	if s, ok, err := o.String("z"); s != "" || ok || err != nil {
		t.Errorf("String(null) = %q %v %v", s, ok, err)
	}
	if err := o.Set("S", 1); !errors.Is(err, ErrAmbiguousKey) {
		t.Errorf("Set(S) beside s: %v", err)
	}
	if err := o.Set("bad", json.RawMessage(`{`)); !errors.Is(err, ErrInvalidJSON) {
		t.Errorf("Set invalid raw: %v", err)
	}
	if err := o.SetPath(1, "s", "x"); !errors.Is(err, ErrNotObject) {
		t.Errorf("SetPath through a string: %v", err)
	}
}

func FuzzJSONRewrite(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"a":1}`, `{"data":{"token":"t","sessionId":123456789012345678901}}`,
		`{"data":{"chunks":[{"url":"https://x/y?z=1"}]}, "x" : [ {"a" : "\u0000"} ] }`,
		`{"a":"\ud800"}`, `{"a":1e400}`, `[]`, `{"a":{"a":{"a":{}}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		o, err := ParseObject(in)
		if err != nil {
			return
		}
		out := o.Bytes()
		if !json.Valid(out) {
			t.Fatalf("invalid output %q", out)
		}
		if !reflect.DeepEqual(semantic(t, in), semantic(t, out)) {
			t.Fatalf("meaning changed:\n%q\n%q", in, out)
		}
		// Unpack every nested object and array one level down, edit one
		// member, and check that the rest kept its meaning.
		want := semantic(t, in).(map[string]any)
		for _, k := range o.Keys() {
			if sub, err := o.Object(k); err == nil {
				_ = sub.Keys()
			} else if arr, err := o.Array(k); err == nil {
				for i := 0; i < arr.Len(); i++ {
					_, _ = arr.Object(i)
				}
			}
		}
		if err := o.Set("__snowgate", json.Number("12345678901234567890123")); err != nil {
			return // a case-ambiguous name already present
		}
		want["__snowgate"] = json.Number("12345678901234567890123")
		again, err := ParseObject(o.Bytes())
		if err != nil {
			t.Fatalf("re-parse %q: %v", o.Bytes(), err)
		}
		if got := semantic(t, again.Bytes()); !reflect.DeepEqual(got, any(want)) {
			t.Fatalf("edit changed other members:\n%q\n%q", in, again.Bytes())
		}
	})
}

// TestIsNull: absent and JSON null members are null, whatever else is not,
// also once a member was parsed for an edit.
func TestIsNull(t *testing.T) {
	o, err := ParseObject([]byte(`{"n":null,"s":"null","a":[1,null],"o":{"x":null},"z":0,"sp": null }`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Array("a"); err != nil { // parsed: held as an Array now
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key  string
		want bool
	}{
		{"absent", true}, {"n", true}, {"sp", true}, {"s", false}, {"a", false}, {"o", false}, {"z", false},
	} {
		if got := o.IsNull(tc.key); got != tc.want {
			t.Errorf("IsNull(%q) = %v, want %v", tc.key, got, tc.want)
		}
	}
}
