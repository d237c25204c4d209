package sidecar_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
)

// gethBinary is go-ethereum's geth, from $CUSTOS_GETH or the PATH. CI
// installs it from the module proxy at the version in go.mod:
//
//	GOBIN=$CACHE go install github.com/ethereum/go-ethereum/cmd/geth@$(go list -m -f '{{.Version}}' github.com/ethereum/go-ethereum)
func gethBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CUSTOS_GETH"); p != "" {
		return p
	}
	p, err := exec.LookPath("geth")
	if err != nil {
		t.Skip("geth is not installed (set CUSTOS_GETH): the console test needs a client no one here wrote")
	}
	return p
}

// A real client no one here wrote: geth's JavaScript console, attached to
// the endpoint, reads the accounts and sends a transaction, which the
// cluster signs and the chain mines.
func TestGethAttach(t *testing.T) {
	geth := gethBinary(t)
	w := setup(t)
	srv := w.endpoint(t, w.wallet(t, 30*time.Second, w.hot))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	attach := func(js string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, geth, "attach", "--exec", js, srv.URL()).CombinedOutput()
		if err != nil {
			t.Fatalf("geth attach --exec %q: %v\n%s", js, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	accts := attach("eth.accounts")
	if !strings.Contains(strings.ToLower(accts), strings.ToLower(w.hot.Address.Hex())) {
		t.Fatalf("eth.accounts in geth: %s, want %s", accts, w.hot.Address.Hex())
	}
	out := attach(`eth.sendTransaction({from: eth.accounts[0], to: "` + vendor1.Hex() + `", value: web3.toWei(0.001, "ether")})`)
	h := common.HexToHash(strings.Trim(out, `"`))
	if h == (common.Hash{}) {
		t.Fatalf("eth.sendTransaction in geth answered %q", out)
	}
	rs, err := w.mined(ctx, []common.Hash{h})
	if err != nil || rs[0].Status != types.ReceiptStatusSuccessful {
		t.Fatalf("geth's transaction not mined: %v", err)
	}
	// A denial reaches the console as an error with its rule.
	cmd := exec.CommandContext(ctx, geth, "attach", "--exec", `eth.sendTransaction({from: eth.accounts[0], to: "`+blocked.Hex()+`", value: 1})`, srv.URL())
	b, _ := cmd.CombinedOutput()
	if !strings.Contains(string(b), "blocked-destinations") {
		t.Fatalf("denied send in geth: %s", b)
	}
}
