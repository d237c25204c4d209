package tss

import (
	"bytes"
	"errors"
	"testing"

	"github.com/custos-wallet/custos/ids"
)

func TestCommitteeValidate(t *testing.T) {
	ok := []Member{agent, policy, guardian}
	cases := []struct {
		name string
		c    Committee
		want string
	}{
		{"valid", Committee{Members: ok, Threshold: 1}, ""},
		{"t+1 > n", Committee{Members: ok, Threshold: 3}, "needs 4 signers"},
		{"t < 1", Committee{Members: ok, Threshold: 0}, "below 1"},
		{"duplicate", Committee{Members: []Member{agent, agent, policy}, Threshold: 1}, "appears twice"},
		{"unknown role", Committee{Members: []Member{agent, {ID: "x", Role: "admin"}}, Threshold: 1}, "unknown role"},
		{"empty id", Committee{Members: []Member{agent, {Role: ids.RolePolicy}}, Threshold: 1}, "empty id"},
	}
	for _, tc := range cases {
		err := tc.c.Validate()
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrBadCommittee) || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestGuardianFloor(t *testing.T) {
	cases := []struct {
		c    Committee
		want int
	}{
		{Committee{Members: []Member{agent, policy, guardian}, Threshold: 1}, 0},    // hot
		{Committee{Members: []Member{agent, policy, guardian}, Threshold: 2}, 1},    // vault
		{Committee{Members: []Member{agent, guardian, guardian2}, Threshold: 2}, 2}, // two guardians needed
		{Committee{Members: []Member{agent, policy, guardian, guardian2, guardian3}, Threshold: 2}, 1},
		{Committee{Members: []Member{guardian, guardian2}, Threshold: 1}, 2},
	}
	for _, tc := range cases {
		if got := tc.c.GuardianFloor(); got != tc.want {
			t.Errorf("%s: floor %d, want %d", tc.c.Describe(), got, tc.want)
		}
	}
}

func TestPartyKeysDifferAcrossGenerations(t *testing.T) {
	if partyKey("policy-1", 0).Cmp(partyKey("policy-1", 1)) == 0 {
		t.Fatal("a member of both committees of a reshare would have one party id")
	}
	if partyKey("policy-1", 0).Cmp(partyKey("policy-1", 0)) != 0 {
		t.Fatal("party keys are not deterministic")
	}
}

func TestEnvelopeRejectsMalformed(t *testing.T) {
	good := envelope{Session: ids.NewSessionID(), From: tagOld, To: maskOf(tagNew), Broadcast: true, Wire: []byte("wire")}.encode()
	if e, err := decodeEnvelope(good); err != nil || string(e.Wire) != "wire" || !e.Broadcast || e.From != tagOld || !e.To.has(tagNew) {
		t.Fatalf("round trip: %+v %v", e, err)
	}
	bad := map[string][]byte{
		"empty":      nil,
		"short":      good[:10],
		"magic":      append([]byte("XXXX"), good[4:]...),
		"truncated":  good[:len(good)-1],
		"extra":      append(append([]byte(nil), good...), 0),
		"bad flags":  func() []byte { b := append([]byte(nil), good...); b[len(b)-len("wire")-5] = 7; return b }(),
		"bad sender": func() []byte { b := append([]byte(nil), good...); b[len(b)-len("wire")-7] = 9; return b }(),
	}
	for name, b := range bad {
		if _, err := decodeEnvelope(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzDecodeEnvelope(f *testing.F) {
	f.Add(envelope{Session: ids.NewSessionID(), From: tagMain, To: maskOf(tagMain), Wire: []byte{1, 2, 3}}.encode())
	f.Add([]byte("CTS1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEnvelope(b)
		if err != nil {
			return
		}
		if !bytes.Equal(e.encode(), b) {
			t.Fatalf("decode/encode is not the identity for %x", b)
		}
	})
}
