package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/custos-wallet/custos/agentauth"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/client"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/internal/httpapi"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
)

func init() {
	register(&Command{
		Name:    "sign",
		Summary: "ask the coordinator to sign a transaction, message or typed data with an agent credential",
		Run:     runSign,
	})
}

// CredentialFile is the JSON form of an agent credential file (mode
// 0600): the agent's id and its Ed25519 seed.
//
//	{"agent": "bot", "seed": "0x…64 hex digits…"}
type CredentialFile struct {
	Agent ids.AgentID   `json:"agent"`
	Seed  hexutil.Bytes `json:"seed"`
}

// LoadCredential reads an agent credential file, refusing one that group
// or others can read.
func LoadCredential(path string) (*agentauth.Credential, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("credential: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("credential %s: mode %v lets others read it; chmod 600", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("credential: %w", err)
	}
	var f CredentialFile
	if err := httpapi.DecodeBytes(b, &f); err != nil {
		return nil, fmt.Errorf("credential %s: %w", path, err)
	}
	if _, err := ids.ParseAgentID(string(f.Agent)); err != nil {
		return nil, fmt.Errorf("credential %s: %w", path, err)
	}
	return agentauth.CredentialFromSeed(f.Agent, f.Seed)
}

// WriteCredential writes a new credential file for agent, never over an
// existing file.
func WriteCredential(path string, c *agentauth.Credential) error {
	b, err := json.Marshal(CredentialFile{Agent: c.Agent(), Seed: c.Seed()})
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("credential: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func runSign(ctx context.Context, env *Env, args []string) error {
	if len(args) > 0 && args[0] == "new-credential" {
		return newCredential(env, args[1:])
	}
	fs := NewFlags(env, "sign", "sign --credential FILE --key KEY --chain-id N (--tx HEX | --tx-file FILE | --message TEXT | --message-hex HEX | --typed-data FILE) [flags]  |  sign new-credential --agent ID --out FILE")
	rf := addRESTFlags(fs)
	credFile := fs.String("credential", "", "the agent credential file (JSON, mode 0600)")
	key := fs.String("key", "", "the key that signs (key:0x… or its address)")
	chainID := fs.Uint64("chain-id", 0, "the chain id")
	txHex := fs.String("tx", "", "an unsigned transaction, 0x-hex of its binary form")
	txFile := fs.String("tx-file", "", "a file holding the unsigned transaction as 0x-hex")
	msg := fs.String("message", "", "a personal message (text)")
	msgHex := fs.String("message-hex", "", "a personal message (0x-hex)")
	typed := fs.String("typed-data", "", "a file holding eth_signTypedData_v4 JSON (- for stdin)")
	path := fs.String("path", "", "non-hardened child path, e.g. 0/7")
	from := fs.String("from", "", "the address you expect to sign as (checked by every node)")
	idem := fs.String("idempotency-key", "", "the request's idempotency key (default: a random one; reuse one to get the first result back)")
	expiry := fs.Duration("expiry", time.Hour, "how long the request may wait (for guardians, say)")
	grantFile := fs.String("grant", "", "a guardian-signed session grant (JSON file)")
	wait := fs.Bool("wait", true, "wait until the request is final")
	timeout := fs.Duration("timeout", 15*time.Minute, "how long to wait")
	broadcast := fs.Bool("broadcast", false, "send the signed transaction to the chain")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *credFile == "" || *key == "" || *chainID == 0 || fs.NArg() > 0 {
		return Usagef("sign needs --credential, --key and --chain-id")
	}
	k, err := ids.ParseKeyID(*key)
	if err != nil {
		return Usagef("--key: %v", err)
	}
	req := api.SignRequest{Key: k, ChainID: *chainID, IdempotencyKey: *idem, Expiry: time.Now().Add(*expiry).UTC().Truncate(time.Second)}
	n := 0
	for _, s := range []string{*txHex, *txFile, *msg, *msgHex, *typed} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return Usagef("give exactly one of --tx, --tx-file, --message, --message-hex, --typed-data")
	}
	var payload []byte
	switch {
	case *txHex != "" || *txFile != "":
		s := *txHex
		if *txFile != "" {
			b, err := os.ReadFile(*txFile)
			if err != nil {
				return err
			}
			s = strings.TrimSpace(string(b))
		}
		req.Kind, payload = "transaction", []byte(strconv.Quote(s))
	case *msg != "":
		req.Kind, payload = "personal_message", []byte(strconv.Quote(hexutil.Encode([]byte(*msg))))
	case *msgHex != "":
		req.Kind, payload = "personal_message", []byte(strconv.Quote(*msgHex))
	default:
		var b []byte
		if *typed == "-" {
			b, err = io.ReadAll(io.LimitReader(env.Stdin, api.MaxSignRequestBody))
		} else {
			b, err = os.ReadFile(*typed)
		}
		if err != nil {
			return err
		}
		var v json.RawMessage
		if err := json.Unmarshal(b, &v); err != nil {
			return fmt.Errorf("typed data %s: %w", *typed, err)
		}
		req.Kind, payload = "typed_data", v
	}
	req.Payload = payload
	if *path != "" {
		for _, p := range strings.Split(*path, "/") {
			i, err := strconv.ParseUint(p, 10, 32)
			if err != nil {
				return Usagef("--path %q: %v", *path, err)
			}
			req.Path = append(req.Path, uint32(i))
		}
	}
	if *from != "" {
		a, err := ids.ParseAddress(*from)
		if err != nil {
			return Usagef("--from: %v", err)
		}
		req.From = &a
	}
	if *grantFile != "" {
		b, err := os.ReadFile(*grantFile)
		if err != nil {
			return err
		}
		req.Grant = json.RawMessage(strings.TrimSpace(string(b)))
	}
	if req.IdempotencyKey == "" {
		var b [12]byte
		_, _ = rand.Read(b[:])
		req.IdempotencyKey = "cli-" + hex.EncodeToString(b[:])
	}
	cred, err := LoadCredential(*credFile)
	if err != nil {
		return err
	}
	cl, err := rf.client(env, client.Options{Agent: cred})
	if err != nil {
		return err
	}
	r, err := cl.Submit(ctx, cred, req)
	if err != nil {
		return err
	}
	if *wait {
		wctx, cancel := context.WithTimeout(ctx, *timeout)
		r, err = cl.WaitFinal(wctx, r.ID)
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
	}
	if *broadcast && r.State == api.StateSigned && len(r.RawTransaction) > 0 {
		if r, err = cl.Broadcast(ctx, r.ID); err != nil {
			return err
		}
	}
	return printRequest(env, r, *rf.json)
}

