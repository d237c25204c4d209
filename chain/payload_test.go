package chain

import (
	"bytes"
	"crypto/ecdsa"
	"errors"
	"math/big"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
	"github.com/holiman/uint256"
)

var chain1 = big.NewInt(1)

func testKey(t testing.TB) (*ecdsa.PrivateKey, common.Address) {
	t.Helper()
	key, err := crypto.HexToECDSA("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
	if err != nil {
		t.Fatal(err)
	}
	return key, crypto.PubkeyToAddress(key.PublicKey)
}

func mustBinary(t testing.TB, tx *types.Transaction) []byte {
	t.Helper()
	raw, err := tx.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// unsignedTxs are one unsigned transaction of every type the payload
// accepts, with the go-ethereum signer of the fork that introduced the
// type: the reference the payload's digest must match.
func unsignedTxs(t testing.TB) map[string]struct {
	tx     *types.Transaction
	signer types.Signer
} {
	t.Helper()
	data := EncodeCall(SelTransfer, stranger, big.NewInt(150))
	al := types.AccessList{{Address: token, StorageKeys: []common.Hash{{1}}}}
	delegate := common.HexToAddress("0xde1e000000000000000000000000000000000001")
	authKey, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	auth, err := types.SignSetCode(authKey, types.SetCodeAuthorization{ChainID: *uint256.NewInt(1), Address: delegate, Nonce: 0})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]struct {
		tx     *types.Transaction
		signer types.Signer
	}{
		"legacy": {types.NewTx(&types.LegacyTx{Nonce: 4, To: &token, Gas: 60000, GasPrice: big.NewInt(7), Data: data}), types.NewEIP155Signer(chain1)},
		"access-list": {types.NewTx(&types.AccessListTx{ChainID: chain1, Nonce: 5, To: &token, Gas: 60000, GasPrice: big.NewInt(7), Data: data, AccessList: al}),
			types.NewEIP2930Signer(chain1)},
		"dynamic-fee": {types.NewTx(&types.DynamicFeeTx{ChainID: chain1, Nonce: 6, To: &vendor, Value: big.NewInt(1e15), Gas: 21000, GasFeeCap: big.NewInt(30e9), GasTipCap: big.NewInt(1e9)}),
			types.NewLondonSigner(chain1)},
		"set-code": {types.NewTx(&types.SetCodeTx{ChainID: uint256.NewInt(1), Nonce: 7, To: vendor, Gas: 80000, GasFeeCap: uint256.NewInt(2), GasTipCap: uint256.NewInt(1),
			Value: uint256.NewInt(0), AuthList: []types.SetCodeAuthorization{auth}}), types.NewPragueSigner(chain1)},
	}
}

func TestTransactionDigestAndAssemblyMatchGoEthereum(t *testing.T) {
	key, addr := testKey(t)
	for name, c := range unsignedTxs(t) {
		raw := mustBinary(t, c.tx)
		p, err := ParseTransaction(chain1, raw)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := c.signer.Hash(c.tx)
		if p.Digest() != want {
			t.Fatalf("%s: digest %x, go-ethereum's signer says %x", name, p.Digest(), want)
		}
		if p.Kind() != KindTransaction || !bytes.Equal(p.Bytes(), raw) || p.ChainID().Int64() != 1 || p.Transaction().Hash() != c.tx.Hash() {
			t.Fatalf("%s: payload does not hold what it parsed", name)
		}
		if v := p.Tx(); v.ChainID.Int64() != 1 || v.Type != c.tx.Type() {
			t.Fatalf("%s: view %+v", name, v)
		}
		d := p.Digest()
		sig, err := crypto.Sign(d[:], key)
		if err != nil {
			t.Fatal(err)
		}
		signed, err := p.SignedTransaction(sig, addr)
		if err != nil {
			t.Fatalf("%s: assemble: %v", name, err)
		}
		from, err := types.Sender(types.LatestSignerForChainID(chain1), signed)
		if err != nil || from != addr {
			t.Fatalf("%s: go-ethereum recovers %s (%v), want %s", name, from.Hex(), err, addr.Hex())
		}
		ref, err := types.SignTx(c.tx, c.signer, key)
		if err != nil {
			t.Fatal(err)
		}
		if signed.Hash() != ref.Hash() {
			t.Fatalf("%s: assembled %s, go-ethereum's SignTx gives %s", name, signed.Hash().Hex(), ref.Hash().Hex())
		}
		if name == "legacy" && !signed.Protected() {
			t.Fatal("assembled legacy transaction is not EIP-155 protected")
		}
	}
}

func TestPersonalMessageDigest(t *testing.T) {
	key, addr := testKey(t)
	msg := []byte("Sign in to example.org\nnonce: 42")
	p, err := ParsePersonalMessage(chain1, msg)
	if err != nil {
		t.Fatal(err)
	}
	if d := p.Digest(); !bytes.Equal(d[:], accounts.TextHash(msg)) {
		t.Fatalf("digest %x, accounts.TextHash %x", d, accounts.TextHash(msg))
	}
	if !bytes.Equal(p.Message(), msg) || p.Kind() != KindPersonalMessage || p.Tx() != nil || p.Transaction() != nil {
		t.Fatal("payload does not hold the message")
	}
	d := p.Digest()
	sig, _ := crypto.Sign(d[:], key)
	eth, err := p.EthSignature(sig, addr)
	if err != nil {
		t.Fatal(err)
	}
	if eth[64] != 27 && eth[64] != 28 {
		t.Fatalf("V %d, want 27 or 28", eth[64])
	}
	if _, err := p.SignedTransaction(sig, addr); !errors.Is(err, ErrNotTransaction) {
		t.Fatalf("assembled a transaction from a message: %v", err)
	}
	if _, err := ParsePersonalMessage(chain1, make([]byte, MaxMessageSize+1)); !errors.Is(err, ErrPayloadTooLarge) {
		t.Fatalf("oversize message: %v", err)
	}
}

func TestTypedDataDigest(t *testing.T) {
	key, addr := testKey(t)
	for name, js := range map[string]string{"permit": permitJSON, "permit2 batch": permit2BatchJSON} {
		p, err := ParseTypedData(chain1, []byte(js))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		td, err := DecodeTypedDataJSON([]byte(js))
		if err != nil {
			t.Fatal(err)
		}
		want, _, err := apitypes.TypedDataAndHash(td)
		if err != nil {
			t.Fatal(err)
		}
		if d := p.Digest(); !bytes.Equal(d[:], want) {
			t.Fatalf("%s: digest %x, apitypes.TypedDataAndHash %x", name, d, want)
		}
		if p.Typed().Digest != p.Digest() || !p.Typed().Decoded || !bytes.Equal(p.Bytes(), []byte(js)) {
			t.Fatalf("%s: view %+v", name, p.Typed())
		}
		back, ok := p.TypedData()
		if !ok || back.PrimaryType != td.PrimaryType {
			t.Fatalf("%s: typed data %v %v", name, ok, back.PrimaryType)
		}
		d := p.Digest()
		sig, _ := crypto.Sign(d[:], key)
		if _, err := p.EthSignature(sig, addr); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// A large integer written as a JSON number is hashed exactly, as if it
// were written as a decimal string; a plain decode rounds it to float64.
func TestTypedDataNumbersExact(t *testing.T) {
	const v = "1000000000000000001"
	asString := strings.Replace(permitJSON, `"value":"115792089237316195423570985008687907853269984665640564039457584007913129639935"`, `"value":"`+v+`"`, 1)
	asNumber := strings.Replace(permitJSON, `"value":"115792089237316195423570985008687907853269984665640564039457584007913129639935"`, `"value":`+v, 1)
	if asString == permitJSON || asNumber == permitJSON {
		t.Fatal("fixture changed")
	}
	ps, err := ParseTypedData(chain1, []byte(asString))
	if err != nil {
		t.Fatal(err)
	}
	pn, err := ParseTypedData(chain1, []byte(asNumber))
	if err != nil {
		t.Fatal(err)
	}
	if ps.Digest() != pn.Digest() {
		t.Fatal("a JSON number is hashed differently from the same integer as a string")
	}
	if got := pn.Typed().Spends[0].Amount.String(); got != v {
		t.Fatalf("policy sees amount %s, want %s", got, v)
	}
	frac := strings.Replace(permitJSON, `"nonce":"0"`, `"nonce":1.5`, 1)
	if _, err := ParseTypedData(chain1, []byte(frac)); !errors.Is(err, ErrMalformedPayload) {
		t.Fatalf("fractional number: %v", err)
	}
}

func TestParseTransactionRefuses(t *testing.T) {
	key, _ := testKey(t)
	txs := unsignedTxs(t)
	dyn := mustBinary(t, txs["dynamic-fee"].tx)
	legacy := mustBinary(t, txs["legacy"].tx)
	signed, err := types.SignTx(txs["dynamic-fee"].tx, types.NewLondonSigner(chain1), key)
	if err != nil {
		t.Fatal(err)
	}
	blob := types.NewTx(&types.BlobTx{ChainID: uint256.NewInt(1), GasTipCap: uint256.NewInt(1), GasFeeCap: uint256.NewInt(1), BlobFeeCap: uint256.NewInt(1), Value: uint256.NewInt(0)})
	huge := types.NewTx(&types.DynamicFeeTx{ChainID: chain1, To: &vendor, Gas: 21000, GasFeeCap: common.Big1, GasTipCap: common.Big1, Data: make([]byte, MaxTransactionSize)})
	tipAbove := types.NewTx(&types.DynamicFeeTx{ChainID: chain1, To: &vendor, Gas: 21000, GasFeeCap: common.Big1, GasTipCap: common.Big2})
	noAuth := types.NewTx(&types.SetCodeTx{ChainID: uint256.NewInt(1), To: vendor, Gas: 80000, GasFeeCap: uint256.NewInt(2), GasTipCap: uint256.NewInt(1), Value: uint256.NewInt(0)})
	cases := []struct {
		name    string
		chainID *big.Int
		raw     []byte
		err     error
	}{
		{"malformed rlp", chain1, []byte{0xc0 + 5, 1, 2}, ErrMalformedPayload},
		{"truncated", chain1, dyn[:len(dyn)-3], ErrMalformedPayload},
		{"empty", chain1, nil, ErrMalformedPayload},
		{"trailing byte typed", chain1, append(bytes.Clone(dyn), 0), ErrMalformedPayload},
		{"trailing byte legacy", chain1, append(bytes.Clone(legacy), 0x80), ErrMalformedPayload},
		{"unknown type", chain1, append([]byte{0x7f}, dyn[1:]...), ErrMalformedPayload},
		{"wrong chain id", big.NewInt(5), dyn, ErrChainID},
		{"no chain id", nil, dyn, ErrChainID},
		{"zero chain id", new(big.Int), legacy, ErrChainID},
		{"negative chain id", big.NewInt(-1), legacy, ErrChainID},
		{"huge chain id", new(big.Int).Lsh(common.Big1, 64), legacy, ErrChainID},
		{"signed", chain1, mustBinary(t, signed), ErrSignedTx},
		{"blob", chain1, mustBinary(t, blob), ErrBlobTx},
		{"oversize", chain1, mustBinary(t, huge), ErrPayloadTooLarge},
		{"tip above fee cap", chain1, mustBinary(t, tipAbove), ErrMalformedPayload},
		{"set-code without authorizations", chain1, mustBinary(t, noAuth), ErrMalformedPayload},
		{"bad calldata", chain1, mustBinary(t, types.NewTx(&types.DynamicFeeTx{ChainID: chain1, To: &token, Gas: 1, GasFeeCap: common.Big1, GasTipCap: common.Big1,
			Data: EncodeCall(SelTransfer, vendor)})), ErrMalformedArgs},
	}
	for _, c := range cases {
		p, err := ParseTransaction(c.chainID, c.raw)
		if !errors.Is(err, c.err) {
			t.Errorf("%s: got %v (%v), want %v", c.name, err, p, c.err)
			continue
		}
		t.Logf("%s: %v", c.name, err)
	}
}

func TestParseTypedDataRefuses(t *testing.T) {
	cases := []struct {
		name, js string
		err      error
	}{
		{"other chain", strings.Replace(permitJSON, `"chainId":"1"`, `"chainId":"5"`, 1), ErrChainID},
		{"unknown domain field", strings.Replace(permitJSON, `"version":"2",`, `"version":"2","extra":"x",`, 1), ErrMalformedPayload},
		{"unknown top field", strings.Replace(permitJSON, `"primaryType"`, `"extra":1,"primaryType"`, 1), ErrMalformedPayload},
		{"trailing data", permitJSON + `{}`, ErrMalformedPayload},
		{"trailing garbage", permitJSON + `]`, ErrMalformedPayload},
		{"malformed", permitJSON[:100], ErrMalformedPayload},
		{"undeclared message field", strings.Replace(permitJSON, `"nonce":"0"`, `"nonce":"0","x":"1"`, 1), ErrMalformedPayload},
		{"oversize", permitJSON + strings.Repeat(" ", MaxTypedDataSize), ErrPayloadTooLarge},
	}
	for _, c := range cases {
		if c.js == permitJSON {
			t.Fatalf("%s: fixture changed", c.name)
		}
		_, err := ParseTypedData(chain1, []byte(c.js))
		if !errors.Is(err, c.err) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.err)
			continue
		}
		t.Logf("%s: %v", c.name, err)
	}
	// A domain without a chain id is valid on every chain; the policy
	// decides on it.
	noChain := `{"types":{"EIP712Domain":[{"name":"name","type":"string"}],"Hello":[{"name":"who","type":"string"}]},"primaryType":"Hello","domain":{"name":"x"},"message":{"who":"me"}}`
	p, err := ParseTypedData(big.NewInt(10), []byte(noChain))
	if err != nil || p.Typed().ChainID != nil || p.Typed().Decoded {
		t.Fatalf("no chain id: %v %+v", err, p)
	}
	if !strings.Contains(p.Describe(), "valid on every chain") {
		t.Fatalf("describe hides the missing chain id: %s", p.Describe())
	}
}

func TestVerifySignatureRefuses(t *testing.T) {
	key, addr := testKey(t)
	p, err := ParseTransaction(chain1, mustBinary(t, unsignedTxs(t)["dynamic-fee"].tx))
	if err != nil {
		t.Fatal(err)
	}
	d := p.Digest()
	sig, _ := crypto.Sign(d[:], key)
	if err := p.Verify(sig, addr); err != nil {
		t.Fatal(err)
	}
	// The same signature with S replaced by n-S (and V flipped) is valid
	// ECDSA for the same key, but malleable: refused.
	high := bytes.Clone(sig)
	s := new(big.Int).SetBytes(sig[32:64])
	new(big.Int).Sub(secp256k1N, s).FillBytes(high[32:64])
	high[64] ^= 1
	if pub, err := crypto.SigToPub(d[:], high); err != nil || crypto.PubkeyToAddress(*pub) != addr {
		t.Fatalf("high-S fixture does not recover to the key: %v", err)
	}
	other, _ := ParsePersonalMessage(chain1, []byte("something else"))
	od := other.Digest()
	otherSig, _ := crypto.Sign(od[:], key)
	zeroR := bytes.Clone(sig)
	clear(zeroR[:32])
	sN := bytes.Clone(sig)
	secp256k1N.FillBytes(sN[32:64])
	v27 := bytes.Clone(sig)
	v27[64] += 27
	cases := []struct {
		name string
		sig  []byte
		err  error
	}{
		{"high S", high, ErrHighS},
		{"another digest", otherSig, ErrWrongSigner},
		{"short", sig[:64], ErrSignatureLength},
		{"V 27", v27, ErrRecoveryID},
		{"zero R", zeroR, ErrInvalidSignature},
		{"S = n", sN, ErrInvalidSignature},
	}
	for _, c := range cases {
		if err := p.Verify(c.sig, addr); !errors.Is(err, c.err) {
			t.Errorf("%s: verify: got %v, want %v", c.name, err, c.err)
		}
		if _, err := p.SignedTransaction(c.sig, addr); !errors.Is(err, c.err) {
			t.Errorf("%s: assemble: got %v, want %v", c.name, err, c.err)
		} else {
			t.Logf("%s: %v", c.name, err)
		}
	}
	if _, err := p.SignedTransaction(sig, vendor); !errors.Is(err, ErrWrongSigner) {
		t.Fatalf("assembled for another sender: %v", err)
	}
}

func TestPayloadJSONRoundTrip(t *testing.T) {
	var ps []*Payload
	for _, c := range unsignedTxs(t) {
		p, err := ParseTransaction(chain1, mustBinary(t, c.tx))
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	td, err := ParseTypedData(chain1, []byte(permitJSON))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := ParsePersonalMessage(big.NewInt(8453), []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	ps = append(ps, td, msg)
	for _, p := range ps {
		b, err := p.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParsePayloadJSON(b)
		if err != nil {
			t.Fatalf("%s: %v\n%s", p.Kind(), err, b)
		}
		if back.Kind() != p.Kind() || back.Digest() != p.Digest() || !bytes.Equal(back.Bytes(), p.Bytes()) || back.ChainID().Cmp(p.ChainID()) != 0 {
			t.Fatalf("%s: round trip changed the payload", p.Kind())
		}
		if back.Describe() != p.Describe() {
			t.Fatalf("%s: describe differs after a round trip", p.Kind())
		}
	}
	good, _ := msg.MarshalJSON()
	if string(good) != `{"kind":"personal_message","chain_id":"8453","data":"0x68656c6c6f"}` {
		t.Fatalf("canonical form changed: %s", good)
	}
	cases := []struct {
		name, js string
		err      error
	}{
		{"unknown field", `{"kind":"personal_message","chain_id":"8453","data":"0x68656c6c6f","x":1}`, ErrMalformedPayload},
		{"whitespace", `{"kind": "personal_message","chain_id":"8453","data":"0x68656c6c6f"}`, ErrNotCanonical},
		{"field order", `{"chain_id":"8453","kind":"personal_message","data":"0x68656c6c6f"}`, ErrNotCanonical},
		{"upper-case hex", `{"kind":"personal_message","chain_id":"8453","data":"0x68656C6C6F"}`, ErrNotCanonical},
		{"duplicate field", `{"kind":"personal_message","chain_id":"8453","data":"0x68656c6c6f","data":"0x68"}`, ErrNotCanonical},
		{"trailing", `{"kind":"personal_message","chain_id":"8453","data":"0x68656c6c6f"}{}`, ErrNotCanonical},
		{"leading zero chain id", `{"kind":"personal_message","chain_id":"08453","data":"0x68656c6c6f"}`, ErrNotCanonical},
		{"signed chain id", `{"kind":"personal_message","chain_id":"+8453","data":"0x68656c6c6f"}`, ErrMalformedPayload},
		{"zero chain id", `{"kind":"personal_message","chain_id":"0","data":"0x68656c6c6f"}`, ErrChainID},
		{"chain id number", `{"kind":"personal_message","chain_id":8453,"data":"0x68656c6c6f"}`, ErrMalformedPayload},
		{"unknown kind", `{"kind":"raw_digest","chain_id":"8453","data":"0x68656c6c6f"}`, ErrMalformedPayload},
		{"odd hex", `{"kind":"personal_message","chain_id":"8453","data":"0x68656c6c6"}`, ErrMalformedPayload},
		{"bad transaction", `{"kind":"transaction","chain_id":"1","data":"0x02c0"}`, ErrMalformedPayload},
		{"oversize", `{"kind":"personal_message","chain_id":"8453","data":"0x` + strings.Repeat("00", MaxPayloadJSONSize/2) + `"}`, ErrPayloadTooLarge},
		{"oversize message", `{"kind":"personal_message","chain_id":"8453","data":"0x` + strings.Repeat("00", MaxMessageSize+1) + `"}`, ErrPayloadTooLarge},
		{"not an object", `[]`, ErrMalformedPayload},
		// Refused on its length, before it is decoded.
		{"oversize padding", `{"kind":"personal_message","chain_id":"8453","data":"0x68656c6c6f"}` + strings.Repeat(" ", MaxPayloadJSONSize), ErrPayloadTooLarge},
	}
	for _, c := range cases {
		_, err := ParsePayloadJSON([]byte(c.js))
		if !errors.Is(err, c.err) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.err)
		}
	}
	var empty Payload
	if _, err := empty.MarshalJSON(); err == nil {
		t.Fatal("empty payload encoded")
	}
}

func TestDescribe(t *testing.T) {
	p, err := ParseTransaction(chain1, mustBinary(t, unsignedTxs(t)["legacy"].tx))
	if err != nil {
		t.Fatal(err)
	}
	want := "transaction on chain 1: legacy nonce 4 to 0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48 value 0 wei calling transfer(to=" + stranger.Hex() + ", amount=150) gas 60000 fee cap 7 digest " + common.Hash(p.Digest()).Hex()
	if got := p.Describe(); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	sc, _ := ParseTransaction(chain1, mustBinary(t, unsignedTxs(t)["set-code"].tx))
	if d := sc.Describe(); !strings.Contains(d, "set-code nonce 7") || !strings.Contains(d, "delegating to 0xDe1e000000000000000000000000000000000001 (chain 1, nonce 0)") || !strings.Contains(d, "tip 1") {
		t.Fatalf("set-code: %s", d)
	}
	td, _ := ParseTypedData(chain1, []byte(permitJSON))
	if d := td.Describe(); !strings.HasPrefix(d, `typed_data on chain 1: Permit in domain "USD Coin" version "2" contract 0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48; permit unlimited of token`) {
		t.Fatalf("typed data: %s", d)
	}
	for msg, want := range map[string]string{
		"hello":                 `personal_message on chain 1: 5 bytes "hello" digest`,
		"\x00\x01":              `personal_message on chain 1: 2 bytes 0x0001 digest`,
		strings.Repeat("é", 40): `personal_message on chain 1: 80 bytes "` + strings.Repeat("é", 32) + `"... digest`,
	} {
		p, _ := ParsePersonalMessage(chain1, []byte(msg))
		if d := p.Describe(); !strings.HasPrefix(d, want) {
			t.Errorf("message %q: %s", msg, d)
		}
	}
}

// The views handed to the policy are copies: changing one changes neither
// the payload nor what is signed.
func TestViewsAreCopies(t *testing.T) {
	p, err := ParseTransaction(chain1, mustBinary(t, unsignedTxs(t)["legacy"].tx))
	if err != nil {
		t.Fatal(err)
	}
	v := p.Tx()
	v.Value.SetInt64(99)
	v.Spends[0].Amount.SetInt64(99)
	v.Call.Args[1].Int.SetInt64(99)
	v.Data[0] = 0
	if w := p.Tx(); w.Value.Sign() != 0 || w.Spends[0].Amount.Int64() != 150 || w.Call.Args[1].Int.Int64() != 150 || w.Data[0] != SelTransfer[0] {
		t.Fatal("a change to the view reached the payload")
	}
	b := p.Bytes()
	b[0] ^= 0xff
	if bytes.Equal(p.Bytes(), b) {
		t.Fatal("Bytes shares the payload's buffer")
	}
	td, _ := ParseTypedData(chain1, []byte(permitJSON))
	x := td.Typed()
	x.Spends[0].Amount.SetInt64(1)
	if td.Typed().Spends[0].Amount.Cmp(MaxUint256) != 0 {
		t.Fatal("a change to the typed view reached the payload")
	}
	m, _ := td.TypedData()
	m.Message["spender"] = vendor.Hex()
	if again, _ := td.TypedData(); again.Message["spender"] == vendor.Hex() {
		t.Fatal("a change to the typed data reached the payload")
	}
}

// Typed data is also read by wallets and dapps, whose JSON parsers keep
// the first of two equal keys or match names exactly; encoding/json keeps
// the last and folds case. Bytes that two parsers read differently are
// refused.
func TestParseTypedDataOneMeaning(t *testing.T) {
	if _, err := ParseTypedData(chain1, []byte(permitJSON)); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct{ from, to, mention string }{
		"duplicate value":   {`"value":"1157`, `"value":"1","value":"1157`, `"message"."value" appears twice`},
		"duplicate primary": {`"primaryType":"Permit"`, `"primaryType":"Mail","primaryType":"Permit"`, `"primaryType" appears twice`},
		"folded primary":    {`"primaryType"`, `"PrimaryType"`, `spelled "primaryType"`},
		"folded chain id":   {`"chainId":"1"`, `"ChainID":"1"`, `"domain"."ChainID" (the field is spelled "chainId")`},
		"duplicate type":    {`{"name":"owner","type":"address"}`, `{"name":"owner","type":"uint256","type":"address"}`, `"type" appears twice`},
		"folded type entry": {`{"name":"owner","type":"address"}`, `{"Name":"owner","type":"address"}`, `spelled "name"`},
	} {
		raw := strings.Replace(permitJSON, c.from, c.to, 1)
		if raw == permitJSON {
			t.Fatalf("%s: replacement did not apply", name)
		}
		_, err := ParseTypedData(chain1, []byte(raw))
		if !errors.Is(err, ErrMalformedPayload) || !strings.Contains(err.Error(), c.mention) {
			t.Errorf("%s: %v, want ErrMalformedPayload mentioning %q", name, err, c.mention)
		}
	}
}
