package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/control"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/store"
)

// Crashes (invariant 9). A daemon is closed in the middle of a request and
// started again on the same directory; what it accepted before survives
// and nothing happens twice.

// signatures counts the signature entries of a request in a node's audit
// log.
func (c *cluster) signatures(t *testing.T, name string, id ids.RequestID) int {
	t.Helper()
	entries, err := c.node(name).Store().AuditByRequest(context.Background(), id)
	if err != nil {
		t.Fatalf("%s audit: %v", name, err)
	}
	n := 0
	for _, e := range entries {
		if e.Kind == store.AuditSignature {
			n++
		}
	}
	return n
}

// verifyAudit checks a node's whole audit chain.
func (c *cluster) verifyAudit(t *testing.T, name string) {
	t.Helper()
	n, err := c.node(name).Store().VerifyAudit(context.Background())
	if err != nil {
		t.Fatalf("%s audit chain: %v", name, err)
	}
	if n == 0 {
		t.Fatalf("%s audit chain is empty", name)
	}
}

// noDoubleReservation: each bucket holds the request at most once, and a
// request that did not end signed holds nothing reserved.
func (c *cluster) noDoubleReservation(t *testing.T, name string, r *api.Request) {
	t.Helper()
	recs := c.ledgerRecords(t, name, r.ID)
	seen := map[policy.Bucket]bool{}
	for _, rec := range recs {
		if seen[rec.Bucket] {
			t.Errorf("%s ledger holds %s twice in bucket %s", name, r.ID, rec.Bucket)
		}
		seen[rec.Bucket] = true
		switch {
		case r.State == api.StateSigned && rec.State != policy.Committed:
			t.Errorf("%s ledger: signed request %s is %v in %s, want committed", name, r.ID, rec.State, rec.Bucket)
		case r.State != api.StateSigned && rec.State == policy.Committed:
			t.Errorf("%s ledger: %s request %s committed in %s", name, r.State, r.ID, rec.Bucket)
		}
	}
	if r.State == api.StateSigned && len(recs) == 0 {
		t.Errorf("%s ledger has no record of signed request %s", name, r.ID)
	}
}

// waitJournal waits until the node's journal holds a session of the
// request (it has joined: its budget is reserved).
func (c *cluster) waitJournal(t *testing.T, name string, id ids.RequestID) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := waitFor(ctx, 5*time.Millisecond, func() (bool, error) {
		ss, err := c.node(name).Store().RequestSessions(ctx, id)
		return err == nil && len(ss) > 0, nil
	})
	if err != nil {
		t.Fatalf("%s never journaled a session of %s", name, id)
	}
}

