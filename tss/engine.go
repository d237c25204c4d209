package tss

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"slices"
	"time"

	"github.com/bnb-chain/tss-lib/v2/common"
	tsscrypto "github.com/bnb-chain/tss-lib/v2/crypto"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/resharing"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/signing"
	"github.com/bnb-chain/tss-lib/v2/tss"
	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/crypto"
)

// Config tunes an Engine.
type Config struct {
	// IdleTimeout ends a session whose local parties took no message for
	// this long, naming the members it was waiting for. Default 60s: a
	// keygen round with proofs takes seconds of CPU per party. It bounds
	// each wait, not the whole session: a slow member can stretch every
	// round, so callers set a deadline on the context as well.
	IdleTimeout time.Duration
	// TickInterval is the resolution of IdleTimeout. Default 100ms.
	TickInterval time.Duration
	Logger       *slog.Logger
	// MaxPresignatures bounds the presignatures parked at once; parking
	// one more burns the oldest. Default 32.
	MaxPresignatures int
	// PresignMaxAge burns a parked presignature this old. Default 1h.
	PresignMaxAge time.Duration
}

// Engine runs keygen, signing and resharing sessions for one node over a
// Transport. It is safe for concurrent use: each call runs its own session.
type Engine struct {
	tr      Transport
	cfg     Config
	log     *slog.Logger
	now     func() time.Time // the presignatures' clock; tests replace it
	presign presignStore
}

// NewEngine makes an engine for the node behind tr.
func NewEngine(tr Transport, cfg Config) *Engine {
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 60 * time.Second
	}
	if cfg.TickInterval <= 0 {
		cfg.TickInterval = 100 * time.Millisecond
	}
	if cfg.MaxPresignatures <= 0 {
		cfg.MaxPresignatures = 32
	}
	if cfg.PresignMaxAge <= 0 {
		cfg.PresignMaxAge = time.Hour
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Engine{tr: tr, cfg: cfg, log: log.With("member", tr.Self()), now: time.Now}
}

func (e *Engine) sessionConfig(id ids.SessionID, proto protocol, parties int, hard *hardener, params ...any) sessionConfig {
	ticks := int((e.cfg.IdleTimeout + e.cfg.TickInterval - 1) / e.cfg.TickInterval)
	return sessionConfig{id: id, params: paramsHash(append([]any{proto.String()}, params...)...), proto: proto,
		self: e.tr.Self(), maxIdle: ticks, parties: parties, hard: hard}
}

// paramsHash binds what a session was asked to do: every member must have
// been given the same request.
func paramsHash(parts ...any) [32]byte {
	b, err := json.Marshal(parts)
	if err != nil {
		panic(fmt.Sprintf("tss: encode session parameters: %v", err))
	}
	return sha256.Sum256(b)
}

func sortedIDs(memberIDs []ids.MemberID) []ids.MemberID {
	out := slices.Clone(memberIDs)
	slices.Sort(out)
	return out
}

// run drives s over the transport until it ends.
func (e *Engine) run(ctx context.Context, s *Session) error { return e.drive(ctx, s, s.Start) }

