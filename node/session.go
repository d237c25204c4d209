package node

import (
	"context"
	"time"

	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/tss"
)

// Session kinds, as journalled.
const (
	kindSign    = "sign"
	kindKeygen  = "keygen"
	kindReshare = "reshare"
)

// session is one proposed, running or finished session in this process.
type session struct {
	// Set at proposal, immutable after.
	id       ids.SessionID
	kind     string
	request  ids.RequestID
	key      ids.KeyID
	members  []ids.MemberID
	created  time.Time
	deadline time.Time // no Start by then: released
	expiry   time.Time // sign: the request's expiry, past which no session runs
	from     string    // the coordinator that proposed it

	// sign
	share  *tss.Share
	req    *policy.Request // as evaluated at the proposal, for freezes that arrive after it
	digest [32]byte
	path   []uint32 // sign and presign
	// presign: the parked presignature a signing session finishes (zero:
	// the full protocol runs).
	presign ids.SessionID
	// keygen
	committee tss.Committee
	// reshare
	reshare tss.ReshareRequest

	// Guarded by Node.mu.
	state    string // control.StateProposed, StateRunning, StateDone, StateFailed
	result   control.Result
	progress string
	// waitingPool: a keygen or reshare started but still waiting for its
	// pre-parameters, so it can be aborted without leaving a session.
	waitingPool bool
	timer       *time.Timer
	cancel      context.CancelFunc
	done        chan struct{} // closed once state is done or failed
	ended       time.Time     // when done was closed
}

// snapshotLocked returns the session's result as a member reports it.
func (s *session) snapshotLocked(self ids.MemberID) control.Result {
	r := s.result
	r.Member, r.Session, r.State = self, s.id, s.state
	if s.state == control.StateProposed || s.state == control.StateRunning {
		r.Progress = s.progress
	}
	return r
}

// finishLocked ends the session with r.
func (s *session) finishLocked(state string, r control.Result) {
	if s.state == control.StateDone || s.state == control.StateFailed {
		return
	}
	s.state, s.result = state, r
	s.ended = time.Now()
	if s.timer != nil {
		s.timer.Stop()
	}
	close(s.done)
}