// waitRunning waits until the node journals a session of the request as
// running (its share of the signature being computed), or as ended if it
// ran too fast to see; it says which.
func (c *cluster) waitRunning(t *testing.T, name string, id ids.RequestID) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	state := ""
	err := waitFor(ctx, 2*time.Millisecond, func() (bool, error) {
		ss, err := c.node(name).Store().RequestSessions(ctx, id)
		if err != nil {
			return false, nil
		}
		for _, s := range ss {
			if s.State == control.StateRunning || s.State == control.StateDone || s.State == control.StateFailed {
				state = s.State
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("%s never ran a session of %s", name, id)
	}
	return state
}

// The policy node is closed while it runs its part of a signing (its
// budget reserved, the session started) and started again on its
// directory. The request ends cleanly
// (signed on a retry, or failed), its budget is in the ledger at most once
// and committed only if signed, and the audit chain is valid.
func TestPolicyNodeCrashMidSigning(t *testing.T) {
	c := setup(t)
	r := c.submit(t, c.w.bot, hotKey.ID, idem("crash-policy"), c.w.unsignedTx(t, hotKey.Address, vendor1, eth(4)))
	if st := c.waitRunning(t, namePolicy, r.ID); st != control.StateRunning {
		t.Logf("the session was %s before the close could catch it running", st)
	}
	if err := c.stopNode(namePolicy); err != nil {
		t.Fatalf("close policy node: %v", err)
	}
	if err := c.startNode(namePolicy); err != nil {
		t.Fatalf("restart policy node: %v", err)
	}
	r = c.waitState(t, r.ID)
	t.Logf("after the policy node's restart: %s", describeRequest(r))
	if r.State != api.StateSigned && r.State != api.StateFailed {
		t.Fatalf("request ended %s", describeRequest(r))
	}
	c.noDoubleReservation(t, namePolicy, r)
	c.verifyAudit(t, namePolicy)
	if n := c.signatures(t, namePolicy, r.ID); n > 1 {
		t.Errorf("policy node audited %d signatures of %s", n, r.ID)
	}
	if r.State == api.StateSigned {
		c.mine(t, signedTx(t, r, hotKey, vendor1, eth(4)))
	}
	// The restarted node goes on serving: the next payment signs.
	next := c.submit(t, c.w.bot, hotKey.ID, idem("after-crash"), c.w.unsignedTx(t, hotKey.Address, vendor1, eth(1)))
	next = c.waitState(t, next.ID)
	c.mine(t, signedTx(t, next, hotKey, vendor1, eth(1)))
	c.checkCommittedOnce(t, namePolicy, next.ID)
}

// The coordinator is closed while a request is in flight and started
// again on its directory: the request is resumed or failed cleanly, never
// signed twice; a request waiting for a guardian still waits, and signs
// once approved.
func TestCoordinatorCrashMidRequest(t *testing.T) {
	c := setup(t)
	waiting := c.submit(t, c.w.bot, vaultKey.ID, idem("crash-wait"), c.w.unsignedTx(t, vaultKey.Address, vendor2, eth(300)))
	waiting = c.waitState(t, waiting.ID, api.StatePendingApproval)
	if waiting.State != api.StatePendingApproval {
		t.Fatalf("guarded request: %s", describeRequest(waiting))
	}
	r := c.submit(t, c.w.bot, hotKey.ID, idem("crash-coord"), c.w.unsignedTx(t, hotKey.Address, vendor1, eth(3)))
	c.waitJournal(t, nameAgent, r.ID)
	if err := c.stopCoordinator(); err != nil {
		t.Fatalf("close coordinator: %v", err)
	}
	if err := c.startCoordinator(); err != nil {
		t.Fatalf("restart coordinator: %v", err)
	}
	r = c.waitState(t, r.ID)
	t.Logf("after the coordinator's restart: %s", describeRequest(r))
	if r.State != api.StateSigned && r.State != api.StateFailed {
		t.Fatalf("request ended %s", describeRequest(r))
	}
	for _, n := range []string{nameAgent, namePolicy} {
		if got := c.signatures(t, n, r.ID); got > 1 {
			t.Errorf("%s audited %d signatures of %s", n, got, r.ID)
		}
		c.noDoubleReservation(t, n, r)
		c.verifyAudit(t, n)
	}
	if r.State == api.StateSigned {
		c.mine(t, signedTx(t, r, hotKey, vendor1, eth(3)))
	}
	// Same request id after the restart, and the same idempotency answer.
	if got := c.request(t, r.ID); got.State != r.State || string(got.Signature) != string(r.Signature) {
		t.Errorf("request read again: %s, was %s", describeRequest(got), describeRequest(r))
	}

	// The guarded request survived the restart, still waiting.
	if got := c.request(t, waiting.ID); got.State != api.StatePendingApproval {
		t.Fatalf("guarded request after the restart: %s", describeRequest(got))
	}
	c.waitQueued(t, nameGuardian1, waiting.ID)
	code, out, errOut := c.guardianCLI(t, nameGuardian1, "approve", string(waiting.ID))
	if code != 0 {
		t.Fatalf("guardian approve: exit %d\n%s%s", code, out, errOut)
	}
	waiting = c.waitState(t, waiting.ID)
	c.mine(t, signedTx(t, waiting, vaultKey, vendor2, eth(300)))
}

// A guardian node restarted while a request waits for its human keeps the
// request in its queue, and its human's approval then gets it signed.
func TestGuardianNodeRestartKeepsQueue(t *testing.T) {
	c := setup(t)
	r := c.submit(t, c.w.bot, vaultKey.ID, idem("guardian-restart"), c.w.unsignedTx(t, vaultKey.Address, vendor1, eth(700)))
	if r = c.waitState(t, r.ID, api.StatePendingApproval); r.State != api.StatePendingApproval {
		t.Fatalf("guarded request: %s", describeRequest(r))
	}
	c.waitQueued(t, nameGuardian1, r.ID)
	if err := c.stopNode(nameGuardian1); err != nil {
		t.Fatalf("close guardian-1: %v", err)
	}
	if err := c.startNode(nameGuardian1); err != nil {
		t.Fatalf("restart guardian-1: %v", err)
	}
	c.waitQueued(t, nameGuardian1, r.ID)
	if code, out, errOut := c.guardianCLI(t, nameGuardian1, "approve", string(r.ID)); code != 0 {
		t.Fatalf("guardian approve after the restart: exit %d\n%s%s", code, out, errOut)
	}
	r = c.waitState(t, r.ID)
	c.mine(t, signedTx(t, r, vaultKey, vendor1, eth(700)))
	c.verifyAudit(t, nameGuardian1)
}
