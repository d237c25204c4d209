package chain

import (
	"errors"
	"math/big"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/holiman/uint256"
)

var (
	token    = common.HexToAddress("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48")
	stranger = common.HexToAddress("0x9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a")
	vendor   = common.HexToAddress("0x1111111111111111111111111111111111111111")
)

func roundTrip(t *testing.T, tx *types.Transaction) *Tx {
	t.Helper()
	raw, err := tx.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeTransaction(raw)
	if err != nil {
		t.Fatal(err)
	}
	js, err := back.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeTransactionJSON(js); err != nil {
		t.Fatal(err)
	}
	out, err := DescribeTransaction(back)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDecodeTransactionTypes(t *testing.T) {
	data := EncodeCall(SelTransfer, stranger, big.NewInt(150))
	for name, tx := range map[string]*types.Transaction{
		"legacy":      types.NewTx(&types.LegacyTx{To: &token, Gas: 60000, GasPrice: big.NewInt(7), Data: data}),
		"access-list": types.NewTx(&types.AccessListTx{ChainID: big.NewInt(1), To: &token, Gas: 60000, GasPrice: big.NewInt(7), Data: data}),
		"dynamic-fee": types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(1), To: &token, Gas: 60000, GasFeeCap: big.NewInt(7), GasTipCap: big.NewInt(1), Data: data}),
	} {
		d := roundTrip(t, tx)
		if name == "legacy" && d.ChainID != nil {
			t.Errorf("%s: unsigned legacy chain id %v, want nil", name, d.ChainID)
		}
		if name != "legacy" && d.ChainID.Int64() != 1 {
			t.Errorf("%s: chain id %v", name, d.ChainID)
		}
		if d.GasFeeCap.Int64() != 7 || len(d.Spends) != 1 {
			t.Fatalf("%s: %+v", name, d)
		}
		s := d.Spends[0]
		if s.Kind != SpendTransfer || s.Token != token || s.To != stranger || s.Amount.Int64() != 150 || s.Unlimited {
			t.Errorf("%s: spend %s", name, s.Describe())
		}
	}
}

func TestSignedLegacyChainID(t *testing.T) {
	key, _ := crypto.GenerateKey()
	tx, err := types.SignTx(types.NewTx(&types.LegacyTx{To: &vendor, Gas: 21000, GasPrice: big.NewInt(1), Value: big.NewInt(5)}), types.NewEIP155Signer(big.NewInt(137)), key)
	if err != nil {
		t.Fatal(err)
	}
	d := roundTrip(t, tx)
	if d.ChainID.Int64() != 137 || len(d.Spends) != 1 || d.Spends[0].Kind != SpendNative || d.Spends[0].To != vendor {
		t.Fatalf("%+v", d)
	}
}

func TestSetCodeAuthorizations(t *testing.T) {
	delegate := common.HexToAddress("0xde1e000000000000000000000000000000000001")
	key, _ := crypto.GenerateKey()
	auth, err := types.SignSetCode(key, types.SetCodeAuthorization{ChainID: *uint256.NewInt(1), Address: delegate, Nonce: 3})
	if err != nil {
		t.Fatal(err)
	}
	self := crypto.PubkeyToAddress(key.PublicKey)
	tx := types.NewTx(&types.SetCodeTx{ChainID: uint256.NewInt(1), To: self, Gas: 80000, GasFeeCap: uint256.NewInt(2), GasTipCap: uint256.NewInt(1), Value: uint256.NewInt(0), AuthList: []types.SetCodeAuthorization{auth}})
	d := roundTrip(t, tx)
	if len(d.Authorizations) != 1 || d.Authorizations[0].Delegate != delegate || d.Authorizations[0].Nonce != 3 {
		t.Fatalf("%+v", d.Authorizations)
	}
}

