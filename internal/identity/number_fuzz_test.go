package identity

import "testing"

// TestCanonicalNumberBounded pins the fix for a FuzzMatchClaim hang: a
// numeric claim such as 1e-100000 took seconds to spell out, and 1e600000000
// 600 million digits. Such numbers now have no canonical form (they never
// match); ordinary ones keep theirs.
func TestCanonicalNumberBounded(t *testing.T) {
	cases := []struct {
		in, want string
		ok       bool
	}{
		{"42", "42", true},
		{"1e3", "1000", true},
		{"1.50", "1.5", true},
		{"-0.25e1", "-2.5", true},
		{"0e999999999", "0", true},
		{"1e999999999", "", false},
		{"1e600000000", "", false},
		{"1e-999999999", "", false},
		{"-1e100000", "", false},
		{"1e-100000", "", false},
		{"x", "", false},
		{"0.0e-5", "0", true},
	}
	for _, tc := range cases {
		got, ok := canonicalNumber(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("canonicalNumber(%q) = %.40q, %v; want %.40q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	// Large but bounded: 1e400 keeps its 401 digits (to 256 bits).
	if got, ok := canonicalNumber("1e400"); !ok || len(got) != 401 {
		t.Errorf("canonicalNumber(1e400) = %d digits, %v", len(got), ok)
	}
}
