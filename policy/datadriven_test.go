package policy

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/holiman/uint256"
)

// Test-only guardian identity keys, derived from their names.
func guardianKey(name string) *ecdsa.PrivateKey {
	k, err := crypto.ToECDSA(crypto.Keccak256([]byte("custos-test-guardian/" + name)))
	if err != nil {
		panic(err)
	}
	return k
}

var testGuardians = []string{"alice", "bob", "carol", "mallory"} // mallory is never a guardian

// Test-only agent credentials, derived from their names.
func agentKey(name string) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(crypto.Keccak256([]byte("custos-test-agent/" + name)))
}

var testAgents = []string{"bot", "helper", "intruder"}

// aliases name the addresses used in testdata.
var aliases = map[string]common.Address{
	"vendor1":       common.HexToAddress("0x1111111111111111111111111111111111111111"),
	"vendor2":       common.HexToAddress("0x2222222222222222222222222222222222222222"),
	"newshop1":      common.HexToAddress("0x3333333333333333333333333333333333333333"),
	"newshop2":      common.HexToAddress("0x4444444444444444444444444444444444444444"),
	"newshop3":      common.HexToAddress("0x5555555555555555555555555555555555555555"),
	"game":          common.HexToAddress("0x6666666666666666666666666666666666666666"),
	"router":        common.HexToAddress("0x7777777777777777777777777777777777777777"),
	"stranger":      common.HexToAddress("0x9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a"),
	"blocked":       common.HexToAddress("0xbadbadbadbadbadbadbadbadbadbadbadbadbad0"),
	"usdc":          common.HexToAddress("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"),
	"weth":          common.HexToAddress("0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"),
	"safe-delegate": common.HexToAddress("0xde1e000000000000000000000000000000000001"),
	"evil-delegate": common.HexToAddress("0xde1e000000000000000000000000000000000002"),
	"permit2":       chain.Permit2Address,
	"hot":           common.HexToAddress("0xaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
	"vault":         common.HexToAddress("0xbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type ddEnv struct {
	now    time.Time
	eng    *Engine
	ledger *MemLedger
	grants map[string]*SignedGrant
	seq    int
	// freezeIDs are the IDs of freezes named with freeze name=NAME.
	freezeIDs map[string]common.Hash
	snap      State
}

func addr(s string) common.Address {
	if a, ok := aliases[s]; ok {
		return a
	}
	if common.IsHexAddress(s) {
		return common.HexToAddress(s)
	}
	panic(fmt.Sprintf("unknown address %q", s))
}

func (e *ddEnv) expand(s string) string {
	for _, g := range testGuardians {
		s = strings.ReplaceAll(s, "{{"+g+"}}", crypto.PubkeyToAddress(guardianKey(g).PublicKey).Hex())
	}
	for n, a := range aliases {
		s = strings.ReplaceAll(s, "{{"+n+"}}", a.Hex())
	}
	for _, n := range testAgents {
		s = strings.ReplaceAll(s, "{{agent:"+n+"}}", hexutil.Encode(agentKey(n).Public().(ed25519.PublicKey)))
	}
	if e.eng != nil {
		s = strings.ReplaceAll(s, "{{current}}", e.eng.Policy().Hash().Hex())
	}
	return s
}

// wallet is the wallet id a guardian signs for: def, or with wallet=NAME
// another wallet's (to show that signatures do not cross wallets).
func (e *ddEnv) wallet(td *datadriven.TestData, def common.Hash) common.Hash {
	if w := arg(td, "wallet", ""); w != "" {
		return crypto.Keccak256Hash([]byte("custos-test-wallet/" + w))
	}
	return def
}

func arg(td *datadriven.TestData, key, def string) string {
	if a, ok := td.Arg(key); ok {
		return strings.Join(a.Vals, ",")
	}
	return def
}

func list(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// amount reads "0.5ether", "30gwei", "100usdc", "max" or base units.
func amount(s string) *big.Int {
	if s == "max" {
		return new(big.Int).Set(chain.MaxUint256)
	}
	i := strings.IndexFunc(s, func(r rune) bool { return r >= 'a' && r <= 'z' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = s[:i], s[i:]
	}
	dec := map[string]int{"": 0, "wei": 0, "gwei": 9, "ether": 18, "usdc": 6, "weth": 18}[unit]
	v, _, err := parseAmount(num+" x", func(string) (int, bool) { return dec, true })
	if err != nil {
		panic(err)
	}
	return v
}

func (e *ddEnv) offset(s string) time.Time {
	if s == "" {
		return e.now
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return e.now.Add(d)
}

func sign(names []string, f func(*ecdsa.PrivateKey) ([]byte, error)) [][]byte {
	var sigs [][]byte
	for _, n := range names {
		s, err := f(guardianKey(n))
		if err != nil {
			panic(err)
		}
		sigs = append(sigs, s)
	}
	return sigs
}

func (e *ddEnv) buildTx(td *datadriven.TestData, chainID *big.Int) *types.Transaction {
	var to *common.Address
	if s := arg(td, "to", ""); s != "" {
		a := addr(s)
		to = &a
	}
	value := amount(arg(td, "value", "0"))
	var data []byte
	if c := arg(td, "call", ""); c != "" {
		parts := strings.Split(c, ":")
		sel, ok := chain.MethodSelector(parts[0])
		if !ok {
			panic("unknown method " + parts[0])
		}
		var args []any
		for _, p := range parts[1:] {
			if _, isAddr := aliases[p]; isAddr || strings.HasPrefix(p, "0x") {
				args = append(args, addr(p))
			} else {
				args = append(args, amount(p))
			}
		}
		data = chain.EncodeCall(sel, args...)
	}
	if d := arg(td, "data", ""); d != "" {
		data = common.FromHex(d)
	}
	gas, _ := strconv.ParseUint(arg(td, "gas", "60000"), 10, 64)
	fee, tip := amount(arg(td, "fee", "30gwei")), amount(arg(td, "tip", "1gwei"))
	txChain := chainID
	if c := arg(td, "txchain", ""); c != "" {
		txChain, _ = new(big.Int).SetString(c, 10)
	}
	switch arg(td, "type", "dynamic") {
	case "legacy":
		return types.NewTx(&types.LegacyTx{To: to, Value: value, Gas: gas, GasPrice: fee, Data: data})
	case "accesslist":
		return types.NewTx(&types.AccessListTx{ChainID: txChain, To: to, Value: value, Gas: gas, GasPrice: fee, Data: data})
	case "setcode":
		var auths []types.SetCodeAuthorization
		for _, d := range list(arg(td, "auth", "")) {
			a, err := types.SignSetCode(guardianKey("agent-eoa"), types.SetCodeAuthorization{ChainID: *uint256.MustFromBig(txChain), Address: addr(d)})
			if err != nil {
				panic(err)
			}
			auths = append(auths, a)
		}
		return types.NewTx(&types.SetCodeTx{ChainID: uint256.MustFromBig(txChain), To: *to, Value: uint256.MustFromBig(value), Gas: gas,
			GasFeeCap: uint256.MustFromBig(fee), GasTipCap: uint256.MustFromBig(tip), Data: data, AuthList: auths})
	default:
		return types.NewTx(&types.DynamicFeeTx{ChainID: txChain, To: to, Value: value, Gas: gas, GasFeeCap: fee, GasTipCap: tip, Data: data})
	}
}

// request builds a request the way a node would: a real transaction
// encoded to bytes and decoded back, or typed data parsed from JSON.
func (e *ddEnv) request(td *datadriven.TestData) (*Request, error) {
	e.seq++
	chainID, _ := new(big.Int).SetString(arg(td, "chain", "1"), 10)
	req := &Request{
		ID:      ids.RequestID(arg(td, "id", fmt.Sprintf("req-%d", e.seq))),
		Agent:   ids.AgentID(arg(td, "agent", "bot")),
		Key:     addr(arg(td, "key", "hot")),
		ChainID: chainID,
		Time:    e.offset(arg(td, "at", "")),
	}
	switch arg(td, "kind", "tx") {
	case "tx":
		raw, err := e.buildTx(td, chainID).MarshalBinary()
		if err != nil {
			return nil, err
		}
		tx, err := chain.DecodeTransaction(raw)
		if err != nil {
			return nil, err
		}
		if req.Tx, err = chain.DescribeTransaction(tx); err != nil {
			return nil, err
		}
		req.Kind = KindTransaction
	case "typed":
		tdata, err := chain.DecodeTypedDataJSON([]byte(e.expand(td.Input)))
		if err != nil {
			return nil, err
		}
		if req.Typed, err = chain.DescribeTypedData(tdata); err != nil {
			return nil, err
		}
		req.Kind = KindTypedData
	case "personal":
		req.Kind, req.Message = KindPersonalMessage, []byte(td.Input)
	case "raw":
		req.Kind, req.Digest = KindRawDigest, common.HexToHash(arg(td, "digest", "0x1234"))
	}
	if g := arg(td, "grant", ""); g != "" {
		req.Grant = e.grants[g]
	}
	return req, nil
}

func (e *ddEnv) run(t *testing.T, td *datadriven.TestData) (out string) {
	defer func() {
		if r := recover(); r != nil {
			out = fmt.Sprintf("test error: %v\n", r)
		}
	}()
	switch td.Cmd {
	case "policy":
		src := td.Input
		if f := arg(td, "file", ""); f != "" {
			b, err := os.ReadFile(filepath.Join("testdata", "policies", f+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			src = string(b)
		}
		src = e.expand(src)
		d, err := ParseDocument([]byte(src))
		if err != nil {
			return err.Error() + "\n"
		}
		wallet := d.Hash() // a genesis document is its own wallet id
		if td.HasArg("apply") {
			wallet = e.eng.Policy().WalletID()
		}
		wallet = e.wallet(td, wallet)
		sd := SignedDocument{Source: []byte(src), Signatures: sign(list(arg(td, "sign", "")), func(k *ecdsa.PrivateKey) ([]byte, error) { return SignDocument(k, wallet, d) })}
		if td.HasArg("apply") {
			if err := e.eng.ApplyDocument(sd); err != nil {
				return err.Error() + "\n"
			}
		} else {
			// By default the operator pinned the document's own hash;
			// pin=none pins nothing, pin=wrong-hash another document's
			// hash, pin=NAMES a guardian set (with pin-quorum=N its
			// quorum).
			g := Genesis{Hash: d.Hash()}
			switch pin := arg(td, "pin", ""); pin {
			case "":
			case "none":
				g = Genesis{}
			case "wrong-hash":
				g = Genesis{Hash: common.HexToHash("0x5e1f")}
			default:
				g = Genesis{}
				g.Quorum, _ = strconv.Atoi(arg(td, "pin-quorum", "0"))
				for _, n := range list(pin) {
					g.Guardians = append(g.Guardians, crypto.PubkeyToAddress(guardianKey(n).PublicKey))
				}
			}
			p, err := VerifyDocument(sd, g)
			if err != nil {
				return err.Error() + "\n"
			}
			e.ledger = NewMemLedger()
			e.eng = NewEngine(p, e.ledger)
		}
		p := e.eng.Policy()
		return fmt.Sprintf("ok: version %d, %d rules\n", p.Version(), len(p.rules))
	case "eval", "dry-run":
		req, err := e.request(td)
		if err != nil {
			return "decode error: " + err.Error() + "\n"
		}
		var d Decision
		if td.Cmd == "eval" {
			d = e.eng.Authorize(t.Context(), req)
		} else {
			d = e.eng.DryRun(t.Context(), req)
		}
		out = d.Describe() + "\n"
		if td.HasArg("trace") {
			out += d.DescribeTrace()
		}
		return out
	case "commit", "release":
		f := e.eng.Commit
		if td.Cmd == "release" {
			f = e.eng.Release
		}
		if err := f(t.Context(), ids.RequestID(arg(td, "id", ""))); err != nil {
			return err.Error() + "\n"
		}
		return "ok\n"
	case "ledger":
		e.seq++
		asset := AssetNative
		if a := arg(td, "asset", "native"); a != "native" {
			asset = TokenAsset(addr(a))
		}
		b := BudgetBucket(arg(td, "rule", ""), ids.AgentID(arg(td, "agent", "bot")), addr(arg(td, "key", "hot")), asset)
		id := ids.RequestID(fmt.Sprintf("seed-%d", e.seq))
		cnt, _ := strconv.ParseUint(arg(td, "count", "1"), 10, 64)
		if err := e.ledger.Reserve(t.Context(), Reservation{ID: id, Time: e.offset(arg(td, "at", "")), Entries: []Entry{{Bucket: b, Amount: amount(arg(td, "amount", "0")), Count: cnt}}}); err != nil {
			return err.Error() + "\n"
		}
		if err := e.ledger.Commit(t.Context(), id); err != nil {
			return err.Error() + "\n"
		}
		return "ok\n"
	case "usage":
		asset := AssetNative
		if a := arg(td, "asset", "native"); a != "native" {
			asset = TokenAsset(addr(a))
		}
		w, _ := time.ParseDuration(arg(td, "window", "24h"))
		u, _ := e.ledger.Usage(t.Context(), BudgetBucket(arg(td, "rule", ""), ids.AgentID(arg(td, "agent", "bot")), addr(arg(td, "key", "hot")), asset), w, e.now)
		return fmt.Sprintf("amount %s count %d\n", u.Amount, u.Count)
	case "grant":
		g := Grant{
			ID: arg(td, "id", "g1"), Agent: ids.AgentID(arg(td, "agent", "bot")), Key: addr(arg(td, "key", "hot")),
			NotBefore: e.offset(arg(td, "nbf", "-1h")), Expiry: e.offset(arg(td, "exp", "+1h")),
			ValuePerTx: amount(arg(td, "value-tx", "0")), ValueTotal: amount(arg(td, "value-total", "0")),
			AmountPerTx: amount(arg(td, "amount-tx", "0")), AmountTotal: amount(arg(td, "amount-total", "0")),
		}
		g.MaxCount, _ = strconv.ParseUint(arg(td, "max", "10"), 10, 64)
		if c := arg(td, "chain", ""); c != "" {
			g.ChainID, _ = new(big.Int).SetString(c, 10)
		}
		if tk := arg(td, "token", ""); tk != "" {
			g.Token = addr(tk)
		}
		for _, d := range list(arg(td, "dests", "")) {
			g.Destinations = append(g.Destinations, addr(d))
		}
		for _, s := range list(arg(td, "selectors", "")) {
			sel, _ := chain.MethodSelector(s)
			g.Selectors = append(g.Selectors, sel)
		}
		sg, err := SignGrant(guardianKey(arg(td, "signer", "alice")), e.wallet(td, e.eng.Policy().WalletID()), g)
		if err != nil {
			return err.Error() + "\n"
		}
		e.grants[g.ID] = sg
		return "ok\n"
	case "revoke":
		r := Revocation{GrantID: arg(td, "grant", ""), Issued: e.now}
		sig := sign([]string{arg(td, "signer", "alice")}, func(k *ecdsa.PrivateKey) ([]byte, error) {
			return SignTypedData(k, r.TypedData(e.wallet(td, e.eng.Policy().WalletID())))
		})
		if err := e.eng.Revoke(r, sig[0]); err != nil {
			return err.Error() + "\n"
		}
		return "ok\n"
	case "freeze", "unfreeze":
		tg := Target(arg(td, "target", "agent:bot"))
		if k, ok := strings.CutPrefix(string(tg), "key:"); ok {
			tg = KeyTarget(addr(k))
		}
		var err error
		wallet := e.wallet(td, e.eng.Policy().WalletID())
		if td.Cmd == "freeze" {
			f := Freeze{Target: tg, Reason: arg(td, "reason", "suspicious activity"), Issued: e.offset(arg(td, "at", ""))}
			if n := arg(td, "name", ""); n != "" {
				if e.freezeIDs[n], err = f.ID(wallet); err != nil {
					t.Fatal(err)
				}
			}
			sig := sign([]string{arg(td, "signer", "alice")}, func(k *ecdsa.PrivateKey) ([]byte, error) { return SignTypedData(k, f.TypedData(wallet)) })
			err = e.eng.Freeze(f, sig[0], e.now)
		} else {
			// The unfreeze lifts the freeze named by lifts=NAME, or by
			// default the target's current freeze (lifts=none: no freeze).
			u := Unfreeze{Target: tg, Issued: e.offset(arg(td, "at", ""))}
			if n := arg(td, "lifts", ""); n == "none" {
				u.Freeze = common.Hash{}
			} else if n != "" {
				id, ok := e.freezeIDs[n]
				if !ok {
					t.Fatalf("unknown freeze %q", n)
				}
				u.Freeze = id
			} else {
				for _, r := range e.eng.Freezes() {
					if r.Target == tg {
						u.Freeze = r.ID
					}
				}
			}
			err = e.eng.Unfreeze(u, sign(list(arg(td, "signers", "")), func(k *ecdsa.PrivateKey) ([]byte, error) { return SignTypedData(k, u.TypedData(wallet)) }), e.now)
		}
		if err != nil {
			return err.Error() + "\n"
		}
		return "ok\n"
	case "freezes":
		var b strings.Builder
		for _, r := range e.eng.Freezes() {
			fmt.Fprintln(&b, e.eng.Policy().describeFreeze(r))
		}
		return b.String()
	case "restart":
		// A node restart: the ledger's records and the engine's exported
		// state go through a round of persistence into a new engine.
		state, recs := e.eng.Export(), e.ledger.Records()
		p := e.eng.Policy()
		e.ledger = NewMemLedger(recs...)
		e.eng = NewEngine(p, e.ledger)
		e.eng.Restore(state)
		return fmt.Sprintf("restarted: %d freezes, %d revoked grants, %d breaker histories\n", len(state.Freezes), len(state.Revoked), len(state.Breaker))
	case "snapshot":
		// An Export kept aside, to be restored later as an older snapshot.
		e.snap = e.eng.Export()
		return fmt.Sprintf("seq %d: %d freezes, %d revoked grants\n", e.snap.Seq, len(e.snap.Freezes), len(e.snap.Revoked))
	case "restore-snapshot":
		before := e.eng.Export().Seq
		e.eng.Restore(e.snap)
		st := e.eng.Export()
		if st.Seq <= before || st.Seq <= e.snap.Seq {
			t.Fatalf("seq %d after restoring seq %d into seq %d", st.Seq, e.snap.Seq, before)
		}
		return fmt.Sprintf("seq %d: %d freezes, %d revoked grants\n", st.Seq, len(st.Freezes), len(st.Revoked))
	case "tick":
		d, err := time.ParseDuration(td.CmdArgs[0].Key)
		if err != nil {
			t.Fatal(err)
		}
		e.now = e.now.Add(d)
		return "now " + e.now.Format(time.RFC3339) + "\n"
	}
	t.Fatalf("unknown command %q", td.Cmd)
	return ""
}

func TestDataDriven(t *testing.T) {
	datadriven.Walk(t, filepath.Join("testdata", "cases"), func(t *testing.T, path string) {
		e := &ddEnv{now: t0, grants: map[string]*SignedGrant{}, freezeIDs: map[string]common.Hash{}}
		datadriven.RunTest(t, path, func(t *testing.T, td *datadriven.TestData) string { return e.run(t, td) })
	})
}
