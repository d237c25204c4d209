package tss

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"time"

	"github.com/bnb-chain/tss-lib/v2/ecdsa/signing"
	"github.com/bnb-chain/tss-lib/v2/tss"
	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
)

// Presignatures: signing rounds 1-4 (commitments, the Paillier MtA
// exchanges with their range proofs, delta, the Gamma decommitment) do not
// depend on the message and carry almost all of the cost. A presignature
// runs them ahead of time with a placeholder digest and parks: this node's
// round-4 messages are held, so no member can reach round 5. The online
// phase sets the real digest and releases the held messages over a fresh
// transport session whose parameters bind the presignature, the digest and
// the caller's binding; rounds 5-9 follow.
//
// This relies on an implementation detail of tss-lib v2.0.2: the signing
// party keeps the *big.Int it was created with and reads it only from round
// 5 on (round 1 checks it is below the group order). TestPresignGuard fails
// if that ever stops holding.
//
// A presignature is used at most once: it leaves the parked set before its
// first online message is sent, and any failure of the online phase burns
// it. Parked presignatures live in this process's memory only.

// ErrPresignUnknown: the presignature is not parked here. It was never
// made here, or it was used, burned, expired or evicted, or this engine
// was restarted since.
var ErrPresignUnknown = errors.New("tss: presignature is not parked here")

// PresignRequest asks this node to run signing rounds 1-4 for a key and
// park the result.
type PresignRequest struct {
	Session ids.SessionID  // the presign session id; it names the presignature at every member
	Share   *Share         // this node's share of the key
	Signers []ids.MemberID // the quorum that will sign with it, this node included
	Path    []uint32       // optional non-hardened child path, fixed at presign time
}

// PresignInfo describes a parked presignature (no secrets).
type PresignInfo struct {
	ID      ids.SessionID  // the presign session id
	Key     common.Address // the key's root address (Share.Key().Address), also for a child path
	Signers []ids.MemberID // sorted
	Path    []uint32
	Created time.Time
}

// OnlineRequest finishes a parked presignature for a digest.
type OnlineRequest struct {
	Presign ids.SessionID // which parked presignature
	Session ids.SessionID // a fresh session id for the online rounds
	Digest  [32]byte
	// Binding is bound into every online message with the digest (the
	// request id, say): members given different ones stop at the first.
	Binding []byte
}

// PresignStats counts this engine's presignatures since it started.
type PresignStats struct {
	Parked  int    // parked now
	Made    uint64 // parked, in all
	Aborted uint64 // presign sessions that failed before parking
	Used    uint64 // finished into a checked signature
	// Burned counts presignatures discarded unused or after a failed
	// online phase: Failed + Expired + Evicted + Discarded.
	Burned    uint64
	Failed    uint64 // the online phase failed
	Expired   uint64 // older than PresignMaxAge
	Evicted   uint64 // the oldest, to stay within MaxPresignatures
	Discarded uint64 // by BurnPresignature
}

// presignPlaceholder is the digest rounds 1-4 run with: fixed, below the
// group order (its top byte is zero), and never the digest of anything a
// caller is expected to sign.
var presignPlaceholder = func() [32]byte {
	d := sha256.Sum256([]byte("custos/presign-placeholder/v1"))
	d[0] = 0
	return d
}()

// presignPhase is what a signing session running as a presignature adds
// to the Session: which rounds it admits, and its held round-4 messages.
type presignPhase struct {
	parked bool       // this node's party finished round 4
	online bool       // the held messages were released
	held   []Outbound // this node's round-4 messages, for the presign session
}

var round4Type = typeOf(&signing.SignRound4Message{})

// routed runs after the session routed m, which appended
// s.ready.Messages[before:]: a round-4 message is held instead, and the
// session parks, once the round-3 thetas are known to sum to a unit (the
// check the full protocol makes on the first round-4 message in).
func (p *presignPhase) routed(s *Session, m tss.Message, before int) {
	if p.online || m.Type() != round4Type || s.over {
		return
	}
	switch err := s.hard.checkThetaSum(); {
	case errors.Is(err, errNotYet):
		s.fail(&SessionError{Kind: FailLocal, Err: errors.New("presign: round 4 began before every round-3 theta was in")})
		return
	case err != nil:
		s.fail(&SessionError{Kind: FailProtocol, Err: err})
		return
	}
	p.held = append(p.held, s.ready.Messages[before:]...)
	s.ready.Messages = s.ready.Messages[:before]
	p.parked = true
	s.ready.Parked = true
}

