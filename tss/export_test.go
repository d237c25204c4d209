package tss

import (
	"strings"
	"testing"

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
