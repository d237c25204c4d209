package rpc

import (
	"context"
	"errors"
	"fmt"

	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/ids"
	"github.com/ethereum/go-ethereum/common"
	gethrpc "github.com/ethereum/go-ethereum/rpc"
)

// Wallet is what the endpoint needs from the signing cluster. The sidecar
// implements it by sending agent-signed requests to the coordinator.
type Wallet interface {
	// Accounts returns the addresses the agent may sign as.
	Accounts(ctx context.Context) ([]common.Address, error)
	// Sign asks the cluster to sign p as from. It returns the 65-byte
	// [R || S || V] signature with V = 0 or 1. A policy denial is a
	// *Denied error; a request still waiting for a guardian when the
	// sidecar's configured wait is over is a *Pending error.
	Sign(ctx context.Context, from common.Address, p *chain.Payload) ([]byte, error)
}

// Denied is the error of a request the policy refused.
type Denied struct {
	Rule      string
	Reason    string
	RequestID ids.RequestID
}

func (e *Denied) Error() string {
	return fmt.Sprintf("denied by policy rule %q: %s (request %s)", e.Rule, e.Reason, e.RequestID)
}

// Pending is the error of a request that waits for a guardian's approval
// longer than the sidecar was configured to wait. The request stays open:
// its id is what to poll. For a transaction the endpoint gives its nonce
// back, as for a denial, so later sends do not wait behind it: whoever
// broadcasts the transaction once approved must expect its nonce may have
// been used meanwhile (upstream then refuses it as too low, and nothing is
// spent twice).
type Pending struct {
	RequestID ids.RequestID
}

func (e *Pending) Error() string {
	return fmt.Sprintf("request %s is waiting for guardian approval", e.RequestID)
}

// JSON-RPC error codes of the endpoint. Others are go-ethereum's own:
// -32700 parse error, -32600 invalid request (an oversize batch too),
// -32601 unknown method (from upstream), -32000 any other failure.
const (
	// CodeDenied is EIP-1193's 4001 "user rejected the request": ethers,
	// viem and web3.py recognise it as the wallet's refusal (not a node
	// failure to retry), which a policy denial is.
	CodeDenied = 4001
	// CodePending is go-ethereum's -32002 "request timed out", the code
	// MetaMask also returns for a request still awaiting approval.
	CodePending = -32002
	// CodeInvalidParams is JSON-RPC's invalid params: the caller's request
	// is wrong (bad hex, another chain, an address the wallet does not
	// hold) and retrying it unchanged cannot help.
	CodeInvalidParams = -32602
)

// DeniedData is the error data of a denial.
type DeniedData struct {
	Rule      string        `json:"rule"`
	Reason    string        `json:"reason"`
	RequestID ids.RequestID `json:"requestId"`
}

// PendingData is the error data of a request waiting for a guardian.
type PendingData struct {
	Status    string        `json:"status"`
	RequestID ids.RequestID `json:"requestId"`
}

// rpcError is an error with a JSON-RPC code and optional data; go-ethereum's
// server writes both.
type rpcError struct {
	code int
	msg  string
	data any
}

func (e *rpcError) Error() string  { return e.msg }
func (e *rpcError) ErrorCode() int { return e.code }
func (e *rpcError) ErrorData() any { return e.data }

// ErrInvalidParams is wrapped by every error about the caller's input.
var ErrInvalidParams = errors.New("rpc: invalid params")

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidParams}, args...)...)
}

// rpcErr turns an error of a wallet method into the error the client sees.
func rpcErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var d *Denied
	var p *Pending
	switch {
	case errors.As(err, &d):
		return &rpcError{CodeDenied, op + ": " + d.Error(), DeniedData{d.Rule, d.Reason, d.RequestID}}
	case errors.As(err, &p):
		return &rpcError{CodePending, op + ": " + p.Error(), PendingData{"pending", p.RequestID}}
	case errors.Is(err, ErrInvalidParams):
		return &rpcError{CodeInvalidParams, op + ": " + err.Error(), nil}
	}
	// Keep upstream's code and data (a revert's reason, say): go-ethereum's
	// server reads them only from the error it is handed, not a wrapped one.
	var re gethrpc.Error
	if errors.As(err, &re) {
		var data any
		var de gethrpc.DataError
		if errors.As(err, &de) {
			data = de.ErrorData()
		}
		return &rpcError{re.ErrorCode(), op + ": " + err.Error(), data}
	}
	return fmt.Errorf("%s: %w", op, err)
}
