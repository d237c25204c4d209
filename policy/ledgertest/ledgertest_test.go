package ledgertest_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/custos-wallet/custos/policy"
	"github.com/custos-wallet/custos/policy/ledgertest"
)

func TestMemLedger(t *testing.T) {
	ledgertest.Run(t, func(*testing.T) policy.Ledger { return policy.NewMemLedger() })
}

// fileLedger persists a MemLedger's records in a file when it is closed,
// as a node does through MemLedger.Records and NewMemLedger.
type fileLedger struct {
	*policy.MemLedger
	path string
}

func (f fileLedger) Close() error {
	b, err := json.Marshal(f.Records())
	if err != nil {
		return err
	}
	return os.WriteFile(f.path, b, 0o600)
}

func TestMemLedgerRecordsPersist(t *testing.T) {
	ledgertest.RunPersistent(t, func(t *testing.T, dir string) policy.Ledger {
		path := filepath.Join(dir, "ledger.json")
		var recs []policy.Record
		b, err := os.ReadFile(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			t.Fatal(err)
		default:
			if err := json.Unmarshal(b, &recs); err != nil {
				t.Fatal(err)
			}
		}
		return fileLedger{policy.NewMemLedger(recs...), path}
	})
}
