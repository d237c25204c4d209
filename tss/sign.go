package tss

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"github.com/bnb-chain/tss-lib/v2/common"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	"github.com/bnb-chain/tss-lib/v2/ecdsa/signing"
	"github.com/bnb-chain/tss-lib/v2/tss"
	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/crypto"
)

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
	s, err := newSignSession(e.tr.Self(), req, e.maxIdle())
	if err != nil {
		return Signature{}, err
	}
	rd, err := e.run(ctx, s)
	if err != nil {
		return Signature{}, err
	}
	return *rd.Signature, nil
}

// newSignSession checks req and builds the session of member self; the
// checked signature comes on the Ready that says Done.
func newSignSession(self ids.MemberID, req SignRequest, maxIdle int) (*Session, error) {
	return newSignSessionWith(self, req, maxIdle, new(big.Int).SetBytes(req.Digest[:]), nil)
}

// newSignSessionWith builds the signing session for req around msg, the
// digest tss-lib's party keeps and reads from round 5 on; the signature is
// checked against msg as it is at the end. A presignature (pre4 set) binds
// no digest into the session parameters: its online phase binds it.
func newSignSessionWith(self ids.MemberID, req SignRequest, maxIdle int, msg *big.Int, pre4 *presignPhase) (*Session, error) {
	if req.Share == nil {
		return nil, errors.New("tss: sign: share is missing")
	}
	if req.Session.IsZero() {
		return nil, errors.New("tss: sign: session id is missing")
	}
	if req.Share.self != self {
		return nil, fmt.Errorf("tss: sign: the share belongs to %s, not this node (%s)", req.Share.self, self)
	}
	key := req.Share.key
	if err := checkQuorum(key.Committee, req.Signers, "signers"); err != nil {
		return nil, fmt.Errorf("tss: sign: %w", err)
	}
	if !slices.Contains(req.Signers, self) {
		return nil, fmt.Errorf("tss: sign: this node (%s) is not among the signers", self)
	}
	data, err := cloneSaveData(req.Share.data)
	if err != nil {
		return nil, fmt.Errorf("tss: sign: copy share: %w", err)
	}
	wantPub := key.PublicKey
	var delta *big.Int
	if len(req.Path) > 0 {
		child, err := key.Child(req.Path)
		if err != nil {
			return nil, err
		}
		childPub, err := crypto.UnmarshalPubkey(child.PublicKey)
		if err != nil {
			return nil, err
		}
		// tss-lib adjusts the public shares in place: data is a copy.
		keys := []keygen.LocalPartySaveData{data}
		if err := signing.UpdatePublicKeyAndAdjustBigXj(child.delta, keys, childPub, tss.S256()); err != nil {
			return nil, fmt.Errorf("tss: sign: adjust share for child %v: %w", req.Path, err)
		}
		data, delta, wantPub = keys[0], child.delta, child.PublicKey
	}
	hard, err := signHardener(key, data, req.Signers)
	if err != nil {
		return nil, fmt.Errorf("tss: sign: %w", err)
	}
	var bound any = req.Digest
	if pre4 != nil {
		bound = "presign"
	}
	params := paramsHash(protoSign.String(), key.canonical(), sortedIDs(req.Signers), bound, req.Path)
	s := newSession(sessionConfig{id: req.Session, params: params, proto: protoSign, self: self, maxIdle: maxIdle,
		parties: len(req.Signers), hard: hard, rounds: func(tag) []round { return signRounds }, rule: signRule})
	s.pre4 = pre4
	pids := s.addCommittee(tagMain, req.Signers, key.Generation)
	tp := tss.NewParameters(tss.S256(), tss.NewPeerContext(pids), s.parties[partyRef{self, tagMain}], len(pids), key.Committee.Threshold)
	end := make(chan *common.SignatureData, 1)
	var out *common.SignatureData
	party := signing.NewLocalPartyWithKDD(msg, tp, data, delta, s.out, end, len(req.Digest))
	s.addLocal(tagMain, party, pollEnd(end, &out))
	s.finish = func(rd *Ready) error {
		var sig Signature
		if out == nil || len(out.R) != 32 || len(out.S) != 32 || len(out.SignatureRecovery) != 1 {
			return errors.New("tss: sign: protocol ended without a well-formed signature")
		}
		copy(sig[:32], out.R)
		copy(sig[32:64], out.S)
		sig[64] = out.SignatureRecovery[0]
		var digest [32]byte
		msg.FillBytes(digest[:])
		if err := verifySignature(digest, sig, wantPub); err != nil {
			return fmt.Errorf("tss: sign: %w", err)
		}
		rd.Signature = &sig
		return nil
	}
	return s, nil
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

var signRounds = []round{
	{1, tagMain, []string{typeOf(&signing.SignRound1Message1{}), typeOf(&signing.SignRound1Message2{})}},
	{2, tagMain, []string{typeOf(&signing.SignRound2Message{})}},
	{3, tagMain, []string{typeOf(&signing.SignRound3Message{})}},
	{4, tagMain, []string{typeOf(&signing.SignRound4Message{})}},
	{5, tagMain, []string{typeOf(&signing.SignRound5Message{})}},
	{6, tagMain, []string{typeOf(&signing.SignRound6Message{})}},
	{7, tagMain, []string{typeOf(&signing.SignRound7Message{})}},
	{8, tagMain, []string{typeOf(&signing.SignRound8Message{})}},
	{9, tagMain, []string{typeOf(&signing.SignRound9Message{})}},
}

func signRule(c tss.MessageContent) (msgRule, bool) {
	switch c.(type) {
	case *signing.SignRound1Message1, *signing.SignRound2Message:
		return msgRule{false, tagMain, maskOf(tagMain)}, true
	case *signing.SignRound1Message2, *signing.SignRound3Message, *signing.SignRound4Message,
		*signing.SignRound5Message, *signing.SignRound6Message, *signing.SignRound7Message,
		*signing.SignRound8Message, *signing.SignRound9Message:
		return msgRule{true, tagMain, maskOf(tagMain)}, true
	}
	return msgRule{}, false
}
