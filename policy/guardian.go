package policy

import (
	"crypto/ecdsa"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/custos-wallet/custos/ids"
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

// Domain is the EIP-712 domain of everything a guardian signs for the
// wallet whose id (the hash of its genesis document) is wallet. The salt
// binds every decision to one wallet, so a guardian of two wallets cannot
// have a freeze, grant or document of one replayed against the other. It
// has no chain id: a policy governs keys on every chain.
func Domain(wallet common.Hash) apitypes.TypedDataDomain {
	return apitypes.TypedDataDomain{Name: "Custos", Version: "1", Salt: wallet.Hex()}
}

// Types are the EIP-712 types of guardian decisions.
var Types = apitypes.Types{
	"EIP712Domain": {{Name: "name", Type: "string"}, {Name: "version", Type: "string"}, {Name: "salt", Type: "bytes32"}},
	"PolicyDocument": {
		{Name: "hash", Type: "bytes32"},
		{Name: "version", Type: "uint256"},
		{Name: "replaces", Type: "bytes32"},
	},
	"Grant": {
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
		{Name: "chainId", Type: "uint256"},
	},
	"Freeze": {
		{Name: "target", Type: "string"},
		{Name: "reason", Type: "string"},
		{Name: "issued", Type: "uint256"},
	},
	"Unfreeze": {
		{Name: "target", Type: "string"},
		{Name: "freeze", Type: "bytes32"},
		{Name: "issued", Type: "uint256"},
	},
	"Approval": {
		{Name: "requestId", Type: "string"},
		{Name: "digest", Type: "bytes32"},
		{Name: "chainId", Type: "uint256"},
		{Name: "key", Type: "address"},
		{Name: "issued", Type: "uint256"},
		{Name: "expiry", Type: "uint256"},
	},
	"Denial": {
		{Name: "requestId", Type: "string"},
		{Name: "digest", Type: "bytes32"},
		{Name: "reason", Type: "string"},
		{Name: "issued", Type: "uint256"},
	},
	"Reshare": {
		{Name: "key", Type: "address"},
		{Name: "generation", Type: "uint256"},
		{Name: "oldMembers", Type: "string[]"},
		{Name: "oldThreshold", Type: "uint256"},
		{Name: "newMembers", Type: "string[]"},
		{Name: "newThreshold", Type: "uint256"},
		{Name: "expiry", Type: "uint256"},
	},
	"Revocation": {
		{Name: "grantId", Type: "string"},
		{Name: "issued", Type: "uint256"},
	},
}

func typedData(wallet common.Hash, primary string, msg apitypes.TypedDataMessage) apitypes.TypedData {
	return apitypes.TypedData{Types: Types, PrimaryType: primary, Domain: Domain(wallet), Message: msg}
}

func unix(t time.Time) *big.Int { return big.NewInt(t.Unix()) }

// SignTypedData signs EIP-712 typed data as a wallet would (V is 27 or 28).
func SignTypedData(key *ecdsa.PrivateKey, td apitypes.TypedData) ([]byte, error) {
	h, _, err := apitypes.TypedDataAndHash(td)
	if err != nil {
		return nil, errorf("hash %s: %w", td.PrimaryType, err)
	}
	sig, err := crypto.Sign(h, key)
	if err != nil {
		return nil, errorf("sign %s: %w", td.PrimaryType, err)
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
		return common.Address{}, errorf("hash %s: %w", td.PrimaryType, err)
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

// MaxSignatures bounds the signatures accepted on one guardian decision
// (and the guardians a document may declare): each costs a public-key
// recovery, so the count is checked before any of them, and for a
// document before it is parsed.
const MaxSignatures = 32

// checkSignatureCount is the cheap check of a signature set: its size and
// every signature's length.
func checkSignatureCount(sigs [][]byte) error {
	if len(sigs) > MaxSignatures {
		return fmt.Errorf("%w: %d signatures, at most %d", ErrBadSignature, len(sigs), MaxSignatures)
	}
	for i, s := range sigs {
		if len(s) != 65 {
			return fmt.Errorf("%w: signature %d has %d bytes", ErrBadSignature, i, len(s))
		}
	}
	return nil
}

// guardianSigners recovers each signature over td and returns the distinct
// guardians of p who signed. Any signature that does not recover to a
// guardian makes the whole set invalid: a forged signature is an attack to
// report, not noise to skip.
func (p *Policy) guardianSigners(td apitypes.TypedData, sigs [][]byte) ([]common.Address, error) {
	if err := checkSignatureCount(sigs); err != nil {
		return nil, err
	}
	seen := map[common.Address]bool{}
	var out []common.Address
	for i, sig := range sigs {
		a, err := RecoverTypedData(td, sig)
		if err != nil {
			return nil, wrapf("signature %d: %w", i, err)
		}
		if _, ok := p.guardians[a]; !ok {
			return nil, wrapf("signature %d by %s: %w", i, a.Hex(), ErrNotGuardian)
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

// DocumentTypedData is what a guardian signs to approve a document of the
// wallet wallet: its content hash, version and the hash it replaces. For a
// genesis document the wallet id is the document's own hash.
func DocumentTypedData(wallet common.Hash, d *Document) apitypes.TypedData {
	replaces := common.Hash{}
	if d.Replaces != "" {
		replaces = common.HexToHash(d.Replaces)
	}
	return typedData(wallet, "PolicyDocument", apitypes.TypedDataMessage{
		"hash":     hexutil.Encode(d.Hash().Bytes()),
		"version":  new(big.Int).SetUint64(d.Version),
		"replaces": hexutil.Encode(replaces.Bytes()),
	})
}

// SignDocument signs d, a document of the wallet wallet, with a guardian
// identity key. Sign a genesis document with wallet = d.Hash().
func SignDocument(key *ecdsa.PrivateKey, wallet common.Hash, d *Document) ([]byte, error) {
	return SignTypedData(key, DocumentTypedData(wallet, d))
}

// Genesis is what the operator pins, out of band, when a node accepts the
// first document of a wallet. Only Hash identifies a wallet: it fixes every
// byte of the genesis document. A pin of the guardian set alone does not:
// the guardians (any quorum of them) can sign any number of genesis
// documents naming themselves, so it must also pin Quorum, and the genesis
// document is then accepted only with at least that many signatures of
// pinned guardians (and a declared quorum no lower). Without a pin the
// first document would certify itself: anyone could write one naming their
// own keys as guardians.
type Genesis struct {
	// Hash, if set, is the genesis document's content hash (its wallet id).
	Hash common.Hash
	// Guardians, if set, are exactly the guardian accounts the genesis
	// document must declare.
	Guardians []common.Address
	// Quorum is the number of pinned guardians who must sign the genesis
	// document, and the least quorum it may declare. It is required when
	// Guardians is pinned without Hash.
	Quorum int
}

// Errors about the genesis document.
var ErrGenesis = errors.New("policy: genesis document does not match the pinned genesis")

// VerifyDocument parses and compiles the first (genesis) document of a
// wallet, checks it against what the operator pinned (g) and checks that a
// quorum of the guardians it declares signed it. Its hash becomes the
// wallet id that every later guardian signature is bound to.
// Replacements go through Engine.ApplyDocument, which also checks versions
// and the current guardians; a node that restarts re-verifies its genesis
// document and re-applies the replacements it stored, in order.
func VerifyDocument(sd SignedDocument, g Genesis) (*Policy, error) {
	if err := checkSignatureCount(sd.Signatures); err != nil {
		return nil, errorf("verify document: %w", err)
	}
	p, err := ParseAndCompile(sd.Source)
	if err != nil {
		return nil, err
	}
	if g.Hash == (common.Hash{}) && len(g.Guardians) == 0 {
		return nil, fmt.Errorf("%w: nothing pinned (a genesis hash or guardian set is required)", ErrGenesis)
	}
	if g.Hash == (common.Hash{}) && g.Quorum <= 0 {
		return nil, fmt.Errorf("%w: a guardian set pinned without a hash needs a pinned quorum too", ErrGenesis)
	}
	if g.Hash != (common.Hash{}) && g.Hash != p.hash {
		return nil, fmt.Errorf("%w: hash %s, pinned %s", ErrGenesis, p.hash.Hex(), g.Hash.Hex())
	}
	if len(g.Guardians) > 0 {
		pinned := map[common.Address]bool{}
		for _, a := range g.Guardians {
			pinned[a] = true
		}
		same := len(pinned) == len(p.guardians)
		for a := range p.guardians {
			same = same && pinned[a]
		}
		if !same {
			return nil, fmt.Errorf("%w: its guardians are not the pinned guardian set", ErrGenesis)
		}
	}
	if g.Quorum > 0 && p.doc.Quorum < g.Quorum {
		return nil, fmt.Errorf("%w: it declares quorum %d, pinned %d", ErrGenesis, p.doc.Quorum, g.Quorum)
	}
	if p.doc.Replaces != "" {
		return nil, fmt.Errorf("%w: a genesis document replaces nothing, this one replaces %s", ErrGenesis, p.doc.Replaces)
	}
	p.wallet = p.hash
	signers, err := p.guardianSigners(DocumentTypedData(p.wallet, p.doc), sd.Signatures)
	if err != nil {
		return nil, errorf("verify document v%d: %w", p.Version(), err)
	}
	need := max(p.doc.Quorum, g.Quorum)
	if len(signers) < need {
		return nil, errorf("verify document v%d: %w: %d of %d", p.Version(), ErrQuorum, len(signers), need)
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

// TypedData is what the guardian signs for the wallet wallet.
func (f Freeze) TypedData(wallet common.Hash) apitypes.TypedData {
	return typedData(wallet, "Freeze", apitypes.TypedDataMessage{"target": string(f.Target), "reason": f.Reason, "issued": unix(f.Issued)})
}

// ID is the freeze's EIP-712 hash for the wallet wallet: the ID of the
// FreezeRecord it creates, which an Unfreeze names.
func (f Freeze) ID(wallet common.Hash) (common.Hash, error) { return typedHash(f.TypedData(wallet)) }

// Unfreeze lifts one freeze: the freeze whose ID is Freeze, and only while
// it is the current freeze of Target. It needs the guardian quorum, and
// each signed Unfreeze is accepted once.
type Unfreeze struct {
	Target Target
	// Freeze is the ID of the freeze this lifts (FreezeRecord.ID).
	Freeze common.Hash
	Issued time.Time
}

// TypedData is what the guardians sign for the wallet wallet.
func (u Unfreeze) TypedData(wallet common.Hash) apitypes.TypedData {
	return typedData(wallet, "Unfreeze", apitypes.TypedDataMessage{"target": string(u.Target), "freeze": hexutil.Encode(u.Freeze.Bytes()), "issued": unix(u.Issued)})
}

// Revocation withdraws a grant; any one guardian may sign it.
type Revocation struct {
	GrantID string
	Issued  time.Time
}

// TypedData is what the guardian signs for the wallet wallet.
func (r Revocation) TypedData(wallet common.Hash) apitypes.TypedData {
	return typedData(wallet, "Revocation", apitypes.TypedDataMessage{"grantId": r.GrantID, "issued": unix(r.Issued)})
}

// Target is what a freeze applies to: "all", "agent:<id>" or
// "key:<address>".
type Target string

// TargetAll freezes every key and agent.
const TargetAll Target = "all"

// AgentTarget is the freeze target of every key an agent uses.
func AgentTarget(a ids.AgentID) Target { return Target("agent:" + string(a)) }

// KeyTarget is the freeze target of one key: its ids.KeyID text, the form
// shares, the API and the audit log use too.
func KeyTarget(k common.Address) Target { return Target(ids.KeyIDOf(k).String()) }
