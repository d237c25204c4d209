package policy

import (
	"crypto/ecdsa"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

// Errors about guardian signatures.
var (
	ErrNotGuardian   = errors.New("policy: signer is not a guardian")
	ErrBadSignature  = errors.New("policy: malformed signature")
	ErrQuorum        = errors.New("policy: not enough guardian signatures")
	ErrRollback      = errors.New("policy: document does not replace the current one")
	ErrNotTightening = errors.New("policy: change loosens the policy")
)

// Domain is the EIP-712 domain of everything a guardian signs. It has no
// chain id: a policy governs keys on every chain.
var Domain = apitypes.TypedDataDomain{Name: "Custos", Version: "1"}

// Types are the EIP-712 types of guardian decisions.
var Types = apitypes.Types{
	"EIP712Domain": {{Name: "name", Type: "string"}, {Name: "version", Type: "string"}},
	"PolicyDocument": {
		{Name: "hash", Type: "bytes32"},
		{Name: "version", Type: "uint256"},
		{Name: "replaces", Type: "bytes32"},
	},
	"SessionGrant": {
		{Name: "id", Type: "string"},
		{Name: "agent", Type: "string"},
		{Name: "key", Type: "address"},
		{Name: "notBefore", Type: "uint256"},
		{Name: "expiry", Type: "uint256"},
		{Name: "valuePerTx", Type: "uint256"},
		{Name: "valueTotal", Type: "uint256"},
		{Name: "token", Type: "address"},
		{Name: "amountPerTx", Type: "uint256"},
		{Name: "amountTotal", Type: "uint256"},
		{Name: "destinations", Type: "address[]"},
		{Name: "selectors", Type: "bytes4[]"},
		{Name: "maxCount", Type: "uint256"},
	},
	"Freeze": {
		{Name: "target", Type: "string"},
		{Name: "reason", Type: "string"},
		{Name: "issued", Type: "uint256"},
	},
	"Unfreeze": {
		{Name: "target", Type: "string"},
		{Name: "issued", Type: "uint256"},
	},
	"Revocation": {
		{Name: "grantId", Type: "string"},
		{Name: "issued", Type: "uint256"},
	},
}

func typedData(primary string, msg apitypes.TypedDataMessage) apitypes.TypedData {
	return apitypes.TypedData{Types: Types, PrimaryType: primary, Domain: Domain, Message: msg}
}

func unix(t time.Time) *big.Int { return big.NewInt(t.Unix()) }

// SignTypedData signs EIP-712 typed data as a wallet would (V is 27 or 28).
func SignTypedData(key *ecdsa.PrivateKey, td apitypes.TypedData) ([]byte, error) {
	h, _, err := apitypes.TypedDataAndHash(td)
	if err != nil {
		return nil, fmt.Errorf("policy: hash %s: %w", td.PrimaryType, err)
	}
	sig, err := crypto.Sign(h, key)
	if err != nil {
		return nil, fmt.Errorf("policy: sign %s: %w", td.PrimaryType, err)
	}
	sig[64] += 27
	return sig, nil
}

// RecoverTypedData returns the account that signed td.
func RecoverTypedData(td apitypes.TypedData, sig []byte) (common.Address, error) {
	if len(sig) != 65 {
		return common.Address{}, fmt.Errorf("%w: %d bytes", ErrBadSignature, len(sig))
	}
	h, _, err := apitypes.TypedDataAndHash(td)
	if err != nil {
		return common.Address{}, fmt.Errorf("policy: hash %s: %w", td.PrimaryType, err)
	}
	s := append([]byte{}, sig...)
	if s[64] >= 27 {
		s[64] -= 27
	}
	pub, err := crypto.SigToPub(h, s)
	if err != nil {
		return common.Address{}, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	return crypto.PubkeyToAddress(*pub), nil
}

// guardianSigners recovers each signature over td and returns the distinct
// guardians of p who signed. Any signature that does not recover to a
// guardian makes the whole set invalid: a forged signature is an attack to
// report, not noise to skip.
func (p *Policy) guardianSigners(td apitypes.TypedData, sigs [][]byte) ([]common.Address, error) {
	seen := map[common.Address]bool{}
	var out []common.Address
	for i, sig := range sigs {
		a, err := RecoverTypedData(td, sig)
		if err != nil {
			return nil, fmt.Errorf("signature %d: %w", i, err)
		}
		if _, ok := p.guardians[a]; !ok {
			return nil, fmt.Errorf("signature %d by %s: %w", i, a.Hex(), ErrNotGuardian)
		}
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out, nil
}

// SignedDocument is a policy document's YAML source with guardian
// signatures over DocumentTypedData.
type SignedDocument struct {
	Source     []byte
	Signatures [][]byte
}

// DocumentTypedData is what a guardian signs to approve a document: its
// content hash, version and the hash it replaces.
func DocumentTypedData(d *Document) apitypes.TypedData {
	replaces := common.Hash{}
	if d.Replaces != "" {
		replaces = common.HexToHash(d.Replaces)
	}
	return typedData("PolicyDocument", apitypes.TypedDataMessage{
		"hash":     hexutil.Encode(d.Hash().Bytes()),
		"version":  new(big.Int).SetUint64(d.Version),
		"replaces": hexutil.Encode(replaces.Bytes()),
	})
}

// SignDocument signs d with a guardian identity key.
func SignDocument(key *ecdsa.PrivateKey, d *Document) ([]byte, error) {
	return SignTypedData(key, DocumentTypedData(d))
}

// VerifyDocument parses and compiles a signed document and checks that a
// quorum of the guardians it declares signed it. It is how a node accepts
// the first document of a wallet; replacements go through
// Engine.ApplyDocument, which also checks versions and the current
// guardians.
func VerifyDocument(sd SignedDocument) (*Policy, error) {
	p, err := ParseAndCompile(sd.Source)
	if err != nil {
		return nil, err
	}
	signers, err := p.guardianSigners(DocumentTypedData(p.doc), sd.Signatures)
	if err != nil {
		return nil, fmt.Errorf("policy: verify document v%d: %w", p.Version(), err)
	}
	if len(signers) < p.doc.Quorum {
		return nil, fmt.Errorf("policy: verify document v%d: %w: %d of %d", p.Version(), ErrQuorum, len(signers), p.doc.Quorum)
	}
	return p, nil
}

// Freeze is a guardian's order to stop all signing for a target. Any one
// guardian's signature makes it effective at once.
type Freeze struct {
	Target Target
	Reason string
	Issued time.Time
}

// TypedData is what the guardian signs.
func (f Freeze) TypedData() apitypes.TypedData {
	return typedData("Freeze", apitypes.TypedDataMessage{"target": string(f.Target), "reason": f.Reason, "issued": unix(f.Issued)})
}

// Unfreeze lifts the freezes of a target issued at or before Issued. It
// needs the guardian quorum.
type Unfreeze struct {
	Target Target
	Issued time.Time
}

// TypedData is what the guardians sign.
func (u Unfreeze) TypedData() apitypes.TypedData {
	return typedData("Unfreeze", apitypes.TypedDataMessage{"target": string(u.Target), "issued": unix(u.Issued)})
}

// Revocation withdraws a session grant; any one guardian may sign it.
type Revocation struct {
	GrantID string
	Issued  time.Time
}

// TypedData is what the guardian signs.
func (r Revocation) TypedData() apitypes.TypedData {
	return typedData("Revocation", apitypes.TypedDataMessage{"grantId": r.GrantID, "issued": unix(r.Issued)})
}

// Target is what a freeze applies to: "all", "agent:<id>" or
// "key:<address>".
type Target string

// TargetAll freezes every key and agent.
const TargetAll Target = "all"

// AgentTarget is the freeze target of every key an agent uses.
func AgentTarget(a AgentID) Target { return Target("agent:" + string(a)) }

// KeyTarget is the freeze target of one key.
func KeyTarget(k common.Address) Target { return Target("key:" + k.Hex()) }
