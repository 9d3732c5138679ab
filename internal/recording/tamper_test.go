package recording

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"filippo.io/age"
)

// TestTampering: every way of altering a sealed recording is named by Verify,
// with and without the decryption identity.
func TestTampering(t *testing.T) {
	k := newKeys(t)
	other := newKeys(t)
	dir := t.TempDir()

	// A recording of 4 query pairs, one segment per record (frames: header,
	// session start, 8 records, seal = 11), and a second one for seal swaps.
	opts := k.options(true)
	opts.Sync = SyncAlways
	path, _ := writeSession(t, dir, "orig", opts, 4, true)
	orig, _ := os.ReadFile(path)
	path2, _ := writeSession(t, dir, "second", opts, 4, true)
	second, _ := os.ReadFile(path2)
	fs := frames(t, orig)
	if len(fs) != 11 {
		t.Fatalf("%d frames, want 11", len(fs))
	}
	last := len(fs) - 1

	resign := func(priv ed25519.PrivateKey, edit func(*sealInfo)) []byte {
		g := append([]frame(nil), fs...)
		info := g[last].body[:len(g[last].body)-ed25519.SignatureSize]
		var s sealInfo
		if err := json.Unmarshal(info, &s); err != nil {
			t.Fatal(err)
		}
		edit(&s)
		nb, _ := json.Marshal(s)
		g[last].body = append(nb, ed25519.Sign(priv, append([]byte(sealSigPrefix), nb...))...)
		return rechain(g)
	}

	tests := []struct {
		name string
		file func() []byte
		want ProblemKind
		// alsoKeyless: the problem is found without the identity too.
		keyless bool
	}{
		{"flip byte in a segment", func() []byte {
			b := append([]byte(nil), orig...)
			b[fs[4].offset+frameHeadLen+40] ^= 1
			return b
		}, ProblemModified, true},
		{"flip byte in a stored hash", func() []byte {
			b := append([]byte(nil), orig...)
			b[fs[3].offset+frameHeadLen+int64(len(fs[3].body))] ^= 0x80
			return b
		}, ProblemModified, true},
		{"flip byte in the header", func() []byte {
			b := append([]byte(nil), orig...)
			b[fs[0].offset+frameHeadLen+3] ^= 1
			return b
		}, ProblemModified, true},
		{"flip byte in the seal", func() []byte {
			b := append([]byte(nil), orig...)
			b[fs[last].offset+frameHeadLen+20] ^= 1
			return b
		}, ProblemBadSignature, true},
		{"drop a record", func() []byte {
			return encode(append(append([]frame(nil), fs[:5]...), fs[6:]...))
		}, ProblemMissingFrames, true},
		{"drop a record and rechain", func() []byte {
			return rechain(append(append([]frame(nil), fs[:5]...), fs[6:]...))
		}, ProblemSealMismatch, true},
		{"drop a record and rechain: records", func() []byte {
			return rechain(append(append([]frame(nil), fs[:5]...), fs[6:]...))
		}, ProblemMissingRecords, false},
		{"reorder records", func() []byte {
			g := append([]frame(nil), fs...)
			g[4], g[5] = g[5], g[4]
			return encode(g)
		}, ProblemReordered, true},
		{"reorder records and rechain", func() []byte {
			g := append([]frame(nil), fs...)
			g[4], g[5] = g[5], g[4]
			return rechain(g)
		}, ProblemSealMismatch, true},
		{"reorder records and rechain: records", func() []byte {
			g := append([]frame(nil), fs...)
			g[4], g[5] = g[5], g[4]
			return rechain(g)
		}, ProblemReordered, false},
		{"truncate inside a frame", func() []byte { return orig[:fs[6].offset+17] }, ProblemTruncated, true},
		{"truncate: seal gone", func() []byte { return orig[:fs[last].offset] }, ProblemMissingSeal, true},
		{"truncate records and keep the seal", func() []byte {
			return encode(append(append([]frame(nil), fs[:7]...), fs[last]))
		}, ProblemMissingFrames, true},
		{"seal of another recording", func() []byte {
			g := append([]frame(nil), fs...)
			g[last] = frames(t, second)[last]
			return rechain(g)
		}, ProblemSealMismatch, true},
		{"re-signed with another key", func() []byte {
			return resign(other.priv, func(s *sealInfo) {
				s.Signer = encodeKey(other.pub)
			})
		}, ProblemUntrustedSigner, true},
		{"seal claims fewer records, re-signed with another key", func() []byte {
			return resign(other.priv, func(s *sealInfo) { s.Records--; s.Signer = encodeKey(other.pub) })
		}, ProblemUntrustedSigner, true},
		{"seal edited, signature kept", func() []byte {
			g := append([]frame(nil), fs...)
			body := append([]byte(nil), g[last].body...)
			sig := body[len(body)-ed25519.SignatureSize:]
			var s sealInfo
			json.Unmarshal(body[:len(body)-ed25519.SignatureSize], &s)
			s.Reason = "forged"
			nb, _ := json.Marshal(s)
			g[last].body = append(nb, sig...)
			return rechain(g)
		}, ProblemBadSignature, true},
		{"frames after the seal", func() []byte {
			g := append(append([]frame(nil), fs...), fs[4])
			return rechain(g)
		}, ProblemTrailingData, true},
		{"a frame replaced by one of another recording", func() []byte {
			g := append([]frame(nil), fs...)
			g[3] = frames(t, second)[3]
			return encode(g)
		}, ProblemModified, true},
		{"a frame replaced by one of another recording, rechained", func() []byte {
			g := append([]frame(nil), fs...)
			g[3] = frames(t, second)[3]
			return rechain(g)
		}, ProblemChainBreak, false},
		{"not a recording", func() []byte { return []byte("hello, world") }, ProblemBadMagic, true},
		{"empty file", func() []byte { return nil }, ProblemBadMagic, true},
	}
	// For these, the report names exactly these problems and nothing else.
	exact := map[string][]ProblemKind{
		"flip byte in a stored hash":  {ProblemModified},
		"drop a record":               {ProblemMissingFrames, ProblemMissingRecords},
		"truncate inside a frame":     {ProblemTruncated, ProblemMissingSeal},
		"truncate: seal gone":         {ProblemMissingSeal},
		"re-signed with another key":  {ProblemUntrustedSigner},
		"seal edited, signature kept": {ProblemBadSignature},
		"flip byte in a segment":      {ProblemModified, ProblemDecrypt, ProblemMissingRecords},
		"reorder records and rechain": {ProblemReordered, ProblemReordered, ProblemReordered, ProblemSealMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "x.sgrec")
			writeFile(t, p, tt.file())
			for _, ids := range [][]age.Identity{{k.id}, nil} {
				if ids == nil && !tt.keyless {
					continue
				}
				rep, err := Verify(p, k.pub, ids...)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("identity=%v: %v", ids != nil, rep.Problems)
				if rep.OK() || !rep.Has(tt.want) {
					t.Errorf("identity=%v: Verify problems = %v, want %s", ids != nil, rep.Problems, tt.want)
				}
				if want, ok := exact[tt.name]; ok && ids != nil && !reflect.DeepEqual(kinds(rep.Problems), want) {
					t.Errorf("problems %v, want exactly %v", kinds(rep.Problems), want)
				}
			}
		})
	}

	// Verifying against the wrong key is itself a finding.
	rep, _ := Verify(path, other.pub, k.id)
	if rep.OK() || !rep.Has(ProblemUntrustedSigner) {
		t.Errorf("Verify with another trusted key = %v", rep.Problems)
	}
}