func TestBlobRefused(t *testing.T) {
	tx := types.NewTx(&types.BlobTx{ChainID: uint256.NewInt(1), GasTipCap: uint256.NewInt(1), GasFeeCap: uint256.NewInt(1), BlobFeeCap: uint256.NewInt(1), Value: uint256.NewInt(0)})
	if _, err := DescribeTransaction(tx); !errors.Is(err, ErrBlobTx) {
		t.Fatalf("got %v", err)
	}
}

func TestCalldata(t *testing.T) {
	cases := []struct {
		name      string
		data      []byte
		kind      SpendKind
		to, from  common.Address
		unlimited bool
		err       error
	}{
		{"transfer", EncodeCall(SelTransfer, vendor, int64(1)), SpendTransfer, vendor, common.Address{}, false, nil},
		{"transferFrom", EncodeCall(SelTransferFrom, vendor, stranger, int64(1)), SpendTransferFrom, stranger, vendor, false, nil},
		{"approve", EncodeCall(SelApprove, stranger, MaxUint256), SpendApprove, stranger, common.Address{}, true, nil},
		{"increaseAllowance", EncodeCall(SelIncreaseAllowance, stranger, int64(9)), SpendIncreaseAllowance, stranger, common.Address{}, false, nil},
		{"short args", EncodeCall(SelTransfer, vendor), 0, common.Address{}, common.Address{}, false, ErrMalformedArgs},
		{"dirty address", append(append([]byte{}, SelApprove[:]...), make([]byte, 64)...), SpendApprove, common.Address{}, common.Address{}, false, nil},
		{"short", []byte{1, 2}, 0, common.Address{}, common.Address{}, false, ErrShortCalldata},
	}
	cases[5].data[4] = 1 // high bytes of an address word set
	cases[5].err = ErrMalformedArgs
	for _, c := range cases {
		call, spends, err := DecodeCalldata(token, c.data)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("%s: err %v, want %v", c.name, err, c.err)
			}
			continue
		}
		if err != nil || !call.Known() || len(spends) != 1 {
			t.Fatalf("%s: %v %+v %v", c.name, call, spends, err)
		}
		s := spends[0]
		if s.Kind != c.kind || s.To != c.to || s.From != c.from || s.Unlimited != c.unlimited || s.Token != token {
			t.Errorf("%s: %+v", c.name, s)
		}
	}
	call, spends, err := DecodeCalldata(token, []byte{0xde, 0xad, 0xbe, 0xef, 1})
	if err != nil || call.Known() || len(spends) != 0 {
		t.Fatalf("unknown selector: %v %v %v", call, spends, err)
	}
}

const permitJSON = `{"types":{"EIP712Domain":[{"name":"name","type":"string"},{"name":"version","type":"string"},{"name":"chainId","type":"uint256"},{"name":"verifyingContract","type":"address"}],
"Permit":[{"name":"owner","type":"address"},{"name":"spender","type":"address"},{"name":"value","type":"uint256"},{"name":"nonce","type":"uint256"},{"name":"deadline","type":"uint256"}]},
"primaryType":"Permit","domain":{"name":"USD Coin","version":"2","chainId":"1","verifyingContract":"0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"},
"message":{"owner":"0x00000000000000000000000000000000000000aa","spender":"0x9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a","value":"115792089237316195423570985008687907853269984665640564039457584007913129639935","nonce":"0","deadline":"1999999999"}}`

const permit2BatchJSON = `{"types":{"EIP712Domain":[{"name":"name","type":"string"},{"name":"chainId","type":"uint256"},{"name":"verifyingContract","type":"address"}],
"PermitDetails":[{"name":"token","type":"address"},{"name":"amount","type":"uint160"},{"name":"expiration","type":"uint48"},{"name":"nonce","type":"uint48"}],
"PermitBatch":[{"name":"details","type":"PermitDetails[]"},{"name":"spender","type":"address"},{"name":"sigDeadline","type":"uint256"}]},
"primaryType":"PermitBatch","domain":{"name":"Permit2","chainId":"1","verifyingContract":"0x000000000022D473030F116dDEE9F6B43aC78BA3"},
"message":{"details":[{"token":"0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48","amount":"1461501637330902918203684832716283019655932542975","expiration":"1999999999","nonce":"0"},{"token":"0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2","amount":"5","expiration":"1999999999","nonce":"0"}],"spender":"0x9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a","sigDeadline":"1999999999"}}`