// drive opens s's transport session, sends what first returns, and steps
// s until it ends or parks (a presignature after round 4).
func (e *Engine) drive(ctx context.Context, s *Session, first func() Ready) (err error) {
	start := time.Now()
	log := e.log.With("session", s.id, "protocol", s.proto)
	conn, err := e.tr.Open(ctx, s.id, s.members())
	if err != nil {
		return &SessionError{Session: s.id, Kind: FailTransport, Err: fmt.Errorf("open session: %w", err)}
	}
	defer func() {
		if cerr := conn.Close(err); cerr != nil && err == nil {
			// A transport that found misbehaviour only at the end (an
			// equivocation exposed by a late echo) names the culprit.
			if se, ok := AsSessionError(cerr); ok {
				err = se
			} else {
				err = &SessionError{Session: s.id, Kind: FailTransport, Err: fmt.Errorf("close session: %w", cerr)}
			}
		}
		if err != nil {
			log.Warn("session failed", "err", err, "took", time.Since(start))
		} else {
			log.Debug("session done", "took", time.Since(start))
		}
	}()
	ticker := time.NewTicker(e.cfg.TickInterval)
	defer ticker.Stop()
	rd := first()
	for {
		for _, m := range rd.Messages {
			var serr error
			if m.Broadcast {
				serr = conn.Broadcast(ctx, m.Payload)
			} else {
				serr = conn.Send(ctx, m.To, m.Payload)
			}
			if serr != nil {
				// A transport that ended the session names the culprits.
				if se, ok := AsSessionError(conn.Err()); ok {
					return se
				}
				if ctx.Err() != nil { // our caller gave up: blame no recipient
					return &SessionError{Session: s.id, Kind: FailLocal, Waiting: s.WaitingFor(), Err: ctx.Err()}
				}
				se := &SessionError{Session: s.id, Kind: FailTransport, Err: fmt.Errorf("send: %w", serr)}
				if !m.Broadcast {
					se.Waiting = []ids.MemberID{m.To}
				}
				return se
			}
		}
		if rd.Err != nil {
			return rd.Err
		}
		if rd.Done || rd.Parked {
			return nil
		}
		select {
		case in, ok := <-conn.Incoming():
			if !ok {
				return e.transportErr(s, conn)
			}
			rd = s.Step(in)
		case <-ticker.C:
			rd = s.Tick()
		case <-conn.Done():
			return e.transportErr(s, conn)
		case <-ctx.Done():
			return &SessionError{Session: s.id, Kind: FailLocal, Waiting: s.WaitingFor(), Err: ctx.Err()}
		}
	}
}

func (e *Engine) transportErr(s *Session, conn Conn) error {
	err := conn.Err()
	if se, ok := AsSessionError(err); ok {
		return se
	}
	if err == nil {
		err = errors.New("session closed by the transport")
	}
	return &SessionError{Session: s.id, Kind: FailTransport, Waiting: s.WaitingFor(), Err: err}
}

// KeygenRequest asks this node to take part in a key generation.
type KeygenRequest struct {
	Session   ids.SessionID
	Committee Committee
	PreParams *PreParams // this node's own set; used once
}

// Keygen runs a key generation among the committee and returns this node's
// share. Every member calls it with the same session id and committee.
func (e *Engine) Keygen(ctx context.Context, req KeygenRequest) (*Share, error) {
	self := e.tr.Self()
	if err := req.Committee.Validate(); err != nil {
		return nil, err
	}
	if !req.Committee.Has(self) {
		return nil, fmt.Errorf("tss: keygen: %s is not a member of the committee", self)
	}
	if req.Session.IsZero() {
		return nil, errors.New("tss: keygen: session id is missing")
	}
	if !req.PreParams.valid() {
		return nil, errors.New("tss: keygen: pre-parameters are missing or incomplete")
	}
	if err := req.PreParams.take(); err != nil {
		return nil, fmt.Errorf("tss: keygen: %w", err)
	}
	c := req.Committee.Canonical()
	s := newSession(e.sessionConfig(req.Session, protoKeygen, len(c.Members), newHardener(c.Threshold), c))
	pids := s.addCommittee(tagMain, c.IDs(), 0)
	params := tss.NewParameters(tss.S256(), tss.NewPeerContext(pids), s.parties[partyRef{self, tagMain}], len(pids), c.Threshold)
	end := make(chan *keygen.LocalPartySaveData, 1)
	var save *keygen.LocalPartySaveData
	party := keygen.NewLocalParty(params, s.out, end, req.PreParams.p)
	s.addLocal(tagMain, party, pollEnd(end, &save))
	if err := e.run(ctx, s); err != nil {
		return nil, err
	}
	key, err := newKeyInfo(c, 0, save)
	if err != nil {
		return nil, err
	}
	sh := &Share{key: key, self: self, data: *save}
	if err := sh.check(); err != nil {
		return nil, fmt.Errorf("tss: keygen produced an inconsistent share: %w", err)
	}
	return sh, nil
}

func pollEnd[T any](ch <-chan *T, dst **T) func() bool {
	return func() bool {
		select {
		case v := <-ch:
			*dst = v
			return true
		default:
			return *dst != nil
		}
	}
}

// SignRequest asks this node to take part in a signature.
type SignRequest struct {
	Session ids.SessionID
	Share   *Share
	Signers []ids.MemberID // t+1 or more members of the key's committee, this node included
	Digest  [32]byte
	Path    []uint32 // optional non-hardened child path: sign for that child key
}

