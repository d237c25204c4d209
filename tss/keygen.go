package tss

import (
	"context"
	"errors"
	"fmt"

	"github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	"github.com/bnb-chain/tss-lib/v2/tss"
	"github.com/custos-wallet/custos/ids"
)

// KeygenRequest asks this node to take part in a key generation.
type KeygenRequest struct {
	Session   ids.SessionID
	Committee Committee
	PreParams *PreParams // this node's own set; used once
}

// Keygen runs a key generation among the committee and returns this node's
// share. Every member calls it with the same session id and committee.
func (e *Engine) Keygen(ctx context.Context, req KeygenRequest) (*Share, error) {
	s, err := newKeygenSession(e.tr.Self(), req, e.maxIdle())
	if err != nil {
		return nil, err
	}
	rd, err := e.run(ctx, s)
	if err != nil {
		return nil, err
	}
	return rd.Share, nil
}

// newKeygenSession checks req and builds the session of member self; the
// share comes on the Ready that says Done. It uses up req.PreParams.
func newKeygenSession(self ids.MemberID, req KeygenRequest, maxIdle int) (*Session, error) {
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
	s := newSession(sessionConfig{id: req.Session, params: paramsHash(protoKeygen.String(), c), proto: protoKeygen,
		self: self, maxIdle: maxIdle, parties: len(c.Members), hard: newHardener(c.Threshold),
		rounds: func(tag) []round { return keygenRounds }, rule: keygenRule})
	pids := s.addCommittee(tagMain, c.IDs(), 0)
	params := tss.NewParameters(tss.S256(), tss.NewPeerContext(pids), s.parties[partyRef{self, tagMain}], len(pids), c.Threshold)
	end := make(chan *keygen.LocalPartySaveData, 1)
	var save *keygen.LocalPartySaveData
	party := keygen.NewLocalParty(params, s.out, end, req.PreParams.p)
	s.addLocal(tagMain, party, pollEnd(end, &save))
	s.finish = func(rd *Ready) error {
		key, err := newKeyInfo(c, 0, save)
		if err != nil {
			return err
		}
		sh := &Share{key: key, self: self, data: *save}
		if err := sh.check(); err != nil {
			return fmt.Errorf("tss: keygen produced an inconsistent share: %w", err)
		}
		rd.Share = sh
		return nil
	}
	return s, nil
}

var keygenRounds = []round{
	{1, tagMain, []string{typeOf(&keygen.KGRound1Message{})}},
	{2, tagMain, []string{typeOf(&keygen.KGRound2Message1{}), typeOf(&keygen.KGRound2Message2{})}},
	{3, tagMain, []string{typeOf(&keygen.KGRound3Message{})}},
}

func keygenRule(c tss.MessageContent) (msgRule, bool) {
	switch c.(type) {
	case *keygen.KGRound1Message, *keygen.KGRound2Message2, *keygen.KGRound3Message:
		return msgRule{true, tagMain, maskOf(tagMain)}, true
	case *keygen.KGRound2Message1:
		return msgRule{false, tagMain, maskOf(tagMain)}, true
	}
	return msgRule{}, false
}
