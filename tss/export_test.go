package tss

import (
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/bnb-chain/tss-lib/v2/tss"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/custos-wallet/custos/ids"
)

// What the tests of package tss_test (the engine over a transport, which
// needs tsstest and so cannot be in package tss) use of the package's
// insides.

var (
	Fixture      = fixture
	SortedIDs    = sortedIDs
	TestConfig   = testConfig
	DigestOf     = digestOf
	Members      = []Member{agent, policy, guardian, agent2, guardian2, guardian3}
	LoadShares   = loadShares
	SharesEnvVar = sharesEnv
)

// Shared2of3 is the {agent, policy, guardian} 2-of-3 key of this test binary.
func Shared2of3(t testing.TB) map[ids.MemberID]*Share { return shared2of3(t) }

// CloneKey is a deep copy of k.
func CloneKey(k KeyInfo) KeyInfo { return k.clone() }

// TakePreParams marks pp used, as a session does.
func TakePreParams(pp *PreParams) error { return pp.take() }

// TypeOf is the tss-lib message type of a session payload ("" if it has
// none), for filters.
func TypeOf(payload []byte) string {
	env, err := decodeEnvelope(payload)
	if err != nil || env.Notice {
		return ""
	}
	t := typeName(env.Wire)
	return t[strings.LastIndex(t, ".")+1:]
}

// PresignPlaceholder is the digest presignatures run rounds 1-4 with.
var PresignPlaceholder = presignPlaceholder

// SetPresignClock replaces e's clock for presignature ages.
func SetPresignClock(e *Engine, now func() time.Time) { e.now = now }

// RewritePayload decodes the tss-lib message in a session payload, lets
// mutate change it (true if it did) and encodes it again, still bound to
// its session: a forged message as a real member would send it.
func RewritePayload(payload []byte, mutate func(tss.MessageContent) bool) ([]byte, error) {
	env, err := decodeEnvelope(payload)
	if err != nil || env.Notice {
		return payload, err
	}
	dummy := tss.NewPartyID("x", "x", big.NewInt(1))
	dummy.Index = 0
	msg, err := tss.ParseWireMessage(env.Wire, dummy, env.Broadcast)
	if err != nil {
		return nil, err
	}
	c := msg.Content()
	if !mutate(c) {
		return payload, nil
	}
	a, err := anypb.New(c)
	if err != nil {
		return nil, err
	}
	if env.Wire, err = proto.Marshal(a); err != nil {
		return nil, err
	}
	return env.encode(), nil
}