// admits refuses a message of the wrong phase: rounds 4-9 before the
// online phase (a member that released its round-4 message early could
// otherwise drive this node into round 5 with the placeholder), rounds 1-3
// after it.
func (p *presignPhase) admits(c tss.MessageContent) error {
	early := false
	switch c.(type) {
	case *signing.SignRound1Message1, *signing.SignRound1Message2, *signing.SignRound2Message, *signing.SignRound3Message:
		early = true
	}
	switch {
	case early && p.online:
		return fmt.Errorf("presign: %s in the online phase", typeOf(c))
	case !early && !p.online:
		return fmt.Errorf("presign: %s before the online phase", typeOf(c))
	}
	return nil
}

// rebind moves a parked session to the online phase's transport session
// and parameters.
func (s *Session) rebind(id ids.SessionID, params [32]byte) {
	s.id, s.params = id, params
	s.idle, s.noticed = 0, false
	s.notices = map[ids.MemberID]notice{}
	s.pre4.online = true
}

// resume releases the held round-4 messages, re-bound to the session's
// current id and parameters.
func (s *Session) resume() (rd Ready) {
	defer s.catch(&rd)
	held := s.pre4.held
	s.pre4.held = nil
	for _, m := range held {
		env, err := decodeEnvelope(m.Payload)
		if err != nil {
			s.fail(&SessionError{Kind: FailLocal, Err: fmt.Errorf("presign: held message: %w", err)})
			return s.take()
		}
		env.Session, env.Params = s.id, s.params
		m.Payload = env.encode()
		s.ready.Messages = append(s.ready.Messages, m)
	}
	return s.take()
}

// parkedSign is one parked presignature.
type parkedSign struct {
	info   PresignInfo
	s      *Session
	msg    *big.Int // the digest the party reads from round 5 on
	finish func() (Signature, error)
}

// presignStore holds an engine's parked presignatures.
type presignStore struct {
	mu     sync.Mutex
	parked []*parkedSign // guarded by mu; oldest first
	stats  PresignStats  // guarded by mu
}

// burnLocked drops p for good: nothing can step its session again.
func (ps *presignStore) burnLocked(p *parkedSign, count *uint64) {
	p.s.over = true
	p.s.local, p.s.pre4.held = nil, nil
	*count++
	ps.stats.Burned++
}

// sweepLocked burns the presignatures older than maxAge.
func (ps *presignStore) sweepLocked(now time.Time, maxAge time.Duration) {
	ps.parked = slices.DeleteFunc(ps.parked, func(p *parkedSign) bool {
		if now.Sub(p.info.Created) < maxAge {
			return false
		}
		ps.burnLocked(p, &ps.stats.Expired)
		return true
	})
}

func (e *Engine) sweepPresignsLocked() {
	e.presign.sweepLocked(e.now(), e.cfg.PresignMaxAge)
}

// Presign runs signing rounds 1-4 with the request's signers and parks the
// result under req.Session, for SignPresigned. Every signer calls it with
// the same request. It returns once this node parked; a presignature whose
// rounds saw misbehaviour fails with the session's error and is not parked.
// Parking beyond MaxPresignatures burns the oldest.
func (e *Engine) Presign(ctx context.Context, req PresignRequest) (PresignInfo, error) {
	if req.Session.IsZero() {
		return PresignInfo{}, errors.New("tss: presign: session id is missing")
	}
	e.presign.mu.Lock()
	dup := slices.ContainsFunc(e.presign.parked, func(p *parkedSign) bool { return p.info.ID == req.Session })
	e.presign.mu.Unlock()
	if dup {
		return PresignInfo{}, fmt.Errorf("tss: presign: %s is already parked here", req.Session)
	}
	msg := new(big.Int).SetBytes(presignPlaceholder[:])
	pre4 := &presignPhase{}
	s, finish, err := e.signSessionWith(SignRequest{Session: req.Session, Share: req.Share, Signers: req.Signers,
		Digest: presignPlaceholder, Path: req.Path}, msg, pre4)
	if err != nil {
		return PresignInfo{}, err
	}
	if err := e.run(ctx, s); err != nil {
		e.presign.mu.Lock()
		e.presign.stats.Aborted++
		e.presign.mu.Unlock()
		return PresignInfo{}, err
	}
	if !pre4.parked || len(pre4.held) == 0 {
		return PresignInfo{}, &SessionError{Session: req.Session, Kind: FailLocal, Err: errors.New("presign: the session ended without parking")}
	}
	p := &parkedSign{s: s, msg: msg, finish: finish, info: PresignInfo{ID: req.Session, Key: req.Share.key.Address,
		Signers: sortedIDs(req.Signers), Path: slices.Clone(req.Path), Created: e.now()}}
	ps := &e.presign
	ps.mu.Lock()
	defer ps.mu.Unlock()
	e.sweepPresignsLocked()
	for len(ps.parked) >= e.cfg.MaxPresignatures {
		ps.burnLocked(ps.parked[0], &ps.stats.Evicted)
		ps.parked = slices.Delete(ps.parked, 0, 1)
	}
	ps.parked = append(ps.parked, p)
	ps.stats.Made++
	e.log.Debug("presignature parked", "presign", req.Session, "key", p.info.Key, "signers", len(p.info.Signers))
	return clonePresignInfo(p.info), nil
}

