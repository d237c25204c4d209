package tss

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"github.com/bnb-chain/tss-lib/v2/common"
	tsscrypto "github.com/bnb-chain/tss-lib/v2/crypto"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/resharing"
	"github.com/bnb-chain/tss-lib/v2/tss"
	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/crypto"
)

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
	s, plan, err := newReshareSession(e.tr.Self(), req, e.maxIdle())
	if err != nil {
		return nil, err
	}
	rd, err := e.run(ctx, s)
	if err != nil {
		return nil, err
	}
	res := &ReshareResult{session: req.Session, Key: plan.newKey, ProofDigest: ReshareProofDigest(req.Session, plan.newKey)}
	var mine *confirmation
	if plan.inNew {
		mine = &confirmation{Session: req.Session, Digest: res.ProofDigest}
		proof, err := e.proveReshare(ctx, req.Session, rd, res.ProofDigest)
		if err != nil {
			mine.Reason = err.Error()
			e.log.Warn("reshare: no confirmed share", "session", req.Session, "err", err)
		} else {
			mine.OK, mine.Proof = true, proof
		}
		res.Share = rd.Share // kept even unproven: deleting it could strand the key
	}
	cr := e.confirm(ctx, req.Session, plan.everyone, plan.newKey, mine)
	if cr.proof != nil { // this node's own, or the first checked one it received
		res.Proof = *cr.proof
	}
	var cerr error
	if res.Confirmed, res.Unconfirmed, cerr = cr.outcome(); cerr != nil {
		return res, cerr
	}
	return res, nil
}

// reshareRun is what the phases after the reshare session need to know.
type reshareRun struct {
	newKey   KeyInfo        // the key under its new committee
	inNew    bool           // this node is in the new committee
	everyone []ids.MemberID // old signers and new members, sorted
}

// newReshareSession checks req and builds the reshare session of member
// self. At a new member the Ready that says Done carries the new share, or
// ShareErr when it failed its checks. It uses up req.PreParams at a new
// member.
func newReshareSession(self ids.MemberID, req ReshareRequest, maxIdle int) (*Session, reshareRun, error) {
	var plan reshareRun
	old, nc := req.Key.Committee, req.NewCommittee.Canonical()
	if req.Session.IsZero() {
		return nil, plan, errors.New("tss: reshare: session id is missing")
	}
	if err := req.Key.validate(); err != nil {
		return nil, plan, fmt.Errorf("tss: reshare: %w", err)
	}
	if err := nc.Validate(); err != nil {
		return nil, plan, fmt.Errorf("tss: reshare: new committee: %w", err)
	}
	inOld, inNew := slices.Contains(req.OldSigners, self), nc.Has(self)
	if err := checkQuorum(old, req.OldSigners, "old signers"); err != nil {
		return nil, plan, fmt.Errorf("tss: reshare: %w", err)
	}
	if !inOld && !inNew {
		return nil, plan, fmt.Errorf("tss: reshare: %s is neither an old signer nor in the new committee", self)
	}
	if inOld {
		// This node's own share, not the request, says what the key is.
		switch {
		case req.OldShare == nil:
			return nil, plan, fmt.Errorf("tss: reshare: %s is an old signer but has no share", self)
		case req.OldShare.self != self:
			return nil, plan, fmt.Errorf("tss: reshare: the share belongs to %s, not this node (%s)", req.OldShare.self, self)
		case !req.OldShare.key.Equal(req.Key):
			return nil, plan, fmt.Errorf("tss: reshare: the request describes %s, but this node's share is of %s", req.Key.Describe(), req.OldShare.key.Describe())
		}
		old = req.OldShare.key.Committee
	}
	if inNew && !req.PreParams.valid() {
		return nil, plan, errors.New("tss: reshare: pre-parameters are missing or incomplete for a new committee member")
	}
	wantPub, err := req.Key.ecdsaPublicKey()
	if err != nil {
		return nil, plan, err
	}
	gen := req.Key.Generation + 1
	plan.newKey = KeyInfo{Address: req.Key.Address, PublicKey: req.Key.PublicKey, Committee: nc, Generation: gen, GuardianFloor: nc.GuardianFloor()}
	plan.inNew = inNew
	plan.everyone = slices.Clone(req.OldSigners)
	for _, id := range nc.IDs() {
		if !slices.Contains(plan.everyone, id) {
			plan.everyone = append(plan.everyone, id)
		}
	}
	slices.Sort(plan.everyone)

	if inNew {
		if err := req.PreParams.take(); err != nil {
			return nil, plan, fmt.Errorf("tss: reshare: %w", err)
		}
	}
	hard := newHardener(nc.Threshold)
	if hard.wantPub, err = tsscrypto.NewECPoint(tss.S256(), wantPub.X, wantPub.Y); err != nil {
		return nil, plan, fmt.Errorf("tss: reshare: public key: %w", err)
	}
	// Everything this node was told is bound: a member told another key
	// (a wrong public key under the right address, say) stops at the
	// first message, before it could blame an honest dealer.
	params := paramsHash(protoReshare.String(), req.Key.canonical(), sortedIDs(req.OldSigners), nc)
	s := newSession(sessionConfig{id: req.Session, params: params, proto: protoReshare, self: self, maxIdle: maxIdle,
		parties: len(req.OldSigners) + len(nc.Members), hard: hard, rounds: reshareRounds, rule: reshareRule})
	oldIDs := s.addCommittee(tagOld, req.OldSigners, req.Key.Generation)
	newIDs := s.addCommittee(tagNew, nc.IDs(), gen)
	oldCtx, newCtx := tss.NewPeerContext(oldIDs), tss.NewPeerContext(newIDs)
	if inOld {
		data, err := cloneSaveData(req.OldShare.data)
		if err != nil {
			return nil, plan, fmt.Errorf("tss: reshare: copy share: %w", err)
		}
		if hard.wantSSID, err = reshareSSID(data, oldIDs); err != nil {
			return nil, plan, fmt.Errorf("tss: reshare: %w", err)
		}
		tp := tss.NewReSharingParameters(tss.S256(), oldCtx, newCtx, s.parties[partyRef{self, tagOld}], len(oldIDs), old.Threshold, len(newIDs), nc.Threshold)
		end := make(chan *keygen.LocalPartySaveData, 1)
		var discard *keygen.LocalPartySaveData
		s.addLocal(tagOld, resharing.NewLocalParty(tp, data, s.out, end), pollEnd(end, &discard))
	}
	if inNew {
		tp := tss.NewReSharingParameters(tss.S256(), oldCtx, newCtx, s.parties[partyRef{self, tagNew}], len(oldIDs), old.Threshold, len(newIDs), nc.Threshold)
		save := keygen.NewLocalPartySaveData(len(newIDs))
		save.LocalPreParams = req.PreParams.p
		end := make(chan *keygen.LocalPartySaveData, 1)
		var newSave *keygen.LocalPartySaveData
		s.addLocal(tagNew, resharing.NewLocalParty(tp, save, s.out, end), pollEnd(end, &newSave))
		newKey := plan.newKey
		s.finish = func(rd *Ready) error {
			rd.Share, rd.ShareErr = newReshareShare(self, newKey, newSave)
			return nil
		}
	}
	return s, plan, nil
}

