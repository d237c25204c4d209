package cluster

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/node/admin"
	"github.com/custos-wallet/custos/policy"
)

// One guardian's freeze, through the CLI, holds before the next signature
// at every node; one guardian's unfreeze is refused; the quorum's (one
// guardian signs only, the other adds the signature and submits) lifts it.
func TestFreezeAndQuorumUnfreeze(t *testing.T) {
	c := setup(t)
	target := string(policy.AgentTarget(agentBot))
	frozen := true
	t.Cleanup(func() {
		if frozen {
			// Leave the cluster usable for the other tests.
			c.unfreezeByREST(t, policy.Target(target))
		}
	})
	// A guarded request already waiting for its approval when the freeze
	// comes: approved afterwards, it must still not be signed.
	inFlight := c.submit(t, c.w.bot, vaultKey.ID, idem("in-flight"), c.w.unsignedTx(t, vaultKey.Address, vendor2, eth(400)))
	if inFlight = c.waitState(t, inFlight.ID, api.StatePendingApproval); inFlight.State != api.StatePendingApproval {
		t.Fatalf("guarded request: %s", describeRequest(inFlight))
	}
	pending := c.waitQueued(t, nameGuardian1, inFlight.ID)

	code, out, errOut := c.guardianCLI(t, nameGuardian1, "freeze", "--target", target, "--reason", "odd destinations", "--json")
	if code != 0 {
		t.Fatalf("guardian freeze: exit %d\n%s%s", code, out, errOut)
	}
	var res struct {
		Freeze api.Freeze          `json:"freeze"`
		Result *admin.FreezeResult `json:"result"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("guardian freeze --json: %v\n%s", err, out)
	}
	if res.Result == nil || !res.Result.Applied {
		t.Fatalf("freeze not applied at guardian-1: %s", out)
	}
	acked := map[string]bool{}
	for _, m := range res.Result.Acknowledged {
		acked[c.nameOf(m)] = true
	}
	for _, n := range memberNames {
		if n != nameGuardian1 && !acked[n] {
			t.Errorf("%s did not acknowledge the freeze before the answer: %+v", n, res.Result)
		}
	}
	// The next request of the agent is refused: rule freeze.
	r := c.submit(t, c.w.bot, hotKey.ID, idem("frozen"), c.w.unsignedTx(t, hotKey.Address, vendor1, eth(1)))
	r = c.waitState(t, r.ID)
	if r.State != api.StateDenied || r.RuleID != "freeze" || len(r.Signature) != 0 {
		t.Fatalf("while frozen: %s, want denied by rule freeze", describeRequest(r))
	}

	// The approval of the request that was waiting does not get it signed.
	a, err := admin.NewGuardian(c.w.alice).Approve(c.w.walletID, pending, time.Now(), 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.call(context.Background(), "POST", "/v1/requests/"+string(inFlight.ID)+"/approvals", a, "", nil); err != nil {
		t.Logf("approval while frozen: %v", err)
	}
	inFlight = c.waitState(t, inFlight.ID)
	if inFlight.State == api.StateSigned || len(inFlight.Signature) != 0 {
		t.Fatalf("a request approved after the freeze was signed: %s", describeRequest(inFlight))
	}
	if inFlight.RuleID != "freeze" {
		t.Errorf("the approved request ended %s, want rule freeze", describeRequest(inFlight))
	}

	// One guardian cannot lift it.
	code, out, errOut = c.guardianCLI(t, nameGuardian1, "unfreeze", "--target", target)
	if code == 0 {
		t.Fatalf("one guardian's unfreeze succeeded:\n%s%s", out, errOut)
	}
	if !strings.Contains(errOut, "quorum") && !strings.Contains(errOut, "guardians") {
		t.Errorf("one guardian's unfreeze refused without saying why a quorum is needed:\n%s", errOut)
	}
	r = c.submit(t, c.w.bot, hotKey.ID, idem("still-frozen"), c.w.unsignedTx(t, hotKey.Address, vendor1, eth(1)))
	if r = c.waitState(t, r.ID); r.State != api.StateDenied || r.RuleID != "freeze" {
		t.Fatalf("after one guardian's unfreeze: %s, want still denied by rule freeze", describeRequest(r))
	}

	// Bob signs only; Alice adds his signature and submits.
	code, bobs, errOut := c.guardianCLI(t, nameGuardian2, "unfreeze", "--target", target, "--sign-only")
	if code != 0 {
		t.Fatalf("guardian unfreeze --sign-only: exit %d\n%s%s", code, bobs, errOut)
	}
	code, out, errOut = c.guardianCLI(t, nameGuardian1, "unfreeze", "--add-signature", bobs, "--json")
	if code != 0 {
		t.Fatalf("quorum unfreeze: exit %d\n%s%s", code, out, errOut)
	}
	var lifted struct {
		Unfreeze api.Unfreeze        `json:"unfreeze"`
		Result   *admin.FreezeResult `json:"result"`
	}
	if err := json.Unmarshal([]byte(out), &lifted); err != nil || lifted.Result == nil || !lifted.Result.Applied {
		t.Fatalf("quorum unfreeze --json: %v\n%s", err, out)
	}
	// The node sends it on to the coordinator, which pushes it to every
	// member (a member takes an unfreeze only from a coordinator).
	if len(lifted.Result.Acknowledged) == 0 {
		t.Errorf("the quorum's unfreeze was acknowledged by nobody: %+v", lifted.Result)
	}
	frozen = false
	r = c.submit(t, c.w.bot, hotKey.ID, idem("thawed"), c.w.unsignedTx(t, hotKey.Address, vendor1, eth(1)))
	r = c.waitState(t, r.ID)
	if r.State != api.StateSigned {
		t.Fatalf("after the quorum's unfreeze: %s (refused by %s)", describeRequest(r), c.nameOf(r.Member))
	}
	c.mine(t, signedTx(t, r, hotKey, vendor1, eth(1)))
}

// unfreezeByREST lifts the target's current freeze with both guardians'
// signatures through POST /v1/unfreezes.
func (c *cluster) unfreezeByREST(t *testing.T, target policy.Target) {
	w, err := c.adminClient(t, nameGuardian1).Wallet(context.Background())
	if err != nil {
		t.Logf("cleanup: wallet: %v", err)
		return
	}
	for _, f := range w.Freezes {
		if policy.Target(f.Target) != target {
			continue
		}
		u := admin.NewUnfreeze(target, f.ID, nowSigned())
		for _, g := range []*admin.Guardian{admin.NewGuardian(c.w.alice), admin.NewGuardian(c.w.bob)} {
			if u, err = g.SignUnfreeze(c.w.walletID, u); err != nil {
				t.Logf("cleanup: sign unfreeze: %v", err)
				return
			}
		}
		if err := c.call(context.Background(), "POST", "/v1/unfreezes", u, "", nil); err != nil {
			t.Logf("cleanup: unfreeze %s: %v", target, err)
		}
	}
}
