package policy

import (
	"strings"
	"testing"
)

// fillers are comments and whitespace. Each starts and ends with a space so
// that inserting it between two tokens cannot join it to either of them
// ("/" followed by "/* c */" would otherwise form a // line comment).
var fillers = []string{" ", " \n ", " \t ", " /* c */ ", " -- c\n ", " // c\n ", " /**/ ", " /* ; DROP TABLE t */ ", " -- ; GRANT ROLE r TO USER u\n "}

func addSeeds(f *testing.F) {
	for _, set := range [][]classCase{ordinaryCases, bypassCases} {
		for _, tc := range set {
			f.Add(tc.sql, uint64(len(tc.sql))*2654435761)
		}
	}
}

// boundaries are the byte offsets between tokens (and both ends).
func boundaries(toks []Token, n int) []int {
	out := []int{0}
	for _, t := range toks {
		out = append(out, t.Pos+len(t.Text))
	}
	if out[len(out)-1] != n {
		out = append(out, n)
	}
	return out
}

// FuzzClassify checks that classification never panics and is monotone:
// adding comments or whitespace between tokens never makes a statement
// classify more permissively.
func FuzzClassify(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, sql string, seed uint64) {
		st := Classify(sql)
		if !st.Class.Valid() {
			t.Fatalf("Classify(%q) returned invalid class %q", sql, st.Class)
		}
		if st.Class == ClassUnknown && st.Reason == "" {
			t.Fatalf("Classify(%q): unknown without a reason", sql)
		}
		toks, err := Lex(sql)
		if err != nil || len(sql) > MaxStatementBytes/2 {
			return
		}
		b := boundaries(toks, len(sql))
		mutated := sql
		// Insert up to three fillers, last position first so that earlier
		// offsets stay valid.
		positions := []int{}
		for k := 0; k < 3; k++ {
			positions = append(positions, b[int((seed>>(k*16))%uint64(len(b)))])
		}
		for k := 0; k < len(positions); k++ {
			for l := k + 1; l < len(positions); l++ {
				if positions[l] > positions[k] {
					positions[k], positions[l] = positions[l], positions[k]
				}
			}
		}
		for k, pos := range positions {
			fill := fillers[int((seed>>(48+k*4))%uint64(len(fillers)))]
			mutated = mutated[:pos] + fill + mutated[pos:]
		}
		got := Classify(mutated)
		if got.Class.Strictness() < st.Class.Strictness() {
			t.Fatalf("adding comments/whitespace loosened the class:\n  %q → %s (%s)\n  %q → %s (%s)",
				sql, st.Class, st.Reason, mutated, got.Class, got.Reason)
		}
	})
}

// FuzzLex checks that the lexer never panics and that its tokens cover the
// text exactly, up to the point of a lexing error.
func FuzzLex(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, sql string, _ uint64) {
		toks, err := Lex(sql)
		var b strings.Builder
		pos := 0
		for _, tok := range toks {
			if tok.Pos != pos {
				t.Fatalf("token %q at %d, want %d", tok.Text, tok.Pos, pos)
			}
			b.WriteString(tok.Text)
			pos += len(tok.Text)
			if tok.Text == "" {
				t.Fatalf("empty token of kind %s at %d", tok.Kind, tok.Pos)
			}
		}
		if err == nil && b.String() != sql {
			t.Fatalf("tokens do not cover the text: %q vs %q", b.String(), sql)
		}
		if err != nil && !strings.HasPrefix(sql, b.String()) {
			t.Fatalf("tokens before the error are not a prefix")
		}
	})
}
