package control

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/tss"
)

func TestRequestIDBindsAgentAndKey(t *testing.T) {
	a := RequestID("agent-1", "pay-42")
	if a != RequestID("agent-1", "pay-42") {
		t.Fatal("request id is not deterministic")
	}
	if _, err := ids.ParseRequestID(string(a)); err != nil {
		t.Fatalf("request id %q does not parse: %v", a, err)
	}
	for _, other := range []ids.RequestID{
		RequestID("agent-2", "pay-42"),
		RequestID("agent-1", "pay-43"),
		// The separator keeps "agent-1"+"0pay" apart from "agent-10"+"pay".
		RequestID("agent-10", "pay-42"),
		RequestID("agent-1", "0pay-42"),
	} {
		if other == a {
			t.Fatalf("two different (agent, idempotency key) pairs share the id %s", a)
		}
	}
	if RequestID("agent-1", "0pay") == RequestID("agent-10", "pay") {
		t.Fatal("agent and idempotency key run together")
	}
}

func sampleMessages() []*Message {
	sess := ids.NewSessionID()
	signed := agentauth.Signed{Agent: "agent-1", Method: "POST", Path: "/v1/requests", Body: []byte(`{}`), Timestamp: 1, Nonce: "n", Signature: []byte{1}}
	committee := tss.Committee{Members: []tss.Member{{ID: "a", Role: ids.RoleAgent}, {ID: "b", Role: ids.RolePolicy}}, Threshold: 1}
	return []*Message{
		{Type: TypePropose, Propose: &Propose{Session: sess, RequestID: RequestID("agent-1", "k"), Request: signed, Quorum: []ids.MemberID{"a", "b"}, Tier: "hot", Approvals: []api.Approval{{RequestID: "req:1", ChainID: 1, Signature: []byte{2}}}, Deadline: time.Unix(100, 0).UTC()}},
		{Type: TypeKeygen, Keygen: &Keygen{Session: sess, Committee: committee}},
		{Type: TypeReshare, Reshare: &Reshare{Session: sess, Key: tss.KeyInfo{Committee: committee}, OldSigners: []ids.MemberID{"a", "b"}, NewCommittee: committee}},
		{Type: TypeStart, Start: &SessionRef{Session: sess}},
		{Type: TypeAbort, Abort: &SessionRef{Session: sess}},
		{Type: TypeResult, Result: &ResultQuery{Session: sess, Wait: Duration(2 * time.Second)}},
		{Type: TypeEvaluate, Evaluate: &Evaluate{RequestID: "req:1", Request: signed}},
		{Type: TypePending, Pending: &Pending{RequestID: "req:1", Request: signed, Tier: "guarded", RuleID: "big"}},
		{Type: TypePolicy, Policy: &PolicyUpdate{Document: &api.PolicyDocument{Source: "version: 1\n"}}},
		{Type: TypeFreeze, Freeze: &api.Freeze{Target: "all", Reason: "r", Signature: []byte{3}}},
		{Type: TypeUnfreeze, Unfreeze: &api.Unfreeze{Target: "all"}},
		{Type: TypeApproval, Approval: &ApprovalMsg{Denial: &api.Denial{RequestID: "req:1", Reason: "no"}}},
		{Type: TypeStatus, Status: &StatusQuery{}},
		{Type: TypePresign, Presign: &Presign{Session: sess, Key: ids.KeyIDOf([20]byte{1}), Quorum: []ids.MemberID{"a", "b"}, Path: []uint32{1}, Deadline: time.Unix(100, 0).UTC()}},
		{Type: TypePropose, Propose: &Propose{Session: sess, RequestID: RequestID("agent-1", "k"), Request: signed, Quorum: []ids.MemberID{"a", "b"}, Tier: "hot", Deadline: time.Unix(100, 0).UTC(), Presignature: ids.NewSessionID()}},
	}
}

func TestEveryMessageRoundTrips(t *testing.T) {
	msgs := sampleMessages()
	types := map[Type]bool{}
	for _, m := range msgs {
		types[m.Type] = true
	}
	if len(types) != len(bodies) {
		t.Fatalf("sample messages of %d types for %d types", len(types), len(bodies))
	}
	for _, m := range msgs {
		b, err := Encode(m)
		if err != nil {
			t.Fatalf("%s: encode: %v", m.Type, err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: decode: %v", m.Type, err)
		}
		again, err := Encode(got)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("%s: round trip changed the message:\n%s\n%s (%v)", m.Type, b, again, err)
		}
	}
}

func TestDecodeRefusesMalformedMessages(t *testing.T) {
	sess := ids.NewSessionID().String()
	cases := []struct {
		name, msg, want string
	}{
		{"unknown type", `{"type":"sign"}`, `unknown message type "sign"`},
		{"no type", `{"start":{"session":"` + sess + `"}}`, `unknown message type ""`},
		{"missing body", `{"type":"start"}`, "without its"},
		{"second body", `{"type":"start","start":{"session":"` + sess + `"},"abort":{"session":"` + sess + `"}}`, "carries a Abort body too"},
		{"unknown field", `{"type":"start","start":{"session":"` + sess + `","extra":1}}`, "unknown field"},
		{"duplicate key", `{"type":"start","type":"abort","abort":{"session":"` + sess + `"}}`, "appears twice"},
		{"case-folded key", `{"Type":"start","start":{"session":"` + sess + `"}}`, "spelled"},
		{"trailing data", `{"type":"start","start":{"session":"` + sess + `"}} {}`, "after the JSON object"},
		{"bad session id", `{"type":"start","start":{"session":"sess:zz"}}`, "session"},
		{"presign with a propose body", `{"type":"presign","propose":{"session":"` + sess + `"}}`, "presign message"},
		{"presign unknown field", `{"type":"presign","presign":{"session":"` + sess + `","size":2}}`, "unknown field"},
		{"negative wait", `{"type":"result","result":{"session":"` + sess + `","wait":"-1s"}}`, "negative"},
		{"not json", `propose`, "malformed message"},
		{"oversize", `{"type":"status","status":{}}` + strings.Repeat(" ", MaxMessage), "exceed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode([]byte(c.msg))
			if err == nil {
				t.Fatalf("accepted %s", c.msg)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
		})
	}
}

func TestEncodeRefusesMismatchedBody(t *testing.T) {
	if _, err := Encode(&Message{Type: TypeStart, Abort: &SessionRef{}}); err == nil {
		t.Fatal("encoded a start message carrying an abort body")
	}
	if _, err := Encode(&Message{Type: TypePolicy, Policy: &PolicyUpdate{Document: &api.PolicyDocument{Source: strings.Repeat("x", MaxMessage)}}}); err == nil {
		t.Fatal("encoded a message over MaxMessage")
	}
}

func TestReplyRoundTripAndStrictness(t *testing.T) {
	r := &Reply{Refusal: &Refusal{Member: "b", RuleID: "tier", Reason: "coordinator claimed hot, policy gives guarded"}}
	b, err := EncodeReply(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeReply(b)
	if err != nil || got.Refusal == nil || got.Refusal.RuleID != "tier" {
		t.Fatalf("reply round trip: %+v, %v", got, err)
	}
	if !strings.Contains(got.Refusal.Error(), "b refused (tier)") {
		t.Fatalf("refusal error %q", got.Refusal.Error())
	}
	if _, err := DecodeReply([]byte(`{"refusal":{"member":"b","rule_id":"x","reason":"y","extra":true}}`)); err == nil {
		t.Fatal("reply with an unknown field accepted")
	}
}
