package x402

// The test clock and signer of the client's tests; the facilitator and
// resource server they pay are in x402test.

import (
	"context"
	"crypto/ecdsa"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

// clock is a settable test clock shared by client and facilitator.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Unix(1_800_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// keySigner is the test Signer: a real secp256k1 key.
type keySigner struct {
	key    *ecdsa.PrivateKey
	calls  atomic.Int32
	mu     sync.Mutex
	signed []apitypes.TypedData
	// before runs before signing (to move a clock, say).
	before func()
}

func newKeySigner(t *testing.T) *keySigner {
	t.Helper()
	k, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return &keySigner{key: k}
}

func (s *keySigner) Address() common.Address { return crypto.PubkeyToAddress(s.key.PublicKey) }

func (s *keySigner) SignTypedData(_ context.Context, td apitypes.TypedData) ([]byte, error) {
	s.calls.Add(1)
	if s.before != nil {
		s.before()
	}
	s.mu.Lock()
	s.signed = append(s.signed, td)
	s.mu.Unlock()
	digest, _, err := apitypes.TypedDataAndHash(td)
	if err != nil {
		return nil, err
	}
	return crypto.Sign(digest, s.key)
}

func (s *keySigner) lastSigned(t *testing.T) apitypes.TypedData {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.signed) == 0 {
		t.Fatal("nothing was signed")
	}
	return s.signed[len(s.signed)-1]
}
