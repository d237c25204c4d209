package admin

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/httpapi"
	"github.com/custos-wallet/custos/store"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
)

// AuditEntry is an audit entry as the API shows it: the entry (every field
// its hash covers, so a client can recompute the chain) and its one-line
// description.
type AuditEntry struct {
	store.Entry
	Summary string `json:"summary"`
}

// MaxSignatures bounds the signatures one unfreeze may carry.
const MaxSignatures = 64

// The shape checks below refuse what cannot be a guardian's signed
// decision before the backend sees it; whether it is one (its signer, what
// it binds) is the backend's, that is the policy's, to check.

func badRequest(format string, args ...any) error {
	return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, format, args...)
}

func checkRequestID(id ids.RequestID) error {
	if _, err := ids.ParseRequestID(string(id)); err != nil {
		return badRequest("request_id %q: %v", id, err)
	}
	return nil
}

func checkSignature(what string, sig hexutil.Bytes) error {
	if len(sig) != 65 {
		return badRequest("%s: signature is %d bytes, want 65", what, len(sig))
	}
	return nil
}

func checkApproval(a api.Approval) error {
	if err := checkRequestID(a.RequestID); err != nil {
		return err
	}
	switch {
	case a.Digest == (common.Hash{}):
		return badRequest("approval: digest missing")
	case a.ChainID == 0:
		return badRequest("approval: chain_id missing")
	case a.Key == (common.Address{}):
		return badRequest("approval: key missing")
	case a.Issued.IsZero():
		return badRequest("approval: issued missing")
	case a.Expiry.IsZero():
		return badRequest("approval: expiry missing")
	case !a.Expiry.After(a.Issued):
		return badRequest("approval: expiry %s is not after issued %s", a.Expiry.UTC().Format("2006-01-02T15:04:05Z"), a.Issued.UTC().Format("2006-01-02T15:04:05Z"))
	}
	return checkSignature("approval", a.Signature)
}

func checkDenial(d api.Denial) error {
	if err := checkRequestID(d.RequestID); err != nil {
		return err
	}
	switch {
	case d.Digest == (common.Hash{}):
		return badRequest("denial: digest missing")
	case d.Issued.IsZero():
		return badRequest("denial: issued missing")
	case len(d.Reason) > 1024:
		return badRequest("denial: reason of %d bytes exceeds 1024", len(d.Reason))
	}
	return checkSignature("denial", d.Signature)
}

func checkFreeze(f api.Freeze) error {
	switch {
	case f.Target == "":
		return badRequest("freeze: target missing (all, agent:<id> or key:<address>)")
	case f.Issued.IsZero():
		return badRequest("freeze: issued missing")
	case len(f.Reason) > 1024:
		return badRequest("freeze: reason of %d bytes exceeds 1024", len(f.Reason))
	}
	return checkSignature("freeze", f.Signature)
}

func checkUnfreeze(u api.Unfreeze) error {
	switch {
	case u.Target == "":
		return badRequest("unfreeze: target missing (all, agent:<id> or key:<address>)")
	case u.Freeze == (common.Hash{}):
		return badRequest("unfreeze: freeze (the id of the freeze it lifts) missing")
	case u.Issued.IsZero():
		return badRequest("unfreeze: issued missing")
	case len(u.Signatures) == 0:
		return badRequest("unfreeze: no signatures")
	case len(u.Signatures) > MaxSignatures:
		return badRequest("unfreeze: %d signatures, at most %d", len(u.Signatures), MaxSignatures)
	}
	for i, s := range u.Signatures {
		if len(s) != 65 {
			return badRequest("unfreeze: signature %d is %d bytes, want 65", i, len(s))
		}
	}
	return nil
}

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand panics rather)
	return hex.EncodeToString(b)
}