const permit2TransferJSON = `{"types":{"EIP712Domain":[{"name":"name","type":"string"},{"name":"chainId","type":"uint256"},{"name":"verifyingContract","type":"address"}],
"TokenPermissions":[{"name":"token","type":"address"},{"name":"amount","type":"uint256"}],
"PermitTransferFrom":[{"name":"permitted","type":"TokenPermissions"},{"name":"spender","type":"address"},{"name":"nonce","type":"uint256"},{"name":"deadline","type":"uint256"}]},
"primaryType":"PermitTransferFrom","domain":{"name":"Permit2","chainId":"1","verifyingContract":"0x000000000022D473030F116dDEE9F6B43aC78BA3"},
"message":{"permitted":{"token":"0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48","amount":"1000"},"spender":"0x9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a","nonce":"1","deadline":"1999999999"}}`

func TestTypedDataSpends(t *testing.T) {
	for _, c := range []struct {
		name, js  string
		kinds     []SpendKind
		unlimited []bool
	}{
		{"permit", permitJSON, []SpendKind{SpendPermit}, []bool{true}},
		{"permit2 batch", permit2BatchJSON, []SpendKind{SpendPermit2, SpendPermit2}, []bool{true, false}},
		{"permit2 transfer", permit2TransferJSON, []SpendKind{SpendPermit2Transfer}, []bool{false}},
	} {
		td, err := DecodeTypedDataJSON([]byte(c.js))
		if err != nil {
			t.Fatal(err)
		}
		d, err := DescribeTypedData(td)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if len(d.Spends) != len(c.kinds) || d.ChainID.Int64() != 1 {
			t.Fatalf("%s: %+v", c.name, d)
		}
		for i, s := range d.Spends {
			if s.Kind != c.kinds[i] || s.To != stranger || s.Unlimited != c.unlimited[i] {
				t.Errorf("%s: spend %d: %s", c.name, i, s.Describe())
			}
		}
	}
}

// TestMalformedPermit checks the permit decoder itself: a permit whose
// spender is a valid address but whose value is not an integer is refused
// by typedSpends (the EIP-712 hasher, which would refuse it first, is not
// involved).
func TestMalformedPermit(t *testing.T) {
	td, err := DecodeTypedDataJSON([]byte(permitJSON))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := typedSpends(td, token); err != nil {
		t.Fatalf("well-formed permit refused: %v", err)
	}
	td.Message["value"] = "a lot"
	if _, _, err := typedSpends(td, token); err == nil {
		t.Fatal("permit with a malformed value accepted")
	}
	td.Message["value"] = "1"
	td.Message["spender"] = "nobody"
	if _, _, err := typedSpends(td, token); err == nil {
		t.Fatal("permit with a malformed spender accepted")
	}
}

