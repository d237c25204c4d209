package x402

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
)

// ErrUnsupported: none of the offered requirements is one this client can
// pay (scheme `exact` on an EVM network with the eip3009 method).
var ErrUnsupported = errors.New("x402: no usable payment requirement")

// SchemeExact is the only scheme this client pays.
const SchemeExact = "exact"

// v1Networks maps the v1 network names of the specification (and the
// common ones of the reference implementation) to chain ids. Unknown names
// are refused: guessing a chain id would sign for the wrong domain.
var v1Networks = map[string]uint64{
	"base":           8453,
	"base-sepolia":   84532,
	"avalanche":      43114,
	"avalanche-fuji": 43113,
	"iotex":          4689,
	"polygon":        137,
	"polygon-amoy":   80002,
	"sei":            1329,
	"sei-testnet":    1328,
	"ethereum":       1,
	"sepolia":        11155111,
}

// maxUint256 is 2^256 - 1, the largest EIP-3009 value.
var maxUint256 = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1))

// Requirement is one offered way to pay, decoded and checked: what a
// Chooser picks from. Amounts are in the asset's atomic units.
type Requirement struct {
	// Version is the x402 version of the offer (1 or 2).
	Version int
	// Index is the requirement's position in the server's accepts list.
	Index int
	// Scheme is always SchemeExact.
	Scheme string
	// Network is the CAIP-2 id ("eip155:84532"), also for v1 offers, whose
	// network names are mapped to chain ids.
	Network string
	ChainID *big.Int
	Amount  *big.Int
	Asset   common.Address
	PayTo   common.Address
	// MaxTimeout is the requirement's maxTimeoutSeconds.
	MaxTimeout time.Duration
	// TokenName and TokenVersion are the token's EIP-712 domain (extra.name,
	// extra.version).
	TokenName    string
	TokenVersion string
	// Resource is the URL the offer is for, Description the server's words
	// for it (shown to whoever decides; never trusted).
	Resource    string
	Description string
}

// String describes r in one line, for logs and errors.
func (r Requirement) String() string {
	return fmt.Sprintf("accepts[%d]: %s %s of %s to %s on %s within %s",
		r.Index, r.Scheme, r.Amount, r.Asset.Hex(), r.PayTo.Hex(), r.Network, r.MaxTimeout)
}

// clone returns r with its own copies of the big integers, so that a
// Chooser cannot change the offer it was shown.
func (r Requirement) clone() Requirement {
	r.ChainID = new(big.Int).Set(r.ChainID)
	r.Amount = new(big.Int).Set(r.Amount)
	return r
}

// same reports whether r and o describe the same payment.
func (r Requirement) same(o Requirement) bool {
	return r.Version == o.Version && r.Index == o.Index && r.Scheme == o.Scheme && r.Network == o.Network &&
		r.ChainID != nil && o.ChainID != nil && r.ChainID.Cmp(o.ChainID) == 0 &&
		r.Amount != nil && o.Amount != nil && r.Amount.Cmp(o.Amount) == 0 &&
		r.Asset == o.Asset && r.PayTo == o.PayTo && r.MaxTimeout == o.MaxTimeout &&
		r.TokenName == o.TokenName && r.TokenVersion == o.TokenVersion && r.Resource == o.Resource &&
		r.Description == o.Description
}

// Requirements returns the offered requirements this client can pay, in
// offer order. When none is usable the error names why each was refused.
func (pr *PaymentRequired) Requirements() ([]Requirement, error) {
	var out []Requirement
	var why []string
	for i, a := range pr.Accepts {
		r, err := exactRequirement(2, i, a.Scheme, a.Network, a.Amount, a.Asset, a.PayTo, a.MaxTimeoutSeconds, a.Extra)
		if err != nil {
			why = append(why, fmt.Sprintf("accepts[%d]: %v", i, err))
			continue
		}
		r.Resource, r.Description = pr.Resource.URL, pr.Resource.Description
		out = append(out, r)
	}
	return usable(out, why)
}

// Requirements returns the offered v1 requirements this client can pay.
func (pr *PaymentRequiredV1) Requirements() ([]Requirement, error) {
	var out []Requirement
	var why []string
	for i, a := range pr.Accepts {
		r, err := exactRequirement(1, i, a.Scheme, a.Network, a.MaxAmountRequired, a.Asset, a.PayTo, a.MaxTimeoutSeconds, a.Extra)
		if err != nil {
			why = append(why, fmt.Sprintf("accepts[%d]: %v", i, err))
			continue
		}
		r.Resource, r.Description = a.Resource, a.Description
		out = append(out, r)
	}
	return usable(out, why)
}

func usable(out []Requirement, why []string) ([]Requirement, error) {
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrUnsupported, strings.Join(why, "; "))
	}
	return out, nil
}