// Sign runs a signing session and returns the signature, checked to recover
// to the key's (or the child key's) address. Bad requests fail before any
// message is sent.
func (e *Engine) Sign(ctx context.Context, req SignRequest) (Signature, error) {
	s, finish, err := e.signSession(req)
	if err != nil {
		return Signature{}, err
	}
	if err := e.run(ctx, s); err != nil {
		return Signature{}, err
	}
	return finish()
}

// signSession checks req and builds its session; finish turns the finished
// session into the checked signature. Tests drive the session by hand.
func (e *Engine) signSession(req SignRequest) (*Session, func() (Signature, error), error) {
	return e.signSessionWith(req, new(big.Int).SetBytes(req.Digest[:]), nil)
}

// signSessionWith builds the signing session for req around msg, the
// digest tss-lib's party keeps and reads from round 5 on; finish checks
// the signature against msg as it is then. A presignature (pre4 set) binds
// no digest into the session parameters: the online phase binds it.
func (e *Engine) signSessionWith(req SignRequest, msg *big.Int, pre4 *presignPhase) (*Session, func() (Signature, error), error) {
	self := e.tr.Self()
	if req.Share == nil {
		return nil, nil, errors.New("tss: sign: share is missing")
	}
	if req.Session.IsZero() {
		return nil, nil, errors.New("tss: sign: session id is missing")
	}
	if req.Share.self != self {
		return nil, nil, fmt.Errorf("tss: sign: the share belongs to %s, not this node (%s)", req.Share.self, self)
	}
	key := req.Share.key
	if err := checkQuorum(key.Committee, req.Signers, "signers"); err != nil {
		return nil, nil, fmt.Errorf("tss: sign: %w", err)
	}
	if !slices.Contains(req.Signers, self) {
		return nil, nil, fmt.Errorf("tss: sign: this node (%s) is not among the signers", self)
	}
	data, err := cloneSaveData(req.Share.data)
	if err != nil {
		return nil, nil, fmt.Errorf("tss: sign: copy share: %w", err)
	}
	wantPub := key.PublicKey
	var delta *big.Int
	if len(req.Path) > 0 {
		child, err := key.Child(req.Path)
		if err != nil {
			return nil, nil, err
		}
		childPub, err := crypto.UnmarshalPubkey(child.PublicKey)
		if err != nil {
			return nil, nil, err
		}
		// tss-lib adjusts the public shares in place: data is a copy.
		keys := []keygen.LocalPartySaveData{data}
		if err := signing.UpdatePublicKeyAndAdjustBigXj(child.delta, keys, childPub, tss.S256()); err != nil {
			return nil, nil, fmt.Errorf("tss: sign: adjust share for child %v: %w", req.Path, err)
		}
		data, delta, wantPub = keys[0], child.delta, child.PublicKey
	}
	hard, err := signHardener(key, data, req.Signers)
	if err != nil {
		return nil, nil, fmt.Errorf("tss: sign: %w", err)
	}
	var bound any = req.Digest
	if pre4 != nil {
		bound = "presign"
	}
	s := newSession(e.sessionConfig(req.Session, protoSign, len(req.Signers), hard,
		key.canonical(), sortedIDs(req.Signers), bound, req.Path))
	s.pre4 = pre4
	pids := s.addCommittee(tagMain, req.Signers, key.Generation)
	params := tss.NewParameters(tss.S256(), tss.NewPeerContext(pids), s.parties[partyRef{self, tagMain}], len(pids), key.Committee.Threshold)
	end := make(chan *common.SignatureData, 1)
	var out *common.SignatureData
	party := signing.NewLocalPartyWithKDD(msg, params, data, delta, s.out, end, len(req.Digest))
	s.addLocal(tagMain, party, pollEnd(end, &out))
	finish := func() (Signature, error) {
		var sig Signature
		if out == nil || len(out.R) != 32 || len(out.S) != 32 || len(out.SignatureRecovery) != 1 {
			return sig, errors.New("tss: sign: protocol ended without a well-formed signature")
		}
		copy(sig[:32], out.R)
		copy(sig[32:64], out.S)
		sig[64] = out.SignatureRecovery[0]
		var digest [32]byte
		msg.FillBytes(digest[:])
		if err := verifySignature(digest, sig, wantPub); err != nil {
			return Signature{}, fmt.Errorf("tss: sign: %w", err)
		}
		return sig, nil
	}
	return s, finish, nil
}

