package recording

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"
)

// SealRecovered is the seal reason Recover writes.
const SealRecovered = "recovered-after-crash"

// ErrNoSessionStart is returned by Recover for a recording cut before its
// session-start segment was complete (its writer was killed while creating
// it): no reply was ever released from it, and it is not sealed.
var ErrNoSessionStart = errors.New("cut before its session start was durable")

// Recover seals a recording its writer left unsealed (the gateway crashed or
// was killed): it cuts a torn last frame and appends a seal signed with key,
// reason SealRecovered. It needs no decryption identity: for an encrypted
// recording the seal leaves the record count and head empty and binds the
// content through the frame chain. A recording with any other problem is
// refused: it is evidence to inspect, not to seal; so is one cut before its
// session start was complete (ErrNoSessionStart).
func Recover(path string, key ed25519.PrivateKey) (Report, error) {
	if len(key) != ed25519.PrivateKeySize {
		return Report{}, fmt.Errorf("recover %s: an Ed25519 signing key is required", path)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return Report{}, fmt.Errorf("recover: %w", err)
	}
	defer f.Close()
	d := newDecoder(f, nil, nil, false)
	for d.step() {
		d.queue = d.queue[:0]
	}
	rep := d.rep
	rep.Path = path
	if d.seenSeal {
		return rep, fmt.Errorf("recover %s: already sealed", path)
	}
	if !rep.Intact() || d.header == nil {
		return rep, fmt.Errorf("recover %s: not a crashed recording: %v", path, rep.Problems)
	}
	if d.nextFrame < 2 {
		// Cut inside NewWriter, before the session-start segment was
		// complete: sealing it would make a recording of no session.
		return rep, fmt.Errorf("recover %s: %w", path, ErrNoSessionStart)
	}
	info := sealInfo{
		Version: 1, SessionID: d.header.SessionID, Reason: SealRecovered, SealedAt: time.Now().UTC(),
		Frames: d.nextFrame, FrameHead: hex.EncodeToString(d.prevFrame[:]),
		Signer: base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey)),
	}
	if rep.RecordsChecked {
		info.Records, info.RecordHead = d.nextRec, hex.EncodeToString(d.recHead[:])
	}
	b, err := json.Marshal(info)
	if err != nil {
		return rep, fmt.Errorf("recover %s: %w", path, err)
	}
	sig := ed25519.Sign(key, append([]byte(sealSigPrefix), b...))
	frameBytes, _ := appendFrame(nil, d.prevFrame, frameSeal, d.nextFrame, append(b, sig...))
	end := d.sc.off // end of the last complete frame
	if err := f.Truncate(end); err != nil {
		return rep, fmt.Errorf("recover %s: cut the torn frame: %w", path, err)
	}
	if _, err := f.WriteAt(frameBytes, end); err != nil {
		f.Truncate(end)
		return rep, fmt.Errorf("recover %s: write seal: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return rep, fmt.Errorf("recover %s: fsync: %w", path, err)
	}
	return rep, nil
}
