package admin

import (
	"math/big"
	"strings"
	"testing"

	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/policy"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
)

var usdc = common.HexToAddress("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48")

func usdcPolicy(t *testing.T) *policy.Policy {
	t.Helper()
	p, err := policy.ParseAndCompile([]byte(`version: 1
guardians: {alice: "0xA11ce0000000000000000000000000000000a11c"}
quorum: 1
tiers: [{name: hot, signers: [agent, policy]}]
tokens:
  USDC: {address: "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", decimals: 6}
rules: [{id: r, when: {chain: 1}, tier: hot}]
`))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func parseTx(t *testing.T, to common.Address, value *big.Int, data []byte) *chain.Payload {
	t.Helper()
	raw, err := types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(1), To: &to, Value: value, Gas: 60000,
		GasFeeCap: big.NewInt(1e9), GasTipCap: big.NewInt(1), Data: data}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	p, err := chain.ParseTransaction(big.NewInt(1), raw)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func transferData(to common.Address, amount *big.Int) []byte {
	d := append([]byte{0xa9, 0x05, 0x9c, 0xbb}, common.LeftPadBytes(to.Bytes(), 32)...)
	return append(d, common.LeftPadBytes(amount.Bytes(), 32)...)
}

func TestDescribePayload(t *testing.T) {
	pol := usdcPolicy(t)
	vendor := common.HexToAddress("0x1111111111111111111111111111111111111111")

	t.Run("ether", func(t *testing.T) {
		v, _ := new(big.Int).SetString("250000000000000000", 10)
		d := DescribePayload(pol, parseTx(t, vendor, v, nil))
		if d.ChainID != 1 || d.Kind != "transaction" || *d.To != vendor || d.Value != "250000000000000000" || d.ValueEther != "0.25" || d.Method != "" || len(d.Tokens) != 0 {
			t.Fatalf("%+v", d)
		}
		if d.Digest == (common.Hash{}) || d.Summary == "" {
			t.Fatalf("no digest or summary: %+v", d)
		}
	})
	t.Run("a token the policy declares", func(t *testing.T) {
		d := DescribePayload(pol, parseTx(t, usdc, new(big.Int), transferData(vendor, big.NewInt(1_234_500))))
		if d.Method != "transfer" || d.Selector != "0xa9059cbb" || len(d.Tokens) != 1 {
			t.Fatalf("%+v", d)
		}
		m := d.Tokens[0]
		if m.Symbol != "USDC" || m.Amount != "1.2345" || m.Raw != "1234500" || m.Kind != "transfer" || *m.Recipient != vendor {
			t.Fatalf("%+v", m)
		}
	})
	t.Run("a token it does not", func(t *testing.T) {
		other := common.HexToAddress("0x3333333333333333333333333333333333333333")
		d := DescribePayload(pol, parseTx(t, other, new(big.Int), transferData(vendor, big.NewInt(7))))
		if len(d.Tokens) != 1 || d.Tokens[0].Symbol != "" || d.Tokens[0].Amount != "" || d.Tokens[0].Raw != "7" || d.Tokens[0].Token != other {
			t.Fatalf("%+v", d.Tokens)
		}
	})
	t.Run("unknown calldata", func(t *testing.T) {
		d := DescribePayload(pol, parseTx(t, vendor, new(big.Int), []byte{0xde, 0xad, 0xbe, 0xef, 1}))
		if d.Selector != "0xdeadbeef" || d.Method != "" {
			t.Fatalf("%+v", d)
		}
	})
	t.Run("a permit", func(t *testing.T) {
		js := `{"types":{"EIP712Domain":[{"name":"name","type":"string"},{"name":"version","type":"string"},{"name":"chainId","type":"uint256"},{"name":"verifyingContract","type":"address"}],
"Permit":[{"name":"owner","type":"address"},{"name":"spender","type":"address"},{"name":"value","type":"uint256"},{"name":"nonce","type":"uint256"},{"name":"deadline","type":"uint256"}]},
"primaryType":"Permit","domain":{"name":"USD Coin","version":"2","chainId":"1","verifyingContract":"0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"},
"message":{"owner":"0x00000000000000000000000000000000000000aa","spender":"0x9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a","value":"115792089237316195423570985008687907853269984665640564039457584007913129639935","nonce":"0","deadline":"1999999999"}}`
		p, err := chain.ParseTypedData(big.NewInt(1), []byte(js))
		if err != nil {
			t.Fatal(err)
		}
		d := DescribePayload(pol, p)
		if d.Kind != "typed_data" || d.Method != "Permit" || *d.To != usdc || d.Value != "" || len(d.Tokens) != 1 {
			t.Fatalf("%+v", d)
		}
		if m := d.Tokens[0]; m.Symbol != "USDC" || m.Amount != "unlimited" || m.Kind != "permit" {
			t.Fatalf("%+v", m)
		}
	})
	t.Run("a personal message", func(t *testing.T) {
		p, err := chain.ParsePersonalMessage(big.NewInt(1), []byte("hello"))
		if err != nil {
			t.Fatal(err)
		}
		d := DescribePayload(nil, p)
		if d.Kind != "personal_message" || d.To != nil || d.Value != "" || !strings.Contains(d.Summary, "hello") {
			t.Fatalf("%+v", d)
		}
	})
}

func TestCheckPending(t *testing.T) {
	pol := usdcPolicy(t)
	vendor := common.HexToAddress("0x1111111111111111111111111111111111111111")
	honest := DescribePayload(pol, parseTx(t, usdc, new(big.Int), transferData(vendor, big.NewInt(5_000_000))))
	honest.Tier, honest.RuleID = "guarded", "r"
	if err := CheckPending(&honest); err != nil {
		t.Fatalf("honest description: %v", err)
	}
	other := common.HexToAddress("0x9999999999999999999999999999999999999999")
	for name, c := range map[string]struct {
		edit func(p *PendingRequest)
		want string
	}{
		"digest":    {func(p *PendingRequest) { p.Digest = common.Hash{1} }, "digest"},
		"recipient": {func(p *PendingRequest) { p.Tokens[0].Recipient = &other }, "token movement 1"},
		"amount":    {func(p *PendingRequest) { p.Tokens[0].Raw = "5" }, "token movement 1"},
		"no token":  {func(p *PendingRequest) { p.Tokens = nil }, "shows 0, the bytes make 1"},
		"to":        {func(p *PendingRequest) { p.To = &other }, "to:"},
		"summary":   {func(p *PendingRequest) { p.Summary = "a small payment" }, "summary"},
		"chain":     {func(p *PendingRequest) { p.ChainID = 5 }, "chain"},
		"bytes":     {func(p *PendingRequest) { p.Payload = p.Payload[:len(p.Payload)-1] }, "do not decode"},
		"kind":      {func(p *PendingRequest) { p.Kind = "raw" }, "unknown payload kind"},
		"none":      {func(p *PendingRequest) { p.Payload = nil }, "no payload bytes"},
	} {
		p := honest
		p.Tokens = append([]TokenMove(nil), honest.Tokens...)
		c.edit(&p)
		if err := CheckPending(&p); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error naming %q", name, err, c.want)
		}
	}
}