func exactRequirement(version, i int, scheme, network, amount, asset, payTo string, timeout int64, extra json.RawMessage) (Requirement, error) {
	r := Requirement{Version: version, Index: i, Scheme: scheme}
	if scheme != SchemeExact {
		return r, fmt.Errorf("unknown scheme %q", scheme)
	}
	var err error
	if r.ChainID, err = chainID(version, network); err != nil {
		return r, err
	}
	r.Network = "eip155:" + r.ChainID.String()
	if r.Amount, err = parseAmount(amount); err != nil {
		return r, fmt.Errorf("amount %q: %v", amount, err)
	}
	if r.Asset, err = parseAddress(asset); err != nil {
		return r, fmt.Errorf("asset %q: %v", asset, err)
	}
	if r.PayTo, err = parseAddress(payTo); err != nil {
		return r, fmt.Errorf("payTo %q: %v", payTo, err)
	}
	if timeout < 0 || timeout > int64(365*24*time.Hour/time.Second) {
		return r, fmt.Errorf("maxTimeoutSeconds %d is out of range", timeout)
	}
	r.MaxTimeout = time.Duration(timeout) * time.Second
	if r.TokenName, r.TokenVersion, err = parseExtra(extra); err != nil {
		return r, err
	}
	return r, nil
}

// chainID returns the chain id of an EVM network: CAIP-2 "eip155:<id>" in
// v2, a known name in v1.
func chainID(version int, network string) (*big.Int, error) {
	if version == 1 {
		id, ok := v1Networks[network]
		if !ok {
			return nil, fmt.Errorf("unknown v1 network %q", network)
		}
		return new(big.Int).SetUint64(id), nil
	}
	ref, ok := strings.CutPrefix(network, "eip155:")
	if !ok {
		return nil, fmt.Errorf("network %q is not an EVM (eip155) network", network)
	}
	if ref == "" || ref[0] == '0' || strings.TrimLeft(ref, "0123456789") != "" {
		return nil, fmt.Errorf("network %q: chain id is not a positive decimal", network)
	}
	id, err := strconv.ParseUint(ref, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("network %q: chain id out of range", network)
	}
	return new(big.Int).SetUint64(id), nil
}

// parseAmount parses a positive decimal amount of atomic units.
func parseAmount(s string) (*big.Int, error) {
	if s == "" || len(s) > 78 || strings.TrimLeft(s, "0123456789") != "" {
		return nil, errors.New("not a decimal integer")
	}
	if len(s) > 1 && s[0] == '0' {
		return nil, errors.New("leading zero")
	}
	v, _ := new(big.Int).SetString(s, 10)
	if v.Sign() == 0 {
		return nil, errors.New("zero")
	}
	if v.Cmp(maxUint256) > 0 {
		return nil, errors.New("over 2^256-1")
	}
	return v, nil
}

// parseAddress parses 0x and 40 hex digits; mixed case must be a valid
// EIP-55 checksum, so a mistyped address is refused.
func parseAddress(s string) (common.Address, error) {
	if len(s) != 42 || !strings.HasPrefix(s, "0x") || !common.IsHexAddress(s) {
		return common.Address{}, errors.New("not a 0x-prefixed 20-byte hex address")
	}
	a := common.HexToAddress(s)
	if body := s[2:]; body != strings.ToLower(body) && body != strings.ToUpper(body) && a.Hex() != s {
		return common.Address{}, errors.New("bad EIP-55 checksum")
	}
	if a == (common.Address{}) {
		return common.Address{}, errors.New("zero address")
	}
	return a, nil
}

// parseExtra reads the token's EIP-712 domain from extra and refuses a
// transfer method other than eip3009.
func parseExtra(extra json.RawMessage) (name, version string, err error) {
	if len(extra) == 0 || string(extra) == "null" {
		return "", "", errors.New("extra is missing (the token's EIP-712 name and version)")
	}
	var e struct {
		Name                *string `json:"name"`
		Version             *string `json:"version"`
		AssetTransferMethod *string `json:"assetTransferMethod"`
	}
	if err := json.Unmarshal(extra, &e); err != nil {
		return "", "", fmt.Errorf("extra: %v", err)
	}
	if e.AssetTransferMethod != nil && *e.AssetTransferMethod != "eip3009" {
		return "", "", fmt.Errorf("extra.assetTransferMethod %q is not supported (only eip3009)", *e.AssetTransferMethod)
	}
	if e.Name == nil || *e.Name == "" {
		return "", "", errors.New("extra.name is missing")
	}
	if e.Version == nil || *e.Version == "" {
		return "", "", errors.New("extra.version is missing")
	}
	return *e.Name, *e.Version, nil
}
