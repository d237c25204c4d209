package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/client"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/store"
)

// TestRestartResumesOrFails closes a coordinator with requests in flight,
// one of them in the middle of a signing session, and reopens it on the
// same directory later. A request is never lost; one whose session was
// open is settled by asking that session's members first (here none
// answers, so after the session's deadline it is closed as failed without
// a new session being started while its members cannot be reached); a
// request whose expiry passed ends as expired with the reason.
func TestRestartResumesOrFails(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	bot := e.agentClient(e.bot)
	short, err := bot.SubmitBody(ctx, e.bot, e.body(map[string]string{"idempotency_key": `"short"`,
		"expiry": fmt.Sprintf("%q", e.clock.Now().Add(time.Hour).Format(time.RFC3339))}))
	if err != nil {
		t.Fatal(err)
	}
	long, err := bot.SubmitBody(ctx, e.bot, e.body(map[string]string{"idempotency_key": `"long"`,
		"expiry": fmt.Sprintf("%q", e.clock.Now().Add(5*time.Hour).Format(time.RFC3339))}))
	if err != nil {
		t.Fatal(err)
	}
	e.close()

	// The crash left both requests in a signing session.
	st, err := store.Open(filepath.Join(e.dir, "data"), store.KeyFile(filepath.Join(e.dir, "store.key")), store.Options{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	sessions := map[ids.RequestID]ids.SessionID{}
	for _, id := range []ids.RequestID{short.ID, long.ID} {
		sess := ids.NewSessionID()
		sessions[id] = sess
		if _, err := st.UpdateRequest(ctx, id, func(r *store.RequestRecord) error {
			var b reqBody
			if err := json.Unmarshal(r.Body, &b); err != nil {
				return err
			}
			b.View.State = api.StateSigning
			b.Tier = &tierSpec{Name: "hot", Roles: []ids.Role{ids.RoleAgent, ids.RolePolicy}}
			b.View.Attempts = []api.Attempt{{Session: sess, Quorum: e.members[:2], State: attRunning, Started: e.clock.Now()}}
			r.State = b.View.State
			r.Body, err = json.Marshal(b)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	e.clock.Add(2 * time.Hour)
	e.open()
	got, err := e.op.WaitFinal(ctx, short.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != api.StateExpired || got.RuleID != ruleExpired || !strings.Contains(got.Reason, "passed") {
		t.Fatalf("expired request: %+v", got)
	}
	if len(got.Attempts) != 1 || got.Attempts[0].State != attFailed || got.Attempts[0].Session != sessions[short.ID] {
		t.Fatalf("the open session was not closed: %+v", got.Attempts)
	}

	// The other request is settled, then waits for members it can reach:
	// no second session while none answers.
	var r *api.Request
	for range 200 {
		if r, err = e.op.Request(ctx, long.ID); err != nil {
			t.Fatal(err)
		}
		if len(r.Attempts) > 0 && r.Attempts[0].State == attFailed && strings.HasPrefix(r.Reason, "waiting: cannot reach") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r.State != api.StateSigning || len(r.Attempts) != 1 || r.Attempts[0].State != attFailed || !strings.Contains(r.Attempts[0].Error, "no outcome") {
		t.Fatalf("resumed request: state %s reason %q attempts %+v", r.State, r.Reason, r.Attempts)
	}
	entries, err := e.op.Audit(ctx, client.AuditQuery{Request: string(long.ID)})
	if err != nil {
		t.Fatal(err)
	}
	sawSession := false
	for _, en := range entries {
		if en.Kind == string(store.AuditSession) && en.Fields["session"] == sessions[long.ID].String() {
			sawSession = true
		}
	}
	if !sawSession {
		t.Fatalf("no audit entry for the settled session: %+v", entries)
	}

	// Members that stay out of reach end the request, naming them, instead
	// of leaving it to wait until its expiry hours away.
	e.clock.Add(DefaultUnreachable)
	got, err = e.op.WaitFinal(ctx, long.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != api.StateFailed || got.RuleID != ruleUnreachable || !strings.Contains(got.Reason, string(e.members[1])) ||
		!strings.Contains(got.Reason, "cannot reach") {
		t.Fatalf("request whose members stayed unreachable: state %s rule %s reason %q", got.State, got.RuleID, got.Reason)
	}
}

// TestCloseEndsLongPolls: a long poll in flight ends when the coordinator
// stops, and Run returns without error (a shutdown that waited for the
// poll would end with its grace period's deadline error).
func TestCloseEndsLongPolls(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	r, err := e.agentClient(e.bot).SubmitBody(ctx, e.bot, e.body(nil))
	if err != nil {
		t.Fatal(err)
	}
	polled := make(chan error, 1)
	go func() {
		_, err := e.op.Wait(ctx, r.ID, MaxWait)
		polled <- err
	}()
	// Give the poll time to reach the server; the answer below shows it
	// did (a poll that came too late would fail to connect).
	time.Sleep(300 * time.Millisecond)
	e.close() // fails the test if Run returns an error
	if err := <-polled; err != nil {
		t.Fatalf("the poll in flight: %v", err)
	}
}
