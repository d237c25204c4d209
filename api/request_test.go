package api

import (
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/chain"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
)

var now = time.Date(2026, 12, 1, 20, 0, 0, 0, time.UTC)

func unsignedTx(t *testing.T, chainID int64) string {
	t.Helper()
	to := common.HexToAddress("0x1111111111111111111111111111111111111111")
	tx := types.NewTx(&types.DynamicFeeTx{ChainID: big.NewInt(chainID), Nonce: 3, GasTipCap: big.NewInt(1e9), GasFeeCap: big.NewInt(2e9), Gas: 21000, To: &to, Value: big.NewInt(1e15)})
	b, err := tx.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return hexutil.Encode(b)
}

func body(fields map[string]string) string {
	base := map[string]string{
		"key":             `"key:0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"`,
		"chain_id":        `1`,
		"kind":            `"transaction"`,
		"idempotency_key": `"pay-1"`,
		"expiry":          `"2026-12-01T21:00:00Z"`,
	}
	for k, v := range fields {
		base[k] = v
	}
	var parts []string
	for _, k := range []string{"key", "path", "from", "chain_id", "kind", "payload", "idempotency_key", "expiry", "grant", "extra"} {
		if v, ok := base[k]; ok && v != "" {
			parts = append(parts, fmt.Sprintf("%q:%s", k, v))
		}
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func TestParseSignRequest(t *testing.T) {
	tx := unsignedTx(t, 1)
	r, err := ParseSignRequest([]byte(body(map[string]string{"payload": `"` + tx + `"`})), now)
	if err != nil {
		t.Fatal(err)
	}
	if r.Payload.Kind() != chain.KindTransaction || r.Payload.Transaction().Nonce() != 3 {
		t.Errorf("parsed %s", r.Payload.Describe())
	}
	want := types.LatestSignerForChainID(big.NewInt(1)).Hash(r.Payload.Transaction())
	if r.Payload.Digest() != want {
		t.Errorf("digest %x, want go-ethereum's %x", r.Payload.Digest(), want)
	}
	if r, err := ParseSignRequest([]byte(body(map[string]string{"payload": `"` + tx + `"`, "grant": `{"grant":{}}`})), now); err != nil || string(r.Grant) != `{"grant":{}}` {
		t.Fatalf("request with a grant: %v", err)
	}
	msg, err := ParseSignRequest([]byte(body(map[string]string{"kind": `"personal_message"`, "payload": `"0x68656c6c6f"`})), now)
	if err != nil || string(msg.Payload.Message()) != "hello" {
		t.Fatalf("personal message: %v", err)
	}

	bad := map[string]struct {
		fields  map[string]string
		mention string
	}{
		"unknown field":     {map[string]string{"payload": `"` + tx + `"`, "extra": `1`}, `unknown field "extra"`},
		"no key":            {map[string]string{"key": "", "payload": `"` + tx + `"`}, "key is missing"},
		"bad key checksum":  {map[string]string{"key": `"key:0xFb6916095ca1df60bB79Ce92cE3Ea74c37c5d359"`, "payload": `"` + tx + `"`}, "checksum"},
		"wrong chain":       {map[string]string{"chain_id": `5`, "payload": `"` + tx + `"`}, "chain"},
		"zero chain":        {map[string]string{"chain_id": `0`, "payload": `"` + tx + `"`}, "chain_id"},
		"invalid hex":       {map[string]string{"payload": `"0xzz"`}, "hex"},
		"no payload":        {map[string]string{}, "payload is missing"},
		"unknown kind":      {map[string]string{"kind": `"raw"`, "payload": `"0x00"`}, `unknown kind "raw"`},
		"expired":           {map[string]string{"expiry": `"2026-12-01T19:00:00Z"`, "payload": `"` + tx + `"`}, "has passed"},
		"far expiry":        {map[string]string{"expiry": `"2027-12-01T19:00:00Z"`, "payload": `"` + tx + `"`}, "ahead"},
		"no idempotency":    {map[string]string{"idempotency_key": `""`, "payload": `"` + tx + `"`}, "idempotency_key"},
		"hardened path":     {map[string]string{"path": `[2147483648]`, "payload": `"` + tx + `"`}, "hardened"},
		"typed not object":  {map[string]string{"kind": `"typed_data"`, "payload": `"0x00"`}, "JSON object"},
		"garbage tx":        {map[string]string{"payload": `"0x02c0ff"`}, "payload"},
		"signed-tx trailer": {map[string]string{"payload": `"` + tx + `00"`}, "payload"},
		"null grant":        {map[string]string{"payload": `"` + tx + `"`, "grant": `null`}, "grant must be a JSON object"},
		"string grant":      {map[string]string{"payload": `"` + tx + `"`, "grant": `"g-1"`}, "grant must be a JSON object"},
	}
	for name, c := range bad {
		_, err := ParseSignRequest([]byte(body(c.fields)), now)
		if !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), c.mention) {
			t.Errorf("%s: %v, want ErrBadRequest mentioning %q", name, err, c.mention)
		}
	}
	if _, err := ParseSignRequest([]byte(`{"key":`), now); !errors.Is(err, ErrBadRequest) {
		t.Errorf("malformed JSON: %v", err)
	}
	if _, err := ParseSignRequest(make([]byte, MaxSignRequestBody+1), now); !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "exceeds") {
		t.Errorf("oversize: %v", err)
	}
}