func encodeKey(pub ed25519.PublicKey) string {
	b, _ := json.Marshal([]byte(pub))
	var s string
	json.Unmarshal(b, &s)
	return s
}

// TestRandomDamage: any single flipped byte, anywhere, fails verification,
// and so does any truncation.
func TestRandomDamage(t *testing.T) {
	for _, encrypt := range []bool{false, true} {
		k := newKeys(t)
		path, _ := writeSession(t, t.TempDir(), "r", k.options(encrypt), 3, true)
		orig, _ := os.ReadFile(path)
		rng := rand.New(rand.NewPCG(1, uint64(len(orig))))
		for i := 0; i < 300; i++ {
			b := append([]byte(nil), orig...)
			pos := rng.IntN(len(b))
			b[pos] ^= byte(1 + rng.IntN(255))
			if rep := VerifyReader(bytes.NewReader(b), k.pub, k.id); rep.OK() {
				t.Fatalf("encrypt=%v: byte %d of %d flipped, Verify still OK", encrypt, pos, len(b))
			}
			if rep := VerifyReader(bytes.NewReader(b), k.pub); rep.OK() {
				t.Fatalf("encrypt=%v: byte %d of %d flipped, keyless Verify still OK", encrypt, pos, len(b))
			}
		}
		for i := 0; i < 300; i++ {
			cut := rng.IntN(len(orig))
			if rep := VerifyReader(bytes.NewReader(orig[:cut]), k.pub, k.id); rep.OK() || rep.Sealed {
				t.Fatalf("encrypt=%v: cut at %d of %d, Verify still OK", encrypt, cut, len(orig))
			}
		}
	}
}
