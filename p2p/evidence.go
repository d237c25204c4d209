package p2p

import (
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/custos-wallet/custos/ids"
)

// Evidence shows that Sender equivocated: two frames of the same kind,
// session and sequence number, both validly signed by Sender, with different
// payloads. Anyone holding Sender's peer id can check it with Verify, so one
// member can show another member's misbehaviour to third parties. The frames
// are in header-only form (payload replaced by its hash), which verifies.
type Evidence struct {
	Sender ids.MemberID
	First  *Frame
	Second *Frame
}

// Error describes the equivocation; Evidence is the Err of the
// *tss.SessionError that ends the session.
func (e *Evidence) Error() string {
	return fmt.Sprintf("p2p: %s equivocated in %s: two signed %s frames #%d with payload hashes %s and %s",
		e.Sender, e.First.Session, e.First.Kind, e.First.Seq,
		hex.EncodeToString(e.First.PayloadHash[:8]), hex.EncodeToString(e.Second.PayloadHash[:8]))
}

// Verify checks that the evidence proves equivocation by Sender.
func (e *Evidence) Verify() error {
	a, b := e.First, e.Second
	switch {
	case a == nil || b == nil:
		return errors.New("p2p: evidence lacks a frame")
	case a.From.String() != string(e.Sender) || b.From != a.From:
		return fmt.Errorf("p2p: evidence frames are not both from %s", e.Sender)
	case a.Session != b.Session || a.Seq != b.Seq || a.Kind != b.Kind || a.To != b.To:
		return errors.New("p2p: evidence frames are not the same message slot")
	case a.PayloadHash == b.PayloadHash:
		return errors.New("p2p: evidence frames carry the same payload")
	}
	if err := a.Verify(); err != nil {
		return fmt.Errorf("p2p: evidence first frame: %w", err)
	}
	if err := b.Verify(); err != nil {
		return fmt.Errorf("p2p: evidence second frame: %w", err)
	}
	return nil
}

// EvidenceOf returns the equivocation evidence in err's chain, if any.
func EvidenceOf(err error) (*Evidence, bool) {
	var ev *Evidence
	ok := errors.As(err, &ev)
	return ev, ok
}
