package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"

	"github.com/custos-wallet/custos/chain"
	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

// SignTransactionResult is go-ethereum's answer to a transaction signed
// without sending: the raw transaction and its JSON form.
type SignTransactionResult struct {
	Raw hexutil.Bytes      `json:"raw"`
	Tx  *types.Transaction `json:"tx"`
}

func signResult(tx *types.Transaction) (*SignTransactionResult, error) {
	raw, err := tx.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode signed transaction: %w", err)
	}
	return &SignTransactionResult{Raw: raw, Tx: tx}, nil
}

// signMessage has the wallet sign a personal message or typed data and
// returns it in the form wallets return: V = 27 + recovery id.
func (s *Server) signMessage(ctx context.Context, from common.Address, k chain.Kind, raw []byte) (hexutil.Bytes, error) {
	if err := s.checkAccount(ctx, from); err != nil {
		return nil, err
	}
	p, err := chain.Parse(k, s.chainID, raw)
	if err != nil {
		return nil, invalidf("%w", err)
	}
	sig, err := s.wallet.Sign(ctx, from, p)
	if err != nil {
		return nil, err
	}
	return p.EthSignature(sig, from)
}

// typedDataBytes accepts typed data as the JSON object or as a string
// holding it, as clients send either.
func typedDataBytes(raw json.RawMessage) ([]byte, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, invalidf("typed data string: %v", err)
		}
		raw = bytes.TrimSpace([]byte(s))
	}
	if len(raw) == 0 || raw[0] != '{' {
		return nil, invalidf("typed data is not a JSON object")
	}
	return raw, nil
}

func (s *Server) signTypedData(ctx context.Context, from common.Address, td json.RawMessage) (hexutil.Bytes, error) {
	raw, err := typedDataBytes(td)
	if err != nil {
		return nil, err
	}
	return s.signMessage(ctx, from, chain.KindTypedData, raw)
}

// ethAPI is the eth namespace's wallet methods.
type ethAPI struct{ s *Server }

// Accounts is eth_accounts.
func (a *ethAPI) Accounts(ctx context.Context) ([]common.Address, error) {
	accts, err := a.s.wallet.Accounts(ctx)
	return accts, a.s.done("eth_accounts", err)
}

// RequestAccounts is EIP-1102's eth_requestAccounts: the agent's accounts
// are always available to it.
func (a *ethAPI) RequestAccounts(ctx context.Context) ([]common.Address, error) {
	accts, err := a.s.wallet.Accounts(ctx)
	return accts, a.s.done("eth_requestAccounts", err)
}

// ChainId is eth_chainId, upstream's, read once.
func (a *ethAPI) ChainId() *hexutil.Big { return (*hexutil.Big)(a.s.ChainID()) }

// SendTransaction is eth_sendTransaction: fill, sign, broadcast.
func (a *ethAPI) SendTransaction(ctx context.Context, args TransactionArgs) (common.Hash, error) {
	h, err := a.s.send(ctx, args)
	return h, a.s.done("eth_sendTransaction", err)
}

// SignTransaction is eth_signTransaction: fill and sign, not broadcast.
func (a *ethAPI) SignTransaction(ctx context.Context, args TransactionArgs) (any, error) {
	tx, err := a.s.fillAndSign(ctx, args, false)
	if err != nil {
		return nil, a.s.done("eth_signTransaction", err)
	}
	res, err := signResult(tx)
	if err != nil {
		return nil, err
	}
	if a.s.cfg.SignTransactionObject {
		return res, nil
	}
	return res.Raw, nil
}

// Sign is eth_sign(address, data): an EIP-191 signature of data, as
// go-ethereum computes it (never a bare hash).
func (a *ethAPI) Sign(ctx context.Context, addr common.Address, data hexutil.Bytes) (hexutil.Bytes, error) {
	sig, err := a.s.signMessage(ctx, addr, chain.KindPersonalMessage, data)
	return sig, a.s.done("eth_sign", err)
}

// SignTypedData_v4 is eth_signTypedData_v4(address, typedData).
func (a *ethAPI) SignTypedData_v4(ctx context.Context, addr common.Address, td json.RawMessage) (hexutil.Bytes, error) {
	sig, err := a.s.signTypedData(ctx, addr, td)
	return sig, a.s.done("eth_signTypedData_v4", err)
}

// SignTypedData is eth_signTypedData, taken as v4 (the legacy v1 array form
// is refused as not a JSON object).
func (a *ethAPI) SignTypedData(ctx context.Context, addr common.Address, td json.RawMessage) (hexutil.Bytes, error) {
	sig, err := a.s.signTypedData(ctx, addr, td)
	return sig, a.s.done("eth_signTypedData", err)
}

// personalAPI is personal_sign.
type personalAPI struct{ s *Server }

// Sign is personal_sign(data, address[, password]): note the order, the
// reverse of eth_sign's. A password is ignored: there is none.
func (a *personalAPI) Sign(ctx context.Context, data hexutil.Bytes, addr common.Address, _ *string) (hexutil.Bytes, error) {
	sig, err := a.s.signMessage(ctx, addr, chain.KindPersonalMessage, data)
	return sig, a.s.done("personal_sign", err)
}