// newReshareShare checks this node's new share: a key of the same address,
// consistent with every member's public data.
func newReshareShare(self ids.MemberID, key KeyInfo, save *keygen.LocalPartySaveData) (*Share, error) {
	got, err := newKeyInfo(key.Committee, key.Generation, save)
	if err != nil {
		return nil, err
	}
	if got.Address != key.Address {
		return nil, fmt.Errorf("tss: reshare: new shares belong to %s, not %s", got.Address.Hex(), key.Address.Hex())
	}
	sh := &Share{key: key, self: self, data: *save}
	if err := sh.check(); err != nil {
		return nil, fmt.Errorf("tss: reshare produced an inconsistent share: %w", err)
	}
	return sh, nil
}

// proveReshare has the whole new committee sign the proof digest with the
// new shares: phase two, which shows they sign for the unchanged address.
func (e *Engine) proveReshare(ctx context.Context, session ids.SessionID, rd Ready, digest [32]byte) (Signature, error) {
	if rd.Share == nil {
		return Signature{}, rd.ShareErr
	}
	proof, err := e.Sign(ctx, SignRequest{Session: session.Derive("reshare-proof"), Share: rd.Share, Signers: rd.Share.key.Committee.IDs(), Digest: digest})
	if err != nil {
		return Signature{}, fmt.Errorf("tss: reshare: proof signature: %w", err)
	}
	return proof, nil
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

var (
	reshareOldRounds = []round{
		{2, tagNew, []string{typeOf(&resharing.DGRound2Message2{})}},
		{4, tagNew, []string{typeOf(&resharing.DGRound4Message2{})}},
	}
	reshareNewRounds = []round{
		{1, tagOld, []string{typeOf(&resharing.DGRound1Message{})}},
		{2, tagNew, []string{typeOf(&resharing.DGRound2Message1{})}},
		{3, tagOld, []string{typeOf(&resharing.DGRound3Message1{}), typeOf(&resharing.DGRound3Message2{})}},
		{4, tagNew, []string{typeOf(&resharing.DGRound4Message1{}), typeOf(&resharing.DGRound4Message2{})}},
	}
)

func reshareRounds(t tag) []round {
	if t == tagOld {
		return reshareOldRounds
	}
	return reshareNewRounds
}

func reshareRule(c tss.MessageContent) (msgRule, bool) {
	toNew, toOld := maskOf(tagNew), maskOf(tagOld)
	switch c.(type) {
	case *resharing.DGRound1Message, *resharing.DGRound3Message2:
		return msgRule{true, tagOld, toNew}, true
	case *resharing.DGRound3Message1:
		return msgRule{false, tagOld, toNew}, true
	case *resharing.DGRound2Message1:
		return msgRule{true, tagNew, toNew}, true
	case *resharing.DGRound2Message2:
		return msgRule{true, tagNew, toOld}, true
	case *resharing.DGRound4Message1:
		return msgRule{false, tagNew, toNew}, true
	case *resharing.DGRound4Message2:
		return msgRule{true, tagNew, maskOf(tagOld, tagNew)}, true
	}
	return msgRule{}, false
}