// signHardener gives the signing checks each signer's Paillier modulus and
// this node's own, from the share.
func signHardener(key KeyInfo, data keygen.LocalPartySaveData, signers []ids.MemberID) (*hardener, error) {
	h := newHardener(key.Committee.Threshold)
	h.ownN, h.signers = data.PaillierSK.N, len(signers)
	for _, id := range signers {
		k := partyKey(id, key.Generation)
		j := slices.IndexFunc(data.Ks, func(x *big.Int) bool { return x.Cmp(k) == 0 })
		if j < 0 || data.PaillierPKs[j] == nil {
			return nil, fmt.Errorf("the share has no public data for signer %s", id)
		}
		h.paillierN[partyRef{id, tagMain}] = data.PaillierPKs[j].N
	}
	return h, nil
}

// checkQuorum: members must be distinct members of c, at least t+1 of them.
func checkQuorum(c Committee, members []ids.MemberID, what string) error {
	if len(members) < c.Threshold+1 {
		return fmt.Errorf("%d %s, the key needs %d", len(members), what, c.Threshold+1)
	}
	seen := map[ids.MemberID]bool{}
	for _, id := range members {
		if !c.Has(id) {
			return fmt.Errorf("%s %s is not a member of the key's committee", what, id)
		}
		if seen[id] {
			return fmt.Errorf("%s %s appears twice", what, id)
		}
		seen[id] = true
	}
	return nil
}

// ReshareRequest asks this node to take part in moving a key to a new
// committee.
type ReshareRequest struct {
	Session      ids.SessionID
	Key          KeyInfo        // the key as it stands
	OldShare     *Share         // this node's share; nil when it is only in the new committee
	OldSigners   []ids.MemberID // members of the old committee taking part, t+1 or more
	NewCommittee Committee
	PreParams    *PreParams // this node's own set, when it is in the new committee
}

// ReshareResult is the outcome of a reshare at one node. The reshare is
// complete only when every member of the new committee has confirmed its
// share and the proof (Complete); until then no old share may be deleted,
// anywhere, and Unconfirmed names the new members that did not confirm.
type ReshareResult struct {
	session     ids.SessionID
	Key         KeyInfo   // the key under its new committee; same address
	Share       *Share    // this node's new share; nil if it is not in the new committee
	Proof       Signature // by the whole new committee over ProofDigest; zero if none was seen
	ProofDigest [32]byte
	Confirmed   []ids.MemberID // new members that confirmed, sorted
	Unconfirmed []ids.MemberID // new members that did not (refused, sent nothing or sent a bad proof), sorted
}

// Session is the reshare's session id, which its proof is bound to.
func (r *ReshareResult) Session() ids.SessionID { return r.session }

// Complete reports whether every new member confirmed: only then may old
// shares be deleted.
func (r *ReshareResult) Complete() bool {
	return len(r.Unconfirmed) == 0 && len(r.Confirmed) == len(r.Key.Committee.Members) &&
		VerifyReshareProof(r.session, r.Key, r.Proof) == nil
}