func TestMoreSpendingCalldata(t *testing.T) {
	// increaseApproval (older OpenZeppelin) is an allowance increase.
	call, spends, err := DecodeCalldata(token, EncodeCall(SelIncreaseApproval, stranger, MaxUint256))
	if err != nil || call.Method != "increaseApproval" || len(spends) != 1 {
		t.Fatalf("increaseApproval: %v %v %v", call, spends, err)
	}
	if s := spends[0]; s.Kind != SpendIncreaseAllowance || s.To != stranger || !s.Unlimited {
		t.Errorf("increaseApproval: %s", s.Describe())
	}
	// Permit2's on-chain approve, only in calls to Permit2.
	data := EncodeCall(SelPermit2Approve, token, stranger, int64(500), int64(1999999999))
	call, spends, err = DecodeCalldata(Permit2Address, data)
	if err != nil || call.Method != "permit2Approve" || len(spends) != 1 {
		t.Fatalf("permit2 approve: %v %v %v", call, spends, err)
	}
	if s := spends[0]; s.Kind != SpendPermit2 || s.Token != token || s.To != stranger || s.Amount.Int64() != 500 || s.Unlimited {
		t.Errorf("permit2 approve: %s", s.Describe())
	}
	if call, spends, err := DecodeCalldata(token, data); err != nil || call.Known() || len(spends) != 0 {
		t.Errorf("permit2 approve decoded on a token: %v %v %v", call, spends, err)
	}
	// An amount wider than uint160 is malformed.
	if _, _, err := DecodeCalldata(Permit2Address, EncodeCall(SelPermit2Approve, token, stranger, MaxUint256, int64(1))); !errors.Is(err, ErrMalformedArgs) {
		t.Errorf("oversized uint160: %v", err)
	}
	// Ether sent with a contract creation is a spend with no recipient.
	d, err := DescribeTransaction(types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(1), Value: big.NewInt(7), Gas: 60000, GasFeeCap: big.NewInt(1), GasTipCap: big.NewInt(1)}))
	if err != nil || len(d.Spends) != 1 || d.Spends[0].Kind != SpendNative || d.Spends[0].To != (common.Address{}) || d.Spends[0].Amount.Int64() != 7 {
		t.Fatalf("creation with value: %+v %v", d, err)
	}
}

const transferWithAuthJSON = `{"types":{"EIP712Domain":[{"name":"name","type":"string"},{"name":"version","type":"string"},{"name":"chainId","type":"uint256"},{"name":"verifyingContract","type":"address"}],
"TransferWithAuthorization":[{"name":"from","type":"address"},{"name":"to","type":"address"},{"name":"value","type":"uint256"},{"name":"validAfter","type":"uint256"},{"name":"validBefore","type":"uint256"},{"name":"nonce","type":"bytes32"}]},
"primaryType":"TransferWithAuthorization","domain":{"name":"USD Coin","version":"2","chainId":"1","verifyingContract":"0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"},
"message":{"from":"0x00000000000000000000000000000000000000aa","to":"0x9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a","value":"1000000","validAfter":"0","validBefore":"1999999999","nonce":"0x0000000000000000000000000000000000000000000000000000000000000001"}}`

func TestTypedDataDecoded(t *testing.T) {
	td, err := DecodeTypedDataJSON([]byte(transferWithAuthJSON))
	if err != nil {
		t.Fatal(err)
	}
	d, err := DescribeTypedData(td)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Decoded || len(d.Spends) != 1 {
		t.Fatalf("%+v", d)
	}
	if s := d.Spends[0]; s.Kind != SpendTransferWithAuthorization || s.Token != token || s.To != stranger || s.Amount.Int64() != 1000000 {
		t.Errorf("spend %s", s.Describe())
	}
	// A type nobody decodes is not "moving nothing": it is not decoded.
	td.PrimaryType = "Sweep"
	td.Types["Sweep"] = td.Types["TransferWithAuthorization"]
	if d, err := DescribeTypedData(td); err != nil || d.Decoded || len(d.Spends) != 0 {
		t.Fatalf("undecoded type: %+v %v", d, err)
	}
	for _, js := range []string{permitJSON, permit2BatchJSON, permit2TransferJSON} {
		td, _ := DecodeTypedDataJSON([]byte(js))
		if d, err := DescribeTypedData(td); err != nil || !d.Decoded {
			t.Errorf("%s: not decoded: %v", td.PrimaryType, err)
		}
	}
}