// A lying coordinator must not turn a body the agent signed for another
// endpoint (or method, or with a query) into a signing request.
func TestParseSignedBindsEndpoint(t *testing.T) {
	cred, err := agentauth.NewCredential("bot")
	if err != nil {
		t.Fatal(err)
	}
	b := []byte(body(map[string]string{"payload": `"` + unsignedTx(t, 1) + `"`}))
	ok := cred.Sign(SignRequestMethod, SignRequestPath, b, now)
	if err := ok.Verify(cred.Public()); err != nil {
		t.Fatal(err)
	}
	if r, err := ParseSigned(ok, now); err != nil || r.ChainID != 1 {
		t.Fatalf("signing request: %v", err)
	}
	for name, s := range map[string]agentauth.Signed{
		"dry run":    cred.Sign("POST", "/v1/dryrun", b, now),
		"method":     cred.Sign("PUT", SignRequestPath, b, now),
		"query":      cred.Sign("POST", SignRequestPath+"?dry_run=1", b, now),
		"subpath":    cred.Sign("POST", SignRequestPath+"/", b, now),
		"lower case": cred.Sign("post", SignRequestPath, b, now),
	} {
		if err := s.Verify(cred.Public()); err != nil {
			t.Fatal(err)
		}
		if _, err := ParseSigned(s, now); !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), SignRequestPath) {
			t.Errorf("%s: %v, want ErrBadRequest naming the endpoint", name, err)
		}
	}
}

// encoding/json alone would read {"chain_id":1,...,"chain_id":5} as chain
// 5 and "Chain_ID" as chain_id; a body the agent signs must have one
// meaning for every reader, so both are refused.
func TestParseSignRequestOneMeaning(t *testing.T) {
	tx := `"` + unsignedTx(t, 1) + `"`
	for name, c := range map[string]struct{ b, mention string }{
		"duplicate chain":    {strings.Replace(body(map[string]string{"payload": tx}), `"chain_id":1`, `"chain_id":5,"chain_id":1`, 1), `"chain_id" appears twice`},
		"duplicate payload":  {strings.Replace(body(map[string]string{"payload": tx}), `"payload":`, `"payload":"0x00","payload":`, 1), `"payload" appears twice`},
		"folded key":         {strings.Replace(body(map[string]string{"payload": tx}), `"chain_id"`, `"Chain_ID"`, 1), `spelled "chain_id"`},
		"duplicate in typed": {body(map[string]string{"kind": `"typed_data"`, "payload": `{"types":{},"types":{}}`}), `"payload"."types" appears twice`},
	} {
		_, err := ParseSignRequest([]byte(c.b), now)
		if !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), c.mention) {
			t.Errorf("%s: %v, want ErrBadRequest mentioning %q", name, err, c.mention)
		}
	}
}