// SignPresigned finishes the parked presignature req.Presign for
// req.Digest, over the fresh transport session req.Session, and returns the
// signature, checked to recover to the key's (or the child key's) address.
// Every signer of the presignature calls it with the same request. The
// presignature is consumed before the first online message is sent: a
// second call, here or for another digest, gets ErrPresignUnknown, and a
// failure burns it. Bad requests fail before it is consumed.
func (e *Engine) SignPresigned(ctx context.Context, req OnlineRequest) (Signature, error) {
	switch {
	case req.Presign.IsZero():
		return Signature{}, errors.New("tss: sign presigned: presignature id is missing")
	case req.Session.IsZero():
		return Signature{}, errors.New("tss: sign presigned: session id is missing")
	case req.Session == req.Presign:
		return Signature{}, errors.New("tss: sign presigned: the online session id must be fresh, not the presignature's")
	case new(big.Int).SetBytes(req.Digest[:]).Cmp(curveQ) >= 0:
		return Signature{}, errors.New("tss: sign presigned: digest is not below the group order")
	}
	p, err := e.takePresign(req.Presign)
	if err != nil {
		return Signature{}, err
	}
	burn := func() {
		e.presign.mu.Lock()
		defer e.presign.mu.Unlock()
		e.presign.burnLocked(p, &e.presign.stats.Failed)
	}
	p.msg.SetBytes(req.Digest[:])
	p.s.rebind(req.Session, paramsHash("signing-online", p.s.params, p.info.ID, req.Digest, req.Binding))
	if err := e.drive(ctx, p.s, p.s.resume); err != nil {
		burn()
		return Signature{}, err
	}
	sig, err := p.finish()
	if err != nil {
		burn()
		return Signature{}, err
	}
	e.presign.mu.Lock()
	e.presign.stats.Used++
	e.presign.mu.Unlock()
	return sig, nil
}

// takePresign removes presignature id from the parked set.
func (e *Engine) takePresign(id ids.SessionID) (*parkedSign, error) {
	ps := &e.presign
	ps.mu.Lock()
	defer ps.mu.Unlock()
	i := slices.IndexFunc(ps.parked, func(p *parkedSign) bool { return p.info.ID == id })
	if i < 0 {
		return nil, fmt.Errorf("%w: %s", ErrPresignUnknown, id)
	}
	p := ps.parked[i]
	ps.parked = slices.Delete(ps.parked, i, i+1)
	if e.now().Sub(p.info.Created) >= e.cfg.PresignMaxAge {
		ps.burnLocked(p, &ps.stats.Expired)
		return nil, fmt.Errorf("%w: %s expired (parked %s ago, at most %s)", ErrPresignUnknown, id, e.now().Sub(p.info.Created).Round(time.Second), e.cfg.PresignMaxAge)
	}
	return p, nil
}

// Presignatures lists the parked presignatures, oldest first, after
// burning the expired ones.
func (e *Engine) Presignatures() []PresignInfo {
	ps := &e.presign
	ps.mu.Lock()
	defer ps.mu.Unlock()
	e.sweepPresignsLocked()
	out := make([]PresignInfo, len(ps.parked))
	for i, p := range ps.parked {
		out[i] = clonePresignInfo(p.info)
	}
	return out
}

// BurnPresignature discards a parked presignature; false if it was not
// parked here (or had expired, which burns it all the same).
func (e *Engine) BurnPresignature(id ids.SessionID) bool {
	ps := &e.presign
	ps.mu.Lock()
	defer ps.mu.Unlock()
	e.sweepPresignsLocked()
	i := slices.IndexFunc(ps.parked, func(p *parkedSign) bool { return p.info.ID == id })
	if i < 0 {
		return false
	}
	ps.burnLocked(ps.parked[i], &ps.stats.Discarded)
	ps.parked = slices.Delete(ps.parked, i, i+1)
	return true
}

// PresignStats returns the counters, after burning the expired
// presignatures.
func (e *Engine) PresignStats() PresignStats {
	ps := &e.presign
	ps.mu.Lock()
	defer ps.mu.Unlock()
	e.sweepPresignsLocked()
	st := ps.stats
	st.Parked = len(ps.parked)
	return st
}

func clonePresignInfo(p PresignInfo) PresignInfo {
	p.Signers, p.Path = slices.Clone(p.Signers), slices.Clone(p.Path)
	return p
}
