package policy

import "testing"

func TestNormalize(t *testing.T) {
	tests := []struct {
		a, b string
		same bool
	}{
		{"select *  from t -- x\n", "SELECT * /* y */ FROM T", true},
		{"SELECT 'a  b' FROM t", "SELECT 'a b' FROM t", false},
		{`SELECT * FROM "t"`, "SELECT * FROM t", false},
		{"SELECT 1;", "SELECT 1 ;", true},
		{"SELECT 1", "SELECT 1; DROP TABLE t", false},
	}
	for _, tc := range tests {
		na, err := Normalize(tc.a)
		if err != nil {
			t.Fatalf("Normalize(%q): %v", tc.a, err)
		}
		nb, err := Normalize(tc.b)
		if err != nil {
			t.Fatalf("Normalize(%q): %v", tc.b, err)
		}
		if (na == nb) != tc.same {
			t.Errorf("Normalize(%q) = %q, Normalize(%q) = %q; same = %v, want %v", tc.a, na, tc.b, nb, na == nb, tc.same)
		}
	}
	if _, err := Normalize("SELECT 'unterminated"); err == nil {
		t.Error("unlexable text normalised")
	}
}