// Reshare runs a reshare, then has the whole new committee sign a proof
// digest with the new shares under the same address, then a confirmation
// round in which every new member says whether it holds its share and the
// checked proof; old-only members take the proof from a confirmation.
//
// When the reshare itself fails, Reshare returns only the error. When it
// ran but not every new member confirmed, Reshare returns the result (with
// this node's new share, if it has one, to keep until the reshare is
// resolved) together with a *SessionError wrapping ErrReshareIncomplete.
func (e *Engine) Reshare(ctx context.Context, req ReshareRequest) (*ReshareResult, error) {
	self := e.tr.Self()
	old, nc := req.Key.Committee, req.NewCommittee.Canonical()
	if req.Session.IsZero() {
		return nil, errors.New("tss: reshare: session id is missing")
	}
	if err := req.Key.validate(); err != nil {
		return nil, fmt.Errorf("tss: reshare: %w", err)
	}
	if err := nc.Validate(); err != nil {
		return nil, fmt.Errorf("tss: reshare: new committee: %w", err)
	}
	inOld, inNew := slices.Contains(req.OldSigners, self), nc.Has(self)
	if err := checkQuorum(old, req.OldSigners, "old signers"); err != nil {
		return nil, fmt.Errorf("tss: reshare: %w", err)
	}
	if !inOld && !inNew {
		return nil, fmt.Errorf("tss: reshare: %s is neither an old signer nor in the new committee", self)
	}
	if inOld {
		// This node's own share, not the request, says what the key is.
		switch {
		case req.OldShare == nil:
			return nil, fmt.Errorf("tss: reshare: %s is an old signer but has no share", self)
		case req.OldShare.self != self:
			return nil, fmt.Errorf("tss: reshare: the share belongs to %s, not this node (%s)", req.OldShare.self, self)
		case !req.OldShare.key.Equal(req.Key):
			return nil, fmt.Errorf("tss: reshare: the request describes %s, but this node's share is of %s", req.Key.Describe(), req.OldShare.key.Describe())
		}
		old = req.OldShare.key.Committee
	}
	if inNew && !req.PreParams.valid() {
		return nil, errors.New("tss: reshare: pre-parameters are missing or incomplete for a new committee member")
	}
	wantPub, err := req.Key.ecdsaPublicKey()
	if err != nil {
		return nil, err
	}
	gen := req.Key.Generation + 1
	newKey := KeyInfo{Address: req.Key.Address, PublicKey: req.Key.PublicKey, Committee: nc, Generation: gen, GuardianFloor: nc.GuardianFloor()}

	if inNew {
		if err := req.PreParams.take(); err != nil {
			return nil, fmt.Errorf("tss: reshare: %w", err)
		}
	}
	hard := newHardener(nc.Threshold)
	if hard.wantPub, err = tsscrypto.NewECPoint(tss.S256(), wantPub.X, wantPub.Y); err != nil {
		return nil, fmt.Errorf("tss: reshare: public key: %w", err)
	}
	// Everything this node was told is bound: a member told another key
	// (a wrong public key under the right address, say) stops at the
	// first message, before it could blame an honest dealer.
	s := newSession(e.sessionConfig(req.Session, protoReshare, len(req.OldSigners)+len(nc.Members), hard,
		req.Key.canonical(), sortedIDs(req.OldSigners), nc))
	oldIDs := s.addCommittee(tagOld, req.OldSigners, req.Key.Generation)
	newIDs := s.addCommittee(tagNew, nc.IDs(), gen)
	oldCtx, newCtx := tss.NewPeerContext(oldIDs), tss.NewPeerContext(newIDs)
	var newSave *keygen.LocalPartySaveData
	if inOld {
		data, err := cloneSaveData(req.OldShare.data)
		if err != nil {
			return nil, fmt.Errorf("tss: reshare: copy share: %w", err)
		}
		if hard.wantSSID, err = reshareSSID(data, oldIDs); err != nil {
			return nil, fmt.Errorf("tss: reshare: %w", err)
		}
		params := tss.NewReSharingParameters(tss.S256(), oldCtx, newCtx, s.parties[partyRef{self, tagOld}], len(oldIDs), old.Threshold, len(newIDs), nc.Threshold)
		end := make(chan *keygen.LocalPartySaveData, 1)
		var discard *keygen.LocalPartySaveData
		s.addLocal(tagOld, resharing.NewLocalParty(params, data, s.out, end), pollEnd(end, &discard))
	}
	if inNew {
		params := tss.NewReSharingParameters(tss.S256(), oldCtx, newCtx, s.parties[partyRef{self, tagNew}], len(oldIDs), old.Threshold, len(newIDs), nc.Threshold)
		save := keygen.NewLocalPartySaveData(len(newIDs))
		save.LocalPreParams = req.PreParams.p
		end := make(chan *keygen.LocalPartySaveData, 1)
		s.addLocal(tagNew, resharing.NewLocalParty(params, save, s.out, end), pollEnd(end, &newSave))
	}
	if err := e.run(ctx, s); err != nil {
		return nil, err
	}
	res := &ReshareResult{session: req.Session, Key: newKey, ProofDigest: ReshareProofDigest(req.Session, newKey)}
	var mine *confirmation
	if inNew {
		sh, proof, err := e.proveReshare(ctx, req.Session, newKey, newSave, res.ProofDigest)
		mine = &confirmation{Session: req.Session, Digest: res.ProofDigest}
		if err != nil {
			mine.Reason = err.Error()
			e.log.Warn("reshare: no confirmed share", "session", req.Session, "err", err)
		} else {
			mine.OK, mine.Proof = true, proof
		}
		res.Share = sh // kept even unproven: deleting it could strand the key
	}
	everyone := slices.Clone(req.OldSigners)
	for _, id := range nc.IDs() {
		if !slices.Contains(everyone, id) {
			everyone = append(everyone, id)
		}
	}
	slices.Sort(everyone)
	cr := e.confirm(ctx, req.Session, everyone, newKey, mine)
	if cr.proof != nil { // this node's own, or the first checked one it received
		res.Proof = *cr.proof
	}
	var cerr error
	if res.Confirmed, res.Unconfirmed, cerr = cr.outcome(); cerr != nil {
		return res, cerr
	}
	return res, nil
}