// TestTypedDataExactShapes checks that a primary type's name alone decides
// nothing: only the exact EIP-712 shapes are decoded.
func TestTypedDataExactShapes(t *testing.T) {
	const cancelJSON = `{"types":{"EIP712Domain":[{"name":"name","type":"string"},{"name":"chainId","type":"uint256"},{"name":"verifyingContract","type":"address"}],
"CancelAuthorization":[{"name":"authorizer","type":"address"},{"name":"nonce","type":"bytes32"}]},
"primaryType":"CancelAuthorization","domain":{"name":"USD Coin","chainId":"1","verifyingContract":"0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"},
"message":{"authorizer":"0x00000000000000000000000000000000000000aa","nonce":"0x0000000000000000000000000000000000000000000000000000000000000001"}}`
	const fakeCancelJSON = `{"types":{"EIP712Domain":[{"name":"name","type":"string"},{"name":"chainId","type":"uint256"},{"name":"verifyingContract","type":"address"}],
"CancelAuthorization":[{"name":"to","type":"address"},{"name":"amount","type":"uint256"}]},
"primaryType":"CancelAuthorization","domain":{"name":"Vault","chainId":"1","verifyingContract":"0x9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a"},
"message":{"to":"0x9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a","amount":"1000000000"}}`
	describe := func(js string) *Typed {
		t.Helper()
		td, err := DecodeTypedDataJSON([]byte(js))
		if err != nil {
			t.Fatal(err)
		}
		d, err := DescribeTypedData(td)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := describe(cancelJSON); !d.Decoded || len(d.Spends) != 0 {
		t.Errorf("EIP-3009 CancelAuthorization: %+v", d)
	}
	if d := describe(fakeCancelJSON); d.Decoded {
		t.Errorf("a struct named CancelAuthorization with other fields is decoded: %+v", d)
	}
	// The same for every decoded shape: an extra, missing or retyped field
	// makes it undecoded.
	for _, c := range []struct{ js, typ, from, to string }{
		{permitJSON, "Permit", `{"name":"deadline","type":"uint256"}`, `{"name":"deadline","type":"uint256"},{"name":"extra","type":"address"}`},
		{transferWithAuthJSON, "TransferWithAuthorization", `{"name":"value","type":"uint256"}`, `{"name":"value","type":"uint128"}`},
		{permit2BatchJSON, "PermitBatch", `{"name":"sigDeadline","type":"uint256"}`, `{"name":"sigDeadline","type":"uint256"},{"name":"hook","type":"address"}`},
		{permit2TransferJSON, "PermitTransferFrom", `{"name":"deadline","type":"uint256"}]`, `{"name":"deadline","type":"uint256"},{"name":"hook","type":"address"}]`},
		{permit2TransferJSON, "TokenPermissions", `{"name":"amount","type":"uint256"}`, `{"name":"amount","type":"uint256"},{"name":"to","type":"address"}`},
	} {
		if d := describe(c.js); !d.Decoded {
			t.Fatalf("%s: exact shape not decoded", c.typ)
		}
		js := strings.Replace(c.js, c.from, c.to, 1)
		if js == c.js {
			t.Fatalf("%s: test did not change the shape", c.typ)
		}
		js = strings.Replace(js, `"deadline":"1999999999"}`, `"deadline":"1999999999","extra":"0x9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a","hook":"0x9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a"}`, 1)
		js = strings.Replace(js, `"sigDeadline":"1999999999"}`, `"sigDeadline":"1999999999","hook":"0x9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a"}`, 1)
		js = strings.Replace(js, `"amount":"1000"}`, `"amount":"1000","to":"0x9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a"}`, 1)
		td, err := DecodeTypedDataJSON([]byte(js))
		if err != nil {
			t.Fatal(err)
		}
		if s, decoded, err := typedSpends(td, token); decoded || len(s) != 0 {
			t.Errorf("%s with another shape: decoded=%v spends=%v err=%v", c.typ, decoded, s, err)
		}
	}
}