func newCredential(env *Env, args []string) error {
	fs := NewFlags(env, "sign new-credential", "sign new-credential --agent ID --out FILE")
	agent := fs.String("agent", "", "the agent's id in the policy's agent registry")
	out := fs.String("out", "", "the credential file to write (0600)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *agent == "" || *out == "" {
		return Usagef("sign new-credential needs --agent and --out")
	}
	a, err := ids.ParseAgentID(*agent)
	if err != nil {
		return Usagef("--agent: %v", err)
	}
	c, err := agentauth.NewCredential(a)
	if err != nil {
		return err
	}
	if err := WriteCredential(*out, c); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "wrote %s\nagent %s public key (for the policy's agents registry): %s\n", *out, a, agentauth.FormatPublicKey(c.Public()))
	return nil
}

// printRequest prints a request for people, or as JSON.
func printRequest(env *Env, r *api.Request, asJSON bool) error {
	if asJSON {
		return PrintJSON(env.Stdout, r)
	}
	w := env.Stdout
	fmt.Fprintf(w, "request %s: %s\n", r.ID, r.State)
	fmt.Fprintf(w, "  agent   %s\n  key     %s (from %s)\n  chain   %d\n  kind    %s\n  digest  %s\n", r.Agent, r.Key, r.From.Hex(), r.ChainID, r.Kind, r.Digest.Hex())
	if r.Summary != "" {
		fmt.Fprintf(w, "  what    %s\n", r.Summary)
	}
	if r.Tier != "" {
		fmt.Fprintf(w, "  tier    %s\n", r.Tier)
	}
	if r.RuleID != "" || r.Reason != "" {
		who := ""
		if r.Member != "" {
			who = " (" + string(r.Member) + ")"
		}
		fmt.Fprintf(w, "  rule    %s%s: %s\n", r.RuleID, who, r.Reason)
	}
	if r.Needed > 0 {
		fmt.Fprintf(w, "  approvals %d of %d %v\n", len(r.Approvers), r.Needed, r.Approvers)
	}
	if len(r.Signature) > 0 {
		fmt.Fprintf(w, "  signature %s\n", r.Signature)
	}
	if len(r.RawTransaction) > 0 {
		fmt.Fprintf(w, "  raw tx    %s\n", r.RawTransaction)
	}
	if r.TxHash != nil && *r.TxHash != (common.Hash{}) {
		fmt.Fprintf(w, "  tx hash   %s", r.TxHash.Hex())
		if r.Broadcast {
			fmt.Fprint(w, " (broadcast)")
		}
		fmt.Fprintln(w)
	}
	if r.BroadcastError != "" {
		fmt.Fprintf(w, "  broadcast error: %s\n", r.BroadcastError)
	}
	for i, a := range r.Attempts {
		fmt.Fprintf(w, "  attempt %d %s %s quorum %v", i+1, a.Session, a.State, a.Quorum)
		if a.Error != "" {
			fmt.Fprintf(w, ": %s", a.Error)
		}
		fmt.Fprintln(w)
	}
	return nil
}