// proveReshare checks this node's new share and has the whole new
// committee sign the proof digest with the new shares: phase two, which
// shows they sign for the unchanged address. The share is returned when it
// is consistent, even if the proof failed.
func (e *Engine) proveReshare(ctx context.Context, session ids.SessionID, key KeyInfo, save *keygen.LocalPartySaveData, digest [32]byte) (*Share, Signature, error) {
	got, err := newKeyInfo(key.Committee, key.Generation, save)
	if err != nil {
		return nil, Signature{}, err
	}
	if got.Address != key.Address {
		return nil, Signature{}, fmt.Errorf("tss: reshare: new shares belong to %s, not %s", got.Address.Hex(), key.Address.Hex())
	}
	sh := &Share{key: key, self: e.tr.Self(), data: *save}
	if err := sh.check(); err != nil {
		return nil, Signature{}, fmt.Errorf("tss: reshare produced an inconsistent share: %w", err)
	}
	proof, err := e.Sign(ctx, SignRequest{Session: session.Derive("reshare-proof"), Share: sh, Signers: key.Committee.IDs(), Digest: digest})
	if err != nil {
		return sh, Signature{}, fmt.Errorf("tss: reshare: proof signature: %w", err)
	}
	return sh, proof, nil
}

// reshareSSID computes the SSID honest old signers send in reshare round 1,
// as tss-lib derives it: curve, old signers' party keys, and their public
// shares and N-tilde setups (nonce 0, round 1).
func reshareSSID(data keygen.LocalPartySaveData, oldIDs tss.SortedPartyIDs) ([]byte, error) {
	sub := keygen.BuildLocalSaveDataSubset(data, oldIDs)
	p := tss.S256().Params()
	list := []*big.Int{p.P, p.N, p.B, p.Gx, p.Gy}
	list = append(list, oldIDs.Keys()...)
	flat, err := tsscrypto.FlattenECPoints(sub.BigXj)
	if err != nil {
		return nil, fmt.Errorf("public shares: %w", err)
	}
	list = append(list, flat...)
	list = append(list, sub.NTildej...)
	list = append(list, sub.H1j...)
	list = append(list, sub.H2j...)
	list = append(list, big.NewInt(1), big.NewInt(0))
	return common.SHA512_256i(list...).Bytes(), nil
}

// ReshareProofDigest is what the new committee signs to prove a reshare:
// bound to the session and to the new key description.
func ReshareProofDigest(session ids.SessionID, key KeyInfo) [32]byte {
	var g [4]byte
	g[0], g[1], g[2], g[3] = byte(key.Generation>>24), byte(key.Generation>>16), byte(key.Generation>>8), byte(key.Generation)
	parts := [][]byte{[]byte("custos/reshare-proof/v1"), session[:], key.Address[:], g[:], []byte(key.Committee.Canonical().Describe())}
	return [32]byte(crypto.Keccak256(hashParts(parts...)))
}

// VerifyReshareProof checks a reshare's proof signature against the key.
func VerifyReshareProof(session ids.SessionID, key KeyInfo, proof Signature) error {
	return verifySignature(ReshareProofDigest(session, key), proof, key.PublicKey)
}