// walletAPI is wallet_sendTransaction, eth_sendTransaction's other name.
type walletAPI struct{ s *Server }

// SendTransaction is wallet_sendTransaction.
func (a *walletAPI) SendTransaction(ctx context.Context, args TransactionArgs) (common.Hash, error) {
	h, err := a.s.send(ctx, args)
	return h, a.s.done("wallet_sendTransaction", err)
}

// accountAPI is go-ethereum's external-signer API (clef's account_*), as
// accounts/external calls it for `geth --signer`.
type accountAPI struct{ s *Server }

// Version is account_version.
func (a *accountAPI) Version() string { return ExternalSignerVersion }

// List is account_list.
func (a *accountAPI) List(ctx context.Context) ([]common.Address, error) {
	accts, err := a.s.wallet.Accounts(ctx)
	return accts, a.s.done("account_list", err)
}

// SignTransaction is account_signTransaction. As in clef, nonce and gas are
// the caller's, nothing is filled, and the answer is {raw, tx}. The method
// selector clef took for display is accepted and ignored.
func (a *accountAPI) SignTransaction(ctx context.Context, args apitypes.SendTxArgs, _ *string) (*SignTransactionResult, error) {
	res, err := a.signTransaction(ctx, args)
	return res, a.s.done("account_signTransaction", err)
}

func (a *accountAPI) signTransaction(ctx context.Context, args apitypes.SendTxArgs) (*SignTransactionResult, error) {
	from := args.From.Address()
	if err := a.s.checkAccount(ctx, from); err != nil {
		return nil, err
	}
	if args.ChainID == nil {
		args.ChainID = (*hexutil.Big)(a.s.ChainID())
	} else if args.ChainID.ToInt().Cmp(a.s.chainID) != 0 {
		return nil, invalidf("chain id %d is not the upstream chain's %d", args.ChainID.ToInt(), a.s.chainID)
	}
	if args.BlobHashes != nil || args.Blobs != nil {
		return nil, invalidf("%v", chain.ErrBlobTx)
	}
	if args.Data != nil && args.Input != nil && !bytes.Equal(*args.Data, *args.Input) {
		return nil, invalidf(`both "data" and "input" are set and differ`)
	}
	if args.GasPrice == nil && (args.MaxFeePerGas == nil || args.MaxPriorityFeePerGas == nil) {
		return nil, invalidf("set gasPrice, or maxFeePerGas and maxPriorityFeePerGas")
	}
	tx, err := args.ToTransaction()
	if err != nil {
		return nil, invalidf("%v", err)
	}
	signed, err := a.s.signTx(ctx, from, tx)
	if err != nil {
		return nil, err
	}
	return signResult(signed)
}

// SignData is account_signData(contentType, address, data) for the content
// types a wallet signs: text/plain (an EIP-191 personal message, data in
// hex) and data/typed (EIP-712 typed data). The signature's V is 27 or 28,
// as clef returns it.
func (a *accountAPI) SignData(ctx context.Context, contentType string, addr common.MixedcaseAddress, data json.RawMessage) (hexutil.Bytes, error) {
	sig, err := a.signData(ctx, contentType, addr.Address(), data)
	return sig, a.s.done("account_signData", err)
}

func (a *accountAPI) signData(ctx context.Context, contentType string, from common.Address, data json.RawMessage) (hexutil.Bytes, error) {
	switch contentType {
	case accounts.MimetypeTextPlain:
		var msg hexutil.Bytes
		if err := json.Unmarshal(data, &msg); err != nil {
			return nil, invalidf("text/plain data: %v", err)
		}
		return a.s.signMessage(ctx, from, chain.KindPersonalMessage, msg)
	case accounts.MimetypeTypedData:
		return a.s.signTypedData(ctx, from, data)
	}
	return nil, invalidf("content type %q is not signed here (only %s and %s)", contentType, accounts.MimetypeTextPlain, accounts.MimetypeTypedData)
}

// SignTypedData is account_signTypedData(address, typedData).
func (a *accountAPI) SignTypedData(ctx context.Context, addr common.MixedcaseAddress, td json.RawMessage) (hexutil.Bytes, error) {
	sig, err := a.s.signTypedData(ctx, addr.Address(), td)
	return sig, a.s.done("account_signTypedData", err)
}

// web3API is web3_clientVersion; web3_sha3 goes upstream.
type web3API struct{ s *Server }

// ClientVersion is web3_clientVersion.
func (a *web3API) ClientVersion() string { return a.s.cfg.ClientVersion }

// modulesAPI replaces go-ethereum's rpc_modules, which would name only the
// local namespaces, with what a client can actually call here.
type modulesAPI struct{ s *Server }

// Modules is rpc_modules: upstream's namespaces and the endpoint's own.
func (a *modulesAPI) Modules(ctx context.Context) map[string]string {
	mods := make(map[string]string)
	var up map[string]string
	if err := a.s.upstream.CallContext(ctx, &up, "rpc_modules"); err == nil {
		maps.Copy(mods, up)
	} else {
		a.s.log.Debug("upstream rpc_modules", "err", err)
	}
	for _, ns := range []string{"eth", "personal", "wallet", "account", "web3", "rpc"} {
		if _, ok := mods[ns]; !ok {
			mods[ns] = "1.0"
		}
	}
	return mods
}
