// Package testfixtures serves committed, test-only Paillier pre-parameters so
// that tests of the threshold engine never wait for safe-prime generation.
//
// The fixtures hold Paillier secret keys that are public in this repository:
// they are test-only key material and must never reach a node. Regenerate them
// with:
//
//	go run ./internal/testfixtures/gen -n 11
package testfixtures

import (
	"embed"
	"encoding/json"
	"fmt"

	"github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
)

// Warning is written into every fixture file.
const Warning = "TEST-ONLY KEY MATERIAL: public Paillier secrets, never use outside tests"

// File is the on-disk form of one fixture.
type File struct {
	Warning   string                `json:"warning"`
	PreParams keygen.LocalPreParams `json:"pre_params"`
}

//go:embed preparams/*.json
var files embed.FS

// Count is the number of committed fixtures.
func Count() int {
	entries, err := files.ReadDir("preparams")
	if err != nil {
		return 0
	}
	return len(entries)
}

// PreParams returns a fresh copy of fixture i (0-based).
func PreParams(i int) (*keygen.LocalPreParams, error) {
	b, err := files.ReadFile(fmt.Sprintf("preparams/%02d.json", i))
	if err != nil {
		return nil, fmt.Errorf("testfixtures: no fixture %d (have %d): %w", i, Count(), err)
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("testfixtures: decode fixture %d: %w", i, err)
	}
	if f.Warning != Warning || !f.PreParams.ValidateWithProof() {
		return nil, fmt.Errorf("testfixtures: fixture %d is incomplete", i)
	}
	return &f.PreParams, nil
}
