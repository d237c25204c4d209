package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/bnb-chain/tss-lib/v2/ecdsa/keygen"
	"github.com/custos-wallet/custos/store"
	"github.com/custos-wallet/custos/tss"
)

// MaxPreParamsFile bounds one pre-parameter file (a set is about 10 KB).
const MaxPreParamsFile = 1 << 20

// preParamsFile is the form of a pre-parameter file: a JSON object with
// the tss-lib set under "pre_params" and an optional "warning" (the test
// fixtures carry one).
type preParamsFile struct {
	Warning   string                 `json:"warning,omitempty"`
	PreParams *keygen.LocalPreParams `json:"pre_params"`
}

// ReadPreParamsFile reads and checks one pre-parameter file. Errors name
// what is wrong without quoting any number of it.
func ReadPreParamsFile(path string) (*tss.PreParams, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf, err := io.ReadAll(io.LimitReader(f, MaxPreParamsFile+1))
	defer clear(buf)
	if err != nil {
		return nil, err
	}
	n := len(buf)
	if n > MaxPreParamsFile {
		return nil, fmt.Errorf("%s: larger than %d bytes: not a pre-parameter file", path, MaxPreParamsFile)
	}
	dec := json.NewDecoder(bytes.NewReader(buf[:n]))
	dec.DisallowUnknownFields()
	var pf preParamsFile
	if err := dec.Decode(&pf); err != nil {
		// The decoder's error can quote a secret number: name its kind only.
		return nil, fmt.Errorf("%s: not a pre-parameter file: malformed JSON (%T)", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s: not a pre-parameter file: data after the JSON object", path)
	}
	if pf.PreParams == nil {
		return nil, fmt.Errorf("%s: not a pre-parameter file: no \"pre_params\"", path)
	}
	set, err := tss.NewPreParams(pf.PreParams)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return set, nil
}

// ImportPreParams seals pre-parameter sets made elsewhere (any tss-lib
// LocalPreParams in the file form above) into a stopped node's encrypted pool, so that
// its first key generations need not wait for safe primes. Every file is
// read and checked before the store changes; then all are imported or,
// if the store holds one of them already or used it once, none.
func ImportPreParams(ctx context.Context, cfg *Config, getenv func(string) string, files []string) (int, error) {
	if len(files) == 0 {
		return 0, errors.New("node: import pre-parameters: no files given")
	}
	sets := make([]*tss.PreParams, len(files))
	for i, path := range files {
		set, err := ReadPreParamsFile(path)
		if err != nil {
			return 0, fmt.Errorf("node: import pre-parameters: %w", err)
		}
		sets[i] = set
	}
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	st, err := store.Open(cfg.path(cfg.DataDir), cfg.keySource(getenv), store.Options{})
	if err != nil {
		return 0, fmt.Errorf("node: import pre-parameters: open store: %w", err)
	}
	if err := st.ImportPreParams(ctx, sets); err != nil {
		st.Close()
		var ie *store.ImportError
		if errors.As(err, &ie) {
			return 0, fmt.Errorf("node: import pre-parameters: %s: %w (nothing imported)", files[ie.Index], ie.Err)
		}
		return 0, fmt.Errorf("node: import pre-parameters: %w", err)
	}
	n, err := st.CountPreParams(ctx)
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// importedOnly is the generator of a node configured with pool.generate
// false: it makes nothing, and the pool hands out imported sets only.
func importedOnly(ctx context.Context) (*tss.PreParams, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
